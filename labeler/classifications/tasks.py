"""Celery tasks of consensus: thin wrappers around services."""

from celery import shared_task

from labeler.classifications.skill import skills_reestimate
from labeler.workflows.models import Workflow


@shared_task(acks_late=True, ignore_result=True)
def reestimate_skills() -> None:
    """Nightly (beat): full EM per active workflow, correcting the drift of online updates."""
    for workflow in Workflow.objects.filter(active=True):
        skills_reestimate(workflow=workflow)
