"""Every retirement rule, with the reason it records."""

import copy
import uuid

import pytest

from labeler.classifications.services import classification_submit
from labeler.learning.models import ModelVersion, Prediction
from labeler.workflows.models import SubjectState

SMOOTH_ROUND = [{"task": "T0", "answer": 0}, {"task": "T1", "answer": 0}, {"task": "T4", "answer": 1}]
STAR = [{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}]


@pytest.fixture
def workflow(image_workflow):
    image_workflow.retire_after = 4
    image_workflow.retire_posterior = 1.0  # no confident early retirement in these tests
    image_workflow.save()
    return image_workflow


@pytest.fixture
def state(workflow):
    return workflow.states.order_by("id").first()


def vote(workflow, state, n, path=SMOOTH_ROUND, flagged=False, start=0):
    for i in range(start, start + n):
        classification_submit(workflow=workflow, subject_id=state.subject_id, volunteer_key=f"a:{i}",
                              annotation=path, client_uuid=uuid.uuid4(), flagged=flagged)
    return SubjectState.objects.get(pk=state.pk)


def test_flags_send_a_subject_to_review(workflow, state):
    after = vote(workflow, state, workflow.retire_flags, flagged=True)
    assert (after.status, after.retirement_reason, after.needs_review) == ("retired", "flagged", True)


def test_unanimous_blank_votes_retire_early(workflow, state):
    tree = copy.deepcopy(workflow.task_tree)
    tree["tasks"]["T0"]["answers"][2]["blank"] = True  # "star or artefact" stands in for "nothing here"
    workflow.task_tree = tree
    workflow.save()
    assert vote(workflow, state, 2, STAR).status == "active"
    after = vote(workflow, state, 1, STAR, start=2)
    assert (after.status, after.retirement_reason) == ("retired", "blank")


def test_a_confident_model_that_disagrees_asks_for_more_votes_then_for_an_expert(workflow, state):
    version = ModelVersion.objects.create(workflow=workflow, number=1, kind="question_head", status="active",
                                          agent_confusion=[[1 / 12] * 12] * 3)  # a voter that tells nothing
    probs = {"T0": [0.02, 0.03, 0.95], "T1": [1 / 3] * 3, "T2": [0.5] * 2, "T3": [0.5] * 2, "T4": [0.5] * 2}
    Prediction.objects.create(model_version=version, subject_id=state.subject_id, probabilities=probs,
                              entropy=0.2, bald=0.1, score=0.1)
    after = vote(workflow, state, workflow.retire_after)
    assert after.status == "active"  # would have retired by count: the model says "star", the crowd "smooth"
    after = vote(workflow, state, workflow.review_extra_votes, start=workflow.retire_after)
    assert (after.status, after.retirement_reason, after.needs_review) == ("retired", "expert_review", True)


def test_without_conflict_the_count_rule_retires(workflow, state):
    after = vote(workflow, state, workflow.retire_after)
    assert (after.retirement_reason, after.needs_review) == ("classification_count", False)
