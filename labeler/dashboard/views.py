"""Scientists' pages: projects, a project's dashboard, the consensus browser and the model page.

Every page needs a signed-in scientist of the project (or an admin): anonymous visitors
go to the login page, everyone else gets a 403.
"""

from __future__ import annotations

import importlib.util

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from labeler.dashboard import consensus as browser
from labeler.dashboard import selectors, versions
from labeler.learning.models import ModelVersion
from labeler.roles import require_scientist_of, scientist_required
from labeler.subjects.models import Project
from labeler.workflows.models import Workflow

PAGE_SIZE = 50
REGISTRY = "labeler.learning.registry"


def _workflow_for(request, workflow_id: int) -> Workflow:
    workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=workflow_id)
    require_scientist_of(request.user, workflow.project_id)
    return workflow


@scientist_required
@require_GET
def science_home(request):
    return render(request, "science/home.html", {"projects": selectors.projects_overview(user=request.user)})


@scientist_required
@require_GET
def project_page(request, slug: str):
    project = get_object_or_404(Project, slug=slug)
    require_scientist_of(request.user, project)
    boards = selectors.project_dashboard(project=project)
    charts = {
        f"hourly-{b.workflow.id}": [{"t": row["hour"].isoformat(), "n": row["n"]} for row in b.per_hour] for b in boards
    }
    return render(request, "science/project.html", {"project": project, "boards": boards, "charts": charts})


@scientist_required
@require_GET
def consensus_page(request, workflow_id: int):
    workflow = _workflow_for(request, workflow_id)
    task, answers = browser.root_task(workflow)
    context = {"workflow": workflow, "question": workflow.task_tree["tasks"][task]["question"], "answers": answers}
    try:
        filters = browser.ConsensusFilters.from_query(request.GET, n_answers=len(answers))
    except browser.ConsensusFilterError as exc:
        return render(request, "science/consensus.html", {**context, "error": str(exc)}, status=400)
    model = browser.active_model_of(workflow)
    ids = browser.consensus_subject_ids(workflow=workflow, filters=filters, model=model)
    page = Paginator(ids, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = browser.consensus_rows(workflow=workflow, subject_ids=list(page.object_list), model=model)
    context.update(
        filters=filters,
        model=model,
        page=page,
        rows=[_row(row, answers) for row in rows],
        statuses=browser.STATUSES,
        columns=_columns(filters),
    )
    return render(request, "science/consensus.html", context)


def _row(row: dict, answers: list[str]) -> dict:
    """A consensus row with its answers' labels and its preview's address."""

    def label(index):
        return answers[index] if index is not None and 0 <= index < len(answers) else None

    return {
        **row,
        "crowd_label": label(row["crowd_class"]),
        "model_label": label(row["model_class"]),
        "disagrees": row["model_class"] is not None and row["model_class"] != row["crowd_class"],
        "preview_url": reverse("subject-preview", args=[row["subject_id"], row["subject__data_sha256"][:12]]),
    }


COLUMNS = (  # (label, sort key or None, css class)
    ("", None, ""),
    ("subject", "subject", ""),
    ("votes", "votes", "num"),
    ("consensus", "class", ""),
    ("posterior", "posterior", "num"),
    ("agreement", "agreement", "num"),
    ("status", None, ""),
    ("model", "model", "wide"),
    ("updated", "updated", "wide"),
)


def _columns(filters: browser.ConsensusFilters) -> list[dict]:
    """Table headers; a click sorts ascending, a second click on the same column descending."""
    columns = []
    for label, key, css in COLUMNS:
        current = key is not None and filters.sort == key
        columns.append(
            {
                "label": label,
                "sort": key,
                "css": css,
                "next": f"-{key}" if current and not filters.descending else key,
                "current": ("descending" if filters.descending else "ascending") if current else None,
            }
        )
    return columns


@scientist_required
@require_GET
def models_page(request, workflow_id: int):
    workflow = _workflow_for(request, workflow_id)
    all_versions = selectors.model_versions_of(workflow=workflow)
    selected = _selected_version(all_versions, request.GET.get("version"))
    for version in all_versions:
        version.held_out_accuracy = versions.held_out_accuracy(version)
    plots = {
        "learning_curve": versions.learning_curve(all_versions),
        "epochs": versions.epoch_curve(selected) if selected else [],
        "confusion": versions.confusion(selected) if selected else None,
        "reliability": versions.reliability(selected) if selected else None,
        "progress": versions.training_progress(workflow=workflow),
    }
    context = {
        "workflow": workflow,
        "versions": all_versions,
        "selected": selected,
        "metrics": versions.scalar_metrics(selected) if selected else [],
        "active": next((v for v in all_versions if v.status == ModelVersion.Status.ACTIVE), None),
        "plots": plots,
        "registry": importlib.util.find_spec(REGISTRY) is not None,
        "events": _events(workflow),
        "promotable": ("evaluating", "ready", "retired"),
    }
    return render(request, "science/models.html", context)


def _selected_version(all_versions: list[ModelVersion], number: str | None) -> ModelVersion | None:
    """``?version=N``, else the active version, else the newest."""
    by_number = {str(v.number): v for v in all_versions}
    if number in by_number:
        return by_number[number]
    active = next((v for v in all_versions if v.status == ModelVersion.Status.ACTIVE), None)
    return active or (all_versions[0] if all_versions else None)


def _events(workflow: Workflow) -> list:
    """The registry's history (promotions, refusals, rollbacks), when the registry keeps one."""
    from django.apps import apps

    try:
        events = apps.get_model("learning", "ModelEvent")
    except LookupError:
        return []
    return list(
        events.objects.filter(workflow=workflow)
        .select_related("model_version", "previous", "user")
        .order_by("-created_at", "-id")[:20]
    )


@scientist_required
@require_GET
def models_progress(request, workflow_id: int):
    """Polled every 2 s by the model and project pages: the versions in progress and the active one."""
    workflow = _workflow_for(request, workflow_id)
    active = browser.active_model_of(workflow)
    return JsonResponse(
        {
            "workflow": workflow.id,
            "active": active.number if active else None,
            "versions": versions.training_progress(workflow=workflow),
        }
    )


@scientist_required
@require_POST
def model_promote(request, workflow_id: int, number: int):
    workflow = _workflow_for(request, workflow_id)
    version = get_object_or_404(ModelVersion, workflow=workflow, number=number)
    registry = importlib.import_module(REGISTRY)  # lazily: the web process never imports it otherwise
    force = request.POST.get("force") == "1"
    try:
        event = registry.model_version_promote(model_version=version, user=request.user, force=force)
    except ValueError as exc:  # RegistryError: nothing changed
        messages.error(request, str(exc))
    else:
        action = getattr(event, "action", "promoted")
        level = messages.WARNING if action == "refused" else messages.SUCCESS
        messages.add_message(request, level, f"v{version.number}: {action}. {getattr(event, 'reason', '')}".strip())
    return redirect(reverse("science-models", args=[workflow.id]) + f"?version={version.number}")


@scientist_required
@require_POST
def model_rollback(request, workflow_id: int):
    workflow = _workflow_for(request, workflow_id)
    registry = importlib.import_module(REGISTRY)
    try:
        event = registry.model_version_rollback(workflow=workflow, user=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        number = getattr(getattr(event, "model_version", None), "number", "?")
        messages.success(request, f"Rolled back: v{number} is active again.")
    return redirect("science-models", workflow_id=workflow.id)
