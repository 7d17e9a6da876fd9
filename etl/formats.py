"""Reading store export files, in every shape the stores send them.

`detect_format` settles, once per file and from the file's own bytes, how it
is written: encoding (UTF-8 with or without BOM, or Windows-1252), delimiter,
decimal mark, header language, date format and line ends. `read_export` then
streams the rows in chunks of exactly `chunk_rows` data rows, as Arrow tables
typed like `ventas_raw`, quarantining every row that breaks a rule of
`etl.validate` together with its line number, raw text and a reason.

Chunk `k` always holds data lines `2 + k * chunk_rows` onwards, whatever is
in them, so a chunk is a pure function of (file bytes, chunk_rows): the
loader uses (file sha256, chunk index, chunk_rows) as a batch's identity.

A file that cannot be read at all raises `FileRejected` before its first
chunk (the whole-file checks, bytes and header, live beside that error in
`etl.errors`); no Arrow, codec or OS error reaches the caller. Parquet files
(`.parquet`) are read too, with either header language; their "line" numbers
are row numbers plus one, as if a header line came first.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from etl._columns import (
    CANONICAL,
    line_bounds,
    line_chunks,
    open_parquet,
    parquet_slices,
    split_chunk,
    string_columns,
)
from etl.defaults import DEFAULT_CHUNK_ROWS
from etl.errors import (
    EtlError,
    FileFacts,
    FileRejected,
    check_header,
    header_fields,
    pick_delimiter,
    scan_file,
)
from etl.validate import (
    DATE_FORMATS,
    DATE_WORDS,
    DEFAULT_STORES,
    DEFAULT_TOLERANCE,
    RowRules,
    check_rows,
    guess_date_format,
    guess_decimal,
)

if TYPE_CHECKING:
    import pyarrow.parquet as pq

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "EtlError",
    "ExportFormat",
    "FileRejected",
    "ParsedChunk",
    "RejectedRow",
    "check_force",
    "detect_format",
    "file_sha256",
    "file_store_day",
    "read_export",
]

# One DuckDB row group: a chunk this size is written straight to the file.
_SAMPLE_BYTES = 1 << 16
_IN_FLIGHT = 2
_FORCEABLE = {
    "encoding": ("utf-8", "cp1252"),
    "decimal": (".", ","),
    "date_format": tuple(DATE_FORMATS),
}


@dataclass(frozen=True, slots=True)
class ExportFormat:
    """How one export file is written; see `detect_format`.

    `columns` gives, per field of the header, its canonical (Spanish) name,
    or '' for a column the product ignores. `notes` record guesses and
    forced choices; they do not change how the file is read.
    """

    kind: str = "csv"
    encoding: str = "utf-8"
    bom: bool = False
    delimiter: str = ","
    decimal: str = "."
    header: str = "en"
    date_format: str = "iso"
    newline: str = "\n"
    columns: tuple[str, ...] = CANONICAL
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for reports, e.g. "csv cp1252, ';' separated, ..."."""
        language = {"en": "English", "es": "Spanish"}.get(self.header, "mixed")
        days = f"{DATE_WORDS[self.date_format]} dates"
        if self.kind == "parquet":
            parts = ["parquet", f"{language} header", days]
        else:
            ends = "CRLF" if self.newline == "\r\n" else "LF"
            parts = [
                f"csv {self.encoding}{' with BOM' if self.bom else ''}",
                f"{self.delimiter!r} separated",
                f"decimal {self.decimal!r}",
                f"{language} header",
                days,
                f"{ends} line ends",
            ]
        text = ", ".join(parts)
        return f"{text} ({'; '.join(self.notes)})" if self.notes else text

    def without_notes(self) -> ExportFormat:
        """The same format with its notes dropped, for comparisons."""
        return replace(self, notes=())


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A quarantined data row: its physical line, raw text and why."""

    line: int
    raw: str
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedChunk:
    """One chunk of an export.

    Attributes:
        index: 0-based position of the chunk in the file.
        first_line, last_line: physical lines it covers; the header is line
            1, so chunk 0 starts at line 2.
        rows_read: data rows in the chunk, `last_line - first_line + 1`.
        table: the good rows, in `etl._columns.OUTPUT_SCHEMA`.
        rejected: the other rows, by line; `rows_read == table.num_rows +
            len(rejected)` always holds.
    """

    index: int
    first_line: int
    last_line: int
    rows_read: int
    table: pa.Table
    rejected: tuple[RejectedRow, ...]


def detect_format(
    path: Path | str, *, force: Mapping[str, str] | None = None
) -> ExportFormat:
    """Settle how an export file is written, from its bytes and header.

    Args:
        path: a CSV file (any suffix but `.parquet`) or a Parquet file.
        force: fields to take as given rather than detect: `encoding`
            ("utf-8" or "cp1252"), `delimiter` (one character), `decimal`
            ("." or ",") and `date_format` ("iso" = yyyy-mm-dd, "dmy" =
            dd/mm/yyyy, "mdy" = mm/dd/yyyy). Header, BOM and line ends are
            always read from the file.

    Returns:
        The format; `describe()` summarises it and `notes` say which
        choices were guesses, e.g. dates that were all ambiguous.

    Raises:
        FileRejected: the file cannot be read as an export at all.
        ValueError: an unknown key or value in `force`.
    """
    forced = check_force(force or {})
    path = Path(path)
    if _is_parquet(path):
        return _detect_parquet(path, forced)
    return _detect_csv(path, scan_file(path), forced)


def read_export(
    path: Path | str,
    *,
    fmt: ExportFormat | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    window: tuple[date, date] | None = None,
    stores: Iterable[int] = DEFAULT_STORES,
    tolerance: Decimal | str = DEFAULT_TOLERANCE,
) -> Iterator[ParsedChunk]:
    """Stream an export file as validated chunks.

    The file is checked, and its format detected unless `fmt` is given,
    before this returns, so `FileRejected` comes from the call itself; only
    a file that changes or a disk that fails mid-read, or a Parquet file
    damaged inside, can raise it between chunks. A file holding only its
    header yields no chunk. Up to two chunks are parsed ahead on worker
    threads, so memory follows the chunk size, not the file size.

    Args:
        path: the export file.
        fmt: its format, e.g. from `detect_format(path, force=...)`.
        chunk_rows: data rows per chunk; only the last chunk may be shorter.
        window: first and last accepted day, inclusive; by default
            2000-01-01 to tomorrow, as of this call.
        stores: accepted store ids.
        tolerance: how far a line total may be from quantity x unit price;
            0.01 by default.

    Raises:
        FileRejected: the file cannot be read at all.
        ValueError: chunk_rows below 1, or invalid rules.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    rules = RowRules.build(stores=stores, window=window, tolerance=tolerance)
    path = Path(path)

    if _is_parquet(path):
        fmt = fmt or _detect_parquet(path, {})
        return _parquet_chunks(path, fmt, chunk_rows, rules)
    facts = scan_file(path)
    fmt = fmt or _detect_csv(path, facts, {})
    return _csv_chunks(path, fmt, facts, chunk_rows, rules)


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks.

    Raises:
        FileRejected: the file cannot be opened.
    """
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise FileRejected(path, f"cannot be read ({exc.strerror})") from exc


def file_store_day(
    path: Path | str, *, fmt: ExportFormat | None = None
) -> tuple[int, date] | None:
    """The (store, day) shared by all good rows of a file, read from them.

    Used to recognise a corrected re-send of a store-day file. None when the
    good rows span several stores or days, or there are none.

    Raises:
        FileRejected: the file cannot be read at all.
    """
    seen: set[tuple[int, date]] = set()
    for chunk in read_export(path, fmt=fmt):
        keys = chunk.table.group_by(["ubicacion_id", "fecha"]).aggregate([])
        stores, days = keys["ubicacion_id"].to_pylist(), keys["fecha"].to_pylist()
        seen.update(zip(stores, days, strict=True))
        if len(seen) > 1:
            return None
    return next(iter(seen)) if seen else None


def check_force(force: Mapping[str, str]) -> dict[str, str]:
    """The forced format fields, checked; ValueError names a wrong one."""
    allowed = {*_FORCEABLE, "delimiter"}
    for key, value in force.items():
        if key not in allowed:
            raise ValueError(f"cannot force {key!r}; choose from {sorted(allowed)}")
        choices = _FORCEABLE.get(key)
        if choices is not None and value not in choices:
            raise ValueError(f"{key} must be one of {choices}, got {value!r}")
        if key == "delimiter" and (len(value) != 1 or value in '"\r\n'):
            raise ValueError(f"delimiter must be one character, got {value!r}")
    return dict(force)


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def _detect_csv(path: Path, facts: FileFacts, forced: dict[str, str]) -> ExportFormat:
    encoding = forced.get("encoding") or facts.encoding or "utf-8"
    raw_header = facts.header.removeprefix(codecs.BOM_UTF8)
    text = raw_header.decode(encoding, errors="replace")
    delimiter = forced.get("delimiter") or pick_delimiter(path, text)
    try:
        columns, language = check_header(path, header_fields(path, text, delimiter))
    except FileRejected as exc:
        if "delimiter" not in forced and "encoding" not in forced:
            raise
        # The header may be fine and the forced field wrong: say so.
        shown = ", ".join(f"{k}={v!r}" for k, v in sorted(forced.items()))
        reason = f"{exc.reason} (read with the forced {shown}: drop --format to detect)"
        raise FileRejected(path, reason, line=exc.line) from exc

    with open(path, "rb") as handle:
        handle.seek(facts.header_end)
        size = min(_SAMPLE_BYTES, facts.data_end - facts.header_end)
        sample = handle.read(size)
    if size < facts.data_end - facts.header_end:
        sample = sample[: sample.rfind(b"\n") + 1]
    lines = sample.decode(encoding, errors="replace").splitlines()
    rows = _sample_rows(lines, delimiter, len(columns))

    notes = []
    if facts.encoding_note and "encoding" not in forced:
        notes.append(facts.encoding_note)
    decimal, date_format = _guess_values(rows, columns, delimiter, forced, notes)
    notes += [f"{key} forced to {value!r}" for key, value in forced.items()]
    return ExportFormat(
        kind="csv",
        encoding=encoding,
        bom=facts.bom,
        delimiter=delimiter,
        decimal=decimal,
        header=language,
        date_format=date_format,
        newline="\r\n" if facts.crlf else "\n",
        columns=columns,
        notes=tuple(notes),
    )


def _sample_rows(lines: list[str], delimiter: str, width: int) -> list[list[str]]:
    rows = []
    for line in lines:
        try:
            row = next(csv.reader([line], delimiter=delimiter), [])
        except csv.Error:
            continue
        if len(row) == width:
            rows.append(row)
    return rows


def _guess_values(
    rows: list[list[str]],
    columns: tuple[str, ...],
    delimiter: str,
    forced: dict[str, str],
    notes: list[str],
) -> tuple[str, str]:
    def values(*names: str) -> list[str]:
        picked = [columns.index(name) for name in names if name in columns]
        return [row[i] for row in rows for i in picked]

    decimal, note = guess_decimal(values("precio_unitario", "monto_total"), delimiter)
    if "decimal" in forced:
        decimal, note = forced["decimal"], None
    notes += [note] if note else []
    date_format, note = guess_date_format(values("fecha"))
    if "date_format" in forced:
        date_format, note = forced["date_format"], None
    notes += [note] if note else []
    return decimal, date_format


def _detect_parquet(path: Path, forced: dict[str, str]) -> ExportFormat:
    source = _open_parquet(path)
    columns, language = check_header(path, list(source.schema_arrow.names))
    pair = ("fecha", "precio_unitario")
    head = next(_parquet_slices(path, source, columns, 2_000), None)
    rows: list[list[str]] = []
    if head is not None:
        text = string_columns(head, columns).select(list(pair))
        rows = [list(values) for values in zip(*text.to_pydict().values(), strict=True)]

    notes: list[str] = []
    decimal, date_format = _guess_values(rows, pair, ",", forced, notes)
    notes += [f"{key} forced to {value!r}" for key, value in forced.items()]
    return ExportFormat(
        kind="parquet",
        header=language,
        decimal=decimal,
        date_format=date_format,
        newline="",
        columns=columns,
        notes=tuple(notes),
    )


def _csv_chunks(
    path: Path,
    fmt: ExportFormat,
    facts: FileFacts,
    chunk_rows: int,
    rules: RowRules,
) -> Iterator[ParsedChunk]:
    # Chunks are parsed and checked on worker threads, at most _IN_FLIGHT at
    # a time, so the next chunk is ready while the caller loads this one;
    # Arrow and numpy release the GIL for nearly all of that work.
    pending: deque[Future[ParsedChunk]] = deque()
    with open(path, "rb") as handle, ThreadPoolExecutor(_IN_FLIGHT) as pool:
        handle.seek(facts.header_end)
        pieces = line_chunks(handle, facts.data_end - facts.header_end, chunk_rows)
        try:
            for index, (data, count) in enumerate(pieces):
                first = 2 + index * chunk_rows
                job = pool.submit(_csv_chunk, index, first, data, count, fmt, rules)
                pending.append(job)
                if len(pending) >= _IN_FLIGHT:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except EOFError:
            reason = "the file shrank while it was read: wait until it is complete"
            raise FileRejected(path, reason) from None
        except OSError as exc:
            reason = f"could not be read ({exc.strerror}): check the disk and retry"
            raise FileRejected(path, reason) from exc
        finally:
            for job in pending:
                job.cancel()


def _csv_chunk(
    index: int, first: int, data: bytes, count: int, fmt: ExportFormat, rules: RowRules
) -> ParsedChunk:
    split = split_chunk(
        data, count, encoding=fmt.encoding, delimiter=fmt.delimiter, names=fmt.columns
    )
    rejected = [RejectedRow(first + i, raw, why) for i, raw, why in split.rejects]

    def raw_lines(rows: np.ndarray) -> list[str]:
        starts, ends = line_bounds(data, count)
        return [
            data[starts[i] : ends[i]].decode(fmt.encoding, errors="replace")
            for i in rows
        ]

    return _chunk(
        index, first, count, split.table, split.rows, rejected, fmt, rules, raw_lines
    )


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return open_parquet(path)
    except (OSError, pa.ArrowException) as exc:
        reason = f"is not a readable Parquet file ({exc}); re-export it"
        raise FileRejected(path, reason) from exc


def _parquet_slices(
    path: Path, source: pq.ParquetFile, columns: tuple[str, ...], rows: int
) -> Iterator[pa.Table]:
    try:
        yield from parquet_slices(source, columns, rows)
    except (OSError, pa.ArrowException) as exc:
        reason = f"is a damaged Parquet file ({exc}); re-export it"
        raise FileRejected(path, reason) from exc


def _parquet_chunks(
    path: Path, fmt: ExportFormat, chunk_rows: int, rules: RowRules
) -> Iterator[ParsedChunk]:
    source = _open_parquet(path)
    slices = _parquet_slices(path, source, fmt.columns, chunk_rows)
    for index, part in enumerate(slices):
        first = 2 + index * chunk_rows
        yield _parquet_chunk(
            index, first, string_columns(part, fmt.columns), fmt, rules
        )


def _parquet_chunk(
    index: int, first: int, raw: pa.Table, fmt: ExportFormat, rules: RowRules
) -> ParsedChunk:
    def raw_lines(rows: np.ndarray) -> list[str]:
        picked = raw.take(pa.array(rows)).to_pylist()
        return [",".join(row[name] for name in CANONICAL) for row in picked]

    rows = np.arange(raw.num_rows, dtype=np.int64)
    return _chunk(index, first, raw.num_rows, raw, rows, [], fmt, rules, raw_lines)


def _chunk(
    index: int,
    first: int,
    count: int,
    raw: pa.Table,
    rows: np.ndarray,
    rejected: list[RejectedRow],
    fmt: ExportFormat,
    rules: RowRules,
    raw_lines: Callable[[np.ndarray], list[str]],
) -> ParsedChunk:
    checked = check_rows(
        raw, first + rows, date_format=fmt.date_format, decimal=fmt.decimal, rules=rules
    )
    if checked.rejects:
        positions = np.array([position for position, _ in checked.rejects])
        texts = raw_lines(rows[positions])
        for (position, reason), text in zip(checked.rejects, texts, strict=True):
            rejected.append(RejectedRow(first + int(rows[position]), text, reason))
        rejected.sort(key=lambda row: row.line)

    return ParsedChunk(
        index=index,
        first_line=first,
        last_line=first + count - 1,
        rows_read=count,
        table=checked.table,
        rejected=tuple(rejected),
    )
