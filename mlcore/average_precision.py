"""Mean average precision of box detections, as in the PASCAL VOC challenge (Everingham et al. 2010).

Per class, detections from all images are ranked by score; each is a true positive when
its best-overlapping ground-truth box of that class in the same image (IoU >= the
threshold) has not already been claimed by a higher-scoring detection, otherwise a false
positive. Ground truth flagged "difficult" (here: objects below the simulation's
detection threshold) is neither required nor penalised: a detection whose best match is
difficult is ignored, and difficult boxes do not count in the recall. AP is the area
under the precision-recall curve after making precision monotone (the "all-point
interpolation" of VOC 2010 onwards); mAP is the mean over classes that have
ground truth.

Trails are also scored as segments (``line_recall``): a found segment matches a true one
when their endpoints (in the better order) lie within the tolerance volunteers' lines are
clustered with in ``mlcore.marks`` (4 px + 10% of the length) -- an axis-aligned box says
little about a diagonal streak.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlcore.marks import LINE_TOL_FRAC, LINE_TOL_PX, box_iou, line_distance


def xywh_to_xyxy(boxes) -> np.ndarray:
    """(N, 4) x, y, width, height -> (N, 4) x1, y1, x2, y2."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack([boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]])


def interpolated_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision-recall curve with precision made non-increasing (VOC 2010+).

    ``recall`` and ``precision`` are cumulative values down a score-ranked list.
    """
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope: best precision at this recall or beyond
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _class_ap(predictions: Sequence[dict], truths: Sequence[dict], name: str, iou_threshold: float) -> float | None:
    gt_boxes, gt_difficult = [], []
    n_required = 0
    for truth in truths:
        keep = np.array([label == name for label in truth["labels"]], dtype=bool)
        difficult = np.asarray(truth.get("difficult", np.zeros(len(keep), bool)), dtype=bool).reshape(-1)
        gt_boxes.append(xywh_to_xyxy(truth["boxes"])[keep])
        gt_difficult.append(difficult[keep])
        n_required += int((~difficult[keep]).sum())
    if n_required == 0:
        return None
    ranked = []  # (score, image, box)
    for i, pred in enumerate(predictions):
        boxes = xywh_to_xyxy(pred["boxes"])
        for box, label, score in zip(boxes, pred["labels"], pred["scores"], strict=True):
            if label == name:
                ranked.append((-float(score), i, box))
    ranked.sort(key=lambda item: item[:2])
    claimed = [np.zeros(len(b), dtype=bool) for b in gt_boxes]
    outcome = []  # 1 true positive, 0 false positive; ignored detections are left out
    for _, i, box in ranked:
        if len(gt_boxes[i]) == 0:
            outcome.append(0)
            continue
        overlaps = box_iou(box[None, :], gt_boxes[i])[0]
        best = int(np.argmax(overlaps))
        if overlaps[best] < iou_threshold:
            outcome.append(0)
        elif gt_difficult[i][best]:
            continue
        elif claimed[i][best]:
            outcome.append(0)  # a duplicate detection of an object already found
        else:
            claimed[i][best] = True
            outcome.append(1)
    hits = np.asarray(outcome, dtype=np.float64)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1) if len(hits) else np.zeros(0)
    return interpolated_ap(tp / n_required, precision)


def mean_average_precision(
    predictions: Sequence[dict],
    truths: Sequence[dict],
    classes: Sequence[str],
    iou_threshold: float = 0.5,
) -> dict:
    """mAP over ``classes`` for a set of images.

    Parameters
    ----------
    predictions : one dict per image: ``"boxes"`` (n, 4) x, y, width, height, ``"labels"``
        (n class names), ``"scores"`` (n,)
    truths : one dict per image, same order: ``"boxes"`` (m, 4), ``"labels"`` (m names),
        optional ``"difficult"`` (m,) bool
    classes : the classes to average over
    iou_threshold : 0.5 for mAP@0.5

    Returns
    -------
    dict: ``"map"`` (NaN when no class has ground truth) and ``"ap"`` {class: AP, or
    None for a class without ground truth (left out of the mean)}.
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} prediction lists for {len(truths)} images")
    per_class = {name: _class_ap(predictions, truths, name, iou_threshold) for name in classes}
    scored = [ap for ap in per_class.values() if ap is not None]
    return {"map": float(np.mean(scored)) if scored else float("nan"), "ap": per_class}


def line_recall(found: Sequence[np.ndarray], truths: Sequence[np.ndarray], difficult: Sequence[np.ndarray]) -> dict:
    """Share of required true segments matched by a found one (each found segment matches once).

    Parameters
    ----------
    found : per image, (n, 4) x1, y1, x2, y2, best first
    truths : per image, (m, 4) x1, y1, x2, y2
    difficult : per image, (m,) bool: not required, and a found segment matching one is neither hit nor false

    Returns
    -------
    dict: ``"recall"`` (NaN without required segments), ``"n_required"``, ``"n_found"``,
    ``"false_per_image"`` (found segments matching no true one, per image).
    """
    if not len(found) == len(truths) == len(difficult):
        raise ValueError(f"{len(found)} found lists, {len(truths)} truth lists, {len(difficult)} difficult lists")
    hits = required = false = total = 0
    for seen, true, hard in zip(found, truths, difficult, strict=True):
        seen = np.asarray(seen, dtype=np.float64).reshape(-1, 4)
        true = np.asarray(true, dtype=np.float64).reshape(-1, 4)
        hard = np.asarray(hard, dtype=bool).reshape(-1)
        required += int((~hard).sum())
        total += len(seen)
        claimed = np.zeros(len(true), dtype=bool)
        for segment in seen:
            if len(true) == 0:
                false += 1
                continue
            gap = line_distance(np.vstack([segment, true]))[0, 1:]
            true_length = np.hypot(true[:, 2] - true[:, 0], true[:, 3] - true[:, 1])
            length = (np.hypot(*(segment[2:] - segment[:2])) + true_length) / 2
            close = (gap <= LINE_TOL_PX + LINE_TOL_FRAC * length) & ~claimed
            if not close.any():
                false += 1
                continue
            best = int(np.flatnonzero(close)[np.argmin(gap[close])])
            claimed[best] = True
            hits += int(not hard[best])
    return {
        "recall": hits / required if required else float("nan"),
        "n_required": required,
        "n_found": total,
        "false_per_image": false / max(len(found), 1),
    }
