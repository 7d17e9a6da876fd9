"""The report's section per measure, each a list of Markdown lines."""

from __future__ import annotations

from dataclasses import dataclass, field

from .lockkinds import KINDS
from .locks import CONTENDED, LABELS, UNCONTENDED
from .markdown import cell, counted, pair, table
from .queries import CASES
from .results import Results

__all__ = [
    "Layout",
    "daily_section",
    "etl_section",
    "growth_section",
    "locks_section",
    "queries_section",
    "serving_section",
]


@dataclass
class Layout:
    """Which sizes this run measured, in rows order."""

    etl_labels: list[str] = field(default_factory=list)
    etl_variants: dict[str, list[str]] = field(default_factory=dict)
    growth_labels: list[str] = field(default_factory=list)
    daily_workers: int = 1


def locks_section(res: Results) -> list[str]:
    rows = []
    for kind in dict.fromkeys([*UNCONTENDED, *CONTENDED]):
        u, c = f"m1.uncontended.{kind}", f"m1.contended.{kind}"
        rows.append(
            [
                LABELS[kind],
                cell(res, f"{u}.p50_ms"),
                cell(res, f"{u}.p99_ms"),
                cell(res, f"{c}.p50_ms"),
                cell(res, f"{c}.p99_ms"),
                cell(res, f"{c}.ops_per_s"),
            ]
        )
    ratios = []
    for mine in ("fluxion_protocol", "fluxion_file"):
        for theirs in ("redis_py", "redis_py_1ms", "prl", "prl_renew"):
            u, c = (
                f"m1.uncontended.{mine}_vs_{theirs}",
                f"m1.contended.{mine}_vs_{theirs}",
            )
            ratios.append(
                [
                    f"{LABELS[mine]} / {LABELS[theirs]}",
                    cell(res, f"{u}.p50_ratio"),
                    cell(res, f"{u}.p99_ratio"),
                    cell(res, f"{c}.p50_ratio"),
                    cell(res, f"{c}.p99_ratio"),
                ]
            )
    return [
        "## M1 Lease acquire+release vs plain Redis locks",
        "",
        "Same private `redis-server`, hold time zero. What each row times:",
        "",
        *(f"- {LABELS[k]}: {text}" for k, text in KINDS.items()),
        "",
        *table(
            [
                "lock",
                "uncontended p50 ms",
                "p99 ms",
                "contended p50 ms",
                "p99 ms",
                "contended ops/s",
            ],
            rows,
        ),
        "",
        *table(
            [
                "ratio (lower is better for fluxion)",
                "uncontended p50",
                "p99",
                "contended p50",
                "p99",
            ],
            ratios,
        ),
        "",
        "![M1](m1_locks.png)",
        "",
    ]


def etl_section(res: Results, layout: Layout) -> list[str]:
    rows = []
    for label in layout.etl_labels:
        key = f"m2.{label}"
        for variant in layout.etl_variants[label]:
            rows.append(
                [
                    label,
                    variant,
                    cell(res, f"{key}.{variant}.rows_per_s"),
                    cell(res, f"{key}.{variant}.seconds"),
                    cell(res, f"{key}.{variant}.wall_s"),
                    cell(res, f"{key}.{variant}.peak_rss_mb"),
                    cell(res, f"{key}.{variant}.tree_rss_mb"),
                    cell(res, f"{key}.{variant}_vs_bare.ratio"),
                    cell(res, f"{key}.{variant}_vs_pg.ratio"),
                ]
            )
    growth = [
        [
            v,
            cell(res, f"m2.memory.{v}.rss_growth"),
            cell(res, f"m2.memory.{v}.rss_growth_all"),
        ]
        for v in ("coordinated_w1", "bare", "pg")
    ]
    return [
        "## M2 ETL end to end from CSV",
        "",
        (
            "coordinated_wN = `fluxion etl load --workers N` (lease manager, fence,"
            " batch records); bare = same parser, one plain exclusive DuckDB"
            " connection, the loader's largest transactions and DuckDB settings; pg = PostgreSQL COPY of the same files, 2 connections,"
            " into a logged table without index. Load s is each loader's own timer"
            " (first read to data durable); wall s adds process start-up. Memory:"
            " VmHWM of the largest process of the load, and the peak sum of VmRSS"
            " over its processes, sampled every 50 ms (PostgreSQL's server not"
            " included)."
        ),
        "",
        *table(
            [
                "rows",
                "loader",
                "rows/s",
                "load s",
                "wall s",
                "largest process MB",
                "all processes MB",
                "/ bare",
                "/ pg",
            ],
            rows,
        ),
        "",
        *table(
            [
                "loader",
                "peak RSS, largest input / reference",
                "largest / smallest of all",
            ],
            growth,
        ),
        "",
        (
            "The reference is the smallest input of at least four of the"
            " loader's largest transactions: below that its pipeline is not"
            " yet full and its memory still ramps up."
        ),
        "",
        "![M2](m2_etl.png)",
        "",
    ]


