"""The models benchmark (issue #5): does the image CNN earn trust? Merges the spectrum and detector figures.

Pure mlcore (no Django). One simulated sky (``sky.simulate_cutouts``, default class
weights and difficulty: S/N log-uniform in [5, 300], seeing 1.0-1.4", half-light radii
down to 0.5"; the ``snr_p*`` figures give the test set's S/N quantiles), one crowd
(``make_crowd``: 10% spammers, 10% careless, 10% experts, 70% typical), the full
GALAXY_TREE (5 questions, 13 answers):

- train: N_TRAIN cutouts, VOTES_TRAIN simulated votes each (about what skill-weighted
  consensus needs per subject, bench/results/consensus.json), as the loop would have them;
- calibration: N_CAL other cutouts with VOTES_CAL votes; the temperature of each
  question (Guo+2017) is fitted against the consensus (majority) answer, as the loop
  would have it for retired subjects; never used for training or early stopping;
- test: N_TEST other cutouts with VOTES_TEST votes (GZ2's budget), scored against the
  simulation's truth.

Figures ("_cpu" on a CPU, "_gpu" where CUDA runs the bench):
- image_accuracy_all: root question (T0) accuracy vs truth on every test subject, of the
  loop's model: a QuestionHead on frozen EfficientNet-Lite0 embeddings trained on all
  N_TRAIN subjects, MC-dropout mean (15 passes); image_accuracy_<task> per question on
  the test subjects whose true path reaches it.
- image_accuracy_high_agreement: the same on test subjects where at least
  HIGH_AGREEMENT of the VOTES_TEST volunteers chose the same root answer (Dieleman+2015
  used GZ2 subjects whose vote fraction was >= 0.8); image_high_agreement_share is their
  share of the test set; image_accuracy_high_agreement_vs_crowd compares with the
  crowd's answer instead of the truth, as Dieleman+2015 did.
- image_ece / image_ece_uncalibrated: 15-bin top-label ECE on T0 vs truth, with and
  without the fitted temperature (image_temperature_T0).
- head_retrain_seconds: ``mlcore.train.fit`` of the head on the cached embeddings of
  N_TRAIN = 10^4 labelled subjects (early stopping; epochs in head_retrain_epochs).
- finetune_seconds, image_accuracy_finetuned: ``mlcore.finetune`` on the first
  N_FINETUNE training subjects (epochs: finetune_epochs_run, best finetune_best_epoch),
  including the dihedral feature cache; image_accuracy_head_same_subjects is the head
  alone on the same subjects, for comparison.
- inference_cutouts_per_s: N_INFER 64x64x3 FITS files on disk -> read (mlcore.io) ->
  frozen backbone -> MC-dropout head (15) with the temperature -> rows in a sqlite table;
  ``bench.inference.inference_throughput``, which also reports it per CPU-second and the
  load average (the stage breakdown is ``bench/run.py inference``).
- pool_rescoring_per_s: cached embeddings of N_TRAIN subjects -> MC-dropout head (15 samples,
  ``mlcore.inference.mc_head_probs``), what the loop re-runs after every retraining.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlcore.acquisition import layout_slices, layout_width
from mlcore.calibration import calibrate_probs, expected_calibration_error, fit_temperature, reliability_curve
from mlcore.device import best_device
from mlcore.finetune import FinetuneConfig, finetune_image_model, save_backbone_weights
from mlcore.inference import mc_head_probs
from mlcore.models.image import BackboneConfig, ImageBackbone, QuestionHead
from mlcore.predict import question_slice
from mlcore.simulate import sky
from mlcore.simulate.volunteers import make_crowd, simulated_annotation
from mlcore.tasktree import label_layout
from mlcore.train import TrainConfig, fit

N_TRAIN, N_CAL, N_TEST = 10_000, 1_000, 2_000
VOTES_TRAIN, VOTES_CAL, VOTES_TEST = 10, 10, 40
N_FINETUNE = 2_000
N_INFER = 2_000
N_VOLUNTEERS = 300
HIGH_AGREEMENT = 0.8
CURVE_SIZES = (250, 500, 1000, 2000, 5000, N_TRAIN)
MC_SAMPLES = 15
SEED = 505
CPU_THREADS = 2  # the CPU figures are for 2 cores
TREE = sky.GALAXY_TREE
LAYOUT = label_layout(TREE)
LAYOUT_WIDTH = layout_width(LAYOUT)
ROOT = TREE["first"]


@dataclass(frozen=True)
class Split:
    cubes: np.ndarray  # (N, 3, 64, 64)
    embeddings: np.ndarray  # (N, 1280) frozen backbone
    counts: np.ndarray  # (N, A) simulated votes
    truth: np.ndarray  # (N, A) one-hot true path (zeros on questions the truth never reaches)
    snr: np.ndarray  # (N,)


def run(results: Path) -> dict:
    results.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(CPU_THREADS)
    device = best_device()
    suffix = "cpu" if device.type == "cpu" else "gpu"
    train, cal, test = _simulate(device)
    figures: dict[str, float] = {f"snr_p{q}": float(np.percentile(test.snr, q)) for q in (10, 50, 90)}

    curve, main = _learning_curve(train, test, device)
    head = main["head"]
    temps = fit_temperature(_log(_mc_mean(head, cal.embeddings, device)), _consensus(cal), LAYOUT)
    probs = _mc_mean(head, test.embeddings, device)
    calibrated = calibrate_probs(probs, temps, LAYOUT)
    figures.update(_accuracy_figures(calibrated, test))
    root_cols, root_truth = question_slice(LAYOUT, ROOT), test.truth[:, question_slice(LAYOUT, ROOT)].argmax(1)
    figures["image_ece"] = expected_calibration_error(calibrated[:, root_cols], root_truth)
    figures["image_ece_uncalibrated"] = expected_calibration_error(probs[:, root_cols], root_truth)
    figures.update({f"image_temperature_{task}": t for task, t in temps.items()})
    figures[f"head_retrain_seconds_{suffix}"] = main["seconds"]
    figures["head_retrain_epochs"] = main["epochs"]
    figures["head_retrain_subjects"] = float(N_TRAIN)

    finetuned = _finetune(train, test, device, suffix)
    figures.update(finetuned)
    figures["image_accuracy_head_same_subjects"] = curve[N_FINETUNE]
    figures.update(_inference_throughput(test, head, temps, device, suffix))
    figures[f"pool_rescoring_per_s_{suffix}"] = _rescoring_throughput(head, train.embeddings, device)

    _plot_reliability(results / "models_reliability.png", probs[:, root_cols], calibrated[:, root_cols], root_truth)
    _plot_learning_curve(
        results / "models_learning_curve.png", curve, finetuned["image_accuracy_finetuned"], main["history"]
    )
    figures.update(_other_models(results))
    return figures


# ---------------------------------------------------------------- the simulated sky and crowd


def _cache_dir() -> Path:
    return Path(os.environ.get("SKYLOOP_VAR_DIR", "var")) / "bench-models-cache"


def _simulate(device: torch.device) -> tuple[Split, Split, Split]:
    """Cutouts + frozen embeddings (cached on disk: simulating and embedding 13,000 cutouts is
    the slowest step and not what is measured), then the crowd's votes."""
    n = N_TRAIN + N_CAL + N_TEST
    path = _cache_dir() / f"sky-{SEED}-{n}.npz"
    if path.exists():
        data = np.load(path, allow_pickle=False)
        cubes, embeddings, classes, difficulty, snr = (data[k] for k in ("cubes", "emb", "cls", "diff", "snr"))
    else:
        cutouts = sky.simulate_cutouts(n, SEED)
        cubes = np.stack([cube for cube, _ in cutouts])
        classes = np.array([t["class"] for _, t in cutouts])
        difficulty = np.array([t["difficulty"] for _, t in cutouts])
        snr = np.array([t["snr"] for _, t in cutouts])
        embeddings = ImageBackbone(device=device).embed(cubes)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, cubes=cubes, emb=embeddings, cls=classes, diff=difficulty, snr=snr)
    rng = np.random.default_rng(SEED)
    crowd = make_crowd(N_VOLUNTEERS, rng, spammer_fraction=0.1, careless_fraction=0.1, expert_fraction=0.1)
    bounds = np.cumsum([0, N_TRAIN, N_CAL, N_TEST])
    splits = []
    for (lo, hi), votes in zip(
        zip(bounds[:-1], bounds[1:], strict=True), (VOTES_TRAIN, VOTES_CAL, VOTES_TEST), strict=True
    ):
        counts = np.stack([_votes(crowd, classes[i], difficulty[i], votes, rng) for i in range(lo, hi)])
        truth = np.stack([_truth_path(c) for c in classes[lo:hi]])
        splits.append(Split(cubes[lo:hi], embeddings[lo:hi], counts, truth, snr[lo:hi]))
    return tuple(splits)


