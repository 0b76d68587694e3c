"""The volunteer's flow behind the classify page: prefetch, my recent work, edit, withdraw, data."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import timedelta

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from labeler.classifications.models import Classification, Consensus
from labeler.subjects import pixels
from labeler.subjects.services import subject_load_image, subject_load_spectrum
from labeler.workflows.models import SubjectState
from labeler.workflows.services import workflow_create

YES, NO = [{"task": "T0", "answer": 0}], [{"task": "T0", "answer": 1}]
BOX_TOOLS = {"instruction": "Box every galaxy.", "tools": [{"type": "box", "label": "Galaxy"}], "max_marks": 5}


def submit(client, workflow, subject_id, annotation, **extra):
    body = {"workflow": workflow.id, "subject": subject_id, "client_uuid": str(uuid.uuid4()), "annotation": annotation}
    response = client.post(reverse("api-classifications"), {**body, **extra}, content_type="application/json")
    assert response.status_code == 201, response.json()
    return body["client_uuid"]


def edit(client, client_uuid, **changes):
    url = reverse("api-classification", args=[client_uuid])
    return client.patch(url, changes, content_type="application/json")


def withdraw(client, client_uuid):
    return client.delete(reverse("api-classification", args=[client_uuid]))


def first_subject(workflow) -> int:
    return workflow.states.order_by("subject_id").first().subject_id


def root_counts(workflow, subject_id) -> list[int]:
    return Consensus.objects.get(workflow=workflow, subject_id=subject_id).counts["T0"]


# ---------------------------------------------------------------- next subject


def test_next_never_serves_a_subject_the_page_already_holds(client, spectrum_workflow):
    all_ids = list(spectrum_workflow.states.values_list("subject_id", flat=True))
    held = all_ids[:-1]
    url = reverse("api-next", args=[spectrum_workflow.id])
    for _ in range(5):
        subject = client.get(url, {"exclude": ",".join(map(str, held))}).json()["subject"]
        assert subject["id"] == all_ids[-1]
    assert client.get(url, {"exclude": ",".join(map(str, all_ids))}).json()["subject"] is None


@pytest.mark.parametrize("exclude", ["1,x", "-3", "1;2", ",".join(str(i) for i in range(1, 22))])
def test_a_bad_exclude_list_is_400_in_the_uniform_shape(client, spectrum_workflow, exclude):
    response = client.get(reverse("api-next", args=[spectrum_workflow.id]), {"exclude": exclude})
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_served_subjects_carry_a_data_address(client, image_workflow):
    subject = client.get(reverse("api-next", args=[image_workflow.id])).json()["subject"]
    assert subject["data_url"].startswith(f"/subjects/{subject['id']}/data-")


# ---------------------------------------------------------------- submitting


def test_comment_and_favourite_are_stored_with_the_classification(client, spectrum_workflow):
    subject_id = first_subject(spectrum_workflow)
    submit(client, spectrum_workflow, subject_id, YES, comment="Look at the wings!", favourite=True)
    saved = Classification.objects.get()
    assert (saved.comment, saved.favourite, saved.marks) == ("Look at the wings!", True, [])


def test_a_comment_over_2000_characters_is_400_and_nothing_is_stored(client, spectrum_workflow):
    body = {
        "workflow": spectrum_workflow.id,
        "subject": first_subject(spectrum_workflow),
        "client_uuid": str(uuid.uuid4()),
        "annotation": YES,
        "comment": "x" * 2001,
    }
    response = client.post(reverse("api-classifications"), body, content_type="application/json")
    assert response.status_code == 400
    assert "comment" in response.json()["error"]["detail"]
    assert not Classification.objects.exists()


# ---------------------------------------------------------------- mine


def test_mine_lists_only_my_classifications_newest_first(client, spectrum_workflow):
    ids = list(spectrum_workflow.states.order_by("subject_id").values_list("subject_id", flat=True)[:3])
    uuids = [submit(client, spectrum_workflow, sid, YES) for sid in ids]
    submit(Client(), spectrum_workflow, ids[0], NO)  # somebody else
    mine = client.get(reverse("api-mine", args=[spectrum_workflow.id]), {"limit": 2}).json()
    assert [item["client_uuid"] for item in mine] == uuids[::-1][:2]
    first = mine[0]
    assert first["subject"]["id"] == ids[2] and "truth" not in first["subject"]
    assert first["annotation"] == YES and first["editable"] is True and first["edited_at"] is None
    assert set(first) >= {"marks", "comment", "favourite", "flagged", "created_at", "editable_until"}


def test_mine_refuses_a_silly_limit(client, spectrum_workflow):
    assert client.get(reverse("api-mine", args=[spectrum_workflow.id]), {"limit": 0}).status_code == 400


# ---------------------------------------------------------------- edit


def test_editing_my_answer_rebuilds_the_subject_consensus(client, spectrum_workflow):
    subject_id = first_subject(spectrum_workflow)
    mine = submit(client, spectrum_workflow, subject_id, YES)
    submit(Client(), spectrum_workflow, subject_id, YES)
    assert root_counts(spectrum_workflow, subject_id) == [2, 0]
    response = edit(client, mine, annotation=NO, comment="changed my mind")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["annotation"] == NO and body["comment"] == "changed my mind" and body["edited_at"]
    assert root_counts(spectrum_workflow, subject_id) == [1, 1]
    consensus = Consensus.objects.get(workflow=spectrum_workflow, subject_id=subject_id)
    assert consensus.n_classifications == 2 and consensus.fractions["T0"] == [0.5, 0.5]


def test_flagging_afterwards_is_counted_on_the_subject(client, spectrum_workflow):
    subject_id = first_subject(spectrum_workflow)
    mine = submit(client, spectrum_workflow, subject_id, YES)
    assert edit(client, mine, flagged=True).status_code == 200
    assert SubjectState.objects.get(workflow=spectrum_workflow, subject_id=subject_id).flag_count == 1


def test_a_bad_edit_is_400_and_changes_nothing(client, spectrum_workflow):
    subject_id = first_subject(spectrum_workflow)
    mine = submit(client, spectrum_workflow, subject_id, YES)
    for changes in (
        {"annotation": [{"task": "T0", "answer": 7}]},
        {"marks": [{"tool": 0, "x": 1}]},
        {},
        {"comment": "y" * 2001},
        {"annotation": None},
    ):
        response = edit(client, mine, **changes)
        assert response.status_code == 400, changes
        assert response.json()["error"]["message"]
    saved = Classification.objects.get()
    assert saved.annotation == YES and saved.edited_at is None
    assert root_counts(spectrum_workflow, subject_id) == [1, 0]


def test_someone_elses_classification_does_not_exist_for_me(client, spectrum_workflow):
    theirs = submit(Client(), spectrum_workflow, first_subject(spectrum_workflow), YES)
    unknown = uuid.uuid4()
    for response in (edit(client, theirs, annotation=NO), withdraw(client, theirs), edit(client, unknown, comment="")):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert Classification.objects.get().annotation == YES


def test_after_the_edit_window_answers_are_closed_but_notes_are_not(client, spectrum_workflow):
    mine = submit(client, spectrum_workflow, first_subject(spectrum_workflow), YES)
    Classification.objects.update(created_at=Classification.objects.get().created_at - timedelta(hours=25))
    assert edit(client, mine, annotation=NO).json()["error"]["code"] == "edit_closed"
    assert withdraw(client, mine).status_code == 409
    response = edit(client, mine, favourite=True, comment="still interesting")
    assert response.status_code == 200 and response.json()["editable"] is False
    saved = Classification.objects.get()
    assert saved.annotation == YES and saved.favourite and saved.comment == "still interesting"


def test_a_retired_subject_stays_retired_when_its_voters_change_their_minds(client, spectrum_workflow):
    subject_id = first_subject(spectrum_workflow)
    mine = submit(client, spectrum_workflow, subject_id, YES)
    for _ in range(spectrum_workflow.retire_after - 1):
        submit(Client(), spectrum_workflow, subject_id, YES)
    state = SubjectState.objects.get(workflow=spectrum_workflow, subject_id=subject_id)
    assert state.status == SubjectState.Status.RETIRED
    assert edit(client, mine, annotation=NO).status_code == 200
    state.refresh_from_db()
    assert state.status == SubjectState.Status.RETIRED
    assert root_counts(spectrum_workflow, subject_id) == [spectrum_workflow.retire_after - 1, 1]


def test_marks_are_validated_against_the_workflow_tools_on_edit(client, small_sky, image_workflow):
    tree = {**image_workflow.task_tree, "marks": BOX_TOOLS}
    boxes = workflow_create(project=small_sky, slug="boxes", name="Boxes", kind="image", task_tree=tree)
    subject_id = first_subject(boxes)
    mine = submit(client, boxes, subject_id, [{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}])
    box = {"tool": 0, "x": 10.0, "y": 12.0, "width": 8.0, "height": 6.0}
    assert edit(client, mine, marks=[box, {**box, "tool": 3}]).json()["error"]["code"] == "bad_marks"
    response = edit(client, mine, marks=[box])
    assert response.status_code == 200, response.json()
    assert response.json()["marks"] == [box]
    assert Consensus.objects.get(workflow=boxes, subject_id=subject_id).n_classifications == 1


# ---------------------------------------------------------------- withdraw


def test_withdrawing_removes_my_vote_and_recounts_the_subject(client, spectrum_workflow):
    subject_id = first_subject(spectrum_workflow)
    mine = submit(client, spectrum_workflow, subject_id, YES, flagged=True)
    submit(Client(), spectrum_workflow, subject_id, NO)
    assert withdraw(client, mine).status_code == 204
    assert withdraw(client, mine).status_code == 404
    state = SubjectState.objects.get(workflow=spectrum_workflow, subject_id=subject_id)
    assert (state.classification_count, state.flag_count) == (1, 0)
    assert root_counts(spectrum_workflow, subject_id) == [0, 1]
    assert client.get(reverse("api-mine", args=[spectrum_workflow.id])).json() == []


# ---------------------------------------------------------------- data for the viewers


def fetch_data(client, subject, **headers):
    response = client.get(pixels_url(subject), headers=headers)
    assert response.status_code == 200
    assert "immutable" in response["Cache-Control"] and "Accept-Encoding" in response["Vary"]
    assert int(response["Content-Length"]) == len(response.content)
    return response


def pixels_url(subject):
    return reverse("subject-data", args=[subject.id, pixels.data_token(subject)])


def test_image_data_is_float16_that_decodes_to_the_fits_fluxes(client, image_workflow):
    subject = image_workflow.states.first().subject
    response = fetch_data(client, subject, accept_encoding="gzip, deflate, br")
    assert response["Content-Encoding"] == "gzip" and response["Content-Type"] == "application/octet-stream"
    body = gzip.decompress(response.content)
    shape = tuple(int(n) for n in response["X-Skyloop-Shape"].split(","))
    scales = tuple(float(s) for s in response["X-Skyloop-Scale"].split(","))
    assert shape == (3, 64, 64) and response["X-Skyloop-Bands"] == "g,r,i"
    assert len(body) == 2 * np.prod(shape) and len(response.content) <= 25_000
    cube = subject_load_image(subject).cube
    decoded = pixels.decode_image(body, shape, scales)
    assert np.allclose(decoded, cube, rtol=1e-3, atol=1e-3 * np.abs(cube).max())


def test_image_data_without_gzip_is_the_plain_bytes(client, image_workflow):
    subject = image_workflow.states.first().subject
    response = fetch_data(client, subject, accept_encoding="gzip;q=0, identity")
    assert "Content-Encoding" not in response
    assert len(response.content) == 2 * 3 * 64 * 64


def test_spectrum_data_is_rounded_json_with_errors_and_the_quasar_redshift(client, spectrum_workflow):
    subject = spectrum_workflow.states.first().subject
    payload = json.loads(gzip.decompress(fetch_data(client, subject, accept_encoding="gzip").content))
    spec = subject_load_spectrum(subject)
    assert len(payload["wavelength"]) == len(payload["flux"]) == len(payload["error"]) == spec.wavelength.size
    assert len(set(payload["wavelength"])) == spec.wavelength.size  # rounding never merges pixels
    assert np.allclose(payload["wavelength"], spec.wavelength, rtol=1e-5)
    assert np.allclose(payload["flux"], spec.flux, rtol=5e-4, atol=1e-30)
    good = spec.ivar > 0
    errors = np.array([np.nan if e is None else e for e in payload["error"]])
    assert np.allclose(errors[good], 1 / np.sqrt(spec.ivar[good]), rtol=5e-4)
    assert all(e is None for e, ok in zip(payload["error"], good, strict=True) if not ok)
    assert payload["z_qso"] == pytest.approx(subject.metadata["z"]) and payload["units"]["wavelength"]


def test_a_stale_data_address_is_404(client, image_workflow):
    subject = image_workflow.states.first().subject
    assert client.get(reverse("subject-data", args=[subject.id, "0" * 12])).status_code == 404


def test_non_finite_pixels_travel_as_nan_and_finite_ones_within_float16_precision():
    rng = np.random.default_rng(0)
    cube = rng.normal(0, 1e-3, size=(2, 16, 16)).astype(np.float32)
    cube[0, 3, 4], cube[0, 5, 5], cube[1, 0, 0] = np.nan, np.inf, -np.inf
    cube[1] *= 1e9  # a band far outside float16's range must still fit
    encoded = pixels.encode_image(cube)
    decoded = pixels.decode_image(encoded.body, encoded.shape, encoded.scales)
    bad = ~np.isfinite(cube)
    assert np.array_equal(np.isnan(decoded), bad)
    for band in range(2):
        ok = ~bad[band]
        peak = np.abs(cube[band][ok]).max()
        assert np.all(np.abs(decoded[band][ok] - cube[band][ok]) <= 2**-11 * peak)


def test_an_all_zero_band_encodes_with_unit_scale():
    encoded = pixels.encode_image(np.zeros((1, 8, 8)))
    assert encoded.scales == (1.0,)
    assert not pixels.decode_image(encoded.body, encoded.shape, encoded.scales).any()
