"""schemathesis against /api/schema/: every operation, generated inputs, no server error (5xx).

Runs the Django WSGI application in process (``from_wsgi``) on the test database, as an
anonymous volunteer and as an admin, each with the cookies and CSRF header a browser sends,
so the generated bodies reach the views rather than stopping at the CSRF check.
``MAX_EXAMPLES`` per operation and persona bounds the run (about a minute here).
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, Phase, given, settings

MAX_EXAMPLES = 25


@contextmanager
def on_the_test_transaction():
    """Requests keep the test's database connection, as in Django's test client (it closes them otherwise)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def browser_identity(world, persona: str) -> tuple[dict, dict]:
    """Cookies and headers of a browser session for the persona, as the classify page would have them."""
    client: Client = world.client(persona)
    client.get(reverse("api-workflows"))  # an anonymous session, and the csrftoken cookie
    client.get(reverse("api-next", args=[world.workflow.id]))
    cookies = {name: morsel.value for name, morsel in client.cookies.items()}
    return cookies, {"X-CSRFToken": cookies["csrftoken"], "Referer": "http://localhost/"}


def fuzz(schema, cookies: dict, headers: dict) -> list[str]:
    errors: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case):
            response = case.call(headers=headers, cookies=cookies)
            if response.status_code >= 500:
                errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                              f"body={case.body!r:.300} query={case.query!r}")

        call()
    return errors


@pytest.mark.parametrize("persona", ["anonymous", "admin"])
def test_no_generated_request_makes_the_api_fail(world, persona):
    identity = browser_identity(world, persona)  # before: Django's test client reconnects the signals
    with on_the_test_transaction():
        schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
        paths = {result.ok().path for result in schema.get_all_operations()}
        assert "/api/classifications/" in paths and "/api/projects/{slug}/subjects/" in paths
        errors = fuzz(schema, *identity)
    assert not errors, "server errors:\n" + "\n".join(sorted(set(errors))[:30])
