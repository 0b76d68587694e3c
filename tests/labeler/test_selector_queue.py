"""The Redis subject queue behind subject_next_for, against a real Redis (127.0.0.1:6379 or REDIS_URL).

Each test gets its own key prefix and removes its keys. Skipped when Redis is unreachable,
unless SKYLOOP_REQUIRE_SERVICES is set (CI), where that is a failure.
"""

from __future__ import annotations

import random
import time
import uuid

import pytest
import redis
from django.conf import settings

from labeler.classifications import queue, selectors
from labeler.classifications.models import Classification
from labeler.classifications.selectors import TOP_FEW, subject_next_for
from labeler.classifications.services import classification_submit
from labeler.learning.models import ModelVersion
from labeler.subjects.models import Subject
from labeler.subjects.simulation import SkyPlan, sky_simulate
from labeler.workflows.models import SubjectState
from tests.conftest import require_services

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def redis_queue(settings):
    url = settings.REDIS_URL or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if require_services():
            raise AssertionError(f"SKYLOOP_REQUIRE_SERVICES=1 but Redis at {url} is unreachable: {exc}") from exc
        pytest.skip(f"no Redis at {url}")
    prefix = f"skyloop-test-{uuid.uuid4().hex[:12]}"
    settings.SKYLOOP_QUEUE, settings.SKYLOOP_QUEUE_URL, settings.SKYLOOP_QUEUE_PREFIX = True, url, prefix
    settings.SKYLOOP_QUEUE_RETRY_S = 0.3
    queue.breaker.reset()
    yield redis.Redis.from_url(url, decode_responses=True)
    settings.SKYLOOP_QUEUE_URL = url
    queue.breaker.reset()
    leftover = redis.Redis.from_url(url)
    for key in leftover.scan_iter(match=f"{prefix}:*", count=1000):
        leftover.unlink(key)


@pytest.fixture
def only_priorities(image_workflow):
    """No gold, no random share and room for every volunteer: the queue's order alone decides.

    With the small sky's retire_after of 3, three volunteers' leases fill a top subject and the
    selector rightly reaches below the top few (about 1 run in 20 of the top-few test); tests
    about that room set their own retire_after.
    """
    image_workflow.random_share = 0.0
    image_workflow.gold_share_start = 0.0
    image_workflow.retire_after = 40
    image_workflow.save()
    return image_workflow


def submit(workflow, subject_id, volunteer_key):
    path = [{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}]
    return classification_submit(
        workflow=workflow,
        subject_id=subject_id,
        volunteer_key=volunteer_key,
        annotation=path,
        client_uuid=uuid.uuid4(),
    )


def classified(workflow, volunteer_key, subject_ids):
    """Classifications written straight to the database (no commit hooks: Redis does not hear of them)."""
    for sid in subject_ids:
        Classification.objects.create(
            workflow=workflow,
            workflow_version=1,
            subject_id=sid,
            volunteer_key=volunteer_key,
            annotation=[],
            client_uuid=uuid.uuid4(),
        )


def state_ids(workflow):
    return list(SubjectState.objects.filter(workflow=workflow).order_by("id").values_list("subject_id", flat=True))


def set_priorities(workflow, order):
    """Priorities 1..N in the given subject order (the last is the highest)."""
    states = {s.subject_id: s for s in SubjectState.objects.filter(workflow=workflow)}
    for rank, subject_id in enumerate(order, start=1):
        states[subject_id].priority = float(rank)
    SubjectState.objects.bulk_update(list(states.values()), ["priority"])


def test_it_builds_the_queue_from_the_database_and_serves_the_top_few(redis_queue, only_priorities):
    ids = state_ids(only_priorities)
    set_priorities(only_priorities, ids)
    served = {subject_next_for(workflow=only_priorities, volunteer_key=f"a:{i}").id for i in range(10)}
    assert served <= set(ids[-TOP_FEW:])
    info = queue.queue_info(workflow_id=only_priorities.id)
    assert info["size"] == len(ids) and info["version"] == 0 and info["leased"] == 10


