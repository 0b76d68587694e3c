"""Which subject a volunteer sees next."""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np
from django.db import connection
from django.db.models import Count

from labeler.classifications import queue
from labeler.classifications.models import Classification, VolunteerSkill
from labeler.subjects.models import Subject
from labeler.workflows.models import SubjectState, Workflow
from mlcore import consensus as ds

# Choose at random among this many: with one shared queue, concurrent volunteers would
# otherwise all get the same few subjects and over-classify them past retirement.
TOP_FEW = 16


def subject_next_for(
    *, workflow: Workflow, volunteer_key: str, rng: random.Random | None = None, exclude: tuple[int, ...] = ()
) -> Subject | None:
    """The next active subject this volunteer has not classified, or None when none is left.

    First, with a probability that tapers as the volunteer gains experience, an unseen gold
    subject (to measure their skill). Then, with probability ``workflow.random_share``, a
    random unseen subject; otherwise one of the ``TOP_FEW`` highest priorities (acquisition
    scores of the active model, or the cold-start order before the first model). ``exclude``:
    subjects the page already holds. Served from the Redis queue when there is one (leased
    for a while, so concurrent volunteers spread out), else from the database.
    """
    rng = rng or random.Random()
    if queue.queue_enabled():
        try:
            subject = _next_from_queue(workflow, volunteer_key, rng, tuple(exclude))
        except queue.QueueUnavailable:
            subject = None
        if subject is not None:
            return subject
    return _next_from_database(workflow, volunteer_key, rng, tuple(exclude))


def _next_from_queue(workflow: Workflow, volunteer_key: str, rng: random.Random, exclude: tuple[int, ...]):
    """A subject proposed by Redis and confirmed by the database; None lets the database decide."""
    draw = rng.random()  # gold_share never exceeds gold_share_start: Redis counts only when it can matter
    gold = draw < workflow.gold_share_start and queue.GoldTaper(
        draw, workflow.gold_share_start, workflow.gold_share_floor, max(1, workflow.gold_half_life)
    )
    random_pick = rng.random() < workflow.random_share
    for _ in range(3):
        candidates = queue.queue_candidates(
            workflow_id=workflow.id,
            volunteer_key=volunteer_key,
            gold=gold,
            random_pick=random_pick,
            rand=rng.random(),
            top_few=TOP_FEW,
            retire_after=workflow.retire_after,
            exclude=exclude,
        )
        if not candidates:  # being rebuilt, or nothing left in Redis: the database has the last word
            return None
        servable = _servable(workflow, volunteer_key, candidates, exclude)
        refused = [sid for sid in candidates if sid not in servable]
        queue.queue_forget(workflow_id=workflow.id, volunteer_key=volunteer_key, subject_ids=refused)
        for sid in candidates:
            if sid in servable:
                if sid != candidates[0]:
                    queue.queue_lease(workflow_id=workflow.id, subject_id=sid, volunteer_key=volunteer_key)
                return servable[sid]
    return None


def _servable(workflow: Workflow, volunteer_key: str, subject_ids: list[int], exclude: tuple[int, ...]):
    """{id: Subject} of the candidates still active and unseen, in the one query that loads them."""
    wanted = [sid for sid in subject_ids if sid not in exclude]
    if not wanted:
        return {}
    params = [*wanted, workflow.id, SubjectState.Status.ACTIVE, workflow.id, volunteer_key]
    return {s.id: s for s in Subject.objects.raw(_servable_sql(len(wanted)), params)}


