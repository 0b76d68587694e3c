"""Catalog export at scale: 10^6 rows of a Galaxy Zoo-style workflow in each format.

Only the tables an export reads are filled (subjects, their states, consensus for every
question, one prediction each; no FITS files), column-wise with numpy and pyarrow and loaded
in bulk: PostgreSQL ``COPY ... FROM STDIN`` when ``DATABASE_URL`` points at PostgreSQL, else
``executemany`` in large SQLite transactions. Then ``manage.py export_catalog`` runs in a
child process per format: its wall time (Django start-up included), its CPU time (user +
system, which other jobs sharing the machine do not inflate) and its peak resident memory
(VmHWM) are the figures. ``SKYLOOP_BENCH_EXPORT_ROWS`` makes a smaller run
for a quick check.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("csv", "fits", "votable", "parquet")
BATCH = 50_000
PROJECT_SLUG = "export-bench"
N_VOTES = 5
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def run(results: Path) -> dict:
    from django.db import connection

    from labeler.testing import subprocess_env

    n_rows = int(os.environ.get("SKYLOOP_BENCH_EXPORT_ROWS", "1000000"))
    started = time.monotonic()
    _remove_project()
    workflow = _populate(n_rows)
    figures: dict[str, float] = {"rows": n_rows, "populate_seconds": round(time.monotonic() - started, 1)}
    figures["database_postgresql"] = int(connection.vendor == "postgresql")
    out_dir = Path(os.environ.get("SKYLOOP_VAR_DIR", ROOT / "var" / "bench")) / "export-bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    peak = 0.0
    try:
        for fmt in FORMATS:
            out = out_dir / f"catalog.{fmt}"
            args = [sys.executable, str(ROOT / "manage.py"), "export_catalog", str(workflow.id), "--format", fmt,
                    "-o", str(out)]  # fmt: skip
            began = time.monotonic()
            with tempfile.TemporaryFile() as log:  # a file, not a pipe: the child never blocks on its output
                child = subprocess.Popen(args, cwd=ROOT, env=subprocess_env(), stdout=log, stderr=log)
                rss_mb, cpu = _peak_rss_mb(child)
                seconds = time.monotonic() - began
                if child.returncode != 0:
                    log.seek(0)
                    raise SystemExit(f"export_catalog --format {fmt} failed:\n{log.read().decode()[-3000:]}")
            peak = max(peak, rss_mb)
            figures[f"{fmt}_seconds"] = round(seconds, 2)
            figures[f"{fmt}_cpu_seconds"] = round(cpu, 2)  # user + system: what other jobs on the machine do not change
            figures[f"{fmt}_rss_mb"] = round(rss_mb, 1)
            figures[f"{fmt}_mb"] = round(out.stat().st_size / 2**20, 1)
            out.unlink()
    finally:
        _remove_project()
    figures["peak_rss_mb"] = round(peak, 1)
    _plot(figures, results / "export.png")
    return figures


def _plot(figures: dict, path: Path) -> None:
    """Wall and CPU seconds per format against the 20 s goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(FORMATS))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(x - 0.2, [figures[f"{f}_seconds"] for f in FORMATS], 0.4, label="wall (machine shared)")
    ax.bar(x + 0.2, [figures[f"{f}_cpu_seconds"] for f in FORMATS], 0.4, label="CPU (user + system)")
    ax.axhline(20, color="k", ls="--", lw=1, label="goal")
    ax.set_xticks(x, FORMATS)
    ax.set_ylabel("seconds")
    database = "PostgreSQL" if figures["database_postgresql"] else "SQLite"
    ax.set_title(f"export_catalog, {figures['rows']:,} rows ({database}); peak RSS {figures['peak_rss_mb']:.0f} MB")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _peak_rss_mb(child: subprocess.Popen) -> tuple[float, float]:
    """The child's peak resident memory (VmHWM), read until it exits, and its CPU seconds.

    Not rusage for memory: a child forked from this process, which holds the populated rows,
    would report this process's memory as its own peak. CPU time is rusage's (user + system).
    """
    peak_kb = 0
    proc_status = Path(f"/proc/{child.pid}/status")
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)  # reaps it once it exits: its rusage is final
        if pid:
            break
        try:
            lines = proc_status.read_text().splitlines()
        except OSError:  # a zombie between the two calls: wait4 reaps it next time round
            lines = []
        peak_kb = max([peak_kb] + [int(line.split()[1]) for line in lines if line.startswith("VmHWM:")])
        time.sleep(0.05)
    child.returncode = os.waitstatus_to_exitcode(status)
    return peak_kb / 1024, usage.ru_utime + usage.ru_stime


