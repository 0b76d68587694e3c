import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRINT_BACKENDS = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.DATABASES['default']['ENGINE'], settings.CELERY_BROKER_URL)"
)


def load_settings(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-c", PRINT_BACKENDS],
        env={**clean, "DJANGO_SETTINGS_MODULE": "labeler.settings", **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_the_embedded_default_is_sqlite_and_the_filesystem_broker():
    out = load_settings()
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["django.db.backends.sqlite3", "filesystem://"]


def test_database_and_redis_urls_switch_to_postgresql_and_redis():
    out = load_settings(DATABASE_URL="postgres://u@127.0.0.1:5432/x", REDIS_URL="redis://127.0.0.1:6379/3")
    assert out.stdout.split() == ["django.db.backends.postgresql", "redis://127.0.0.1:6379/3"]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"SKYLOOP_DEBUG": "perhaps"}, "SKYLOOP_DEBUG"),
        ({"SKYLOOP_DEBUG": "0"}, "SKYLOOP_SECRET_KEY"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"DATABASE_URL": "nonsense://x"}, "DATABASE_URL"),
    ],
)
def test_bad_values_fail_loudly(env, message):
    out = load_settings(**env)
    assert out.returncode != 0
    assert "ImproperlyConfigured" in out.stderr and message in out.stderr