def _phase_row(res: Results, key: str, who: str, phase: str) -> list[str]:
    stem = f"{key}.{phase}"
    return [
        who,
        phase,
        cell(res, f"{stem}.read_p50_ms"),
        cell(res, f"{stem}.read_p99_ms"),
        cell(res, f"{stem}.write_p50_ms"),
        cell(res, f"{stem}.write_p99_ms"),
        cell(res, f"{stem}.read_requests"),
        cell(res, f"{stem}.write_requests"),
        cell(res, f"{stem}.errors"),
        cell(res, f"{stem}.burst_wall_ms"),
        cell(res, f"{stem}.burst_ok"),
    ]


def serving_section(res: Results, layout: Layout) -> list[str]:
    rows = []
    for label in layout.growth_labels:
        key = f"m3.{label}"
        for phase in ("idle", "load"):
            rows.append([label, *_phase_row(res, key, "fluxion HTTP", phase)])
            if f"{key}.pg.{phase}.errors" in res.figures:
                rows.append([label, *_phase_row(res, f"{key}.pg", "PostgreSQL", phase)])
    return [
        "## M3 Backend under traffic: idle vs during the daily load",
        "",
        (
            "One `fluxion serve` (one uvicorn worker); httpx clients on 127.0.0.1:"
            " readers cycle /ventas/resumen, /ventas/top-productos, /ventas;"
            " writers alternate POST /usuarios and POST /pedidos. The load phase"
            f" lasts the whole `fluxion etl load --workers {layout.daily_workers}`"
            " of the daily exports. The burst sends all orders at once over"
            " already-open connections, once the loader holds the file. PostgreSQL"
            " rows: the same writes as plain INSERTs (no HTTP), idle and during a"
            " COPY of the same daily files; its burst runs over a pool of open"
            " connections."
        ),
        "",
        *table(
            [
                "rows in file",
                "who",
                "phase",
                "read p50 ms",
                "read p99 ms",
                "write p50 ms",
                "write p99 ms",
                "reads",
                "writes",
                "errors",
                "burst wall ms",
                "burst ok",
            ],
            rows,
        ),
        "",
        "![M3](m3_backend.png)",
        "",
    ]


