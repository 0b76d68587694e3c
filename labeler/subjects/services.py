"""Creating subjects: from FITS files on disk (ingest) or from arrays (simulation).

All-or-nothing: every file is read and checked before anything is written, files are
stored before the rows, and a failed transaction removes the files it stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from labeler.subjects import storage
from labeler.subjects.models import Project, Subject
from mlcore import io as fitsio


class IngestError(Exception):
    """A file could not be ingested; the message names the file and the reason."""


@dataclass(frozen=True)
class NewSubject:
    """Validated data for one subject, ready to store."""

    kind: str
    external_id: str
    data: fitsio.ImageData | fitsio.SpectrumData
    truth: dict | None = None
    metadata: dict | None = None


def project_get_or_create(*, slug: str, name: str = "", description: str = "") -> Project:
    project, _ = Project.objects.get_or_create(
        slug=slug, defaults={"name": name or slug.replace("-", " ").title(), "description": description}
    )
    return project


def read_subject_files(*, kind: str, paths: Sequence[str | Path]) -> list[NewSubject]:
    """Read and validate every file first; raise IngestError naming the first bad one."""
    reader = fitsio.read_image_fits if kind == Subject.Kind.IMAGE else fitsio.read_spectrum
    subjects = []
    for path in paths:
        path = Path(path)
        try:
            data = reader(path)
        except FileNotFoundError:
            raise IngestError(f"{path}: no such file") from None
        except (fitsio.DataFileError, OSError) as exc:
            raise IngestError(f"{path}: {exc}") from exc
        subjects.append(NewSubject(kind=kind, external_id=path.stem, data=data, metadata={"source_file": path.name}))
    return subjects


def subjects_create(*, project: Project, new_subjects: Iterable[NewSubject]) -> list[Subject]:
    """Store the files and create Subject rows (+ their state in each matching workflow)."""
    from labeler.learning.services import embeddings_queue
    from labeler.workflows.services import subject_states_attach

    new_subjects = list(new_subjects)
    _check_unique_ids(project, new_subjects)
    stored: list[str] = []
    try:
        rows = []
        for new in new_subjects:
            relative, sha = _store(project, new)
            stored.append(relative)
            rows.append(_subject_row(project, new, relative, sha))
        with transaction.atomic():
            created = Subject.objects.bulk_create(rows, batch_size=500)
            if not all(s.pk for s in created):  # backends without RETURNING on bulk insert
                created = list(Subject.objects.filter(project=project, external_id__in=[s.external_id for s in rows]))
            subject_states_attach(project=project, subjects=created)
            embeddings_queue(subject_ids=[s.pk for s in created if s.kind == Subject.Kind.IMAGE])
    except Exception:
        storage.remove_files(stored)
        raise
    return created


def _check_unique_ids(project: Project, new_subjects: list[NewSubject]) -> None:
    ids = [s.external_id for s in new_subjects]
    duplicates = {name for name, n in Counter(ids).items() if n > 1}
    if duplicates:
        raise IngestError(f"duplicate subject names in this batch: {sorted(duplicates)[:5]}")
    existing = list(
        Subject.objects.filter(project=project, external_id__in=ids).values_list("external_id", flat=True)[:5]
    )
    if existing:
        raise IngestError(f"project {project.slug!r} already has subjects named {existing}")


def _store(project: Project, new: NewSubject) -> tuple[str, str]:
    folder = f"subjects/{project.slug}/{new.kind}"
    data = new.data
    if new.kind == Subject.Kind.IMAGE:
        return storage.store_file(
            folder=folder,
            suffix="fits",
            write=lambda p: fitsio.write_image_fits(p, data.cube, data.bands, header=data.header),
        )
    return storage.store_file(
        folder=folder,
        suffix="fits",
        write=lambda p: fitsio.write_sdss_spectrum(
            p, data.wavelength, data.flux, data.ivar, z=data.z, ra=data.ra, dec=data.dec, meta=_header_cards(data.meta)
        ),
    )


def _header_cards(meta: dict) -> dict:
    """The scalar part of a spectrum's metadata, which fits in FITS header cards."""
    return {k: v for k, v in meta.items() if isinstance(v, str | int | float | bool) and len(str(v)) < 60}


def _subject_row(project: Project, new: NewSubject, relative: str, sha: str) -> Subject:
    data = new.data
    metadata = dict(new.metadata or {})
    if isinstance(data, fitsio.ImageData):
        metadata.update(bands=list(data.bands), shape=list(data.cube.shape), nan_fraction=data.nan_fraction)
    else:
        metadata.update(
            source=data.meta,
            z=data.z,
            n_pix=int(data.wavelength.size),
            wave_min=float(data.wavelength[0]),
            wave_max=float(data.wavelength[-1]),
        )
    return Subject(
        project=project,
        kind=new.kind,
        external_id=new.external_id,
        data_file=relative,
        data_sha256=sha,
        ra=data.ra,
        dec=data.dec,
        metadata=metadata,
        truth=new.truth,
    )


def subject_load_image(subject: Subject) -> fitsio.ImageData:
    return fitsio.read_image_fits(storage.media_path(subject.data_file))


def subject_load_spectrum(subject: Subject) -> fitsio.SpectrumData:
    return fitsio.read_spectrum(storage.media_path(subject.data_file))
