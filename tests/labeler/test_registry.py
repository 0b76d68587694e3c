"""The model registry: promotion on a fixed evaluation set, forced promotion, rollback, checksums."""

from pathlib import Path

import numpy as np
import pytest
import torch
from django.conf import settings
from django.contrib.auth import get_user_model

from labeler.learning import datasets, registry, services
from labeler.learning.models import EvaluationSet, ModelEvent, ModelVersion, Prediction
from labeler.workflows.models import SubjectState
from mlcore import checkpoints, tasktree
from mlcore.models.image import QuestionHead
from tests.labeler.test_learning import label_subjects

N_EVAL = 12


@pytest.fixture
def evaluated(image_workflow):
    """The first N_EVAL subjects labelled by experts (crowd majority = truth) and pinned as the evaluation set."""
    image_workflow.train_min_new_labels = 1000  # no automatic training in these tests
    image_workflow.label_min_votes = 2
    image_workflow.retire_after = 10
    image_workflow.save()
    states = label_subjects(image_workflow, N_EVAL)
    EvaluationSet.objects.create(workflow=image_workflow, subject_ids=sorted(s.subject_id for s in states))
    return image_workflow


def root_labels(workflow):
    ids = EvaluationSet.objects.get(workflow=workflow).subject_ids
    return registry.evaluation_labels(workflow=workflow, subject_ids=ids)


def register_answering(workflow, number: int, answer: int) -> ModelVersion:
    """A real question head that answers ``answer`` to the root question (a large bias), with MC-dropout jitter."""
    layout = tasktree.label_layout(workflow.task_tree)
    backbone = datasets.image_backbone()
    torch.manual_seed(number)
    model = QuestionHead(backbone.embed(np.zeros((1, 3, 64, 64), np.float32)).shape[1], layout)
    with torch.no_grad():
        last = model.net[-1]
        last.weight.mul_(0.05)
        last.bias.zero_()
        last.bias[answer] = 4.0  # the root question's answers come first in the layout
    directory = Path(settings.MODEL_ROOT) / f"workflow-{workflow.id}" / f"v{number}"
    meta = checkpoints.save_checkpoint(
        directory, model, kind="question_head", model_config=model.model_config(), layout=layout, metrics={}
    )
    version = ModelVersion.objects.create(
        workflow=workflow, number=number, kind="question_head", status=ModelVersion.Status.EVALUATING,
        checkpoint_dir=str(directory), sha256=meta["sha256"], backbone=backbone.name, metrics={},
    )
    services.model_version_score_pool(model_version=version, publish=False)
    return version


def answers_by_accuracy(workflow) -> tuple[int, int]:
    """(the most common root answer on the evaluation set, a rarer one)."""
    counts = np.bincount(root_labels(workflow), minlength=3)
    return int(counts.argmax()), int(counts.argmin())


def priorities(workflow) -> dict[int, tuple[float, int]]:
    rows = SubjectState.objects.filter(workflow=workflow, status="active").values_list(
        "subject_id", "priority", "priority_version"
    )
    return {sid: (p, v) for sid, p, v in rows}


def test_the_first_version_is_promoted_and_its_predictions_become_the_priorities(evaluated):
    v1 = register_answering(evaluated, 1, 0)
    event = registry.model_version_promote(model_version=v1)
    v1.refresh_from_db()
    assert event.action == "promoted" and v1.status == "active" and v1.scored_at is not None
    scores = dict(Prediction.objects.filter(model_version=v1).values_list("subject_id", "score"))
    assert priorities(evaluated) == {sid: (scores[sid], v1.id) for sid in priorities(evaluated)}


def test_a_better_version_on_the_evaluation_set_is_promoted(evaluated):
    best, worst = answers_by_accuracy(evaluated)
    v1 = register_answering(evaluated, 1, worst)
    registry.model_version_promote(model_version=v1)
    v2 = register_answering(evaluated, 2, best)
    event = registry.model_version_promote(model_version=v2)
    v1.refresh_from_db()
    v2.refresh_from_db()
    labels = root_labels(evaluated)
    assert v2.metrics["evaluation"]["accuracy"] == pytest.approx(np.mean(labels == best))
    assert v1.metrics["evaluation"]["accuracy"] == pytest.approx(np.mean(labels == worst))
    assert event.action == "promoted" and event.previous == v1
    assert (v1.status, v2.status) == ("retired", "active")
    assert v2.metrics["promotion"]["accepted"] and "accuracy" in v2.metrics["promotion"]["reason"]
    assert {v for _, v in priorities(evaluated).values()} == {v2.id}


