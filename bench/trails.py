"""The trail finder on its own (issue #5, detector): trail AP@0.5, segment recall and false segments.

``detector_ap50_trail`` of ``bench.models_detector`` comes from ``find_trails`` alone (FCOS
does not report trails), so the finder is tuned here without training FCOS: on fields
simulated with ``TUNE_SEED`` (not the benchmark's held-out seed), then measured once on the
benchmark's own held-out fields (``TEST_SEED``, ``N_TEST``) so the figure is comparable.

- ``*_ap50_trail``: VOC AP@0.5 of the trail class, scored exactly as ``evaluate_detector``
  scores it: each found segment becomes ``line_to_box`` of it with the score ``detect``
  gives it, and trails below S/N 5 are "difficult";
- ``*_trail_recall`` and ``*_trail_false_per_field``: ``line_recall`` of the segments
  (the volunteers' line tolerance);
- ``*_recall50_trail_snr<lo>_<hi>``: share of true trails in an S/N range with a found box
  at IoU >= 0.5;
- ``trails_fields_per_s_cpu``: ``find_trails`` on one thread, with the load average beside it.

``python bench/run.py trails`` writes ``bench/results/trails.json``; ``python -m bench.trails``
prints the tuning fields' figures alone and leaves the held-out fields untouched (for tuning).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from bench.models_detector import N_TEST, SNR_BINS, TEST_SEED
from mlcore.average_precision import line_recall, mean_average_precision
from mlcore.marks import box_iou
from mlcore.models.detector import TRAIL_SCORE_SNR, line_to_box, truth_objects
from mlcore.simulate.fields import simulate_fields
from mlcore.trails import find_trails

TUNE_SEED = 601
N_TUNE = 120  # 3 x the held-out set: about 70 trails to tune on
ENDS = ("x1", "y1", "x2", "y2")


def found_trails(sims: list) -> tuple[list[dict], float]:
    """``find_trails`` on every field as ``detect`` reports it (boxes, scores, lines), and the seconds it took."""
    found = []
    started = time.perf_counter()
    for cube, _ in sims:
        trails = find_trails(cube)
        lines = np.array([[t[k] for k in ENDS] for t in trails]).reshape(-1, 4)
        found.append(
            {
                "boxes": np.array([line_to_box(*line, cube.shape) for line in lines]).reshape(-1, 4),
                "labels": ["trail"] * len(trails),
                "scores": np.array([t["snr"] / (t["snr"] + TRAIL_SCORE_SNR) for t in trails]),
                "lines": lines,
            }
        )
    return found, time.perf_counter() - started


def trail_figures(sims: list, found: list[dict], prefix: str) -> dict:
    """AP@0.5 and @0.3 of the trail class, segment recall, false segments per field, recall by S/N."""
    truths = []
    for cube, truth in sims:
        boxes, labels, detectable = truth_objects(truth, cube.shape)
        truths.append({"boxes": boxes, "labels": labels, "difficult": ~detectable})
    true_lines = [np.array([[t[k] for k in ENDS] for t in truth["lines"]]).reshape(-1, 4) for _, truth in sims]
    hard = [np.array([not t["detectable"] for t in truth["lines"]], dtype=bool) for _, truth in sims]
    segments = line_recall([f["lines"] for f in found], true_lines, hard)
    return {
        f"{prefix}_ap50_trail": mean_average_precision(found, truths, ("trail",))["ap"]["trail"],
        f"{prefix}_ap30_trail": mean_average_precision(found, truths, ("trail",), iou_threshold=0.3)["ap"]["trail"],
        f"{prefix}_trail_recall": segments["recall"],
        f"{prefix}_trail_false_per_field": segments["false_per_image"],
        f"{prefix}_n_trails_required": segments["n_required"],
        f"{prefix}_n_fields": len(sims),
        **_recall_by_snr(sims, found, prefix),
    }


def _recall_by_snr(sims: list, found: list[dict], prefix: str) -> dict:
    hit: dict[int, list[bool]] = {}
    for (cube, truth), pred in zip(sims, found, strict=True):
        theirs = np.column_stack([pred["boxes"][:, :2], pred["boxes"][:, :2] + pred["boxes"][:, 2:]])
        for line in truth["lines"]:
            k = int(np.searchsorted(SNR_BINS, line["snr"], side="right")) - 1
            if k < 0:
                continue
            x, y, w, h = line_to_box(*(line[e] for e in ENDS), cube.shape)
            matched = len(theirs) > 0 and bool((box_iou(np.array([[x, y, x + w, y + h]]), theirs) >= 0.5).any())
            hit.setdefault(k, []).append(matched)
    return {
        f"{prefix}_recall50_trail_snr{SNR_BINS[k]:g}_{SNR_BINS[k + 1]:g}": float(np.mean(v))
        for k, v in sorted(hit.items())
    }


def evaluate(seed: int, n: int, prefix: str) -> dict:
    sims = simulate_fields(n, seed)
    load = os.getloadavg()[0]
    found, seconds = found_trails(sims)
    return {
        **trail_figures(sims, found, prefix),
        f"{prefix}_fields_per_s_cpu": n / seconds,
        f"{prefix}_loadavg_1min": load,
    }


def run(results: Path) -> dict:
    """Tuning fields, then the benchmark's held-out ones (``bench/run.py trails`` writes trails.json)."""
    return {**evaluate(TUNE_SEED, N_TUNE, "trails_tune"), **evaluate(TEST_SEED, N_TEST, "trails_test")}


def main() -> None:
    """``python -m bench.trails``: the tuning fields alone, printed (nothing written)."""
    print(json.dumps(evaluate(TUNE_SEED, N_TUNE, "trails_tune"), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
