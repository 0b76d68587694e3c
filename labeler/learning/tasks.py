"""Celery tasks of the learning loop. Thin: take an id, call one service.

Routed to the ``gpu`` queue (settings.CELERY_TASK_ROUTES); on a CPU-only machine the same
worker consumes it. ``services`` (torch) is imported inside the tasks, so the web process,
which only sends them, never loads torch.
"""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from labeler.learning import triggers


@shared_task(
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    max_retries=3,
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
