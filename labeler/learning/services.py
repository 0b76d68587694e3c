"""The learning loop in the worker: embed, train, register, score the pool, publish priorities.

Everything here runs in a Celery worker (``labeler.learning.tasks``) on the ``gpu`` queue and
imports torch; what the web process runs (when to train) is in ``triggers.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from labeler.classifications import queue
from labeler.learning import datasets
from labeler.learning.models import ModelVersion, Prediction
from labeler.learning.triggers import LEASE, training_maybe_queue
from labeler.subjects.models import Subject, SubjectEmbedding
from labeler.workflows.models import SubjectState, Workflow
from mlcore import acquisition, batch_selection, checkpoints, tasktree
from mlcore.consensus import model_confusion
from mlcore.predict import mc_dropout_probs, question_slice
from mlcore.train import TrainConfig, fit, split_indices

log = logging.getLogger(__name__)


def embeddings_precompute(*, subject_ids: list[int]) -> int:
    """Compute and cache missing embeddings; subjects deleted meanwhile are skipped."""
    existing = list(Subject.objects.filter(pk__in=subject_ids, kind=Subject.Kind.IMAGE).values_list("pk", flat=True))
    datasets.embeddings(existing, datasets.image_backbone())
    for workflow in Workflow.objects.filter(active=True, kind=Workflow.Kind.IMAGE, states__subject_id__in=existing[:1]):
        cold_start_prioritise(workflow=workflow)
    return len(existing)


COLD_START_BASE = 2.0  # above the random [0, 1) priorities given at ingest
COLD_START_SAMPLE = 20_000  # k-means on at most this many embeddings


def cold_start_prioritise(*, workflow: Workflow) -> int:
    """Before the first model, serve typical objects first: the embeddings' k-means representatives.

    ``train_min_new_labels`` subjects (what the first model needs) nearest the centroids of
    a k-means on the cached embeddings get priorities above the random cold-start order, so
    the first model learns from the bulk of the sky rather than from whatever came first.
    Runs once, while no model has scored the pool; returns the number prioritised.
    """
    if ModelVersion.objects.filter(workflow=workflow, scored_at__isnull=False).exists():
        return 0
    unscored = SubjectState.objects.filter(
        workflow=workflow, status=SubjectState.Status.ACTIVE, priority_version__isnull=True
    )
    if unscored.filter(priority__gte=COLD_START_BASE).exists():
        return 0  # already done
    rows = list(
        SubjectEmbedding.objects.filter(subject__states__in=unscored, backbone=datasets.image_backbone().name)
        .order_by("?")
        .values_list("subject_id", "vector")[:COLD_START_SAMPLE]
    )
    k = min(workflow.train_min_new_labels, len(rows))
    if k < 2:
        return 0
    X = np.stack([np.frombuffer(bytes(vector), dtype="<f4") for _, vector in rows])  # (N, D)
    picks = batch_selection.representative_points(X, k, seed=workflow.id)
    with transaction.atomic():
        for rank, index in enumerate(picks):  # the most typical first: k-means order is arbitrary
            unscored.filter(subject_id=rows[index][0]).update(priority=COLD_START_BASE + (k - rank) / k)
    if settings.SKYLOOP_QUEUE:
        queue.queue_publish(workflow_id=workflow.id, version=0)
    log.info("cold start of %s: %d representative subjects first", workflow, k)
    return k


def model_version_claim(*, model_version_id: int) -> ModelVersion | None:
    """Mark a queued (or orphaned) version as training; None if another run holds it or it is done."""
    now = timezone.now()
    claimable = Q(status=ModelVersion.Status.QUEUED) | (
        Q(status__in=ModelVersion.IN_PROGRESS) & (Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - LEASE))
    )
    claimed = ModelVersion.objects.filter(claimable, id=model_version_id).update(
        status=ModelVersion.Status.TRAINING, started_at=now, heartbeat_at=now, progress=0.0
    )
    if claimed != 1:  # another delivery of the same task got there first, or it has finished
        return None
    return ModelVersion.objects.select_related("workflow").get(id=model_version_id)


def model_version_train(*, model_version: ModelVersion) -> ModelVersion:
    """Train, register and activate one version, then score the active pool with it."""
    try:
        trained_on = _train_and_register(model_version)
        model_version_score_pool(model_version=model_version, trained_on=trained_on)
        _activate(model_version)
    except Exception as exc:
        ModelVersion.objects.filter(pk=model_version.pk).update(
            status=ModelVersion.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000]
        )
        raise
    # Labels that arrived while this version trained were debounced: they may already be enough.
    training_maybe_queue(workflow=model_version.workflow)
    return model_version


def _progress(model_version: ModelVersion, value: float) -> None:
    """Progress for the pages, and the heartbeat that keeps the run's lease."""
    ModelVersion.objects.filter(pk=model_version.pk).update(progress=round(value, 3), heartbeat_at=timezone.now())


