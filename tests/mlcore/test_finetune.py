"""Fine-tuning the upper EfficientNet-Lite0 blocks with the question head (tiny, CPU)."""

import numpy as np
import pytest
import torch

from mlcore.finetune import (
    FinetuneConfig,
    FinetunedImageModel,
    dihedral_views,
    finetune_image_model,
    save_backbone_weights,
)
from mlcore.models.image import BackboneConfig, ImageBackbone, QuestionHead, load_backbone, preprocess_cutouts
from mlcore.train import TrainConfig

LAYOUT = [("T0", 3), ("T1", 2)]
CPU = torch.device("cpu")
SMALL = BackboneConfig(input_size=64)


def _cutouts(n=16, seed=0):
    rng = np.random.default_rng(seed)
    cubes = rng.normal(0.0, 1.0, (n, 3, 32, 32)).astype(np.float32)
    cubes[:, :, 12:20, 12:20] += rng.uniform(5, 50, (n, 1, 1, 1)).astype(np.float32)
    counts = rng.integers(0, 4, (n, 5)).astype(np.float32)
    counts[:, 0] += 1  # every subject has a root vote
    return cubes, counts


def _config(**kw):
    # val_fraction 0: every epoch "improves", so the fine-tuned weights are the ones kept
    head = TrainConfig(epochs=1, batch_size=8, val_fraction=0.0)
    return FinetuneConfig(head=head, backbone=SMALL, epochs=1, batch_size=8, min_subjects=4, **kw)


@pytest.fixture(scope="module")
def finetuned():
    torch.manual_seed(0)
    cubes, counts = _cutouts()
    model, metrics = finetune_image_model(cubes, counts, LAYOUT, _config(), device=CPU)
    return model, metrics, cubes


def test_it_changes_the_upper_blocks_and_not_the_frozen_ones(finetuned):
    model, metrics, _ = finetuned
    original = load_backbone(SMALL).state_dict()
    tuned = model.backbone.state_dict()
    split = model.split
    assert split == 16 - 5
    lower = [k for k in tuned if k.startswith(("_conv_stem", "_bn0")) or _block_index(k, below=split)]
    upper_weights = [k for k in tuned if _block_index(k, at_least=split) and k.endswith("weight")]
    assert lower and upper_weights
    for key in lower:  # weights and BatchNorm running statistics alike
        assert torch.equal(tuned[key], original[key]), key
    assert any(not torch.equal(tuned[k], original[k]) for k in upper_weights)
    assert not torch.equal(tuned["_conv_head.weight"], original["_conv_head.weight"])
    assert metrics["best_epoch"] == 1.0 and metrics["n_train"] == 16.0
    assert not model.training


def _block_index(key, below=None, at_least=None):
    if not key.startswith("_blocks."):
        return False
    idx = int(key.split(".")[1])
    return idx < below if below is not None else idx >= at_least


def test_saved_backbone_loads_into_image_backbone_with_the_same_embeddings(finetuned, tmp_path):
    model, _, cubes = finetuned
    weights = save_backbone_weights(model, tmp_path / "backbone.pt")
    backbone = ImageBackbone(BackboneConfig(input_size=64, weights_path=str(weights)), device=CPU)
    with torch.inference_mode():
        expected = model.upper(model.lower(preprocess_cutouts(cubes[:4], SMALL))).numpy()
    np.testing.assert_allclose(backbone.embed(cubes[:4]), expected, rtol=1e-3, atol=1e-4)
    assert backbone.name.startswith("efficientnet-lite0-") and backbone.name.endswith("@64")


def test_the_frozen_part_stays_in_eval_mode_while_training(finetuned):
    model, _, _ = finetuned
    model.train()
    try:
        assert not model.backbone._blocks[0].training
        assert not model.backbone._bn1.training  # frozen BatchNorm statistics
        assert model.backbone._blocks[-1].training  # drop-connect on in the trainable part
        assert model.head.training
    finally:
        model.eval()


def test_dihedral_views_are_the_eight_symmetries_of_the_square():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = dihedral_views(x)
    assert len(views) == 8 and torch.equal(views[0], x)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8


def test_it_refuses_too_few_subjects_and_bad_block_counts():
    cubes, counts = _cutouts(n=6)
    with pytest.raises(ValueError, match="at least 10"):
        finetune_image_model(cubes, counts, LAYOUT, FinetuneConfig(min_subjects=10), device=CPU)
    with pytest.raises(ValueError, match="trainable_blocks"):
        FinetunedImageModel(load_backbone(SMALL), QuestionHead(1280, LAYOUT), trainable_blocks=0)
