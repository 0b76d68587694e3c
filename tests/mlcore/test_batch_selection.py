import numpy as np
import pytest

from mlcore.batch_selection import k_center_greedy, power_sample, representative_points


def test_power_sampling_follows_the_scores_and_tends_to_top_k_as_beta_grows():
    scores = np.array([0.1, 1.0, 3.0, 6.0])
    rng = np.random.default_rng(0)
    firsts = np.bincount([power_sample(scores, 1, rng)[0] for _ in range(20000)], minlength=4) / 20000
    assert firsts == pytest.approx(scores / scores.sum(), abs=0.015)
    assert set(power_sample(scores, 2, rng, beta=200.0)) == {2, 3}
    assert len(set(power_sample(scores, 4, rng))) == 4  # without replacement


def test_power_sampling_refuses_negative_or_nan_scores():
    with pytest.raises(ValueError):
        power_sample(np.array([1.0, np.nan]), 1, np.random.default_rng(0))


def test_k_center_greedy_covers_every_cluster_before_repeating_one():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]])
    x = np.concatenate([c + rng.normal(0, 0.3, (25, 2)) for c in centres])  # 4 tight clusters
    picks = k_center_greedy(x, 4)
    assert sorted(set(picks // 25)) == [0, 1, 2, 3]
    already = np.arange(0, 25)  # cluster 0 is labelled: the next 3 picks go to the other clusters
    assert sorted(set(k_center_greedy(x, 3, labelled=already) // 25)) == [1, 2, 3]


def test_representative_points_are_typical_members_of_each_cluster():
    rng = np.random.default_rng(2)
    x = np.concatenate([c + rng.normal(0, 0.2, (30, 2)) for c in ([0, 0], [5, 5], [0, 5])])
    picks = representative_points(x, 3)
    assert sorted(picks // 30) == [0, 1, 2]
    for i in picks:
        cluster = x[(i // 30) * 30 : (i // 30) * 30 + 30]
        assert np.linalg.norm(x[i] - cluster.mean(0)) < 0.3  # near the middle, not an outlier
