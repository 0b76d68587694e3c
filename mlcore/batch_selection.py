"""Choosing a batch of subjects, not just ranking them: stochastic, diverse, representative.

Pure numpy (+ scikit-learn's k-means). Used when many subjects are queued at once, so the
top of the queue is not a clump of near-duplicates.

References
----------
Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal 2023, TMLR, "Stochastic
Batch Acquisition: A Simple Baseline for Deep Active Learning" (PowerBALD: sample with
probability proportional to score^beta, via the Gumbel top-k trick).
Sener & Savarese 2018, ICLR, "Active Learning for Convolutional Neural Networks: A Core-Set
Approach" (k-center greedy on embeddings).
"""

from __future__ import annotations

import numpy as np


def power_keys(scores: np.ndarray, rng: np.random.Generator, beta: float = 1.0) -> np.ndarray:
    """Perturbed keys ``beta * log(score) + Gumbel``: sorting them descending is a PowerBALD draw.

    As queue priorities they make the whole queue one draw without replacement with
    P ~ score**beta, so the top of the queue is stochastic rather than a clump of the
    highest, often redundant, scores.
    """
    scores = np.asarray(scores, dtype=float)  # (N,)
    if scores.ndim != 1 or np.any(~np.isfinite(scores)) or np.any(scores < 0):
        raise ValueError("scores must be a 1-D array of finite, non-negative numbers")
    return beta * np.log(np.maximum(scores, 1e-300)) + rng.gumbel(size=scores.size)


def power_sample(scores: np.ndarray, k: int, rng: np.random.Generator, beta: float = 1.0) -> np.ndarray:
    """Indices of ``k`` subjects drawn without replacement with P ~ score**beta (PowerBALD).

    Gumbel top-k: ``argsort(beta * log(score) + Gumbel)`` is an exact draw without
    replacement. ``beta -> inf`` recovers the plain top-k; ``beta = 0`` is uniform.
    """
    keys = power_keys(scores, rng, beta)
    return np.argsort(-keys, kind="stable")[: min(int(k), keys.size)]


def k_center_greedy(embeddings: np.ndarray, k: int, labelled: np.ndarray | None = None) -> np.ndarray:
    """``k`` indices that cover the embedding space: each pick is the point farthest from all chosen.

    ``labelled`` (indices) count as already chosen, so new picks fill the gaps they leave.
    """
    x = np.asarray(embeddings, dtype=float)  # (N, D)
    n = x.shape[0]
    k = min(int(k), n)
    chosen: list[int] = []
    seeds = [] if labelled is None else list(np.asarray(labelled, dtype=int))
    if seeds:
        distance = np.min(((x[:, None, :] - x[None, seeds, :]) ** 2).sum(-1), axis=1)  # (N,)
    else:
        first = int(np.argmin(((x - x.mean(axis=0)) ** 2).sum(1)))  # start from the most central point
        chosen.append(first)
        distance = ((x - x[first]) ** 2).sum(1)
    while len(chosen) < k:
        pick = int(np.argmax(distance))
        chosen.append(pick)
        distance = np.minimum(distance, ((x - x[pick]) ** 2).sum(1))
    return np.asarray(chosen[:k], dtype=int)


def representative_points(embeddings: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cold start before any model: the point nearest each of ``k`` k-means centroids (typical objects)."""
    from sklearn.cluster import KMeans

    x = np.asarray(embeddings, dtype=float)  # (N, D)
    k = min(int(k), x.shape[0])
    centres = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x).cluster_centers_  # (k, D)
    distance = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)  # (N, k)
    picks: list[int] = []
    for c in range(k):  # nearest distinct point to each centre
        for i in np.argsort(distance[:, c]):
            if int(i) not in picks:
                picks.append(int(i))
                break
    return np.asarray(picks, dtype=int)
