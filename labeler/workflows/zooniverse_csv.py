"""Reading Zooniverse's Panoptes CSV exports (workflows, subjects, classifications) into plain records.

Rows are numbered as a spreadsheet shows them: the header is row 1. Every error names the
file, the row and the column. No database here.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from labeler.workflows import zooniverse as zoo
from labeler.workflows.zooniverse import ZooniverseError

MAX_CELL = 16 * 1024 * 1024  # drawing annotations can be long; anything larger is not an export
csv.field_size_limit(MAX_CELL)

WORKFLOW_COLUMNS = ("workflow_id", "display_name", "version", "tasks")
SUBJECT_COLUMNS = ("subject_id", "metadata", "locations")
CLASSIFICATION_COLUMNS = (
    "classification_id",
    "user_name",
    "user_id",
    "workflow_id",
    "workflow_version",
    "created_at",
    "metadata",
    "annotations",
    "subject_ids",
)


@dataclass(frozen=True)
class WorkflowVersion:
    workflow_id: int
    name: str
    major: int
    minor: int
    tasks: dict
    first_task: str
    strings: dict
    retirement: dict
    row: int


@dataclass(frozen=True)
class SubjectRow:
    subject_id: int
    metadata: dict
    locations: list[str]  # image URLs in frame order
    workflow_id: int | None
    retired_at: datetime | None
    retirement_reason: str


@dataclass(frozen=True)
class ClassificationRow:
    classification_id: str
    volunteer_key: str
    workflow_id: int
    major: int
    created_at: datetime
    started_at: datetime | None
    duration_ms: int | None
    user_agent: str
    natural_height: float | None  # the image height Zooniverse's viewer reported, in its pixels
    annotations: list[dict]
    subject_ids: list[int]
    subject_data: dict
    gold_standard: bool
    row: int


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ZooniverseError(f"{path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ZooniverseError(f"{path.name}: missing column(s) {missing}; is this the right export?")
        n = 1
        try:
            for n, row in enumerate(reader, start=2):
                if None in row:
                    raise ZooniverseError(f"{path.name} row {n}: more cells than the header has columns")
                yield n, row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ZooniverseError(f"{path.name} row {n + 1}: unreadable CSV ({exc})") from None


def _json(path: Path, n: int, column: str, text: str, kind: type, default=None):
    if not text.strip() and default is not None:
        return default
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ZooniverseError(f"{path.name} row {n}, column {column!r}: not valid JSON ({exc})") from None
    if value is None and default is not None:
        return default
    if not isinstance(value, kind):
        raise ZooniverseError(f"{path.name} row {n}, column {column!r}: expected a JSON {kind.__name__}")
    return value


def _int(path: Path, n: int, column: str, text: str | None) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ZooniverseError(f"{path.name} row {n}, column {column!r}: expected an integer, got {text!r}") from None


def parse_time(text: str | None) -> datetime | None:
    """Zooniverse's ``2017-05-31 12:33:46 UTC`` and ISO ``2017-05-31T12:33:40.123Z`` (None if empty or odd)."""
    text = (text or "").strip()
    if not text:
        return None
    text = text.removesuffix(" UTC").replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_workflows(path: Path) -> dict[int, dict[int, WorkflowVersion]]:
    """workflow id -> major version -> that version's newest minor revision."""
    out: dict[int, dict[int, WorkflowVersion]] = {}
    for n, row in _rows(path, WORKFLOW_COLUMNS):
        major = _int(path, n, "version", row["version"])
        minor = _int(path, n, "minor_version", row.get("minor_version") or "0")
        version = WorkflowVersion(
            workflow_id=_int(path, n, "workflow_id", row["workflow_id"]),
            name=(row.get("display_name") or "").strip(),
            major=major,
            minor=minor,
            tasks=_json(path, n, "tasks", row["tasks"], dict),
            first_task=(row.get("first_task") or "").strip(),
            strings=_json(path, n, "strings", row.get("strings") or "", dict, default={}),
            retirement=_json(path, n, "retirement", row.get("retirement") or "", dict, default={}),
            row=n,
        )
        known = out.setdefault(version.workflow_id, {}).get(major)
        if known is None or known.minor <= minor:
            out[version.workflow_id][major] = version
    return out


