"""The Parks+2018-style DLA finder: windows, targets, loss, peak finding, training, checkpoints."""

import numpy as np
import pytest
import torch

from mlcore.dla import (
    DLATrainConfig,
    Sightline,
    find_dlas,
    find_dlas_many,
    load_dla_finder,
    peaks_to_absorbers,
    predict_windows,
    save_dla_finder,
    train_dla_finder,
)
from mlcore.dla_train import dla_loss
from mlcore.models.dla import DLAFinderNet, dla_input, sightline_from_simulation, window_data, window_targets
from mlcore.simulate.spectra import SpectrumConfig, simulate_quasar, simulate_spectra

CPU = torch.device("cpu")
CLEAR = SpectrumConfig(snr_range=(8.0, 15.0), dla_fraction=0.5, log_nhi_range=(20.8, 21.8))


@pytest.fixture(scope="module")
def quasar():
    return simulate_quasar(np.random.default_rng(3), has_dla=True)


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return DLAFinderNet(width=8).eval()


def test_each_output_sees_exactly_its_own_window():
    model = _tiny_model()
    grid = model.grid
    x = torch.randn(1, 2, grid.n_pix)
    out = model(x)
    assert out.shape == (1, 3, grid.n_outputs)
    k = grid.n_outputs // 2
    first, last = grid.stride * k, grid.stride * k + grid.window - 1
    outside = x.clone()
    outside[..., first - 1] += 5.0
    outside[..., last + 1] += 5.0
    assert torch.allclose(model(outside)[..., k], out[..., k])
    inside = x.clone()
    inside[..., first] += 5.0
    assert not torch.allclose(model(inside)[..., k], out[..., k])


def test_grid_round_trips_absorber_redshifts_and_covers_the_search_range():
    grid = _tiny_model().grid
    assert grid.z_abs(grid.coord(2.5, 3.0), 3.0) == pytest.approx(2.5, abs=1e-12)
    rest = grid.input_config().rest_range
    assert np.diff(np.log10(np.geomspace(*rest, grid.n_pix)))[0] == pytest.approx(1e-4)
    centre_rest = grid.rest_start * 10 ** (grid.centres()[[0, -1]] * grid.loglam_step)
    assert centre_rest[0] == pytest.approx(912.0) and 1196.0 <= centre_rest[1] < 1196.0 * 10 ** (4e-4)


def test_it_prepares_finite_two_channel_input(quasar):
    wave, flux, ivar, truth = quasar
    grid = _tiny_model().grid
    x = dla_input(wave, flux, ivar, truth["z_qso"], grid)
    assert x.shape == (2, grid.n_pix) and x.dtype == np.float32 and np.isfinite(x).all()
    with pytest.raises(ValueError, match="z_qso"):
        dla_input(wave, flux, ivar, float("nan"), grid)


def test_targets_are_positive_only_near_a_dla_with_regressions_only_there():
    grid = _tiny_model().grid
    z_qso = 3.0
    z_abs = float(grid.z_abs(grid.centres()[100] + 7.0, z_qso))
    sub_dla = (float(grid.z_abs(grid.centres()[200], z_qso)), 20.0)
    t = window_targets([(z_abs, 21.2), sub_dla], z_qso, grid, half_width=30.0)
    positive = np.flatnonzero(t["label"])
    assert set(positive) == {
        k for k in range(grid.n_outputs) if abs(grid.centres()[100] + 7.0 - grid.centres()[k]) <= 30
    }
    assert np.allclose(grid.centres()[positive] + t["offset"][positive], grid.centres()[100] + 7.0)
    assert np.allclose(t["log_nhi"][positive], 21.2)
    negative = t["label"] == 0
    assert np.all(t["offset"][negative] == 0) and np.all(t["log_nhi"][negative] == 0)


