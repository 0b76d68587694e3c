"""Skill-weighted consensus in the service: gold measures people, confident subjects retire early."""

import uuid

import numpy as np
import pytest
from django.core.management import call_command

from labeler.classifications.models import Consensus, VolunteerSkill
from labeler.classifications.services import classification_submit
from labeler.workflows.models import SubjectState

SMOOTH_ROUND = [{"task": "T0", "answer": 0}, {"task": "T1", "answer": 0}, {"task": "T4", "answer": 1}]
STAR = [{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}]
FACE_ON_DISK = [{"task": "T0", "answer": 1}, {"task": "T2", "answer": 1}, {"task": "T4", "answer": 1}]


def submit(workflow, state, key, path):
    classification_submit(
        workflow=workflow, subject_id=state.subject_id, volunteer_key=key, annotation=path, client_uuid=uuid.uuid4()
    )


@pytest.fixture
def workflow(image_workflow):
    image_workflow.retire_after = 10
    image_workflow.retire_min = 3
    image_workflow.save()
    return image_workflow


def test_consensus_stores_a_posterior_and_agreement_per_question(workflow):
    state = workflow.states.first()
    submit(workflow, state, "a:1", SMOOTH_ROUND)
    submit(workflow, state, "a:2", STAR)
    consensus = Consensus.objects.get(subject_id=state.subject_id)
    assert sum(consensus.posterior["T0"]) == pytest.approx(1.0)
    assert consensus.posterior["T0"][0] == pytest.approx(consensus.posterior["T0"][2])  # two equal strangers
    assert consensus.agreement["T0"] < 0.5 and consensus.agreement["T1"] == pytest.approx(1.0)


def test_gold_subjects_teach_skill_and_skilled_volunteers_retire_subjects_sooner(workflow):
    states = list(SubjectState.objects.filter(workflow=workflow).order_by("id"))
    gold, fresh = states[:6], states[6:8]
    for state, path in zip(gold, [SMOOTH_ROUND, FACE_ON_DISK, STAR] * 2, strict=True):
        state.gold_answers = {step["task"]: step["answer"] for step in path}
        state.save()
        for key in ("a:good-1", "a:good-2", "a:good-3"):
            submit(workflow, state, key, path)
        submit(workflow, state, "a:spammer", STAR)
    good = VolunteerSkill.objects.get(workflow=workflow, volunteer_key="a:good-1", task="T0")
    assert good.n_gold == 6 and np.trace(np.asarray(good.counts)) == 6
    spammer = VolunteerSkill.objects.get(workflow=workflow, volunteer_key="a:spammer", task="T0")
    assert np.asarray(spammer.counts)[:, 2].sum() == 6  # always "star", right only on the 2 stars

    for key in ("a:good-1", "a:good-2", "a:good-3"):
        submit(workflow, fresh[0], key, SMOOTH_ROUND)
    for key in ("a:new-1", "a:new-2", "a:new-3"):
        submit(workflow, fresh[1], key, SMOOTH_ROUND)
    proven, unknown = (SubjectState.objects.get(pk=s.pk) for s in fresh)
    assert proven.status == "retired" and proven.retirement_reason == "confident_consensus"
    assert unknown.status == "active"


def test_the_em_reestimate_finds_the_spammer_and_keeps_the_truth(workflow):
    states = list(SubjectState.objects.filter(workflow=workflow).order_by("id"))[:12]
    for i, state in enumerate(states):
        truth = SMOOTH_ROUND if i % 2 else STAR
        for key in ("a:1", "a:2", "a:3"):
            submit(workflow, state, key, truth)
        submit(workflow, state, "a:spammer", STAR)
    call_command("reestimate_skills", str(workflow.id))
    spammer = np.asarray(VolunteerSkill.objects.get(volunteer_key="a:spammer", task="T0").counts)
    careful = np.asarray(VolunteerSkill.objects.get(volunteer_key="a:1", task="T0").counts)
    assert spammer[0, 2] == pytest.approx(6, abs=0.5)  # says "star" when it is smooth: caught
    assert np.trace(careful) == pytest.approx(12, abs=0.5)
    for i, state in enumerate(states):
        posterior = Consensus.objects.get(subject_id=state.subject_id).posterior["T0"]
        assert int(np.argmax(posterior)) == (0 if i % 2 else 2)


def test_a_reliable_model_counts_as_one_more_voter_but_never_on_its_own_training_subjects(workflow):
    from labeler.learning.models import ModelVersion, Prediction

    confident_star = 2 * 4 + 3  # answer "star" in the most confident of 4 bins (mlcore.consensus.model_answers)
    confusion = np.full((3, 12), 0.01)
    confusion[2, confident_star] = 0.89  # when it says "confident star", it is a star 89% of the time
    confusion /= confusion.sum(axis=1, keepdims=True)
    version = ModelVersion.objects.create(
        workflow=workflow, number=1, kind="question_head", status="active", agent_confusion=confusion.tolist()
    )
    seen, unseen = SubjectState.objects.filter(workflow=workflow).order_by("id")[:2]
    probs = {"T0": [0.02, 0.03, 0.95], "T1": [1 / 3] * 3, "T2": [0.5, 0.5], "T3": [0.5, 0.5], "T4": [0.5, 0.5]}
    for state, in_training in ((seen, True), (unseen, False)):
        Prediction.objects.create(model_version=version, subject_id=state.subject_id, probabilities=probs,
                                  entropy=0.2, bald=0.1, score=0.1, in_training=in_training)
        submit(workflow, state, "a:stranger", STAR)
    with_model = Consensus.objects.get(subject_id=unseen.subject_id).posterior["T0"]
    without = Consensus.objects.get(subject_id=seen.subject_id).posterior["T0"]
    assert without[2] == pytest.approx(0.5)  # the stranger alone
    assert with_model[2] == pytest.approx(0.5 * 0.89 / (0.5 * 0.89 + 0.5 / 12), rel=1e-3)