def _columns() -> dict[str, int]:
    return {task: cols.start for task, cols in layout_slices(LAYOUT)}


def _votes(crowd, cls: str, difficulty: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """(A,) vote counts of ``n`` distinct random volunteers walking the tree."""
    start = _columns()
    counts = np.zeros(LAYOUT_WIDTH, dtype=np.float32)
    for v in rng.choice(len(crowd), n, replace=False):
        for step in simulated_annotation(crowd[v], TREE, sky.CLASS_ANSWERS, cls, difficulty, rng):
            counts[start[step["task"]] + step["answer"]] += 1
    return counts


def _truth_path(cls: str) -> np.ndarray:
    start = _columns()
    row = np.zeros(LAYOUT_WIDTH, dtype=np.float32)
    for task, answer in sky.CLASS_ANSWERS[cls].items():
        row[start[task] + answer] = 1
    return row


def _consensus(split: Split) -> np.ndarray:
    """(N, A) one-hot majority answer per question reached by any vote (ties: the first answer)."""
    out = np.zeros_like(split.counts)
    for _, cols in layout_slices(LAYOUT):
        block = split.counts[:, cols]
        reached = block.sum(axis=1) > 0
        out[np.flatnonzero(reached), cols.start + block[reached].argmax(axis=1)] = 1
    return out


# ---------------------------------------------------------------- models and figures


def _train_head(x: np.ndarray, counts: np.ndarray, device: torch.device) -> dict:
    torch.manual_seed(SEED)
    head = QuestionHead(x.shape[1], LAYOUT)
    started = time.perf_counter()
    result = fit(head, x, counts, LAYOUT, TrainConfig(seed=SEED), device=device)
    return {
        "head": result.model,
        "seconds": time.perf_counter() - started,
        "epochs": result.metrics["epochs_run"],
        "history": result.history,
    }


def _mc_mean(head, x: np.ndarray, device: torch.device) -> np.ndarray:
    return mc_head_probs(head, x, LAYOUT, n_samples=MC_SAMPLES, device=device, seed=SEED).mean(axis=2)


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, 1e-7, 1.0))


