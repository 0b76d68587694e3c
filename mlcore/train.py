"""Training on vote counts: ``train_one_epoch`` / ``evaluate`` / ``fit`` (torchvision references).

Works for any model mapping a batch of inputs to (B, A) logits: question heads on cached
embeddings (N, D), spectrum CNNs on (N, 2, L), image CNNs on (N, C, H, W).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mlcore.acquisition import layout_slices, layout_width
from mlcore.device import amp_enabled, best_device
from mlcore.losses import tree_soft_cross_entropy

Layout = Sequence[tuple[str, int]]
Progress = Callable[[int, int, dict], None]


@dataclass
class TrainConfig:
    """Hyper-parameters of ``fit``.

    Attributes
    ----------
    epochs : int
        Maximum number of passes over the training set.
    batch_size, lr, weight_decay : AdamW settings (constant learning rate).
    val_fraction : float
        Held-out share for early stopping and metrics.
    seed : int
        Fixes the split, the batch order, augmentation and dropout masks.
    patience : int
        Stop after this many epochs without a better validation loss; the best
        weights are restored.
    augment_flips : bool
        Random flips and 90-degree rotations of image batches (B, C, H, W); ignored
        for other input shapes (embeddings, spectra).
    """

    epochs: int = 80
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    seed: int = 0
    patience: int = 15
    augment_flips: bool = False


@dataclass
class TrainResult:
    """What ``fit`` returns.

    ``metrics`` holds ``val_loss``, ``train_loss`` (both at the best epoch),
    ``val_accuracy`` (root question), ``val_accuracy_<task>`` for each question with
    validation votes, ``n_train``, ``n_val``, ``epochs_run``, ``best_epoch`` and
    ``seconds``. ``history`` has one ``{"epoch", "train_loss", "val_loss", "val_accuracy"}``
    per epoch (root-question accuracy; NaN without validation votes).
    """

    model: nn.Module
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation split of ``range(n)``.

    At least one validation item when ``n >= 5`` and ``val_fraction > 0``, and always at
    least one training item. Returns sorted ``(train_idx, val_idx)``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if n >= 5 and val_fraction > 0:
        n_val = max(n_val, 1)
    n_val = min(n_val, max(n - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _validate(X: np.ndarray, counts: np.ndarray, layout: Layout) -> None:
    if X.shape[0] < 4:
        raise ValueError(f"need at least 4 labelled subjects to train, got {X.shape[0]}")
    if X.ndim not in (2, 3, 4):
        raise ValueError(f"X must be (N, D), (N, C, L) or (N, C, H, W), got shape {X.shape}")
    if counts.ndim != 2 or counts.shape[0] != X.shape[0]:
        raise ValueError(f"counts must be (N, A) with N = {X.shape[0]}, got shape {counts.shape}")
    if counts.shape[1] != layout_width(layout):
        raise ValueError(f"counts have {counts.shape[1]} answers, layout has {layout_width(layout)}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values")
    if not np.all(np.isfinite(counts)) or (counts < 0).any():
        raise ValueError("counts must be finite and non-negative")
    if counts.sum() <= 0:
        raise ValueError("counts hold no votes")


def batches(idx: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split indices into batches; a trailing batch of one is merged (BatchNorm needs 2)."""
    chunks = list(torch.split(idx, batch_size))
    if len(chunks) > 1 and chunks[-1].numel() == 1:
        chunks[-2] = torch.cat([chunks[-2], chunks.pop()])
    return chunks


def random_dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-image random flips and (for square images) 90-degree rotations; (B, C, H, W)."""
    b = x.shape[0]
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    if x.shape[-1] != x.shape[-2]:
        return torch.where(torch.rand(b, generator=generator).view(b, 1, 1, 1).to(x.device) < 0.5, x.flip(-2), x)
    k = torch.randint(0, 4, (b,), generator=generator).to(x.device)
    out = x.clone()
    for turns in (1, 2, 3):
        sel = k == turns
        if sel.any():
            out[sel] = torch.rot90(x[sel], turns, dims=(-2, -1))
    return out


def train_one_epoch(
    model: nn.Module,
    X: torch.Tensor,
    counts: torch.Tensor,
    layout: Layout,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
) -> float:
    """One pass over (X, counts) in random order; returns the loss per vote."""
    model.train()
    order = torch.randperm(X.shape[0], generator=generator)
    weighted, votes = 0.0, 0.0
    for idx in batches(order, config.batch_size):
        cb = counts[idx].to(device)  # (B, A)
        n_votes = float(cb.sum())
        if n_votes <= 0:
            continue
        xb = X[idx]
        if config.augment_flips and xb.ndim == 4:
            xb = random_dihedral(xb, generator)
        xb = xb.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp_enabled(device)):
            logits = model(xb)  # (B, A)
        loss = tree_soft_cross_entropy(logits.float(), cb, layout)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()}; stopping (check inputs and learning rate)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        weighted += loss.item() * n_votes
        votes += n_votes
    return weighted / votes if votes else float("nan")


@torch.inference_mode()
def predict_logits(model: nn.Module, X: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Eval-mode logits on CPU, (N, A) float32."""
    model.eval()
    out = []
    for start in range(0, X.shape[0], batch_size):
        xb = X[start : start + batch_size].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp_enabled(device)):
            out.append(model(xb).float().cpu())
    return torch.cat(out)


