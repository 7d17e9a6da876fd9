"""Load store exports into `ventas_raw`, chunk by chunk, exactly once.

One loader works through its files in order. A thread parses ahead into a
small queue, so the write lease is held only while chunks are inserted.
The lease is kept across chunks and files while nobody waits for the file,
and given back between chunks as soon as someone does: an idle backend
costs the load nothing and a busy one waits at most one chunk.

Exactly once: a chunk's rows, its quarantined rows and its `etl_batches`
record commit in one fenced transaction. The batch identity is the file's
content hash and the chunk's position (the chunk size is recorded with the
file on its first load and reused on every rerun), so rerunning a file or
resuming after a crash skips what committed and loads the rest.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from lockmanager import DuckDBWriteLockManager, Lease, Mode, Priority

from .errors import FileRejected
from .formats import detect_format, file_sha256, read_export
from .schema import ensure_sales_schema

log = logging.getLogger("etl.loader")

# One DuckDB row group: chunks this large go straight to the file.
DEFAULT_CHUNK_ROWS = 122_880
# A write turn lasts at least this long before it yields to a waiter, so
# small chunks (a small store's day) do not pay a file open per chunk. It
# bounds how long the backend waits: one turn, not one file.
DEFAULT_MIN_TURN = 0.25
_PARSE_AHEAD = 3


@dataclass
class FileReport:
    """What happened to one file; `reconciled` checks its row accounting."""

    path: str
    sha256: str = ""
    format: str = ""
    status: str = "pending"  # loaded | skipped | rejected
    reason: str = ""
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0
    chunks: int = 0
    store_day: tuple[int, Any] | None = None
    replaces: str = ""

    @property
    def reconciled(self) -> bool:
        accounted = self.rows_loaded + self.rows_rejected + self.rows_skipped
        return self.rows_read == accounted


@dataclass
class LoadReport:
    """The ETL's JSON report (DESIGN.md field names)."""

    files: list[FileReport] = field(default_factory=list)
    lock_errors: int = 0
    lock_wait_s: float = 0.0
    turns: int = 0
    elapsed_s: float = 0.0

    def total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files)

    def merge(self, other: LoadReport) -> None:
        self.files += other.files
        self.lock_errors += other.lock_errors
        self.lock_wait_s += other.lock_wait_s
        self.turns += other.turns

    def as_dict(self) -> dict[str, Any]:
        loaded = self.total("rows_loaded")
        return {
            "files": len(self.files),
            "files_loaded": sum(f.status == "loaded" for f in self.files),
            "files_skipped": sum(f.status == "skipped" for f in self.files),
            "rows_read": self.total("rows_read"),
            "rows_loaded": loaded,
            "rows_rejected": self.total("rows_rejected"),
            "rows_skipped": self.total("rows_skipped"),
            "files_rejected": [
                {"path": f.path, "reason": f.reason}
                for f in self.files
                if f.status == "rejected"
            ],
            "lock_errors": self.lock_errors,
            "lock_wait_s": round(self.lock_wait_s, 3),
            "write_turns": self.turns,
            "elapsed_s": round(self.elapsed_s, 3),
            "rows_per_s": round(loaded / self.elapsed_s) if self.elapsed_s else 0,
            "reconciled": all(f.reconciled for f in self.files),
            "per_file": [
                {
                    "path": f.path,
                    "format": f.format,
                    "status": f.status,
                    "rows_read": f.rows_read,
                    "rows_loaded": f.rows_loaded,
                    "rows_rejected": f.rows_rejected,
                    "rows_skipped": f.rows_skipped,
                    "reconciled": f.reconciled,
                }
                for f in self.files
            ],
        }


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
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder to load")
    return found


@dataclass
class _Known:
    """What the file already holds about one source file."""

    chunk_rows: int
    loaded: set[int]