def _populate(n_rows: int):
    """A project with ``n_rows`` subjects that all have votes on every question and a prediction."""
    from django.db import connection, transaction

    from labeler.learning.models import ModelVersion
    from labeler.subjects.models import Project, Subject
    from labeler.workflows.models import Workflow
    from mlcore.simulate import sky

    project = Project.objects.create(slug=PROJECT_SLUG, name="Export benchmark")
    workflow = Workflow.objects.create(project=project, slug="galaxies", name="Galaxies", kind="image",
                                       task_tree=sky.GALAXY_TREE)  # fmt: skip
    version = ModelVersion.objects.create(workflow=workflow, number=1, kind="question_head", status="active",
                                          sha256="0" * 64)  # fmt: skip
    rng = np.random.default_rng(0)
    first_id = (Subject.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
    for start in range(0, n_rows, BATCH):
        ids = np.arange(first_id + start, first_id + min(start + BATCH, n_rows), dtype="int64")
        with transaction.atomic():
            for table, rows in _batch_tables(project.id, workflow, version.id, ids, rng):
                _load(connection, table, rows)
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(_no_style(), [Subject]):  # ids were given explicitly
            cursor.execute(sql)
        cursor.execute("ANALYZE")  # fresh statistics, as a long-running database would have
    return workflow


def _batch_tables(project_id: int, workflow, version_id: int, ids: np.ndarray, rng) -> list[tuple[str, pa.Table]]:
    """(database table, rows as columns) for one batch of subjects, in foreign-key order."""
    from django.db import connection

    from labeler.classifications.models import Consensus
    from labeler.learning.models import Prediction
    from labeler.subjects.models import Subject
    from labeler.workflows.models import SubjectState
    from mlcore import tasktree

    n = len(ids)
    now = connection.ops.adapt_datetimefield_value(NOW)  # as Django stores it on this database
    layout = tasktree.label_layout(workflow.task_tree)
    subject_id = pa.array(ids)
    retired = rng.random(n) < 0.5
    subjects = {
        "id": subject_id,
        "project_id": _repeat(project_id, n),
        "kind": _repeat("image", n),
        "external_id": pc.binary_join_element_wise("J", pc.utf8_lpad(pc.cast(subject_id, pa.string()), 9, "0"), ""),
        "data_file": _repeat("x.fits", n),
        "data_sha256": _repeat("0" * 64, n),
        "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-30, 80, n),
        "metadata": _repeat("{}", n),
        "truth": pa.nulls(n, pa.string()),
        "created_at": _repeat(now, n),
    }
    states = {
        "workflow_id": _repeat(workflow.id, n),
        "subject_id": subject_id,
        "status": np.where(retired, "retired", "active"),
        "classification_count": _repeat(N_VOTES, n),
        "priority": rng.random(n),
        "gold_answers": pa.array(np.where(rng.random(n) < 0.02, '{"T0": 1}', None)),
        "flag_count": rng.poisson(0.05, n),
        "needs_review": rng.random(n) < 0.03,
        "retired_at": pa.array(np.where(retired, now, None)),
        "retirement_reason": np.where(retired, "consensus", ""),
    }
    counts = {key: rng.multinomial(N_VOTES, [1 / k] * k, size=n) for key, k in layout}
    consensus = {
        "workflow_id": _repeat(workflow.id, n),
        "subject_id": subject_id,
        "counts": _json_lists(counts),
        "fractions": _json_lists({key: c / N_VOTES for key, c in counts.items()}),
        "n_classifications": _repeat(N_VOTES, n),
        "posterior": _json_lists(_probabilities(layout, n, rng)),
        "agreement": _json_lists({key: np.round(rng.random((n, 1)), 4) for key, _ in layout}, scalar=True),
        "marks": _repeat("{}", n),
        "updated_at": _repeat(now, n),
    }
    predictions = {
        "model_version_id": _repeat(version_id, n),
        "subject_id": subject_id,
        "probabilities": _json_lists(_probabilities(layout, n, rng)),
        "entropy": rng.uniform(0, 1, n),
        "bald": rng.uniform(0, 0.3, n),
        "score": rng.uniform(0, 0.3, n),
        "in_training": rng.random(n) < 0.1,
        "created_at": _repeat(now, n),
    }
    tables = [(Subject, subjects), (SubjectState, states), (Consensus, consensus), (Prediction, predictions)]
    return [(model._meta.db_table, pa.table(columns)) for model, columns in tables]


def _repeat(value, n: int) -> pa.Array:
    return pa.array(np.full(n, value))


def _probabilities(layout, n: int, rng) -> dict[str, np.ndarray]:
    return {key: np.round(rng.dirichlet([1.0] * k, size=n), 5) for key, k in layout}


def _json_lists(values: dict[str, np.ndarray], scalar: bool = False) -> pa.Array:
    """``{"T0": [a, b, c], ...}`` per row (``{"T0": a, ...}`` if ``scalar``) from (n, k) arrays, with no Python loop."""
    parts: list = []
    for i, (key, matrix) in enumerate(values.items()):
        parts.append(("{" if i == 0 else ", ") + f'"{key}": ' + ("" if scalar else "["))
        for j in range(matrix.shape[1]):
            parts += [", "] if j else []
            parts.append(pc.cast(pa.array(matrix[:, j]), pa.string()))
        parts.append("" if scalar else "]")
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")


def _load(connection, table: str, rows: pa.Table) -> None:
    """Insert the rows: COPY on PostgreSQL (CSV text), one executemany on SQLite."""
    columns = ", ".join(connection.ops.quote_name(name) for name in rows.column_names)
    if connection.vendor == "postgresql":
        text = io.BytesIO()
        pacsv.write_csv(rows, text, pacsv.WriteOptions(include_header=False))  # strings quoted, NULL left empty
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)") as copy,
        ):
            copy.write(text.getvalue())
        return
    marks = ", ".join("%s" for _ in rows.column_names)
    values = zip(*(column.to_pylist() for column in rows.columns), strict=True)
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", values)


def _remove_project() -> None:
    """Delete an earlier run's rows with one DELETE per table: Django's cascade would load 10^6 objects first."""
    from django.db import connection, transaction

    from labeler.classifications.models import Consensus
    from labeler.learning.models import ModelVersion, Prediction
    from labeler.subjects.models import Project, Subject
    from labeler.workflows.models import SubjectState

    project = Project.objects.filter(slug=PROJECT_SLUG).first()
    if project is None:
        return
    workflows = list(project.workflows.values_list("id", flat=True)) or [0]
    versions = list(ModelVersion.objects.filter(workflow_id__in=workflows).values_list("id", flat=True)) or [0]
    deletes = [(Prediction, "model_version_id", versions), (Consensus, "workflow_id", workflows),
               (SubjectState, "workflow_id", workflows), (Subject, "project_id", [project.id])]  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor:
        for model, column, ids in deletes:
            marks = ", ".join("%s" for _ in ids)
            cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE {column} IN ({marks})", ids)
        project.delete()


def _no_style():
    from django.core.management.color import no_style

    return no_style()
