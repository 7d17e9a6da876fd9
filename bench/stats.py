"""Summary statistics, shared by the harness and by its smoke test.

The smoke test recomputes every figure of `results.json` with these same
functions, so a figure that was not derived from its samples is caught.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

__all__ = ["STATS", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated linearly between ranks.

    Raises:
        ValueError: no values, or q outside 0-100.
    """
    if not values:
        raise ValueError("cannot take a percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0-100, got {q!r}")

    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


STATS: dict[str, Callable[[Sequence[float]], float]] = {
    "p50": lambda values: percentile(values, 50),
    "p99": lambda values: percentile(values, 99),
    "median": lambda values: percentile(values, 50),
    "max": lambda values: float(max(values)),
    "min": lambda values: float(min(values)),
    "mean": lambda values: statistics.fmean(values),
    "sum": lambda values: math.fsum(values),
}
