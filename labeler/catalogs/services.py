"""Catalog export: one workflow's consensus, retirement, predictions and marks, with provenance.

``catalog_export`` writes to a temporary file beside ``out_path`` and renames it into place
only when the file is complete: a failure leaves nothing behind (and never a half-written file
under the final name). Export jobs run it on a Celery worker and record their progress.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from labeler.catalogs import chunks, coco, columns, pipeline, rows
from labeler.catalogs.models import ExportJob
from labeler.catalogs.provenance import catalog_provenance
from labeler.catalogs.rows import CatalogFilters
from labeler.catalogs.writers import TABLE_WRITERS
from labeler.workflows.models import Workflow

log = logging.getLogger(__name__)

FORMATS = (*TABLE_WRITERS, "coco")
EXTENSIONS = {"csv": "ecsv.csv", "fits": "fits", "votable": "vot.xml", "parquet": "parquet", "coco": "coco.json"}
Progress = Callable[[int, int], None]  # (rows written, rows in total)


class CatalogExportError(ValueError):
    """The export cannot be made as asked (unknown format, no boxes for COCO, bad filters)."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    n_rows: int
    provenance: dict


def catalog_export(
    *,
    workflow: Workflow,
    fmt: str,
    out_path: Path | str,
    filters: CatalogFilters | None = None,
    progress: Progress | None = None,
    chunk_size: int | None = None,
) -> ExportResult:
    """Write the workflow's catalog as ``fmt`` ("csv", "fits", "votable", "parquet", "coco") to ``out_path``.

    ``chunk_size``: rows read and written at a time (default: ``chunks.TABLE_CHUNK`` for tables,
    ``rows.DEFAULT_CHUNK`` for COCO, whose rows are Python objects).
    """
    if fmt not in FORMATS:
        raise CatalogExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    filters = filters or CatalogFilters()
    if fmt == "coco" and not coco.box_tools(workflow.task_tree):
        raise CatalogExportError("this workflow has no box tool, so there are no boxes to export as COCO")
    out_path = Path(out_path)
    provenance = catalog_provenance(workflow=workflow, filters=filters, fmt=fmt)
    total = rows.catalog_count(workflow, filters)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    partial = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex}.part")
    try:
        if fmt == "coco":
            records = rows.catalog_records(workflow, filters, chunk_size=chunk_size or rows.DEFAULT_CHUNK,
                                           with_files=True)  # fmt: skip
            n_rows = coco.coco_write(partial, workflow.task_tree, records, provenance, progress=advance)
        else:
            size = chunk_size or chunks.TABLE_CHUNK
            n_rows = _write_table(workflow, fmt, partial, filters, provenance, size, advance)
        os.replace(partial, out_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ExportResult(path=out_path, n_rows=n_rows, provenance=provenance)


def _write_table(workflow, fmt, path, filters, provenance, chunk_size, advance) -> int:
    groups = columns.catalog_groups(workflow.task_tree, rows.catalog_widths(workflow, filters))
    writer = TABLE_WRITERS[fmt](path, columns.catalog_columns(groups), provenance)
    try:
        read = chunks.catalog_chunks(workflow, filters, chunk_size=chunk_size)
        n_rows = pipeline.chunks_write(writer=writer, groups=groups, chunks=read, advance=advance)
    except BaseException:
        writer.abort()
        raise
    writer.close(n_rows)
    return n_rows


# ---------------------------------------------------------------- asynchronous jobs


def exports_dir() -> Path:
    """Export files live outside MEDIA_ROOT: they are served only through the staff download view."""
    return Path(settings.VAR_DIR) / "exports"


def export_job_create(*, workflow: Workflow, fmt: str, filters: CatalogFilters, user=None) -> ExportJob:
    """Record a job and queue it once the row is committed."""
    if fmt not in FORMATS:
        raise CatalogExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "coco" and not coco.box_tools(workflow.task_tree):
        raise CatalogExportError("this workflow has no box tool, so there are no boxes to export as COCO")
    from labeler.catalogs.tasks import run_export_job

    with transaction.atomic():
        job = ExportJob.objects.create(workflow=workflow, format=fmt, filters=filters.as_dict(), created_by=user)
        transaction.on_commit(lambda: run_export_job.delay(job.id))
    return job


def export_job_claim(*, job_id: int) -> ExportJob | None:
    """Mark a queued job running; None when it is gone or another worker already took it."""
    claimed = ExportJob.objects.filter(pk=job_id, status=ExportJob.Status.QUEUED).update(
        status=ExportJob.Status.RUNNING, started_at=timezone.now(), progress=0.0
    )
    if claimed != 1:  # gone, or another worker got there first
        return None
    return ExportJob.objects.select_related("workflow__project").get(pk=job_id)


def export_job_run(*, job: ExportJob) -> ExportJob:
    """Write the job's file, recording progress; a failure is stored on the job, not raised."""
    workflow = job.workflow
    name = f"{workflow.project.slug}-{workflow.slug}-{job.id}.{EXTENSIONS[job.format]}"
    folder = exports_dir()
    folder.mkdir(parents=True, exist_ok=True)
    step = {"last": -1.0}

    def progress(done: int, total: int) -> None:
        value = round(done / total, 3) if total else 1.0
        if value - step["last"] >= 0.01:  # one small UPDATE per percent, not per chunk
            step["last"] = value
            ExportJob.objects.filter(pk=job.pk).update(progress=min(value, 1.0))

    try:
        filters = CatalogFilters.from_dict(job.filters)
        result = catalog_export(workflow=workflow, fmt=job.format, out_path=folder / name, filters=filters,
                                progress=progress)  # fmt: skip
    except (CatalogExportError, rows.CatalogFilterError, coco.CocoError, OSError, ValueError) as exc:
        log.exception("export job %s failed", job.id)
        ExportJob.objects.filter(pk=job.pk).update(
            status=ExportJob.Status.FAILED, error=str(exc)[:2000], finished_at=timezone.now()
        )
    else:
        ExportJob.objects.filter(pk=job.pk).update(
            status=ExportJob.Status.DONE, progress=1.0, n_rows=result.n_rows, file_path=name,
            file_size=result.path.stat().st_size, provenance=result.provenance, finished_at=timezone.now(),
        )  # fmt: skip
    job.refresh_from_db()
    return job


def export_job_file(job: ExportJob) -> Path | None:
    """The finished job's file, or None when it is not done or the file was removed."""
    if job.status != ExportJob.Status.DONE or not job.file_path:
        return None
    path = exports_dir() / Path(job.file_path).name
    return path if path.is_file() else None
