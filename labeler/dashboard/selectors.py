"""Reads for the scientists' pages: the projects one may see and each workflow's numbers.

Everything is aggregated in SQL, a fixed number of queries per workflow whatever the
number of subjects or classifications.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from labeler.classifications import queue
from labeler.classifications.models import Classification, Consensus
from labeler.dashboard.versions import progress_of
from labeler.learning.models import ModelVersion
from labeler.learning.triggers import model_kind
from labeler.roles import scientist_project_ids
from labeler.subjects.models import Project
from labeler.workflows.models import SubjectState, Workflow

HOURS = 48


def projects_visible_to(*, user) -> QuerySet[Project]:
    """Every project for admins, their memberships' projects for scientists, none for others."""
    allowed = scientist_project_ids(user)
    projects = Project.objects.order_by("name")
    return projects if allowed is None else projects.filter(pk__in=allowed)


@dataclass
class WorkflowNumbers:
    """The key numbers of one workflow (home page and project header)."""

    workflow: Workflow
    n_subjects: int = 0
    n_active: int = 0
    n_retired: int = 0
    n_review: int = 0
    n_classifications: int = 0
    active_model: ModelVersion | None = None

    @property
    def retired_fraction(self) -> float:
        return self.n_retired / self.n_subjects if self.n_subjects else 0.0


def workflow_numbers(*, workflows: list[Workflow]) -> dict[int, WorkflowNumbers]:
    """Key numbers for many workflows in three queries (states, classifications, active models)."""
    numbers = {w.id: WorkflowNumbers(workflow=w) for w in workflows}
    for row in (
        SubjectState.objects.filter(workflow_id__in=numbers)
        .values("workflow_id")
        .annotate(
            total=Count("id"),
            active=Count("id", filter=Q(status=SubjectState.Status.ACTIVE)),
            retired=Count("id", filter=Q(status=SubjectState.Status.RETIRED)),
            review=Count("id", filter=Q(needs_review=True)),
        )
    ):
        n = numbers[row["workflow_id"]]
        n.n_subjects, n.n_active, n.n_retired, n.n_review = row["total"], row["active"], row["retired"], row["review"]
    for row in Classification.objects.filter(workflow_id__in=numbers).values("workflow_id").annotate(n=Count("id")):
        numbers[row["workflow_id"]].n_classifications = row["n"]
    for version in ModelVersion.objects.filter(workflow_id__in=numbers, status=ModelVersion.Status.ACTIVE).order_by(
        "number"
    ):
        numbers[version.workflow_id].active_model = version  # the newest active wins
    return numbers


def projects_overview(*, user) -> list[tuple[Project, list[WorkflowNumbers]]]:
    """The projects the user may see, each with its workflows' key numbers."""
    projects = list(projects_visible_to(user=user))
    workflows = list(Workflow.objects.filter(project__in=projects).order_by("project_id", "id"))
    numbers = workflow_numbers(workflows=workflows)
    by_project: dict[int, list[WorkflowNumbers]] = {p.id: [] for p in projects}
    for workflow in workflows:
        by_project[workflow.project_id].append(numbers[workflow.id])
    return [(project, by_project[project.id]) for project in projects]


def classifications_per_hour(*, workflow: Workflow, now: datetime | None = None, hours: int = HOURS) -> list[dict]:
    """``[{"hour": aware datetime (UTC), "n": count}, ...]``: the last ``hours`` hours, oldest first, zeros kept."""
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=hours - 1)
    counts = {
        _utc_hour(row["hour"]): row["n"]
        for row in Classification.objects.filter(workflow=workflow, created_at__gte=start, created_at__lte=now)
        .annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(n=Count("id"))
    }
    hours_list = [start + timedelta(hours=i) for i in range(hours)]
    return [{"hour": hour, "n": counts.get(hour, 0)} for hour in hours_list]


