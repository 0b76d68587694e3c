"""The Space Warps-style lens search (issue #9): two-threshold retirement, the model's limits, candidates."""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from labeler.classifications.models import VolunteerSkill
from labeler.classifications.retirement import rare_probabilities, swap_decision
from labeler.classifications.services import classification_submit
from labeler.learning.models import ModelVersion, Prediction
from labeler.review.models import ExpertLabel
from labeler.subjects.models import Project, ProjectMembership
from labeler.subjects.simulation import LENS_WORKFLOW, SkyPlan, lens_search_simulate
from labeler.workflows.models import SubjectState, Workflow

YES, NO = [{"task": "L0", "answer": 0}], [{"task": "L0", "answer": 1}]
# Evidence of a skilled volunteer: P(yes | lens) = 0.875, P(yes | not) = 0.032 with the Dirichlet prior.
SKILLED = [[40.0, 5.0], [1.0, 60.0]]
# A model measured as a reliable voter: its confident "yes" (symbol 3) and "no" (symbol 7), 4 confidence bins.
MODEL_CONFUSION = [[0.02, 0.02, 0.02, 0.91, 0.01, 0.01, 0.01, 0.0], [0.003, 0.003, 0.003, 0.01, 0.02, 0.02, 0.041, 0.9]]


@pytest.fixture
def lens_workflow(db):
    project = lens_search_simulate(plan=SkyPlan(project="lens-test", n_lens_cutouts=20, lens_prevalence=0.2, seed=3))
    workflow = Workflow.objects.get(project=project, slug=LENS_WORKFLOW)
    workflow.rare_prior = 0.01
    workflow.gold_share_start = 0.0
    workflow.save()
    return workflow


@pytest.fixture
def subject_ids(lens_workflow):
    states = lens_workflow.states.filter(gold_answers__isnull=True).order_by("subject_id")
    return list(states.values_list("subject_id", flat=True))


def skilled(workflow, *keys):
    for key in keys:
        VolunteerSkill.objects.create(workflow=workflow, volunteer_key=key, task="L0", counts=SKILLED)
    return keys


def vote(workflow, subject_id, key, path):
    classification_submit(workflow=workflow, subject_id=subject_id, volunteer_key=key, annotation=path,
                          client_uuid=uuid.uuid4())
    return SubjectState.objects.get(workflow=workflow, subject_id=subject_id)


def model_says(workflow, subject_id, p_lens):
    version = ModelVersion.objects.create(workflow=workflow, number=1, kind="question_head", status="active",
                                          agent_confusion=MODEL_CONFUSION)
    Prediction.objects.create(model_version=version, subject_id=subject_id, probabilities={"L0": [p_lens, 1 - p_lens]},
                              entropy=0.1, bald=0.01, score=0.1, in_training=False)


# --- the simulated search ---------------------------------------------------------------------------


def test_the_lens_search_has_training_lenses_as_gold_and_keeps_truth_for_benchmarks(lens_workflow):
    states = list(lens_workflow.states.select_related("subject"))
    assert len(states) == 21  # 20 survey cutouts + 1 training lens (2%, at least one)
    training = [s for s in states if s.subject.truth["role"] == "training"]
    assert training and all(s.gold_answers == {"L0": 0} and s.subject.truth["is_lens"] for s in training)
    assert all(s.subject.truth["arc_snr"] >= 20 for s in training)  # training lenses are visible ones
    assert all(s.gold_answers in (None, {"L0": 1}) for s in states if s.subject.truth["role"] == "survey"
               and not s.subject.truth["is_lens"])
    assert not any(word in s.subject.external_id for s in states for word in ("train", "survey"))
    lens = next(s.subject for s in states if s.subject.truth["is_lens"])
    assert 0.5 <= lens.truth["theta_e"] <= 2.0 and lens.truth["arc_snr"] > 0 and lens.truth["source_mag"] > 15
    assert lens_workflow.rare_answer == 0 and lens_workflow.interest_weight > 0


