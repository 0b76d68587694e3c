"""Scientist pages: the expert review queue and one subject in full. Permission: the workflow's
project scientists and admins (``require_scientist_of``)."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from labeler.classifications.services import ClassificationError
from labeler.review import plots
from labeler.review.detail import subject_review_detail
from labeler.review.selectors import active_version, review_queue, review_queue_count
from labeler.review.services import expert_label_create
from labeler.roles import require_scientist_of, scientist_required
from labeler.subjects.pixels import data_token
from labeler.workflows.models import Workflow

PAGE = 25


def _workflow_for(request, workflow_id: int) -> Workflow:
    workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=workflow_id)
    require_scientist_of(request.user, workflow.project_id)
    return workflow


def _root(workflow: Workflow) -> dict:
    root = workflow.task_tree["tasks"][workflow.task_tree["first"]]
    return {"key": workflow.task_tree["first"], "question": root["question"],
            "answers": [a["label"] for a in root["answers"]]}  # fmt: skip


@scientist_required
@require_GET
def review_page(request, workflow_id: int):
    workflow = _workflow_for(request, workflow_id)
    page = max(0, _int(request.GET.get("page"), 0))
    items = review_queue(workflow=workflow, limit=PAGE, offset=page * PAGE)
    context = {
        "workflow": workflow,
        "root": _root(workflow),
        "items": [
            {"item": item, "preview_url": preview_url(item.subject), "rows": answer_rows(_root(workflow), item)}
            for item in items
        ],
        "total": review_queue_count(workflow=workflow),
        "page": page,
        "has_next": len(items) == PAGE,
        "model": active_version(workflow),
        "grades": ["A", "B", "C"],
    }
    return render(request, "science/review.html", context)


@scientist_required
@require_GET
def subject_page(request, workflow_id: int, subject_id: int):
    workflow = _workflow_for(request, workflow_id)
    detail = subject_review_detail(workflow=workflow, subject_id=subject_id)
    root = _root(workflow)
    context = {
        "workflow": workflow,
        "root": root,
        **detail,
        "preview_url": preview_url(detail["subject"]),
        "data_url": reverse("subject-data", args=[subject_id, data_token(detail["subject"])]),
        "viewer_subject": viewer_subject(detail["subject"]),
        "history_plot": plots.history_lines(detail["history"], root["answers"]),
        "consensus_rows": consensus_rows(root, detail["consensus"]),
        "root_agreement": (detail["consensus"].agreement or {}).get(root["key"]) if detail["consensus"] else None,
        "grades": ["A", "B", "C"],
    }
    return render(request, "science/subject.html", context)


@scientist_required
@require_POST
def expert_label_page(request, workflow_id: int, subject_id: int):
    """The no-JavaScript path of both pages: a form post, then back to where the scientist was."""
    workflow = _workflow_for(request, workflow_id)
    answers = [_int(a, -1) for a in request.POST.getlist("answer") if a != ""]
    path = path_from_answers(workflow.task_tree, answers)
    try:
        expert_label_create(workflow=workflow, subject=subject_id, user=request.user, annotation=path,
                            grade=request.POST.get("grade", ""), note=request.POST.get("note", ""))  # fmt: skip
    except ClassificationError as exc:
        messages.error(request, f"Subject {subject_id} was not labelled: {exc}")
    else:
        messages.success(request, f"Subject {subject_id} labelled.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("science-review", args=[workflow.id])
    return redirect(back)


def consensus_rows(root: dict, consensus) -> list[dict]:
    if consensus is None:
        return []
    key = root["key"]
    votes, fractions, posterior = (consensus.counts.get(key, []), consensus.fractions.get(key, []),
                                   consensus.posterior.get(key, []))  # fmt: skip
    return [
        {"label": label, "votes": _at(votes, i), "fraction": _at(fractions, i), "posterior": _at(posterior, i)}
        for i, label in enumerate(root["answers"])
    ]


def _at(values, i: int):
    return values[i] if values and i < len(values) else None


def answer_rows(root: dict, item) -> list[dict]:
    """One row per first-question answer: vote fraction, posterior, model probability (None if unknown)."""

    return [
        {"label": label, "fraction": _at(item.fractions, i), "posterior": _at(item.posterior, i),
         "model": _at(item.model, i)}  # fmt: skip
        for i, label in enumerate(root["answers"])
    ]


def path_from_answers(tree: dict, answers: list[int]) -> list[dict]:
    """The path that picks ``answers`` in turn from the first question (the service validates it)."""
    path, key = [], tree["first"]
    for answer in answers:
        if key is None:
            break
        path.append({"task": key, "answer": answer})
        options = tree["tasks"][key]["answers"]
        key = options[answer].get("next") if 0 <= answer < len(options) else None
    return path


def viewer_subject(subject) -> dict:
    """What the volunteers' viewer modules load (as the API's SubjectOutput, without truth)."""
    return {"id": subject.pk, "kind": subject.kind, "external_id": subject.external_id,
            "metadata": subject.metadata, "preview_url": preview_url(subject),
            "data_url": reverse("subject-data", args=[subject.pk, data_token(subject)])}  # fmt: skip


def preview_url(subject) -> str:
    return reverse("subject-preview", args=[subject.pk, subject.data_sha256[:12]])


def _int(text, default: int) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return default
