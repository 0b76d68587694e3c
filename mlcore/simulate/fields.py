"""DECaLS-like survey fields (g, r, i; 256 x 256 by default) with galaxies, stars and trails.

The same seeing, pixel scale, sky noise and galaxy/star models as the cutouts in
``mlcore.simulate.sky``, placed at random over a larger field: galaxies and stars follow
magnitude counts that rise steeply to the faint end (most objects sit near or below the
detection limit), some galaxies are placed close to another (blends), bright stars
saturate and bleed along their column, and some fields carry a satellite trail (one band:
the bands are separate exposures) or an asteroid (a short dash in each band, displaced
along its motion between the exposures, with solar-like colours).

Truth (hidden from volunteers) lists every object, even those too faint to see:

- ``boxes``: ``{"label": "galaxy"|"star", "x", "y", "width", "height", "snr", "detectable", ...}``,
  the box around the object's 1-sigma isophote (or a seeing-sized box when fainter), in
  the array-pixel convention of ``mlcore.marks`` (x = column, y = row, pixel (r, c) covers
  [c, c+1) x [r, r+1)), clipped to the field;
- ``lines``: ``{"label": "satellite"|"asteroid", "x1", "y1", "x2", "y2", "snr", "detectable", ...}``,
  the visible part of each trail, clipped to the field;
- ``class``: "trail" when at least one detectable trail crosses the field, else "no_trail".

``snr`` is the matched-filter S/N, sqrt(sum(model^2)) / sigma, in the r band (or the one
band a satellite trail is in); objects below ``detect_snr`` are kept but flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import galsim
import numpy as np

from mlcore.marks import box_iou, clip_segment
from mlcore.simulate import sky

FIELD_TREE: dict = {
    "first": "T0",
    "tasks": {
        "T0": {
            "question": "Does an asteroid or satellite trail cross this field?",
            "help": "A satellite leaves a long straight streak, often from edge to edge, usually in one colour only. "
            "An asteroid leaves a short dash, or a row of short dashes of different colours. A vertical spike "
            "sticking out of a very bright star is the camera overflowing, not a trail.",
            "answers": [{"label": "Yes", "next": None}, {"label": "No", "next": None}],
        }
    },
    "marks": {
        "instruction": "Draw a box round every galaxy and every star you can see, and a line along each "
        "asteroid or satellite trail from one end to the other.",
        "tools": [
            {
                "type": "box",
                "label": "Galaxy",
                "help": "A fuzzy patch of light, larger than the stars nearby, often oval or with a disk. "
                "Box all of the light you can see, including faint outskirts.",
            },
            {
                "type": "box",
                "label": "Star",
                "help": "A sharp, round point of light; bright ones look bigger and may have a vertical spike.",
            },
            {
                "type": "line",
                "label": "Asteroid or satellite trail",
                "help": "Click one end of the streak and drag to the other end. If it leaves the picture, "
                "stop at the edge.",
            },
        ],
        "max_marks": 100,
    },
}
CLASS_ANSWERS = {"trail": {"T0": 0}, "no_trail": {"T0": 1}}
FIELD_CLASSES = tuple(CLASS_ANSWERS)

GALAXY_TYPES = ("smooth_round", "smooth_cigar", "featured_disk", "edge_on_disk", "merger")
_GALAXY_WEIGHTS = np.array([0.28, 0.12, 0.32, 0.16, 0.12])
_BOX_ISOPHOTE = 1.0  # truth boxes enclose the model above this many sky sigmas


@dataclass(frozen=True)
class FieldConfig:
    size: int = 256
    pixel_scale: float = 0.262  # arcsec / pixel, DECam
    bands: tuple[str, ...] = ("g", "r", "i")
    seeing_fwhm: tuple[float, float] = (1.0, 1.4)  # arcsec, r band
    n_galaxies: tuple[int, int] = (10, 30)
    n_stars: tuple[int, int] = (3, 12)
    galaxy_mag: tuple[float, float] = (17.0, 24.5)  # r, counts dN/dm ~ 10^(0.35 m)
    star_mag: tuple[float, float] = (14.0, 24.0)  # r, counts dN/dm ~ 10^(0.12 m): flatter than galaxies
    blend_fraction: float = 0.2  # galaxies placed 1.5-4" from another one
    trail_fraction: float = 0.5  # fields with at least one trail
    satellite_share: float = 0.6  # of trails; the rest are asteroids
    saturation: float = 25.0  # nanomaggies per pixel (a DECam-like r ~ 15.3 star peaks here)
    detect_snr: float = 5.0


def _magnitude(rng, lo: float, hi: float, slope: float) -> float:
    """A magnitude from dN/dm ~ 10^(slope m) on [lo, hi] (inverse CDF)."""
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return math.log10(a + rng.random() * (b - a)) / slope


def _nanomaggies(mag: float) -> float:
    return 10 ** (-0.4 * (mag - 22.5))


@dataclass
class _Field:
    config: FieldConfig
    fwhms: list[float]  # arcsec, one per band
    sigma: np.ndarray  # (B,) sky sigma per pixel
    model: np.ndarray  # (B, H, W) noiseless

    def add(self, profile_per_band: list[galsim.GSObject | None], x: float, y: float) -> np.ndarray:
        """Draw a PSF-convolved object centred at array coordinates (x, y); return its (B, H, W) model."""
        size = self.config.size
        own = np.zeros_like(self.model)
        for b, profile in enumerate(profile_per_band):
            if profile is None:
                continue
            psf = galsim.Moffat(beta=3.5, fwhm=self.fwhms[b], gsparams=sky._GSP)
            convolved = galsim.Convolve(profile, psf, gsparams=sky._GSP)
            # GalSim puts pixel centres on integers from 1; ours are at c + 0.5 from 0.
            stamp = convolved.drawImage(scale=self.config.pixel_scale, center=galsim.PositionD(x + 0.5, y + 0.5))
            bounds = stamp.bounds & galsim.BoundsI(1, size, 1, size)
            if bounds.isDefined():
                rows = slice(bounds.ymin - 1, bounds.ymax)
                cols = slice(bounds.xmin - 1, bounds.xmax)
                own[b, rows, cols] = stamp[bounds].array
        self.model += own
        return own


def simulate_field(rng: np.random.Generator, config: FieldConfig = FieldConfig()) -> tuple[np.ndarray, dict]:
    """One (B, H, W) float32 noisy field and its truth (see the module docstring)."""
    bands = config.bands
    fwhm = float(rng.uniform(*config.seeing_fwhm))
    field = _Field(
        config=config,
        fwhms=[fwhm * sky._SEEING_SCALE.get(b, 1.0) * (1 + rng.normal(0, 0.02)) for b in bands],
        sigma=np.array([sky._SKY_SIGMA.get(b, 0.01) for b in bands]),
        model=np.zeros((len(bands), config.size, config.size)),
    )
    ref = sky._reference_band(bands)
    boxes = _add_galaxies(field, rng, ref) + _add_stars(field, rng, ref)
    _flag_blends(boxes)
    lines = _add_trails(field, rng) if rng.random() < config.trail_fraction else []
    noisy = field.model + rng.normal(0.0, 1.0, field.model.shape) * field.sigma[:, None, None]
    _saturate(noisy, config.saturation)
    n_saturated = sum(bool(b.get("saturated")) for b in boxes)
    detected_trails = [line for line in lines if line["detectable"]]
    truth = {
        "class": "trail" if detected_trails else "no_trail",
        "difficulty": _difficulty(lines, n_saturated),
        "seeing_fwhm": fwhm,
        "bands": list(bands),
        "sky_sigma": [float(s) for s in field.sigma],
        "pixel_scale": config.pixel_scale,
        "boxes": boxes,
        "lines": lines,
        "n_galaxies": sum(b["label"] == "galaxy" for b in boxes),
        "n_stars": sum(b["label"] == "star" for b in boxes),
        "n_saturated_stars": n_saturated,
    }
    return noisy.astype(np.float32), truth


def simulate_fields(n: int, seed: int, config: FieldConfig = FieldConfig()) -> list[tuple[np.ndarray, dict]]:
    """``n`` fields, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    return [simulate_field(rng, config) for _ in range(n)]


