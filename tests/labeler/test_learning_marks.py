"""Models trained on drawn marks through the real services: field detector and DLA finder (tiny, few steps)."""

import uuid
from pathlib import Path

import numpy as np
import pytest

from labeler.classifications.services import classification_submit
from labeler.learning import absorbers, detection, registry, selectors, services, triggers
from labeler.learning.models import EvaluationSet, ModelVersion, Prediction
from labeler.subjects import services as subject_services
from labeler.subjects.models import Subject
from labeler.subjects.simulation import SkyPlan, sky_simulate
from labeler.workflows.services import FIELD_ROLE
from mlcore import io as fitsio
from mlcore.simulate import fields

TINY = fields.FieldConfig(size=64, n_galaxies=(2, 3), n_stars=(1, 2), trail_fraction=0.5)
TOOL = {"galaxy": 0, "star": 1}
TRAIL_TOOL = 2
N_FIELDS = 10


def truth_marks(truth: dict) -> list[dict]:
    """What a careful volunteer draws: every detectable object of the simulation's truth."""
    drawn = [
        {"tool": TOOL[b["label"]], "x": b["x"], "y": b["y"], "width": b["width"], "height": b["height"]}
        for b in truth["boxes"]
        if b["detectable"]
    ]
    drawn += [
        {"tool": TRAIL_TOOL, "x1": t["x1"], "y1": t["y1"], "x2": t["x2"], "y2": t["y2"]}
        for t in truth["lines"]
        if t["detectable"]
    ]
    return drawn


@pytest.fixture
def field_workflow(db, monkeypatch):
    """N_FIELDS simulated 64 x 64 fields, each drawn by two careful volunteers; tiny detector training."""
    monkeypatch.setattr(detection, "DETECTOR_MIN_STEPS", 1)
    monkeypatch.setattr(detection, "DETECTOR_MIN_EPOCHS", 2)
    monkeypatch.setattr(detection, "DETECTOR_MAX_EPOCHS", 2)
    project = sky_simulate(plan=SkyPlan(project="tiny-fields", n_images=0, n_spectra=0, n_fields=0))
    workflow = project.workflows.get(kind="field")
    workflow.label_min_votes = 2
    workflow.train_min_new_labels = 1000  # trained by hand below
    workflow.save()
    new = [
        subject_services.NewSubject(
            kind=Subject.Kind.IMAGE,
            external_id=f"tiny-field-{i}",
            data=fitsio.ImageData(cube=cube, bands=TINY.bands, ra=150.0, dec=2.0, nan_fraction=0.0, header={}),
            truth={k: truth[k] for k in ("boxes", "lines", "class")},
            metadata={"role": FIELD_ROLE},
        )
        for i, (cube, truth) in enumerate(fields.simulate_fields(N_FIELDS, seed=3, config=TINY))
    ]
    for subject in subject_services.subjects_create(project=project, new_subjects=new):
        answer = 0 if subject.truth["class"] == "trail" else 1
        for volunteer in ("a:1", "a:2"):
            classification_submit(
                workflow=workflow, subject_id=subject.id, volunteer_key=volunteer,
                annotation=[{"task": "T0", "answer": answer}], marks=truth_marks(subject.truth),
                client_uuid=uuid.uuid4(),
            )
    return workflow


def train(workflow) -> ModelVersion:
    queued = triggers.training_maybe_queue(workflow=workflow, force=True)
    assert queued is not None and queued.kind == "detector"
    version = services.model_version_claim(model_version_id=queued.id)
    services.model_version_train(model_version=version)
    version.refresh_from_db()
    return version


