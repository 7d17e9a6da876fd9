"""Reading ahead: export files parsed in a thread, a few chunks in front.

The loader's write lease is then held only while chunks are inserted, not
while they are parsed.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .errors import FileRejected
from .formats import detect_format, file_sha256, read_export
from .report import FileReport

_PARSE_AHEAD = 3
# How long the reader waits for the parser before it reports being idle.
_IDLE_TICK = 0.1


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, and every export file below each folder, sorted."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in (".csv", ".parquet", ".txt")
            )
        elif path.is_file():
            found.append(path)
        elif path.exists():
            # A pipe or a device would block the load, lease held, forever.
            raise FileNotFoundError(f"{path}: not a regular file; give export files")
        else:
            raise FileNotFoundError(f"{path}: no such file or folder to load")
    return found


@dataclass
class Known:
    """What the file already holds about one source file."""

    chunk_rows: int
    loaded: set[int]
    #: the file's (store, day) is recorded: it was read to its end once
    day_recorded: bool = False
    #: a correction replaced it: nothing more of it loads
    replaced: bool = False


def parse_ahead(
    reports: list[FileReport],
    known: Mapping[str, Known],
    *,
    chunk_rows: int,
    force: dict[str, str] | None,
    options: dict[str, Any],
) -> Iterator[tuple[FileReport | None, Any]]:
    """Yield (report, item) per chunk, then (report, "end") or a rejection.

    While the parser has nothing new for `_IDLE_TICK` seconds, (None,
    "idle") comes instead, so the caller holding the file can give it up.

    An item is (chunk_rows, ParsedChunk, (store, day) of its rows or None).
    Each file's hash goes into its report's `sha256`; a thread of its own
    hashes the files in order, ahead of the parser, which needs a file's
    hash before it starts on it (hashing is I/O and C code: the two
    overlap). Files already seen keep the chunk size they were first loaded
    with, so their chunks line up again. An error other than a bad file
    stops the parsing and is raised here, to the caller.
    """
    out: queue.Queue[tuple[FileReport, Any] | None] = queue.Queue(_PARSE_AHEAD)
    stop = threading.Event()
    failed: list[BaseException] = []

    def produce() -> None:
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="etl-hash") as hasher:
                hashes = [hasher.submit(_hash, r) for r in reports]
                for report, hashed in zip(reports, hashes, strict=True):
                    if stop.is_set():
                        for pending in hashes:
                            pending.cancel()
                        return
                    unreadable, hashed_as = hashed.result()
                    if unreadable is not None:
                        out.put((report, unreadable))
                        continue
                    _parse_file(
                        report, hashed_as, known, chunk_rows, force, options, out
                    )
        except BaseException as exc:  # noqa: BLE001 - raised again by the reader
            # Not a bad file (those arrive as FileRejected items) but a bug
            # or a broken machine: the load must stop with it, not end
            # quietly with the rest of the files unread.
            failed.append(exc)
        finally:
            out.put(None)

    thread = threading.Thread(target=produce, name="etl-parse", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = out.get(timeout=_IDLE_TICK)
            except queue.Empty:
                yield None, "idle"  # the parser is slow: the caller may yield
                continue
            if item is None:
                break
            yield item
        if failed:
            raise failed[0]
    finally:
        stop.set()
        while thread.is_alive():
            try:
                out.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def _hash(report: FileReport) -> tuple[FileRejected | None, tuple[int, int]]:
    """Set the report's `sha256` (kept if already set), or say why not.

    Returns the error, if any, and the file's (size, mtime) as hashed, so
    the parser can tell whether the file changed since.
    """
    try:
        before = _signature(report.path)
        if not report.sha256:
            report.sha256 = file_sha256(report.path)
        return None, before
    except FileRejected as exc:
        return exc, (0, 0)


def _signature(path: str) -> tuple[int, int]:
    try:
        facts = os.stat(path)
    except OSError as exc:
        reason = f"cannot be read ({exc.strerror}): check the file and retry"
        raise FileRejected(path, reason) from exc
    return facts.st_size, facts.st_mtime_ns


def _parse_file(
    report: FileReport,
    hashed_as: tuple[int, int],
    known: Mapping[str, Known],
    chunk_rows: int,
    force: dict[str, str] | None,
    options: dict[str, Any],
    out: queue.Queue[tuple[FileReport, Any] | None],
) -> None:
    try:
        if _signature(report.path) != hashed_as:
            # Rewritten since it was hashed: hash what is there now, so the
            # rows are never recorded under another content's identity.
            report.sha256 = ""
            error, hashed_as = _hash(report)
            if error is not None:
                raise error
        seen = known.get(report.sha256)
        size = seen.chunk_rows if seen else chunk_rows
        fmt = detect_format(report.path, force=force)
        report.format = fmt.describe()
        last = None
        for last in read_export(report.path, fmt=fmt, chunk_rows=size, **options):
            out.put((report, (size, last, store_day_of(last.table))))
        if _signature(report.path) != hashed_as:
            raise FileRejected(
                report.path,
                "the file changed while it was being loaded; rerun once the"
                " store has finished writing it (what loaded of this version"
                " is replaced by the complete one)",
            )
        if last is not None and _cut_short(report.path, last):
            raise FileRejected(
                report.path,
                "the file ends in the middle of a row (no final line end,"
                " and its last line is malformed): it was cut short in"
                " transfer; send the whole file again",
                line=last.last_line,
            )
    except FileRejected as exc:
        out.put((report, exc))
        return
    out.put((report, "end"))


def store_day_of(table: pa.Table) -> tuple[int, Any] | None:
    """The one (store, day) of a chunk's rows, or None if it has several."""
    if table.num_rows == 0:
        return None
    stores = pc.min_max(table["ubicacion_id"])
    days = pc.min_max(table["fecha"])
    if stores["min"] != stores["max"] or days["min"] != days["max"]:
        return None
    return int(stores["min"].as_py()), days["min"].as_py()


def _cut_short(path: str, last: Any) -> bool:
    """A last line that is both unterminated and malformed: a cut transfer."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        if handle.tell() == 0:
            return False
        handle.seek(-1, 2)
        if handle.read(1) in (b"\n", b"\r"):
            return False
    return any(bad.line == last.last_line for bad in last.rejected)
