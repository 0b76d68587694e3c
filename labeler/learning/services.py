"""The learning loop: queue training when labels accumulate, train, register, score the pool.

``training_maybe_queue`` runs in the web process after a submit; everything else runs in
a Celery worker (``labeler.learning.tasks``) on the ``gpu`` queue.
"""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from labeler.classifications.models import Consensus
from labeler.learning import datasets
from labeler.learning.models import ModelVersion, Prediction
from labeler.subjects.models import Subject
from labeler.workflows.models import SubjectState, Workflow
from mlcore import acquisition, checkpoints, tasktree
from mlcore.consensus import model_confusion
from mlcore.predict import mc_dropout_probs, question_slice
from mlcore.train import TrainConfig, fit, split_indices

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)  # a run silent this long is orphaned: its task is sent again
STALE_AFTER = timedelta(hours=2)  # a version still unfinished this long is given up as failed
MIN_TRAINING_LABELS = 4  # mlcore.train.fit needs a train and a held-out split


def labelled_count(workflow: Workflow) -> int:
    return Consensus.objects.filter(workflow=workflow, n_classifications__gte=workflow.label_min_votes).count()


def training_maybe_queue(*, workflow: Workflow, force: bool = False) -> ModelVersion | None:
    """Queue a training when ``train_min_new_labels`` labels arrived since the last model.

    Debounced: at most one version per workflow is queued or training at a time (the
    workflow row lock serialises concurrent submits). An orphaned run (its message lost
    to a dead broker, or its worker killed) is sent again instead.
    """
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        _fail_stale_versions(workflow)
        running = ModelVersion.objects.filter(workflow=workflow, status__in=ModelVersion.IN_PROGRESS).first()
        if running is not None:
            if _is_orphaned(running):
                _send_training_on_commit(running.id)
            return None
        labels = labelled_count(workflow)
        last = ModelVersion.objects.filter(workflow=workflow).exclude(status=ModelVersion.Status.FAILED).last()
        since = labels - (last.label_count if last else 0)
        if (not force and since < workflow.train_min_new_labels) or labels < MIN_TRAINING_LABELS:
            return None
        version = ModelVersion.objects.create(
            workflow=workflow,
            number=_next_number(workflow),
            kind=datasets.model_kind(workflow),
            parent=ModelVersion.objects.filter(workflow=workflow, status=ModelVersion.Status.ACTIVE).first(),
            label_count=labels,
            heartbeat_at=timezone.now(),
        )
        _send_training_on_commit(version.id)
    log.info("queued training of %s with %d labels", version, labels)
    return version


def training_sweep() -> int:
    """Backstop run by Celery beat: resend orphaned runs and catch up missed triggers."""
    queued = 0
    for workflow in Workflow.objects.filter(active=True):
        queued += training_maybe_queue(workflow=workflow) is not None
    return queued


def _send_training_on_commit(version_id: int) -> None:
    from labeler.learning.tasks import train_model_version

    def send() -> None:
        try:
            train_model_version.delay(version_id)
        except (KombuOperationalError, ConnectionError, OSError) as exc:
            # The classification that triggered this is already saved; the sweep resends.
            log.warning("broker unreachable, training of version %s not sent yet: %s", version_id, exc)

    transaction.on_commit(send)


def _is_orphaned(version: ModelVersion) -> bool:
    """No sign of life for LEASE: its message or its worker is gone."""
    return version.heartbeat_at is None or version.heartbeat_at < timezone.now() - LEASE


def _next_number(workflow: Workflow) -> int:
    last = ModelVersion.objects.filter(workflow=workflow).order_by("-number").first()
    return (last.number if last else 0) + 1


def _fail_stale_versions(workflow: Workflow) -> None:
    cutoff = timezone.now() - STALE_AFTER
    ModelVersion.objects.filter(
        workflow=workflow, status__in=ModelVersion.IN_PROGRESS, created_at__lt=cutoff
    ).update(status=ModelVersion.Status.FAILED, error="no result after repeated attempts (worker lost?)")


EMBED_TASK_CHUNK = 500


def embeddings_queue(*, subject_ids: list[int]) -> None:
    """After commit, queue embedding of these image subjects in chunks (gpu queue)."""
    from labeler.learning.tasks import embed_subjects

    for start in range(0, len(subject_ids), EMBED_TASK_CHUNK):
        chunk = subject_ids[start : start + EMBED_TASK_CHUNK]
        transaction.on_commit(lambda chunk=chunk: embed_subjects.delay(chunk))


def embeddings_precompute(*, subject_ids: list[int]) -> int:
    """Compute and cache missing embeddings; subjects deleted meanwhile are skipped."""
    existing = list(Subject.objects.filter(pk__in=subject_ids, kind=Subject.Kind.IMAGE).values_list("pk", flat=True))
    datasets.embeddings(existing, datasets.image_backbone())
    return len(existing)


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
    *, model_version: ModelVersion, trained_on: AbstractSet[int] = frozenset(), batch: int = 2048
) -> int:
    """Predict every active subject with MC dropout and replace their priorities.

    Priorities are written only where no newer version has already written them, so a late
    run of an old version cannot overwrite a newer one. ``trained_on`` marks the predictions
    the model-as-voter must ignore; a re-score that omits it lets the model echo its training
    votes. Returns the number scored.
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
        _store_scores(model_version, workflow, layout, root, chunk, probs, trained_on)
        _progress(model_version, 0.7 + 0.3 * min(1.0, (start + len(chunk)) / max(1, len(subject_ids))))
    ModelVersion.objects.filter(pk=model_version.pk).update(scored_at=timezone.now(), progress=1.0)
    return len(subject_ids)


def _store_scores(version, workflow, layout, root, subject_ids, probs, trained_on) -> None:
    """probs: (N, A, S) MC-dropout probabilities for ``subject_ids``."""
    root_probs = probs[:, question_slice(layout, root), :]  # (N, C_root, S)
    entropy = acquisition.predictive_entropy(root_probs)
    bald = acquisition.tree_scores(probs, layout, method="bald")
    score = bald if workflow.acquisition == "bald" else acquisition.tree_scores(probs, layout, method="entropy")
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
