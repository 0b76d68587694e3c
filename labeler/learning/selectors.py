"""Reads of the learning loop for pages and the API (no torch)."""

from __future__ import annotations

from labeler.learning.models import ModelEvent, ModelVersion, Prediction
from labeler.workflows.models import Workflow

PREANNOTATION_MIN_SCORE = 0.5  # below this a detection is more likely noise than an object


def predicted_boxes(*, workflow: Workflow, subject_id: int, min_score: float = PREANNOTATION_MIN_SCORE) -> list[dict]:
    """The active detector's objects in one field, best first, as marks a volunteer could start from.

    Each is ``{"tool", "type", "label", "x", "y", "width", "height", "score"}`` in the array-pixel
    convention of ``mlcore.marks`` (x = column, y = row, row 0 at the bottom). ``type`` is the
    tool's: a "line" tool's detection is the trail's padded bounding box, not its endpoints.
    Empty when the workflow has no active detector or it did not score this field.
    """
    prediction = (
        Prediction.objects.filter(
            subject_id=subject_id,
            model_version__workflow=workflow,
            model_version__kind="detector",
            model_version__status=ModelVersion.Status.ACTIVE,
        )
        .only("probabilities")
        .first()
    )
    if prediction is None:
        return []
    tools = (workflow.task_tree.get("marks") or {}).get("tools", [])
    out = []
    for x0, y0, x1, y1, score, tool in prediction.probabilities.get("boxes", []):
        if score < min_score or not 0 <= tool < len(tools):
            continue  # the tool was removed from the tree since the detector trained
        out.append(
            {
                "tool": tool,
                "type": tools[tool]["type"],
                "label": tools[tool]["label"],
                "x": x0,
                "y": y0,
                "width": round(x1 - x0, 2),
                "height": round(y1 - y0, 2),
                "score": score,
            }
        )
    return out


def model_events(*, workflow: Workflow, limit: int = 50) -> list[ModelEvent]:
    """The registry's history of the workflow, newest first (promotions, refusals, forced, rollbacks)."""
    return list(
        ModelEvent.objects.filter(workflow=workflow).select_related("model_version", "previous", "user")[:limit]
    )


def predicted_dlas(*, workflow: Workflow, subject_id: int) -> list[dict]:
    """The active version's DLA finder on one spectrum: ``[{"z", "log_nhi", "confidence"}]`` by redshift.

    Empty when the workflow's active version has no finder (no agreed absorber marks yet) or
    did not score this spectrum.
    """
    prediction = (
        Prediction.objects.filter(
            subject_id=subject_id, model_version__workflow=workflow, model_version__status=ModelVersion.Status.ACTIVE
        )
        .only("probabilities")
        .first()
    )
    return list((prediction.probabilities.get("dlas") or []) if prediction else [])
