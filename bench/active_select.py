"""Selector benchmarks: the real ``subject_next_for`` path (Redis queue + the database read of the Subject).

Part of bench/active.py (its select_* and repeat figures, merged into active.json); on its own,
``python bench/run.py active_select`` writes the same figures to bench/results/active_select.json
without the learning curves. Runs against whatever this process is configured with: PostgreSQL
when ``DATABASE_URL`` is set (SQLite otherwise), the queue at ``SKYLOOP_QUEUE_URL``/``REDIS_URL``
(a local Redis at 127.0.0.1:6379 when unset and reachable; the database selector alone otherwise).
Rows are bulk-inserted: subjects here carry no pixels (the selector never opens them).

Besides active.py's figures: select_cpu_ms_mean_* (this process's CPU time per call, steadier
than wall time on a shared machine; Redis and PostgreSQL work not included) and
select_loadavg_1m (the 1-minute load average when the latency runs ended).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from labeler.classifications import queue
from labeler.classifications.models import Classification
from labeler.classifications.selectors import subject_next_for
from labeler.subjects.models import Project, Subject
from labeler.workflows.models import SubjectState, Workflow
from mlcore.simulate import sky

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
SCALES = (10_000, 100_000, 1_000_000)
SEEN = 10_000
DRAWS = 2000
REPEAT_DRAWS = 100_000
GOLD_FRACTION = 0.05  # as the simulated sky (SkyPlan.gold_fraction)
INSERT_BATCH = 10_000


def run(results: Path) -> dict:
    """``python bench/run.py active_select``: the selector figures alone."""
    figures, _ = selector_figures()
    return figures


def selector_figures() -> tuple[dict, dict]:
    """Backends, latency at SCALES and repeats; the latency samples per scale for a plot."""
    use_queue()
    figures = backend_figures()
    latency, samples = latency_at_scales(SCALES, SEEN, DRAWS)
    figures.update(latency)
    figures.update(repeats(n_subjects=20_000, n_volunteers=200, draws=REPEAT_DRAWS))
    return figures, samples


def use_queue() -> bool:
    """Point the queue at the configured Redis, or a local one; False when there is none."""
    import redis

    url = settings.SKYLOOP_QUEUE_URL or LOCAL_REDIS
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        settings.SKYLOOP_QUEUE = False
        return False
    settings.SKYLOOP_QUEUE, settings.SKYLOOP_QUEUE_URL = True, url
    settings.SKYLOOP_QUEUE_PREFIX = f"skyloop-bench-{uuid.uuid4().hex[:8]}"
    queue.breaker.reset()
    return True


def new_workflow(slug: str, retire_after: int = 5) -> Workflow:
    project = Project.objects.create(slug=f"{slug}-{uuid.uuid4().hex[:8]}", name=slug)
    return Workflow.objects.create(
        project=project,
        slug=slug,
        name=slug,
        kind=Workflow.Kind.IMAGE,
        task_tree=sky.GALAXY_TREE,
        retire_after=retire_after,
    )


def add_subjects(workflow: Workflow, n: int, rng: np.random.Generator) -> list[int]:
    """``n`` more subjects with random priorities, 5% of them gold; returns their ids."""
    ids: list[int] = []
    offset = Subject.objects.filter(project=workflow.project).count()
    for start in range(0, n, INSERT_BATCH):
        size = min(INSERT_BATCH, n - start)
        with transaction.atomic():
            subjects = Subject.objects.bulk_create(
                Subject(
                    project_id=workflow.project_id,
                    kind="image",
                    external_id=f"b{offset + start + i}",
                    data_file="",
                    data_sha256="",
                )
                for i in range(size)
            )
            priorities = rng.random(size)
            gold = rng.random(size) < GOLD_FRACTION
            SubjectState.objects.bulk_create(
                SubjectState(
                    workflow=workflow, subject_id=s.id, priority=float(p), gold_answers={"T0": 0} if g else None
                )
                for s, p, g in zip(subjects, priorities, gold, strict=True)
            )
        ids += [s.id for s in subjects]
    return ids


def analyze() -> None:
    """Planner statistics for the bulk-loaded tables, as autovacuum gathers them on a production server.

    Without them (a fresh bulk load, or a server running with autovacuum off, as the development
    one here does) PostgreSQL checks a candidate against the volunteer's whole history instead
    of probing the unique index, and the figures would time that instead of the selector.
    """
    if connection.vendor != "postgresql":
        return
    tables = [model._meta.db_table for model in (Subject, SubjectState, Classification)]
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")


def add_seen(workflow: Workflow, volunteer_key: str, subject_ids: list[int]) -> None:
    for start in range(0, len(subject_ids), INSERT_BATCH):
        Classification.objects.bulk_create(
            Classification(
                workflow=workflow,
                workflow_version=1,
                subject_id=sid,
                volunteer_key=volunteer_key,
                annotation=[],
                client_uuid=uuid.uuid4(),
            )
            for sid in subject_ids[start : start + INSERT_BATCH]
        )


def select_latencies(workflow: Workflow, volunteer_key: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Wall and CPU milliseconds per ``subject_next_for`` call (after one warm-up that loads the seen set)."""
    rng = random.Random(seed)
    subject_next_for(workflow=workflow, volunteer_key=volunteer_key, rng=rng)
    wall, cpu = np.empty(n), np.empty(n)
    for i in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        subject = subject_next_for(workflow=workflow, volunteer_key=volunteer_key, rng=rng)
        wall[i], cpu[i] = 1000 * (time.perf_counter() - t0), 1000 * (time.process_time() - c0)
        assert subject is not None
    return wall, cpu


