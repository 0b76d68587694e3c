"""Streaming catalog writers: CSV (ECSV), FITS binary table, VOTable and Parquet.

Each writer is opened with the columns and the provenance, takes the rows chunk by chunk
(``write(arrays)``, arrays from ``columns.chunk_arrays``) and never holds more than one chunk:

- CSV is ECSV 1.0 (astropy's "Enhanced CSV"): a ``#``-commented YAML header with each column's
  type, unit, description and UCD and the provenance as table meta, then plain comma-separated
  rows. astropy (``Table.read(format="ascii.ecsv")``), TOPCAT/STILTS (``ifmt=ecsv``) read the
  units and descriptions; ``pandas.read_csv(path, comment="#")`` reads the rows.
- FITS: astropy builds the headers (TUNIT, TCOMM descriptions and TUCD as STILTS writes them,
  provenance cards); the rows are packed with numpy straight into the file, and NAXIS2 is
  patched in place at the end, so no full table is ever built in memory.
- VOTable 1.4: astropy writes the header (FIELDs with unit, UCD, DESCRIPTION; provenance as
  INFO elements); rows stream into a BINARY2 base64 stream (half the size of TABLEDATA, and
  no text formatting of numbers).
- Parquet: one row group per chunk; units, descriptions and UCDs in the field metadata and
  the provenance in the schema metadata (key ``skyloop``, JSON; one key per item too), plus the
  keys astropy's own Parquet writer adds, so ``Table.read`` restores units and descriptions.
"""

from __future__ import annotations

import binascii
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile
from astropy.table import Column as AstropyColumn
from astropy.table import Table
from astropy.table.meta import get_yaml_from_table

from labeler.catalogs.columns import Column

ARROW_TYPES = {
    "str": pa.string(),
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
}
FITS_FORMATS = {"bool": "L", "int32": "J", "int64": "K", "float32": "E", "float64": "D"}
FITS_DTYPES = {"bool": "S1", "int32": ">i4", "int64": ">i8", "float32": ">f4", "float64": ">f8"}
VOTABLE_TYPES = {"str": "char", "bool": "boolean", "int32": "int", "int64": "long", "float32": "float",
                 "float64": "double"}  # fmt: skip
BASE64_LINE_BYTES, BASE64_LINE_CHARS = 57, 76  # 57 bytes encode to one 76-character line
FITS_BLOCK = 2880
FITS_CARD_TEXT = 68  # a string value longer than this needs CONTINUE cards, which not every reader follows
# Provenance key -> FITS keyword (8 characters at most).
FITS_KEYWORDS = {
    "software": "CREATOR",
    "workflow": "WORKFLOW",
    "workflow_id": "WF_ID",
    "workflow_name": "WF_NAME",
    "workflow_version": "WF_VERS",
    "model_version": "MODELVER",
    "model_sha256": "MODELSHA",
    "export_time_utc": "DATE",
    "filters": "FILTERS",
    "format": "EXPFMT",
}


def arrow_table(columns: Sequence[Column], arrays: Mapping[str, object]) -> pa.Table:
    return pa.table({c.name: pa.array(arrays[c.name], type=ARROW_TYPES[c.dtype]) for c in columns})


def ascii_text(text: str) -> str:
    """FITS headers and VOTable ``char`` values are ASCII: anything else becomes '?'."""
    return str(text).encode("ascii", "replace").decode("ascii")


def ascii_bytes(values, width: int) -> np.ndarray:
    """Fixed-width ASCII bytes for a FITS string column: numpy encodes all at once; non-ASCII text is rare."""
    text = np.asarray(values, dtype=f"U{width}")
    try:
        return text.astype(f"S{width}")
    except UnicodeEncodeError:
        return np.array([ascii_text(v).encode("ascii") for v in text], dtype=f"S{width}")


class EcsvWriter:
    def __init__(self, path: Path, columns: Sequence[Column], provenance: Mapping):
        self.columns = list(columns)
        self.file = open(path, "wb")
        self.file.write(_ecsv_header(self.columns, provenance).encode("utf-8"))

    def write(self, arrays: Mapping[str, object]) -> None:
        table = arrow_table(self.columns, arrays)
        for i, column in enumerate(self.columns):  # ECSV spells booleans True / False
            if column.dtype == "bool":
                text = pc.if_else(table.column(i), "True", "False")
                table = table.set_column(i, column.name, text)
        pacsv.write_csv(table, self.file, pacsv.WriteOptions(include_header=False))  # UTF-8 straight to the file

    def close(self, n_rows: int) -> None:
        self.file.close()

    def abort(self) -> None:
        self.file.close()


def _ecsv_header(columns: Sequence[Column], provenance: Mapping) -> str:
    out = io.StringIO()
    template_table(columns, provenance).write(out, format="ascii.ecsv", delimiter=",")
    return out.getvalue()


