"""Shared fixtures: a small simulated project, personas, and a real Celery worker process."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from labeler.testing import purge_gpu_queue, start_worker


def pytest_configure(config):
    # Tests write media, checkpoints and queue files under SKYLOOP_VAR_DIR (make test sets var/test).
    Path(settings.MEDIA_ROOT).mkdir(parents=True, exist_ok=True)


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
