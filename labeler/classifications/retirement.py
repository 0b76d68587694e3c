"""When a subject stops being shown: the workflow's retirement rules, each with its reason.

Reasons: ``flagged`` and ``expert_review`` (both go to the review queue), ``blank``
(unanimous "nothing here"), ``confident_consensus`` (skill-weighted posterior of the first
question crossed the threshold after at least ``retire_min`` votes) and
``classification_count`` (``retire_after`` votes). A confident model that disagrees with the
crowd holds retirement back for ``review_extra_votes`` more votes, then asks an expert.

A rare-object workflow (``workflow.rare_answer`` set, e.g. a lens search) retires at both
ends of P(rare), as Space Warps does (SWAP, Marshall+2016): ``detected`` once the
volunteers' votes alone give P(rare) >= ``detect_posterior``, ``rejected`` once
P(rare) <= ``reject_posterior``, both after at least ``retire_min`` votes, with the
workflow's ``rare_prior`` as the prior. The model is never needed to retire: it cannot
detect, and it can hold a rejection back (when it still finds the subject likely rare) but
never cause one, so a candidate is only ever dropped on human evidence.
"""

from __future__ import annotations

import numpy as np

from labeler.classifications.models import Consensus
from labeler.classifications.skill import active_prediction, votes_and_skills
from labeler.workflows.models import SubjectState, Workflow
from mlcore import consensus as ds

FOR_REVIEW = frozenset({"flagged", "expert_review"})
EXPERT = "expert"  # a scientist's label settled the subject (labeler.review); its consensus stays pinned to it
DETECTED, REJECTED = "detected", "rejected"


def retirement_reason(*, workflow: Workflow, state: SubjectState, consensus: Consensus) -> str:
    """Why the subject retires now, or "" while it stays active."""
    if state.status != SubjectState.Status.ACTIVE:
        return ""
    n = state.classification_count
    if workflow.retire_flags and state.flag_count >= workflow.retire_flags:
        return "flagged"
    if workflow.rare_answer is not None:
        return _rare_reason(workflow, state)
    if workflow.retire_blank_after and n >= workflow.retire_blank_after and _blank_votes(workflow, consensus) == n:
        return "blank"
    root = consensus.posterior.get(workflow.task_tree["first"], [])
    confident = n >= workflow.retire_min and bool(root) and max(root) >= workflow.retire_posterior
    if not (confident or n >= workflow.retire_after):
        return ""
    if _model_disagrees(workflow, state.subject_id, root):
        return "expert_review" if n >= workflow.retire_after + workflow.review_extra_votes else ""
    return "confident_consensus" if confident else "classification_count"


def swap_decision(*, p_crowd: float, p_with_model: float, n_votes: int, detect: float, reject: float,
                  min_votes: int, max_votes: int, prior: float) -> str:
    """Space Warps retirement of one subject from P(rare); "" keeps it active.

    ``p_crowd``: from the volunteers' votes only; ``p_with_model``: the same with the model
    as one more voter. Only ``p_crowd`` detects; rejection needs both below ``reject`` (the
    model can add eyes, never retire a candidate). After ``max_votes`` an undecided subject
    that the crowd finds more likely rare than the prior goes to an expert.
    """
    if n_votes >= min_votes and p_crowd >= detect:
        return DETECTED
    if n_votes >= min_votes and max(p_crowd, p_with_model) <= reject:
        return REJECTED
    if n_votes >= max_votes:
        return "expert_review" if p_crowd > prior else "classification_count"
    return ""


def _rare_reason(workflow: Workflow, state: SubjectState) -> str:
    p_crowd, p_with_model = rare_probabilities(workflow=workflow, subject_id=state.subject_id)
    return swap_decision(
        p_crowd=p_crowd, p_with_model=p_with_model, n_votes=state.classification_count,
        detect=workflow.detect_posterior, reject=workflow.reject_posterior, min_votes=workflow.retire_min,
        max_votes=workflow.retire_after, prior=workflow.rare_prior,
    )


def rare_prior_vector(workflow: Workflow) -> np.ndarray:
    """(K,) prior of the first question: ``rare_prior`` on the rare answer, the rest shared evenly."""
    k = len(workflow.task_tree["tasks"][workflow.task_tree["first"]]["answers"])
    prior = np.full(k, (1.0 - workflow.rare_prior) / (k - 1))
    prior[workflow.rare_answer] = workflow.rare_prior
    return prior


def rare_probabilities(*, workflow: Workflow, subject_id: int) -> tuple[float, float]:
    """(P(rare) from the volunteers' skill-weighted votes, the same with the active model as a voter)."""
    first = workflow.task_tree["first"]
    by_task, counts = votes_and_skills(workflow, subject_id)
    votes = by_task.get(first, [])
    prior = rare_prior_vector(workflow)
    k = len(prior)
    posterior = prior
    if votes:
        zeros = np.zeros((k, k))
        confusions = np.stack(  # (V, K, K)
            [ds.confusion_from_counts(counts.get((key, first), zeros), ds.dirichlet_prior(k)) for key, _ in votes]
        )
        posterior = ds.posterior_from_votes(prior, confusions, np.array([answer for _, answer in votes]))
    with_model = posterior
    prediction = active_prediction(workflow, subject_id)
    if prediction is not None and first in prediction.probabilities:
        probs = np.asarray([prediction.probabilities[first]])  # (1, K)
        confusion = np.asarray(prediction.agent_confusion)  # (K, K * bins)
        with_model = ds.posterior_with_agent(posterior, confusion, ds.model_answers(probs))[0]
    rare = workflow.rare_answer
    return float(posterior[rare]), float(with_model[rare])


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
