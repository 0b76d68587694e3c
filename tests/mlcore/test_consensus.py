"""Dawid-Skene consensus on hand-made crowds with known answers, plus a cross-check against crowd-kit."""

import numpy as np
import pytest

from mlcore.consensus import (
    agreement,
    confusion_from_counts,
    confusion_update,
    dirichlet_prior,
    information_gain,
    model_answers,
    model_confusion,
    posterior_from_votes,
    posterior_with_agent,
    sequential_retirement,
    skill_em,
    skill_score,
    subject_posteriors,
    vote_counts,
)
from mlcore.simulate import sky
from mlcore.simulate.volunteers import make_crowd, simulated_annotation

K = 3


def _votes(truth, answer_fns):
    """Every volunteer answers every subject: answer_fns[v](truth) -> answer. Returns (M, 3) ints."""
    return np.array([(s, v, fn(t)) for s, t in enumerate(truth) for v, fn in enumerate(answer_fns)])


def _perfect(t):
    return t


def _adversary(t):
    return (t + 1) % K


def _random_confusions(rng, n_volunteers):
    return np.stack([rng.dirichlet(np.ones(K) + 4 * np.eye(K)[k], size=None) for _ in range(n_volunteers)
                     for k in range(K)]).reshape(n_volunteers, K, K)


def _sample_votes(rng, truth, confusions, per_subject):
    rows = []
    for s, t in enumerate(truth):
        for v in rng.choice(len(confusions), size=per_subject, replace=False):
            rows.append((s, v, rng.choice(K, p=confusions[v, t])))
    return np.array(rows)


def test_it_recovers_truth_and_flags_adversaries_from_three_perfect_and_two_adversarial_volunteers():
    truth = np.random.default_rng(0).integers(K, size=60)
    votes = _votes(truth, [_perfect, _perfect, _perfect, _adversary, _adversary])
    estimate = skill_em(votes, K)
    assert estimate.converged
    assert (estimate.posteriors.argmax(axis=1) == truth).all()
    assert estimate.posteriors.max(axis=1).min() > 0.999
    scores = skill_score(estimate.confusions, estimate.class_prior)
    assert (scores[:3] > 0.8).all()  # not 1: the Dirichlet prior still holds 4 pseudo-votes per row
    assert (scores[3:] < -0.3).all()  # flagged: systematically wrong
    # a consistent adversary is nearly as informative as a perfect volunteer once their confusion is known
    # (a little less: the diagonal-favouring prior works against them)
    gains = information_gain(estimate.confusions, estimate.class_prior)
    assert (gains[3:] > 0.8 * gains[0]).all()


def test_it_gives_spammers_zero_skill_and_zero_information():
    prior = np.full(K, 1 / K)
    always_first = np.tile([1.0, 0.0, 0.0], (K, 1))
    random_clicker = np.full((K, K), 1 / K)
    perfect = np.eye(K)
    assert skill_score(np.stack([always_first, random_clicker]), prior) == pytest.approx([0.0, 0.0])
    assert information_gain(np.stack([always_first, random_clicker]), prior) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert skill_score(perfect, prior) == pytest.approx(1.0)
    assert information_gain(perfect, prior) == pytest.approx(np.log2(K))


def test_it_matches_batch_posteriors_with_one_at_a_time_updates_when_confusions_are_fixed():
    rng = np.random.default_rng(1)
    confusions = _random_confusions(rng, 8)
    truth = rng.integers(K, size=20)
    votes = _sample_votes(rng, truth, confusions, per_subject=5)
    class_prior = np.array([0.5, 0.3, 0.2])
    batch = subject_posteriors(votes, confusions, class_prior, len(truth))
    for s in range(len(truth)):
        mine = votes[votes[:, 0] == s]
        assert posterior_from_votes(class_prior, confusions[mine[:, 1]], mine[:, 2]) == pytest.approx(batch[s])
        sequential = class_prior
        for _, v, a in mine:
            sequential = posterior_from_votes(sequential, confusions[v][None], np.array([a]))
        assert sequential == pytest.approx(batch[s])


def test_it_stays_finite_when_hundreds_of_votes_agree():
    confusions = np.tile(np.array([[0.98, 0.01, 0.01], [0.01, 0.98, 0.01], [0.01, 0.01, 0.98]]), (800, 1, 1))
    posterior = posterior_from_votes(np.full(K, 1 / K), confusions, np.ones(800, dtype=int))
    assert np.isfinite(posterior).all()
    assert posterior == pytest.approx([0.0, 1.0, 0.0])


