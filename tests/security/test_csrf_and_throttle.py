"""CSRF for anonymous volunteers too, and a throttle for anonymous traffic."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import Client, override_settings
from django.urls import reverse

from labeler.classifications.models import Classification

ROOT = Path(__file__).resolve().parents[2]


def classification_body(workflow, subject_id: int) -> dict:
    return {"workflow": workflow.id, "subject": subject_id, "client_uuid": str(uuid.uuid4()),
            "annotation": [{"task": "T0", "answer": 1}]}


def served(client, workflow) -> int:
    return client.get(reverse("api-next", args=[workflow.id])).json()["subject"]["id"]


@pytest.fixture
def browser():
    """A client that checks CSRF as a real deployment does (Django's test client skips it)."""
    return Client(enforce_csrf_checks=True)


def test_a_cross_site_post_without_the_token_is_refused_for_an_anonymous_volunteer(browser, spectrum_workflow):
    subject_id = served(browser, spectrum_workflow)  # the browser now holds a session: an identity to abuse
    response = browser.post(reverse("api-classifications"), classification_body(spectrum_workflow, subject_id),
                            content_type="application/json", HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert not Classification.objects.exists()


def test_a_post_with_the_token_but_from_another_origin_is_refused(browser, spectrum_workflow):
    subject_id = served(browser, spectrum_workflow)
    token = browser.cookies["csrftoken"].value
    response = browser.post(reverse("api-classifications"), classification_body(spectrum_workflow, subject_id),
                            content_type="application/json", HTTP_X_CSRFTOKEN=token,
                            HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403
    assert not Classification.objects.exists()


def test_the_classify_page_token_lets_the_volunteer_post(browser, spectrum_workflow):
    page = browser.get(reverse("classify", args=[spectrum_workflow.id])).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    subject_id = served(browser, spectrum_workflow)
    response = browser.post(reverse("api-classifications"), classification_body(spectrum_workflow, subject_id),
                            content_type="application/json", HTTP_X_CSRFTOKEN=token,
                            HTTP_ORIGIN="http://testserver")
    assert response.status_code == 201, response.content
    assert Classification.objects.count() == 1


def test_edits_and_withdrawals_need_the_token_too(browser, spectrum_workflow):
    subject_id = served(browser, spectrum_workflow)
    body = classification_body(spectrum_workflow, subject_id)
    token = browser.cookies["csrftoken"].value
    browser.post(reverse("api-classifications"), body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    url = reverse("api-classification", args=[body["client_uuid"]])
    assert browser.patch(url, {"favourite": True}, content_type="application/json").status_code == 403
    assert browser.delete(url).status_code == 403
    assert Classification.objects.filter(favourite=False).count() == 1


def test_a_signed_in_volunteer_without_the_token_is_refused(browser, spectrum_workflow, django_user_model):
    browser.force_login(django_user_model.objects.create_user("carol", password="pw-carol-123"))
    subject_id = served(browser, spectrum_workflow)
    response = browser.post(reverse("api-classifications"), classification_body(spectrum_workflow, subject_id),
                            content_type="application/json")
    assert response.status_code == 403
    assert not Classification.objects.exists()


@pytest.fixture
def tight_throttle():
    cache.clear()
    with override_settings(SKYLOOP_THROTTLE_ANON=(3, 60)):
        yield
    cache.clear()


def test_anonymous_traffic_beyond_the_rate_gets_429_in_the_error_shape(tight_throttle, spectrum_workflow):
    client, url = Client(), reverse("api-next", args=[spectrum_workflow.id])
    assert [client.get(url).status_code for _ in range(3)] == [200, 200, 200]
    response = client.get(url)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= 60


def test_the_throttle_counts_per_address_and_ignores_a_forged_forwarded_for(tight_throttle, spectrum_workflow):
    url = reverse("api-next", args=[spectrum_workflow.id])
    for i in range(3):
        Client(REMOTE_ADDR="10.0.0.1").get(url, HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
    assert Client(REMOTE_ADDR="10.0.0.1").get(url, HTTP_X_FORWARDED_FOR="192.0.2.99").status_code == 429
    assert Client(REMOTE_ADDR="10.0.0.2").get(url).status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_address_counts(tight_throttle, spectrum_workflow, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    url = reverse("api-next", args=[spectrum_workflow.id])
    for _ in range(3):
        Client(REMOTE_ADDR="127.0.0.1").get(url, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert Client(REMOTE_ADDR="127.0.0.1").get(url, HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 429
    assert Client(REMOTE_ADDR="127.0.0.1").get(url, HTTP_X_FORWARDED_FOR="198.51.100.8").status_code == 200


def test_signed_in_users_are_not_counted_by_the_anonymous_throttle(tight_throttle, spectrum_workflow,
                                                                   django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("dora", password="pw-dora-123"))
    url = reverse("api-next", args=[spectrum_workflow.id])
    assert {client.get(url).status_code for _ in range(5)} == {200}


def read_setting(name: str, **env) -> subprocess.CompletedProcess:
    code = f"import django; django.setup(); from django.conf import settings; print(settings.{name})"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SKYLOOP_THROTTLE")}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**clean, "DJANGO_SETTINGS_MODULE": "labeler.settings", **env})


def test_the_throttle_is_off_in_the_embedded_default_and_on_in_production():
    assert read_setting("SKYLOOP_THROTTLE_ANON", SKYLOOP_DEBUG="1").stdout.strip() == "None"
    production = read_setting("SKYLOOP_THROTTLE_ANON", SKYLOOP_DEBUG="0", SKYLOOP_SECRET_KEY="k")
    assert production.stdout.strip() == "(3000, 60)"
    assert read_setting("SKYLOOP_THROTTLE_ANON", SKYLOOP_THROTTLE_ANON="20/s").stdout.strip() == "(20, 1)"


@pytest.mark.parametrize("value", ["fast", "10/fortnight", "-5/min", "1.5/s"])
def test_a_bad_rate_fails_loudly(value):
    out = read_setting("SKYLOOP_THROTTLE_ANON", SKYLOOP_THROTTLE_ANON=value)
    assert out.returncode != 0 and "SKYLOOP_THROTTLE_ANON" in out.stderr


def test_a_dead_cache_lets_volunteers_through_instead_of_failing_them(tight_throttle, spectrum_workflow,
                                                                       monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    def down(*args, **kwargs):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(cache, "incr", down)
    monkeypatch.setattr(cache, "add", down)
    url = reverse("api-next", args=[spectrum_workflow.id])
    assert {Client().get(url).status_code for _ in range(5)} == {200}


def test_the_throttle_counts_in_redis_across_processes(spectrum_workflow, settings):
    """Two gunicorn workers share the count when the cache is Redis (skipped without one)."""
    import redis

    url = "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
                                   "KEY_PREFIX": f"security-{uuid.uuid4().hex[:8]}"}}
    settings.SKYLOOP_THROTTLE_ANON = (4, 60)
    from django.core.cache import caches

    other_process = caches.create_connection("default")  # a second client, as another worker would hold
    api = reverse("api-next", args=[spectrum_workflow.id])
    assert Client(REMOTE_ADDR="203.0.113.5").get(api).status_code == 200
    key = next(k for k in redis.Redis.from_url(url).scan_iter("*throttle:anon:203.0.113.5*"))
    assert other_process.incr(key.decode().split(":", 2)[2]) == 2  # the same counter, seen from elsewhere
    codes = [Client(REMOTE_ADDR="203.0.113.5").get(api).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
