"""The survey-field detector in the learning loop (worker side, torch).

Trains ``mlcore.models.detector.FieldDetector`` (FCOS on EfficientNet-Lite0; Tian et al. 2019)
on the consensus boxes and trails of labelled fields (``Consensus.marks``, one class per
drawing tool: a trail's line becomes a padded box), measures mAP@0.5 (PASCAL VOC,
``mlcore.average_precision``) on the fixed evaluation set's fields against their consensus
boxes, and stores every active field's detections as a Prediction::

    probabilities = {"boxes": [[x0, y0, x1, y1, score, tool_index], ...]}   # array pixels, best first

Acquisition: FCOS has no dropout to sample, so a field's uncertainty is the binary entropy of
its detection scores -- ``entropy`` their sum (nats; ambiguous objects to confirm), ``bald``
their mean, and ``score`` (the priority) the sum: fields with many doubtful detections first.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from labeler.classifications.models import Consensus
from labeler.learning import registry
from labeler.learning.models import ModelVersion, Prediction
from labeler.learning.progress import ProgressReporter
from labeler.subjects.models import Subject
from labeler.subjects.services import subject_load_image
from labeler.workflows.models import SubjectState, Workflow
from mlcore import checkpoints
from mlcore.average_precision import mean_average_precision
from mlcore.detect_train import DetectorTrainConfig, train_detector
from mlcore.models.detector import (
    CHECKPOINT_KIND,
    FieldDetector,
    detect,
    line_to_box,
)

DETECTOR_TOOLS = ("box", "line")
# Few fields make few optimiser steps per epoch: train for at least MIN_STEPS, within these epochs.
DETECTOR_MIN_STEPS = 200
DETECTOR_MIN_EPOCHS = 12
DETECTOR_MAX_EPOCHS = 60
DETECTOR_BATCH = 8
SCORE_BATCH = 8
SCORE_FLOOR = 1e-6


def detector_classes(workflow: Workflow) -> list[tuple[int, str]]:
    """``[(tool index, class name)]`` of the workflow's box and line tools, in tool order (names made unique)."""
    tools = (workflow.task_tree.get("marks") or {}).get("tools", [])
    out, seen = [], set()
    for index, tool in enumerate(tools):
        if tool["type"] in DETECTOR_TOOLS:
            name = tool["label"] if tool["label"] not in seen else f"{tool['label']} ({index})"
            seen.add(name)
            out.append((index, name))
    if not out:
        raise ValueError(f"{workflow} has no box or line drawing tool: there is nothing to detect")
    return out


def consensus_objects(marks: dict, classes: list[tuple[int, str]], shape) -> tuple[np.ndarray, list[str]]:
    """One field's consensus marks -> boxes (n, 4) x, y, width, height and their class names."""
    boxes, labels = [], []
    for index, name in classes:
        tool = (marks or {}).get(str(index)) or {}
        for cluster in tool.get("clusters", []):
            if tool.get("type") == "box":
                boxes.append((cluster["x"], cluster["y"], cluster["width"], cluster["height"]))
            else:
                boxes.append(line_to_box(cluster["x1"], cluster["y1"], cluster["x2"], cluster["y2"], shape))
            labels.append(name)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels


def _cubes(subject_ids: list[int]) -> np.ndarray:
    """(N, B, H, W) fields; they must share one size (one batch of the detector)."""
    subjects = Subject.objects.in_bulk(subject_ids)
    cubes = [subject_load_image(subjects[sid]).cube for sid in subject_ids]
    shapes = {c.shape for c in cubes}
    if len(shapes) > 1:
        raise ValueError(f"fields of different sizes {sorted(shapes)}: the detector trains on one size at a time")
    return np.stack(cubes).astype(np.float32)


def _labelled_fields(workflow: Workflow) -> tuple[list[int], dict[int, dict]]:
    rows = (
        Consensus.objects.filter(workflow=workflow, n_classifications__gte=workflow.label_min_votes)
        .order_by("subject_id")
        .values_list("subject_id", "marks")
    )
    marks = dict(rows)
    return list(marks), marks


