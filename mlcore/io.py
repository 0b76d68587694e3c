"""FITS input and output for subject data: multi-band image cutouts and 1-D spectra.

Readers validate what they load and raise :class:`DataFileError` with the reason in
plain words (callers prefix the file name). They only read, so a failure never leaves
anything behind. Writers go through a temporary file and an atomic rename.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

MIN_SIDE = 8
MAX_SIDE = 4096
MAX_BANDS = 8
MAX_BAD_FRACTION = 0.5
MIN_SPECTRUM_PIXELS = 50
# Header cards worth keeping with a subject; everything else stays in the file.
KEPT_CARDS = ("OBJECT", "TELESCOP", "INSTRUME", "SURVEY", "ORIGIN", "DATE-OBS", "EXPTIME",
              "BUNIT", "MJD", "PLATE", "FIBERID", "RUN2D", "CLASS")
SDSS_FLUX_UNIT = u.Unit("1e-17 erg / (s cm2 Angstrom)")


class DataFileError(ValueError):
    """A data file cannot be used; the message names the reason in plain words."""


@dataclass(frozen=True)
class ImageData:
    cube: np.ndarray  # (B, H, W) float32, all finite
    bands: tuple[str, ...]
    ra: float | None  # degrees, at the centre pixel
    dec: float | None
    nan_fraction: float  # share of pixels that were non-finite and got replaced
    header: dict


@dataclass(frozen=True)
class SpectrumData:
    wavelength: np.ndarray  # (L,) float64 Angstrom, strictly increasing
    flux: np.ndarray  # (L,) float32
    ivar: np.ndarray  # (L,) float32, 0 where bad
    z: float | None
    ra: float | None
    dec: float | None
    meta: dict


# ---------------------------------------------------------------- images


def read_image_fits(path) -> ImageData:
    """Read a 2-D image, a (B, H, W) cube, or one 2-D image HDU per band.

    Non-finite pixels are replaced by the finite median of their band.

    Raises
    ------
    DataFileError
        Not FITS or corrupt, no image, wrong dimensionality, bands of different
        shapes, sides outside [8, 4096], more than 8 bands, > 50% bad pixels.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                planes, names, header = _image_planes(hdul)
    except DataFileError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise DataFileError(f"not a readable FITS file ({exc})") from exc
    cube = _stack_planes(planes)
    cube, nan_fraction = _fill_non_finite(cube)
    ra, dec = _centre_radec(header, cube.shape[1:])
    return ImageData(cube=cube, bands=_band_names(names, header, cube.shape[0]), ra=ra, dec=dec,
                     nan_fraction=nan_fraction, header=_kept_cards(header))


def read_image_cube(path) -> np.ndarray:
    """Only the pixels: ``read_image_fits(path).cube``, (B, H, W) float32, without the WCS and header cards.

    The bulk-inference reader. Parsing the WCS is about two thirds of ``read_image_fits``;
    a plain float image in the primary HDU alone (what ``write_image_fits`` and cutout
    services write) is read straight from its big-endian bytes after checking the header.
    Anything else (integers, scaling, extensions, a short file) goes through astropy, so
    the cube and the :class:`DataFileError` reasons are the same as ``read_image_fits``'s.
    """
    planes = _plain_primary_planes(path)
    if planes is None:
        return read_image_fits(path).cube
    cube, _ = _fill_non_finite(_stack_planes(planes))
    return cube


FITS_BLOCK = 2880
FLOAT_BITPIX = {-32: ">f4", -64: ">f8"}
MAX_HEADER_BLOCKS = 64


