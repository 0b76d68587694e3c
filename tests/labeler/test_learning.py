import uuid
from unittest import mock

import numpy as np
import pytest

from labeler.classifications.services import classification_submit
from labeler.learning import services, triggers
from labeler.learning.models import ModelVersion, Prediction
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
    ids = [s.subject_id for s in states]
    services._write_priorities(new, trainable, ids, np.full(len(ids), 0.9))
    services._write_priorities(old, trainable, ids, np.full(len(ids), 0.1))
    assert set(SubjectState.objects.filter(workflow=trainable).values_list("priority", flat=True)) == {0.9}


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
    assert flagged == {s.subject_id for s in labelled} & active
