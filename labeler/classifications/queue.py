"""The per-workflow subject queue in Redis: the fast path of ``subject_next_for``.

Keys, all under one hash tag per workflow so the Lua scripts also run on Redis Cluster::

    <prefix>:{wf<id>}:queue        ZSET  active subject id -> priority
    <prefix>:{wf<id>}:gold         SET   active gold subject ids
    <prefix>:{wf<id>}:meta         HASH  version (ModelVersion id, 0 before any model), built_at, watermark
    <prefix>:{wf<id>}:votes        HASH  subject id -> classifications so far (only those with some)
    <prefix>:{wf<id>}:lease        ZSET  "<subject>|<volunteer>" -> expiry (ms): served, answer not back yet
    <prefix>:{wf<id>}:held         HASH  subject id -> live leases
    <prefix>:{wf<id>}:seen:<key>   SET   subjects this volunteer classified, plus the sentinel "0"
    <prefix>:{wf<id>}:skip:<key>   STR   "<epoch>|<score>": every queued subject scored above it is seen

A subject is handed out to at most ``retire_after - votes`` volunteers at a time, so a crowd
arriving at once spreads over the queue instead of over-classifying its top past retirement.

The database stays the source of truth. Redis only proposes candidates; the selector loads
the chosen Subject with a query that also checks it is active and unseen, and candidates
that fail are dropped here. Submits (on commit) mark the subject seen, release its lease and
drop it once retired. A missing queue is rebuilt from the database under a lock, a missing
seen set is reloaded, subjects added since the build are picked up every few seconds, and
beat's sweep rebuilds queues that are stale. Any Redis error trips a short circuit breaker:
for ``SKYLOOP_QUEUE_RETRY_S`` the database selector serves without waiting on Redis.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Max
from redis.backoff import NoBackoff
from redis.retry import Retry

from labeler.classifications import queue_scripts as lua
from labeler.classifications.models import Classification
from labeler.workflows.models import SubjectState

log = logging.getLogger(__name__)

SEEN_TTL_S = 7 * 24 * 3600  # an idle volunteer's seen set is dropped, and reloaded when they return
SYNC_EVERY_MS = 5000  # how often one request looks for subjects added since the build
REBUILD_LOCK_S = 300
FIRST_WINDOW = 32  # queue entries checked first, walking down from the top (twice the top few)
MAX_WINDOW = 4096  # later windows double up to this (Lua's unpack() takes at most ~8000 values)
MAX_SCAN = 60_000  # give up (and ask the database) past this many seen or leased entries
ALTERNATES = 3  # candidates returned besides the chosen one, in case it fails the database check
RANDOM_PROBE = 16  # random members tried for the random share
WRITE_BATCH = 10_000
SENTINEL = "0"  # subject ids start at 1: the sentinel marks a loaded (possibly empty) seen set


@dataclass(frozen=True)
class GoldTaper:
    """Serve gold when ``draw < max(floor, start * 0.5 ** (seen / half_life))`` (``selectors.gold_share``).

    The select script counts ``seen`` itself, so deciding costs no extra round trip.
    """

    draw: float
    start: float
    floor: float
    half_life: int


class QueueUnavailable(Exception):
    """Redis is unset, down, or the breaker is open: the caller serves from the database."""


class _Breaker:
    """After a Redis error, skip Redis for a while instead of paying a timeout on every request."""

    def __init__(self) -> None:
        self.down_until = 0.0
        self.down = False
        self.lock = threading.Lock()

    def closed(self) -> bool:
        return time.monotonic() >= self.down_until

    def trip(self, exc: Exception) -> None:
        with self.lock:
            self.down_until = time.monotonic() + settings.SKYLOOP_QUEUE_RETRY_S
            if not self.down:  # log once per outage, not once per request
                log.warning("subject queue unavailable, the database serves for now: %s", exc)
            self.down = True

    def ok(self) -> None:
        if self.down:
            with self.lock:
                self.down = False
            log.info("subject queue reachable again")

    def reset(self) -> None:
        self.down_until, self.down = 0.0, False


breaker = _Breaker()


def queue_enabled() -> bool:
    return bool(settings.SKYLOOP_QUEUE) and breaker.closed()


@lru_cache(maxsize=4)
def _client_for(url: str, timeout: float) -> redis.Redis:
    # One immediate retry (a connection Redis dropped on restart); redis-py's default of three
    # with backoff would hold every request for up to a second while Redis is down, before the
    # breaker opens and the database takes over.
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        decode_responses=True,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1),
    )


def client() -> redis.Redis:
    return _client_for(settings.SKYLOOP_QUEUE_URL, settings.SKYLOOP_QUEUE_TIMEOUT_S)


@contextmanager
def _redis() -> Iterator[redis.Redis]:
    """The client, or QueueUnavailable; a Redis error opens the breaker."""
    if not queue_enabled():
        raise QueueUnavailable("subject queue disabled or recently unreachable")
    try:
        yield client()
    except redis.RedisError as exc:
        breaker.trip(exc)
        raise QueueUnavailable(str(exc)) from exc
    breaker.ok()


class _Keys:
    def __init__(self, workflow_id: int):
        # The database name keeps a test database's queues apart from the site's on a shared Redis.
        database = hashlib.sha1(str(connection.settings_dict["NAME"]).encode()).hexdigest()[:8]
        self.base = f"{settings.SKYLOOP_QUEUE_PREFIX}:{database}:{{wf{int(workflow_id)}}}"
        self.queue = f"{self.base}:queue"
        self.gold = f"{self.base}:gold"
        self.meta = f"{self.base}:meta"
        self.lease = f"{self.base}:lease"
        self.held = f"{self.base}:held"
        self.votes = f"{self.base}:votes"
        self.lock = f"{self.base}:lock"
        self.sync = f"{self.base}:sync"

    def seen(self, volunteer_key: str) -> str:
        return f"{self.base}:seen:{volunteer_key}"

    def skip(self, volunteer_key: str) -> str:
        return f"{self.base}:skip:{volunteer_key}"

    def for_scripts(self, volunteer_key: str) -> list[str]:
        """KEYS of the select, lease and touch scripts, in their order."""
        return [
            self.queue,
            self.gold,
            self.lease,
            self.seen(volunteer_key),
            self.meta,
            self.sync,
            self.held,
            self.votes,
            self.skip(volunteer_key),
        ]

    def temporary(self, name: str) -> str:
        return f"{self.base}:tmp:{name}:{uuid.uuid4().hex}"


@lru_cache(maxsize=32)
def _script(r: redis.Redis, source: str):
    """A registered script per client: EVALSHA after the first call."""
    return r.register_script(source)


# --- selection --------------------------------------------------------------------------


def queue_candidates(
    *,
    workflow_id: int,
    volunteer_key: str,
    gold: bool | GoldTaper,
    random_pick: bool,
    rand: float,
    top_few: int,
    retire_after: int,
    exclude: Iterable[int] = (),
) -> list[int] | None:
    """The chosen subject (leased to this volunteer) then a few alternates; [] when the queue has none.

    ``gold``: look among unseen gold subjects first; a GoldTaper decides from the volunteer's count.

    None when the queue is being rebuilt by another request (serve from the database).
    Raises QueueUnavailable when Redis is off or down.
    """
    keys = _Keys(workflow_id)
    lease_ms = int(settings.SKYLOOP_QUEUE_LEASE_S * 1000)
    with _redis() as r:
        select = _script(r, lua.SELECT)
        taper = gold if isinstance(gold, GoldTaper) else GoldTaper(1.0, 0.0, 0.0, 1)
        args = [
            2 if isinstance(gold, GoldTaper) else int(gold),
            int(random_pick),
            top_few,
            min(max(rand, 0.0), 0.999999),
            lease_ms,
            SYNC_EVERY_MS,
            SEEN_TTL_S,
            FIRST_WINDOW,
            MAX_SCAN,
            ALTERNATES,
            RANDOM_PROBE,
            volunteer_key,
            retire_after,
            repr(float(taper.draw)),
            repr(float(taper.start)),
            repr(float(taper.floor)),
            max(1, int(taper.half_life)),
            MAX_WINDOW,
            *[int(i) for i in exclude],
        ]
        for _ in range(3):
            status, sync_due, *ids = select(keys=[*keys.for_scripts(volunteer_key)], args=args)
            if status == 1 and not _rebuild_locked(r, keys, workflow_id):
                return None
            if status == 2:
                _load_seen(r, keys, workflow_id, volunteer_key)
            if status == 0:
                if sync_due:
                    _sync_new_states(r, keys, workflow_id)
                return [int(i) for i in ids]
    return None


def seen_count(*, workflow_id: int, volunteer_key: str) -> int:
    """How many subjects this volunteer has classified in the workflow (loads the seen set if needed)."""
    keys = _Keys(workflow_id)
    with _redis() as r:
        n = r.scard(keys.seen(volunteer_key))
        if n == 0:
            return _load_seen(r, keys, workflow_id, volunteer_key)
        return n - 1  # the sentinel


def queue_lease(*, workflow_id: int, subject_id: int, volunteer_key: str) -> None:
    """Lease a subject served from the alternates (the chosen one is leased by the select)."""
    keys = _Keys(workflow_id)
    with _redis() as r:
        lease_ms = int(settings.SKYLOOP_QUEUE_LEASE_S * 1000)
        _script(r, lua.LEASE)(keys=keys.for_scripts(volunteer_key), args=[subject_id, volunteer_key, lease_ms])


def queue_forget(*, workflow_id: int, volunteer_key: str, subject_ids: list[int]) -> None:
    """Candidates the database refused: drop those no longer active, mark those this volunteer classified."""
    if not subject_ids:
        return
    states = dict(
        SubjectState.objects.filter(workflow_id=workflow_id, subject_id__in=subject_ids).values_list(
            "subject_id", "status"
        )
    )
    gone = [sid for sid in subject_ids if states.get(sid) != SubjectState.Status.ACTIVE]
    classified = list(
        Classification.objects.filter(
            workflow_id=workflow_id, volunteer_key=volunteer_key, subject_id__in=subject_ids
        ).values_list("subject_id", flat=True)
    )
    keys = _Keys(workflow_id)
    with _redis() as r:
        pipe = r.pipeline(transaction=False)
        if gone:
            pipe.zrem(keys.queue, *gone)
            pipe.srem(keys.gold, *gone)
            pipe.hdel(keys.votes, *gone)
        if classified and r.exists(keys.seen(volunteer_key)):
            pipe.sadd(keys.seen(volunteer_key), *classified)
        pipe.execute()


# --- keeping Redis in step with the database ------------------------------------------


def subject_queue_touch(*, workflow_id: int, subject_id: int, volunteer_key: str | None = None) -> None:
    """After a commit that changed a subject (a vote, retirement, a withdrawn vote): mirror it in Redis.

    With ``volunteer_key`` (they answered it) the subject joins their seen set and its lease is
    released. Never raises: the selector checks the database anyway, so a lost update costs
    at most one extra query later.
    """
    subjects_queue_touch(workflow_id=workflow_id, answered=[(subject_id, volunteer_key)])


def subjects_queue_touch(
    *, workflow_id: int, answered: list[tuple[int, str | None]], states: dict[int, dict] | None = None
) -> None:
    """``subject_queue_touch`` for many ``(subject_id, volunteer_key or None)`` at once: one query, one round trip.

    ``states``: ``{subject_id: {status, priority, gold_answers, classification_count}}`` as just
    committed, when the caller has them (the submit does): then nothing is read back.
    """
    if not settings.SKYLOOP_QUEUE or not answered:
        return
    try:
        if states is None:
            states = {
                row["subject_id"]: row
                for row in SubjectState.objects.filter(
                    workflow_id=workflow_id, subject_id__in={sid for sid, _ in answered}
                ).values("subject_id", "status", "priority", "gold_answers", "classification_count")
            }
        keys = _Keys(workflow_id)
        with _redis() as r:
            touch = _script(r, lua.TOUCH)
            pipe = r.pipeline(transaction=False)
            for subject_id, volunteer_key in answered:
                state = states.get(subject_id)
                active = state is not None and state["status"] == SubjectState.Status.ACTIVE
                args = [
                    subject_id,
                    int(active),
                    repr(float(state["priority"])) if state else 0,
                    int(bool(state and state["gold_answers"])),
                    state["classification_count"] if state else 0,
                    volunteer_key or "",
                    int(volunteer_key is not None),
                ]
                touch(keys=keys.for_scripts(volunteer_key or ""), args=args, client=pipe)
            pipe.execute()
    except QueueUnavailable:
        pass
    except Exception:  # a callback after commit: the submit itself has succeeded
        log.exception("could not update the queue for subjects of workflow %s", workflow_id)


def queue_publish(*, workflow_id: int, version: int) -> bool:
    """Replace the queue with the database's active subjects and priorities, labelled ``version``.

    Called once a model version has written every priority. Refused (False) when a newer
    version has already published. Redis down: logged, False; beat's sweep catches up.
    """
    try:
        with _redis() as r:
            return _build(r, _Keys(workflow_id), workflow_id, version)
    except QueueUnavailable as exc:
        log.warning(
            "priorities of version %s for workflow %s not published to the queue: %s", version, workflow_id, exc
        )
        return False


def queue_refresh(*, workflow_id: int, latest_version: int) -> bool:
    """Rebuild a queue that is missing, behind ``latest_version`` or older than SKYLOOP_QUEUE_REFRESH_S."""
    keys = _Keys(workflow_id)
    try:
        with _redis() as r:
            meta = r.hgetall(keys.meta)
            fresh = (
                meta
                and int(meta["version"]) >= latest_version
                and time.time() - float(meta["built_at"]) < settings.SKYLOOP_QUEUE_REFRESH_S
            )
            if fresh:
                return False
            return _rebuild_locked(r, keys, workflow_id, version=max(latest_version, int(meta.get("version", 0))))
    except QueueUnavailable:
        return False


def queue_info(*, workflow_id: int) -> dict:
    """What the queue holds (for tests, benchmarks and operators)."""
    keys = _Keys(workflow_id)
    with _redis() as r:
        meta = r.hgetall(keys.meta)
        return {
            "version": int(meta["version"]) if meta else None,
            "built_at": float(meta["built_at"]) if meta else None,
            "size": r.zcard(keys.queue),
            "gold": r.scard(keys.gold),
            "leased": r.zcard(keys.lease),
        }


def queue_drop(*, workflow_id: int) -> None:
    """Forget the workflow's queue, seen sets and leases (tests, benchmarks, a deleted workflow)."""
    keys = _Keys(workflow_id)
    with _redis() as r:
        names = list(r.scan_iter(match=f"{_glob_escape(keys.base)}:*", count=1000))
        for start in range(0, len(names), 1000):
            r.unlink(*names[start : start + 1000])


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _active_version(workflow_id: int) -> int:
    from labeler.learning.models import ModelVersion

    scored = ModelVersion.objects.filter(workflow_id=workflow_id, scored_at__isnull=False)
    return scored.aggregate(m=Max("id"))["m"] or 0


