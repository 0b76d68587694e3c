"""Reading a workflow's catalog column by column, one chunk of subjects at a time.

10^6 rows must export in seconds, so no Python work is done per cell: each chunk is three
keyset-paginated queries (states with their subjects, consensus, predictions) whose compiled SQL
runs on a plain cursor (no per-row Django converters). Consensus and prediction columns arrive
as one newline-joined text per column and chunk (``group_concat`` / ``string_agg``), so no
Python object is made per row; pyarrow's C++ JSON reader parses the JSON in one go into typed
arrays. Marks and expert labels, present on few rows, are decoded by ``json`` for those rows alone.

The JSON is parsed lazily (``LazyStruct``), on first use: in an export that is the writer
thread (``pipeline``), so parsing one chunk overlaps the database reading the next.
"""

from __future__ import annotations

import gc
import io
import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from django.db import connection
from django.db.models import F, IntegerField, TextField, Value
from django.db.models.functions import Cast, Concat

from labeler.catalogs.rows import PUBLISHED, CatalogFilters, catalog_states
from labeler.classifications.models import Consensus
from labeler.learning.models import Prediction
from labeler.workflows.models import Workflow
from mlcore import tasktree

NAN = float("nan")
# {task: [value per answer]}. Fractions and agreement are not read: both are functions of the
# counts by construction (tasktree.vote_fractions, mlcore.consensus.agreement), and deriving
# them with numpy halves the JSON to parse.
CONSENSUS_LISTS = ("counts", "posterior")
TABLE_CHUNK = 20_000  # rows a chunk: ~30 MB of columns; fewer, larger queries and parses
# Chunk.state key -> what the states query selects (the last two are cast to text: see catalog_chunks).
STATE_FIELDS = {"subject_id": "subject_id", "external_id": "subject__external_id", "ra": "subject__ra",
                "dec": "subject__dec", "status": "status", "classification_count": "classification_count",
                "flag_count": "flag_count", "needs_review": "needs_review", "retired_at": "retired_text",
                "retirement_reason": "retirement_reason", "gold_answers": "gold_text"}  # fmt: skip


@dataclass
class Chunk:
    """One chunk of catalog rows, by increasing subject id, as columns.

    ``state``: the SubjectState and Subject fields of ``STATE_FIELDS`` (``retired_at`` as
    ``YYYY-MM-DD HH:MM:SS`` UTC text); ``gold``: ``{row: gold_answers}`` of the few rows that have
    expert labels; ``consensus``: a struct array
    (counts, posterior: ``{task: [..]}``), null where a
    subject has no consensus; ``marks``: each row's ``Consensus.marks`` (None if empty);
    ``prediction``: number (0: none), sha256, entropy, bald, in_training; ``probabilities``:
    a struct array ``{task: [..]}``, null without a prediction.
    """

    state: dict[str, list]
    gold: dict[int, dict]
    consensus_json: LazyStruct
    marks: list[dict | None]
    prediction: dict[str, np.ndarray | list]
    probabilities_json: LazyStruct

    def __len__(self) -> int:
        return len(self.state["subject_id"])

    @property
    def consensus(self) -> pa.StructArray:
        return self.consensus_json.parsed()

    @property
    def probabilities(self) -> pa.StructArray:
        return self.probabilities_json.parsed()

    def consensus_matrix(self, name: str, key: str, k: int) -> np.ndarray:
        """(n, k) float64 of ``Consensus.<name>[key]``; NaN rows where it is missing or not k long."""
        return fixed_lists(pc.struct_field(pc.struct_field(self.consensus, [name]), [key]), k)

    def vote_fractions(self, counts: np.ndarray) -> np.ndarray:
        """(n, k) share of each answer among the question's votes, from (n, k) counts (NaN rows stay NaN).

        As ``tasktree.vote_fractions``, which wrote ``Consensus.fractions``: 0 where nobody answered.
        """
        total = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, counts / total, np.where(np.isnan(total), np.nan, 0.0))

    def gold_answers(self, key: str, k: int) -> np.ndarray:
        """The expert's answer index to ``key`` per row; ``k`` where there is none (or it is not an answer)."""
        out = np.full(len(self), k, dtype="int64")
        for row, answers in self.gold.items():
            answer = answers.get(key) if isinstance(answers, Mapping) else None
            if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < k:
                out[row] = answer
        return out

    def probability_matrix(self, key: str, k: int) -> np.ndarray:
        return fixed_lists(pc.struct_field(self.probabilities, [key]), k)


