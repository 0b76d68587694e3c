"""The expert review queue, expert labels and who may use them (issue #7, items 2 and 5)."""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from labeler.classifications.models import Consensus, VolunteerSkill
from labeler.classifications.services import ClassificationError, classification_submit
from labeler.learning.models import ModelVersion, Prediction
from labeler.review.models import ExpertLabel
from labeler.review.selectors import expert_answers, expert_training_counts, review_queue, review_queue_count
from labeler.review.services import expert_label_create
from labeler.subjects.models import Project, ProjectMembership
from labeler.workflows.models import SubjectState
from tests.labeler.test_selector_queue import redis_queue  # noqa: F401  (a real Redis, or skipped)

SMOOTH_ROUND = [{"task": "T0", "answer": 0}, {"task": "T1", "answer": 0}, {"task": "T4", "answer": 1}]
STAR = [{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}]
FEATURES = [{"task": "T0", "answer": 1}, {"task": "T2", "answer": 0}, {"task": "T4", "answer": 1}]


@pytest.fixture
def workflow(image_workflow):
    image_workflow.retire_after = 10  # nothing retires by count in these tests
    image_workflow.retire_posterior = 1.0
    image_workflow.gold_share_start = 0.0
    image_workflow.save()
    SubjectState.objects.filter(workflow=image_workflow).update(gold_answers=None)
    return image_workflow


@pytest.fixture
def subjects(workflow):
    return list(workflow.states.order_by("subject_id").values_list("subject_id", flat=True))


def vote(workflow, subject_id, paths, flagged=False, prefix="a"):
    for i, path in enumerate(paths):
        classification_submit(workflow=workflow, subject_id=subject_id, volunteer_key=f"{prefix}:{i}",
                              annotation=path, client_uuid=uuid.uuid4(), flagged=flagged)  # fmt: skip


def user(name, **fields):
    return get_user_model().objects.create_user(name, password="pw", **fields)


def scientist_of(project, name="sci"):
    person = user(name)
    ProjectMembership.objects.create(project=project, user=person)
    return person


def active_model(workflow, root_probs_by_subject):
    version = ModelVersion.objects.create(workflow=workflow, number=1, kind="question_head", status="active")
    for subject_id, root in root_probs_by_subject.items():
        Prediction.objects.create(model_version=version, subject_id=subject_id, probabilities={"T0": root},
                                  entropy=0.3, bald=0.05, score=0.1)  # fmt: skip
    return version


# --- the service ------------------------------------------------------------------------


def test_an_expert_label_becomes_gold_retires_the_subject_and_pins_consensus(workflow, subjects):
    sid = subjects[0]
    vote(workflow, sid, [SMOOTH_ROUND, SMOOTH_ROUND, STAR])
    SubjectState.objects.filter(workflow=workflow, subject_id=sid).update(needs_review=True)
    label = expert_label_create(workflow=workflow, subject=sid, user=user("ann"), annotation=STAR, grade="A",
                                note="a saturated star")  # fmt: skip
    state = SubjectState.objects.get(workflow=workflow, subject_id=sid)
    assert (state.status, state.retirement_reason, state.needs_review) == ("retired", "expert", False)
    assert state.retired_at is not None and state.gold_answers == {"T0": 2, "T3": 0}
    consensus = Consensus.objects.get(workflow=workflow, subject_id=sid)
    assert consensus.posterior["T0"] == [0.0, 0.0, 1.0] and consensus.posterior["T3"] == [1.0, 0.0]
    assert consensus.counts["T0"] == [2, 0, 1], "the crowd's votes stay as they were"
    assert (label.grade, label.note, label.annotation) == ("A", "a saturated star", STAR)


def test_the_experts_answer_stays_pinned_when_volunteers_edit_or_withdraw_later(workflow, subjects):
    from labeler.classifications.editing import classification_edit, classification_withdraw
    from labeler.classifications.models import Classification

    sid = subjects[0]
    vote(workflow, sid, [SMOOTH_ROUND, SMOOTH_ROUND, SMOOTH_ROUND])
    expert_label_create(workflow=workflow, subject=sid, user=user("ann"), annotation=STAR)
    first, second, _ = Classification.objects.filter(workflow=workflow, subject_id=sid).order_by("id")
    classification_edit(volunteer_key=first.volunteer_key, client_uuid=first.client_uuid, annotation=SMOOTH_ROUND)
    classification_withdraw(volunteer_key=second.volunteer_key, client_uuid=second.client_uuid)
    consensus = Consensus.objects.get(workflow=workflow, subject_id=sid)
    assert consensus.posterior["T0"] == [0.0, 0.0, 1.0] and consensus.posterior["T3"] == [1.0, 0.0]
    assert consensus.counts["T0"] == [2, 0, 0] and consensus.n_classifications == 2, "the crowd's votes as they are"


