"""Volunteer skill and the skill-weighted posterior (Dawid & Skene 1979; SWAP, Marshall+2016).

The arithmetic lives in ``mlcore.consensus``; this module reads and writes the rows. Each
volunteer has, per question, a K x K count matrix of evidence (rows: true answer, columns:
given answer). Evidence comes from gold subjects (the true answer is known), from subjects
retired with a confident posterior (soft evidence) and from the periodic EM re-estimate.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from django.db import connection

from labeler.classifications.models import Classification, Consensus, VolunteerSkill
from labeler.learning.models import ModelVersion, Prediction
from labeler.workflows.models import SubjectState, Workflow
from mlcore import consensus as ds
from mlcore import tasktree


def votes_and_skills(workflow: Workflow, subject_id: int) -> tuple[dict, dict[tuple[str, str], np.ndarray]]:
    """Every vote on the subject ``{task: [(volunteer_key, answer)]}`` in the order given, and its
    voters' skill counts ``{(volunteer_key, task): (K, K)}`` (none for a stranger): one query.

    This runs on every submission: the two querysets it replaces cost more CPU to build than
    the database spent answering them.
    """
    by_task: dict[str, list[tuple[str, int]]] = defaultdict(list)
    counts = {}
    voters = set()
    with connection.cursor() as cursor:
        cursor.execute(_votes_and_skills_sql(), [workflow.id, subject_id])
        for key, annotation, task, matrix in cursor.fetchall():  # one row per (vote, voter's skill row)
            if key not in voters:  # a volunteer votes once per subject
                voters.add(key)
                for step in json.loads(annotation):
                    by_task[step["task"]].append((key, step["answer"]))
            if task is not None:
                counts[(key, task)] = np.asarray(json.loads(matrix), dtype=float)
    return by_task, counts


@lru_cache(maxsize=1)
def _votes_and_skills_sql() -> str:
    """JSON columns come back as text on both backends (Django's PostgreSQL loaders, SQLite)."""
    return (
        f"SELECT c.volunteer_key, c.annotation, s.task, s.counts FROM {_table(Classification)} c"
        f" LEFT JOIN {_table(VolunteerSkill)} s"
        " ON s.workflow_id = c.workflow_id AND s.volunteer_key = c.volunteer_key"
        " WHERE c.workflow_id = %s AND c.subject_id = %s ORDER BY c.id"
    )


def consensus_posterior(*, workflow: Workflow, subject_id: int) -> dict[str, list[float]]:
    """Skill-weighted posterior per question from every vote on the subject (uniform prior)."""
    by_task, counts = votes_and_skills(workflow, subject_id)
    posterior = {}
    for task, k in tasktree.label_layout(workflow.task_tree):
        votes = by_task.get(task)
        if not votes:
            continue
        zeros = np.zeros((k, k))
        # One (V, K, K) stack and one normalisation for all voters: per-voter numpy calls on
        # 3x3 matrices cost more in call overhead than the arithmetic (same numbers).
        voter_counts = np.stack([counts.get((key, task), zeros) for key, _ in votes])
        confusions = ds.confusion_from_counts(voter_counts, ds.dirichlet_prior(k))  # (V, K, K)
        answers = np.array([answer for _, answer in votes])
        p = ds.posterior_from_votes(np.full(k, 1 / k), confusions, answers)  # (K,)
        if task == workflow.task_tree["first"]:
            p = _with_model_agent(workflow, subject_id, task, p)
        posterior[task] = [round(float(x), 6) for x in p]
    return posterior


def pinned_posterior(workflow: Workflow, posterior: dict, gold: dict[str, int]) -> dict[str, list[float]]:
    """The posterior with each question an expert answered (``{task: answer}``) set to certainty."""
    layout = dict(tasktree.label_layout(workflow.task_tree))
    pinned = dict(posterior)
    for task, answer in gold.items():
        pinned[task] = np.eye(layout[task])[answer].tolist()
    return pinned


@dataclass(frozen=True)
class ActivePrediction:
    probabilities: dict[str, list[float]]  # per question, the model's class probabilities
    agent_confusion: list  # the model version's measured confusion (K, K * bins)


def active_prediction(workflow: Workflow, subject_id: int) -> ActivePrediction | None:
    """The active model's prediction for a subject it was not trained on (else None).

    A model's view of its own training subjects would only echo their votes. Two columns by
    raw SQL, no model instances: this runs on every submission (twice near retirement), and
    building the queryset cost more CPU than the database spent answering it.
    """
    with connection.cursor() as cursor:
        cursor.execute(_active_prediction_sql(), [subject_id, False, workflow.id, ModelVersion.Status.ACTIVE])
        row = cursor.fetchone()
    return None if row is None else ActivePrediction(json.loads(row[0]), json.loads(row[1]))


@lru_cache(maxsize=1)
def _active_prediction_sql() -> str:
    return (
        f"SELECT p.probabilities, v.agent_confusion FROM {_table(Prediction)} p"
        f" INNER JOIN {_table(ModelVersion)} v ON v.id = p.model_version_id"
        " WHERE p.subject_id = %s AND p.in_training = %s AND v.workflow_id = %s AND v.status = %s"
        " AND v.agent_confusion IS NOT NULL ORDER BY p.id LIMIT 1"
    )


def _with_model_agent(workflow: Workflow, subject_id: int, task: str, posterior: np.ndarray) -> np.ndarray:
    """Add the active model as one more voter with its measured confusion (Raykar+2010)."""
    prediction = active_prediction(workflow, subject_id)
    if prediction is None or task not in prediction.probabilities:
        return posterior
    probs = np.asarray([prediction.probabilities[task]])  # (1, K)
    confusion = np.asarray(prediction.agent_confusion)  # (K, K * bins)
    return ds.posterior_with_agent(posterior, confusion, ds.model_answers(probs))[0]


def agreement_of(counts: dict[str, list[int]]) -> dict[str, float]:
    """1 - normalised entropy of the vote fractions, per question that has votes."""
    out = {}
    for task, row in counts.items():
        if sum(row):
            out[task] = round(float(ds.agreement(np.asarray([row], dtype=float))[0]), 6)
    return out


def skill_learn(*, workflow: Workflow, evidence: list[tuple[str, str, int, np.ndarray]], gold: bool) -> None:
    """Add evidence rows ``(volunteer_key, task, given_answer, truth)`` to the volunteers' counts.

    ``truth`` is a one-hot (gold) or a posterior vector (confident consensus). Rows are
    locked in a fixed order so concurrent updates cannot deadlock.
    """
    if not evidence:
        return
    layout = dict(tasktree.label_layout(workflow.task_tree))
    wanted = {(key, task) for key, task, _, _ in evidence}
    # One INSERT .. ON CONFLICT DO NOTHING makes the missing rows (a get_or_create each cost up
    # to four statements); rows that exist are left as they are.
    VolunteerSkill.objects.bulk_create(
        [
            VolunteerSkill(
                workflow=workflow, volunteer_key=key, task=task, counts=np.zeros((layout[task], layout[task])).tolist()
            )
            for key, task in sorted(wanted)
        ],
        ignore_conflicts=True,
    )
    rows = _skill_rows_locked(workflow, wanted)
    for key, task, answer, truth in evidence:
        row = rows[(key, task)]
        row.counts = ds.confusion_update(np.asarray(row.counts, dtype=float), truth, answer).tolist()
        row.n_gold += int(gold)
    _skill_rows_save(list(rows.values()))


def _skill_rows_locked(workflow: Workflow, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], VolunteerSkill]:
    """The ``wanted`` ``(volunteer_key, task)`` rows, locked in id order (a row of another
    question of these volunteers may be locked too, never changed)."""
    keys, tasks = {key for key, _ in wanted}, {task for _, task in wanted}
    rows = (
        VolunteerSkill.objects.select_for_update()
        .filter(workflow=workflow, volunteer_key__in=keys, task__in=tasks)
        .order_by("id")
    )
    return {(row.volunteer_key, row.task): row for row in rows if (row.volunteer_key, row.task) in wanted}