def test_it_matches_batch_counts_with_online_gold_updates():
    rng = np.random.default_rng(2)
    confusions = _random_confusions(rng, 6)
    truth = rng.integers(K, size=40)
    votes = _sample_votes(rng, truth, confusions, per_subject=4)
    online = np.zeros((6, K, K))
    for s, v, a in votes:
        online[v] = confusion_update(online[v], int(truth[s]), int(a))
    batch = skill_em(votes, K, n_volunteers=6, known=truth)
    assert batch.n_iter == 1 and batch.converged  # everything is gold: one M-step is the answer
    assert online == pytest.approx(batch.counts)
    assert confusion_from_counts(online, dirichlet_prior(K)) == pytest.approx(batch.confusions)


def test_it_matches_batch_counts_with_online_soft_updates_from_the_final_posteriors():
    rng = np.random.default_rng(3)
    confusions = _random_confusions(rng, 6)
    truth = rng.integers(K, size=40)
    votes = _sample_votes(rng, truth, confusions, per_subject=4)
    batch = skill_em(votes, K, n_volunteers=6)
    online = np.zeros((6, K, K))
    for s, v, a in votes:
        online[v] = confusion_update(online[v], batch.posteriors[s], int(a))
    assert online == pytest.approx(batch.counts)


def test_it_leaves_the_caller_counts_untouched_on_update():
    counts = np.zeros((K, K))
    updated = confusion_update(counts, 2, 0, weight=0.5)
    assert counts.sum() == 0
    assert updated[2, 0] == 0.5 and updated.sum() == 0.5


def test_it_uses_gold_to_fix_the_labels_of_a_crowd_whose_majority_is_wrong():
    truth = np.random.default_rng(4).integers(K, size=50)
    votes = _votes(truth, [_perfect, _adversary, _adversary])
    known = np.full(len(truth), -1)
    known[:10] = truth[:10]
    unsupervised = skill_em(votes, K)
    with_gold = skill_em(votes, K, known=known)
    assert (unsupervised.posteriors.argmax(axis=1) == truth).mean() < 0.1  # majority wins without gold
    assert (with_gold.posteriors.argmax(axis=1) == truth).all()


def test_it_measures_agreement_from_one_for_unanimity_to_zero_for_an_even_split():
    counts = np.array([[5, 0, 0], [2, 2, 2], [3, 1, 0], [0, 0, 0]])
    result = agreement(counts)
    assert result[:2] == pytest.approx([1.0, 0.0])
    assert 0 < result[2] < 1
    assert np.isnan(result[3])
    assert vote_counts(np.array([[0, 0, 2], [0, 1, 2], [1, 0, 1]]), 2, K).tolist() == [[0, 0, 2], [0, 1, 0]]


def test_it_ignores_a_model_whose_answers_do_not_depend_on_the_truth():
    truth = np.repeat(np.arange(K), 50)
    probs = np.tile([0.7, 0.2, 0.1], (len(truth), 1))  # always the same answer and bin
    confusion = model_confusion(probs, truth)
    answer = model_answers(probs[:1])
    prior = np.array([0.2, 0.5, 0.3])
    assert posterior_with_agent(prior, confusion, answer)[0] == pytest.approx(prior)


def test_it_weighs_confident_model_answers_by_their_measured_reliability():
    rng = np.random.default_rng(5)
    truth = rng.integers(K, size=3000)
    confident = rng.random(len(truth)) < 0.5
    right = np.where(confident, rng.random(len(truth)) < 0.95, rng.random(len(truth)) < 0.5)
    predicted = np.where(right, truth, (truth + rng.integers(1, K, size=len(truth))) % K)
    top = np.where(confident, 0.95, 0.5)
    probs = np.full((len(truth), K), 0.0)
    probs[np.arange(len(truth)), predicted] = top
    probs += ((1 - top) / (K - 1))[:, None] * (probs == 0)
    confusion = model_confusion(probs, truth)
    uniform = np.full(K, 1 / K)
    sure = posterior_with_agent(uniform, confusion, model_answers(probs[[np.argmax(confident & (predicted == 0))]]))
    unsure = posterior_with_agent(uniform, confusion, model_answers(probs[[np.argmax(~confident & (predicted == 0))]]))
    assert sure[0, 0] == pytest.approx(0.95, abs=0.02)  # measured, not the model's own number
    assert unsure[0, 0] == pytest.approx(0.5, abs=0.05)