def _root_accuracy(probs: np.ndarray, split: Split) -> float:
    cols = question_slice(LAYOUT, ROOT)
    return float((probs[:, cols].argmax(1) == split.truth[:, cols].argmax(1)).mean())


def _learning_curve(train: Split, test: Split, device) -> tuple[dict[int, float], dict]:
    """{n: T0 test accuracy of a head on the first n training subjects}, and the n = N_TRAIN run."""
    curve, main = {}, {}
    for n in CURVE_SIZES:
        trained = _train_head(train.embeddings[:n], train.counts[:n], device)
        curve[n] = _root_accuracy(_mc_mean(trained["head"], test.embeddings, device), test)
        main = trained
    return curve, main


def _accuracy_figures(probs: np.ndarray, test: Split) -> dict[str, float]:
    cols = question_slice(LAYOUT, ROOT)
    votes = test.counts[:, cols]
    agreement = votes.max(axis=1) / votes.sum(axis=1)
    high = agreement >= HIGH_AGREEMENT
    predicted, truth, crowd = probs[:, cols].argmax(1), test.truth[:, cols].argmax(1), votes.argmax(1)
    figures = {
        "image_accuracy_all": float((predicted == truth).mean()),
        "image_accuracy_high_agreement": float((predicted[high] == truth[high]).mean()),
        "image_accuracy_high_agreement_vs_crowd": float((predicted[high] == crowd[high]).mean()),
        "image_high_agreement_share": float(high.mean()),
        "image_crowd_accuracy_high_agreement": float((crowd[high] == truth[high]).mean()),
    }
    for task, q in layout_slices(LAYOUT):
        reached = test.truth[:, q].sum(axis=1) > 0
        figures[f"image_accuracy_{task}"] = float(
            (probs[reached, q].argmax(1) == test.truth[reached, q].argmax(1)).mean()
        )
    return figures


