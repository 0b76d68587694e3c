"""Where a catalog came from: software, workflow version, model version + checksum, time, filters."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import labeler
from labeler.catalogs.rows import CatalogFilters
from labeler.learning.models import ModelVersion
from labeler.workflows.models import Workflow

PIXEL_CONVENTION = (
    "Box and line marks are in pixels of the FITS data array: x = column, y = row, continuous, pixel (row r, "
    "column c) covering x in [c, c+1), y in [r, r+1); row 0 is the bottom of the displayed image."
)


def catalog_provenance(*, workflow: Workflow, filters: CatalogFilters, fmt: str) -> dict[str, str | int]:
    """Flat ``{key: value}`` every writer stores (FITS cards, VOTable INFO, ECSV meta, Parquet metadata)."""
    active = ModelVersion.objects.filter(workflow=workflow, status=ModelVersion.Status.ACTIVE).first()
    return {
        "software": f"skyloop {labeler.__version__}",
        "workflow": f"{workflow.project.slug}/{workflow.slug}",
        "workflow_id": workflow.id,
        "workflow_name": workflow.name,
        "workflow_version": workflow.version,
        "model_version": active.number if active else 0,
        "model_sha256": active.sha256 if active else "",
        "export_time_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "filters": json.dumps(filters.as_dict(), sort_keys=True),
        "format": fmt,
        "pixel_convention": PIXEL_CONVENTION,
        "model_note": "Each row's model_* columns come from the newest published model version that scored it "
        "(model_version, model_sha256); the active version is the header's model_version.",
    }
