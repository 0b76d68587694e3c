"""Consensus for one question: volunteer skill as a confusion matrix, subject posteriors, the model as an agent.

Pure numpy. Everything here is per question with ``K`` answers; a caller keeps one
set of arrays per (volunteer, question). Conventions:

- ``votes``: int array ``(M, 3)`` of rows ``(subject_index, volunteer_index, answer)``.
- A confusion matrix ``C`` is ``(K, K)`` with rows = true answer, columns = given answer,
  each row summing to 1: ``C[k, a] = P(volunteer answers a | truth is k)``.
- Skill is kept as *counts* ``(K, K)`` of (soft) evidence; the confusion matrix is the
  Dirichlet posterior mean ``(counts + prior_counts) / row sum``. Online updates add to
  counts; the batch EM recomputes them; both meet in the same numbers (tested).

References
----------
Dawid & Skene 1979, Applied Statistics 28, 20, "Maximum likelihood estimation of observer
error-rates using the EM algorithm" (the per-observer confusion model and its EM).
Raykar et al. 2010, JMLR 11, 1297, "Learning from crowds" (Bayesian priors on the
confusion matrices; a classifier's output combined with the annotators' likelihood).
Passonneau & Carpenter 2014, TACL 2, 311, "The benefits of a model of annotation"
(Dirichlet priors on each annotator's confusion rows; why agreement coefficients are not
enough).
Marshall et al. 2016, MNRAS 455, 1171, "Space Warps I" (SWAP: online confusion updates
from training subjects with a few pseudo-counts; skill as expected information gain).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_TINY = 1e-300


def dirichlet_prior(n_classes: int, *, diagonal: float = 2.0, off_diagonal: float = 1.0) -> np.ndarray:
    """Pseudo-counts ``(K, K)`` for one volunteer's confusion matrix.

    The defaults add 2 pseudo-votes for the right answer and 1 for each wrong one per
    true class: for ``K = 3`` a newcomer starts at 50% accuracy, a little above chance,
    and a handful of real votes outweighs the prior (SWAP's "a few pseudo-counts").
    """
    if n_classes < 2 or diagonal <= 0 or off_diagonal <= 0:
        raise ValueError("need n_classes >= 2 and positive pseudo-counts")
    prior = np.full((n_classes, n_classes), float(off_diagonal))
    np.fill_diagonal(prior, float(diagonal))
    return prior


def confusion_from_counts(counts: np.ndarray, prior_counts: np.ndarray) -> np.ndarray:
    """Dirichlet posterior mean of each confusion row: ``(..., K, A)`` counts -> row-stochastic ``(..., K, A)``."""
    total = np.asarray(counts, dtype=float) + np.asarray(prior_counts, dtype=float)
    if np.any(total.sum(axis=-1) <= 0):
        raise ValueError("every confusion row needs positive counts + pseudo-counts")
    return total / total.sum(axis=-1, keepdims=True)


def confusion_update(counts: np.ndarray, truth: int | np.ndarray, answer: int, *, weight: float = 1.0) -> np.ndarray:
    """One volunteer's counts ``(K, A)`` after one more vote; the input is not modified.

    Parameters
    ----------
    counts : (K, A) array
        The volunteer's evidence so far (without prior pseudo-counts).
    truth : int or (K,) array
        The true answer of a gold subject, or a subject's posterior when its consensus
        is confident (the soft count of the Dawid-Skene M-step).
    answer : int
        What the volunteer answered.
    weight : float
        Scales the evidence (e.g. < 1 to discount consensus relative to gold).
    """
    counts = np.array(counts, dtype=float)  # a copy
    n_classes = counts.shape[0]
    column = np.eye(n_classes)[int(truth)] if np.ndim(truth) == 0 else np.asarray(truth, dtype=float)  # (K,)
    if column.shape != (n_classes,) or not 0 <= answer < counts.shape[1]:
        raise ValueError("truth must be a class index or a (K,) vector, answer a column of counts")
    counts[:, answer] += weight * column
    return counts


def _normalise_log(log_p: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, stable for very negative logs; rows of all -inf are an error."""
    top = np.max(log_p, axis=-1, keepdims=True)
    if not np.all(np.isfinite(top)):
        raise ValueError("evidence rules out every answer (a zero prior or confusion entry)")
    p = np.exp(log_p - top)
    return p / p.sum(axis=-1, keepdims=True)


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(x, dtype=float))


