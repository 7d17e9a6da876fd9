"""Errors of the ETL's input side, and the checks that refuse whole files.

Everything the ETL raises on purpose derives from `EtlError`:

    EtlError
    └── FileRejected      a whole export file cannot be read (empty, binary,
                          cut short, wrong header, undecodable bytes)

`scan_file` is the one pass over a CSV export's bytes that decides the
byte-level refusals before any row is read; what it learns on the way
(encoding, BOM, line ends, where header and data end) is handed to format
detection in `etl.formats`, which then checks the header with
`pick_delimiter`, `header_fields` and `check_header`.

Rows that merely break a rule are never raised: `etl.formats.read_export`
quarantines them with a reason.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from etl._columns import CANONICAL, ENGLISH, map_header

__all__ = [
    "EtlError",
    "FileFacts",
    "FileRejected",
    "check_header",
    "header_fields",
    "pick_delimiter",
    "scan_file",
]

_BLOCK = 1 << 22
# The five bytes Windows-1252 leaves undefined.
_CP1252_HOLES = tuple(bytes([byte]) for byte in (0x81, 0x8D, 0x8F, 0x90, 0x9D))
_EXPECTED = (
    f"expected the English header {','.join(ENGLISH)} "
    f"or the Spanish one {','.join(CANONICAL)}"
)


class EtlError(Exception):
    """Root of every error the ETL raises deliberately."""


class FileRejected(EtlError):
    """A whole export file was refused before any of its rows were loaded.

    Attributes:
        path: the file that was refused.
        reason: what is wrong with it and, where there is one, the fix.
        line: the 1-based physical line where the problem was found, if known.
    """

    def __init__(self, path: Path | str, reason: str, *, line: int | None = None):
        self.path = Path(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}" if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the keyword-only line number when the error crosses a process
        # boundary (the loader runs workers in subprocesses).
        return (_rebuild, (str(self.path), self.reason, self.line))


def _rebuild(path: str, reason: str, line: int | None) -> FileRejected:
    return FileRejected(path, reason, line=line)


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What `scan_file` learnt about a CSV export's bytes.

    `header` is line 1 without its line break; data runs from `header_end`
    to `data_end` (blank lines at the end of the file are left out).
    `encoding` is "utf-8" or "cp1252"; `encoding_note` explains a UTF-8 file
    holding stray non-UTF-8 bytes.
    """

    bom: bool
    crlf: bool
    encoding: str
    encoding_note: str | None
    header: bytes
    header_end: int
    data_end: int


@contextmanager
def _opened(path: Path) -> Iterator[BinaryIO]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - the with below closes it
    except OSError as exc:
        reason = f"cannot be opened ({exc.strerror}): check the path and permissions"
        raise FileRejected(path, reason) from exc
    with handle:
        try:
            yield handle
        except OSError as exc:
            reason = f"could not be read ({exc.strerror}): check the disk and retry"
            raise FileRejected(path, reason) from exc


# A well-formed multi-byte UTF-8 character; in cp1252 text such byte pairs
# would be mojibake like "Ã±", which real exports do not contain.
_UTF8_SEQUENCE = re.compile(
    rb"[\xC2-\xDF][\x80-\xBF]|[\xE0-\xEF][\x80-\xBF]{2}|[\xF0-\xF4][\x80-\xBF]{3}"
)


