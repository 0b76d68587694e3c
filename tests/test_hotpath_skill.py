"""The hot path's skill reads and writes (issue #8 item 2): fewer statements, the same numbers."""

import uuid

import numpy as np
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from labeler.classifications import skill
from labeler.classifications.models import VolunteerSkill
from labeler.classifications.services import classification_submit
from labeler.learning.models import ModelVersion, Prediction
from mlcore import consensus as ds

SMOOTH_ROUND = [{"task": "T0", "answer": 0}, {"task": "T1", "answer": 0}, {"task": "T4", "answer": 1}]
STAR = [{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}]


def submit(workflow, subject_id, key, path):
    return classification_submit(
        workflow=workflow, subject_id=subject_id, volunteer_key=key, annotation=path, client_uuid=uuid.uuid4()
    )


def skill_row(workflow, key, task, counts):
    return VolunteerSkill.objects.create(workflow=workflow, volunteer_key=key, task=task, counts=counts)


@pytest.fixture
def subject_id(image_workflow):
    image_workflow.retire_after = 10
    image_workflow.save()
    return image_workflow.states.order_by("id").first().subject_id


def test_the_posterior_weighs_skilled_voters_and_counts_the_others_as_strangers(image_workflow, subject_id):
    expert = [[9, 0, 0], [0, 9, 0], [0, 0, 9]]
    skill_row(image_workflow, "a:expert", "T0", expert)
    skill_row(image_workflow, "a:expert", "T3", [[5, 0], [0, 5]])
    submit(image_workflow, subject_id, "a:expert", SMOOTH_ROUND)
    submit(image_workflow, subject_id, "a:stranger", STAR)

    posterior = skill.consensus_posterior(workflow=image_workflow, subject_id=subject_id)

    counts = np.stack([np.asarray(expert, dtype=float), np.zeros((3, 3))])  # (V, K, K) in vote order
    confusions = ds.confusion_from_counts(counts, ds.dirichlet_prior(3))
    expected = ds.posterior_from_votes(np.full(3, 1 / 3), confusions, np.array([0, 2]))
    assert posterior["T0"] == [round(float(p), 6) for p in expected]
    assert posterior["T0"][0] > 0.5  # the expert outweighs the stranger
    assert set(posterior) == {"T0", "T1", "T3", "T4"}  # only questions with votes


def test_a_submission_reads_its_votes_and_their_skills_in_one_query(image_workflow, subject_id):
    skill_row(image_workflow, "a:1", "T0", [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    submit(image_workflow, subject_id, "a:1", SMOOTH_ROUND)
    with CaptureQueriesContext(connection) as queries:
        submit(image_workflow, subject_id, "a:2", SMOOTH_ROUND)
    skill_reads = [q["sql"] for q in queries if "volunteerskill" in q["sql"]]
    assert len(skill_reads) == 1 and "JOIN" in skill_reads[0]


def test_learning_changes_only_the_rows_with_evidence_and_makes_missing_ones(image_workflow):
    kept = skill_row(image_workflow, "a:1", "T1", [[2, 0, 0], [0, 2, 0], [0, 0, 2]])
    learnt = skill_row(image_workflow, "a:1", "T0", [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    evidence = [
        ("a:1", "T0", 2, np.eye(3)[0]),  # said "star" on a smooth gold subject
        ("a:2", "T0", 0, np.eye(3)[0]),  # a:2 has no skill rows yet
    ]
    with transaction.atomic():
        skill.skill_learn(workflow=image_workflow, evidence=evidence, gold=True)

    learnt.refresh_from_db()
    assert learnt.counts == [[1, 0, 1], [0, 1, 0], [0, 0, 1]] and learnt.n_gold == 1
    fresh = VolunteerSkill.objects.get(workflow=image_workflow, volunteer_key="a:2", task="T0")
    assert fresh.counts == [[1, 0, 0], [0, 0, 0], [0, 0, 0]] and fresh.n_gold == 1
    untouched = VolunteerSkill.objects.get(pk=kept.pk)
    assert (untouched.counts, untouched.n_gold, untouched.updated_at) == (kept.counts, 0, kept.updated_at)


def test_soft_evidence_adds_the_posterior_without_counting_gold(image_workflow):
    row = skill_row(image_workflow, "a:1", "T0", [[0, 0, 0], [0, 0, 0], [0, 0, 0]])
    with transaction.atomic():
        skill.skill_learn(workflow=image_workflow, evidence=[("a:1", "T0", 1, np.array([0.25, 0.75, 0]))], gold=False)
    row.refresh_from_db()
    assert row.counts == [[0, 0.25, 0], [0, 0.75, 0], [0, 0, 0]] and row.n_gold == 0


def test_the_active_prediction_is_the_active_versions_view_of_subjects_it_did_not_train_on(image_workflow):
    seen, unseen, retired_model = (s.subject_id for s in image_workflow.states.order_by("id")[:3])
    confusion = np.full((3, 12), 1 / 12).tolist()
    active = ModelVersion.objects.create(
        workflow=image_workflow, number=2, kind="question_head", status="active", agent_confusion=confusion
    )
    old = ModelVersion.objects.create(
        workflow=image_workflow, number=1, kind="question_head", status="retired", agent_confusion=confusion
    )
    probs = {"T0": [0.1, 0.2, 0.7]}
    for version, sid, in_training in ((active, seen, True), (active, unseen, False), (old, retired_model, False)):
        Prediction.objects.create(model_version=version, subject_id=sid, probabilities=probs,
                                  entropy=0.2, bald=0.1, score=0.1, in_training=in_training)

    assert skill.active_prediction(image_workflow, unseen) == skill.ActivePrediction(probs, confusion)
    assert skill.active_prediction(image_workflow, seen) is None  # its own training subject
    assert skill.active_prediction(image_workflow, retired_model) is None  # only the active version counts
