"""Volunteers never see truth, gold answers, consensus or model predictions for a subject.

Two subjects are seeded with distinctive values in every hidden place (truth, gold answers,
consensus fractions and posterior, predictions, priorities); every response a volunteer can
get is searched for those values and for keys that would carry them. After classifying a
gold subject, the answer's feedback (right or not, and the expected answer) is by design.
"""

from __future__ import annotations

import json
import uuid

import pytest
from django.urls import reverse

from labeler.classifications.models import Consensus
from labeler.learning.models import ModelVersion, Prediction
from labeler.subjects.models import Subject
from labeler.workflows.models import SubjectState

TRUTH_MARK = "truth-marker-7f3a9c"
# Numbers that occur nowhere else: consensus fraction, posterior, agreement, probability, BALD, priority.
SECRET_NUMBERS = ("0.4242424", "0.8765431", "0.6180339", "0.3141592", "0.2718281", "0.5772156")
HIDDEN_KEYS = {
    "truth", "gold", "gold_answers", "is_gold", "consensus", "fractions", "posterior", "agreement", "counts",
    "probabilities", "prediction", "predictions", "bald", "entropy", "score", "priority", "retirement_reason",
}


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def first_path(tree: dict) -> list[dict]:
    """The annotation that takes the first answer at every question."""
    path, key = [], tree["first"]
    while key:
        path.append({"task": key, "answer": 0})
        key = tree["tasks"][key]["answers"][0].get("next")
    return path


@pytest.fixture
def seeded(world):
    """Only two active subjects in the image workflow, each with secrets everywhere; the first is gold."""
    workflow = world.workflow
    workflow.random_share = 0.0
    workflow.gold_share_start = workflow.gold_share_floor = 0.0
    workflow.save()
    states = list(SubjectState.objects.filter(workflow=workflow).select_related("subject").order_by("id")[:2])
    SubjectState.objects.filter(workflow=workflow).exclude(pk__in=[s.pk for s in states]).update(status="retired")
    version = ModelVersion.objects.create(workflow=workflow, number=7, kind="question_head", status="active")
    root = workflow.task_tree["first"]
    n_answers = len(workflow.task_tree["tasks"][root]["answers"])
    spread = [float(SECRET_NUMBERS[3])] + [0.0] * (n_answers - 1)
    for i, state in enumerate(states):
        state.subject.truth = {**(state.subject.truth or {}), "note": TRUTH_MARK}
        state.subject.save(update_fields=["truth"])
        state.gold_answers = {root: 0} if i == 0 else None
        state.priority = float(SECRET_NUMBERS[5])
        state.save(update_fields=["gold_answers", "priority"])
        Consensus.objects.create(
            workflow=workflow,
            subject=state.subject,
            counts={root: [3] + [0] * (n_answers - 1)},
            fractions={root: [float(SECRET_NUMBERS[0])] + [0.0] * (n_answers - 1)},
            posterior={root: [float(SECRET_NUMBERS[1])] + [0.0] * (n_answers - 1)},
            agreement={root: float(SECRET_NUMBERS[2])},
            n_classifications=3,
        )
        Prediction.objects.create(
            model_version=version, subject=state.subject, probabilities={root: spread},
            entropy=float(SECRET_NUMBERS[4]), bald=float(SECRET_NUMBERS[4]), score=float(SECRET_NUMBERS[5]),
        )
    return [s.subject for s in states]


def assert_clean(label: str, body: bytes | str, headers=None):
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text += json.dumps(dict(headers or {}))
    assert TRUTH_MARK not in text, f"{label}: leaks the truth"
    leaked = [n for n in SECRET_NUMBERS if n in text]
    assert not leaked, f"{label}: leaks hidden values {leaked}"


def hidden_keys(data) -> set[str]:
    if isinstance(data, dict):
        found = {k for k in data if k in HIDDEN_KEYS}
        return found.union(*(hidden_keys(v) for v in data.values()))
    if isinstance(data, list):
        return set().union(*(hidden_keys(v) for v in data))
    return set()


def get_json(client, url: str, label: str):
    response = client.get(url)
    assert response.status_code == 200, f"{label}: {response.status_code}"
    assert_clean(label, response.content, response.headers)
    data = response.json()
    assert not hidden_keys(data), f"{label}: carries {hidden_keys(data)}"
    return data


