"""Acquisition functions on hand-made MC-sample arrays with known answers."""

import numpy as np
import pytest

from mlcore.acquisition import (
    bald,
    expected_entropy,
    layout_slices,
    margin,
    predictive_entropy,
    tree_scores,
    with_random_share,
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


def test_it_rank_normalises_scores_when_no_random_share():
    priorities = with_random_share(np.array([0.1, 5.0, 2.0]), 0.0, np.random.default_rng(0))
    assert priorities == pytest.approx([0.0, 1.0, 0.5])


def test_it_replaces_the_requested_share_with_random_priorities():
    scores = np.arange(1000, dtype=float)
    priorities = with_random_share(scores, 0.25, np.random.default_rng(1))
    changed = ~np.isclose(priorities, scores / 999)
    assert 240 <= changed.sum() <= 250  # 250 drawn at random; a few may land on their rank value
    assert ((priorities >= 0) & (priorities <= 1)).all()
    top = np.argsort(-priorities)[:200]
    random_in_top = changed[top].mean()
    assert 0.12 < random_in_top < 0.38  # about a quarter of the head of the queue is random


def test_it_is_reproducible_for_the_same_generator_seed():
    scores = np.random.default_rng(3).random(50)
    a = with_random_share(scores, 0.3, np.random.default_rng(7))
    b = with_random_share(scores, 0.3, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_it_refuses_bad_random_share_and_nan_scores():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        with_random_share(np.ones(3), 1.5, rng)
    with pytest.raises(ValueError):
        with_random_share(np.array([1.0, np.nan]), 0.1, rng)
