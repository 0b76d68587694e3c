"""BOSS-like quasar spectra with a Lyman-alpha forest, Lyman-limit systems and DLAs.

Spectra are drawn on a fine grid (5 sub-pixels per BOSS pixel), absorbed, smoothed
with a Gaussian line-spread function of resolution R and averaged onto the BOSS grid
(log10 step 1e-4). Noise is Gaussian and sky-dominated, set by a forest S/N per pixel
drawn log-uniform, so most sightlines are noisy. Sub-DLAs (log N 19-20.3) sit in some
DLA-free sightlines as confusers, and most DLAs are near the 20.3 threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.special import voigt_profile

SPECTRUM_CLASSES = ("dla", "no_dla")
SPECTRUM_TREE: dict = {
    "first": "T0",
    "tasks": {
        "T0": {"question": "Is there a damped Lyman-alpha absorber (a broad trough with damping wings) "
                           "in this spectrum?",
               "help": "Look blueward of the quasar's Lyman-alpha emission peak. A DLA is a wide trough that "
                       "reaches zero flux with smooth, curved wings, much wider than the narrow forest lines.",
               "answers": [{"label": "Yes", "next": None}, {"label": "No", "next": None}]},
    },
}
CLASS_ANSWERS = {"dla": {"T0": 0}, "no_dla": {"T0": 1}}

LYA_REST = 1215.67  # Angstrom
LYB_REST = 1025.72
LYMAN_LIMIT = 911.75
F_LYA, F_LYB = 0.4164, 0.07912  # oscillator strengths
GAMMA_LYA, GAMMA_LYB = 6.265e8, 1.897e8  # damping constants, s^-1
C_KMS = 299792.458
C_AA = 2.99792458e18  # Angstrom / s
PI_E2_MEC = 0.026540  # pi e^2 / (m_e c), cm^2 Hz
SIGMA_LL = 6.30e-18  # HI photo-ionisation cross-section at 912 A, cm^2
OVERSAMPLE = 5

# (rest wavelength A, rest equivalent width A, width factor): roughly the Vanden Berk et al.
# (2001) SDSS composite; N V and Lyman-alpha blend as in real spectra.
_EMISSION_LINES = ((1033.82, 9.5, 1.0), (LYA_REST, 70.0, 0.8), (1240.81, 15.0, 1.0), (1399.8, 8.0, 1.0),
                   (1549.06, 24.0, 1.0), (1908.73, 22.0, 1.2), (2798.75, 32.0, 1.1))
# Forest: dN/dz = A (1+z)^gamma with f(N) ~ N^-1.5 (Kim et al. 2001). gamma and A are set so
# the mean transmission follows tau_eff = 0.0018 (1+z)^3.92 (Faucher-Giguere et al. 2008).
_FOREST_LOG_N = (12.0, 17.0)
_FOREST_BETA = 1.5
_FOREST_GAMMA = 2.92
_FOREST_A = 30.0
_SNR_HARD, _SNR_EASY = 1.0, 10.0  # S/N per pixel at which a DLA is hopeless / obvious


@dataclass(frozen=True)
class SpectrumConfig:
    z_qso_range: tuple[float, float] = (2.2, 3.5)
    loglam_step: float = 1e-4
    wave_range: tuple[float, float] = (3600.0, 10400.0)
    dla_fraction: float = 0.4
    log_nhi_range: tuple[float, float] = (20.3, 21.8)  # DLAs, drawn from f(N) ~ N^-2
    snr_range: tuple[float, float] = (1.5, 15.0)  # forest S/N per pixel, log-uniform
    b_range: tuple[float, float] = (10.0, 40.0)  # km/s, DLAs and sub-DLAs
    sub_dla_fraction: float = 0.35  # share of DLA-free sightlines given a confuser
    sub_dla_log_nhi_range: tuple[float, float] = (19.0, 20.3)
    resolution: float = 2000.0  # R = lambda / FWHM


def voigt_optical_depth(wavelength: np.ndarray, z_abs: float, log_nhi: float, b_kms: float) -> np.ndarray:
    """Lyman-alpha optical depth of one absorber: tau = N (pi e^2 / m_e c) f phi(nu).

    phi is the exact Voigt profile (Faddeeva function via scipy) in frequency, with
    Doppler sigma nu0 b / (c sqrt 2) and Lorentzian half-width Gamma / 4 pi
    (e.g. Draine 2011, ch. 6; Tepper-Garcia 2006 for the approximation it replaces).
    """
    return _line_tau(np.asarray(wavelength, dtype=np.float64), z_abs, log_nhi, b_kms, LYA_REST, F_LYA, GAMMA_LYA)


def _line_tau(wavelength, z_abs, log_n, b_kms, rest, f_osc, gamma) -> np.ndarray:
    nu = C_AA * (1 + z_abs) / wavelength  # frequency in the absorber frame
    nu0 = C_AA / rest
    phi = voigt_profile(nu - nu0, nu0 * b_kms / C_KMS / math.sqrt(2), gamma / (4 * math.pi))
    return 10**log_n * PI_E2_MEC * f_osc * phi


def _lyman_limit_tau(wavelength, z_abs, log_n) -> np.ndarray:
    """Photo-ionisation optical depth blueward of the Lyman limit, sigma ~ (nu / nu_LL)^-3."""
    rest = wavelength / (1 + z_abs)
    return np.where(rest < LYMAN_LIMIT, 10**log_n * SIGMA_LL * (rest / LYMAN_LIMIT) ** 3, 0.0)


def _absorber(wavelength, z_abs, log_n, b_kms) -> np.ndarray:
    """Lyman-alpha, Lyman-beta and Lyman-continuum optical depth of one strong absorber."""
    return (_line_tau(wavelength, z_abs, log_n, b_kms, LYA_REST, F_LYA, GAMMA_LYA)
            + _line_tau(wavelength, z_abs, log_n, b_kms, LYB_REST, F_LYB, GAMMA_LYB)
            + _lyman_limit_tau(wavelength, z_abs, log_n))


# ---------------------------------------------------------------- grids and continuum


def _grids(config: SpectrumConfig) -> tuple[np.ndarray, np.ndarray]:
    """BOSS pixel centres (L,) and fine sub-pixel centres (L * OVERSAMPLE,), both in Angstrom."""
    step = config.loglam_step
    start = math.ceil(math.log10(config.wave_range[0]) / step) * step  # BOSS grid is anchored at k * step
    n = int(math.floor((math.log10(config.wave_range[1]) - start) / step)) + 1
    loglam = start + step * np.arange(n)
    sub = step * ((np.arange(OVERSAMPLE) + 0.5) / OVERSAMPLE - 0.5)
    return 10**loglam, 10 ** (loglam[:, None] + sub[None, :]).ravel()


def _continuum(rest: np.ndarray, rng) -> tuple[np.ndarray, dict]:
    """Power law f_nu ~ nu^alpha (alpha ~ -0.44, Vanden Berk et al. 2001) plus Gaussian broad lines."""
    alpha = float(rng.normal(-0.44, 0.3))
    f1450 = float(math.exp(rng.uniform(math.log(1.5), math.log(15.0))))  # 1e-17 erg/s/cm2/A
    power = f1450 * (rest / 1450.0) ** (-(2 + alpha))
    flux = power.copy()
    sigma_kms = rng.uniform(1500, 3000)
    for lam0, ew, width in _EMISSION_LINES:
        if lam0 == 1549.06:
            lam0 *= 1 + rng.normal(-600, 400) / C_KMS  # C IV is usually blueshifted (Richards et al. 2011)
        sig = lam0 * sigma_kms * width / C_KMS
        line_ew = ew * 10 ** rng.normal(0, 0.15)
        cont0 = f1450 * (lam0 / 1450.0) ** (-(2 + alpha))
        flux += line_ew * cont0 * np.exp(-0.5 * ((rest - lam0) / sig) ** 2) / (sig * math.sqrt(2 * math.pi))
    return flux, {"alpha_nu": alpha, "f1450": f1450}


# ---------------------------------------------------------------- absorbers


def _power_law_log_n(rng, lo: float, hi: float, beta: float, size=None):
    """log10 N drawn from f(N) ~ N^-beta between 10^lo and 10^hi (inverse CDF)."""
    a, b = 10 ** (lo * (1 - beta)), 10 ** (hi * (1 - beta))
    u = rng.random(size)
    return np.log10(a + u * (b - a)) / (1 - beta)


def _forest_tau(fine: np.ndarray, z_qso: float, rng) -> np.ndarray:
    """Optical depth of the Lyman-alpha forest (Doppler cores only: damping is negligible
    below log N ~ 17), on the fine grid, with each line's Lyman-beta partner."""
    z_lo = fine[0] / LYA_REST - 1 - 0.01
    if z_lo >= z_qso:
        return np.zeros_like(fine)
    g1 = _FOREST_GAMMA + 1
    expected = _FOREST_A / g1 * ((1 + z_qso) ** g1 - (1 + z_lo) ** g1)
    n_lines = rng.poisson(expected)
    # redshifts from dN/dz ~ (1+z)^gamma by inverting its CDF
    u = rng.random(n_lines)
    z = (u * (1 + z_qso) ** g1 + (1 - u) * (1 + z_lo) ** g1) ** (1 / g1) - 1
    log_n = _power_law_log_n(rng, *_FOREST_LOG_N, _FOREST_BETA, n_lines)
    b = np.clip(rng.normal(26.0, 8.0, n_lines), 12.0, 60.0)  # km/s (Hui & Rutledge 1999 peak ~25)
    tau = np.zeros_like(fine)
    for rest, f_osc in ((LYA_REST, F_LYA), (LYB_REST, F_LYB)):
        _add_doppler_lines(tau, fine, rest * (1 + z), log_n, b, rest, f_osc)
    strong = log_n > 15.5  # only these have a visible Lyman-limit break
    for zi, ni in zip(z[strong], log_n[strong], strict=True):
        tau += _lyman_limit_tau(fine, zi, ni)
    return tau


