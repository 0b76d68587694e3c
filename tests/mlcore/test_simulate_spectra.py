import numpy as np

from mlcore.simulate.spectra import LYA_REST, SpectrumConfig, simulate_quasar, simulate_spectra, voigt_optical_depth

HIGH_SNR = SpectrumConfig(snr_range=(15.0, 15.0))


def _equivalent_width(log_n):
    wave = np.linspace(LYA_REST - 200, LYA_REST + 200, 40001)  # rest frame, z_abs = 0
    return np.trapezoid(1 - np.exp(-voigt_optical_depth(wave, 0.0, log_n, 20.0)), wave)


def test_it_makes_dla_width_grow_as_sqrt_column_density():
    ratio = _equivalent_width(21.5) / _equivalent_width(20.5)
    assert abs(ratio - np.sqrt(10)) < 0.15
    assert 8 < _equivalent_width(20.3) < 14  # ~ 7.3 sqrt(N / 1e20) A in the damping regime


def test_it_returns_boss_like_arrays():
    wave, flux, ivar, truth = simulate_quasar(np.random.default_rng(0))
    assert wave.shape == flux.shape == ivar.shape and flux.dtype == ivar.dtype == np.float32
    assert np.allclose(np.diff(np.log10(wave)), 1e-4) and 3600 <= wave[0] < 3601 and wave[-1] <= 10400
    assert np.all(np.isfinite(flux)) and np.all(ivar > 0)
    assert 0 <= truth["difficulty"] <= 1 and 1.5 <= truth["snr"] <= 15


def test_it_recovers_the_continuum_redward_of_lyman_alpha():
    rng = np.random.default_rng(1)
    for _ in range(3):
        wave, flux, _, truth = simulate_quasar(rng, HIGH_SNR)
        rest = wave / (1 + truth["z_qso"])
        window = (rest > 1440) & (rest < 1465)  # free of broad emission lines
        assert abs(np.median(flux[window]) / truth["f1450"] - 1) < 0.05


def test_it_honours_the_has_dla_flag():
    rng = np.random.default_rng(2)
    assert all(simulate_quasar(rng, has_dla=True)[3]["class"] == "dla" for _ in range(5))
    no = [simulate_quasar(rng, has_dla=False)[3] for _ in range(5)]
    assert all(t["class"] == "no_dla" and t["z_abs"] is None and t["log_nhi"] is None for t in no)


def test_it_absorbs_everything_at_the_centre_of_a_strong_dla():
    config = SpectrumConfig(snr_range=(15.0, 15.0), log_nhi_range=(21.0, 21.0))
    wave, flux, ivar, truth = simulate_quasar(np.random.default_rng(3), config, has_dla=True)
    assert truth["log_nhi"] == 21.0
    centre = np.abs(wave - LYA_REST * (1 + truth["z_abs"])) < 5
    noise = np.median(1 / np.sqrt(ivar[centre]))
    assert abs(np.mean(flux[centre])) < 3 * noise / np.sqrt(centre.sum()) + 0.02 * truth["f1450"]


def test_it_is_deterministic_for_a_seed():
    a, b = simulate_spectra(3, seed=7), simulate_spectra(3, seed=7)
    for (_, fa, ia, ta), (_, fb, ib, tb) in zip(a, b, strict=True):
        assert np.array_equal(fa, fb) and np.array_equal(ia, ib) and ta == tb
    assert not np.array_equal(a[0][1], simulate_spectra(1, seed=8)[0][1])
