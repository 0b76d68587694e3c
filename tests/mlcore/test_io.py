import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from specutils import Spectrum

from mlcore.io import DataFileError, read_image_fits, read_spectrum, write_image_fits, write_sdss_spectrum
from mlcore.simulate.sky import SkyConfig, cutout_wcs


def _cube(bands=3, side=16, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (bands, side, side)).astype(np.float32)


def _spectrum(n=500):
    wave = 10 ** (3.6 + 1e-4 * np.arange(n))
    flux = (5 + np.random.default_rng(1).normal(0, 0.5, n)).astype(np.float32)
    return wave, flux, np.full(n, 4.0, dtype=np.float32)


# ---------------------------------------------------------------- images


def test_it_round_trips_an_image_cube_with_bands_and_position(tmp_path):
    cube = _cube()
    write_image_fits(tmp_path / "a.fits", cube, ["g", "r", "i"], wcs=cutout_wcs(150.0, 2.2, SkyConfig(stamp_size=16)),
                     header={"OBJECT": "sim-1"})
    data = read_image_fits(tmp_path / "a.fits")
    assert np.array_equal(data.cube, cube) and data.cube.dtype == np.float32
    assert data.bands == ("g", "r", "i") and data.nan_fraction == 0.0
    assert data.ra == pytest.approx(150.0, abs=1e-6) and data.dec == pytest.approx(2.2, abs=1e-6)
    assert data.header["OBJECT"] == "sim-1"


def test_it_reads_a_single_band_image_without_wcs(tmp_path):
    fits.PrimaryHDU(np.ones((10, 12), dtype=np.int16)).writeto(tmp_path / "a.fits")
    data = read_image_fits(tmp_path / "a.fits")
    assert data.cube.shape == (1, 10, 12) and data.bands == ("b0",) and data.ra is None


def test_it_reads_one_image_extension_per_band(tmp_path):
    hdus = [fits.PrimaryHDU()]
    for band in "gri":
        hdus.append(fits.ImageHDU(np.full((9, 9), 1.0), name=band.upper(), header=fits.Header({"FILTER": band})))
    fits.HDUList(hdus).writeto(tmp_path / "a.fits")
    data = read_image_fits(tmp_path / "a.fits")
    assert data.cube.shape == (3, 9, 9) and data.bands == ("g", "r", "i")


def test_it_replaces_a_few_bad_pixels_by_the_band_median(tmp_path):
    cube = np.ones((2, 10, 10), dtype=np.float32)
    cube[1] = 3.0
    cube[1, 0, :5] = np.nan
    cube[1, 1, 0] = np.inf
    fits.PrimaryHDU(cube).writeto(tmp_path / "a.fits")
    data = read_image_fits(tmp_path / "a.fits")
    assert np.all(data.cube[1] == 3.0) and data.nan_fraction == pytest.approx(6 / 200)


@pytest.mark.parametrize("data, reason", [
    (np.full((10, 10), np.nan, dtype=np.float32), "non-finite"),
    (np.ones(100, dtype=np.float32), "2-D or 3-D"),
    (np.ones((4, 4), dtype=np.float32), "each side"),
    (np.ones((9, 10, 10), dtype=np.float32), "at most 8 bands"),
    (np.ones((2, 3, 10, 10), dtype=np.float32), "2-D or 3-D"),
])
def test_it_rejects_unusable_images(tmp_path, data, reason):
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    with pytest.raises(DataFileError, match=reason):
        read_image_fits(tmp_path / "a.fits")


def test_it_rejects_bands_of_different_shapes(tmp_path):
    fits.HDUList([fits.PrimaryHDU(np.ones((10, 10))), fits.ImageHDU(np.ones((12, 12)))]).writeto(tmp_path / "a.fits")
    with pytest.raises(DataFileError, match="different shapes"):
        read_image_fits(tmp_path / "a.fits")


def test_it_rejects_files_without_image_data(tmp_path):
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"a": [1, 2]}))]).writeto(tmp_path / "a.fits")
    with pytest.raises(DataFileError, match="no image"):
        read_image_fits(tmp_path / "a.fits")