# ---------------------------------------------------------------- galaxies and stars


def _per_band(parts: list, flux: float, n_bands: int) -> list[galsim.GSObject | None]:
    """Sum a scene's components per band, scaled to ``flux`` nanomaggies in the reference band."""
    out = []
    for b in range(n_bands):
        comps = [p.obj * (p.weights[b] * flux) for p in parts if p.weights[b] > 0]
        out.append(galsim.Add(comps) if comps else None)
    return out


def _add_galaxies(field: _Field, rng, ref: int) -> list[dict]:
    config = field.config
    sky_config = sky.SkyConfig(bands=config.bands, pixel_scale=config.pixel_scale)
    boxes: list[dict] = []
    for _ in range(int(rng.integers(config.n_galaxies[0], config.n_galaxies[1] + 1))):
        kind = GALAXY_TYPES[rng.choice(len(GALAXY_TYPES), p=_GALAXY_WEIGHTS / _GALAXY_WEIGHTS.sum())]
        scene = sky._build(kind, rng, sky_config)
        mag = _magnitude(rng, *config.galaxy_mag, 0.35)
        x, y = _position(field, rng, boxes)
        own = field.add(_per_band(scene.parts, _nanomaggies(mag), len(config.bands)), x, y)
        box = _truth_box(own[ref], field.sigma[ref], x, y, field.fwhms[ref] / config.pixel_scale, config.size)
        info = {k: v for k, v in scene.info.items() if v is not None}
        boxes.append(
            {
                "label": "galaxy",
                "subtype": kind,
                **box,
                "mag_r": round(mag, 2),
                **_snr(own[ref], field, ref),
                "hlr_arcsec": round(float(info.get("hlr_arcsec", 0.0)), 3),
            }
        )
    return boxes


