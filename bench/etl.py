"""Measure 2: CSV exports to a table, three ways, on the very same files.

- coordinated: the product's `fluxion etl load` (`etl.parallel.load_files`
  under the lease manager), with each worker count of the size;
- bare: the same parser, inserting through one exclusive DuckDB connection
  with no lease manager (`bench.etl_job bare`);
- pg: PostgreSQL COPY of the same CSV files (`bench.etl_job pg`).

Each load is a fresh process into an empty table. Its rate is rows in the
table over the seconds its own timer reports (from the first file read to
the data durable and the file closed); the process wall time, which adds
interpreter start-up, is kept beside it. Memory is the high-water mark of
the largest process of the load, and the peak sum over all its processes
(see `bench.services`). Variants run in a rotated
order inside every repeat; ratios are paired within the repeat.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .data import Dataset
from .pg import PgSchema
from .results import Results
from .scale import Scale, Size, rows_label
from .services import Measured, Outcome

__all__ = [
    "EtlContext",
    "best_coordinated",
    "check_memory",
    "check_size",
    "coordinated_argv",
    "measure_size",
    "variants_for",
]

KEY_PREFIX = "fxbench"
PG_CONNECTIONS = 2  # one per core: the faster PostgreSQL setting here


@dataclass
class EtlContext:
    """What every load needs: where to write, which servers, how long to wait."""

    workdir: Path
    redis_url: str
    pg: PgSchema | None
    timeout_s: float


def coordinated_argv(
    inputs: list[Path], db: Path, redis_url: str, workers: int
) -> list[str]:
    """`fluxion etl load` as the product ships it, with a JSON report."""
    return [
        sys.executable,
        "-m",
        "backend.cli",
        "etl",
        "load",
        *map(str, inputs),
        "--db",
        str(db),
        "--redis",
        redis_url,
        "--workers",
        str(workers),
        "--key-prefix",
        KEY_PREFIX,
        "--json",
    ]


def _remove_db(path: Path) -> None:
    for candidate in (path, path.with_name(path.name + ".wal")):
        candidate.unlink(missing_ok=True)


def variants_for(size: Size, pg: PgSchema | None) -> list[str]:
    names = [f"coordinated_w{n}" for n in size.workers] + ["bare"]
    return names + (["pg"] if pg is not None else [])


def _run_one(
    variant: str, inputs: list[Path], ctx: EtlContext, db: Path, log: Path
) -> tuple[Outcome, int, float]:
    """One load; returns how it ended, the rows in the table, its seconds."""
    if variant.startswith("coordinated_w"):
        _remove_db(db)
        workers = int(variant.removeprefix("coordinated_w"))
        argv = coordinated_argv(inputs, db, ctx.redis_url, workers)
        out = Measured(argv, log).wait(ctx.timeout_s)
        if not out.ok:
            return out, 0, 0.0
        return out, int(out.report["rows_loaded"]), float(out.report["elapsed_s"])
    if variant == "bare":
        _remove_db(db)
        argv = [sys.executable, "-m", "bench.etl_job", "bare", "--db", str(db)]
    else:
        assert ctx.pg is not None  # pg is a variant only when PostgreSQL answers
        ctx.pg.reset_sales()
        argv = [
            sys.executable,
            "-m",
            "bench.etl_job",
            "pg",
            "--dsn",
            ctx.pg.dsn,
            "--schema",
            ctx.pg.name,
            "--connections",
            str(PG_CONNECTIONS),
        ]
    out = Measured([*argv, *map(str, inputs)], log).wait(ctx.timeout_s)
    if not out.ok:
        return out, 0, 0.0
    return out, int(out.report["rows"]), float(out.report["seconds"])


def measure_size(
    res: Results, scale: Scale, size: Size, data: Dataset, ctx: EtlContext
) -> Path | None:
    """Every variant at one input size; returns the kept DuckDB file.

    A growth size keeps its last coordinated (one worker) file, and the
    last PostgreSQL table, for the backend and query measures.
    """
    rows_expected = scale.size_rows(size)
    key = f"m2.{rows_label(rows_expected)}"
    inputs = data.inputs(size.first_day_only)
    variants = variants_for(size, ctx.pg)
    kept = ctx.workdir / f"growth-{rows_label(rows_expected)}.duckdb"
    scratch = ctx.workdir / "m2-scratch.duckdb"

    for repeat in range(size.repeats):
        shift = repeat % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            last = repeat == size.repeats - 1
            db = (
                kept
                if last and size.growth and variant == "coordinated_w1"
                else scratch
            )
            log = ctx.workdir / f"{key}.{variant}.run{repeat}.log"
            out, rows, seconds = _run_one(variant, inputs, ctx, db, log)
            if db == scratch:
                _remove_db(scratch)
            if not out.ok:
                res.skip(f"{key}.{variant}.run{repeat}", f"the load failed ({out.why})")
                continue
            _record_run(res, f"{key}.{variant}.run{repeat}", out, rows, seconds)
            if rows != rows_expected:
                res.notes[f"{key}.{variant}.run{repeat}"] = (
                    f"loaded {rows} rows of {rows_expected} generated"
                )
            if variant.startswith("coordinated"):
                res.measured(
                    f"{key}.{variant}.run{repeat}.lock_wait_s",
                    float(out.report["lock_wait_s"]),
                    "s",
                )

    _summarise(res, key, variants, size.repeats)
    return kept if size.growth and kept.exists() else None


def _record_run(
    res: Results, stem: str, out: Outcome, rows: int, seconds: float
) -> None:
    res.measured(f"{stem}.rows", rows, "rows")
    res.measured(f"{stem}.seconds", seconds, "s")
    res.measured(f"{stem}.wall_s", out.wall_s, "s")
    res.measured(f"{stem}.peak_rss_mb", out.peak_rss_mb, "MB")
    res.measured(f"{stem}.tree_rss_mb", out.tree_rss_mb, "MB")
    res.rate(f"{stem}.rows_per_s", f"{stem}.rows", f"{stem}.seconds", "rows/s")


def _summarise(res: Results, key: str, variants: list[str], repeats: int) -> None:
    for variant in variants:
        for what, unit_stat in (
            ("rows_per_s", "median"),
            ("peak_rss_mb", "max"),
            ("tree_rss_mb", "max"),
            ("seconds", "median"),
            ("wall_s", "median"),
        ):
            names = [f"{key}.{variant}.run{r}.{what}" for r in range(repeats)]
            names = [n for n in names if n in res.figures]
            if names:
                series = res.collect(f"{key}.{variant}.{what}_runs", names)
                res.stat(f"{key}.{variant}.{what}", series, unit_stat)

    coordinated = [v for v in variants if v.startswith("coordinated")]
    for mine in coordinated:
        for theirs in ("bare", "pg"):
            if theirs not in variants:
                continue
            names = []
            for r in range(repeats):
                name = f"{key}.{mine}_vs_{theirs}.run{r}.ratio"
                pair = [f"{key}.{v}.run{r}.rows_per_s" for v in (mine, theirs)]
                if (
                    all(p in res.figures for p in pair)
                    and res.ratio(name, *pair) is not None
                ):
                    names.append(name)
            if names:
                series = res.collect(f"{key}.{mine}_vs_{theirs}.ratios", names)
                res.stat(f"{key}.{mine}_vs_{theirs}.ratio", series, "median")


def best_coordinated(res: Results, key: str, workers: tuple[int, ...]) -> str:
    """The coordinated variant with the highest median rate at this size."""

    def rate(n: int) -> float:
        return res.value(f"{key}.coordinated_w{n}.rows_per_s") or 0.0

    return f"coordinated_w{max(workers, key=rate)}"


def check_size(
    res: Results, measure: str, key: str, workers: tuple[int, ...], pg: bool
) -> None:
    """The issue's three ETL targets at one size, for the best worker count."""
    best = best_coordinated(res, key, workers)
    rows = key.removeprefix("m2.")
    res.check(
        measure,
        f"{rows} rows: coordinated load ({best}) rows/s",
        [f"{key}.{best}.rows_per_s"],
        ">=",
        1_000_000,
    )
    res.check(
        measure,
        f"{rows} rows: coordinated / bare DuckDB, rows/s",
        [f"{key}.{best}_vs_bare.ratio"],
        ">=",
        0.8,
    )
    if pg:
        res.check(
            measure,
            f"{rows} rows: coordinated / PostgreSQL COPY, rows/s",
            [f"{key}.{best}_vs_pg.ratio"],
            ">=",
            1.3,
        )


def check_memory(
    res: Results,
    smallest: str,
    largest: str,
    variants: list[str],
    *,
    smallest_run: str,
) -> None:
    """Peak RSS at the largest input over the reference input, per loader.

    The ratio over the smallest input of all (`smallest_run`) is recorded
    beside it, so the ramp-up below the reference stays in the report.
    """
    for variant in variants:
        large = f"{largest}.{variant}.peak_rss_mb"
        for ref, name in ((smallest, "rss_growth"), (smallest_run, "rss_growth_all")):
            small = f"{ref}.{variant}.peak_rss_mb"
            if small in res.figures and large in res.figures:
                res.ratio(f"m2.memory.{variant}.{name}", large, small)
    res.check(
        "M2",
        f"peak RSS of the coordinated load, {largest.removeprefix('m2.')} rows"
        f" / {smallest.removeprefix('m2.')} rows (flat memory)",
        ["m2.memory.coordinated_w1.rss_growth"],
        "<=",
        1.25,
        note="the 1.25 bound is this harness's reading of 'flat', not the"
        " issue's; inputs under four of the loader's largest transactions are"
        " left out of it, as its pipeline is not yet full there (their ratio"
        " is m2.memory.coordinated_w1.rss_growth_all)",
    )
