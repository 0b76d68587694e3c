"""Shared fixtures: a small simulated project, personas, and a real Celery worker process."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from labeler.testing import purge_gpu_queue, start_worker


def pytest_configure(config):
    # Tests write media, checkpoints and queue files under SKYLOOP_VAR_DIR (make test sets var/test).
    Path(settings.MEDIA_ROOT).mkdir(parents=True, exist_ok=True)
    # Redis outlives a run but the test database's ids restart: a key prefix of this run's own
    # keeps an earlier run's queues out (worker subprocesses inherit it via subprocess_env).
    settings.SKYLOOP_QUEUE_PREFIX = f"skyloop-test-{uuid.uuid4().hex[:8]}"


def pytest_unconfigure(config):
    if settings.SKYLOOP_QUEUE and settings.SKYLOOP_QUEUE_URL:
        import redis

        try:
            client = redis.Redis.from_url(settings.SKYLOOP_QUEUE_URL, socket_timeout=2)
            for key in client.scan_iter(f"{settings.SKYLOOP_QUEUE_PREFIX}:*", count=1000):
                client.delete(key)
        except redis.RedisError:
            pass  # Redis is gone: nothing of ours to clean up


def require_services() -> bool:
    return bool(settings.SKYLOOP_REQUIRE_SERVICES)


@pytest.fixture
def small_sky(db):
    """A project with both workflows and a few simulated subjects (fast: ~1 s)."""
    from labeler.subjects.simulation import SkyPlan, sky_simulate

    return sky_simulate(plan=SkyPlan(project="test-sky", n_images=24, n_spectra=8, seed=1, retire_after=3))


@pytest.fixture
def image_workflow(small_sky):
    return small_sky.workflows.get(kind="image")


@pytest.fixture
def spectrum_workflow(small_sky):
    return small_sky.workflows.get(kind="spectrum")


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """Start a worker process; under SKYLOOP_REQUIRE_SERVICES it must run on PostgreSQL + Redis."""
    if require_services():
        assert connection.vendor == "postgresql", "SKYLOOP_REQUIRE_SERVICES=1 but DATABASE_URL is not PostgreSQL"
        assert settings.CELERY_BROKER_URL.startswith("redis"), "SKYLOOP_REQUIRE_SERVICES=1 but REDIS_URL is unset"
        import redis

        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=3).ping()  # fails loudly when Redis is down
    purge_gpu_queue()
    worker = start_worker(tmp_path / "worker.log")
    try:
        yield worker
    finally:
        worker.stop()