def read_subjects(path: Path) -> dict[int, list[SubjectRow]]:
    """subject id -> its rows (one per workflow its set is linked to)."""
    out: dict[int, list[SubjectRow]] = {}
    for n, row in _rows(path, SUBJECT_COLUMNS):
        locations = _json(path, n, "locations", row["locations"], dict, default={})
        workflow = (row.get("workflow_id") or "").strip()
        subject = SubjectRow(
            subject_id=_int(path, n, "subject_id", row["subject_id"]),
            metadata=_json(path, n, "metadata", row["metadata"], dict, default={}),
            locations=[str(locations[k]) for k in sorted(locations, key=zoo.natural_key)],
            workflow_id=_int(path, n, "workflow_id", workflow) if workflow else None,
            retired_at=parse_time(row.get("retired_at")),
            retirement_reason=(row.get("retirement_reason") or "").strip(),
        )
        out.setdefault(subject.subject_id, []).append(subject)
    return out


def read_classifications(path: Path) -> Iterator[ClassificationRow]:
    for n, row in _rows(path, CLASSIFICATION_COLUMNS):
        yield _classification(path, n, row)


def _classification(path: Path, n: int, row: dict) -> ClassificationRow:
    meta = _json(path, n, "metadata", row["metadata"], dict, default={})
    annotations = _json(path, n, "annotations", row["annotations"], list)
    if not all(isinstance(a, dict) for a in annotations):
        raise ZooniverseError(f"{path.name} row {n}, column 'annotations': expected a list of task objects")
    try:
        key = zoo.volunteer_key(user_name=row["user_name"], user_id=row["user_id"], user_ip=row.get("user_ip") or "")
    except ValueError as exc:
        raise ZooniverseError(f"{path.name} row {n}, column 'user_id': {exc}") from None
    try:
        major = zoo.major_version(row["workflow_version"])
    except ValueError as exc:
        raise ZooniverseError(f"{path.name} row {n}, column 'workflow_version': {exc}") from None
    created = parse_time(row["created_at"])
    if created is None:
        raise ZooniverseError(f"{path.name} row {n}, column 'created_at': expected a time, got {row['created_at']!r}")
    cells = row["subject_ids"].replace(";", ",").split(",")
    subject_ids = [_int(path, n, "subject_ids", s) for s in cells if s.strip()]
    if not subject_ids:
        raise ZooniverseError(f"{path.name} row {n}, column 'subject_ids': empty")
    started, finished = parse_time(meta.get("started_at")), parse_time(meta.get("finished_at"))
    duration = int((finished - started).total_seconds() * 1000) if started and finished else None
    return ClassificationRow(
        classification_id=row["classification_id"].strip(),
        volunteer_key=key,
        workflow_id=_int(path, n, "workflow_id", row["workflow_id"]),
        major=major,
        created_at=created,
        started_at=started,
        duration_ms=duration if duration is not None and 0 <= duration < 2**31 else None,
        user_agent=str(meta.get("user_agent") or "")[:400],
        natural_height=_natural_height(meta),
        annotations=annotations,
        subject_ids=subject_ids,
        subject_data=_json(path, n, "subject_data", row.get("subject_data") or "", dict, default={}),
        gold_standard=(row.get("gold_standard") or "").strip().lower() == "true",
        row=n,
    )


def _natural_height(meta: dict) -> float | None:
    dims = meta.get("subject_dimensions")
    first = dims[0] if isinstance(dims, list) and dims else None
    height = first.get("naturalHeight") if isinstance(first, dict) else None
    return float(height) if isinstance(height, int | float) and height > 0 else None
