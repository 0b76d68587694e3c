import numpy as np
import pytest

from mlcore.simulate.sky import (
    CLASS_ANSWERS,
    GALAXY_TREE,
    IMAGE_CLASSES,
    SkyConfig,
    cutout_wcs,
    simulate_cutout,
    simulate_cutouts,
)
from mlcore.tasktree import path_for_answers, validate_annotation, validate_tree

BRIGHT = SkyConfig(snr_range=(200.0, 200.0))


def _size(image):
    """Number of pixels above half the peak: a noise-robust area of the core."""
    return int((image > 0.5 * image.max()).sum())


@pytest.mark.parametrize("cls", IMAGE_CLASSES)
def test_it_renders_every_class_as_a_finite_float32_cube(cls):
    cube, truth = simulate_cutout(cls, np.random.default_rng(0))
    assert cube.shape == (3, 64, 64) and cube.dtype == np.float32 and np.all(np.isfinite(cube))
    assert truth["class"] == cls and 0 <= truth["difficulty"] <= 1 and 5 <= truth["snr"] <= 300


def test_it_is_deterministic_for_a_seed():
    a, b = simulate_cutouts(8, seed=3), simulate_cutouts(8, seed=3)
    for (ca, ta), (cb, tb) in zip(a, b, strict=True):
        assert np.array_equal(ca, cb) and ta == tb
    assert not np.array_equal(a[0][0], simulate_cutouts(1, seed=4)[0][0])


def test_it_gives_every_class_a_valid_expert_path_through_the_tree():
    validate_tree(GALAXY_TREE)
    assert set(CLASS_ANSWERS) == set(IMAGE_CLASSES)
    for cls, answers in CLASS_ANSWERS.items():
        path = path_for_answers(GALAXY_TREE, lambda task, n, answers=answers: answers[task])
        assert validate_annotation(GALAXY_TREE, path) == path
        assert {step["task"] for step in path} == set(answers), cls


@pytest.mark.parametrize("cls", ["star", "smooth_round", "featured_disk"])
def test_it_hits_the_requested_signal_to_noise(cls):
    rng = np.random.default_rng(5)
    for snr in (20.0, 100.0):
        cube, truth = simulate_cutout(cls, rng, SkyConfig(snr_range=(snr, snr)))
        sigma = truth["sky_sigma"][1]
        # E[sum(x^2)] = sum(model^2) + n_pix sigma^2, and S/N^2 = sum(model^2) / sigma^2
        measured = np.sqrt(max((cube[1].astype(float) ** 2).sum() / sigma**2 - cube[1].size, 0.0))
        assert abs(measured / snr - 1) < 0.25


def test_it_draws_stars_more_compact_than_big_galaxies():
    rng = np.random.default_rng(6)
    stars = [_size(simulate_cutout("star", rng, BRIGHT)[0][1]) for _ in range(4)]
    big = []
    while len(big) < 4:
        cube, truth = simulate_cutout("smooth_round", rng, BRIGHT)
        if truth["hlr_arcsec"] > 2.0:
            big.append(_size(cube[1]))
    assert max(stars) < min(big)


def test_it_makes_faint_small_objects_harder_than_bright_big_ones():
    rng = np.random.default_rng(7)
    faint = [simulate_cutout("featured_disk", rng, SkyConfig(snr_range=(6.0, 6.0)))[1]["difficulty"] for _ in range(5)]
    bright = [t["difficulty"] for t in (simulate_cutout("featured_disk", rng, BRIGHT)[1] for _ in range(20))
              if t["hlr_arcsec"] > 2.5]
    assert bright and min(faint) > max(bright)


def test_it_follows_class_weights():
    weights = tuple(1.0 if c == "star" else 0.0 for c in IMAGE_CLASSES)
    assert {t["class"] for _, t in simulate_cutouts(5, seed=0, config=SkyConfig(class_weights=weights))} == {"star"}


def test_it_centres_the_wcs_on_the_stamp():
    wcs = cutout_wcs(150.0, 2.2)
    ra, dec = wcs.all_pix2world([[31.5, 31.5]], 0)[0]
    assert abs(ra - 150.0) < 1e-9 and abs(dec - 2.2) < 1e-9
    assert abs(abs(wcs.wcs.cdelt[0]) * 3600 - 0.262) < 1e-9
