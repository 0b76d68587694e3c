"""The active-learning benchmark (issue #6): label saving, selector latency, repeats, label -> priorities.

Figures (bench/results/active.json):
- label_saving: 1 - N_active / N_random at equal accuracy (Walmsley+2020's statistic). The
  accuracy level is random's mean accuracy at the largest budget; N for each arm is where
  its mean learning curve first reaches it (linear interpolation). Curves from
  bench/active_curves.py: SEEDS seeds, the same training recipe for both arms, a fixed
  random evaluation set, labels = simulated volunteers' votes (not the truth).
- acc_random_final / acc_active_final, labels_random / labels_active: the curves' ends and
  the two N of the statistic.
- select_p50_ms_*, select_p99_ms_* at 1e4, 1e5, 1e6 active subjects: one ``subject_next_for``
  call (Redis queue + the database query that loads and checks the Subject) for a volunteer
  who has classified 10^4 subjects scattered through the queue (5 x 10^3 at 1e4);
  ``*_seen_at_top``: the same count but exactly the top of the queue (the worst case).
- repeats_in_1e5_draws: subjects served to a volunteer who had classified them, or after
  retirement, in 10^5 draws by 200 concurrent volunteers (goal 0);
  overclassified_votes_share: votes past ``retire_after``.
- seconds_label_to_priorities: a worker's time from the threshold-crossing label to the new
  priorities live in Redis for 10^4 subjects on CPU (train the head on cached embeddings,
  MC-dropout score the pool, write priorities, publish the queue); broker pickup excluded
  (bench/loop.py measures it end to end).
- select_db_postgresql / select_queue_redis: 1 when the selector ran on them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.utils import timezone

from bench import active_curves as curves
from bench import active_select as select
from labeler.classifications import queue
from labeler.classifications.models import Consensus
from labeler.learning import datasets, services, triggers
from labeler.learning.models import ModelVersion
from labeler.subjects.models import SubjectEmbedding
from mlcore.tasktree import label_layout

SEEDS = [0, 1, 2, 3, 4]
ACTIVE = "powerbald"  # PowerBALD (Kirsch+2023): beat bald and bald+kcenter in our single-seed probe
POOL_FOR_PRIORITIES = 10_000
LABELS_FOR_PRIORITIES = 200


def run(results: Path) -> dict:
    figures: dict[str, float] = {}
    plan = curves.Plan()
    cache = Path(settings.VAR_DIR) / "bench-cache"
    t0 = time.perf_counter()
    mean_curves = curves.compare(["random", ACTIVE], plan, SEEDS, cache)
    figures.update(_label_saving(mean_curves["random"], mean_curves[ACTIVE]))
    figures["seeds"] = len(SEEDS)
    figures["curves_seconds"] = time.perf_counter() - t0
    select_figures, samples = select.selector_figures()  # alone: python bench/run.py active_select
    figures.update(select_figures)
    figures["seconds_label_to_priorities"] = _label_to_priorities(curves.sky_embeddings(plan, cache))
    _plot(results / "active.png", mean_curves, figures, samples)
    return figures


def _label_saving(random_runs: np.ndarray, active_runs: np.ndarray) -> dict:
    """runs: (seeds, rounds, 2) [labels, accuracy]."""
    random_mean, active_mean = random_runs.mean(axis=0), active_runs.mean(axis=0)
    target = float(random_mean[-1, 1])
    n_random = curves.labels_to_reach([tuple(p) for p in random_mean], target)
    n_active = curves.labels_to_reach([tuple(p) for p in active_mean], target)
    return {
        "label_saving": 1.0 - n_active / n_random,
        "labels_random": n_random,
        "labels_active": n_active,
        "target_accuracy": target,
        "acc_random_final": target,
        "acc_active_final": float(active_mean[-1, 1]),
        "acc_active_final_std": float(active_runs[:, -1, 1].std()),
        "acc_random_final_std": float(random_runs[:, -1, 1].std()),
    }


def _label_to_priorities(sky_data: curves.Sky) -> float:
    """Time a worker takes from enough labels to the new order live in the queue, for 10^4 subjects."""
    rng = np.random.default_rng(3)
    workflow = select.new_workflow("bench-priorities")
    workflow.train_min_new_labels = LABELS_FOR_PRIORITIES
    workflow.save()
    ids = select.add_subjects(workflow, POOL_FOR_PRIORITIES, rng)
    backbone = datasets.image_backbone().name
    pick = rng.integers(len(sky_data.classes), size=len(ids))  # 10^4 subjects share the 3000 embedded cutouts
    SubjectEmbedding.objects.bulk_create(
        (
            SubjectEmbedding(subject_id=sid, backbone=backbone, vector=sky_data.embeddings[j].astype("<f4").tobytes())
            for sid, j in zip(ids, pick, strict=True)
        ),
        batch_size=2000,
    )
    votes = curves.simulated_votes(sky_data, seed=7)
    layout = label_layout(workflow.task_tree)
    Consensus.objects.bulk_create(
        Consensus(workflow=workflow, subject_id=sid, n_classifications=curves.VOTES, counts=_by_task(votes[j], layout))
        for sid, j in zip(ids[:LABELS_FOR_PRIORITIES], pick[:LABELS_FOR_PRIORITIES], strict=True)
    )
    if settings.SKYLOOP_QUEUE:
        queue.queue_publish(workflow_id=workflow.id, version=0)
    t0 = time.perf_counter()
    version = triggers.training_maybe_queue(workflow=workflow)  # the trigger a submit runs (message on commit)
    version = services.model_version_claim(model_version_id=version.id)
    services.model_version_train(model_version=version)
    elapsed = time.perf_counter() - t0
    if settings.SKYLOOP_QUEUE:
        assert queue.queue_info(workflow_id=workflow.id)["version"] == version.id, "priorities not live in Redis"
    ModelVersion.objects.filter(pk=version.pk).update(created_at=timezone.now())
    return elapsed


def _by_task(row: np.ndarray, layout) -> dict[str, list[int]]:
    out, start = {}, 0
    for task, n in layout:
        out[task] = [int(v) for v in row[start : start + n]]
        start += n
    return out


def _plot(path: Path, runs: dict[str, np.ndarray], figures: dict, samples: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, colour in (("random", "#9aa5b1"), (ACTIVE, "#f4a259")):
        mean, std = runs[name].mean(axis=0), runs[name][:, :, 1].std(axis=0)
        left.plot(mean[:, 0], mean[:, 1], "o-", color=colour, label=f"{name} ({len(SEEDS)} seeds)")
        left.fill_between(mean[:, 0], mean[:, 1] - std, mean[:, 1] + std, color=colour, alpha=0.25)
    left.axhline(figures["target_accuracy"], color="k", ls=":", lw=0.8)
    left.set_xlabel("labelled subjects (5 simulated volunteer votes each)")
    left.set_ylabel("root-question accuracy (fixed evaluation set)")
    left.set_title(f"label saving {figures['label_saving']:.2f} at accuracy {figures['target_accuracy']:.3f}")
    left.legend()
    for label, lat in samples.items():
        right.hist(lat, bins=np.logspace(-1, 2, 60), histtype="step", label=f"{label} subjects")
    right.set_xscale("log")
    right.set_xlabel("subject_next_for (ms), volunteer with 10^4 seen")
    right.set_title(f"p99 at 1e6: {figures['select_p99_ms_1e6']:.2f} ms; repeats {figures['repeats_in_1e5_draws']:.0f}")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