def test_volunteers_never_see_the_truth(lens_workflow, client):
    response = client.get(f"/api/workflows/{lens_workflow.id}/next/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "theta_e" not in body and "is_lens" not in body and "arc_snr" not in body and "training" not in body


def test_a_workflow_refuses_a_rare_answer_the_first_question_does_not_have(lens_workflow):
    lens_workflow.rare_answer = 2
    with pytest.raises(ValidationError):
        lens_workflow.full_clean()
    lens_workflow.rare_answer, lens_workflow.reject_posterior = 0, 0.5  # above the prior
    with pytest.raises(ValidationError):
        lens_workflow.full_clean()


# --- retirement at both ends -------------------------------------------------------------------------


def test_skilled_yes_votes_retire_a_subject_as_detected(lens_workflow, subject_ids):
    sid = subject_ids[0]
    a, b, c = skilled(lens_workflow, "a", "b", "c")
    assert vote(lens_workflow, sid, a, YES).status == "active"
    assert vote(lens_workflow, sid, b, YES).status == "active"  # P(lens) ~ 0.88 from a 1% prior
    state = vote(lens_workflow, sid, c, YES)
    assert (state.status, state.retirement_reason, state.needs_review) == ("retired", "detected", False)


def test_skilled_no_votes_retire_a_subject_as_rejected(lens_workflow, subject_ids):
    sid = subject_ids[0]
    a, b = skilled(lens_workflow, "a", "b")
    assert vote(lens_workflow, sid, a, NO).status == "active"  # one vote is below retire_min
    state = vote(lens_workflow, sid, b, NO)
    assert (state.status, state.retirement_reason) == ("retired", "rejected")
    assert rare_probabilities(workflow=lens_workflow, subject_id=sid)[0] <= lens_workflow.reject_posterior


def test_untrained_volunteers_need_many_votes_to_detect(lens_workflow, subject_ids):
    sid = subject_ids[0]
    for i in range(5):
        state = vote(lens_workflow, sid, f"new:{i}", YES)
    assert state.status == "active"  # five newcomers at 2:1 odds each do not overcome a 1% prior


def test_an_undecided_candidate_goes_to_an_expert_at_the_vote_cap(lens_workflow, subject_ids):
    lens_workflow.retire_after = 4
    lens_workflow.save()
    sid = subject_ids[0]
    for i, path in enumerate([YES, YES, NO, YES]):
        state = vote(lens_workflow, sid, f"new:{i}", path)
    assert (state.status, state.retirement_reason, state.needs_review) == ("retired", "expert_review", True)


# --- the model adds eyes, it never retires a candidate ------------------------------------------------


def test_a_confident_model_cannot_reject_a_subject_the_crowd_left_open(lens_workflow, subject_ids):
    sid = subject_ids[0]
    model_says(lens_workflow, sid, p_lens=0.01)
    a, b = skilled(lens_workflow, "a", "b")
    vote(lens_workflow, sid, a, YES)
    state = vote(lens_workflow, sid, b, NO)
    p_crowd, p_with_model = rare_probabilities(workflow=lens_workflow, subject_id=sid)
    assert p_with_model <= lens_workflow.reject_posterior < p_crowd  # with the model it would be rejected
    assert state.status == "active"


def test_a_model_that_finds_a_lens_holds_a_rejection_back_for_more_eyes(lens_workflow, subject_ids):
    sid = subject_ids[0]
    model_says(lens_workflow, sid, p_lens=0.99)
    keys = skilled(lens_workflow, "a", "b", "c", "d")
    states = [vote(lens_workflow, sid, key, NO) for key in keys]
    assert [s.status for s in states[:3]] == ["active"] * 3  # two "no" would have rejected it without the model
    assert (states[3].status, states[3].retirement_reason) == ("retired", "rejected")


def test_a_model_that_finds_a_lens_cannot_detect_it_without_the_volunteers(lens_workflow, subject_ids):
    sid = subject_ids[0]
    model_says(lens_workflow, sid, p_lens=0.99)
    a, b, c = skilled(lens_workflow, "a", "b", "c")
    vote(lens_workflow, sid, a, YES)
    state = vote(lens_workflow, sid, b, YES)
    assert rare_probabilities(workflow=lens_workflow, subject_id=sid)[1] >= 0.95 and state.status == "active"
    assert vote(lens_workflow, sid, c, YES).retirement_reason == "detected"


@pytest.mark.parametrize(
    ("p_crowd", "p_model", "n", "expected"),
    [
        (0.97, 0.97, 3, "detected"),
        (0.97, 0.97, 1, ""),  # fewer than min_votes
        (0.5, 0.999, 5, ""),  # the model alone cannot detect
        (1e-4, 1e-4, 2, "rejected"),
        (1e-4, 0.2, 2, ""),  # the model holds it back
        (0.02, 1e-5, 2, ""),  # nor can it reject
        (0.02, 0.02, 20, "expert_review"),
        (0.005, 0.005, 20, "classification_count"),
    ],
)
def test_swap_decision(p_crowd, p_model, n, expected):
    assert swap_decision(p_crowd=p_crowd, p_with_model=p_model, n_votes=n, detect=0.95, reject=1e-3, min_votes=2,
                         max_votes=20, prior=0.01) == expected


# --- the candidate list ----------------------------------------------------------------------------


def person(name):
    return get_user_model().objects.create_user(name, password="pw")


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_candidates_page_is_for_the_projects_scientists_only(lens_workflow):
    url = reverse("science-candidates", args=[lens_workflow.id])
    assert Client().get(url).status_code == 302  # to the login page
    assert signed_in(person("vol")).get(url).status_code == 403
    other = Project.objects.create(slug="elsewhere", name="Elsewhere")
    outsider = person("outsider")
    ProjectMembership.objects.create(project=other, user=outsider)
    assert signed_in(outsider).get(url).status_code == 403
    sci = person("sci")
    ProjectMembership.objects.create(project=lens_workflow.project, user=sci)
    assert signed_in(sci).get(url).status_code == 200
    sid = lens_workflow.states.values_list("subject_id", flat=True).first()
    grade_url = reverse("science-candidate-grade", args=[lens_workflow.id, sid])
    assert signed_in(outsider).post(grade_url, {"grade": "A"}).status_code == 403
    assert not ExpertLabel.objects.exists()


def test_candidates_are_ranked_by_lens_probability_and_graded_by_scientists(lens_workflow, subject_ids):
    sci = person("sci")
    ProjectMembership.objects.create(project=lens_workflow.project, user=sci)
    likely, maybe, unlikely = subject_ids[:3]
    a, b, c = skilled(lens_workflow, "a", "b", "c")
    vote(lens_workflow, likely, a, YES)
    vote(lens_workflow, likely, b, YES)  # P ~ 0.88
    vote(lens_workflow, maybe, c, YES)  # P ~ 0.2
    vote(lens_workflow, unlikely, a, NO)  # P below the prior: not a candidate
    client = signed_in(sci)
    page = client.get(reverse("science-candidates", args=[lens_workflow.id])).content.decode()
    names = {sid: SubjectState.objects.get(workflow=lens_workflow, subject_id=sid).subject.external_id
             for sid in (likely, maybe, unlikely)}
    assert names[likely] in page and names[maybe] in page and names[unlikely] not in page
    assert page.index(names[likely]) < page.index(names[maybe])

    grade_url = reverse("science-candidate-grade", args=[lens_workflow.id, likely])
    assert client.post(grade_url, {"grade": "A"}).status_code == 302
    label = ExpertLabel.objects.get(workflow=lens_workflow, subject_id=likely)
    assert (label.grade, label.annotation, label.user) == ("A", YES, sci)
    state = SubjectState.objects.get(workflow=lens_workflow, subject_id=likely)
    assert (state.status, state.retirement_reason) == ("retired", "expert")
    assert "grade A" in client.get(reverse("science-candidates", args=[lens_workflow.id])).content.decode()

    client.post(reverse("science-candidate-grade", args=[lens_workflow.id, maybe]), {"grade": "no"})
    assert ExpertLabel.objects.get(workflow=lens_workflow, subject_id=maybe).annotation == NO
    page = client.get(reverse("science-candidates", args=[lens_workflow.id])).content.decode()
    assert names[maybe] not in page  # rejected by an expert: its posterior is pinned to "no lens"


def test_a_bad_grade_is_refused_and_nothing_is_stored(lens_workflow, subject_ids):
    sci = person("sci")
    ProjectMembership.objects.create(project=lens_workflow.project, user=sci)
    response = signed_in(sci).post(reverse("science-candidate-grade", args=[lens_workflow.id, subject_ids[0]]),
                                   {"grade": "Z"}, follow=True)
    assert "was not graded" in response.content.decode()
    assert not ExpertLabel.objects.filter(workflow=lens_workflow).exists()


def test_an_ordinary_workflow_has_no_candidate_list(image_workflow):
    admin = get_user_model().objects.create_user("admin", password="pw", is_staff=True)
    response = signed_in(admin).get(reverse("science-candidates", args=[image_workflow.id]))
    assert response.status_code == 404


# --- the queue: likely lenses get more eyes ----------------------------------------------------------


def test_the_worker_boosts_the_priority_of_likely_lenses(lens_workflow):
    from pathlib import Path

    import numpy as np
    import torch
    from django.conf import settings

    from labeler.learning import datasets, services
    from mlcore import checkpoints, tasktree
    from mlcore.models.image import QuestionHead

    layout = tasktree.label_layout(lens_workflow.task_tree)
    backbone = datasets.image_backbone()
    torch.manual_seed(0)
    model = QuestionHead(backbone.embed(np.zeros((1, 3, 64, 64), np.float32)).shape[1], layout)
    directory = Path(settings.MODEL_ROOT) / f"workflow-{lens_workflow.id}" / "v1"
    meta = checkpoints.save_checkpoint(directory, model, kind="question_head", model_config=model.model_config(),
                                       layout=layout, metrics={})
    scores = {}
    for number, weight in ((1, 0.0), (2, 20.0)):
        lens_workflow.interest_weight = weight
        lens_workflow.save()
        version = ModelVersion.objects.create(workflow=lens_workflow, number=number, kind="question_head",
                                              status="evaluating", checkpoint_dir=str(directory),
                                              sha256=meta["sha256"], backbone=backbone.name, metrics={})
        services.model_version_score_pool(model_version=version, publish=False)
        scores[weight] = {p.subject_id: p for p in Prediction.objects.filter(model_version=version)}
    assert scores[0.0].keys() == scores[20.0].keys() and scores[0.0]
    for sid in scores[0.0]:
        plain, boosted = scores[0.0][sid], scores[20.0][sid]
        assert plain.score == pytest.approx(plain.bald, rel=1e-6)  # BALD alone
        p_lens = boosted.probabilities["L0"][0]
        assert boosted.score == pytest.approx(boosted.bald * (1 + 20.0 * p_lens), rel=1e-3, abs=1e-7)


def test_training_lenses_teach_the_volunteers_2x2_skill_and_give_feedback(lens_workflow):
    state = lens_workflow.states.filter(gold_answers={"L0": 0}).first()
    result = classification_submit(workflow=lens_workflow, subject_id=state.subject_id, volunteer_key="v",
                                   annotation=NO, client_uuid=uuid.uuid4())
    assert result.feedback["correct"] is False and result.feedback["expected"][0]["answer"] == "Yes, a lens"
    skill = VolunteerSkill.objects.get(workflow=lens_workflow, volunteer_key="v", task="L0")
    assert skill.counts == [[0.0, 1.0], [0.0, 0.0]] and skill.n_gold == 1  # a missed lens: row "lens", column "no"


def test_simulated_volunteers_search_the_lens_workflow(lens_workflow):
    from labeler.classifications.models import Classification
    from labeler.classifications.simulation import volunteers_simulate

    report = volunteers_simulate(workflow=lens_workflow, n_volunteers=8, n_classifications=30, seed=1)
    assert report.submitted == 30
    answers = {c.annotation[0]["answer"] for c in Classification.objects.filter(workflow=lens_workflow)}
    assert answers <= {0, 1} and len(answers) == 2
