"""Training the Parks+2018-style DLA finder (``DLAFinderNet``) on sightlines with known absorbers.

Loss (Parks+2018's three tasks): binary cross-entropy of "a DLA is centred within
``half_width`` pixels of the window centre" over every window with data, plus smooth-L1
losses of the offset (in units of ``half_width``) and of log N_HI (dex), both on positive
windows only: a negative window has no DLA whose position or column density it could know.
Training is ``train_one_epoch`` / ``evaluate`` / ``train_dla_finder`` as in mlcore.train,
with AdamW, cosine learning-rate decay and early stopping on the validation loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mlcore.device import amp_enabled, best_device
from mlcore.models.dla import DLA_MIN_LOG_NHI, DLAFinderNet, Sightline, window_data
from mlcore.train import EarlyStopping, batches, split_indices

Progress = Callable[[int, int, dict], None]


@dataclass
class DLATrainConfig:
    """Hyper-parameters of ``train_dla_finder`` (network size, targets, AdamW with cosine decay).

    Attributes
    ----------
    epochs, batch_size, lr, weight_decay : optimisation; the learning rate decays to 0
        over ``epochs`` (cosine).
    val_fraction, seed, patience : held-out share for early stopping; the best
        validation-loss weights are restored.
    max_seconds : float or None
        Stop after the epoch that crosses this training time.
    width : int
        Channels of the network.
    half_width : float
        A window is positive when a DLA's centre is within this many pixels.
    offset_weight, log_nhi_weight : weights of the two regression losses.
    min_log_nhi : absorbers below this are negatives (DLA definition).
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    seed: int = 0
    patience: int = 3
    max_seconds: float | None = None
    width: int = 16
    half_width: float = 30.0
    offset_weight: float = 1.0
    log_nhi_weight: float = 1.0
    min_log_nhi: float = DLA_MIN_LOG_NHI


