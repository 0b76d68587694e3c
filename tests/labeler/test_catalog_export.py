"""Catalog export: every format opens in astropy / pandas / STILTS with units, descriptions and provenance."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits, votable
from astropy.table import Table
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from labeler.catalogs import services
from labeler.catalogs.chunks import fixed_lists
from labeler.catalogs.models import ExportJob
from labeler.catalogs.rows import CatalogFilters
from labeler.catalogs.services import CatalogExportError, catalog_export
from labeler.classifications.models import Consensus
from labeler.classifications.services import classification_submit
from labeler.learning.models import ModelVersion, Prediction
from labeler.subjects.simulation import SkyPlan, sky_simulate
from labeler.testing import ManagedProcess
from labeler.workflows.models import SubjectState
from mlcore.tasktree import path_for_answers

TABLE_FORMATS = ["csv", "fits", "votable", "parquet"]
GALAXY, STAR = 0, 1  # the simulated field workflow's tools


def submit(workflow, subject_id, key, annotation, marks=None):
    classification_submit(workflow=workflow, subject_id=subject_id, volunteer_key=key, annotation=annotation,
                          client_uuid=uuid.uuid4(), marks=marks)  # fmt: skip


@pytest.fixture
def classified_sky(small_sky, image_workflow, spectrum_workflow):
    """Votes on a few galaxies (one expert label, one retired), a model, DLA marks and field boxes."""
    image_workflow.retire_after, image_workflow.retire_posterior = 10, 1.0  # retirement is set by hand below
    image_workflow.save()
    states = list(SubjectState.objects.filter(workflow=image_workflow).order_by("subject_id")[:4])
    for n, state in enumerate(states):
        for v in range(n + 1):
            submit(
                image_workflow, state.subject_id, f"a:{v}", path_for_answers(image_workflow.task_tree, lambda t, k: 0)
            )
    first = states[0]
    SubjectState.objects.filter(pk=first.pk).update(gold_answers={"T0": 1})
    SubjectState.objects.filter(pk=states[3].pk).update(status="retired", retired_at=timezone.now(),
                                                        retirement_reason="consensus")  # fmt: skip
    version = ModelVersion.objects.create(workflow=image_workflow, number=1, kind="question_head", status="active",
                                          sha256="ab" * 32)  # fmt: skip
    probabilities = {key: [1 / len(t["answers"])] * len(t["answers"]) for key, t in
                     image_workflow.task_tree["tasks"].items()}  # fmt: skip
    Prediction.objects.create(model_version=version, subject_id=first.subject_id, probabilities=probabilities,
                              entropy=1.0, bald=0.25, score=0.25)  # fmt: skip
    spectrum = spectrum_workflow.states.order_by("subject_id").first()
    for v, z in enumerate([2.301, 2.302, 2.300]):
        submit(spectrum_workflow, spectrum.subject_id, f"a:{v}", [{"task": "T0", "answer": 0}],
               marks=[{"tool": 0, "z": z, "log_nhi": 20.6}])  # fmt: skip
    field_workflow = small_sky.workflows.get(kind="field")
    field = field_workflow.states.get()
    for v, dx in enumerate([0.0, 0.5, -0.5]):
        boxes = [{"tool": GALAXY, "x": 10 + dx, "y": 20, "width": 12, "height": 9},
                 {"tool": STAR, "x": 100 + dx, "y": 60, "width": 6, "height": 6}]  # fmt: skip
        submit(field_workflow, field.subject_id, f"a:{v}", [{"task": "T0", "answer": 1}], marks=boxes)
    return small_sky


def missing(value) -> bool:
    """NaN as written; astropy's FITS reader masks NaN floats by default."""
    return bool(np.ma.is_masked(value) or np.isnan(value))


def read_table(path, fmt):
    if fmt == "csv":
        return Table.read(path, format="ascii.ecsv")
    if fmt == "fits":
        return Table.read(path, format="fits", hdu="CATALOG")
    if fmt == "votable":
        return votable.parse(path, verify="exception").get_first_table().to_table()
    return Table.read(path, format="parquet")


