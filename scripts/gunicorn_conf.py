"""Gunicorn settings for the Skyloop web process: ``gunicorn labeler.wsgi -c scripts/gunicorn_conf.py``.

Every value can be overridden by an environment variable (or gunicorn's own command-line flags):

- ``SKYLOOP_WEB_BIND`` (default ``0.0.0.0:8000``)
- ``SKYLOOP_WEB_WORKERS``: processes (default: 2 per CPU core)
- ``SKYLOOP_WEB_THREADS``: threads per process (default 4). The hot path spends much of its time
  waiting on PostgreSQL and Redis, so a few threads per process keep a core busy without the
  memory of more processes; each thread holds one persistent database connection.
- ``SKYLOOP_WEB_KEEPALIVE_S`` (default 5): browsers reuse the connection for their next submit.
- ``SKYLOOP_WEB_ACCESS_LOG``: ``-`` for stdout; unset: no access log (it costs ~10% of the hot path).

Measured choices: bench/load.py (``bench/results/load.json``).
"""

from __future__ import annotations

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{name}={raw!r} must be a positive integer")
    return int(raw)


bind = os.environ.get("SKYLOOP_WEB_BIND", "0.0.0.0:8000")
workers = _int("SKYLOOP_WEB_WORKERS", 2 * multiprocessing.cpu_count())
threads = _int("SKYLOOP_WEB_THREADS", 4)
worker_class = "gthread" if threads > 1 else "sync"
keepalive = _int("SKYLOOP_WEB_KEEPALIVE_S", 5)
# Kept-alive connections one process holds at most: past it, the others accept. Without a cap
# the process that wakes first takes most of a crowd arriving at once, and its few threads
# serve them while the other processes idle.
worker_connections = _int("SKYLOOP_WEB_CONNECTIONS", 16 * threads)
accesslog = os.environ.get("SKYLOOP_WEB_ACCESS_LOG") or None
backlog = 2048
# The app and every view are imported once in the master and shared by the forked workers, so
# a new worker answers its first request at once (no workers restart on HUP: restart the master).
preload_app = True


def when_ready(server) -> None:
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018  imports every view module before the fork
# Recycle workers now and then so a slow leak cannot grow for ever; jitter spreads the restarts.
max_requests = 100_000
max_requests_jitter = 10_000