def test_it_never_serves_a_seen_or_retired_subject_even_without_the_commit_hooks(redis_queue, only_priorities):
    states = list(SubjectState.objects.filter(workflow=only_priorities))
    subject_next_for(workflow=only_priorities, volunteer_key="a:me")  # builds the queue and the seen set
    # Behind the queue's back (no on-commit hooks run inside this test's transaction):
    retired = {s.subject_id for s in states[:8]}
    SubjectState.objects.filter(subject_id__in=retired).update(status=SubjectState.Status.RETIRED)
    seen = {s.subject_id for s in states[8:14]}
    for sid in seen:
        Classification.objects.create(
            workflow=only_priorities,
            workflow_version=1,
            subject_id=sid,
            volunteer_key="a:me",
            annotation=[],
            client_uuid=uuid.uuid4(),
        )
    set_priorities(only_priorities, [s.subject_id for s in states[14:]] + list(seen) + list(retired))
    queue.queue_publish(workflow_id=only_priorities.id, version=0)
    served = []
    while (subject := subject_next_for(workflow=only_priorities, volunteer_key="a:me")) is not None:
        assert subject.id not in retired and subject.id not in seen and subject.id not in served
        served.append(subject.id)
        Classification.objects.create(
            workflow=only_priorities,
            workflow_version=1,
            subject_id=subject.id,
            volunteer_key="a:me",
            annotation=[],
            client_uuid=uuid.uuid4(),
        )
    assert len(served) == len(states) - len(retired) - len(seen)
    assert queue.queue_info(workflow_id=only_priorities.id)["size"] == len(states) - len(retired)


def test_the_commit_hook_marks_the_subject_seen_releases_the_lease_and_drops_it_once_retired(
    redis_queue, only_priorities, django_capture_on_commit_callbacks
):
    only_priorities.retire_after = 2
    only_priorities.save()
    subject = subject_next_for(workflow=only_priorities, volunteer_key="a:1")
    keys = queue._Keys(only_priorities.id)
    assert redis_queue.zscore(keys.lease, f"{subject.id}|a:1") is not None
    assert redis_queue.hget(keys.held, subject.id) == "1"
    with django_capture_on_commit_callbacks(execute=True):
        submit(only_priorities, subject.id, "a:1")
    assert redis_queue.sismember(keys.seen("a:1"), subject.id)
    assert redis_queue.zscore(keys.lease, f"{subject.id}|a:1") is None and not redis_queue.hget(keys.held, subject.id)
    assert redis_queue.hget(keys.votes, subject.id) == "1"
    assert redis_queue.zscore(keys.queue, subject.id) is not None
    with django_capture_on_commit_callbacks(execute=True):
        submit(only_priorities, subject.id, "a:2")  # the second vote retires it
    assert redis_queue.zscore(keys.queue, subject.id) is None


def test_it_honours_the_ids_the_page_already_holds(redis_queue, only_priorities):
    ids = list(SubjectState.objects.filter(workflow=only_priorities).values_list("subject_id", flat=True))
    held = tuple(ids[:-2])
    for _ in range(5):
        assert subject_next_for(workflow=only_priorities, volunteer_key="a:x", exclude=held).id in ids[-2:]


def test_a_stale_model_version_never_overwrites_a_newer_one(redis_queue, only_priorities):
    old = ModelVersion.objects.create(workflow=only_priorities, number=1, kind="question_head")
    new = ModelVersion.objects.create(workflow=only_priorities, number=2, kind="question_head")
    keys = queue._Keys(only_priorities.id)
    SubjectState.objects.filter(workflow=only_priorities).update(priority=0.9)
    assert queue.queue_publish(workflow_id=only_priorities.id, version=new.id)
    SubjectState.objects.filter(workflow=only_priorities).update(priority=0.1)
    assert not queue.queue_publish(workflow_id=only_priorities.id, version=old.id)
    assert queue.queue_info(workflow_id=only_priorities.id)["version"] == new.id
    assert {s for _, s in redis_queue.zrange(keys.queue, 0, -1, withscores=True)} == {0.9}
    assert not [k for k in redis_queue.scan_iter(match=f"{keys.base}:tmp:*")], "a refused build left its keys"
    assert queue.queue_publish(workflow_id=only_priorities.id, version=new.id)  # the same version may refresh


