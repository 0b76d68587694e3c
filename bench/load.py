"""The load benchmark (issue #8): simulated volunteers hammer submit-and-get-next on gunicorn.

Gunicorn (scripts/gunicorn_conf.py, DEBUG off) on PostgreSQL + Redis over loopback, a sky of
N_SUBJECTS image subjects, and CONCURRENCY simulated anonymous volunteers from one asyncio
client (aiohttp): each opens the classify flow once (GET next, which also gives it its signed
session cookie), then POSTs a classification, whose reply carries its next subject, again and
again with no think time. Only POSTs that end within the DURATION_S window after WARMUP_S count.

Figures (bench/results/load.json):
- classifications_per_s: acknowledged (2xx) POSTs per second in the measured window
- p50_ms / p99_ms: POST round trip as the client sees it (submit + consensus + next subject)
- concurrency, server_workers, server_threads, duration_s, errors (non-2xx or failed requests)
- load_avg_1m_before: the machine's load before the run (others' work distorts the figures)

The database must be PostgreSQL and the queue Redis: run on anything else (e.g. ``make bench``
on the embedded default), this module re-runs itself in a subprocess on a database of its own,
dropped and created anew (``skyloop_bench_load``; SKYLOOP_LOAD_DATABASE_URL), and Redis
(SKYLOOP_LOAD_REDIS_URL, default 127.0.0.1:6379) under a key prefix of its own.
The sky is light: N_FILES simulated FITS cutouts, each shared by several Subject rows (the
hot path never reads pixels; previews and data are cached files served separately).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from labeler.subjects.models import Subject
from labeler.subjects.simulation import SIMULATED_ANSWERS, SkyPlan, sky_simulate
from labeler.testing import ROOT, ManagedProcess, free_port, purge_gpu_queue
from labeler.workflows.models import SubjectState, Workflow
from labeler.workflows.services import subject_states_attach
from mlcore.simulate import sky
from mlcore.simulate.volunteers import make_crowd, simulated_annotation

CONCURRENCY = int(os.environ.get("SKYLOOP_LOAD_CONCURRENCY", 64))
N_SUBJECTS = 10_000
N_FILES = 200
WARMUP_S = float(os.environ.get("SKYLOOP_LOAD_WARMUP_S", 5))
DURATION_S = float(os.environ.get("SKYLOOP_LOAD_DURATION_S", 20))
GOLD_FRACTION = 0.05
ANSWER_VARIANTS = 4  # annotations precomputed per subject (from different simulated people)
DATABASE_PREFIX = "skyloop_bench_"  # + the benchmark's name; dropped and made anew by each run
CHILD_FLAG = "SKYLOOP_LOAD_CHILD"


def run(results: Path) -> dict:
    if connection.vendor != "postgresql" or not settings.SKYLOOP_QUEUE:
        return rerun_on_services("load", results)
    purge_gpu_queue()
    workflow = build_sky(f"load-{timezone.now():%Y%m%d%H%M%S}", seed=11)
    answers = precompute_answers(workflow)
    logs = results.parent / "logs"
    logs.mkdir(exist_ok=True)
    load_before = os.getloadavg()[0]
    server, base = start_server(logs / "gunicorn-load.log")
    try:
        stats, cpu = asyncio.run(_drive_and_meter(server, base, workflow.id, answers))
    finally:
        server.stop()
        purge_gpu_queue()
    latencies = np.asarray(stats.latencies_ms)
    served = max(1, len(latencies))
    figures = {
        "classifications_per_s": len(latencies) / DURATION_S,
        # CPU the server side spent per classification (web processes + PostgreSQL backends + Redis):
        # unlike the rate, barely moved by others' work on a shared machine.
        "server_cpu_ms_per_classification": round(1000 * sum(cpu.values()) / served, 2),
        "web_cpu_ms_per_classification": round(1000 * cpu["web"] / served, 2),
        "postgres_cpu_ms_per_classification": round(1000 * cpu["postgres"] / served, 2),
        "redis_cpu_ms_per_classification": round(1000 * cpu["redis"] / served, 2),
        "client_cpu_ms_per_classification": round(1000 * cpu["client"] / served, 2),
        # What 2 cores given to the server alone would sustain at that cost (the client elsewhere).
        "projected_per_s_on_2_cores": round(2 * served / max(1e-9, sum(cpu.values())), 1),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "concurrency": CONCURRENCY,
        "errors": stats.errors,
        "server_workers": server_setting("SKYLOOP_WEB_WORKERS"),
        "server_threads": server_setting("SKYLOOP_WEB_THREADS"),
        "duration_s": DURATION_S,
        "subjects": SubjectState.objects.filter(workflow=workflow).count(),
        "load_avg_1m_before": round(load_before, 2),
    }
    plot(results / "load.png", stats, figures)
    return figures


async def _drive_and_meter(server: ManagedProcess, base: str, workflow_id: int, answers: dict):
    """Drive the crowd; meter CPU seconds of each part over the measured window."""
    t0 = time.perf_counter()
    load = asyncio.create_task(drive(base, workflow_id, answers, CONCURRENCY, WARMUP_S, DURATION_S))
    await asyncio.sleep(max(0.0, t0 + WARMUP_S - time.perf_counter()))
    meter = asyncio.get_running_loop().run_in_executor  # the ORM is synchronous: a thread reads it
    before = await meter(None, cpu_seconds, server)
    await asyncio.sleep(max(0.0, t0 + WARMUP_S + DURATION_S - time.perf_counter()))
    after = await meter(None, cpu_seconds, server)
    return await load, {part: after[part] - before[part] for part in before}


def cpu_seconds(server: ManagedProcess) -> dict[str, float]:
    """CPU seconds so far: gunicorn's processes, this database's PostgreSQL backends, Redis, this client."""
    tick = os.sysconf("SC_CLK_TCK")

    def of(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            return 0.0
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                       " AND pid <> pg_backend_pid()")
        backends = [row[0] for row in cursor.fetchall()]
    info = redis.Redis.from_url(settings.SKYLOOP_QUEUE_URL).info("cpu")
    return {
        "web": sum(of(int(pid)) for pid in [server.process.pid, *children]),
        "postgres": sum(of(pid) for pid in backends),
        "redis": info["used_cpu_sys"] + info["used_cpu_user"],  # the whole Redis: others' use included
        "client": time.process_time(),
    }


# --- services: PostgreSQL and Redis of the benchmark's own ---------------------------------


def rerun_on_services(name: str, results: Path) -> dict:
    """Run ``bench/run.py name`` again in a subprocess on PostgreSQL + Redis; return its figures."""
    if os.environ.get(CHILD_FLAG):
        raise SystemExit(f"bench {name} needs PostgreSQL and the Redis queue, got {connection.vendor}")
    default_url = f"postgres://postgres@127.0.0.1:5432/{DATABASE_PREFIX}{name}"
    database_url = os.environ.get(f"SKYLOOP_{name.upper()}_DATABASE_URL", default_url)
    fresh_database(database_url)
    env = {
        **os.environ,
        CHILD_FLAG: "1",
        "DATABASE_URL": database_url,
        "REDIS_URL": os.environ.get("SKYLOOP_LOAD_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "SKYLOOP_QUEUE_PREFIX": f"skyloop-{name}-{uuid.uuid4().hex[:8]}",
        "SKYLOOP_GPU_QUEUE": f"gpu-{name}-bench",
        "SKYLOOP_VAR_DIR": str(settings.VAR_DIR),
    }
    out = results / f"{name}.json"
    before = out.stat().st_mtime_ns if out.exists() else None
    try:
        subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), name], cwd=ROOT, env=env, check=True)
    finally:  # the queues, seen sets and leases of this run
        client = redis.Redis.from_url(env["REDIS_URL"])
        for key in client.scan_iter(match=f"{env['SKYLOOP_QUEUE_PREFIX']}:*", count=1000):
            client.unlink(key)
    if not out.exists() or out.stat().st_mtime_ns == before:  # never report an earlier run's figures
        raise SystemExit(f"bench/run.py {name} on PostgreSQL + Redis exited without writing {out}")
    return json.loads(out.read_text())


def fresh_database(url: str) -> None:
    """Drop and create the benchmark's database: no earlier run's workflows (whose orphaned
    trainings the sweep would resend) and the schema of this checkout's migrations."""
    import psycopg
    from psycopg import sql

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def server_setting(name: str) -> int:
    """The gunicorn setting as scripts/gunicorn_conf.py resolves it."""
    import runpy

    return int(runpy.run_path(str(ROOT / "scripts" / "gunicorn_conf.py"))[name.removeprefix("SKYLOOP_WEB_").lower()])


