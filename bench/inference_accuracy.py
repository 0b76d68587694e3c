"""What the fast backbone options cost in accuracy (issue #5): heads trained on their embeddings.

bench/models.py's sky, crowd and protocol (N_TRAIN labelled cutouts with VOTES_TRAIN votes,
temperatures fitted on N_CAL, root-question accuracy against the truth on N_TEST), with the
embeddings of each backbone option in turn, a head trained with several seeds on each:

- fp32_96: the default (frozen float32 graph, input 96);
- bf16_96: ``BackboneConfig(cpu_precision="bf16")``, ~1.7x the backbone's cutouts per CPU-second;
- fp32_64: input 64, the cutouts' own size (no upsampling), ~2.2x fewer operations.

Figures, per option: inference_accuracy_<option>_all / _high_agreement / _ece (mean over
SEEDS), _all_min / _all_max and _high_agreement_min / _max (the seed spread: differences
smaller than it are noise), and _cosine_min / _cosine_median, the cosine of its embeddings
to fp32_96's (the same subjects).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from bench import models as sky_bench
from mlcore.calibration import calibrate_probs, expected_calibration_error, fit_temperature
from mlcore.models.image import BackboneConfig, ImageBackbone, QuestionHead
from mlcore.predict import question_slice
from mlcore.train import TrainConfig, fit

OPTIONS = {
    "fp32_96": BackboneConfig(input_size=96),
    "bf16_96": BackboneConfig(input_size=96, cpu_precision="bf16"),
    "fp32_64": BackboneConfig(input_size=64),
}
SEEDS = (505, 1, 2)
CPU_THREADS = 2


def run(results: Path) -> dict:
    torch.set_num_threads(CPU_THREADS)
    device = torch.device("cpu")
    splits = sky_bench._simulate(device)  # (train, cal, test) with the simulated votes and truth
    cubes = np.concatenate([s.cubes for s in splits])
    figures: dict[str, float] = {"inference_accuracy_seeds": float(len(SEEDS))}
    reference = None
    for option, config in OPTIONS.items():
        vectors = ImageBackbone(config, device=device).embed(cubes)  # (N, 1280)
        reference = vectors if reference is None else reference
        cosine = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
        figures[f"inference_accuracy_{option}_cosine_min"] = float(cosine.min())
        figures[f"inference_accuracy_{option}_cosine_median"] = float(np.median(cosine))
        figures.update(_scores(option, _with_embeddings(splits, vectors), device))
    return figures


def _with_embeddings(splits, vectors: np.ndarray):
    bounds = np.cumsum([0, *(len(s.cubes) for s in splits)])
    return [
        dataclasses.replace(s, embeddings=vectors[lo:hi])
        for s, lo, hi in zip(splits, bounds[:-1], bounds[1:], strict=True)
    ]


def _scores(option: str, splits, device: torch.device) -> dict[str, float]:
    train, cal, test = splits
    layout = sky_bench.LAYOUT
    root = question_slice(layout, sky_bench.ROOT)
    runs = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        head = fit(QuestionHead(train.embeddings.shape[1], layout), train.embeddings, train.counts, layout,
                   TrainConfig(seed=seed), device=device).model  # fmt: skip
        temps = fit_temperature(sky_bench._log(sky_bench._mc_mean(head, cal.embeddings, device)),
                                sky_bench._consensus(cal), layout)  # fmt: skip
        probs = calibrate_probs(sky_bench._mc_mean(head, test.embeddings, device), temps, layout)
        scores = sky_bench._accuracy_figures(probs, test)
        scores["image_ece"] = expected_calibration_error(probs[:, root], test.truth[:, root].argmax(1))
        runs.append(scores)
    accuracy = [r["image_accuracy_all"] for r in runs]
    high = [r["image_accuracy_high_agreement"] for r in runs]
    return {
        f"inference_accuracy_{option}_all": float(np.mean(accuracy)),
        f"inference_accuracy_{option}_all_min": float(np.min(accuracy)),
        f"inference_accuracy_{option}_all_max": float(np.max(accuracy)),
        f"inference_accuracy_{option}_high_agreement": float(np.mean(high)),
        f"inference_accuracy_{option}_high_agreement_min": float(np.min(high)),
        f"inference_accuracy_{option}_high_agreement_max": float(np.max(high)),
        f"inference_accuracy_{option}_ece": float(np.mean([r["image_ece"] for r in runs])),
    }
