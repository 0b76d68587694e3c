"""A Parks+2018-style multi-task 1-D CNN that finds damped Lyman-alpha absorbers (DLAs).

Parks et al. 2018 (MNRAS 476, 1151) slide a window along the Lyman-alpha forest and ask a
CNN three questions about the pixel at the window's centre: is a DLA centred near it
(classification), how far away is that centre (offset regression) and what is its column
density (log N_HI regression, trained on positive windows only).

Grid (the choice Parks+2018 made too): pixels of constant velocity width, log10 step 1e-4
as BOSS (69 km/s), so a DLA of a given N_HI spans the same number of pixels at every
redshift and one network serves them all. The grid is anchored to the quasar's rest frame
(``preprocess_spectrum`` with a rest range), so input pixel ``p`` is always the same rest
wavelength and a spectrum already on the BOSS grid is merely shifted by a fraction of a
pixel. Window centres cover the DLA search range, rest 912-1196 A: from the quasar's
Lyman limit to 5000 km/s blueward of Lyman-alpha (proximate absorbers excluded, as
Prochaska et al. 2005).

Sliding windows, evaluated in one pass: a stride-4 stem followed by residual *valid*
convolutions with dilations 1, 2, 4, 8, 16 (kernel 5) make every output depend on exactly
one 500-pixel input window (Parks+2018 used 400), and consecutive outputs are windows 4
pixels apart. Training on whole sightlines therefore trains every window at once with
shared computation; 1x1 convolutions play the role of Parks's fully connected layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mlcore.models.spectrum import SpectrumInputConfig, preprocess_spectrum
from mlcore.simulate.spectra import LYA_REST

DLA_LAYOUT = (("dla", 1), ("offset", 1), ("log_nhi", 1))  # output channels of DLAFinderNet
DLA_MIN_LOG_NHI = 20.3  # the conventional DLA threshold (Wolfe et al. 1986)
LOG_NHI_CENTRE = 21.0  # the log N_HI head predicts a residual about this


@dataclass(frozen=True)
class Sightline:
    """One quasar spectrum and the absorbers known in it.

    ``dlas`` lists ``(z_abs, log_nhi)`` of every strong absorber (sub-DLAs below
    ``DLA_MIN_LOG_NHI`` may be listed: they are trained as negatives).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    z_qso: float
    dlas: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class WindowGrid:
    """Where the windows of one sightline sit, in input pixels and rest wavelength.

    Input pixel ``p`` (continuous coordinate; pixel centres at integers) has rest
    wavelength ``rest_start * 10**(p * loglam_step)``. Output ``k`` is the window of
    input pixels ``[stride * k, stride * k + window - 1]``, centred at ``centres()[k]``.
    """

    rest_start: float
    loglam_step: float
    stride: int
    window: int
    n_outputs: int

    @property
    def n_pix(self) -> int:
        return self.stride * (self.n_outputs - 1) + self.window

    def input_config(self) -> SpectrumInputConfig:
        """Rest range and length for ``preprocess_spectrum`` (grid step exactly ``loglam_step``)."""
        rest_end = self.rest_start * 10 ** ((self.n_pix - 1) * self.loglam_step)
        return SpectrumInputConfig(n_pix=self.n_pix, rest_range=(self.rest_start, rest_end))

    def centres(self) -> np.ndarray:
        """Input-pixel coordinate of each window centre, (n_outputs,)."""
        return self.stride * np.arange(self.n_outputs) + (self.window - 1) / 2

    def z_abs(self, coord: np.ndarray | float, z_qso: float) -> np.ndarray | float:
        """Absorber redshift whose Lyman-alpha falls at input coordinate ``coord``."""
        rest = self.rest_start * 10 ** (np.asarray(coord, dtype=np.float64) * self.loglam_step)
        return rest * (1.0 + z_qso) / LYA_REST - 1.0

    def coord(self, z_abs: float, z_qso: float) -> float:
        """Input coordinate of an absorber's Lyman-alpha (inverse of ``z_abs``)."""
        rest = (1.0 + z_abs) * LYA_REST / (1.0 + z_qso)
        return math.log10(rest / self.rest_start) / self.loglam_step


