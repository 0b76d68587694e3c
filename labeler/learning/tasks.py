"""Celery tasks of the learning loop. Thin: take an id, call one service.

Routed to the ``gpu`` queue (settings.CELERY_TASK_ROUTES); on a CPU-only machine the same
worker consumes it. ``services`` (torch) is imported inside the tasks, so the web process,
which only sends them, never loads torch.
"""

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from labeler.learning import triggers


@shared_task(
    acks_late=True,
    autoretry_for=triggers.TRANSIENT_ERRORS,
    retry_backoff=5,
    max_retries=3,
    soft_time_limit=settings.SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S,
    time_limit=settings.SKYLOOP_TRAIN_TIME_LIMIT_S,
)
def train_model_version(model_version_id: int) -> None:
    """Train, register and score one queued ModelVersion (a no-op if already claimed)."""
    from labeler.learning import services

    version = services.model_version_claim(model_version_id=model_version_id)
    if version is None:
        return
    services.model_version_train(model_version=version)


@shared_task(acks_late=True, autoretry_for=(OperationalError, InterfaceError), retry_backoff=5, max_retries=3)
def embed_subjects(subject_ids: list[int]) -> None:
    """Cache backbone embeddings of new image subjects, so the first training doesn't wait for them."""
    from labeler.learning import services

    services.embeddings_precompute(subject_ids=subject_ids)


@shared_task(acks_late=True, ignore_result=True)
def sweep_training() -> None:
    """Every few minutes (beat): resend orphaned trainings, catch up triggers a dead broker lost."""
    triggers.training_sweep()


@shared_task(acks_late=True, autoretry_for=triggers.TRANSIENT_ERRORS, retry_backoff=5, max_retries=3)
def promote_model_version(model_version_id: int, user_id: int | None = None, force: bool = False) -> None:
    """A scientist's promotion request, run where torch is (comparing versions evaluates them)."""
    from django.contrib.auth import get_user_model

    import labeler.learning.evaluation  # noqa: F401  (loads torch, so the registry compares here)
    from labeler.learning import registry
    from labeler.learning.models import ModelVersion

    version = ModelVersion.objects.filter(pk=model_version_id).first()
    if version is None:
        return
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    registry.model_version_promote(model_version=version, user=user, force=force)
