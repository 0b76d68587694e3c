import uuid
from unittest import mock

import numpy as np
import pytest
from django.db import transaction

from labeler.classifications.services import classification_submit
from labeler.learning import registry, services, triggers
from labeler.learning.models import EvaluationSet, ModelVersion, Prediction
from labeler.workflows.models import SubjectState
from mlcore.simulate import sky
from mlcore.tasktree import path_for_answers


def label_subjects(workflow, stop, start=0):
    """Give subjects [start, stop) of the workflow enough expert votes to count as labels."""
    votes = workflow.label_min_votes
    answers = sky.CLASS_ANSWERS
    states = list(SubjectState.objects.filter(workflow=workflow).select_related("subject").order_by("id")[start:stop])
    for state in states:
        truth = state.subject.truth["class"]
        path = path_for_answers(workflow.task_tree, lambda task, n, t=truth: answers[t].get(task, 0))
        for v in range(votes):
            classification_submit(
                workflow=workflow, subject_id=state.subject_id, volunteer_key=f"a:{v}",
                annotation=path, client_uuid=uuid.uuid4(),
            )
    return states


@pytest.fixture
def trainable(image_workflow):
    image_workflow.train_min_new_labels = 10
    image_workflow.label_min_votes = 2
    image_workflow.retire_after = 10
    image_workflow.save()
    return image_workflow