def test_an_expert_label_teaches_the_volunteers_who_classified_the_subject(workflow, subjects):
    sid = subjects[0]
    vote(workflow, sid, [SMOOTH_ROUND, STAR])
    expert_label_create(workflow=workflow, subject=sid, user=user("ann"), annotation=STAR)
    wrong = VolunteerSkill.objects.get(workflow=workflow, volunteer_key="a:0", task="T0")
    right = VolunteerSkill.objects.get(workflow=workflow, volunteer_key="a:1", task="T0")
    assert wrong.counts[2][0] == 1 and wrong.n_gold == 1  # truth "star", answered "smooth"
    assert right.counts[2][2] == 1 and right.n_gold == 1
    expert_label_create(workflow=workflow, subject=sid, user=user("bo"), annotation=STAR)  # a second opinion
    assert VolunteerSkill.objects.get(pk=right.pk).counts[2][2] == 1, "the same evidence is not counted twice"


def test_the_one_click_root_answer_is_a_path_that_stops_early(workflow, subjects):
    sid = subjects[0]
    vote(workflow, sid, [SMOOTH_ROUND, SMOOTH_ROUND])
    expert_label_create(workflow=workflow, subject=sid, user=user("ann"), annotation=[{"task": "T0", "answer": 1}])
    assert SubjectState.objects.get(workflow=workflow, subject_id=sid).gold_answers == {"T0": 1}
    posterior = Consensus.objects.get(workflow=workflow, subject_id=sid).posterior
    assert posterior["T0"] == [0.0, 1.0, 0.0] and "T1" in posterior, "deeper questions keep the crowd's posterior"


@pytest.mark.parametrize(
    ("annotation", "fields", "code"),
    [
        ([{"task": "T1", "answer": 0}], {}, "bad_annotation"),  # does not start at the first question
        ([{"task": "T0", "answer": 7}], {}, "bad_annotation"),
        ([*STAR, {"task": "T4", "answer": 0}], {}, "bad_annotation"),  # past the end of the tree
        ([], {}, "bad_annotation"),
        ("T0=2", {}, "bad_annotation"),
        (STAR, {"grade": "Z"}, "bad_grade"),
        (STAR, {"note": "x" * 5000}, "bad_note"),
        (STAR, {"marks": [{"tool": 0, "x": 1, "y": 1, "width": 2, "height": 2}]}, "bad_marks"),  # no drawing tools
    ],
)
def test_bad_expert_labels_are_refused_and_nothing_is_written(workflow, subjects, annotation, fields, code):
    sid = subjects[0]
    vote(workflow, sid, [SMOOTH_ROUND])
    with pytest.raises(ClassificationError) as refused:
        expert_label_create(workflow=workflow, subject=sid, user=user("ann"), annotation=annotation, **fields)
    assert refused.value.code == code
    state = SubjectState.objects.get(workflow=workflow, subject_id=sid)
    assert not ExpertLabel.objects.exists() and state.status == "active" and state.gold_answers is None


def test_a_subject_of_another_workflow_is_refused(workflow, spectrum_workflow):
    other = spectrum_workflow.states.first().subject_id
    with pytest.raises(ClassificationError) as refused:
        expert_label_create(workflow=workflow, subject=other, user=user("ann"), annotation=STAR)
    assert refused.value.code == "unknown_subject" and not ExpertLabel.objects.exists()