def _plain_primary_planes(path) -> list[np.ndarray] | None:
    """Planes of an unscaled float primary image with nothing after it, or None (then astropy decides)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None  # astropy raises it again, as a DataFileError with the reason
    cards = _primary_cards(raw)
    if cards is None or cards.get("SIMPLE") != "T" or not _unscaled(cards):
        return None
    try:
        dtype = FLOAT_BITPIX.get(int(cards["BITPIX"]))
        naxis = int(cards["NAXIS"])
        shape = tuple(int(cards[f"NAXIS{i}"]) for i in range(naxis, 0, -1))  # FITS lists the fastest axis first
    except (KeyError, ValueError):
        return None
    if dtype is None or naxis not in (2, 3) or min(shape) < 1:
        return None
    start = cards["_data_offset"]
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    padded = -(-nbytes // FITS_BLOCK) * FITS_BLOCK
    if not start + nbytes <= len(raw) <= start + padded:  # short file, or more HDUs (e.g. one per band)
        return None
    data = np.frombuffer(raw, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=start).reshape(shape)
    return list(data) if naxis == 3 else [data]


def _unscaled(cards: dict) -> bool:
    try:
        scale, zero = (float(cards.get(k, d).upper().replace("D", "E")) for k, d in (("BSCALE", "1"), ("BZERO", "0")))
    except ValueError:
        return False
    return scale == 1.0 and zero == 0.0


def _primary_cards(raw: bytes) -> dict | None:
    """{keyword: value text} of the primary header, plus ``_data_offset``; None if it is not plain ASCII cards."""
    cards: dict = {}
    for block in range(min(MAX_HEADER_BLOCKS, len(raw) // FITS_BLOCK)):
        for pos in range(block * FITS_BLOCK, (block + 1) * FITS_BLOCK, 80):
            card = raw[pos : pos + 80]
            key = card[:8].rstrip()
            if key == b"END":
                cards["_data_offset"] = (block + 1) * FITS_BLOCK
                return cards
            if card[8:10] == b"= " and key in _STRUCTURAL_KEYS:
                try:
                    cards[key.decode("ascii")] = card[10:].split(b"/")[0].strip().decode("ascii")
                except UnicodeDecodeError:
                    return None
    return None


_STRUCTURAL_KEYS = {b"SIMPLE", b"BITPIX", b"NAXIS", b"NAXIS1", b"NAXIS2", b"NAXIS3", b"BSCALE", b"BZERO", b"GROUPS"}


def _image_hdus(hdul) -> list:
    kinds = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
    return [h for h in hdul if isinstance(h, kinds) and h.data is not None and h.data.size > 0]


def _image_planes(hdul) -> tuple[list[np.ndarray], list[str | None], fits.Header]:
    """Planes (each (H, W)), a name per plane when the file gives one, and the main header."""
    hdus = _image_hdus(hdul)
    if not hdus:
        raise DataFileError("the file holds no image data")
    first = hdus[0]
    data = np.asarray(first.data)
    while data.ndim > 3 and data.shape[0] == 1:  # degenerate leading axes, e.g. (1, B, H, W)
        data = data[0]
    if data.ndim == 3:
        return list(data), [None] * data.shape[0], first.header
    if data.ndim != 2:
        raise DataFileError(f"image data must be 2-D or 3-D, got {data.ndim}-D")
    planes = [h for h in hdus if np.asarray(h.data).ndim == 2]
    return [np.asarray(h.data) for h in planes], [_hdu_band(h) for h in planes], first.header


def _hdu_band(hdu) -> str | None:
    for card in ("FILTER", "BAND", "EXTNAME"):
        value = hdu.header.get(card)
        if isinstance(value, str) and value.strip() and value.strip().upper() != "PRIMARY":
            return value.strip()
    return None


def _stack_planes(planes: list[np.ndarray]) -> np.ndarray:
    if len(planes) > MAX_BANDS:
        raise DataFileError(f"at most {MAX_BANDS} bands are allowed, got {len(planes)}")
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise DataFileError(f"bands have different shapes: {sorted(shapes)}")
    height, width = planes[0].shape
    if min(height, width) < MIN_SIDE or max(height, width) > MAX_SIDE:
        raise DataFileError(f"image is {height}x{width}; each side must be {MIN_SIDE} to {MAX_SIDE} pixels")
    # float64 first so that BSCALE'd integers keep their value; float32 overflow becomes inf
    # and is then treated like any other bad pixel.
    with np.errstate(over="ignore", invalid="ignore"):
        return np.stack([p.astype(np.float64) for p in planes]).astype(np.float32)  # (B, H, W)


def _fill_non_finite(cube: np.ndarray) -> tuple[np.ndarray, float]:
    bad = ~np.isfinite(cube)
    if not bad.any():
        return cube, 0.0
    for b in range(cube.shape[0]):
        share = bad[b].mean()
        if share > MAX_BAD_FRACTION:
            raise DataFileError(f"band {b} has {share:.0%} non-finite pixels (more than half)")
        if share:
            cube[b][bad[b]] = np.median(cube[b][~bad[b]])
    return cube, float(bad.mean())


def _band_names(names: list[str | None], header: fits.Header, n_bands: int) -> tuple[str, ...]:
    card = header.get("BANDS")
    if all(names) and len(set(names)) == n_bands:
        return tuple(names)
    if isinstance(card, str):
        listed = tuple(s.strip() for s in card.split(",") if s.strip())
        if len(listed) == n_bands and len(set(listed)) == n_bands:
            return listed
    return tuple(f"b{i}" for i in range(n_bands))


def _centre_radec(header: fits.Header, shape: tuple[int, int]) -> tuple[float | None, float | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header).celestial
            if not wcs.has_celestial:
                return None, None
            ra, dec = wcs.all_pix2world([[(shape[1] - 1) / 2, (shape[0] - 1) / 2]], 0)[0]
    except Exception:  # a broken WCS only costs us the position, not the image
        return None, None
    if not (math.isfinite(ra) and math.isfinite(dec)):
        return None, None
    return float(ra) % 360.0, float(dec)


def _kept_cards(header: fits.Header) -> dict:
    out = {}
    for key in KEPT_CARDS:
        value = header.get(key)
        if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
            out[key] = value
    return out


def write_image_fits(path, cube: np.ndarray, bands: Sequence[str], *, wcs: WCS | None = None,
                     header: Mapping | None = None) -> None:
    """Write a float32 (B, H, W) cube to the primary HDU with a BANDS card and the WCS."""
    cube = np.asarray(cube, dtype=np.float32)
    if cube.ndim == 2:
        cube = cube[None]
    if cube.ndim != 3:
        raise ValueError(f"cube must be (B, H, W), got shape {cube.shape}")
    bands = [str(b) for b in bands]
    if len(bands) != cube.shape[0] or any("," in b for b in bands):
        raise ValueError("need one band name without commas per plane")
    hdr = wcs.to_header() if wcs is not None else fits.Header()
    hdr["BANDS"] = ",".join(bands)
    for key, value in (header or {}).items():
        hdr[key if len(key) <= 8 else f"HIERARCH {key}"] = value
    _atomic_write(path, fits.HDUList([fits.PrimaryHDU(data=cube, header=hdr)]))


def _atomic_write(path, hdul: fits.HDUList) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".fits", dir=directory)
    os.close(fd)
    try:
        hdul.writeto(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------- spectra


def read_spectrum(path) -> SpectrumData:
    """Read a 1-D spectrum with specutils (SDSS spec files first, then auto-identified).

    Wavelengths come back in Angstrom, increasing. ``ivar`` comes from the file's
    uncertainty; without one it is a constant estimated from the scatter of first
    differences and ``meta["ivar_estimated"]`` is True.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdul:
                hdul.verify("silentfix")
                z, ra, dec, meta = _spectrum_context(hdul)
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise DataFileError(f"not a readable FITS file ({exc})") from exc
    spec, fmt = _load_specutils(path)
    wave, flux, ivar, estimated = _spectrum_arrays(spec)
    meta.update(format=fmt, ivar_estimated=estimated, flux_unit=_flux_unit_name(spec))
    return SpectrumData(wavelength=wave, flux=flux, ivar=ivar, z=z, ra=ra, dec=dec, meta=meta)


