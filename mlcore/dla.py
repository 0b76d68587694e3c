"""Find damped Lyman-alpha absorbers in quasar spectra with a Parks+2018-style network.

``train_dla_finder`` (mlcore.dla_train) fits ``DLAFinderNet`` on sightlines with known
absorbers (simulated, or volunteers' consensus "absorber" marks); ``find_dlas`` runs it on
one spectrum and returns ``[{"z", "log_nhi", "confidence"}]``; ``match_dlas`` and
``catalogue_metrics`` score a catalogue against the truth. Checkpoints go through
mlcore.checkpoints with kind ``"dla_finder"``.

Catalogue, after Parks+2018: peaks of the per-window classification probability above a
threshold, at least ``half_width`` pixels apart; each peak's z_abs comes from the
probability-weighted mean of ``window centre + predicted offset`` over the windows around
it that agree (probability above half the threshold), its log N_HI from the same weighted
mean of the column-density head, and its confidence is the peak probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.signal import find_peaks

from mlcore.checkpoints import load_checkpoint, save_checkpoint
from mlcore.device import amp_enabled
from mlcore.dla_train import DLATrainConfig, DLATrainResult, train_dla_finder
from mlcore.models.dla import DLA_LAYOUT, DLA_MIN_LOG_NHI, DLAFinderNet, Sightline, dla_input, window_valid

CHECKPOINT_KIND = "dla_finder"
DEFAULT_THRESHOLD = 0.5
__all__ = [
    "DLATrainConfig",
    "DLATrainResult",
    "Sightline",
    "find_dlas",
    "find_dlas_many",
    "load_dla_finder",
    "save_dla_finder",
    "train_dla_finder",
]


@torch.inference_mode()
def predict_windows(
    model: DLAFinderNet, x: np.ndarray | torch.Tensor, batch_size: int = 64, device: torch.device | None = None
) -> np.ndarray:
    """Eval-mode outputs for inputs (N, 2, n_pix): (N, 3, K) float32 with channel 0 a probability."""
    device = device or next(model.parameters()).device
    model.eval()
    x = torch.as_tensor(x, dtype=torch.float32)
    out = []
    for start in range(0, x.shape[0], batch_size):
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp_enabled(device)):
            raw = model(x[start : start + batch_size].to(device)).float()
        raw[:, 0] = torch.sigmoid(raw[:, 0])
        out.append(raw.cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 3, model.grid.n_outputs), dtype=np.float32)


def peaks_to_absorbers(
    prob: np.ndarray, coords: np.ndarray, offset: np.ndarray, log_nhi: np.ndarray, threshold: float, min_distance: float
) -> list[tuple[float, float, float]]:
    """Peak finding on a classification signal; pure numpy.

    Parameters
    ----------
    prob, coords, offset, log_nhi : ndarray, shape (K,)
        Per window: DLA probability, centre coordinate (pixels, increasing), predicted
        offset of the DLA centre (pixels) and predicted log N_HI.
    threshold : float
        Peaks below this probability are ignored.
    min_distance : float
        Peaks closer than this (pixels) are one absorber: the higher one is kept, also
        when two peaks' estimated centres land within this distance.

    Returns
    -------
    list of (centre coordinate, log_nhi, confidence), by coordinate.
    """
    spacing = float(np.median(np.diff(coords))) if coords.size > 1 else 1.0
    padded = np.concatenate([[0.0], prob, [0.0]])  # find_peaks never reports an end sample
    peaks, _ = find_peaks(padded, height=threshold, distance=max(1, math.ceil(min_distance / spacing)))
    found: list[tuple[float, float, float]] = []
    for k in sorted(peaks - 1, key=lambda i: -prob[i]):
        lo, hi = k, k
        reach = min_distance / spacing
        while lo > 0 and prob[lo - 1] >= threshold / 2 and k - lo < reach:
            lo -= 1
        while hi < prob.size - 1 and prob[hi + 1] >= threshold / 2 and hi - k < reach:
            hi += 1
        w = prob[lo : hi + 1]
        centre = float(np.sum(w * (coords[lo : hi + 1] + offset[lo : hi + 1])) / w.sum())
        if all(abs(centre - c) >= min_distance for c, _, _ in found):
            found.append((centre, float(np.sum(w * log_nhi[lo : hi + 1]) / w.sum()), float(prob[k])))
    return sorted(found)


def dlas_from_windows(
    pred: np.ndarray, valid: np.ndarray, z_qso: float, model: DLAFinderNet, threshold: float = DEFAULT_THRESHOLD
) -> list[dict[str, float]]:
    """One sightline's window predictions (3, K) and data mask (K,) -> ``[{"z", "log_nhi", "confidence"}]``."""
    prob = np.where(valid, pred[0], 0.0)
    found = peaks_to_absorbers(prob, model.grid.centres(), pred[1], pred[2], threshold, model.offset_scale)
    return [{"z": float(model.grid.z_abs(c, z_qso)), "log_nhi": n, "confidence": p} for c, n, p in found]


