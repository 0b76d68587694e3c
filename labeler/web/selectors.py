"""Read-only summaries for the pages."""

from django.db.models import Count, Q

from labeler.classifications.models import Classification
from labeler.learning.models import ModelVersion
from labeler.learning.triggers import labelled_count
from labeler.workflows.models import SubjectState, Workflow


def workflow_summaries() -> list[dict]:
    """Each active workflow with its queue, labels and model status (one dict per workflow)."""
    workflows = (
        Workflow.objects.filter(active=True)
        .select_related("project")
        .annotate(
            n_subjects=Count("states"),
            n_retired=Count("states", filter=Q(states__status=SubjectState.Status.RETIRED)),
        )
        .order_by("project__slug", "id")
    )
    summaries = []
    for workflow in workflows:
        versions = workflow.model_versions.order_by("-number")
        summaries.append(
            {
                "workflow": workflow,
                "n_classifications": Classification.objects.filter(workflow=workflow).count(),
                "n_labelled": labelled_count(workflow),
                "active_model": versions.filter(status=ModelVersion.Status.ACTIVE).first(),
                "latest_model": versions.first(),
            }
        )
    return summaries