def _skill_rows_save(rows: list[VolunteerSkill]) -> None:
    """Write the rows' ``counts`` and ``n_gold``: one statement per row, sent together.

    A subject retiring on confident consensus updates every voter's row of every question
    (~25): bulk_update's CASE expression cost more CPU to build than the whole submission
    otherwise. ``executemany`` sends them in one pipeline on PostgreSQL.
    """
    counts = VolunteerSkill._meta.get_field("counts")
    with connection.cursor() as cursor:
        cursor.executemany(
            _skill_update_sql(),
            [(counts.get_db_prep_save(row.counts, connection), row.n_gold, row.pk) for row in rows],
        )


@lru_cache(maxsize=1)
def _skill_update_sql() -> str:
    return f"UPDATE {_table(VolunteerSkill)} SET counts = %s, n_gold = %s WHERE id = %s"


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def gold_evidence(volunteer_key: str, path: list[dict], gold_answers: dict, layout: dict) -> list:
    """Evidence from a gold subject: the questions on this volunteer's path whose answer is known."""
    return [
        (volunteer_key, step["task"], step["answer"], np.eye(layout[step["task"]])[gold_answers[step["task"]]])
        for step in path
        if step["task"] in gold_answers
    ]


def consensus_evidence(workflow: Workflow, subject_id: int, posterior: dict[str, list[float]]) -> list:
    """Soft evidence from a confidently retired subject: every vote against the posterior."""
    return [
        (key, task, answer, np.asarray(posterior[task]))
        for task, votes in votes_and_skills(workflow, subject_id)[0].items()
        if task in posterior
        for key, answer in votes
    ]


