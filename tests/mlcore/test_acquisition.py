"""Acquisition functions on hand-made MC-sample arrays with known answers."""

import numpy as np
import pytest

from mlcore.acquisition import (
    bald,
    expected_entropy,
    interest,
    layout_slices,
    margin,
    predictive_entropy,
    priorities,
    tree_scores,
)


def _probs(*subjects):
    """Each subject is a list of per-sample class vectors -> (N, C, S)."""
    return np.stack([np.array(samples, dtype=float).T for samples in subjects])


CONFIDENT_DISAGREE = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
UNIFORM = [[0.5, 0.5]] * 4
CONFIDENT_AGREE = [[0.99, 0.01]] * 4


def test_it_ranks_confident_disagreement_above_uniform_samples():
    probs = _probs(UNIFORM, CONFIDENT_DISAGREE, CONFIDENT_AGREE)
    scores = bald(probs)
    assert scores[0] == pytest.approx(0.0, abs=1e-9)  # high entropy, zero BALD
    assert scores[1] == pytest.approx(np.log(2), rel=1e-6)  # maximal mutual information
    assert np.argmax(scores) == 1
    assert (scores >= 0).all()


def test_it_gives_uniform_samples_maximal_predictive_and_expected_entropy():
    probs = _probs(UNIFORM, CONFIDENT_DISAGREE)
    assert predictive_entropy(probs) == pytest.approx([np.log(2), np.log(2)])
    assert expected_entropy(probs) == pytest.approx([np.log(2), 0.0], abs=1e-9)


def test_it_scores_margin_as_one_for_a_tie_and_small_for_certainty():
    probs = _probs(UNIFORM, CONFIDENT_AGREE)
    assert margin(probs) == pytest.approx([1.0, 1 - 0.98])


def test_it_sums_per_question_scores_over_the_tree():
    layout = [("T0", 2), ("T1", 3)]
    t0 = _probs(CONFIDENT_DISAGREE, UNIFORM)  # (2, 2, 4)
    t1 = _probs([[1, 0, 0], [0, 1, 0]] * 2, [[1, 0, 0]] * 4)  # (2, 3, 4)
    probs_all = np.concatenate([t0, t1], axis=1)  # (2, 5, 4)
    expected = bald(t0) + bald(t1)
    assert tree_scores(probs_all, layout, "bald") == pytest.approx(expected)
    assert tree_scores(probs_all, layout, "bald")[0] == pytest.approx(2 * np.log(2))
    assert [s for _, s in layout_slices(layout)] == [slice(0, 2), slice(2, 5)]


def test_it_rejects_unknown_methods_and_wrong_widths():
    with pytest.raises(ValueError, match="unknown"):
        tree_scores(np.full((1, 2, 3), 0.5), [("T0", 2)], "vibes")
    with pytest.raises(ValueError, match="answers"):
        tree_scores(np.full((1, 2, 3), 0.5), [("T0", 3)])


def test_margin_ranks_a_near_tie_above_a_clear_winner_whatever_the_sample_spread():
    near_tie = [[0.45, 0.55]] * 4
    clear = [[0.9, 0.1]] * 4
    spread_but_clear = [[1.0, 0.0], [0.6, 0.4]] * 2  # mean 0.8 / 0.2
    scores = margin(_probs(clear, near_tie, spread_but_clear))
    assert list(np.argsort(-scores)) == [1, 2, 0]
    assert scores[1] == pytest.approx(0.9)


def test_priorities_follow_the_chosen_method():
    layout = [("T0", 2)]
    probs = _probs(UNIFORM, CONFIDENT_DISAGREE, CONFIDENT_AGREE)
    assert np.argmax(priorities(probs, layout, "bald")) == 1
    assert np.argmax(priorities(probs, layout, "entropy")) in (0, 1)
    assert np.argmax(priorities(probs, layout, "margin")) in (0, 1)
    with pytest.raises(ValueError):
        priorities(probs, layout, "nonsense")
    with pytest.raises(ValueError):
        priorities(probs, layout, "powerbald")  # needs a generator


def test_powerbald_priorities_favour_high_bald_but_stay_stochastic():
    layout = [("T0", 2)]
    mid = [[0.8, 0.2], [0.2, 0.8]] * 2  # BALD between zero and log 2
    probs = _probs(CONFIDENT_AGREE, mid, CONFIDENT_DISAGREE)  # BALD rises left to right
    rng = np.random.default_rng(0)
    firsts = np.bincount([np.argmax(priorities(probs, layout, "powerbald", rng=rng)) for _ in range(4000)], minlength=3)
    assert firsts[2] > firsts[1] > firsts[0]  # P ~ BALD: the best most often ...
    assert firsts[1] > 0.1 * 4000  # ... but not always (a draw, not a top-k)
    sharp = [np.argmax(priorities(probs, layout, "powerbald", rng=rng, beta=50.0)) for _ in range(200)]
    assert set(sharp) == {2}  # large beta recovers the plain ranking


def test_interest_boost_lifts_likely_rare_objects_and_weight_zero_changes_nothing():
    layout = [("T0", 3)]
    common = [[0.6, 0.3, 0.1], [0.3, 0.6, 0.1]] * 2
    rare = [[0.1, 0.3, 0.6], [0.1, 0.6, 0.3]] * 2
    probs = _probs(common, rare)
    base = priorities(probs, layout, "bald")
    rare_p = interest(probs, [2])
    assert rare_p == pytest.approx([0.1, 0.45])
    assert priorities(probs, layout, "bald", interest_score=rare_p, interest_weight=0.0) == pytest.approx(base)
    boosted = priorities(probs, layout, "bald", interest_score=rare_p, interest_weight=2.0)
    assert boosted[1] / base[1] > boosted[0] / base[0]
    with pytest.raises(ValueError):
        interest(probs, [3])