def scan_file(path: Path) -> FileFacts:
    """Read a CSV export once, end to end, and refuse it if it is unreadable.

    Refused: a missing or unreadable file, an empty or blank one, UTF-16,
    NUL bytes (binary), a first line over 4 MiB, a last line that ends
    inside a quoted field (the file was cut short), and bytes that are
    neither UTF-8 nor Windows-1252. UTF-8 text with a few stray bytes is
    kept as UTF-8; the lines holding them are quarantined later.

    Raises:
        FileRejected: naming the file, the line where known, and the fix.
    """
    with _opened(path) as handle:
        first = handle.read(_BLOCK)
        if not first:
            reason = "is empty (0 bytes): ask the store to export it again"
            raise FileRejected(path, reason)
        if first[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            raise FileRejected(path, "is UTF-16 text: re-save it as UTF-8 CSV", line=1)

        decoder = codecs.getincrementaldecoder("utf-8")()
        bad_at: int | None = None
        multibyte = False
        offset = text_end = 0
        block = first
        while block:
            if (nul := block.find(b"\x00")) >= 0:
                reason = (
                    "holds NUL bytes, so it is binary or UTF-16, not a CSV "
                    "export; re-export it as UTF-8 CSV"
                )
                raise FileRejected(path, reason, line=_line_at(path, offset + nul))
            if bad_at is None:
                bad_at, seen = _utf8_check(decoder, block, offset)
                multibyte = multibyte or seen
            if bad_at is not None and not multibyte:
                # A stray byte may come before the file's real UTF-8 text:
                # look on, so the file is not decoded whole as cp1252.
                multibyte = _UTF8_SEQUENCE.search(block) is not None
            if not block.isspace():
                text_end = offset + len(block.rstrip())
            offset += len(block)
            block = handle.read(_BLOCK)
        if bad_at is None and decoder.getstate()[0]:
            bad_at = offset - len(decoder.getstate()[0])

        if not text_end:
            reason = "holds only blank lines: ask the store to export it again"
            raise FileRejected(path, reason)
        header_end = first.find(b"\n") + 1 or len(first)
        if b"\n" not in first and len(first) < offset:
            reason = "line 1 is longer than 4 MiB: this is not a CSV export"
            raise FileRejected(path, reason, line=1)
        data_end = _line_end(handle, text_end, offset) if text_end > header_end else 0

    facts = FileFacts(
        bom=first.startswith(codecs.BOM_UTF8),
        crlf=first[:header_end].endswith(b"\r\n"),
        encoding="utf-8",
        encoding_note=None,
        header=first[:header_end].rstrip(b"\r\n"),
        header_end=header_end,
        data_end=max(data_end, header_end),
    )
    _check_last_line(path, facts)
    if bad_at is None:
        return facts
    return _settle_encoding(path, facts, bad_at, multibyte or facts.bom)


def _utf8_check(
    decoder: codecs.IncrementalDecoder, block: bytes, offset: int
) -> tuple[int | None, bool]:
    """Feed the non-ASCII parts of `block` to a UTF-8 decoder.

    Returns the file offset of the first invalid byte (or None) and whether
    a valid multi-byte character was seen before it.
    """
    step = 1 << 16
    seen = False
    for start in range(0, len(block), step):
        part = block[start : start + step]
        if part.isascii() and not decoder.getstate()[0]:
            continue
        try:
            decoder.decode(part)
        except UnicodeDecodeError as exc:
            return offset + start + exc.start, seen or not part[: exc.start].isascii()
        seen = True
    return None, seen


def _line_end(handle: BinaryIO, position: int, size: int) -> int:
    """Offset just past the line break that ends the line holding position-1."""
    handle.seek(position)
    while position < size:
        piece = handle.read(1 << 16)
        found = piece.find(b"\n")
        if found >= 0:
            return position + found + 1
        position += len(piece)
    return size


def _line_at(path: Path, offset: int) -> int:
    """1-based line number of the byte at `offset` (used on error paths)."""
    breaks = 0
    with open(path, "rb") as handle:
        while offset > 0 and (block := handle.read(min(_BLOCK, offset))):
            breaks += block.count(b"\n")
            offset -= len(block)
    return breaks + 1


def _check_last_line(path: Path, facts: FileFacts) -> None:
    if facts.data_end <= facts.header_end:
        return
    with open(path, "rb") as handle:
        span = 1 << 16
        while True:
            start = max(facts.header_end, facts.data_end - span)
            handle.seek(start)
            tail = handle.read(facts.data_end - start)
            begin = tail.rfind(b"\n", 0, len(tail) - 1) + 1
            if begin or start == facts.header_end:
                break
            span *= 4
    if tail[begin:].count(b'"') % 2:
        reason = (
            "the file ends inside a quoted field, so it was cut short; "
            "ask the store to send the complete export"
        )
        raise FileRejected(path, reason, line=_line_at(path, start + begin))


def _settle_encoding(
    path: Path, facts: FileFacts, bad_at: int, utf8_seen: bool
) -> FileFacts:
    if utf8_seen:
        # Real UTF-8 text with a few stray bytes: keep UTF-8, and let the
        # lines holding those bytes be quarantined one by one.
        line = _line_at(path, bad_at)
        note = f"line {line} has bytes that are not UTF-8; such lines are quarantined"
        return replace(facts, encoding_note=note)

    with open(path, "rb") as handle:
        offset = 0
        while block := handle.read(_BLOCK):
            found = [at for byte in _CP1252_HOLES if (at := block.find(byte)) >= 0]
            if found:
                byte = block[min(found)]
                reason = (
                    f"byte 0x{byte:02X} is neither UTF-8 nor Windows-1252 text; "
                    "re-export the file as UTF-8"
                )
                line = _line_at(path, offset + min(found))
                raise FileRejected(path, reason, line=line)
            offset += len(block)
    return replace(facts, encoding="cp1252")


def header_fields(path: Path, text: str, delimiter: str) -> list[str]:
    """The fields of line 1 (decoded, without its line break).

    Raises:
        FileRejected: line 1 holds a bare carriage return or is not CSV.
    """
    if "\r" in text:
        reason = (
            "line 1 holds a bare carriage return (old Mac line ends?); "
            "re-save the file with LF or CRLF line ends"
        )
        raise FileRejected(path, reason, line=1)
    try:
        return next(csv.reader([text], delimiter=delimiter))
    except csv.Error as exc:
        reason = f"line 1 is not a readable CSV header ({exc}); {_EXPECTED}"
        raise FileRejected(path, reason, line=1) from None


def pick_delimiter(path: Path, header: str) -> str:
    """',' or ';', whichever line 1 holds more of.

    Raises:
        FileRejected: line 1 holds neither, so it is no header.
    """
    commas, semicolons = header.count(","), header.count(";")
    if commas or semicolons:
        return ";" if semicolons > commas else ","
    reason = f"line 1 has no ',' or ';' separator, so it is not a header; {_EXPECTED}"
    raise FileRejected(path, reason, line=1)


def check_header(path: Path, names: list[str]) -> tuple[tuple[str, ...], str]:
    """Canonical name per header field ('' if unused) and header language.

    Raises:
        FileRejected: a required column is missing or named twice, or
            line 1 is no header at all.
    """
    header = map_header(names)
    if header.repeated:
        reason = f"header names {', '.join(header.repeated)} more than once; keep one"
        raise FileRejected(path, reason, line=1)
    if header.missing and not header.known:
        shown = ",".join(names)[:80]
        reason = f"line 1 is not a recognised header (found {shown!r}); {_EXPECTED}"
        raise FileRejected(path, reason, line=1)
    if header.missing:
        english = [ENGLISH[CANONICAL.index(name)] for name in header.missing]
        reason = (
            f"header lacks required columns {', '.join(english)} "
            f"({', '.join(header.missing)} in Spanish); {_EXPECTED}"
        )
        raise FileRejected(path, reason, line=1)
    return header.columns, header.language
