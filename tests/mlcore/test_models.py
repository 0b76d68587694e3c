"""Image backbone, preprocessing, question head and spectrum model."""

import numpy as np
import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet

from mlcore.models.image import (
    BACKBONE_NAME,
    BackboneConfig,
    ImageBackbone,
    QuestionHead,
    preprocess_cutouts,
)
from mlcore.models.spectrum import SpectrumCNN, SpectrumInputConfig, preprocess_spectrum

LAYOUT = [("T0", 3), ("T1", 2)]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def backbone():
    return ImageBackbone(BackboneConfig(input_size=64), device=CPU)


def _galaxy_cubes(n, bands, size=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    blob = 50.0 * np.exp(-(xx**2 + yy**2) / (2 * 4.0**2))
    return (blob + rng.normal(0, 1.0, (n, bands, size, size))).astype(np.float32)


def test_it_loads_the_shipped_imagenet_weights(backbone):
    fresh = EfficientNet.from_name("efficientnet-lite0", image_size=64)
    loaded = backbone.model._conv_stem.weight.detach()
    assert not torch.allclose(loaded, fresh._conv_stem.weight)
    assert backbone.name == f"{BACKBONE_NAME}@64"
    assert backbone.dim == 1280
    assert not backbone.model.training


def test_it_embeds_random_cutouts_to_finite_1280_vectors(backbone):
    cubes = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    emb = backbone.embed(cubes, batch_size=3)
    assert emb.shape == (4, 1280)
    assert emb.dtype == np.float32
    assert np.isfinite(emb).all()
    assert np.allclose(backbone.embed(cubes[:1]), emb[:1], atol=1e-5)  # batching does not matter


def test_it_names_custom_weights_by_their_hash(tmp_path, backbone):
    path = tmp_path / "custom.pth"
    torch.save(backbone.model.state_dict(), path)
    custom = ImageBackbone(BackboneConfig(input_size=64, weights_path=str(path)), device=CPU)
    assert custom.name.startswith("efficientnet-lite0-") and custom.name.endswith("@64")
    assert custom.name != backbone.name


@pytest.mark.parametrize("bands", [1, 3, 5])
def test_it_preprocesses_any_number_of_bands(bands):
    cubes = _galaxy_cubes(2, bands)
    cubes[0, 0, 0, 0] = np.nan
    x = preprocess_cutouts(cubes, BackboneConfig(input_size=96))
    assert x.shape == (2, 3, 96, 96)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()
    if bands == 1:
        assert torch.allclose(x[:, 0] * 0.229 + 0.485, x[:, 2] * 0.225 + 0.406, atol=1e-5)


def test_it_maps_the_reddest_of_three_bands_to_red():
    cubes = np.zeros((1, 3, 64, 64), dtype=np.float32)
    cubes[0, 2, 30:34, 30:34] = 100.0  # only the i band (reddest) is bright
    x = preprocess_cutouts(cubes, BackboneConfig(input_size=64))
    unnorm = x[0] * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) + torch.tensor([0.485, 0.456, 0.406]).view(
        3, 1, 1
    )
    assert unnorm[0].max() > 0.9 and unnorm[1].max() < 0.01 and unnorm[2].max() < 0.01


def test_it_builds_a_head_with_one_logit_per_answer_and_dropout():
    head = QuestionHead(16, LAYOUT, hidden=8)
    assert head(torch.zeros(5, 16)).shape == (5, 5)
    assert any(isinstance(m, torch.nn.Dropout) for m in head.modules())
    assert head.model_config() == {"in_dim": 16, "hidden": 8, "dropout": 0.3}


def test_it_resamples_a_spectrum_onto_the_rest_frame_window():
    z = 3.0
    wave = 10 ** np.arange(np.log10(3600), np.log10(10400), 1e-4)
    flux = np.full_like(wave, 5.0)
    ivar = np.full_like(wave, 4.0)
    out = preprocess_spectrum(wave, flux, ivar, z, SpectrumInputConfig(n_pix=256))
    assert out.shape == (2, 256) and out.dtype == np.float32
    assert np.allclose(out[0], 1.0)  # flux / continuum at rest 1420-1500 A
    assert np.allclose(out[1], 10 / 11)  # S/N 10 per pixel -> 10 / (1 + 10)


def test_it_zeroes_the_grid_outside_the_data_and_masked_pixels():
    wave = np.linspace(4000, 5000, 500)
    flux = np.ones_like(wave)
    ivar = np.ones_like(wave)
    ivar[200:260] = 0.0
    out = preprocess_spectrum(wave, flux, ivar, z=3.0)  # grid 3600-5384 A
    grid = np.exp(np.linspace(np.log(3600), np.log(5384), 1024))
    assert (out[:, grid < 3990] == 0).all() and (out[:, grid > 5010] == 0).all()
    masked = (grid > wave[205]) & (grid < wave[255])
    assert (out[:, masked] == 0).all()


@pytest.mark.parametrize(
    "flux, ivar, z",
    [
        (np.full(300, np.nan), np.ones(300), 2.5),
        (np.zeros(300), np.zeros(300), 2.5),
        (np.random.default_rng(0).normal(size=300), np.zeros(300), None),
        (np.full(300, 1e30), np.full(300, np.inf), float("nan")),
    ],
)
def test_it_returns_finite_spectra_for_hostile_input(flux, ivar, z):
    wave = np.linspace(3600, 6000, 300)
    out = preprocess_spectrum(wave, flux, ivar, z)
    assert out.shape == (2, 1024)
    assert np.isfinite(out).all()


def test_it_trains_the_spectrum_cnn_a_few_steps_on_random_data():
    torch.manual_seed(0)
    model = SpectrumCNN(LAYOUT, n_pix=128, width=8)
    x = torch.randn(6, 2, 128)
    counts = torch.randint(0, 5, (6, 5)).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    from mlcore.losses import tree_soft_cross_entropy

    for _ in range(3):
        loss = tree_soft_cross_entropy(model(x), counts, LAYOUT)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    assert model.eval()(x).shape == (6, 5)


def test_it_lets_the_environment_force_the_cpu_and_rejects_nonsense(monkeypatch):
    from mlcore.device import best_device

    monkeypatch.setenv("SKYLOOP_DEVICE", "cpu")
    assert best_device() == torch.device("cpu")
    monkeypatch.setenv("SKYLOOP_DEVICE", "tpu")
    with pytest.raises(ValueError, match="SKYLOOP_DEVICE"):
        best_device()