class Loader:
    """Loads files through one lease manager; see the module docstring.

    Args:
        manager: the lease manager for the target file.
        chunk_rows: rows per chunk for files seen for the first time.
        force: format fields to force instead of detecting them.
        options: passed to `read_export` (date window, stores, tolerance).
        on_file_done: called with each file's report once it is settled.
        min_turn: seconds a write turn lasts before yielding to a waiter.
    """

    def __init__(
        self,
        manager: DuckDBWriteLockManager,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        force: dict[str, str] | None = None,
        options: dict[str, Any] | None = None,
        on_file_done: Callable[[FileReport], None] | None = None,
        name: str = "etl",
        min_turn: float = DEFAULT_MIN_TURN,
    ):
        self.manager = manager
        self.chunk_rows = chunk_rows
        self.force = force
        self.options = options or {}
        self.on_file_done = on_file_done
        self.name = name
        self.min_turn = min_turn
        self._turn_started = 0.0
        self._lease: Lease | None = None
        self._report = LoadReport()
        self._store_days: dict[tuple[int, Any], str] = {}
        self._held_back: dict[str, list[Any]] = {}

    def load(self, paths: Sequence[Path]) -> LoadReport:
        started = time.monotonic()
        reports = [FileReport(path=str(p)) for p in paths]
        self._report.files = reports
        known = self._known_files(reports)
        try:
            for report, item in self._parsed(reports, known):
                self._commit(report, item, known)
        finally:
            self._give_back()
        self._report.elapsed_s = time.monotonic() - started
        return self._report

    # -- reading ahead ------------------------------------------------------

    def _known_files(self, reports: list[FileReport]) -> dict[str, _Known]:
        """Hash every file and fetch what earlier loads committed of them."""
        for report in reports:
            report.sha256 = file_sha256(report.path)
        shas = [r.sha256 for r in reports]
        lease = self._ensure_lease()
        cur = lease.cursor()
        cur.register("wanted_files", pa.table({"sha": sorted(set(shas))}))
        try:
            rows = cur.execute(
                "SELECT f.file_sha, f.chunk_rows, list(b.chunk_index)"
                " FROM etl_files f JOIN wanted_files w ON w.sha = f.file_sha"
                " LEFT JOIN etl_batches b ON b.file_sha = f.file_sha"
                " GROUP BY f.file_sha, f.chunk_rows"
            ).fetchall()
            current = cur.execute(
                "SELECT ubicacion_id, fecha, file_sha FROM etl_files"
                " WHERE replaced_by IS NULL AND ubicacion_id IS NOT NULL"
            ).fetchall()
        finally:
            cur.unregister("wanted_files")
        self._store_days = {(int(s), d): sha for s, d, sha in current}
        return {
            sha: _Known(int(size), {int(i) for i in idx if i is not None})
            for sha, size, idx in rows
        }

    def _parsed(
        self, reports: list[FileReport], known: dict[str, _Known]
    ) -> Iterator[tuple[FileReport, Any]]:
        """Parse in a thread, a few chunks ahead of the inserts."""
        out: queue.Queue[tuple[FileReport, Any] | None] = queue.Queue(_PARSE_AHEAD)
        stop = threading.Event()

        def produce() -> None:
            try:
                for report in reports:
                    if stop.is_set():
                        return
                    self._parse_file(report, known, out)
            finally:
                out.put(None)

        thread = threading.Thread(target=produce, name="etl-parse", daemon=True)
        thread.start()
        try:
            while (item := out.get()) is not None:
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    out.get(timeout=0.05)
                except queue.Empty:
                    pass
            thread.join()

    def _parse_file(
        self,
        report: FileReport,
        known: dict[str, _Known],
        out: queue.Queue[tuple[FileReport, Any] | None],
    ) -> None:
        seen = known.get(report.sha256)
        size = seen.chunk_rows if seen else self.chunk_rows
        try:
            fmt = detect_format(report.path, force=self.force)
            report.format = fmt.describe()
            chunks = read_export(report.path, fmt=fmt, chunk_rows=size, **self.options)
            for chunk in chunks:
                out.put((report, (size, chunk)))
        except FileRejected as exc:
            out.put((report, exc))
            return
        out.put((report, "end"))

    # -- writing ------------------------------------------------------------

    def _commit(self, report: FileReport, item: Any, known: dict[str, _Known]) -> None:
        if isinstance(item, FileRejected):
            self._reject(report, item)
            return
        if item == "end":
            self._finish(report)
            return
        if report.status == "rejected":
            return
        size, chunk = item
        report.rows_read += chunk.rows_read
        report.chunks += 1
        seen = known.get(report.sha256)
        if seen and chunk.index in seen.loaded:
            report.rows_skipped += chunk.rows_read
            return
        if chunk.index == 0 and seen is None:
            report.store_day = _store_day(chunk.table)
            earlier = self._store_days.get(report.store_day or (0, None))
            if earlier and earlier != report.sha256:
                report.replaces = earlier
        if report.replaces:
            # A corrected re-send: its chunks wait for one transaction, so a
            # reader sees the old version or the new one, never both.
            self._held_back.setdefault(report.sha256, []).append(chunk)
            return
        self._write(report, size, [chunk])

    def _finish(self, report: FileReport) -> None:
        waiting = self._held_back.pop(report.sha256, [])
        if waiting and report.status != "rejected":
            size = self.chunk_rows
            self._write(report, size, waiting)
            log.info(
                "%s replaced the earlier load of store %s, day %s (file %s)",
                report.path,
                *report.store_day,
                report.replaces[:12],
            )
        if report.status == "pending":
            report.status = "loaded" if report.rows_loaded else "skipped"
        if report.store_day and report.status == "loaded":
            self._store_days[report.store_day] = report.sha256
        if self.on_file_done:
            self.on_file_done(report)

    def _write(self, report: FileReport, size: int, chunks: list[Any]) -> None:
        lease = self._ensure_lease()
        if self._write_chunks(lease, report, size, chunks):
            report.rows_loaded += sum(c.table.num_rows for c in chunks)
            report.rows_rejected += sum(len(c.rejected) for c in chunks)
        else:
            report.rows_skipped += sum(c.rows_read for c in chunks)
        held = time.monotonic() - self._turn_started
        if held >= self.min_turn and lease.contended:
            self._give_back()

    def _write_chunks(
        self, lease: Lease, report: FileReport, size: int, chunks: list[Any]
    ) -> bool:
        """Insert chunks with their batch records in one transaction.

        Returns False, changing nothing, when the first chunk is already
        there (another loader got to this file first).
        """
        first = f"{report.sha256}:{chunks[0].index}"
        with lease.transaction() as cur:
            done = cur.execute(
                "SELECT 1 FROM etl_batches WHERE batch_id = ?", [first]
            ).fetchone()
            if done:
                return False
            store, day = report.store_day or (None, None)
            cur.execute(
                "INSERT INTO etl_files (file_sha, path, ubicacion_id, fecha,"
                " formato, chunk_rows) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [report.sha256, report.path, store, day, report.format, size],
            )
            if report.replaces:
                _retire_file(cur, report.replaces, report.sha256)
            for chunk in chunks:
                self._insert_chunk(cur, lease, report, chunk)
        return True

    def _insert_chunk(
        self, cur: Any, lease: Lease, report: FileReport, chunk: Any
    ) -> None:
        batch_id = f"{report.sha256}:{chunk.index}"
        table: pa.Table = chunk.table
        cur.register("chunk_rows_in", table)
        try:
            cur.execute(
                "INSERT INTO ventas_raw BY NAME"
                " SELECT *, ? AS batch_id FROM chunk_rows_in",
                [batch_id],
            )
        finally:
            cur.unregister("chunk_rows_in")
        if chunk.rejected:
            self._quarantine(cur, batch_id, report.path, chunk.rejected)
        cur.execute(
            "INSERT INTO etl_batches (batch_id, file_sha, chunk_index,"
            " first_line, last_line, rows_read, rows_loaded, rows_rejected,"
            " fence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                batch_id,
                report.sha256,
                chunk.index,
                chunk.first_line,
                chunk.last_line,
                chunk.rows_read,
                table.num_rows,
                len(chunk.rejected),
                lease.fence,
            ],
        )

    @staticmethod
    def _quarantine(cur: Any, batch_id: str, path: str, rejected: list[Any]) -> None:
        bad = pa.table(
            {
                "batch_id": [batch_id] * len(rejected),
                "path": [path] * len(rejected),
                "linea": [r.line for r in rejected],
                "raw": [r.raw for r in rejected],
                "reason": [r.reason for r in rejected],
            }
        )
        cur.register("bad_rows_in", bad)
        try:
            cur.execute("INSERT INTO etl_quarantine BY NAME SELECT * FROM bad_rows_in")
        finally:
            cur.unregister("bad_rows_in")

    def _reject(self, report: FileReport, exc: FileRejected) -> None:
        report.status = "rejected"
        report.reason = str(exc)
        log.warning("file rejected: %s", exc)
        if self.on_file_done:
            self.on_file_done(report)

    def _ensure_lease(self) -> Lease:
        if self._lease is None:
            self._lease = self.manager.acquire(
                Mode.EXCLUSIVE, priority=Priority.BATCH, name=self.name
            )
            self._report.lock_wait_s += self._lease.wait_s
            self._report.turns += 1
            self._turn_started = time.monotonic()
            with self._lease.transaction() as cur:
                ensure_sales_schema(cur)
        return self._lease

    def _give_back(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            self.manager.release(lease)


def _store_day(table: pa.Table) -> tuple[int, Any] | None:
    """The one (store, day) of a chunk's rows, or None if it has several."""
    keys = table.group_by(["ubicacion_id", "fecha"]).aggregate([])
    if keys.num_rows != 1:
        return None
    return int(keys["ubicacion_id"][0].as_py()), keys["fecha"][0].as_py()


def _retire_file(cur: Any, old_sha: str, new_sha: str) -> None:
    """Remove an earlier version's rows; keep its records, marked replaced.

    The old file's batch records stay, so rerunning the old file later is
    still a no-op instead of bringing its rows back.
    """
    cur.execute(
        "DELETE FROM ventas_raw WHERE starts_with(batch_id, ?)", [old_sha + ":"]
    )
    cur.execute(
        "UPDATE etl_files SET replaced_by = ? WHERE file_sha = ?", [new_sha, old_sha]
    )
