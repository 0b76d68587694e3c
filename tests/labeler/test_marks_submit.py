import uuid

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from labeler.classifications.models import Classification, Consensus
from labeler.classifications.services import ClassificationError, classification_submit, consensus_rebuild

NO_TRAIL = [{"task": "T0", "answer": 1}]
GALAXY, STAR, TRAIL = 0, 1, 2  # the simulated field workflow's tools


@pytest.fixture
def field_workflow(small_sky):
    return small_sky.workflows.get(kind="field")


@pytest.fixture
def field_subject(field_workflow):
    return field_workflow.states.get().subject


def box(x, y, w, h, tool=GALAXY):
    return {"tool": tool, "x": x, "y": y, "width": w, "height": h}


def post(client, workflow, subject_id, annotation, **extra):
    body = {"workflow": workflow.id, "subject": subject_id, "client_uuid": str(uuid.uuid4()), "annotation": annotation}
    return client.post(reverse("api-classifications"), body | extra, content_type="application/json")


def submit(workflow, subject_id, key, annotation, **extra):
    return classification_submit(
        workflow=workflow,
        subject_id=subject_id,
        volunteer_key=key,
        annotation=annotation,
        client_uuid=uuid.uuid4(),
        **extra,
    )


def test_a_volunteer_draws_boxes_and_a_trail_through_the_api(field_workflow, field_subject):
    drawn = [
        box(10, 20, 12, 9),
        box(100.5, 60, 20, 14, tool=STAR),
        {"tool": TRAIL, "x1": 0, "y1": 5, "x2": 90, "y2": 70},
    ]
    response = post(
        Client(), field_workflow, field_subject.id, NO_TRAIL, marks=drawn, comment="a fuzzy pair", favourite=True
    )
    assert response.status_code == 201, response.json()
    saved = Classification.objects.get()
    assert saved.marks == [
        {"tool": 0, "x": 10.0, "y": 20.0, "width": 12.0, "height": 9.0},
        {"tool": 1, "x": 100.5, "y": 60.0, "width": 20.0, "height": 14.0},
        {"tool": 2, "x1": 0.0, "y1": 5.0, "x2": 90.0, "y2": 70.0},
    ]
    assert saved.comment == "a fuzzy pair" and saved.favourite is True


def test_bad_marks_are_refused_with_400_and_nothing_is_stored(field_workflow, field_subject, image_workflow):
    outside = post(Client(), field_workflow, field_subject.id, NO_TRAIL, marks=[box(300, 300, 5, 5)])
    assert outside.status_code == 400 and outside.json()["error"]["code"] == "bad_marks"
    unknown_tool = post(Client(), field_workflow, field_subject.id, NO_TRAIL, marks=[box(1, 1, 5, 5, tool=9)])
    assert unknown_tool.status_code == 400 and unknown_tool.json()["error"]["code"] == "bad_marks"
    image_subject = image_workflow.states.first().subject
    smooth = [{"task": "T0", "answer": 0}, {"task": "T1", "answer": 0}, {"task": "T4", "answer": 1}]
    no_tools = post(Client(), image_workflow, image_subject.id, smooth, marks=[box(1, 1, 5, 5)])
    assert no_tools.status_code == 400 and no_tools.json()["error"]["code"] == "bad_marks"
    assert not Classification.objects.exists()


def test_boxes_are_clipped_to_the_subjects_image(field_workflow, field_subject):
    assert field_subject.metadata["shape"] == [3, 256, 256]
    result = submit(field_workflow, field_subject.id, "a:1", NO_TRAIL, marks=[box(250, -4, 20, 10)])
    assert result.classification.marks == [{"tool": 0, "x": 250.0, "y": 0.0, "width": 6.0, "height": 6.0}]


def test_a_too_long_comment_is_refused(field_workflow, field_subject):
    with pytest.raises(ClassificationError) as err:
        submit(field_workflow, field_subject.id, "a:1", NO_TRAIL, comment="x" * 2001)
    assert err.value.code == "bad_comment"
    assert not Classification.objects.exists()


