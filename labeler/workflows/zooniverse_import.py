"""Importing a Zooniverse project's history: workflows, subjects and classifications, then consensus.

All or nothing: ``zooniverse_import_plan`` (``zooniverse_plan``) reads and checks every row and
image first; then one transaction writes workflows, subjects, classifications, gold answers
and retirements, rebuilds each imported subject's consensus and re-estimates every
volunteer's skill (Dawid-Skene EM). Re-running the same export stores nothing twice:
classifications carry a client UUID derived from Zooniverse's classification id.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from django.db import IntegrityError, connection, transaction
from django.db.models import Count
from django.utils import timezone

from labeler.classifications.models import Classification, Consensus
from labeler.classifications.retirement import FOR_REVIEW, retirement_reason
from labeler.classifications.skill import skills_reestimate
from labeler.subjects import storage
from labeler.subjects.models import Project, Subject
from labeler.subjects.services import NewSubject, project_get_or_create, subjects_create
from labeler.workflows.models import SubjectState, Workflow
from labeler.workflows.services import subject_states_attach, workflow_create
from labeler.workflows.zooniverse import ZooniverseError
from labeler.workflows.zooniverse_consensus import consensus_bulk_rebuild
from labeler.workflows.zooniverse_plan import ImportPlan, WorkflowPlan, import_plan

log = logging.getLogger(__name__)
BATCH = 2000


@dataclass
class ImportSummary:
    project: str
    workflows: list[str] = field(default_factory=list)  # project/slug
    workflow_ids: list[int] = field(default_factory=list)
    workflows_created: int = 0
    subjects_created: int = 0
    classifications_created: int = 0
    classifications_existing: int = 0
    gold_subjects: int = 0
    retired: int = 0
    skipped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)


def zooniverse_import(
    *,
    classifications: Path,
    workflows: Path,
    subjects: Path | None = None,
    project_slug: str = "zooniverse",
    media_dir: Path | None = None,
) -> ImportSummary:
    """Import a Panoptes export into ``project_slug`` (created if needed); raise ZooniverseError, storing nothing."""
    project = Project.objects.filter(slug=project_slug).first()
    plan = import_plan(
        classifications=Path(classifications),
        workflows=Path(workflows),
        subjects=Path(subjects) if subjects else None,
        project=project,
        media_dir=Path(media_dir) if media_dir else None,
    )
    summary = ImportSummary(project=project_slug, skipped=plan.skipped, warnings=plan.warnings)
    stored: list[str] = []
    try:
        with transaction.atomic():
            _write(plan, project_slug, summary, stored)
    except Exception:
        storage.remove_files(stored)
        raise
    _after_commit(summary)
    return summary


def _write(plan: ImportPlan, project_slug: str, summary: ImportSummary, stored: list[str]) -> None:
    project = project_get_or_create(slug=project_slug)
    workflows = {zid: _workflow(project, wp, summary) for zid, wp in plan.workflows.items()}
    subjects = _subjects(project, plan, summary, stored)
    for zid, workflow in workflows.items():
        wanted = {c.subject_id for c in plan.classifications if c.workflow_id == zid}
        wanted |= {sid for wid, sid in plan.gold if wid == zid}
        subject_states_attach(project=project, subjects=[subjects[sid] for sid in wanted], workflows=[workflow])
    touched = _classifications(plan, workflows, subjects, summary)
    _gold(plan, workflows, subjects, summary)
    for zid, sid in plan.gold:
        touched[zid].add(subjects[sid].pk)
    for zid, workflow in workflows.items():
        _rebuild(workflow, sorted(touched[zid]), plan, subjects, summary)


def _workflow(project: Project, wp: WorkflowPlan, summary: ImportSummary) -> Workflow:
    """The workflow from an earlier import (its tree updated to this export's newest version), or a new one."""
    workflow = Workflow.objects.filter(project=project, slug=wp.slug).first()
    if workflow is None:
        workflow = workflow_create(
            project=project,
            slug=wp.slug,
            name=wp.name,
            kind=Workflow.Kind.IMAGE,
            task_tree=wp.mapped.tree,
            version=wp.version,
            retire_after=wp.retire_after,
            retire_min=min(3, wp.retire_after),
        )
        summary.workflows_created += 1
    elif workflow.task_tree != wp.mapped.tree or workflow.version < wp.version:
        workflow.task_tree, workflow.version = wp.mapped.tree, max(workflow.version + 1, wp.version)
        workflow.full_clean()
        workflow.save(update_fields=["task_tree", "version"])
    summary.workflows.append(str(workflow))
    summary.workflow_ids.append(workflow.pk)
    return workflow


def _subjects(project: Project, plan: ImportPlan, summary: ImportSummary, stored: list[str]) -> dict[int, Subject]:
    """Zooniverse subject id -> Subject, creating those the project lacks (their files listed in ``stored``)."""
    new = [
        NewSubject(kind=Subject.Kind.IMAGE, external_id=sp.external_id, data=sp.data, metadata=sp.metadata)
        for sp in plan.subjects.values()
        if sp.data is not None
    ]
    created = subjects_create(project=project, new_subjects=new) if new else []
    stored += [s.data_file for s in created]
    summary.subjects_created = len(created)
    by_name = {s.external_id: s for s in created}
    missing = [sp.external_id for sp in plan.subjects.values() if sp.external_id not in by_name]
    for start in range(0, len(missing), BATCH):
        chunk = missing[start : start + BATCH]
        by_name.update({s.external_id: s for s in Subject.objects.filter(project=project, external_id__in=chunk)})
    return {zid: by_name[sp.external_id] for zid, sp in plan.subjects.items()}


def _classifications(plan: ImportPlan, workflows: dict, subjects: dict, summary: ImportSummary) -> dict[int, set]:
    """Insert the classifications not stored yet; return Zooniverse workflow id -> subject ids to rebuild."""
    uuids = [c.client_uuid for c in plan.classifications]
    known = set()
    for start in range(0, len(uuids), BATCH):
        known.update(
            Classification.objects.filter(client_uuid__in=uuids[start : start + BATCH]).values_list(
                "client_uuid", flat=True
            )
        )
    fresh = [c for c in plan.classifications if c.client_uuid not in known]
    rows = [
        Classification(
            client_uuid=c.client_uuid,
            workflow=workflows[c.workflow_id],
            workflow_version=c.version,
            subject=subjects[c.subject_id],
            volunteer_key=c.volunteer_key,
            annotation=c.path,
            marks=c.marks,
            started_at=c.started_at,
            duration_ms=c.duration_ms,
            user_agent=c.user_agent,
            created_at=c.created_at,
        )
        for c in fresh
    ]
    try:
        with transaction.atomic():
            _insert(rows)
    except IntegrityError as exc:
        raise ZooniverseError(f"a classification clashes with one already stored ({exc})") from None
    summary.classifications_created = len(rows)
    summary.classifications_existing = len(known)
    touched: dict[int, set] = defaultdict(set)
    for c in fresh:
        touched[c.workflow_id].add(subjects[c.subject_id].pk)
    return touched


def _insert(rows: list[Classification]) -> None:
    """One INSERT executed for many rows: bulk_create's per-row query building is most of its cost here,
    and it would replace Zooniverse's ``created_at`` by now (auto_now_add)."""
    fields = [f for f in Classification._meta.local_concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(Classification._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    with connection.cursor() as cursor:
        for start in range(0, len(rows), BATCH):
            cursor.executemany(
                sql,
                [
                    [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields]
                    for row in rows[start : start + BATCH]
                ],
            )


def _gold(plan: ImportPlan, workflows: dict, subjects: dict, summary: ImportSummary) -> None:
    """Zooniverse gold-standard classifications become the subjects' known answers (as Skyloop's gold)."""
    for (zid, sid), answers in plan.gold.items():
        if answers:
            SubjectState.objects.filter(workflow=workflows[zid], subject=subjects[sid]).update(gold_answers=answers)
            summary.gold_subjects += 1


def _rebuild(workflow: Workflow, subject_ids: list[int], plan: ImportPlan, subjects: dict, summary) -> None:
    """Counts, consensus and skills from the imported votes, then retirement (Zooniverse's, else Skyloop's rules)."""
    if not subject_ids:
        return
    counts = dict(
        Classification.objects.filter(workflow=workflow, subject_id__in=subject_ids)
        .values_list("subject_id")
        .annotate(n=Count("id"))
        .values_list("subject_id", "n")
    )
    retired = {
        subjects[sid].pk: when_why
        for sid, sp in plan.subjects.items()
        for zid, when_why in sp.retired.items()
        if plan.workflows.get(zid) and workflow.slug == plan.workflows[zid].slug
    }
    consensus = consensus_bulk_rebuild(workflow=workflow, subject_ids=subject_ids)
    skills_reestimate(workflow=workflow)
    for start in range(0, len(subject_ids), BATCH):  # skills_reestimate rewrote the posteriors
        chunk = subject_ids[start : start + BATCH]
        for sid, posterior in Consensus.objects.filter(workflow=workflow, subject_id__in=chunk).values_list(
            "subject_id", "posterior"
        ):
            consensus[sid].posterior = posterior
    states = list(SubjectState.objects.select_for_update().filter(workflow=workflow, subject_id__in=subject_ids))
    for state in states:
        state.classification_count = counts.get(state.subject_id, 0)
        _retire(workflow, state, consensus[state.subject_id], retired.get(state.subject_id))
        summary.retired += state.status == SubjectState.Status.RETIRED
    SubjectState.objects.bulk_update(
        states, ["classification_count", "status", "retired_at", "retirement_reason", "needs_review"], batch_size=BATCH
    )


def _retire(workflow: Workflow, state: SubjectState, consensus, zooniverse: tuple | None) -> None:
    if state.status != SubjectState.Status.ACTIVE:
        return
    if zooniverse is not None:
        state.status, state.retired_at = SubjectState.Status.RETIRED, zooniverse[0]
        state.retirement_reason = f"zooniverse_{zooniverse[1] or 'retired'}"[:64]
        return
    reason = retirement_reason(workflow=workflow, state=state, consensus=consensus)
    if reason:
        state.status, state.retired_at, state.retirement_reason = SubjectState.Status.RETIRED, timezone.now(), reason
        state.needs_review = reason in FOR_REVIEW


def _after_commit(summary: ImportSummary) -> None:
    """Mirror the new states in the Redis selector and let the loop train on the imported labels."""
    from labeler.classifications.queue import subjects_queue_touch
    from labeler.learning.triggers import training_maybe_queue

    for workflow in Workflow.objects.filter(pk__in=summary.workflow_ids):
        ids = list(SubjectState.objects.filter(workflow=workflow).values_list("subject_id", flat=True))
        subjects_queue_touch(workflow_id=workflow.id, answered=[(sid, None) for sid in ids])
        try:
            training_maybe_queue(workflow=workflow)
        except Exception:  # the import is committed; beat's training sweep catches up
            log.exception("could not check whether workflow %s should train", workflow.pk)
