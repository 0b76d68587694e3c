"""The trail finder (``mlcore.trails``) on synthetic 256 x 256 g, r, i fields with a known answer."""

import numpy as np
import pytest

from mlcore.average_precision import line_recall
from mlcore.trails import find_trails
from tests.mlcore.synthetic_fields import add_ellipse, add_streak, segments
from tests.mlcore.synthetic_fields import noise as sky_noise

SIZE = 256


def noise(seed: int) -> np.ndarray:
    return sky_noise(seed, SIZE)


def matched(found, truth) -> bool:
    return line_recall([segments(found)], [np.array([truth])], [np.array([False])])["recall"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_it_recovers_a_faint_satellite_well_below_one_sigma_per_pixel(seed):
    truth = [20.0, 40.0, 230.0, 180.0]
    cube = add_streak(noise(seed), 1, truth[:2], truth[2:], peak=0.5)  # matched-filter S/N about 14
    found = find_trails(cube)
    assert len(found) == 1
    assert matched(found, truth)


def test_pure_noise_has_no_trails():
    for seed in range(10, 16):
        assert find_trails(noise(seed)) == []


def test_an_asteroids_faint_dashes_in_three_bands_are_one_trail():
    cube = noise(3)
    for band, start in enumerate((60.0, 95.0, 130.0)):  # 25 px dashes, 10 px gaps: g, then r, then i
        add_streak(cube, band, (start, 100.0 + 0.5 * (start - 60.0)), (start + 25.0, 100.0 + 0.5 * (start - 35.0)), 1.0)
    found = find_trails(cube)
    assert len(found) == 1
    assert matched(found, [60.0, 100.0, 155.0, 147.5])


def test_the_outskirts_of_galaxies_seen_in_every_band_are_not_trails():
    cube = noise(4)
    add_ellipse(cube, 80.0, 90.0, peak=1.5, major=22.0, minor=2.5, angle=0.4)  # faint edge-on disks
    add_ellipse(cube, 180.0, 170.0, peak=4.0, major=15.0, minor=3.0, angle=2.0)
    assert find_trails(cube) == []


def test_a_bright_wide_satellite_is_found_once_not_as_parallel_copies():
    truth = [0.0, 30.0, 256.0, 220.0]
    cube = add_streak(noise(5), 2, truth[:2], truth[2:], peak=20.0, sigma=5.0)
    found = find_trails(cube)
    assert len(found) == 1
    assert matched(found, truth)