def make_grid(search_rest: Sequence[float], loglam_step: float, stride: int, window: int) -> WindowGrid:
    """The grid whose first window is centred on ``search_rest[0]`` and whose last reaches ``search_rest[1]``."""
    lo, hi = float(search_rest[0]), float(search_rest[1])
    if not 0 < lo < hi:
        raise ValueError(f"search_rest must be increasing positive wavelengths, got {search_rest}")
    n_outputs = math.ceil(math.log10(hi / lo) / loglam_step / stride) + 1
    rest_start = lo * 10 ** (-(window - 1) / 2 * loglam_step)
    return WindowGrid(rest_start, float(loglam_step), int(stride), int(window), n_outputs)


def dla_input(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z_qso: float, grid: WindowGrid) -> np.ndarray:
    """One spectrum -> the network input (2, grid.n_pix), float32, finite.

    Channel 0: flux over the continuum level at rest 1420-1500 A; channel 1: S/N weight
    ``snr / (1 + snr)``, 0 where masked or outside the data (``preprocess_spectrum``).
    """
    if not (np.isfinite(z_qso) and z_qso > -1.0):
        raise ValueError(f"z_qso must be a finite redshift > -1, got {z_qso}")
    return preprocess_spectrum(wavelength, flux, ivar, float(z_qso), grid.input_config())


def window_targets(
    dlas: Sequence[tuple[float, float]],
    z_qso: float,
    grid: WindowGrid,
    half_width: float,
    min_log_nhi: float = DLA_MIN_LOG_NHI,
) -> dict[str, np.ndarray]:
    """Per-window training targets for one sightline.

    Parameters
    ----------
    dlas : sequence of (z_abs, log_nhi)
        Every strong absorber in the sightline; those below ``min_log_nhi`` (sub-DLAs)
        are negatives.
    z_qso : float
    grid : WindowGrid
    half_width : float
        A window is positive when a DLA's centre is within this many input pixels of
        the window's centre (Parks+2018 label windows the same way).

    Returns
    -------
    dict of (n_outputs,) float32 arrays
        ``label`` (1 positive, 0 negative), ``offset`` (DLA centre minus window centre,
        pixels) and ``log_nhi``; the two regressions are 0 on negatives, where they are
        not trained.
    """
    centres = grid.centres()
    label = np.zeros(grid.n_outputs, dtype=np.float32)
    offset = np.zeros(grid.n_outputs, dtype=np.float32)
    log_nhi = np.zeros(grid.n_outputs, dtype=np.float32)
    nearest = np.full(grid.n_outputs, np.inf)
    for z_abs, log_n in dlas:
        if log_n < min_log_nhi:
            continue
        delta = grid.coord(z_abs, z_qso) - centres  # (n_outputs,)
        closer = (np.abs(delta) <= half_width) & (np.abs(delta) < nearest)
        label[closer] = 1.0
        offset[closer] = delta[closer]
        log_nhi[closer] = log_n
        nearest = np.where(closer, np.abs(delta), nearest)
    return {"label": label, "offset": offset, "log_nhi": log_nhi}


def window_valid(x: np.ndarray, grid: WindowGrid) -> np.ndarray:
    """Windows whose centre pixel has data (S/N weight > 0); (N, 2, n_pix) -> (N, n_outputs) bool."""
    centre_pix = np.rint(grid.centres()).astype(int)
    return x[:, 1, centre_pix] > 0


