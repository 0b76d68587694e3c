"""Galaxy-scale strong lenses and their look-alikes, in the sky's g,r,i 64x64 DECam-like format.

A lens is a red elliptical deflector (Sersic light, SIE mass + external shear) and a bluer
background Sersic source, sometimes with a star-forming clump, ray-traced with lenstronomy
(Birrer & Amara 2018) into arcs, rings or multiple images. Einstein radii follow Collett
(2015, ApJ 811, 20): velocity dispersions from the SDSS velocity-dispersion function (Choi,
Park & Vogeley 2007) weighted by the lensing cross-section (~theta_E^2 ~ sigma^4), and
theta_E = 4 pi (sigma/c)^2 D_ls/D_s, kept in 0.5-2". Non-lenses are the hard negatives that
fool lens finders (Marshall+2016, Petrillo+2017): plain ellipticals, ellipticals with a blue
companion, blue ring galaxies, spirals, edge-on disks and mergers with tidal arcs.

PSF (Moffat, seeing per stamp), pixel scale, colours and sky noise are the sky's own
(``mlcore.simulate.sky``). The arc's brightness is set by its matched-filter S/N in g,
drawn log-uniform in 8-200 so that many lenses are faint; with theta_E mostly below the
seeing this makes a realistic share of them hard to see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import galsim
import numpy as np
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from lenstronomy.Util import param_util

from mlcore.simulate import sky

LENS_CLASSES: tuple[str, ...] = ("lens", "not_lens")
NEGATIVE_KINDS: tuple[str, ...] = ("elliptical", "elliptical_companion", "ring_galaxy", "spiral", "edge_on",
                                   "merger")
_NEGATIVE_WEIGHTS = (0.42, 0.15, 0.10, 0.13, 0.08, 0.12)
# How much each negative looks like a lens to a human (0: not at all); drives simulated false positives.
LOOKALIKE = {"elliptical": 0.0, "elliptical_companion": 0.6, "ring_galaxy": 1.0, "spiral": 0.45, "edge_on": 0.25,
             "merger": 0.6}

LENS_TREE: dict = {
    "first": "L0",
    "tasks": {
        "L0": {"question": "Is there a gravitational lens?",
               "help": "Look for blue arcs, a ring or several blue images around a red galaxy, at the same distance "
                       "from its centre. Spiral arms, rings of star formation and companions are not lenses.",
               "answers": [{"label": "Yes, a lens", "next": None}, {"label": "No lens", "next": None}]},
    },
    "marks": {
        "instruction": "Optional: trace each arc with a line, or box a lensed image.",
        "tools": [
            {"type": "line", "label": "Arc", "help": "Draw along the arc, from one end to the other."},
            {"type": "box", "label": "Lensed image", "help": "Box one blue image of the background source."},
        ],
        "max_marks": 6,
    },
}
CLASS_ANSWERS: dict[str, dict[str, int]] = {"lens": {"L0": 0}, "not_lens": {"L0": 1}}

_C_KM_S = 299_792.458
_ARCSEC_PER_RAD = 180 / math.pi * 3600
_SUPERSAMPLE = 3  # ray-shooting grid per pixel: arcs thinner than a pixel stay smooth
_LENS_MODEL = LensModel(["SIE", "SHEAR"])
_SOURCE_LIGHT = {1: LightModel(["SERSIC_ELLIPSE"]), 2: LightModel(["SERSIC_ELLIPSE", "SERSIC"])}


@dataclass(frozen=True)
class LensConfig:
    sky: sky.SkyConfig = sky.SkyConfig()
    theta_e_range: tuple[float, float] = (0.5, 2.0)  # arcsec
    arc_snr_range: tuple[float, float] = (8.0, 200.0)  # g-band matched-filter S/N of the lensed source, log-uniform
    deflector_snr_range: tuple[float, float] = (30.0, 400.0)  # r-band S/N of the deflector (and of negatives)
    negative_weights: tuple[float, ...] | None = None  # in NEGATIVE_KINDS order


# Training lenses shown to volunteers with feedback are visible ones, as Space Warps' simulated
# training lenses were (Marshall+2016): a volunteer's measured skill is on lenses one can see.
TRAINING_LENSES = LensConfig(arc_snr_range=(20.0, 200.0))


# ---------------------------------------------------------------- the lens population


def _velocity_dispersion_grid() -> tuple[np.ndarray, np.ndarray]:
    """sigma (km/s) and its CDF for lenses: Choi+2007 VDF times the cross-section ~ sigma^4."""
    sigma = np.linspace(120.0, 400.0, 561)
    s_star, alpha, beta = 161.0, 2.32, 2.67  # Choi, Park & Vogeley 2007, early types
    x = sigma / s_star
    pdf = x**alpha * np.exp(-(x**beta)) / sigma * sigma**4
    cdf = np.cumsum(pdf)
    return sigma, cdf / cdf[-1]


_SIGMA, _SIGMA_CDF = _velocity_dispersion_grid()


def draw_einstein_radius(rng: np.random.Generator, lo: float = 0.5, hi: float = 2.0) -> tuple[float, float]:
    """(theta_E in arcsec, sigma in km/s) for a lens, truncated to [lo, hi] by resampling."""
    for _ in range(1000):
        sigma = float(np.interp(rng.random(), _SIGMA_CDF, _SIGMA))
        distance_ratio = rng.uniform(0.35, 0.85)  # D_ls / D_s for z_l ~ 0.2-0.7 and z_s ~ 1-3
        theta_e = 4 * math.pi * (sigma / _C_KM_S) ** 2 * distance_ratio * _ARCSEC_PER_RAD
        if lo <= theta_e <= hi:
            return theta_e, sigma
    raise ValueError(f"no Einstein radius in [{lo}, {hi}] arcsec after 1000 draws")


def _grid(config: sky.SkyConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """Supersampled pixel centres (arcsec, origin at the stamp centre): x along columns, y along rows."""
    n = config.stamp_size * _SUPERSAMPLE
    step = config.pixel_scale / _SUPERSAMPLE
    axis = (np.arange(n) - (n - 1) / 2) * step
    x, y = np.meshgrid(axis, axis)
    return x, y, step


def _source_kwargs(rng, theta_e: float) -> tuple[list[dict], dict]:
    """Background galaxy placed inside ~the caustic, so it forms arcs or multiple images."""
    r = theta_e * rng.uniform(0.05, 0.7) * math.sqrt(rng.random())
    angle = rng.uniform(0, 2 * math.pi)
    cx, cy = r * math.cos(angle), r * math.sin(angle)
    e1, e2 = param_util.phi_q2_ellipticity(rng.uniform(0, math.pi), rng.uniform(0.4, 1.0))
    radius = rng.uniform(0.08, 0.35)
    kwargs = [dict(amp=1.0, R_sersic=radius, n_sersic=float(rng.uniform(0.7, 1.5)), e1=e1, e2=e2,
                   center_x=cx, center_y=cy)]
    if rng.random() < 0.5:  # a star-forming clump
        dx, dy = rng.normal(0, 0.2, 2)
        kwargs.append(dict(amp=float(rng.uniform(1.0, 4.0)), R_sersic=0.05, n_sersic=1.0,
                           center_x=cx + dx, center_y=cy + dy))
    return kwargs, {"source_x": cx, "source_y": cy, "source_radius": radius}


def _lensed_source(rng, theta_e: float, q: float, phi: float, config: sky.SkyConfig):
    """(un-convolved arc image as a GalSim profile of unit flux, magnification, info)."""
    x, y, step = _grid(config)
    e1, e2 = param_util.phi_q2_ellipticity(phi, q)
    gamma1, gamma2 = rng.normal(0, 0.04, 2)
    kwargs_lens = [dict(theta_E=theta_e, e1=e1, e2=e2, center_x=0.0, center_y=0.0),
                   dict(gamma1=float(gamma1), gamma2=float(gamma2), ra_0=0.0, dec_0=0.0)]
    kwargs_source, info = _source_kwargs(rng, theta_e)
    light = _SOURCE_LIGHT[len(kwargs_source)]
    bx, by = _LENS_MODEL.ray_shooting(x.ravel(), y.ravel(), kwargs_lens)
    lensed = light.surface_brightness(bx, by, kwargs_source).reshape(x.shape)
    unlensed = light.surface_brightness(x.ravel(), y.ravel(), kwargs_source).sum()
    magnification = float(lensed.sum() / unlensed)
    profile = galsim.InterpolatedImage(galsim.ImageD(lensed / lensed.sum(), scale=step), flux=1.0,
                                       gsparams=sky._GSP)
    info.update({"magnification": magnification, "shear": math.hypot(gamma1, gamma2), "mass_q": q})
    return profile, magnification, info


def _deflector(rng, theta_e: float, bands):
    """Red de Vaucouleurs-like light; its half-light radius is ~1-2 theta_E (as in SLACS)."""
    hlr = float(np.clip(theta_e * rng.uniform(0.8, 2.0), 0.6, 4.0))
    q = float(rng.uniform(0.6, 1.0))
    phi = float(rng.uniform(0, math.pi))
    n = float(rng.choice(sky._SERSIC_N_SMOOTH))
    light = galsim.Sersic(n=n, half_light_radius=hlr, trunc=5 * hlr, gsparams=sky._GSP)
    light = light.shear(q=q, beta=phi * galsim.radians)
    part = sky._Part(light, sky._colour_weights(bands, *sky._red_colours(rng)))
    # the mass follows the light's orientation, a little rounder (Bolton+2008, SLACS)
    return part, min(1.0, q + rng.uniform(0.0, 0.15)), phi, {"hlr_arcsec": hlr, "q": q, "sersic_n": n}


# ---------------------------------------------------------------- hard negatives


def _ring_galaxy(rng, bands) -> sky._Scene:
    """A collisional ring galaxy: a red core inside a ring of blue star-forming knots (a lens look-alike)."""
    core_hlr = rng.uniform(0.3, 0.9)
    radius = rng.uniform(1.0, 3.0)
    ring_frac = rng.uniform(0.2, 0.5)
    core = galsim.Sersic(n=float(rng.choice((2.0, 3.0, 4.0))), half_light_radius=core_hlr, flux=1 - ring_frac,
                         trunc=5 * core_hlr, gsparams=sky._GSP)
    width = radius * rng.uniform(0.15, 0.3)
    annulus = galsim.Add([galsim.TopHat(radius + width, flux=(radius + width) ** 2, gsparams=sky._GSP),
                          galsim.TopHat(radius - width, flux=-((radius - width) ** 2), gsparams=sky._GSP)])
    annulus = annulus * (1 / ((radius + width) ** 2 - (radius - width) ** 2))
    knots = [galsim.Gaussian(sigma=0.15, flux=1.0, gsparams=sky._GSP).shift(radius * math.cos(a), radius * math.sin(a))
             for a in rng.uniform(0, 2 * math.pi, int(rng.integers(3, 8)))]
    ring = galsim.Add([annulus * 0.6, galsim.Add(knots) * (0.4 / len(knots))])
    ring = galsim.Convolve(ring, galsim.Gaussian(sigma=0.15, gsparams=sky._GSP), real_space=False) * ring_frac
    shear = dict(q=rng.uniform(0.5, 1.0), beta=rng.uniform(0, math.pi) * galsim.radians)
    parts = [sky._Part(core.shear(**shear), sky._colour_weights(bands, *sky._red_colours(rng))),
             sky._Part(ring.shear(**shear), sky._colour_weights(bands, *sky._blue_colours(rng, shift=-0.25)))]
    return sky._Scene(parts, None, {"hlr_arcsec": core_hlr, "q": None, "sersic_n": None, "ring_radius": radius})


def _elliptical_companion(rng, bands) -> sky._Scene:
    """A red elliptical with a small blue galaxy 1-3" away: a single 'arc' to the careless eye."""
    scene = sky._smooth(rng, bands, sky._SERSIC_N_SMOOTH, (0.6, 1.0))
    hlr = rng.uniform(0.15, 0.5)
    sep = rng.uniform(1.0, 3.0)
    angle = rng.uniform(0, 2 * math.pi)
    companion = galsim.Sersic(n=1.0, half_light_radius=hlr, flux=rng.uniform(0.03, 0.2), gsparams=sky._GSP)
    companion = companion.shear(q=rng.uniform(0.3, 0.9), beta=rng.uniform(0, math.pi) * galsim.radians)
    scene.parts.append(sky._Part(companion.shift(sep * math.cos(angle), sep * math.sin(angle)),
                                 sky._colour_weights(bands, *sky._blue_colours(rng, shift=-0.2))))
    scene.info["companion_separation_arcsec"] = sep
    return scene


