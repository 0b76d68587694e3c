"""Training the lens finder CNN (issue #9) on a large simulated set, as DeepLens does.

Lanusse et al. 2018 (MNRAS 473, 3895, "CMU DeepLens") train a residual network from
scratch on ~20,000 simulated LSST-like cutouts; simulation is the only cost, so the
training set is simulated in parallel (a process pool, one deterministic RNG per chunk)
and cached to an .npz. Training uses dihedral augmentation, early stopping on a held-out
validation split and test-time averaging over the 8 dihedral views (``mlcore.models.lens``).
"""

from __future__ import annotations

import copy
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlcore.models.lens import LensResNet, dihedral, lens_probability, stretch

_CHUNK = 100
_WARMUP = 0.05


def _simulate_chunk(args: tuple[int, int, int, bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from mlcore.simulate import lenses

    seed, chunk, n, lens = args
    rng = np.random.default_rng([seed, chunk, int(lens)])
    items = [lenses.simulate_lens(rng) if lens else lenses.simulate_non_lens(rng) for _ in range(n)]
    cubes = np.stack([c for c, _ in items]).astype(np.float32)
    arc_snr = np.array([t["arc_snr"] if lens else np.nan for _, t in items], dtype=np.float32)
    theta_ratio = np.array([t["theta_e"] / t["seeing_fwhm"] if lens else np.nan for _, t in items], dtype=np.float32)
    return cubes, arc_snr, theta_ratio


def _item_chunk(args: tuple[int, int, int, bool]) -> list[tuple[np.ndarray, dict]]:
    from mlcore.simulate import lenses

    seed, chunk, n, lens = args
    rng = np.random.default_rng([seed, chunk, 2 + int(lens)])
    return [lenses.simulate_lens(rng) if lens else lenses.simulate_non_lens(rng) for _ in range(n)]


def simulate_lenses(*, n: int, seed: int, workers: int = 2, lens: bool = True) -> tuple[np.ndarray, list[dict]]:
    """``n`` lens (or, ``lens=False``, non-lens) cutouts (N, 3, 64, 64) and truths, in parallel chunks."""
    if n < 1:
        raise ValueError("n must be >= 1")
    jobs = [(seed, i, min(_CHUNK, n - start), lens) for i, start in enumerate(range(0, n, _CHUNK))]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            items = [item for part in pool.map(_item_chunk, jobs) for item in part]
    else:
        items = [item for job in jobs for item in _item_chunk(job)]
    return np.stack([c for c, _ in items]).astype(np.float32), [t for _, t in items]


def simulate_training_set(*, n_lenses: int, n_negatives: int, seed: int, workers: int = 2,
                          cache: Path | None = None) -> dict[str, np.ndarray]:
    """Lenses + non-lenses (the survey's negative mix, hard negatives at their shares), cached.

    Returns ``cubes`` (N, 3, 64, 64), ``is_lens`` (N,), ``arc_snr`` and ``theta_ratio``
    (theta_E / seeing; NaN for non-lenses). Same seed and sizes give the same set for any
    number of workers.
    """
    if n_lenses < 1 or n_negatives < 1:
        raise ValueError("need at least one lens and one non-lens")
    if cache is not None and cache.exists():
        data = dict(np.load(cache))
        if int(data["is_lens"].sum()) == n_lenses and int((~data["is_lens"]).sum()) == n_negatives:
            return data
    jobs = [(seed, i, min(_CHUNK, total - start), lens)
            for lens, total in ((True, n_lenses), (False, n_negatives))
            for i, start in enumerate(range(0, total, _CHUNK))]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_simulate_chunk, jobs))
    else:
        parts = [_simulate_chunk(job) for job in jobs]
    data = {
        "cubes": np.concatenate([p[0] for p in parts]),
        "is_lens": np.concatenate([np.full(len(p[0]), job[3]) for p, job in zip(parts, jobs, strict=True)]),
        "arc_snr": np.concatenate([p[1] for p in parts]),
        "theta_ratio": np.concatenate([p[2] for p in parts]),
    }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **data)
        tmp.replace(cache)  # nothing half-written under the cache's name
    return data


