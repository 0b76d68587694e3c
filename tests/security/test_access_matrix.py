"""Who may use which address: every URL pattern x five personas, walked from the resolver.

A new URL name that this table (or a prefix default) does not cover fails the test: whoever
adds an endpoint decides who may use it. Outcomes:

- *denied*: 401, 403, 404 or 405, or a redirect to a login page on the way;
- *allowed*: anything else (and no 404 unless the entry expects one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from labeler.subjects.pixels import data_token

PUBLIC = frozenset({"anonymous", "volunteer", "scientist_other", "scientist", "admin"})
OWNER = frozenset({"volunteer"})  # the volunteer's own classification; 404 for everyone else
PROJECT_SCIENTISTS = frozenset({"scientist", "admin"})  # scientists of the URL's project and admins
ANY_SCIENTIST = frozenset({"scientist_other", "scientist", "admin"})  # pages listing one's own projects
ADMINS = frozenset({"admin"})


@dataclass(frozen=True)
class Rule:
    allowed: frozenset
    method: str = ""  # "" = GET, or POST where GET is not served
    body: dict | None = None
    allowed_may: tuple[int, ...] = ()  # statuses that still mean "let in" for an allowed persona


RULES = {
    # volunteer pages and API: open to all (anonymous volunteers are a signed session)
    "home": Rule(PUBLIC),
    "classify": Rule(PUBLIC),
    "subject-preview": Rule(PUBLIC),
    "subject-data": Rule(PUBLIC),
    "me": Rule(PUBLIC),
    "signup": Rule(PUBLIC),
    "login": Rule(PUBLIC),
    "logout": Rule(PUBLIC, method="POST"),
    "api-workflows": Rule(PUBLIC),
    "api-workflow": Rule(PUBLIC),
    "api-next": Rule(PUBLIC),
    "api-progress": Rule(PUBLIC),
    "api-mine": Rule(PUBLIC),
    "api-classifications": Rule(PUBLIC, method="POST"),
    "api-classification": Rule(OWNER, method="PATCH", body={"favourite": True}),
    "api-schema": Rule(PUBLIC),
    "api-docs": Rule(PUBLIC),
    # scientists of the project, and admins
    "api-project-subjects": Rule(PROJECT_SCIENTISTS, method="POST"),
    "api-expert-label": Rule(PROJECT_SCIENTISTS, method="POST"),
    "api-workflow-exports": Rule(PROJECT_SCIENTISTS),
    "api-export": Rule(PROJECT_SCIENTISTS),
    "export-download": Rule(PROJECT_SCIENTISTS),
    "exports": Rule(ANY_SCIENTIST),
    # staff_member_required today: each volunteer's confusion matrix (labeler/web/views.py)
    "workflow-volunteers": Rule(PROJECT_SCIENTISTS),
    # Django admin: the login page is public, logout is a POST, view_on_site a redirect shortcut
    "admin:login": Rule(PUBLIC),
    "admin:logout": Rule(ADMINS, method="POST"),  # others are sent to the admin's login page
    # 403 for an admin asking without a configured autocomplete field; others go to the login page
    "admin:autocomplete": Rule(ADMINS, allowed_may=(403,)),
}
PROJECT_PARAMS = {"workflow_id", "subject_id", "slug", "project_id", "job_id", "version_id", "number"}


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def default_rule(name: str, params: set[str]) -> Rule | None:
    if name.startswith("admin:"):
        return Rule(ADMINS, allowed_may=(404,))  # the admin's object ids below are placeholders
    if name.startswith(("science-", "api-expert", "api-science")):
        return Rule(PROJECT_SCIENTISTS if params & PROJECT_PARAMS else ANY_SCIENTIST)
    return None


@dataclass(frozen=True)
class Endpoint:
    name: str
    route: str  # as written in the URLconf, prefixes joined
    params: frozenset


def all_endpoints() -> list[Endpoint]:
    def walk(patterns, prefix: str, namespace: str | None):
        for p in patterns:
            if isinstance(p, URLResolver):
                ns = ":".join(filter(None, [namespace, p.namespace]))
                yield from walk(p.url_patterns, prefix + str(p.pattern), ns or None)
            elif isinstance(p, URLPattern):
                name = f"{namespace}:{p.name}" if namespace else (p.name or "")
                params = set(p.pattern.regex.groupindex)
                yield Endpoint(name, prefix + str(p.pattern), frozenset(params))

    return list(walk(get_resolver().url_patterns, "/", None))


def param_values(world) -> dict:
    subject = world.subject
    return {
        "workflow_id": world.workflow.pk,
        "subject_id": subject.pk,
        "client_uuid": world.classification.client_uuid,
        "job_id": world.job.pk,
        "slug": world.project.slug,
        "project_slug": world.project.slug,
        "project_id": world.project.pk,
        "number": world.model_version.number,
        # Django admin placeholders
        "object_id": "1",
        "content_type_id": "1",
        "id": "1",
        "app_label": "auth",
        "url": "no-such-page/",  # the admin's catch-all
    }


def concrete_url(endpoint: Endpoint, world) -> str:
    values = param_values(world)
    unknown = endpoint.params - set(values) - {"checksum"}
    assert not unknown, f"{endpoint.name}: add a value for URL parameters {sorted(unknown)} to param_values()"
    kwargs = {k: values[k] for k in endpoint.params if k != "checksum"}
    if endpoint.name == "subject-preview":
        kwargs["checksum"] = world.subject.data_sha256[:12]
    elif endpoint.name == "subject-data":
        kwargs["checksum"] = data_token(world.subject)
    if ":None" in endpoint.name or not endpoint.name:  # unnamed (the admin's old-style redirects)
        route = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(kwargs[m.group(1)]), endpoint.route)
        route = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(kwargs[m.group(1)]), route)
        return route.replace("^", "").replace("$", "")
    return reverse(endpoint.name, kwargs=kwargs)


def fetch(world, persona: str, url: str, rule: Rule):
    client = world.client(persona)
    method = rule.method or "GET"
    if method == "GET":
        return client.get(url, follow=True)
    send = getattr(client, method.lower())
    return send(url, rule.body or {}, content_type="application/json", follow=True)


LOGIN_PATHS = ("/accounts/login/", "/admin/login/")


def denied(response) -> bool:
    via_login = any(url.split("?")[0].endswith(LOGIN_PATHS) for url, _ in response.redirect_chain)
    at_login = response.request["PATH_INFO"].endswith(LOGIN_PATHS) and response.redirect_chain
    return response.status_code in (401, 403, 404, 405) or via_login or bool(at_login)


def test_every_url_name_has_a_decision(world):
    undecided = sorted(
        {e.name or e.route for e in all_endpoints() if (RULES.get(e.name) or default_rule(e.name, e.params)) is None}
    )
    assert not undecided, f"decide who may use these (RULES in {__file__}): {undecided}"


def test_each_persona_reaches_exactly_what_it_may(world):
    world.workflow.rare_answer = 0  # a rare-object search, so its candidates pages exist too
    world.workflow.save(update_fields=["rare_answer"])
    wrong = []
    for endpoint in all_endpoints():
        rule = RULES.get(endpoint.name) or default_rule(endpoint.name, endpoint.params)
        if rule is None:
            continue  # reported by test_every_url_name_has_a_decision
        url = concrete_url(endpoint, world)
        if rule.method == "" and fetch(world, "admin", url, rule).status_code == 405:
            rule = Rule(rule.allowed, method="POST", allowed_may=rule.allowed_may)  # a POST-only action
        for persona in ("anonymous", "volunteer", "scientist_other", "scientist", "admin"):
            response = fetch(world, persona, url, rule)
            was_denied = denied(response)
            if persona in rule.allowed and response.status_code in rule.allowed_may and not response.redirect_chain:
                was_denied = False
            if was_denied == (persona in rule.allowed):
                verdict = "denied" if was_denied else "allowed"
                wrong.append(f"{rule.method or 'GET'} {url} ({endpoint.name}): {persona} {verdict} "
                             f"[{response.status_code}]")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("persona", ["anonymous", "volunteer", "scientist_other"])
def test_an_export_file_is_never_sent_to_someone_outside_the_project(world, persona):
    response = world.client(persona).get(reverse("export-download", args=[world.job.pk]))
    assert response.status_code in (403, 404)
    assert b"id\n1\n" not in body_of(response)
