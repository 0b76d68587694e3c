"""Bulk inference throughput (issue #5 item 6): 64x64x3 FITS on disk -> stored scores, on 2 CPU cores.

``inference_throughput`` is the one measured path, shared with ``bench/models.py``:
N_FILES FITS files written by ``mlcore.io.write_image_fits`` (with a WCS, as ingest stores
them) -> ``mlcore.inference.score_fits_files`` (reader threads, frozen EfficientNet-Lite0,
15 MC-dropout passes of the head, temperatures) -> one ``executemany`` into a sqlite table.

Figures:
- inference_cutouts_per_s_cpu: end to end, wall clock, on this machine as it is;
- inference_cutouts_per_cpu_second: the same run per CPU-second the process got (all its
  threads). Other engineers share the 2 cores, so the wall figure depends on their load
  (inference_load_avg, the 1-minute load average at the end of the run); on an idle
  2-core machine the wall figure is at most twice this one.
- inference_stage_<stage>_per_s / _per_cpu_s: each stage alone on the same files: read
  (``read_image_cube``, one thread), read_astropy (``read_image_fits``, which also parses
  the WCS), preprocess (asinh stretch + resize to 96), backbone (frozen graph),
  backbone_eager (the plain module, for comparison), head (15 MC passes, one batched
  matmul), store (sqlite executemany);
- inference_backbone_batch_<b>_per_cpu_s: the backbone stage at several batch sizes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from mlcore.acquisition import layout_width
from mlcore.inference import mc_head_probs, score_fits_files
from mlcore.io import read_image_cube, read_image_fits, write_image_fits
from mlcore.models.image import ImageBackbone, QuestionHead, preprocess_cutouts
from mlcore.predict import question_slice
from mlcore.simulate import sky
from mlcore.tasktree import label_layout

N_FILES = 2_000
MC_SAMPLES = 15
CPU_THREADS = 2  # the figure is for 2 cores
SEED = 505
BATCH = 256
SWEEP = (64, 128, 256)
SWEEP_N = 512
LAYOUT = label_layout(sky.GALAXY_TREE)


def run(results: Path) -> dict:
    torch.set_num_threads(CPU_THREADS)
    device = torch.device("cpu")
    cubes = _cutouts(N_FILES)
    torch.manual_seed(SEED)
    head = QuestionHead(1280, LAYOUT)  # throughput does not depend on the weights
    temps = {task: 1.5 for task, _ in LAYOUT}
    backbone = ImageBackbone(device=device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_cutout_files(cubes, tmp)
        figures = inference_throughput(paths, backbone, head, LAYOUT, temps, suffix="cpu")
        figures.update(_stages(paths, backbone, head))
    _plot(results / "inference.png", figures)
    return figures


def write_cutout_files(cubes: np.ndarray, directory: str) -> list[str]:
    """One FITS file per (3, H, W) cube, with a WCS, as ingest stores them."""
    paths = []
    for i, cube in enumerate(cubes):
        path = os.path.join(directory, f"cutout-{i:05d}.fits")
        write_image_fits(path, cube, ("g", "r", "i"), wcs=sky.cutout_wcs(150.0 + i * 1e-3, 2.0))
        paths.append(path)
    return paths


def inference_throughput(
    paths: Sequence[str], backbone: ImageBackbone, head, layout, temps: Mapping[str, float], *, suffix: str
) -> dict[str, float]:
    """FITS files -> scores in a sqlite table, end to end: wall and CPU-time throughput and the load."""
    backbone.embed(np.zeros((8, 3, 64, 64), dtype=np.float32))  # one-off: tracing the frozen graph
    root = question_slice(layout, sky.GALAXY_TREE["first"])
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(os.path.join(tmp, "scores.sqlite3"))
        db.execute("CREATE TABLE prediction (path TEXT PRIMARY KEY, answer INTEGER, probability REAL, probs TEXT)")
        wall, cpu = time.perf_counter(), time.process_time()
        scores = score_fits_files(paths, backbone, head, layout, n_samples=MC_SAMPLES, temperatures=temps,
                                  batch_size=BATCH)
        _store(db, scores.paths, scores.probs, root)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stored = db.execute("SELECT COUNT(*) FROM prediction").fetchone()[0]
        db.close()
    if stored != len(paths) or scores.failed:
        raise RuntimeError(f"stored {stored} of {len(paths)} scores; failed: {scores.failed[:3]}")
    return {
        f"inference_cutouts_per_s_{suffix}": len(paths) / wall,
        "inference_cutouts_per_cpu_second": len(paths) / cpu,
        "inference_load_avg": os.getloadavg()[0],
        "inference_files": float(len(paths)),
    }


def _store(db: sqlite3.Connection, paths: Sequence[str], probs: np.ndarray, root: slice) -> None:
    top = probs[:, root]
    rows = [
        (p, int(r.argmax()), float(r.max()), json.dumps(np.round(q, 4).tolist()))
        for p, r, q in zip(paths, top, probs, strict=True)
    ]
    with db:
        db.executemany("INSERT INTO prediction VALUES (?, ?, ?, ?)", rows)


# ---------------------------------------------------------------- the stages one by one


def _timed(name: str, n: int, work: Callable[[], object]) -> tuple[object, dict[str, float]]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return out, {f"inference_stage_{name}_per_s": n / wall, f"inference_stage_{name}_per_cpu_s": n / cpu}


def _stages(paths: list[str], backbone: ImageBackbone, head) -> dict[str, float]:
    figures: dict[str, float] = {}
    cubes, f = _timed("read", len(paths), lambda: np.stack([read_image_cube(p) for p in paths]))
    figures.update(f)
    few = paths[: len(paths) // 4]
    figures.update(_timed("read_astropy", len(few), lambda: [read_image_fits(p) for p in few])[1])
    x, f = _timed("preprocess", len(cubes), lambda: _batched(cubes, lambda c: preprocess_cutouts(c, backbone.config)))
    figures.update(f)
    emb, f = _timed("backbone", len(x), lambda: _batched(x, backbone.pooled_features))
    figures.update(f)
    sub = x[:SWEEP_N].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        figures.update(_timed("backbone_eager", len(sub), lambda: _batched(sub, _eager(backbone)))[1])
    for b in SWEEP:
        _, f = _timed("sweep", len(sub), lambda b=b: _batched(sub, backbone.pooled_features, b))
        figures[f"inference_backbone_batch_{b}_per_cpu_s"] = f["inference_stage_sweep_per_cpu_s"]
    vectors = emb.numpy()
    device = backbone.device
    probs, f = _timed("head", len(emb), lambda: mc_head_probs(head, vectors, LAYOUT, MC_SAMPLES, device=device))
    figures.update(f)
    root = question_slice(LAYOUT, sky.GALAXY_TREE["first"])
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(os.path.join(tmp, "s.sqlite3"))
        db.execute("CREATE TABLE prediction (path TEXT PRIMARY KEY, answer INTEGER, probability REAL, probs TEXT)")
        figures.update(_timed("store", len(paths), lambda: _store(db, paths, probs.mean(axis=2), root))[1])
        db.close()
    assert probs.shape == (len(paths), layout_width(LAYOUT), MC_SAMPLES)
    return figures


def _eager(backbone: ImageBackbone) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: backbone.model.extract_features(x).mean(dim=(2, 3))


def _batched(items, step: Callable, batch: int = BATCH) -> torch.Tensor:
    return torch.cat([torch.as_tensor(step(items[i : i + batch])) for i in range(0, len(items), batch)])


def _cutouts(n: int) -> np.ndarray:
    """Simulated (n, 3, 64, 64) cutouts, cached (GalSim is not what is measured)."""
    path = Path(os.environ.get("SKYLOOP_VAR_DIR", "var")) / "bench-inference-cache" / f"cutouts-{SEED}-{n}.npy"
    if path.exists():
        return np.load(path)
    cubes = np.stack([cube for cube, _ in sky.simulate_cutouts(n, SEED)]).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, cubes)
    return cubes


def _plot(path: Path, figures: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = ["read", "read_astropy", "preprocess", "backbone_eager", "backbone", "head", "store"]
    per_cpu = [figures[f"inference_stage_{s}_per_cpu_s"] for s in stages]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.barh(stages, per_cpu, color="#1d2d44")
    ax.axvline(figures["inference_cutouts_per_cpu_second"], color="#f4a259", label="end to end")
    ax.set_xscale("log")
    ax.set_xlabel("cutouts per CPU-second (an idle 2-core machine: at most x2)")
    ax.set_title(f"bulk inference stages (load average {figures['inference_load_avg']:.1f})")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
