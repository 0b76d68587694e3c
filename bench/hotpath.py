"""The hot path's CPU cost (issue #8 item 2): one volunteer round trip, profiled in one process.

No gunicorn and no network: Django's test ``Client`` drives ``POST /api/classifications/``
(submit + consensus + retirement + next subject) for N_CLIENTS anonymous volunteers, each with
its own signed session cookie and address, on the bench/load.py sky (image workflow, galaxy
tree, gold subjects). After WARMUP submissions, N_MEASURED are timed with ``time.process_time``
(CPU of this process only: far less sensitive than wall time to others' work on the machine),
then profiled again under cProfile for the top-cumulative breakdown.

Each backend runs in a subprocess of its own with SKYLOOP_DEBUG=0 (the production settings:
no query log, throttle on): the embedded SQLite in a fresh SKYLOOP_VAR_DIR, and PostgreSQL
(``skyloop_bench_hotpath``, dropped and made anew) with the Redis queue under its own prefix.

Figures (bench/results/hotpath.json): cpu_ms_per_classification_sqlite / _postgres, the wall
time per classification beside them, and database_cpu_ms_per_classification_postgres (the
PostgreSQL backend's own CPU, read from /proc: the server runs on this machine); the profiles go
to bench/results/hotpath_profile.txt.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_SUBJECTS = 3000
N_FILES = 20
N_CLIENTS = 24
WARMUP = 100
N_MEASURED = 300
CHILD_FLAG = "SKYLOOP_HOTPATH_BACKEND"
POSTGRES_URL = os.environ.get("SKYLOOP_HOTPATH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/skyloop_bench_hotpath")
REDIS_URL = os.environ.get("SKYLOOP_LOAD_REDIS_URL", "redis://127.0.0.1:6379/0")


def run(results: Path) -> dict:
    figures: dict[str, float] = {}
    profiles = []
    for backend in ("sqlite", "postgres"):
        measured, profile = _run_child(backend)
        figures.update({f"{k}_{backend}": v for k, v in measured.items()})
        profiles.append(f"===== {backend} =====\n{profile}")
    figures["load_avg_1m"] = os.getloadavg()[0]
    (results / "hotpath_profile.txt").write_text("\n".join(profiles))
    return figures


def _run_child(backend: str) -> tuple[dict, str]:
    with tempfile.TemporaryDirectory(prefix="skyloop-hotpath-") as scratch:
        env = {
            **os.environ,
            CHILD_FLAG: backend,
            "SKYLOOP_DEBUG": "0",
            "SKYLOOP_SECRET_KEY": "hotpath-bench-" + uuid.uuid4().hex,
            "SKYLOOP_VAR_DIR": scratch,
            "SKYLOOP_GPU_QUEUE": "gpu-hotpath-bench",
            "SKYLOOP_THROTTLE_ANON": "1000000/min",  # counted (its cost is part of the path), never refusing
        }
        for name in ("DATABASE_URL", "REDIS_URL", "SKYLOOP_QUEUE_URL", "SKYLOOP_QUEUE"):
            env.pop(name, None)
        prefix = f"skyloop-hotpath-{uuid.uuid4().hex[:8]}"
        if backend == "postgres":
            from bench.load import fresh_database

            fresh_database(POSTGRES_URL)
            env.update(DATABASE_URL=POSTGRES_URL, REDIS_URL=REDIS_URL, SKYLOOP_QUEUE_PREFIX=prefix)
        out = Path(scratch) / "figures.json"
        try:
            subprocess.run([sys.executable, "-m", "bench.hotpath", str(out)], cwd=ROOT, env=env, check=True)
        finally:
            if backend == "postgres":
                import redis

                client = redis.Redis.from_url(REDIS_URL)
                for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                    client.unlink(key)
        payload = json.loads(out.read_text())
    return payload["figures"], payload["profile"]


# --- the child: one backend, one process ---------------------------------------------------


def child_main(out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labeler.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from bench.load import ANSWER_VARIANTS, build_sky, precompute_answers

    workflow = build_sky("hotpath", seed=11, n_subjects=N_SUBJECTS, n_files=N_FILES)
    answers = precompute_answers(workflow)
    volunteers = [_Volunteer(i, workflow.id, answers, ANSWER_VARIANTS) for i in range(N_CLIENTS)]
    connection.close()  # a fresh one, far from CONN_MAX_AGE: the backend stays the same while measured
    _drive(volunteers, WARMUP)
    database_cpu = _database_cpu_reader()
    cpu0, wall0, database0 = time.process_time(), time.perf_counter(), database_cpu()
    _drive(volunteers, N_MEASURED)
    cpu, wall, database = time.process_time() - cpu0, time.perf_counter() - wall0, database_cpu() - database0
    profiler = cProfile.Profile()
    profiler.enable()
    _drive(volunteers, N_MEASURED)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    figures = {
        "cpu_ms_per_classification": 1000 * cpu / N_MEASURED,
        "wall_ms_per_classification": 1000 * wall / N_MEASURED,
    }
    if connection.vendor == "postgresql":
        figures["database_cpu_ms_per_classification"] = 1000 * database / N_MEASURED
    out.write_text(json.dumps({"figures": figures, "profile": _trim(text.getvalue())}))


def _database_cpu_reader():
    """Reads the CPU seconds of this process's PostgreSQL backend (the queries' server side,
    which process_time cannot see; the server runs on this machine). On SQLite: always 0."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return lambda: 0.0
    with connection.cursor() as cursor:  # the connection the test client's requests use
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        if connection.connection is None or connection.connection.info.backend_pid != pid:
            raise SystemExit("the database connection was replaced while measured")
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    return read


def _trim(profile: str) -> str:
    """Paths relative to the checkout / site-packages (readable, and no machine paths)."""
    return profile.replace(str(ROOT) + "/", "").replace(str(Path(sys.prefix)) + "/", "")


class _Volunteer:
    """One browser: its own cookies (session + CSRF) and address; starts from GET next."""

    def __init__(self, index: int, workflow_id: int, answers: dict, variants: int):
        from django.test import Client

        self.client = Client(enforce_csrf_checks=True, REMOTE_ADDR=f"10.0.{index // 256}.{index % 256}")
        self.index, self.workflow_id, self.answers, self.variants = index, workflow_id, answers, variants
        self.subject = self._next()

    def _next(self) -> dict | None:
        reply = self.client.get(f"/api/workflows/{self.workflow_id}/next/")
        if reply.status_code != 200:
            raise SystemExit(f"GET next answered {reply.status_code}: {reply.content[:300]!r}")
        return reply.json()["subject"]

    def submit(self) -> None:
        if self.subject is None:
            raise SystemExit("the sky ran out of subjects: raise N_SUBJECTS")
        body = {
            "workflow": self.workflow_id,
            "subject": self.subject["id"],
            "client_uuid": str(uuid.uuid4()),
            "annotation": self.answers[self.subject["id"]][self.index % self.variants],
        }
        token = self.client.cookies["csrftoken"].value
        reply = self.client.post("/api/classifications/", body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
        if reply.status_code != 201:
            raise SystemExit(f"POST classification answered {reply.status_code}: {reply.content[:300]!r}")
        self.subject = reply.json()["next"]


def _drive(volunteers: list[_Volunteer], n: int) -> None:
    for i in range(n):
        volunteers[i % len(volunteers)].submit()


if __name__ == "__main__":
    if not os.environ.get(CHILD_FLAG):
        raise SystemExit("run through bench/run.py hotpath")
    child_main(Path(sys.argv[1]))