class LazyStruct:
    """JSON lines parsed into a struct array on first use, placed at rows ``at`` of ``n`` (see ``_spread``)."""

    def __init__(self, lines: str, schema: pa.StructType, at: np.ndarray, n: int):
        self._lines, self._schema, self._at, self._n = lines, schema, at, n
        self._parsed: pa.StructArray | None = None

    def parsed(self) -> pa.StructArray:
        if self._parsed is None:
            self._parsed = _spread(parse_json_lines(self._lines, self._schema), self._at, self._n)
            self._lines = ""  # the text is no longer needed: free it before the next chunk arrives
        return self._parsed


def catalog_chunks(workflow: Workflow, filters: CatalogFilters, *, chunk_size: int) -> Iterator[Chunk]:
    """Yield the catalog in chunks of at most ``chunk_size`` subjects, by increasing subject id.

    Keyset pagination (``subject_id > last``) rather than one long cursor: no transaction or
    server-side cursor stays open for the minutes a large export may take.
    """
    layout = tasktree.label_layout(workflow.task_tree)
    states = (
        catalog_states(workflow, filters)
        .order_by("subject_id")
        .annotate(retired_text=Cast("retired_at", TextField()), gold_text=Cast("gold_answers", TextField()))
    )
    last = 0
    while True:
        page = states.filter(subject_id__gt=last).values_list(*STATE_FIELDS.values())[:chunk_size]
        state = dict(zip(STATE_FIELDS, _fetch_columns(page), strict=True))
        if not state["subject_id"]:
            return
        ids = np.array(state["subject_id"], dtype="int64")
        state["retired_at"] = [(t or "")[:19] for t in state["retired_at"]]
        gold = {i: json.loads(g) for i, g in enumerate(state.pop("gold_answers")) if g}
        # The chunk's subjects: its id range (which lets the database merge two index range scans)
        # and, as a subquery, the filters (a filtered export may skip most ids of the range).
        in_range = {"subject_id__gte": int(ids[0]), "subject_id__lte": int(ids[-1])}
        in_chunk = catalog_states(workflow, filters).filter(**in_range).values("subject_id")
        consensus, marks = _consensus(workflow, in_range, in_chunk, ids, layout)
        prediction, probabilities = _predictions(workflow, in_range, in_chunk, ids, layout)
        yield Chunk(state, gold, consensus, marks, prediction, probabilities)
        last = int(ids[-1])


def _consensus(workflow: Workflow, in_range: dict, in_chunk, ids: np.ndarray, layout) -> tuple[LazyStruct, list]:
    parts: list = []
    for name in CONSENSUS_LISTS:
        parts += [Value(("{" if not parts else ",") + f'"{name}":'), Cast(name, TextField())]
    line = Concat(*parts, Value("}"), output_field=TextField())  # one JSON object per row, parsed below
    rows = Consensus.objects.filter(workflow=workflow, **in_range, subject_id__in=in_chunk).order_by("subject_id")
    rows = rows.annotate(c_subject=F("subject_id"), c_line=line, c_marks=Cast("marks", TextField()))
    subject_ids, lines, marks_text = _fetch_joined(rows, ["c_subject", "c_line", "c_marks"])
    at = _positions(ids, _ints(subject_ids))
    schema = pa.struct([(name, _task_lists(layout)) for name in CONSENSUS_LISTS])
    consensus = LazyStruct(lines, schema, at, len(ids))
    marks: list[dict | None] = [None] * len(ids)
    if marks_text.replace("{}", "").strip():  # most catalogs have no marks at all
        for i, text in zip(at, marks_text.split("\n"), strict=True):
            if i >= 0 and text not in ("{}", ""):
                marks[i] = json.loads(text)
    return consensus, marks


