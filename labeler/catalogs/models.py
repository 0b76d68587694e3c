from django.conf import settings
from django.db import models

from labeler.workflows.models import Workflow


class ExportJob(models.Model):
    """One asynchronous catalog export: what was asked, how far it got, and the file it made."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    class Format(models.TextChoices):
        CSV = "csv", "CSV (ECSV header)"
        FITS = "fits", "FITS binary table"
        VOTABLE = "votable", "VOTable"
        PARQUET = "parquet", "Parquet"
        COCO = "coco", "COCO JSON (boxes)"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="export_jobs")
    format = models.CharField(max_length=16, choices=Format.choices)
    filters = models.JSONField(default=dict, blank=True, help_text="catalogs.rows.CatalogFilters as a dict")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0, help_text="0..1")
    n_rows = models.PositiveIntegerField(null=True, blank=True)
    file_path = models.CharField(max_length=400, blank=True, help_text="Path under SKYLOOP_VAR_DIR/exports.")
    file_size = models.PositiveBigIntegerField(null=True, blank=True)
    provenance = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"export {self.id} of {self.workflow_id} as {self.format} ({self.status})"
