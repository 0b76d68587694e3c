"""The ranked candidate list of a rare-object search (e.g. lenses), where scientists grade A/B/C.

Candidates are the subjects the evidence makes likelier than the prior: the crowd's
skill-weighted posterior (with the active model as one more voter, as in consensus), put
on the workflow's prior ``rare_prior``, or, for subjects nobody has inspected yet, the
model's own probability. Most likely first; graded candidates keep their grade on view.
A grade is an expert label (``expert_label_create``): the subject becomes gold and retires.
Permission: the workflow's project scientists and admins.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from labeler.classifications.models import Consensus
from labeler.learning.models import ModelVersion, Prediction
from labeler.review.models import ExpertLabel
from labeler.review.services import ExpertLabelError, expert_label_create
from labeler.roles import require_scientist_of, scientist_required
from labeler.subjects.models import Subject
from labeler.workflows.models import SubjectState, Workflow

PAGE = 50
MODEL_CANDIDATE = 0.5  # uninspected subjects the model finds at least this likely rare are listed too
NOT_RARE = "no"


@dataclass(frozen=True)
class Candidate:
    subject: Subject
    p_rare: float | None  # crowd (+ model as a voter) on the workflow's prior; None: no votes yet
    p_model: float | None  # the active model's probability of the rare answer
    votes: int
    status: str
    reason: str
    grade: str  # the latest expert verdict: "A"/"B"/"C", "no" (not rare), "" (a rare label without grade) or None
    preview_url: str


def on_prior(p_uniform: float, prior: float, n_answers: int) -> float:
    """P(rare) under the workflow's prior from a posterior computed with a uniform prior over the answers.

    The likelihoods are the same; only the prior odds change, from 1 : (K - 1) to
    ``prior`` : (1 - ``prior``) (the other answers sharing it evenly, as in retirement).
    """
    if p_uniform >= 1.0 or p_uniform <= 0.0:
        return float(p_uniform)
    odds = p_uniform / (1.0 - p_uniform) * (n_answers - 1) * prior / (1.0 - prior)
    return odds / (1.0 + odds)


def rare_candidates(*, workflow: Workflow) -> list[tuple[int, float | None, float | None, int]]:
    """(subject_id, P(rare) on the prior or None, model P(rare) or None, votes), most likely first."""
    first, rare = workflow.task_tree["first"], workflow.rare_answer
    k = len(workflow.task_tree["tasks"][first]["answers"])
    crowd = {
        sid: (on_prior(post[first][rare], workflow.rare_prior, k), n)
        for sid, post, n in Consensus.objects.filter(workflow=workflow, n_classifications__gt=0).values_list(
            "subject_id", "posterior", "n_classifications"
        )
        if post.get(first) and len(post[first]) > rare
    }
    model = {
        sid: probs[first][rare]
        for sid, probs in Prediction.objects.filter(
            model_version__workflow=workflow, model_version__status=ModelVersion.Status.ACTIVE
        ).values_list("subject_id", "probabilities")
        if probs.get(first)
    }
    rows = []
    for sid in crowd.keys() | model.keys():
        p, n = crowd.get(sid, (None, 0))
        if (p is not None and p > workflow.rare_prior) or (p is None and model.get(sid, 0.0) >= MODEL_CANDIDATE):
            rows.append((sid, p, model.get(sid), n))
    rows.sort(key=lambda r: (-(r[1] if r[1] is not None else -1.0), -(r[2] or 0.0), r[0]))
    return rows


def _rare_workflow(request, workflow_id: int) -> Workflow:
    workflow = get_object_or_404(Workflow.objects.select_related("project"), pk=workflow_id)
    require_scientist_of(request.user, workflow.project_id)
    if workflow.rare_answer is None:
        raise Http404("This workflow is not a rare-object search (it has no rare answer).")
    return workflow


def _grades(workflow: Workflow, subject_ids: list[int]) -> dict[int, str]:
    """Latest expert verdict per subject: its grade, or "no" when the expert said it is not rare."""
    latest: dict[int, str] = {}
    labels = ExpertLabel.objects.filter(workflow=workflow, subject_id__in=subject_ids).order_by("created_at", "id")
    first = workflow.task_tree["first"]
    for label in labels.values("subject_id", "annotation", "grade"):
        root = next((s["answer"] for s in label["annotation"] if s["task"] == first), None)
        latest[label["subject_id"]] = label["grade"] if root == workflow.rare_answer else NOT_RARE
    return latest


@scientist_required
@require_GET
def candidates_page(request, workflow_id: int):
    workflow = _rare_workflow(request, workflow_id)
    page = max(0, _int(request.GET.get("page"), 0))
    ranked = rare_candidates(workflow=workflow)
    rows = ranked[page * PAGE : (page + 1) * PAGE]
    ids = [r[0] for r in rows]
    subjects = Subject.objects.in_bulk(ids)
    states = {
        sid: (status, reason)
        for sid, status, reason in SubjectState.objects.filter(workflow=workflow, subject_id__in=ids).values_list(
            "subject_id", "status", "retirement_reason"
        )
    }
    grades = _grades(workflow, ids)
    candidates = [
        Candidate(subject=subjects[sid], p_rare=p, p_model=pm, votes=n, status=states.get(sid, ("", ""))[0],
                  reason=states.get(sid, ("", ""))[1], grade=grades.get(sid), preview_url=_preview(subjects[sid]))
        for sid, p, pm, n in rows
        if sid in subjects
    ]
    root = workflow.task_tree["tasks"][workflow.task_tree["first"]]
    context = {
        "workflow": workflow,
        "question": root["question"],
        "rare_label": root["answers"][workflow.rare_answer]["label"],
        "candidates": candidates,
        "total": len(ranked),
        "start": page * PAGE,
        "page": page,
        "has_next": (page + 1) * PAGE < len(ranked),
        "grade_counts": _grade_counts(workflow),
        "grades": ExpertLabel.Grade.choices,
    }
    return render(request, "science/candidates.html", context)


@scientist_required
@require_POST
def candidate_grade(request, workflow_id: int, subject_id: int):
    """Grade a candidate A/B/C (it is the rare thing) or reject it ("no"), then back to the list."""
    workflow = _rare_workflow(request, workflow_id)
    grade = request.POST.get("grade", "")
    first = workflow.task_tree["first"]
    if grade == NOT_RARE:
        other = next(i for i in range(len(workflow.task_tree["tasks"][first]["answers"])) if i != workflow.rare_answer)
        annotation, grade = [{"task": first, "answer": other}], ""
    else:
        annotation = [{"task": first, "answer": workflow.rare_answer}]
    try:
        expert_label_create(workflow=workflow, subject=subject_id, user=request.user, annotation=annotation,
                            grade=grade, note=request.POST.get("note", ""))
    except ExpertLabelError as exc:
        messages.error(request, f"Subject {subject_id} was not graded: {exc}")
    else:
        verdict = f"grade {grade}" if grade else ("not a find" if annotation[0]["answer"] != workflow.rare_answer
                                                  else "a find, ungraded")
        messages.success(request, f"Subject {subject_id}: {verdict}.")
    page = _int(request.POST.get("page"), 0)
    return redirect(reverse("science-candidates", args=[workflow.id]) + (f"?page={page}" if page > 0 else ""))


def _grade_counts(workflow: Workflow) -> dict[str, int]:
    """How many subjects hold each latest verdict (A, B, C, ungraded yes, no)."""
    ids = list(ExpertLabel.objects.filter(workflow=workflow).values_list("subject_id", flat=True).distinct())
    counts: dict[str, int] = {}
    for verdict in _grades(workflow, ids).values():
        counts[verdict or "ungraded"] = counts.get(verdict or "ungraded", 0) + 1
    return counts


def _preview(subject: Subject) -> str:
    return reverse("subject-preview", args=[subject.pk, subject.data_sha256[:12]])


def _int(text, default: int) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return default
