"""The detector benchmark (issue #5): mAP@0.5 of the field detector on held-out simulated fields.

Pure mlcore (no Django). Fields come from ``mlcore.simulate.fields`` at its default
difficulty (3 bands, 256 x 256, 10-30 galaxies and 3-12 stars per field with counts
rising to the faint end, 20% of galaxies placed as blends, saturated stars with column
bleeds, half the fields with a satellite or asteroid trail). Training and held-out fields
come from different seeds.

- Training targets: the truth boxes of the objects the simulation flags detectable
  (matched-filter S/N >= 5, the level at which volunteers can see them -- the boxes a
  consensus of volunteers would give); trails as boxes round their segments.
- ``detector_map50``: VOC mAP@0.5 over galaxy, star and trail on the held-out fields, with
  the objects below S/N 5 marked "difficult" (a detection of one is neither rewarded nor
  penalised; missing one costs nothing). ``detector_map50_all``: every simulated object
  required, however faint.
- ``detector_train_seconds_cpu``: wall time of ``train_detector`` on this machine's CPU;
  ``detector_fields_per_s_cpu``: ``detect`` on the held-out fields (preprocessing included).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mlcore.average_precision import mean_average_precision
from mlcore.models.detector import FIELD_CLASSES, DetectorTrainConfig, detect, train_detector, truth_objects
from mlcore.simulate.fields import simulate_fields

N_TRAIN = 240
N_TEST = 40
TRAIN_SEED, TEST_SEED = 501, 502
CONFIG = DetectorTrainConfig(epochs=8, batch_size=8, lr=1e-3)
PLOT_SCORE = 0.3  # predicted boxes drawn on the example field


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


def run_detector(results: Path) -> dict:
    torch.set_num_threads(2)
    results.mkdir(parents=True, exist_ok=True)
    train_sims = simulate_fields(N_TRAIN, TRAIN_SEED)
    test_sims = simulate_fields(N_TEST, TEST_SEED)
    boxes, labels, _ = _targets(train_sims)
    _, _, truths = _targets(test_sims)
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
    test_cubes = np.stack([cube for cube, _ in test_sims])
    started = time.perf_counter()
    found = detect(model, test_cubes)
    detect_seconds = time.perf_counter() - started
    shown = mean_average_precision(found, truths, FIELD_CLASSES)
    everything = mean_average_precision(
        found, [{**t, "difficult": np.zeros(len(t["labels"]), bool)} for t in truths], FIELD_CLASSES
    )
    _plot(results / "detector.png", test_sims, found, history)
    return {
        "detector_map50": shown["map"],
        "detector_map50_all": everything["map"],
        **{f"detector_ap50_{name}": ap for name, ap in shown["ap"].items() if ap is not None},
        "detector_train_seconds_cpu": train_seconds,
        "detector_n_train_fields": N_TRAIN,
        "detector_n_test_fields": N_TEST,
        "detector_epochs": CONFIG.epochs,
        "detector_fields_per_s_cpu": N_TEST / detect_seconds,
        **_snr_figures(test_sims),
    }


def run(results: Path) -> dict:
    return run_detector(results)


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
    for (x, y, w, h), name, score in zip(pred["boxes"], pred["labels"], pred["scores"], strict=True):
        if score >= PLOT_SCORE:
            ax.add_patch(Rectangle((x, y), w, h, fill=False, lw=1.0, ec=colours[name], ls="--"))
    ax.set_title(
        f"held-out field: truth (green; grey dotted S/N<5), predictions with score >= {PLOT_SCORE}\n"
        "(dashed: magenta galaxy, cyan star, yellow trail)",
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
