"""Straight-line search for satellite and asteroid trails in survey fields.

Used by ``mlcore.models.detector.detect`` for the detector's line class.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from mlcore.marks import clip_segment

#
# Why not FCOS boxes for trails: a satellite's box is set by where the streak leaves the
# field, which no local feature shows (the benchmark's FCOS reached trail AP ~0.06 with
# boxes scattered along the streak), and faint satellites (0.3 sky sigma per pixel) only
# stand out when summed along their length. So line classes are found as straight lines
# in the S/N image, the matched filter for a streak (Nir, Zackay & Ofek 2018, AJ 156, 229,
# who use a fast Radon transform): stars and galaxies are masked first and every pixel is
# clipped at ``TRAIL_CLIP`` sigma so no bright source can pass for a line.

TRAIL_CLIP = 3.0  # sky sigmas
TRAIL_ANGLES = np.deg2rad(np.arange(0.0, 180.0, 1.0))  # 1 degree: < 1 binned pixel of drift over 128
TRAIL_BIN = 2  # 2 x 2 binning before the transform (the PSF is 4-5 px FWHM)
TRAIL_WIDTHS = (1, 2, 3)  # streak widths tried, binned pixels
TRAIL_MIN_SNR = 7.0  # a line's S/N to become a candidate
TRAIL_MAX_PER_IMAGE = 4
TRAIL_GAP_PX = 22  # gaps bridged along a line: an asteroid's exposures leave 2-20 px between its dashes
TRAIL_MIN_LENGTH_PX = 10.0
TRAIL_SCORE_SNR = 15.0  # score = snr / (snr + this): S/N 15 scores 0.5


def trail_snr_images(cube: np.ndarray) -> np.ndarray:
    """(B, H, W) fluxes -> (B + 1, H, W): each band's S/N image and their sum / sqrt(B), clipped and masked.

    Masked (set to 0): saturated pixels with their bleeds, and compact sources of the
    band sum (stars and galaxies shine in every band; a satellite is in one).
    """
    cube = np.nan_to_num(np.asarray(cube, dtype=np.float64))
    sky = np.median(cube, axis=(1, 2), keepdims=True)
    sigma = 1.4826 * np.median(np.abs(cube - sky), axis=(1, 2), keepdims=True)  # robust sky sigma
    snr = (cube - sky) / np.where(sigma > 0, sigma, 1.0)
    saturated = np.zeros(cube.shape[1:], dtype=bool)
    for plane in cube:
        top = plane >= plane.max() * (1 - 1e-6)
        if top.sum() >= 3:  # a flat top: full-well clipping and its column bleed
            saturated |= top
    saturated = ndimage.binary_dilation(saturated, iterations=3)
    images = np.concatenate([snr, snr.sum(axis=0, keepdims=True) / math.sqrt(len(snr))])
    masked = saturated | _compact_sources(images[-1], saturated)
    images = np.clip(images, -TRAIL_CLIP, TRAIL_CLIP)
    images[:, masked] = 0.0
    return images


def _compact_sources(image: np.ndarray, saturated: np.ndarray, nsigma: float = 4.0, min_axis_ratio: float = 2.0):
    """Pixels of blobs above ``nsigma`` (smoothed) that are not streak-like (axis ratio or length too small)."""
    smooth = ndimage.gaussian_filter(image, 1.0)
    noise = 1.4826 * np.median(np.abs(smooth - np.median(smooth)))
    labels, count = ndimage.label(smooth > nsigma * max(noise, 1e-12))
    if count == 0:
        return np.zeros(image.shape, dtype=bool)
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    n = np.maximum(np.bincount(lab, minlength=count + 1), 1).astype(float)
    dx = xs - (np.bincount(lab, xs, count + 1) / n)[lab]
    dy = ys - (np.bincount(lab, ys, count + 1) / n)[lab]
    cxx = np.bincount(lab, dx * dx, count + 1) / n + 1 / 12
    cyy = np.bincount(lab, dy * dy, count + 1) / n + 1 / 12
    cxy = np.bincount(lab, dx * dy, count + 1) / n
    half = np.sqrt(((cxx - cyy) / 2) ** 2 + cxy**2)
    major, minor = (cxx + cyy) / 2 + half, np.maximum((cxx + cyy) / 2 - half, 1e-6)
    streak = (np.sqrt(major / minor) >= min_axis_ratio) & (math.sqrt(12) * np.sqrt(major) >= TRAIL_MIN_LENGTH_PX)
    compact = ~streak
    compact[np.unique(labels[saturated])] = True  # a bleed makes a saturated star look long
    compact[0] = False
    return ndimage.binary_dilation(compact[labels], iterations=2)


def _binned(image: np.ndarray) -> np.ndarray:
    h, w = (s // TRAIL_BIN * TRAIL_BIN for s in image.shape)
    blocks = image[:h, :w].reshape(h // TRAIL_BIN, TRAIL_BIN, w // TRAIL_BIN, TRAIL_BIN)
    return blocks.sum(axis=(1, 3)) / TRAIL_BIN  # unit noise stays unit


def line_snr(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S/N of every straight line through a unit-noise (H, W) image: the Radon transform by histogram.

    Returns (angles, rho) arrays: the best S/N over ``TRAIL_WIDTHS`` and that width; rho
    index ``r`` is the signed distance ``r - n_rho // 2`` (pixels) of the line from the centre.
    """
    h, w = image.shape
    ys, xs = np.mgrid[0:h, 0:w]
    xs, ys = xs - (w - 1) / 2, ys - (h - 1) / 2
    n_rho = int(math.ceil(math.hypot(h, w))) + 1
    rho = np.outer(np.cos(TRAIL_ANGLES), xs.ravel()) + np.outer(np.sin(TRAIL_ANGLES), ys.ravel())
    index = (np.rint(rho).astype(np.int64) + n_rho // 2) + n_rho * np.arange(len(TRAIL_ANGLES))[:, None]
    size = len(TRAIL_ANGLES) * n_rho
    sums = np.bincount(index.ravel(), np.tile(image.ravel(), len(TRAIL_ANGLES)), size).reshape(-1, n_rho)
    counts = np.bincount(index.ravel(), None, size).reshape(-1, n_rho).astype(float)
    best, width = np.full(sums.shape, -np.inf), np.zeros(sums.shape, dtype=np.int64)
    for wd in TRAIL_WIDTHS:
        s = ndimage.uniform_filter1d(sums, wd, axis=1, mode="constant") * wd
        c = ndimage.uniform_filter1d(counts, wd, axis=1, mode="constant") * wd
        value = np.where(c >= 4 * wd, s / np.sqrt(np.maximum(c, 1.0)), -np.inf)
        better = value > best
        best[better], width[better] = value[better], wd
    return best, width


def _segment(image: np.ndarray, angle: float, rho: float, half_width: float):
    """The streak's extent along a line: the run of signal with the largest sum, short gaps bridged."""
    h, w = image.shape
    nx, ny = math.cos(angle), math.sin(angle)  # the line's normal; (-ny, nx) runs along it
    t = np.arange(-math.hypot(h, w) / 2, math.hypot(h, w) / 2, 1.0)
    across = np.arange(-half_width, half_width + 0.5, 1.0)
    px = w / 2 + rho * nx - t[:, None] * ny + across[None, :] * nx
    py = h / 2 + rho * ny + t[:, None] * nx + across[None, :] * ny
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    values = np.where(inside, image[np.clip(py, 0, h - 1).astype(int), np.clip(px, 0, w - 1).astype(int)], 0.0)
    n, profile = inside.sum(axis=1), values.sum(axis=1)
    window = 8
    local = ndimage.uniform_filter1d(profile, window) * window
    local_n = ndimage.uniform_filter1d(n.astype(float), window) * window
    on = (local_n > 0) & (local > 2.0 * np.sqrt(np.maximum(local_n, 1.0)))  # 2 sigma over 8 px
    on |= ndimage.binary_closing(on, np.ones(TRAIL_GAP_PX)) & (n > 0)
    labels, count = ndimage.label(on)
    if count == 0:
        return None
    sums = ndimage.sum(profile, labels, np.arange(1, count + 1))
    best = int(np.argmax(sums)) + 1
    run = np.flatnonzero(labels == best)
    t0, t1 = t[run[0]] + window / 2 - 1, t[run[-1]] - window / 2 + 1  # undo the window's reach
    if t1 - t0 < TRAIL_MIN_LENGTH_PX:
        return None
    ends = [(w / 2 + rho * nx - tt * ny, h / 2 + rho * ny + tt * nx) for tt in (t0, t1)]
    return ends, float(sums[best - 1] / math.sqrt(max(n[run].sum(), 1)))


def find_trails(cube: np.ndarray) -> list[dict]:
    """Straight trails in a (B, H, W) field: ``[{"x1", "y1", "x2", "y2", "snr"}]``, clipped to the field, best first.

    Each band is searched (a satellite crosses one exposure) and so is the band sum (an
    asteroid leaves a dash in each); the same streak found twice is reported once.
    """
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"a field must have shape (B, H, W), got {cube.shape}")
    height, width = cube.shape[1:]
    found = []
    for image in trail_snr_images(cube):
        snr, widths = line_snr(_binned(image))
        n_rho = snr.shape[1]
        for _ in range(TRAIL_MAX_PER_IMAGE):
            a, r = np.unravel_index(int(np.argmax(snr)), snr.shape)
            if snr[a, r] < TRAIL_MIN_SNR:
                break
            wd = int(widths[a, r])
            rho = (r - n_rho // 2 - (0.5 if wd % 2 == 0 else 0.0)) * TRAIL_BIN  # an even filter centres half a bin low
            segment = _segment(image, float(TRAIL_ANGLES[a]), rho, half_width=wd * TRAIL_BIN / 2 + 1)
            snr[np.arange(a - 4, a + 5) % len(TRAIL_ANGLES), max(r - 4, 0) : r + 5] = -np.inf
            if segment is not None:
                ends = clip_segment(*segment[0], (float(width), float(height)))
                if ends is not None:
                    (x1, y1), (x2, y2) = ends
                    found.append({"x1": x1, "y1": y1, "x2": x2, "y2": y2, "snr": segment[1]})
    return _distinct_trails(found)


def _distinct_trails(found: list[dict]) -> list[dict]:
    """One entry per streak: the best S/N, and the longest extent any search found (one band sees one dash)."""
    kept: list[dict] = []
    for trail in sorted(found, key=lambda f: -f["snr"]):
        same = next((other for other in kept if _same_streak(trail, other)), None)
        if same is None:
            kept.append(dict(trail))
        elif _length(trail) > _length(same):
            same.update({k: trail[k] for k in ("x1", "y1", "x2", "y2")})
    return kept


def _length(trail: dict) -> float:
    return math.hypot(trail["x2"] - trail["x1"], trail["y2"] - trail["y1"])


def _same_streak(a: dict, b: dict, max_angle_deg: float = 10.0, max_gap_px: float = 12.0) -> bool:
    """Whether ``a`` re-finds ``b``: nearly parallel, with its middle within a few pixels of ``b``."""
    pa, qa = np.array([a["x1"], a["y1"]]), np.array([a["x2"], a["y2"]])
    pb, qb = np.array([b["x1"], b["y1"]]), np.array([b["x2"], b["y2"]])
    da, db = qa - pa, qb - pb
    cos = abs(float(da @ db)) / max(float(np.linalg.norm(da) * np.linalg.norm(db)), 1e-9)
    if cos < math.cos(math.radians(max_angle_deg)):
        return False
    middle = (pa + qa) / 2
    t = float(np.clip((middle - pb) @ db / max(float(db @ db), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(middle - (pb + t * db))) <= max_gap_px
