"""The API's guards for a public site where most volunteers are anonymous.

- CSRF for everyone: an anonymous volunteer is a signed session cookie (labeler/api/volunteers.py),
  an ambient browser credential just like a login. DRF's SessionAuthentication checks CSRF only
  for signed-in users, which would let another site post classifications as a visitor's anonymous
  identity; here every unsafe request needs the token the classify page sends.
- A throttle for anonymous traffic per client address (``SKYLOOP_THROTTLE_ANON``).
- Body size limits checked from ``Content-Length`` before anything is read (DRF's JSON parser
  reads the stream itself, so Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` alone never applies to it).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.middleware.csrf import get_token
from drf_spectacular.authentication import SessionScheme
from redis.exceptions import RedisError
from rest_framework import exceptions, parsers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)


class CsrfFailed(exceptions.PermissionDenied):
    default_code = "csrf_failed"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "The request body is too large."


class CsrfSessionAuthentication(SessionAuthentication):
    """Session authentication that checks CSRF on unsafe requests, signed in or not."""

    def authenticate(self, request):
        if request.method in SAFE_METHODS and settings.CSRF_COOKIE_NAME not in request.COOKIES:
            get_token(request._request)  # API clients get the cookie the page would give them
        user_auth = super().authenticate(request)  # checks CSRF itself for a signed-in user
        if user_auth is None and request.method not in SAFE_METHODS:
            self.enforce_csrf(request)
        return user_auth

    def enforce_csrf(self, request):
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied as exc:
            raise CsrfFailed(f"{exc.detail} Send the csrftoken cookie's value in the X-CSRFToken header.") from None


class CsrfSessionScheme(SessionScheme):
    """The OpenAPI description of the above: a session cookie, as DRF's own."""

    target_class = "labeler.api.security.CsrfSessionAuthentication"


class AnonymousAddressThrottle(BaseThrottle):
    """Anonymous API requests per client address: a fixed-window counter in the default cache.

    One atomic increment per request (cheap on Redis, unlike DRF's per-request history lists).
    The cache is Redis when REDIS_URL is set, shared by every gunicorn worker and machine;
    the embedded default's local-memory cache counts per process. The address is the peer's,
    or the one ``SKYLOOP_PROXY_HOPS`` trusted proxies put in X-Forwarded-For (DRF's get_ident).
    """

    def allow_request(self, request, view) -> bool:
        rate = settings.SKYLOOP_THROTTLE_ANON
        if rate is None or request.user.is_authenticated:
            return True
        limit, period = rate
        now = time.time()
        window = int(now // period)
        key = f"throttle:anon:{self.get_ident(request)}:{period}:{window}"
        try:
            count = _increment(key, timeout=period + 1)
        except (RedisError, OSError) as exc:  # the cache is down: serve volunteers rather than fail them
            _warn_now_and_then(f"anonymous throttle off while the cache fails: {exc!r}")
            return True
        self._wait = (window + 1) * period - now
        return count <= limit

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)


def _increment(key: str, timeout: int) -> int:
    try:
        return cache.incr(key)
    except ValueError:  # the window's first request
        return 1 if cache.add(key, 1, timeout=timeout) else cache.incr(key)


_last_warning = 0.0


def _warn_now_and_then(message: str) -> None:
    """At most one warning a minute per process: a dead cache would otherwise log every request."""
    global _last_warning
    if time.monotonic() - _last_warning > 60:
        _last_warning = time.monotonic()
        logger.warning(message)


class _LimitedParser:
    """Refuse a body whose declared length exceeds ``limit()`` before reading a byte of it."""

    def limit(self) -> int:
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        if request is not None:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                raise exceptions.ParseError("Content-Length is not a number.") from None
            if length > self.limit():
                raise PayloadTooLarge(f"The request body is {length} bytes; at most {self.limit()} are accepted here.")
        return super().parse(stream, media_type, parser_context)


class JSONParser(_LimitedParser, parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:  # json's C decoder gives up on deep nesting with this, not ValueError
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None


class FormParser(_LimitedParser, parsers.FormParser):
    pass


class MultiPartParser(_LimitedParser, parsers.MultiPartParser):
    pass


class UploadParser(_LimitedParser, parsers.MultiPartParser):
    """FITS uploads (labeler/api/uploads.py): a request of up to ``SKYLOOP_UPLOAD_MAX_BYTES``."""

    def limit(self) -> int:
        return settings.SKYLOOP_UPLOAD_MAX_BYTES