def test_it_falls_back_to_the_database_when_redis_dies_and_returns_when_it_is_back(
    redis_queue, only_priorities, settings
):
    subject_next_for(workflow=only_priorities, volunteer_key="a:1")
    keys = queue._Keys(only_priorities.id)
    assert redis_queue.zcard(keys.lease) == 1

    good_url = settings.SKYLOOP_QUEUE_URL
    settings.SKYLOOP_QUEUE_URL = CLOSED_PORT_URL  # Redis gone: connection refused
    started = time.monotonic()
    for i in range(20):
        assert subject_next_for(workflow=only_priorities, volunteer_key=f"b:{i}") is not None
    assert time.monotonic() - started < 5
    assert not queue.queue_enabled()  # the breaker is open: no connect attempt per request
    assert redis_queue.zcard(keys.lease) == 1  # the database served them

    settings.SKYLOOP_QUEUE_URL = good_url
    time.sleep(settings.SKYLOOP_QUEUE_RETRY_S + 0.05)
    assert subject_next_for(workflow=only_priorities, volunteer_key="a:2") is not None
    assert redis_queue.zcard(keys.lease) == 2  # served from the queue again


def test_it_survives_its_connection_being_killed_mid_use(redis_queue, only_priorities):
    subject_next_for(workflow=only_priorities, volunteer_key="a:1")
    redis_queue.client_kill_filter(_id=queue.client().client_id())
    assert subject_next_for(workflow=only_priorities, volunteer_key="a:2") is not None
    time.sleep(settings.SKYLOOP_QUEUE_RETRY_S + 0.05)
    assert subject_next_for(workflow=only_priorities, volunteer_key="a:3") is not None
    assert queue.queue_enabled()


def test_a_lost_queue_is_rebuilt_from_the_database(redis_queue, only_priorities):
    subject_next_for(workflow=only_priorities, volunteer_key="a:1")
    queue.queue_drop(workflow_id=only_priorities.id)  # e.g. Redis restarted without persistence
    assert queue.queue_info(workflow_id=only_priorities.id)["version"] is None
    assert subject_next_for(workflow=only_priorities, volunteer_key="a:1") is not None
    assert queue.queue_info(workflow_id=only_priorities.id)["size"] == only_priorities.states.count()


def test_leases_spread_concurrent_volunteers_over_distinct_subjects(redis_queue, only_priorities):
    only_priorities.retire_after = 1  # one vote retires: a subject goes to one volunteer at a time
    only_priorities.save()
    served = [subject_next_for(workflow=only_priorities, volunteer_key=f"a:{i}").id for i in range(20)]
    assert len(set(served)) == 20  # the database path would repeat some among its top 16
    assert queue.queue_info(workflow_id=only_priorities.id)["leased"] == 20


def test_no_more_volunteers_hold_a_subject_than_the_votes_it_still_needs(redis_queue, only_priorities):
    only_priorities.retire_after = 3
    only_priorities.save()
    ids = state_ids(only_priorities)
    set_priorities(only_priorities, ids)
    SubjectState.objects.filter(subject_id=ids[-1]).update(classification_count=2)  # the top needs one more vote
    served = [subject_next_for(workflow=only_priorities, volunteer_key=f"a:{i}").id for i in range(40)]
    counts = {sid: served.count(sid) for sid in set(served)}
    assert counts.get(ids[-1], 0) <= 1 and max(counts.values()) <= 3