@pytest.mark.parametrize("fmt", TABLE_FORMATS)
def test_each_format_round_trips_through_astropy_with_units_and_descriptions(classified_sky, image_workflow,
                                                                              tmp_path, fmt):  # fmt: skip
    out = tmp_path / f"catalog.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unit or format warning on the way out or back in
        result = catalog_export(workflow=image_workflow, fmt=fmt, out_path=out)
        table = read_table(out, fmt)
    assert result.n_rows == len(table) == SubjectState.objects.filter(workflow=image_workflow).count()
    assert str(table["ra"].unit) == "deg" and str(table["dec"].unit) == "deg"
    if fmt in ("csv", "votable"):  # astropy keeps no description from FITS TCOMM nor Parquet: checked below
        assert "Right ascension" in table["ra"].description
        assert table["t0_smooth_frac"].description.startswith("Share of T0 votes")
    rows = {int(r["subject_id"]): r for r in table}
    first = min(rows)
    assert rows[first]["t0_n_votes"] == 1 and rows[first]["t0_smooth_frac"] == pytest.approx(1.0)
    assert rows[first]["t0_agreement"] == pytest.approx(1.0) and rows[first]["t0_features_or_disk_frac"] == 0
    assert rows[first]["t0_expert"] == "Features or disk" and rows[first]["t0_top"] == "Smooth"
    assert rows[first]["model_version"] == 1 and rows[first]["model_sha256"] == "ab" * 32
    assert rows[first]["model_bald"] == pytest.approx(0.25)
    retired = [r for r in rows.values() if r["status"] == "retired"]
    assert len(retired) == 1 and retired[0]["retirement_reason"] == "consensus"
    assert retired[0]["retired_at"].endswith("Z") and retired[0]["n_classifications"] == 4
    untouched = max(rows)
    assert rows[untouched]["t0_n_votes"] == 0 and missing(rows[untouched]["t0_smooth_post"])
    assert rows[untouched]["model_version"] == 0


@pytest.mark.parametrize("fmt", TABLE_FORMATS)
def test_each_format_carries_its_provenance(classified_sky, image_workflow, tmp_path, fmt):
    out = tmp_path / f"catalog.{fmt}"
    catalog_export(workflow=image_workflow, fmt=fmt, out_path=out, filters=CatalogFilters(min_classifications=2))
    if fmt == "fits":
        header = fits.getheader(out, "CATALOG")
        keywords = {
            "workflow": "WORKFLOW",
            "workflow_version": "WF_VERS",
            "model_version": "MODELVER",
            "model_sha256": "MODELSHA",
            "software": "CREATOR",
            "filters": "FILTERS",
            "export_time_utc": "DATE",
        }
        meta = {key: header[keyword] for key, keyword in keywords.items()}
        assert header["TUNIT3"] == "deg" and header["TUCD3"] == "pos.eq.ra;meta.main"
        assert header["TCOMM3"] == "Right ascension (ICRS)"
    elif fmt == "votable":
        resource = votable.parse(out, verify="exception").resources[0]
        meta = {info.name: info.value for info in resource.infos}
    elif fmt == "parquet":
        meta = json.loads(pq.read_schema(out).metadata[b"skyloop"])
        field = pq.read_schema(out).field("ra")
        assert field.metadata[b"unit"] == b"deg" and field.metadata[b"ucd"] == b"pos.eq.ra;meta.main"
    else:
        meta = Table.read(out, format="ascii.ecsv").meta
    assert meta["workflow"] == f"{image_workflow.project.slug}/{image_workflow.slug}"
    assert int(meta["workflow_version"]) == image_workflow.version
    assert int(meta["model_version"]) == 1 and meta["model_sha256"] == "ab" * 32
    assert meta["software"].startswith("skyloop ")
    assert json.loads(meta["filters"]) == {"min_classifications": 2, "retired_only": False}
    assert meta["export_time_utc"].startswith(str(timezone.now().year))


