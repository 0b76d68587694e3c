"""Everything a Zooniverse import will write, worked out and checked before anything is written.

``import_plan`` reads the three exports and the local media, maps workflows and every
classification, and raises ZooniverseError at the first problem. Reads the database only
to learn which subjects the project already has.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from labeler.subjects.models import Project, Subject
from labeler.workflows import zooniverse as zoo
from labeler.workflows import zooniverse_csv as zcsv
from labeler.workflows import zooniverse_media as media
from labeler.workflows.zooniverse import ZooniverseError
from mlcore import io as fitsio
from mlcore import marks as marking

DEFAULT_RETIRE_AFTER = 5


@dataclass
class WorkflowPlan:
    zoo_id: int
    slug: str
    name: str
    version: int  # newest Zooniverse major version: the tree's
    mapped: zoo.MappedWorkflow
    retire_after: int


@dataclass
class SubjectPlan:
    zoo_id: int
    external_id: str
    metadata: dict
    data: fitsio.ImageData | None  # None: the project already has this subject
    shape: tuple[int, ...] | None  # (B, H, W) of the stored image: marks are flipped and clipped to it
    retired: dict[int, tuple[datetime | None, str]] = field(default_factory=dict)  # zoo workflow -> when, why


@dataclass
class ClassificationPlan:
    client_uuid: object
    workflow_id: int  # Zooniverse's
    subject_id: int  # Zooniverse's
    volunteer_key: str
    version: int
    path: list[dict]
    marks: list[dict]
    created_at: datetime
    started_at: datetime | None
    duration_ms: int | None
    user_agent: str


@dataclass
class ImportPlan:
    workflows: dict[int, WorkflowPlan]
    subjects: dict[int, SubjectPlan]
    classifications: list[ClassificationPlan]
    gold: dict[tuple[int, int], dict[str, int]]  # (zoo workflow, zoo subject) -> {task: answer}
    skipped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)


def import_plan(
    *, classifications: Path, workflows: Path, subjects: Path | None, project: Project | None, media_dir: Path | None
) -> ImportPlan:
    versions = zcsv.read_workflows(workflows)
    subject_rows = zcsv.read_subjects(subjects) if subjects else {}
    rows = sorted(zcsv.read_classifications(classifications), key=lambda r: (r.created_at, r.row))
    if not rows:
        raise ZooniverseError(f"{classifications.name}: no classifications")
    plan = ImportPlan(workflows={}, subjects={}, classifications=[], gold={})
    for row in rows:
        if row.workflow_id not in plan.workflows:
            plan.workflows[row.workflow_id] = _workflow_plan(row, versions, workflows.name, plan.warnings)
        if row.major not in versions[row.workflow_id]:
            raise ZooniverseError(
                f"{classifications.name} row {row.row}, column 'workflow_version': version {row.major} of workflow "
                f"{row.workflow_id} is not in {workflows.name}"
            )
    _plan_subjects(plan, rows, subject_rows, project, media_dir)
    _plan_classifications(plan, rows, versions)
    return plan


def _workflow_plan(row: zcsv.ClassificationRow, versions: dict, filename: str, warnings: list[str]) -> WorkflowPlan:
    if row.workflow_id not in versions:
        raise ZooniverseError(f"workflow {row.workflow_id} (classification row {row.row}) is not in {filename}")
    newest = versions[row.workflow_id][max(versions[row.workflow_id])]
    name = newest.name or f"Zooniverse workflow {newest.workflow_id}"
    try:
        mapped = zoo.map_workflow(name=name, tasks=newest.tasks, first_task=newest.first_task, strings=newest.strings)
    except ZooniverseError as exc:
        raise ZooniverseError(f"{filename} row {newest.row}: {exc}") from None
    retire_after, note = zoo.retire_after(newest.retirement, DEFAULT_RETIRE_AFTER)
    warnings += [f"workflow {newest.workflow_id}: {w}" for w in mapped.warnings + ([note] if note else [])]
    return WorkflowPlan(
        zoo_id=newest.workflow_id,
        slug=f"zooniverse-{newest.workflow_id}",
        name=name[:200],
        version=newest.major,
        mapped=mapped,
        retire_after=retire_after,
    )


def _plan_subjects(plan: ImportPlan, rows: list, subject_rows: dict, project: Project | None, media_dir) -> None:
    """Every subject the classifications name: reuse the project's, or read its local image."""
    seen: dict[int, zcsv.ClassificationRow] = {}
    for row in rows:
        seen.setdefault(row.subject_ids[0], row)
    existing = {}
    if project is not None:
        existing = {
            s.external_id: s
            for s in Subject.objects.filter(project=project, external_id__in=[str(sid) for sid in seen])
        }
    missing = []
    for sid, row in seen.items():
        from_file = subject_rows.get(sid, [])
        metadata = dict(from_file[0].metadata) if from_file else _metadata_from(row, sid)
        locations = from_file[0].locations if from_file else []
        subject = SubjectPlan(
            zoo_id=sid,
            external_id=str(sid),
            metadata={"zooniverse": {"subject_id": sid, "metadata": metadata, "locations": locations}},
            data=None,
            shape=None,
            retired=_retirements(from_file, row, sid),
        )
        if str(sid) in existing:
            old = existing[str(sid)]
            if "zooniverse" not in (old.metadata or {}):
                raise ZooniverseError(f"project already has a subject {sid!r} that did not come from Zooniverse")
            shape = (old.metadata or {}).get("shape")
            subject.shape = tuple(shape) if isinstance(shape, list) and len(shape) >= 2 else None
        else:
            found = media.find_media(media_dir, sid, locations) if media_dir else None
            if found is None:
                missing.append(sid)
                continue
            ra, dec = media.radec_from_metadata(metadata)
            subject.data = media.read_media(found, ra=ra, dec=dec)
            subject.metadata["source_file"] = found.name
            subject.shape = subject.data.cube.shape
        plan.subjects[sid] = subject
    if missing:
        where = f"in {media_dir}" if media_dir else "(no --media-dir given)"
        raise ZooniverseError(
            f"{len(missing)} subject(s) have no local image {where}: {missing[:5]}. Put each subject's image in "
            "the media folder, named by subject id (1234.png) or by its location's file name."
        )


