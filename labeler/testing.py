"""Real processes for tests and benchmarks: a Celery worker and a gunicorn web server.

They run against whatever database this process uses (the test database in tests).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def database_url_for_subprocess() -> str:
    """The URL of the database this process is connected to (e.g. the test database)."""
    cfg = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(cfg['NAME']).resolve()}"
    if connection.vendor == "postgresql":
        user = cfg.get("USER") or ""
        password = f":{cfg['PASSWORD']}" if cfg.get("PASSWORD") else ""
        auth = f"{user}{password}@" if user else ""
        return f"postgres://{auth}{cfg.get('HOST') or '127.0.0.1'}:{cfg.get('PORT') or 5432}/{cfg['NAME']}"
    raise RuntimeError(f"no subprocess URL for database vendor {connection.vendor}")


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_subprocess()
    env["SKYLOOP_GPU_QUEUE"] = settings.GPU_QUEUE
    env["SKYLOOP_VAR_DIR"] = str(settings.VAR_DIR)
    env["SKYLOOP_QUEUE_PREFIX"] = settings.SKYLOOP_QUEUE_PREFIX
    return env


class ManagedProcess:
    """A subprocess whose output goes to a log file; ``wait_ready`` watches that log."""

    def __init__(self, args: list[str], log_path: Path, ready_marker: str):
        self.log_path = Path(log_path)
        self.ready_marker = ready_marker
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=subprocess_env(), stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.process.args[2:4]} exited early:\n{self.log()}")
            if self.ready_marker in self.log():
                return
            time.sleep(0.3)
        raise TimeoutError(f"not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def start_worker(log_path: Path) -> ManagedProcess:
    """A real ``celery worker`` consuming the gpu queue (solo pool: one model in memory)."""
    args = [
        sys.executable, "-m", "celery", "-A", "labeler", "worker", "-Q", settings.GPU_QUEUE,
        "--pool", "solo", "--loglevel", "INFO", "--without-mingle", "--without-gossip", "--without-heartbeat",
        "-n", f"skyloop-{os.getpid()}@%h",
    ]
    worker = ManagedProcess(args, log_path, " ready.")
    worker.wait_ready()
    return worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(log_path: Path, workers: int = 2) -> tuple[ManagedProcess, str]:
    port = free_port()
    args = [
        sys.executable, "-m", "gunicorn", "labeler.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers),
        "--access-logfile", "-",
    ]
    server = ManagedProcess(args, log_path, "Booting worker")
    server.wait_ready()
    return server, f"http://127.0.0.1:{port}"


def purge_gpu_queue() -> None:
    """Drop messages a killed earlier run may have left in this (test/bench) queue."""
    from labeler.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_declare(queue=settings.GPU_QUEUE, durable=True, auto_delete=False)
        conn.default_channel.queue_purge(settings.GPU_QUEUE)