def test_it_rejects_corrupt_and_non_fits_files(tmp_path):
    (tmp_path / "text.fits").write_text("hello, not a FITS file")
    write_image_fits(tmp_path / "a.fits", _cube(side=64), ["g", "r", "i"])
    raw = (tmp_path / "a.fits").read_bytes()
    (tmp_path / "cut.fits").write_bytes(raw[: len(raw) // 2])
    for name in ("text.fits", "cut.fits", "missing.fits"):
        with pytest.raises(DataFileError):
            read_image_fits(tmp_path / name)


def test_it_leaves_no_temporary_files_after_writing(tmp_path):
    write_image_fits(tmp_path / "a.fits", _cube(), ["g", "r", "i"])
    assert [p.name for p in tmp_path.iterdir()] == ["a.fits"]


# ---------------------------------------------------------------- spectra


def test_it_round_trips_an_sdss_spectrum_that_specutils_recognises(tmp_path):
    wave, flux, ivar = _spectrum()
    ivar[10] = 0
    write_sdss_spectrum(tmp_path / "s.fits", wave, flux, ivar, z=2.5, ra=10.0, dec=-5.0)
    assert len(Spectrum.read(tmp_path / "s.fits", format="SDSS-III/IV spec").flux) == wave.size
    data = read_spectrum(tmp_path / "s.fits")
    assert np.allclose(data.wavelength, wave, rtol=2e-6) and np.array_equal(data.flux, flux)
    assert np.array_equal(data.ivar, ivar) and data.flux.dtype == data.ivar.dtype == np.float32
    assert (data.z, data.ra, data.dec) == (2.5, 10.0, -5.0) and data.meta["ivar_estimated"] is False


def test_it_reads_a_1d_image_with_a_linear_wcs_and_estimates_ivar(tmp_path):
    flux = np.random.default_rng(2).normal(10, 2, 300).astype(np.float32)
    hdu = fits.PrimaryHDU(flux)
    hdu.header.update(CRVAL1=4000.0, CDELT1=2.0, CRPIX1=1, CTYPE1="WAVE", CUNIT1="Angstrom")
    hdu.writeto(tmp_path / "s.fits")
    data = read_spectrum(tmp_path / "s.fits")
    assert data.wavelength[0] == pytest.approx(4000.0) and data.wavelength[1] == pytest.approx(4002.0)
    assert data.meta["ivar_estimated"] is True and data.z is None
    assert data.meta["flux_unit"] == "unknown"  # no BUNIT: values kept as stored
    assert 1 / np.sqrt(data.ivar[0]) == pytest.approx(2.0, rel=0.2)


def test_it_reads_a_table_in_nanometres_with_a_std_uncertainty(tmp_path):
    n = 200
    Table({"wavelength": np.linspace(500, 600, n), "flux": np.ones(n), "uncertainty": np.full(n, 0.5)},
          units={"wavelength": "nm", "flux": "1e-17 erg / (s cm2 Angstrom)",
                 "uncertainty": "1e-17 erg / (s cm2 Angstrom)"}).write(tmp_path / "t.fits")
    data = read_spectrum(tmp_path / "t.fits")
    assert data.wavelength[0] == pytest.approx(5000.0) and np.allclose(data.ivar, 4.0)


def test_it_zeroes_non_finite_flux_and_its_ivar(tmp_path):
    wave, flux, ivar = _spectrum()
    flux[5:8] = np.nan
    write_sdss_spectrum(tmp_path / "s.fits", wave, flux, ivar)
    data = read_spectrum(tmp_path / "s.fits")
    assert np.all(data.flux[5:8] == 0) and np.all(data.ivar[5:8] == 0) and np.all(np.isfinite(data.flux))
    assert data.z is None


def test_it_rejects_unusable_spectra(tmp_path):
    wave, flux, ivar = _spectrum(40)
    write_sdss_spectrum(tmp_path / "short.fits", wave, flux, ivar)
    wave, flux, ivar = _spectrum()
    write_sdss_spectrum(tmp_path / "nan.fits", wave, np.full_like(flux, np.nan), ivar)
    bad = Table({"wavelength": np.r_[np.arange(100.0), np.arange(100.0)] + 4000, "flux": np.ones(200)},
                units={"wavelength": "Angstrom", "flux": "erg / (s cm2 Angstrom)"})
    bad.write(tmp_path / "wiggle.fits")
    (tmp_path / "text.fits").write_text("not FITS")
    fits.PrimaryHDU(np.ones((20, 20))).writeto(tmp_path / "image.fits")
    cases = {"short.fits": "at least 50", "nan.fits": "finite", "wiggle.fits": "monotonic",
             "text.fits": "not a readable", "image.fits": "no 1-D spectrum|1-D"}
    for name, reason in cases.items():
        with pytest.raises(DataFileError, match=reason):
            read_spectrum(tmp_path / name)
