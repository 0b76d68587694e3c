"""Faults on real parts: a worker killed mid-training, a broker that is down at submit time."""

import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from labeler.classifications.models import Classification
from labeler.classifications.services import classification_submit
from labeler.learning import triggers
from labeler.learning.models import ModelVersion
from labeler.subjects.simulation import SkyPlan, sky_simulate
from labeler.testing import ROOT, start_worker, subprocess_env
from labeler.workflows.models import SubjectState
from mlcore.simulate import sky
from mlcore.tasktree import path_for_answers

pytestmark = pytest.mark.services


def trainable_workflow(n_images=80):
    project = sky_simulate(plan=SkyPlan(project="faults", n_images=n_images, n_spectra=0, seed=9,
                                        train_min_new_labels=12))
    workflow = project.workflows.get(kind="image")
    workflow.label_min_votes = 1
    workflow.save()
    return workflow


def label(workflow, n):
    for state in SubjectState.objects.filter(workflow=workflow).select_related("subject").order_by("id")[:n]:
        truth = state.subject.truth["class"]
        path = path_for_answers(workflow.task_tree, lambda task, k, t=truth: sky.CLASS_ANSWERS[t].get(task, 0))
        classification_submit(workflow=workflow, subject_id=state.subject_id, volunteer_key="a:1",
                              annotation=path, client_uuid=uuid.uuid4())


def wait_for(predicate, timeout, what, worker=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}\n{worker.log()[-4000:] if worker else ''}")


def test_a_training_orphaned_by_a_killed_worker_is_resent_and_finished_by_another(
    celery_worker_process, tmp_path
):
    workflow = trainable_workflow()
    label(workflow, 12)
    version = ModelVersion.objects.get(workflow=workflow)
    wait_for(lambda: ModelVersion.objects.get(pk=version.pk).status == "training", 120, "training to start",
             celery_worker_process)
    celery_worker_process.process.send_signal(signal.SIGKILL)
    celery_worker_process.process.wait(timeout=10)
    version.refresh_from_db()
    assert version.status in ModelVersion.IN_PROGRESS and version.scored_at is None

    # Five minutes of silence pass (the lease), then beat's sweep runs.
    ModelVersion.objects.filter(pk=version.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=6))
    second = start_worker(tmp_path / "second-worker.log")
    try:
        assert triggers.training_sweep() == 0  # nothing new: the orphan is resent, not duplicated
        wait_for(lambda: ModelVersion.objects.get(pk=version.pk).status == "active", 240, "the resent run", second)
    finally:
        second.stop()
    version.refresh_from_db()
    assert version.scored_at is not None and ModelVersion.objects.filter(workflow=workflow).count() == 1
    assert set(SubjectState.objects.filter(workflow=workflow, status="active")
               .values_list("priority_version", flat=True)) == {version.id}


def test_a_dead_broker_loses_no_classification_and_the_sweep_recovers(transactional_db, tmp_path):
    workflow = trainable_workflow(n_images=30)
    # Simulated volunteers in another process whose broker is down (nothing listens on port 1).
    env = {**subprocess_env(), "REDIS_URL": "redis://127.0.0.1:1/0"}
    run = subprocess.run(
        [sys.executable, "manage.py", "simulate_volunteers", str(workflow.id), "--volunteers", "4",
         "--classifications", "40"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "training of version" in run.stderr and "not sent yet" in run.stderr
    assert Classification.objects.filter(workflow=workflow).count() == 40
    version = ModelVersion.objects.get(workflow=workflow)
    assert version.status == "queued"

    ModelVersion.objects.filter(pk=version.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=6))
    worker = start_worker(tmp_path / "worker.log")
    try:
        triggers.training_sweep()
        wait_for(lambda: ModelVersion.objects.get(pk=version.pk).status == "active", 240, "the resent run", worker)
    finally:
        worker.stop()
