"""Submitting a classification: validate, store once, update consensus, maybe retire, maybe train."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from labeler.classifications import skill
from labeler.classifications.marks_consensus import consensus_marks_refresh
from labeler.classifications.models import Classification, Consensus
from labeler.classifications.retirement import EXPERT, FOR_REVIEW, retirement_reason
from labeler.subjects.models import Subject
from labeler.workflows.models import SubjectState, Workflow
from mlcore import marks as marking
from mlcore import tasktree

log = logging.getLogger(__name__)
MAX_COMMENT = 2000


class ClassificationError(Exception):
    """The submission is refused; ``code`` says why (bad_annotation, unknown_subject, duplicate...)."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SubmitResult:
    classification: Classification
    created: bool
    feedback: dict | None = None  # on gold subjects: was the volunteer right, and the expected answers


def classification_submit(
    *,
    workflow: Workflow,
    subject_id: int,
    volunteer_key: str,
    annotation: object,
    client_uuid: uuid.UUID,
    user=None,
    started_at: datetime | None = None,
    duration_ms: int | None = None,
    user_agent: str = "",
    flagged: bool = False,
    marks: object = None,
    comment: str = "",
    favourite: bool = False,
) -> SubmitResult:
    """Record one volunteer's answers and drawn marks. Resubmitting the same ``client_uuid`` is a no-op.

    ``marks`` must fit the workflow's drawing tools (``mlcore.marks``; none allowed when it
    has no tools); ``comment`` is the volunteer's note (at most MAX_COMMENT characters).
    """
    # No look-up of client_uuid first: the unique index answers a retry (IntegrityError below),
    # which saves a query on every first submission, the common case.
    try:
        path = validated_annotation(workflow, annotation)
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
            raise ClassificationError(f"comment must be text of at most {MAX_COMMENT} characters", "bad_comment")
        drawn = validated_marks(workflow, subject_id, [] if marks is None else marks)
    except ClassificationError:
        # A retry of a classification stored before the workflow's tree changed is still a retry.
        existing = Classification.objects.filter(client_uuid=client_uuid).first()
        if existing is not None:
            return _replayed(existing, workflow, subject_id, volunteer_key)
        raise
    try:
        with transaction.atomic():
            classification, state, crossed = _record(
                workflow=workflow,
                subject_id=subject_id,
                volunteer_key=volunteer_key,
                path=path,
                client_uuid=client_uuid,
                user=user,
                started_at=started_at,
                duration_ms=duration_ms,
                user_agent=user_agent[:400],
                flagged=flagged,
                marks=drawn,
                comment=comment,
                favourite=bool(favourite),
            )
    except IntegrityError:
        # Another request with this UUID won the race, or this volunteer already answered.
        existing = Classification.objects.filter(client_uuid=client_uuid).first()
        if existing is not None:
            return _replayed(existing, workflow, subject_id, volunteer_key)
        raise ClassificationError("you have already classified this subject", "duplicate") from None
    from labeler.classifications.queue import subjects_queue_touch  # seen set, lease, retirement in Redis

    # The state as committed: the queue mirrors it without reading it back.
    known = {subject_id: _queue_row(state)}
    transaction.on_commit(
        lambda: subjects_queue_touch(workflow_id=workflow.id, answered=[(subject_id, volunteer_key)], states=known)
    )
    if crossed:
        _maybe_train(workflow)
    feedback = gold_feedback(workflow, path, state.gold_answers)
    return SubmitResult(classification=classification, created=True, feedback=feedback)


def validated_annotation(workflow: Workflow, annotation: object) -> list[dict]:
    """The annotation as a path through the workflow's tree, or ClassificationError ``bad_annotation``."""
    try:
        return tasktree.validate_annotation(workflow.task_tree, annotation)
    except tasktree.TaskTreeError as exc:
        raise ClassificationError(f"annotation does not fit the workflow's questions: {exc}", "bad_annotation") from exc


def validated_marks(workflow: Workflow, subject_id: int, marks: object) -> list[dict]:
    """Marks checked against the workflow's tools and clipped to the subject's image (``bad_marks``)."""
    spec = workflow.task_tree.get("marks")
    shape = None
    if spec:  # only drawing workflows pay for reading the subject's shape
        row = Subject.objects.filter(pk=subject_id).values_list("kind", "metadata").first()
        if row is not None and row[0] == Subject.Kind.IMAGE:
            shape = (row[1] or {}).get("shape")
    try:
        return marking.validate_marks(spec, marks, image_shape=shape)
    except marking.MarksError as exc:
        raise ClassificationError(f"marks do not fit the workflow's drawing tools: {exc}", "bad_marks") from exc


def gold_feedback(workflow: Workflow, path: list[dict], gold_answers: dict | None) -> dict | None:
    """What to tell a volunteer after a gold subject (Zooniverse-style feedback), else None."""
    if not gold_answers:
        return None
    tasks = workflow.task_tree["tasks"]
    checked = [step for step in path if step["task"] in gold_answers]
    return {
        "correct": all(step["answer"] == gold_answers[step["task"]] for step in checked),
        "expected": [
            {"question": tasks[key]["question"], "answer": tasks[key]["answers"][answer]["label"]}
            for key, answer in gold_answers.items()
            if key in tasks
        ],
    }


def _maybe_train(workflow: Workflow) -> None:
    """The classification is saved: a failing trigger is logged (beat's sweep catches up), never raised."""
    from labeler.learning.triggers import training_maybe_queue

    try:
        training_maybe_queue(workflow=workflow)
    except Exception:
        log.exception("could not check whether workflow %s should train", workflow.pk)


