"""Acquisition scores: which subjects should volunteers see next.

Pure numpy on arrays of MC-dropout samples. For one question the array is
``probs[n, c, s]`` = probability of class ``c`` for subject ``n`` in MC sample ``s``
(shape ``(N, C, S)``; the same convention as baal's ``BALD.compute_score``).

References
----------
Houlsby, Huszár, Ghahramani & Lengyel 2011, "Bayesian Active Learning for
Classification and Preference Learning" (BALD).
Gal, Islam & Ghahramani 2017, "Deep Bayesian Active Learning with Image Data"
(BALD with MC dropout).
Walmsley et al. 2020, MNRAS 491, 1554, "Galaxy Zoo: probabilistic morphology through
Bayesian CNNs and active learning" (BALD per question, 15 MC passes, random share).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

_EPS = 1e-12


def layout_slices(layout: Sequence[tuple[str, int]]) -> list[tuple[str, slice]]:
    """Column slice of each question in the concatenated answer vector.

    Parameters
    ----------
    layout : sequence of (task_key, n_answers)
        From ``mlcore.tasktree.label_layout``.

    Returns
    -------
    list of (task_key, slice)
    """
    out = []
    start = 0
    for task, n_answers in layout:
        n_answers = int(n_answers)
        if n_answers < 1:
            raise ValueError(f"question {task!r} must have at least one answer, got {n_answers}")
        out.append((str(task), slice(start, start + n_answers)))
        start += n_answers
    return out


def layout_width(layout: Sequence[tuple[str, int]]) -> int:
    """Total number of answers ``A`` (columns of the model output)."""
    return int(sum(int(n) for _, n in layout))


def _check_probs(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3:
        raise ValueError(f"probs must have shape (N, C, S), got {probs.shape}")
    return probs


def _entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """Shannon entropy (nats) along ``axis``; 0 log 0 = 0."""
    p = np.clip(p, 0.0, 1.0)
    return -np.sum(p * np.log(np.maximum(p, _EPS)), axis=axis)


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy of the mean prediction, ``H[mean_s p_s]``.

    Parameters
    ----------
    probs : ndarray, shape (N, C, S)

    Returns
    -------
    ndarray, shape (N,)
        Total uncertainty in nats, in ``[0, log C]``.
    """
    probs = _check_probs(probs)
    return _entropy(probs.mean(axis=2), axis=1)  # (N, C) -> (N,)


def expected_entropy(probs: np.ndarray) -> np.ndarray:
    """Mean entropy of the individual MC samples, ``mean_s H[p_s]``.

    Parameters
    ----------
    probs : ndarray, shape (N, C, S)

    Returns
    -------
    ndarray, shape (N,)
        Aleatoric part of the uncertainty in nats.
    """
    probs = _check_probs(probs)
    return _entropy(probs, axis=1).mean(axis=1)  # (N, S) -> (N,)


def bald(probs: np.ndarray) -> np.ndarray:
    """BALD: mutual information between the label and the model parameters.

    ``I[y; w] = H[mean_s p_s] - mean_s H[p_s]`` (Houlsby+2011; Gal+2017 with MC
    dropout). High when the MC samples are individually confident but disagree with
    each other; zero when all samples agree, however uncertain they are.

    Parameters
    ----------
    probs : ndarray, shape (N, C, S)

    Returns
    -------
    ndarray, shape (N,)
        Non-negative (tiny negative round-off is clipped to 0), at most ``log C``.
    """
    return np.clip(predictive_entropy(probs) - expected_entropy(probs), 0.0, None)


def margin(probs: np.ndarray) -> np.ndarray:
    """Margin uncertainty ``1 - (p1 - p2)`` of the mean prediction.

    ``p1`` and ``p2`` are the largest and second-largest class probabilities after
    averaging over MC samples. 1 means a tie, 0 means certainty.

    Parameters
    ----------
    probs : ndarray, shape (N, C, S), C >= 2

    Returns
    -------
    ndarray, shape (N,)
    """
    probs = _check_probs(probs)
    if probs.shape[1] < 2:
        raise ValueError("margin needs at least two classes")
    mean = np.sort(probs.mean(axis=2), axis=1)  # (N, C), ascending
    return 1.0 - (mean[:, -1] - mean[:, -2])


SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "bald": bald,
    "entropy": predictive_entropy,
    "predictive_entropy": predictive_entropy,
    "expected_entropy": expected_entropy,
    "margin": margin,
}


def tree_scores(probs_all: np.ndarray, layout: Sequence[tuple[str, int]], method: str = "bald") -> np.ndarray:
    """Acquisition score of a whole decision tree: the sum of per-question scores.

    Every question counts equally, whether or not volunteers are likely to reach it.
    This is the simple choice; Walmsley+2022 weight questions by expected votes.

    Parameters
    ----------
    probs_all : ndarray, shape (N, A, S)
        Per-question softmax probabilities concatenated in ``layout`` order
        (``mlcore.predict.mc_dropout_probs``).
    layout : sequence of (task_key, n_answers)
    method : {"bald", "entropy", "expected_entropy", "margin"}

    Returns
    -------
    ndarray, shape (N,)
    """
    if method not in SCORES:
        raise ValueError(f"unknown acquisition method {method!r}; choose from {sorted(SCORES)}")
    probs_all = _check_probs(probs_all)
    if probs_all.shape[1] != layout_width(layout):
        raise ValueError(f"probs_all has {probs_all.shape[1]} answers, layout has {layout_width(layout)}")
    score = SCORES[method]
    total = np.zeros(probs_all.shape[0])
    for _, cols in layout_slices(layout):
        total += score(probs_all[:, cols, :])  # (N, C_q, S) -> (N,)
    return total


METHODS = ("bald", "powerbald", "entropy", "margin")


def interest(probs: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """Science interest: mean predicted probability of the rare classes in ``columns``.

    Parameters
    ----------
    probs : ndarray, shape (N, C, S)
        One question's MC samples.
    columns : sequence of int
        The answers worth finding (e.g. "merger", "lens").

    Returns
    -------
    ndarray, shape (N,), in [0, 1]
    """
    probs = _check_probs(probs)
    columns = list(columns)
    if not columns or min(columns) < 0 or max(columns) >= probs.shape[1]:
        raise ValueError(f"interest columns must index the {probs.shape[1]} answers, got {columns}")
    return probs.mean(axis=2)[:, columns].sum(axis=1)


def priorities(
    probs_all: np.ndarray,
    layout: Sequence[tuple[str, int]],
    method: str = "bald",
    rng: np.random.Generator | None = None,
    interest_score: np.ndarray | None = None,
    interest_weight: float = 0.0,
    beta: float = 1.0,
) -> np.ndarray:
    """Queue priorities from MC samples: higher is served sooner.

    ``bald``, ``entropy`` and ``margin`` are ``tree_scores``. ``powerbald`` turns the BALD
    scores into PowerBALD keys (Kirsch+2023; ``mlcore.batch_selection.power_keys``), so the
    queue's order is one stochastic draw with P ~ BALD**beta. ``interest_score`` (N,) in
    [0, 1] multiplies the score by ``1 + interest_weight * interest`` before that, as Galaxy
    Zoo favours likely interesting objects; the default weight 0 leaves scores untouched.

    Parameters
    ----------
    probs_all : ndarray, shape (N, A, S)
    layout : sequence of (task_key, n_answers)
    method : {"bald", "powerbald", "entropy", "margin"}
    rng : numpy Generator, needed for ``powerbald``
    interest_score : ndarray, shape (N,), optional
    interest_weight : float >= 0
    beta : float, PowerBALD's sharpness

    Returns
    -------
    ndarray, shape (N,)
    """
    if method not in METHODS:
        raise ValueError(f"unknown acquisition {method!r}; choose from {list(METHODS)}")
    if interest_weight < 0:
        raise ValueError("interest_weight must be >= 0")
    scores = tree_scores(probs_all, layout, method="bald" if method == "powerbald" else method)
    if interest_score is not None and interest_weight > 0:
        boost = np.clip(np.asarray(interest_score, dtype=float), 0.0, 1.0)
        if boost.shape != scores.shape:
            raise ValueError(f"interest_score must have shape {scores.shape}, got {boost.shape}")
        scores = scores * (1.0 + interest_weight * boost)
    if method == "powerbald":
        from mlcore.batch_selection import power_keys

        if rng is None:
            raise ValueError("powerbald needs a random generator")
        return power_keys(scores, rng, beta)
    return scores
