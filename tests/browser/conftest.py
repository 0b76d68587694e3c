"""One headless Debian Chromium per test module; each test opens its own context (fresh storage)."""

import time

import pytest
from django.db import connection

from tests.browser.volunteer import chromium


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(autouse=True)
def server_quiet_before_flush(request):
    """Close the test's pages and let the live server finish their requests before the database is flushed.

    A request still in flight when a test ends (a prefetch, the outbox sending the last answer) holds row
    locks; the flush's TRUNCATE then deadlocks with it and the test errors in teardown.
    """
    if "live_server" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("transactional_db")  # set up first, so flushed after this teardown
    browser = request.getfixturevalue("browser") if "browser" in request.fixturenames else None
    yield
    if browser is not None:
        for context in browser.contexts:
            context.close()
    wait_for_other_sessions_idle()


def wait_for_other_sessions_idle(timeout_s: float = 15.0, quiet_polls: int = 4) -> None:
    """Wait until no other session on the test database runs a query or holds a transaction open."""
    if connection.vendor != "postgresql":
        return  # SQLite serialises writers; the flush just waits for the lock
    busy_sql = """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                  AND pid <> pg_backend_pid() AND backend_type = 'client backend'
                  AND state IN ('active', 'idle in transaction')"""
    deadline, quiet = time.monotonic() + timeout_s, 0
    while quiet < quiet_polls and time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(busy_sql)
            quiet = quiet + 1 if cursor.fetchone()[0] == 0 else 0
        time.sleep(0.05)


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
