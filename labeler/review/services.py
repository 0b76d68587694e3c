"""A scientist's verdict on a subject: stored, made gold, and fed back into consensus, skill and training.

An expert label settles a subject: its path becomes the subject's gold answers (so the
volunteers who classified it learn from it, as from any gold subject), the subject retires
with reason ``expert``, its consensus posterior is pinned to the expert's answers (as the
Dawid-Skene re-estimate pins gold subjects, ``skills_reestimate``), and training hears that
a new label arrived. A path may stop early (the root answer alone, from the one-click
queue); deeper questions then keep the crowd's answers.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from labeler.classifications import skill
from labeler.classifications.models import Classification
from labeler.classifications.retirement import EXPERT
from labeler.classifications.services import (
    ClassificationError,
    consensus_rebuild,
    validated_annotation,
    validated_marks,
)
from labeler.review.models import ExpertLabel
from labeler.subjects.models import Subject
from labeler.workflows.models import SubjectState, Workflow
from mlcore import tasktree

log = logging.getLogger(__name__)
MAX_NOTE = 4000


class ExpertLabelError(ClassificationError):
    """The expert label is refused; ``code`` says why (the API answers as for a classification)."""


def expert_label_create(
    *,
    workflow: Workflow,
    subject: Subject | int,
    user,
    annotation: object,
    marks: object = None,
    grade: str = "",
    note: str = "",
) -> ExpertLabel:
    """Store a scientist's label and make it the subject's truth, all in one transaction.

    ``annotation`` is a path through the task tree from its first question; it may stop
    before the tree ends. Permission is the caller's business (``require_scientist_of``).
    """
    subject_id = subject if isinstance(subject, int) else subject.pk
    path = validated_expert_path(workflow, annotation)
    drawn = validated_marks(workflow, subject_id, [] if marks is None else marks)
    grade = _validated_grade(grade)
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise ExpertLabelError(f"note must be text of at most {MAX_NOTE} characters", "bad_note")
    with transaction.atomic():
        state = SubjectState.objects.select_for_update().filter(workflow=workflow, subject_id=subject_id).first()
        if state is None:
            raise ExpertLabelError(f"subject {subject_id} is not part of workflow {workflow.id}", "unknown_subject")
        first_verdict = not state.gold_answers and not ExpertLabel.objects.filter(
            workflow=workflow, subject_id=subject_id
        ).exists()
        label = ExpertLabel.objects.create(
            workflow=workflow, subject_id=subject_id, user=user, annotation=path, marks=drawn, grade=grade, note=note
        )
        _settle(workflow, state, path)
        if first_verdict:  # relabels are left to the periodic EM: adding gold evidence twice would overcount
            _teach_volunteers(workflow, subject_id, path)
        consensus_rebuild(workflow=workflow, subject_id=subject_id)  # pinned to the settled answers
        transaction.on_commit(lambda: _drop_from_queue(workflow.id, subject_id))
    _maybe_train(workflow)
    return label


def validated_expert_path(workflow: Workflow, annotation: object) -> list[dict]:
    """A path from the first question that follows the tree, complete or stopping early.

    Checked by the volunteers' validator on the path completed with first answers, so the
    rules (and messages) are the same; ``bad_annotation`` otherwise.
    """
    if not isinstance(annotation, list) or not annotation:
        raise ExpertLabelError("annotation must be a non-empty list of {task, answer} steps", "bad_annotation")
    completed = annotation + _completion(workflow.task_tree, annotation)
    return validated_annotation(workflow, completed)[: len(annotation)]


def _completion(tree: dict, steps: list) -> list[dict]:
    """Steps answering the rest of the tree with each question's first answer (only to validate a prefix)."""
    expected = tree["first"]
    for step in steps:
        try:
            expected = tree["tasks"][expected]["answers"][step["answer"]].get("next")
        except (KeyError, IndexError, TypeError):
            return []  # a malformed step: the validator says what is wrong with it
        if expected is None:
            return []
    return tasktree.path_for_answers({"first": expected, "tasks": tree["tasks"]}, lambda key, n: 0)


def _validated_grade(grade: object) -> str:
    grade = "" if grade is None else grade
    if grade not in {"", *ExpertLabel.Grade.values}:
        raise ExpertLabelError("grade must be A, B, C or empty", "bad_grade")
    return grade


def _settle(workflow: Workflow, state: SubjectState, path: list[dict]) -> None:
    """Gold answers from the path; retired by an expert, out of the review queue."""
    state.gold_answers = {step["task"]: step["answer"] for step in path}
    state.status = SubjectState.Status.RETIRED
    state.retired_at = timezone.now()
    state.retirement_reason = EXPERT
    state.needs_review = False
    state.save(update_fields=["gold_answers", "status", "retired_at", "retirement_reason", "needs_review"])


def _teach_volunteers(workflow: Workflow, subject_id: int, path: list[dict]) -> None:
    """Every earlier vote on the subject becomes gold evidence of its volunteer's skill."""
    gold = {step["task"]: step["answer"] for step in path}
    layout = dict(tasktree.label_layout(workflow.task_tree))
    votes = Classification.objects.filter(workflow=workflow, subject_id=subject_id).values_list(
        "volunteer_key", "annotation"
    )
    evidence = [row for key, steps in votes for row in skill.gold_evidence(key, _fitting(steps, layout), gold, layout)]
    if evidence:
        skill.skill_learn(workflow=workflow, evidence=evidence, gold=True)


def _fitting(steps: list[dict], layout: dict[str, int]) -> list[dict]:
    """Steps that still fit the tree (a vote on an older tree may not)."""
    return [s for s in steps if s.get("task") in layout and isinstance(s.get("answer"), int) and
            0 <= s["answer"] < layout[s["task"]]]  # fmt: skip


def _drop_from_queue(workflow_id: int, subject_id: int) -> None:
    from labeler.classifications.queue import subject_queue_touch  # drops a retired subject from Redis

    subject_queue_touch(workflow_id=workflow_id, subject_id=subject_id)


def _maybe_train(workflow: Workflow) -> None:
    """The label is saved: a failing trigger is logged (beat's sweep catches up), never raised."""
    from labeler.learning.triggers import training_maybe_queue

    try:
        training_maybe_queue(workflow=workflow)
    except Exception:
        log.exception("could not check whether workflow %s should train after an expert label", workflow.pk)