@lru_cache(maxsize=8)
def _servable_sql(n_ids: int) -> str:
    """The query of ``_servable`` for ``n_ids`` candidates.

    Raw SQL because building the equivalent queryset cost more CPU than the rest of a selection.
    Each check is a scalar sub-select that can only use the index on the subject id (``+ 0``
    hides the workflow column from the indexes that start with it), so it reads the subject's
    own few rows: one state per workflow, its votes. Left free, PostgreSQL walked a workflow's
    whole history whenever its statistics said the workflow was small (new workflows, or
    ANALYZE not run since a burst of votes): 10 ms per candidate at 5 x 10^4 votes.
    """
    quote = connection.ops.quote_name
    subject = Subject._meta
    columns = ", ".join(f"s.{quote(field.column)}" for field in subject.concrete_fields)
    placeholders = ", ".join(["%s"] * n_ids)
    return (
        f"SELECT {columns} FROM {quote(subject.db_table)} s WHERE s.id IN ({placeholders})"
        f" AND (SELECT st.status FROM {quote(SubjectState._meta.db_table)} st"
        "      WHERE st.subject_id = s.id AND st.workflow_id + 0 = %s) = %s"
        f" AND (SELECT 1 FROM {quote(Classification._meta.db_table)} c"
        "      WHERE c.subject_id = s.id AND c.workflow_id + 0 = %s AND c.volunteer_key = %s) IS NULL"
    )


def _next_from_database(
    workflow: Workflow, volunteer_key: str, rng: random.Random, exclude: tuple[int, ...]
) -> Subject | None:
    seen = Classification.objects.filter(workflow=workflow, volunteer_key=volunteer_key)
    pool = (
        SubjectState.objects.filter(workflow=workflow, status=SubjectState.Status.ACTIVE)
        .exclude(subject_id__in=seen.values("subject_id"))
        .exclude(subject_id__in=exclude)
    )
    draw = rng.random()  # gold_share never exceeds gold_share_start: count only when it can matter
    if draw < workflow.gold_share_start and draw < gold_share(workflow, seen.count()):
        gold = list(pool.filter(gold_answers__isnull=False).order_by("?").values_list("subject_id", flat=True)[:1])
        if gold:
            return Subject.objects.get(pk=gold[0])
    if rng.random() < workflow.random_share:
        candidates = list(pool.order_by("?").values_list("subject_id", flat=True)[:1])
    else:
        candidates = list(pool.order_by("-priority", "id").values_list("subject_id", flat=True)[:TOP_FEW])
    if not candidates:
        return None
    return Subject.objects.get(pk=rng.choice(candidates))


def gold_share(workflow: Workflow, n_done: int) -> float:
    """Probability that a volunteer's next subject is gold, after ``n_done`` classifications."""
    tapered = workflow.gold_share_start * 0.5 ** (n_done / max(1, workflow.gold_half_life))
    return max(workflow.gold_share_floor, tapered)


def volunteer_skills(*, workflow: Workflow) -> list[dict]:
    """Every volunteer's first-question skill: counts, confusion matrix, kappa, gold seen."""
    root = workflow.task_tree["first"]
    k = len(workflow.task_tree["tasks"][root]["answers"])
    counts = dict(
        Classification.objects.filter(workflow=workflow)
        .values("volunteer_key")
        .annotate(n=Count("id"))
        .values_list("volunteer_key", "n")
    )
    skills = {s.volunteer_key: s for s in VolunteerSkill.objects.filter(workflow=workflow, task=root)}
    rows = []
    for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        evidence = np.asarray(skills[key].counts) if key in skills else np.zeros((k, k))
        confusion = ds.confusion_from_counts(evidence, ds.dirichlet_prior(k))  # (K, K)
        rows.append({
            "volunteer": key,
            "classifications": n,
            "gold": skills[key].n_gold if key in skills else 0,
            "kappa": float(ds.skill_score(confusion[None], np.full(k, 1 / k))[0]),
            "bits": float(ds.information_gain(confusion[None], np.full(k, 1 / k))[0]),
            "confusion": confusion.round(2).tolist(),
        })
    return rows


def volunteer_progress(*, workflow: Workflow, volunteer_key: str) -> dict:
    """What a volunteer may see of themselves: how much they did, how many gold subjects."""
    root = workflow.task_tree["first"]
    skill = VolunteerSkill.objects.filter(workflow=workflow, volunteer_key=volunteer_key, task=root).first()
    return {
        "classified": Classification.objects.filter(workflow=workflow, volunteer_key=volunteer_key).count(),
        "gold_seen": skill.n_gold if skill else 0,
    }