def template_table(columns: Sequence[Column], provenance: Mapping) -> Table:
    """An empty astropy Table with the catalog's columns (unit, description, UCD in meta) and provenance."""
    table = Table()
    for c in columns:
        dtype = "U1" if c.dtype == "str" else c.dtype
        meta = {"ucd": c.ucd} if c.ucd else {}
        table[c.name] = AstropyColumn([], dtype=dtype, unit=c.unit or None, description=c.description, meta=meta)
    table.meta.update(provenance)
    return table


class FitsWriter:
    def __init__(self, path: Path, columns: Sequence[Column], provenance: Mapping):
        self.columns = list(columns)
        self.dtype = np.dtype([(c.name, f"S{c.width}" if c.dtype == "str" else FITS_DTYPES[c.dtype]) for c in columns])
        self.file = open(path, "wb")
        self.file.write(_fits_primary(provenance).header.tostring().encode("ascii"))
        self.table_header = _fits_table_header(self.columns, provenance)
        self.header_offset = self.file.tell()
        self.file.write(self.table_header.tostring().encode("ascii"))
        self.data_bytes = 0

    def write(self, arrays: Mapping[str, object]) -> None:
        n = len(next(iter(arrays.values())))
        rows = np.zeros(n, dtype=self.dtype)
        for c in self.columns:
            values = arrays[c.name]
            if c.dtype == "str":
                rows[c.name] = ascii_bytes(values, c.width)
            elif c.dtype == "bool":
                rows[c.name] = np.where(np.asarray(values, dtype=bool), b"T", b"F")
            else:
                rows[c.name] = values
        data = rows.tobytes()
        self.file.write(data)
        self.data_bytes += len(data)

    def close(self, n_rows: int) -> None:
        self.file.write(b"\0" * (-self.data_bytes % FITS_BLOCK))
        self.table_header["NAXIS2"] = n_rows
        header = self.table_header.tostring().encode("ascii")
        self.file.seek(self.header_offset)
        self.file.write(header)  # same length: only NAXIS2's value changed
        self.file.close()

    def abort(self) -> None:
        self.file.close()


def _fits_primary(provenance: Mapping) -> fits.PrimaryHDU:
    hdu = fits.PrimaryHDU()
    for key in ("software", "export_time_utc"):
        hdu.header[FITS_KEYWORDS[key]] = _fits_value(key, provenance[key])
    hdu.header["COMMENT"] = "Skyloop catalog: the table is in the next HDU (EXTNAME = 'CATALOG')."
    return hdu


def _fits_table_header(columns: Sequence[Column], provenance: Mapping) -> fits.Header:
    defs = []
    for c in columns:
        fmt = f"{c.width}A" if c.dtype == "str" else FITS_FORMATS[c.dtype]
        defs.append(fits.Column(name=c.name, format=fmt, unit=c.unit or None))
    header = fits.BinTableHDU.from_columns(fits.ColDefs(defs), nrows=0).header
    header["EXTNAME"] = "CATALOG"
    for i, c in enumerate(columns, start=1):  # TCOMMn and TUCDn: the keywords STILTS writes and reads
        header.insert(f"TFORM{i}", (f"TCOMM{i}", ascii_text(c.description)[:FITS_CARD_TEXT]), after=True)
        if c.ucd:
            header.insert(f"TCOMM{i}", (f"TUCD{i}", c.ucd), after=True)
    for key, keyword in FITS_KEYWORDS.items():
        if key in provenance:
            header[keyword] = _fits_value(key, provenance[key])
    for key in ("pixel_convention", "model_note"):
        if key in provenance:
            header.add_comment(ascii_text(provenance[key]))
    return header


def _fits_value(key: str, value):
    if key == "export_time_utc":
        return str(value).rstrip("Z")  # FITS DATE is UTC without a zone suffix
    return ascii_text(value) if isinstance(value, str) else value


class VOTableWriter:
    """VOTable 1.4 with the rows in BINARY2 (base64): each row is a null-flag mask, then each
    field big-endian, strings as a 4-byte length and their ASCII bytes. pyarrow joins the
    fields of a chunk's rows in one call, so no Python runs per row or cell; the base64 stream
    continues across chunks (whole 57-byte groups, 76-character lines; the rest carried over)."""

    def __init__(self, path: Path, columns: Sequence[Column], provenance: Mapping):
        self.columns = list(columns)
        head, tail = _votable_frame(self.columns, provenance)
        self.tail = tail.encode("utf-8")
        self.mask_bytes = (len(self.columns) + 7) // 8
        self.pending = b""
        self.file = open(path, "wb")
        self.file.write(head.encode("utf-8"))

    def write(self, arrays: Mapping[str, object]) -> None:
        data = self.pending + _binary2_rows(self.columns, arrays, self.mask_bytes)
        cut = len(data) - len(data) % BASE64_LINE_BYTES
        self.file.write(_base64_lines(data[:cut]))
        self.pending = data[cut:]

    def close(self, n_rows: int) -> None:
        self.file.write(_base64_lines(self.pending))
        self.file.write(self.tail)
        self.file.close()

    def abort(self) -> None:
        self.file.close()


