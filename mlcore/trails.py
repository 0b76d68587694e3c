"""Straight-line search for satellite and asteroid trails in survey fields.

Used by ``mlcore.models.detector.detect`` for the detector's line class.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import ndimage, sparse

from mlcore.marks import clip_segment

#
# Why not FCOS boxes for trails: a satellite's box is set by where the streak leaves the
# field, which no local feature shows (the benchmark's FCOS reached trail AP ~0.06 with
# boxes scattered along the streak), and faint satellites (0.3 sky sigma per pixel) only
# stand out when summed along their length. So line classes are found as straight lines
# in the S/N image, the matched filter for a streak (Nir, Zackay & Ofek 2018, AJ 156, 229,
# "Fast Radon transform for streak detection"): the S/N of a line is its sum over
# sqrt(pixels summed) (masked pixels count for nothing), widths are tried by summing
# neighbouring lines, and since a streak shorter than the field is diluted by the full-line
# sum, sub-segments of the lines (16-96 px) are searched too, on a coarser angle grid (a
# short streak's angle is less precise anyway). Each found streak is removed out to where
# its light fades and the search repeated, so one streak is not found many times.
#
# What must not pass for a line: stars and galaxies shine in every band while a satellite
# is in one band and an asteroid's dash in one band at a time, so sources seen in two or
# more bands are masked (and saturated pixels with their column bleeds), every pixel is
# clipped at ``TRAIL_CLIP`` sigma so no residual bright pixel can pass for a line, a streak
# found in one band must be absent from the others, and one found in the band sum must have
# an asteroid's band order along it (``_ordered_snr``). A streak's ends are where the S/N
# along it peaks: the run of the line profile with the largest sum / sqrt(pixels) (the
# likelihood-ratio statistic of a box-car streak of unknown ends and amplitude in white
# noise); pieces of one streak found in different images are joined.

TRAIL_CLIP = 3.0  # sky sigmas
TRAIL_BIN = 2  # 2 x 2 binning before the transform (the PSF is 4-5 px FWHM)
TRAIL_WIDTHS = (1, 2, 3)  # streak widths tried, binned pixels
LINE_ANGLES = np.deg2rad(np.arange(0.0, 180.0, 1.0))  # 1 degree: < 1 binned pixel of drift over 128
SEGMENT_ANGLES = np.deg2rad(np.arange(0.0, 180.0, 3.0))  # 3 degrees: < 1.3 binned pixels over 48
SEGMENT_CHUNK = 4  # binned pixels along a line summed together in the segment search
SEGMENT_RUNS = (2, 3, 4, 6, 8, 12)  # segment lengths searched, in chunks: 16-96 pixels
LINE_MIN_SNR = 5.5  # a line's S/N to be looked at closely
SEGMENT_MIN_SNR = 6.0  # a segment's S/N to be looked at closely (more segments than lines: higher noise peaks)
TRAIL_MIN_SNR = 7.0  # a refined segment's S/N to be reported
TRAIL_MAX_PER_IMAGE = 3
TRAIL_MIN_LENGTH_PX = 10.0
TRAIL_GAP_PX = 22  # collinear pieces this close are one streak: an asteroid leaves 2-20 px between its dashes
TRAIL_SCORE_SNR = 15.0  # score = snr / (snr + this): S/N 15 scores 0.5
ASTEROID_MIN_GAIN = 0.85  # band-ordered S/N over band-sum S/N: 1.7 for an asteroid, 0.6 for outskirts
ASTEROID_MAX_DASH_PX = 30.0  # an asteroid moves at most 25 px in one exposure (a PSF more on the image)
ASTEROID_MIN_GAIN_OVER_DASH = 1.2  # a lone dash is an asteroid's when the band-ordered S/N is this much higher
COINCIDENT_SNR = 3.0  # S/N along a one-band streak in another band that makes it a source's outskirts
SOURCE_NSIGMA = 3.0  # smoothed S/N above which a pixel is part of a source in that band
SOURCE_COLOUR = 0.2  # a star or galaxy's second band has at least this share of its brightest band's S/N
SOURCE_MIN_PIXELS = 10  # smaller two-band patches are where an asteroid's dashes meet


def trail_snr_images(cube: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, H, W) fluxes -> ((B + 1, H, W) S/N images, (H, W) usable pixels).

    The images are each band's S/N and their sum / sqrt(B), clipped at ``TRAIL_CLIP`` and
    zero where not usable: saturated pixels with their bleeds, pixels of a source seen in
    two or more bands, and compact sources of the band sum.
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
    masked = saturated | _compact_sources(snr, images[-1], saturated)
    if len(snr) > 1:
        masked |= _multiband_sources(snr)
    images = np.clip(images, -TRAIL_CLIP, TRAIL_CLIP)
    images[:, masked] = 0.0
    return images, ~masked


def _multiband_sources(snr: np.ndarray) -> np.ndarray:
    """Pixels (dilated) of sources that stand out in two or more bands: stars and galaxies, never a one-band streak.

    Where an asteroid's dashes meet, the wings of two bands overlap too, but only over a few
    pixels: such small patches are kept.
    """
    smooth = ndimage.gaussian_filter(snr, (0, 1.5, 1.5))
    noise = 1.4826 * np.median(np.abs(smooth - np.median(smooth, axis=(1, 2), keepdims=True)), axis=(1, 2))
    labels, count = ndimage.label(_two_bands(smooth / np.maximum(noise, 1e-12)[:, None, None]))
    large = np.bincount(labels.ravel(), minlength=count + 1) >= SOURCE_MIN_PIXELS
    large[0] = False
    return ndimage.binary_dilation(large[labels], iterations=3)


def _two_bands(snr: np.ndarray) -> np.ndarray:
    """Where a (B, ...) S/N array shows a source in two bands: both significant, of star- or galaxy-like colour."""
    ranked = np.sort(snr, axis=0)  # brightest band last
    return (ranked[-2] >= SOURCE_NSIGMA) & (ranked[-2] >= SOURCE_COLOUR * ranked[-1])


def _compact_sources(snr: np.ndarray, image: np.ndarray, saturated: np.ndarray, nsigma: float = 4.0) -> np.ndarray:
    """Pixels of compact blobs of the band sum ``image`` (smoothed, above ``nsigma``) that two bands see.

    A blob is compact unless it is streak-like (axis ratio >= 2 and >= ``TRAIL_MIN_LENGTH_PX``
    long) and seen in a band when its pixels' S/N in that band (``snr``, (B, H, W)) reaches
    ``SOURCE_NSIGMA``: a star or galaxy is seen in two or more bands, an asteroid's dash in
    one. Blobs touching saturated pixels always count (a bleed makes a star look long).
    """
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
    streak = (np.sqrt(major / minor) >= 2.0) & (math.sqrt(12) * np.sqrt(major) >= TRAIL_MIN_LENGTH_PX)
    band_snr = np.stack([np.bincount(lab, band[ys, xs], count + 1) for band in snr]) / np.sqrt(n)  # (B, count + 1)
    compact = ~streak & (_two_bands(band_snr) if len(snr) > 1 else True)
    compact[np.unique(labels[saturated])] = True
    compact[0] = False
    return ndimage.binary_dilation(compact[labels], iterations=2)


def _binned(image: np.ndarray) -> np.ndarray:
    """Sum of ``TRAIL_BIN`` x ``TRAIL_BIN`` blocks (also for the usable-pixel counts)."""
    h, w = (s // TRAIL_BIN * TRAIL_BIN for s in image.shape)
    return image[:h, :w].reshape(h // TRAIL_BIN, TRAIL_BIN, w // TRAIL_BIN, TRAIL_BIN).sum(axis=(1, 3))


@lru_cache(maxsize=8)
def _radon_matrix(shape: tuple[int, int], segments: bool) -> tuple[sparse.csr_matrix, tuple[int, int, int]]:
    """The Radon transform of an (H, W) image as a sparse (A * R * T, H * W) 0/1 matrix, and (A, R, T).

    Row (a, r, t) sums the pixels whose centre lies within half a pixel of the line at angle
    ``a`` and signed distance ``r - R // 2`` (pixels) from the image centre, in chunk ``t`` of
    ``SEGMENT_CHUNK`` pixels along it (one chunk for full lines).
    """
    h, w = shape
    angles = SEGMENT_ANGLES if segments else LINE_ANGLES
    ys, xs = np.mgrid[0:h, 0:w]
    xs, ys = (xs - (w - 1) / 2).ravel(), (ys - (h - 1) / 2).ravel()
    n_rho = int(math.ceil(math.hypot(h, w))) + 1
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    rho = np.rint(cos * xs + sin * ys).astype(np.int64) + n_rho // 2
    n_t = int(math.ceil(n_rho / SEGMENT_CHUNK)) if segments else 1
    t = ((-sin * xs + cos * ys + n_rho / 2) // SEGMENT_CHUNK).astype(np.int64) if segments else 0
    rows = ((np.arange(len(angles))[:, None] * n_rho + rho) * n_t + t).ravel()
    columns = np.tile(np.arange(h * w), len(angles))
    size = len(angles) * n_rho * n_t
    matrix = sparse.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, columns)), shape=(size, h * w))
    return matrix, (len(angles), n_rho, n_t)


def _radon(values: np.ndarray, pixels: np.ndarray, segments: bool) -> tuple[np.ndarray, np.ndarray]:
    """(A, R, T) sums of a unit-noise binned image and of its usable pixel counts along lines (chunks)."""
    matrix, shape = _radon_matrix(values.shape, segments)
    both = matrix @ np.column_stack([values.ravel(), pixels.ravel()]).astype(np.float32)  # (A * R * T, 2)
    return both[:, 0].reshape(shape), both[:, 1].reshape(shape)


def _best_line(values: np.ndarray, pixels: np.ndarray, segments: bool) -> tuple[float, float, float, float]:
    """The (S/N, angle, rho in binned pixels, width in binned pixels) of the brightest line or segment.

    ``values`` are binned sums of a unit-noise image and ``pixels`` the usable pixels in each
    bin, so a line's S/N is its sum over sqrt(its usable pixels).
    """
    sums, counts = _radon(values, pixels, segments)
    runs = SEGMENT_RUNS if segments else (1,)
    angles = SEGMENT_ANGLES if segments else LINE_ANGLES
    best = (-np.inf, 0.0, 0.0, 1.0)
    cumulative = np.zeros((2, *sums.shape[:2], sums.shape[2] + 1), dtype=np.float32)  # sums, counts along a line
    np.cumsum(np.stack([sums, counts]), axis=3, out=cumulative[..., 1:])
    for wd in TRAIL_WIDTHS:
        s, c = ndimage.uniform_filter1d(cumulative, wd, axis=2, mode="constant") * wd  # wd neighbouring lines
        for k in runs:
            step = max(k // 2, 1)  # runs start every half run length: a streak loses at most a quarter
            run_sum = s[..., k::step] - s[..., : s.shape[2] - k : step]
            run_n = c[..., k::step] - c[..., : s.shape[2] - k : step]
            bins = k * SEGMENT_CHUNK * wd / 2 if segments else 4 * wd  # at least half a segment's pixels usable
            snr = np.where(run_n >= bins * TRAIL_BIN**2, run_sum / np.sqrt(np.maximum(run_n, 1.0)), -np.inf)
            a, r, t = np.unravel_index(int(np.argmax(snr)), snr.shape)
            if snr[a, r, t] > best[0]:
                rho = r - sums.shape[1] // 2 - (0.5 if wd % 2 == 0 else 0.0)  # an even filter centres half a bin low
                best = (float(snr[a, r, t]), float(angles[a]), rho, float(wd))
    return best


def _line_coordinates(shape: tuple[int, int], angle: float, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) distance of each pixel centre across the line and position along it (pixels)."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    xs, ys = xs + 0.5 - w / 2, ys + 0.5 - h / 2
    nx, ny = math.cos(angle), math.sin(angle)  # the line's normal; (-ny, nx) runs along it
    return xs * nx + ys * ny - rho, -xs * ny + ys * nx


def _segment_snr(image: np.ndarray, usable: np.ndarray, angle: float, rho: float, half_width: float):
    """The run along a line with the largest sum / sqrt(pixels): (S/N, t0, t1) or None."""
    across, along = _line_coordinates(image.shape, angle, rho)
    inside = (np.abs(across) <= half_width) & usable
    if inside.sum() < TRAIL_MIN_LENGTH_PX:
        return None
    t = along[inside]
    offset = math.floor(t.min())
    bins = (t - offset).astype(np.int64)
    profile = np.bincount(bins, image[inside])
    n = np.bincount(bins, None, len(profile))
    s, c = np.concatenate([[0.0], np.cumsum(profile)]), np.concatenate([[0.0], np.cumsum(n)])
    run_sum, run_n = s[None, :] - s[:, None], c[None, :] - c[:, None]  # (start, end) pairs
    snr = np.where(run_n >= TRAIL_MIN_LENGTH_PX, run_sum / np.sqrt(np.maximum(run_n, 1.0)), -np.inf)
    i, j = np.unravel_index(int(np.argmax(snr)), snr.shape)
    return float(snr[i, j]), float(offset + i), float(offset + j)


def _refined_segment(image: np.ndarray, usable: np.ndarray, angle: float, rho: float, half_width: float, step: float):
    """The best (S/N, t0, t1, angle, rho) near a found line: angle within +-``step`` degrees, offset +-1 pixel."""
    best = None
    for da in np.deg2rad((-step, 0.0, step)):
        for dr in (-1.0, 0.0, 1.0):
            found = _segment_snr(image, usable, angle + da, rho + dr, half_width)
            if found is not None and (best is None or found[0] > best[0]):
                best = (*found, angle + da, rho + dr)
    return best


def _trails_in(image: np.ndarray, usable: np.ndarray, bands: np.ndarray, band: int | None) -> list[dict]:
    """Streaks in one (H, W) clipped S/N image, brightest first; each removed before the next search.

    ``image`` is band ``band`` of the (B, H, W) clipped S/N images ``bands``, or their sum
    (``band`` None). A streak in one band must not be seen in the others: a satellite crosses
    one exposure, while a galaxy's outskirts are in all. A streak in the sum must be an
    asteroid's: one band after another along it (``_ordered_snr``), which is then its S/N.
    """
    image, usable = image.copy(), usable.copy()
    found = []
    for _ in range(TRAIL_MAX_PER_IMAGE):
        streak = _next_streak(image, usable)
        if streak is None:
            break
        snr, t0, t1, angle, rho, half_width = streak
        across, along = _line_coordinates(image.shape, angle, rho)
        on_streak = (np.abs(across) <= half_width) & (along >= t0) & (along <= t1) & usable
        if band is None:
            real = _ordered_snr(bands, on_streak, along, t0, t1) >= ASTEROID_MIN_GAIN * snr
            window = (np.abs(across) <= half_width) & (along >= t0 - TRAIL_GAP_PX) & (along <= t1 + TRAIL_GAP_PX)
            snr, t0, t1 = _ordered_run(bands, window & usable, along)
        else:
            elsewhere = np.delete(bands, band, axis=0)[:, on_streak].sum(axis=1) / math.sqrt(max(on_streak.sum(), 1))
            real = not (elsewhere >= COINCIDENT_SNR).any()
            if real and t1 - t0 <= ASTEROID_MAX_DASH_PX:
                snr, t0, t1, angle, rho = _lone_dash(bands, usable, (snr, t0, t1, angle, rho), half_width)
                across, along = _line_coordinates(image.shape, angle, rho)
        beside = (along >= t0 - 2) & (along <= t1 + 2)
        covered = beside & (np.abs(across) <= _reach(image, usable, across, beside, half_width))
        image[covered], usable[covered] = 0.0, False  # the next search cannot find it again
        ends = _segment_ends(image.shape, angle, rho, t0, t1)
        if real and snr >= TRAIL_MIN_SNR and t1 - t0 >= TRAIL_MIN_LENGTH_PX and ends is not None:
            (x1, y1), (x2, y2) = ends
            found.append({"x1": x1, "y1": y1, "x2": x2, "y2": y2, "snr": snr})
    return found


def _ordered_snr(bands: np.ndarray, on_streak: np.ndarray, along: np.ndarray, t0: float, t1: float) -> float:
    """S/N of a streak whose B equal parts are each in one band, in band order either way (an asteroid).

    Between exposures an asteroid moves on, so its g, r and i dashes follow each other along
    its line: summing band b over part b only collects all of its light with a third of the
    noise of the band sum (S/N sqrt(3) x the sum's), while light in every band all along (a
    galaxy's outskirts) gets 1 / sqrt(3) x the sum's.
    """
    edges = np.linspace(t0, t1, len(bands) + 1)
    part = np.clip(np.searchsorted(edges, along[on_streak], side="right") - 1, 0, len(bands) - 1)
    values = bands[:, on_streak]  # (B, n)
    forward = values[part, np.arange(part.size)].sum()
    backward = values[len(bands) - 1 - part, np.arange(part.size)].sum()
    return float(max(forward, backward) / math.sqrt(max(part.size, 1)))


def _lone_dash(bands: np.ndarray, usable: np.ndarray, dash: tuple, half_width: float) -> tuple:
    """A short one-band streak, or the asteroid it is one dash of when that has the higher S/N.

    The other dashes lie on its line up to two steps (a dash and a gap) either way; a short
    dash's angle is uncertain, so lines a few degrees either way through its middle are tried.
    ``dash`` and the result are (S/N, t0, t1, angle, rho).
    """
    snr, t0, t1, angle, rho = dash
    middle = (t0 + t1) / 2
    x, y = rho * math.cos(angle) - middle * math.sin(angle), rho * math.sin(angle) + middle * math.cos(angle)
    reach = 2 * (t1 - t0 + TRAIL_GAP_PX)
    best = dash
    for tilt in np.deg2rad((-4.0, -2.0, 0.0, 2.0, 4.0)):
        a = angle + tilt
        r, t = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
        across, along = _line_coordinates(usable.shape, a, r)
        window = (np.abs(across) <= half_width) & (np.abs(along - t) <= reach) & usable
        ordered, u0, u1 = _ordered_run(bands, window, along)
        if u0 <= t <= u1 and ordered >= ASTEROID_MIN_GAIN_OVER_DASH * snr and ordered > best[0]:
            best = (ordered, u0, u1, a, r)
    return best


def _ordered_run(bands: np.ndarray, pick: np.ndarray, along: np.ndarray) -> tuple[float, float, float]:
    """The run [t0, t1] along a line with the largest ``_ordered_snr`` over the ``pick``ed pixels: (S/N, t0, t1)."""
    offset = math.floor(along[pick].min())
    bins = (along[pick] - offset).astype(np.int64)
    profiles = np.stack([np.bincount(bins, band[pick], bins.max() + 1) for band in bands])  # (B, T)
    cumulative = np.concatenate([np.zeros((len(bands), 1)), np.cumsum(profiles, axis=1)], axis=1)
    counts = np.concatenate([[0.0], np.cumsum(np.bincount(bins, None, profiles.shape[1]))])
    start, end = np.meshgrid(np.arange(len(counts)), np.arange(len(counts)), indexing="ij")
    edges = [start + (end - start) * k // len(bands) for k in range(len(bands) + 1)]
    forward = sum(cumulative[k][edges[k + 1]] - cumulative[k][edges[k]] for k in range(len(bands)))
    backward = sum(cumulative[-1 - k][edges[k + 1]] - cumulative[-1 - k][edges[k]] for k in range(len(bands)))
    n = counts[end] - counts[start]
    snr = np.where(n >= TRAIL_MIN_LENGTH_PX, np.maximum(forward, backward) / np.sqrt(np.maximum(n, 1.0)), -np.inf)
    i, j = np.unravel_index(int(np.argmax(snr)), snr.shape)
    return float(snr[i, j]), float(offset + i), float(offset + j)


def _next_streak(image: np.ndarray, usable: np.ndarray):
    """The brightest line or segment left, refined: (S/N, t0, t1, angle, rho, half width) or None."""
    values, pixels = _binned(image), _binned(usable.astype(float))
    refined = []
    for segments, threshold in ((False, LINE_MIN_SNR), (True, SEGMENT_MIN_SNR)):
        snr, angle, rho, wd = _best_line(values, pixels, segments)
        if snr >= threshold:
            half_width = wd * TRAIL_BIN / 2 + 1
            best = _refined_segment(image, usable, angle, rho * TRAIL_BIN, half_width, 1.0 if segments else 0.5)
            if best is not None:
                refined.append((*best, half_width))
    return max(refined) if refined else None


def _reach(image: np.ndarray, usable: np.ndarray, across: np.ndarray, beside: np.ndarray, half_width: float) -> float:
    """How far from its centre line a streak's light still shows (a bright or defocused one is wide).

    Pixels ``beside`` the found run are binned by distance across the line; the streak
    reaches out to the first 1-pixel bin beyond ``half_width`` whose S/N drops below 2.
    """
    pick = beside & usable & (np.abs(across) < 32)
    distance = np.abs(across[pick]).astype(np.int64)
    sums = np.bincount(distance, image[pick], 32)
    counts = np.bincount(distance, None, 32)
    faint = np.flatnonzero((sums < 2.0 * np.sqrt(np.maximum(counts, 1.0))) & (np.arange(32) >= half_width))
    return float(faint[0] if faint.size else 32) + 1.0


def _segment_ends(shape: tuple[int, int], angle: float, rho: float, t0: float, t1: float):
    """The (x, y) ends of the run [t0, t1] along a line, clipped to the field; None when outside."""
    height, width = shape
    nx, ny = math.cos(angle), math.sin(angle)
    ends = [(width / 2 + rho * nx - t * ny, height / 2 + rho * ny + t * nx) for t in (t0, t1)]
    return clip_segment(*ends, (float(width), float(height)))


def find_trails(cube: np.ndarray) -> list[dict]:
    """Straight trails in a (B, H, W) field: ``[{"x1", "y1", "x2", "y2", "snr"}]``, clipped to the field, best first.

    Each band is searched (a satellite crosses one exposure) and so is the band sum (an
    asteroid leaves a dash in each); the same streak found twice is reported once.
    """
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"a field must have shape (B, H, W), got {cube.shape}")
    images, usable = trail_snr_images(cube)
    bands = images[:-1]
    found = []
    for i, image in enumerate(images if len(bands) > 1 else bands):
        found += _trails_in(image, usable, bands, i if i < len(bands) else None)
    return _distinct_trails(found)


def _distinct_trails(found: list[dict]) -> list[dict]:
    """One entry per streak: the best S/N, over the union of the collinear pieces found (one band sees one dash)."""
    kept: list[dict] = []
    for trail in sorted(found, key=lambda f: -f["snr"]):
        same = next((other for other in kept if _same_streak(trail, other) or _collinear(trail, other)), None)
        if same is None:
            kept.append(dict(trail))
        else:
            same.update(_union(same, trail))
    return kept


def _ends(trail: dict) -> tuple[np.ndarray, np.ndarray]:
    return np.array([trail["x1"], trail["y1"]]), np.array([trail["x2"], trail["y2"]])


def _same_streak(a: dict, b: dict, max_angle_deg: float = 10.0, max_gap_px: float = 12.0) -> bool:
    """Whether ``a`` re-finds ``b``: nearly parallel, with its middle within a few pixels of ``b``."""
    pa, qa = _ends(a)
    pb, qb = _ends(b)
    da, db = qa - pa, qb - pb
    cos = abs(float(da @ db)) / max(float(np.linalg.norm(da) * np.linalg.norm(db)), 1e-9)
    if cos < math.cos(math.radians(max_angle_deg)):
        return False
    middle = (pa + qa) / 2
    t = float(np.clip((middle - pb) @ db / max(float(db @ db), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(middle - (pb + t * db))) <= max_gap_px


def _collinear(a: dict, b: dict, max_offset_px: float = 5.0) -> bool:
    """Whether the shorter of two streaks lies on the longer's line (both ends within a few pixels) near it.

    Near: along the line, within ``TRAIL_GAP_PX`` of the longer one. (A short dash's own
    angle says little, so the longer one's line is the reference.)
    """
    a, b = sorted((a, b), key=_length)
    pa, qa = _ends(a)
    pb, qb = _ends(b)
    length = max(float(np.linalg.norm(qb - pb)), 1e-9)
    along, normal = (qb - pb) / length, np.array([-(qb - pb)[1], (qb - pb)[0]]) / length
    if max(abs(float((pa - pb) @ normal)), abs(float((qa - pb) @ normal))) > max_offset_px:
        return False
    ta, tb = sorted((float((pa - pb) @ along), float((qa - pb) @ along)))
    return ta <= length + TRAIL_GAP_PX and tb >= -TRAIL_GAP_PX


def _union(a: dict, b: dict) -> dict:
    """The ends of the extent ``a`` and ``b`` cover together, along the longer one's line."""
    b, a = sorted((a, b), key=_length)
    pa, qa = _ends(a)
    direction = (qa - pa) / max(float(np.linalg.norm(qa - pa)), 1e-9)
    t = [float((p - pa) @ direction) for p in (pa, qa, *_ends(b))]
    (x1, y1), (x2, y2) = pa + min(t) * direction, pa + max(t) * direction
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


def _length(trail: dict) -> float:
    return math.hypot(trail["x2"] - trail["x1"], trail["y2"] - trail["y1"])
