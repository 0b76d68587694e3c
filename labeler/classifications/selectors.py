"""Which subject a volunteer sees next."""

from __future__ import annotations

import random

from labeler.classifications.models import Classification
from labeler.subjects.models import Subject
from labeler.workflows.models import SubjectState, Workflow

# Choose at random among this many: with one shared queue, concurrent volunteers would
# otherwise all get the same few subjects and over-classify them past retirement.
TOP_FEW = 16


def subject_next_for(
    *, workflow: Workflow, volunteer_key: str, rng: random.Random | None = None, exclude: tuple[int, ...] = ()
) -> Subject | None:
    """The next active subject this volunteer has not classified, or None when none is left.

    With probability ``workflow.random_share`` a random unseen subject; otherwise one of the
    ``TOP_FEW`` highest priorities (acquisition scores of the active model, or a random
    cold-start order before the first model).
    """
    rng = rng or random.Random()
    seen = Classification.objects.filter(workflow=workflow, volunteer_key=volunteer_key).values("subject_id")
    pool = (
        SubjectState.objects.filter(workflow=workflow, status=SubjectState.Status.ACTIVE)
        .exclude(subject_id__in=seen)
        .exclude(subject_id__in=exclude)
    )
    if rng.random() < workflow.random_share:
        candidates = list(pool.order_by("?").values_list("subject_id", flat=True)[:1])
    else:
        candidates = list(pool.order_by("-priority", "id").values_list("subject_id", flat=True)[:TOP_FEW])
    if not candidates:
        return None
    return Subject.objects.get(pk=rng.choice(candidates))


def subject_queue_top(*, workflow: Workflow, limit: int = 10) -> list[SubjectState]:
    """The head of a workflow's queue, highest priority first (for pages and tests)."""
    return list(
        SubjectState.objects.filter(workflow=workflow, status=SubjectState.Status.ACTIVE)
        .select_related("subject")
        .order_by("-priority", "id")[:limit]
    )
