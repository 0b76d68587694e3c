"""Where subject files live: content-addressed FITS files under MEDIA_ROOT.

Files are written to a temporary name and moved into place, so a crash never leaves a
half-written file under a real name; the database row is created only after the move.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from mlcore.hashing import file_sha256


def media_path(relative: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative


def store_file(*, folder: str, suffix: str, write: Callable[[Path], None]) -> tuple[str, str]:
    """Write a file with ``write(tmp_path)`` and move it to ``folder/<sha256>.<suffix>``.

    Returns ``(relative_path, sha256)``. Identical content lands on the same path.
    """
    target_dir = media_path(folder)
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target_dir, suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()  # astropy refuses to overwrite an existing file
        write(tmp)
        sha = file_sha256(tmp)
        relative = f"{folder}/{sha}.{suffix}"
        os.replace(tmp, media_path(relative))
    finally:
        tmp.unlink(missing_ok=True)
    return relative, sha


def remove_files(relatives: list[str]) -> None:
    """Undo ``store_file`` after a failed transaction (content-addressed: only unreferenced)."""
    from labeler.subjects.models import Subject

    referenced = set(Subject.objects.filter(data_file__in=relatives).values_list("data_file", flat=True))
    for relative in set(relatives) - referenced:
        media_path(relative).unlink(missing_ok=True)