def skills_reestimate(*, workflow: Workflow) -> dict[str, int]:
    """Full Dawid-Skene EM per question over every vote (gold clamped): corrects online drift.

    Rewrites every volunteer's counts and every subject's posterior. Returns EM iterations per task.
    """
    rows = list(
        Classification.objects.filter(workflow=workflow).values_list("subject_id", "volunteer_key", "annotation")
    )
    gold = dict(
        SubjectState.objects.filter(workflow=workflow, gold_answers__isnull=False).values_list(
            "subject_id", "gold_answers"
        )
    )
    subjects = sorted({sid for sid, _, _ in rows})
    keys = sorted({key for _, key, _ in rows})
    s_index, v_index = {s: i for i, s in enumerate(subjects)}, {k: i for i, k in enumerate(keys)}
    posteriors: dict[int, dict[str, list[float]]] = defaultdict(dict)
    iterations = {}
    for task, k in tasktree.label_layout(workflow.task_tree):
        votes = np.array(  # (M, 3): subject, volunteer, answer
            [(s_index[sid], v_index[key], s["answer"]) for sid, key, path in rows for s in path if s["task"] == task],
            dtype=int,
        ).reshape(-1, 3)
        if not len(votes):
            continue
        known = np.array([gold.get(sid, {}).get(task, -1) for sid in subjects])
        est = ds.skill_em(votes, k, n_subjects=len(subjects), n_volunteers=len(keys), known=known)
        iterations[task] = est.n_iter
        _write_counts(workflow, task, keys, est.counts)
        for i in np.unique(votes[:, 0]):
            posteriors[subjects[i]][task] = [round(float(p), 6) for p in est.posteriors[i]]
    for consensus in Consensus.objects.filter(workflow=workflow, subject_id__in=posteriors):
        consensus.posterior = posteriors[consensus.subject_id]
        consensus.save(update_fields=["posterior", "updated_at"])
    return iterations


def _write_counts(workflow: Workflow, task: str, keys: list[str], counts: np.ndarray) -> None:
    """counts: (V, K, K) EM evidence, in ``keys`` order."""
    existing = {row.volunteer_key: row for row in VolunteerSkill.objects.filter(workflow=workflow, task=task)}
    new, changed = [], []
    for key, matrix in zip(keys, counts, strict=True):
        row = existing.get(key) or VolunteerSkill(workflow=workflow, volunteer_key=key, task=task)
        row.counts = np.round(matrix, 6).tolist()
        (changed if row.pk else new).append(row)
    VolunteerSkill.objects.bulk_create(new, batch_size=1000)
    VolunteerSkill.objects.bulk_update(changed, ["counts"], batch_size=1000)
