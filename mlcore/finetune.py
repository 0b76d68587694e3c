"""Full transfer learning for the image CNN: head first on cached embeddings, then the upper blocks.

Walmsley+2022 (Zoobot) fine-tune a pretrained EfficientNet on volunteer votes; the
two-phase recipe (train the new head on frozen features, then unfreeze the top of the
backbone at a lower learning rate) is the usual one for transfer learning (Howard &
Ruder 2018; Kornblith+2019). Galaxies have no "up", so training sees random
rotations by 90 degrees and flips (the dihedral group of the square, as Dieleman+2015).

Why it is cheap on a CPU: the lower blocks stay frozen (and in eval mode), so their
output for each of the 8 dihedral views of every cutout is computed once and cached;
every epoch then picks one view per cutout and runs only the unfrozen upper blocks.
This is exactly random-dihedral augmentation of the input, not an approximation.
BatchNorm statistics stay frozen everywhere (small batches would make them noisy);
BatchNorm scales and shifts of the upper blocks are trained.

The result plugs into the existing pieces: ``save_backbone_weights`` writes a
state-dict file that ``mlcore.models.image.BackboneConfig(weights_path=...)`` loads
(its embeddings get their own cache key), and ``model.head`` is an ordinary
``QuestionHead`` for ``mlcore.checkpoints`` and MC-dropout prediction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlcore.device import amp_enabled, best_device
from mlcore.models.image import DEFAULT_BACKBONE, BackboneConfig, QuestionHead, load_backbone, preprocess_cutouts
from mlcore.train import Progress, TrainConfig, evaluate, fit, split_indices, train_one_epoch

Layout = Sequence[tuple[str, int]]
N_VIEWS = 8  # the dihedral group of the square: 4 rotations x (flipped or not)


@dataclass
class FinetuneConfig:
    """Hyper-parameters of ``finetune_image_model``.

    Attributes
    ----------
    head : TrainConfig
        Phase 1, the head on cached embeddings. Its ``val_fraction`` and ``seed`` also fix
        the train/validation split of phase 2, so the validation subjects never train.
    trainable_blocks : int
        How many of EfficientNet-Lite0's 16 MBConv blocks (counted from the top) are
        unfrozen, together with the final 1x1 convolution. 5 = the last two stages
        (3x3 maps at 96 px), about 70% of the backbone's weights but ~10% of its FLOPs.
    lr : float
        Phase 2 AdamW learning rate for the upper blocks and the head (10x below the head's).
    epochs, patience : phase 2 length and early stopping (on the validation loss; the
        head-only weights count as epoch 0, so fine-tuning never ends worse on validation).
    min_subjects : int
        Fewer labelled subjects raise ValueError: fine-tuning millions of weights on a
        handful of labels over-fits; the head alone is the right model then.
    """

    head: TrainConfig = field(default_factory=TrainConfig)
    backbone: BackboneConfig = DEFAULT_BACKBONE
    trainable_blocks: int = 5
    lr: float = 1e-4
    weight_decay: float = 1e-4
    epochs: int = 12
    patience: int = 3
    batch_size: int = 64
    hidden: int = 256
    dropout: float = 0.3
    min_subjects: int = 500


class FinetunedImageModel(nn.Module):
    """EfficientNet-Lite0 split into a frozen lower part and a trainable upper part, plus a ``QuestionHead``.

    ``forward`` takes preprocessed images (B, 3, S, S) (``preprocess_cutouts``) and
    returns logits (B, A).
    """

    def __init__(self, backbone: nn.Module, head: QuestionHead, trainable_blocks: int):
        super().__init__()
        n_blocks = len(backbone._blocks)
        if not 1 <= trainable_blocks <= n_blocks:
            raise ValueError(f"trainable_blocks must be in [1, {n_blocks}], got {trainable_blocks}")
        self.backbone = backbone
        self.head = head
        self.split = n_blocks - trainable_blocks
        for param in self.lower_parameters():
            param.requires_grad_(False)

    def lower_parameters(self) -> list[nn.Parameter]:
        bb = self.backbone
        modules = [bb._conv_stem, bb._bn0, *bb._blocks[: self.split]]
        return [p for m in modules for p in m.parameters()]

    def train(self, mode: bool = True) -> FinetunedImageModel:
        super().train(mode)
        for module in self.modules():  # frozen BatchNorm statistics everywhere
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        self.backbone._blocks[: self.split].eval()  # and no drop-connect in the frozen part
        return self

    def _block(self, idx: int, x: torch.Tensor) -> torch.Tensor:
        # stochastic depth as in EfficientNet.extract_features: rate grows with depth
        rate = (self.backbone._global_params.drop_connect_rate or 0.0) * idx / len(self.backbone._blocks)
        return self.backbone._blocks[idx](x, drop_connect_rate=rate)

    def lower(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, C, h, w) features entering the first trainable block."""
        bb = self.backbone
        x = bb._swish(bb._bn0(bb._conv_stem(x)))
        for idx in range(self.split):
            x = self._block(idx, x)
        return x

    def upper(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) lower features -> (B, 1280) pooled embeddings."""
        bb = self.backbone
        x = features
        for idx in range(self.split, len(bb._blocks)):
            x = self._block(idx, x)
        x = bb._swish(bb._bn1(bb._conv_head(x)))  # (B, 1280, h', w')
        return x.float().mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.upper(self.lower(x)))


class _UpperStage(nn.Module):
    """Upper blocks + head on cached lower features (what phase 2 trains); shares the model's weights."""

    def __init__(self, model: FinetunedImageModel):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.upper(features.float()))


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations/reflections of square images (B, C, H, W); the first is ``x`` itself."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"images must be square, got {tuple(x.shape[-2:])}")
    rotations = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rotations + [r.flip(-1) for r in rotations]


