"""Checkpoints as a directory: ``model.pt`` (state dict) + ``meta.json`` (nanoGPT style).

``meta.json`` carries everything needed to rebuild the model (kind, constructor config,
label layout), its metrics and the sha256 of ``model.pt``, which ``load_checkpoint``
verifies.

Atomicity: a new directory is assembled under a temporary sibling name and renamed into
place, so it either exists complete or not at all. When overwriting an existing
directory, each file is written to a temporary name and ``os.replace``d, ``model.pt``
first and ``meta.json`` last; a crash in between leaves a sha256 mismatch that
``load_checkpoint`` reports, never a silently wrong model.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from mlcore.hashing import file_sha256
from mlcore.models.detector import FieldDetector
from mlcore.models.dla import DLAFinderNet
from mlcore.models.image import QuestionHead
from mlcore.models.spectrum import SpectrumCNN

MODEL_FILE = "model.pt"
META_FILE = "meta.json"

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "question_head": QuestionHead,
    "spectrum_cnn": SpectrumCNN,
    "dla_finder": DLAFinderNet,
    "field_detector": FieldDetector,
}
_CORE_KEYS = {"kind", "model_config", "layout", "metrics", "created_at", "sha256", "torch_version"}


def build_model(kind: str, model_config: dict, layout: Sequence[tuple[str, int]]) -> nn.Module:
    """Instantiate a model of ``kind`` from its constructor config and label layout."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; expected one of {sorted(BUILDERS)}")
    config = {k: v for k, v in model_config.items() if k != "layout"}
    return BUILDERS[kind](layout=[(str(t), int(n)) for t, n in layout], **config)


def _json_safe(value):
    """Metrics may hold NaN/inf, which strict JSON (and PostgreSQL jsonb) rejects: -> None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _check_config_matches(model: nn.Module, kind: str, model_config: dict, layout) -> None:
    """Refuse to save a checkpoint that ``load_checkpoint`` could not rebuild."""
    rebuilt = build_model(kind, model_config, layout).state_dict()
    actual = model.state_dict()
    if rebuilt.keys() != actual.keys() or any(rebuilt[k].shape != actual[k].shape for k in actual):
        raise ValueError(f"model_config {model_config} does not rebuild the given {kind} model")


def _write_files(directory: Path, model: nn.Module, meta: dict) -> dict:
    """Write model.pt then meta.json into ``directory`` via temp files + os.replace."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp_model = directory / f".{MODEL_FILE}.tmp"
    torch.save(state, tmp_model)
    _fsync_file(tmp_model)
    meta = {**meta, "sha256": file_sha256(tmp_model)}
    tmp_meta = directory / f".{META_FILE}.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=2, allow_nan=False))
    _fsync_file(tmp_meta)
    os.replace(tmp_model, directory / MODEL_FILE)
    os.replace(tmp_meta, directory / META_FILE)
    return meta


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    *,
    kind: str,
    model_config: dict,
    layout: Sequence[tuple[str, int]],
    metrics: dict,
    extra: dict | None = None,
) -> dict:
    """Save ``model`` to ``directory/model.pt`` and ``directory/meta.json``.

    Parameters
    ----------
    directory : path
        Created if missing (parents too).
    model : QuestionHead or SpectrumCNN
    kind : {"question_head", "spectrum_cnn"}
    model_config : dict
        Constructor arguments other than ``layout`` (``model.model_config()``).
    layout : sequence of (task_key, n_answers)
    metrics : dict
        Non-finite floats are stored as ``null``.
    extra : dict, optional
        More top-level keys (e.g. backbone name, training config); must not collide
        with the standard ones.

    Returns
    -------
    dict, the meta written to ``meta.json``.
    """
    extra = dict(extra or {})
    clash = _CORE_KEYS & extra.keys()
    if clash:
        raise ValueError(f"extra must not override checkpoint keys {sorted(clash)}")
    _check_config_matches(model, kind, model_config, layout)
    meta = _json_safe(
        {
            "kind": kind,
            "model_config": dict(model_config),
            "layout": [[str(t), int(n)] for t, n in layout],
            "metrics": dict(metrics),
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "torch_version": torch.__version__,
            **extra,
        }
    )
    directory = Path(directory)
    if directory.exists():
        return _write_files(directory, model, meta)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        meta = _write_files(staging, model, meta)
        os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def load_checkpoint(directory: str | Path, device: torch.device | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model saved by ``save_checkpoint``, verified and in eval mode.

    Parameters
    ----------
    directory : path
    device : torch.device, optional
        Where to put the model (default CPU).

    Returns
    -------
    (model, meta)

    Raises
    ------
    FileNotFoundError
        ``model.pt`` or ``meta.json`` is missing.
    ValueError
        The sha256 of ``model.pt`` does not match ``meta.json`` (tampered or torn
        write), or the kind is unknown.
    """
    directory = Path(directory)
    meta = json.loads((directory / META_FILE).read_text())
    model_path = directory / MODEL_FILE
    actual = file_sha256(model_path)
    if actual != meta.get("sha256"):
        raise ValueError(f"{model_path} sha256 {actual[:12]}... does not match meta.json; refusing to load")
    model = build_model(meta["kind"], meta["model_config"], meta["layout"])
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device or torch.device("cpu")).eval(), meta
