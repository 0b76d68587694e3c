"""Volunteer pages. The classify page talks to the JSON API from static/js/classify.js."""

import gzip

from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from labeler.api.volunteers import volunteer_key_for
from labeler.classifications.mine import volunteer_overview
from labeler.classifications.selectors import volunteer_skills
from labeler.roles import require_scientist_of, scientist_required
from labeler.subjects import pixels
from labeler.subjects.models import Subject
from labeler.subjects.rendering import subject_preview_png
from labeler.web.selectors import workflow_summaries
from labeler.workflows.guides import render_markdown
from labeler.workflows.models import Workflow

ONE_YEAR = 365 * 24 * 3600


@require_GET
def home(request):
    return render(request, "web/home.html", {"summaries": workflow_summaries()})


@require_GET
def classify(request, workflow_id: int):
    workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=workflow_id, active=True)
    context = {
        "workflow": workflow,
        # Sanitised by render_markdown (nh3), so the template may mark them |safe.
        "tutorial_html": render_markdown(workflow.tutorial),
        "field_guide_html": render_markdown(workflow.field_guide),
    }
    return render(request, "web/classify.html", context)


@require_GET
def me(request):
    """The volunteer's own page (an account's, or this browser's anonymous work): nobody else's."""
    return render(request, "web/me.html", {"overview": volunteer_overview(volunteer_key=volunteer_key_for(request))})


@scientist_required
@require_GET
def workflow_volunteers(request, workflow_id: int):
    """Scientists' view of the crowd: each volunteer's confusion matrix and weight."""
    workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=workflow_id)
    require_scientist_of(request.user, workflow.project_id)
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


@require_GET
def subject_data(request, subject_id: int, checksum: str):
    """The viewer's data (labeler/subjects/pixels.py); immutable, as the address carries its checksum.

    Stored gzip'd and sent as is (``Content-Encoding: gzip``) to clients that accept it,
    which every browser does; others get the plain bytes.
    """
    subject = get_object_or_404(Subject, pk=subject_id)
    if checksum != pixels.data_token(subject):
        raise Http404("stale data address")
    payload = pixels.subject_payload(subject)
    body = payload.gzip_path.read_bytes()
    zipped = _accepts_gzip(request.headers.get("Accept-Encoding", ""))
    response = HttpResponse(body if zipped else gzip.decompress(body), content_type=payload.content_type)
    if zipped:
        response["Content-Encoding"] = "gzip"
    response["Content-Length"] = str(len(response.content))
    response["Cache-Control"] = f"public, max-age={ONE_YEAR}, immutable"
    for name, value in payload.headers.items():
        response[name] = value
    patch_vary_headers(response, ["Accept-Encoding"])
    return response


def _accepts_gzip(header: str) -> bool:
    """``Accept-Encoding`` lists gzip (or *) without refusing it by ``q=0``."""
    for item in header.split(","):
        name, _, param = item.partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        key, _, value = param.strip().partition("=")
        try:
            refused = key.strip().lower() == "q" and float(value) == 0
        except ValueError:
            refused = True
        if not refused:
            return True
    return False