@torch.inference_mode()
def lower_feature_views(
    model: FinetunedImageModel, cubes: np.ndarray, config: BackboneConfig, device: torch.device, batch_size: int = 64
) -> torch.Tensor:
    """Frozen lower-block features of all 8 dihedral views, (N, 8, C, h, w) float16 on the CPU."""
    model.to(device).eval()
    chunks = []
    for start in range(0, cubes.shape[0], batch_size):
        x = preprocess_cutouts(cubes[start : start + batch_size], config).to(device)  # (b, 3, S, S)
        x = torch.cat(dihedral_views(x)).contiguous(memory_format=torch.channels_last)  # (8b, 3, S, S)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp_enabled(device)):
            features = model.lower(x)  # (8b, C, h, w), view-major
        features = features.reshape(N_VIEWS, -1, *features.shape[1:]).transpose(0, 1)  # (b, 8, C, h, w)
        chunks.append(features.to("cpu", torch.float16))
    return torch.cat(chunks)


@torch.inference_mode()
def _embed_features(model: FinetunedImageModel, features: torch.Tensor, device, batch_size: int) -> np.ndarray:
    model.eval()
    out = [
        model.upper(features[s : s + batch_size].to(device).float()).cpu() for s in range(0, len(features), batch_size)
    ]
    return torch.cat(out).numpy()


def _check_inputs(cubes: np.ndarray, counts: np.ndarray, config: FinetuneConfig) -> None:
    if cubes.ndim != 4 or cubes.shape[-1] != cubes.shape[-2]:
        raise ValueError(f"cubes must be (N, B, H, W) square cutouts, got shape {cubes.shape}")
    if counts.ndim != 2 or counts.shape[0] != cubes.shape[0]:
        raise ValueError(f"counts must be (N, A) with N = {cubes.shape[0]}, got shape {counts.shape}")
    if cubes.shape[0] < config.min_subjects:
        raise ValueError(f"fine-tuning needs at least {config.min_subjects} labelled subjects, got {cubes.shape[0]}")