def _negative(kind: str, rng, bands) -> sky._Scene:
    if kind == "elliptical":
        return sky._smooth(rng, bands, sky._SERSIC_N_SMOOTH, (0.6, 1.0))
    if kind == "elliptical_companion":
        return _elliptical_companion(rng, bands)
    if kind == "ring_galaxy":
        return _ring_galaxy(rng, bands)
    if kind == "spiral":
        return sky._featured_disk(rng, bands)
    if kind == "edge_on":
        return sky._edge_on_disk(rng, bands)
    if kind == "merger":
        return sky._merger(rng, bands)
    raise ValueError(f"unknown negative kind {kind!r}; expected one of {NEGATIVE_KINDS}")


# ---------------------------------------------------------------- drawing


def _observing(rng, config: sky.SkyConfig) -> tuple[float, list[float], np.ndarray]:
    fwhm = float(rng.uniform(*config.seeing_fwhm))
    fwhms = [fwhm * sky._SEEING_SCALE.get(b, 1.0) * (1 + rng.normal(0, 0.02)) for b in config.bands]
    sigma = np.array([sky._SKY_SIGMA.get(b, 0.01) for b in config.bands])
    return fwhm, fwhms, sigma


def _matched_snr(model: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """(B,) matched-filter S/N, sqrt(sum(model^2)) / sigma, per band of a (B, H, W) model."""
    return np.sqrt((model**2).sum(axis=(1, 2))) / sigma


def _band(bands: tuple[str, ...], name: str) -> int:
    return bands.index(name) if name in bands else 0


def lens_difficulty(arc_snr: float, theta_e: float, fwhm: float) -> float:
    """0 = obvious, 1 = invisible: faint arcs, and Einstein radii small against the seeing."""
    ease_snr = min(max(math.log(arc_snr / 4.0) / math.log(60.0 / 4.0), 0.0), 1.0)
    ease_size = min(max((theta_e / fwhm - 0.2) / 0.8, 0.0), 1.0)
    return float(1.0 - ease_snr * (0.2 + 0.8 * ease_size))


def simulate_lens(rng: np.random.Generator, config: LensConfig = LensConfig()) -> tuple[np.ndarray, dict]:
    """One (B, H, W) float32 noisy lens cutout and its truth.

    ``truth["deflector_only"]`` is not returned; call ``simulate_lens_parts`` for the
    noiseless deflector and arc images (tests compare them).
    """
    cube, truth, _ = simulate_lens_parts(rng, config)
    return cube, truth


def simulate_lens_parts(rng: np.random.Generator, config: LensConfig = LensConfig()):
    """(noisy cube, truth, {"deflector": (B,H,W), "arcs": (B,H,W)} noiseless scaled models)."""
    cfg = config.sky
    bands = cfg.bands
    theta_e, sigma_v = draw_einstein_radius(rng, *config.theta_e_range)
    fwhm, fwhms, sigma = _observing(rng, cfg)
    deflector, mass_q, phi, info = _deflector(rng, theta_e, bands)
    arcs, magnification, lens_info = _lensed_source(rng, theta_e, mass_q, phi, cfg)
    source = sky._Part(arcs, sky._colour_weights(bands, *sky._blue_colours(rng, shift=-0.3)))
    draw_seed = int(rng.integers(1 << 31))  # same sub-pixel offset for both parts
    light = sky._draw(sky._Scene([deflector], None, {}), fwhms, np.random.default_rng(draw_seed), cfg)
    arc = sky._draw(sky._Scene([source], None, {}), fwhms, np.random.default_rng(draw_seed), cfg)
    snr = sky._log_uniform(rng, *config.deflector_snr_range)
    arc_snr = sky._log_uniform(rng, *config.arc_snr_range)
    r, g = sky._reference_band(bands), _band(bands, "g")
    light *= snr / _matched_snr(light, sigma)[r]
    arc *= arc_snr / _matched_snr(arc, sigma)[g]
    noise = rng.normal(0.0, 1.0, light.shape) * sigma[:, None, None]
    cube = (light + arc + noise).astype(np.float32)
    arc_flux_r = float(arc[r].sum())
    truth = {
        "class": "lens", "is_lens": True, "subtype": "lens", "snr": float(snr), "arc_snr": float(arc_snr),
        "theta_e": float(theta_e), "sigma_v": float(sigma_v), "seeing_fwhm": fwhm,
        "difficulty": lens_difficulty(arc_snr, theta_e, fwhm),
        "source_mag": float(22.5 - 2.5 * math.log10(max(arc_flux_r / magnification, 1e-6))),  # nanomaggies -> AB
        "bands": list(bands), "sky_sigma": [float(s) for s in sigma],
        "flux": [float(f) for f in (light + arc).sum(axis=(1, 2))],
    }
    truth.update({k: float(v) for k, v in {**info, **lens_info}.items()})
    return cube, truth, {"deflector": light, "arcs": arc}


def simulate_non_lens(rng: np.random.Generator, config: LensConfig = LensConfig(),
                      kind: str | None = None) -> tuple[np.ndarray, dict]:
    """One noisy cutout of a non-lens (``kind`` from NEGATIVE_KINDS, else drawn) and its truth."""
    cfg = config.sky
    if kind is None:
        weights = np.asarray(config.negative_weights or _NEGATIVE_WEIGHTS, dtype=float)
        kind = NEGATIVE_KINDS[int(rng.choice(len(NEGATIVE_KINDS), p=weights / weights.sum()))]
    fwhm, fwhms, sigma = _observing(rng, cfg)
    scene = _negative(kind, rng, cfg.bands)
    model = sky._draw(scene, fwhms, rng, cfg)
    snr = sky._log_uniform(rng, *config.deflector_snr_range)
    model *= snr / _matched_snr(model, sigma)[sky._reference_band(cfg.bands)]
    cube = (model + rng.normal(0.0, 1.0, model.shape) * sigma[:, None, None]).astype(np.float32)
    truth = {
        "class": "not_lens", "is_lens": False, "subtype": kind, "snr": float(snr), "arc_snr": None,
        "theta_e": None, "source_mag": None, "seeing_fwhm": fwhm, "difficulty": LOOKALIKE[kind],
        "bands": list(cfg.bands), "sky_sigma": [float(s) for s in sigma],
        "flux": [float(f) for f in model.sum(axis=(1, 2))],
    }
    truth.update({k: (v if v is None or isinstance(v, str) else float(v)) for k, v in scene.info.items()})
    return cube, truth


def simulate_lens_sample(n: int, prevalence: float, seed: int,
                         config: LensConfig = LensConfig()) -> list[tuple[np.ndarray, dict]]:
    """``n`` cutouts, each a lens with probability ``prevalence``; fully determined by ``seed``."""
    if n < 0 or not 0.0 <= prevalence <= 1.0:
        raise ValueError("n must be >= 0 and prevalence in [0, 1]")
    rng = np.random.default_rng(seed)
    is_lens = rng.random(n) < prevalence
    return [simulate_lens(rng, config) if lens else simulate_non_lens(rng, config) for lens in is_lens]