@pytest.mark.parametrize("persona", ["anonymous", "volunteer"])
def test_a_volunteer_sees_nothing_hidden_before_or_after_classifying(world, seeded, persona):
    client, workflow = world.client(persona), world.workflow
    get_json(client, reverse("api-workflows"), "workflow list")
    get_json(client, reverse("api-workflow", args=[workflow.id]), "workflow")
    served = get_json(client, reverse("api-next", args=[workflow.id]), "next")["subject"]
    assert served["id"] in {s.id for s in seeded}

    page = client.get(reverse("classify", args=[workflow.id]))
    assert_clean("classify page", page.content)
    for key in ("preview_url", "data_url"):
        response = client.get(served[key], HTTP_ACCEPT_ENCODING="identity")
        assert response.status_code == 200
        assert_clean(key, body_of(response), response.headers)

    response = client.post(
        reverse("api-classifications"),
        {"workflow": workflow.id, "subject": served["id"], "client_uuid": str(uuid.uuid4()),
         "annotation": first_path(workflow.task_tree)},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    following = body["next"]
    assert following is None or following["id"] in {s.id for s in seeded} - {served["id"]}
    assert_clean("the next subject after a submit", json.dumps(following))
    assert not hidden_keys(following)
    # Feedback only for the gold subject, and only once it has been classified: by design.
    assert (body["feedback"] is not None) == (served["id"] == seeded[0].id)
    assert_clean("feedback", json.dumps(body["feedback"]))

    get_json(client, reverse("api-progress", args=[workflow.id]), "my progress")
    get_json(client, reverse("api-mine", args=[workflow.id]), "my classifications")
    assert_clean("my page", client.get(reverse("me")).content)


def test_the_served_subject_has_only_the_public_fields(world, seeded):
    subject = world.client("anonymous").get(reverse("api-next", args=[world.workflow.id])).json()["subject"]
    assert set(subject) == {"id", "kind", "external_id", "ra", "dec", "metadata", "preview_url", "data_url"}
    assert not hidden_keys(subject["metadata"])


def test_the_scientist_pages_that_show_the_secrets_are_closed_to_volunteers(world, seeded):
    """The same values are visible where they belong, which shows the search above can find them."""
    subject = seeded[0]
    page = world.client("scientist").get(reverse("science-subject", args=[world.workflow.id, subject.id]))
    assert page.status_code == 200
    assert any(n[:5] in page.content.decode() for n in SECRET_NUMBERS), "the subject page should show consensus"
    for persona in ("anonymous", "volunteer", "scientist_other"):
        response = world.client(persona).get(reverse("science-subject", args=[world.workflow.id, subject.id]))
        assert response.status_code in (302, 403)
        assert_clean(f"subject page as {persona}", response.content)


def test_a_spectrum_and_its_data_never_carry_the_simulated_absorber(world):
    """The DLA a simulation hid in a spectrum (its z_abs, log N_HI, class) is not in what the viewer gets."""
    client, workflow = world.client("anonymous"), world.spectrum_workflow
    workflow.random_share, workflow.gold_share_start, workflow.gold_share_floor = 0.0, 0.0, 0.0
    workflow.save()
    checked = 0
    for _ in range(4):
        served = client.get(reverse("api-next", args=[workflow.id])).json()["subject"]
        if served is None:
            break
        truth = Subject.objects.get(pk=served["id"]).truth
        data = client.get(served["data_url"], HTTP_ACCEPT_ENCODING="identity")
        payload = json.dumps(served) + data.content.decode()
        hidden = [repr(truth[k]) for k in ("z_abs", "log_nhi", "sub_dla_z", "sub_dla_log_nhi") if truth.get(k)]
        assert not [h for h in hidden if h in payload], f"subject {served['id']} leaks its absorber"
        assert '"class"' not in payload and "no_dla" not in payload
        checked += 1
        client.post(reverse("api-classifications"),
                    {"workflow": workflow.id, "subject": served["id"], "client_uuid": str(uuid.uuid4()),
                     "annotation": first_path(workflow.task_tree)}, content_type="application/json")
    assert checked >= 2
