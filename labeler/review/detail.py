"""Everything a scientist needs on one subject: votes with each volunteer's weight, the posterior
as it formed, every model version's prediction and their spread, expert labels."""

from __future__ import annotations

import numpy as np
from django.shortcuts import get_object_or_404

from labeler.classifications.models import Classification, Consensus, VolunteerSkill
from labeler.learning.models import Prediction
from labeler.review.selectors import expert_labels_of
from labeler.workflows.models import SubjectState, Workflow
from mlcore import consensus as ds


def subject_review_detail(*, workflow: Workflow, subject_id: int) -> dict:
    """The subject page's data; 404 unless the subject belongs to the workflow."""
    state = get_object_or_404(SubjectState.objects.select_related("subject"), workflow=workflow, subject_id=subject_id)
    tree = workflow.task_tree
    root = tree["first"]
    k = len(tree["tasks"][root]["answers"])
    votes = list(
        Classification.objects.filter(workflow=workflow, subject_id=subject_id)
        .select_related("user")
        .order_by("created_at", "id")
    )
    confusions = _root_confusions(workflow, root, k, {v.volunteer_key for v in votes})
    return {
        "subject": state.subject,
        "state": state,
        "consensus": Consensus.objects.filter(workflow=workflow, subject_id=subject_id).first(),
        "classifications": [_vote_row(tree, v, confusions) for v in votes],
        "history": posterior_history(votes, root, k, confusions),
        "predictions": _predictions(workflow, subject_id, root),
        "expert_labels": [
            {"label": label, "path": path_labels(tree, label.annotation)}
            for label in expert_labels_of(workflow=workflow, subject_id=subject_id)
        ],
    }


def path_labels(tree: dict, path: list[dict]) -> list[tuple[str, str]]:
    """``[(question, answer label), ...]`` of a path, skipping steps an edited tree no longer has."""
    out = []
    for step in path:
        task = tree["tasks"].get(step.get("task"))
        answers = task["answers"] if task else []
        if isinstance(step.get("answer"), int) and 0 <= step["answer"] < len(answers):
            out.append((task["question"], answers[step["answer"]]["label"]))
    return out


def _root_confusions(workflow: Workflow, root: str, k: int, keys: set[str]) -> dict[str, np.ndarray]:
    """Each volunteer's first-question confusion (K, K): their evidence plus the Dirichlet prior."""
    evidence = dict(
        VolunteerSkill.objects.filter(workflow=workflow, task=root, volunteer_key__in=keys).values_list(
            "volunteer_key", "counts"
        )
    )
    prior = ds.dirichlet_prior(k)
    return {
        key: ds.confusion_from_counts(np.asarray(evidence.get(key, np.zeros((k, k))), float), prior) for key in keys
    }


def _vote_row(tree: dict, vote: Classification, confusions: dict[str, np.ndarray]) -> dict:
    confusion = confusions[vote.volunteer_key]
    k = confusion.shape[0]
    return {
        "vote": vote,
        "path": path_labels(tree, vote.annotation),
        # Weight: Cohen's kappa of their confusion (0: guessing, 1: always right), as on the volunteers page.
        "kappa": float(ds.skill_score(confusion[None], np.full(k, 1 / k))[0]),
        "bits": float(ds.information_gain(confusion[None], np.full(k, 1 / k))[0]),
    }


def posterior_history(votes: list[Classification], root: str, k: int, confusions: dict) -> list[list[float]]:
    """First-question posterior after each vote in turn, replayed with today's skills (without the model).

    Row ``i`` is the posterior from votes ``0..i``: Dawid & Skene with a uniform prior.
    """
    steps = [(v.volunteer_key, s["answer"]) for v in votes for s in v.annotation
             if s.get("task") == root and isinstance(s.get("answer"), int) and 0 <= s["answer"] < k]  # fmt: skip
    history = []
    for i in range(1, len(steps) + 1):
        keys, answers = zip(*steps[:i], strict=True)
        stacked = np.stack([confusions[key] for key in keys])  # (V, K, K)
        p = ds.posterior_from_votes(np.full(k, 1 / k), stacked, np.asarray(answers))
        history.append([round(float(x), 4) for x in p])
    return history


def _predictions(workflow: Workflow, subject_id: int, root: str) -> dict:
    """Every model version's first-question prediction, newest first, and the spread between versions."""
    rows = list(
        Prediction.objects.filter(model_version__workflow=workflow, subject_id=subject_id)
        .select_related("model_version")
        .order_by("-model_version__number")
    )
    probs = [p.probabilities.get(root) for p in rows if p.probabilities.get(root)]
    spread = np.std(np.asarray(probs), axis=0).round(4).tolist() if len(probs) > 1 else None
    return {"rows": [{"prediction": p, "root": p.probabilities.get(root) or []} for p in rows], "spread": spread}