def test_a_worse_version_stays_ready_with_the_reason_and_the_priorities_stay(evaluated):
    best, worst = answers_by_accuracy(evaluated)
    v1 = register_answering(evaluated, 1, best)
    registry.model_version_promote(model_version=v1)
    before = priorities(evaluated)
    v2 = register_answering(evaluated, 2, worst)
    event = registry.model_version_promote(model_version=v2)
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert event.action == "refused" and (v1.status, v2.status) == ("active", "ready")
    decision = v2.metrics["promotion"]
    assert not decision["accepted"] and decision["reason"].startswith("accuracy")
    assert decision["candidate"]["n"] == decision["active"]["n"] == N_EVAL
    assert priorities(evaluated) == before


def test_the_evaluation_set_is_never_trained_on_and_freezes_once_full(evaluated, monkeypatch):
    workflow = evaluated
    EvaluationSet.objects.filter(workflow=workflow).delete()
    monkeypatch.setattr(registry, "EVAL_TARGET", 3)
    ids = list(range(1000, 1100))
    first = registry.evaluation_set_refresh(workflow=workflow, labelled_ids=ids[:40])
    assert first == registry.evaluation_set_refresh(workflow=workflow, labelled_ids=ids[:40])  # deterministic
    assert len(first) == 3 and all(registry.is_evaluation_candidate(workflow.id, sid) for sid in first)
    assert registry.evaluation_set_refresh(workflow=workflow, labelled_ids=ids) == first  # full: frozen


def test_a_scientist_can_force_a_refused_version_and_roll_back_to_the_previous_one(evaluated):
    scientist = get_user_model().objects.create_user("vera", password="x")
    best, worst = answers_by_accuracy(evaluated)
    v1 = register_answering(evaluated, 1, best)
    registry.model_version_promote(model_version=v1)
    v1_priorities = priorities(evaluated)
    v2 = register_answering(evaluated, 2, worst)
    assert registry.model_version_promote(model_version=v2).action == "refused"

    forced = registry.model_version_promote(model_version=v2, user=scientist, force=True)
    assert forced.action == "forced" and forced.user == scientist and "vera" in forced.reason
    assert {v for _, v in priorities(evaluated).values()} == {v2.id}

    back = registry.model_version_rollback(workflow=evaluated, user=scientist, reason="v2 misses mergers")
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert back.action == "rolled_back" and back.model_version == v1 and back.previous == v2
    assert (v1.status, v2.status) == ("active", "retired") and back.reason == "v2 misses mergers"
    assert priorities(evaluated) == v1_priorities  # the older version's predictions win on purpose
    assert list(ModelEvent.objects.filter(workflow=evaluated).values_list("action", flat=True)) == [
        "rolled_back", "forced", "refused", "promoted",
    ]


def test_rollback_refuses_a_checkpoint_whose_sha256_no_longer_matches(evaluated):
    best, worst = answers_by_accuracy(evaluated)
    v1 = register_answering(evaluated, 1, worst)
    registry.model_version_promote(model_version=v1)
    v2 = register_answering(evaluated, 2, best)
    registry.model_version_promote(model_version=v2)
    before = priorities(evaluated)
    with open(Path(v1.checkpoint_dir) / "model.pt", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(registry.RegistryError, match="sha256"):
        registry.model_version_rollback(workflow=evaluated)
    with pytest.raises(registry.RegistryError, match="sha256"):
        registry.model_version_promote(model_version=v1, force=True)
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.status, v2.status) == ("retired", "active") and priorities(evaluated) == before
    assert not ModelEvent.objects.filter(action="rolled_back").exists()


def test_rollback_without_an_active_version_is_refused(evaluated):
    with pytest.raises(registry.RegistryError, match="no active model version"):
        registry.model_version_rollback(workflow=evaluated)


def test_without_torch_the_web_process_reuses_stored_evaluations_or_hands_the_comparison_to_the_worker(
    evaluated, monkeypatch, django_capture_on_commit_callbacks
):
    import sys

    best, worst = answers_by_accuracy(evaluated)
    v1 = register_answering(evaluated, 1, best)
    registry.model_version_promote(model_version=v1)
    v2 = register_answering(evaluated, 2, worst)
    assert registry.model_version_promote(model_version=v2).action == "refused"  # both evaluations stored
    v3 = register_answering(evaluated, 3, best)

    monkeypatch.delitem(sys.modules, "torch")  # as in the web process, which never loads torch
    again = registry.model_version_promote(model_version=v2)  # a scientist's unforced retry: from the stored ones
    assert again.action == "refused" and again.detail["candidate"]["n"] == N_EVAL
    with django_capture_on_commit_callbacks() as sent:
        with pytest.raises(registry.ComparisonQueued, match="queued"):
            registry.model_version_promote(model_version=v3)  # never evaluated: the worker must compare
    assert len(sent) == 1
    v3.refresh_from_db()
    assert v3.status == "evaluating" and ModelVersion.objects.get(status="active") == v1
