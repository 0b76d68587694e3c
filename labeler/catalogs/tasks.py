"""Celery task of the export jobs (default queue: exports need no GPU)."""

from celery import shared_task

from labeler.catalogs import services


@shared_task(acks_late=True)
def run_export_job(job_id: int) -> None:
    job = services.export_job_claim(job_id=job_id)
    if job is None:  # deleted, or already taken by another worker
        return
    services.export_job_run(job=job)
