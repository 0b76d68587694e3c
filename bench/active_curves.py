"""Learning curves on the simulated sky: active acquisition vs random, same training recipe.

Pure mlcore (no database): the production head-on-embeddings recipe (EfficientNet-Lite0
embeddings, ``QuestionHead``, ``mlcore.train.fit`` with its default ``TrainConfig``, MC
dropout with 15 passes). Labels are simulated volunteers' votes: every pool subject has
VOTES votes drawn once per seed from a crowd with spammers and careless people
(``simulated_annotation``, difficulty-dependent), so both arms see exactly the same votes
for the same subject. Accuracy is the root question's argmax against the truth, on a fixed
random evaluation set that is never labelled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlcore import acquisition, batch_selection
from mlcore.models.image import ImageBackbone, QuestionHead
from mlcore.predict import mc_dropout_probs, predict_probs, question_slice
from mlcore.simulate import sky
from mlcore.simulate.volunteers import make_crowd, simulated_annotation
from mlcore.tasktree import add_votes, empty_counts, label_layout
from mlcore.train import TrainConfig, fit

TREE = sky.GALAXY_TREE
LAYOUT = label_layout(TREE)
ROOT = question_slice(LAYOUT, TREE["first"])
VOTES = 5  # Workflow.retire_after's default: the votes a labelled subject carries
CROWD = 60
MC_SAMPLES = 15  # Walmsley+2020


@dataclass(frozen=True)
class Plan:
    n_sky: int = 3000  # simulated cutouts: n_eval for evaluation, the rest is the pool
    n_eval: int = 1000
    sizes: tuple[int, ...] = (50, 100, 150, 200, 300, 400)  # labels at each round (the first: cold start)
    random_share: float = 0.2  # Workflow.random_share's default: part of every active batch is random
    sky_seed: int = 11


@dataclass
class Sky:
    embeddings: np.ndarray  # (N, 1280) float32
    classes: np.ndarray  # (N,) class names
    difficulty: np.ndarray  # (N,)

    @property
    def root_truth(self) -> np.ndarray:
        return np.array([sky.CLASS_ANSWERS[c][TREE["first"]] for c in self.classes])


def sky_embeddings(plan: Plan, cache_dir: Path) -> Sky:
    """Simulate and embed the sky once; later runs read the cache (minutes on CPU otherwise)."""
    path = Path(cache_dir) / f"active-sky-{plan.n_sky}-{plan.sky_seed}.npz"
    if not path.exists():
        backbone = ImageBackbone()
        parts: dict[str, list] = {"embeddings": [], "classes": [], "difficulty": []}
        for start in range(0, plan.n_sky, 500):
            chunk = sky.simulate_cutouts(min(500, plan.n_sky - start), plan.sky_seed * 1000 + start // 500)
            parts["embeddings"].append(backbone.embed(np.stack([cube for cube, _ in chunk])))
            parts["classes"] += [truth["class"] for _, truth in chunk]
            parts["difficulty"] += [truth["difficulty"] for _, truth in chunk]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            embeddings=np.concatenate(parts["embeddings"]),
            classes=np.array(parts["classes"]),
            difficulty=np.array(parts["difficulty"]),
        )
    data = np.load(path)
    return Sky(data["embeddings"].astype(np.float32), data["classes"], data["difficulty"])


def simulated_votes(data: Sky, seed: int) -> np.ndarray:
    """(N, A) vote counts: VOTES distinct volunteers of one crowd per subject."""
    rng = np.random.default_rng(1000 + seed)
    crowd = make_crowd(CROWD, rng)
    out = np.zeros((len(data.classes), sum(n for _, n in LAYOUT)), dtype=np.float32)
    for i, (cls, difficulty) in enumerate(zip(data.classes, data.difficulty, strict=True)):
        counts = empty_counts(TREE)
        for v in rng.choice(CROWD, size=VOTES, replace=False):
            add_votes(counts, simulated_annotation(crowd[v], TREE, sky.CLASS_ANSWERS, str(cls), difficulty, rng))
        out[i] = [c for task, _ in LAYOUT for c in counts[task]]
    return out


def _train(X: np.ndarray, counts: np.ndarray, seed: int):
    import torch

    torch.manual_seed(seed)
    model = QuestionHead(X.shape[1], LAYOUT)
    return fit(model, X, counts, LAYOUT, TrainConfig(seed=seed)).model


def _accuracy(model, X: np.ndarray, truth: np.ndarray) -> float:
    return float((predict_probs(model, X, LAYOUT)[:, ROOT].argmax(axis=1) == truth).mean())


def acquire(
    strategy: str, model, X_pool: np.ndarray, unlabelled: np.ndarray, k: int, plan: Plan, rng: np.random.Generator
) -> np.ndarray:
    """``k`` indices into ``unlabelled`` for the next round."""
    if strategy == "random" or model is None:
        return rng.choice(unlabelled, size=k, replace=False)
    n_random = int(round(plan.random_share * k))
    probs = mc_dropout_probs(model, X_pool[unlabelled], LAYOUT, n_samples=MC_SAMPLES, seed=int(rng.integers(1 << 30)))
    method, _, diverse = strategy.partition("+")
    score = acquisition.priorities(probs, LAYOUT, method=method, rng=rng)
    order = np.argsort(-score, kind="stable")
    if diverse == "kcenter":  # cover the embedding space among the top few hundred
        top = order[: max(6 * k, 300)]
        order = top[batch_selection.k_center_greedy(X_pool[unlabelled[top]], len(top))]
    chosen = list(unlabelled[order[: k - n_random]])
    rest = np.setdiff1d(unlabelled, chosen)
    chosen += list(rng.choice(rest, size=n_random, replace=False))
    return np.asarray(chosen)


def learning_curve(
    strategy: str,
    data: Sky,
    votes: np.ndarray,
    eval_idx: np.ndarray,
    pool_idx: np.ndarray,
    plan: Plan,
    seed: int,
    cold_start: str = "random",
) -> list[tuple[int, float]]:
    """[(labels, accuracy)] for one strategy and seed."""
    rng = np.random.default_rng(seed)
    X_pool = data.embeddings[pool_idx]
    if cold_start == "representative":
        labelled = batch_selection.representative_points(X_pool, plan.sizes[0], seed=seed)
    else:
        labelled = rng.choice(len(pool_idx), size=plan.sizes[0], replace=False)
    X_eval, truth = data.embeddings[eval_idx], data.root_truth[eval_idx]
    curve = []
    for size in plan.sizes[1:]:
        model = _train(X_pool[labelled], votes[pool_idx][labelled], seed)
        curve.append((len(labelled), _accuracy(model, X_eval, truth)))
        unlabelled = np.setdiff1d(np.arange(len(pool_idx)), labelled)
        k = size - len(labelled)
        labelled = np.concatenate([labelled, acquire(strategy, model, X_pool, unlabelled, k, plan, rng)])
    model = _train(X_pool[labelled], votes[pool_idx][labelled], seed)
    curve.append((len(labelled), _accuracy(model, X_eval, truth)))
    return curve


def labels_to_reach(curve: list[tuple[int, float]], target: float) -> float:
    """Labels at which a (mean) curve first reaches ``target``, interpolated linearly; inf if never."""
    for (n0, a0), (n1, a1) in zip(curve, curve[1:], strict=False):
        if a1 >= target > a0:
            return n0 + (n1 - n0) * (target - a0) / (a1 - a0)
    if curve and curve[0][1] >= target:
        return float(curve[0][0])
    return float("inf")


def compare(
    strategies: list[str], plan: Plan, seeds: list[int], cache_dir: Path, cold_starts: dict[str, str] | None = None
) -> dict[str, np.ndarray]:
    """Mean curves {strategy: (rounds, 2) [labels, accuracy]} plus the per-seed accuracies."""
    data = sky_embeddings(plan, cache_dir)
    eval_idx = np.random.default_rng(12345).choice(len(data.classes), size=plan.n_eval, replace=False)
    pool_idx = np.setdiff1d(np.arange(len(data.classes)), eval_idx)
    curves: dict[str, list] = {s: [] for s in strategies}
    for seed in seeds:
        votes = simulated_votes(data, seed)
        for strategy in strategies:
            started = time.perf_counter()
            start_kind = (cold_starts or {}).get(strategy, "random")
            curves[strategy].append(learning_curve(strategy, data, votes, eval_idx, pool_idx, plan, seed, start_kind))
            print(
                f"  seed {seed} {strategy}: {curves[strategy][-1][-1][1]:.3f} ({time.perf_counter() - started:.0f}s)",
                flush=True,
            )
    return {s: np.asarray(c, dtype=float) for s, c in curves.items()}  # (seeds, rounds, 2)
