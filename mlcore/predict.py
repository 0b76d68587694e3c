"""Predictions with uncertainty: per-question probabilities from MC dropout.

Gal & Ghahramani 2016, "Dropout as a Bayesian Approximation": keeping dropout on at
test time and sampling several forward passes approximates the posterior predictive.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mlcore.acquisition import layout_slices, layout_width
from mlcore.device import amp_enabled, best_device


def question_slice(layout: Sequence[tuple[str, int]], task: str) -> slice:
    """Columns of question ``task`` in the model output (raises KeyError if absent)."""
    for key, cols in layout_slices(layout):
        if key == task:
            return cols
    raise KeyError(f"question {task!r} is not in the layout")


def per_question_softmax(logits: torch.Tensor, layout: Sequence[tuple[str, int]]) -> torch.Tensor:
    """Softmax over each question's answers separately; (B, A) -> (B, A)."""
    return torch.cat([torch.softmax(logits[:, cols].float(), dim=1) for _, cols in layout_slices(layout)], dim=1)


def _enable_mc_dropout(model: nn.Module) -> int:
    """Eval mode everywhere except dropout layers; returns how many were switched on."""
    model.eval()
    n = 0
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.train()
            n += 1
    return n


def _forward_probs(model, x, layout, device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp_enabled(device)):
        logits = model(x)  # (B, A)
    return per_question_softmax(logits, layout)


def _as_tensor(X: np.ndarray) -> torch.Tensor:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim < 2:
        raise ValueError(f"X must have a batch dimension, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values")
    return torch.from_numpy(X)


@torch.inference_mode()
def mc_dropout_probs(
    model: nn.Module,
    X: np.ndarray,
    layout: Sequence[tuple[str, int]],
    n_samples: int = 15,
    batch_size: int = 256,
    device: torch.device | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Per-question softmax probabilities for ``n_samples`` dropout masks.

    Only dropout modules run in train mode; BatchNorm keeps its running statistics.
    The global torch RNG is forked, so the result depends only on ``seed`` (and the
    batch size) and callers' random state is untouched. The model is left in eval mode.

    Parameters
    ----------
    model : nn.Module
        Maps (B, ...) -> logits (B, A); should contain dropout (else all samples agree).
    X : ndarray, shape (N, ...)
    layout : sequence of (task_key, n_answers)
    n_samples : int
        S, the number of MC passes (Walmsley+2020 use 15).

    Returns
    -------
    ndarray, shape (N, A, S), float32
    """
    device = device or best_device()
    Xt = _as_tensor(X)
    A = layout_width(layout)
    out = np.zeros((Xt.shape[0], A, n_samples), dtype=np.float32)
    model.to(device)
    if _enable_mc_dropout(model) == 0:
        warnings.warn("model has no dropout layers: MC samples will be identical", stacklevel=2)
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in range(0, Xt.shape[0], batch_size):
                xb = Xt[start : start + batch_size]
                for s in range(n_samples):
                    probs = _forward_probs(model, xb, layout, device)  # (b, A)
                    out[start : start + xb.shape[0], :, s] = probs.cpu().numpy()
    finally:
        model.eval()
    return out


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    X: np.ndarray,
    layout: Sequence[tuple[str, int]],
    batch_size: int = 256,
    device: torch.device | None = None,
) -> np.ndarray:
    """Deterministic (eval-mode, dropout off) per-question probabilities, (N, A) float32."""
    device = device or best_device()
    Xt = _as_tensor(X)
    model.to(device).eval()
    out = np.zeros((Xt.shape[0], layout_width(layout)), dtype=np.float32)
    for start in range(0, Xt.shape[0], batch_size):
        xb = Xt[start : start + batch_size]
        out[start : start + xb.shape[0]] = _forward_probs(model, xb, layout, device).cpu().numpy()
    return out
