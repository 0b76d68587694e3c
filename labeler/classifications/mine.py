"""What a volunteer may see of their own work (selectors): recent classifications, counts, gold."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Count

from labeler.classifications.models import Classification
from labeler.classifications.services import gold_feedback
from labeler.workflows.models import SubjectState, Workflow

RECENT = 20
FAVOURITES = 50


def classifications_recent(*, workflow: Workflow, volunteer_key: str, limit: int = RECENT) -> list[Classification]:
    """The volunteer's latest classifications in one workflow, newest first."""
    return list(
        Classification.objects.filter(workflow=workflow, volunteer_key=volunteer_key)
        .select_related("subject")
        .order_by("-created_at", "-id")[:limit]
    )


def volunteer_overview(*, volunteer_key: str) -> dict:
    """The personal page: per workflow counts and gold score, favourites and recent work.

    Gold "seen" counts the volunteer's classifications of gold subjects; "right" those whose
    answers match every known answer on the path they took (as the feedback after submitting).
    """
    mine = Classification.objects.filter(volunteer_key=volunteer_key)
    counts = dict(mine.values("workflow").annotate(n=Count("id")).values_list("workflow", "n"))
    workflows = Workflow.objects.filter(pk__in=counts).select_related("project").order_by("project__slug", "id")
    gold = _gold_scores(volunteer_key)
    per_workflow = [
        {"workflow": w, "classified": counts[w.pk], "gold_seen": gold[w.pk][0], "gold_right": gold[w.pk][1]}
        for w in workflows
    ]
    related = mine.select_related("workflow", "subject").order_by("-created_at", "-id")
    return {
        "workflows": per_workflow,
        "total": sum(counts.values()),
        "favourites": list(related.filter(favourite=True)[:FAVOURITES]),
        "recent": [_described(c) for c in related[:RECENT]],
    }


def _gold_scores(volunteer_key: str) -> dict[int, list[int]]:
    """{workflow id: [gold seen, gold right]} for this volunteer."""
    gold_answers = {  # the join may repeat a state: the dict keeps one
        (workflow_id, subject_id): answers
        for workflow_id, subject_id, answers in SubjectState.objects.filter(
            gold_answers__isnull=False, subject__classifications__volunteer_key=volunteer_key
        ).values_list("workflow_id", "subject_id", "gold_answers")
    }
    scores: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    rows = Classification.objects.filter(volunteer_key=volunteer_key).select_related("workflow")
    for c in rows.filter(subject_id__in={sid for _, sid in gold_answers}):
        answers = gold_answers.get((c.workflow_id, c.subject_id))
        if answers is None:
            continue
        feedback = gold_feedback(c.workflow, c.annotation, answers)
        scores[c.workflow_id][0] += 1
        scores[c.workflow_id][1] += int(bool(feedback and feedback["correct"]))
    return scores


def _described(classification: Classification) -> dict:
    """A classification with its answers in words, as the volunteer saw them."""
    tasks = classification.workflow.task_tree["tasks"]
    answers = [
        (tasks[step["task"]]["question"], tasks[step["task"]]["answers"][step["answer"]]["label"])
        for step in classification.annotation
        if step["task"] in tasks and step["answer"] < len(tasks[step["task"]]["answers"])
    ]
    return {"classification": classification, "answers": answers, "n_marks": len(classification.marks or [])}