def test_field_workflows_train_a_detector_on_consensus_boxes_and_store_boxes_per_field(field_workflow):
    held_out = sorted(field_workflow.states.values_list("subject_id", flat=True))[:2]
    EvaluationSet.objects.create(workflow=field_workflow, subject_ids=held_out)
    version = train(field_workflow)
    assert version.status == "active" and version.kind == "detector", version.error
    metrics = version.metrics
    assert metrics["classes"] == ["Galaxy", "Star", "Asteroid or satellite trail"]
    assert metrics["heldout"]["n"] >= 2 and 0.0 <= metrics["map50"] <= 1.0
    assert [row["epoch"] for row in metrics["curve"]] == [1, 2] and np.isfinite(metrics["curve"][-1]["train_loss"])
    assert version.progress == 1.0 and version.progress_detail["phase"] == "done"

    predictions = Prediction.objects.filter(model_version=version)
    active = set(field_workflow.states.filter(status="active").values_list("subject_id", flat=True))
    assert set(predictions.values_list("subject_id", flat=True)) == active
    evaluation = set(EvaluationSet.objects.get(workflow=field_workflow).subject_ids)
    trained_on = set(predictions.filter(in_training=True).values_list("subject_id", flat=True))
    assert trained_on and not trained_on & evaluation
    for prediction in predictions:
        boxes = prediction.probabilities["boxes"]
        scores = [b[4] for b in boxes]
        assert scores == sorted(scores, reverse=True)
        assert all(b[0] < b[2] and b[1] < b[3] and b[5] in (0, 1, 2) for b in boxes)
        total, mean = detection.detection_uncertainty(np.asarray(scores))
        assert prediction.entropy == pytest.approx(total, rel=1e-3) and prediction.score == prediction.entropy

    field = predictions.order_by("-entropy").first()
    offered = selectors.predicted_boxes(workflow=field_workflow, subject_id=field.subject_id, min_score=0.0)
    assert len(offered) == len(field.probabilities["boxes"])
    assert all({"tool", "type", "label", "x", "y", "width", "height", "score"} <= set(b) for b in offered)
    strict = selectors.predicted_boxes(workflow=field_workflow, subject_id=field.subject_id, min_score=0.99)
    assert all(b["score"] >= 0.99 for b in strict)


def test_a_second_detector_fine_tunes_the_first_and_the_registry_decides_on_map(field_workflow, monkeypatch):
    monkeypatch.setattr(registry, "EVAL_MIN", 1)  # compare even on this tiny evaluation set
    first = train(field_workflow)
    second = train(field_workflow)
    first.refresh_from_db()
    assert second.parent == first
    decision = second.metrics["promotion"]
    new, old = decision["candidate"]["map50"], decision["active"]["map50"]
    assert "mAP@0.5" in decision["reason"] and decision["accepted"] == ((new or -1) >= (old or -1))
    expected = ("retired", "active") if decision["accepted"] else ("active", "ready")
    assert (first.status, second.status) == expected


def test_a_field_workflow_without_drawing_tools_fails_with_a_clear_reason(field_workflow):
    field_workflow.task_tree = {k: v for k, v in field_workflow.task_tree.items() if k != "marks"}
    field_workflow.save()
    queued = triggers.training_maybe_queue(workflow=field_workflow, force=True)
    version = services.model_version_claim(model_version_id=queued.id)
    with pytest.raises(ValueError, match="no box or line drawing tool"):
        services.model_version_train(model_version=version)
    version.refresh_from_db()
    assert version.status == "failed" and "no box or line" in version.error
    assert not Prediction.objects.filter(model_version=version).exists()


@pytest.fixture
def dla_workflow(db, monkeypatch):
    """16 simulated quasars, each marked by two careful volunteers (the true DLA, if any); a short finder run."""
    monkeypatch.setattr(absorbers, "DLA_EPOCHS", 2)
    project = sky_simulate(plan=SkyPlan(project="tiny-dla", n_images=0, n_spectra=16, n_fields=0, seed=5))
    workflow = project.workflows.get(kind="spectrum")
    workflow.label_min_votes = 2
    workflow.train_min_new_labels = 1000
    workflow.save()
    for state in workflow.states.select_related("subject"):
        truth = state.subject.truth
        marks = [{"tool": 0, "z": truth["z_abs"], "log_nhi": truth["log_nhi"]}] if truth["z_abs"] else []
        for volunteer in ("a:1", "a:2"):
            classification_submit(
                workflow=workflow, subject_id=state.subject_id, volunteer_key=volunteer,
                annotation=[{"task": "T0", "answer": 0 if marks else 1}], marks=marks, client_uuid=uuid.uuid4(),
            )
    return workflow