@dataclass(frozen=True)
class WindowData:
    """Network inputs and per-window targets: x (N, 2, n_pix); the rest (N, n_outputs)."""

    x: np.ndarray
    label: np.ndarray
    offset: np.ndarray
    log_nhi: np.ndarray
    valid: np.ndarray

    def tensors(self, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        return tuple(
            torch.from_numpy(np.ascontiguousarray(a[idx]))
            for a in (self.x, self.label, self.offset, self.log_nhi, self.valid)
        )


def window_data(
    sightlines: Sequence[Sightline], grid: WindowGrid, half_width: float, min_log_nhi: float = DLA_MIN_LOG_NHI
) -> WindowData:
    """Inputs and targets of every window of every sightline."""
    x = np.stack([dla_input(s.wavelength, s.flux, s.ivar, s.z_qso, grid) for s in sightlines])
    targets = [window_targets(s.dlas, s.z_qso, grid, half_width, min_log_nhi) for s in sightlines]
    return WindowData(
        x=x,
        valid=window_valid(x, grid),
        **{k: np.stack([t[k] for t in targets]) for k in ("label", "offset", "log_nhi")},
    )


def sightline_from_simulation(wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, truth: dict) -> Sightline:
    """A simulated quasar (``mlcore.simulate.spectra``) with its DLA or sub-DLA as known absorbers."""
    dlas = []
    if truth.get("z_abs") is not None:
        dlas.append((truth["z_abs"], truth["log_nhi"]))
    if truth.get("sub_dla_z") is not None:
        dlas.append((truth["sub_dla_z"], truth["sub_dla_log_nhi"]))
    return Sightline(wavelength, flux, ivar, truth["z_qso"], tuple(dlas))


class _DilatedBlock(nn.Module):
    """Residual ``x + ReLU(BN(conv(x)))`` with a valid dilated convolution (the input is cropped to match)."""

    def __init__(self, width: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel, dilation=dilation, bias=False)
        self.norm = nn.BatchNorm1d(width)
        self.trim = dilation * (kernel - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.trim : x.shape[-1] - self.trim] + torch.relu(self.norm(self.conv(x)))


class DLAFinderNet(nn.Module):
    """All sliding windows of a sightline in one pass: (B, 2, n_pix) -> (B, 3, n_outputs).

    Output channels (``DLA_LAYOUT``): DLA logit, offset of the DLA centre from the
    window centre in input pixels (``offset_scale`` times the raw output), and log N_HI
    (``LOG_NHI_CENTRE`` plus the raw output). ``grid`` maps outputs to redshifts.
    """

    def __init__(
        self,
        layout: Sequence[tuple[str, int]] = DLA_LAYOUT,
        width: int = 16,
        kernel: int = 5,
        dilations: Sequence[int] = (1, 2, 4, 8, 16),
        stride: int = 4,
        offset_scale: float = 30.0,
        search_rest: Sequence[float] = (912.0, 1196.0),
        loglam_step: float = 1e-4,
    ):
        super().__init__()
        self.layout = [(str(t), int(n)) for t, n in layout]
        if self.layout != [tuple(p) for p in DLA_LAYOUT]:
            raise ValueError(f"DLAFinderNet has the fixed layout {DLA_LAYOUT}, got {layout}")
        if kernel % 2 != 1:
            raise ValueError(f"kernel must be odd (windows need a centre pixel), got {kernel}")
        self.width, self.kernel, self.stride = int(width), int(kernel), int(stride)
        self.dilations = [int(d) for d in dilations]
        self.offset_scale = float(offset_scale)
        self.search_rest = [float(v) for v in search_rest]
        self.loglam_step = float(loglam_step)
        window = self.stride * (1 + (self.kernel - 1) * sum(self.dilations))
        self.grid = make_grid(self.search_rest, self.loglam_step, self.stride, window)
        self.stem = nn.Sequential(
            nn.Conv1d(2, self.width, self.stride, stride=self.stride, bias=False),
            nn.BatchNorm1d(self.width),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*[_DilatedBlock(self.width, self.kernel, d) for d in self.dilations])
        self.head = nn.Sequential(
            nn.Conv1d(self.width, 2 * self.width, 1), nn.ReLU(), nn.Conv1d(2 * self.width, len(DLA_LAYOUT), 1)
        )

    def model_config(self) -> dict:
        """Constructor arguments other than ``layout`` (for ``save_checkpoint``)."""
        return {
            "width": self.width,
            "kernel": self.kernel,
            "dilations": list(self.dilations),
            "stride": self.stride,
            "offset_scale": self.offset_scale,
            "search_rest": list(self.search_rest),
            "loglam_step": self.loglam_step,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != 2 or x.shape[2] < self.grid.window:
            raise ValueError(f"DLAFinderNet expects (B, 2, L >= {self.grid.window}), got {tuple(x.shape)}")
        if (x.shape[2] - self.grid.window) % self.stride:
            raise ValueError(f"input length minus {self.grid.window} must be a multiple of {self.stride}")
        raw = self.head(self.blocks(self.stem(x))).float()  # (B, 2, L) -> (B, w, L/4) -> (B, 3, n_outputs)
        # scaled in float32: under fp16 autocast 21 + x would be rounded to 0.016 dex
        scale = raw.new_tensor([1.0, self.offset_scale, 1.0]).view(1, 3, 1)
        shift = raw.new_tensor([0.0, 0.0, LOG_NHI_CENTRE]).view(1, 3, 1)
        return raw * scale + shift