def _train_and_register(version: ModelVersion) -> set[int]:
    """Fit, save the checkpoint, measure the model as an agent; returns the training subjects."""
    workflow = version.workflow
    layout = tasktree.label_layout(workflow.task_tree)
    subject_ids, counts = datasets.labelled_counts(workflow, layout)
    X, backbone = datasets.features(workflow, subject_ids)
    _progress(version, 0.2)
    model = datasets.new_model(workflow, layout, X.shape[1:], seed=version.number)
    config = TrainConfig(seed=version.number)

    def on_epoch(epoch: int, total: int, _metrics: dict) -> None:
        if epoch % 5 == 0:
            _progress(version, 0.2 + 0.5 * epoch / total)

    result = fit(model, X, counts, layout, config, progress=on_epoch)
    directory = Path(settings.MODEL_ROOT) / f"workflow-{workflow.id}" / f"v{version.number}"
    meta = checkpoints.save_checkpoint(
        directory,
        result.model,
        kind=version.kind,
        model_config=result.model.model_config(),
        layout=layout,
        metrics=result.metrics,
        extra={
            "workflow": workflow.id,
            "workflow_version": workflow.version,
            "model_version": version.number,
            "backbone": backbone,
            "label_count": len(subject_ids),
            "train_config": config.__dict__,
        },
    )
    version.checkpoint_dir = str(directory)
    version.sha256 = meta["sha256"]
    version.metrics = result.metrics
    version.backbone = backbone
    version.agent_confusion = _agent_confusion(result.model, X, counts, layout, workflow, config).tolist()
    version.trained_at = timezone.now()
    version.status = ModelVersion.Status.EVALUATING  # scoring the pool; active once priorities are live
    version.save(
        update_fields=["checkpoint_dir", "sha256", "metrics", "agent_confusion", "backbone", "trained_at", "status"]
    )
    return set(subject_ids)


def _agent_confusion(model, X, counts, layout, workflow: Workflow, config: TrainConfig) -> np.ndarray:
    """The model's confusion on the first question, on the held-out split, against the crowd's majority.

    The crowd's majority is the only truth there is in production; it is noisy on faint
    objects, so this under-rates the model there (the safe side for retirement).
    """
    _, val_idx = split_indices(len(X), config.val_fraction, config.seed)  # the split fit() held out
    root = question_slice(layout, workflow.task_tree["first"])
    probs = mc_dropout_probs(model, X[val_idx], layout, n_samples=workflow.mc_samples).mean(axis=2)[:, root]
    return model_confusion(probs, counts[val_idx][:, root].argmax(axis=1))


@transaction.atomic
def _activate(version: ModelVersion) -> None:
    """v0 promotion: the newest scored version replaces the active one."""
    ModelVersion.objects.filter(workflow=version.workflow, status=ModelVersion.Status.ACTIVE).exclude(
        pk=version.pk
    ).update(status=ModelVersion.Status.RETIRED)
    version.status = ModelVersion.Status.ACTIVE
    version.save(update_fields=["status"])


