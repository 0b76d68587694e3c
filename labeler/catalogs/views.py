"""The catalog exports page (admins: every workflow; scientists: their projects'): start one,
watch the progress bars, download the files."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from labeler.catalogs.api import visible_jobs
from labeler.catalogs.models import ExportJob
from labeler.catalogs.rows import CatalogFilterError, CatalogFilters
from labeler.catalogs.services import CatalogExportError, export_job_create
from labeler.roles import require_scientist_of, scientist_project_ids, scientist_required
from labeler.workflows.models import Workflow

RUNNING = (ExportJob.Status.QUEUED, ExportJob.Status.RUNNING)


@scientist_required
@require_http_methods(["GET", "POST"])
def exports_page(request):
    if request.method == "POST":
        return _start(request)
    jobs = list(visible_jobs(request.user).select_related("workflow__project", "created_by").order_by("-id")[:50])
    context = {
        "jobs": jobs,
        "workflows": _workflows(request.user),
        "formats": ExportJob.Format.choices,
        "refresh": any(job.status in RUNNING for job in jobs),
    }
    return render(request, "catalogs/exports.html", context)


def _start(request):
    workflow = get_object_or_404(Workflow, pk=_int(request.POST.get("workflow"), -1))
    require_scientist_of(request.user, workflow.project_id)
    try:
        filters = CatalogFilters(
            retired_only=request.POST.get("retired_only") == "on",
            min_classifications=_int(request.POST.get("min_classifications") or "0", -1),
        )
        job = export_job_create(workflow=workflow, fmt=request.POST.get("format", ""), filters=filters,
                                user=request.user)  # fmt: skip
    except (CatalogExportError, CatalogFilterError) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Export {job.id} of {workflow} queued.")
    return redirect("exports")


def _workflows(user):
    allowed = scientist_project_ids(user)
    workflows = Workflow.objects.select_related("project").order_by("id")
    return workflows if allowed is None else workflows.filter(project_id__in=allowed)


def _int(text: str | None, default: int) -> int:
    try:
        return int(text or "")
    except ValueError:
        return default
