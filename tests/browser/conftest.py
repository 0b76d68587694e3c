"""One headless Debian Chromium per test module; each test opens its own context (fresh storage)."""

import pytest

from tests.browser.volunteer import chromium


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def default_queue_worker(transactional_db, tmp_path):
    """A real Celery worker on the default queue, where export jobs go (the gpu-queue fixture takes none)."""
    import os
    import sys

    from labeler.testing import ManagedProcess

    args = [sys.executable, "-m", "celery", "-A", "labeler", "worker", "-Q", "default", "--pool", "solo",
            "--loglevel", "INFO", "--without-mingle", "--without-gossip", "--without-heartbeat",
            "-n", f"skyloop-browser-{os.getpid()}@%h"]  # fmt: skip
    worker = ManagedProcess(args, tmp_path / "default-worker.log", " ready.")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
