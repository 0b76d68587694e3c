"""Skyloop settings: one module, driven by environment variables, failing loudly.

Embedded default (no services): SQLite + Celery on kombu's filesystem transport.
``DATABASE_URL`` switches to PostgreSQL, ``REDIS_URL`` to Redis (broker and cache).
Every variable is listed in README.md ("Settings").
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not value >= minimum:  # also refuses NaN
        raise ImproperlyConfigured(f"{name}={raw!r} must be a number >= {minimum}")
    return value


def env_int(name: str, default: int, minimum: int = 0) -> int:
    value = env_float(name, default, minimum)
    if value != int(value):
        raise ImproperlyConfigured(f"{name}={os.environ[name]!r} must be a whole number")
    return int(value)


RATE_PERIODS = {"s": 1, "sec": 1, "min": 60, "hour": 3600, "day": 86400}


def env_rate(name: str, default: str) -> tuple[int, int] | None:
    """``"3000/min"`` -> (3000, 60): requests per period in seconds; ``"off"`` -> None."""
    raw = env_str(name, default).strip().lower()
    if raw in ("", "off"):
        return None
    count, _, period = raw.partition("/")
    if not count.isdigit() or int(count) < 1 or period not in RATE_PERIODS:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a rate like 3000/min ({', '.join(RATE_PERIODS)}) or 'off'")
    return int(count), RATE_PERIODS[period]


DEBUG = env_bool("SKYLOOP_DEBUG", True)
SECRET_KEY = env_str("SKYLOOP_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SKYLOOP_SECRET_KEY must be set when SKYLOOP_DEBUG=0")
    SECRET_KEY = "skyloop-insecure-development-key"
ALLOWED_HOSTS = [h for h in env_str("SKYLOOP_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]

VAR_DIR = Path(env_str("SKYLOOP_VAR_DIR", str(BASE_DIR / "var")))
MEDIA_ROOT = Path(env_str("SKYLOOP_MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
MODEL_ROOT = Path(env_str("SKYLOOP_MODEL_ROOT", str(VAR_DIR / "models")))
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "labeler.subjects",
    "labeler.workflows",
    "labeler.classifications",
    "labeler.learning",
    "labeler.catalogs",
    "labeler.review",
    "labeler.dashboard",
    "labeler.api",
    "labeler.web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "labeler.urls"
WSGI_APPLICATION = "labeler.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "labeler.dashboard.context.can_review",
            ]
        },
    }
]

# --- database -------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
    except Exception as exc:  # dj_database_url raises several types for bad URLs
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from exc
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        DATABASES["default"].setdefault("OPTIONS", {})
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "skyloop.sqlite3",
            # A file (not :memory:) so a worker subprocess can share the test database.
            "TEST": {"NAME": VAR_DIR / "test-skyloop.sqlite3"},
        }
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + immediate transactions: the web process and the worker write concurrently.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- broker + cache ---------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "")
CELERY_QUEUE_DIR = VAR_DIR / "celery"
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r} must start with redis://, rediss:// or unix://")
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": 3600}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_QUEUE_DIR / "queue"),
        "data_folder_out": str(CELERY_QUEUE_DIR / "queue"),
        "control_folder": str(CELERY_QUEUE_DIR / "control"),
        "store_processed": False,
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Training and scoring go to the ``gpu`` queue (GPU workers when present; any worker here).
# Tests use their own queue name so they never feed a demo worker running beside them.
GPU_QUEUE = env_str("SKYLOOP_GPU_QUEUE", "gpu")
CELERY_TASK_ROUTES = {"labeler.learning.tasks.*": {"queue": GPU_QUEUE}}
# A training run past the soft limit stops at its next progress report and is marked failed;
# the hard limit (Celery, prefork pools) kills it. Killed runs are resent, up to 5 attempts.
SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S = env_float("SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S", 3600.0, minimum=1.0)
SKYLOOP_TRAIN_TIME_LIMIT_S = env_float("SKYLOOP_TRAIN_TIME_LIMIT_S", SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S + 300.0)
if SKYLOOP_TRAIN_TIME_LIMIT_S <= SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S:
    raise ImproperlyConfigured("SKYLOOP_TRAIN_TIME_LIMIT_S must be above SKYLOOP_TRAIN_SOFT_TIME_LIMIT_S")
# Arithmetic of the image backbone on CPU workers (mlcore.models.image.BackboneConfig):
# "auto" is bfloat16 where the CPU does it in hardware (1.6x the cutouts per CPU-second, same
# accuracy: bench/results/inference_accuracy.json), float32 elsewhere; "fp32" is exact and
# reproducible. A model version always scores on the features it was trained on, whatever
# this is now (labeler.learning.datasets.features); each arithmetic has its own embedding cache.
SKYLOOP_CPU_PRECISION = env_str("SKYLOOP_CPU_PRECISION", "auto")
if SKYLOOP_CPU_PRECISION not in ("auto", "fp32", "bf16"):
    raise ImproperlyConfigured("SKYLOOP_CPU_PRECISION must be auto, fp32 or bf16")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat's backstop: resend training runs whose worker died or whose message a dead broker lost.
CELERY_BEAT_SCHEDULE = {
    "training-sweep": {"task": "labeler.learning.tasks.sweep_training", "schedule": 120.0},
    "skill-reestimate": {"task": "labeler.classifications.tasks.reestimate_skills", "schedule": 6 * 3600.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- subject queue (labeler/classifications/queue.py) ----------------------------------
# A per-workflow priority queue in Redis serves the next subject; without Redis (the embedded
# default) or while Redis is down, the database selector serves instead.
SKYLOOP_QUEUE_URL = env_str("SKYLOOP_QUEUE_URL", REDIS_URL)
SKYLOOP_QUEUE = env_bool("SKYLOOP_QUEUE", bool(SKYLOOP_QUEUE_URL))
if SKYLOOP_QUEUE and not SKYLOOP_QUEUE_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("SKYLOOP_QUEUE=1 needs a redis:// URL in SKYLOOP_QUEUE_URL or REDIS_URL")
SKYLOOP_QUEUE_PREFIX = env_str("SKYLOOP_QUEUE_PREFIX", "skyloop")
SKYLOOP_QUEUE_LEASE_S = env_float("SKYLOOP_QUEUE_LEASE_S", 30.0)  # a served subject is held back this long
SKYLOOP_QUEUE_RETRY_S = env_float("SKYLOOP_QUEUE_RETRY_S", 10.0)  # after a Redis error, the database serves this long
SKYLOOP_QUEUE_TIMEOUT_S = env_float("SKYLOOP_QUEUE_TIMEOUT_S", 0.25, minimum=0.001)  # Redis connect/read timeout
SKYLOOP_QUEUE_REFRESH_S = env_float("SKYLOOP_QUEUE_REFRESH_S", 3600.0)  # beat rebuilds a queue older than this

# Tests that need PostgreSQL / Redis / a worker fail instead of skipping when this is set (CI).
SKYLOOP_REQUIRE_SERVICES = env_bool("SKYLOOP_REQUIRE_SERVICES", False)

# --- abuse limits (labeler/api/security.py, labeler/api/uploads.py) ---------------------
# Anonymous API requests per client address ("3000/min", "off"), counted in the default cache:
# Redis with REDIS_URL (shared by all gunicorn workers); without it each process counts alone.
# Off by default in the embedded (SKYLOOP_DEBUG=1) setup that tests, benchmarks and the demo use.
SKYLOOP_THROTTLE_ANON = env_rate("SKYLOOP_THROTTLE_ANON", "off" if DEBUG else "3000/min")
SKYLOOP_PROXY_HOPS = env_int("SKYLOOP_PROXY_HOPS", 0)  # trusted proxies appending to X-Forwarded-For
SKYLOOP_UPLOAD_MAX_BYTES = env_int("SKYLOOP_UPLOAD_MAX_BYTES", 256 * 2**20, minimum=1)  # one upload request
SKYLOOP_FITS_MAX_BYTES = env_int("SKYLOOP_FITS_MAX_BYTES", 64 * 2**20, minimum=2880)  # one uploaded FITS file
SKYLOOP_UPLOAD_MAX_FILES = env_int("SKYLOOP_UPLOAD_MAX_FILES", 100, minimum=1)
DATA_UPLOAD_MAX_NUMBER_FILES = SKYLOOP_UPLOAD_MAX_FILES  # Django stops parsing past it
CSRF_TRUSTED_ORIGINS = [o for o in env_str("SKYLOOP_CSRF_TRUSTED_ORIGINS", "").split(",") if o]
if env_bool("SKYLOOP_HTTPS", False):  # behind a TLS-terminating proxy that sets X-Forwarded-Proto
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True

# --- REST framework ---------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["labeler.api.security.CsrfSessionAuthentication"],
    "DEFAULT_PARSER_CLASSES": [
        "labeler.api.security.JSONParser",
        "labeler.api.security.FormParser",
        "labeler.api.security.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["labeler.api.security.AnonymousAddressThrottle"],
    "NUM_PROXIES": SKYLOOP_PROXY_HOPS,
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "EXCEPTION_HANDLER": "labeler.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Skyloop API",
    "DESCRIPTION": "Serve subjects to volunteers and collect their classifications.",
    "VERSION": "0.1.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
SESSION_COOKIE_AGE = 60 * 60 * 24 * 365
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("SKYLOOP_LOG_LEVEL", "INFO")},
}
