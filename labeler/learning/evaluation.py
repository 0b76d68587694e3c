"""Scoring a model version on held-out subjects (worker side, torch): what the registry compares.

``model_version_evaluation`` is cached in ``metrics["evaluation"]`` under the evaluation
set's checksum, so the active version is evaluated once per set, not at every promotion.
"""

from __future__ import annotations

import numpy as np

from labeler.learning import datasets, registry
from labeler.learning.models import ModelVersion
from labeler.workflows.models import Workflow
from mlcore import checkpoints
from mlcore.calibration import calibrate_probs, heldout_report
from mlcore.predict import mc_dropout_probs, question_slice


def root_probabilities(model, X: np.ndarray, layout, workflow: Workflow, temperatures: dict | None, seed: int):
    """(N, K) MC-dropout mean probabilities of the root question, temperature-scaled when fitted."""
    probs = mc_dropout_probs(model, X, layout, n_samples=workflow.mc_samples, seed=seed)  # (N, A, S)
    if temperatures:
        probs = calibrate_probs(probs, temperatures, layout)
    return probs.mean(axis=2)[:, question_slice(layout, workflow.task_tree["first"])]


def question_report(model, version: ModelVersion, layout, subject_ids: list[int], temperatures: dict | None) -> dict:
    """``mlcore.calibration.heldout_report`` of the root question on these subjects, plus ``n``.

    Truth is the gold answer where known, else the crowd's majority; subjects with neither
    are left out. Raises ValueError when none is left, or when this worker cannot compute
    the features the version was trained on.
    """
    workflow = version.workflow
    labels = registry.evaluation_labels(workflow=workflow, subject_ids=subject_ids)
    ids = [sid for sid, label in zip(subject_ids, labels, strict=True) if label >= 0]
    if not ids:
        raise ValueError("no held-out subject has a root-question label")
    X, _ = datasets.features(workflow, ids, trained_on=version.backbone)
    probs = root_probabilities(model, X, layout, workflow, temperatures, seed=version.number)
    return {"n": len(ids), **heldout_report(probs, labels[labels >= 0])}


def model_version_evaluation(*, model_version: ModelVersion, subject_ids: list[int]) -> dict:
    """``{"set_sha", "n", "accuracy", "log_loss"}`` (``"map50"`` for detectors) on these subjects.

    Loads the checkpoint (sha256-verified: a tampered file raises ValueError).
    """
    version = ModelVersion.objects.select_related("workflow").get(pk=model_version.pk)
    sha = registry.evaluation_set_sha(subject_ids)
    cached = version.metrics.get("evaluation") or {}
    if cached.get("set_sha") == sha:
        return cached
    if version.kind == "detector":
        from labeler.learning import detection

        result = detection.detector_evaluation(version=version, subject_ids=subject_ids)
    else:
        model, meta = checkpoints.load_checkpoint(version.checkpoint_dir)
        layout = [tuple(x) for x in meta["layout"]]
        report = question_report(model, version, layout, subject_ids, version.metrics.get("temperatures"))
        result = {k: report[k] for k in ("n", "accuracy", "log_loss")}
    result = {"set_sha": sha, **result}
    version.metrics = {**version.metrics, "evaluation": result}
    ModelVersion.objects.filter(pk=version.pk).update(metrics=version.metrics)
    model_version.metrics = version.metrics
    return result