def _rebuild_locked(r: redis.Redis, keys: _Keys, workflow_id: int, version: int | None = None) -> bool:
    """Rebuild under a lock; False when another process holds it (it is rebuilding right now)."""
    token = uuid.uuid4().hex
    if not r.set(keys.lock, token, nx=True, ex=REBUILD_LOCK_S):
        return False
    try:
        _build(r, keys, workflow_id, _active_version(workflow_id) if version is None else version)
        return True
    finally:
        _script(r, lua.UNLOCK)(keys=[keys.lock], args=[token])


def _build(r: redis.Redis, keys: _Keys, workflow_id: int, version: int) -> bool:
    """Write the active subjects to temporary keys, then swap them in unless a newer version is live."""
    started = time.monotonic()
    states = SubjectState.objects.filter(workflow_id=workflow_id)
    watermark = states.aggregate(m=Max("id"))["m"] or 0
    tmp_queue, tmp_gold, tmp_votes = keys.temporary("queue"), keys.temporary("gold"), keys.temporary("votes")
    active = states.filter(status=SubjectState.Status.ACTIVE)
    try:
        n = _write_sorted_set(r, tmp_queue, active.values_list("subject_id", "priority").iterator(chunk_size=20_000))
        gold = list(active.filter(gold_answers__isnull=False).values_list("subject_id", flat=True))
        for start in range(0, len(gold), WRITE_BATCH):
            r.sadd(tmp_gold, *gold[start : start + WRITE_BATCH])
            r.expire(tmp_gold, REBUILD_LOCK_S)
        votes = list(active.filter(classification_count__gt=0).values_list("subject_id", "classification_count"))
        for start in range(0, len(votes), WRITE_BATCH):
            r.hset(tmp_votes, mapping=dict(votes[start : start + WRITE_BATCH]))
            r.expire(tmp_votes, REBUILD_LOCK_S)
        swapped = _script(r, lua.SWAP)(
            keys=[keys.queue, keys.gold, keys.meta, tmp_queue, tmp_gold, keys.votes, tmp_votes],
            args=[version, time.time(), watermark],
        )
    finally:
        r.delete(tmp_queue, tmp_gold, tmp_votes)  # only left over when the build failed half-way
    log.info(
        "queue of workflow %s: %d subjects, version %s, %s in %.2fs",
        workflow_id,
        n,
        version,
        "published" if swapped else "refused (a newer version is live)",
        time.monotonic() - started,
    )
    return bool(swapped)


