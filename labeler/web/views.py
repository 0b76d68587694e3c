"""Volunteer pages. The classify page talks to the JSON API from static/js/classify.js."""

from django.contrib.admin.views.decorators import staff_member_required
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from labeler.classifications.selectors import volunteer_skills
from labeler.subjects.models import Subject
from labeler.subjects.rendering import subject_preview_png
from labeler.web.selectors import workflow_summaries
from labeler.workflows.models import Workflow

ONE_YEAR = 365 * 24 * 3600


@require_GET
def home(request):
    return render(request, "web/home.html", {"summaries": workflow_summaries()})


@require_GET
def classify(request, workflow_id: int):
    workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=workflow_id, active=True)
    return render(request, "web/classify.html", {"workflow": workflow})


@staff_member_required
@require_GET
def workflow_volunteers(request, workflow_id: int):
    """Scientists' view of the crowd: each volunteer's confusion matrix and weight."""
    workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=workflow_id)
    root = workflow.task_tree["tasks"][workflow.task_tree["first"]]
    context = {
        "workflow": workflow,
        "answers": [a["label"] for a in root["answers"]],
        "question": root["question"],
        "volunteers": volunteer_skills(workflow=workflow),
    }
    return render(request, "web/volunteers.html", context)


@require_GET
def subject_preview(request, subject_id: int, checksum: str):
    """PNG preview; the URL carries the data checksum, so it can be cached for a year."""
    subject = get_object_or_404(Subject, pk=subject_id)
    if not subject.data_sha256.startswith(checksum):
        raise Http404("stale preview address")
    response = FileResponse(open(subject_preview_png(subject), "rb"), content_type="image/png")
    response["Cache-Control"] = f"public, max-age={ONE_YEAR}, immutable"
    return response
