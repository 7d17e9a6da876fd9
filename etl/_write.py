"""SQL of one load transaction: chunks, their batch records, quarantine.

Small files come many to a transaction (a group), large ones a chunk at a
time; either way each chunk's rows, its quarantined rows and its
`etl_batches` record commit together, so a batch is either wholly in the
file or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .formats import ParsedChunk
from .report import FileReport


@dataclass(frozen=True)
class Piece:
    """One parsed chunk of one file, waiting to be written."""

    report: FileReport
    chunk: ParsedChunk
    chunk_rows: int

    @property
    def batch_id(self) -> str:
        return f"{self.report.sha256}:{self.chunk.index}"


def write_pieces(
    cur: Any, pieces: list[Piece], *, fence: int, replaces: str = ""
) -> set[str]:
    """Insert the pieces not yet loaded; return the batch ids already there.

    Runs inside the caller's (fenced) transaction. With `replaces`, the
    earlier file's rows go in the same transaction as the new ones.
    """
    ids = [p.batch_id for p in pieces]
    rows = cur.execute(
        "SELECT batch_id FROM etl_batches WHERE list_contains(?, batch_id)", [ids]
    ).fetchall()
    done = {r[0] for r in rows}
    fresh = [p for p in pieces if p.batch_id not in done]
    if not fresh:
        return done
    _insert(cur, "etl_files", _files_table(fresh), conflict="ON CONFLICT DO NOTHING")
    if replaces:
        _retire_file(cur, replaces, fresh[0].report.sha256)
    _insert(cur, "ventas_raw", _rows_table(fresh))
    bad = _quarantine_table(fresh)
    if bad.num_rows:
        _insert(cur, "etl_quarantine", bad)
    _insert(cur, "etl_batches", _batches_table(fresh, fence))
    return done


def _insert(cur: Any, table: str, data: pa.Table, conflict: str = "") -> None:
    name = f"incoming_{table}"
    cur.register(name, data)
    try:
        cur.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name} {conflict}")
    finally:
        cur.unregister(name)


def _files_table(pieces: list[Piece]) -> pa.Table:
    first = {p.report.sha256: p for p in reversed(pieces)}.values()
    store_day = [p.report.store_day or (None, None) for p in first]
    return pa.table(
        {
            "file_sha": [p.report.sha256 for p in first],
            "path": [p.report.path for p in first],
            "ubicacion_id": pa.array([s for s, _ in store_day], pa.int32()),
            "fecha": pa.array([d for _, d in store_day], pa.date32()),
            "formato": [p.report.format for p in first],
            "chunk_rows": pa.array([p.chunk_rows for p in first], pa.int32()),
        }
    )


def _rows_table(pieces: list[Piece]) -> pa.Table:
    tables = [
        p.chunk.table.append_column(
            "batch_id", pa.array([p.batch_id] * p.chunk.table.num_rows, pa.string())
        )
        for p in pieces
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


def _batches_table(pieces: list[Piece], fence: int) -> pa.Table:
    def column(values: list[Any], kind: pa.DataType) -> pa.Array:
        return pa.array(values, kind)

    return pa.table(
        {
            "batch_id": column([p.batch_id for p in pieces], pa.string()),
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