def test_csv_reads_in_pandas_with_comment_lines_skipped(classified_sky, image_workflow, tmp_path):
    out = tmp_path / "catalog.csv"
    catalog_export(workflow=image_workflow, fmt="csv", out_path=out, filters=CatalogFilters(min_classifications=1))
    frame = pd.read_csv(out, comment="#")
    assert len(frame) == 4 and frame["ra"].dtype == float and frame["needs_review"].dtype == bool
    assert sorted(frame["t0_n_votes"]) == [1, 2, 3, 4]


def test_filters_keep_only_retired_or_well_classified_subjects(classified_sky, image_workflow, tmp_path):
    out = tmp_path / "catalog.parquet"
    assert catalog_export(workflow=image_workflow, fmt="parquet", out_path=out,
                          filters=CatalogFilters(retired_only=True)).n_rows == 1  # fmt: skip
    assert list(pd.read_parquet(out)["status"]) == ["retired"]
    result = catalog_export(workflow=image_workflow, fmt="parquet", out_path=out,
                            filters=CatalogFilters(min_classifications=3), chunk_size=1)  # fmt: skip
    assert result.n_rows == 2 and sorted(pd.read_parquet(out)["n_classifications"]) == [3, 4]


@pytest.mark.parametrize("fmt", TABLE_FORMATS)
def test_spectrum_catalog_has_the_consensus_absorber(classified_sky, spectrum_workflow, tmp_path, fmt):
    out = tmp_path / f"dla.{fmt}"
    catalog_export(workflow=spectrum_workflow, fmt=fmt, out_path=out, filters=CatalogFilters(min_classifications=1))
    table = read_table(out, fmt)
    assert len(table) == 1
    row = table[0]
    assert row["mark0_absorber_n"] == 1
    assert row["mark0_absorber_z_abs"] == pytest.approx(2.301) and row["mark0_absorber_log_nhi"] == pytest.approx(20.6)
    clusters = json.loads(row["mark0_absorber_json"])
    assert clusters[0]["support"] == 3 and clusters[0]["z"] == pytest.approx(2.301)
    assert row["mark1_redshift_n"] == 0 and missing(row["mark1_redshift_z"])


def test_field_boxes_export_as_coco_and_as_json_columns(classified_sky, tmp_path):
    field_workflow = classified_sky.workflows.get(kind="field")
    out = tmp_path / "boxes.json"
    catalog_export(workflow=field_workflow, fmt="coco", out_path=out)
    coco = json.loads(out.read_text())
    assert [c["name"] for c in coco["categories"]] == ["Galaxy", "Star"]
    assert [c["id"] for c in coco["categories"]] == [GALAXY + 1, STAR + 1]
    (image,) = coco["images"]
    assert image["width"] > 0 and image["height"] > 0 and image["file_name"].endswith(".fits")
    by_category = {a["category_id"]: a for a in coco["annotations"]}
    assert by_category[GALAXY + 1]["bbox"] == [10.0, 20.0, 12.0, 9.0]
    assert by_category[GALAXY + 1]["area"] == pytest.approx(108.0) and by_category[GALAXY + 1]["support"] == 3
    assert by_category[STAR + 1]["image_id"] == image["id"]
    assert "row 0 is the bottom" in coco["info"]["description"] or "bottom" in coco["info"]["description"]
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"]) == 2
    table_out = tmp_path / "fields.fits"
    catalog_export(workflow=field_workflow, fmt="fits", out_path=table_out)
    row = Table.read(table_out, hdu="CATALOG")[0]
    assert row["mark0_box_n"] == 1 and json.loads(row["mark0_box_json"])[0]["width"] == pytest.approx(12.0)