def _position(field: _Field, rng, galaxies: list[dict]) -> tuple[float, float]:
    """Uniform over the field, or (for a share of galaxies) close to an earlier galaxy: a blend."""
    size = field.config.size
    if galaxies and rng.random() < field.config.blend_fraction:
        host = galaxies[int(rng.integers(len(galaxies)))]
        angle = rng.uniform(0, 2 * math.pi)
        r = rng.uniform(1.5, 4.0) / field.config.pixel_scale
        x = host["x"] + host["width"] / 2 + r * math.cos(angle)
        y = host["y"] + host["height"] / 2 + r * math.sin(angle)
        return float(np.clip(x, 0, size - 1e-3)), float(np.clip(y, 0, size - 1e-3))
    return float(rng.uniform(0, size)), float(rng.uniform(0, size))


def _add_stars(field: _Field, rng, ref: int) -> list[dict]:
    config = field.config
    boxes = []
    for _ in range(int(rng.integers(config.n_stars[0], config.n_stars[1] + 1))):
        scene = sky._star(rng, config.bands)
        mag = _magnitude(rng, *config.star_mag, 0.12)
        x, y = float(rng.uniform(0, config.size)), float(rng.uniform(0, config.size))
        own = field.add(_per_band(scene.parts, _nanomaggies(mag), len(config.bands)), x, y)
        box = _truth_box(own[ref], field.sigma[ref], x, y, field.fwhms[ref] / config.pixel_scale, config.size)
        saturated = bool(own.max() > config.saturation)
        boxes.append(
            {"label": "star", **box, "mag_r": round(mag, 2), **_snr(own[ref], field, ref), "saturated": saturated}
        )
    return boxes


def _snr(model: np.ndarray, field: _Field, band: int) -> dict:
    """Matched-filter S/N of a noiseless (H, W) model in one band, and whether it clears the threshold."""
    snr = float(np.sqrt((model**2).sum()) / field.sigma[band])
    return {"snr": round(snr, 2), "detectable": snr >= field.config.detect_snr}


def _truth_box(model: np.ndarray, sigma: float, x: float, y: float, fwhm_px: float, size: int) -> dict:
    """The box around the model's 1-sigma isophote; a seeing-sized box round (x, y) when fainter."""
    rows, cols = np.nonzero(model > _BOX_ISOPHOTE * sigma)
    if rows.size >= 4:
        x0, x1, y0, y1 = cols.min(), cols.max() + 1.0, rows.min(), rows.max() + 1.0
    else:
        x0, x1, y0, y1 = x - fwhm_px, x + fwhm_px, y - fwhm_px, y + fwhm_px
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, size), min(y1, size)
    return {
        "x": round(float(x0), 2),
        "y": round(float(y0), 2),
        "width": round(float(x1 - x0), 2),
        "height": round(float(y1 - y0), 2),
    }


def _flag_blends(boxes: list[dict]) -> None:
    """An object whose truth box overlaps another's is blended (hard to box on its own)."""
    if not boxes:
        return
    edges = np.array([[b["x"], b["y"], b["x"] + b["width"], b["y"] + b["height"]] for b in boxes])
    overlap = box_iou(edges, edges)
    np.fill_diagonal(overlap, 0.0)
    for box, row in zip(boxes, overlap, strict=True):
        box["blended"] = bool(row.max() > 0)


# ---------------------------------------------------------------- trails


def _add_trails(field: _Field, rng) -> list[dict]:
    lines = []
    for _ in range(1 if rng.random() < 0.8 else 2):
        if rng.random() < field.config.satellite_share:
            lines.append(_satellite(field, rng))
        else:
            lines.append(_asteroid(field, rng))
    return [line for line in lines if line is not None]


def _segment(
    field: _Field,
    x: float,
    y: float,
    angle: float,
    length_px: float,
    band_weights,
    brightness: float,
    width_arcsec: float,
) -> np.ndarray:
    """Draw a PSF-convolved straight streak centred at (x, y); ``brightness`` is nanomaggies per pixel of length."""
    scale = field.config.pixel_scale
    streak = galsim.Box(length_px * scale, width_arcsec, flux=brightness * length_px, gsparams=sky._GSP)
    streak = streak.rotate(angle * galsim.radians)
    return field.add([streak * w if w > 0 else None for w in band_weights], x, y)