def latency_at_scales(scales: tuple[int, ...], seen: int, draws: int) -> tuple[dict, dict]:
    """p50/p99 at each pool size, for a volunteer whose classifications are scattered (and at the top)."""
    rng = np.random.default_rng(0)
    workflow = new_workflow("bench-select")
    figures, samples = {}, {}
    ids: list[int] = []
    for scale in scales:
        ids += add_subjects(workflow, scale - len(ids), rng)
        n_seen = min(seen, scale // 2)
        scattered = f"bench:scattered:{scale}"
        add_seen(workflow, scattered, [int(i) for i in rng.choice(ids, size=n_seen, replace=False)])
        top = list(
            SubjectState.objects.filter(workflow=workflow)
            .order_by("-priority")
            .values_list("subject_id", flat=True)[:n_seen]
        )
        add_seen(workflow, f"bench:top:{scale}", top)
        analyze()
        if settings.SKYLOOP_QUEUE:
            t0 = time.perf_counter()
            queue.queue_publish(workflow_id=workflow.id, version=0)
            figures[f"queue_build_s_{scale:.0e}".replace("+0", "")] = time.perf_counter() - t0
        label = f"{scale:.0e}".replace("+0", "")
        lat, cpu = select_latencies(workflow, scattered, draws)
        samples[label] = lat
        figures[f"select_p50_ms_{label}"] = float(np.percentile(lat, 50))
        figures[f"select_p99_ms_{label}"] = float(np.percentile(lat, 99))
        figures[f"select_cpu_ms_mean_{label}"] = float(cpu.mean())
        at_top, _ = select_latencies(workflow, f"bench:top:{scale}", draws // 2)
        figures[f"select_p99_ms_{label}_seen_at_top"] = float(np.percentile(at_top, 99))
        print(
            f"  select at {scale}: p50 {figures[f'select_p50_ms_{label}']:.2f} ms, "
            f"p99 {figures[f'select_p99_ms_{label}']:.2f} ms, "
            f"seen at top p99 {figures[f'select_p99_ms_{label}_seen_at_top']:.2f} ms, "
            f"load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    figures["select_loadavg_1m"] = os.getloadavg()[0]
    drop_queue(workflow)
    return figures, samples


def repeats(n_subjects: int, n_volunteers: int, draws: int) -> dict:
    """Rounds in which every volunteer draws a subject at once, then all answers land (bulk).

    A repeat is a subject served to a volunteer who already classified it, or served after
    it retired. Over-classified: votes beyond ``retire_after`` (concurrent volunteers on one
    subject past its retirement).
    """
    rng = np.random.default_rng(1)
    workflow = new_workflow("bench-repeats", retire_after=5)
    add_subjects(workflow, n_subjects, rng)
    SubjectState.objects.filter(workflow=workflow).update(gold_answers=None)  # spread votes evenly
    analyze()
    if settings.SKYLOOP_QUEUE:
        queue.queue_publish(workflow_id=workflow.id, version=0)
    pick = random.Random(2)
    seen: set[tuple[str, int]] = set()
    retired: set[int] = set()
    n_repeats = n_drawn = 0
    volunteers = [f"bench:crowd:{i}" for i in range(n_volunteers)]
    started = time.perf_counter()
    while n_drawn < draws:
        round_pairs = []
        for key in pick.sample(volunteers, len(volunteers)):
            subject = subject_next_for(workflow=workflow, volunteer_key=key, rng=pick)
            if subject is None:
                continue
            n_repeats += (key, subject.id) in seen or subject.id in retired
            round_pairs.append((subject.id, key))
            n_drawn += 1
        if not round_pairs:
            break
        retired |= _answer(workflow, round_pairs)
        seen |= {(key, sid) for sid, key in round_pairs}
    elapsed = time.perf_counter() - started
    drop_queue(workflow)
    counts = Counter(sid for _, sid in seen)
    over = sum(max(0, c - workflow.retire_after) for c in counts.values())
    return {
        "repeats_in_1e5_draws": n_repeats * (100_000 / max(1, n_drawn)),
        "repeat_draws": n_drawn,
        "overclassified_votes_share": over / max(1, n_drawn),
        "repeat_draws_per_s": n_drawn / elapsed,
    }


def _answer(workflow: Workflow, pairs: list[tuple[int, str]]) -> set[int]:
    """Store a round's votes as the submit service would (count, retire at retire_after), then the hooks."""
    with transaction.atomic():
        Classification.objects.bulk_create(
            Classification(
                workflow=workflow,
                workflow_version=1,
                subject_id=sid,
                volunteer_key=key,
                annotation=[],
                client_uuid=uuid.uuid4(),
            )
            for sid, key in pairs
        )
        by_votes: dict[int, list[int]] = {}
        for sid, votes in Counter(sid for sid, _ in pairs).items():
            by_votes.setdefault(votes, []).append(sid)
        states = SubjectState.objects.filter(workflow=workflow)
        for votes, sids in by_votes.items():
            states.filter(subject_id__in=sids).update(classification_count=F("classification_count") + votes)
        done = list(
            states.filter(
                subject_id__in=[sid for sid, _ in pairs],
                status="active",
                classification_count__gte=workflow.retire_after,
            ).values_list("subject_id", flat=True)
        )
        states.filter(subject_id__in=done).update(status=SubjectState.Status.RETIRED)
    queue.subjects_queue_touch(workflow_id=workflow.id, answered=pairs)
    return set(done)


def drop_queue(workflow: Workflow) -> None:
    """Free Redis of a benchmark workflow's queue and seen sets (~100 MB at 10^6 subjects)."""
    if settings.SKYLOOP_QUEUE:
        queue.queue_drop(workflow_id=workflow.id)


def backend_figures() -> dict:
    return {
        "select_db_postgresql": int(connection.vendor == "postgresql"),
        "select_queue_redis": int(settings.SKYLOOP_QUEUE),
    }
