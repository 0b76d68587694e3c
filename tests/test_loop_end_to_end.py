"""The whole loop on real parts: HTTP API -> consensus -> a real Celery worker process trains
EfficientNet-Lite0 + head -> priorities -> what the API serves next.

Runs on the embedded default (SQLite + filesystem broker) locally, and on PostgreSQL + Redis
under SKYLOOP_REQUIRE_SERVICES=1 (CI), where a missing service fails the test.
"""

import time
import uuid

import numpy as np
import pytest
import requests
from django.conf import settings

from labeler.classifications import queue
from labeler.classifications.selectors import TOP_FEW
from labeler.learning.models import ModelVersion
from labeler.subjects.models import Subject
from labeler.subjects.simulation import SkyPlan, sky_simulate
from labeler.workflows.models import SubjectState
from mlcore.simulate import sky
from mlcore.simulate.volunteers import make_crowd, simulated_annotation

pytestmark = pytest.mark.services


class HttpVolunteer:
    """One simulated volunteer with its own browser session (cookie = anonymous identity)."""

    def __init__(self, base_url: str, workflow_id: int, persona, rng):
        self.http = requests.Session()
        self.base, self.workflow_id, self.persona, self.rng = base_url, workflow_id, persona, rng

    def next(self) -> dict | None:
        reply = self.http.get(f"{self.base}/api/workflows/{self.workflow_id}/next/", timeout=30)
        reply.raise_for_status()
        return reply.json()["subject"]

    def classify(self, subject: dict, tree: dict) -> dict | None:
        truth = Subject.objects.get(pk=subject["id"]).truth  # hidden from the API; the persona "sees" it
        annotation = simulated_annotation(
            self.persona, tree, sky.CLASS_ANSWERS, truth["class"], truth["difficulty"], self.rng
        )
        reply = self.http.post(
            f"{self.base}/api/classifications/",
            json={"workflow": self.workflow_id, "subject": subject["id"], "client_uuid": str(uuid.uuid4()),
                  "annotation": annotation},
            headers={"X-CSRFToken": self.http.cookies.get("csrftoken", "")},  # as the classify page does
            timeout=30,
        )
        assert reply.status_code == 201, reply.text
        return reply.json()["next"]


def wait_for_scored_version(workflow, worker, timeout=240) -> ModelVersion:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = ModelVersion.objects.filter(workflow=workflow, scored_at__isnull=False).first()
        if version:
            return version
        failed = ModelVersion.objects.filter(workflow=workflow, status="failed").first()
        assert failed is None, f"training failed: {failed.error}\n{worker.log()}"
        time.sleep(0.5)
    raise AssertionError(f"no model scored the pool within {timeout}s\n{worker.log()}")


def test_volunteers_over_http_train_a_model_whose_priorities_decide_what_is_served(live_server, celery_worker_process):
    project = sky_simulate(plan=SkyPlan(project="e2e", n_images=60, n_spectra=0, seed=7, retire_after=4,
                                        train_min_new_labels=15))
    workflow = project.workflows.get(kind="image")
    workflow.label_min_votes = 2
    workflow.random_share = 0.0
    workflow.gold_share_start = 0.0  # only the model's priorities decide what is served
    workflow.save()

    rng = np.random.default_rng(7)
    crowd = [HttpVolunteer(live_server.url, workflow.id, p, rng) for p in make_crowd(6, rng)]
    pending = {id(v): v.next() for v in crowd}
    submitted = 0
    while not ModelVersion.objects.filter(workflow=workflow).exists():
        assert submitted < 200, "200 classifications and no training was queued"
        volunteer = crowd[submitted % len(crowd)]
        subject = pending[id(volunteer)]
        assert subject is not None, "a volunteer ran out of subjects before the threshold"
        pending[id(volunteer)] = volunteer.classify(subject, workflow.task_tree)
        submitted += 1

    version = wait_for_scored_version(workflow, celery_worker_process)
    assert version.status == "active" and version.label_count >= workflow.train_min_new_labels
    assert version.backbone.startswith("efficientnet-lite0")

    active = SubjectState.objects.filter(workflow=workflow, status="active")
    assert set(active.values_list("priority_version", flat=True)) == {version.id}, "stale priorities remain"
    newcomer = HttpVolunteer(live_server.url, workflow.id, crowd[0].persona, rng)
    for _ in range(5):
        # With the Redis selector, subjects leased to volunteers still looking at them (up to
        # retire_after - votes at once) are passed over, so the next ones down may be served.
        leased = queue.queue_info(workflow_id=workflow.id)["leased"] if settings.SKYLOOP_QUEUE else 0
        top = list(active.order_by("-priority", "id").values_list("subject_id", flat=True)[: TOP_FEW + leased])
        assert newcomer.next()["id"] in top

    home = requests.get(live_server.url + "/", timeout=30).text
    assert f"v{version.number}" in home and "held-out accuracy" in home
