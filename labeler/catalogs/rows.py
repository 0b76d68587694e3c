"""Reading a workflow's catalog rows in chunks, with bounded memory.

Rows are read by keyset pagination on ``subject_id`` (``WHERE subject_id > last ORDER BY
subject_id LIMIT chunk``) rather than one long ``.iterator()`` cursor: each chunk is three
short queries (states, their consensus, their predictions), so an export of 10^6 rows never
holds a transaction or a server-side cursor open for minutes, on SQLite or PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

from django.db.models import Max, TextField
from django.db.models.functions import Cast, Length

from labeler.catalogs.columns import Record, Widths
from labeler.classifications.models import Consensus
from labeler.learning.models import ModelVersion, Prediction
from labeler.workflows.models import SubjectState, Workflow

DEFAULT_CHUNK = 5000
# Versions whose predictions count: they went live at some point (an in-progress or failed
# run may have written predictions that never reached volunteers).
PUBLISHED = (ModelVersion.Status.ACTIVE, ModelVersion.Status.RETIRED)


class CatalogFilterError(ValueError):
    """A filter value is not allowed."""


@dataclass(frozen=True)
class CatalogFilters:
    retired_only: bool = False
    min_classifications: int = 0

    def __post_init__(self):
        if not isinstance(self.retired_only, bool):
            raise CatalogFilterError("retired_only must be true or false")
        if isinstance(self.min_classifications, bool) or not isinstance(self.min_classifications, int):
            raise CatalogFilterError("min_classifications must be an integer")
        if self.min_classifications < 0:
            raise CatalogFilterError("min_classifications must be >= 0")

    @classmethod
    def from_dict(cls, data: dict | None) -> CatalogFilters:
        data = dict(data or {})
        unknown = set(data) - {"retired_only", "min_classifications"}
        if unknown:
            raise CatalogFilterError(f"unknown filters: {sorted(unknown)}")
        return cls(**data)

    def as_dict(self) -> dict:
        return asdict(self)


def catalog_states(workflow: Workflow, filters: CatalogFilters):
    states = SubjectState.objects.filter(workflow=workflow)
    if filters.retired_only:
        states = states.filter(status=SubjectState.Status.RETIRED)
    if filters.min_classifications:
        states = states.filter(classification_count__gte=filters.min_classifications)
    return states


def catalog_count(workflow: Workflow, filters: CatalogFilters) -> int:
    return catalog_states(workflow, filters).count()


def catalog_widths(workflow: Workflow, filters: CatalogFilters) -> Widths:
    """The longest strings, so that fixed-width formats (FITS) never cut one short.

    The marks JSON width is bounded by the longest stored ``Consensus.marks`` text: each
    tool's compact JSON is a part of it.
    """
    states = catalog_states(workflow, filters).aggregate(
        external_id=Max(Length("subject__external_id")), reason=Max(Length("retirement_reason"))
    )
    marks = Consensus.objects.filter(workflow=workflow).aggregate(n=Max(Length(Cast("marks", TextField()))))
    return Widths(
        external_id=states["external_id"] or 1, retirement_reason=states["reason"] or 1, marks_json=marks["n"] or 2
    )


def catalog_records(
    workflow: Workflow, filters: CatalogFilters, *, chunk_size: int = DEFAULT_CHUNK, with_files: bool = False
) -> Iterator[list[Record]]:
    """Yield the catalog's rows in chunks of at most ``chunk_size``, by increasing subject id.

    ``with_files`` also reads each subject's metadata and data file (COCO needs the image size).
    """
    fields = [
        "subject_id", "subject__external_id", "subject__ra", "subject__dec", "status", "classification_count",
        "flag_count", "needs_review", "retired_at", "retirement_reason", "gold_answers",
    ]  # fmt: skip
    if with_files:
        fields += ["subject__metadata", "subject__data_file"]
    states = catalog_states(workflow, filters).order_by("subject_id").values_list(*fields)
    last = 0
    while True:
        rows = list(states.filter(subject_id__gt=last)[:chunk_size])
        if not rows:
            return
        ids = [row[0] for row in rows]
        consensus = _consensus_by_subject(workflow, ids)
        predictions = _predictions_by_subject(workflow, ids)
        yield [_record(row, consensus.get(row[0]), predictions.get(row[0]), with_files) for row in rows]
        last = ids[-1]


def _record(row: tuple, consensus: dict | None, prediction: dict | None, with_files: bool) -> Record:
    record = Record(*row[:11], consensus=consensus, prediction=prediction)
    if with_files:
        record.metadata = row[11] or {}
        record.data_file = row[12]
    return record


def _consensus_by_subject(workflow: Workflow, ids: list[int]) -> dict[int, dict]:
    rows = Consensus.objects.filter(workflow=workflow, subject_id__in=ids).values_list(
        "subject_id", "counts", "fractions", "posterior", "agreement", "marks"
    )
    keys = ("counts", "fractions", "posterior", "agreement", "marks")
    return {row[0]: dict(zip(keys, row[1:], strict=True)) for row in rows}


def _predictions_by_subject(workflow: Workflow, ids: list[int]) -> dict[int, dict]:
    """Each subject's prediction by the newest published model version that scored it."""
    rows = (
        Prediction.objects.filter(
            model_version__workflow=workflow, model_version__status__in=PUBLISHED, subject_id__in=ids
        )
        .order_by("subject_id", "model_version__number")
        .values_list(
            "subject_id",
            "model_version__number",
            "model_version__sha256",
            "probabilities",
            "entropy",
            "bald",
            "in_training",
        )
    )
    keys = ("number", "sha256", "probabilities", "entropy", "bald", "in_training")
    return {row[0]: dict(zip(keys, row[1:], strict=True)) for row in rows}  # the newest number wins
