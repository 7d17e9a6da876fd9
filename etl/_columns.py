"""Column names of store exports, and cutting raw exports into columns.

Stores send the same eleven columns under English or Spanish names; inside
the product they always carry the Spanish names of `ventas_raw`. This module
holds those names (`map_header` matches a header against them), the Arrow
schema of a parsed chunk and the store table, plus the mechanics under
`etl.formats`: `line_chunks` cuts a CSV file into runs of whole lines,
`split_chunk` turns a run into string columns with one row per physical line
(quarantining lines that are not well formed), and `parquet_slices` with
`string_columns` do the same for a Parquet file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

if TYPE_CHECKING:
    import pyarrow.parquet as pq

__all__ = [
    "CANONICAL",
    "ENGLISH",
    "HEADER_NAMES",
    "OUTPUT_SCHEMA",
    "STORE_NAMES",
    "Header",
    "RawColumns",
    "line_bounds",
    "line_chunks",
    "map_header",
    "open_parquet",
    "parquet_slices",
    "split_chunk",
    "string_columns",
]

# The order stores write the columns in; the Spanish names are the product's.
CANONICAL: tuple[str, ...] = (
    "ubicacion_id",
    "fecha",
    "numero_factura",
    "producto_id",
    "cantidad",
    "precio_unitario",
    "monto_total",
    "descripcion",
    "hora_factura",
    "cliente_id",
    "nombre_ubicacion",
)
ENGLISH: tuple[str, ...] = (
    "location_id",
    "date",
    "invoice_number",
    "product_id",
    "quantity",
    "unit_price",
    "line_total",
    "description",
    "invoice_time",
    "customer_id",
    "location_name",
)
# Header name (either language, lower case) -> canonical name.
HEADER_NAMES: dict[str, str] = {
    **dict(zip(CANONICAL, CANONICAL, strict=True)),
    **dict(zip(ENGLISH, CANONICAL, strict=True)),
}

MONEY = pa.decimal128(18, 6)
OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("ubicacion_id", pa.int32(), nullable=False),
        pa.field("fecha", pa.date32(), nullable=False),
        pa.field("numero_factura", pa.string(), nullable=False),
        pa.field("producto_id", pa.string(), nullable=False),
        pa.field("cantidad", pa.int64(), nullable=False),
        pa.field("precio_unitario", MONEY, nullable=False),
        pa.field("monto_total", MONEY, nullable=False),
        pa.field("descripcion", pa.string(), nullable=False),
        pa.field("hora_factura", pa.string(), nullable=False),
        pa.field("cliente_id", pa.int64(), nullable=True),
        pa.field("nombre_ubicacion", pa.string(), nullable=False),
        pa.field("linea", pa.int64(), nullable=False),
    ]
)

# location_id -> (name as the source spells it, Spanish name).
STORE_NAMES: dict[int, tuple[str, str]] = {
    1: ("United Kingdom", "Reino Unido"),
    2: ("Germany", "Alemania"),
    3: ("France", "Francia"),
    4: ("EIRE", "Irlanda"),
    5: ("Spain", "España"),
    6: ("Netherlands", "Países Bajos"),
    7: ("Belgium", "Bélgica"),
    8: ("Switzerland", "Suiza"),
    9: ("Portugal", "Portugal"),
    10: ("Australia", "Australia"),
    11: ("Norway", "Noruega"),
    12: ("Italy", "Italia"),
    13: ("Channel Islands", "Islas del Canal"),
    14: ("Finland", "Finlandia"),
    15: ("Cyprus", "Chipre"),
    16: ("Sweden", "Suecia"),
}


@dataclass(frozen=True, slots=True)
class Header:
    """A header row read against the known column names.

    `columns` holds the canonical name of each field ('' if unknown);
    `language` is "en", "es" or "mixed".
    """

    columns: tuple[str, ...]
    language: str
    known: tuple[str, ...]
    missing: tuple[str, ...]
    repeated: tuple[str, ...]


def map_header(names: list[str]) -> Header:
    """Match header names (either language, any case, quotes and spaces
    around them ignored) to the canonical columns."""
    cleaned = [name.strip().strip('"').strip().lower() for name in names]
    columns = tuple(HEADER_NAMES.get(name, "") for name in cleaned)
    known = tuple(name for name in cleaned if name in HEADER_NAMES)
    language = "mixed"
    if all(name in ENGLISH for name in known):
        language = "en"
    elif all(name in CANONICAL for name in known):
        language = "es"
    return Header(
        columns=columns,
        language=language,
        known=known,
        missing=tuple(name for name in CANONICAL if name not in columns),
        repeated=tuple(sorted({c for c in columns if c and columns.count(c) > 1})),
    )


@dataclass(frozen=True, slots=True)
class RawColumns:
    """Well-formed lines of one chunk as string columns.

    `table` has one string column per canonical name; `rows[i]` is the
    0-based index, within the chunk, of the line that produced row `i`;
    `rejects` holds (line index, raw text, reason) for the other lines.
    """

    table: pa.Table
    rows: np.ndarray
    rejects: list[tuple[int, str, str]]


def line_chunks(
    handle: BinaryIO, size: int, rows: int, *, block: int = 1 << 20
) -> Iterator[tuple[bytes, int]]:
    """Read `size` bytes from `handle` as runs of `rows` whole lines.

    Yields (bytes, number of lines); every run but the last holds exactly
    `rows` lines, and the last line of the data may lack its line break.
    About one run is held in memory at a time.

    Raises:
        EOFError: the handle ended before `size` bytes.
    """
    pieces: list[bytes] = []
    counts: list[int] = []
    held = 0
    left = size

    while True:
        while held < rows and left > 0:
            piece = handle.read(min(block, left))
            if not piece:
                raise EOFError(f"{left} bytes missing")
            left -= len(piece)
            pieces.append(piece)
            # numpy counts line breaks several times faster than bytes.count.
            breaks = np.count_nonzero(np.frombuffer(piece, dtype=np.uint8) == 10)
            counts.append(int(breaks))
            held += counts[-1]

        if held < rows:
            data = b"".join(pieces)
            if data:
                yield data, held + (not data.endswith(b"\n"))
            return

        # The run ends inside the first piece that completes `rows` breaks.
        need, cut_at = rows, 0
        while counts[cut_at] < need:
            need -= counts[cut_at]
            cut_at += 1
        last = pieces[cut_at]
        view = np.frombuffer(last, dtype=np.uint8)
        cut = int(np.flatnonzero(view == 10)[need - 1]) + 1
        yield b"".join([*pieces[:cut_at], last[:cut]]), rows

        pieces = [last[cut:], *pieces[cut_at + 1 :]]
        counts = [counts[cut_at] - need, *counts[cut_at + 1 :]]
        held -= rows


def line_bounds(data: bytes, n_lines: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of the first `n_lines` lines of `data`.

    Ends exclude the line break (LF, or CRLF); a last line without a break
    ends at the end of `data`.
    """
    breaks = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)[:n_lines]
    ends = np.append(breaks, len(data))[:n_lines]
    starts = np.concatenate(([0], breaks + 1))[:n_lines]
    view = np.frombuffer(data, dtype=np.uint8)
    crlf = (ends > starts) & (view[np.maximum(ends - 1, 0)] == 13)
    return starts, ends - crlf


