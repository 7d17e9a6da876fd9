"""The two alternatives of measure 2, each run as its own process.

``python -m bench.etl_job bare --db PATH DIR...`` parses the exports with
the product's own reader (`etl.formats.read_export`, same chunk size, one
thread parsing ahead like the loader) and inserts them through one
exclusive DuckDB connection, as many chunks to a transaction as the
loader's largest (one INSERT each) and with the loader's DuckDB settings:
no lease manager, no fence, no batch records, no quarantine.

``python -m bench.etl_job pg --dsn DSN --schema NAME --connections N DIR...``
streams the same CSV files into PostgreSQL with COPY, N connections in
parallel, one commit per file.

Each prints one JSON line: rows now in the table and the seconds spent.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from etl.defaults import DEFAULT_CHUNK_ROWS, DEFAULT_MEMORY_LIMIT
from etl.formats import read_export
from etl.loader import MAX_TXN_ROWS, expand_paths
from etl.schema import ensure_sales_schema

from .pg import PgSchema, copy_file

__all__ = ["load_bare", "load_pg", "main"]

_PARSE_AHEAD = 3
_INSERT = "INSERT INTO ventas_raw BY NAME SELECT * FROM bench_chunk"


def _chunks(paths: Sequence[Path]) -> Iterator[tuple[int, pa.Table]]:
    """Parsed chunks of every file, produced by a thread a few chunks ahead."""
    ahead: queue.Queue[tuple[int, pa.Table] | None] = queue.Queue(_PARSE_AHEAD)

    def produce() -> None:
        lote = 0
        try:
            for path in paths:
                for chunk in read_export(path, chunk_rows=DEFAULT_CHUNK_ROWS):
                    lote += 1
                    ahead.put((lote, chunk.table))
        finally:
            ahead.put(None)

    threading.Thread(target=produce, name="bench-parse", daemon=True).start()
    while (item := ahead.get()) is not None:
        yield item


def load_bare(paths: Sequence[Path], db: Path) -> int:
    """Insert every parsed row through one plain connection; rows in the table."""
    con = duckdb.connect(str(db))
    try:
        # The loader's own settings, so the comparison is of coordination alone.
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET memory_limit = ?", [DEFAULT_MEMORY_LIMIT])
        ensure_sales_schema(con)
        gathered: list[pa.Table] = []
        for lote, table in _chunks(paths):
            gathered.append(table.append_column("lote", _constant(lote, table)))
            if sum(t.num_rows for t in gathered) >= MAX_TXN_ROWS:
                _insert(con, gathered)
                gathered = []
        _insert(con, gathered)
        row = con.execute("SELECT count(*) FROM ventas_raw").fetchone()
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return int(row[0]) if row else 0


def _constant(value: int, like: pa.Table) -> pa.Array:
    return pa.array(np.full(like.num_rows, value, np.int64))


def _insert(con: duckdb.DuckDBPyConnection, tables: list[pa.Table]) -> None:
    if not tables:
        return
    con.register("bench_chunk", pa.concat_tables(tables))
    try:
        con.execute(_INSERT)
    finally:
        con.unregister("bench_chunk")


def load_pg(paths: Sequence[Path], schema: PgSchema, connections: int) -> int:
    """COPY the files over `connections` parallel sessions; rows in the table."""
    failures: list[BaseException] = []

    def copy_some(share: Sequence[Path]) -> None:
        try:
            with schema.connect(autocommit=False) as con:
                for path in share:
                    copy_file(con, schema.sales, path)
                    con.commit()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            failures.append(exc)

    threads = [
        threading.Thread(target=copy_some, args=(paths[i::connections],))
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return schema.count_sales()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.etl_job")
    sub = parser.add_subparsers(dest="kind", required=True)
    bare = sub.add_parser("bare")
    bare.add_argument("--db", required=True, type=Path)
    pg = sub.add_parser("pg")
    pg.add_argument("--dsn", required=True)
    pg.add_argument("--schema", required=True)
    pg.add_argument("--connections", type=int, default=1)
    for command in (bare, pg):
        command.add_argument("inputs", nargs="+")
    args = parser.parse_args(argv)

    paths = expand_paths(args.inputs)
    started = time.monotonic()
    if args.kind == "bare":
        rows = load_bare(paths, args.db)
    else:
        rows = load_pg(paths, PgSchema(args.dsn, args.schema), args.connections)
    seconds = time.monotonic() - started
    print(json.dumps({"rows": rows, "seconds": seconds, "files": len(paths)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
