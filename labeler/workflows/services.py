"""Creating workflows and attaching subjects to them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction

from labeler.subjects.models import Project, Subject
from labeler.workflows.models import SubjectState, Workflow
from mlcore import tasktree


@transaction.atomic
def workflow_create(*, project: Project, slug: str, name: str, kind: str, task_tree: dict, **options) -> Workflow:
    """Create a workflow (validating its tree and options) and queue the project's subjects of its kind."""
    workflow = Workflow(project=project, slug=slug, name=name, kind=kind, task_tree=task_tree, **options)
    workflow.full_clean()
    workflow.save()
    subject_states_attach(project=project, subjects=project.subjects.filter(kind=kind), workflows=[workflow])
    return workflow


def workflow_update_tree(*, workflow: Workflow, task_tree: dict) -> Workflow:
    try:
        tasktree.validate_tree(task_tree)
    except tasktree.TaskTreeError as exc:
        raise ValidationError(str(exc)) from exc
    if task_tree != workflow.task_tree:
        workflow.task_tree = task_tree
        workflow.version += 1
        workflow.save(update_fields=["task_tree", "version"])
    return workflow


def subject_states_attach(
    *, project: Project, subjects: Iterable[Subject], workflows: Iterable[Workflow] | None = None
) -> int:
    """Put subjects in the queue of every active workflow of their kind.

    Before any model exists the priority is a random number, so the cold-start order is a
    random sample rather than insertion order.
    """
    subjects = list(subjects)
    if workflows is None:
        workflows = Workflow.objects.filter(project=project, active=True)
    rng = np.random.default_rng()
    rows = [
        SubjectState(workflow=w, subject=s, priority=float(rng.random()))
        for w in workflows
        for s in subjects
        if s.kind == w.kind
    ]
    SubjectState.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    return len(rows)
