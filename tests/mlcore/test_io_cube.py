"""The bulk-inference reader: the same cube and the same errors as read_image_fits, without the WCS."""

import numpy as np
import pytest
from astropy.io import fits

from mlcore.io import DataFileError, _plain_primary_planes, read_image_cube, read_image_fits, write_image_fits
from mlcore.simulate.sky import SkyConfig, cutout_wcs


def _cube(bands=3, side=16, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (bands, side, side)).astype(np.float32)


def test_it_reads_a_written_cutout_from_its_bytes_with_the_same_cube(tmp_path):
    cube = _cube()
    cube[1, 3, 4] = np.nan  # a bad pixel becomes the band's median, as in read_image_fits
    path = tmp_path / "a.fits"
    write_image_fits(path, cube, ["g", "r", "i"], wcs=cutout_wcs(150.0, 2.2, SkyConfig(stamp_size=16)))
    assert _plain_primary_planes(path) is not None  # the fast path, not astropy
    fast = read_image_cube(path)
    assert fast.dtype == np.float32 and np.isfinite(fast).all()
    assert np.array_equal(fast, read_image_fits(path).cube)


@pytest.mark.parametrize("hdul", [
    fits.HDUList([fits.PrimaryHDU(_cube(1)[0]), *(fits.ImageHDU(_cube(1, seed=s)[0]) for s in (1, 2))]),
    fits.HDUList([fits.PrimaryHDU((_cube() * 100).astype(np.int16))]),
    fits.HDUList([fits.PrimaryHDU(_cube().astype(np.float64))]),
    fits.HDUList([fits.PrimaryHDU(_cube()[None])]),
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_cube())]),
], ids=["one-hdu-per-band", "int16", "float64", "4-d", "extension"])
def test_it_reads_other_layouts_like_the_full_reader(tmp_path, hdul):
    hdul.writeto(tmp_path / "a.fits")
    assert np.array_equal(read_image_cube(tmp_path / "a.fits"), read_image_fits(tmp_path / "a.fits").cube)


def test_it_leaves_scaled_float_images_to_astropy(tmp_path):
    hdu = fits.PrimaryHDU(_cube())
    hdu.header["BSCALE"] = 2.0
    hdu.writeto(tmp_path / "a.fits")
    assert _plain_primary_planes(tmp_path / "a.fits") is None
    assert np.array_equal(read_image_cube(tmp_path / "a.fits"), read_image_fits(tmp_path / "a.fits").cube)


def test_it_applies_the_scaling_of_scaled_integer_images(tmp_path):
    hdu = fits.PrimaryHDU((_cube() * 100).astype(np.int16))
    hdu.header["BSCALE"], hdu.header["BZERO"] = 0.5, 10.0
    hdu.writeto(tmp_path / "a.fits")
    expected = read_image_fits(tmp_path / "a.fits").cube
    assert np.array_equal(read_image_cube(tmp_path / "a.fits"), expected)
    assert np.allclose(expected, (_cube() * 100).astype(np.int16) * 0.5 + 10.0)


@pytest.mark.parametrize("data, reason", [
    (np.full((10, 10), np.nan, dtype=np.float32), "non-finite"),
    (np.ones((4, 4), dtype=np.float32), "each side"),
    (np.ones((9, 10, 10), dtype=np.float32), "at most 8 bands"),
])
def test_it_rejects_unusable_images_with_the_same_reason(tmp_path, data, reason):
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    with pytest.raises(DataFileError, match=reason):
        read_image_cube(tmp_path / "a.fits")


def test_it_rejects_corrupt_truncated_and_missing_files(tmp_path):
    (tmp_path / "text.fits").write_text("hello, not a FITS file")
    write_image_fits(tmp_path / "a.fits", _cube(side=64), ["g", "r", "i"])
    raw = (tmp_path / "a.fits").read_bytes()
    (tmp_path / "cut.fits").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "header-only.fits").write_bytes(raw[:2880])
    for name in ("text.fits", "cut.fits", "header-only.fits", "missing.fits"):
        with pytest.raises(DataFileError):
            read_image_cube(tmp_path / name)
