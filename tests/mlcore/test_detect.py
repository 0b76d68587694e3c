import numpy as np
import pytest

from mlcore import detect


def two_sources(rng):
    """(2, 96, 128) noise with two Gaussian blobs at array positions (30.5, 40.5) and (100.5, 70.5)."""
    yy, xx = np.mgrid[0:96, 0:128] + 0.5  # pixel centres in the marks convention
    image = rng.normal(0, 1.0, (2, 96, 128)) + 5.0  # a sky level to subtract
    for x, y, peak in ((30.5, 40.5, 40.0), (100.5, 70.5, 15.0)):
        image += peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
    return image


def test_it_finds_sources_at_their_positions_brightest_first():
    sources = detect.detect_sources(two_sources(np.random.default_rng(0)))
    assert len(sources) == 2
    assert (sources[0].x, sources[0].y) == pytest.approx((30.5, 40.5), abs=0.3)
    assert (sources[1].x, sources[1].y) == pytest.approx((100.5, 70.5), abs=0.5)
    assert sources[0].snr > sources[1].snr and all(s.area >= 5 for s in sources)
    total = 40.0 * 2 * np.pi * 2.0**2  # flux of the brighter blob, in each band
    assert sources[0].flux == pytest.approx((total, total), rel=0.15)


def test_pure_noise_gives_no_sources():
    assert detect.detect_sources(np.random.default_rng(1).normal(0, 1, (3, 128, 128))) == []


def test_a_constant_image_is_refused():
    with pytest.raises(detect.DetectionError, match="sky noise"):
        detect.detect_sources(np.ones((1, 64, 64)))


def test_cutouts_slide_inside_the_field_at_its_edges():
    assert detect.cutout_origin(100.2, 50.7, (128, 256), 64) == (68, 18)
    assert detect.cutout_origin(3.0, 126.0, (128, 256), 64) == (0, 64)
    with pytest.raises(detect.DetectionError, match="smaller"):
        detect.cutout_origin(10, 10, (32, 256), 64)
