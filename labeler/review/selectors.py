"""What scientists read: the review queue ranked by disagreement, expert answers for training."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Exists, F, FilteredRelation, FloatField, OuterRef, Q, Value
from django.db.models.functions import Abs, Cast, Coalesce, Least

from labeler.classifications.models import Consensus
from labeler.learning.models import ModelVersion
from labeler.review.models import ExpertLabel
from labeler.subjects.models import Subject
from labeler.workflows.models import Workflow
from mlcore import tasktree

# Weights of the disagreement score's parts (each in [0, 1]): the model against the crowd
# counts most, then how split the votes are, then volunteers' flags.
MODEL_WEIGHT, SPLIT_WEIGHT, FLAG_WEIGHT = 1.0, 0.5, 0.5
FLAGS_SATURATE = 3


@dataclass(frozen=True)
class ReviewItem:
    subject: Subject
    needs_review: bool
    status: str
    retirement_reason: str
    flags: int
    votes: int
    fractions: list[float]  # root question, pure vote fractions
    posterior: list[float]  # root question, skill-weighted (with the model as one voter)
    agreement: float | None
    model: list[float] | None  # the active model's root probabilities
    entropy: float | None
    bald: float | None
    model_crowd: float  # total variation distance between model and posterior on the root question
    score: float


def active_version(workflow: Workflow) -> ModelVersion | None:
    return ModelVersion.objects.filter(workflow=workflow, status=ModelVersion.Status.ACTIVE).order_by("-id").first()


def review_queue(*, workflow: Workflow, limit: int = 50, offset: int = 0) -> list[ReviewItem]:
    """Subjects an expert should settle first: those sent to review, then by disagreement score.

    Score = ``MODEL_WEIGHT * TV(model, posterior) + SPLIT_WEIGHT * (1 - agreement) +
    FLAG_WEIGHT * min(flags, 3) / 3`` on the first question, where TV is the total variation
    distance between the active model's probabilities and the crowd's posterior (0 without a
    model). Only subjects with votes, none with an expert label yet. Ranked in SQL (JSON
    keys read by the database), so only one page of rows reaches Python.
    """
    rows = _ranked(workflow)[offset : offset + limit]
    return [_item(subject) for subject in rows]


def review_queue_count(*, workflow: Workflow) -> int:
    return _candidates(workflow).count()


def _candidates(workflow: Workflow):
    labelled = ExpertLabel.objects.filter(workflow=workflow, subject=OuterRef("pk"))
    version = active_version(workflow)
    return (
        Subject.objects.annotate(
            st=FilteredRelation("states", condition=Q(states__workflow=workflow)),
            cons=FilteredRelation("consensus", condition=Q(consensus__workflow=workflow)),
            pred=FilteredRelation("predictions", condition=Q(predictions__model_version=version)),
        )
        .filter(st__id__isnull=False, cons__n_classifications__gt=0)
        .exclude(Exists(labelled))
    )


def _ranked(workflow: Workflow):
    root = workflow.task_tree["first"]
    k = len(workflow.task_tree["tasks"][root]["answers"])
    tv = sum(Abs(_number(f"pred__probabilities__{root}__{i}") - _number(f"cons__posterior__{root}__{i}"))
             for i in range(k)) / 2  # fmt: skip
    split = 1 - Coalesce(_number(f"cons__agreement__{root}"), Value(1.0))
    flags = Cast(Least(F("st__flag_count"), Value(FLAGS_SATURATE)), FloatField()) / FLAGS_SATURATE
    return (
        _candidates(workflow)
        .annotate(
            r_needs_review=F("st__needs_review"),
            r_status=F("st__status"),
            r_reason=F("st__retirement_reason"),
            r_flags=F("st__flag_count"),
            r_votes=F("cons__n_classifications"),
            r_fractions=F(f"cons__fractions__{root}"),
            r_posterior=F(f"cons__posterior__{root}"),
            r_agreement=F(f"cons__agreement__{root}"),
            r_model=F(f"pred__probabilities__{root}"),
            r_entropy=F("pred__entropy"),
            r_bald=F("pred__bald"),
            r_model_crowd=Coalesce(tv, Value(0.0)),
        )
        .annotate(r_score=MODEL_WEIGHT * F("r_model_crowd") + SPLIT_WEIGHT * split + FLAG_WEIGHT * flags)
        .order_by("-r_needs_review", "-r_score", "id")
    )


def _number(path: str):
    """A number stored inside a JSON column, as a float (NULL when the key is missing)."""
    return Cast(F(path), FloatField())


def _item(subject) -> ReviewItem:
    return ReviewItem(
        subject=subject,
        needs_review=bool(subject.r_needs_review),
        status=subject.r_status,
        retirement_reason=subject.r_reason,
        flags=subject.r_flags,
        votes=subject.r_votes,
        fractions=subject.r_fractions or [],
        posterior=subject.r_posterior or [],
        agreement=subject.r_agreement,
        model=subject.r_model,
        entropy=subject.r_entropy,
        bald=subject.r_bald,
        model_crowd=float(subject.r_model_crowd),
        score=float(subject.r_score),
    )


def expert_labels_of(*, workflow: Workflow, subject_id: int) -> list[ExpertLabel]:
    """Every expert label of the subject, newest (the one that counts) first."""
    return list(
        ExpertLabel.objects.filter(workflow=workflow, subject_id=subject_id).select_related("user").order_by(
            "-created_at", "-id"
        )
    )


def expert_answers(*, workflow: Workflow) -> dict[int, list[dict]]:
    """{subject_id: path} of the latest expert label of every expert-labelled subject."""
    rows = (
        ExpertLabel.objects.filter(workflow=workflow)
        .order_by("subject_id", "created_at", "id")
        .values_list("subject_id", "annotation")
    )
    return dict(rows.iterator(chunk_size=2000))  # later rows overwrite earlier ones: the latest wins


def expert_training_counts(
    *, workflow: Workflow, crowd_counts: dict[int, dict[str, list[int]]] | None = None
) -> dict[int, dict[str, list[float]]]:
    """Vote counts to train on for every expert-labelled subject, ``{subject_id: {task: counts}}``.

    Each question the expert answered becomes a one-hot count worth ``expert_weight`` votes.
    Questions the expert's path rules out get no votes; questions below where the expert
    stopped keep the crowd's counts (``crowd_counts``; read from Consensus when not given).
    """
    tree = workflow.task_tree
    answers = expert_answers(workflow=workflow)
    if crowd_counts is None:
        rows = Consensus.objects.filter(workflow=workflow, subject_id__in=list(answers))
        crowd_counts = dict(rows.values_list("subject_id", "counts"))
    out = {}
    for subject_id, path in answers.items():
        crowd = crowd_counts.get(subject_id, {})
        below = _tasks_below(tree, path)
        weight = expert_weight(workflow, crowd)
        counts = {}
        for task, n in tasktree.label_layout(tree):
            row = [0.0] * n
            if task in below:
                row = [float(c) for c in crowd.get(task, row)]
            counts[task] = row
        for step in path:
            counts[step["task"]][step["answer"]] = weight
        out[subject_id] = counts
    return out


def expert_weight(workflow: Workflow, crowd: dict[str, list[int]]) -> float:
    """An expert's answer weighs as much as a full crowd: max(retire_after, the crowd's root votes)."""
    root_votes = sum(crowd.get(workflow.task_tree["first"], []))
    return float(max(workflow.retire_after, root_votes))


def _tasks_below(tree: dict, path: list[dict]) -> set[str]:
    """Questions reachable after the expert's last answer (none when their path is complete)."""
    last = path[-1]
    start = tree["tasks"][last["task"]]["answers"][last["answer"]].get("next")
    seen: set[str] = set()
    stack = [start] if start else []
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        stack.extend(a["next"] for a in tree["tasks"][key]["answers"] if a.get("next"))
    return seen
