"""Temperature scaling and calibration error on synthetic cases with known answers."""

import numpy as np
import pytest

from mlcore.calibration import (
    apply_temperature,
    calibrate_probs,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)

LAYOUT = [("T0", 3)]


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sample_labels(probs, rng):
    cumulative = probs.cumsum(axis=1)
    return (rng.random((len(probs), 1)) > cumulative).sum(axis=1).clip(max=probs.shape[1] - 1)


def _synthetic(n=20_000, seed=0):
    """True logits, and labels drawn from their softmax: a model reporting them is calibrated."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, (n, 3))
    return logits, _sample_labels(_softmax(logits), rng)


def test_ece_matches_a_hand_computed_example():
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    labels = np.array([0, 1])
    # bin (0.8, 0.9]: accuracy 1, confidence 0.9; bin (0.5, 0.6]: accuracy 0, confidence 0.6
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx((0.1 + 0.6) / 2)


def test_a_perfectly_calibrated_model_has_ece_near_zero():
    logits, labels = _synthetic()
    assert expected_calibration_error(_softmax(logits), labels) < 0.015


def test_an_over_confident_model_gets_t_above_one_and_lower_ece_after_scaling():
    logits, labels = _synthetic()
    over_confident = 3.0 * logits
    temps = fit_temperature(over_confident, labels, LAYOUT)
    assert temps["T0"] == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(_softmax(over_confident), labels)
    after = expected_calibration_error(apply_temperature(over_confident, temps, LAYOUT), labels)
    assert before > 0.1
    assert after < 0.015


def test_an_under_confident_model_gets_t_below_one():
    logits, labels = _synthetic()
    assert fit_temperature(0.5 * logits, labels, LAYOUT)["T0"] == pytest.approx(0.5, rel=0.1)


def test_it_fits_each_question_of_a_tree_separately_from_vote_counts():
    logits, labels = _synthetic(n=8000, seed=1)
    layout = [("T0", 3), ("T1", 3), ("T2", 2)]
    tree_logits = np.concatenate([3.0 * logits, 0.5 * logits, np.zeros((len(logits), 2))], axis=1)
    counts = np.zeros((len(logits), 8))
    counts[np.arange(len(logits)), labels] = 1
    counts[np.arange(len(logits)), 3 + labels] = 2  # two votes: same likelihood shape
    temps = fit_temperature(tree_logits, counts, layout)
    assert temps["T0"] == pytest.approx(3.0, rel=0.1)
    assert temps["T1"] == pytest.approx(0.5, rel=0.1)
    assert temps["T2"] == 1.0  # nobody reached it


def test_scaling_never_changes_the_answer_and_t_one_changes_nothing():
    logits, _ = _synthetic(n=500)
    probs = _softmax(logits)
    np.testing.assert_allclose(calibrate_probs(probs, {"T0": 1.0}, LAYOUT), probs, atol=1e-6)
    hotter = calibrate_probs(probs, {"T0": 2.5}, LAYOUT)
    assert (hotter.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert (hotter.max(axis=1) <= probs.max(axis=1) + 1e-6).all()


def test_it_scales_mc_samples_one_by_one():
    rng = np.random.default_rng(2)
    samples = _softmax(rng.normal(size=(40, 3))).reshape(10, 4, 3).transpose(0, 2, 1)  # (N, A, S)
    scaled = calibrate_probs(samples, {"T0": 2.0}, LAYOUT)
    assert scaled.shape == samples.shape
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(scaled[:, :, 1], calibrate_probs(samples[:, :, 1], {"T0": 2.0}, LAYOUT), atol=1e-6)


def test_reliability_curve_bins_and_counts():
    probs = np.array([[0.95, 0.05], [0.92, 0.08], [0.55, 0.45]])
    curve = reliability_curve(probs, np.array([0, 1, 0]), n_bins=2)
    np.testing.assert_allclose(curve["count"], [0, 3])
    assert curve["accuracy"][1] == pytest.approx(2 / 3)
    assert np.isnan(curve["confidence"][0])


def test_it_rejects_bad_input():
    with pytest.raises(ValueError, match="one-question layout"):
        fit_temperature(np.zeros((4, 5)), np.array([0, 1, 0, 1]), [("T0", 3), ("T1", 2)])
    with pytest.raises(ValueError, match="labels must be"):
        expected_calibration_error(np.full((2, 2), 0.5), np.array([0, 2]))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.array([[np.nan, 0.0, 0.0]]), np.array([0]), LAYOUT)
