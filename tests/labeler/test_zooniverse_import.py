"""Importing a Zooniverse (Panoptes) export: a Galaxy Zoo-like workflow in two versions, with a drawing task.

The fixture CSVs in tests/fixtures/zooniverse/ follow Panoptes' export columns; the subjects'
images are written here as PNG/JPEG files named as a user would have downloaded them.
"""

from __future__ import annotations

import csv
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from labeler.classifications.models import Classification, Consensus, VolunteerSkill
from labeler.subjects import storage
from labeler.subjects.models import Subject
from labeler.workflows import zooniverse as zoo
from labeler.workflows.models import SubjectState, Workflow
from labeler.workflows.zooniverse import ZooniverseError
from labeler.workflows.zooniverse_import import zooniverse_import

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zooniverse"
# Local copies named by the location's file name, one by subject id, one JPEG.
MEDIA = {
    71001: "abc1.png",
    71002: "71002.png",
    71003: "f6a7.jpeg",
    71004: "b8c9.png",
    71005: "e0f1.png",
    71006: "a2b3.png",
}


@pytest.fixture
def media_dir(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    rng = np.random.default_rng()  # fresh pixels: stored files are named by their checksum
    for name in MEDIA.values():
        pixels = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
        pixels[0, :, :] = 255  # the top row of the picture: must become the last FITS row
        Image.fromarray(pixels).save(folder / name)
    return folder


def run_import(media_dir, classifications="classifications.csv", **kwargs):
    return zooniverse_import(
        classifications=kwargs.pop("classifications_path", FIXTURES / classifications),
        workflows=FIXTURES / "workflows.csv",
        subjects=FIXTURES / "subjects.csv",
        project_slug="galaxy-zoo",
        media_dir=media_dir,
        **kwargs,
    )


def stored_state():
    files = sorted(storage.media_path("subjects").rglob("*.fits")) if storage.media_path("subjects").exists() else []
    return (
        Workflow.objects.count(),
        Subject.objects.count(),
        Classification.objects.count(),
        Consensus.objects.count(),
        VolunteerSkill.objects.count(),
        files,
    )


def test_it_maps_the_newest_workflow_version_to_a_task_tree(db, media_dir):
    summary = run_import(media_dir)
    workflow = Workflow.objects.get(project__slug="galaxy-zoo", slug="zooniverse-4249")
    tree = workflow.task_tree
    assert workflow.version == 14 and workflow.retire_after == 4 and summary.workflows == ["galaxy-zoo/zooniverse-4249"]
    assert tree["first"] == "T0" and list(tree["tasks"]) == ["T0", "T1", "T2"]
    t0 = tree["tasks"]["T0"]
    assert t0["question"] == "Is the galaxy simply smooth and rounded, with no sign of a disk?"
    assert [a["label"] for a in t0["answers"]] == ["Smooth", "Features or disk", "Star or artifact"]
    # T2 -> T3 (multiple choice, left out) -> T4 (drawing) -> end: the answer ends the questions.
    assert [a["next"] for a in t0["answers"]] == ["T1", "T2", None]
    assert [a["next"] for a in tree["tasks"]["T2"]["answers"]] == [None, None]
    assert tree["marks"]["tools"] == [
        {"type": "box", "label": "Other galaxy"},
        {"type": "line", "label": "Satellite trail"},
    ]
    assert any("T3 (multiple)" in w for w in summary.warnings)
    assert any("tool 2 (point)" in w for w in summary.warnings)


def test_it_imports_subjects_and_classifications_with_volunteers_and_times(db, media_dir):
    summary = run_import(media_dir)
    assert summary.subjects_created == 6
    subject = Subject.objects.get(project__slug="galaxy-zoo", external_id="71001")
    assert subject.ra == pytest.approx(150.01) and subject.metadata["shape"] == [3, 64, 64]
    assert subject.metadata["zooniverse"]["metadata"]["#objid"] == "SDSS J71001"
    from labeler.subjects.services import subject_load_image

    cube = subject_load_image(subject).cube
    assert np.allclose(cube[:, -1, :], 1.0)  # the picture's top row is the FITS top row
    # 20 rows: one gold-standard classification becomes gold answers, one repeat is skipped.
    assert summary.classifications_created == 18 == Classification.objects.count()
    assert summary.skipped["repeat classifications of a subject by the same volunteer"] == 1
    first = Classification.objects.get(client_uuid=zoo.classification_uuid("60000107"))
    assert first.volunteer_key == "zoo:1001" and first.workflow_version == 13
    assert first.annotation == [{"task": "T0", "answer": 0}]  # "Smooth" was answer 1 in version 13
    assert first.created_at.isoformat() == "2019-02-01T10:00:31+00:00"
    assert first.duration_ms == 30500 and "Firefox" in first.user_agent
    anonymous = set(
        Classification.objects.filter(volunteer_key__startswith="zoo-ip:").values_list("volunteer_key", flat=True)
    )
    assert anonymous == {"zoo-ip:3f2a9c0b7d1e", "zoo-ip:77aa01bc9e3d"}
    state = SubjectState.objects.get(subject__external_id="71004", workflow__slug="zooniverse-4249")
    assert state.gold_answers == {"T0": 1, "T2": 1}


def test_consensus_skills_and_retirement_are_formed_after_import(db, media_dir):
    summary = run_import(media_dir)
    workflow = Workflow.objects.get(slug="zooniverse-4249")
    smooth = Consensus.objects.get(workflow=workflow, subject__external_id="71001")
    assert smooth.n_classifications == 4 and smooth.counts["T0"] == [4, 0, 0] and smooth.counts["T1"] == [2, 1, 0]
    assert max(smooth.posterior["T0"]) == smooth.posterior["T0"][0] > 0.9
    assert VolunteerSkill.objects.filter(workflow=workflow, volunteer_key="zoo-ip:3f2a9c0b7d1e").exists()
    states = {s.subject.external_id: s for s in workflow.states.select_related("subject")}
    assert states["71006"].status == "retired"
    assert states["71006"].retirement_reason == "zooniverse_classification_count"
    assert states["71006"].retired_at.isoformat() == "2019-03-02T10:00:00+00:00"
    assert states["71001"].status == "retired" and states["71001"].classification_count == 4  # Skyloop's rules
    assert states["71005"].status == "active" and states["71005"].classification_count == 1
    assert summary.retired == sum(s.status == "retired" for s in states.values())


def test_drawn_boxes_and_lines_are_flipped_to_rows_from_the_bottom_and_clustered(db, media_dir):
    run_import(media_dir)
    boxes = Classification.objects.get(client_uuid=zoo.classification_uuid("60000114")).marks
    # Zooniverse's box at y=10 (from the top), 20 high, on a 64-row image: rows 34..54 from the bottom.
    assert boxes == [{"tool": 0, "x": 10.0, "y": 34.0, "width": 20.0, "height": 20.0}]
    consensus = Consensus.objects.get(subject__external_id="71002")
    box = consensus.marks["0"]["clusters"][0]
    assert box["support"] == 4 and box["y"] == pytest.approx(34, abs=1.5)
    line = consensus.marks["1"]["clusters"][0]
    assert line["support"] == 2 and {round(line["y1"]), round(line["y2"])} == {4, 62}


def test_reimporting_the_same_export_stores_nothing_twice(db, media_dir):
    run_import(media_dir)
    before = stored_state()
    again = run_import(media_dir)
    assert again.classifications_created == 0 and again.classifications_existing == 18
    assert again.subjects_created == 0 and again.workflows_created == 0
    assert stored_state() == before


def test_a_corrupt_annotations_cell_names_row_and_column_and_stores_nothing(db, media_dir):
    before = stored_state()
    with pytest.raises(CommandError, match=r"classifications_corrupt.csv row 7, column 'annotations': not valid JSON"):
        call_command(
            "import_zooniverse",
            "--classifications",
            str(FIXTURES / "classifications_corrupt.csv"),
            "--workflows",
            str(FIXTURES / "workflows.csv"),
            "--media-dir",
            str(media_dir),
        )
    assert stored_state() == before


def test_hostile_json_is_refused_without_crashing(db, media_dir, tmp_path):
    rows = list(csv.reader((FIXTURES / "classifications.csv").open(newline="")))
    rows[3][11] = "[" * 100_000 + "]" * 100_000  # nesting deep enough to exhaust the JSON parser's stack
    rows[4][10] = '{"started_at": "not a time", "subject_dimensions": "huge"}'  # odd but harmless metadata
    hostile = tmp_path / "hostile.csv"
    with hostile.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    before = stored_state()
    with pytest.raises(ZooniverseError, match=r"hostile.csv row 4, column 'annotations'"):
        run_import(media_dir, classifications_path=hostile)
    assert stored_state() == before


def test_a_failure_after_subjects_were_stored_removes_their_files(db, media_dir, monkeypatch):
    import labeler.workflows.zooniverse_import as service

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(service, "skills_reestimate", explode)
    before = stored_state()
    with pytest.raises(RuntimeError, match="disk full"):
        run_import(media_dir)
    assert stored_state() == before


def test_subjects_without_a_local_image_are_refused_with_their_ids(db, media_dir):
    (media_dir / "abc1.png").unlink()
    shutil.copy(media_dir / "e0f1.png", media_dir / "unrelated.png")
    with pytest.raises(ZooniverseError, match=r"1 subject\(s\) have no local image .*\[71001\]"):
        run_import(media_dir)
    assert not Subject.objects.exists()


def test_a_classification_of_an_unknown_workflow_version_is_refused(db, media_dir, tmp_path):
    rows = list(csv.reader((FIXTURES / "classifications.csv").open(newline="")))
    rows[2][6] = "12.9"
    changed = tmp_path / "old.csv"
    with changed.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(ZooniverseError, match=r"old.csv row 3, column 'workflow_version': version 12 of workflow 4249"):
        run_import(media_dir, classifications_path=changed)


def test_a_workflow_without_a_single_answer_question_cannot_be_mapped():
    tasks = {"T0": {"type": "drawing", "tools": [{"type": "rectangle", "label": "Box"}]}}
    with pytest.raises(ZooniverseError, match="no single-answer question"):
        zoo.map_workflow(name="boxes only", tasks=tasks, first_task="T0", strings={})


def test_answers_are_matched_by_label_across_versions_and_by_index_in_old_exports():
    tasks = {"T0": {"type": "single", "question": "Q?", "answers": [{"label": "A"}, {"label": "B"}]}}
    mapped = zoo.map_workflow(name="w", tasks=tasks, first_task="T0", strings={})
    older = zoo.version_tasks({"T0": {"type": "single", "answers": [{"label": "B"}, {"label": "A"}]}}, {})
    by_label = zoo.map_annotations([{"task": "T0", "value": "A"}], version=older, mapped=mapped, image_height=None)
    by_index = zoo.map_annotations([{"task": "T0", "value": 0}], version=older, mapped=mapped, image_height=None)
    gone = zoo.map_annotations([{"task": "T0", "value": "C"}], version=older, mapped=mapped, image_height=None)
    assert by_label.path == [{"task": "T0", "answer": 0}] and by_index.path == [{"task": "T0", "answer": 1}]
    assert gone.path == [] and gone.dropped_steps == 1


def test_volunteer_keys_and_client_uuids_are_stable():
    assert zoo.volunteer_key(user_name="kim", user_id="42", user_ip="ab") == "zoo:42"
    assert zoo.volunteer_key(user_name="not-logged-in-ab12", user_id="", user_ip="ab12") == "zoo-ip:ab12"
    assert zoo.classification_uuid("123") == zoo.classification_uuid(" 123 ") != zoo.classification_uuid("124")
    assert isinstance(zoo.classification_uuid("1"), uuid.UUID)