def test_regression_losses_ignore_negative_windows():
    label = torch.tensor([[1.0, 0.0, 0.0]])
    offset, log_nhi = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([[21.0, 0.0, 0.0]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    out = torch.tensor([[[2.0, -2.0, -2.0], [3.0, 0.0, 0.0], [21.0, 21.0, 21.0]]])
    config = DLATrainConfig()
    _, parts = dla_loss(out, label, offset, log_nhi, valid, config)
    assert parts["offset"] == 0.0 and parts["log_nhi"] == 0.0
    wild = out.clone()
    wild[0, 1:, 1:] = 99.0  # absurd regressions on the negatives change nothing
    assert (
        dla_loss(wild, label, offset, log_nhi, valid, config)[0]
        == dla_loss(out, label, offset, log_nhi, valid, config)[0]
    )
    worse = out.clone()
    worse[0, 2, 0] = 20.0
    assert dla_loss(worse, label, offset, log_nhi, valid, config)[1]["log_nhi"] > 0
    none = torch.zeros_like(label)
    _, parts = dla_loss(out, none, offset, log_nhi, valid, config)
    assert parts["offset"] == 0.0 and parts["log_nhi"] == 0.0 and parts["cls"] > 0


def test_peak_finding_recovers_known_absorbers_from_a_synthetic_signal():
    coords = 4.0 * np.arange(300) + 249.5
    prob = np.zeros(300)
    truths = [(400.0, 20.6), (800.0, 21.5)]  # centres (pixels) and log N
    offset, log_nhi = np.zeros(300), np.zeros(300)
    for centre, log_n in truths:
        near = np.abs(coords - centre) <= 30
        prob[near] = 0.95 - np.abs(coords[near] - centre) / 100  # a peak with a slope, not exactly at the centre
        offset[near] = centre - coords[near] + np.random.default_rng(0).normal(0, 1.0, near.sum())
        log_nhi[near] = log_n
    prob[250] = 0.3  # a blip under the threshold
    found = peaks_to_absorbers(prob, coords, offset, log_nhi, threshold=0.5, min_distance=30.0)
    assert len(found) == 2
    for (centre, log_n), (got_centre, got_log_n, confidence) in zip(truths, found, strict=True):
        assert abs(got_centre - centre) < 1.0 and got_log_n == pytest.approx(log_n) and confidence > 0.85


def test_twin_maxima_of_one_absorber_count_once():
    coords = 4.0 * np.arange(50)
    prob = np.zeros(50)
    prob[20:31] = [0.6, 0.8, 0.9, 0.7, 0.6, 0.7, 0.92, 0.8, 0.7, 0.6, 0.55]
    offset = 100.0 - coords  # every window points at pixel 100
    found = peaks_to_absorbers(prob, coords, offset, np.full(50, 21.0), threshold=0.5, min_distance=30.0)
    assert len(found) == 1 and found[0][0] == pytest.approx(100.0) and found[0][2] == pytest.approx(0.92)


def test_a_tiny_training_run_beats_chance_on_held_out_sightlines():
    torch.set_num_threads(2)
    sims = simulate_spectra(72, seed=5, config=CLEAR)
    train = [sightline_from_simulation(*s) for s in sims[:56]]
    held_out = [sightline_from_simulation(*s) for s in sims[56:]]
    config = DLATrainConfig(epochs=6, batch_size=8, lr=3e-3, width=8, val_fraction=0.15, patience=6, seed=1)
    result = train_dla_finder(train, config, device=CPU)
    assert result.metrics["epochs_run"] >= 1 and np.isfinite(result.metrics["val_loss"])
    data = window_data(held_out, result.model.grid, config.half_width)
    prob = predict_windows(result.model, data.x)[:, 0][data.valid]
    label = data.label[data.valid].astype(bool)
    # ROC AUC: how often a positive window outscores a negative one (chance = 0.5)
    auc = (prob[label][:, None] > prob[~label][None, :]).mean()
    assert auc > 0.8


def test_it_saves_loads_and_finds_with_the_checkpoint(tmp_path, quasar):
    model = _tiny_model()
    save_dla_finder(tmp_path / "dla", model, metrics={"val_loss": 1.0})
    loaded, meta = load_dla_finder(tmp_path / "dla")
    assert meta["kind"] == "dla_finder" and isinstance(loaded, DLAFinderNet)
    wave, flux, ivar, truth = quasar
    x = dla_input(wave, flux, ivar, truth["z_qso"], model.grid)[None]
    assert np.allclose(predict_windows(loaded, x), predict_windows(model, x), atol=1e-5)
    found = find_dlas(loaded, wave, flux, ivar, truth["z_qso"], threshold=0.0)
    assert found and all(set(d) == {"z", "log_nhi", "confidence"} for d in found)
    assert found == find_dlas_many(loaded, [Sightline(wave, flux, ivar, truth["z_qso"])], threshold=0.0)[0]


def test_training_needs_at_least_one_dla(quasar):
    wave, flux, ivar, truth = quasar
    no_dlas = [Sightline(wave, flux, ivar, truth["z_qso"], ((2.5, 20.0),))] * 5
    with pytest.raises(ValueError, match="no sightline has a DLA"):
        train_dla_finder(no_dlas, DLATrainConfig(epochs=1), device=CPU)