def posterior_from_votes(prior: np.ndarray, confusions: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Posterior ``(K,)`` of one subject's true answer from its votes (log space).

    Parameters
    ----------
    prior : (K,) array
        Class prior, or the posterior so far (sequential updates give the batch answer).
    confusions : (M, K, A) array
        Confusion matrix of each of the ``M`` voters (row-stochastic).
    answers : (M,) int array
        Each voter's answer.
    """
    confusions = np.asarray(confusions, dtype=float).reshape(-1, *np.shape(confusions)[-2:])  # (M, K, A)
    answers = np.asarray(answers, dtype=int).reshape(-1)  # (M,)
    if len(answers) != len(confusions):
        raise ValueError(f"{len(answers)} answers for {len(confusions)} confusion matrices")
    log_lik = _log(confusions[np.arange(len(answers)), :, answers]).sum(axis=0)  # (K,)
    return _normalise_log(_log(prior) + log_lik)


def sequential_retirement(prior: np.ndarray, confusions: np.ndarray, answers: np.ndarray, *, threshold: float,
                          min_votes: int, max_votes: int) -> tuple[np.ndarray, int]:
    """Where a subject retires when its votes arrive one by one: ``(posterior (K,), n votes used)``.

    The workflow rule ``retire_posterior`` / ``retire_min`` / ``retire_after``: the first
    ``n >= min_votes`` whose posterior maximum reaches ``threshold``, else ``max_votes`` (or
    every vote given, if fewer). A threshold test after each vote is Wald's sequential
    probability ratio test in posterior form (Wald 1945, Ann. Math. Stat. 16, 117).

    Parameters
    ----------
    prior : (K,) array
        Class prior, times the model agent's likelihood when the model votes first.
    confusions : (M, K, A) array
        Confusion matrix of each voter, in arrival order.
    answers : (M,) int array
        Their answers.
    threshold, min_votes, max_votes : float, int, int
        ``1 <= min_votes <= max_votes``.
    """
    if not 1 <= min_votes <= max_votes:
        raise ValueError(f"need 1 <= min_votes <= max_votes, got {min_votes}, {max_votes}")
    confusions = np.asarray(confusions, dtype=float)[:max_votes]  # (M, K, A)
    answers = np.asarray(answers, dtype=int)[:max_votes]  # (M,)
    if len(answers) != len(confusions) or len(answers) == 0:
        raise ValueError(f"{len(answers)} answers for {len(confusions)} confusion matrices")
    log_lik = _log(confusions[np.arange(len(answers)), :, answers])  # (M, K)
    posteriors = _normalise_log(_log(prior) + np.cumsum(log_lik, axis=0))  # (M, K) after 1..M votes
    crossed = np.flatnonzero(posteriors[min_votes - 1:].max(axis=1) >= threshold)
    n = min_votes + int(crossed[0]) if len(crossed) else len(answers)
    return posteriors[n - 1], n


def subject_posteriors(votes: np.ndarray, confusions: np.ndarray, class_prior: np.ndarray,
                       n_subjects: int) -> np.ndarray:
    """Posteriors ``(N, K)`` of every subject from all votes at once (the Dawid-Skene E-step).

    Subjects without votes get the class prior.
    """
    votes = _check_votes(votes)
    subjects, volunteers, answers = votes.T
    log_conf = _log(confusions)  # (V, K, A)
    log_post = np.tile(_log(class_prior), (n_subjects, 1))  # (N, K)
    per_vote = log_conf[volunteers, :, answers]  # (M, K)
    for k in range(log_post.shape[1]):
        log_post[:, k] += np.bincount(subjects, weights=per_vote[:, k], minlength=n_subjects)
    return _normalise_log(log_post)


def _check_votes(votes: np.ndarray) -> np.ndarray:
    votes = np.asarray(votes)
    if votes.size == 0:
        return np.zeros((0, 3), dtype=int)
    if votes.ndim != 2 or votes.shape[1] != 3 or not np.issubdtype(votes.dtype, np.integer) or votes.min() < 0:
        raise ValueError("votes must be a non-negative int array of (subject, volunteer, answer) rows")
    return votes


def vote_counts(votes: np.ndarray, n_subjects: int, n_answers: int) -> np.ndarray:
    """Raw vote counts ``(N, A)`` per subject and answer."""
    votes = _check_votes(votes)
    flat = np.bincount(votes[:, 0] * n_answers + votes[:, 2], minlength=n_subjects * n_answers)
    return flat.reshape(n_subjects, n_answers)


def _expected_counts(votes: np.ndarray, posteriors: np.ndarray, n_volunteers: int, n_answers: int) -> np.ndarray:
    """M-step evidence ``(V, K, A)``: sum of each subject's posterior over the votes a volunteer gave."""
    subjects, volunteers, answers = votes.T
    n_classes = posteriors.shape[1]
    index = volunteers * n_answers + answers
    counts = np.stack([np.bincount(index, weights=posteriors[subjects, k], minlength=n_volunteers * n_answers)
                       for k in range(n_classes)])  # (K, V * A)
    return counts.reshape(n_classes, n_volunteers, n_answers).transpose(1, 0, 2)


@dataclass(frozen=True)
class SkillEstimate:
    """What ``skill_em`` found. Shapes: N subjects, V volunteers, K classes (= answers)."""

    posteriors: np.ndarray  # (N, K)
    confusions: np.ndarray  # (V, K, K), rows sum to 1, prior included
    counts: np.ndarray  # (V, K, K) expected evidence, prior excluded: feed these to confusion_update
    class_prior: np.ndarray  # (K,)
    n_iter: int
    converged: bool


def skill_em(votes: np.ndarray, n_classes: int, *, n_subjects: int | None = None, n_volunteers: int | None = None,
             prior_counts: np.ndarray | None = None, class_prior_counts: np.ndarray | None = None,
             known: np.ndarray | None = None, init_confusions: np.ndarray | None = None,
             max_iter: int = 200, tol: float = 1e-6) -> SkillEstimate:
    """Dawid-Skene EM with Dirichlet priors on every confusion row and on the class prior.

    Parameters
    ----------
    votes : (M, 3) int array
        ``(subject_index, volunteer_index, answer)`` rows; answers in ``[0, n_classes)``.
    n_classes : int
        ``K``, the number of answers of the question.
    n_subjects, n_volunteers : int, optional
        Default to one more than the largest index seen.
    prior_counts : (K, K) or (V, K, K) array, optional
        Dirichlet pseudo-counts; default ``dirichlet_prior(K)``.
    class_prior_counts : (K,) array, optional
        Dirichlet pseudo-counts of the class prior; default one per class.
    known : (N,) int array, optional
        Gold truth per subject, ``-1`` where unknown; known subjects are clamped.
    init_confusions : (V, K, K) array, optional
        Start from these (a warm start after online updates). Otherwise start from the
        confusions measured on gold subjects if there are any, else from vote fractions
        (majority vote).
    max_iter, tol : int, float
        Stop when no posterior moves by more than ``tol`` or after ``max_iter`` rounds.

    Returns
    -------
    SkillEstimate
        The M-step uses the Dirichlet posterior mean, so no estimate is ever exactly 0 or 1.
    """
    votes = _check_votes(votes)
    n_subjects = int(votes[:, 0].max() + 1 if len(votes) else 0) if n_subjects is None else n_subjects
    n_volunteers = int(votes[:, 1].max() + 1 if len(votes) else 0) if n_volunteers is None else n_volunteers
    if len(votes) and (votes[:, 2].max() >= n_classes or votes[:, 0].max() >= n_subjects
                       or votes[:, 1].max() >= n_volunteers):
        raise ValueError("a vote's subject, volunteer or answer index is out of range")
    prior_counts = dirichlet_prior(n_classes) if prior_counts is None else np.asarray(prior_counts, dtype=float)
    alpha = np.ones(n_classes) if class_prior_counts is None else np.asarray(class_prior_counts, dtype=float)
    clamp = _clamp(known, n_subjects, n_classes)
    if init_confusions is None and known is not None and np.any(np.asarray(known) >= 0):
        on_gold = votes[np.asarray(known)[votes[:, 0]] >= 0]
        gold_counts = _expected_counts(on_gold, clamp(np.zeros((n_subjects, n_classes))), n_volunteers, n_classes)
        init_confusions = confusion_from_counts(gold_counts, prior_counts)
    if init_confusions is None:
        posteriors = clamp(_vote_fractions(votes, n_subjects, n_classes))
    else:
        posteriors = clamp(subject_posteriors(votes, init_confusions, np.full(n_classes, 1.0 / n_classes), n_subjects))
    converged, n_iter = False, 0
    while n_iter < max_iter and not converged:
        n_iter += 1
        counts = _expected_counts(votes, posteriors, n_volunteers, n_classes)  # (V, K, K)
        confusions = confusion_from_counts(counts, prior_counts)
        class_prior = (posteriors.sum(axis=0) + alpha) / (n_subjects + alpha.sum())
        updated = clamp(subject_posteriors(votes, confusions, class_prior, n_subjects))
        converged = bool(np.max(np.abs(updated - posteriors), initial=0.0) < tol)
        posteriors = updated
    counts = _expected_counts(votes, posteriors, n_volunteers, n_classes)
    return SkillEstimate(posteriors, confusion_from_counts(counts, prior_counts), counts,
                         (posteriors.sum(axis=0) + alpha) / (n_subjects + alpha.sum()), n_iter, converged)


def _vote_fractions(votes: np.ndarray, n_subjects: int, n_classes: int) -> np.ndarray:
    """Majority-vote start of the EM; subjects without votes start uniform."""
    counts = vote_counts(votes, n_subjects, n_classes).astype(float)  # (N, K)
    counts[counts.sum(axis=1) == 0] = 1.0
    return counts / counts.sum(axis=1, keepdims=True)


def _clamp(known: np.ndarray | None, n_subjects: int, n_classes: int):
    """A function that overwrites the posteriors of gold subjects with their one-hot truth."""
    if known is None:
        return lambda posteriors: posteriors
    known = np.asarray(known, dtype=int)
    if known.shape != (n_subjects,) or known.max(initial=-1) >= n_classes:
        raise ValueError(f"known must be ({n_subjects},) ints in [-1, {n_classes})")
    rows = np.flatnonzero(known >= 0)
    onehot = np.eye(n_classes)[known[rows]]

    def clamp(posteriors: np.ndarray) -> np.ndarray:
        posteriors = posteriors.copy()
        posteriors[rows] = onehot
        return posteriors

    return clamp


# ---------------------------------------------------------------- summaries


def expected_accuracy(confusions: np.ndarray, class_prior: np.ndarray) -> np.ndarray:
    """``sum_k prior_k C[k, k]`` for each ``(..., K, K)`` confusion matrix -> ``(...)``."""
    return np.einsum("...kk,k->...", np.asarray(confusions, dtype=float), np.asarray(class_prior, dtype=float))


def skill_score(confusions: np.ndarray, class_prior: np.ndarray) -> np.ndarray:
    """Cohen's kappa of the volunteer against the truth, ``(..., K, K)`` -> ``(...)``.

    1 for a perfect volunteer, 0 for anyone whose answers ignore the object (random
    clickers and always-the-same-answer spammers alike), negative for adversaries who
    systematically pick a wrong answer: flag those with ``skill_score < 0``.
    """
    confusions = np.asarray(confusions, dtype=float)
    class_prior = np.asarray(class_prior, dtype=float)
    observed = expected_accuracy(confusions, class_prior)
    answer_rate = np.einsum("...ka,k->...a", confusions, class_prior)  # (..., A)
    chance = (answer_rate * class_prior).sum(axis=-1)
    return (observed - chance) / np.maximum(1.0 - chance, _TINY)


def information_gain(confusions: np.ndarray, class_prior: np.ndarray) -> np.ndarray:
    """Expected information (bits) one vote gives about the truth: the mutual information.

    This is the weight of a volunteer's vote in the posterior (SWAP's skill; Marshall+2016):
    0 for spammers, ``log2 K`` for a perfect volunteer *and* for a perfectly consistent
    adversary, whose known confusion makes their votes just as useful.
    ``(..., K, A)`` -> ``(...)``.
    """
    confusions = np.asarray(confusions, dtype=float)
    joint = confusions * np.asarray(class_prior, dtype=float)[:, None]  # (..., K, A)
    answer_rate = joint.sum(axis=-2, keepdims=True)  # (..., 1, A)
    ratio = joint / np.maximum(answer_rate * np.asarray(class_prior)[:, None], _TINY)
    return np.where(joint > 0, joint * np.log2(np.maximum(ratio, _TINY)), 0.0).sum(axis=(-2, -1))


def agreement(counts: np.ndarray) -> np.ndarray:
    """``1 - H(vote fractions) / log K`` for counts ``(..., K)`` -> ``(...)``.

    1 when all votes agree, 0 when they are spread evenly (the Galaxy Zoo agreement);
    nan without votes. It ignores who voted: use posteriors for decisions.
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = counts / total
        entropy = -np.where(fractions > 0, fractions * np.log(fractions), 0.0).sum(axis=-1)
    return np.where(total[..., 0] > 0, 1.0 - entropy / np.log(counts.shape[-1]), np.nan)


# ---------------------------------------------------------------- the model as one more agent


def model_answers(probs: np.ndarray, confidence_edges: tuple[float, ...] = (0.6, 0.8, 0.9)) -> np.ndarray:
    """The model's "answer" ``(N,)``: its top class combined with a confidence bin.

    With ``B = len(confidence_edges) + 1`` bins the model answers in an alphabet of
    ``K * B`` symbols, ``argmax * B + bin``, so a confident prediction and a hesitant one
    are different answers with different measured reliabilities.
    """
    probs = np.asarray(probs, dtype=float)  # (N, K)
    n_bins = len(confidence_edges) + 1
    bins = np.searchsorted(np.asarray(confidence_edges, dtype=float), probs.max(axis=1), side="right")
    return probs.argmax(axis=1) * n_bins + bins


def model_confusion(probs: np.ndarray, truth: np.ndarray, *, confidence_edges: tuple[float, ...] = (0.6, 0.8, 0.9),
                    pseudo_count: float = 0.5) -> np.ndarray:
    """The model's measured confusion ``(K, K * B)`` on held-out subjects with known truth.

    Parameters
    ----------
    probs : (N, K) array
        Model probabilities on held-out subjects (never trained on).
    truth : (N,) int array
        Their true answers.
    confidence_edges : tuple of float
        Bin edges of the top probability, as in ``model_answers``.
    pseudo_count : float
        Dirichlet pseudo-count per cell, so unseen (answer, bin) pairs are not impossible.

    Notes
    -----
    Treating the model as a voter with a measured confusion (Dawid-Skene with one more
    annotator; Raykar+2010 combine a classifier with annotators the same way) needs no
    trust in its probabilities beyond their ranking into bins: the held-out counts
    calibrate them. Like every voter it is assumed independent of the volunteers given
    the truth; on faint objects both fail together, so the combined posterior is then
    somewhat over-confident.
    """
    probs = np.asarray(probs, dtype=float)
    truth = np.asarray(truth, dtype=int)
    n_classes = probs.shape[1]
    n_answers = n_classes * (len(confidence_edges) + 1)
    counts = np.bincount(truth * n_answers + model_answers(probs, confidence_edges),
                         minlength=n_classes * n_answers).reshape(n_classes, n_answers)
    return confusion_from_counts(counts, np.full((n_classes, n_answers), float(pseudo_count)))


def posterior_with_agent(posterior: np.ndarray, confusion: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Posteriors ``(N, K)`` after one agent's answers ``(N,)`` with its confusion ``(K, A)``.

    For the model: ``posterior_with_agent(prior_or_posterior, model_confusion(...),
    model_answers(probs))``. Order does not matter (Bayes' rule is commutative).
    """
    posterior = np.atleast_2d(np.asarray(posterior, dtype=float))  # (N, K)
    likelihood = np.asarray(confusion, dtype=float)[:, np.asarray(answers, dtype=int).reshape(-1)].T  # (N, K)
    return _normalise_log(_log(posterior) + _log(likelihood))
