"""Training the survey-field detector (``mlcore.models.detector.FieldDetector``) on fields and boxes.

AdamW with a linear warm-up and a cosine decay, gradient clipping (FCOS's IoU loss spikes
early), random flips; CUDA + AMP when present, the CPU otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mlcore.average_precision import xywh_to_xyxy
from mlcore.device import amp_enabled, best_device
from mlcore.models.detector import FIELD_CLASSES, FieldDetector, preprocess_fields
from mlcore.train import Progress


@dataclass(frozen=True)
class DetectorTrainConfig:
    """How ``train_detector`` builds and trains a ``FieldDetector``.

    Attributes
    ----------
    classes : class names, in label order; every training label must be one of them.
    epochs, batch_size : passes over the fields and fields per step.
    lr, weight_decay : AdamW; the rate warms up linearly over ``warmup_steps`` then
        follows a cosine to zero at the last step.
    grad_clip : max gradient norm (FCOS's IoU loss spikes early in training).
    augment_flips : random left-right / up-down flips of each field and its boxes. No
        90-degree turns: saturation bleeds run along CCD columns, and a turned field
        would teach the network horizontal bleeds that never happen.
    fpn_channels, head_convs, frozen_blocks : ``FieldDetector`` size (ignored when a
        model is passed in to fine-tune).
    line_classes : at most one class (e.g. "trail") that ``detect`` finds as straight
        lines (``find_trails``) rather than FCOS boxes; FCOS still trains on it, so the
        features learn what a streak is.
    seed : fixes the initial head weights, batch order and flips.
    """

    classes: tuple[str, ...] = FIELD_CLASSES
    epochs: int = 12
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    grad_clip: float = 10.0
    augment_flips: bool = True
    fpn_channels: int = 64
    head_convs: int = 2
    frozen_blocks: int = 3
    line_classes: tuple[str, ...] = ()
    seed: int = 0


def _targets(
    fields: np.ndarray, boxes: Sequence[np.ndarray], labels: Sequence[Sequence[str]], classes: Sequence[str]
) -> list[dict[str, torch.Tensor]]:
    """Validated torchvision targets: boxes (x1, y1, x2, y2) clipped to the field, labels 1..K."""
    if fields.ndim != 4:
        raise ValueError(f"fields must have shape (N, B, H, W), got {fields.shape}")
    if not len(fields) == len(boxes) == len(labels):
        raise ValueError(f"{len(fields)} fields but {len(boxes)} box lists and {len(labels)} label lists")
    height, width = fields.shape[-2:]
    index = {name: k + 1 for k, name in enumerate(classes)}
    out = []
    for i, (field_boxes, field_labels) in enumerate(zip(boxes, labels, strict=True)):
        xyxy = xywh_to_xyxy(field_boxes)
        if len(xyxy) != len(field_labels):
            raise ValueError(f"field {i}: {len(xyxy)} boxes but {len(field_labels)} labels")
        if not np.isfinite(xyxy).all():
            raise ValueError(f"field {i}: boxes must be finite")
        unknown = sorted(set(field_labels) - index.keys())
        if unknown:
            raise ValueError(f"field {i}: labels {unknown} are not among the classes {list(classes)}")
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
        if ((xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])).any():
            raise ValueError(f"field {i}: every box needs a positive width and height inside the field")
        out.append(
            {
                "boxes": torch.as_tensor(xyxy, dtype=torch.float32),
                "labels": torch.as_tensor([index[name] for name in field_labels], dtype=torch.int64),
            }
        )
    return out


def _random_flips(images: torch.Tensor, targets: list[dict], generator: torch.Generator) -> tuple[torch.Tensor, list]:
    """Flip each (3, H, W) image left-right and/or up-down at random, with its boxes."""
    height, width = images.shape[-2:]
    images, flipped = images.clone(), []
    for i, target in enumerate(targets):
        boxes = target["boxes"].clone()  # (n, 4) x1, y1, x2, y2
        if torch.rand(1, generator=generator) < 0.5:
            images[i] = images[i].flip(-1)
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        if torch.rand(1, generator=generator) < 0.5:
            images[i] = images[i].flip(-2)
            boxes[:, [1, 3]] = height - boxes[:, [3, 1]]
        flipped.append({**target, "boxes": boxes})
    return images, flipped


def _warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

    return factor


def train_detector(
    fields: np.ndarray,
    boxes: Sequence[np.ndarray],
    labels: Sequence[Sequence[str]],
    config: DetectorTrainConfig | None = None,
    *,
    model: FieldDetector | None = None,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> FieldDetector:
    """Train a ``FieldDetector`` on fields and their boxes (e.g. consensus boxes).

    Parameters
    ----------
    fields : ndarray, shape (N, B, H, W), all the same size
    boxes : N arrays of shape (n_i, 4), x, y, width, height (array-pixel convention);
        a field may have none
    labels : N sequences of n_i class names from ``config.classes``
    config : DetectorTrainConfig, default ``DetectorTrainConfig()``
    model : FieldDetector, optional
        Fine-tune this one (its classes must equal ``config.classes``) instead of
        starting from the ImageNet backbone and fresh heads.
    device : default ``best_device()``
    progress : callable ``(epoch, epochs, {"loss", "classification", "bbox_regression", "bbox_ctrness"})``

    Returns
    -------
    FieldDetector in eval mode, on ``device``.

    Raises
    ------
    ValueError
        Mismatched lengths, unknown labels, boxes with no area inside the field.
    FloatingPointError
        The training loss became non-finite.
    """
    config = config or DetectorTrainConfig()
    device = device or best_device()
    fields = np.asarray(fields, dtype=np.float32)
    targets = _targets(fields, boxes, labels, config.classes)
    if len(fields) == 0:
        raise ValueError("need at least one field to train on")
    torch.manual_seed(config.seed)
    if model is None:
        layout = [(name, 1) for name in config.classes]
        model = FieldDetector(
            layout, config.fpn_channels, config.head_convs, config.frozen_blocks, line_classes=config.line_classes
        )
    elif model.classes != list(config.classes):
        raise ValueError(f"the model detects {model.classes}, the config asks for {list(config.classes)}")
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    n_batches = math.ceil(len(fields) / config.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(config.warmup_steps, config.epochs * n_batches)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_enabled(device))
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(1, config.epochs + 1):
        sums: dict[str, float] = {}
        for idx in torch.randperm(len(fields), generator=generator).split(config.batch_size):
            images = preprocess_fields(fields[idx.numpy()])  # (b, 3, H, W)
            batch = [targets[i] for i in idx.tolist()]
            if config.augment_flips:
                images, batch = _random_flips(images, batch, generator)
            batch = [{k: v.to(device) for k, v in t.items()} for t in batch]
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp_enabled(device)):
                losses = model(list(images.to(device)), batch)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"detector loss is {loss.item()}; stopping (check boxes and learning rate)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            for name, value in {"loss": loss, **losses}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * len(idx)
        if progress is not None:
            progress(epoch, config.epochs, {name: total / len(fields) for name, total in sums.items()})
    return model.eval()