def test_coco_is_refused_for_a_workflow_without_boxes(classified_sky, image_workflow, tmp_path):
    with pytest.raises(CatalogExportError, match="no box tool"):
        catalog_export(workflow=image_workflow, fmt="coco", out_path=tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", [*TABLE_FORMATS, "coco"])
def test_simulated_truth_is_never_exported(classified_sky, tmp_path, fmt):
    workflow = classified_sky.workflows.get(kind="field" if fmt == "coco" else "image")
    out = tmp_path / f"catalog.{fmt}"
    catalog_export(workflow=workflow, fmt=fmt, out_path=out)
    content = out.read_bytes().lower()
    assert b"truth" not in content
    truth_classes = {s.truth["class"] for s in workflow.project.subjects.filter(kind="image") if s.truth}
    if fmt == "csv":  # a text format: no simulated class name appears anywhere
        assert not [c for c in truth_classes if f",{c},".encode() in content]
    if fmt in TABLE_FORMATS:  # nor in any cell (VOTable's rows are base64)
        table = read_table(out, fmt)
        cells = {str(v) for name in table.colnames if table[name].dtype.kind in "SU" for v in table[name]}
        assert truth_classes and not truth_classes & cells


@pytest.mark.parametrize("fmt", [*TABLE_FORMATS, "coco"])
def test_a_failing_writer_leaves_no_file(classified_sky, tmp_path, monkeypatch, fmt):
    workflow = classified_sky.workflows.get(kind="field" if fmt == "coco" else "image")
    out = tmp_path / f"catalog.{fmt}"
    out.write_text("the previous export")

    def broken(*args, **kwargs):
        yield from []
        raise OSError("disk full")

    monkeypatch.setattr(services.rows, "catalog_records", broken)  # COCO's reader
    monkeypatch.setattr(services.chunks, "catalog_chunks", broken)  # the tables' reader
    with pytest.raises(OSError, match="disk full"):
        catalog_export(workflow=workflow, fmt=fmt, out_path=out)
    assert [p.name for p in tmp_path.iterdir()] == [out.name] and out.read_text() == "the previous export"


@pytest.mark.parametrize("fmt", TABLE_FORMATS)
def test_small_chunks_write_the_same_table_as_one_chunk(classified_sky, image_workflow, tmp_path, fmt):
    # Chunks of 2 rows: rows cross chunk edges (and VOTable's base64 stream continues across them).
    whole, pieces = tmp_path / f"whole.{fmt}", tmp_path / f"pieces.{fmt}"
    catalog_export(workflow=image_workflow, fmt=fmt, out_path=whole)
    catalog_export(workflow=image_workflow, fmt=fmt, out_path=pieces, chunk_size=2)
    a, b = read_table(whole, fmt), read_table(pieces, fmt)
    assert len(a) == len(b) > 4 and a.colnames == b.colnames
    for name in a.colnames:
        assert [str(v) for v in a[name]] == [str(v) for v in b[name]], name


@pytest.mark.parametrize("fmt", TABLE_FORMATS)
def test_a_writer_failing_on_its_thread_stops_the_export_and_leaves_no_file(classified_sky, image_workflow, tmp_path,
                                                                            monkeypatch, fmt):  # fmt: skip
    writer = services.TABLE_WRITERS[fmt]

    class FailsOnFirstChunk(writer):
        def write(self, arrays):
            raise OSError("disk full")

    monkeypatch.setitem(services.TABLE_WRITERS, fmt, FailsOnFirstChunk)
    out = tmp_path / f"catalog.{fmt}"
    with pytest.raises(OSError, match="disk full"):
        catalog_export(workflow=image_workflow, fmt=fmt, out_path=out, chunk_size=3)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["csv", "fits"])
