"""Bulk inference: stream FITS cutouts from disk in batches, embed them, score them with MC dropout.

Files are read by ``mlcore.io.read_image_cube`` (pixels only, no WCS) in a small thread
pool, one batch ahead of the backbone (torch releases the GIL inside its kernels), which
embeds each batch in micro-batches on all cores (``ImageBackbone.embed``). On a CPU the
backbone still takes ~80% of the CPU time, at ~70% of what one core's float32 matmul
achieves (``bench/inference.py`` has the breakdown and the ceiling).
Results come back as arrays in input order, ready for one bulk write (``bulk_create``,
``executemany``, ``np.savez``). A file that cannot be read is reported in ``failed`` with
the reason and skipped; it never stops the run.

Two speeds matter and must not be confused: FITS -> backbone -> head (new subjects,
bounded by the backbone), and cached embeddings -> MC-dropout head (re-scoring the pool
after each retraining; ``mc_head_probs``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlcore.calibration import calibrate_probs
from mlcore.device import best_device
from mlcore.io import DataFileError, read_image_cube
from mlcore.models.image import ImageBackbone, QuestionHead
from mlcore.predict import mc_dropout_probs, per_question_softmax

Layout = Sequence[tuple[str, int]]


@dataclass
class BulkScores:
    """Scores of the readable files, in input order.

    Attributes
    ----------
    paths : list of str, the N files scored
    embeddings : ndarray, shape (N, D) float32
    probs : ndarray, shape (N, A) float32, MC-dropout mean per-question probabilities
    samples : ndarray, shape (N, A, S) float32, the MC samples (for BALD and friends)
    failed : list of (path, reason) for files that could not be read
    """

    paths: list[str]
    embeddings: np.ndarray
    probs: np.ndarray
    samples: np.ndarray
    failed: list[tuple[str, str]] = field(default_factory=list)


def _read(path: str) -> tuple[str, np.ndarray | None, str | None]:
    try:
        return path, read_image_cube(path), None
    except (DataFileError, OSError) as exc:
        return path, None, str(exc)


def iter_cutout_batches(
    paths: Sequence[str | Path], batch_size: int = 256, io_workers: int = 2
) -> Iterator[list[tuple[str, np.ndarray | None, str | None]]]:
    """Yield ``[(path, cube or None, error or None), ...]`` per batch, reading one batch ahead.

    Parameters
    ----------
    paths : sequence of file paths
    batch_size : int
    io_workers : int
        Reader threads. Two keep a 2-core machine's backbone fed: reading a 64x64x3 cutout
        takes ~0.13 ms of CPU, embedding it ~2.5 ms.
    """
    if batch_size < 1 or io_workers < 1:
        raise ValueError("batch_size and io_workers must be >= 1")
    names = [str(p) for p in paths]
    batches = [names[i : i + batch_size] for i in range(0, len(names), batch_size)]
    with ThreadPoolExecutor(max_workers=io_workers, thread_name_prefix="fits-reader") as pool:
        pending = [pool.submit(_read, p) for p in batches[0]] if batches else []
        for k in range(len(batches)):
            current = pending
            pending = [pool.submit(_read, p) for p in batches[k + 1]] if k + 1 < len(batches) else []
            yield [future.result() for future in current]


def embed_fits_files(
    paths: Sequence[str | Path], backbone: ImageBackbone, batch_size: int = 256, io_workers: int = 2
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Embed FITS cutouts from disk: ``(paths read, (N, D) embeddings, [(path, reason) failed])``.

    Cutouts of different shapes may be mixed (each shape is embedded as its own group;
    the backbone resizes everything to its input size).
    """
    done: list[str] = []
    chunks: list[np.ndarray] = []
    failed: list[tuple[str, str]] = []
    for batch in iter_cutout_batches(paths, batch_size, io_workers):
        failed += [(path, error) for path, cube, error in batch if cube is None]
        good = [(path, cube) for path, cube, _ in batch if cube is not None]
        for shape in dict.fromkeys(cube.shape for _, cube in good):
            group = [(path, cube) for path, cube in good if cube.shape == shape]
            chunks.append(backbone.embed(np.stack([cube for _, cube in group]), batch_size=batch_size))
            done += [path for path, _ in group]
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, backbone.dim), dtype=np.float32)
    # grouping by shape may reorder a batch: restore the input order
    position = {str(p): i for i, p in enumerate(paths)}
    order = np.argsort([position[p] for p in done], kind="stable").astype(int)
    return [done[i] for i in order], embeddings[order], failed


