"""Load store exports into `ventas_raw`, chunk by chunk, exactly once.

One loader works through its files in order. A thread parses ahead into a
small queue, so the write lease is held only while chunks are inserted.
The lease is kept across chunks and files while nobody waits for the file,
and given back between chunks as soon as someone does: an idle backend
costs the load nothing and a busy one waits for one transaction (after a
turn of at least `min_turn`).

Chunks are grouped, many to a transaction, and the transaction is sized
from a target hold time: the loader measures the rate of its own writes and
gathers about `target_hold` seconds' worth of rows (at least one chunk) into
each. A waiting backend waits for one such transaction. Few large
transactions are also what makes DuckDB fast: a commit of a million rows
lands as finished row groups in the file, where ten commits of a hundred
thousand each write their rows twice (log, then checkpoint); and a real
store's day of a few hundred lines must not pay for a commit of its own.

Exactly once: a chunk's rows, its quarantined rows and its `etl_batches`
record commit in one fenced transaction. The batch identity is the file's
content hash and the chunk's position (the chunk size is recorded with the
file on its first load and reused on every rerun), so rerunning a file or
resuming after a crash skips what committed and loads the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from lockmanager import (
    DuckDBWriteLockManager,
    Lease,
    LeaseLost,
    LockManagerError,
    Mode,
    Priority,
    is_lock_conflict,
)

from ._reading import Known, expand_paths, parse_ahead
from ._sizing import FIRST_TXN_CHUNKS, MAX_TXN_BYTES, MAX_TXN_ROWS, next_txn_rows
from ._write import Outcome, Piece, write_pieces
from .defaults import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_MIN_TURN,
    DEFAULT_TARGET_HOLD,
    DEFAULT_WAIT,
)
from .errors import FileRejected
from .report import FileReport, LoadReport
from .schema import ensure_sales_schema

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_WAIT",
    "Loader",
    "expand_paths",
    "next_txn_rows",
]

log = logging.getLogger("etl.loader")

_WRITE_ATTEMPTS = 3


class Loader:
    """Loads files through one lease manager; see the module docstring.

    Args:
        manager: the lease manager for the target file.
        chunk_rows: rows per chunk for files seen for the first time.
        force: format fields to force instead of detecting them.
        options: passed to `read_export` (date window, stores, tolerance).
        on_file_done: called with each file's report once it is settled.
        min_turn: seconds a write turn lasts before yielding to a waiter.
        target_hold: seconds one write transaction should last; its row
            count follows from the rate measured on the earlier ones.
        wait_for: how long one turn may be waited for; a batch job waits
            patiently behind interactive work, then stops with a report.
        memory_limit: DuckDB's memory budget, e.g. "256MB". It is set for
            the whole process (DuckDB has no narrower scope for it), so an
            application that runs the loader beside other DuckDB work may
            pass None to leave its own setting alone.
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
        target_hold: float = DEFAULT_TARGET_HOLD,
        wait_for: float = DEFAULT_WAIT,
        memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
    ):
        if target_hold <= 0:
            raise ValueError(f"target_hold must be positive, got {target_hold}")
        self.manager = manager
        self.chunk_rows = chunk_rows
        self.force = force
        self.options = options or {}
        self.on_file_done = on_file_done
        self.name = name
        self.min_turn = min_turn
        self.target_hold = target_hold
        self.wait_for = wait_for
        self.memory_limit = memory_limit
        self.txn_rows = max(
            chunk_rows, min(FIRST_TXN_CHUNKS * chunk_rows, MAX_TXN_ROWS)
        )
        self._turn_started = 0.0
        self._lease: Lease | None = None
        self._report = LoadReport()
        self._store_days: dict[tuple[int, Any], str] = {}
        self._held_back: dict[str, list[Piece]] = {}
        self._group: list[Piece] = []
        self._waiting: list[FileReport] = []
        self._finished: list[tuple[str, tuple[int, Any]]] = []
        self._redo: set[str] = set()

    @property
    def lock_wait_s(self) -> float:
        return self._report.lock_wait_s

    def load(self, paths: Sequence[Path]) -> LoadReport:
        started = time.monotonic()
        reports = [FileReport(path=str(p)) for p in paths]
        self._report.files = reports
        try:
            known = self._known_files()
            self._pass(reports, known)
            if self._redo:
                # Another loader started these files with another chunk
                # size: load them again with the size it recorded.
                again = [r for r in reports if r.sha256 in self._redo]
                for report in again:
                    report.reset()
                self._redo.clear()
                self._pass(again, self._known_files())
        except LockManagerError as exc:
            self._interrupt(reports, exc)
        finally:
            self._give_back()
        self._report.elapsed_s = time.monotonic() - started
        return self._report

    def _pass(self, reports: list[FileReport], known: dict[str, Known]) -> None:
        chunks = parse_ahead(
            reports,
            known,
            chunk_rows=self.chunk_rows,
            force=self.force,
            options=self.options,
        )
        for report, item in chunks:
            if report is None:  # waiting for the parser
                self._yield_if_wanted()
            else:
                self._commit(report, item, known)
        self._flush()

    # -- reading ahead ------------------------------------------------------

    def _known_files(self) -> dict[str, Known]:
        """What earlier loads committed, for every file the database knows.

        Every file, not just this load's: the files are hashed later, by the
        thread that parses them, so the first file is parsed while the
        others are still unread. The table holds one row per file and one per
        chunk ever loaded: thousands a year, fetched in milliseconds.
        """
        cur = self._ensure_lease().cursor()
        rows = cur.execute(
            "SELECT f.file_sha, f.chunk_rows, list(b.chunk_index),"
            " f.ubicacion_id IS NOT NULL, f.replaced_by IS NOT NULL"
            " FROM etl_files f LEFT JOIN etl_batches b ON b.file_sha = f.file_sha"
            " GROUP BY ALL"
        ).fetchall()
        return {
            sha: Known(int(size), {int(i) for i in idx if i is not None}, day, gone)
            for sha, size, idx, day, gone in rows
        }

    def _read_store_days(self, cur: Any) -> None:
        """The live version of every (store, day), as the file holds it now.

        Read again at every turn: another loader may have committed a
        correction while this one waited.
        """
        current = cur.execute(
            "SELECT ubicacion_id, fecha, file_sha FROM etl_files"
            " WHERE replaced_by IS NULL AND ubicacion_id IS NOT NULL"
        ).fetchall()
        self._store_days = {(int(s), d): sha for s, d, sha in current}

    # -- writing ------------------------------------------------------------

    def _commit(self, report: FileReport, item: Any, known: dict[str, Known]) -> None:
        if report.sha256 in self._redo:
            return  # chunked differently by another loader: loaded again later
        if isinstance(item, FileRejected):
            self._reject(report, item)
            return
        if item == "end":
            self._end_of_file(report, known)
            return
        if report.status == "rejected":
            return
        size, chunk, day = item
        report.rows_read += chunk.rows_read
        report.chunks += 1
        if chunk.table.num_rows:  # a chunk of only bad rows tells no day
            self._note_store_day(report, day, known)
        seen = known.get(report.sha256)
        if seen and (seen.replaced or chunk.index in seen.loaded):
            report.rows_skipped += chunk.rows_read
            self._yield_if_wanted()  # a rerun that skips must not hog the file
            return
        piece = Piece(report, chunk, size)
        if report.replaces:
            # A corrected re-send: its chunks wait for one transaction, so a
            # reader sees the old version or the new one, never both.
            self._held_back.setdefault(report.sha256, []).append(piece)
            return
        self._group.append(piece)
        full = (
            sum(p.chunk.rows_read for p in self._group) >= self.txn_rows
            or sum(p.nbytes for p in self._group) >= MAX_TXN_BYTES
        )
        if full or self._should_yield():
            # Someone waits while this turn only gathers small files: write
            # what is gathered and let them in, rather than hold the file
            # while the parser catches up.
            self._flush()

    def _note_store_day(
        self,
        report: FileReport,
        day: tuple[int, Any] | None,
        known: dict[str, Known],
    ) -> None:
        """Track the file's (store, day): one for the whole file, or none."""
        if not report.day_seen:
            report.day_seen = True
            report.store_day = day
            earlier = self._store_days.get(day) if day else None
            if earlier and earlier != report.sha256 and report.sha256 not in known:
                report.replaces = earlier
        elif day != report.store_day:
            report.store_day = None  # several days: never replaces anything

    def _end_of_file(self, report: FileReport, known: dict[str, Known]) -> None:
        day = report.store_day if report.status != "rejected" else None
        seen = known.get(report.sha256)
        if seen and seen.replaced:
            pass  # an old version, read again: it stays replaced
        elif not (seen and seen.day_recorded) or report.rows_skipped < report.rows_read:
            # Written with the file's next transaction, or with its own if
            # it is a re-send (its etl_files row is written there); None
            # for a file of several days.
            self._finished.append((report.sha256, day))
            if day:
                # From now on this file is the store-day's version, even
                # before it is written: a correction later in this same
                # load replaces it.
                self._store_days[day] = report.sha256
        held = self._held_back.pop(report.sha256, [])
        if held and report.status != "rejected":
            mine = [f for f in self._finished if f[0] == report.sha256]
            self._finished = [f for f in self._finished if f[0] != report.sha256]
            self._flush()  # files commit in the order they were given
            self._finished += mine
            self._write(held)
            if day:
                log.info(
                    "%s replaced the earlier load of store %s, day %s",
                    report.path,
                    *day,
                )
            else:
                report.replaces = ""
        if any(p.report is report for p in self._group):
            self._waiting.append(report)
        else:
            self._settle(report)

    def _flush(self) -> None:
        if self._group or self._finished:
            pieces, self._group = self._group, []
            self._write(pieces)
        waiting, self._waiting = self._waiting, []
        for report in waiting:
            self._settle(report)

    def _write(self, pieces: list[Piece]) -> None:
        finished, self._finished = self._finished, []
        for attempt in range(_WRITE_ATTEMPTS):
            lease = self._ensure_lease()
            assert lease.fence is not None
            began = time.monotonic()
            try:
                with lease.transaction() as cur:
                    outcome = write_pieces(
                        cur,
                        pieces,
                        fence=lease.fence,
                        store_days=finished,
                    )
                break
            except duckdb.Error as exc:
                if is_lock_conflict(exc):  # never expected; counted if seen
                    self._report.lock_errors += 1
                raise
            except LeaseLost as exc:
                # Rolled back: nothing of this write is in the file. Take a
                # new turn and write it again.
                self._report.leases_lost += 1
                log.warning("lease lost before commit, retrying: %s", exc)
                self._give_back()
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
        self._size_next(pieces, time.monotonic() - began)
        self._account(pieces, outcome)
        if self._should_yield():
            self._report.yields += 1
            self._give_back()

    def _size_next(self, pieces: list[Piece], held: float) -> None:
        """Record the hold; aim the next transaction at `target_hold`."""
        self._report.transactions += 1
        self._report.longest_hold_s = max(self._report.longest_hold_s, held)
        rows = sum(p.chunk.table.num_rows for p in pieces)
        self.txn_rows = next_txn_rows(
            self.txn_rows,
            rows,
            held,
            target=self.target_hold,
            smallest=self.chunk_rows,
            largest=max(self.chunk_rows, MAX_TXN_ROWS),
        )

    def _yield_if_wanted(self) -> None:
        """Someone waits while this turn has nothing to write: let them in."""
        if self._should_yield():
            self._flush()
            if self._lease is not None:
                self._report.yields += 1
                self._give_back()

    def _should_yield(self) -> bool:
        lease = self._lease
        if lease is None:
            return False
        held = time.monotonic() - self._turn_started
        return held >= self.min_turn and lease.contended

    def _account(self, pieces: list[Piece], outcome: Outcome) -> None:
        for piece in pieces:
            report, chunk = piece.report, piece.chunk
            if report.sha256 in outcome.conflicted:
                continue
            if report.sha256 in outcome.superseded:
                report.rows_skipped += chunk.rows_read
                continue
            if piece.batch_id in outcome.done or id(piece) in outcome.twins:
                # another loader got there first, or the same bytes came
                # twice (under two names) in this write
                report.rows_skipped += chunk.rows_read
            else:
                report.rows_loaded += chunk.table.num_rows
                report.rows_rejected += len(chunk.rejected)
                report.note_quarantined(chunk.rejected)
        for piece in pieces:
            old = outcome.retired.get(piece.report.sha256)
            if old and not piece.report.replaces:
                piece.report.replaces = old[0]
        for sha in outcome.conflicted:
            self._redo.add(sha)
            self._group = [p for p in self._group if p.report.sha256 != sha]
            self._held_back.pop(sha, None)

    def _settle(self, report: FileReport) -> None:
        if report.sha256 in self._redo:
            return
        if report.status == "pending":
            wrote = report.rows_loaded + report.rows_rejected
            report.status = "loaded" if wrote else "skipped"
        if self.on_file_done:
            self.on_file_done(report)

    def _interrupt(self, reports: list[FileReport], exc: LockManagerError) -> None:
        """No turn to be had: stop, and say exactly what did not load."""
        unwritten = self._group + [p for h in self._held_back.values() for p in h]
        for piece in unwritten:
            piece.report.rows_read -= piece.chunk.rows_read
        self._group, self._held_back = [], {}
        for report in reports:
            if report.status == "pending":
                report.status = "interrupted"
                report.reason = str(exc)
        self._report.interrupted = str(exc)
        log.error("load interrupted, rerun to resume: %s", exc)

    def _reject(self, report: FileReport, exc: FileRejected) -> None:
        # Chunks of this file not yet written are dropped: refused whole.
        dropped = [p for p in self._group if p.report is report]
        self._group = [p for p in self._group if p.report is not report]
        dropped += self._held_back.pop(report.sha256, [])
        report.rows_read -= sum(p.chunk.rows_read for p in dropped)
        if report.rows_loaded and report.store_day:
            # Part of it is in the file already: record its store-day, so
            # the complete file, sent again, replaces that part.
            self._finished.append((report.sha256, report.store_day))
            self._store_days[report.store_day] = report.sha256
        report.status = "rejected"
        report.reason = str(exc)
        if report.rows_loaded:
            report.reason += f" ({report.rows_loaded} earlier rows stay loaded)"
        log.warning("file rejected: %s", exc)
        if self.on_file_done:
            self.on_file_done(report)

    def _ensure_lease(self) -> Lease:
        if self._lease is None:
            asked = time.monotonic()
            try:
                self._lease = self.manager.acquire(
                    Mode.EXCLUSIVE,
                    priority=Priority.BATCH,
                    name=self.name,
                    wait_for=self.wait_for,
                )
            except LockManagerError:
                # No turn after all: the time spent waiting still counts.
                self._report.lock_wait_s += time.monotonic() - asked
                raise
            self._report.lock_wait_s += self._lease.wait_s
            self._report.turns += 1
            if self._lease.degraded:
                self._report.degraded_turns += 1
            self._turn_started = time.monotonic()
            # Rows need no insertion order (each keeps its source line in
            # `linea`); without it DuckDB inserts on all cores. This
            # session's cursor only: other users of the process keep order.
            cur = self._lease.cursor()
            cur.execute("SET SESSION preserve_insertion_order = false")
            if self.memory_limit is not None:
                cur.execute("SET memory_limit = ?", [self.memory_limit])
            with self._lease.transaction() as cur:
                ensure_sales_schema(cur)
                self._read_store_days(cur)
        return self._lease

    def _give_back(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            self.manager.release(lease)
