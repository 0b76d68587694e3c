"""Calibration of per-question probabilities: temperature scaling and expected calibration error.

Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of Modern Neural Networks": one
scalar T per output, fitted by minimising the negative log-likelihood on a held-out set
that was not used for training or early stopping, divides the logits before the softmax.
T > 1 softens an over-confident model, T < 1 sharpens an under-confident one; the
argmax (and so the accuracy) never changes.

The "logits" may also be log-probabilities, e.g. ``log`` of MC-dropout mean
probabilities: ``softmax(log p / T)`` is ``p ** (1/T)`` renormalised, equal to ``p`` at
T = 1. ``calibrate_probs`` applies fitted temperatures to stored probabilities that way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from mlcore.acquisition import layout_slices, layout_width

Layout = Sequence[tuple[str, int]]
T_BOUNDS = (0.05, 20.0)  # search range; a T at either end means the held-out set is too small or degenerate
PROB_FLOOR = 1e-7  # log(0) guard when probabilities are turned back into logits


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _as_counts(counts_or_labels: np.ndarray, layout: Layout, n: int) -> np.ndarray:
    """(N,) integer labels (single-question layouts only) or (N, A) counts -> (N, A) float64 counts."""
    arr = np.asarray(counts_or_labels)
    width = layout_width(layout)
    if arr.ndim == 1:
        if len(layout) != 1:
            raise ValueError("integer labels need a one-question layout; pass (N, A) counts for a tree")
        if arr.shape[0] != n or not np.issubdtype(arr.dtype, np.integer) or arr.min(initial=0) < 0:
            raise ValueError(f"labels must be {n} non-negative integers")
        if arr.max(initial=0) >= width:
            raise ValueError(f"labels must be < {width}, the number of answers")
        return np.eye(width)[arr]
    if arr.shape != (n, width):
        raise ValueError(f"counts must have shape ({n}, {width}), got {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or (arr < 0).any():
        raise ValueError("counts must be finite and non-negative")
    return arr


def _nll(logits: np.ndarray, counts: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood per vote of ``counts`` under ``softmax(logits / T)``."""
    return float(-(counts * _log_softmax(logits / temperature)).sum() / counts.sum())


def fit_temperature(logits: np.ndarray, counts_or_labels: np.ndarray, layout: Layout) -> dict[str, float]:
    """One temperature per question, by maximum likelihood on a held-out set (Guo+2017).

    Parameters
    ----------
    logits : ndarray, shape (N, A)
        Model logits (or log-probabilities), columns in ``layout`` order.
    counts_or_labels : ndarray, shape (N, A) or (N,)
        Vote counts per answer (a one-hot row is one label), or integer labels when the
        layout has a single question. Use consensus labels to calibrate against the
        truth; raw vote counts calibrate against the crowd's spread of opinion.
    layout : sequence of (task_key, n_answers)

    Returns
    -------
    dict ``{task: T}``; 1.0 for questions without a held-out vote.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != layout_width(layout):
        raise ValueError(f"logits must have shape (N, {layout_width(layout)}), got {logits.shape}")
    if not np.all(np.isfinite(logits)):
        raise ValueError("logits contain NaN or infinite values")
    counts = _as_counts(counts_or_labels, layout, logits.shape[0])
    temperatures = {}
    for task, cols in layout_slices(layout):
        z, c = logits[:, cols], counts[:, cols]
        reached = c.sum(axis=1) > 0
        if not reached.any():
            temperatures[task] = 1.0
            continue
        z, c = z[reached], c[reached]
        # NLL is smooth and unimodal in log T; a bounded scalar search is enough.
        best = minimize_scalar(
            lambda log_t, z=z, c=c: _nll(z, c, float(np.exp(log_t))),
            bounds=tuple(np.log(T_BOUNDS)),
            method="bounded",
            options={"xatol": 1e-4},
        )
        temperatures[task] = float(np.exp(best.x))
    return temperatures


def apply_temperature(logits: np.ndarray, temperatures: Mapping[str, float], layout: Layout) -> np.ndarray:
    """Per-question ``softmax(logits / T)``; (N, A) or (N, A, S) MC samples -> probabilities of that shape."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim not in (2, 3) or logits.shape[1] != layout_width(layout):
        raise ValueError(f"logits must have shape (N, {layout_width(layout)}[, S]), got {logits.shape}")
    out = np.empty_like(logits)
    for task, cols in layout_slices(layout):
        z = logits[:, cols] / float(temperatures.get(task, 1.0))
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        out[:, cols] = e / e.sum(axis=1, keepdims=True)
    return out.astype(np.float32)


