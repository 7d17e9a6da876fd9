"""SQL of one load transaction: chunks, their batch records, quarantine.

Small files come many to a transaction (a group), large ones a chunk at a
time; either way each chunk's rows, its quarantined rows and its
`etl_batches` record commit together, so a batch is either wholly in the
file or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from .formats import ParsedChunk
from .report import FileReport


@dataclass(frozen=True)
class Piece:
    """One parsed chunk of one file, waiting to be written."""

    report: FileReport
    chunk: ParsedChunk
    chunk_rows: int
    #: bytes of its parsed rows (Arrow's count walks every column: kept)
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nbytes", self.chunk.table.nbytes)

    @property
    def batch_id(self) -> str:
        return f"{self.report.sha256}:{self.chunk.index}"


@dataclass
class Outcome:
    """What a write left out: batches already there, files chunked otherwise."""

    done: set[str] = field(default_factory=set)
    conflicted: set[str] = field(default_factory=set)
    #: files already replaced by a correction: nothing more of them loads
    superseded: set[str] = field(default_factory=set)
    #: new file -> the earlier versions of its store-day it replaced
    retired: dict[str, list[str]] = field(default_factory=dict)
    #: id() of pieces left out as the same batch as an earlier piece here
    twins: set[int] = field(default_factory=set)


def write_pieces(
    cur: Any,
    pieces: list[Piece],
    *,
    fence: int,
    store_days: Sequence[tuple[str, tuple[int, Any] | None]] = (),
) -> Outcome:
    """Insert the pieces not yet loaded, inside the caller's fenced transaction.

    Left out, and reported: batches already in the file (another loader got
    there first), and every piece of a file that another loader already
    started with a different chunk size (its chunks would not line up; the
    caller loads that file again with the recorded size), and pieces of a
    file that a correction already replaced. `store_days` records the
    (store, day), or None for several days, of finished files; a finished
    day's file leaves one live version of that day (`_retire_store_day`).
    A corrected re-send comes whole in one call with its own `store_days`
    entry, so readers see the old version or the new, never both.
    """
    outcome = Outcome()
    sizes = {p.report.sha256: p.chunk_rows for p in pieces}
    recorded = cur.execute(
        "SELECT file_sha, chunk_rows, replaced_by IS NOT NULL FROM etl_files"
        " WHERE list_contains(?, file_sha)",
        [list(sizes)],
    ).fetchall()
    outcome.conflicted = {sha for sha, size, _ in recorded if size != sizes[sha]}
    outcome.superseded = {sha for sha, _, replaced in recorded if replaced}
    ids = [p.batch_id for p in pieces]
    rows = cur.execute(
        "SELECT batch_id FROM etl_batches WHERE list_contains(?, batch_id)", [ids]
    ).fetchall()
    outcome.done = {r[0] for r in rows}
    fresh: list[Piece] = []
    taken: set[str] = set()
    for p in pieces:
        sha = p.report.sha256
        if p.batch_id in outcome.done or sha in outcome.conflicted:
            continue
        if sha in outcome.superseded:  # a correction replaced it meanwhile
            continue
        if p.batch_id in taken:  # the same file twice, under two names
            outcome.twins.add(id(p))
            continue
        taken.add(p.batch_id)
        fresh.append(p)
    if fresh:
        # Numbered inside the exclusive transaction: nobody else can take
        # the same numbers, and a rolled-back write leaves no gap behind.
        [(top,)] = cur.execute(
            "SELECT coalesce(max(lote), 0) FROM etl_batches"
        ).fetchall()
        first = int(top) + 1
        lotes = list(range(first, first + len(fresh)))
        _insert(cur, "etl_files", _files_table(fresh), "ON CONFLICT DO NOTHING")
        _insert(cur, "ventas_raw", _rows_table(fresh, lotes))
        bad = _quarantine_table(fresh)
        if bad.num_rows:
            _insert(cur, "etl_quarantine", bad)
        _insert(cur, "etl_batches", _batches_table(fresh, fence, lotes))
    if store_days:
        days = pa.table(
            {
                "sha": pa.array([sha for sha, _ in store_days], pa.string()),
                "store": pa.array([d and d[0] for _, d in store_days], pa.int32()),
                "day": pa.array([d and d[1] for _, d in store_days], pa.date32()),
            }
        )
        cur.register("finished_files", days)
        try:  # one statement however many files: a day of 2,000 small ones
            cur.execute(
                "UPDATE etl_files SET ubicacion_id = d.store, fecha = d.day"
                " FROM finished_files d WHERE etl_files.file_sha = d.sha"
            )
            # Only days with another live version need a look (a day of
            # 2,000 small files must not cost 2,000 queries).
            live = cur.execute(
                "SELECT d.sha FROM finished_files d JOIN etl_files f"
                " ON f.file_sha = d.sha WHERE f.replaced_by IS NULL"
                " AND d.day IS NOT NULL AND EXISTS (SELECT 1 FROM etl_files o"
                " WHERE o.ubicacion_id = d.store AND o.fecha = d.day"
                " AND o.replaced_by IS NULL AND o.file_sha <> d.sha)"
            ).fetchall()
        finally:
            cur.unregister("finished_files")
        # A finished store-day file is that day's version, read here inside
        # the transaction: of the live versions the one first written last
        # stays, the others go. So a correction retires an original whose
        # load was cut off, once it finishes, and two loaders racing with
        # two corrections leave one, whatever order they finish in.
        ended = dict(store_days)
        for (sha,) in live:
            old = _retire_store_day(cur, ended[sha], sha)
            if old:
                outcome.retired.setdefault(sha, []).extend(old)
    return outcome


def _insert(cur: Any, table: str, data: pa.Table, conflict: str = "") -> None:
    name = f"incoming_{table}"
    cur.register(name, data)
    try:
        cur.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name} {conflict}")
    finally:
        try:
            cur.unregister(name)
        except duckdb.Error:
            pass  # the insert failed and aborted the transaction: its error counts


def _files_table(pieces: list[Piece]) -> pa.Table:
    # (store, day) is recorded once the whole file is read (`store_days`):
    # never from its first rows, as a file of several days would then pass
    # for a day's version, and a correction of that day would retire it.
    first = list({p.report.sha256: p for p in reversed(pieces)}.values())
    return pa.table(
        {
            "file_sha": [p.report.sha256 for p in first],
            "path": [p.report.path for p in first],
            "formato": [p.report.format for p in first],
            "chunk_rows": pa.array([p.chunk_rows for p in first], pa.int32()),
        }
    )


def _rows_table(pieces: list[Piece], lotes: list[int]) -> pa.Table:
    tables = [
        p.chunk.table.append_column(
            "lote", pa.array(np.full(p.chunk.table.num_rows, lote, np.int64))
        )
        for p, lote in zip(pieces, lotes, strict=True)
    ]
    return pa.concat_tables(tables)


def _quarantine_table(pieces: list[Piece]) -> pa.Table:
    bad = [(p, r) for p in pieces for r in p.chunk.rejected]
    return pa.table(
        {
            "batch_id": pa.array([p.batch_id for p, _ in bad], pa.string()),
            "path": pa.array([p.report.path for p, _ in bad], pa.string()),
            "linea": pa.array([r.line for _, r in bad], pa.int64()),
            "raw": pa.array([r.raw for _, r in bad], pa.string()),
            "reason": pa.array([r.reason for _, r in bad], pa.string()),
        }
    )


def _batches_table(pieces: list[Piece], fence: int, lotes: list[int]) -> pa.Table:
    def column(values: list[Any], kind: pa.DataType) -> pa.Array:
        return pa.array(values, kind)

    return pa.table(
        {
            "batch_id": column([p.batch_id for p in pieces], pa.string()),
            "lote": column(lotes, pa.int64()),
            "file_sha": column([p.report.sha256 for p in pieces], pa.string()),
            "chunk_index": column([p.chunk.index for p in pieces], pa.int32()),
            "first_line": column([p.chunk.first_line for p in pieces], pa.int64()),
            "last_line": column([p.chunk.last_line for p in pieces], pa.int64()),
            "rows_read": column([p.chunk.rows_read for p in pieces], pa.int64()),
            "rows_loaded": column([p.chunk.table.num_rows for p in pieces], pa.int64()),
            "rows_rejected": column(
                [len(p.chunk.rejected) for p in pieces], pa.int64()
            ),
            "fence": column([fence] * len(pieces), pa.int64()),
        }
    )


def _retire_store_day(cur: Any, store_day: tuple[int, Any], new_sha: str) -> list[str]:
    """Leave one live version of a (store, day): the one first written last.

    Versions first written before `new_sha` lose their rows, good and
    quarantined, and are marked replaced by it; if one was first written
    after it, `new_sha` itself is retired in favour of the latest. Read
    inside the transaction, so racing loaders agree. The old files' batch
    records stay, so rerunning an old file is still a no-op. Returns the
    files `new_sha` replaced.
    """
    store, day = store_day
    versions = cur.execute(
        "SELECT file_sha FROM etl_files WHERE ubicacion_id = ? AND fecha = ?"
        " AND replaced_by IS NULL ORDER BY started_at, file_sha",
        [store, day],
    ).fetchall()
    shas = [r[0] for r in versions]
    if new_sha not in shas:
        return []
    latest = shas[-1]
    gone = [sha for sha in shas if sha != latest]
    if gone:
        cur.execute(
            "DELETE FROM ventas_raw WHERE lote IN"
            " (SELECT lote FROM etl_batches WHERE list_contains(?, file_sha))",
            [gone],
        )
        # Their bad rows were corrected or dropped by the new version: no
        # longer anything for someone to fix.
        cur.execute(
            "DELETE FROM etl_quarantine WHERE batch_id IN"
            " (SELECT batch_id FROM etl_batches WHERE list_contains(?, file_sha))",
            [gone],
        )
        cur.execute(
            "UPDATE etl_files SET replaced_by = ? WHERE list_contains(?, file_sha)",
            [latest, gone],
        )
    return gone if latest == new_sha else []
