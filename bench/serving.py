"""Measures 3 and 4: the backend under traffic, idle and during a daily load.

One `fluxion serve` process (one uvicorn worker) on the file a growth size
left behind. The same HTTP traffic runs twice: idle, for `scale.idle_s`,
and while `fluxion etl load` loads daily exports into the same file, from
the loader's start to its end (or to `scale.serve_timeout_s`, when the
loader is stopped). In each phase, once the loader holds the file, a
burst of orders is sent at once. The backend's lease
waits come from its `/metrics`, read before and after the load; the
loader's from its own report. PostgreSQL gets the same writes as plain
INSERTs, idle and during a COPY of the same daily files, as a reference.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import httpx

from etl.formats import file_sha256
from lockmanager import DuckDBWriteLockManager, LeaseConfig
from lockmanager.private_redis import free_port

from .data import Dataset
from .etl import KEY_PREFIX, PG_CONNECTIONS, EtlContext, coordinated_argv
from .pgwrites import PgWriters, copy_active, pg_burst, pg_user
from .results import Results
from .scale import Scale
from .services import Measured, start_backend
from .traffic import Burst, HttpLoad, Samples, burst, lease_waits, new_user

__all__ = ["check_serving", "measure_pg_writes", "measure_serving"]

_START_WAIT_S = 60.0
_POLL_S = 0.02
# The daily load: 16 stores x 500k rows in under 15 s.
DAILY_ROWS = 8_000_000
DAILY_TARGET_S = 15.0


def measure_serving(
    res: Results,
    scale: Scale,
    label: str,
    db: Path,
    days: list[date],
    load: list[Path],
    ctx: EtlContext,
    workers: int,
    quiet: Callable[[str], None] | None = None,
) -> None:
    """Record measures 3 and 4 at one growth size (`label` rows in `db`).

    `load` are the export files loaded during the traffic. A load still
    running after `scale.serve_timeout_s` is stopped, and the rows it had
    committed by then are counted. `quiet`, if given, runs with the
    backend's URL before any traffic (measure 5 uses the idle backend).
    """
    key = f"m3.{label}"
    log = ctx.workdir / f"{key}.backend.log"
    backend = start_backend(db, ctx.redis_url, KEY_PREFIX, free_port(), log)
    try:
        with httpx.Client(base_url=backend.base_url, timeout=30) as client:
            user = new_user(client)
        if quiet is not None:
            quiet(backend.base_url)

        def traffic() -> HttpLoad:
            return HttpLoad(
                backend.base_url,
                readers=scale.readers,
                writers=scale.writers,
                think_s=scale.think_s,
                days=days,
                usuario_id=user,
            )

        idle = _timed_phase(traffic().start(), scale.idle_s)
        idle_burst = burst(backend.base_url, scale.burst, user)
        before = lease_waits(backend.base_url)

        argv = coordinated_argv(load, db, ctx.redis_url, workers)
        loader = Measured(argv, ctx.workdir / f"m4.{label}.etl.log")
        clients = traffic().start()
        with _lock_watch(ctx.redis_url, db) as manager:
            _wait_for(lambda: _etl_holds(manager) or not loader.running())
            load_burst = burst(backend.base_url, scale.burst, user)
            burst_in_load = loader.running()
            etl = loader.wait(scale.serve_timeout_s)
            during = clients.stop()
            after = lease_waits(backend.base_url)
            committed = etl.report.get("rows_loaded")
            if not etl.ok:
                committed = _committed(manager, load)
    finally:
        backend.stop()

    _record_phase(res, f"{key}.idle", idle, idle_burst)
    _record_phase(res, f"{key}.load", during, load_burst)
    if not burst_in_load:
        res.notes[f"{key}.load.burst"] = "the load ended before the burst finished"
    for q in ("p50", "p99"):
        for kind in ("read", "write"):
            res.ratio(
                f"{key}.{kind}_{q}_load_over_idle",
                f"{key}.load.{kind}_{q}_ms",
                f"{key}.idle.{kind}_{q}_ms",
            )
    stem = f"m4.{label}"
    _record_backend_waits(res, stem, before, after)
    res.measured(f"{stem}.rows", float(committed or 0), "rows")
    res.measured(f"{stem}.etl_wall_s", etl.wall_s, "s")
    if etl.ok:
        _record_daily(res, stem, etl.report)
        res.notes[f"{stem}.outcome"] = "finished"
        return
    res.rate(f"{stem}.rows_per_s", f"{stem}.rows", f"{stem}.etl_wall_s", "rows/s")
    res.notes[f"{stem}.outcome"] = (
        f"not finished: {etl.why}; {committed:,} of the load's rows were"
        f" committed after {etl.wall_s:.0f} s"
    )


def _committed(manager: DuckDBWriteLockManager, load: list[Path]) -> int:
    """Rows of `load` already in the file, found through their batches."""
    shas = [file_sha256(path) for path in load]
    with manager.read(wait_for=_START_WAIT_S) as lease:
        row = (
            lease.cursor()
            .execute(
                "SELECT count(*) FROM ventas_raw WHERE lote IN (SELECT lote"
                " FROM etl_batches WHERE list_contains(?::VARCHAR[], file_sha))",
                [shas],
            )
            .fetchone()
        )
    return int(row[0]) if row else 0


def _timed_phase(load: HttpLoad | PgWriters, seconds: float) -> Samples:
    time.sleep(seconds)
    return load.stop()


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _START_WAIT_S
    while not condition() and time.monotonic() < deadline:
        time.sleep(_POLL_S)


@contextmanager
def _lock_watch(redis_url: str, db: Path) -> Iterator[DuckDBWriteLockManager]:
    """A lease manager on the file, used only to look at its holders."""
    manager = DuckDBWriteLockManager(
        redis_url, db, config=LeaseConfig(key_prefix=KEY_PREFIX), name="bench-watch"
    )
    try:
        yield manager
    finally:
        manager.close()


def _etl_holds(manager: DuckDBWriteLockManager) -> bool:
    """Whether an ETL worker holds the file now."""
    holders = manager.inspect(history=1)["holders"]
    return any(str(h.get("name", "")).startswith("etl") for h in holders)


def _record_phase(
    res: Results, stem: str, samples: Samples, shot: Burst, reads: bool = True
) -> None:
    for kind, values in (("read", samples.read_ms), ("write", samples.write_ms)):
        if kind == "read" and not reads:
            continue
        if not values:
            res.skip(f"{stem}.{kind}", "no request of this kind completed")
            continue
        series = res.add_series(f"{stem}.{kind}_ms", values, "ms")
        res.stat(f"{stem}.{kind}_p50_ms", series, "p50")
        res.stat(f"{stem}.{kind}_p99_ms", series, "p99")
        res.measured(f"{stem}.{kind}_requests", len(values), "requests")
    res.measured(f"{stem}.errors", samples.errors, "requests")
    if samples.errors:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(samples.statuses.items()))
        res.notes[f"{stem}.statuses"] = f"HTTP statuses (0 = no answer): {codes}"
    res.measured(f"{stem}.burst_wall_ms", shot.wall_ms, "ms")
    res.measured(f"{stem}.burst_ok", shot.ok, "orders")


def _record_daily(res: Results, stem: str, report: dict[str, object]) -> None:
    res.measured(f"{stem}.etl_seconds", float(str(report["elapsed_s"])), "s")
    res.measured(f"{stem}.etl_lock_wait_s", float(str(report["lock_wait_s"])), "s")
    res.measured(f"{stem}.etl_turns", float(str(report["write_turns"])), "turns")
    res.rate(f"{stem}.rows_per_s", f"{stem}.rows", f"{stem}.etl_seconds", "rows/s")


def _record_backend_waits(
    res: Results,
    stem: str,
    before: dict[str, tuple[float, float]],
    after: dict[str, tuple[float, float]],
) -> None:
    for mode in sorted(set(before) | set(after)):
        total = after.get(mode, (0.0, 0.0))[0] - before.get(mode, (0.0, 0.0))[0]
        count = after.get(mode, (0.0, 0.0))[1] - before.get(mode, (0.0, 0.0))[1]
        res.measured(f"{stem}.backend_wait_{mode}_s", total, "s")
        res.measured(f"{stem}.backend_leases_{mode}", count, "leases")
        res.ratio(
            f"{stem}.backend_wait_{mode}_mean_s",
            f"{stem}.backend_wait_{mode}_s",
            f"{stem}.backend_leases_{mode}",
        )


def measure_pg_writes(
    res: Results, scale: Scale, label: str, daily: Dataset, ctx: EtlContext
) -> None:
    """The PostgreSQL reference: the same writes, idle and during a COPY."""
    pg = ctx.pg
    assert pg is not None  # called only when PostgreSQL answers
    key = f"m3.{label}.pg"
    pg.reset_app()
    with pg.connect() as con:
        user = pg_user(con, pg)

    def writers() -> PgWriters:
        return PgWriters(pg, writers=scale.writers, think_s=scale.think_s, user=user)

    idle = _timed_phase(writers().start(), scale.idle_s)
    idle_burst = pg_burst(pg, scale.burst, scale.pg_pool, user)
    argv = [
        sys.executable,
        "-m",
        "bench.etl_job",
        "pg",
        "--dsn",
        pg.dsn,
        "--schema",
        pg.name,
        "--connections",
        str(PG_CONNECTIONS),
        *map(str, daily.inputs()),
    ]
    copy = Measured(argv, ctx.workdir / f"{key}.copy.log")
    load = writers().start()
    _wait_for(lambda: copy_active(pg) or not copy.running())
    load_burst = pg_burst(pg, scale.burst, scale.pg_pool, user)
    copied = copy.wait(ctx.timeout_s)
    during = load.stop()
    if not copied.ok:
        res.skip(
            f"{key} (the PostgreSQL write reference)", f"COPY failed ({copied.why})"
        )
        return

    _record_phase(res, f"{key}.idle", idle, idle_burst, reads=False)
    _record_phase(res, f"{key}.load", during, load_burst, reads=False)
    res.measured(f"{key}.copy_seconds", float(copied.report["seconds"]), "s")
    res.ratio(
        f"m3.{label}.write_p99_vs_pg",
        f"m3.{label}.load.write_p99_ms",
        f"{key}.load.write_p99_ms",
    )


def check_serving(
    res: Results,
    measure: str,
    label: str,
    *,
    burst_size: int,
    daily_rows: int,
    headline: bool,
) -> None:
    """The issue's backend targets at one size; the daily-load wall if headline."""
    key = f"m3.{label}"
    res.check(
        measure,
        f"{label} rows: write p99 during the load (ms)",
        [f"{key}.load.write_p99_ms"],
        "<",
        100.0,
    )
    res.check(
        measure,
        f"{label} rows: read p99, during load / idle",
        [f"{key}.read_p99_load_over_idle"],
        "<=",
        1.5,
    )
    res.check(
        measure,
        f"{label} rows: {burst_size} concurrent orders during the load, wall (ms)",
        [f"{key}.load.burst_wall_ms"],
        "<",
        150.0,
        note=res.notes.get(f"{key}.load.burst", ""),
    )
    if not headline:
        return
    target = DAILY_TARGET_S * daily_rows / DAILY_ROWS
    scaled = (
        "" if daily_rows == DAILY_ROWS else f", target scaled to {daily_rows:,} rows"
    )
    res.check(
        "M4",
        f"daily load with the backend serving (s){scaled}",
        [f"m4.{label}.etl_seconds"],
        "<",
        round(target, 3),
        note="the loader's own time; the process wall is in the M4 table",
    )