def _add_doppler_lines(tau, fine, centres, log_n, b, rest, f_osc, half_window: int = 24) -> None:
    """Add Gaussian line cores, each over a window of fine pixels around its centre."""
    log_fine = np.log10(fine)
    step = log_fine[1] - log_fine[0]
    idx = np.rint((np.log10(centres) - log_fine[0]) / step).astype(int)
    window = idx[:, None] + np.arange(-half_window, half_window + 1)[None, :]  # (n_lines, W)
    inside = (window >= 0) & (window < fine.size)
    window = np.clip(window, 0, fine.size - 1)
    v = (log_fine[window] - np.log10(centres)[:, None]) * math.log(10) * C_KMS
    # tau0 = sqrt(pi) e^2 / (m_e c) N f lambda0 / b  (= 1.497e-15 N f lambda0[A] / b[km/s])
    tau0 = 1.497e-15 * 10**log_n * f_osc * rest / b
    lines = tau0[:, None] * np.exp(-((v / b[:, None]) ** 2))
    tau += np.bincount(window[inside], weights=lines[inside], minlength=fine.size)


def _lls_tau(fine: np.ndarray, z_qso: float, rng) -> np.ndarray:
    """Lyman-limit systems, log N 17.2-19, with l(z) = 0.17 (1+z)^1.94 (Ribaudo et al. 2011)."""
    z_lo = fine[0] / LYA_REST - 1 - 0.01
    tau = np.zeros_like(fine)
    if z_lo >= z_qso:
        return tau
    expected = 0.17 / 2.94 * ((1 + z_qso) ** 2.94 - (1 + z_lo) ** 2.94)
    for _ in range(rng.poisson(expected)):
        z = rng.uniform(z_lo, z_qso)
        tau += _absorber(fine, z, float(_power_law_log_n(rng, 17.2, 19.0, 1.5)), float(rng.uniform(15, 40)))
    return tau