def test_subjects_ingested_after_the_build_join_the_queue(redis_queue, only_priorities, monkeypatch):
    monkeypatch.setattr(queue, "SYNC_EVERY_MS", 1)
    subject_next_for(workflow=only_priorities, volunteer_key="a:1")
    before = set(only_priorities.states.values_list("subject_id", flat=True))
    sky_simulate(plan=SkyPlan(project="test-sky", n_images=3, n_spectra=0, seed=9))
    new = set(only_priorities.states.values_list("subject_id", flat=True)) - before
    SubjectState.objects.filter(subject_id__in=new).update(priority=100.0)
    time.sleep(0.01)
    subject_next_for(workflow=only_priorities, volunteer_key="a:2")  # this request syncs
    keys = queue._Keys(only_priorities.id)
    assert {sid: redis_queue.zscore(keys.queue, sid) for sid in new} == dict.fromkeys(new, 100.0)
    assert subject_next_for(workflow=only_priorities, volunteer_key="c:1", exclude=tuple(before)).id in new


def test_gold_comes_from_the_queue_for_new_volunteers(redis_queue, image_workflow):
    gold_ids = set(SubjectState.objects.filter(workflow=image_workflow)[:3].values_list("subject_id", flat=True))
    SubjectState.objects.filter(subject_id__in=gold_ids).update(gold_answers={"T0": 0})
    SubjectState.objects.exclude(subject_id__in=gold_ids).update(gold_answers=None)
    rng = random.Random(3)
    served = [subject_next_for(workflow=image_workflow, volunteer_key=f"a:new{i}", rng=rng).id for i in range(200)]
    assert 0.35 < sum(s in gold_ids for s in served) / 200 < 0.65
    assert queue.queue_info(workflow_id=image_workflow.id)["gold"] == 3


@pytest.fixture
def seen_top(redis_queue, only_priorities, monkeypatch):
    """Priorities 1..24 in id order; "a:me" has classified the top 10. Tiny windows, no random pick."""
    monkeypatch.setattr(queue, "FIRST_WINDOW", 2)
    monkeypatch.setattr(queue, "MAX_WINDOW", 4)
    monkeypatch.setattr(selectors, "TOP_FEW", 1)  # the best unseen subject, deterministically
    ids = state_ids(only_priorities)
    set_priorities(only_priorities, ids)
    classified(only_priorities, "a:me", ids[-10:])
    return ids


def skip_score(redis_queue, workflow, volunteer_key):
    """The score the volunteer's skip key vouches for (everything above it is seen), or None."""
    value = redis_queue.get(queue._Keys(workflow.id).skip(volunteer_key))
    return None if value is None else float(value.rsplit("|", 1)[1])


def test_a_volunteer_who_has_seen_the_whole_top_gets_the_best_unseen_and_skips_the_top_next_time(
    seen_top, redis_queue, only_priorities
):
    rank_of = {sid: rank for rank, sid in enumerate(seen_top, start=1)}
    for _ in range(3):  # walked once, then started below the seen top
        assert subject_next_for(workflow=only_priorities, volunteer_key="a:me").id == seen_top[-11]
        assert skip_score(redis_queue, only_priorities, "a:me") == rank_of[seen_top[-10]]
    assert skip_score(redis_queue, only_priorities, "a:other") is None  # per volunteer
    classified(only_priorities, "a:me", [seen_top[-11]])
    queue.subject_queue_touch(workflow_id=only_priorities.id, subject_id=seen_top[-11], volunteer_key="a:me")
    assert subject_next_for(workflow=only_priorities, volunteer_key="a:me").id == seen_top[-12]
    assert skip_score(redis_queue, only_priorities, "a:me") == rank_of[seen_top[-11]]


def test_subjects_the_page_holds_end_the_skipped_run(seen_top, redis_queue, only_priorities):
    """Held is not seen: skipping past it would lose it once the page lets it go unanswered."""
    classified(only_priorities, "a:me", [seen_top[-12]])  # seen, below the held one
    served = subject_next_for(workflow=only_priorities, volunteer_key="a:me", exclude=(seen_top[-11],))
    assert served.id == seen_top[-13]
    assert subject_next_for(workflow=only_priorities, volunteer_key="a:me").id == seen_top[-11]