def test_it_queues_one_training_on_commit_when_enough_labels_arrive(trainable, django_capture_on_commit_callbacks):
    with mock.patch("labeler.learning.tasks.train_model_version.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            label_subjects(trainable, 9)
        assert not ModelVersion.objects.exists()
        with django_capture_on_commit_callbacks(execute=True):
            label_subjects(trainable, 12, start=9)
    versions = list(ModelVersion.objects.all())
    assert len(versions) == 1 and versions[0].status == "queued" and versions[0].label_count == 10
    delay.assert_called_once_with(versions[0].id)


def test_it_does_not_queue_a_second_training_while_one_is_in_progress(trainable):
    label_subjects(trainable, 12)
    assert ModelVersion.objects.count() == 1
    assert triggers.training_maybe_queue(workflow=trainable, force=True) is None


def test_training_registers_a_checkpoint_and_writes_priorities_for_the_active_pool(trainable):
    label_subjects(trainable, 12)
    version = services.model_version_claim(model_version_id=ModelVersion.objects.get().id)
    services.model_version_train(model_version=version)
    version.refresh_from_db()
    assert version.status == "active" and version.scored_at is not None
    assert len(version.sha256) == 64 and "val_accuracy" in version.metrics
    active = SubjectState.objects.filter(workflow=trainable, status="active")
    assert set(active.values_list("priority_version", flat=True)) == {version.id}
    assert Prediction.objects.filter(model_version=version).count() == active.count()
    scores = dict(Prediction.objects.filter(model_version=version).values_list("subject_id", "score"))
    for state in active:
        assert state.priority == pytest.approx(scores[state.subject_id])


def test_a_claimed_version_cannot_be_claimed_twice(trainable):
    label_subjects(trainable, 12)
    version_id = ModelVersion.objects.get().id
    assert services.model_version_claim(model_version_id=version_id) is not None
    assert services.model_version_claim(model_version_id=version_id) is None


def test_an_older_version_never_overwrites_newer_priorities(trainable):
    states = list(SubjectState.objects.filter(workflow=trainable))
    old = ModelVersion.objects.create(workflow=trainable, number=1, kind="question_head")
    new = ModelVersion.objects.create(workflow=trainable, number=2, kind="question_head")
    pool = SubjectState.objects.filter(workflow=trainable)
    with transaction.atomic():
        registry.priorities_write(new, pool, {s.subject_id: 0.9 for s in states})
        registry.priorities_write(old, pool, {s.subject_id: 0.1 for s in states})
    assert set(pool.values_list("priority", flat=True)) == {0.9}
    with transaction.atomic():  # a rollback overrides on purpose
        registry.priorities_write(old, pool, {s.subject_id: 0.1 for s in states[1:]}, deliberate=True)
    assert sorted(pool.values_list("priority", flat=True)) == [0.1] * (len(states) - 1) + [0.9]


def test_a_failing_training_is_marked_failed_with_the_reason(trainable):
    label_subjects(trainable, 12)
    version = services.model_version_claim(model_version_id=ModelVersion.objects.get().id)
    with mock.patch("labeler.learning.services.fit", side_effect=FloatingPointError("loss is nan")):
        with pytest.raises(FloatingPointError):
            services.model_version_train(model_version=version)
    version.refresh_from_db()
    assert version.status == "failed" and "loss is nan" in version.error


def test_the_spectrum_workflow_trains_a_1d_cnn_through_the_same_loop(spectrum_workflow):
    spectrum_workflow.train_min_new_labels = 6
    spectrum_workflow.label_min_votes = 1
    spectrum_workflow.save()
    for state in SubjectState.objects.filter(workflow=spectrum_workflow).select_related("subject"):
        answer = 0 if state.subject.truth["class"] == "dla" else 1
        classification_submit(
            workflow=spectrum_workflow, subject_id=state.subject_id, volunteer_key="a:1",
            annotation=[{"task": "T0", "answer": answer}], client_uuid=uuid.uuid4(),
        )
    version = services.model_version_claim(model_version_id=ModelVersion.objects.get(workflow=spectrum_workflow).id)
    services.model_version_train(model_version=version)
    version.refresh_from_db()
    assert version.kind == "spectrum_cnn" and version.status == "active"


def test_ingest_queues_embedding_of_new_cutouts_not_fields_on_commit(db, django_capture_on_commit_callbacks):
    from labeler.subjects.simulation import SkyPlan, sky_simulate

    with mock.patch("labeler.learning.tasks.embed_subjects.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            project = sky_simulate(plan=SkyPlan(project="embed", n_images=5, n_spectra=2, seed=0))
    queued = [sid for call in delay.call_args_list for sid in call.args[0]]
    images = list(project.subjects.filter(kind="image"))
    cutouts = [s.id for s in images if s.metadata.get("role") != "field"]
    assert len(cutouts) < len(images)  # a field is an image too, but is not embedded
    assert sorted(queued) == sorted(cutouts)


def test_precomputed_embeddings_are_cached_once_per_subject(image_workflow):
    from labeler.subjects.models import SubjectEmbedding

    ids = list(image_workflow.states.values_list("subject_id", flat=True)[:4])
    assert services.embeddings_precompute(subject_ids=ids + [10**9]) == 4
    assert services.embeddings_precompute(subject_ids=ids) == 4
    assert SubjectEmbedding.objects.filter(subject_id__in=ids).count() == 4


def test_a_version_scores_on_the_features_it_was_trained_on_after_the_precision_changes(trainable, settings):
    from labeler.learning import datasets

    settings.SKYLOOP_CPU_PRECISION = "fp32"
    label_subjects(trainable, 12)
    version = services.model_version_claim(model_version_id=ModelVersion.objects.get().id)
    services.model_version_train(model_version=version)
    version.refresh_from_db()
    assert version.backbone == datasets.image_backbone("fp32").name == "efficientnet-lite0-imagenet@96"
    settings.SKYLOOP_CPU_PRECISION = "bf16"  # the deployment switches; the version keeps its features
    ids = list(trainable.states.values_list("subject_id", flat=True)[:3])
    assert datasets.features(trainable, ids)[1].endswith("-bf16")
    assert datasets.features(trainable, ids, trained_on=version.backbone)[1] == version.backbone
    assert services.model_version_score_pool(model_version=version) == trainable.states.filter(status="active").count()
    with pytest.raises(ValueError, match="cannot compute the efficientnet-lite0-imagenet@64 features"):
        datasets.features(trainable, ids, trained_on="efficientnet-lite0-imagenet@64")


def test_training_measures_the_model_as_an_agent_and_flags_its_training_subjects(trainable):
    labelled = label_subjects(trainable, 12)
    version = services.model_version_claim(model_version_id=ModelVersion.objects.get().id)
    services.model_version_train(model_version=version)
    version.refresh_from_db()
    confusion = np.asarray(version.agent_confusion)
    assert confusion.shape == (3, 12) and np.allclose(confusion.sum(axis=1), 1.0)
    flagged = set(
        Prediction.objects.filter(model_version=version, in_training=True).values_list("subject_id", flat=True)
    )
    active = set(SubjectState.objects.filter(workflow=trainable, status="active").values_list("subject_id", flat=True))
    held_out = set(EvaluationSet.objects.get(workflow=trainable).subject_ids)
    assert held_out and held_out <= {s.subject_id for s in labelled}  # the fixed evaluation set is never trained on
    assert flagged == ({s.subject_id for s in labelled} - held_out) & active


class Clock:
    """A hand-advanced monotonic clock for the progress reporter."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_written_at_most_once_a_second_with_an_eta(trainable):
    from labeler.learning.progress import ProgressReporter

    version = ModelVersion.objects.create(workflow=trainable, number=1, kind="question_head")
    clock = Clock()
    reporter = ProgressReporter(version, clock=clock)
    assert reporter.update("training", 0.0)  # a new phase is always written
    for step in range(1, 10):
        clock.now = 0.1 * step
        assert not reporter.update("training", step / 20, epoch=step, epochs=20)
    clock.now = 10.0
    assert reporter.update("training", 0.5, epoch=10, epochs=20, step=40)
    assert reporter.writes == 2
    version.refresh_from_db()
    assert version.progress == pytest.approx(0.45)  # training spans 0.2..0.7
    detail = version.progress_detail
    assert (detail["phase"], detail["epoch"], detail["epochs"], detail["step"]) == ("training", 10, 20, 40)
    assert detail["eta_s"] == pytest.approx(10.0 * 0.55 / 0.45, abs=0.1) and detail["updated_at"]


def test_training_stores_the_curve_reliability_confusion_and_ece_the_pages_show(trainable):
    label_subjects(trainable, 12)
    version = services.model_version_claim(model_version_id=ModelVersion.objects.get().id)
    services.model_version_train(model_version=version)
    version.refresh_from_db()
    metrics = version.metrics
    assert version.progress == 1.0 and version.progress_detail["phase"] == "done"
    assert {"epoch", "train_loss", "val_loss", "val_accuracy"} == set(metrics["curve"][0])
    assert len(metrics["curve"]) == metrics["epochs_run"]
    reliability = metrics["reliability"]
    assert [len(reliability[k]) for k in ("confidence", "accuracy", "count")] == [10, 10, 10]
    assert sum(reliability["count"]) == metrics["heldout"]["n"] and 0.0 <= metrics["ece"] <= 1.0
    root = trainable.task_tree["tasks"][trainable.task_tree["first"]]
    assert metrics["confusion"]["labels"] == [a["label"] for a in root["answers"]]
    matrix = np.asarray(metrics["confusion"]["matrix"])
    assert matrix.shape == (len(root["answers"]),) * 2 and matrix.sum() == metrics["heldout"]["n"]
    assert set(metrics["temperatures"]) == {task for task in trainable.task_tree["tasks"]}


def test_a_training_past_its_soft_time_limit_fails_and_leaves_the_priorities_alone(trainable, settings):
    label_subjects(trainable, 12)
    settings.SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S = 0.0
    version = services.model_version_claim(model_version_id=ModelVersion.objects.get().id)
    with pytest.raises(Exception, match="time limit"):
        services.model_version_train(model_version=version)
    version.refresh_from_db()
    assert version.status == "failed" and "SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S" in version.error
    assert not Prediction.objects.filter(model_version=version).exists()
    assert not SubjectState.objects.filter(workflow=trainable, priority_version__isnull=False).exists()


def test_a_transient_database_error_puts_the_version_back_for_the_retry(trainable):
    from django.db import OperationalError

    label_subjects(trainable, 12)
    version = services.model_version_claim(model_version_id=ModelVersion.objects.get().id)
    with mock.patch("labeler.learning.services.fit", side_effect=OperationalError("database is locked")):
        with pytest.raises(OperationalError):
            services.model_version_train(model_version=version)
    version.refresh_from_db()
    assert version.status == "queued" and not version.error
    again = services.model_version_claim(model_version_id=version.id)
    assert again is not None and again.attempts == 2


def test_a_version_whose_runs_keep_dying_is_given_up_after_the_attempt_limit(trainable):
    from datetime import timedelta

    from django.utils import timezone

    label_subjects(trainable, 12)
    version_id = ModelVersion.objects.get().id
    for _ in range(triggers.MAX_ATTEMPTS):
        assert services.model_version_claim(model_version_id=version_id) is not None
        ModelVersion.objects.filter(pk=version_id).update(heartbeat_at=timezone.now() - timedelta(minutes=6))
    assert services.model_version_claim(model_version_id=version_id) is None
    version = ModelVersion.objects.get(pk=version_id)
    assert version.status == "failed" and "attempts" in version.error


@pytest.mark.parametrize("soft, hard", [("60", "60"), ("soon", "")])
def test_bad_training_time_limits_stop_start_up_with_the_variable_named(soft, hard):
    import subprocess
    import sys

    from labeler.testing import ROOT

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SKYLOOP_TRAIN")}
    env.update({"SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S": soft, "SKYLOOP_TRAIN_TIME_LIMIT_S": hard})
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**env, "DJANGO_SETTINGS_MODULE": "labeler.settings"}, capture_output=True, text=True, cwd=ROOT,
    )
    assert out.returncode != 0 and "SKYLOOP_TRAIN_" in out.stderr