@pytest.mark.usefixtures("redis_queue")
def test_an_expert_label_drops_the_subject_from_the_redis_queue(workflow, subjects, django_capture_on_commit_callbacks):
    import redis
    from django.conf import settings

    from labeler.classifications import queue
    from labeler.classifications.selectors import subject_next_for

    client = redis.Redis.from_url(settings.SKYLOOP_QUEUE_URL)

    assert subject_next_for(workflow=workflow, volunteer_key="a:someone") is not None  # builds the queue
    key = queue._Keys(workflow.id).queue
    assert client.zscore(key, subjects[0]) is not None
    with django_capture_on_commit_callbacks(execute=True):
        expert_label_create(workflow=workflow, subject=subjects[0], user=user("ann"), annotation=STAR)
    assert client.zscore(key, subjects[0]) is None
    assert client.zscore(key, subjects[1]) is not None


# --- training labels ------------------------------------------------------------------------


def test_expert_answers_give_the_latest_path_and_strong_one_hot_training_counts(workflow, subjects):
    a, b = subjects[:2]
    vote(workflow, a, [SMOOTH_ROUND] * 3)
    expert_label_create(workflow=workflow, subject=a, user=user("ann"), annotation=SMOOTH_ROUND)
    expert_label_create(workflow=workflow, subject=a, user=user("bo"), annotation=STAR)  # the latest counts
    expert_label_create(workflow=workflow, subject=b, user=user("cy"), annotation=[{"task": "T0", "answer": 0}])
    assert expert_answers(workflow=workflow) == {a: STAR, b: [{"task": "T0", "answer": 0}]}
    crowd = {b: {"T0": [2, 1, 0], "T1": [1, 1, 0], "T2": [1, 0], "T3": [0, 0], "T4": [2, 0]}}
    counts = expert_training_counts(workflow=workflow, crowd_counts=crowd)
    assert counts[a]["T0"] == [0.0, 0.0, 10.0] and counts[a]["T3"] == [10.0, 0.0]  # retire_after votes' worth
    assert counts[a]["T1"] == [0.0, 0.0, 0.0], "questions off the expert's path get no votes"
    assert counts[b]["T0"] == [10.0, 0.0, 0.0]
    assert counts[b]["T1"] == [1.0, 1.0, 0.0] and counts[b]["T4"] == [2.0, 0.0], "below the expert's stop: crowd"
    assert counts[b]["T2"] == [0.0, 0.0], "another branch than the expert's"
    from_consensus = expert_training_counts(workflow=workflow)  # the crowd's counts read from Consensus
    assert from_consensus[a]["T0"] == [0.0, 0.0, 10.0] and from_consensus[b]["T1"] == [0.0, 0.0, 0.0]


# --- the queue --------------------------------------------------------------------------


def test_the_review_queue_ranks_review_first_then_model_crowd_disagreement_then_split_votes(workflow, subjects):
    flagged, disputed, split, agreed, labelled = subjects[:5]
    for sid in (flagged, disputed, agreed, labelled):
        vote(workflow, sid, [SMOOTH_ROUND] * 3)
    vote(workflow, split, [SMOOTH_ROUND, STAR, FEATURES])
    SubjectState.objects.filter(workflow=workflow, subject_id=flagged).update(needs_review=True)
    active_model(workflow, {disputed: [0.02, 0.03, 0.95], agreed: [0.95, 0.03, 0.02], split: [0.4, 0.3, 0.3]})
    expert_label_create(workflow=workflow, subject=labelled, user=user("ann"), annotation=SMOOTH_ROUND)
    queue = review_queue(workflow=workflow, limit=10)
    assert [item.subject.id for item in queue] == [flagged, disputed, split, agreed]
    assert review_queue_count(workflow=workflow) == 4, "no subject without votes, none already labelled"
    top = queue[1]
    assert top.model == [0.02, 0.03, 0.95] and top.entropy == 0.3 and top.fractions == [1.0, 0.0, 0.0]
    tv = 0.5 * sum(abs(m - p) for m, p in zip(top.model, top.posterior, strict=True))
    assert top.model_crowd == pytest.approx(tv)
    assert queue[3].score < queue[2].score
    assert [i.subject.id for i in review_queue(workflow=workflow, limit=2, offset=1)] == [disputed, split]


def test_without_a_model_the_queue_ranks_by_split_votes_and_flags(workflow, subjects):
    calm, split, flags = subjects[:3]
    vote(workflow, calm, [SMOOTH_ROUND] * 2)
    vote(workflow, split, [SMOOTH_ROUND, STAR])
    vote(workflow, flags, [SMOOTH_ROUND], flagged=True)
    vote(workflow, flags, [SMOOTH_ROUND], prefix="b")
    assert [item.subject.id for item in review_queue(workflow=workflow, limit=10)] == [split, flags, calm]


