"""The lens finder CNN (issue #9): shapes, colour-preserving stretch, dihedral invariance, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlcore.lens_train import LensTrainConfig, simulate_training_set, train_lens_model
from mlcore.models.lens import LensResNet, dihedral, lens_probability, stretch


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    cache = tmp_path_factory.mktemp("lens") / "train.npz"
    return simulate_training_set(n_lenses=12, n_negatives=12, seed=3, workers=1, cache=cache), cache


def test_simulated_set_is_labelled_and_cached(small_set):
    data, cache = small_set
    assert data["cubes"].shape == (24, 3, 64, 64)
    assert data["is_lens"].sum() == 12
    assert np.isfinite(data["arc_snr"][data["is_lens"]]).all() and np.isnan(data["arc_snr"][~data["is_lens"]]).all()
    again = simulate_training_set(n_lenses=12, n_negatives=12, seed=3, workers=1, cache=cache)
    np.testing.assert_array_equal(again["cubes"], data["cubes"])


def test_simulation_does_not_depend_on_worker_count():
    one = simulate_training_set(n_lenses=2, n_negatives=2, seed=5, workers=1)
    two = simulate_training_set(n_lenses=2, n_negatives=2, seed=5, workers=2)
    np.testing.assert_array_equal(one["cubes"], two["cubes"])


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        simulate_training_set(n_lenses=0, n_negatives=5, seed=0)
    with pytest.raises(ValueError):
        stretch(np.zeros((3, 64, 64)))


def test_stretch_uses_one_scale_for_all_bands():
    rng = np.random.default_rng(0)
    cube = rng.normal(0, 1.0, (1, 3, 64, 64)).astype(np.float32)
    cube[0, :, 30:34, 30:34] += np.array([1.0, 4.0, 9.0], np.float32)[:, None, None] * 50  # a red source
    x = stretch(cube)
    centre = x[0, :, 31, 31]
    assert centre[0] < centre[1] < centre[2]  # red stays red: bands are not equalised
    # twice as bright in every band -> the noise scale doubles too: the stretched image is unchanged
    torch.testing.assert_close(stretch(cube * 2), x, rtol=1e-4, atol=1e-4)


def test_shapes_and_dihedral_invariance_of_tta():
    torch.manual_seed(0)
    model = LensResNet()
    cubes = np.random.default_rng(1).normal(0, 1, (4, 3, 64, 64)).astype(np.float32)
    assert model(stretch(cubes)).shape == (4,)
    p = lens_probability(model, cubes)
    assert p.shape == (4,) and ((p > 0) & (p < 1)).all()
    for k in range(1, 8):  # averaging over the 8 views makes the score invariant to any of them
        turned = dihedral(torch.from_numpy(cubes), k).contiguous().numpy()
        np.testing.assert_allclose(lens_probability(model, turned), p, atol=1e-5)
    assert len({tuple(dihedral(torch.arange(4.0).reshape(2, 2), k).flatten().tolist()) for k in range(8)}) == 8


def test_training_reduces_loss_and_is_deterministic(small_set):
    data, _ = small_set
    config = LensTrainConfig(epochs=6, patience=6, batch_size=8, lr=3e-3, val_fraction=0.25, seed=1)
    model, metrics = train_lens_model(cubes=data["cubes"], is_lens=data["is_lens"], config=config)
    history = metrics["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    again, metrics_again = train_lens_model(cubes=data["cubes"], is_lens=data["is_lens"], config=config)
    assert [h["train_loss"] for h in metrics_again["history"]] == pytest.approx([h["train_loss"] for h in history])
    np.testing.assert_allclose(lens_probability(again, data["cubes"]), lens_probability(model, data["cubes"]),
                               atol=1e-6)


def test_training_refuses_one_class(small_set):
    data, _ = small_set
    with pytest.raises(ValueError):
        train_lens_model(cubes=data["cubes"][:12], is_lens=data["is_lens"][:12])