def finetune_image_model(
    cubes: np.ndarray,
    counts: np.ndarray,
    layout: Layout,
    config: FinetuneConfig | None = None,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> tuple[FinetunedImageModel, dict[str, float]]:
    """Train a question head on frozen embeddings, then fine-tune the upper backbone blocks with it.

    Parameters
    ----------
    cubes : ndarray, shape (N, B, H, W)
        Sky-subtracted square cutouts (as for ``ImageBackbone.embed``).
    counts : ndarray, shape (N, A)
        Vote counts per answer, columns in ``layout`` order.
    layout : sequence of (task_key, n_answers)
    config : FinetuneConfig, default ``FinetuneConfig()``
    device : torch.device, default ``best_device()``
    progress : callable ``(epoch, epochs, metrics)``, optional
        Called per epoch of each phase; ``metrics["phase"]`` is 1 (head) or 2 (fine-tune).

    Returns
    -------
    (model, metrics)
        The model in eval mode with the best validation weights. ``metrics``:
        ``head_val_loss``/``head_val_accuracy`` after phase 1, ``val_loss``/``val_accuracy``
        at the best phase-2 epoch (root question, against the argmax of the votes),
        ``best_epoch`` (0 = fine-tuning did not beat the head), ``epochs_run``,
        ``n_train``, ``n_val``, ``seconds_cache``, ``seconds_head``, ``seconds_finetune``,
        ``seconds``.

    Raises
    ------
    ValueError
        Bad shapes, fewer than ``config.min_subjects`` subjects (and everything
        ``mlcore.train.fit`` rejects).
    FloatingPointError
        A non-finite training loss.
    """
    config = config or FinetuneConfig()
    device = device or best_device()
    cubes = np.asarray(cubes, dtype=np.float32)
    counts = np.ascontiguousarray(counts, dtype=np.float32)
    _check_inputs(cubes, counts, config)
    started = time.perf_counter()
    head = QuestionHead(1280, layout, hidden=config.hidden, dropout=config.dropout)
    model = FinetunedImageModel(load_backbone(config.backbone), head, config.trainable_blocks)
    model.to(device, memory_format=torch.channels_last)  # faster depthwise convolutions (see ImageBackbone)
    views = lower_feature_views(model, cubes, config.backbone, device, config.batch_size)  # (N, 8, C, h, w)
    t_cache = time.perf_counter()

    embeddings = _embed_features(model, views[:, 0], device, config.batch_size)  # identity view, (N, 1280)
    phase1 = fit(head, embeddings, counts, layout, config.head, device=device, progress=_tagged(progress, phase=1))
    t_head = time.perf_counter()

    train_idx, val_idx = split_indices(len(counts), config.head.val_fraction, config.head.seed)
    best_epoch, epochs_run, val = _finetune_upper(
        model, views, counts, layout, train_idx, val_idx, config, device, progress
    )
    model.eval()
    done = time.perf_counter()
    metrics = {
        "head_val_loss": phase1.metrics["val_loss"],
        "head_val_accuracy": phase1.metrics["val_accuracy"],
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "best_epoch": float(best_epoch),
        "epochs_run": float(epochs_run),
        "n_train": float(len(train_idx)),
        "n_val": float(len(val_idx)),
        "seconds_cache": t_cache - started,
        "seconds_head": t_head - t_cache,
        "seconds_finetune": done - t_head,
        "seconds": done - started,
    }
    return model, metrics


def _finetune_upper(model, views, counts, layout, train_idx, val_idx, config: FinetuneConfig, device, progress):
    """Phase 2: AdamW on the upper blocks + head, one random dihedral view per cutout per epoch.

    Returns ``(best_epoch, epochs_run, validation metrics at the best epoch)``; the best
    weights (epoch 0 = the phase-1 model) are loaded into ``model``.
    """
    stage = _UpperStage(model).to(device)
    params = [p for p in stage.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_enabled(device))
    step_config = TrainConfig(batch_size=config.batch_size, seed=config.head.seed)
    generator = torch.Generator().manual_seed(config.head.seed)
    train_views, c_tr = views[train_idx], torch.from_numpy(counts[train_idx])
    val_x, c_va = views[val_idx, 0], torch.from_numpy(counts[val_idx])

    def validate() -> dict[str, float]:
        if len(val_idx) == 0:
            return {"loss": float("nan"), "accuracy": float("nan")}
        return evaluate(stage, val_x, c_va, layout, config.batch_size, device)

    val = validate()
    best = {"score": _score(val["loss"]), "epoch": 0, "val": val, "state": _trainable_snapshot(model)}
    epoch = 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.head.seed)  # dropout and drop-connect masks
        for epoch in range(1, config.epochs + 1):
            pick = torch.randint(0, N_VIEWS, (len(train_idx),), generator=generator)
            x_epoch = train_views[torch.arange(len(train_idx)), pick]  # (n_train, C, h, w)
            train_loss = train_one_epoch(
                stage, x_epoch, c_tr, layout, optimizer, scaler, step_config, device, generator
            )
            val = validate()
            if progress is not None:
                progress(epoch, config.epochs, {"phase": 2, "train_loss": train_loss, "val_loss": val["loss"]})
            score = _score(val["loss"], train_loss)
            if score < best["score"]:
                best = {"score": score, "epoch": epoch, "val": val, "state": _trainable_snapshot(model)}
            elif epoch - best["epoch"] >= config.patience:
                break
    model.load_state_dict(best["state"], strict=False)
    return best["epoch"], epoch, best["val"]


def _score(val_loss: float, train_loss: float = math.inf) -> float:
    """Early-stopping score: the validation loss, or the training loss when nothing is held out."""
    return val_loss if math.isfinite(val_loss) else train_loss


def _trainable_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    frozen = {id(p) for p in model.lower_parameters()}
    return {k: v.detach().clone() for k, v in model.named_parameters() if id(v) not in frozen}


def _tagged(progress: Progress | None, phase: int) -> Progress | None:
    if progress is None:
        return None
    return lambda epoch, total, metrics: progress(epoch, total, {"phase": phase, **metrics})


def save_backbone_weights(model: FinetunedImageModel, path: str | Path) -> Path:
    """Write the fine-tuned backbone as a state-dict file for ``BackboneConfig(weights_path=...)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}, tmp)
    tmp.replace(path)
    return path