def test_consensus_clusters_the_volunteers_boxes_and_trails(field_workflow, field_subject):
    for i, dx in enumerate([0.0, 0.8, -0.6, 0.4]):
        trail = {"tool": TRAIL, "x1": 200 + dx, "y1": 10, "x2": 20, "y2": 240 - dx}
        if i % 2:  # drawn from the other end
            trail = {"tool": TRAIL, "x1": 20, "y1": 240 - dx, "x2": 200 + dx, "y2": 10}
        drawn = [box(40 + dx, 50 - dx, 16, 12), trail]
        if i == 0:
            drawn.append(box(150, 150, 30, 30))  # only one volunteer saw this
        submit(field_workflow, field_subject.id, f"a:{i}", NO_TRAIL, marks=drawn)
    marks = Consensus.objects.get(workflow=field_workflow, subject=field_subject).marks
    (galaxy,) = marks[str(GALAXY)]["clusters"]
    assert galaxy["support"] == 4 and abs(galaxy["x"] - 40.2) < 0.5 and galaxy["width"] == pytest.approx(16, abs=0.5)
    (trail,) = marks[str(TRAIL)]["clusters"]
    assert trail["support"] == 4 and (trail["x1"], trail["y1"]) == pytest.approx((20, 239.8), abs=0.5)
    assert marks[str(STAR)]["clusters"] == []


def test_absorber_marks_on_spectra_reach_consensus(spectrum_workflow):
    subject = spectrum_workflow.states.first().subject
    for i, z in enumerate([2.501, 2.499, 2.503]):
        dla = {"tool": 0, "z": z, "log_nhi": 20.6 + 0.05 * i}
        submit(spectrum_workflow, subject.id, f"a:{i}", [{"task": "T0", "answer": 0}], marks=[dla])
    (cluster,) = Consensus.objects.get(workflow=spectrum_workflow, subject=subject).marks["0"]["clusters"]
    assert cluster["support"] == 3 and cluster["z"] == pytest.approx(2.501) and cluster["log_nhi"] == 20.65


def test_rebuild_matches_the_running_consensus_and_follows_a_withdrawal(field_workflow, field_subject):
    answers = [NO_TRAIL, [{"task": "T0", "answer": 0}], NO_TRAIL]
    for i, annotation in enumerate(answers):
        submit(field_workflow, field_subject.id, f"a:{i}", annotation, marks=[box(40 + i, 50, 16, 12)])
    running = Consensus.objects.get(workflow=field_workflow, subject=field_subject)
    rebuilt = consensus_rebuild(workflow=field_workflow, subject_id=field_subject.id)
    for attribute in ("counts", "fractions", "n_classifications", "agreement", "posterior", "marks"):
        assert getattr(rebuilt, attribute) == getattr(running, attribute), attribute

    Classification.objects.filter(volunteer_key="a:1").delete()
    rebuilt = consensus_rebuild(workflow=field_workflow, subject_id=field_subject.id)
    assert rebuilt.n_classifications == 2 and rebuilt.counts["T0"] == [0, 2]
    assert rebuilt.marks[str(GALAXY)]["clusters"][0]["support"] == 2
    assert Consensus.objects.get(pk=rebuilt.pk).counts["T0"] == [0, 2]  # saved


def test_only_drawing_workflows_read_the_subject_on_submit(image_workflow, field_workflow, field_subject):
    smooth = [{"task": "T0", "answer": 0}, {"task": "T1", "answer": 0}, {"task": "T4", "answer": 1}]
    image_subject = image_workflow.states.first().subject
    with CaptureQueriesContext(connection) as plain:
        submit(image_workflow, image_subject.id, "a:1", smooth)
    with CaptureQueriesContext(connection) as drawing:
        submit(field_workflow, field_subject.id, "a:1", NO_TRAIL, marks=[box(1, 1, 5, 5)])

    def subject_reads(queries):
        return [q["sql"] for q in queries if 'FROM "subjects_subject"' in q["sql"]]

    assert subject_reads(plain.captured_queries) == []
    assert len(subject_reads(drawing.captured_queries)) == 1
