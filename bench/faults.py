"""The faults benchmark (issue #8): Redis killed mid-load, client retries, a worker killed mid-training.

(a) + (b): gunicorn on PostgreSQL with a Redis of this run's own (a ``redis-server`` subprocess on
a free port, never the system one) as queue, cache and broker, as in a one-Redis deployment.
CONCURRENCY simulated volunteers submit for DURATION_S; the Redis is SIGKILLed at REDIS_DOWN_AT_S
and started again, empty (no persistence), at REDIS_BACK_AT_S. The volunteers behave as the
classify page does: a failed submission is retried with the same client UUID until acknowledged
(its outbox), and REPLAY_SHARE of the acknowledged ones are sent again (a reply lost on the way).
(c): a Celery worker is SIGKILLed while it trains; after the lease the sweep sends the run again,
a second worker finishes it (tests/test_worker_faults.py does the same as a test).

Figures (bench/results/faults.json):
- acknowledged: distinct client UUIDs answered 2xx; stored: how many of them are in the database;
  duplicates: rows beyond one per acknowledged UUID; lost: acknowledged but not stored
- replays: submissions sent again with a UUID already sent; errors: failed requests (retried)
- acknowledged_while_redis_down: distinct UUIDs acknowledged in the outage
- served_while_redis_down: next subjects served in the outage (the database selector)
- rejected: submissions answered 4xx (must be 0: e.g. a subject served to someone who had already
  classified it would be refused as a duplicate)
- queue_rebuilt_after_restart: 1 when the restarted Redis holds the workflow's queue again
- worker_killed_versions / worker_killed_version_active: model versions after the kill and resend
  (1 and 1: resent, not duplicated, and finished); half_models_registered: versions marked active
  without scored priorities or a checkpoint on disk (must be 0)
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from bench.load import Crowd, build_sky, drive, precompute_answers, rerun_on_services, start_server
from labeler.classifications.models import Classification
from labeler.testing import free_port, purge_gpu_queue, start_worker
from labeler.workflows.models import Workflow

CONCURRENCY = 32
N_SUBJECTS = 3000
DURATION_S = 30.0
REDIS_DOWN_AT_S = 10.0
REDIS_BACK_AT_S = 20.0
REPLAY_SHARE = 0.05
RETRY_S = 2.0  # SKYLOOP_QUEUE_RETRY_S for the server: how soon it tries Redis again


class OwnRedis:
    """A redis-server of this run's own on a free port: started, SIGKILLed, started again."""

    def __init__(self, log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url, socket_timeout=0.5).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not answer")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; what it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def run(results: Path) -> dict:
    if connection.vendor != "postgresql" or not settings.SKYLOOP_QUEUE:
        return rerun_on_services("faults", results)
    logs = results.parent / "logs"
    logs.mkdir(exist_ok=True)
    figures = redis_outage(logs)
    figures.update(worker_killed(logs))
    return figures


# --- (a) + (b): Redis killed under load, clients retrying ------------------------------------


def redis_outage(logs: Path) -> dict:
    own = OwnRedis(logs / "redis-faults.log")
    own.start()
    workflow = build_sky(f"faults-{timezone.now():%Y%m%d%H%M%S}", seed=13, n_subjects=N_SUBJECTS)
    answers = precompute_answers(workflow)
    env = {"REDIS_URL": own.url, "SKYLOOP_QUEUE_URL": own.url, "SKYLOOP_QUEUE_RETRY_S": str(RETRY_S)}
    server, base = start_server(logs / "gunicorn-faults.log", env=env)
    crowd = Crowd(concurrency=CONCURRENCY, replay_share=REPLAY_SHARE, outbox=True, record_served=True)
    try:
        stats = asyncio.run(_load_with_outage(own, base, workflow.id, answers, crowd))
        rebuilt = _queue_in(own.url, workflow.id)
    finally:
        server.stop()
        own.kill()
    # Closed now, so that the worker part's sweep resends only its own training run.
    Workflow.objects.filter(project=workflow.project).update(active=False)
    acknowledged = set(stats.acknowledged)
    rows = Classification.objects.filter(client_uuid__in=acknowledged)
    stored = rows.values("client_uuid").distinct().count()
    per_uuid = rows.values("client_uuid").annotate(n=Count("id"))
    outage = [u for u, t in zip(stats.acknowledged, stats.acknowledged_at, strict=True)
              if REDIS_DOWN_AT_S <= t < REDIS_BACK_AT_S]
    return {
        "acknowledged": len(acknowledged),
        "stored": stored,
        "duplicates": sum(row["n"] - 1 for row in per_uuid),
        "lost": len(acknowledged) - stored,
        "replays": stats.replays,
        "errors": stats.errors,
        "acknowledged_while_redis_down": len(set(outage)),
        "served_while_redis_down": sum(REDIS_DOWN_AT_S <= t < REDIS_BACK_AT_S for _, _, t in stats.served),
        "rejected": stats.rejected,
        "queue_rebuilt_after_restart": int(rebuilt),
        "concurrency": CONCURRENCY,
        "duration_s": DURATION_S,
    }


