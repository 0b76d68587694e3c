"""Local copies of Zooniverse subject images, read as Skyloop image cubes.

Zooniverse subjects live at URLs (``locations``) that cannot be fetched here, so the user
points ``--media-dir`` at a folder holding them, named by subject id (``1234.png``) or by
the location's file name (``a1b2c3.jpeg``). FITS files are read as any ingest reads them;
PNG and JPEG become a float cube in [0, 1], one band per colour (blue, green, red: bluest
first, as g, r, i), with rows flipped so that row 0 is the bottom, as in FITS.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from labeler.workflows.zooniverse import ZooniverseError
from mlcore import io as fitsio

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_SIDE = 4096  # as FITS ingest: larger is a survey field, not a subject


def find_media(media_dir: Path, subject_id: int, locations: list[str]) -> Path | None:
    """The local file of a subject's first frame, or None."""
    names = [f"{subject_id}{suffix}" for suffix in FITS_SUFFIXES + PICTURE_SUFFIXES]
    names += [Path(urlparse(url).path).name for url in locations[:1]]
    for name in names:
        if name and (media_dir / name).is_file():
            return media_dir / name
    return None


def read_media(path: Path, *, ra: float | None, dec: float | None) -> fitsio.ImageData:
    """An image cube from a FITS, PNG or JPEG file (ZooniverseError naming the file)."""
    if path.name.lower().endswith(FITS_SUFFIXES):
        try:
            return fitsio.read_image_fits(path)
        except (fitsio.DataFileError, OSError) as exc:
            raise ZooniverseError(f"{path}: {exc}") from None
    if not path.name.lower().endswith(PICTURE_SUFFIXES):
        raise ZooniverseError(f"{path}: expected FITS, PNG or JPEG")
    cube = _picture_cube(path)
    return fitsio.ImageData(
        cube=cube,
        bands=_bands(cube),
        ra=ra,
        dec=dec,
        nan_fraction=0.0,
        header={"ORIGIN": "Zooniverse", "SRCFILE": path.name[:60]},
    )


def _picture_cube(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if max(image.size) > MAX_SIDE or min(image.size) < 8:
                raise ZooniverseError(f"{path}: {image.size[0]}x{image.size[1]} pixels; sides must be 8 to {MAX_SIDE}")
            grey = image.mode in ("L", "I", "I;16", "F", "1")
            pixels = np.asarray(image.convert("F" if grey else "RGB"), dtype=np.float32)  # (H, W) or (H, W, 3)
    except (UnidentifiedImageError, OSError) as exc:
        raise ZooniverseError(f"{path}: not a readable image ({exc})") from None
    if pixels.ndim == 2:
        scale = 255.0 if pixels.max(initial=0) <= 255 else 65535.0
        cube = (pixels / scale)[None]
    else:
        cube = np.moveaxis(pixels / 255.0, -1, 0)[::-1]  # (3, H, W): blue, green, red
    return np.ascontiguousarray(cube[:, ::-1, :], dtype=np.float32)  # first PNG row is the top


def _bands(cube: np.ndarray) -> tuple[str, ...]:
    return ("grey",) if cube.shape[0] == 1 else ("blue", "green", "red")


def radec_from_metadata(metadata: dict) -> tuple[float | None, float | None]:
    """RA/Dec in degrees when the subject's metadata carries them (``ra``/``dec``, any case, ``#`` hidden)."""
    found = {}
    for key, value in metadata.items():
        name = str(key).lstrip("#!").strip().lower()
        if name in ("ra", "dec"):
            try:
                found[name] = float(value)
            except (TypeError, ValueError):
                continue
    ra, dec = found.get("ra"), found.get("dec")
    if ra is None or dec is None or not (0 <= ra < 360 and -90 <= dec <= 90):
        return None, None
    return ra, dec