@dataclass(frozen=True)
class LensTrainConfig:
    epochs: int = 30
    patience: int = 5  # epochs without a better validation loss before stopping
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    seed: int = 0
    max_seconds: float = 900.0  # a wall-clock cap: CPU training must fit ~15 min on 2 cores


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng([seed, 99]).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _learning_rate(peak: float, progress: float) -> float:
    """Linear warm-up then cosine decay over training ``progress`` in [0, 1] (steps or the time budget,
    whichever runs out first): a wall-clock cap still ends on an annealed model."""
    if progress < _WARMUP:
        return peak * max(progress, 1e-3) / _WARMUP
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - _WARMUP) / (1.0 - _WARMUP))))


def _val_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    model.eval()
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    with torch.inference_mode():
        total = sum(float(loss_fn(model(x[s : s + batch]).float(), y[s : s + batch])) for s in range(0, len(x), batch))
    return total / len(x)


def train_lens_model(*, cubes: np.ndarray, is_lens: np.ndarray,
                     config: LensTrainConfig = LensTrainConfig()) -> tuple[LensResNet, dict]:
    """Train a ``LensResNet`` with dihedral augmentation and early stopping; the best epoch is kept.

    Returns the model (eval mode, on CPU) and metrics, including the validation indices
    (never trained on) so callers can calibrate on them.
    """
    if len(cubes) != len(is_lens) or len(cubes) < 10:
        raise ValueError("need at least 10 cutouts and one label per cutout")
    if is_lens.all() or not is_lens.any():
        raise ValueError("need both lenses and non-lenses")
    torch.manual_seed(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = device.type == "cuda"
    x_all = stretch(cubes)
    y_all = torch.as_tensor(np.asarray(is_lens, dtype=np.float32))
    train_idx, val_idx = _split(len(cubes), config.val_fraction, config.seed)
    x_tr, y_tr = x_all[train_idx].to(device), y_all[train_idx].to(device)
    x_val, y_val = x_all[val_idx].to(device), y_all[val_idx].to(device)
    model = LensResNet().to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=_learning_rate(config.lr, 0.0),
                                  weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(train_idx) // config.batch_size)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(config.seed)
    started, best, best_state, stale, history, step = time.perf_counter(), float("inf"), None, 0, [], 0
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train_idx), generator=gen)
        views = torch.randint(0, 8, (len(order),), generator=gen)
        running = 0.0
        for s in range(0, len(order), config.batch_size):
            idx = order[s : s + config.batch_size]
            k = int(views[s])  # one dihedral view per batch: cheap, and every view is seen each epoch
            xb = dihedral(x_tr[idx.to(device)], k)
            with torch.autocast(device.type, enabled=amp):
                loss = loss_fn(model(xb).float(), y_tr[idx.to(device)])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            progress = max(step / steps, (time.perf_counter() - started) / config.max_seconds)
            for group in optimiser.param_groups:
                group["lr"] = _learning_rate(config.lr, progress)
            running += float(loss.detach()) * len(idx)
        val = _val_loss(model, x_val, y_val, 512)
        history.append({"epoch": epoch, "train_loss": running / len(order), "val_loss": val})
        if val < best - 1e-4:
            best, best_state, stale = val, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        if stale >= config.patience or progress >= 1.0:
            break
    model.load_state_dict(best_state)
    model = model.cpu().eval()
    p_val = lens_probability(model, cubes[val_idx])
    metrics = {
        "seconds": time.perf_counter() - started, "epochs": len(history), "best_val_loss": best,
        "val_accuracy": float(((p_val > 0.5) == np.asarray(is_lens)[val_idx]).mean()),
        "history": history, "val_idx": val_idx, "device": device.type,
    }
    return model, metrics
