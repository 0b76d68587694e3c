import uuid

import pytest
from django.urls import reverse

from labeler.classifications.models import Classification


@pytest.fixture
def api(client):
    return client


def next_subject(api, workflow):
    response = api.get(reverse("api-next", args=[workflow.id]))
    assert response.status_code == 200
    return response.json()["subject"]


def post_classification(api, workflow, subject_id, annotation, client_uuid=None):
    return api.post(
        reverse("api-classifications"),
        {
            "workflow": workflow.id,
            "subject": subject_id,
            "client_uuid": str(client_uuid or uuid.uuid4()),
            "annotation": annotation,
            "duration_ms": 1200,
        },
        content_type="application/json",
    )


def test_it_serves_a_subject_without_its_truth(api, image_workflow):
    subject = next_subject(api, image_workflow)
    assert subject["kind"] == "image"
    assert "truth" not in subject
    assert subject["preview_url"].endswith(".png")


def test_submit_answers_with_the_next_subject_for_the_same_anonymous_volunteer(api, spectrum_workflow):
    first = next_subject(api, spectrum_workflow)
    response = post_classification(api, spectrum_workflow, first["id"], [{"task": "T0", "answer": 1}])
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["classification"]["created"] is True
    assert body["next"]["id"] != first["id"]
    saved = Classification.objects.get()
    assert saved.volunteer_key.startswith("a:") and saved.duration_ms == 1200


def test_a_retried_post_is_stored_once_and_answered_200(api, spectrum_workflow):
    subject = next_subject(api, spectrum_workflow)
    same = uuid.uuid4()
    yes = [{"task": "T0", "answer": 0}]
    assert post_classification(api, spectrum_workflow, subject["id"], yes, same).status_code == 201
    assert post_classification(api, spectrum_workflow, subject["id"], yes, same).status_code == 200
    assert Classification.objects.count() == 1


@pytest.mark.parametrize(
    "payload",
    [
        "not json at all",
        '{"workflow": "x"}',
        '{"workflow": 1, "subject": 1, "client_uuid": "nope", "annotation": []}',
        '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]',
    ],
)
def test_it_answers_hostile_json_with_a_clear_400(api, image_workflow, payload):
    response = api.post(reverse("api-classifications"), payload, content_type="application/json")
    assert response.status_code == 400
    assert "message" in response.json()["error"]
    assert not Classification.objects.exists()


def test_a_bad_annotation_names_the_problem(api, image_workflow):
    subject = next_subject(api, image_workflow)
    response = post_classification(api, image_workflow, subject["id"], [{"task": "T0", "answer": 0}])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_annotation" and "unanswered" in error["message"]


def test_an_unknown_workflow_is_404(api, small_sky):
    assert api.get(reverse("api-next", args=[999999])).status_code == 404


def test_the_openapi_schema_and_docs_are_served(api, db):
    schema = api.get(reverse("api-schema"), HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "/api/classifications/" in schema.json()["paths"]
    docs = api.get(reverse("api-docs"))
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_a_gold_subject_answers_with_feedback_and_others_without(api, spectrum_workflow):
    from labeler.workflows.models import SubjectState

    gold, plain = SubjectState.objects.filter(workflow=spectrum_workflow).order_by("id")[:2]
    gold.gold_answers = {"T0": 0}
    gold.save()
    plain.gold_answers = None
    plain.save()
    wrong = post_classification(api, spectrum_workflow, gold.subject_id, [{"task": "T0", "answer": 1}]).json()
    assert wrong["feedback"]["correct"] is False
    assert wrong["feedback"]["expected"][0]["answer"].lower().startswith("yes")
    right = post_classification(api, spectrum_workflow, plain.subject_id, [{"task": "T0", "answer": 1}]).json()
    assert right["feedback"] is None