def _replayed(existing: Classification, workflow: Workflow, subject_id: int, volunteer_key: str) -> SubmitResult:
    same = (existing.workflow_id, existing.subject_id, existing.volunteer_key) == (
        workflow.id,
        subject_id,
        volunteer_key,
    )
    if not same:
        raise ClassificationError("client_uuid was already used for another classification", "uuid_reused")
    return SubmitResult(classification=existing, created=False)


def _queue_row(state: SubjectState) -> dict:
    """What the Redis queue mirrors of a subject's state (``queue.subjects_queue_touch``)."""
    return {
        "status": state.status,
        "priority": state.priority,
        "gold_answers": state.gold_answers,
        "classification_count": state.classification_count,
    }


def _record(
    *, workflow: Workflow, subject_id: int, path: list[dict], **fields
) -> tuple[Classification, SubjectState, bool]:
    """Inside a transaction: lock the subject's state, store, learn skill, update consensus, retire.

    Returns the classification, the subject's state as saved, and whether this vote made the
    subject a training label.
    """
    state = SubjectState.objects.select_for_update().filter(workflow=workflow, subject_id=subject_id).first()
    if state is None:
        raise ClassificationError(f"subject {subject_id} is not part of workflow {workflow.id}", "unknown_subject")
    classification = Classification.objects.create(
        workflow=workflow, workflow_version=workflow.version, subject_id=subject_id, annotation=path, **fields
    )
    if state.gold_answers:
        layout = dict(tasktree.label_layout(workflow.task_tree))
        evidence = skill.gold_evidence(fields["volunteer_key"], path, state.gold_answers, layout)
        skill.skill_learn(workflow=workflow, evidence=evidence, gold=True)
    consensus = consensus_add_vote(workflow=workflow, subject_id=subject_id, path=path)
    state.classification_count += 1
    state.flag_count += int(fields.get("flagged", False))
    reason = retirement_reason(workflow=workflow, state=state, consensus=consensus)
    fields_to_save = ["classification_count", "flag_count"]
    if reason:
        state.status = SubjectState.Status.RETIRED
        state.retired_at = timezone.now()
        state.retirement_reason = reason
        state.needs_review = reason in FOR_REVIEW
        fields_to_save += ["status", "retired_at", "retirement_reason", "needs_review"]
        if reason == "confident_consensus" and not state.gold_answers:
            evidence = skill.consensus_evidence(workflow, subject_id, consensus.posterior)
            skill.skill_learn(workflow=workflow, evidence=evidence, gold=False)
    state.save(update_fields=fields_to_save)
    return classification, state, consensus.n_classifications == workflow.label_min_votes


def consensus_add_vote(*, workflow: Workflow, subject_id: int, path: list[dict]) -> Consensus:
    """Vote counts, fractions, agreement and skill-weighted posterior. Caller holds the state's row lock."""
    # The state's row lock keeps other votes on this subject out, so a plain read then one
    # INSERT or UPDATE is safe (get_or_create would add a savepoint and a second write).
    consensus = Consensus.objects.filter(workflow=workflow, subject_id=subject_id).first()
    if consensus is None:
        consensus = Consensus(workflow=workflow, subject_id=subject_id, counts={})
    counts = tasktree.empty_counts(workflow.task_tree) | consensus.counts
    consensus.counts = tasktree.add_votes(counts, path)
    consensus.fractions = tasktree.vote_fractions(consensus.counts)
    consensus.n_classifications += 1
    consensus.agreement = skill.agreement_of(consensus.counts)
    consensus.posterior = skill.consensus_posterior(workflow=workflow, subject_id=subject_id)
    updated = ["counts", "fractions", "n_classifications", "agreement", "posterior", "updated_at"]
    if workflow.task_tree.get("marks"):
        consensus_marks_refresh(consensus, workflow=workflow)
        updated.append("marks")
    if consensus.pk is None:
        consensus.save(force_insert=True)
    else:
        consensus.save(update_fields=updated)
    return consensus


def consensus_rebuild(*, workflow: Workflow, subject_id: int) -> Consensus:
    """Recompute a subject's whole consensus from all its classifications as they are now.

    For edits and withdrawals, which a running count cannot undo. The caller holds the
    subject state's row lock, as for a submission. Steps that no longer fit an edited
    tree are left out of the counts.
    """
    tree = workflow.task_tree
    consensus, _ = Consensus.objects.get_or_create(
        workflow=workflow, subject_id=subject_id, defaults={"counts": tasktree.empty_counts(tree)}
    )
    counts = tasktree.empty_counts(tree)
    paths = list(
        Classification.objects.filter(workflow=workflow, subject_id=subject_id).values_list("annotation", flat=True)
    )
    for path in paths:
        tasktree.add_votes(counts, [step for step in path if _fits(counts, step)])
    consensus.counts = counts
    consensus.fractions = tasktree.vote_fractions(counts)
    consensus.n_classifications = len(paths)
    consensus.agreement = skill.agreement_of(counts)
    consensus.posterior = skill.consensus_posterior(workflow=workflow, subject_id=subject_id)
    settled = SubjectState.objects.filter(workflow=workflow, subject_id=subject_id, retirement_reason=EXPERT)
    gold = settled.values_list("gold_answers", flat=True).first()
    if gold:  # an expert's verdict outlives later edits and withdrawals of volunteers' votes
        consensus.posterior = skill.pinned_posterior(workflow, consensus.posterior, gold)
    consensus_marks_refresh(consensus, workflow=workflow)
    consensus.save()
    return consensus


def _fits(counts: dict[str, list[int]], step: dict) -> bool:
    row = counts.get(step.get("task"))
    answer = step.get("answer")
    return row is not None and isinstance(answer, int) and 0 <= answer < len(row)