# --- who may ----------------------------------------------------------------------------


@pytest.fixture
def voted(workflow, subjects):
    vote(workflow, subjects[0], [SMOOTH_ROUND, STAR])
    return subjects[0]


def urls(workflow, sid):
    return {
        "review": f"/science/workflows/{workflow.id}/review/",
        "subject": f"/science/workflows/{workflow.id}/subjects/{sid}/",
    }


def api_post(client, workflow, sid, body):
    return client.post(f"/api/workflows/{workflow.id}/subjects/{sid}/expert-label/", body,
                       content_type="application/json")  # fmt: skip


def test_anonymous_visitors_are_sent_to_log_in_and_refused_by_the_api(workflow, voted):
    client = Client()
    for url in urls(workflow, voted).values():
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    response = api_post(client, workflow, voted, {"annotation": STAR})
    assert response.status_code in (401, 403) and "error" in response.json()
    assert not ExpertLabel.objects.exists()


@pytest.mark.parametrize("who", ["volunteer", "other_scientist"])
def test_volunteers_and_scientists_of_other_projects_get_403(workflow, voted, who):
    client = Client()
    if who == "volunteer":
        client.force_login(user("vol"))
    else:
        client.force_login(scientist_of(Project.objects.create(slug="elsewhere", name="Elsewhere")))
    for url in urls(workflow, voted).values():
        assert client.get(url).status_code == 403
    response = api_post(client, workflow, voted, {"annotation": STAR})
    assert response.status_code == 403 and response.json()["error"]["code"]
    assert client.post(f"/science/workflows/{workflow.id}/subjects/{voted}/label/", {"answer": "2"}).status_code == 403
    assert not ExpertLabel.objects.exists()


@pytest.mark.parametrize("who", ["scientist", "admin"])
def test_the_projects_scientists_and_admins_review_and_label(workflow, voted, who):
    person = scientist_of(workflow.project) if who == "scientist" else user("boss", is_staff=True)
    client = Client()
    client.force_login(person)
    pages = {name: client.get(url) for name, url in urls(workflow, voted).items()}
    assert all(page.status_code == 200 for page in pages.values())
    assert f'data-subject="{voted}"' in pages["review"].content.decode()
    detail = pages["subject"].content.decode()
    assert "a:0" in detail and "a:1" in detail and "kappa" in detail
    response = api_post(client, workflow, voted, {"annotation": STAR, "grade": "B", "note": "clear diffraction spikes"})
    assert response.status_code == 201, response.json()
    assert response.json()["posterior"]["T0"] == [0.0, 0.0, 1.0] and response.json()["user"] == person.username
    label = ExpertLabel.objects.get()
    assert (label.user, label.grade, label.subject_id) == (person, "B", voted)
    assert f'data-subject="{voted}"' not in client.get(urls(workflow, voted)["review"]).content.decode()


