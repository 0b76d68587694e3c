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