def _root_task(counts: torch.Tensor, layout: Layout) -> str:
    """The question with the most votes: every volunteer answers the root of the tree."""
    totals = [(float(counts[:, cols].sum()), -i, task) for i, (task, cols) in enumerate(layout_slices(layout))]
    return max(totals)[2]


def evaluate(
    model: nn.Module,
    X: torch.Tensor,
    counts: torch.Tensor,
    layout: Layout,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Loss per vote and per-question accuracy (argmax prediction == argmax of votes).

    Accuracy of a question is over subjects with at least one vote on it; questions
    without votes are left out. ``accuracy`` is the root question's (NaN if no votes).
    """
    if X.shape[0] == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    logits = predict_logits(model, X, batch_size, device)  # (N, A)
    has_votes = float(counts.sum()) > 0
    metrics = {"loss": float(tree_soft_cross_entropy(logits, counts, layout)) if has_votes else float("nan")}
    for task, cols in layout_slices(layout):
        reached = counts[:, cols].sum(dim=1) > 0
        if reached.any():
            hit = logits[reached, cols].argmax(1) == counts[reached, cols].argmax(1)
            metrics[f"accuracy_{task}"] = float(hit.float().mean())
    metrics["accuracy"] = metrics.get(f"accuracy_{_root_task(counts, layout)}", float("nan"))
    return metrics


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class EarlyStopping:
    """Keep the weights of the epoch with the lowest score; stop after ``patience`` epochs without one."""

    def __init__(self, model: nn.Module, patience: int):
        self.patience = patience
        self.score = math.inf
        self.epoch = 0
        self.state = snapshot(model)

    def update(self, model: nn.Module, epoch: int, score: float) -> bool:
        """Record this epoch's score (lower is better); True when training should stop."""
        if score < self.score:
            self.score, self.epoch, self.state = score, epoch, snapshot(model)
            return False
        return epoch - self.epoch >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best weights and leave the model in eval mode."""
        model.load_state_dict(self.state)
        model.eval()


def _to_tensors(X: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(X[idx]), torch.from_numpy(counts[idx])


def fit(
    model: nn.Module,
    X: np.ndarray,
    counts: np.ndarray,
    layout: Layout,
    config: TrainConfig | None = None,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train ``model`` on vote counts with early stopping on the validation loss.

    Parameters
    ----------
    model : nn.Module
        Maps (B, ...) -> (B, A) logits. Trained in place (its initial weights are the
        caller's; seed ``torch.manual_seed`` before building it for full determinism).
    X : ndarray, shape (N, D), (N, 2, L) or (N, C, H, W)
    counts : ndarray, shape (N, A)
        Vote counts per answer, columns in ``layout`` order.
    layout : sequence of (task_key, n_answers)
    config : TrainConfig, default ``TrainConfig()``
    device : torch.device, default ``best_device()``
    progress : callable ``(epoch, epochs, {"epoch", "train_loss", "val_loss", "val_accuracy", "step"})``,
        optional; ``step`` counts optimiser steps so far

    Returns
    -------
    TrainResult
        With the best-epoch weights loaded and the model in eval mode.

    Raises
    ------
    ValueError
        Fewer than 4 subjects, mismatched shapes, non-finite inputs, no votes.
    FloatingPointError
        The training loss became non-finite.
    """
    config = config or TrainConfig()
    device = device or best_device()
    X = np.ascontiguousarray(X, dtype=np.float32)
    counts = np.ascontiguousarray(counts, dtype=np.float32)
    _validate(X, counts, layout)
    started = time.perf_counter()
    train_idx, val_idx = split_indices(X.shape[0], config.val_fraction, config.seed)
    X_tr, c_tr = _to_tensors(X, counts, train_idx)
    X_va, c_va = _to_tensors(X, counts, val_idx)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_enabled(device))
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    steps_per_epoch = len(batches(torch.arange(len(train_idx)), config.batch_size))
    stopping = EarlyStopping(model, config.patience)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)  # dropout masks
        for epoch in range(1, config.epochs + 1):
            train_loss = train_one_epoch(model, X_tr, c_tr, layout, optimizer, scaler, config, device, generator)
            val = evaluate(model, X_va, c_va, layout, config.batch_size, device)
            val_loss = val["loss"]
            row = {"epoch": float(epoch), "train_loss": train_loss, "val_loss": val_loss}
            row["val_accuracy"] = val["accuracy"]
            history.append(row)
            if progress is not None:
                progress(epoch, config.epochs, {**row, "step": float(epoch * steps_per_epoch)})
            score = val_loss if math.isfinite(val_loss) else train_loss  # no val votes: monitor train
            if stopping.update(model, epoch, score):
                break
    stopping.restore(model)
    val = evaluate(model, X_va, c_va, layout, config.batch_size, device)
    best_row = history[stopping.epoch - 1] if stopping.epoch else {"train_loss": float("nan")}
    metrics = {
        "val_loss": val["loss"],
        "train_loss": best_row["train_loss"],
        "val_accuracy": val["accuracy"],
        **{f"val_{k}": v for k, v in val.items() if k.startswith("accuracy_")},
        "n_train": float(len(train_idx)),
        "n_val": float(len(val_idx)),
        "epochs_run": float(len(history)),
        "best_epoch": float(stopping.epoch),
        "seconds": time.perf_counter() - started,
    }
    return TrainResult(model=model, metrics=metrics, history=history)