def test_the_api_refuses_a_bad_label_in_the_uniform_error_shape(workflow, voted):
    client = Client()
    client.force_login(scientist_of(workflow.project))
    response = api_post(client, workflow, voted, {"annotation": [{"task": "T9", "answer": 0}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_annotation"
    response = api_post(client, workflow, voted, {"annotation": STAR, "grade": "Q"})
    assert response.status_code == 400 and "error" in response.json()
    assert api_post(client, workflow, 10**6, {"annotation": STAR}).status_code == 404
    assert not ExpertLabel.objects.exists()


def test_the_form_post_labels_a_deeper_path_and_returns_to_the_page(workflow, voted):
    client = Client()
    client.force_login(scientist_of(workflow.project))
    back = urls(workflow, voted)["subject"]
    response = client.post(f"/science/workflows/{workflow.id}/subjects/{voted}/label/",
                           {"answer": ["0", "0", "1"], "grade": "C", "next": back})  # fmt: skip
    assert response.status_code == 302 and response["Location"] == back
    label = ExpertLabel.objects.get()
    assert label.annotation == SMOOTH_ROUND and label.grade == "C"
    page = client.get(back).content.decode()
    assert "labelled" in page and "Smooth" in page


def test_the_periodic_skill_reestimate_keeps_the_experts_answer(workflow, subjects):
    from labeler.classifications.skill import skills_reestimate

    sid = subjects[0]
    vote(workflow, sid, [SMOOTH_ROUND, SMOOTH_ROUND, STAR])
    vote(workflow, subjects[1], [SMOOTH_ROUND, SMOOTH_ROUND, SMOOTH_ROUND])
    expert_label_create(workflow=workflow, subject=sid, user=user("ann"), annotation=STAR)
    skills_reestimate(workflow=workflow)
    assert Consensus.objects.get(workflow=workflow, subject_id=sid).posterior["T0"] == pytest.approx([0, 0, 1])
    assert VolunteerSkill.objects.get(workflow=workflow, volunteer_key="a:2", task="T0").counts[2][2] > 0


def test_the_subject_page_is_404_for_a_subject_outside_the_workflow(workflow, spectrum_workflow):
    client = Client()
    client.force_login(scientist_of(workflow.project))
    other = spectrum_workflow.states.first().subject_id
    assert client.get(f"/science/workflows/{workflow.id}/subjects/{other}/").status_code == 404
    assert client.get(f"/science/workflows/{10**6}/review/").status_code == 404


def test_the_subject_page_shows_every_model_version_and_their_spread(workflow, voted):
    old = ModelVersion.objects.create(workflow=workflow, number=1, kind="question_head", status="retired")
    new = ModelVersion.objects.create(workflow=workflow, number=2, kind="question_head", status="active")
    for version, root in ((old, [0.6, 0.2, 0.2]), (new, [0.2, 0.2, 0.6])):
        Prediction.objects.create(model_version=version, subject_id=voted, probabilities={"T0": root},
                                  entropy=0.9, bald=0.123, score=0.1)  # fmt: skip
    client = Client()
    client.force_login(scientist_of(workflow.project))
    page = client.get(f"/science/workflows/{workflow.id}/subjects/{voted}/")
    assert page.context["predictions"]["spread"] == [0.2, 0.0, 0.2]
    assert [r["prediction"].model_version.number for r in page.context["predictions"]["rows"]] == [2, 1]
    # New volunteers (Dirichlet prior 2 on the diagonal, 1 elsewhere): "smooth", then "star" (Bayes by hand).
    assert page.context["history"] == [pytest.approx([0.5, 0.25, 0.25]), pytest.approx([0.4, 0.2, 0.4])]
    assert "0.1230" in page.content.decode()


def test_the_review_pages_work_for_spectra(spectrum_workflow):
    sid = spectrum_workflow.states.order_by("subject_id").first().subject_id
    root = spectrum_workflow.task_tree["first"]
    path = [{"task": root, "answer": 0}]
    tasks = spectrum_workflow.task_tree["tasks"]
    while (following := tasks[path[-1]["task"]]["answers"][0].get("next")) is not None:
        path.append({"task": following, "answer": 0})
    vote(spectrum_workflow, sid, [path, path])
    client = Client()
    client.force_login(user("boss", is_staff=True))
    assert f'data-subject="{sid}"' in client.get(f"/science/workflows/{spectrum_workflow.id}/review/").content.decode()
    assert client.get(f"/science/workflows/{spectrum_workflow.id}/subjects/{sid}/").status_code == 200


def test_expert_labels_count_as_training_labels_even_with_few_votes(workflow, subjects):
    from labeler.learning.datasets import labelled_counts
    from labeler.learning.triggers import labelled_count
    from mlcore import tasktree

    workflow.label_min_votes = 3
    workflow.save()
    vote(workflow, subjects[0], [SMOOTH_ROUND] * 3)  # labelled by the crowd
    vote(workflow, subjects[1], [SMOOTH_ROUND])  # one vote only: not a label yet
    assert labelled_count(workflow) == 1
    expert_label_create(workflow=workflow, subject=subjects[1], user=user("ann"), annotation=STAR)
    assert labelled_count(workflow) == 2
    layout = tasktree.label_layout(workflow.task_tree)
    ids, counts = labelled_counts(workflow, layout)
    assert ids == [subjects[0], subjects[1]]
    root = counts[1][: dict(layout)["T0"]]
    assert root.argmax() == 2 and root[2] > 0 and root[0] == 0, "the expert's star replaces the crowd's vote"
