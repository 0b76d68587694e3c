"""Bad input of every kind gets a clear 4xx in the API's error shape (or a CLI error), and nothing is stored.

Extends tests/labeler/test_ingest.py (CLI ingest) and test_api.py / test_marks_submit.py
(annotations) with uploads through the API and more hostile bodies.
"""

from __future__ import annotations

import functools
import io
import json
import re
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from labeler.classifications.models import Classification, Consensus
from labeler.subjects import storage
from labeler.subjects.models import Subject
from labeler.workflows.models import SubjectState
from mlcore import io as fitsio
from mlcore.simulate import sky, spectra


# ------------------------------------------------------------------ what is stored
def stored() -> tuple:
    root = storage.media_path("subjects")
    files = sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    return Subject.objects.count(), SubjectState.objects.count(), files


def written(write) -> bytes:
    """The bytes a writer that wants a path produces."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.fits"
        write(path)
        return path.read_bytes()


def fits_bytes(cube: np.ndarray, bands=("g", "r", "i")) -> bytes:
    if cube.ndim == 3 and len(bands) == cube.shape[0]:
        return written(lambda p: fitsio.write_image_fits(p, cube.astype(np.float32), bands))
    buffer = io.BytesIO()
    fits.PrimaryHDU(cube).writeto(buffer)
    return buffer.getvalue()


@functools.cache
def cutout(seed: int = 0) -> bytes:
    cube, _ = sky.simulate_cutout("smooth_round", np.random.default_rng(seed))
    return written(lambda p: fitsio.write_image_fits(p, cube, ("g", "r", "i"), wcs=sky.cutout_wcs(150.0, 2.0)))


def upload_file(name: str, content: bytes):
    handle = io.BytesIO(content)
    handle.name = name
    return handle


@pytest.fixture
def scientist(world):
    return world.client("scientist")


def upload(client, project, files: dict[str, bytes], kind: str = "image"):
    body = {"kind": kind, "files": [upload_file(n, c) for n, c in files.items()]}
    return client.post(reverse("api-project-subjects", args=[project.slug]), body)


def assert_refused(response, status: int, code: str, before: tuple, *, mentions: str = ""):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert mentions in error["message"]
    assert "/tmp" not in error["message"]  # names the file as sent, not where the server spooled it
    assert stored() == before


# ------------------------------------------------------------------ uploads that work
def test_a_scientist_uploads_fits_cutouts_and_they_become_subjects(world, scientist):
    before = stored()
    response = upload(scientist, world.project, {"ngc-1.fits": cutout(1), "ngc-2.fits": cutout(2)})
    assert response.status_code == 201, response.content
    names = sorted(s["external_id"] for s in response.json()["created"])
    assert names == ["ngc-1", "ngc-2"]
    subject = Subject.objects.get(project=world.project, external_id="ngc-1")
    assert subject.ra == pytest.approx(150.0, abs=1e-3) and subject.metadata["source_file"] == "ngc-1.fits"
    assert SubjectState.objects.filter(subject=subject, workflow=world.workflow).exists()
    assert stored()[0] == before[0] + 2
    assert all(storage.media_path(s.data_file).is_file() for s in Subject.objects.filter(external_id__in=names))


def test_a_few_nan_and_inf_pixels_are_filled_and_counted(world, scientist):
    cube, _ = sky.simulate_cutout("smooth_round", np.random.default_rng(3))
    cube[0, :3, :3], cube[1, 5, 5] = np.nan, np.inf
    response = upload(scientist, world.project, {"holes.fits": fits_bytes(cube)})
    assert response.status_code == 201, response.content
    subject = Subject.objects.get(external_id="holes")
    assert subject.metadata["nan_fraction"] > 0
    assert np.isfinite(fitsio.read_image_fits(storage.media_path(subject.data_file)).cube).all()


def test_a_spectrum_upload_keeps_its_redshift(world, scientist):
    wave, flux, ivar, truth = spectra.simulate_quasar(np.random.default_rng(4))
    spectrum = written(lambda p: fitsio.write_sdss_spectrum(p, wave, flux, ivar, z=truth["z_qso"], ra=1.0, dec=2.0))
    response = upload(scientist, world.project, {"spec-9.fits": spectrum}, kind="spectrum")
    assert response.status_code == 201, response.content
    assert Subject.objects.get(external_id="spec-9").metadata["z"] == pytest.approx(truth["z_qso"], rel=1e-5)


# ------------------------------------------------------------------ bad files
def truncated() -> bytes:
    return cutout()[:4000]


def corrupt() -> bytes:
    data = bytearray(cutout())
    data[2880:] = bytes(len(data) - 2880)  # header intact, data and extension headers zeroed
    return b"SIMPLE  =                    T / garbage follows" + bytes(data[48:2880]).replace(b"END", b"XXX")


def half_inf() -> bytes:
    cube = np.ones((3, 32, 32), np.float32)
    cube[1, :20] = np.inf
    return fits_bytes(cube)


BAD_FILES = {
    "truncated": (truncated, "truncated.fits"),
    "corrupt header": (corrupt, "corrupt.fits"),
    "all NaN": (lambda: fits_bytes(np.full((3, 32, 32), np.nan)), "nan.fits"),
    "mostly inf": (half_inf, "inf.fits"),
    "4-D cube": (lambda: fits_bytes(np.ones((2, 3, 32, 32), np.float32), bands=()), "cube4d.fits"),
    "1-D image": (lambda: fits_bytes(np.ones(64, np.float32), bands=()), "line.fits"),
    "2x2 image": (lambda: fits_bytes(np.ones((2, 2), np.float32), bands=()), "tiny.fits"),
    "no data": (lambda: fits_bytes(np.zeros((0,), np.float32), bands=()), "empty.fits"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_fits_file_is_refused_with_its_name_and_nothing_is_stored(world, scientist, case):
    make, name = BAD_FILES[case]
    before = stored()
    response = upload(scientist, world.project, {"good.fits": cutout(), name: make()})
    assert_refused(response, 400, "bad_file", before, mentions=name)


def test_an_image_file_sent_as_a_spectrum_is_refused(world, scientist):
    before = stored()
    assert_refused(upload(scientist, world.project, {"img.fits": cutout()}, kind="spectrum"), 400, "bad_file",
                   before, mentions="img.fits")


@pytest.mark.parametrize(
    "name, content",
    [
        ("picture.png", b"\x89PNG\r\n\x1a\n" + bytes(200)),
        ("notes.fits", b"just some text, not FITS at all\n" * 10),
        ("zipped.fits.gz", b"\x1f\x8b\x08" + bytes(100)),
        ("empty.fits", b""),
    ],
)
def test_a_file_that_is_not_fits_is_refused_as_unsupported(world, scientist, name, content):
    before = stored()
    response = upload(scientist, world.project, {name: content})
    if content:
        assert_refused(response, 415, "not_fits", before, mentions=name)
    else:  # Django's FileField refuses an empty file before we look at it
        assert response.status_code == 400 and stored() == before


@pytest.mark.parametrize("name", ["my file.fits", ".hidden.fits", "naïve.fits", "x" * 230 + ".fits"])
def test_an_unsafe_file_name_is_refused(world, scientist, name):
    before = stored()
    assert_refused(upload(scientist, world.project, {name: cutout()}), 400, "bad_name", before)


def test_a_path_in_the_file_name_is_dropped(world, scientist):
    response = upload(scientist, world.project, {"../../etc/evil.fits": cutout()})
    assert response.status_code == 201, response.content
    assert Subject.objects.filter(external_id="evil").exists()


def test_the_same_name_twice_in_one_upload_is_refused(world, scientist):
    before = stored()
    response = scientist.post(
        reverse("api-project-subjects", args=[world.project.slug]),
        {"kind": "image", "files": [upload_file("twin.fits", cutout(1)), upload_file("twin.fits", cutout(2))]},
    )
    assert_refused(response, 400, "duplicate_names", before)


def test_a_name_the_project_already_has_is_refused(world, scientist):
    assert upload(scientist, world.project, {"again.fits": cutout()}).status_code == 201
    before = stored()
    assert_refused(upload(scientist, world.project, {"again.fits": cutout()}), 400, "bad_file", before,
                   mentions="again")


# ------------------------------------------------------------------ limits
def test_a_file_over_the_fits_size_limit_is_stopped_while_it_streams_in(world, scientist, settings):
    settings.SKYLOOP_FITS_MAX_BYTES = 100_000
    before = stored()
    big = fits_bytes(np.ones((3, 256, 256), np.float32))  # ~ 790 kB
    response = upload(scientist, world.project, {"big.fits": big})
    assert_refused(response, 413, "too_large", before, mentions="big.fits")
    read_when_stopped = int(re.search(r"more than (\d+) bytes", response.json()["error"]["message"]).group(1))
    assert 100_000 < read_when_stopped < len(big) / 2


def test_a_request_over_the_upload_limit_is_refused_before_it_is_read(world, scientist, settings, monkeypatch):
    settings.SKYLOOP_UPLOAD_MAX_BYTES = 50_000
    monkeypatch.setattr("django.http.multipartparser.MultiPartParser.parse",
                        lambda self: pytest.fail("the body was parsed"))
    before = stored()
    response = upload(scientist, world.project, {"a.fits": cutout(1), "b.fits": cutout(2)})  # ~ 100 kB
    assert_refused(response, 413, "too_large", before)


@pytest.mark.parametrize("limit", ["SKYLOOP_UPLOAD_MAX_FILES", "DATA_UPLOAD_MAX_NUMBER_FILES"])
def test_too_many_files_are_refused(world, scientist, settings, limit):
    setattr(settings, limit, 2)  # ours after parsing, Django's while parsing: the same answer
    before = stored()
    files = {f"n{i}.fits": cutout(i) for i in range(3)}
    assert_refused(upload(scientist, world.project, files), 400, "too_many_files", before)


def test_an_upload_without_files_or_as_json_is_refused(world, scientist):
    url = reverse("api-project-subjects", args=[world.project.slug])
    before = stored()
    no_files = scientist.post(url, {"kind": "image"})
    assert no_files.status_code == 400 and "files" in no_files.json()["error"]["detail"]
    as_json = scientist.post(url, {"kind": "image", "files": []}, content_type="application/json")
    assert_refused(as_json, 415, "unsupported_media_type", before)
    bad_kind = upload(scientist, world.project, {"k.fits": cutout()}, kind="catalogue")
    assert bad_kind.status_code == 400 and stored() == before


def test_the_cli_refuses_a_4d_cube_and_a_mostly_infinite_image_by_name(world, tmp_path):
    before = stored()
    for name, content in [("cube4d.fits", BAD_FILES["4-D cube"][0]()), ("inf.fits", half_inf())]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CommandError, match=name):
            call_command("ingest_images", world.project.slug, str(path))
    text = tmp_path / "spectrum.fits"
    text.write_bytes(b"not fits")
    with pytest.raises(CommandError, match="spectrum.fits"):
        call_command("ingest_spectra", world.project.slug, str(text))
    assert stored() == before


# ------------------------------------------------------------------ hostile annotation JSON
def walk_first(tree: dict) -> list[dict]:
    path, key = [], tree["first"]
    while key:
        path.append({"task": key, "answer": 0})
        key = tree["tasks"][key]["answers"][0].get("next")
    return path


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def hostile_bodies(workflow, subject_id: int) -> dict[str, bytes | str]:
    def body(**changes) -> str:
        base = {"workflow": workflow.id, "subject": subject_id, "client_uuid": str(uuid.uuid4()),
                "annotation": walk_first(workflow.task_tree)}
        return json.dumps(base | changes, allow_nan=True)

    prefix = body(annotation="@")[: body(annotation="@").index('"@"')]
    return {
        "deep nesting (100k)": prefix + nested(100_000) + "}",
        "nesting just under the parser's limit": prefix + nested(900) + "}",
        "deep nesting in marks": body().replace('"annotation"', '"marks": ' + nested(5000) + ', "annotation"'),
        "huge annotation array": body(annotation=[{"task": "T0", "answer": 0}] * 100_000),
        "annotation is a number": body(annotation=42),
        "annotation is null": body(annotation=None),
        "answer is a string": body(annotation=[{"task": "T0", "answer": "0"}]),
        "answer is a float": body(annotation=[{"task": "T0", "answer": 0.5}]),
        "answer is huge": body(annotation=[{"task": "T0", "answer": 10**30}]),
        "answer is NaN": body(annotation=[{"task": "T0", "answer": float("nan")}]),
        "task is a list": body(annotation=[{"task": ["T0"], "answer": 0}]),
        "unknown task": body(annotation=[{"task": "T99", "answer": 0}]),
        "very long task name": body(annotation=[{"task": "T" * 1_000_000, "answer": 0}]),
        "NaN in marks": body(marks=[{"tool": 0, "x": float("nan"), "y": 1, "width": 2, "height": 2}]),
        "Infinity in marks": body(marks=[{"tool": 0, "x": 1, "y": 1, "width": float("inf"), "height": 2}]),
        "marks is an object": body(marks={"tool": 0}),
        "many marks": body(marks=[{"tool": 0, "x": 1, "y": 1, "width": 2, "height": 2}] * 20_000),
        "very long comment": body(comment="c" * 100_000),
        "workflow is a string": body(workflow="one"),
        "subject is negative": body(subject=-1),
        "client_uuid is long": body(client_uuid="a" * 10_000),
        "duration is negative": body(duration_ms=-5),
        "started_at is not a date": body(started_at="yesterday"),
        "not UTF-8": b'{"workflow": 1, "annotation": "\xff\xfe\xfa"}',
        "a bare string": '"hello"',
        "a lone surrogate": body().replace('"T0"', '"\\ud800"', 1),
    }


def test_hostile_classification_bodies_get_a_clear_400_and_nothing_is_stored(world):
    workflow = world.workflow
    subject_id = workflow.states.order_by("id").first().subject_id
    before = Classification.objects.count(), Consensus.objects.count()
    failures = []
    for label, payload in hostile_bodies(workflow, subject_id).items():
        response = Client().post(reverse("api-classifications"), payload, content_type="application/json")
        error = response.json().get("error", {}) if response.headers["Content-Type"] == "application/json" else {}
        if response.status_code not in (400, 404, 413) or not error.get("message"):
            failures.append(f"{label}: {response.status_code} {response.content[:200]!r}")
    assert not failures, "\n".join(failures)
    assert (Classification.objects.count(), Consensus.objects.count()) == before


def test_a_body_over_the_size_limit_is_refused_with_413(world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = Client().post(reverse("api-classifications"), json.dumps({"comment": "x" * 20_000}),
                             content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert not Classification.objects.filter(comment__startswith="xxx").exists()


def test_hostile_edits_are_refused_and_change_nothing(world):
    client = world.client("volunteer")
    url = reverse("api-classification", args=[world.classification.client_uuid])
    original = Classification.objects.get(pk=world.classification.pk)
    for payload in ['{"annotation": ' + nested(50_000) + "}", '{"marks": [{"tool": 0, "x": NaN}]}',
                    '{"comment": [7]}', '{"favourite": "maybe"}', "{}", b"\xff\xfe"]:
        response = client.patch(url, payload, content_type="application/json")
        assert response.status_code == 400, (payload[:40], response.content[:200])
        assert response.json()["error"]["message"]
    after = Classification.objects.get(pk=world.classification.pk)
    assert (after.annotation, after.marks, after.comment, after.favourite) == (
        original.annotation, original.marks, original.comment, original.favourite)