def _visible(field: _Field, x: float, y: float, angle: float, length_px: float):
    dx, dy = 0.5 * length_px * math.cos(angle), 0.5 * length_px * math.sin(angle)
    size = field.config.size
    return clip_segment((x - dx, y - dy), (x + dx, y + dy), (float(size), float(size)))


def _satellite(field: _Field, rng) -> dict | None:
    """A long streak in one band: edge to edge most of the time, sometimes a shorter glint."""
    size = field.config.size
    band = int(rng.integers(len(field.config.bands)))
    angle = float(rng.uniform(0, math.pi))
    x, y = rng.uniform(0.1 * size, 0.9 * size, 2)
    length = 3 * size if rng.random() < 0.7 else float(rng.uniform(0.1, 0.6) * size)
    fwhm_px = field.fwhms[band] / field.config.pixel_scale
    brightness = _log_uniform(rng, 0.3, 20.0) * field.sigma[band] * fwhm_px  # peak ~0.3-20 sigma per pixel
    width = float(rng.uniform(0.05, 2.5))  # arcsec: a defocused satellite is wider than the PSF
    own = _segment(field, x, y, angle, length, sky._one_band(field.config.bands, band), brightness, width)
    snr = float(np.sqrt((own[band] ** 2).sum()) / field.sigma[band])
    return _trail_truth(field, "satellite", (x, y, angle, length), snr, band, width_arcsec=round(width, 2))


def _asteroid(field: _Field, rng) -> dict | None:
    """A short dash per band, displaced along the motion between the g, r and i exposures."""
    bands = field.config.bands
    angle = float(rng.uniform(0, 2 * math.pi))
    dash = float(rng.uniform(3.0, 25.0))  # pixels moved during one exposure
    step = dash + float(rng.uniform(2.0, 20.0))  # pixels between exposure starts
    x, y = rng.uniform(0, field.config.size, 2)
    ux, uy = math.cos(angle), math.sin(angle)
    colours = sky._colour_weights(bands, 0.6, 0.2)  # S-type asteroids are close to solar colours
    ref = sky._reference_band(bands)
    brightness = _log_uniform(rng, 0.5, 20.0) * field.sigma[ref] * field.fwhms[ref] / field.config.pixel_scale
    own = np.zeros_like(field.model)
    for b in range(len(bands)):
        offset = (b - (len(bands) - 1) / 2) * step
        weights = tuple(colours[b] if i == b else 0.0 for i in range(len(bands)))
        own += _segment(field, x + offset * ux, y + offset * uy, angle, dash, weights, brightness, 0.05)
    length = (len(bands) - 1) * step + dash
    snr = float(np.sqrt(((own / field.sigma[:, None, None]) ** 2).sum()))  # the dashes together: one object
    return _trail_truth(field, "asteroid", (x, y, angle, length), snr, ref, dash_px=round(dash, 2))


def _trail_truth(field: _Field, label: str, geometry, snr: float, band: int, **extra) -> dict | None:
    visible = _visible(field, *geometry)
    if visible is None:
        return None
    (x1, y1), (x2, y2) = visible
    if (x2, y2) < (x1, y1):
        (x1, y1), (x2, y2) = (x2, y2), (x1, y1)
    out = {
        "label": label,
        **{k: round(float(v), 2) for k, v in zip(("x1", "y1", "x2", "y2"), (x1, y1, x2, y2), strict=True)},
    }
    out.update(snr=round(snr, 2), detectable=snr >= field.config.detect_snr, band=field.config.bands[band], **extra)
    return out


# ---------------------------------------------------------------- detector effects and difficulty


def _saturate(image: np.ndarray, level: float) -> None:
    """Clip at the full-well ``level`` in place; the excess charge bleeds up and down its column."""
    for plane in image:
        for col in np.flatnonzero((plane > level).any(axis=0)):
            column = plane[:, col]
            over = np.flatnonzero(column > level)
            reach = math.ceil(float((column[over] - level).sum()) / level / 2)
            column[max(over.min() - reach, 0) : over.max() + reach + 1] = level


def _difficulty(lines: list[dict], n_saturated: int) -> float:
    """0 easy, 1 hardest, for the trail question: a faint trail, or a bleed that looks like one."""
    visible = [line["snr"] for line in lines if line["detectable"]]
    if visible:
        ease = math.log(max(visible) / 5.0) / math.log(200.0 / 5.0)
        return round(float(min(max(1.0 - ease, 0.0), 1.0)), 3)
    confusers = 0.3 * bool(lines) + 0.2 * bool(n_saturated)
    return round(0.1 + confusers, 3)


def _log_uniform(rng, lo: float, hi: float) -> float:
    return sky._log_uniform(rng, lo, hi)