def _utc_hour(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def volunteer_counts(*, workflow: Workflow, now: datetime | None = None) -> dict[str, int]:
    """Distinct volunteers (accounts, anonymous browsers, simulated): in total and in the last 24 h."""
    now = now or timezone.now()
    return Classification.objects.filter(workflow=workflow).aggregate(
        total=Count("volunteer_key", distinct=True),
        last_24h=Count("volunteer_key", distinct=True, filter=Q(created_at__gte=now - timedelta(hours=24))),
    )


def retirement_reasons(*, workflow: Workflow) -> list[dict]:
    """``[{"reason", "n"}, ...]`` over retired subjects, the most common first."""
    rows = (
        SubjectState.objects.filter(workflow=workflow, status=SubjectState.Status.RETIRED)
        .values("retirement_reason")
        .annotate(n=Count("id"))
        .order_by("-n", "retirement_reason")
    )
    return [{"reason": row["retirement_reason"] or "unspecified", "n": row["n"]} for row in rows]


@dataclass
class LoopStatus:
    """Where the learning loop of a workflow stands."""

    training: list[ModelVersion] = field(default_factory=list)
    labelled: int = 0
    since_last_model: int = 0
    train_min_new_labels: int = 0
    queue_backend: str = "database"
    queue_size: int | None = None
    trains: bool = True  # False for workflows with no model in the loop (survey fields)

    @property
    def runs(self) -> list[dict]:
        """The training versions as the progress bars show them (``versions.progress_of``)."""
        now = timezone.now()
        return [progress_of(version, now) for version in self.training]

    @property
    def labels_fraction(self) -> float:
        if not self.train_min_new_labels:
            return 1.0
        return min(1.0, self.since_last_model / self.train_min_new_labels)


def loop_status(*, workflow: Workflow, versions: list[ModelVersion]) -> LoopStatus:
    """``versions``: the workflow's versions, newest first (as ``model_versions_of`` gives them)."""
    labelled = Consensus.objects.filter(workflow=workflow, n_classifications__gte=workflow.label_min_votes).count()
    last = next((v for v in versions if v.status != ModelVersion.Status.FAILED), None)
    status = LoopStatus(
        training=[v for v in versions if v.status in ModelVersion.IN_PROGRESS],
        labelled=labelled,
        since_last_model=max(0, labelled - (last.label_count if last else 0)),
        train_min_new_labels=workflow.train_min_new_labels,
        trains=model_kind(workflow) is not None,
    )
    status.queue_backend, status.queue_size = queue_backend(workflow_id=workflow.id)
    return status


def queue_backend(*, workflow_id: int) -> tuple[str, int | None]:
    """("redis", queued subjects) when the Redis queue answers, else ("database", None)."""
    try:
        return "redis", queue.queue_info(workflow_id=workflow_id)["size"]
    except queue.QueueUnavailable:
        return "database", None


def model_versions_of(*, workflow: Workflow) -> list[ModelVersion]:
    """Every version of the workflow, newest first, with its parent (one query)."""
    return list(ModelVersion.objects.filter(workflow=workflow).select_related("parent").order_by("-number"))


@dataclass
class WorkflowDashboard:
    numbers: WorkflowNumbers
    per_hour: list[dict]
    volunteers: dict[str, int]
    reasons: list[dict]
    versions: list[ModelVersion]
    loop: LoopStatus

    @property
    def workflow(self) -> Workflow:
        return self.numbers.workflow


def project_dashboard(*, project: Project, now: datetime | None = None) -> list[WorkflowDashboard]:
    """Per workflow of the project: activity, volunteers, retirement, models and the loop."""
    workflows = list(project.workflows.order_by("id"))
    numbers = workflow_numbers(workflows=workflows)
    boards = []
    for workflow in workflows:
        versions = model_versions_of(workflow=workflow)
        boards.append(
            WorkflowDashboard(
                numbers=numbers[workflow.id],
                per_hour=classifications_per_hour(workflow=workflow, now=now),
                volunteers=volunteer_counts(workflow=workflow, now=now),
                reasons=retirement_reasons(workflow=workflow),
                versions=versions,
                loop=loop_status(workflow=workflow, versions=versions),
            )
        )
    return boards
