"""Losses on decision-tree vote counts."""

import numpy as np
import pytest
import torch
from scipy.stats import dirichlet_multinomial

from mlcore.losses import tree_dirichlet_multinomial_nll, tree_soft_cross_entropy

LAYOUT = [("T0", 3), ("T1", 2)]


def test_dirichlet_multinomial_matches_scipy_and_ignores_unreached_questions():
    logits = torch.tensor([[0.3, -0.2, 1.0, 0.5, 0.1], [2.0, 0.0, -1.0, 0.3, 0.3]])
    counts = torch.tensor([[3.0, 1.0, 2.0, 0.0, 0.0], [0.0, 4.0, 1.0, 2.0, 3.0]])
    expected = 0.0
    for row_logits, row_counts in zip(logits.numpy(), counts.numpy(), strict=True):
        for cols in (slice(0, 3), slice(3, 5)):
            k = row_counts[cols]
            if k.sum() > 0:
                expected -= dirichlet_multinomial.logpmf(k, np.exp(row_logits[cols]), k.sum())
    loss = tree_dirichlet_multinomial_nll(logits, counts, LAYOUT)
    assert loss.item() == pytest.approx(expected / counts.sum().item(), rel=1e-5)


def test_dirichlet_multinomial_training_recovers_vote_fractions_and_their_scatter():
    rng = np.random.default_rng(0)
    # 400 subjects whose 20 votes scatter around (0.6, 0.3, 0.1) with Dirichlet concentration 10
    fractions = rng.dirichlet(10 * np.array([0.6, 0.3, 0.1]), 400)
    counts = torch.tensor(np.stack([rng.multinomial(20, f) for f in fractions]), dtype=torch.float32)
    logits = torch.zeros(1, 3, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(600):
        optimizer.zero_grad()
        tree_dirichlet_multinomial_nll(logits.expand(400, 3), counts, [("T0", 3)]).backward()
        optimizer.step()
    alpha = logits.detach().exp()[0]
    np.testing.assert_allclose((alpha / alpha.sum()).numpy(), [0.6, 0.3, 0.1], atol=0.03)
    assert 6 < alpha.sum().item() < 16  # the scatter, which soft cross-entropy cannot see


def test_both_tree_losses_reject_mismatched_shapes():
    for loss in (tree_dirichlet_multinomial_nll, tree_soft_cross_entropy):
        with pytest.raises(ValueError):
            loss(torch.zeros(2, 4), torch.zeros(2, 4), LAYOUT)
