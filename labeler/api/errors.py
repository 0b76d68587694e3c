"""One JSON error shape for the whole API: {"error": {"code": ..., "message": ...}}."""

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from labeler.classifications.services import ClassificationError

CLASSIFICATION_STATUS = {
    "duplicate": status.HTTP_409_CONFLICT,
    "uuid_reused": status.HTTP_409_CONFLICT,
    "unknown_subject": status.HTTP_404_NOT_FOUND,
    "not_found": status.HTTP_404_NOT_FOUND,  # someone else's classification: existence is not revealed
    "edit_closed": status.HTTP_409_CONFLICT,
}


# Django's own limits, hit while DRF parses a form or multipart body (Django would answer them with HTML).
REQUEST_LIMITS = {
    RequestDataTooBig: (status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "too_large"),
    TooManyFieldsSent: (status.HTTP_400_BAD_REQUEST, "too_many_fields"),
    TooManyFilesSent: (status.HTTP_400_BAD_REQUEST, "too_many_files"),
}


def exception_handler(exc, context):
    if isinstance(exc, ClassificationError):
        code = CLASSIFICATION_STATUS.get(exc.code, status.HTTP_400_BAD_REQUEST)
        return Response({"error": {"code": exc.code, "message": str(exc)}}, status=code)
    for kind, (http_status, code) in REQUEST_LIMITS.items():
        if isinstance(exc, kind):
            return Response({"error": {"code": code, "message": str(exc)}}, status=http_status)
    response = drf_exception_handler(exc, context)
    if response is not None:
        code = getattr(exc, "default_code", "error")
        response.data = {"error": {"code": code, "message": _message(response.data), "detail": response.data}}
    return response


def _message(data) -> str:
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return "the request is not valid; see detail"
