"""BOSS-like quasar spectra with a Lyman-alpha forest and damped Lyman-alpha absorbers (DLAs).

Physics, kept honest rather than flattering:
- power-law continuum f_nu ~ nu^alpha (alpha ~ -0.5, Vanden Berk+2001) with broad emission
  lines (Ly-beta/O VI, Ly-alpha, N V, Si IV, C IV, C III], Mg II);
- a Lyman-alpha forest of Voigt absorbers, log N_HI 12.5-17, column density distribution
  f(N) ~ N^-1.5 and line density dN/dz = 6.1 (1+z)^2.47 above log N = 13.64 (Kim+2002), with
  their Ly-beta lines; Lyman-limit absorption blueward of 912 A rest;
- DLAs with log N_HI 20.3-21.8 (Wolfe+1986 threshold), whose damping wings make the width
  grow as sqrt(N_HI); sub-DLAs (log N 19-20.3) as confusers in DLA-free sightlines;
- Gaussian noise with forest S/N per pixel drawn log-uniform in 1.5-15, worse in the blue.
Pixels are uniform in log10(lambda), step 1e-4 (SDSS/BOSS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import voigt_profile

SPECTRUM_CLASSES = ("dla", "no_dla")
SPECTRUM_TREE: dict = {
    "first": "T0",
    "tasks": {
        "T0": {
            "question": "Is there a damped Lyman-alpha absorber in this spectrum?",
            "help": "Look blueward of the quasar's strong Lyman-alpha emission line for a broad trough "
            "that reaches zero flux, with smooth damping wings on both sides. Narrow forest lines do not count.",
            "answers": [{"label": "Yes, a DLA", "next": None}, {"label": "No DLA", "next": None}],
        }
    },
}
CLASS_ANSWERS = {"dla": {"T0": 0}, "no_dla": {"T0": 1}}

LYA_REST = 1215.67  # Angstrom
LYB_REST = 1025.72
LYMAN_LIMIT = 911.75
F_LYA, F_LYB = 0.4164, 0.07912
GAMMA_LYA, GAMMA_LYB = 6.265e8, 1.897e8  # s^-1
C_KMS = 2.998e5
C_ANGSTROM_HZ = 2.998e18  # c in Angstrom / s
SIGMA0 = 0.02654  # pi e^2 / (m_e c), cm^2 Hz

EMISSION_LINES = (  # rest Angstrom, rest equivalent width (A), FWHM km/s  (Vanden Berk+2001, rounded)
    (1033.8, 10.0, 5000.0),
    (LYA_REST, 90.0, 4500.0),
    (1240.1, 15.0, 3000.0),
    (1399.8, 8.0, 5000.0),
    (1549.1, 30.0, 4500.0),
    (1908.7, 20.0, 5500.0),
    (2798.8, 30.0, 4500.0),
)


@dataclass(frozen=True)
class SpectrumConfig:
    z_qso_range: tuple[float, float] = (2.2, 3.5)
    loglam_step: float = 1e-4
    wave_range: tuple[float, float] = (3600.0, 10400.0)
    dla_fraction: float = 0.4
    log_nhi_range: tuple[float, float] = (20.3, 21.8)
    sub_dla_fraction: float = 0.3  # of DLA-free sightlines that get a confusing sub-DLA
    snr_range: tuple[float, float] = (1.5, 15.0)  # forest S/N per pixel
    b_range: tuple[float, float] = (10.0, 40.0)  # km/s


def wavelength_grid(config: SpectrumConfig = SpectrumConfig()) -> np.ndarray:
    lo, hi = np.log10(config.wave_range[0]), np.log10(config.wave_range[1])
    return 10 ** np.arange(lo, hi, config.loglam_step)


def voigt_optical_depth(
    wavelength: np.ndarray,
    z_abs: float,
    log_nhi: float,
    b_kms: float,
    *,
    rest: float = LYA_REST,
    f: float = F_LYA,
    gamma: float = GAMMA_LYA,
) -> np.ndarray:
    """Optical depth of one H I line: tau = N sigma0 f phi(nu), phi the unit-area Voigt profile.

    The Doppler part has standard deviation nu0 b / (c sqrt 2); the Lorentzian half-width
    is Gamma / (4 pi) (e.g. Draine 2011, ch. 6). ``wavelength`` is observed, in Angstrom.
    """
    nu = C_ANGSTROM_HZ * (1 + z_abs) / np.asarray(wavelength, dtype=np.float64)  # rest-frame frequency
    nu0 = C_ANGSTROM_HZ / rest
    sigma = nu0 * b_kms / C_KMS / np.sqrt(2.0)
    return 10.0**log_nhi * SIGMA0 * f * voigt_profile(nu - nu0, sigma, gamma / (4 * np.pi))


def hi_optical_depth(wavelength: np.ndarray, z_abs: float, log_nhi: float, b_kms: float) -> np.ndarray:
    """Ly-alpha + Ly-beta optical depth of one absorber."""
    return voigt_optical_depth(wavelength, z_abs, log_nhi, b_kms) + voigt_optical_depth(
        wavelength, z_abs, log_nhi, b_kms, rest=LYB_REST, f=F_LYB, gamma=GAMMA_LYB
    )


def _continuum(wave: np.ndarray, z_qso: float, rng) -> np.ndarray:
    rest = wave / (1 + z_qso)
    alpha = rng.normal(-0.5, 0.3)
    cont = (rest / 1450.0) ** (-2.0 - alpha)  # f_lambda for f_nu ~ nu^alpha
    for centre, ew, fwhm in EMISSION_LINES:
        sigma = centre * fwhm / C_KMS / 2.355
        amplitude = ew * rng.uniform(0.6, 1.4) / (np.sqrt(2 * np.pi) * sigma)
        cont = cont + amplitude * (centre / 1450.0) ** (-2.0 - alpha) * np.exp(-0.5 * ((rest - centre) / sigma) ** 2)
    return cont


def _forest_tau(wave: np.ndarray, z_qso: float, rng, config: SpectrumConfig) -> np.ndarray:
    """Optical depth of the Ly-alpha forest between Ly-beta and Ly-alpha emission (and its Ly-beta)."""
    z_lo = max(LYB_REST * (1 + z_qso) / LYA_REST - 1, wave[0] / LYA_REST - 1)
    tau = np.zeros_like(wave)
    if z_lo >= z_qso:
        return tau
    # dN/dz above log N = 13.64, extended to log N = 12.5 with f(N) ~ N^-1.5.
    z_mid = 0.5 * (z_lo + z_qso)
    per_dz = 6.1 * (1 + z_mid) ** 2.47 * 10 ** (0.5 * (13.64 - 12.5))
    n_lines = rng.poisson(per_dz * (z_qso - z_lo))
    z_lines = rng.uniform(z_lo, z_qso, n_lines)
    log_n = 12.5 - np.log10(1 - rng.uniform(0, 1 - 10 ** (-0.5 * 4.5), n_lines)) / 0.5  # N^-1.5, up to 17
    b = rng.uniform(*config.b_range, n_lines)
    for z, n, bb in zip(z_lines, log_n, b, strict=True):
        centre = LYA_REST * (1 + z)
        window = np.abs(wave - centre) < 8.0  # weak lines: no wings worth computing further out
        tau[window] += voigt_optical_depth(wave[window], z, n, bb)
        centre_b = LYB_REST * (1 + z)
        window_b = np.abs(wave - centre_b) < 6.0
        tau[window_b] += voigt_optical_depth(wave[window_b], z, n, bb, rest=LYB_REST, f=F_LYB, gamma=GAMMA_LYB)
    limit = LYMAN_LIMIT * (1 + z_qso)
    tau[wave < limit] += rng.uniform(1.0, 4.0) * (wave[wave < limit] / limit) ** 3
    return tau


def _draw_absorber_z(wave: np.ndarray, z_qso: float, rng) -> float:
    """A redshift in the forest where Ly-alpha is observed (DLA searches use the same window)."""
    z_lo = max(LYB_REST * (1 + z_qso) / LYA_REST - 1, (wave[0] + 30.0) / LYA_REST - 1)
    z_hi = z_qso - 0.05  # proximate absorbers excluded, as in Parks+2018's training sets
    return float(rng.uniform(z_lo, max(z_lo + 1e-3, z_hi)))


def _difficulty(snr: float, log_nhi: float | None, has_dla: bool, config: SpectrumConfig) -> float:
    noise = 1 - np.log(snr / config.snr_range[0]) / np.log(config.snr_range[1] / config.snr_range[0])
    if log_nhi is None:
        closeness = 0.0
    elif has_dla:  # weaker DLAs are harder to see
        closeness = (config.log_nhi_range[1] - log_nhi) / (config.log_nhi_range[1] - config.log_nhi_range[0])
    else:  # a sub-DLA close to the threshold looks like a DLA
        closeness = np.clip((log_nhi - 19.0) / 1.3, 0, 1)
    return float(np.clip(0.6 * noise + 0.4 * closeness, 0, 1))


def simulate_quasar(
    rng: np.random.Generator, config: SpectrumConfig = SpectrumConfig(), has_dla: bool | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """One sightline: wavelength (L,) A, flux (L,) float32, ivar (L,) float32, truth dict."""
    wave = wavelength_grid(config)
    z_qso = float(rng.uniform(*config.z_qso_range))
    if has_dla is None:
        has_dla = bool(rng.random() < config.dla_fraction)
    amplitude = 10 ** rng.uniform(0.0, 1.0)  # flux at 1450 A rest, 1e-17 erg/s/cm2/A
    continuum = amplitude * _continuum(wave, z_qso, rng)
    tau = _forest_tau(wave, z_qso, rng, config)
    z_abs = log_nhi = None
    if has_dla:
        z_abs, log_nhi = _draw_absorber_z(wave, z_qso, rng), float(rng.uniform(*config.log_nhi_range))
    elif rng.random() < config.sub_dla_fraction:
        z_abs, log_nhi = _draw_absorber_z(wave, z_qso, rng), float(rng.uniform(19.0, 20.3))
    if z_abs is not None:
        tau += hi_optical_depth(wave, z_abs, log_nhi, float(rng.uniform(*config.b_range)))
    snr = float(np.exp(rng.uniform(np.log(config.snr_range[0]), np.log(config.snr_range[1]))))
    forest = (wave > LYB_REST * (1 + z_qso)) & (wave < LYA_REST * (1 + z_qso))
    level = np.median(continuum[forest]) if forest.any() else np.median(continuum)
    sigma = (level / snr) * np.where(wave < 4000.0, 1.5, 1.0)  # blue CCD throughput is lower
    flux = continuum * np.exp(-tau) + rng.normal(0.0, 1.0, wave.size) * sigma
    truth = {
        "class": "dla" if has_dla else "no_dla",
        "z_qso": z_qso,
        "z_abs": z_abs if has_dla else None,
        "log_nhi": log_nhi if has_dla else None,
        "sub_dla_log_nhi": log_nhi if (not has_dla and log_nhi is not None) else None,
        "snr": snr,
        "difficulty": _difficulty(snr, log_nhi, has_dla, config),
    }
    return wave, flux.astype(np.float32), (1.0 / sigma**2).astype(np.float32), truth


def simulate_spectra(
    n: int, seed: int, config: SpectrumConfig = SpectrumConfig()
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, dict]]:
    rng = np.random.default_rng(seed)
    return [simulate_quasar(rng, config) for _ in range(n)]
