"""Reads for the model page: learning curves, confusion, reliability and live training progress.

Older versions lack some metrics (``reliability``, ``confusion``, ``history``) and
``progress_detail``; every reader here returns None or an empty list for what is missing or
malformed instead of failing, and turns non-finite numbers (a NaN loss) into None, so the
JSON handed to the page is always valid.
"""

from __future__ import annotations

import math
from datetime import datetime

from django.utils import timezone

from labeler.learning.models import ModelVersion
from labeler.workflows.models import Workflow

# The fixed evaluation set's accuracy when the registry measured one, else the validation split's.
ACCURACY_KEYS = ("heldout_accuracy", "val_accuracy", "accuracy")


def finite(value) -> float | None:
    """A float, or None for NaN, infinities and anything not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def held_out_accuracy(version: ModelVersion) -> float | None:
    metrics = version.metrics if isinstance(version.metrics, dict) else {}
    for key in ACCURACY_KEYS:
        value = finite(metrics.get(key))
        if value is not None:
            return value
    return None


def learning_curve(versions: list[ModelVersion]) -> list[dict]:
    """``[{"number", "label_count", "accuracy"}, ...]`` by label count, for versions that measured one."""
    points = [
        {"number": v.number, "label_count": v.label_count, "accuracy": held_out_accuracy(v)}
        for v in versions
        if v.status != ModelVersion.Status.FAILED
    ]
    return sorted((p for p in points if p["accuracy"] is not None), key=lambda p: (p["label_count"], p["number"]))


def epoch_curve(version: ModelVersion) -> list[dict]:
    """Per-epoch ``{"epoch", "train_loss", "val_loss", "val_accuracy"}`` if the metrics carry them
    (``metrics["curve"]``, or ``metrics["history"]`` as ``mlcore.train.fit`` names it)."""
    metrics = version.metrics if isinstance(version.metrics, dict) else {}
    history = metrics.get("curve") or metrics.get("history")
    if not isinstance(history, list):
        return []
    rows = []
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            return []
        epoch = finite(row.get("epoch"))
        rows.append(
            {
                "epoch": epoch if epoch is not None else float(i + 1),
                **{key: finite(row.get(key)) for key in ("train_loss", "val_loss", "val_accuracy")},
            }
        )
    return rows


def confusion(version: ModelVersion) -> dict | None:
    """``{"labels": [K], "matrix": K x K counts}`` (rows: crowd's answer, columns: model's), if well formed."""
    data = (version.metrics or {}).get("confusion") if isinstance(version.metrics, dict) else None
    if not isinstance(data, dict):
        return None
    labels, matrix = data.get("labels"), data.get("matrix")
    if not isinstance(labels, list) or not isinstance(matrix, list) or len(matrix) != len(labels) or not labels:
        return None
    rows = []
    for row in matrix:
        if not isinstance(row, list) or len(row) != len(labels):
            return None
        rows.append([finite(x) or 0.0 for x in row])
    return {"labels": [str(label) for label in labels], "matrix": rows}


def reliability(version: ModelVersion) -> dict | None:
    """``{"confidence", "accuracy", "count"}`` per confidence bin (Guo+2017's reliability diagram)."""
    data = (version.metrics or {}).get("reliability") if isinstance(version.metrics, dict) else None
    if not isinstance(data, dict):
        return None
    columns = [data.get(key) for key in ("confidence", "accuracy", "count")]
    if not all(isinstance(c, list) for c in columns) or len({len(c) for c in columns}) != 1 or not columns[0]:
        return None
    bins = [
        {"confidence": finite(c), "accuracy": finite(a), "count": finite(n) or 0.0}
        for c, a, n in zip(*columns, strict=True)
    ]
    return {
        "confidence": [b["confidence"] for b in bins],
        "accuracy": [b["accuracy"] for b in bins],
        "count": [b["count"] for b in bins],
        "ece": finite(data.get("ece", (version.metrics or {}).get("ece"))),
    }


def scalar_metrics(version: ModelVersion) -> list[tuple[str, float | None]]:
    """The version's numeric metrics by name, one level of nesting flattened ("evaluation.accuracy");
    curves, matrices and text left out."""
    metrics = version.metrics if isinstance(version.metrics, dict) else {}
    flat = []
    for key, value in metrics.items():
        if isinstance(value, dict) and key not in ("reliability", "confusion"):
            flat += [(f"{key}.{sub}", v) for sub, v in value.items()]
        else:
            flat.append((key, value))
    return sorted((key, finite(value)) for key, value in flat if _is_number(value))


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def progress_of(version: ModelVersion, now: datetime | None = None) -> dict:
    """What the progress bar shows: status, fraction, phase/epoch/step and an ETA in seconds.

    The ETA is the worker's own estimate (``progress_detail["eta_s"]``) when it gives one,
    else extrapolated from the time since the run started and the fraction done.
    """
    now = now or timezone.now()
    detail = getattr(version, "progress_detail", None)
    detail = {k: v for k, v in detail.items() if isinstance(k, str)} if isinstance(detail, dict) else {}
    progress = min(1.0, max(0.0, finite(version.progress) or 0.0))
    eta = finite(detail.get("eta_s"))
    if eta is None and version.started_at and 0.0 < progress < 1.0:
        elapsed = (now - version.started_at).total_seconds()
        eta = elapsed * (1.0 - progress) / progress
    return {
        "id": version.id,
        "number": version.number,
        "status": version.status,
        "progress": progress,
        "phase": detail.get("phase") if isinstance(detail.get("phase"), str) else None,
        "epoch": finite(detail.get("epoch")),
        "epochs": finite(detail.get("epochs")),
        "step": finite(detail.get("step")),
        "eta_s": round(eta, 1) if eta is not None else None,
        "heartbeat_at": version.heartbeat_at.isoformat() if version.heartbeat_at else None,
    }


def training_progress(*, workflow: Workflow) -> list[dict]:
    """Versions of the workflow queued, training or evaluating, oldest first (the polling endpoint)."""
    now = timezone.now()
    running = ModelVersion.objects.filter(workflow=workflow, status__in=ModelVersion.IN_PROGRESS).order_by("number")
    return [progress_of(version, now) for version in running]