def daily_section(res: Results, layout: Layout) -> list[str]:
    rows = []
    for label in layout.growth_labels:
        k = f"m4.{label}"
        rows.append(
            [
                label,
                cell(res, f"{k}.rows"),
                cell(res, f"{k}.etl_seconds"),
                cell(res, f"{k}.etl_wall_s"),
                cell(res, f"{k}.rows_per_s"),
                cell(res, f"{k}.etl_lock_wait_s"),
                cell(res, f"{k}.etl_turns"),
                counted(
                    res, f"{k}.backend_wait_shared_s", f"{k}.backend_leases_shared"
                ),
                counted(
                    res,
                    f"{k}.backend_wait_exclusive_s",
                    f"{k}.backend_leases_exclusive",
                ),
                res.notes.get(f"{k}.outcome", "n/a"),
            ]
        )
    return [
        "## M4 Daily load with the backend serving",
        "",
        (
            "The load of measure 3's traffic phase: the whole daily export at the"
            " largest size, its first files at the others. Lock wait of each"
            " side: the loader's `lock_wait_s` from its report; the backend's"
            " from `/metrics` `fluxion_lease_wait_seconds`, summed over the load"
            " (leases waited for in brackets). A load still running at the"
            " harness's limit is stopped; its rows committed by then are"
            " counted and its rate is over the wall time."
        ),
        "",
        *table(
            [
                "rows in file",
                "rows loaded",
                "load s",
                "wall s",
                "rows/s",
                "ETL lock wait s",
                "ETL write turns",
                "backend shared wait s",
                "backend exclusive wait s",
                "outcome",
            ],
            rows,
        ),
        "",
    ]


def queries_section(res: Results, layout: Layout) -> list[str]:
    rows = []
    for label in layout.growth_labels:
        for case, what in CASES.items():
            s = f"m5.{label}.{case}"
            rows.append(
                [
                    label,
                    what,
                    pair(res, f"{s}.http_p50_ms", f"{s}.http_p99_ms"),
                    pair(res, f"{s}.duckdb_sql_p50_ms", f"{s}.duckdb_sql_p99_ms"),
                    pair(res, f"{s}.pg_p50_ms", f"{s}.pg_p99_ms"),
                    cell(res, f"{s}.pg_over_http"),
                    cell(res, f"{s}.pg_over_duckdb_sql"),
                    res.notes.get(f"m5.{label}.{case}.same_answer", "n/a"),
                ]
            )
    index_times = ", ".join(
        f"{cell(res, f'm5.{g}.pg_index_s')} s" for g in layout.growth_labels
    )
    return [
        "## M5 Dashboard queries: DuckDB through the product vs PostgreSQL",
        "",
        (
            "HTTP = the backend's route; DuckDB SQL = the route's SQL on a cursor"
            " of a shared lease taken for each query (only the query is timed);"
            " PostgreSQL = the same SQL over an open connection, indexed on"
            " (fecha, ubicacion_id) and analyzed (index time:"
            f" {index_times})."
        ),
        "",
        *table(
            [
                "rows",
                "query",
                "HTTP p50 / p99 ms",
                "DuckDB SQL p50 / p99 ms",
                "PostgreSQL p50 / p99 ms",
                "PG / HTTP",
                "PG / DuckDB SQL",
                "same answer",
            ],
            rows,
        ),
        "",
        "![M5](m5_queries.png)",
        "",
    ]


def growth_section(res: Results, layout: Layout) -> list[str]:
    rows = []
    for label in layout.growth_labels:
        m2, m3 = f"m2.{label}", f"m3.{label}"
        rows.append(
            [
                label,
                cell(res, f"{m2}.coordinated_w1.rows_per_s"),
                cell(res, f"{m2}.bare.rows_per_s"),
                cell(res, f"{m2}.pg.rows_per_s"),
                cell(res, f"{m2}.coordinated_w1.peak_rss_mb"),
                cell(res, f"{m3}.idle.read_p99_ms"),
                cell(res, f"{m3}.load.read_p99_ms"),
                cell(res, f"{m3}.load.write_p99_ms"),
                cell(res, f"m5.{label}.resumen.http_p50_ms"),
                cell(res, f"m5.{label}.resumen.pg_p50_ms"),
            ]
        )
    return [
        "## M6 Growth",
        "",
        *table(
            [
                "rows",
                "coordinated rows/s",
                "bare rows/s",
                "pg rows/s",
                "coordinated RSS MB",
                "read p99 idle ms",
                "read p99 load ms",
                "write p99 load ms",
                "resumen HTTP p50 ms",
                "resumen PG p50 ms",
            ],
            rows,
        ),
        "",
        "![M6](m6_growth.png)",
        "",
    ]