def test_consensus_of_an_older_tree_or_of_another_shape_exports_as_missing(classified_sky, image_workflow, tmp_path,
                                                                           fmt):  # fmt: skip
    first = SubjectState.objects.filter(workflow=image_workflow).order_by("subject_id").first().subject_id
    # T0 was answered when it had two answers; T1 holds a value pyarrow's reader refuses (the slow path decodes it).
    Consensus.objects.filter(workflow=image_workflow, subject_id=first).update(
        counts={"T0": [1, 0], "T1": "odd"}, fractions={"T0": [1.0, 0.0], "T1": "odd"}, agreement={"T0": "odd"}
    )
    out = tmp_path / f"catalog.{fmt}"
    catalog_export(workflow=image_workflow, fmt=fmt, out_path=out)
    row = next(r for r in read_table(out, fmt) if r["subject_id"] == first)
    assert missing(row["t0_smooth_frac"]) and missing(row["t0_agreement"]) and row["t0_n_votes"] == 0
    assert row["t0_smooth_post"] > 0  # the rest of the row is intact


@pytest.mark.parametrize("fmt", TABLE_FORMATS)
def test_an_empty_catalog_opens_with_its_columns(classified_sky, spectrum_workflow, tmp_path, fmt):
    out = tmp_path / f"catalog.{fmt}"
    result = catalog_export(
        workflow=spectrum_workflow, fmt=fmt, out_path=out, filters=CatalogFilters(min_classifications=1000)
    )
    table = read_table(out, fmt)
    assert result.n_rows == len(table) == 0 and "ra" in table.colnames


@pytest.mark.parametrize("fmt", ["csv", "votable"])
def test_each_row_takes_the_newest_published_models_prediction(classified_sky, image_workflow, tmp_path, fmt):
    ids = list(SubjectState.objects.filter(workflow=image_workflow).order_by("subject_id")
               .values_list("subject_id", flat=True)[:3])  # fmt: skip
    ModelVersion.objects.filter(workflow=image_workflow, number=1).update(status="retired")
    newer = ModelVersion.objects.create(workflow=image_workflow, number=2, kind="question_head", status="active",
                                        sha256="cd" * 32)  # fmt: skip
    unpublished = ModelVersion.objects.create(workflow=image_workflow, number=3, kind="question_head",
                                              status="training", sha256="ef" * 32)  # fmt: skip
    older = ModelVersion.objects.get(workflow=image_workflow, number=1)
    probabilities = {key: [1 / len(t["answers"])] * len(t["answers"]) for key, t in
                     image_workflow.task_tree["tasks"].items()}  # fmt: skip
    for version, subject_id, bald in [(newer, ids[0], 0.5), (older, ids[1], 0.125), (unpublished, ids[0], 0.9),
                                      (unpublished, ids[2], 0.9)]:  # fmt: skip
        Prediction.objects.create(model_version=version, subject_id=subject_id, probabilities=probabilities,
                                  entropy=0.5, bald=bald, score=bald, in_training=version is newer)  # fmt: skip
    out = tmp_path / f"catalog.{fmt}"
    catalog_export(workflow=image_workflow, fmt=fmt, out_path=out)
    rows = {int(r["subject_id"]): r for r in read_table(out, fmt)}
    assert (rows[ids[0]]["model_version"], rows[ids[0]]["model_sha256"]) == (2, "cd" * 32)
    assert rows[ids[0]]["model_bald"] == pytest.approx(0.5) and bool(rows[ids[0]]["model_in_training"])
    assert rows[ids[1]]["model_version"] == 1 and rows[ids[1]]["model_bald"] == pytest.approx(0.125)
    assert not bool(rows[ids[1]]["model_in_training"])
    sha = rows[ids[2]]["model_sha256"]  # the fixture's version 1 scored ids[0] too: version 2 is newer
    assert rows[ids[2]]["model_version"] == 0 and (np.ma.is_masked(sha) or sha == "")  # ECSV reads "" as masked


def test_fixed_lists_keeps_rows_of_the_expected_length_only():
    lists = pa.array([[1, 2, 3], None, [4, 5], [6, None, 7]], type=pa.list_(pa.float64()))
    out = fixed_lists(lists.slice(0), 3)
    assert out[0].tolist() == [1, 2, 3] and np.isnan(out[1]).all() and np.isnan(out[2]).all()
    assert out[3][0] == 6 and np.isnan(out[3][1]) and out[3][2] == 7
    assert fixed_lists(lists.slice(2), 2).tolist()[0] == [4.0, 5.0]  # a sliced array keeps its offsets


