"""Creating workflows and attaching subjects to them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction

from labeler.subjects.models import Project, Subject
from labeler.workflows.models import SubjectState, Workflow
from mlcore import tasktree

FIELD_ROLE = "field"  # Subject.metadata["role"] of a survey field


@transaction.atomic
def workflow_create(*, project: Project, slug: str, name: str, kind: str, task_tree: dict, **options) -> Workflow:
    """Create a workflow (validating its tree and options) and queue the project's subjects of its kind."""
    workflow = Workflow(project=project, slug=slug, name=name, kind=kind, task_tree=task_tree, **options)
    workflow.full_clean()
    workflow.save()
    subject_kind = Subject.Kind.IMAGE if kind == Workflow.Kind.FIELD else kind
    subject_states_attach(project=project, subjects=project.subjects.filter(kind=subject_kind), workflows=[workflow])
    return workflow


def subject_is_field(subject: Subject) -> bool:
    """A survey field: an image subject with ``metadata["role"] == "field"``."""
    return subject.kind == Subject.Kind.IMAGE and (subject.metadata or {}).get("role") == FIELD_ROLE


def workflow_takes(workflow: Workflow, subject: Subject) -> bool:
    """Survey fields go to field workflows only; every other subject to workflows of its kind."""
    is_field = subject_is_field(subject)
    if workflow.kind == Workflow.Kind.FIELD:
        return is_field
    return subject.kind == workflow.kind and not is_field


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
    """Put subjects in the queue of every active workflow of their kind (``workflow_takes``).

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
        if workflow_takes(w, s)
    ]
    SubjectState.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    return len(rows)