def find_dlas_many(
    model: DLAFinderNet, sightlines: Sequence[Sightline], threshold: float = DEFAULT_THRESHOLD, batch_size: int = 64
) -> list[list[dict[str, float]]]:
    """``find_dlas`` for many spectra at once (batched; ``Sightline.dlas`` is ignored)."""
    out = []
    for start in range(0, len(sightlines), batch_size):
        chunk = sightlines[start : start + batch_size]
        x = np.stack([dla_input(s.wavelength, s.flux, s.ivar, s.z_qso, model.grid) for s in chunk])
        pred = predict_windows(model, x, batch_size)
        valid = window_valid(x, model.grid)
        out += [dlas_from_windows(p, v, s.z_qso, model, threshold) for p, v, s in zip(pred, valid, chunk, strict=True)]
    return out


def find_dlas(
    model: DLAFinderNet,
    wavelength: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    z_qso: float,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[dict[str, float]]:
    """DLAs in one spectrum: ``[{"z": z_abs, "log_nhi": dex, "confidence": 0-1}]`` by redshift.

    Parameters
    ----------
    model : DLAFinderNet
    wavelength, flux, ivar : ndarray, shape (L,)
        Observed frame (Angstrom); pixels with ``ivar <= 0`` are masked.
    z_qso : float
        The quasar's redshift (the search runs from its Lyman limit to 5000 km/s
        blueward of its Lyman-alpha).
    threshold : float
        Minimum peak probability.
    """
    return find_dlas_many(model, [Sightline(wavelength, flux, ivar, z_qso)], threshold)[0]


def save_dla_finder(directory: str | Path, model: DLAFinderNet, metrics: dict, extra: dict | None = None) -> dict:
    """Checkpoint a trained finder (``model.pt`` + ``meta.json``); returns the meta."""
    return save_checkpoint(
        directory,
        model,
        kind=CHECKPOINT_KIND,
        model_config=model.model_config(),
        layout=DLA_LAYOUT,
        metrics=metrics,
        extra=extra,
    )


def load_dla_finder(directory: str | Path, device: torch.device | None = None) -> tuple[DLAFinderNet, dict]:
    """Load a finder saved by ``save_dla_finder`` (sha256-verified, eval mode)."""
    model, meta = load_checkpoint(directory, device)
    if meta["kind"] != CHECKPOINT_KIND or not isinstance(model, DLAFinderNet):
        raise ValueError(f"{directory} holds a {meta['kind']!r} checkpoint, not a {CHECKPOINT_KIND!r}")
    return model, meta


def match_dlas(true_z: Sequence[float], pred_z: Sequence[float], max_dz: float = 0.01) -> list[tuple[int, int]]:
    """One-to-one ``(true index, predicted index)`` pairs with ``|z_pred - z_true| <= max_dz``, closest first."""
    pairs = sorted(
        (abs(p - t), i, j) for i, t in enumerate(true_z) for j, p in enumerate(pred_z) if abs(p - t) <= max_dz
    )
    matched: list[tuple[int, int]] = []
    for _, i, j in pairs:
        if all(i != a and j != b for a, b in matched):
            matched.append((i, j))
    return matched


def _robust_sigma(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation: the Gaussian sigma, unmoved by a few outliers."""
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if values.size else math.nan


def catalogue_metrics(
    truths: Sequence[Sequence[tuple[float, float]]],
    found: Sequence[Sequence[dict[str, float]]],
    max_dz: float = 0.01,
    min_log_nhi: float = DLA_MIN_LOG_NHI,
) -> dict[str, float]:
    """Score DLA lists against the truth, sightline by sightline.

    Parameters
    ----------
    truths : per sightline, the true ``(z_abs, log_nhi)``; those below ``min_log_nhi``
        are not DLAs (a detection of one is a false positive).
    found : per sightline, ``find_dlas`` output.
    max_dz : a detection matches a true DLA within this redshift (one-to-one).

    Returns
    -------
    dict with ``completeness`` (matched / true DLAs), ``purity`` (matched / detections),
    ``sigma_z`` and ``sigma_log_nhi`` (robust sigma of predicted minus true over matches),
    ``bias_log_nhi`` (median), ``n_true``, ``n_found``, ``n_matched``; NaN where undefined.
    """
    dz, dn = [], []
    n_true = n_found = 0
    for truth, pred in zip(truths, found, strict=True):
        dlas = [(z, n) for z, n in truth if n >= min_log_nhi]
        pairs = match_dlas([z for z, _ in dlas], [p["z"] for p in pred], max_dz)
        dz += [pred[j]["z"] - dlas[i][0] for i, j in pairs]
        dn += [pred[j]["log_nhi"] - dlas[i][1] for i, j in pairs]
        n_true, n_found = n_true + len(dlas), n_found + len(pred)
    n_matched = len(dz)
    return {
        "completeness": n_matched / n_true if n_true else math.nan,
        "purity": n_matched / n_found if n_found else math.nan,
        "sigma_z": _robust_sigma(np.array(dz)),
        "sigma_log_nhi": _robust_sigma(np.array(dn)),
        "bias_log_nhi": float(np.median(dn)) if dn else math.nan,
        "n_true": float(n_true),
        "n_found": float(n_found),
        "n_matched": float(n_matched),
    }
