"""Compact subject data for the browser viewers: float16 image cubes and rounded spectra.

The PNG preview (rendering.py) is the first paint; this is the data the viewers stretch,
composite and plot themselves. Each body is built once, gzip'd and cached on disk under
MEDIA_ROOT/pixels; its address carries a checksum, so browsers may keep it for a year.

Images: little-endian float16 in C order (B, H, W). float16 holds only ~3 significant
digits and values below 65504, so each band is divided by a power of two that puts its
peak |flux| between 2^13 and 2^14: dividing by a power of two is exact, float16's relative
precision (2^-11) is the same across its normal range, and flux = value x scale.
Non-finite pixels travel as NaN (the stored files have none: ingest fills them).

Spectra: JSON with the flux and its 1-sigma error (1/sqrt(ivar); null where ivar is 0,
i.e. masked or unknown) to 4 significant digits, and wavelengths to as many digits as the
pixel spacing needs (4 digits would merge neighbouring SDSS pixels, 69 km/s apart).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labeler.subjects import storage
from labeler.subjects.models import Subject
from labeler.subjects.services import subject_load_image, subject_load_spectrum

FLOAT16_PEAK = 2.0**14  # a band's peak |flux| / scale lands in [2^13, 2^14): far below 65504
FLUX_DIGITS = 4
CACHE_FOLDER = "pixels"


@dataclass(frozen=True)
class EncodedImage:
    body: bytes  # (B, H, W) float16, little-endian, C order
    shape: tuple[int, int, int]
    scales: tuple[float, ...]  # per band: flux = value * scale


@dataclass(frozen=True)
class SubjectPayload:
    """A cached, gzip'd body and what to send with it."""

    gzip_path: Path
    content_type: str
    headers: dict[str, str]


def band_scales(cube: np.ndarray) -> np.ndarray:
    """(B, H, W) -> (B,) powers of two that bring each band's peak |flux| just under 2^14."""
    finite = np.where(np.isfinite(cube), np.abs(cube), 0.0)
    peaks = finite.reshape(cube.shape[0], -1).max(axis=1)
    exponents = np.where(peaks > 0, np.ceil(np.log2(np.where(peaks > 0, peaks, 1.0) / FLOAT16_PEAK)), 0.0)
    return np.exp2(exponents)


def encode_image(cube: np.ndarray) -> EncodedImage:
    """(B, H, W) fluxes -> float16 bytes and the per-band scales that decode them."""
    cube = np.asarray(cube, dtype=np.float64)
    if cube.ndim != 3:
        raise ValueError(f"expected a (B, H, W) cube, got shape {cube.shape}")
    scales = band_scales(cube)
    with np.errstate(invalid="ignore"):
        scaled = np.where(np.isfinite(cube), cube / scales[:, None, None], np.nan)
    body = np.ascontiguousarray(scaled.astype("<f2")).tobytes()
    return EncodedImage(body=body, shape=tuple(int(n) for n in cube.shape), scales=tuple(float(s) for s in scales))


def decode_image(body: bytes, shape: tuple[int, int, int], scales: tuple[float, ...]) -> np.ndarray:
    """The inverse of :func:`encode_image` (what the browser does), as float32 fluxes."""
    values = np.frombuffer(body, dtype="<f2").reshape(shape).astype(np.float32)
    return values * np.asarray(scales, dtype=np.float32)[:, None, None]


def round_significant(values: np.ndarray, digits: int) -> list[float | None]:
    """Each value to ``digits`` significant digits; non-finite ones become None (JSON null)."""
    return [float(f"{v:.{digits}g}") if math.isfinite(v) else None for v in np.asarray(values, dtype=float).tolist()]


def wavelength_digits(wavelength: np.ndarray) -> int:
    """Significant digits that keep a tenth of the finest relative pixel step (5 to 10)."""
    if wavelength.size < 2:
        return 6
    relative = float(np.min(np.diff(wavelength) / wavelength[1:]))
    return int(np.clip(math.ceil(-math.log10(max(relative, 1e-12) / 10)) + 1, 5, 10))


def spectrum_payload(
    wavelength: np.ndarray, flux: np.ndarray, ivar: np.ndarray, *, z_qso: float | None, flux_unit: str
) -> dict:
    """(L,) arrays -> the viewer's JSON: wavelength (Å), flux, 1-sigma error (null where unknown)."""
    ivar = np.asarray(ivar, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(np.isfinite(ivar) & (ivar > 0), 1.0 / np.sqrt(ivar), np.nan)
    return {
        "wavelength": round_significant(wavelength, wavelength_digits(np.asarray(wavelength, dtype=float))),
        "flux": round_significant(flux, FLUX_DIGITS),
        "error": round_significant(sigma, FLUX_DIGITS),
        "z_qso": z_qso,
        "units": {"wavelength": "Angstrom (observed frame)", "flux": flux_unit, "error": flux_unit},
    }


def subject_z_qso(subject: Subject) -> float | None:
    """The quasar redshift the viewer starts from: metadata's ``z_qso``, else the file's ``z``."""
    value = subject.metadata.get("z_qso", subject.metadata.get("z"))
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def data_token(subject: Subject) -> str:
    """The checksum in a subject's data address: changes whenever the body would."""
    if subject.kind == Subject.Kind.IMAGE:
        return subject.data_sha256[:12]
    # A spectrum's body also carries z_qso from the metadata, which is not in the file's checksum.
    return hashlib.sha256(f"{subject.data_sha256}|{subject_z_qso(subject)!r}".encode()).hexdigest()[:12]


def subject_payload(subject: Subject) -> SubjectPayload:
    """The subject's compact data, built and cached on first use."""
    if subject.kind == Subject.Kind.IMAGE:
        return _image_payload(subject)
    return _spectrum_payload(subject)


def _image_payload(subject: Subject) -> SubjectPayload:
    stem = storage.media_path(f"{CACHE_FOLDER}/{subject.data_sha256}.f16")
    body_path, meta_path = stem.with_suffix(".f16.gz"), stem.with_suffix(".f16.json")
    if not body_path.exists():
        data = subject_load_image(subject)
        encoded = encode_image(data.cube)
        headers = {
            "X-Skyloop-Shape": ",".join(str(n) for n in encoded.shape),
            "X-Skyloop-Bands": ",".join(data.bands),
            "X-Skyloop-Scale": ",".join(repr(s) for s in encoded.scales),
        }
        # Headers first: a reader that finds the body always finds its headers.
        _write_atomic(meta_path, json.dumps(headers).encode())
        _write_atomic(body_path, gzip.compress(encoded.body, compresslevel=6, mtime=0))
    headers = json.loads(meta_path.read_text())
    return SubjectPayload(gzip_path=body_path, content_type="application/octet-stream", headers=headers)


def _spectrum_payload(subject: Subject) -> SubjectPayload:
    body_path = storage.media_path(f"{CACHE_FOLDER}/{subject.data_sha256}-{data_token(subject)}.json.gz")
    if not body_path.exists():
        spec = subject_load_spectrum(subject)
        payload = spectrum_payload(
            spec.wavelength,
            spec.flux,
            spec.ivar,
            z_qso=subject_z_qso(subject),
            flux_unit=str(spec.meta.get("flux_unit", "unknown")),
        )
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        _write_atomic(body_path, gzip.compress(text.encode(), compresslevel=6, mtime=0))
    return SubjectPayload(gzip_path=body_path, content_type="application/json", headers={})


def _write_atomic(path: Path, content: bytes) -> None:
    """Concurrent first requests may both build it: each writes a temporary file and renames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
