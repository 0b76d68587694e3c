"""Backbone input and features: the vectorised stretch and the frozen CPU graph compute what the definitions say."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlcore.models.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAD_TO_SIGMA,
    MIN_WHITE_SNR,
    SOFTENING_SIGMA,
    WHITE_PERCENTILE,
    BackboneConfig,
    ImageBackbone,
    asinh_stretch,
    preprocess_cutouts,
)

CPU = torch.device("cpu")


def _reference_stretch(rgb: np.ndarray) -> np.ndarray:
    """The stretch as defined, per object, in float64 with numpy's median and percentile."""
    out = np.empty(rgb.shape, dtype=np.float64)
    for i, obj in enumerate(rgb.astype(np.float64)):
        flat = obj.ravel()
        sigma = MAD_TO_SIGMA * np.median(np.abs(flat - np.median(flat)))
        sigma = sigma if sigma > 0 else (flat.std() or 1.0)
        stretched = np.arcsinh(flat / (SOFTENING_SIGMA * sigma))
        white = max(np.percentile(stretched, WHITE_PERCENTILE), np.arcsinh(MIN_WHITE_SNR / SOFTENING_SIGMA))
        out[i] = np.clip(stretched / white, 0, 1).reshape(obj.shape)
    return out


@pytest.mark.parametrize("side", [8, 15, 64])
def test_the_batched_stretch_matches_the_per_object_definition(side):
    rng = np.random.default_rng(side)
    rgb = rng.normal(0, 1, (6, 3, side, side)) * rng.uniform(0.01, 100, (6, 1, 1, 1))
    rgb[:, :, side // 2, side // 2] += rng.uniform(0, 500, 6)[:, None]  # a bright source in the middle
    rgb[5] = 0.0
    rgb[4, :, :2] = 3.0  # a constant patch: MAD can still be positive elsewhere
    got = asinh_stretch(rgb)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert np.abs(got - _reference_stretch(rgb)).max() < 1e-4
    assert torch.equal(asinh_stretch(torch.from_numpy(rgb.astype(np.float32))), torch.from_numpy(got))


def test_the_stretch_accepts_reversed_band_views():
    rgb = np.random.default_rng(0).normal(0, 1, (2, 3, 16, 16))
    assert np.abs(asinh_stretch(rgb[:, ::-1]) - _reference_stretch(rgb[:, ::-1])).max() < 1e-4


def test_upsampling_skips_antialiasing_without_changing_the_input():
    cubes = np.random.default_rng(1).normal(0, 1, (4, 3, 64, 64)).astype(np.float32)
    x = preprocess_cutouts(cubes, BackboneConfig(input_size=96))
    stretched = torch.from_numpy(asinh_stretch(np.ascontiguousarray(cubes[:, ::-1])))
    antialiased = F.interpolate(stretched, size=(96, 96), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(x, (antialiased - mean) / std, atol=1e-4)


def test_the_frozen_cpu_graph_gives_the_eager_embeddings_for_any_batch_size():
    backbone = ImageBackbone(BackboneConfig(input_size=64, cpu_precision="fp32"), device=CPU)
    cubes = np.random.default_rng(2).normal(0, 1, (11, 3, 40, 40)).astype(np.float32)
    frozen = backbone.embed(cubes, batch_size=4)  # micro-batches of 4, 4 and 3 in two threads
    with torch.inference_mode():
        x = preprocess_cutouts(cubes, backbone.config).contiguous(memory_format=torch.channels_last)
        eager = backbone.model.extract_features(x).mean(dim=(2, 3)).numpy()
    assert backbone._frozen is not None
    cosine = (frozen * eager).sum(1) / np.linalg.norm(frozen, axis=1) / np.linalg.norm(eager, axis=1)
    assert cosine.min() > 0.99999
    assert np.allclose(frozen, eager, atol=1e-3 * np.abs(eager).max())


@pytest.mark.parametrize("n", [1, 2, 15, 3 * 64 * 64])
def test_row_quantiles_select_what_numpy_percentile_interpolates(n):
    from mlcore.models.image import _row_quantiles

    flat = np.random.default_rng(n).standard_cauchy((5, n)).astype(np.float32)
    qs = (0.0, 0.25, 0.5, 0.995, 1.0)  # 0.995 takes the top-k path on the large rows
    got = _row_quantiles(flat, qs)
    for q, row in zip(qs, got, strict=True):
        np.testing.assert_allclose(row, np.percentile(flat, 100 * q, axis=1), rtol=1e-6, atol=1e-6)


def test_convolutions_that_pad_themselves_compute_the_same_features():
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    from mlcore.models.image import _convs_pad_themselves

    backbone = ImageBackbone(BackboneConfig(input_size=96), device=CPU)
    copy = _convs_pad_themselves(backbone.model)
    explicit = sum(isinstance(m, Conv2dStaticSamePadding) for m in copy.modules())
    assert 0 < explicit < sum(isinstance(m, Conv2dStaticSamePadding) for m in backbone.model.modules()) / 4
    x = torch.randn(3, 3, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(copy.extract_features(x), backbone.model.extract_features(x), rtol=1e-4, atol=1e-4)


def test_threaded_micro_batches_give_the_one_batch_embeddings_and_restore_the_thread_count():
    backbone = ImageBackbone(BackboneConfig(input_size=64, cpu_precision="fp32"), device=CPU)
    cubes = np.random.default_rng(3).normal(0, 1, (37, 3, 32, 32)).astype(np.float32)
    threads = torch.get_num_threads()
    threaded = backbone.embed(cubes)  # micro-batches of 16, 16 and 5 in backbone_threads
    assert torch.get_num_threads() == threads
    whole = backbone.pooled_features(preprocess_cutouts(cubes, backbone.config)).numpy()
    np.testing.assert_allclose(threaded, whole, rtol=1e-4, atol=1e-4 * np.abs(whole).max())


def test_the_bfloat16_cpu_graph_stays_close_to_float32_under_its_own_cache_name():
    rng = np.random.default_rng(4)
    cubes = rng.normal(0, 1, (20, 3, 64, 64)).astype(np.float32)
    cubes[:, :, 28:36, 28:36] += rng.uniform(5, 200, (20, 1, 1, 1)).astype(np.float32)  # a source each
    exact = ImageBackbone(BackboneConfig(input_size=64, cpu_precision="fp32"), device=CPU)
    fast = ImageBackbone(BackboneConfig(input_size=64, cpu_precision="bf16"), device=CPU)
    assert fast.name == exact.name + "-bf16"
    a, b = exact.embed(cubes), fast.embed(cubes)
    assert b.dtype == np.float32
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.97
    assert not np.array_equal(a, b)  # it did run in bfloat16
    with pytest.raises(ValueError):
        BackboneConfig(cpu_precision="int8")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bfloat16_only_where_the_cpu_has_it_and_the_default_is_float32(monkeypatch, native):
    from mlcore.models import image

    monkeypatch.setattr(image, "native_bf16", lambda: native)
    backbone = ImageBackbone(BackboneConfig(input_size=64, cpu_precision="auto"), device=CPU)
    assert backbone.cpu_dtype == (torch.bfloat16 if native else torch.float32)
    assert backbone.name.endswith("-bf16") == native
    assert ImageBackbone(BackboneConfig(input_size=64), device=CPU).cpu_dtype == torch.float32
