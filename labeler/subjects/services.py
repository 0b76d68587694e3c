"""Creating subjects: from FITS files on disk (ingest) or from arrays (simulation).

All-or-nothing: every file is read and checked before anything is written, files are
stored before the rows, and a failed transaction removes the files it stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from django.db import transaction

from labeler.subjects import storage
from labeler.subjects.models import Project, Subject
from mlcore import detect
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


def read_field_files(*, paths: Sequence[str | Path], config: detect.DetectConfig | None = None) -> list[NewSubject]:
    """Each survey field and the cutouts of the sources detected in it; raise IngestError on the first bad file.

    A field becomes an image subject with ``metadata["role"] = "field"`` (queued by field
    workflows only); each source a ``config.cutout_size`` cutout in the same bands with
    ``metadata["role"] = "cutout"``, its parent field, pixel position and segment, and
    RA/Dec from the field's WCS when it has one. Both keep the WCS in their stored file.
    """
    from labeler.workflows.services import FIELD_ROLE

    config = config or detect.DetectConfig()
    subjects = []
    for path in map(Path, paths):
        try:
            data = fitsio.read_image_fits(path)
            height, width = data.cube.shape[1:]
            if min(height, width) < config.cutout_size:
                raise detect.DetectionError(
                    f"a {height}x{width} image is smaller than the {config.cutout_size}px cutouts"
                )
            sources = detect.detect_sources(data.cube, config)
        except FileNotFoundError:
            raise IngestError(f"{path}: no such file") from None
        except (fitsio.DataFileError, detect.DetectionError, OSError) as exc:
            raise IngestError(f"{path}: {exc}") from exc
        wcs = detect.read_celestial_wcs(path)
        field = replace(data, header=data.header | _wcs_cards(wcs))
        metadata = {"source_file": path.name, "role": FIELD_ROLE, "n_sources": len(sources)}
        subjects.append(NewSubject(kind=Subject.Kind.IMAGE, external_id=path.stem, data=field, metadata=metadata))
        subjects += [_cutout(path, field, wcs, source, config.cutout_size) for source in sources]
    return subjects


def _cutout(path: Path, field: fitsio.ImageData, wcs, source: detect.Source, size: int) -> NewSubject:
    col, row = detect.cutout_origin(source.x, source.y, field.cube.shape[1:], size)
    cube = field.cube[:, row : row + size, col : col + size].copy()  # (B, size, size)
    ra, dec = detect.sky_position(wcs, source.x, source.y)
    cut_wcs = wcs.slice((slice(row, row + size), slice(col, col + size))) if wcs is not None else None
    header = {k: v for k, v in field.header.items() if k in fitsio.KEPT_CARDS} | _wcs_cards(cut_wcs)
    data = fitsio.ImageData(cube=cube, bands=field.bands, ra=ra, dec=dec, nan_fraction=0.0, header=header)
    metadata = {
        "source_file": path.name,
        "role": "cutout",
        "parent_field": path.stem,
        "field_x": source.x,
        "field_y": source.y,
        "cutout_origin": [col, row],
        "segment_label": source.label,
        "segment_area": source.area,
        "segment_flux": dict(zip(field.bands, source.flux, strict=True)),
        "detection_snr": source.snr,
    }
    name = f"{path.stem}-src{source.label:05d}"
    return NewSubject(kind=Subject.Kind.IMAGE, external_id=name, data=data, metadata=metadata)


def _wcs_cards(wcs) -> dict:
    """Header cards of a celestial WCS (empty without one), to store it with the subject's pixels."""
    if wcs is None:
        return {}
    return {key: value for key, value in wcs.to_header().items() if key not in ("COMMENT", "HISTORY", "")}


def subjects_create(*, project: Project, new_subjects: Iterable[NewSubject]) -> list[Subject]:
    """Store the files and create Subject rows (+ their state in each matching workflow)."""
    from labeler.learning.triggers import embeddings_queue
    from labeler.workflows.services import subject_is_field, subject_states_attach

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
            # Cutouts only: the image backbone's embeddings are for question heads, not whole fields.
            cutouts = [s.pk for s in created if s.kind == Subject.Kind.IMAGE and not subject_is_field(s)]
            embeddings_queue(subject_ids=cutouts)
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
