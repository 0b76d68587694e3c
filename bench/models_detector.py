"""The detector benchmark (issue #5): mAP@0.5 of the field detector on held-out simulated fields.

Pure mlcore (no Django). Fields come from ``mlcore.simulate.fields`` at its default
difficulty (3 bands, 256 x 256, 10-30 galaxies and 3-12 stars per field with counts
rising to the faint end, 20% of galaxies placed as blends, saturated stars with column
bleeds, half the fields with a satellite or asteroid trail). Training and held-out fields
come from different seeds.

- Training targets: the truth boxes of the objects the simulation flags detectable
  (matched-filter S/N >= 5, the level at which volunteers can see them -- the boxes a
  consensus of volunteers would give); trails as boxes round their segments (padded by
  ``TRAIL_PAD_PX``).
- Detection: galaxies and stars by FCOS; trails by ``find_trails`` (Radon transform of the
  masked S/N image), each reported as the box round its segment.
- ``detector_map50``: VOC mAP@0.5 (all-point interpolation) over galaxy, star and trail on
  the held-out fields, with the objects below S/N 5 marked "difficult" (a detection of one
  is neither rewarded nor penalised; missing one costs nothing) -- a survey's completeness
  limit. ``detector_map50_all``: every simulated object required, however faint.
  ``detector_map30``: the same at IoU 0.3 (localisation vs finding).
  ``detector_map50_fcos_trails``: trails left to FCOS boxes, as before the line finder.
- ``detector_recall50_<class>_snr<lo>_<hi>``: share of true objects in an S/N range with a
  detection of their class at IoU >= 0.5 (any score).
- ``detector_trail_recall``: share of detectable trails whose segment is found within the
  volunteers' line tolerance (``mlcore.average_precision.line_recall``);
  ``detector_trail_false_per_field``: found segments that match no trail.
- ``detector_train_seconds_cpu``: wall time of ``train_detector`` on this machine's CPU;
  ``detector_fields_per_s_cpu``: ``detect`` on the held-out fields (preprocessing included).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mlcore.average_precision import line_recall, mean_average_precision
from mlcore.detect_train import DetectorTrainConfig, train_detector
from mlcore.marks import box_iou
from mlcore.models.detector import FIELD_CLASSES, FieldDetector, detect, truth_objects
from mlcore.simulate.fields import simulate_fields

N_TRAIN = 240
N_TEST = 40
TRAIN_SEED, TEST_SEED = 501, 502
# 12 epochs (DetectorTrainConfig's default) rather than 8: galaxy AP@0.5 0.434 -> 0.454, star 0.838 -> 0.848
# on validation fields (seed 503), for 1.5x the training time.
CONFIG = DetectorTrainConfig(epochs=12, batch_size=8, lr=1e-3, line_classes=("trail",))
PLOT_SCORE = 0.3  # predicted boxes drawn on the example field
SNR_BINS = (5.0, 10.0, 20.0, 50.0, np.inf)


def _targets(sims: list) -> tuple[list[np.ndarray], list[list[str]], list[dict]]:
    """Training boxes/labels (detectable objects only) and evaluation truths (faint ones difficult)."""
    boxes, labels, truths = [], [], []
    for cube, truth in sims:
        field_boxes, field_labels, detectable = truth_objects(truth, cube.shape)
        boxes.append(field_boxes[detectable])
        labels.append([name for name, keep in zip(field_labels, detectable, strict=True) if keep])
        truths.append({"boxes": field_boxes, "labels": field_labels, "difficult": ~detectable})
    return boxes, labels, truths


def _snr_figures(sims: list) -> dict:
    snr = np.array([o["snr"] for _, t in sims for o in (*t["boxes"], *t["lines"])])
    shown = snr[snr >= 5.0]
    return {
        "detector_test_objects": int(snr.size),
        "detector_test_detectable_fraction": float((snr >= 5.0).mean()),
        **{f"detector_test_snr_p{q}": float(np.percentile(shown, q)) for q in (10, 50, 90)},
    }


def _recall_by_snr(sims: list, found: list[dict], truths: list[dict]) -> dict:
    """Per class and S/N range: share of true objects with a same-class detection at IoU >= 0.5."""
    hit: dict[tuple[str, int], list[bool]] = {}
    for (_, truth), pred, true in zip(sims, found, truths, strict=True):
        snr = [o["snr"] for o in (*truth["boxes"], *truth["lines"])]
        for box, name, s in zip(true["boxes"], true["labels"], snr, strict=True):
            k = int(np.searchsorted(SNR_BINS, s, side="right")) - 1
            if k < 0:
                continue
            mine = np.array([label == name for label in pred["labels"]], dtype=bool)
            xyxy = np.array([[box[0], box[1], box[0] + box[2], box[1] + box[3]]])
            theirs = pred["boxes"][mine]
            theirs = np.column_stack([theirs[:, :2], theirs[:, :2] + theirs[:, 2:]]) if len(theirs) else theirs
            hit.setdefault((name, k), []).append(bool(len(theirs)) and bool((box_iou(xyxy, theirs) >= 0.5).any()))
    return {
        f"detector_recall50_{name}_snr{SNR_BINS[k]:g}_{SNR_BINS[k + 1]:g}": float(np.mean(v))
        for (name, k), v in sorted(hit.items())
    }


def _trail_segments(sims: list, found: list[dict]) -> dict:
    ends = ("x1", "y1", "x2", "y2")
    true = [np.array([[t[k] for k in ends] for t in truth["lines"]]).reshape(-1, 4) for _, truth in sims]
    hard = [np.array([not t["detectable"] for t in truth["lines"]], dtype=bool) for _, truth in sims]
    seen = [f["lines"][[label == "trail" for label in f["labels"]]] for f in found]
    result = line_recall(seen, true, hard)
    return {"detector_trail_recall": result["recall"], "detector_trail_false_per_field": result["false_per_image"]}


def evaluate_detector(model: FieldDetector, test_sims: list, results: Path, history: list[dict]) -> dict:
    """Every held-out figure of a trained detector (see the module docstring), and the plot."""
    _, _, truths = _targets(test_sims)
    test_cubes = np.stack([cube for cube, _ in test_sims])
    started = time.perf_counter()
    found = detect(model, test_cubes, line_classes=["trail"])
    detect_seconds = time.perf_counter() - started
    shown = mean_average_precision(found, truths, FIELD_CLASSES)
    loose = mean_average_precision(found, truths, FIELD_CLASSES, iou_threshold=0.3)
    everything = mean_average_precision(
        found, [{**t, "difficult": np.zeros(len(t["labels"]), bool)} for t in truths], FIELD_CLASSES
    )
    fcos_trails = mean_average_precision(detect(model, test_cubes, line_classes=[]), truths, FIELD_CLASSES)
    _plot(results / "detector.png", test_sims, found, history)
    return {
        "detector_map50": shown["map"],
        "detector_map50_all": everything["map"],
        "detector_map30": loose["map"],
        "detector_map50_fcos_trails": fcos_trails["map"],
        "detector_ap50_trail_fcos": fcos_trails["ap"]["trail"],
        **{f"detector_ap50_{name}": ap for name, ap in shown["ap"].items() if ap is not None},
        **{f"detector_ap30_{name}": ap for name, ap in loose["ap"].items() if ap is not None},
        **_recall_by_snr(test_sims, found, truths),
        **_trail_segments(test_sims, found),
        "detector_n_test_fields": len(test_sims),
        "detector_fields_per_s_cpu": len(test_sims) / detect_seconds,
        **_snr_figures(test_sims),
    }


def run_detector(results: Path) -> dict:
    torch.set_num_threads(2)
    results.mkdir(parents=True, exist_ok=True)
    train_sims = simulate_fields(N_TRAIN, TRAIN_SEED)
    test_sims = simulate_fields(N_TEST, TEST_SEED)
    boxes, labels, _ = _targets(train_sims)
    history: list[dict] = []
    started = time.perf_counter()
    model = train_detector(
        np.stack([cube for cube, _ in train_sims]),
        boxes,
        labels,
        CONFIG,
        device=torch.device("cpu"),
        progress=lambda epoch, _, losses: history.append({"epoch": epoch, **losses}),
    )
    train_seconds = time.perf_counter() - started
    return {
        **evaluate_detector(model, test_sims, results, history),
        "detector_train_seconds_cpu": train_seconds,
        "detector_n_train_fields": N_TRAIN,
        "detector_epochs": CONFIG.epochs,
    }


def run(results: Path) -> dict:
    return run_detector(results)


def main(checkpoint: str) -> None:
    """Evaluate a detector saved by ``mlcore.checkpoints`` after this benchmark's training.

    ``python -m bench.models_detector CHECKPOINT_DIR``: its ``meta.json`` metrics must carry
    ``history`` and ``train_seconds_cpu``; writes ``bench/results/models_detector.json``.
    """
    from mlcore.checkpoints import load_checkpoint

    torch.set_num_threads(2)
    results = Path(__file__).resolve().parent / "results"
    model, meta = load_checkpoint(checkpoint, device=torch.device("cpu"))
    metrics = meta["metrics"]
    figures = {
        **evaluate_detector(model, simulate_fields(N_TEST, TEST_SEED), results, metrics["history"]),
        "detector_train_seconds_cpu": metrics["train_seconds_cpu"],
        "detector_n_train_fields": N_TRAIN,
        "detector_epochs": CONFIG.epochs,
    }
    (results / "models_detector.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(json.dumps(figures, indent=2, sort_keys=True))


def _plot(path: Path, sims: list, found: list[dict], history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from mlcore.models.image import asinh_stretch

    i = next((k for k, (_, t) in enumerate(sims) if t["class"] == "trail"), 0)
    cube, truth = sims[i]
    rgb = asinh_stretch(cube[None, ::-1] - np.median(cube, axis=(1, 2))[None, ::-1, None, None])[0]
    fig, (ax, curve) = plt.subplots(1, 2, figsize=(13, 6.2), gridspec_kw={"width_ratios": [1.3, 1]})
    ax.imshow(rgb.transpose(1, 2, 0), origin="lower", interpolation="nearest")  # row 0 at the bottom
    boxes, labels, detectable = truth_objects(truth, cube.shape)
    for (x, y, w, h), keep in zip(boxes, detectable, strict=True):
        style = {"ec": "lime", "ls": "-"} if keep else {"ec": "grey", "ls": ":"}
        ax.add_patch(Rectangle((x, y), w, h, fill=False, lw=1.2, **style))
    colours = {"galaxy": "magenta", "star": "cyan", "trail": "yellow"}
    pred = found[i]
    for line in truth["lines"]:
        ax.plot([line["x1"], line["x2"]], [line["y1"], line["y2"]], color="lime", lw=0.8, ls=":")
    for (x, y, w, h), name, score, (x1, y1, x2, y2) in zip(
        pred["boxes"], pred["labels"], pred["scores"], pred["lines"], strict=True
    ):
        if score >= PLOT_SCORE:
            ax.add_patch(Rectangle((x, y), w, h, fill=False, lw=1.0, ec=colours[name], ls="--"))
            if np.isfinite(x1):
                ax.plot([x1, x2], [y1, y2], color=colours[name], lw=1.2)
    ax.set_title(
        f"held-out field: truth (green; grey dotted S/N<5), predictions with score >= {PLOT_SCORE}\n"
        "(dashed: magenta galaxy, cyan star, yellow trail with its found segment)",
        fontsize=9,
    )
    ax.set_xlabel("x (column)")
    ax.set_ylabel("y (row)")
    epochs = [h["epoch"] for h in history]
    for key in ("loss", "classification", "bbox_regression", "bbox_ctrness"):
        curve.plot(epochs, [h[key] for h in history], marker="o", label=key)
    curve.set_xlabel("epoch")
    curve.set_ylabel("training loss per field")
    curve.set_title("FCOS training losses")
    curve.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1])