def _votable_frame(columns: Sequence[Column], provenance: Mapping) -> tuple[str, str]:
    """The document before and after the rows: astropy writes it, the rows go into a BINARY2 stream."""
    vot = VOTableFile()
    resource = Resource()
    vot.resources.append(resource)
    for key, value in provenance.items():
        resource.infos.append(Info(ID=f"provenance_{key}", name=key, value=str(value)))  # IDs apart from FIELDs
    table = TableElement(vot, name="catalog")
    resource.tables.append(table)
    for c in columns:
        field = Field(vot, name=c.name, datatype=VOTABLE_TYPES[c.dtype], arraysize="*" if c.dtype == "str" else None,
                      unit=c.unit or None, ucd=c.ucd or None)  # fmt: skip
        field.description = c.description
        table.fields.append(field)
    table.create_arrays(0)
    out = io.BytesIO()
    vot.to_xml(out)
    text = out.getvalue().decode("utf-8")
    end = text.rindex("</TABLE>")
    stream = '<DATA><BINARY2><STREAM encoding="base64">\n'
    return text[:end] + stream, "</STREAM></BINARY2></DATA>\n" + text[end:]


def _base64_lines(data: bytes) -> bytes:
    """Base64 in 76-character lines, as ``base64.encodebytes`` (which loops in Python per line)."""
    if not data:
        return b""
    text = np.frombuffer(binascii.b2a_base64(data, newline=False), dtype="uint8")
    whole = len(text) - len(text) % BASE64_LINE_CHARS
    lines = np.empty((whole // BASE64_LINE_CHARS, BASE64_LINE_CHARS + 1), dtype="uint8")
    lines[:, :-1] = text[:whole].reshape(-1, BASE64_LINE_CHARS)
    lines[:, -1] = ord("\n")
    rest = text[whole:].tobytes()
    return lines.tobytes() + (rest + b"\n" if rest else b"")


def _binary2_rows(columns: Sequence[Column], arrays: Mapping[str, object], mask_bytes: int) -> memoryview:
    """The BINARY2 bytes of a chunk's rows. No null flags are set: NaN is a float's missing value."""
    n = len(next(iter(arrays.values())))
    parts = [_fixed_binary(np.zeros((n, mask_bytes), dtype="uint8"))]
    for c in columns:
        values = arrays[c.name]
        if c.dtype == "str":
            text = pc.fill_null(pa.array(values, type=pa.string()), "")
            if not pc.all(pc.string_is_ascii(text)).as_py():  # char is ASCII; non-ASCII text is rare
                text = pc.replace_substring_regex(text, "[^\\x00-\\x7f]", "?")
            parts.append(_fixed_binary(pc.binary_length(text).to_numpy().astype(">i4")))
            parts.append(text.cast(pa.binary()))
        elif c.dtype == "bool":
            parts.append(_fixed_binary(np.where(np.asarray(values, dtype=bool), b"T", b"F")))
        else:
            parts.append(_fixed_binary(np.asarray(values, dtype=FITS_DTYPES[c.dtype])))
    rows = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))
    offsets = np.frombuffer(rows.buffers()[1], dtype="int32")[rows.offset : rows.offset + len(rows) + 1]
    return memoryview(rows.buffers()[2])[offsets[0] : offsets[-1]]


def _fixed_binary(values: np.ndarray) -> pa.Array:
    """Each row's raw bytes (``values``: (n,) of any fixed itemsize, or (n, w) uint8) as a binary array."""
    values = np.ascontiguousarray(values)
    width = values.nbytes // len(values) if len(values) else 1
    array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(values)])
    return array.cast(pa.binary())


class ParquetWriter:
    def __init__(self, path: Path, columns: Sequence[Column], provenance: Mapping):
        self.columns = list(columns)
        fields = [
            pa.field(
                c.name, ARROW_TYPES[c.dtype], metadata={"unit": c.unit, "description": c.description, "ucd": c.ucd}
            )  # fmt: skip
            for c in columns
        ]
        metadata = {"skyloop": json.dumps(dict(provenance))} | {k: str(v) for k, v in provenance.items()}
        metadata |= _astropy_parquet_metadata(self.columns, provenance)
        self.schema = pa.schema(fields, metadata=metadata)
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")

    def write(self, arrays: Mapping[str, object]) -> None:
        self.writer.write_table(arrow_table(self.columns, arrays).cast(self.schema))

    def close(self, n_rows: int) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.close()


def _astropy_parquet_metadata(columns: Sequence[Column], provenance: Mapping) -> dict[str, str]:
    """The keys astropy's Parquet reader looks for: units, descriptions and meta (YAML), string widths."""
    metadata = {"table_meta_yaml": "\n".join(get_yaml_from_table(template_table(columns, provenance)))}
    metadata |= {f"table::len::{c.name}": str(c.width) for c in columns if c.dtype == "str"}
    return metadata


TABLE_WRITERS = {"csv": EcsvWriter, "fits": FitsWriter, "votable": VOTableWriter, "parquet": ParquetWriter}
