"""Measure 5: the dashboard queries, DuckDB through the product vs PostgreSQL.

Three ways to the same answer, on the same rows, in a rotated order, with
nothing else running:

- http: the backend's route, over HTTP (lease pool, query, JSON);
- duckdb_sql: the route's SQL on a cursor of a shared lease taken for that
  query by this process; only the query is timed, not the lease;
- pg: the same SQL on PostgreSQL over one open psycopg connection, after
  an index on (fecha, ubicacion_id) and VACUUM ANALYZE (timed apart).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, LiteralString

import httpx
from psycopg import sql

from lockmanager import DuckDBWriteLockManager, LeaseConfig

from .etl import KEY_PREFIX
from .pg import PgConnection, PgSchema
from .results import Results

__all__ = ["CASES", "check_queries", "measure_queries"]

_RESUMEN: LiteralString = """
    SELECT fecha, ubicacion_id, sum(monto_total) AS monto_total,
           count(DISTINCT numero_factura) AS facturas, count(*) AS lineas
    FROM {table} WHERE fecha >= {p} AND fecha <= {p}
    GROUP BY fecha, ubicacion_id ORDER BY fecha, ubicacion_id"""
_TOP: LiteralString = """
    SELECT producto_id, max(descripcion) AS descripcion,
           sum(cantidad) AS cantidad, sum(monto_total) AS monto_total,
           count(DISTINCT numero_factura) AS facturas
    FROM {table} WHERE fecha >= {p} AND fecha <= {p}
    GROUP BY producto_id ORDER BY cantidad DESC, producto_id LIMIT {p}"""
_PAGE: LiteralString = """
    SELECT ubicacion_id, fecha, numero_factura, producto_id, descripcion,
           cantidad, precio_unitario, monto_total, cliente_id, {fila} AS fila
    FROM {table} WHERE fecha >= {p} AND fecha <= {p} AND ubicacion_id = {p}
    ORDER BY fecha, ubicacion_id, {fila} LIMIT {p} OFFSET {p}"""

CASES = {
    "resumen": "GET /ventas/resumen, every loaded day",
    "top": "GET /ventas/top-productos, one day, top 10",
    "ventas": "GET /ventas, one day and store, 50 lines",
}
_MIN_REPS = 3
_STORE = 3
_PAGE_LINES = 50


@dataclass
class _Case:
    """One dashboard query, runnable on each engine."""

    path: str
    params: dict[str, str]
    template: LiteralString
    args: list[Any]

    @classmethod
    def named(cls, name: str, days: list[date]) -> _Case:
        first, last = days[0], days[-1]
        one_day = {"desde": str(first), "hasta": str(first)}
        if name == "resumen":
            window = {"desde": str(first), "hasta": str(last)}
            return cls("/ventas/resumen", window, _RESUMEN, [first, last])
        if name == "top":
            return cls(
                "/ventas/top-productos",
                {**one_day, "limit": "10"},
                _TOP,
                [first, first, 10],
            )
        params = {**one_day, "ubicacion_id": str(_STORE), "limit": str(_PAGE_LINES)}
        # the route asks for one line more than the page, to know if one follows
        return cls("/ventas", params, _PAGE, [first, first, _STORE, _PAGE_LINES + 1, 0])

    def duck_rows(self, manager: DuckDBWriteLockManager) -> tuple[list[Any], float]:
        """The rows, and the ms the query took inside its shared lease."""
        text = self.template.format(table="ventas_raw", p="?", fila="rowid")
        with manager.read(name="bench-queries") as lease:
            cursor = lease.cursor()
            started = time.perf_counter()
            rows = cursor.execute(text, self.args).fetchall()
            return rows, (time.perf_counter() - started) * 1000

    def pg_rows(self, con: PgConnection, pg: PgSchema) -> tuple[list[Any], float]:
        query = sql.SQL(self.template).format(
            table=pg.sales, p=sql.SQL("%s"), fila=sql.Identifier("id")
        )
        started = time.perf_counter()
        rows = con.execute(query, self.args).fetchall()
        return rows, (time.perf_counter() - started) * 1000

    def http_ms(self, client: httpx.Client) -> float:
        started = time.perf_counter()
        client.get(self.path, params=self.params).raise_for_status()
        return (time.perf_counter() - started) * 1000


def measure_queries(
    res: Results,
    label: str,
    base_url: str,
    db: Path,
    redis_url: str,
    days: list[date],
    pg: PgSchema | None,
    reps: int,
    budget_s: float,
) -> None:
    """Record measure 5 at one size (`label` rows) into `res`."""
    key = f"m5.{label}"
    if pg is not None:
        res.measured(f"{key}.pg_index_s", pg.index_sales(), "s")
    manager = DuckDBWriteLockManager(
        redis_url, db, config=LeaseConfig(key_prefix=KEY_PREFIX), name="bench-queries"
    )
    try:
        with (
            httpx.Client(base_url=base_url, timeout=120) as client,
            pg.connect() if pg is not None else nullcontext() as pg_con,
        ):
            for name in CASES:
                case = _Case.named(name, days)
                runners: dict[str, Callable[[], float]] = {
                    "http": lambda case=case: case.http_ms(client),
                    "duckdb_sql": lambda case=case: case.duck_rows(manager)[1],
                }
                if pg is not None and pg_con is not None:
                    runners["pg"] = lambda case=case: case.pg_rows(pg_con, pg)[1]
                    _same_answer(res, f"{key}.{name}", case, manager, pg_con, pg)
                _time_case(res, f"{key}.{name}", runners, reps, budget_s)
    finally:
        manager.close()


def _time_case(
    res: Results,
    stem: str,
    runners: dict[str, Callable[[], float]],
    reps: int,
    budget_s: float,
) -> None:
    """Run every engine `reps` times (at least 3 when over `budget_s`)."""
    samples: dict[str, list[float]] = {engine: [] for engine in runners}
    started = time.monotonic()
    for run in runners.values():
        run()  # warm: first-touch costs are not what dashboards pay
    engines = list(runners)
    for rep in range(reps):
        if rep >= _MIN_REPS and time.monotonic() - started > budget_s:
            break
        shift = rep % len(engines)
        for engine in [*engines[shift:], *engines[:shift]]:
            samples[engine].append(runners[engine]())

    for engine, values in samples.items():
        series = res.add_series(f"{stem}.{engine}_ms", values, "ms")
        res.stat(f"{stem}.{engine}_p50_ms", series, "p50")
        res.stat(f"{stem}.{engine}_p99_ms", series, "p99")
    if "pg" in runners:
        for engine in ("http", "duckdb_sql"):
            res.ratio(
                f"{stem}.pg_over_{engine}",
                f"{stem}.pg_p50_ms",
                f"{stem}.{engine}_p50_ms",
            )


def _same_answer(
    res: Results,
    stem: str,
    case: _Case,
    manager: DuckDBWriteLockManager,
    con: PgConnection,
    pg: PgSchema,
) -> None:
    """Note whether both databases return the same rows (row ids aside)."""

    def plain(rows: list[Any]) -> list[tuple[Any, ...]]:
        return sorted(
            tuple(
                v.quantize(Decimal("0.000001")) if isinstance(v, Decimal) else v
                for v in row[:9]
            )
            for row in rows
        )

    duck, post = plain(case.duck_rows(manager)[0]), plain(case.pg_rows(con, pg)[0])
    res.notes[f"{stem}.same_answer"] = (
        "yes"
        if duck == post
        else (f"no: DuckDB gave {len(duck)} rows, PostgreSQL {len(post)}")
    )


def check_queries(res: Results, measure: str, label: str) -> None:
    """DESIGN.md's reason to keep DuckDB: 3x faster than PostgreSQL."""
    for name, what in CASES.items():
        res.check(
            measure,
            f"{label} rows: {what}: PostgreSQL p50 / DuckDB via HTTP p50",
            [f"m5.{label}.{name}.pg_over_http"],
            ">=",
            3.0,
            note="target from DESIGN.md ('3x faster than PostgreSQL')",
        )