def split_chunk(
    data: bytes,
    n_lines: int,
    *,
    encoding: str,
    delimiter: str,
    names: tuple[str, ...],
) -> RawColumns:
    """Split `n_lines` whole CSV lines into string columns.

    `names` gives the canonical name of each field position of the header
    ('' for a column the product does not use). Every line must hold exactly
    `len(names)` fields; quoted fields may contain the delimiter and doubled
    quotes but not line breaks, so each row is exactly one physical line.

    The whole chunk is parsed by Arrow in one call; only when that finds a
    malformed line does it fall back to checking each line in Python, which
    costs time only in chunks that hold such a line.
    """
    wanted = [name for name in names if name]
    try:
        table = _parse(data, delimiter, names, wanted, encoding)
    except (UnicodeDecodeError, pa.ArrowInvalid):
        table = None

    if table is not None and table.num_rows == n_lines:
        return RawColumns(table, np.arange(n_lines, dtype=np.int64), [])
    return _split_by_line(data, n_lines, encoding, delimiter, names, wanted)


def _parse(
    text: bytes,
    delimiter: str,
    names: tuple[str, ...],
    wanted: list[str],
    encoding: str = "utf-8",
) -> pa.Table:
    # Other encodings are parsed as bytes and decoded column by column
    # afterwards: delimiters and quotes are ASCII in every encoding read
    # here, and most columns turn out to be pure ASCII.
    kind = pa.string() if encoding == "utf-8" else pa.binary()
    column_names = [name or f"_unused_{i}" for i, name in enumerate(names)]
    # No invalid-row handler: a malformed line makes Arrow raise, and the
    # caller then checks that chunk line by line.
    table = pacsv.read_csv(
        pa.py_buffer(text),
        read_options=pacsv.ReadOptions(column_names=column_names),
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter,
            newlines_in_values=False,
            ignore_empty_lines=False,
        ),
        convert_options=pacsv.ConvertOptions(
            include_columns=wanted,
            column_types=dict.fromkeys(wanted, kind),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    if encoding != "utf-8":
        decoded = [_decoded(column, encoding) for column in table.columns]
        table = pa.table(decoded, names=table.column_names)
    return table


def _decoded(column: pa.ChunkedArray, encoding: str) -> pa.ChunkedArray:
    """Binary values in a single-byte `encoding`, as strings.

    Raises:
        UnicodeDecodeError: a value holds a byte the encoding leaves undefined.
    """
    parts = []
    for chunk in column.chunks:
        _, offsets, data = chunk.buffers()
        high = np.flatnonzero(np.frombuffer(data or b"", dtype=np.uint8) >= 128)
        if not len(high):
            parts.append(chunk.view(pa.string()))
            continue

        bounds = np.frombuffer(offsets, dtype=np.int32)[chunk.offset :]
        rows = np.unique(np.searchsorted(bounds, high, side="right") - 1)
        rows = rows[(rows >= 0) & (rows < len(chunk))]
        if len(rows) > len(chunk) // 8:
            # Most values need decoding (a store name such as "España" on
            # every line): decode each distinct value once.
            codes = pc.dictionary_encode(chunk)
            words = [word.decode(encoding) for word in codes.dictionary.to_pylist()]
            parts.append(pc.take(pa.array(words, pa.string()), codes.indices))
            continue

        # A few values (a "£" here and there): decode just those.
        words = [chunk[int(row)].as_py().decode(encoding) for row in rows]
        mask = np.zeros(len(chunk), dtype=bool)
        mask[rows] = True
        marks = pa.array(mask)
        ascii_only = pc.if_else(marks, pa.scalar(None, pa.binary()), chunk)
        filled = pc.replace_with_mask(
            ascii_only.view(pa.string()), marks, pa.array(words, pa.string())
        )
        parts.append(filled)
    return pa.chunked_array(parts, pa.string())


def _split_by_line(
    data: bytes,
    n_lines: int,
    encoding: str,
    delimiter: str,
    names: tuple[str, ...],
    wanted: list[str],
) -> RawColumns:
    starts, ends = line_bounds(data, n_lines)
    good: list[int] = []
    texts: list[str] = []
    fields: list[list[str]] = []
    rejects: list[tuple[int, str, str]] = []

    for index in range(n_lines):
        raw = data[starts[index] : ends[index]]
        text, values, problem = _check_line(raw, encoding, delimiter, len(names))
        if problem is not None:
            rejects.append((index, text, problem))
            continue
        good.append(index)
        texts.append(text)
        fields.append(values)

    table = _columns_of(texts, fields, delimiter, names, wanted)
    return RawColumns(table, np.array(good, dtype=np.int64), rejects)


def _check_line(
    raw: bytes, encoding: str, delimiter: str, expected: int
) -> tuple[str, list[str], str | None]:
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        text = raw.decode(encoding, errors="replace")
        return text, [], f"byte {exc.start + 1} of the line is not valid {encoding}"

    if not text.strip():
        return text, [], "blank line"
    if text.count('"') % 2:
        reason = "a quoted field is not closed on this line (line breaks "
        return text, [], reason + "inside quoted fields are not supported)"
    try:
        values = next(csv.reader([text], delimiter=delimiter))
    except csv.Error as exc:
        return text, [], f"not valid CSV: {exc}"
    if len(values) != expected:
        reason = f"{len(values)} fields where the header has {expected}"
        return text, [], reason

    return text, values, None


def _columns_of(
    texts: list[str],
    fields: list[list[str]],
    delimiter: str,
    names: tuple[str, ...],
    wanted: list[str],
) -> pa.Table:
    # Re-parse the good lines with Arrow so a line yields the same values
    # whether its chunk took the fast path or not; Python's values are used
    # only if the two parsers disagree about a line.
    if texts:
        joined = "\n".join(texts).encode("utf-8")
        try:
            table = _parse(joined, delimiter, names, wanted)
        except pa.ArrowInvalid:
            table = None
        if table is not None and table.num_rows == len(texts):
            return table

    positions = {name: i for i, name in enumerate(names) if name}
    arrays = {
        name: pa.array([row[positions[name]] for row in fields], pa.string())
        for name in wanted
    }
    return pa.table(arrays)


def open_parquet(path: Path) -> pq.ParquetFile:
    """Open a Parquet export (pyarrow raises if it is not one)."""
    import pyarrow.parquet as pq  # costs ~0.2 s to import; most exports are CSV

    return pq.ParquetFile(path)


def parquet_slices(
    source: pq.ParquetFile, columns: tuple[str, ...], rows: int
) -> Iterator[pa.Table]:
    """The used columns of a Parquet export in slices of exactly `rows` rows.

    `columns` maps each column of the file to its canonical name ('' for
    unused). The last slice may be shorter.
    """
    names = source.schema_arrow.names
    wanted = [name for name, used in zip(names, columns, strict=True) if used]
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in source.iter_batches(batch_size=min(rows, 1 << 16), columns=wanted):
        held.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(held)
            held = table.slice(rows).to_batches()
            count -= rows
            yield table.slice(0, rows)
    if count:
        yield pa.Table.from_batches(held)


def string_columns(batch: pa.Table, names: tuple[str, ...]) -> pa.Table:
    """A Parquet slice as string columns under canonical names.

    `names` maps each column of the file to its canonical name, '' for the
    columns the slice leaves out. Dates and timestamps become yyyy-mm-dd,
    numbers their plain text, nulls empty strings: the row rules then judge
    them like the fields of a CSV line.
    """
    arrays = {}
    used = [name for name in names if name]
    for column, name in zip(batch.columns, used, strict=True):
        values = column
        if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
            values = pc.cast(values, pa.date32())
        if pa.types.is_dictionary(values.type):
            values = pc.cast(values, values.type.value_type)
        if not pa.types.is_string(values.type):
            values = pc.cast(values, pa.string())
        arrays[name] = pc.fill_null(values, "")
    return pa.table(arrays)
