"""Catalog export at scale: 10^6 rows of a Galaxy Zoo-style workflow in each format.

Rows are inserted directly (subjects, states, consensus for every question, one prediction
each), then ``manage.py export_catalog`` runs in a child process per format: its wall time
(Django start-up included) and its peak resident memory (``wait4`` rusage) are the figures.
``SKYLOOP_BENCH_EXPORT_ROWS`` makes a smaller run for a quick check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("csv", "fits", "votable", "parquet")
BATCH = 20_000


def run(results: Path) -> dict:
    from labeler.testing import subprocess_env

    n_rows = int(os.environ.get("SKYLOOP_BENCH_EXPORT_ROWS", "1000000"))
    started = time.monotonic()
    workflow = _populate(n_rows)
    figures: dict[str, float] = {"rows": n_rows, "populate_seconds": round(time.monotonic() - started, 1)}
    out_dir = Path(os.environ.get("SKYLOOP_VAR_DIR", ROOT / "var" / "bench")) / "export-bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    peak = 0.0
    for fmt in FORMATS:
        out = out_dir / f"catalog.{fmt}"
        args = [sys.executable, str(ROOT / "manage.py"), "export_catalog", str(workflow.id), "--format", fmt,
                "-o", str(out)]  # fmt: skip
        began = time.monotonic()
        child = subprocess.Popen(args, cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.monotonic() - began
        if status != 0:
            raise SystemExit(f"export_catalog --format {fmt} failed:\n{child.stderr.read().decode()[-3000:]}")
        rss_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
        peak = max(peak, rss_mb)
        figures[f"{fmt}_seconds"] = round(seconds, 2)
        figures[f"{fmt}_rss_mb"] = round(rss_mb, 1)
        figures[f"{fmt}_mb"] = round(out.stat().st_size / 2**20, 1)
        out.unlink()
    figures["peak_rss_mb"] = round(peak, 1)
    return figures


def _populate(n_rows: int):
    """A project with ``n_rows`` subjects that all have votes on every question and a prediction."""
    from django.db import transaction

    from labeler.classifications.models import Consensus
    from labeler.learning.models import ModelVersion, Prediction
    from labeler.subjects.models import Project, Subject
    from labeler.workflows.models import SubjectState, Workflow
    from mlcore import tasktree
    from mlcore.simulate import sky

    Project.objects.filter(slug="export-bench").delete()
    project = Project.objects.create(slug="export-bench", name="Export benchmark")
    workflow = Workflow.objects.create(project=project, slug="galaxies", name="Galaxies", kind="image",
                                       task_tree=sky.GALAXY_TREE)  # fmt: skip
    version = ModelVersion.objects.create(workflow=workflow, number=1, kind="question_head", status="active",
                                          sha256="0" * 64)  # fmt: skip
    layout = tasktree.label_layout(workflow.task_tree)
    rng = np.random.default_rng(0)
    for start in range(0, n_rows, BATCH):
        n = min(BATCH, n_rows - start)
        with transaction.atomic():
            subjects = Subject.objects.bulk_create(
                [
                    Subject(
                        project=project,
                        kind="image",
                        external_id=f"J{start + i:09d}",
                        data_file="x.fits",
                        data_sha256="0" * 64,
                        ra=float(rng.uniform(0, 360)),
                        dec=float(rng.uniform(-30, 80)),
                    )
                    for i in range(n)
                ]  # fmt: skip
            )
            retired = rng.random(n) < 0.5
            SubjectState.objects.bulk_create(
                [
                    SubjectState(
                        workflow=workflow,
                        subject=s,
                        status="retired" if r else "active",
                        classification_count=5,
                        retirement_reason="consensus" if r else "",
                    )
                    for s, r in zip(subjects, retired, strict=True)
                ]  # fmt: skip
            )
            Consensus.objects.bulk_create([_consensus(workflow, s, layout, rng) for s in subjects])
            Prediction.objects.bulk_create(
                [
                    Prediction(
                        model_version=version,
                        subject=s,
                        probabilities=_probabilities(layout, rng),
                        entropy=0.5,
                        bald=0.1,
                        score=0.1,
                    )
                    for s in subjects
                ]  # fmt: skip
            )
    return workflow


def _consensus(workflow, subject, layout, rng):
    from labeler.classifications.models import Consensus

    counts = {key: rng.multinomial(5, [1 / k] * k).tolist() for key, k in layout}
    fractions = {key: [round(c / 5, 4) for c in v] for key, v in counts.items()}
    return Consensus(workflow=workflow, subject=subject, counts=counts, fractions=fractions, n_classifications=5,
                     posterior=_probabilities(layout, rng), agreement={key: 0.5 for key, _ in layout})  # fmt: skip


def _probabilities(layout, rng) -> dict:
    return {key: np.round(rng.dirichlet([1.0] * k), 5).tolist() for key, k in layout}