def model_version_score_pool(
    *,
    model_version: ModelVersion,
    trained_on: AbstractSet[int] = frozenset(),
    batch: int = 2048,
    interest: tuple[str, list[int]] | None = None,
    interest_weight: float = 0.0,
) -> int:
    """Predict every active subject with MC dropout and replace their priorities.

    The priority is ``workflow.acquisition`` ("bald", "powerbald", "entropy" or "margin";
    mlcore.acquisition.priorities), optionally boosted for likely interesting objects:
    ``interest = (task, [answers])`` and ``interest_weight`` > 0. Priorities are written only
    where no newer version has already written them, so a late run of an old version cannot
    overwrite a newer one; then the whole queue is published to Redis under this version.
    ``trained_on`` marks the predictions the model-as-voter must ignore; a re-score that
    omits it lets the model echo its training votes. Returns the number scored.
    """
    workflow = model_version.workflow
    model, meta = checkpoints.load_checkpoint(model_version.checkpoint_dir)
    layout = [tuple(x) for x in meta["layout"]]
    root = workflow.task_tree["first"]
    subject_ids = list(
        SubjectState.objects.filter(workflow=workflow, status=SubjectState.Status.ACTIVE)
        .order_by("id")
        .values_list("subject_id", flat=True)
    )
    for start in range(0, len(subject_ids), batch):
        chunk = subject_ids[start : start + batch]
        X, _ = datasets.features(workflow, chunk)
        probs = mc_dropout_probs(model, X, layout, n_samples=workflow.mc_samples, seed=model_version.number)
        rng = np.random.default_rng([model_version.number, start])  # PowerBALD's draw, reproducible
        score = acquisition.priorities(
            probs,
            layout,
            method=workflow.acquisition,
            rng=rng,
            interest_score=_interest(probs, layout, interest),
            interest_weight=interest_weight,
        )
        _store_scores(model_version, workflow, layout, root, chunk, probs, trained_on, score)
        _progress(model_version, 0.7 + 0.3 * min(1.0, (start + len(chunk)) / max(1, len(subject_ids))))
    if settings.SKYLOOP_QUEUE:  # every priority is written: the new order goes live at once
        queue.queue_publish(workflow_id=workflow.id, version=model_version.id)
    ModelVersion.objects.filter(pk=model_version.pk).update(scored_at=timezone.now(), progress=1.0)
    return len(subject_ids)


def _interest(probs: np.ndarray, layout, interest: tuple[str, list[int]] | None) -> np.ndarray | None:
    """(N,) probability of the answers ``interest = (task, [answer, ...])`` marks as worth finding."""
    if interest is None:
        return None
    task, answers = interest
    return acquisition.interest(probs[:, question_slice(layout, task), :], answers)


def _store_scores(version, workflow, layout, root, subject_ids, probs, trained_on, score: np.ndarray) -> None:
    """probs: (N, A, S) MC-dropout probabilities for ``subject_ids``; score: (N,) their priorities."""
    root_probs = probs[:, question_slice(layout, root), :]  # (N, C_root, S)
    entropy = acquisition.predictive_entropy(root_probs)
    bald = acquisition.tree_scores(probs, layout, method="bald")
    mean = probs.mean(axis=2)  # (N, A)
    with transaction.atomic():
        Prediction.objects.filter(model_version=version, subject_id__in=subject_ids).delete()
        Prediction.objects.bulk_create(
            [
                Prediction(
                    model_version=version,
                    subject_id=sid,
                    probabilities=_per_question(mean[i], layout),
                    entropy=float(entropy[i]),
                    bald=float(bald[i]),
                    score=float(score[i]),
                    in_training=sid in trained_on,
                )
                for i, sid in enumerate(subject_ids)
            ],
            batch_size=1000,
        )
        _write_priorities(version, workflow, subject_ids, score)


def _write_priorities(version, workflow, subject_ids, score: np.ndarray) -> None:
    states = list(
        SubjectState.objects.select_for_update()
        .filter(workflow=workflow, subject_id__in=subject_ids)
        .only("id", "subject_id", "priority_version_id")
    )
    by_subject = dict(zip(subject_ids, score.tolist(), strict=True))
    fresh = [s for s in states if s.priority_version_id is None or s.priority_version_id <= version.id]
    for state in fresh:
        state.priority = by_subject[state.subject_id]
        state.priority_version_id = version.id
    SubjectState.objects.bulk_update(fresh, ["priority", "priority_version"], batch_size=1000)


def _per_question(row: np.ndarray, layout) -> dict[str, list[float]]:
    """(A,) mean probabilities -> {task: [probability per answer]}."""
    return {task: [round(float(p), 5) for p in row[cols]] for task, cols in acquisition.layout_slices(layout)}