def _predictions(workflow: Workflow, in_range: dict, in_chunk, ids: np.ndarray, layout) -> tuple[dict, LazyStruct]:
    """Each subject's prediction by the newest published model version that scored it."""
    rows = (
        Prediction.objects.filter(
            model_version__workflow=workflow, model_version__status__in=PUBLISHED, **in_range,
            subject_id__in=in_chunk,
        )
        .order_by("subject_id", "model_version__number")
        .annotate(p_subject=F("subject_id"), p_number=F("model_version__number"), p_sha=F("model_version__sha256"),
                  p_entropy=F("entropy"), p_bald=F("bald"), p_training=Cast("in_training", IntegerField()),
                  p_json=Cast("probabilities", TextField()))
    )  # fmt: skip
    fields = ["p_subject", "p_number", "p_sha", "p_entropy", "p_bald", "p_training", "p_json"]
    subject_ids, number, sha256, entropy, bald, in_training, texts = _fetch_joined(rows, fields)
    subject_ids = _ints(subject_ids)
    newest = np.append(subject_ids[1:] != subject_ids[:-1], True) if len(subject_ids) else np.zeros(0, bool)
    keep = np.flatnonzero(newest)  # rows are ordered by version within a subject: its last row is the newest
    at = _positions(ids, subject_ids[keep])
    n, found = len(ids), at >= 0
    where = at[found]
    prediction = {
        "number": _scatter(_ints(number).astype("int32")[keep][found], where, n, 0),
        "sha256": _scatter(np.array(sha256.split("\n") if sha256 else [], dtype=object)[keep][found], where, n, ""),
        "entropy": _scatter(_numbers(entropy)[keep][found], where, n, NAN),
        "bald": _scatter(_numbers(bald)[keep][found], where, n, NAN),
        "in_training": _scatter(_ints(in_training).astype(bool)[keep][found], where, n, False),
    }
    if len(keep) < len(subject_ids):  # older versions' rows too: keep each subject's newest line
        lines = texts.split("\n")
        texts = "\n".join(lines[i] for i in keep)
    return prediction, LazyStruct(texts, _task_lists(layout), at, n)


