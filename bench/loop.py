"""The loop benchmark (issue #2): simulated volunteers over HTTP (gunicorn) until the first
model, a real Celery worker trains and scores, then raw scoring throughput.

Figures (bench/results/loop.json):
- labels_to_first_model: classifications (volunteer clicks) submitted until training was queued
- labelled_subjects_at_first_model: subjects with >= label_min_votes votes at that moment
- seconds_label_to_priorities: from the submit that crossed the threshold until the new
  model's priorities are live (scored_at observed; the selector reads them at once)
- inference_cutouts_per_s: 64x64x3 FITS on disk -> EfficientNet-Lite0 embedding -> MC-dropout
  head (15 samples) -> BALD -> Prediction rows + priorities, for N_SCORE fresh cutouts
- classify_roundtrip_p50_ms / _p99_ms: one HTTP POST (submit + next subject) against gunicorn
- pool_embeddings_per_s: the worker embedding the freshly ingested pool (queued at ingest),
  which the benchmark lets finish before volunteers start, as in a deployment
The simulated sky uses the demo defaults (SkyPlan), the same as `make demo`.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import requests
from django.utils import timezone

from labeler.learning.models import ModelVersion
from labeler.learning.services import model_version_score_pool
from labeler.subjects.models import Subject, SubjectEmbedding
from labeler.subjects.simulation import SkyPlan, sky_simulate
from labeler.testing import purge_gpu_queue, start_gunicorn, start_worker
from labeler.workflows.models import SubjectState
from mlcore.simulate import sky
from mlcore.simulate.volunteers import make_crowd, simulated_annotation

N_IMAGES = 1000
N_VOLUNTEERS = 30
N_SCORE = 2000


def run(results: Path) -> dict:
    purge_gpu_queue()  # before ingest: ingest itself queues the embedding of the new cutouts
    project_slug = f"bench-{timezone.now():%Y%m%d%H%M%S}"
    plan = SkyPlan(project=project_slug, n_images=N_IMAGES, n_spectra=0, seed=2)
    workflow = sky_simulate(plan=plan).workflows.get(kind="image")
    logs = results.parent / "logs"
    logs.mkdir(exist_ok=True)
    worker = start_worker(logs / "worker.log")
    server, base = start_gunicorn(logs / "gunicorn.log")
    try:
        embed_rate = _wait_for_pool_embeddings(workflow, worker)
        figures, latencies = _drive_to_first_model(workflow, base)
        figures["pool_embeddings_per_s"] = embed_rate
        figures["seconds_label_to_priorities"] = _wait_for_priorities(workflow, figures.pop("_t_cross"), worker)
        phases = _phases(ModelVersion.objects.get(workflow=workflow, number=1))
    finally:
        server.stop()
        worker.stop()
    figures["inference_cutouts_per_s"] = _scoring_throughput(workflow, plan)
    figures["classify_roundtrip_p50_ms"] = float(np.percentile(latencies, 50))
    figures["classify_roundtrip_p99_ms"] = float(np.percentile(latencies, 99))
    _plot(results / "loop.png", latencies, figures, phases)
    return figures


def _wait_for_pool_embeddings(workflow, worker, timeout: float = 900) -> float:
    """Ingest queues embedding of every new cutout; a deployment has them long before labels arrive."""
    t0 = time.perf_counter()
    n = SubjectState.objects.filter(workflow=workflow).count()
    while SubjectEmbedding.objects.filter(subject__project=workflow.project).count() < n:
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"pool not embedded after {timeout}s\n{worker.log()[-3000:]}")
        time.sleep(0.5)
    return n / (time.perf_counter() - t0)


def _drive_to_first_model(workflow, base: str) -> tuple[dict, list[float]]:
    rng = np.random.default_rng(5)
    crowd = make_crowd(N_VOLUNTEERS, rng)
    sessions = [requests.Session() for _ in crowd]
    truths = dict(Subject.objects.filter(project=workflow.project).values_list("id", "truth"))
    pending = [s.get(f"{base}/api/workflows/{workflow.id}/next/").json()["subject"] for s in sessions]
    latencies, submitted = [], 0
    while True:
        i = submitted % len(crowd)
        truth = truths[pending[i]["id"]]
        annotation = simulated_annotation(
            crowd[i], workflow.task_tree, sky.CLASS_ANSWERS, truth["class"], truth["difficulty"], rng
        )
        body = {"workflow": workflow.id, "subject": pending[i]["id"], "client_uuid": str(uuid.uuid4()),
                "annotation": annotation}
        t0 = time.perf_counter()
        csrf = {"X-CSRFToken": sessions[i].cookies.get("csrftoken", "")}  # as the classify page sends it
        reply = sessions[i].post(f"{base}/api/classifications/", json=body, headers=csrf)
        latencies.append(1000 * (time.perf_counter() - t0))
        reply.raise_for_status()
        pending[i] = reply.json()["next"]
        submitted += 1
        if ModelVersion.objects.filter(workflow=workflow).exists():
            figures = {
                "labels_to_first_model": submitted,
                "labelled_subjects_at_first_model": ModelVersion.objects.get(workflow=workflow).label_count,
                "_t_cross": t0,
            }
            return figures, latencies


def _wait_for_priorities(workflow, t_cross: float, worker, timeout: float = 600) -> float:
    while time.perf_counter() - t_cross < timeout:
        version = ModelVersion.objects.filter(workflow=workflow).first()
        if version.scored_at is not None:
            return time.perf_counter() - t_cross
        if version.status == ModelVersion.Status.FAILED:
            raise RuntimeError(f"training failed: {version.error}\n{worker.log()[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"no priorities after {timeout}s\n{worker.log()[-3000:]}")


def _scoring_throughput(workflow, plan: SkyPlan) -> float:
    """Score N_SCORE fresh cutouts (no cached embeddings) with the active model, in process."""
    sky_simulate(plan=SkyPlan(project=plan.project, n_images=N_SCORE, n_spectra=0, seed=3))
    version = ModelVersion.objects.get(workflow=workflow, status=ModelVersion.Status.ACTIVE)
    SubjectEmbedding.objects.filter(subject__project=workflow.project).delete()
    SubjectState.objects.filter(workflow=workflow, classification_count__gt=0).update(status="retired")
    n_active = SubjectState.objects.filter(workflow=workflow, status="active").count()
    t0 = time.perf_counter()
    scored = model_version_score_pool(model_version=version)
    elapsed = time.perf_counter() - t0
    assert scored == n_active
    return scored / elapsed


def _phases(version: ModelVersion) -> dict[str, float]:
    """Seconds spent waiting in the queue, training and scoring the pool (first model)."""
    return {
        "queued": (version.started_at - version.created_at).total_seconds(),
        "training": (version.trained_at - version.started_at).total_seconds(),
        "scoring": (version.scored_at - version.trained_at).total_seconds(),
    }


def _plot(path: Path, latencies: list[float], figures: dict, phases: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.hist(latencies, bins=40, color="#f4a259")
    left.axvline(figures["classify_roundtrip_p50_ms"], color="k", ls="--", label="p50")
    left.axvline(figures["classify_roundtrip_p99_ms"], color="k", ls=":", label="p99")
    left.set_xlabel("submit + next round trip (ms)")
    left.set_ylabel("classifications")
    left.legend()
    left_edge = 0.0
    for (name, seconds), colour in zip(phases.items(), ["#9aa5b1", "#f4a259", "#1d2d44"], strict=True):
        right.barh(["first model"], [seconds], left=left_edge, color=colour, label=f"{name} {seconds:.1f}s")
        left_edge += seconds
    right.set_xlabel("seconds after the threshold-crossing label")
    right.set_title(f"label -> priorities {figures['seconds_label_to_priorities']:.1f}s; "
                    f"{figures['inference_cutouts_per_s']:.0f} cutouts/s scored")
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
