"""Source detection in survey fields and the cutouts made around the sources (photutils).

The usual image-segmentation recipe (photutils' "Image Segmentation" guide, after
SExtractor, Bertin & Arnouts 1996): a smooth 2-D background and its RMS per band from
sigma-clipped medians in boxes; a detection image that adds the bands' signal-to-noise
(each band background-subtracted and divided by its RMS, the sum scaled back to unit
noise); that image smoothed with a Gaussian of about the seeing; pixels above
``nsigma`` in at least ``n_pixels`` connected pixels form segments, and multi-level
deblending splits blended sources. Each source gets its centroid, segment area and
background-subtracted segment flux per band.

Positions use the array-pixel convention of ``mlcore.marks``: x = column, y = row,
continuous, pixel (r, c) covering [c, c+1) x [r, r+1) (photutils puts pixel centres on
integers, so x = x_photutils + 0.5).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.convolution import convolve
from astropy.io import fits
from astropy.stats import SigmaClip
from astropy.wcs import WCS


class DetectionError(ValueError):
    """The field cannot be searched for sources; the message says why."""


@dataclass(frozen=True)
class DetectConfig:
    nsigma: float = 2.0  # detection threshold, in units of the detection image's noise
    n_pixels: int = 5  # connected pixels a source needs
    kernel_fwhm: float = 3.0  # pixels: smoothing of the detection image, about the seeing
    background_box: int = 64  # pixels: background mesh
    deblend_levels: int = 32
    deblend_contrast: float = 0.005  # flux share a branch needs to become its own source
    cutout_size: int = 64
    max_sources: int = 1000  # the brightest ones, when a big field holds more


@dataclass(frozen=True)
class Source:
    label: int  # segment label in the deblended segmentation image
    x: float  # centroid, array-pixel convention
    y: float
    area: int  # pixels in the segment
    flux: tuple[float, ...]  # background-subtracted segment flux per band, in the file's units
    snr: float  # S/N of the segment in the detection image: sum / sqrt(area)


def detect_sources(cube: np.ndarray, config: DetectConfig = DetectConfig()) -> list[Source]:
    """Sources in a (B, H, W) field, brightest (highest S/N) first, at most ``config.max_sources``."""
    from photutils.segmentation import SourceCatalog, deblend_sources, make_2dgaussian_kernel
    from photutils.segmentation import detect_sources as segment_image

    cube = np.asarray(cube, dtype=np.float64)
    if cube.ndim != 3:
        raise DetectionError(f"a field must be (B, H, W), got shape {cube.shape}")
    level, rms = _backgrounds(cube, config)
    if not np.all(np.isfinite(rms)) or np.any(rms <= 0):
        raise DetectionError("a band has no measurable sky noise (constant or empty image)")
    bands = cube - level  # (B, H, W)
    signal = bands / rms  # (B, H, W) in sigma units
    detection = signal.sum(axis=0) / math.sqrt(len(signal))
    size = 2 * int(math.ceil(1.5 * config.kernel_fwhm)) + 1
    smoothed = convolve(detection, make_2dgaussian_kernel(config.kernel_fwhm, size=size))
    # As in SExtractor and photutils' guide, the threshold is in units of the unsmoothed noise
    # (1 here), applied to the smoothed image, whose own noise is several times lower.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils warns on an empty field and on deblending details
        segments = segment_image(smoothed, config.nsigma, config.n_pixels)
        if segments is None:
            return []
        segments = deblend_sources(
            smoothed,
            segments,
            config.n_pixels,
            n_levels=config.deblend_levels,
            contrast=config.deblend_contrast,
            progress_bar=False,
        )
    catalog = SourceCatalog(detection, segments, convolved_data=smoothed)
    xs, ys = np.asarray(catalog.x_centroid), np.asarray(catalog.y_centroid)  # (N,)
    areas = np.asarray(catalog.area.value)
    snrs = np.asarray(catalog.segment_flux) / np.sqrt(np.maximum(areas, 1.0))
    fluxes = np.stack([np.asarray(SourceCatalog(band, segments).segment_flux) for band in bands])  # (B, N)
    sources = [
        Source(
            label=int(catalog.label[i]),
            x=round(float(xs[i]) + 0.5, 2),
            y=round(float(ys[i]) + 0.5, 2),
            area=int(areas[i]),
            flux=tuple(float(f) for f in fluxes[:, i]),
            snr=round(float(snrs[i]), 2),
        )
        for i in range(len(xs))
        if math.isfinite(xs[i]) and math.isfinite(ys[i])
    ]
    sources.sort(key=lambda s: -s.snr)
    return sources[: config.max_sources]


def _backgrounds(cube: np.ndarray, config: DetectConfig) -> tuple[np.ndarray, np.ndarray]:
    """(B, H, W) background and RMS maps from 3-sigma-clipped medians in a mesh of boxes."""
    from photutils.background import Background2D, MedianBackground

    height, width = cube.shape[1:]
    box = max(8, min(config.background_box, height // 2, width // 2))
    levels, rms = [], []
    for band in cube:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bkg = Background2D(band, box, sigma_clip=SigmaClip(sigma=3.0), bkg_estimator=MedianBackground())
        levels.append(bkg.background)
        rms.append(bkg.background_rms)
    return np.stack(levels), np.stack(rms)


def cutout_origin(x: float, y: float, shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Column and row of the lower-left corner of a ``size`` cutout round (x, y), kept inside the field.

    Near an edge the window slides inward rather than padding with invented pixels, so the
    source is then off-centre.
    """
    height, width = shape
    if height < size or width < size:
        raise DetectionError(f"the field ({height}x{width}) is smaller than the {size}x{size} cutouts")
    col = min(max(int(math.floor(x)) - size // 2, 0), width - size)
    row = min(max(int(math.floor(y)) - size // 2, 0), height - size)
    return col, row


def read_celestial_wcs(path) -> WCS | None:
    """The celestial WCS of the file's first image HDU, or None when it has none or it is broken."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                hdu = next(h for h in hdul if h.data is not None and np.asarray(h.data).ndim >= 2)
                wcs = WCS(hdu.header).celestial
        return wcs if wcs.has_celestial else None
    except Exception:  # a broken WCS only costs the positions, never the field
        return None


def sky_position(wcs: WCS | None, x: float, y: float) -> tuple[float | None, float | None]:
    """(RA, Dec) in degrees at array-pixel position (x, y), or (None, None) without a WCS."""
    if wcs is None:
        return None, None
    try:
        ra, dec = wcs.all_pix2world([[x - 0.5, y - 0.5]], 0)[0]  # WCS pixel centres sit on integers
    except Exception:
        return None, None
    if not (math.isfinite(ra) and math.isfinite(dec)):
        return None, None
    return float(ra) % 360.0, float(dec)
