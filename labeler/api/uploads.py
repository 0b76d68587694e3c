"""Scientists upload FITS files to their project: ``POST /api/projects/<slug>/subjects/`` (multipart).

Limits are checked before anything is stored: the request's declared size before a byte is read
(``SKYLOOP_UPLOAD_MAX_BYTES``, 413, by the parser), each file's size while it streams in
(``SKYLOOP_FITS_MAX_BYTES``, 413), the number of files (``SKYLOOP_UPLOAD_MAX_FILES``, 400) and
each file's FITS signature (415). The files then go through the
CLI's all-or-nothing ingest (labeler/subjects/services.py): one bad file refuses the batch with
its name and the reason, and nothing is stored.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from labeler.api.security import UploadParser
from labeler.roles import IsScientist, require_scientist_of
from labeler.subjects.models import Project, Subject
from labeler.subjects.services import IngestError, read_field_files, read_subject_files, subjects_create

FITS_SIGNATURE = b"SIMPLE  ="  # every primary FITS header starts with this card (FITS 4.0, sect. 4.4.1.1)
FITS_SUFFIXES = (".fits", ".fit", ".fts")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
KINDS = {"image": "2-D image, cube or one HDU per band", "spectrum": "1-D spectrum", "field": "survey field"}


class UploadRefused(exceptions.APIException):
    """A refusal with its own status and code, in the project's error shape (labeler/api/errors.py)."""

    def __init__(self, message: str, *, code: str, status_code: int = status.HTTP_400_BAD_REQUEST):
        super().__init__(message, code)
        self.status_code, self.default_code = status_code, code


class UploadInput(serializers.Serializer):
    kind = serializers.ChoiceField(
        choices=list(KINDS), default="image", help_text="; ".join(f"{k}: {v}" for k, v in KINDS.items())
    )
    files = serializers.ListField(child=serializers.FileField(), help_text="One or more FITS files.")


class UploadedSubject(serializers.ModelSerializer):
    class Meta:
        model = Subject
        fields = ["id", "external_id", "kind", "ra", "dec"]


class UploadOutput(serializers.Serializer):
    created = UploadedSubject(many=True)


class ProjectSubjectsUploadApi(APIView):
    permission_classes = [IsScientist]
    parser_classes = [UploadParser]

    @extend_schema(
        request={"multipart/form-data": UploadInput},
        responses={201: UploadOutput},
        summary="Add subjects to a project from FITS files (its scientists and admins)",
        description="All or nothing: a bad file refuses the whole upload with its name and the reason. "
        "Survey fields also become cutouts of the sources detected in them.",
    )
    def post(self, request, slug: str):
        project = get_object_or_404(Project, slug=slug)
        require_scientist_of(request.user, project)  # before the body is read
        request.upload_handlers.insert(0, FitsSizeLimit(request._request))
        data = UploadInput(data=request.data)
        data.is_valid(raise_exception=True)
        files = data.validated_data["files"]
        names = [_checked(upload) for upload in _counted(files)]
        created = _ingest(project, data.validated_data["kind"], files, names)
        return Response(UploadOutput({"created": created}).data, status=status.HTTP_201_CREATED)


class FitsSizeLimit(FileUploadHandler):
    """Stop a file as soon as it streams past ``SKYLOOP_FITS_MAX_BYTES`` (before it is spooled whole)."""

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > settings.SKYLOOP_FITS_MAX_BYTES:
            raise _too_large(Path(self.file_name or "").name, f"more than {start + len(raw_data)}")
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler builds the file


def _too_large(name: str, size: str) -> UploadRefused:
    return UploadRefused(
        f"{name}: {size} bytes; a FITS file may have at most {settings.SKYLOOP_FITS_MAX_BYTES}.",
        code="too_large",
        status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )


def _counted(files: list) -> list:
    if not files:
        raise UploadRefused("Send at least one FITS file in the 'files' field.", code="no_files")
    if len(files) > settings.SKYLOOP_UPLOAD_MAX_FILES:
        raise UploadRefused(
            f"{len(files)} files sent; at most {settings.SKYLOOP_UPLOAD_MAX_FILES} per upload.", code="too_many_files"
        )
    return files


def _checked(upload) -> str:
    """The subject name the file will get, once its size, name and signature pass."""
    name = Path(upload.name or "").name
    if upload.size > settings.SKYLOOP_FITS_MAX_BYTES:  # FitsSizeLimit stops it first; kept for other parsers
        raise _too_large(name, str(upload.size))
    stem = name[: -len(suffix)] if (suffix := _fits_suffix(name)) else name
    if not SAFE_NAME.match(stem):
        raise UploadRefused(
            f"{name!r}: file names may hold letters, digits and . _ + - only (at most 200).", code="bad_name"
        )
    upload.seek(0)
    head = upload.read(len(FITS_SIGNATURE))
    upload.seek(0)
    if head != FITS_SIGNATURE:
        raise UploadRefused(
            f"{name}: not a FITS file (it does not start with 'SIMPLE  =').",
            code="not_fits",
            status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        )
    return stem


def _fits_suffix(name: str) -> str:
    return next((s for s in FITS_SUFFIXES if name.lower().endswith(s)), "")


def _ingest(project: Project, kind: str, files: list, names: list[str]) -> list[Subject]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UploadRefused(f"these names appear more than once: {repeated[:5]}", code="duplicate_names")
    with tempfile.TemporaryDirectory(prefix="skyloop-upload-") as folder:
        paths = [_spool(upload, Path(folder) / f"{name}.fits") for upload, name in zip(files, names, strict=True)]
        try:
            if kind == "field":
                new_subjects = read_field_files(paths=paths)
            else:
                new_subjects = read_subject_files(kind=kind, paths=paths)
            return subjects_create(project=project, new_subjects=new_subjects)
        except IngestError as exc:
            message = str(exc).replace(f"{folder}/", "")  # name the file as the user sent it
            raise UploadRefused(message, code="bad_file") from None


def _spool(upload, path: Path) -> Path:
    with path.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return path
