"""PNG plots of a run's figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from .results import Results

__all__ = ["write_plots"]


def write_plots(
    res: Results, out: Path, etl_labels: Sequence[str], growth_labels: Sequence[str]
) -> list[Path]:
    """Every plot this run has figures for; returns the files written."""
    written = [
        _locks(res, out / "m1_locks.png"),
        _etl(res, out / "m2_etl.png", etl_labels),
        _serving(res, out / "m3_backend.png", growth_labels),
        _queries(res, out / "m5_queries.png", growth_labels[-1:]),
        _growth(res, out / "m6_growth.png", growth_labels),
    ]
    return [path for path in written if path is not None]


def _bars(ax: Axes, groups: Sequence[str], series: dict[str, list[float]]) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups)
    ax.legend(fontsize=7)


def _v(res: Results, name: str) -> float:
    return res.value(name) or 0.0


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _locks(res: Results, path: Path) -> Path | None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, mode in zip(axes, ("uncontended", "contended")):
        kinds = [
            k.split(".")[2]
            for k in res.figures
            if k.startswith(f"m1.{mode}.") and k.endswith(".p50_ms") and ".run" not in k
        ]
        _bars(
            ax,
            kinds,
            {
                q: [_v(res, f"m1.{mode}.{k}.{q}_ms") for k in kinds]
                for q in ("p50", "p99")
            },
        )
        ax.set_yscale("log")
        ax.set_ylabel("acquire+release (ms, log)")
        ax.set_title(f"M1 {mode}")
        ax.tick_params(axis="x", labelrotation=35, labelsize=7)
    return _save(fig, path)


def _etl(res: Results, path: Path, labels: Sequence[str]) -> Path | None:
    variants = sorted(
        {
            k.split(".")[2]
            for k in res.figures
            if k.startswith("m2.")
            and k.endswith(".rows_per_s")
            and ".run" not in k
            and "_vs_" not in k
        }
    )
    if not variants:
        return None
    fig, (rate, rss) = plt.subplots(1, 2, figsize=(11, 4))
    _bars(
        rate,
        list(labels),
        {
            v: [_v(res, f"m2.{label}.{v}.rows_per_s") for label in labels]
            for v in variants
        },
    )
    rate.set_ylabel("rows/s (median)")
    rate.set_title("M2 CSV to table")
    _bars(
        rss,
        list(labels),
        {
            v: [_v(res, f"m2.{label}.{v}.peak_rss_mb") for label in labels]
            for v in variants
        },
    )
    rss.set_ylabel("peak RSS of the largest loading process (MB)")
    rss.set_title("M2 memory")
    return _save(fig, path)


def _serving(res: Results, path: Path, labels: Sequence[str]) -> Path | None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, ("read", "write")):
        _bars(
            ax,
            list(labels),
            {
                f"{phase} {q}": [
                    _v(res, f"m3.{label}.{phase}.{kind}_{q}_ms") for label in labels
                ]
                for phase in ("idle", "load")
                for q in ("p50", "p99")
            },
        )
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"M3 {kind}s, idle vs during the daily load")
    return _save(fig, path)


def _queries(res: Results, path: Path, labels: Sequence[str]) -> Path | None:
    if not labels:
        return None
    label = labels[0]
    cases = ["resumen", "top", "ventas"]
    engines = [
        e
        for e in ("http", "duckdb_sql", "pg")
        if f"m5.{label}.resumen.{e}_p50_ms" in res.figures
    ]
    fig, ax = plt.subplots(figsize=(8, 4))
    _bars(
        ax,
        cases,
        {e: [_v(res, f"m5.{label}.{c}.{e}_p50_ms") for c in cases] for e in engines},
    )
    ax.set_yscale("log")
    ax.set_ylabel("p50 ms (log)")
    ax.set_title(f"M5 dashboard queries on {label} rows")
    return _save(fig, path)


def _growth(res: Results, path: Path, labels: Sequence[str]) -> Path | None:
    rows = [_rows_in(label) for label in labels]
    fig, (load, serve) = plt.subplots(1, 2, figsize=(11, 4))
    for variant in ("coordinated_w1", "bare", "pg"):
        ys = [_v(res, f"m2.{label}.{variant}.seconds") for label in labels]
        load.plot(rows, ys, marker="o", label=variant)
    load.set_xlabel("rows loaded")
    load.set_ylabel("load seconds (median)")
    load.set_title("M6 load cost vs size")
    load.legend(fontsize=7)
    for name, fig_name in (
        ("read p99 idle", "idle.read_p99_ms"),
        ("read p99 load", "load.read_p99_ms"),
        ("write p99 load", "load.write_p99_ms"),
    ):
        serve.plot(
            rows,
            [_v(res, f"m3.{label}.{fig_name}") for label in labels],
            marker="o",
            label=name,
        )
    if len(rows) > 1:
        load.set_xscale("log")
        serve.set_xscale("log")
    serve.set_xlabel("rows in the file")
    serve.set_ylabel("ms")
    serve.set_title("M6 backend latency vs size")
    serve.legend(fontsize=7)
    return _save(fig, path)


def _rows_in(label: str) -> float:
    units = {"M": 1_000_000, "k": 1_000}
    if label[-1] in units:
        return float(label[:-1]) * units[label[-1]]
    return float(label)