def _load_specutils(path):
    from specutils import Spectrum  # imported here: specutils is slow to import

    errors = []
    for fmt in ("SDSS-III/IV spec", None):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spec = Spectrum.read(path, format=fmt) if fmt else Spectrum.read(path)
            return spec, fmt or "auto"
        except Exception as exc:  # specutils raises many kinds; we report them all as one
            errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if "strictly increasing" in errors[-1]:  # specutils checks this itself when it builds a Spectrum
        raise DataFileError("wavelengths are not strictly monotonic")
    raise DataFileError(f"no 1-D spectrum found ({errors[-1]})")


def _spectrum_arrays(spec) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    if spec.flux.ndim != 1:
        raise DataFileError(f"spectrum must be 1-D, got flux of shape {spec.flux.shape}")
    try:
        wave = spec.spectral_axis.to_value(u.AA, equivalencies=u.spectral()).astype(np.float64)
    except u.UnitConversionError as exc:
        raise DataFileError(f"spectral axis unit {spec.spectral_axis.unit} is not a wavelength") from exc
    flux, scale = _flux_values(spec, wave)
    ivar = _ivar_values(spec, scale)
    if wave.size < MIN_SPECTRUM_PIXELS:
        raise DataFileError(f"spectrum has {wave.size} pixels; at least {MIN_SPECTRUM_PIXELS} are needed")
    steps = np.diff(wave)
    if not np.all(np.isfinite(wave)) or not (np.all(steps > 0) or np.all(steps < 0)):
        raise DataFileError("wavelengths are not strictly monotonic")
    masked = np.zeros(wave.shape, dtype=bool) if spec.mask is None else np.asarray(spec.mask, dtype=bool)
    if steps[0] < 0:  # frequency-ordered files come out decreasing in wavelength
        wave, flux, masked = wave[::-1].copy(), flux[::-1].copy(), masked[::-1].copy()
        ivar = None if ivar is None else ivar[::-1].copy()
    good = np.isfinite(flux)
    if not good.any():
        raise DataFileError("no flux value is finite")
    estimated = ivar is None
    if estimated:
        ivar = np.full(flux.shape, _ivar_from_differences(flux[good]))
    ivar = np.where(good & ~masked & np.isfinite(ivar) & (ivar > 0), ivar, 0.0)
    flux = np.where(good, flux, 0.0)
    return wave, flux.astype(np.float32), ivar.astype(np.float32), estimated