def test_spectrum_workflows_train_a_dla_finder_on_consensus_absorbers_beside_the_question_model(dla_workflow):
    held_out = sorted(dla_workflow.states.values_list("subject_id", flat=True))[:4]
    EvaluationSet.objects.create(workflow=dla_workflow, subject_ids=held_out)
    queued = triggers.training_maybe_queue(workflow=dla_workflow, force=True)
    version = services.model_version_claim(model_version_id=queued.id)
    services.model_version_train(model_version=version)
    version.refresh_from_db()
    assert version.kind == "spectrum_cnn" and version.status == "active", version.error
    finder = version.metrics["dla"]
    evaluation = EvaluationSet.objects.get(workflow=dla_workflow).subject_ids
    assert set(held_out) <= set(evaluation)  # members never leave
    assert finder["n_train"] == 16 - len(evaluation) and len(finder["sha256"]) == 64, finder
    assert finder["heldout_n"] == len(evaluation)
    assert {"completeness", "purity", "sigma_z", "sigma_log_nhi"} <= set(finder)
    predictions = Prediction.objects.filter(model_version=version)
    assert predictions.count() == dla_workflow.states.filter(status="active").count()
    for prediction in predictions:
        assert set(prediction.probabilities) == {"T0", "dlas"}
        for dla in prediction.probabilities["dlas"]:
            assert {"z", "log_nhi", "confidence"} == set(dla) and 0.5 <= dla["confidence"] <= 1.0
    subject = predictions.first().subject_id
    assert selectors.predicted_dlas(workflow=dla_workflow, subject_id=subject) == Prediction.objects.get(
        model_version=version, subject_id=subject
    ).probabilities["dlas"]
    assert registry.checkpoint_problem(version) is None
    (Path(finder["checkpoint_dir"]) / "model.pt").write_bytes(b"tampered")
    assert "DLA finder" in registry.checkpoint_problem(version)


def test_without_agreed_absorbers_the_finder_waits_and_the_question_model_still_trains(spectrum_workflow):
    spectrum_workflow.label_min_votes = 1
    spectrum_workflow.save()
    for state in spectrum_workflow.states.all():
        classification_submit(
            workflow=spectrum_workflow, subject_id=state.subject_id, volunteer_key="a:1",
            annotation=[{"task": "T0", "answer": 1}], client_uuid=uuid.uuid4(),
        )
    queued = triggers.training_maybe_queue(workflow=spectrum_workflow, force=True)
    version = services.model_version_claim(model_version_id=queued.id)
    services.model_version_train(model_version=version)
    version.refresh_from_db()
    assert version.status == "active" and "skipped" in version.metrics["dla"]
    assert selectors.predicted_dlas(workflow=spectrum_workflow, subject_id=state.subject_id) == []


@pytest.mark.services
def test_a_real_worker_trains_the_spectrum_model_and_finder_reports_progress_and_registers_it(celery_worker_process):
    import time

    from labeler.learning.models import ModelEvent

    project = sky_simulate(plan=SkyPlan(project="worker-dla", n_images=0, n_spectra=16, n_fields=0, seed=5))
    workflow = project.workflows.get(kind="spectrum")
    workflow.label_min_votes = 2
    workflow.train_min_new_labels = 16  # the last submit sends the training message to the worker
    workflow.save()
    for state in workflow.states.select_related("subject"):
        truth = state.subject.truth
        marks = [{"tool": 0, "z": truth["z_abs"], "log_nhi": truth["log_nhi"]}] if truth["z_abs"] else []
        for volunteer in ("a:1", "a:2"):
            classification_submit(
                workflow=workflow, subject_id=state.subject_id, volunteer_key=volunteer,
                annotation=[{"task": "T0", "answer": 0 if marks else 1}], marks=marks, client_uuid=uuid.uuid4(),
            )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        version = ModelVersion.objects.get(workflow=workflow)
        assert version.status != "failed", f"{version.error}\n{celery_worker_process.log()[-3000:]}"
        if version.status == "active":
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no active version in 300 s\n{celery_worker_process.log()[-3000:]}")
    assert version.progress == 1.0 and version.progress_detail["phase"] == "done" and version.attempts == 1
    assert len(version.metrics["dla"]["sha256"]) == 64 and version.metrics["curve"]
    assert ModelEvent.objects.get(model_version=version).action == "promoted"
    assert all("dlas" in p.probabilities for p in Prediction.objects.filter(model_version=version))
