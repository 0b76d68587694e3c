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