def _dla_redshift_range(z_qso: float, config: SpectrumConfig) -> tuple[float, float]:
    """Between the quasar's Lyman limit (or the blue edge) and 5000 km/s below the quasar
    (proximate absorbers excluded, as in Prochaska et al. 2005)."""
    lo = max(LYMAN_LIMIT * (1 + z_qso) / LYA_REST - 1, (config.wave_range[0] + 20) / LYA_REST - 1)
    hi = z_qso - 5000.0 / C_KMS * (1 + z_qso)
    return lo, max(hi, lo)


# ---------------------------------------------------------------- noise and assembly


def _noise_shape(wave: np.ndarray) -> np.ndarray:
    """Relative noise per pixel: throughput falls at the blue end, sky rises to the red."""
    return 1 + 2.0 * np.exp(-(wave - 3600.0) / 300.0) + 0.6 * np.clip((wave - 7000.0) / 3400.0, 0, 1)


def _forest_window(rest: np.ndarray) -> np.ndarray:
    window = (rest > 1040) & (rest < 1185)
    if not window.any():
        window = rest < LYA_REST
    return window if window.any() else np.ones_like(rest, dtype=bool)


def _difficulty(snr: float, log_n: float | None, sub_log_n: float | None, config: SpectrumConfig) -> float:
    """0 = easy, 1 = hardest: low S/N near the absorber, and column densities near 10^20.3."""
    ease_snr = min(max(math.log(snr / _SNR_HARD) / math.log(_SNR_EASY / _SNR_HARD), 0.0), 1.0)
    if log_n is not None:
        closeness = min(max(1 - (log_n - 20.3) / 1.0, 0.0), 1.0)
    elif sub_log_n is not None:
        lo, hi = config.sub_dla_log_nhi_range
        closeness = min(max((sub_log_n - lo) / max(hi - lo, 1e-6), 0.0), 1.0)
    else:
        closeness = 0.0
    return float(min(max(1 - ease_snr * (1 - 0.7 * closeness), 0.0), 1.0))


