"""Markdown cells and tables from a run's figures.

A missing figure prints as "n/a", never as a default value.
"""

from __future__ import annotations

from collections.abc import Sequence

from .results import Results

__all__ = ["cell", "counted", "fmt", "pair", "table"]

_COUNTS = ("rows/s", "rows", "ops/s", "requests", "orders", "leases", "turns")


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in _COUNTS or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"


def cell(res: Results, name: str) -> str:
    figure = res.figures.get(name)
    return "n/a" if figure is None else fmt(figure["value"], figure["unit"])


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def pair(res: Results, first: str, second: str) -> str:
    """Two figures in one cell, e.g. "12.3 / 45.6" for p50 / p99."""
    return f"{cell(res, first)} / {cell(res, second)}"


def counted(res: Results, total: str, count: str) -> str:
    """A total with its count in brackets."""
    return f"{cell(res, total)} ({cell(res, count)})"