def _flux_values(spec, wave: np.ndarray) -> tuple[np.ndarray, float]:
    """Flux in 1e-17 erg/s/cm2/A when the unit allows, else as stored; and the scale used."""
    flux = spec.flux
    try:
        converted = flux.to_value(SDSS_FLUX_UNIT, equivalencies=u.spectral_density(wave * u.AA))
    except u.UnitConversionError:
        return np.asarray(flux.value, dtype=np.float64), 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = converted / np.asarray(flux.value, dtype=np.float64)
    # Only a constant scale (not a frequency-dependent one) carries over to ivar simply.
    finite = ratio[np.isfinite(ratio)]
    scale = float(np.median(finite)) if finite.size else 1.0
    return np.asarray(converted, dtype=np.float64), scale


def _flux_unit_name(spec) -> str:
    try:
        spec.flux[:1].to(SDSS_FLUX_UNIT, equivalencies=u.spectral_density(spec.spectral_axis[:1]))
    except u.UnitConversionError:
        return spec.flux.unit.to_string() or "unknown"
    return SDSS_FLUX_UNIT.to_string()


def _ivar_values(spec, scale: float) -> np.ndarray | None:
    unc = spec.uncertainty
    if unc is None:
        return None
    arr = np.asarray(unc.array, dtype=np.float64)
    kind = getattr(unc, "uncertainty_type", "")
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "ivar":
            ivar = arr
        elif kind == "std":
            ivar = 1.0 / arr**2
        elif kind == "var":
            ivar = 1.0 / arr
        else:
            return None
        return ivar / scale**2


