"""When a subject stops being shown: the workflow's retirement rules, each with its reason.

Reasons: ``flagged`` and ``expert_review`` (both go to the review queue), ``blank``
(unanimous "nothing here"), ``confident_consensus`` (skill-weighted posterior of the first
question crossed the threshold after at least ``retire_min`` votes) and
``classification_count`` (``retire_after`` votes). A confident model that disagrees with the
crowd holds retirement back for ``review_extra_votes`` more votes, then asks an expert.
"""

from __future__ import annotations

from labeler.classifications.models import Consensus
from labeler.classifications.skill import active_prediction
from labeler.workflows.models import SubjectState, Workflow

FOR_REVIEW = frozenset({"flagged", "expert_review"})


def retirement_reason(*, workflow: Workflow, state: SubjectState, consensus: Consensus) -> str:
    """Why the subject retires now, or "" while it stays active."""
    if state.status != SubjectState.Status.ACTIVE:
        return ""
    n = state.classification_count
    if workflow.retire_flags and state.flag_count >= workflow.retire_flags:
        return "flagged"
    if workflow.retire_blank_after and n >= workflow.retire_blank_after and _blank_votes(workflow, consensus) == n:
        return "blank"
    root = consensus.posterior.get(workflow.task_tree["first"], [])
    confident = n >= workflow.retire_min and bool(root) and max(root) >= workflow.retire_posterior
    if not (confident or n >= workflow.retire_after):
        return ""
    if _model_disagrees(workflow, state.subject_id, root):
        return "expert_review" if n >= workflow.retire_after + workflow.review_extra_votes else ""
    return "confident_consensus" if confident else "classification_count"


def _blank_votes(workflow: Workflow, consensus: Consensus) -> int:
    """Votes for a "blank" answer of the first question."""
    first = workflow.task_tree["first"]
    answers = workflow.task_tree["tasks"][first]["answers"]
    votes = consensus.counts.get(first, [])
    return sum(votes[i] for i, answer in enumerate(answers) if answer.get("blank") and i < len(votes))


def _model_disagrees(workflow: Workflow, subject_id: int, root_posterior: list[float]) -> bool:
    """The active model confidently prefers another first answer than the crowd's posterior."""
    prediction = active_prediction(workflow, subject_id)
    probs = prediction.probabilities.get(workflow.task_tree["first"]) if prediction else None
    if not probs or not root_posterior:
        return False
    model_choice = max(range(len(probs)), key=probs.__getitem__)
    crowd_choice = max(range(len(root_posterior)), key=root_posterior.__getitem__)
    return model_choice != crowd_choice and probs[model_choice] >= workflow.review_model_confidence
