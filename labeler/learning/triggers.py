"""When to train: the part of the learning loop that runs in the web process (no torch here).

After a submit, ``training_maybe_queue`` decides whether enough new labels arrived and sends
the training task; beat's ``training_sweep`` resends orphaned runs and catches up. The
training itself is ``services.py``, in a worker.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from labeler.classifications import queue
from labeler.classifications.models import Consensus
from labeler.learning.models import ModelVersion
from labeler.review.models import ExpertLabel
from labeler.workflows.models import Workflow

log = logging.getLogger(__name__)
MODEL_KINDS = {
    Workflow.Kind.IMAGE: "question_head",
    Workflow.Kind.SPECTRUM: "spectrum_cnn",
    Workflow.Kind.FIELD: "detector",
}
# Errors worth retrying: the database or the broker was briefly unreachable. Anything else fails the version.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, KombuOperationalError, ConnectionError)


def model_kind(workflow: Workflow) -> str | None:
    """The model the loop trains for this workflow: a question model, or a box detector for survey fields."""
    return MODEL_KINDS.get(workflow.kind)


LEASE = timedelta(minutes=5)  # a run silent this long is orphaned: its task is sent again
MAX_ATTEMPTS = 5  # runs of one version that may start (killed or lost ones included) before it is failed


def stale_after() -> timedelta:
    """A version still unfinished this long is given up as failed: every attempt had its full time."""
    return max(timedelta(hours=2), MAX_ATTEMPTS * (timedelta(seconds=settings.SKYLOOP_TRAIN_TIME_LIMIT_S) + LEASE))
MIN_TRAINING_LABELS = 4  # mlcore.train.fit needs a train and a held-out split


def labelled_count(workflow: Workflow) -> int:
    """Subjects a model can learn from: enough votes, or an expert's label."""
    voted = Consensus.objects.filter(workflow=workflow, n_classifications__gte=workflow.label_min_votes)
    expert = ExpertLabel.objects.filter(workflow=workflow).exclude(subject_id__in=voted.values("subject_id"))
    return voted.count() + expert.values("subject_id").distinct().count()


def training_maybe_queue(*, workflow: Workflow, force: bool = False) -> ModelVersion | None:
    """Queue a training when ``train_min_new_labels`` labels arrived since the last model.

    Debounced: at most one version per workflow is queued or training at a time (the
    workflow row lock serialises concurrent submits). An orphaned run (its message lost
    to a dead broker, or its worker killed) is sent again instead.
    """
    if model_kind(workflow) is None or _live_run_exists(workflow):
        return None
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
            kind=model_kind(workflow),
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
        if settings.SKYLOOP_QUEUE:  # a publish Redis missed, or a queue gone stale: rebuild it
            latest = ModelVersion.objects.filter(workflow=workflow, scored_at__isnull=False).order_by("-id").first()
            queue.queue_refresh(workflow_id=workflow.id, latest_version=latest.id if latest else 0)
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


def _live_run_exists(workflow: Workflow) -> bool:
    """A run with a fresh heartbeat: nothing to do, so skip the workflow row lock that
    would otherwise serialise every labelling vote behind it under load."""
    now = timezone.now()
    return ModelVersion.objects.filter(
        workflow=workflow,
        status__in=ModelVersion.IN_PROGRESS,
        heartbeat_at__gte=now - LEASE,
        created_at__gte=now - stale_after(),
    ).exists()


def _is_orphaned(version: ModelVersion) -> bool:
    """No sign of life for LEASE: its message or its worker is gone."""
    return version.heartbeat_at is None or version.heartbeat_at < timezone.now() - LEASE


def _next_number(workflow: Workflow) -> int:
    last = ModelVersion.objects.filter(workflow=workflow).order_by("-number").first()
    return (last.number if last else 0) + 1


def _fail_stale_versions(workflow: Workflow) -> None:
    cutoff = timezone.now() - stale_after()
    ModelVersion.objects.filter(workflow=workflow, status__in=ModelVersion.IN_PROGRESS, created_at__lt=cutoff).update(
        status=ModelVersion.Status.FAILED, error="no result after repeated attempts (worker lost?)"
    )


EMBED_TASK_CHUNK = 500


def embeddings_queue(*, subject_ids: list[int]) -> None:
    """After commit, queue embedding of these image subjects in chunks (gpu queue)."""
    from labeler.learning.tasks import embed_subjects

    for start in range(0, len(subject_ids), EMBED_TASK_CHUNK):
        chunk = subject_ids[start : start + EMBED_TASK_CHUNK]
        transaction.on_commit(lambda chunk=chunk: embed_subjects.delay(chunk))