def simulate_quasar(rng: np.random.Generator, config: SpectrumConfig = SpectrumConfig(),
                    has_dla: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One quasar sightline: wavelength (L,) A, flux (L,) float32, ivar (L,) float32, truth.

    ``truth["snr"]`` is the median continuum / sigma per pixel over rest 1040-1185 A;
    ``has_dla=None`` draws it with probability ``config.dla_fraction``.
    """
    if has_dla is None:
        has_dla = bool(rng.random() < config.dla_fraction)
    wave, fine = _grids(config)
    z_qso = float(rng.uniform(*config.z_qso_range))
    cont_fine, cont_info = _continuum(fine / (1 + z_qso), rng)
    tau = _forest_tau(fine, z_qso, rng) + _lls_tau(fine, z_qso, rng)
    truth = {"class": "dla" if has_dla else "no_dla", "z_qso": z_qso, "z_abs": None, "log_nhi": None,
             "b_kms": None, "sub_dla_z": None, "sub_dla_log_nhi": None, **cont_info}
    lo, hi = _dla_redshift_range(z_qso, config)
    if has_dla:
        truth["z_abs"] = float(rng.uniform(lo, hi))
        truth["log_nhi"] = float(_power_law_log_n(rng, *config.log_nhi_range, 2.0))
        truth["b_kms"] = float(rng.uniform(*config.b_range))
        tau += _absorber(fine, truth["z_abs"], truth["log_nhi"], truth["b_kms"])
    elif rng.random() < config.sub_dla_fraction:
        truth["sub_dla_z"] = float(rng.uniform(lo, hi))
        truth["sub_dla_log_nhi"] = float(rng.uniform(*config.sub_dla_log_nhi_range))
        tau += _absorber(fine, truth["sub_dla_z"], truth["sub_dla_log_nhi"], float(rng.uniform(*config.b_range)))
    # Line-spread function: FWHM = c / R, in fine pixels of constant velocity width.
    fine_kms = config.loglam_step / OVERSAMPLE * math.log(10) * C_KMS
    lsf_sigma = C_KMS / config.resolution / 2.3548 / fine_kms
    observed = gaussian_filter1d(cont_fine * np.exp(-tau), lsf_sigma, mode="nearest")
    true_flux = observed.reshape(-1, OVERSAMPLE).mean(axis=1)  # (L,)
    continuum = cont_fine.reshape(-1, OVERSAMPLE).mean(axis=1)
    snr = math.exp(rng.uniform(*np.log(config.snr_range)))
    shape = _noise_shape(wave)
    window = _forest_window(wave / (1 + z_qso))
    sigma = shape * np.median(continuum[window] / shape[window]) / snr
    flux = true_flux + rng.normal(0.0, 1.0, wave.size) * sigma
    truth["snr"] = float(snr)
    local_snr = snr
    if has_dla:  # what matters is the S/N where the DLA is
        near = np.abs(wave / (1 + truth["z_abs"]) - LYA_REST) < 20
        local_snr = float(np.median(continuum[near] / sigma[near])) if near.any() else snr
    truth["difficulty"] = _difficulty(local_snr, truth["log_nhi"], truth["sub_dla_log_nhi"], config)
    return wave, flux.astype(np.float32), (1.0 / sigma**2).astype(np.float32), truth


def simulate_spectra(n: int, seed: int, config: SpectrumConfig = SpectrumConfig()
                     ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, dict]]:
    """``n`` sightlines, a ``config.dla_fraction`` share with a DLA; fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    return [simulate_quasar(rng, config) for _ in range(n)]
