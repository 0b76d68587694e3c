"""Losses on volunteer vote counts for a decision tree of questions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mlcore.acquisition import layout_slices, layout_width


def per_question_log_softmax(logits: Tensor, layout: Sequence[tuple[str, int]]) -> Tensor:
    """Log-softmax taken separately over each question's answers; (B, A) -> (B, A)."""
    return torch.cat([F.log_softmax(logits[:, cols], dim=1) for _, cols in layout_slices(layout)], dim=1)


def tree_soft_cross_entropy(logits: Tensor, counts: Tensor, layout: Sequence[tuple[str, int]]) -> Tensor:
    """Vote-weighted soft-label cross-entropy over every question of a task tree.

    For each subject ``b`` and question ``q`` with ``n_bq`` votes and vote fractions
    ``f_bq``, the term is ``n_bq * CE(f_bq, softmax(logits_bq))``; equivalently
    ``-sum_a counts[b, a] * log p[b, a]``. Questions nobody reached have ``n_bq = 0``
    and contribute nothing. The sum is divided by the total number of votes in the
    batch, so the value is the mean cross-entropy per vote.

    This is the simple soft-label version. Walmsley+2022 (Zoobot) use a
    Dirichlet-multinomial likelihood of the counts, which also models how far vote
    fractions scatter around the model's prediction.

    Parameters
    ----------
    logits : Tensor, shape (B, A)
    counts : Tensor, shape (B, A)
        Non-negative vote counts (possibly fractional, e.g. skill-weighted).
    layout : sequence of (task_key, n_answers)

    Returns
    -------
    Tensor, scalar. 0 (still differentiable) when the batch has no votes.
    """
    if logits.shape != counts.shape or logits.ndim != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and counts {tuple(counts.shape)} must both be (B, A)")
    if logits.shape[1] != layout_width(layout):
        raise ValueError(f"logits have {logits.shape[1]} columns, layout has {layout_width(layout)} answers")
    log_p = per_question_log_softmax(logits.float(), layout)  # (B, A)
    counts = counts.to(log_p.dtype)
    total = counts.sum()
    return -(counts * log_p).sum() / total.clamp_min(1e-8)


MAX_LOG_CONCENTRATION = 12.0  # caps each Dirichlet concentration at e^12 ~ 1.6e5 (effectively a multinomial)


def tree_dirichlet_multinomial_nll(logits: Tensor, counts: Tensor, layout: Sequence[tuple[str, int]]) -> Tensor:
    """Dirichlet-multinomial negative log-likelihood of vote counts over a task tree (Walmsley+2022).

    Each question's votes ``k`` (``n = sum k`` of them) are modelled as drawn from a
    multinomial whose answer probabilities are themselves Dirichlet-distributed with
    concentrations ``alpha = exp(logits)``:

        log P(k | alpha) = lgamma(n + 1) + lgamma(A) - lgamma(n + A)
                           + sum_a [lgamma(k_a + alpha_a) - lgamma(alpha_a) - lgamma(k_a + 1)],
        A = sum_a alpha_a.

    The expected vote fraction is ``alpha / A = softmax(logits)``, so a head trained with
    this loss predicts through the same per-question softmax as one trained with
    ``tree_soft_cross_entropy``; ``A`` adds how far volunteers' fractions scatter around
    it (small A: the crowd disagrees a lot on subjects like this one). Zoobot bounds the
    concentrations to [1, 100] with a sigmoid; here the exponential keeps the softmax
    link and the log-concentrations are clamped to ``MAX_LOG_CONCENTRATION``.
    Questions nobody reached (n = 0) have log-likelihood exactly 0.

    Parameters
    ----------
    logits : Tensor, shape (B, A)
    counts : Tensor, shape (B, A)
        Non-negative vote counts (fractional counts are allowed: lgamma is continuous).
    layout : sequence of (task_key, n_answers)

    Returns
    -------
    Tensor, scalar: the negative log-likelihood divided by the total number of votes in
    the batch (per vote, as ``tree_soft_cross_entropy``).
    """
    if logits.shape != counts.shape or logits.ndim != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and counts {tuple(counts.shape)} must both be (B, A)")
    if logits.shape[1] != layout_width(layout):
        raise ValueError(f"logits have {logits.shape[1]} columns, layout has {layout_width(layout)} answers")
    alpha = torch.exp(logits.float().clamp(max=MAX_LOG_CONCENTRATION))  # (B, A)
    counts = counts.to(alpha.dtype)
    total_ll = alpha.new_zeros(())
    for _, cols in layout_slices(layout):
        k, a = counts[:, cols], alpha[:, cols]  # (B, n_answers)
        n, a_sum = k.sum(dim=1), a.sum(dim=1)
        ll = (
            torch.lgamma(n + 1)
            + torch.lgamma(a_sum)
            - torch.lgamma(n + a_sum)
            + (torch.lgamma(k + a) - torch.lgamma(a) - torch.lgamma(k + 1)).sum(dim=1)
        )  # (B,)
        total_ll = total_ll + ll.sum()
    return -total_ll / counts.sum().clamp_min(1e-8)
