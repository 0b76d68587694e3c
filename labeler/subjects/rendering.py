"""Server-rendered previews: the fast first paint of every subject.

Images: Lupton+2004 asinh RGB (astropy.visualization.make_lupton_rgb) with the reddest
band as R. Spectra: a flux plot with the 1-sigma error band. Rendered once, cached on
disk under MEDIA_ROOT/previews, keyed by the data file's checksum.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from astropy.visualization import make_lupton_rgb
from PIL import Image

from labeler.subjects import storage
from labeler.subjects.models import Subject
from labeler.subjects.services import subject_load_image, subject_load_spectrum

PREVIEW_PIXELS = 256


def subject_preview_png(subject: Subject) -> Path:
    """Path of the cached PNG preview, rendering it first if needed."""
    path = storage.media_path(f"previews/{subject.data_sha256}.png")
    if not path.exists():
        png = _render_image(subject) if subject.kind == Subject.Kind.IMAGE else _render_spectrum(subject)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{np.random.randint(1 << 30)}.tmp")
        tmp.write_bytes(png)
        tmp.replace(path)
    return path


def lupton_rgb(cube: np.ndarray) -> np.ndarray:
    """(B, H, W) fluxes -> (H, W, 3) uint8, asinh stretch scaled to the image's noise."""
    if cube.shape[0] >= 3:
        r, g, b = cube[2], cube[1], cube[0]  # g, r, i -> B, G, R
    else:
        r = g = b = cube[0]
    noise = np.median([_mad_sigma(band) for band in (r, g, b)])
    noise = noise if noise > 0 else 1.0
    return make_lupton_rgb(r, g, b, minimum=-noise, stretch=8 * noise, Q=8)


def _mad_sigma(band: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(band - np.median(band))))


def _render_image(subject: Subject) -> bytes:
    rgb = lupton_rgb(subject_load_image(subject).cube)
    image = Image.fromarray(np.flipud(rgb))  # FITS row 0 is the bottom of the sky image
    image = image.resize((PREVIEW_PIXELS, PREVIEW_PIXELS), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _render_spectrum(subject: Subject) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    spec = subject_load_spectrum(subject)
    sigma = np.where(spec.ivar > 0, 1 / np.sqrt(np.maximum(spec.ivar, 1e-30)), np.nan)
    fig = Figure(figsize=(9, 3.2), dpi=100)
    ax = fig.add_subplot()
    ax.fill_between(spec.wavelength, spec.flux - sigma, spec.flux + sigma, color="0.8", lw=0, step="mid")
    ax.plot(spec.wavelength, spec.flux, lw=0.6, color="k", drawstyle="steps-mid")
    top = np.nanpercentile(spec.flux, 99.9) if spec.flux.size else 1.0
    ax.set_ylim(min(-0.1 * top, np.nanpercentile(spec.flux, 0.5)), 1.15 * top)
    ax.set_xlabel("observed wavelength (Å)")
    ax.set_ylabel("flux (10$^{-17}$ erg s$^{-1}$ cm$^{-2}$ Å$^{-1}$)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
