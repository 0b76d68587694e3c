"""Simulated strong lenses and hard negatives (mlcore.simulate.lenses)."""

import numpy as np
import pytest

from mlcore.simulate import lenses, sky
from mlcore.simulate.lenses import (
    CLASS_ANSWERS,
    LENS_TREE,
    NEGATIVE_KINDS,
    LensConfig,
    draw_einstein_radius,
    lens_difficulty,
    simulate_lens,
    simulate_lens_parts,
    simulate_lens_sample,
    simulate_non_lens,
)
from mlcore.tasktree import validate_tree

BRIGHT_ARCS = LensConfig(arc_snr_range=(40.0, 40.0))


def _radius_map(size=64, scale=0.262):
    axis = (np.arange(size) - (size - 1) / 2) * scale
    x, y = np.meshgrid(axis, axis)
    return np.hypot(x, y)


def test_it_renders_lenses_in_the_skys_cutout_format():
    cube, truth = simulate_lens(np.random.default_rng(0))
    assert cube.shape == (3, 64, 64) and cube.dtype == np.float32 and np.all(np.isfinite(cube))
    assert truth["class"] == "lens" and truth["is_lens"] and truth["bands"] == ["g", "r", "i"]
    assert 0.5 <= truth["theta_e"] <= 2.0 and truth["magnification"] > 1.0
    assert 1.0 <= truth["seeing_fwhm"] <= 1.4 and 0.0 <= truth["difficulty"] <= 1.0


@pytest.mark.parametrize("kind", NEGATIVE_KINDS)
def test_it_renders_every_hard_negative_without_lensing(kind):
    cube, truth = simulate_non_lens(np.random.default_rng(1), kind=kind)
    assert cube.shape == (3, 64, 64) and np.all(np.isfinite(cube))
    assert truth["class"] == "not_lens" and not truth["is_lens"] and truth["subtype"] == kind
    assert truth["theta_e"] is None and truth["arc_snr"] is None


def test_lensed_light_sits_in_an_annulus_at_the_einstein_radius():
    rng = np.random.default_rng(2)
    radius = _radius_map()
    for _ in range(6):
        cube, truth, parts = simulate_lens_parts(rng, BRIGHT_ARCS)
        theta_e, g = truth["theta_e"], 0
        ring = np.abs(radius - theta_e) < 0.6 * truth["seeing_fwhm"]
        # the lensed source's light is centred on theta_E (the PSF blurs it by ~the seeing)
        arcs = parts["arcs"][g]
        mean_radius = float((arcs * radius).sum() / arcs.sum())
        assert abs(mean_radius - theta_e) < 0.5 * truth["seeing_fwhm"] + 0.2, truth
        # and the noisy image has clearly more light in that annulus than the deflector alone
        excess = float(cube[g][ring].sum() - parts["deflector"][g][ring].sum())
        noise = truth["sky_sigma"][g] * np.sqrt(ring.sum())
        assert excess > 5 * noise


def test_arcs_are_bluer_than_the_deflector():
    _, _, parts = simulate_lens_parts(np.random.default_rng(3))
    g_over_r = {name: image[0].sum() / image[1].sum() for name, image in parts.items()}
    assert g_over_r["arcs"] > 1.3 * g_over_r["deflector"]


def test_the_noise_is_the_skys():
    cube, truth = simulate_lens(np.random.default_rng(4))
    corners = np.concatenate([cube[:, :10, :10].reshape(3, -1), cube[:, -10:, -10:].reshape(3, -1)], axis=1)
    expected = np.array([sky._SKY_SIGMA[b] for b in "gri"])
    assert np.allclose(corners.std(axis=1), expected, rtol=0.2)
    assert truth["sky_sigma"] == pytest.approx(expected.tolist())


def test_it_hits_the_requested_arc_signal_to_noise():
    rng = np.random.default_rng(5)
    for snr in (10.0, 60.0):
        _, truth, parts = simulate_lens_parts(rng, LensConfig(arc_snr_range=(snr, snr)))
        measured = np.sqrt((parts["arcs"][0] ** 2).sum()) / truth["sky_sigma"][0]
        assert measured == pytest.approx(snr, rel=1e-6) and truth["arc_snr"] == pytest.approx(snr)


def test_einstein_radii_follow_a_lens_population_of_mostly_arcsecond_lenses():
    rng = np.random.default_rng(6)
    theta = np.array([draw_einstein_radius(rng)[0] for _ in range(2000)])
    assert theta.min() >= 0.5 and theta.max() <= 2.0
    assert 0.7 < np.median(theta) < 1.3  # Collett 2015: typical galaxy-scale theta_E ~ 1"
    assert (theta > 1.5).mean() < 0.25  # big Einstein radii are rare (the velocity-dispersion function falls)


def test_faint_arcs_and_small_einstein_radii_make_lenses_harder():
    assert lens_difficulty(5.0, 0.5, 1.3) > lens_difficulty(60.0, 0.5, 1.3) > lens_difficulty(60.0, 1.8, 1.0)
    assert lens_difficulty(100.0, 2.0, 1.0) == 0.0


def test_samples_are_deterministic_and_follow_the_prevalence():
    a, b = simulate_lens_sample(6, 0.5, seed=7), simulate_lens_sample(6, 0.5, seed=7)
    for (ca, ta), (cb, tb) in zip(a, b, strict=True):
        assert np.array_equal(ca, cb) and ta == tb
    assert {t["is_lens"] for _, t in simulate_lens_sample(5, 0.0, seed=8)} == {False}
    with pytest.raises(ValueError):
        simulate_lens_sample(5, 1.5, seed=8)


def test_the_lens_tree_is_a_yes_no_question_with_arc_marking():
    validate_tree(LENS_TREE)
    assert [a["label"] for a in LENS_TREE["tasks"]["L0"]["answers"]] == ["Yes, a lens", "No lens"]
    assert CLASS_ANSWERS == {"lens": {"L0": 0}, "not_lens": {"L0": 1}}
    assert {tool["type"] for tool in LENS_TREE["marks"]["tools"]} == {"line", "box"}
    with pytest.raises(ValueError):
        lenses.simulate_non_lens(np.random.default_rng(0), kind="quasar")


def test_simulated_volunteers_miss_hard_lenses_and_are_fooled_by_look_alikes():
    from mlcore.simulate.lens_crowd import YES, lens_vote, p_says_lens
    from mlcore.simulate.volunteers import SimVolunteer

    typical = SimVolunteer("sim-typical-000", "typical", 0.85)
    easy, hard = {"is_lens": True, "difficulty": 0.0}, {"is_lens": True, "difficulty": 0.9}
    ring, plain = {"is_lens": False, "difficulty": lenses.LOOKALIKE["ring_galaxy"]}, {"is_lens": False,
                                                                                      "difficulty": 0.0}
    assert p_says_lens(typical, easy) > 0.8 > 0.3 > p_says_lens(typical, hard) > p_says_lens(typical, plain)
    assert p_says_lens(typical, ring) > 3 * p_says_lens(typical, plain)
    expert = SimVolunteer("sim-expert-000", "expert", 0.97)
    medium = {"is_lens": True, "difficulty": 0.5}
    assert p_says_lens(expert, medium) > p_says_lens(typical, medium)
    assert p_says_lens(expert, ring) < p_says_lens(typical, ring)
    always_yes = SimVolunteer("sim-spammer-001-first", "spammer", 0.0)
    assert p_says_lens(always_yes, plain) == 1.0 and lens_vote(always_yes, plain, 0.999) == YES
    assert lens_vote(typical, hard, 0.2) == lens_vote(typical, hard, 0.2)
