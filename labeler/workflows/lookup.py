"""Finding a workflow from what a person types: an id, ``slug`` or ``project/slug``."""

from django.core.management.base import CommandError

from labeler.workflows.models import Workflow


def workflow_from_identifier(identifier: str) -> Workflow:
    workflows = Workflow.objects.select_related("project")
    if identifier.isdigit():
        found = list(workflows.filter(pk=int(identifier)))
    elif "/" in identifier:
        project, slug = identifier.split("/", 1)
        found = list(workflows.filter(project__slug=project, slug=slug))
    else:
        found = list(workflows.filter(slug=identifier))
    if len(found) != 1:
        known = ", ".join(str(w) for w in workflows.order_by("id")) or "none"
        reason = "is ambiguous" if found else "matches no workflow"
        raise CommandError(f"{identifier!r} {reason}; known workflows: {known}")
    return found[0]