def _metadata_from(row: zcsv.ClassificationRow, sid: int) -> dict:
    data = row.subject_data.get(str(sid))
    return {k: v for k, v in data.items() if k != "retired"} if isinstance(data, dict) else {}


def _retirements(from_file: list, row: zcsv.ClassificationRow, sid: int) -> dict[int, tuple]:
    out = {r.workflow_id: (r.retired_at, r.retirement_reason) for r in from_file if r.workflow_id and r.retired_at}
    retired = (row.subject_data.get(str(sid)) or {}).get("retired") if isinstance(row.subject_data, dict) else None
    if isinstance(retired, dict) and retired.get("retired_at") and not out:
        when = zcsv.parse_time(str(retired.get("retired_at")))
        wid = retired.get("workflow_id", row.workflow_id)
        if when is not None and isinstance(wid, int):
            out[wid] = (when, str(retired.get("retirement_reason") or "retired"))
    return out


def _plan_classifications(plan: ImportPlan, rows: list, versions: dict) -> None:
    """Map every row; the earliest classification of a volunteer on a subject wins, as in Skyloop."""
    taken: set[tuple[int, int, str]] = set()
    tasks_of: dict[tuple[int, int], zoo.VersionTasks] = {}
    for row in rows:
        if len(row.subject_ids) != 1:
            plan.skipped["classifications of several subjects at once"] += 1
            continue
        sid = row.subject_ids[0]
        workflow = plan.workflows[row.workflow_id]
        subject = plan.subjects[sid]
        if (row.workflow_id, row.major) not in tasks_of:
            source = versions[row.workflow_id][row.major]
            tasks_of[row.workflow_id, row.major] = zoo.version_tasks(source.tasks, source.strings)
        version = tasks_of[row.workflow_id, row.major]
        height = float(subject.shape[-2]) if subject.shape else None
        scale = height / row.natural_height if height and row.natural_height else 1.0
        mapped = zoo.map_annotations(
            row.annotations, version=version, mapped=workflow.mapped, image_height=height, scale=scale
        )
        plan.skipped["answers that do not fit the newest workflow version"] += mapped.dropped_steps
        drawn = _valid_marks(workflow.mapped.tree.get("marks"), mapped.marks, subject, plan.skipped)
        plan.skipped["marks of unsupported tools or unknown image size"] += mapped.dropped_marks
        if row.gold_standard:
            plan.gold.setdefault((row.workflow_id, sid), {s["task"]: s["answer"] for s in mapped.path})
            continue
        if not mapped.path and not drawn:
            plan.skipped["classifications with nothing Skyloop can use"] += 1
            continue
        if (row.workflow_id, sid, row.volunteer_key) in taken:
            plan.skipped["repeat classifications of a subject by the same volunteer"] += 1
            continue
        taken.add((row.workflow_id, sid, row.volunteer_key))
        plan.classifications.append(
            ClassificationPlan(
                client_uuid=zoo.classification_uuid(row.classification_id),
                workflow_id=row.workflow_id,
                subject_id=sid,
                volunteer_key=row.volunteer_key,
                version=row.major,
                path=mapped.path,
                marks=drawn,
                created_at=row.created_at,
                started_at=row.started_at,
                duration_ms=row.duration_ms,
                user_agent=row.user_agent,
            )
        )
    plan.skipped = Counter({k: v for k, v in plan.skipped.items() if v})


def _valid_marks(spec: dict | None, drawn: list[dict], subject: SubjectPlan, skipped: Counter) -> list[dict]:
    """Marks Skyloop accepts (clipped to the image); boxes of zero size and the like are dropped and counted."""
    if not spec or not drawn:
        return []
    kept = []
    for mark in drawn[: spec["max_marks"]]:
        try:
            kept += marking.validate_marks(spec, [mark], image_shape=subject.shape)
        except marking.MarksError:
            skipped["marks Skyloop refuses (empty, or outside the image)"] += 1
    skipped["marks beyond the per-subject limit"] += max(0, len(drawn) - spec["max_marks"])
    return kept
