"""How big each run is: the full run, `--quick`, and the smoke test's tiny one.

The full run follows the issue: a daily load of 16 stores x 500k rows, and
growth at 1M, 5M and 20M rows. `--quick` keeps every measure but at 1M
rows at most (a 250k-row daily load, one ETL worker count), to finish in
under three minutes on two cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

__all__ = ["DataSpec", "Scale", "Size", "rows_label", "scale_named"]


@dataclass(frozen=True)
class DataSpec:
    """A set of generated exports: stores x days x rows per store."""

    key: str
    stores: int
    days: int
    rows_per_store: int
    start: date

    @property
    def rows(self) -> int:
        return self.stores * self.days * self.rows_per_store


@dataclass(frozen=True)
class Size:
    """One input of the ETL comparison (measure 2).

    Attributes:
        dataset: the `DataSpec.key` it loads.
        first_day_only: load only the dataset's first day (a subset).
        repeats: runs of every variant; ratios are paired per run.
        workers: ETL worker counts tried for the coordinated load.
        growth: also serve it through the backend (measures 3, 5 and 6).
            The last growth size gets the whole daily load (measure 4);
            the others the first `Scale.growth_load_files` files of it.
        headline: the size whose checks stand for measure 2.
    """

    dataset: str
    first_day_only: bool = False
    repeats: int = 1
    workers: tuple[int, ...] = (1,)
    growth: bool = False
    headline: bool = False


@dataclass(frozen=True)
class Scale:
    """Every size and count of one run; see the module docstring."""

    name: str
    datasets: tuple[DataSpec, ...]
    sizes: tuple[Size, ...]
    daily: str
    lock_ops: int
    lock_file_ops: int
    lock_repeats: int
    contenders: int
    contended_ops: int
    contended_file_ops: int
    contended_repeats: int
    idle_s: float
    serve_timeout_s: float
    growth_load_files: int
    readers: int
    writers: int
    think_s: float
    burst: int
    pg_pool: int
    query_reps: int
    query_budget_s: float
    etl_timeout_s: float

    def dataset(self, key: str) -> DataSpec:
        return next(d for d in self.datasets if d.key == key)

    def size_rows(self, size: Size) -> int:
        spec = self.dataset(size.dataset)
        return spec.rows // spec.days if size.first_day_only else spec.rows


def rows_label(rows: int) -> str:
    """A short, exact label: 1M, 400k, 6400."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows % 1_000 == 0:
        return f"{rows // 1_000}k"
    return str(rows)


_BASE_DAY = date(2026, 1, 5)

FULL = Scale(
    name="full",
    datasets=(
        DataSpec("base", 16, 1, 62_500, _BASE_DAY),
        DataSpec("big", 16, 4, 312_500, date(2026, 1, 6)),
        DataSpec("daily", 16, 1, 500_000, date(2026, 1, 12)),
    ),
    sizes=(
        Size("daily", repeats=3, workers=(1, 2), headline=True),
        Size("base", repeats=2, growth=True),
        Size("big", first_day_only=True, growth=True),
        Size("big", growth=True),
    ),
    daily="daily",
    lock_ops=300,
    lock_file_ops=60,
    lock_repeats=3,
    contenders=8,
    contended_ops=40,
    contended_file_ops=10,
    contended_repeats=3,
    idle_s=8.0,
    serve_timeout_s=300.0,
    growth_load_files=4,
    readers=2,
    writers=1,
    think_s=0.05,
    burst=100,
    pg_pool=20,
    query_reps=10,
    query_budget_s=15.0,
    etl_timeout_s=900.0,
)

QUICK = Scale(
    name="quick",
    datasets=(
        DataSpec("base", 16, 1, 62_500, _BASE_DAY),
        DataSpec("daily", 16, 1, 15_625, date(2026, 1, 12)),
    ),
    sizes=(
        Size("daily"),
        Size("base", repeats=2, growth=True, headline=True),
    ),
    daily="daily",
    lock_ops=60,
    lock_file_ops=12,
    lock_repeats=2,
    contenders=8,
    contended_ops=10,
    contended_file_ops=3,
    contended_repeats=2,
    idle_s=3.0,
    serve_timeout_s=90.0,
    growth_load_files=16,
    readers=2,
    writers=1,
    think_s=0.05,
    burst=100,
    pg_pool=20,
    query_reps=5,
    query_budget_s=2.0,
    etl_timeout_s=300.0,
)

SMOKE = Scale(
    name="smoke",
    datasets=(
        DataSpec("base", 16, 1, 400, _BASE_DAY),
        DataSpec("daily", 16, 1, 200, date(2026, 1, 12)),
    ),
    sizes=(Size("base", growth=True, headline=True),),
    daily="daily",
    lock_ops=20,
    lock_file_ops=4,
    lock_repeats=1,
    contenders=2,
    contended_ops=4,
    contended_file_ops=2,
    contended_repeats=1,
    idle_s=1.0,
    serve_timeout_s=60.0,
    growth_load_files=16,
    readers=1,
    writers=1,
    think_s=0.02,
    burst=10,
    pg_pool=4,
    query_reps=2,
    query_budget_s=5.0,
    etl_timeout_s=120.0,
)


def scale_named(name: str) -> Scale:
    return {"full": FULL, "quick": QUICK, "smoke": SMOKE}[name]
