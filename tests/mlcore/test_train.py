"""Loss, training loop and MC-dropout prediction on synthetic problems."""

import math

import numpy as np
import pytest
import torch

from mlcore.losses import tree_soft_cross_entropy
from mlcore.models.image import QuestionHead
from mlcore.models.spectrum import SpectrumCNN
from mlcore.predict import mc_dropout_probs, predict_probs, question_slice
from mlcore.train import TrainConfig, fit, split_indices

LAYOUT = [("T0", 2), ("T1", 3)]
CPU = torch.device("cpu")


def _blobs(n=200, dim=16, seed=0):
    """Two Gaussian blobs; votes on T0 follow the blob, T1 is reached only by class 0."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, dim)) + 2.0 * (2 * y[:, None] - 1)
    counts = np.zeros((n, 5), dtype=np.float32)
    majority = rng.integers(7, 11, n)
    counts[np.arange(n), y] = majority
    counts[np.arange(n), 1 - y] = 10 - majority
    t1 = np.where(y == 0, counts[:, 0], 0)
    counts[:, 2] = t1  # everyone who reached T1 says answer 0
    return X.astype(np.float32), counts


def test_it_computes_vote_weighted_soft_cross_entropy():
    logits = torch.zeros(1, 5)
    counts = torch.tensor([[3.0, 1.0, 0.0, 0.0, 0.0]])  # T1 unreached: contributes nothing
    assert tree_soft_cross_entropy(logits, counts, LAYOUT).item() == pytest.approx(math.log(2))
    counts = torch.tensor([[2.0, 0.0, 1.0, 1.0, 0.0]])
    expected = (2 * math.log(2) + 2 * math.log(3)) / 4
    assert tree_soft_cross_entropy(logits, counts, LAYOUT).item() == pytest.approx(expected)


def test_it_splits_with_at_least_one_validation_subject():
    train, val = split_indices(5, 0.01, seed=0)
    assert len(val) == 1 and len(train) == 4
    assert sorted(np.concatenate([train, val])) == list(range(5))
    assert np.array_equal(split_indices(50, 0.2, 3)[1], split_indices(50, 0.2, 3)[1])


def test_it_learns_a_separable_problem_above_90_percent():
    X, counts = _blobs()
    torch.manual_seed(0)
    head = QuestionHead(16, LAYOUT, hidden=32)
    seen = []
    result = fit(
        head,
        X,
        counts,
        LAYOUT,
        TrainConfig(epochs=30, patience=10),
        device=CPU,
        progress=lambda e, n, m: seen.append(e),
    )
    assert result.metrics["val_accuracy"] > 0.9
    assert result.metrics["val_accuracy_T0"] == result.metrics["val_accuracy"]
    assert result.metrics["val_accuracy_T1"] > 0.9
    assert result.metrics["n_train"] + result.metrics["n_val"] == 200
    assert len(result.history) == result.metrics["epochs_run"] == len(seen)
    assert not result.model.training


def test_it_is_deterministic_for_a_fixed_seed():
    X, counts = _blobs(60)
    results = []
    for _ in range(2):
        torch.manual_seed(1)
        head = QuestionHead(16, LAYOUT, hidden=8)
        results.append(fit(head, X, counts, LAYOUT, TrainConfig(epochs=3), device=CPU))
    assert results[0].history == results[1].history
    for a, b in zip(results[0].model.parameters(), results[1].model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_it_refuses_nan_inputs_tiny_sets_and_shape_mismatches():
    X, counts = _blobs(20)
    head = QuestionHead(16, LAYOUT)
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(head, X_nan, counts, LAYOUT, device=CPU)
    with pytest.raises(ValueError, match="at least 4"):
        fit(head, X[:3], counts[:3], LAYOUT, device=CPU)
    with pytest.raises(ValueError, match="counts"):
        fit(head, X, counts[:10], LAYOUT, device=CPU)


def test_it_stops_on_a_non_finite_loss():
    X, counts = _blobs(20)
    head = QuestionHead(16, LAYOUT)
    with torch.no_grad():
        head.net[0].weight.fill_(float("inf"))
    with pytest.raises(FloatingPointError):
        fit(head, X, counts, LAYOUT, TrainConfig(epochs=2), device=CPU)


def test_it_trains_on_image_tensors_with_flip_augmentation():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 2, 8, 8)).astype(np.float32)
    counts = rng.integers(0, 4, size=(12, 5)).astype(np.float32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(128, 5))
    result = fit(model, X, counts, LAYOUT, TrainConfig(epochs=2, batch_size=5, augment_flips=True), device=CPU)
    assert result.metrics["epochs_run"] == 2


def test_it_trains_a_spectrum_cnn_through_fit():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 2, 64)).astype(np.float32)
    counts = rng.integers(0, 4, size=(10, 5)).astype(np.float32)
    torch.manual_seed(0)
    result = fit(
        SpectrumCNN(LAYOUT, n_pix=64, width=4), X, counts, LAYOUT, TrainConfig(epochs=2, batch_size=3), device=CPU
    )
    assert math.isfinite(result.metrics["val_loss"])


def test_it_samples_different_dropout_masks_but_repeats_with_the_same_seed():
    X, _ = _blobs(10)
    torch.manual_seed(0)
    head = QuestionHead(16, LAYOUT, hidden=32, dropout=0.5)
    probs = mc_dropout_probs(head, X, LAYOUT, n_samples=6, batch_size=4, device=CPU, seed=3)
    assert probs.shape == (10, 5, 6)
    assert np.allclose(probs[:, question_slice(LAYOUT, "T0")].sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(probs[:, question_slice(LAYOUT, "T1")].sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(probs[..., 0], probs[..., 1])  # dropout is on
    again = mc_dropout_probs(head, X, LAYOUT, n_samples=6, batch_size=4, device=CPU, seed=3)
    assert np.array_equal(probs, again)
    assert not head.training
    deterministic = predict_probs(head, X, LAYOUT, device=CPU)
    assert deterministic.shape == (10, 5)


def test_it_keeps_batchnorm_in_eval_mode_during_mc_dropout():
    torch.manual_seed(0)
    model = SpectrumCNN(LAYOUT, n_pix=32, width=4, dropout=0.0)
    X = np.random.default_rng(0).normal(size=(3, 2, 32)).astype(np.float32)
    probs = mc_dropout_probs(model, X, LAYOUT, n_samples=2, device=CPU)
    assert np.allclose(probs[..., 0], probs[..., 1])  # no dropout noise, BatchNorm frozen
    one_by_one = np.concatenate(
        [mc_dropout_probs(model, X[i : i + 1], LAYOUT, n_samples=1, device=CPU) for i in range(3)]
    )
    assert np.allclose(one_by_one[..., 0], probs[..., 0], atol=1e-6)