def _ivar_from_differences(flux: np.ndarray) -> float:
    """Constant ivar from the MAD of first differences (robust to smooth structure).

    For white noise, diff has variance 2 sigma^2, and MAD * 1.4826 estimates sigma of a
    Gaussian, so sigma = 1.4826 * MAD(diff) / sqrt(2).
    """
    diffs = np.diff(flux)
    mad = np.median(np.abs(diffs - np.median(diffs))) if diffs.size else 0.0
    sigma = 1.4826 * mad / math.sqrt(2.0)
    if not math.isfinite(sigma) or sigma <= 0:
        return 1.0
    return 1.0 / sigma**2


def _spectrum_context(hdul) -> tuple[float | None, float | None, float | None, dict]:
    """Redshift, position and a few header cards, wherever the common formats put them."""
    header = hdul[0].header
    z = _finite_or_none(header.get("Z"))
    if z is None and "SPECOBJ" in hdul:
        table = hdul["SPECOBJ"].data
        if table is not None and "Z" in table.columns.names and len(table):
            z = _finite_or_none(table["Z"][0])
    ra = _finite_or_none(header.get("PLUG_RA", header.get("RA")))
    dec = _finite_or_none(header.get("PLUG_DEC", header.get("DEC")))
    return z, ra, dec, {"header": _kept_cards(header)}


def _finite_or_none(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def write_sdss_spectrum(path, wavelength, flux, ivar, *, z: float | None = None, ra: float | None = None,
                        dec: float | None = None, meta: Mapping | None = None) -> None:
    """Write an SDSS-III/IV ``spec``-style file that specutils reads as "SDSS-III/IV spec".

    HDU1 "COADD" holds flux, loglam, ivar, and_mask (ivar must be the third column for
    specutils to recognise the format); HDU2 "SPECOBJ" holds Z; PLUG_RA/PLUG_DEC go in
    the primary header.
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float32)
    ivar = np.asarray(ivar, dtype=np.float32)
    if not (wavelength.ndim == 1 and wavelength.shape == flux.shape == ivar.shape):
        raise ValueError("wavelength, flux and ivar must be 1-D arrays of one length")
    if np.any(wavelength <= 0) or np.any(np.diff(wavelength) <= 0):
        raise ValueError("wavelength must be positive and strictly increasing")
    primary = fits.PrimaryHDU()
    # specutils identifies the format by these three cards (specutils/io/default_loaders/sdss.py);
    # ORIGIN says the file is Skyloop's own, not an SDSS product.
    primary.header["TELESCOP"] = "SDSS 2.5-M"
    primary.header["VERS2D"] = "v5_skyloop"
    primary.header["FIBERID"] = 1
    primary.header["ORIGIN"] = "skyloop"
    primary.header["BUNIT"] = "1e-17 erg / (Angstrom cm2 s)"
    if ra is not None:
        primary.header["PLUG_RA"] = float(ra)
    if dec is not None:
        primary.header["PLUG_DEC"] = float(dec)
    for key, value in (meta or {}).items():
        primary.header[key if len(key) <= 8 else f"HIERARCH {key}"] = value
    coadd = Table({"flux": flux, "loglam": np.log10(wavelength).astype(np.float32),
                   "ivar": ivar, "and_mask": np.zeros(flux.shape, dtype=np.int32)})
    specobj = Table({"Z": np.array([np.nan if z is None else float(z)], dtype=np.float64)})
    hdus = [primary, fits.table_to_hdu(coadd), fits.table_to_hdu(specobj)]
    hdus[1].name, hdus[2].name = "COADD", "SPECOBJ"
    _atomic_write(path, fits.HDUList(hdus))