def score_fits_files(
    paths: Sequence[str | Path],
    backbone: ImageBackbone,
    head: nn.Module,
    layout: Layout,
    *,
    n_samples: int = 15,
    temperatures: Mapping[str, float] | None = None,
    batch_size: int = 256,
    io_workers: int = 2,
    seed: int = 0,
) -> BulkScores:
    """FITS on disk -> embeddings -> MC-dropout per-question probabilities, for many files.

    Parameters
    ----------
    paths : sequence of FITS cutout files
    backbone : ImageBackbone (frozen, or a fine-tuned one via ``BackboneConfig.weights_path``)
    head : nn.Module mapping (B, D) embeddings to (B, A) logits, with dropout
    layout : sequence of (task_key, n_answers)
    n_samples : int, MC-dropout passes (Walmsley+2020 use 15)
    temperatures : ``{task: T}`` from ``mlcore.calibration.fit_temperature``, optional;
        applied to every MC sample before averaging.

    Returns
    -------
    BulkScores
    """
    done, embeddings, failed = embed_fits_files(paths, backbone, batch_size, io_workers)
    if isinstance(head, QuestionHead):
        samples = mc_head_probs(head, embeddings, layout, n_samples=n_samples, device=backbone.device, seed=seed)
    else:
        samples = mc_dropout_probs(head, embeddings, layout, n_samples=n_samples, device=backbone.device, seed=seed)
    if temperatures:
        samples = calibrate_probs(samples, temperatures, layout)
    return BulkScores(paths=done, embeddings=embeddings, probs=samples.mean(axis=2), samples=samples, failed=failed)


@torch.inference_mode()
def mc_head_probs(
    head: QuestionHead,
    embeddings: np.ndarray,
    layout: Layout,
    n_samples: int = 15,
    batch_size: int = 4096,
    device: torch.device | None = None,
    seed: int = 0,
) -> np.ndarray:
    """MC-dropout probabilities of a ``QuestionHead`` on cached embeddings: the pool re-scoring path.

    Same distribution as ``mlcore.predict.mc_dropout_probs`` (dropout sits between the
    hidden layer and the output layer), but the deterministic first layer runs once per
    embedding instead of once per sample, and all samples of a batch go through the last
    layer together. The masks come from a generator seeded with ``seed``.

    Returns
    -------
    ndarray, shape (N, A, S), float32
    """
    first, activation, dropout, last = head.net
    if not isinstance(dropout, nn.Dropout):
        raise ValueError("head.net must be Linear -> activation -> Dropout -> Linear")
    device = device or best_device()
    head.to(device).eval()
    x_all = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    generator = torch.Generator(device).manual_seed(seed)
    keep = 1.0 - dropout.p
    out = []
    for start in range(0, x_all.shape[0], batch_size):
        hidden = activation(first(x_all[start : start + batch_size].to(device)))  # (b, H)
        masks = torch.rand((n_samples, *hidden.shape), generator=generator, device=device) < keep  # (S, b, H)
        logits = last(hidden * masks / keep)  # (S, b, A)
        probs = per_question_softmax(logits.reshape(-1, logits.shape[-1]), layout)  # (S*b, A)
        out.append(probs.reshape(n_samples, hidden.shape[0], -1).permute(1, 2, 0).cpu())  # (b, A, S)
    if not out:
        return np.zeros((0, sum(n for _, n in layout), n_samples), dtype=np.float32)
    return torch.cat(out).numpy()