def test_an_unknown_format_is_refused(classified_sky, image_workflow, tmp_path):
    with pytest.raises(CatalogExportError, match="unknown format"):
        catalog_export(workflow=image_workflow, fmt="xlsx", out_path=tmp_path / "x")


def test_the_command_lists_workflows_and_exports_one(classified_sky, image_workflow, tmp_path, capsys):
    call_command("export_catalog", "--list")
    lines = capsys.readouterr().out.strip().splitlines()
    assert f"{image_workflow.id} {image_workflow.project.slug}/{image_workflow.slug} {image_workflow.name}" in lines
    assert all(line.split()[0].isdigit() for line in lines)
    out = tmp_path / "cat.fits"
    call_command("export_catalog", f"{image_workflow.project.slug}/{image_workflow.slug}", "--format", "fits",
                 "-o", str(out), "--retired-only")  # fmt: skip
    assert "1 rows" in capsys.readouterr().out and len(Table.read(out, hdu="CATALOG")) == 1
    with pytest.raises(CommandError, match="matches no workflow"):
        call_command("export_catalog", "nope/none", "--format", "csv", "-o", str(tmp_path / "x.csv"))
    with pytest.raises(CommandError, match="no box tool"):
        call_command("export_catalog", str(image_workflow.id), "--format", "coco", "-o", str(tmp_path / "x.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.fits"]


@pytest.mark.parametrize(("fmt", "ifmt"), [("csv", "ecsv"), ("fits", "fits"), ("votable", "votable")])
def test_stilts_reads_each_format_with_units_ucds_and_descriptions(classified_sky, image_workflow, tmp_path, fmt,
                                                                    ifmt):  # fmt: skip
    # Debian's STILTS 3.4 has no Parquet reader (it needs extra jars); TOPCAT 4.9+ with them reads it.
    if shutil.which("stilts") is None:
        pytest.fail("STILTS is missing: run `make system-deps` (Debian package 'stilts')")
    out = tmp_path / f"catalog.{fmt}"
    catalog_export(workflow=image_workflow, fmt=fmt, out_path=out)
    meta = subprocess.run(["stilts", "tpipe", f"in={out}", f"ifmt={ifmt}", "cmd=meta name units ucd description",
                           "ofmt=csv", "omode=out"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert meta.returncode == 0 and "WARN" not in meta.stderr, meta.stderr
    columns = {row["Name"]: row for row in csv.DictReader(io.StringIO(meta.stdout))}
    assert columns["ra"]["Units"] == "deg" and columns["ra"]["UCD"] == "pos.eq.ra;meta.main"
    assert columns["t0_smooth_post"]["Description"].startswith("Skill-weighted posterior")
    count = subprocess.run(["stilts", "tpipe", f"in={out}", f"ifmt={ifmt}", "omode=count"], capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert count.returncode == 0 and "WARN" not in count.stderr, count.stderr
    n_rows = SubjectState.objects.filter(workflow=image_workflow).count()
    assert count.stdout.split() == ["columns:", str(len(columns)), "rows:", str(n_rows)]


def staff_client():
    user = get_user_model().objects.create_user("curator", password="pw", is_staff=True)
    client = Client()
    client.force_login(user)
    return client, user


def test_export_api_is_for_staff_only(classified_sky, image_workflow):
    url = f"/api/workflows/{image_workflow.id}/exports/"
    assert Client().post(url, {"format": "csv"}, content_type="application/json").status_code == 403
    volunteer = get_user_model().objects.create_user("vol", password="pw")
    client = Client()
    client.force_login(volunteer)
    response = client.post(url, {"format": "csv"}, content_type="application/json")
    assert response.status_code == 403 and response.json()["error"]["code"]
    assert ExportJob.objects.count() == 0


def test_export_api_refuses_bad_input_in_the_uniform_error_shape(classified_sky, image_workflow):
    client, _ = staff_client()
    url = f"/api/workflows/{image_workflow.id}/exports/"
    bad_format = client.post(url, {"format": "xlsx"}, content_type="application/json")
    assert bad_format.status_code == 400 and "format" in json.dumps(bad_format.json()["error"])
    coco = client.post(url, {"format": "coco"}, content_type="application/json")
    assert coco.status_code == 400 and "no box tool" in coco.json()["error"]["message"]
    negative = client.post(url, {"format": "csv", "min_classifications": -1}, content_type="application/json")
    assert negative.status_code == 400
    assert client.post("/api/workflows/999999/exports/", {"format": "csv"},
                       content_type="application/json").status_code == 404  # fmt: skip
    assert ExportJob.objects.count() == 0


def test_export_job_service_runs_and_the_api_serves_the_file(
    classified_sky, image_workflow, django_capture_on_commit_callbacks
):
    client, user = staff_client()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(f"/api/workflows/{image_workflow.id}/exports/", {"format": "votable",
                               "retired_only": True}, content_type="application/json")  # fmt: skip
    assert response.status_code == 202, response.json()
    assert len(callbacks) == 1  # the task is sent once the job row is committed
    job = ExportJob.objects.get(pk=response.json()["id"])
    assert job.status == "queued" and job.created_by == user and job.filters["retired_only"] is True
    services.export_job_run(job=services.export_job_claim(job_id=job.id))
    assert services.export_job_claim(job_id=job.id) is None  # a duplicate message finds it taken
    status = client.get(f"/api/exports/{job.id}/").json()
    assert status["status"] == "done" and status["progress"] == 1.0 and status["n_rows"] == 1
    assert status["download_url"].endswith(f"/api/exports/{job.id}/download/")
    download = client.get(status["download_url"])
    assert download.status_code == 200 and "attachment" in download["Content-Disposition"]
    body = b"".join(download.streaming_content)
    assert b"<VOTABLE" in body and b'name="workflow"' in body
    assert Client().get(status["download_url"]).status_code == 403


@pytest.mark.services
def test_an_export_job_runs_on_a_real_worker_and_downloads_from_the_api(transactional_db, tmp_path):
    project = sky_simulate(plan=SkyPlan(project="export-job", n_images=12, n_spectra=0, n_fields=0, seed=3))
    workflow = project.workflows.get(kind="image")
    worker = default_queue_worker(tmp_path / "worker.log")
    try:
        client, _ = staff_client()
        started = client.post(f"/api/workflows/{workflow.id}/exports/", {"format": "fits"},
                              content_type="application/json")  # fmt: skip
        assert started.status_code == 202, started.json()
        url = f"/api/exports/{started.json()['id']}/"
        deadline = time.monotonic() + 120
        while (status := client.get(url).json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, f"the export did not finish\n{worker.log()[-3000:]}"
            time.sleep(0.2)
    finally:
        worker.stop()
    assert status["status"] == "done", status["error"]
    assert status["progress"] == 1.0 and status["n_rows"] == 12 and status["provenance"]["format"] == "fits"
    download = client.get(status["download_url"])
    path = tmp_path / "download.fits"
    path.write_bytes(b"".join(download.streaming_content))
    table = Table.read(path, hdu="CATALOG")
    assert len(table) == 12 and str(table["dec"].unit) == "deg"
    page = client.get("/exports/")
    assert page.status_code == 200 and status["download_url"] in page.content.decode()


def default_queue_worker(log_path):
    """A real worker on the default queue, where export jobs go (the shared fixture's worker takes only gpu)."""
    args = [sys.executable, "-m", "celery", "-A", "labeler", "worker", "-Q", "default", "--pool", "solo",
            "--loglevel", "INFO", "--without-mingle", "--without-gossip", "--without-heartbeat",
            "-n", f"skyloop-export-{os.getpid()}@%h"]  # fmt: skip
    worker = ManagedProcess(args, log_path, " ready.")
    worker.wait_ready()
    return worker
