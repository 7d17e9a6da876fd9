"""One benchmark run: every measure, then report.md, results.json and plots.

Starts a private `redis-server` on 127.0.0.1 (the embedded Redis-protocol
server when none is on PATH), uses the machine's
PostgreSQL (a schema of its own, dropped at the end; without PostgreSQL
the PostgreSQL figures are listed as not measured), generates the exports
once under a temporary folder (deleted at the end, DuckDB files deleted
after each size), and writes `report.md`, `results.json` and PNG plots.
The exit status is 0 when the run completed, whatever the verdicts: a
missed target is a result, reported as FAIL.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import socket
import tempfile
import time
from datetime import UTC, date, datetime
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb
import redis

from etl.loader import MAX_TXN_ROWS
from lockmanager.private_redis import start_private_redis

from .data import Dataset, generate_all
from .etl import (
    EtlContext,
    best_coordinated,
    check_memory,
    check_size,
    measure_size,
    variants_for,
)
from .locks import measure_locks
from .pg import PgSchema
from .plots import write_plots
from .queries import check_queries, measure_queries
from .report import Layout, render
from .results import Results, verify
from .scale import Scale, Size, rows_label
from .services import pg_reachable
from .serving import check_serving, measure_pg_writes, measure_serving

__all__ = ["run"]

log = logging.getLogger("bench")


def run(scale: Scale, out: Path, dsn: str, *, etl_only: bool = False) -> Results:
    """Every measure at `scale`; writes the results folder; returns the figures.

    With `etl_only`, measure 2 alone (no lock, serving or query measures).

    Raises:
        RuntimeError: the results are inconsistent (a harness bug).
    """
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    res, layout = Results(), Layout()
    res.meta = _meta(scale)
    workdir = Path(tempfile.mkdtemp(prefix="fluxion-bench-"))
    private = start_private_redis()
    pg = _postgres(dsn, res)
    try:
        res.meta["versions"] += f", {private.kind} {_redis_version(private.url)}"
        _measure_all(res, layout, scale, workdir, private.url, pg, etl_only)
    finally:
        private.stop()
        if pg is not None:
            pg.drop()
        shutil.rmtree(workdir, ignore_errors=True)

    res.measured("run.seconds", time.monotonic() - started, "s")
    res.meta["loadavg_end"] = _loadavg()
    doc = res.as_dict()
    problems = verify(doc)
    if problems:
        raise RuntimeError("inconsistent results:\n" + "\n".join(problems[:20]))

    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    write_plots(res, out, layout.etl_labels, layout.growth_labels)
    (out / "report.md").write_text(render(res, layout))
    return res


def _measure_all(
    res: Results,
    layout: Layout,
    scale: Scale,
    workdir: Path,
    redis_url: str,
    pg: PgSchema | None,
    etl_only: bool,
) -> None:
    sets, seconds = generate_all(scale, workdir)
    res.measured("setup.generate_s", seconds, "s")
    log.info("exports generated in %.0fs", seconds)
    if not etl_only:
        log.info("M1 locks")
        measure_locks(res, scale, redis_url, workdir)

    ctx = EtlContext(workdir, redis_url, pg, scale.etl_timeout_s)
    last_growth = [s for s in scale.sizes if s.growth][-1]
    tried: list[tuple[str, tuple[int, ...]]] = []
    for size in scale.sizes:
        label = rows_label(scale.size_rows(size))
        log.info("M2 ETL at %s rows", label)
        kept = measure_size(res, scale, size, sets[size.dataset], ctx)
        layout.etl_labels.append(label)
        layout.etl_variants[label] = variants_for(size, pg)
        if len(size.workers) > 1:
            tried.append((f"m2.{label}", size.workers))
        if size.headline or size.growth:
            check_size(
                res,
                "M2" if size.headline else "M6",
                f"m2.{label}",
                size.workers,
                pg is not None,
            )
        if kept is None or etl_only:
            continue
        _serve(
            res,
            layout,
            scale,
            size,
            label,
            kept,
            sets,
            ctx,
            tried,
            headline=size is last_growth,
        )

    by_rows = sorted(layout.etl_labels, key=lambda lb: _rows(scale, lb))
    layout.etl_labels = by_rows
    if len(by_rows) > 1:
        # Below a few of its largest transactions the loader's pipeline never
        # fills, so its memory is still ramping up there: "flat" is judged
        # from the smallest input past that, when the scale has one.
        full = [lb for lb in by_rows if _rows(scale, lb) >= 4 * MAX_TXN_ROWS]
        check_memory(
            res,
            f"m2.{full[0] if len(full) > 1 else by_rows[0]}",
            f"m2.{by_rows[-1]}",
            ["coordinated_w1", "bare", "pg"],
            smallest_run=f"m2.{by_rows[0]}",
        )


def _serve(
    res: Results,
    layout: Layout,
    scale: Scale,
    size: Size,
    label: str,
    db: Path,
    sets: dict[str, Dataset],
    ctx: EtlContext,
    tried: list[tuple[str, tuple[int, ...]]],
    *,
    headline: bool,
) -> None:
    """Measures 3, 4 and 5 on the file one growth size left; then delete it."""
    workers = 1
    if tried:
        key, counts = tried[-1]
        workers = int(best_coordinated(res, key, counts).removeprefix("coordinated_w"))
        res.notes["daily load workers"] = (
            f"--workers {workers}, the faster count measured at"
            f" {key.removeprefix('m2.')} rows"
        )
    layout.daily_workers = workers
    dataset = sets[size.dataset]
    days = [date.fromisoformat(p.name) for p in dataset.days]
    days = days[:1] if size.first_day_only else days
    queries = partial(
        _queries_on, res, label, db, ctx, days, scale.query_reps, scale.query_budget_s
    )
    log.info("M3/M4/M5 backend on %s rows", label)
    load = sets[scale.daily].files()
    load = load if headline else load[: scale.growth_load_files]
    measure_serving(res, scale, label, db, days, load, ctx, workers, quiet=queries)
    if headline and ctx.pg is not None:
        log.info("M3 PostgreSQL write reference")
        measure_pg_writes(res, scale, label, sets[scale.daily], ctx)
    check_serving(
        res,
        "M3" if headline else "M6",
        label,
        burst_size=scale.burst,
        daily_rows=scale.dataset(scale.daily).rows,
        headline=headline,
    )
    if headline:
        check_queries(res, "M5", label)
    layout.growth_labels.append(label)
    for path in (db, db.with_name(db.name + ".wal")):
        path.unlink(missing_ok=True)


def _queries_on(
    res: Results,
    label: str,
    db: Path,
    ctx: EtlContext,
    days: list[date],
    reps: int,
    budget_s: float,
    base_url: str,
) -> None:
    measure_queries(
        res, label, base_url, db, ctx.redis_url, days, ctx.pg, reps, budget_s
    )


def _rows(scale: Scale, label: str) -> int:
    return next(
        scale.size_rows(s)
        for s in scale.sizes
        if rows_label(scale.size_rows(s)) == label
    )


def _postgres(dsn: str, res: Results) -> PgSchema | None:
    why = pg_reachable(dsn)
    if why is not None:
        res.skip("every PostgreSQL figure", why)
        return None
    schema = PgSchema(dsn, f"fxbench_{os.getpid()}")
    schema.create()
    with schema.connect() as con:
        row = con.execute("SHOW server_version").fetchone()
    res.meta["versions"] += f", PostgreSQL {row[0] if row else '?'}"
    return schema


def _loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _redis_version(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()


def _meta(scale: Scale) -> dict[str, Any]:
    packages = ("redis", "python-redis-lock", "psycopg", "httpx", "uvicorn")
    return {
        "scale": scale.name,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "loadavg_start": _loadavg(),
        "versions": ", ".join(
            [f"Python {platform.python_version()}", f"duckdb {duckdb.__version__}"]
            + [f"{p} {version(p)}" for p in packages]
        ),
    }
