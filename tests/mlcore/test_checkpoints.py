"""Checkpoint directories: round trip, integrity, atomic writes."""

import json

import numpy as np
import pytest
import torch

from mlcore.checkpoints import load_checkpoint, save_checkpoint
from mlcore.models.image import QuestionHead
from mlcore.models.spectrum import SpectrumCNN

LAYOUT = [("T0", 2), ("T1", 3)]


def _save_head(directory):
    torch.manual_seed(0)
    head = QuestionHead(8, LAYOUT, hidden=16)
    meta = save_checkpoint(
        directory,
        head,
        kind="question_head",
        model_config=head.model_config(),
        layout=LAYOUT,
        metrics={"val_loss": 0.5, "val_accuracy": float("nan")},
        extra={"backbone": "efficientnet-lite0-imagenet@128"},
    )
    return head, meta


def test_it_round_trips_a_question_head_with_identical_outputs(tmp_path):
    head, meta = _save_head(tmp_path / "v1")
    loaded, loaded_meta = load_checkpoint(tmp_path / "v1")
    x = torch.randn(4, 8)
    assert torch.equal(head.eval()(x), loaded(x))
    assert not loaded.training
    assert loaded_meta == meta
    assert meta["layout"] == [["T0", 2], ["T1", 3]]
    assert meta["metrics"]["val_accuracy"] is None  # NaN is not valid JSON
    assert meta["backbone"] == "efficientnet-lite0-imagenet@128"
    assert len(meta["sha256"]) == 64
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == ["meta.json", "model.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]  # no staging leftovers


def test_it_round_trips_a_spectrum_cnn(tmp_path):
    torch.manual_seed(0)
    model = SpectrumCNN(LAYOUT, n_pix=64, width=4)
    save_checkpoint(tmp_path, model, kind="spectrum_cnn", model_config=model.model_config(), layout=LAYOUT, metrics={})
    loaded, meta = load_checkpoint(tmp_path)
    x = torch.randn(3, 2, 64)
    assert torch.equal(model.eval()(x), loaded(x))
    assert meta["kind"] == "spectrum_cnn"


def test_it_detects_a_tampered_model_file(tmp_path):
    _save_head(tmp_path / "v1")
    path = tmp_path / "v1" / "model.pt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(tmp_path / "v1")


def test_it_refuses_a_config_that_cannot_rebuild_the_model(tmp_path):
    head = QuestionHead(8, LAYOUT, hidden=16)
    with pytest.raises(ValueError, match="rebuild"):
        save_checkpoint(
            tmp_path / "bad", head, kind="question_head", model_config={"in_dim": 8}, layout=LAYOUT, metrics={}
        )
    assert not (tmp_path / "bad").exists()


def test_it_overwrites_an_existing_checkpoint_consistently(tmp_path):
    _save_head(tmp_path)
    torch.manual_seed(5)
    other = QuestionHead(8, LAYOUT, hidden=16)
    meta = save_checkpoint(
        tmp_path,
        other,
        kind="question_head",
        model_config=other.model_config(),
        layout=LAYOUT,
        metrics={"val_loss": np.float32(0.25)},
    )
    loaded, _ = load_checkpoint(tmp_path)
    assert torch.equal(loaded.net[0].weight, other.net[0].weight)
    assert json.loads((tmp_path / "meta.json").read_text())["metrics"]["val_loss"] == pytest.approx(0.25)
    assert meta["sha256"] == json.loads((tmp_path / "meta.json").read_text())["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "model.pt"]