def _write_sorted_set(r: redis.Redis, key: str, rows: Iterable[tuple[int, float]]) -> int:
    pipe = r.pipeline(transaction=False)
    batch: dict[str, float] = {}
    n = 0
    for subject_id, priority in rows:
        batch[str(subject_id)] = float(priority)
        if len(batch) >= WRITE_BATCH:
            pipe.zadd(key, batch)
            pipe.expire(key, REBUILD_LOCK_S)
            n += len(batch)
            batch = {}
            pipe.execute()
    if batch:
        pipe.zadd(key, batch)
        pipe.expire(key, REBUILD_LOCK_S)
        n += len(batch)
        pipe.execute()
    return n


def _load_seen(r: redis.Redis, keys: _Keys, workflow_id: int, volunteer_key: str) -> int:
    """(Re)load a volunteer's seen set from their classifications; returns how many."""
    ids = list(
        Classification.objects.filter(workflow_id=workflow_id, volunteer_key=volunteer_key).values_list(
            "subject_id", flat=True
        )
    )
    tmp = keys.temporary("seen")
    pipe = r.pipeline(transaction=True)
    pipe.sadd(tmp, SENTINEL)
    for start in range(0, len(ids), WRITE_BATCH):
        pipe.sadd(tmp, *ids[start : start + WRITE_BATCH])
    pipe.rename(tmp, keys.seen(volunteer_key))
    pipe.expire(keys.seen(volunteer_key), SEEN_TTL_S)
    pipe.delete(keys.skip(volunteer_key))  # it vouched for the old set, which may have held withdrawn votes
    pipe.execute()
    return len(ids)


def _sync_new_states(r: redis.Redis, keys: _Keys, workflow_id: int) -> None:
    """Queue subjects attached to the workflow since the last build (new ingests)."""
    watermark = int(r.hget(keys.meta, "watermark") or 0)
    rows = list(
        SubjectState.objects.filter(workflow_id=workflow_id, id__gt=watermark)
        .order_by("id")
        .values_list("id", "subject_id", "status", "priority", "gold_answers")[:WRITE_BATCH]
    )
    if not rows:
        return
    active = [row for row in rows if row[2] == SubjectState.Status.ACTIVE]
    pipe = r.pipeline(transaction=False)
    if active:
        pipe.zadd(keys.queue, {str(row[1]): float(row[3]) for row in active})
        gold = [row[1] for row in active if row[4]]
        if gold:
            pipe.sadd(keys.gold, *gold)
    # After the ZADD, on the same connection: a skip key taken before it is void once this runs.
    _script(r, lua.RAISE_WATERMARK)(keys=[keys.meta], args=[rows[-1][0]], client=pipe)
    pipe.execute()