def calibrate_probs(probs: np.ndarray, temperatures: Mapping[str, float], layout: Layout) -> np.ndarray:
    """Temperature-scale stored per-question probabilities, (N, A) or (N, A, S): ``p ** (1/T)`` renormalised."""
    return apply_temperature(
        np.log(np.clip(np.asarray(probs, dtype=np.float64), PROB_FLOOR, 1.0)), temperatures, layout
    )


def _check_probs_labels(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"probs must be (N, K) and labels (N,), got {probs.shape} and {labels.shape}")
    if probs.shape[0] == 0:
        raise ValueError("need at least one prediction")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be integers in [0, {probs.shape[1]})")
    return probs, labels


def reliability_curve(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Top-label reliability diagram with equal-width confidence bins (Guo+2017, section 2).

    Parameters
    ----------
    probs : ndarray, shape (N, K), rows summing to 1
    labels : ndarray, shape (N,), integer true classes
    n_bins : int

    Returns
    -------
    dict with ``edges`` (n_bins + 1,), and per bin ``confidence`` (mean top probability),
    ``accuracy`` (share whose top answer is right) and ``count``; empty bins hold NaN
    confidence/accuracy and count 0.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    probs, labels = _check_probs_labels(probs, labels)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bins are (lo, hi]; confidence is always > 0, so nothing falls below the first bin
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=confidence, minlength=n_bins) / count
        mean_acc = np.bincount(which, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "confidence": mean_conf, "accuracy": mean_acc, "count": count}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE = sum over bins of (bin share) * |accuracy - confidence| (Naeini+2015; Guo+2017 eq. 3)."""
    curve = reliability_curve(probs, labels, n_bins)
    filled = curve["count"] > 0
    gaps = np.abs(curve["accuracy"][filled] - curve["confidence"][filled])
    return float((curve["count"][filled] * gaps).sum() / curve["count"].sum())


def heldout_report(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict:
    """JSON-ready calibration summary of one question on a held-out set.

    Parameters
    ----------
    probs : ndarray, shape (N, K), rows summing to 1 (after temperature scaling, if any)
    labels : ndarray, shape (N,), integer true classes (e.g. the crowd's majority)
    n_bins : int, equal-width confidence bins of the reliability diagram

    Returns
    -------
    dict: ``reliability`` ``{"confidence", "accuracy", "count"}`` (lists of ``n_bins``;
    None in empty bins), ``ece`` (Guo+2017 eq. 3), ``accuracy``, ``log_loss`` (mean
    negative log-probability of the true class) and ``confusion`` (K x K counts, rows
    the truth, columns the model's top answer).
    """
    probs, labels = _check_probs_labels(probs, labels)
    curve = reliability_curve(probs, labels, n_bins)
    k = probs.shape[1]
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, probs.argmax(axis=1)), 1)
    true_p = np.clip(probs[np.arange(len(labels)), labels], PROB_FLOOR, 1.0)

    def _list(values: np.ndarray, digits: int) -> list:
        return [None if not np.isfinite(v) else round(float(v), digits) for v in values]

    return {
        "reliability": {
            "confidence": _list(curve["confidence"], 4),
            "accuracy": _list(curve["accuracy"], 4),
            "count": [int(c) for c in curve["count"]],
        },
        "ece": expected_calibration_error(probs, labels, n_bins),
        "accuracy": float((probs.argmax(axis=1) == labels).mean()),
        "log_loss": float(-np.log(true_p).mean()),
        "confusion": confusion.tolist(),
    }
