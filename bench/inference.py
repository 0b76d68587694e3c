"""Bulk inference throughput (issue #5 item 6): 64x64x3 FITS on disk -> stored scores, on 2 CPU cores.

``inference_throughput`` is the one measured path, shared with ``bench/models.py``:
N_FILES FITS files written by ``mlcore.io.write_image_fits`` (with a WCS, as ingest stores
them) -> ``mlcore.inference.score_fits_files`` (reader threads, frozen EfficientNet-Lite0,
15 MC-dropout passes of the head, temperatures) -> one ``executemany`` into a sqlite table.

Figures:
- inference_cutouts_per_s_cpu: end to end, wall clock, on this machine as it is, in the
  platform's default arithmetic (``SKYLOOP_CPU_PRECISION=auto``: bfloat16 where the CPU does
  it in hardware, inference_cpu_has_native_bf16, else float32);
- inference_cutouts_per_cpu_second: the same run per CPU-second the process got (all its
  threads). Other engineers share the 2 cores, so the wall figure depends on their load
  (inference_load_avg, the 1-minute load average at the end of the run); on an idle
  2-core machine the wall figure is at most twice this one.
- the same three with ``_fp32`` and ``_bf16``: each arithmetic measured on the same files;
- inference_stage_<stage>_per_s / _per_cpu_s: each stage alone on the same files, run as
  production runs it: read (``read_image_cube``, one thread), read_astropy
  (``read_image_fits``, which also parses the WCS), preprocess (asinh stretch + resize to
  96, in micro-batches), backbone (the float32 frozen graph on micro-batches in
  ``backbone_threads``), embed (preprocess + backbone, ``ImageBackbone.embed``), head (15 MC
  passes, one batched matmul), store (sqlite executemany); and the steps that led to the
  backbone stage: backbone_eager (the plain module), backbone_frozen_padded (frozen graph
  of the package's module: explicit padding layers, no oneDNN Graph fusion),
  backbone_intraop (the default graph one call at a time with 2 intra-op threads);
- inference_backbone_batch_<b>_per_cpu_s: the backbone stage at several micro-batch sizes;
- inference_backbone_mflop_per_cutout, inference_backbone_gflop_per_cpu_s and
  inference_matmul_gflop_per_cpu_s: the backbone's arithmetic (FlopCounterMode, 2 per
  multiply-add), the rate it achieves per CPU-second, and a 1024^3 matmul on one thread in
  the same precision (about what one core can do at best);
- for the bfloat16 graph (``BackboneConfig(cpu_precision="bf16")``; heads trained on its
  embeddings: bench/results/inference_accuracy.json): inference_stage_backbone_bf16_*,
  inference_bf16_cosine_min (the lowest cosine between its embeddings and float32 ones);
  inference_cpu_has_native_bf16 says whether this CPU does bfloat16 dot products in hardware
  (elsewhere the bf16 figures are emulation's).
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
from torch.utils.flop_counter import FlopCounterMode

from mlcore.acquisition import layout_width
from mlcore.inference import mc_head_probs, score_fits_files
from mlcore.io import read_image_cube, read_image_fits, write_image_fits
from mlcore.models.image import (
    CPU_MICRO_BATCH,
    BackboneConfig,
    ImageBackbone,
    QuestionHead,
    _PooledFeatures,
    backbone_threads,
    native_bf16,
    preprocess_cutouts,
)
from mlcore.predict import question_slice
from mlcore.simulate import sky
from mlcore.tasktree import label_layout

N_FILES = 2_000
MC_SAMPLES = 15
CPU_THREADS = 2  # the figure is for 2 cores
SEED = 505
BATCH = 256
SWEEP = (8, 16, 32, 64, 256)
SWEEP_N = 512
LAYOUT = label_layout(sky.GALAXY_TREE)


def run(results: Path) -> dict:
    torch.set_num_threads(CPU_THREADS)
    device = torch.device("cpu")
    cubes = _cutouts(N_FILES)
    torch.manual_seed(SEED)
    head = QuestionHead(1280, LAYOUT)  # throughput does not depend on the weights
    temps = {task: 1.5 for task, _ in LAYOUT}
    backbone = ImageBackbone(BackboneConfig(cpu_precision="fp32"), device=device)
    fast = ImageBackbone(BackboneConfig(cpu_precision="bf16"), device=device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_cutout_files(cubes, tmp)
        exact = inference_throughput(paths, backbone, head, LAYOUT, temps, suffix="cpu")
        low = inference_throughput(paths, fast, head, LAYOUT, temps, suffix="cpu")
        figures = dict(low if native_bf16() else exact)  # what the platform's default ("auto") runs here
        for name, run_figures in (("fp32", exact), ("bf16", low)):
            figures.update({f"{key}_{name}": value for key, value in run_figures.items() if key != "inference_files"})
        figures["inference_cpu_has_native_bf16"] = float(native_bf16())
        figures.update(_stages(paths, backbone, fast, head))
    figures.update(_ceiling(backbone, fast, figures))
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
        scores = score_fits_files(
            paths, backbone, head, layout, n_samples=MC_SAMPLES, temperatures=temps, batch_size=BATCH
        )
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


def _stages(paths: list[str], backbone: ImageBackbone, fast: ImageBackbone, head) -> dict[str, float]:
    figures: dict[str, float] = {}
    cubes, f = _timed("read", len(paths), lambda: np.stack([read_image_cube(p) for p in paths]))
    figures.update(f)
    few = paths[: len(paths) // 4]
    figures.update(_timed("read_astropy", len(few), lambda: [read_image_fits(p) for p in few])[1])
    prep = lambda c: preprocess_cutouts(c, backbone.config)  # noqa: E731
    x, f = _timed("preprocess", len(cubes), lambda: _threaded(cubes, prep))
    figures.update(f)
    emb, f = _timed("backbone", len(x), lambda: _threaded(x, backbone.pooled_features))
    figures.update(f)
    figures.update(_timed("embed", len(cubes), lambda: backbone.embed(cubes))[1])
    sub = x[:SWEEP_N]
    with torch.inference_mode():  # the steps from the plain module to the default graph
        figures.update(_timed("backbone_eager", len(sub), lambda: _threaded(sub, _eager(backbone.model)))[1])
        old = _frozen(_PooledFeatures(backbone.model), sub, oneDNN_fusion=False)
        figures.update(_timed("backbone_frozen_padded", len(sub), lambda: _threaded(sub, old))[1])
    intraop = lambda: _batched(sub, backbone.pooled_features, CPU_MICRO_BATCH)  # noqa: E731
    figures.update(_timed("backbone_intraop", len(sub), intraop)[1])
    low, f = _timed("backbone_bf16", len(x), lambda: _threaded(x, fast.pooled_features))
    figures.update(f)
    figures["inference_bf16_cosine_min"] = float(torch.nn.functional.cosine_similarity(low, emb).min())
    for b in SWEEP:
        _, f = _timed("sweep", len(sub), lambda b=b: _threaded(sub, backbone.pooled_features, b))
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


def _ceiling(backbone: ImageBackbone, fast: ImageBackbone, figures: Mapping[str, float]) -> dict[str, float]:
    """The backbone's arithmetic per cutout, the rate it runs at, and one core's matmul rate in its precision."""
    side = backbone.config.input_size
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        backbone.model.extract_features(torch.zeros((1, 3, side, side)))
    mflop = counter.get_total_flops() / 1e6
    out = {"inference_backbone_mflop_per_cutout": mflop}
    for suffix, dtype in (("", backbone.cpu_dtype), ("_bf16", fast.cpu_dtype)):
        per_cpu_s = figures[f"inference_stage_backbone{suffix}_per_cpu_s"]
        out[f"inference_backbone_gflop_per_cpu_s{suffix}"] = per_cpu_s * mflop / 1e3
        out[f"inference_matmul_gflop_per_cpu_s{suffix}"] = _matmul_gflop_per_cpu_s(dtype)
    return out


def _matmul_gflop_per_cpu_s(dtype: torch.dtype, n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a @ b
        cpu = time.process_time()
        for _ in range(repeats):
            a @ b
        cpu = time.process_time() - cpu
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 * repeats / cpu / 1e9


def _frozen(module: torch.nn.Module, example: torch.Tensor, *, oneDNN_fusion: bool) -> Callable:  # noqa: N803
    """A frozen graph built and warmed up with oneDNN Graph fusion on or off (a TorchScript-wide switch)."""
    was = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(oneDNN_fusion)
    try:
        graph = torch.jit.freeze(torch.jit.trace(module.eval(), example[:CPU_MICRO_BATCH]))
        for _ in range(2):
            graph(example[:CPU_MICRO_BATCH])
    finally:
        torch.jit.enable_onednn_fusion(was)
    return graph


def _eager(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def features(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.extract_features(x).mean(dim=(2, 3))

    return features


def _threaded(items, step: Callable, batch: int = CPU_MICRO_BATCH) -> torch.Tensor:
    """``step`` on micro-batches in ``backbone_threads``, as ``ImageBackbone.embed`` runs the backbone."""
    with backbone_threads() as pool:
        return torch.cat(list(pool.map(step, [items[i : i + batch] for i in range(0, len(items), batch)])))


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

    stages = ["read", "read_astropy", "preprocess", "backbone_eager", "backbone_frozen_padded", "backbone_intraop",
              "backbone", "backbone_bf16", "embed", "head", "store"]  # fmt: skip
    per_cpu = [figures[f"inference_stage_{s}_per_cpu_s"] for s in stages]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.barh(stages, per_cpu, color="#1d2d44")
    ax.axvline(figures["inference_cutouts_per_cpu_second_fp32"], color="#f4a259", label="end to end, float32")
    ax.axvline(figures["inference_cutouts_per_cpu_second_bf16"], color="#c0392b", ls="--", label="end to end, bfloat16")
    ax.set_xscale("log")
    ax.set_xlabel("cutouts per CPU-second (an idle 2-core machine: at most x2)")
    ax.set_title(f"bulk inference stages (load average {figures['inference_load_avg']:.1f})")
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