def _fetch_joined(rows, columns: list[str]) -> list[str]:
    """Each of ``columns`` (non-null) of an ordered queryset as one text, its values joined by newlines.

    One aggregate row per query instead of a Python tuple per row: fetching a chunk's JSON this
    way is ~4x faster. The aggregates run over the same rows in one pass, so the columns stay
    aligned row by row; JSON text never holds a raw newline. String aggregation skips NULLs,
    hence non-null columns only.
    """
    sql, params = rows.values_list(*columns).query.sql_with_params()
    quote = connection.ops.quote_name
    aggregate = "string_agg({}, chr(10))" if connection.vendor == "postgresql" else "group_concat({}, char(10))"
    select = ", ".join(aggregate.format(f"CAST(t.{quote(c)} AS TEXT)") for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {select} FROM ({sql}) t", params)
        return [text or "" for text in cursor.fetchone()]


def _ints(text: str) -> np.ndarray:
    return np.array(text.split("\n") if text else [], dtype="int64")


def _numbers(text: str) -> np.ndarray:
    return np.array(text.split("\n") if text else [], dtype="float64")


def parse_json_lines(lines: str | list[str], schema: pa.StructType) -> pa.StructArray:
    """One JSON object per line (a list, or one newline-separated text) into a struct array of ``schema``.

    Fields a line lacks are null. pyarrow's reader does the work; a chunk it refuses (NaN written
    by Python's json, a value of an unexpected type) is decoded by ``json`` and cleaned field by
    field instead.
    """
    if not lines:
        return pa.array([], type=schema)
    data = (lines if isinstance(lines, str) else "\n".join(lines)).encode("utf-8")
    options = pajson.ParseOptions(explicit_schema=pa.schema(list(schema)), unexpected_field_behavior="ignore")
    # One block, one thread: a chunk is a few MB, and on a busy machine threads only contend (~1.6x slower).
    read = pajson.ReadOptions(use_threads=False, block_size=max(1 << 20, len(data) + 1))
    try:
        table = pajson.read_json(io.BytesIO(data), parse_options=options, read_options=read)
    except pa.ArrowInvalid:
        lines = lines.split("\n") if isinstance(lines, str) else lines
        return pa.array([_clean(json.loads(line), schema) for line in lines], type=schema)
    return pa.StructArray.from_arrays([table.column(f.name).combine_chunks() for f in schema], fields=list(schema))


def fixed_lists(lists: pa.Array, k: int) -> np.ndarray:
    """(n, k) float64 from a list array; a row that is null or not ``k`` long is all NaN (the tree changed)."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    out = np.full((len(lists), k), NAN)
    good = pc.fill_null(pc.equal(pc.list_value_length(lists), k), False).to_numpy(zero_copy_only=False)
    if good.any():
        starts = lists.offsets.to_numpy()[:-1][good]
        values = _floats(lists.values)
        out[good] = values[starts[:, None] + np.arange(k)]
    return out


def _floats(values: pa.Array) -> np.ndarray:
    """float64 with NaN for nulls and non-finite values."""
    out = pc.fill_null(pc.cast(values, pa.float64()), NAN).to_numpy(zero_copy_only=False)
    return np.where(np.isfinite(out), out, NAN)


def _task_lists(layout) -> pa.StructType:
    """``{task: [float, ...]}``."""
    return pa.struct([(key, pa.list_(pa.float64())) for key, _ in layout])


def _clean(value, schema: pa.DataType):
    """``value`` reduced to what ``schema`` can hold; anything of another shape becomes null."""
    if pa.types.is_struct(schema):
        if not isinstance(value, Mapping):
            return None
        return {f.name: _clean(value.get(f.name), f.type) for f in schema}
    if pa.types.is_list(schema):
        if not isinstance(value, list):
            return None
        return [_clean(v, schema.value_type) for v in value]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _positions(ids: np.ndarray, found: list | np.ndarray) -> np.ndarray:
    """For each of ``found`` (sorted subject ids), its row in ``ids``; -1 if it is not one of them."""
    found = np.asarray(found, dtype="int64")
    at = np.searchsorted(ids, found)
    at = np.minimum(at, len(ids) - 1)
    return np.where(ids[at] == found, at, -1)


def _spread(values: pa.StructArray, at: np.ndarray, n: int) -> pa.StructArray:
    """``values`` placed at rows ``at`` of ``n`` (-1: dropped); the other rows are null."""
    if len(at) == n and (at == np.arange(n)).all():  # the usual case: every row has one, in order
        return values
    source = np.full(n, -1, dtype="int64")
    source[at[at >= 0]] = np.flatnonzero(at >= 0)
    return values.take(pa.array(source, mask=source < 0))


def _scatter(values: np.ndarray, where: np.ndarray, n: int, fill) -> np.ndarray:
    out = np.full(n, fill, dtype=values.dtype)
    out[where] = values
    return out


def _fetch_columns(rows) -> list[list]:
    """A ``values_list`` queryset as columns, from its compiled SQL on a plain cursor (no per-row converters)."""
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor, _no_gc():
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in cursor.description]


@contextmanager
def _no_gc():
    """Fetching creates millions of small tuples, each of which would trigger the cyclic collector's scans."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
