"""The consensus browser's query: subjects with consensus, filtered and sorted in SQL.

The root question's class (the argmax of the skill-weighted posterior), its posterior and
agreement are read from the JSON columns by the database (JSON_EXTRACT or ``#>>``,
``GREATEST`` and ``CASE``), so filtering, sorting and paginating 10^5 subjects never loads them into Python.
The subject's state and the active model's prediction are joined on their unique
(workflow, subject) and (model_version, subject) indexes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.db.models import (
    BooleanField,
    Case,
    F,
    FilteredRelation,
    FloatField,
    Func,
    IntegerField,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.fields.json import compile_json_path
from django.db.models.functions import Greatest

from labeler.classifications.models import Consensus
from labeler.learning.models import ModelVersion
from labeler.workflows.models import SubjectState, Workflow

STATUSES = ("active", "retired", "review")
SORTS = {
    "subject": ("subject_id",),
    "votes": ("n_classifications", "subject_id"),
    "posterior": ("top_posterior", "subject_id"),
    "agreement": ("root_agreement", "subject_id"),
    "class": ("crowd_class", "subject_id"),
    "model": ("model_posterior", "subject_id"),
    "updated": ("updated_at", "subject_id"),
}


class ConsensusFilterError(ValueError):
    """A filter or sort in the query string is not one the browser understands."""


@dataclass(frozen=True)
class ConsensusFilters:
    answer: int | None = None  # the root question's consensus answer (index)
    posterior_min: float | None = None
    posterior_max: float | None = None
    agreement_min: float | None = None
    agreement_max: float | None = None
    status: str | None = None  # active | retired (not for review) | review
    disagreement: bool = False  # the active model's most likely answer differs from the crowd's
    sort: str = "subject"
    descending: bool = False

    @classmethod
    def from_query(cls, params: Mapping[str, str], *, n_answers: int) -> ConsensusFilters:
        """Parse the page's query string; raises ConsensusFilterError with the reason."""
        answer = _number(params, "answer", int)
        if answer is not None and not 0 <= answer < n_answers:
            raise ConsensusFilterError(f"answer must be between 0 and {n_answers - 1}")
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise ConsensusFilterError(f"status must be one of {', '.join(STATUSES)}")
        sort = params.get("sort") or "subject"
        descending = sort.startswith("-")
        if sort.lstrip("-") not in SORTS:
            raise ConsensusFilterError(f"sort must be one of {', '.join(SORTS)} (prefix - for descending)")
        return cls(
            answer=answer,
            posterior_min=_unit(params, "posterior_min"),
            posterior_max=_unit(params, "posterior_max"),
            agreement_min=_unit(params, "agreement_min"),
            agreement_max=_unit(params, "agreement_max"),
            status=status,
            disagreement=params.get("disagreement") in ("1", "on", "true"),
            sort=sort.lstrip("-"),
            descending=descending,
        )