def test_it_combines_model_and_volunteers_as_independent_evidence():
    confusions = np.tile(np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]), (2, 1, 1))
    model = np.array([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])
    prior = np.full(K, 1 / K)
    crowd_first = posterior_with_agent(posterior_from_votes(prior, confusions, np.array([0, 1])), model, np.array([0]))
    model_first = posterior_from_votes(posterior_with_agent(prior, model, np.array([0]))[0], confusions,
                                       np.array([0, 1]))
    expected = np.array([0.8 * 0.1 * 0.6, 0.1 * 0.8 * 0.2, 0.1 * 0.1 * 0.2])
    assert crowd_first[0] == pytest.approx(expected / expected.sum())
    assert model_first == pytest.approx(expected / expected.sum())


_GOOD = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])


def test_it_retires_at_the_first_vote_after_the_minimum_that_crosses_the_threshold():
    answers = np.array([0, 0, 0, 0, 0, 0])
    confusions = np.tile(_GOOD, (len(answers), 1, 1))
    prior = np.full(K, 1 / K)
    # agreeing votes give 0.8, then 64/66 = 0.970, then 512/514 = 0.996
    posterior, n = sequential_retirement(prior, confusions, answers, threshold=0.99, min_votes=1, max_votes=6)
    assert n == 3
    assert posterior == pytest.approx(posterior_from_votes(prior, confusions[:3], answers[:3]))
    _, n_with_minimum = sequential_retirement(prior, confusions, answers, threshold=0.99, min_votes=5, max_votes=6)
    assert n_with_minimum == 5


def test_it_retires_a_split_subject_at_the_cap_with_the_posterior_of_the_votes_it_saw():
    answers = np.array([0, 1, 0, 1, 0, 1, 0, 0])
    confusions = np.tile(_GOOD, (len(answers), 1, 1))
    prior = np.full(K, 1 / K)
    posterior, n = sequential_retirement(prior, confusions, answers, threshold=0.95, min_votes=2, max_votes=5)
    assert n == 5
    assert posterior == pytest.approx(posterior_from_votes(prior, confusions[:5], answers[:5]))
    assert posterior.argmax() == 0
    _, n_all = sequential_retirement(prior, confusions[:4], answers[:4], threshold=0.95, min_votes=2, max_votes=40)
    assert n_all == 4  # fewer votes than the cap: all of them


def test_it_lets_a_confident_prior_retire_a_subject_sooner():
    answers = np.array([2, 2, 2, 2])
    confusions = np.tile(_GOOD, (len(answers), 1, 1))
    flat = sequential_retirement(np.full(K, 1 / K), confusions, answers, threshold=0.95, min_votes=1, max_votes=4)
    model_says_2 = sequential_retirement(np.array([0.1, 0.1, 0.8]), confusions, answers, threshold=0.95,
                                         min_votes=1, max_votes=4)
    assert (flat[1], model_says_2[1]) == (2, 1)  # 0.970 after two votes; 64/66 after one with the model
    with pytest.raises(ValueError):
        sequential_retirement(np.full(K, 1 / K), confusions, answers, threshold=0.95, min_votes=3, max_votes=2)


def _simulated_root_votes(seed, n_subjects=300, n_volunteers=40, per_subject=9):
    rng = np.random.default_rng(seed)
    crowd = make_crowd(n_volunteers, rng, spammer_fraction=0.1, careless_fraction=0.1)
    classes = rng.choice(sky.IMAGE_CLASSES, size=n_subjects)
    difficulty = rng.uniform(0, 0.6, size=n_subjects)
    rows = []
    for s, (cls, d) in enumerate(zip(classes, difficulty, strict=True)):
        for v in rng.choice(n_volunteers, size=per_subject, replace=False):
            path = simulated_annotation(crowd[v], sky.GALAXY_TREE, sky.CLASS_ANSWERS, cls, d, rng)
            rows.append((s, v, path[0]["answer"]))
    truth = np.array([sky.CLASS_ANSWERS[c]["T0"] for c in classes])
    return np.array(rows), truth


def test_it_agrees_with_crowd_kit_dawid_skene_on_a_simulated_crowd():
    # crowd-kit is a test dependency (requirements-nodeps.txt): a missing install fails here.
    import pandas as pd
    from crowdkit import aggregation

    votes, truth = _simulated_root_votes(seed=6)
    theirs_df = pd.DataFrame({"task": votes[:, 0], "worker": votes[:, 1], "label": votes[:, 2]})
    theirs = aggregation.DawidSkene(n_iter=100).fit_predict(theirs_df).sort_index().to_numpy()
    ours = skill_em(votes, K).posteriors.argmax(axis=1)
    assert (ours == theirs).mean() >= 0.98
    assert (ours == truth).mean() > 0.9
