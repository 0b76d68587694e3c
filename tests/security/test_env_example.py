""".env.example lists exactly the variables the settings, gunicorn config and compose file read."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def settings_reads() -> set[str]:
    text = (ROOT / "labeler" / "settings.py").read_text()
    return set(re.findall(r"\benv_\w+\(\s*\"([A-Z][A-Z0-9_]*)\"", text)) | set(
        re.findall(r"os\.environ(?:\.get\(|\[)\s*\"([A-Z][A-Z0-9_]*)\"", text)
    )


def gunicorn_reads() -> set[str]:
    text = (ROOT / "scripts" / "gunicorn_conf.py").read_text()
    return set(re.findall(r"(?:os\.environ\.get|_int)\(\s*\"([A-Z][A-Z0-9_]*)\"", text))


def compose_reads() -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))


def documented() -> dict[str, str]:
    """Each listed variable and the comment lines just above it."""
    names, comment, after_variable = {}, [], False
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:  # variables in a row share the comment above them
            names[match.group(1)], after_variable = " ".join(comment), True
        elif line.startswith("#"):
            comment = [line.lstrip("# ")] if after_variable else [*comment, line.lstrip("# ")]
            after_variable = False
        else:
            comment, after_variable = [], False
    return names


def test_every_variable_read_is_documented_and_nothing_else():
    read = settings_reads() | gunicorn_reads() | compose_reads()
    listed = set(documented())
    assert not read - listed, f"add to .env.example: {sorted(read - listed)}"
    assert not listed - read, f".env.example lists variables nothing reads: {sorted(listed - read)}"


def test_every_variable_has_a_comment_saying_what_it_does():
    bare = [name for name, comment in documented().items() if len(comment) < 10]
    assert not bare, f"explain these in .env.example: {bare}"


def test_the_grep_finds_the_settings_it_should():
    read = settings_reads()
    assert {"SKYLOOP_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "SKYLOOP_THROTTLE_ANON"} <= read


def test_the_compose_file_has_every_service_with_volumes_and_a_gpu_reservation():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker-cpu", "worker-gpu", "beat"} <= set(services)
    assert {"pgdata", "redisdata", "skyloop-data"} <= set(compose["volumes"])
    gpu = services["worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "-Q ${SKYLOOP_GPU_QUEUE:-gpu}" in gpu["command"]
    for name in ("postgres", "redis", "web", "worker-cpu", "worker-gpu"):
        assert "healthcheck" in services[name], name
    assert services["web"]["environment"]["SKYLOOP_DEBUG"] == "0"