def start_server(log_path: Path, env: dict[str, str] | None = None) -> tuple[ManagedProcess, str]:
    """Gunicorn as deployed: the config file, DEBUG off (no query log), no access log; ``env`` on top."""
    port = free_port()
    overrides = {
        **(env or {}),
        "SKYLOOP_DEBUG": "0",
        "SKYLOOP_SECRET_KEY": os.environ.get("SKYLOOP_SECRET_KEY") or uuid.uuid4().hex,
        "SKYLOOP_WEB_BIND": f"127.0.0.1:{port}",
        # As behind a proxy: each simulated volunteer comes from an address of its own
        # (X-Forwarded-For), so the anonymous throttle counts them apart, as it would real people.
        "SKYLOOP_PROXY_HOPS": "1",
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)  # ManagedProcess passes this process's environment on
    try:
        args = [sys.executable, "-m", "gunicorn", "labeler.wsgi", "-c", str(ROOT / "scripts" / "gunicorn_conf.py")]
        server = ManagedProcess(args, log_path, "Booting worker")
        server.wait_ready()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    time.sleep(2)  # every worker booted and imported Django
    return server, f"http://127.0.0.1:{port}"


# --- the sky ---------------------------------------------------------------------------------


def build_sky(project_slug: str, *, seed: int, n_subjects: int = N_SUBJECTS, n_files: int = N_FILES) -> Workflow:
    """``n_files`` simulated cutouts, then Subject rows sharing their files up to ``n_subjects``."""
    plan = SkyPlan(project=project_slug, n_images=n_files, n_spectra=0, n_fields=0, seed=seed, gold_fraction=0.0)
    project = sky_simulate(plan=plan)
    workflow = project.workflows.get(kind="image")
    rng = np.random.default_rng(seed)
    originals = list(Subject.objects.filter(project=project, kind=Subject.Kind.IMAGE))
    clones = [
        Subject(
            project=project, kind=o.kind, external_id=f"{o.external_id}-{i}", data_file=o.data_file,
            data_sha256=o.data_sha256, ra=o.ra, dec=o.dec, metadata=o.metadata, truth=o.truth,
        )
        for i in range(1, -(-n_subjects // len(originals)))
        for o in originals
    ][: n_subjects - len(originals)]
    created = Subject.objects.bulk_create(clones, batch_size=2000)
    subject_states_attach(project=project, subjects=created)
    states = list(SubjectState.objects.filter(workflow=workflow).select_related("subject"))
    gold = [s for s in states if rng.random() < GOLD_FRACTION]
    for state in gold:
        state.gold_answers = dict(SIMULATED_ANSWERS[Workflow.Kind.IMAGE][state.subject.truth["class"]])
    SubjectState.objects.bulk_update(gold, ["gold_answers"], batch_size=2000)
    if connection.vendor == "postgresql":
        # Fresh statistics, as autovacuum keeps them on a live site: planned on the empty tables'
        # figures, the next-subject query scans the whole workflow (7 ms instead of 0.2 ms).
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return workflow


def precompute_answers(workflow: Workflow) -> dict[int, list[list[dict]]]:
    """Per subject, a few simulated volunteers' annotations (so the client spends no time on them)."""
    rng = np.random.default_rng(3)
    crowd = make_crowd(ANSWER_VARIANTS * 4, rng)
    truths = Subject.objects.filter(states__workflow=workflow).values_list("id", "truth")
    return {
        sid: [
            simulated_annotation(crowd[(sid + k) % len(crowd)], workflow.task_tree, sky.CLASS_ANSWERS,
                                 truth["class"], truth["difficulty"], rng)
            for k in range(ANSWER_VARIANTS)
        ]
        for sid, truth in truths
    }


# --- the crowd -------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies_ms: list[float] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)  # seconds since the measured window opened
    errors: int = 0  # failed requests (non-2xx, refused, timed out) in the measured window
    acknowledged: list[str] = field(default_factory=list)  # client UUIDs answered 2xx (repeats included)
    acknowledged_at: list[float] = field(default_factory=list)  # when each was, since the window opened
    rejected: int = 0  # answered 4xx: refused for good (the page drops these from its outbox)
    replays: int = 0  # sends of a UUID the client had already sent once
    served: list[tuple[str, int, float]] = field(default_factory=list)  # (volunteer, next subject, when)


@dataclass(frozen=True)
class Crowd:
    """How the simulated volunteers behave beyond answering."""

    concurrency: int = CONCURRENCY
    replay_share: float = 0.0  # share of acknowledged submissions sent again (a reply lost on the way)
    outbox: bool = False  # retry a failed submission with the same UUID until acknowledged (the page does)
    record_served: bool = False


async def drive(base: str, workflow_id: int, answers: dict, concurrency: int, warmup_s: float,
                duration_s: float, crowd: Crowd | None = None) -> Stats:
    import aiohttp

    crowd = crowd or Crowd(concurrency=concurrency)
    stats = Stats()
    start = time.perf_counter() + warmup_s
    stop = start + duration_s
    timeout = aiohttp.ClientTimeout(total=30)
    async with asyncio.TaskGroup() as group:
        for i in range(crowd.concurrency):
            group.create_task(volunteer(aiohttp, base, workflow_id, answers, i, start, stop, timeout, stats, crowd))
    return stats


async def volunteer(aiohttp, base, workflow_id, answers, index, start, stop, timeout, stats: Stats,
                    crowd: Crowd) -> None:
    """One browser: its own cookie jar, address and kept-alive connection."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    connector = aiohttp.TCPConnector(limit=1)
    address = {"X-Forwarded-For": f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"}
    rng = np.random.default_rng(index)
    async with aiohttp.ClientSession(base, cookie_jar=jar, connector=connector, timeout=timeout,
                                     headers=address) as http:
        subject = await next_subject(http, workflow_id, stats)
        while subject is not None and time.perf_counter() < stop:
            body = {
                "workflow": workflow_id,
                "subject": subject["id"],
                "client_uuid": str(uuid.uuid4()),
                "annotation": answers[subject["id"]][index % ANSWER_VARIANTS],
            }
            payload = await submit(aiohttp, http, jar, body, start, stop, stats, crowd)
            if payload is not None and crowd.replay_share and rng.random() < crowd.replay_share:
                stats.replays += 1  # the reply was "lost": the page sends the same classification again
                payload = await submit(aiohttp, http, jar, body, start, stop, stats, crowd) or payload
            if payload is None:
                subject = await next_subject(http, workflow_id, stats)
            else:
                subject = payload["next"]
            if crowd.record_served and subject is not None:
                stats.served.append((str(index), subject["id"], time.perf_counter() - start))


async def submit(aiohttp, http, jar, body: dict, start: float, stop: float, stats: Stats, crowd: Crowd):
    """POST until acknowledged (with the outbox) or once; the reply's JSON, or None."""
    for attempt in range(200 if crowd.outbox else 1):
        t0 = time.perf_counter()
        status = 0
        try:
            async with http.post("/api/classifications/", json=body, headers=csrf_header(jar)) as reply:
                status = reply.status
                payload = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            payload = None
        t1 = time.perf_counter()
        if 400 <= status < 500 and status != 429:
            stats.rejected += 1
            return None
        if status in (200, 201) and payload is not None:
            stats.acknowledged.append(body["client_uuid"])
            stats.acknowledged_at.append(t1 - start)
            if start <= t1 <= stop:  # completed in the window (a rate, not biased by long requests)
                stats.latencies_ms.append(1000 * (t1 - t0))
                stats.finished_at.append(t1 - start)
            return payload
        stats.errors += t0 >= start
        if attempt:
            stats.replays += 1
        await asyncio.sleep(0.1)
    return None


def csrf_header(jar) -> dict:
    """What the classify page sends: the csrftoken cookie's value (a GET gave the cookie)."""
    token = next((c.value for c in jar if c.key == "csrftoken"), "")
    return {"X-CSRFToken": token}


async def next_subject(http, workflow_id: int, stats: Stats) -> dict | None:
    import aiohttp

    for _ in range(5):
        try:
            async with http.get(f"/api/workflows/{workflow_id}/next/") as reply:
                if reply.status == 200:
                    return (await reply.json())["subject"]
        except (aiohttp.ClientError, TimeoutError):
            pass
        stats.errors += 1
        await asyncio.sleep(0.05)
    return None


def plot(path: Path, stats: Stats, figures: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    latencies = np.asarray(stats.latencies_ms)
    left.hist(latencies, bins=60, color="#f4a259")
    for name, style in (("p50_ms", "--"), ("p99_ms", ":")):
        left.axvline(figures[name], color="k", ls=style, label=f"{name[:3]} {figures[name]:.1f} ms")
    left.set_xlabel("POST classification + next subject (ms)")
    left.set_ylabel("requests")
    left.legend()
    per_second = np.bincount(np.asarray(stats.finished_at, dtype=int), minlength=int(figures["duration_s"]))
    right.plot(per_second, color="#1d2d44")
    right.set_ylim(bottom=0)
    right.set_xlabel("second of the measured window")
    right.set_ylabel("classifications / s")
    right.set_title(f"{figures['concurrency']} volunteers, {figures['server_workers']} workers "
                    f"x {figures['server_threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