def _finetune(train: Split, test: Split, device: torch.device, suffix: str) -> dict[str, float]:
    torch.manual_seed(SEED)
    config = FinetuneConfig(head=TrainConfig(seed=SEED))
    model, metrics = finetune_image_model(
        train.cubes[:N_FINETUNE], train.counts[:N_FINETUNE], LAYOUT, config, device=device
    )
    with tempfile.TemporaryDirectory() as tmp:  # the production path: weights file -> ImageBackbone
        weights = save_backbone_weights(model, Path(tmp) / "backbone.pt")
        embeddings = ImageBackbone(BackboneConfig(weights_path=str(weights)), device=device).embed(test.cubes)
    return {
        "image_accuracy_finetuned": _root_accuracy(_mc_mean(model.head, embeddings, device), test),
        f"finetune_seconds_{suffix}": metrics["seconds"],
        "finetune_subjects": float(N_FINETUNE),
        "finetune_epochs_run": metrics["epochs_run"],
        "finetune_best_epoch": metrics["best_epoch"],
        "finetune_val_accuracy": metrics["val_accuracy"],
        "finetune_head_val_accuracy": metrics["head_val_accuracy"],
    }


def _inference_throughput(test: Split, head, temps: dict, device: torch.device, suffix: str) -> dict[str, float]:
    """FITS files on disk -> scores in a sqlite table, end to end (``bench.inference``'s path)."""
    from bench.inference import inference_throughput, write_cutout_files

    cubes = test.cubes[np.arange(N_INFER) % len(test.cubes)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_cutout_files(cubes, tmp)
        backbone = ImageBackbone(BackboneConfig(cpu_precision="auto"), device=device)  # the platform's default
        return inference_throughput(paths, backbone, head, LAYOUT, temps, suffix=suffix)


def _rescoring_throughput(head, embeddings: np.ndarray, device: torch.device) -> float:
    started = time.perf_counter()
    mc_head_probs(head, embeddings, LAYOUT, n_samples=MC_SAMPLES, device=device, seed=SEED)
    return len(embeddings) / (time.perf_counter() - started)


def _other_models(results: Path) -> dict[str, float]:
    """The spectrum network's and the detector's figures, from their own bench modules."""
    from bench.models_detector import run_detector
    from bench.models_dla import run_dla

    return {**run_dla(results), **run_detector(results)}


# ---------------------------------------------------------------- plots


def _plot_reliability(path: Path, raw: np.ndarray, calibrated: np.ndarray, truth: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.plot([0, 1], [0, 1], color="k", ls=":", lw=1)
    for probs, colour, name in ((raw, "#888888", "MC-dropout mean"), (calibrated, "#1d2d44", "temperature-scaled")):
        curve = reliability_curve(probs, truth)
        filled = curve["count"] > 0
        ece = expected_calibration_error(probs, truth)
        ax.plot(
            curve["confidence"][filled], curve["accuracy"][filled], "o-", color=colour, label=f"{name} (ECE {ece:.3f})"
        )
    ax.set_xlabel("confidence (top answer of T0)")
    ax.set_ylabel("accuracy vs truth")
    ax.set_title(f"image CNN reliability, {len(truth)} test subjects")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_learning_curve(path: Path, curve: dict[int, float], finetuned: float, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    sizes = sorted(curve)
    left.plot(sizes, [curve[n] for n in sizes], "o-", color="#1d2d44", label="head on frozen embeddings")
    left.plot([N_FINETUNE], [finetuned], "*", ms=14, color="#f4a259", label="+ fine-tuned upper blocks")
    left.set_xscale("log")
    left.set_xlabel(f"labelled subjects ({VOTES_TRAIN} simulated votes each)")
    left.set_ylabel("T0 accuracy vs truth (test set)")
    left.legend(loc="lower right")
    epochs = [h["epoch"] for h in history]
    right.plot(epochs, [h["train_loss"] for h in history], color="#888888", label="train")
    right.plot(epochs, [h["val_loss"] for h in history], color="#1d2d44", label="validation")
    right.set_xlabel("epoch")
    right.set_ylabel("loss per vote")
    right.set_title(f"head on {N_TRAIN} subjects")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