def _number(params: Mapping[str, str], name: str, kind):
    raw = (params.get(name) or "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ConsensusFilterError(f"{name} must be a number, got {raw!r}") from None


def _unit(params: Mapping[str, str], name: str) -> float | None:
    value = _number(params, name, float)
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConsensusFilterError(f"{name} must be between 0 and 1")
    return value


def root_task(workflow: Workflow) -> tuple[str, list[str]]:
    """The first question's key and its answers' labels."""
    key = workflow.task_tree["first"]
    return key, [answer["label"] for answer in workflow.task_tree["tasks"][key]["answers"]]


def active_model_of(workflow: Workflow) -> ModelVersion | None:
    return ModelVersion.objects.filter(workflow=workflow, status=ModelVersion.Status.ACTIVE).order_by("-number").first()


class JsonNumber(Func):
    """The number at ``path`` (keys, or array indices as ints) in a JSON column; NULL when absent.

    Django's key transforms wrap every read in a CASE on SQLite (to tell JSON true/false/null
    apart); a plain JSON_EXTRACT keeps the argmax below a few times cheaper there.
    """

    output_field = FloatField()

    def __init__(self, column: str, *path: str | int):
        self.path = [str(p) for p in path]
        super().__init__(F(column))

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"JSON_EXTRACT({sql}, %s)", (*params, compile_json_path(self.path))

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(({sql} #>> %s)::double precision)", (*params, self.path)

    def as_sql(self, compiler, connection, **extra):  # MySQL, MariaDB, Oracle
        sql, params = compiler.compile(self.source_expressions[0])
        return f"CAST(JSON_VALUE({sql}, %s) AS DOUBLE PRECISION)", (*params, compile_json_path(self.path))


class Differs(Func):
    """``a <> b`` as a WHERE condition: false when either side is NULL (unlike Django's exclude)."""

    arg_joiner = " <> "
    template = "(%(expressions)s)"
    output_field = BooleanField()
    conditional = True


def _argmax(column: str, task: str, k: int, best: str) -> tuple[dict, Case]:
    """Annotations ``_{column}_{i}`` of the K probabilities ``column[task][i]``, their max and argmax."""
    prefix = column.replace("__", "_")
    probs = {f"_{prefix}_{i}": JsonNumber(column, task, i) for i in range(k)}
    names = list(probs)
    top = Greatest(*[F(n) for n in names])
    # The first of the largest: p_i >= every later p_j (earlier ones already lost); NULLs fall through.
    argmax = Case(
        *[
            When(Q(*[Q(**{f"{names[i]}__gte": F(names[j])}) for j in range(i + 1, k)]), then=Value(i))
            for i in range(k - 1)
        ],
        When(**{f"{names[-1]}__isnull": False}, then=Value(k - 1)),
        default=None,
        output_field=IntegerField(),
    )
    return {**probs, best: top}, argmax


def consensus_subject_ids(*, workflow: Workflow, filters: ConsensusFilters, model: ModelVersion | None) -> QuerySet:
    """The filtered, sorted subject ids (paginate this, then fetch the page with ``consensus_rows``).

    Only the joins the filters and the sort need, and nothing computed but what they read:
    counting and sorting 10^5 rows stays a single pass over the consensus table.
    """
    if filters.disagreement and model is None:
        return Consensus.objects.none().values_list("subject_id", flat=True)  # no model, no disagreement
    needs_model = filters.disagreement or filters.sort == "model"
    k = len(root_task(workflow)[1])
    rows = _annotated(workflow, model, state=filters.status is not None, prediction=needs_model)
    rows = _filtered(rows, filters, k)
    order = SORTS[filters.sort]
    key = F(order[0]).desc(nulls_last=True) if filters.descending else F(order[0]).asc(nulls_last=True)
    return rows.order_by(key, *order[1:]).values_list("subject_id", flat=True)


ROW_FIELDS = (
    "subject_id", "subject__external_id", "subject__kind", "subject__data_sha256", "n_classifications",
    "fractions", "posterior", "crowd_class", "top_posterior", "root_agreement", "status", "needs_review",
    "retirement_reason", "updated_at", "model_class", "model_posterior",
)  # fmt: skip


def consensus_rows(*, workflow: Workflow, subject_ids: list[int], model: ModelVersion | None) -> list[dict]:
    """These subjects' rows, in the order given (one query).

    Each row: subject (id, external_id, kind, data_sha256), votes, fractions and posterior
    (JSON), ``crowd_class``, ``top_posterior``, ``root_agreement``, the subject's status,
    review flag and retirement reason, and the active model's ``model_class`` and
    ``model_posterior`` (its probability of its own class; None without a prediction).
    """
    rows = _annotated(workflow, model, state=True, prediction=True).filter(subject_id__in=subject_ids)
    by_id = {row["subject_id"]: row for row in rows.values(*ROW_FIELDS)}
    return [by_id[i] for i in subject_ids if i in by_id]


def _annotated(workflow: Workflow, model: ModelVersion | None, *, state: bool, prediction: bool) -> QuerySet:
    """The workflow's consensus rows with the root question's class, posterior and agreement,
    and, when asked, the subject's state and the model's prediction joined in."""
    task, answers = root_task(workflow)
    crowd, crowd_class = _argmax("posterior", task, len(answers), "top_posterior")
    rows = (
        Consensus.objects.filter(workflow=workflow)
        .exclude(n_classifications=0)
        .annotate(**crowd)
        .annotate(crowd_class=crowd_class, root_agreement=JsonNumber("agreement", task))
    )
    if state:
        rows = rows.annotate(
            state=FilteredRelation("subject__states", condition=Q(subject__states__workflow_id=workflow.id))
        ).annotate(
            status=F("state__status"),
            needs_review=F("state__needs_review"),
            retirement_reason=F("state__retirement_reason"),
        )
    if prediction and model is not None:
        rows = rows.annotate(
            pred=FilteredRelation("subject__predictions", condition=Q(subject__predictions__model_version_id=model.id))
        )
        machine, model_class = _argmax("pred__probabilities", task, len(answers), "model_posterior")
        rows = rows.annotate(**machine).annotate(model_class=model_class)
    elif prediction:
        rows = rows.annotate(model_class=Value(None, IntegerField()), model_posterior=Value(None, FloatField()))
    return rows


def _is_argmax(column: str, c: int, k: int) -> Q:
    """``crowd_class == c`` in K-1 comparisons (the CASE takes up to K(K-1)/2): p_c beats the
    earlier answers strictly (ties go to the first) and the later ones or ties them."""
    prefix = column.replace("__", "_")
    mine = f"_{prefix}_{c}"
    return Q(
        *[Q(**{f"{mine}__gt": F(f"_{prefix}_{j}")}) for j in range(c)],
        *[Q(**{f"{mine}__gte": F(f"_{prefix}_{j}")}) for j in range(c + 1, k)],
    )


def _filtered(rows: QuerySet, filters: ConsensusFilters, k: int) -> QuerySet:
    if filters.answer is not None:
        rows = rows.filter(_is_argmax("posterior", filters.answer, k))
    if filters.posterior_min is not None:
        rows = rows.filter(top_posterior__gte=filters.posterior_min)
    if filters.posterior_max is not None:
        rows = rows.filter(top_posterior__lte=filters.posterior_max)
    if filters.agreement_min is not None:
        rows = rows.filter(root_agreement__gte=filters.agreement_min)
    if filters.agreement_max is not None:
        rows = rows.filter(root_agreement__lte=filters.agreement_max)
    if filters.status == "active":
        rows = rows.filter(status=SubjectState.Status.ACTIVE)
    elif filters.status == "retired":
        rows = rows.filter(status=SubjectState.Status.RETIRED, needs_review=False)
    elif filters.status == "review":
        rows = rows.filter(needs_review=True)
    if filters.disagreement:
        rows = rows.filter(Differs(F("model_class"), F("crowd_class")))
    return rows