@dataclass
class DLATrainResult:
    """``model`` (best weights, eval mode), ``metrics`` (val losses, sizes, seconds), ``history`` per epoch."""

    model: DLAFinderNet
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def dla_loss(
    out: torch.Tensor,
    label: torch.Tensor,
    offset: torch.Tensor,
    log_nhi: torch.Tensor,
    valid: torch.Tensor,
    config: DLATrainConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Multi-task loss; ``out`` (B, 3, K) from ``DLAFinderNet``, targets and ``valid`` (B, K).

    Returns the scalar total and its parts ``{"cls", "offset", "log_nhi"}``; the
    regressions are 0 (still differentiable) for a batch without positive windows.
    """
    out = out.float()
    logit, off_pred, nhi_pred = out[:, 0], out[:, 1], out[:, 2]  # (B, K) each
    cls = F.binary_cross_entropy_with_logits(logit[valid], label[valid]) if valid.any() else out.sum() * 0
    positive = valid & (label > 0.5)
    if positive.any():
        off = F.smooth_l1_loss(off_pred[positive] / config.half_width, offset[positive] / config.half_width, beta=0.1)
        nhi = F.smooth_l1_loss(nhi_pred[positive], log_nhi[positive], beta=0.1)
    else:
        off = nhi = out.sum() * 0
    total = cls + config.offset_weight * off + config.log_nhi_weight * nhi
    return total, {"cls": cls.item(), "offset": off.item(), "log_nhi": nhi.item()}


def train_one_epoch(
    model: DLAFinderNet,
    data: tuple[torch.Tensor, ...],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    config: DLATrainConfig,
    device: torch.device,
    generator: torch.Generator,
) -> float:
    """One pass in random order; returns the mean total loss per batch."""
    model.train()
    losses = []
    for idx in batches(torch.randperm(data[0].shape[0], generator=generator), config.batch_size):
        xb, label, offset, log_nhi, valid = (t[idx].to(device) for t in data)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp_enabled(device)):
            out = model(xb)  # (B, 3, K)
        loss, _ = dla_loss(out, label, offset, log_nhi, valid, config)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()}; stopping (check inputs and learning rate)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        losses.append(loss.item())
    return float(np.mean(losses))


@torch.inference_mode()
def evaluate(
    model: DLAFinderNet, data: tuple[torch.Tensor, ...], config: DLATrainConfig, device: torch.device
) -> dict[str, float]:
    """Validation loss and its parts, averaged over batches weighted by size."""
    model.eval()
    n = data[0].shape[0]
    totals = {"loss": 0.0, "cls": 0.0, "offset": 0.0, "log_nhi": 0.0}
    for idx in batches(torch.arange(n), config.batch_size):
        xb, label, offset, log_nhi, valid = (t[idx].to(device) for t in data)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp_enabled(device)):
            out = model(xb)
        loss, parts = dla_loss(out, label, offset, log_nhi, valid, config)
        for key, value in {"loss": float(loss), **parts}.items():
            totals[key] += value * len(idx) / n
    return totals if n else {k: math.nan for k in totals}


def _validate_sightlines(sightlines: Sequence[Sightline]) -> None:
    if len(sightlines) < 4:
        raise ValueError(f"need at least 4 sightlines to train, got {len(sightlines)}")
    for i, s in enumerate(sightlines):
        if not all(math.isfinite(v) for dla in s.dlas for v in dla):
            raise ValueError(f"sightline {i} has a non-finite absorber {s.dlas}")
    if not any(log_n >= DLA_MIN_LOG_NHI for s in sightlines for _, log_n in s.dlas):
        raise ValueError("no sightline has a DLA (log N_HI >= 20.3); nothing to learn from")


def train_dla_finder(
    sightlines: Sequence[Sightline],
    config: DLATrainConfig | None = None,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> DLATrainResult:
    """Fit a ``DLAFinderNet`` on sightlines with known absorbers.

    Parameters
    ----------
    sightlines : sequence of Sightline
        At least 4, and at least one DLA among them.
    config : DLATrainConfig, default ``DLATrainConfig()``
    device : torch.device, default ``best_device()``
    progress : callable ``(epoch, epochs, {"train_loss", "val_loss"})``, optional

    Returns
    -------
    DLATrainResult, with the best validation-loss weights on ``device`` in eval mode.

    Raises
    ------
    ValueError
        Too few sightlines, no DLA, bad redshifts or array shapes.
    FloatingPointError
        The training loss became non-finite.
    """
    config = config or DLATrainConfig()
    device = device or best_device()
    _validate_sightlines(sightlines)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model = DLAFinderNet(width=config.width, offset_scale=config.half_width).to(device)
    data = window_data(sightlines, model.grid, config.half_width, config.min_log_nhi)
    train_idx, val_idx = split_indices(len(sightlines), config.val_fraction, config.seed)
    train, held_out = data.tensors(train_idx), data.tensors(val_idx)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * len(batches(torch.arange(len(train_idx)), config.batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_enabled(device))
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    stopping = EarlyStopping(model, config.patience)
    for epoch in range(1, config.epochs + 1):
        train_loss = train_one_epoch(model, train, optimizer, scheduler, scaler, config, device, generator)
        val = evaluate(model, held_out, config, device)
        history.append(
            {
                "epoch": float(epoch),
                "train_loss": train_loss,
                "val_loss": val["loss"],
                "seconds": time.perf_counter() - started,
            }
        )
        if progress is not None:
            progress(epoch, config.epochs, {"train_loss": train_loss, "val_loss": val["loss"]})
        score = val["loss"] if math.isfinite(val["loss"]) else train_loss
        if stopping.update(model, epoch, score):
            break
        if config.max_seconds is not None and time.perf_counter() - started > config.max_seconds:
            break
    stopping.restore(model)
    val = evaluate(model, held_out, config, device)
    metrics = {
        "val_loss": val["loss"],
        **{f"val_loss_{k}": val[k] for k in ("cls", "offset", "log_nhi")},
        "n_train": float(len(train_idx)),
        "n_val": float(len(val_idx)),
        "epochs_run": float(len(history)),
        "best_epoch": float(stopping.epoch),
        "seconds": time.perf_counter() - started,
    }
    return DLATrainResult(model=model, metrics=metrics, history=history)
