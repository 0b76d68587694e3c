"""DECaLS-like multi-band image cutouts of galaxies, stars and artefacts, drawn with GalSim.

Each cutout is sky-subtracted, in nanomaggie-like units, with Gaussian sky noise whose
per-pixel sigma follows DECaLS DR9-like depths. The total S/N is drawn log-uniform, so
most objects are faint; half-light radii reach down to ~0.5", so small faint galaxies
look like stars and spiral arms vanish into the noise. That ambiguity is intended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import galsim
import numpy as np
from astropy.wcs import WCS

IMAGE_CLASSES: tuple[str, ...] = ("smooth_round", "smooth_cigar", "featured_disk", "edge_on_disk",
                                  "merger", "star", "artefact")
_DEFAULT_WEIGHTS = (0.22, 0.10, 0.25, 0.12, 0.08, 0.15, 0.08)

GALAXY_TREE: dict = {
    "first": "T0",
    "tasks": {
        "T0": {"question": "Is the object simply smooth and rounded, with no sign of a disk?",
               "help": "Smooth: light fades evenly from the centre. Features: arms, knots, a bar or a disk. "
                       "Stars are sharp points the size of the seeing; artefacts are streaks, specks or rings.",
               "answers": [{"label": "Smooth", "next": "T1"},
                           {"label": "Features or disk", "next": "T2"},
                           {"label": "Star or artefact", "next": "T3"}]},
        "T1": {"question": "How rounded is it?",
               "help": "Judge the outer shape, not the bright centre.",
               "answers": [{"label": "Completely round", "next": "T4"},
                           {"label": "In between", "next": "T4"},
                           {"label": "Cigar-shaped", "next": "T4"}]},
        "T2": {"question": "Could this be a disk viewed edge-on?",
               "help": "An edge-on disk is a thin, needle-like streak, sometimes with a small central bulge.",
               "answers": [{"label": "Yes", "next": "T4"}, {"label": "No", "next": "T4"}]},
        "T3": {"question": "Is it a star or an artefact (cosmic ray, satellite trail, ghost)?",
               "help": "A star is a round point whose colour is the same shape in every band; cosmic rays are "
                       "sharp specks in one band, trails are straight lines, ghosts are faint rings.",
               "answers": [{"label": "Star", "next": None}, {"label": "Artefact", "next": None}]},
        "T4": {"question": "Is there anything odd, such as a merger or a close companion?",
               "help": "Two overlapping galaxies, tidal tails or a distorted shape count as odd.",
               "answers": [{"label": "Yes", "next": None}, {"label": "No", "next": None}]},
    },
}

CLASS_ANSWERS: dict[str, dict[str, int]] = {
    "smooth_round": {"T0": 0, "T1": 0, "T4": 1},
    "smooth_cigar": {"T0": 0, "T1": 2, "T4": 1},
    "featured_disk": {"T0": 1, "T2": 1, "T4": 1},
    "edge_on_disk": {"T0": 1, "T2": 0, "T4": 1},
    "merger": {"T0": 1, "T2": 1, "T4": 0},
    "star": {"T0": 2, "T3": 0},
    "artefact": {"T0": 2, "T3": 1},
}

# Per-pixel sky sigma in nanomaggies: a 5-sigma point-source depth of r~23.9 with a 1.2"
# PSF at 0.262"/px (noise-equivalent area ~48 px) gives ~0.008 (DECaLS DR9 depths).
_SKY_SIGMA = {"g": 0.006, "r": 0.008, "i": 0.012, "z": 0.02}
# Seeing FWHM scales as wavelength^-0.2 (Kolmogorov turbulence), relative to r.
_SEEING_SCALE = {"g": 1.06, "r": 1.0, "i": 0.96, "z": 0.93}
# Noise dominates the error budget, so GalSim's accuracy can be relaxed for speed.
_GSP = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=3e-3)
_SERSIC_N_SMOOTH = (2.5, 3.0, 3.5, 4.0, 4.5, 5.0)  # a fixed grid lets GalSim cache Sersic tables
_SERSIC_N_CIGAR = (1.5, 2.0, 2.5, 3.0, 4.0)
_SNR_HARD, _SNR_EASY = 4.0, 150.0  # S/N at which shape details are lost / fully clear


@dataclass(frozen=True)
class SkyConfig:
    stamp_size: int = 64
    pixel_scale: float = 0.262  # arcsec / pixel, DECam
    bands: tuple[str, ...] = ("g", "r", "i")
    seeing_fwhm: tuple[float, float] = (1.0, 1.4)  # arcsec, r band, uniform per stamp
    snr_range: tuple[float, float] = (5.0, 300.0)  # matched-filter S/N in r, log-uniform
    class_weights: tuple[float, ...] | None = None  # in IMAGE_CLASSES order


class _Part(NamedTuple):
    """One PSF-convolved component: a profile of unit r-band flux scaled per band."""

    obj: galsim.GSObject
    weights: tuple[float, ...]  # one per band


@dataclass
class _Scene:
    parts: list[_Part]
    raw: np.ndarray | None  # (B, H, W) un-convolved additions (cosmic rays)
    info: dict


def _colour_weights(bands: tuple[str, ...], g_r: float, r_i: float) -> tuple[float, ...]:
    """Flux per band relative to r from g-r and r-i colours (magnitudes)."""
    mags = {"g": g_r, "r": 0.0, "i": -r_i, "z": -1.4 * r_i}
    return tuple(10 ** (-0.4 * mags.get(b, 0.0)) for b in bands)


def _one_band(bands: tuple[str, ...], index: int) -> tuple[float, ...]:
    return tuple(1.0 if i == index else 0.0 for i in range(len(bands)))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _red_colours(rng) -> tuple[float, float]:
    return float(rng.normal(0.80, 0.08)), float(rng.normal(0.40, 0.05))


def _blue_colours(rng, shift: float = 0.0) -> tuple[float, float]:
    return float(rng.normal(0.50 + shift, 0.12)), float(rng.normal(0.28 + shift / 2, 0.07))


# ---------------------------------------------------------------- galaxy builders


def _smooth(rng, bands, n_grid, q_range) -> _Scene:
    hlr = _log_uniform(rng, 0.5, 5.0)
    n = float(rng.choice(n_grid))
    q = float(rng.uniform(*q_range))
    prof = galsim.Sersic(n=n, half_light_radius=hlr, trunc=5 * hlr, gsparams=_GSP)
    prof = prof.shear(q=q, beta=rng.uniform(0, math.pi) * galsim.radians)
    g_r, r_i = _red_colours(rng)
    return _Scene([_Part(prof, _colour_weights(bands, g_r, r_i))], None,
                  {"hlr_arcsec": hlr, "q": q, "sersic_n": n})


def _spiral_arms(rng, hlr: float, flux: float) -> galsim.GSObject:
    """Two log-spiral arms traced by clumps (star-forming knots)."""
    pitch = math.radians(rng.uniform(10, 30))
    r_in, r_out = 0.3 * hlr, 2.2 * hlr
    phi_max = math.log(r_out / r_in) / math.tan(pitch)
    hand = rng.choice([-1.0, 1.0])
    deltas = []
    for arm in (0.0, math.pi):
        for phi in np.linspace(0, phi_max, 9) + rng.normal(0, 0.1, 9):
            r = r_in * math.exp(max(phi, 0.0) * math.tan(pitch))
            theta = hand * phi + arm
            weight = math.exp(-r / hlr) * rng.uniform(0.5, 1.5)
            deltas.append((weight, r * math.cos(theta), r * math.sin(theta)))
    total = sum(w for w, _, _ in deltas)
    knots = galsim.Sum([galsim.DeltaFunction(flux=flux * w / total, gsparams=_GSP).shift(x, y)
                        for w, x, y in deltas])
    return galsim.Convolve(knots, galsim.Gaussian(sigma=rng.uniform(0.08, 0.18) * hlr, gsparams=_GSP),
                           real_space=False)


def _apparent_axis_ratio(cos_i: float, q0: float) -> float:
    """Projected axis ratio of an oblate disk of intrinsic thickness q0 (Hubble 1926)."""
    return math.sqrt(cos_i**2 * (1 - q0**2) + q0**2)


def _featured_disk(rng, bands) -> _Scene:
    hlr = _log_uniform(rng, 0.6, 5.0)
    bulge_frac = rng.uniform(0.0, 0.35)
    arm_frac = rng.uniform(0.25, 0.55) * (1 - bulge_frac)
    disk_frac = 1 - bulge_frac - arm_frac
    cos_i = rng.uniform(0.3, 1.0)
    q = _apparent_axis_ratio(cos_i, 0.12)
    shear = dict(q=q, beta=rng.uniform(0, math.pi) * galsim.radians)
    disk = galsim.Exponential(half_light_radius=hlr, flux=disk_frac, gsparams=_GSP)
    arms = _spiral_arms(rng, hlr, arm_frac)
    parts = [_Part(disk.shear(**shear), _colour_weights(bands, *_blue_colours(rng))),
             _Part(arms.shear(**shear), _colour_weights(bands, *_blue_colours(rng, shift=-0.25)))]
    if bulge_frac > 0.02:
        bulge_hlr = rng.uniform(0.15, 0.35) * hlr
        bulge = galsim.DeVaucouleurs(half_light_radius=bulge_hlr, flux=bulge_frac, trunc=5 * bulge_hlr, gsparams=_GSP)
        parts.append(_Part(bulge, _colour_weights(bands, *_red_colours(rng))))
    return _Scene(parts, None, {"hlr_arcsec": hlr, "q": q, "sersic_n": 1.0, "feature_fraction": arm_frac})


def _edge_on_disk(rng, bands) -> _Scene:
    hlr = _log_uniform(rng, 0.6, 5.0)
    incl = rng.uniform(75, 90)
    h_over_r = rng.uniform(0.08, 0.2)
    bulge_frac = rng.uniform(0.0, 0.3)
    angle = rng.uniform(0, math.pi) * galsim.radians
    disk = galsim.InclinedExponential(incl * galsim.degrees, half_light_radius=hlr, scale_h_over_r=h_over_r,
                                      flux=1 - bulge_frac, gsparams=_GSP).rotate(angle)
    # dust in the mid-plane reddens edge-on disks
    parts = [_Part(disk, _colour_weights(bands, *_blue_colours(rng, shift=0.15)))]
    if bulge_frac > 0.02:
        bulge_hlr = rng.uniform(0.15, 0.3) * hlr
        bulge = galsim.DeVaucouleurs(half_light_radius=bulge_hlr, flux=bulge_frac, trunc=5 * bulge_hlr,
                                     gsparams=_GSP).shear(q=rng.uniform(0.6, 0.9), beta=angle)
        parts.append(_Part(bulge, _colour_weights(bands, *_red_colours(rng))))
    q = _apparent_axis_ratio(math.cos(math.radians(incl)), h_over_r)
    return _Scene(parts, None, {"hlr_arcsec": hlr, "q": q, "sersic_n": 1.0, "inclination_deg": incl})


def _merger(rng, bands) -> _Scene:
    hlr1 = _log_uniform(rng, 0.6, 3.0)
    hlr2 = hlr1 * rng.uniform(0.5, 1.0)
    ratio = rng.uniform(0.25, 1.0)  # secondary / primary flux
    sep = rng.uniform(0.5, 2.0) * hlr1
    theta = rng.uniform(0, 2 * math.pi)
    ux, uy = math.cos(theta), math.sin(theta)
    tail_frac = rng.uniform(0.04, 0.12)
    f1, f2 = (1 - tail_frac) / (1 + ratio), (1 - tail_frac) * ratio / (1 + ratio)
    x1, x2 = -sep * f2 / (f1 + f2), sep * f1 / (f1 + f2)  # keep the light centred
    parts = []
    for flux, hlr, x in ((f1, hlr1, x1), (f2, hlr2, x2)):
        n = float(rng.choice((1.0, 2.0, 4.0)))
        prof = galsim.Sersic(n=n, half_light_radius=hlr, flux=flux, trunc=5 * hlr, gsparams=_GSP)
        prof = prof.shear(q=rng.uniform(0.5, 1.0), beta=rng.uniform(0, math.pi) * galsim.radians)
        colours = _red_colours(rng) if n >= 4 else _blue_colours(rng)
        parts.append(_Part(prof.shift(x * ux, x * uy), _colour_weights(bands, *colours)))
    parts.append(_Part(_tidal_tail(rng, x2 * ux, x2 * uy, theta, hlr1, tail_frac),
                       _colour_weights(bands, *_blue_colours(rng))))
    return _Scene(parts, None, {"hlr_arcsec": hlr1, "q": None, "sersic_n": None, "separation_arcsec": sep})


def _tidal_tail(rng, x0, y0, theta, hlr, flux) -> galsim.GSObject:
    """A faint curved plume of light leaving the secondary."""
    bend = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.8)
    points = []
    for k in range(1, 6):
        angle = theta + bend * k / 5
        r = k * 0.6 * hlr
        points.append(galsim.DeltaFunction(flux=flux / 5, gsparams=_GSP).shift(x0 + r * math.cos(angle),
                                                                                y0 + r * math.sin(angle)))
    return galsim.Convolve(galsim.Sum(points), galsim.Gaussian(sigma=0.5 * hlr, gsparams=_GSP), real_space=False)


# ---------------------------------------------------------------- stars and artefacts


def _star(rng, bands) -> _Scene:
    # Halo turn-off stars (blue) and disk K/M dwarfs (red); M dwarfs leave the g-r locus
    # at g-r~1.4 and spread in r-i (Covey et al. 2007 stellar locus).
    if rng.random() < 0.6:
        g_r = rng.uniform(0.2, 0.8)
        r_i = 0.4 * g_r - 0.05 + rng.normal(0, 0.05)
    else:
        g_r = rng.uniform(0.8, 1.55)
        r_i = (0.4 * g_r - 0.05 if g_r < 1.3 else rng.uniform(0.5, 1.8)) + rng.normal(0, 0.05)
    point = galsim.DeltaFunction(gsparams=_GSP)
    return _Scene([_Part(point, _colour_weights(bands, float(g_r), float(r_i)))], None,
                  {"hlr_arcsec": None, "q": None, "sersic_n": None})


def _artefact(rng, bands, size: int, scale: float) -> _Scene:
    kind = rng.choice(["cosmic_ray", "trail", "ghost"], p=[0.4, 0.35, 0.25])
    band = int(rng.integers(len(bands)))
    info = {"hlr_arcsec": None, "q": None, "sersic_n": None, "subtype": str(kind)}
    if kind == "cosmic_ray":
        raw = np.zeros((len(bands), size, size), dtype=np.float64)
        raw[band] = _cosmic_ray(rng, size)
        return _Scene([], raw, info)
    if kind == "trail":
        return _Scene(_trail(rng, bands, band, size * scale), None, info)
    radius = rng.uniform(3.0, 7.0)
    inner = radius * rng.uniform(0.4, 0.7)
    area = radius**2 - inner**2
    ring = galsim.Add([galsim.TopHat(radius, flux=radius**2 / area, gsparams=_GSP),
                       galsim.TopHat(inner, flux=-(inner**2) / area, gsparams=_GSP)])
    ring = galsim.Convolve(ring, galsim.Gaussian(sigma=rng.uniform(0.3, 0.8), gsparams=_GSP), real_space=False)
    weights = tuple(float(w) for w in rng.uniform(0.0, 1.0, len(bands)))  # ghosts have odd colours
    weights = tuple(w / max(weights) for w in weights)
    return _Scene([_Part(ring, weights)], None, info)


def _cosmic_ray(rng, size: int) -> np.ndarray:
    """A sharp track of a few pixels, never PSF-convolved: it hit the detector, not the sky."""
    img = np.zeros((size, size))
    length = int(rng.integers(1, 10))
    angle = rng.uniform(0, math.pi)
    x0, y0 = size / 2 + rng.uniform(-3, 3, 2)
    for t in range(length):
        x, y = int(x0 + t * math.cos(angle)), int(y0 + t * math.sin(angle))
        if 0 <= x < size and 0 <= y < size:
            img[y, x] += rng.uniform(0.4, 1.0)
    return img / img.sum()


def _trail(rng, bands, band: int, width_arcsec: float) -> list[_Part]:
    """A satellite trail crossing the stamp, or an asteroid that moved between exposures."""
    angle = rng.uniform(0, math.pi) * galsim.radians
    if rng.random() < 0.5:
        line = galsim.Box(2 * width_arcsec, 0.05, gsparams=_GSP).rotate(angle).shift(*rng.uniform(-2, 2, 2))
        return [_Part(line, _one_band(bands, band))]
    length = rng.uniform(1.0, 4.0)
    step = rng.uniform(1.5, 3.0)  # arcsec moved between the band exposures
    parts = []
    for i in range(len(bands)):
        offset = (i - (len(bands) - 1) / 2) * step
        dash = galsim.Box(length, 0.05, gsparams=_GSP).rotate(angle)
        dash = dash.shift(offset * math.cos(angle.rad), offset * math.sin(angle.rad))
        parts.append(_Part(dash, _one_band(bands, i)))
    return parts


# ---------------------------------------------------------------- drawing


def _build(cls: str, rng, config: SkyConfig) -> _Scene:
    bands = config.bands
    if cls == "smooth_round":
        return _smooth(rng, bands, _SERSIC_N_SMOOTH, (0.75, 1.0))
    if cls == "smooth_cigar":
        return _smooth(rng, bands, _SERSIC_N_CIGAR, (0.2, 0.45))
    if cls == "featured_disk":
        return _featured_disk(rng, bands)
    if cls == "edge_on_disk":
        return _edge_on_disk(rng, bands)
    if cls == "merger":
        return _merger(rng, bands)
    if cls == "star":
        return _star(rng, bands)
    return _artefact(rng, bands, config.stamp_size, config.pixel_scale)


def _draw(scene: _Scene, fwhms: list[float], rng, config: SkyConfig) -> np.ndarray:
    """Noiseless (B, H, W) image of the scene at unit r-band flux."""
    size = config.stamp_size
    offset = tuple(rng.uniform(-1.0, 1.0, 2))
    out = np.zeros((len(config.bands), size, size))
    for b, fwhm in enumerate(fwhms):
        comps = [p.obj * p.weights[b] for p in scene.parts if p.weights[b] > 0]
        if comps:
            psf = galsim.Moffat(beta=3.5, fwhm=fwhm, gsparams=_GSP)  # truncating it makes FFTs 20x slower
            image = galsim.ImageF(size, size, scale=config.pixel_scale)
            scene_b = galsim.Convolve(galsim.Add(comps), psf, real_space=False, gsparams=_GSP)
            scene_b.drawImage(image=image, offset=offset)
            out[b] = image.array
    if scene.raw is not None:
        out += scene.raw
    return out


def _reference_band(bands: tuple[str, ...]) -> int:
    return bands.index("r") if "r" in bands else len(bands) // 2


def _difficulty(cls: str, snr: float, fwhm: float, info: dict) -> float:
    """0 = easy, 1 = hardest: low S/N, and galaxies small against the PSF."""
    ease_snr = min(max(math.log(snr / _SNR_HARD) / math.log(_SNR_EASY / _SNR_HARD), 0.0), 1.0)
    if cls == "star":
        ease = ease_snr
    elif cls == "artefact":
        ease = ease_snr * (0.8 if info.get("subtype") == "ghost" else 1.0) + 0.15
    else:
        size = info["hlr_arcsec"] / fwhm
        if cls == "merger":
            size = min(size, info["separation_arcsec"] / fwhm)
        ease_size = min(max((size - 0.3) / 1.2, 0.0), 1.0)
        ease = ease_snr * (0.25 + 0.75 * ease_size)
    return float(min(max(1.0 - ease, 0.0), 1.0))


def simulate_cutout(cls: str, rng: np.random.Generator, config: SkyConfig = SkyConfig()) -> tuple[np.ndarray, dict]:
    """One (B, H, W) float32 noisy cutout of class ``cls`` and its truth dict.

    ``truth["snr"]`` is the matched-filter S/N, sqrt(sum(model^2)) / sigma, in the r band
    (or, for an artefact seen in one band only, in that band).
    """
    if cls not in IMAGE_CLASSES:
        raise ValueError(f"unknown image class {cls!r}; expected one of {IMAGE_CLASSES}")
    bands = config.bands
    snr = _log_uniform(rng, *config.snr_range)
    fwhm = float(rng.uniform(*config.seeing_fwhm))
    fwhms = [fwhm * _SEEING_SCALE.get(b, 1.0) * (1 + rng.normal(0, 0.02)) for b in bands]
    sigma = np.array([_SKY_SIGMA.get(b, 0.01) for b in bands])
    scene = _build(cls, rng, config)
    model = _draw(scene, fwhms, rng, config)  # (B, H, W), unit r flux
    band_snr = np.sqrt((model**2).sum(axis=(1, 2))) / sigma
    ref = _reference_band(bands)
    if band_snr[ref] < 1e-6 * band_snr.max():
        ref = int(np.argmax(band_snr))
    scale = snr / band_snr[ref]
    noise = rng.normal(0.0, 1.0, model.shape) * sigma[:, None, None]
    cube = (model * scale + noise).astype(np.float32)
    fluxes = model.sum(axis=(1, 2)) * scale
    truth = {"class": cls, "snr": float(snr), "difficulty": _difficulty(cls, snr, fwhm, scene.info),
             "seeing_fwhm": fwhm, "bands": list(bands), "sky_sigma": [float(s) for s in sigma],
             "flux": [float(f) for f in fluxes], "subtype": None}
    truth.update({k: (None if v is None else (v if isinstance(v, str) else float(v)))
                  for k, v in scene.info.items()})
    return cube, truth


def simulate_cutouts(n: int, seed: int, config: SkyConfig = SkyConfig()) -> list[tuple[np.ndarray, dict]]:
    """``n`` cutouts with classes drawn by ``config.class_weights``; fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    weights = np.asarray(config.class_weights or _DEFAULT_WEIGHTS, dtype=float)
    if weights.shape != (len(IMAGE_CLASSES),) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"class_weights needs {len(IMAGE_CLASSES)} non-negative numbers")
    classes = rng.choice(len(IMAGE_CLASSES), size=n, p=weights / weights.sum())
    return [simulate_cutout(IMAGE_CLASSES[c], rng, config) for c in classes]


def cutout_wcs(ra: float, dec: float, config: SkyConfig = SkyConfig()) -> WCS:
    """Gnomonic (TAN) WCS with (ra, dec) at the stamp centre, north up, east left."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(config.stamp_size + 1) / 2, (config.stamp_size + 1) / 2]  # FITS pixels are 1-based
    wcs.wcs.cdelt = [-config.pixel_scale / 3600, config.pixel_scale / 3600]
    return wcs
