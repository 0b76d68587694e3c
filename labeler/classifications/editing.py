"""Volunteers fixing their own recent classifications: edit or withdraw.

The rules:

- Only the volunteer who made a classification can edit or withdraw it. To anyone else it
  does not exist (``not_found``), so nobody can probe another volunteer's client UUIDs.
- Answers (annotation, marks, flag) can be changed, and the classification withdrawn, for
  ``EDIT_WINDOW`` after it was made (``edit_closed`` afterwards): long enough to fix a
  slip, short enough that models and exports do not train on a moving target for long.
  The comment and the favourite star do not feed consensus and can change at any time.
- Answers are validated exactly as on submission (``tasktree.validate_annotation``,
  ``marks.validate_marks``); a refused edit changes nothing.
- After a change of answers the subject's consensus (counts, posterior, marks) is rebuilt
  from the classifications as they now are, and its classification and flag counts are
  recounted, under the subject's state row lock (the same lock submissions take).
- Retirement is decided only when a new classification arrives. A retired subject stays
  retired even if the edit means it would no longer meet its reason (its consensus is
  still rebuilt); an active one is looked at again on its next vote.
- Skill evidence is not unlearnt and gold feedback is not given again: ``VolunteerSkill``
  counts keep what was learnt on submission, and the periodic Dawid-Skene re-estimate
  (``skill.skills_reestimate``) recomputes every volunteer's counts from the classifications
  as they are then.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from labeler.classifications.models import Classification
from labeler.classifications.queue import subject_queue_touch
from labeler.classifications.services import ClassificationError, validated_annotation, validated_marks
from labeler.workflows.models import SubjectState, Workflow

EDIT_WINDOW = timedelta(hours=24)


def answers_editable(classification: Classification) -> bool:
    """Whether its answers can still change (and it can be withdrawn)."""
    return timezone.now() < classification.created_at + EDIT_WINDOW


def classification_edit(
    *,
    volunteer_key: str,
    client_uuid: uuid.UUID,
    annotation: object = None,
    marks: object = None,
    comment: str | None = None,
    favourite: bool | None = None,
    flagged: bool | None = None,
) -> Classification:
    """Change the given fields (None: unchanged) of the volunteer's own classification."""
    current = _own(volunteer_key, client_uuid)
    answers_change = any(value is not None for value in (annotation, marks, flagged))
    if answers_change and not answers_editable(current):
        raise _edit_closed()
    changes: dict[str, object] = {"comment": comment, "favourite": favourite, "flagged": flagged}
    changes = {key: value for key, value in changes.items() if value is not None}
    if annotation is not None:
        changes["annotation"] = validated_annotation(current.workflow, annotation)
        changes["workflow_version"] = current.workflow.version  # answered against the tree as it is now
    if marks is not None:
        changes["marks"] = validated_marks(current.workflow, current.subject_id, marks)
    with transaction.atomic():
        state = _locked_state(current) if answers_change else None
        row = Classification.objects.select_for_update().filter(pk=current.pk).first()
        if row is None:  # withdrawn by a concurrent request
            raise _not_found()
        for key, value in changes.items():
            setattr(row, key, value)
        row.edited_at = timezone.now()
        row.save(update_fields=[*changes, "edited_at"])
        if state is not None:
            _rebuild(current.workflow, state)
    return row


def classification_withdraw(*, volunteer_key: str, client_uuid: uuid.UUID) -> None:
    """Delete the volunteer's own classification (within the edit window) and rebuild consensus."""
    current = _own(volunteer_key, client_uuid)
    if not answers_editable(current):
        raise _edit_closed()
    with transaction.atomic():
        state = _locked_state(current)
        deleted, _ = Classification.objects.filter(pk=current.pk).delete()
        if not deleted:  # a concurrent request withdrew it first
            raise _not_found()
        _rebuild(current.workflow, state)


def _own(volunteer_key: str, client_uuid: uuid.UUID) -> Classification:
    found = (
        Classification.objects.select_related("workflow", "subject")
        .filter(client_uuid=client_uuid, volunteer_key=volunteer_key)
        .first()
    )
    if found is None:
        raise _not_found()
    return found


def _locked_state(classification: Classification) -> SubjectState:
    return SubjectState.objects.select_for_update().get(
        workflow_id=classification.workflow_id, subject_id=classification.subject_id
    )


def _rebuild(workflow: Workflow, state: SubjectState) -> None:
    """Caller holds the state's row lock: consensus and counts from the classifications as they are."""
    from labeler.classifications.services import consensus_rebuild

    consensus_rebuild(workflow=workflow, subject_id=state.subject_id)
    # Re-queue a subject that is active again, or drop a retired one, in the Redis selector.
    transaction.on_commit(lambda: subject_queue_touch(workflow_id=workflow.id, subject_id=state.subject_id))
    totals = Classification.objects.filter(workflow=workflow, subject_id=state.subject_id).aggregate(
        n=Count("id"), flags=Count("id", filter=Q(flagged=True))
    )
    state.classification_count, state.flag_count = totals["n"], totals["flags"]
    state.save(update_fields=["classification_count", "flag_count"])


def _not_found() -> ClassificationError:
    return ClassificationError("you have no classification with this client_uuid", "not_found")


def _edit_closed() -> ClassificationError:
    hours = int(EDIT_WINDOW.total_seconds() // 3600)
    return ClassificationError(f"answers can be changed for {hours} hours after classifying", "edit_closed")