async def _load_with_outage(own: OwnRedis, base: str, workflow_id: int, answers: dict, crowd: Crowd):
    loop = asyncio.get_running_loop()

    async def outage() -> None:
        await asyncio.sleep(REDIS_DOWN_AT_S)
        own.kill()
        await asyncio.sleep(REDIS_BACK_AT_S - REDIS_DOWN_AT_S)
        await loop.run_in_executor(None, own.start)

    load = asyncio.create_task(drive(base, workflow_id, answers, crowd.concurrency, 0.0, DURATION_S, crowd))
    await outage()
    return await load


def _queue_in(url: str, workflow_id: int) -> bool:
    database = hashlib.sha1(str(connection.settings_dict["NAME"]).encode()).hexdigest()[:8]
    key = f"{settings.SKYLOOP_QUEUE_PREFIX}:{database}:{{wf{workflow_id}}}:queue"
    return bool(redis.Redis.from_url(url, socket_timeout=2).exists(key))


# --- (c): a worker SIGKILLed mid-training -----------------------------------------------------


def worker_killed(logs: Path) -> dict:
    from labeler.classifications.services import classification_submit
    from labeler.learning import triggers
    from labeler.learning.models import ModelVersion
    from labeler.subjects.simulation import SkyPlan, sky_simulate
    from labeler.workflows.models import SubjectState
    from mlcore.simulate import sky
    from mlcore.tasktree import path_for_answers

    purge_gpu_queue()
    plan = SkyPlan(project=f"faults-worker-{timezone.now():%Y%m%d%H%M%S}", n_images=80, n_spectra=0, n_fields=0,
                   seed=9, train_min_new_labels=12)
    workflow = sky_simulate(plan=plan).workflows.get(kind="image")
    workflow.label_min_votes = 1
    workflow.save()
    worker = start_worker(logs / "worker-faults-1.log")
    try:
        for state in SubjectState.objects.filter(workflow=workflow).select_related("subject").order_by("id")[:12]:
            truth = state.subject.truth["class"]
            path = path_for_answers(workflow.task_tree, lambda task, k, t=truth: sky.CLASS_ANSWERS[t].get(task, 0))
            classification_submit(workflow=workflow, subject_id=state.subject_id, volunteer_key="sim:faults",
                                  annotation=path, client_uuid=uuid.uuid4())
        version = ModelVersion.objects.get(workflow=workflow)
        if not _wait(lambda: ModelVersion.objects.get(pk=version.pk).status == "training", 300):
            raise TimeoutError(f"training never started\n{worker.log()[-3000:]}")
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)
    finally:
        worker.stop()
    version.refresh_from_db()
    half_before = int(version.status == ModelVersion.Status.ACTIVE or version.scored_at is not None)
    # The lease passes in silence, then beat's sweep runs.
    silent_since = timezone.now() - triggers.LEASE - timedelta(minutes=1)
    ModelVersion.objects.filter(pk=version.pk).update(heartbeat_at=silent_since)
    second = start_worker(logs / "worker-faults-2.log")
    try:
        triggers.training_sweep()
        finished = _wait(lambda: ModelVersion.objects.get(pk=version.pk).status in ("active", "failed"), 900)
        if not finished:  # a figure, not a crash: the run was not taken over (what the database was doing)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pid, state, wait_event_type, wait_event, left(query, 200) FROM pg_stat_activity"
                               " WHERE datname = current_database() AND pid <> pg_backend_pid()")
                print("resent training did not finish; database sessions:", *cursor.fetchall(), sep="\n")
    finally:
        second.stop()
    versions = ModelVersion.objects.filter(workflow=workflow)
    half = sum(
        v.status == ModelVersion.Status.ACTIVE
        and (v.scored_at is None or not (Path(settings.MODEL_ROOT) / v.checkpoint_dir).exists())
        for v in versions
    )
    return {
        "worker_killed_versions": versions.count(),
        "worker_killed_version_active": int(versions.filter(status=ModelVersion.Status.ACTIVE).count() == 1),
        "half_models_registered": half + half_before,
    }


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
