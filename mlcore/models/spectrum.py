"""1-D CNN for quasar spectra (damped Lyman-alpha absorbers and similar questions).

After Parks+2018 (dla_cnn): a rest-frame window 900-1346 A, a few convolution blocks,
fully connected layers. Ours is smaller and answers task-tree questions (softmax per
question) instead of regressing the DLA position and column density.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mlcore.acquisition import layout_width

CONTINUUM_REST = (1420.0, 1500.0)  # rest-frame A, red of Ly-alpha and free of strong lines
MIN_CONTINUUM_PIXELS = 5
FLUX_CLIP = (-10.0, 10.0)  # in units of the continuum level


@dataclass(frozen=True)
class SpectrumInputConfig:
    """The grid spectra are resampled onto.

    Attributes
    ----------
    n_pix : int
        Points of the log-lambda grid.
    rest_range : (float, float)
        Rest-frame window in Angstrom, used when the redshift is known (Parks+2018).
    """

    n_pix: int = 1024
    rest_range: tuple[float, float] = (900.0, 1346.0)


DEFAULT_SPECTRUM_INPUT = SpectrumInputConfig()


def _clean(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, ...]:
    """Drop pixels with unusable wavelengths, sort by wavelength, zero bad flux/ivar."""
    wave = np.asarray(wavelength, dtype=np.float64).ravel()
    flux = np.asarray(flux, dtype=np.float64).ravel()
    ivar = np.asarray(ivar, dtype=np.float64).ravel()
    if not wave.shape == flux.shape == ivar.shape:
        raise ValueError(f"wavelength, flux and ivar lengths differ: {wave.shape}, {flux.shape}, {ivar.shape}")
    keep = np.isfinite(wave) & (wave > 0)
    wave, flux, ivar = wave[keep], flux[keep], ivar[keep]
    order = np.argsort(wave, kind="stable")
    wave, flux, ivar = wave[order], flux[order], ivar[order]
    ivar = np.where(np.isfinite(ivar) & (ivar > 0), ivar, 0.0)
    bad_flux = ~np.isfinite(flux)
    flux = np.where(bad_flux, 0.0, flux)
    ivar = np.where(bad_flux, 0.0, ivar)
    return wave, flux, ivar


def _continuum_level(wave: np.ndarray, flux: np.ndarray, good: np.ndarray, z: float | None) -> float:
    """Robust flux scale: median in rest 1420-1500 A if z is known, else overall median."""
    candidates = []
    if z is not None:
        lo, hi = (np.array(CONTINUUM_REST) * (1.0 + z)).tolist()
        window = good & (wave >= lo) & (wave <= hi)
        if window.sum() >= MIN_CONTINUUM_PIXELS:
            candidates.append(np.median(flux[window]))
    if good.any():
        candidates.append(np.median(flux[good]))
        candidates.append(np.median(np.abs(flux[good])))
    for level in candidates:
        if np.isfinite(level) and level > 0:
            return float(level)
    return 1.0


def _grid(wave: np.ndarray, z: float | None, config: SpectrumInputConfig) -> np.ndarray:
    """Observed-frame wavelengths of the output pixels, uniform in log lambda."""
    if z is not None:
        lo, hi = (np.array(config.rest_range, dtype=np.float64) * (1.0 + z)).tolist()
    else:
        lo, hi = float(wave[0]), float(wave[-1])
    return np.exp(np.linspace(np.log(lo), np.log(hi), config.n_pix))


def preprocess_spectrum(
    wavelength: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    z: float | None,
    config: SpectrumInputConfig = DEFAULT_SPECTRUM_INPUT,
) -> np.ndarray:
    """One spectrum -> a fixed-size, normalised two-channel array for ``SpectrumCNN``.

    Parameters
    ----------
    wavelength, flux, ivar : ndarray, shape (L,)
        Observed-frame wavelength (A), flux and inverse variance. Pixels with
        ``ivar <= 0`` (or NaN flux) are treated as masked, as in SDSS files.
    z : float or None
        Quasar redshift. Known: the grid is ``rest_range * (1 + z)`` and the continuum
        is measured at rest 1420-1500 A. ``None``: the grid spans the observed data.
    config : SpectrumInputConfig

    Returns
    -------
    ndarray, shape (2, n_pix), float32, always finite
        Channel 0: flux / continuum level, clipped to ``FLUX_CLIP``. Channel 1:
        per-pixel S/N of the normalised flux mapped to ``[0, 1)`` as ``snr / (1 + snr)``.
        Both are linearly interpolated in log lambda; masked pixels and grid points
        outside the data are 0 in both channels. If no pixel has ``ivar > 0`` the
        weights are all 0 and the flux is kept (noise unknown).

    Notes
    -----
    Linear interpolation, not flux-conserving rebinning: at 1024 points the default
    grid step (~1.7e-4 in log10 lambda) is close to SDSS's 1e-4.
    """
    out = np.zeros((2, config.n_pix), dtype=np.float32)
    if z is not None and not (np.isfinite(z) and z > -1.0):
        z = None
    wave, flux, ivar = _clean(wavelength, flux, ivar)
    if wave.size < 2 or wave[-1] <= wave[0]:
        return out
    has_noise = bool((ivar > 0).any())
    good = ivar > 0 if has_noise else np.ones_like(ivar, dtype=bool)
    level = _continuum_level(wave, flux, good, z)
    with np.errstate(over="ignore", invalid="ignore"):
        norm_flux = np.where(good, np.clip(flux / level, *FLUX_CLIP), 0.0)  # (L,)
        snr = np.minimum(np.sqrt(ivar) * level, 1e6)
    weight = snr / (1.0 + snr)  # (L,) in [0, 1), 0 where masked
    log_grid = np.log(_grid(wave, z, config))
    log_wave = np.log(wave)
    out[0] = np.interp(log_grid, log_wave, norm_flux, left=0.0, right=0.0)
    out[1] = np.interp(log_grid, log_wave, weight, left=0.0, right=0.0)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _conv_block(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel_size=kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ReLU(),
        nn.MaxPool1d(2),
    )


class SpectrumCNN(nn.Module):
    """Small Parks+2018-style 1-D CNN: conv blocks, then an MLP with dropout.

    Four ``Conv1d + BatchNorm + ReLU + MaxPool(2)`` blocks (width w, 2w, 4w, 4w),
    adaptive max-pooling to 16 positions (keeps coarse position: where an absorber sits
    matters), then ``Linear -> ReLU -> Dropout -> Linear`` to one logit per answer.
    """

    POOLED = 16

    def __init__(self, layout: Sequence[tuple[str, int]], n_pix: int = 1024, dropout: float = 0.3, width: int = 32):
        super().__init__()
        self.layout = [(str(t), int(n)) for t, n in layout]
        self.n_pix = int(n_pix)
        self.dropout = float(dropout)
        self.width = int(width)
        w = self.width
        self.features = nn.Sequential(
            _conv_block(2, w, 7),
            _conv_block(w, 2 * w, 5),
            _conv_block(2 * w, 4 * w, 5),
            _conv_block(4 * w, 4 * w, 3),
            nn.AdaptiveMaxPool1d(self.POOLED),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * w * self.POOLED, 4 * w),
            nn.ReLU(),
            nn.Dropout(self.dropout),
            nn.Linear(4 * w, layout_width(self.layout)),
        )

    def model_config(self) -> dict:
        """Constructor arguments other than ``layout`` (for ``save_checkpoint``)."""
        return {"n_pix": self.n_pix, "dropout": self.dropout, "width": self.width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != 2:
            raise ValueError(f"SpectrumCNN expects (B, 2, n_pix), got {tuple(x.shape)}")
        return self.head(self.features(x))  # (B, 2, L) -> (B, 4w, 16) -> (B, A)