def detector_config(n_fields: int, classes: list[str], seed: int, line_class: str | None = None) -> DetectorTrainConfig:
    batches = max(1, math.ceil(n_fields / DETECTOR_BATCH))
    epochs = int(np.clip(math.ceil(DETECTOR_MIN_STEPS / batches), DETECTOR_MIN_EPOCHS, DETECTOR_MAX_EPOCHS))
    warmup = max(1, min(30, epochs * batches // 5))
    return DetectorTrainConfig(
        classes=tuple(classes),
        epochs=epochs,
        batch_size=DETECTOR_BATCH,
        warmup_steps=warmup,
        line_classes=(line_class,) if line_class else (),  # trails found as segments (find_trails)
        seed=seed,
    )


def line_class(workflow: Workflow, classes: list[tuple[int, str]]) -> str | None:
    """The first line tool's class: its streaks are found by the straight-line search, not as FCOS boxes."""
    tools = workflow.task_tree["marks"]["tools"]
    return next((name for index, name in classes if tools[index]["type"] == "line"), None)


def _parent_model(version: ModelVersion, classes: list[str]) -> FieldDetector | None:
    """Fine-tune the active detector when it has the same classes and an intact checkpoint."""
    parent = version.parent
    if parent is None or parent.kind != "detector" or registry.checkpoint_problem(parent):
        return None
    model, _ = checkpoints.load_checkpoint(parent.checkpoint_dir)
    return model if model.classes == classes else None


def detector_train_and_register(*, version: ModelVersion, reporter: ProgressReporter) -> set[int]:
    """Train on consensus boxes of labelled fields outside the evaluation set; returns the training field ids."""
    workflow = version.workflow
    classes = detector_classes(workflow)
    names = [name for _, name in classes]
    labelled_ids, marks = _labelled_fields(workflow)
    held_out = registry.evaluation_set_refresh(workflow=workflow, labelled_ids=labelled_ids)
    train_ids = [sid for sid in labelled_ids if sid not in set(held_out)]
    if not train_ids:
        raise ValueError(f"{workflow} has no labelled field to train the detector on")
    reporter.update("preparing", 0.0, force=True)
    cubes = _cubes(train_ids)
    targets = [consensus_objects(marks[sid], classes, cubes.shape[1:]) for sid in train_ids]
    config = detector_config(len(train_ids), names, version.number, line_class(workflow, classes))
    started, curve = time.perf_counter(), []

    def on_epoch(epoch: int, epochs: int, losses: dict) -> None:
        curve.append({"epoch": epoch, "train_loss": losses.get("loss"), "val_loss": None, "val_accuracy": None})
        reporter.update(
            "training",
            epoch / epochs,
            epoch=epoch,
            epochs=epochs,
            step=epoch * math.ceil(len(train_ids) / config.batch_size),
        )

    reporter.update("training", 0.0, force=True)
    model = train_detector(
        cubes,
        [b for b, _ in targets],
        [labels for _, labels in targets],
        config,
        model=_parent_model(version, names),
        progress=on_epoch,
    )
    reporter.update("evaluating", 0.0, force=True)
    metrics = {
        "n_train": len(train_ids),
        "epochs_run": config.epochs,
        "train_loss": curve[-1]["train_loss"] if curve else None,
        "seconds": time.perf_counter() - started,
        "curve": curve,
        "classes": names,
        "heldout": {"source": "evaluation_set", "n": len(held_out)},
    }
    if held_out:
        report = _map50(model, workflow, held_out, classes)
        metrics.update({"map50": report["map50"], "ap": report["ap"]})
        metrics["evaluation"] = {
            "set_sha": registry.evaluation_set_sha(held_out),
            "n": len(held_out),
            "map50": report["map50"],
        }
    directory = Path(settings.MODEL_ROOT) / f"workflow-{workflow.id}" / f"v{version.number}"
    meta = checkpoints.save_checkpoint(
        directory,
        model.cpu(),
        kind=CHECKPOINT_KIND,
        model_config=model.model_config(),
        layout=model.layout,
        metrics=metrics,
        extra={
            "workflow": workflow.id,
            "model_version": version.number,
            "tools": [i for i, _ in classes],
            "train_config": {k: v for k, v in config.__dict__.items() if k != "classes"},
        },
    )
    version.checkpoint_dir, version.sha256 = str(directory), meta["sha256"]
    version.metrics, version.backbone = meta["metrics"], "efficientnet-lite0-fcos"
    version.trained_at, version.status = timezone.now(), ModelVersion.Status.EVALUATING
    version.save(update_fields=["checkpoint_dir", "sha256", "metrics", "backbone", "trained_at", "status"])
    return set(train_ids)


def _map50(model: FieldDetector, workflow: Workflow, subject_ids: list[int], classes) -> dict:
    """mAP@0.5 of the model's detections against the consensus boxes of these fields."""
    marks = dict(
        Consensus.objects.filter(workflow=workflow, subject_id__in=subject_ids).values_list("subject_id", "marks")
    )
    cubes = _cubes(subject_ids)
    found = detect(model, cubes, batch_size=SCORE_BATCH)
    truths = []
    for sid in subject_ids:
        boxes, labels = consensus_objects(marks.get(sid) or {}, classes, cubes.shape[1:])
        truths.append({"boxes": boxes, "labels": labels})
    result = mean_average_precision(found, truths, [name for _, name in classes], iou_threshold=0.5)
    value = result["map"]
    return {"map50": None if not math.isfinite(value) else float(value), "ap": result["ap"]}


def detector_evaluation(*, version: ModelVersion, subject_ids: list[int]) -> dict:
    """``{"n", "map50"}`` of a registered detector on these fields (sha256-verified checkpoint)."""
    model, _ = checkpoints.load_checkpoint(version.checkpoint_dir)
    return {
        "n": len(subject_ids),
        "map50": _map50(model, version.workflow, subject_ids, detector_classes(version.workflow))["map50"],
    }


def detection_uncertainty(scores: np.ndarray) -> tuple[float, float]:
    """(sum, mean) binary entropy in nats of one field's detection scores; (0, 0) with none."""
    s = np.clip(np.asarray(scores, dtype=np.float64), SCORE_FLOOR, 1 - SCORE_FLOOR)
    if s.size == 0:
        return 0.0, 0.0
    h = -(s * np.log(s) + (1 - s) * np.log(1 - s))
    return float(h.sum()), float(h.mean())


def detector_score_pool(*, model_version: ModelVersion, trained_on: set[int], reporter: ProgressReporter) -> int:
    """Detect objects in every active field and store them as Predictions (no priorities: the registry decides)."""
    workflow = model_version.workflow
    model, meta = checkpoints.load_checkpoint(model_version.checkpoint_dir)
    tool_of = dict(zip(model.classes, meta["tools"], strict=True))
    subject_ids = list(
        SubjectState.objects.filter(workflow=workflow, status=SubjectState.Status.ACTIVE)
        .order_by("id")
        .values_list("subject_id", flat=True)
    )
    for start in range(0, len(subject_ids), SCORE_BATCH):
        chunk = subject_ids[start : start + SCORE_BATCH]
        rows = []
        for sid in chunk:  # one at a time: fields may differ in size
            found = detect(model, _cubes([sid]))[0]
            total, mean = detection_uncertainty(found["scores"])
            boxes = [
                [
                    round(float(x), 2),
                    round(float(y), 2),
                    round(float(x + w), 2),
                    round(float(y + h), 2),
                    round(float(score), 4),
                    tool_of[label],
                ]
                for (x, y, w, h), label, score in zip(found["boxes"], found["labels"], found["scores"], strict=True)
            ]
            rows.append(
                Prediction(
                    model_version=model_version,
                    subject_id=sid,
                    probabilities={"boxes": boxes},
                    entropy=total,
                    bald=mean,
                    score=total,
                    in_training=sid in trained_on,
                )
            )
        with transaction.atomic():
            Prediction.objects.filter(model_version=model_version, subject_id__in=chunk).delete()
            Prediction.objects.bulk_create(rows, batch_size=1000)
        reporter.update("scoring", (start + len(chunk)) / max(1, len(subject_ids)), step=start + len(chunk))
    return len(subject_ids)