def test_a_subject_raised_above_the_skipped_top_is_served(seen_top, redis_queue, only_priorities):
    subject_next_for(workflow=only_priorities, volunteer_key="a:me")  # takes the skip key
    raised = seen_top[0]
    SubjectState.objects.filter(subject_id=raised).update(priority=100.0)
    queue.subject_queue_touch(workflow_id=only_priorities.id, subject_id=raised)
    assert subject_next_for(workflow=only_priorities, volunteer_key="a:me").id == raised


def test_a_subject_ingested_above_the_skipped_top_is_served(seen_top, redis_queue, only_priorities, monkeypatch):
    monkeypatch.setattr(queue, "SYNC_EVERY_MS", 1)
    subject_next_for(workflow=only_priorities, volunteer_key="a:me")  # takes the skip key
    sky_simulate(plan=SkyPlan(project="test-sky", n_images=1, n_spectra=0, seed=9))
    new = only_priorities.states.exclude(subject_id__in=seen_top).get()
    SubjectState.objects.filter(pk=new.pk).update(priority=100.0)
    time.sleep(0.01)
    subject_next_for(workflow=only_priorities, volunteer_key="a:x")  # this request syncs
    assert subject_next_for(workflow=only_priorities, volunteer_key="a:me").id == new.subject_id


def test_a_reloaded_seen_set_voids_the_skip_key(seen_top, redis_queue, only_priorities):
    """The Redis seen set may hold a withdrawn vote; reloaded from the database, the skip key goes too."""
    subject_next_for(workflow=only_priorities, volunteer_key="a:me")
    Classification.objects.filter(subject_id=seen_top[-1], volunteer_key="a:me").delete()  # withdrawn
    redis_queue.delete(queue._Keys(only_priorities.id).seen("a:me"))  # expired while they were away
    assert subject_next_for(workflow=only_priorities, volunteer_key="a:me").id == seen_top[-1]


def test_a_newer_model_versions_order_voids_the_skip_key_and_a_stale_one_changes_nothing(
    seen_top, redis_queue, only_priorities
):
    old = ModelVersion.objects.create(workflow=only_priorities, number=1, kind="question_head")
    new = ModelVersion.objects.create(workflow=only_priorities, number=2, kind="question_head")
    subject_next_for(workflow=only_priorities, volunteer_key="a:me")
    set_priorities(only_priorities, seen_top[1:] + seen_top[:1])  # the old bottom is the new top
    assert queue.queue_publish(workflow_id=only_priorities.id, version=new.id)
    assert subject_next_for(workflow=only_priorities, volunteer_key="a:me").id == seen_top[0]
    set_priorities(only_priorities, seen_top)
    assert not queue.queue_publish(workflow_id=only_priorities.id, version=old.id)
    assert subject_next_for(workflow=only_priorities, volunteer_key="a:me").id == seen_top[0]


def test_a_long_seen_top_is_walked_in_growing_windows_to_the_unseen_rest(redis_queue, only_priorities, monkeypatch):
    monkeypatch.setattr(queue, "FIRST_WINDOW", 1)
    ids = state_ids(only_priorities)
    set_priorities(only_priorities, ids)
    classified(only_priorities, "a:me", ids[3:])  # 1 + 2 + 4 + 8 + ... windows before the first unseen
    served = {subject_next_for(workflow=only_priorities, volunteer_key="a:me").id for _ in range(20)}
    assert served == set(ids[:3])


def test_it_loads_the_whole_subject_as_the_orm_does(redis_queue, only_priorities):
    served = subject_next_for(workflow=only_priorities, volunteer_key="a:me")
    stored = Subject.objects.get(pk=served.pk)
    fields = [field.attname for field in Subject._meta.concrete_fields]
    assert [getattr(served, f) for f in fields] == [getattr(stored, f) for f in fields]
    assert served.truth and isinstance(served.truth, dict)
