"""Every figure of a run, where it came from, and the verdicts on it.

A figure is either *measured* (one reading: a wall time, a peak RSS, a row
count), a *statistic* of a named series of samples (p50, p99, median...),
or *derived* from two other figures (a ratio, a rate). `verify` recomputes
every statistic and derived figure from what the document records, so a
figure typed in by hand, or computed from the wrong samples, is caught.

A check compares figures with a target and says PASS or FAIL. The
thresholds are the targets (from the issue, or stated as the harness's
own where the issue gave none); they are the only constants in the file.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .stats import STATS

__all__ = ["Check", "Results", "verify"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
_TOLERANCE = 1e-9


@dataclass
class Check:
    """Figures compared with a target; PASS only if every figure meets it."""

    measure: str
    label: str
    figures: list[str]
    op: str
    threshold: float
    verdict: str
    note: str = ""


@dataclass
class Results:
    """The figures, series and checks of one run (see the module docstring)."""

    series: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    unmeasured: list[dict[str, str]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add_series(self, name: str, values: Sequence[float], unit: str) -> str:
        """Record raw samples under `name`; statistics refer to it."""
        if not values:
            raise ValueError(f"series {name} has no samples")
        self.series[name] = {"unit": unit, "values": [float(v) for v in values]}
        return name

    def collect(self, name: str, figures: Sequence[str]) -> str:
        """A series made of recorded figures, e.g. one ratio per repeat."""
        if not figures:
            raise ValueError(f"series {name} has no figures")
        values = [self.figures[f]["value"] for f in figures]
        unit = self.figures[figures[0]]["unit"]
        self.series[name] = {"unit": unit, "values": values, "of": list(figures)}
        return name

    def stat(self, name: str, series: str, stat: str) -> float:
        """A statistic of a recorded series, stored as figure `name`."""
        data = self.series[series]
        value = STATS[stat](data["values"])
        return self._put(name, value, data["unit"], stat=stat, of=[series])

    def measured(self, name: str, value: float, unit: str) -> float:
        """One reading taken by the harness."""
        return self._put(name, float(value), unit, stat="measured", of=[])

    def ratio(self, name: str, numerator: str, denominator: str) -> float | None:
        """numerator / denominator of two figures; None when undefined."""
        den = self.figures[denominator]["value"]
        if den == 0:
            self.skip(name, f"{denominator} is zero; the ratio is undefined")
            return None
        value = self.figures[numerator]["value"] / den
        return self._put(name, value, "x", stat="ratio", of=[numerator, denominator])

    def rate(self, name: str, count: str, seconds: str, unit: str) -> float | None:
        """count / seconds of two figures, e.g. rows per second."""
        value = self.ratio(name, count, seconds)
        if value is not None:
            self.figures[name]["unit"] = unit
        return value

    def value(self, name: str) -> float | None:
        figure = self.figures.get(name)
        return None if figure is None else float(figure["value"])

    def check(
        self,
        measure: str,
        label: str,
        figures: Sequence[str],
        op: str,
        threshold: float,
        note: str = "",
    ) -> Check:
        """Compare figures with a target; a missing figure is a FAIL."""
        values = [self.value(name) for name in figures]
        passed = all(v is not None and _OPS[op](v, threshold) for v in values)
        if any(v is None for v in values):
            note = f"{note} (a figure could not be measured)".strip()
        check = Check(
            measure,
            label,
            list(figures),
            op,
            threshold,
            "PASS" if passed else "FAIL",
            note,
        )
        self.checks.append(check)
        return check

    def skip(self, what: str, reason: str) -> None:
        """Say what was not measured, and why."""
        self.unmeasured.append({"what": what, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "figures": self.figures,
            "checks": [asdict(c) for c in self.checks],
            "unmeasured": self.unmeasured,
            "notes": self.notes,
            "series": self.series,
        }

    def _put(self, name: str, value: float, unit: str, **how: Any) -> float:
        if not math.isfinite(value):
            raise ValueError(f"figure {name} is not a finite number: {value!r}")
        if name in self.figures:
            raise ValueError(f"figure {name} recorded twice")
        self.figures[name] = {"value": value, "unit": unit, **how}
        return value


def verify(doc: dict[str, Any]) -> list[str]:
    """Problems with a results document; an empty list means consistent.

    Every figure must be a finite number; statistics must equal the
    statistic of their series, ratios the quotient of their figures, and
    every check must name recorded figures and carry the right verdict.
    """
    problems: list[str] = []
    figures: dict[str, dict[str, Any]] = doc["figures"]
    series: dict[str, dict[str, Any]] = doc["series"]
    for name, figure in figures.items():
        problem = _figure_problem(figure, figures, series)
        if problem:
            problems.append(f"{name}: {problem}")

    for name, data in series.items():
        sources = data.get("of")
        if sources is not None and data["values"] != [
            figures.get(f, {}).get("value") for f in sources
        ]:
            problems.append(f"series {name}: values differ from its figures")

    for check in doc["checks"]:
        values = [figures.get(n, {}).get("value") for n in check["figures"]]
        passed = all(
            v is not None and _OPS[check["op"]](v, check["threshold"]) for v in values
        )
        if check["verdict"] != ("PASS" if passed else "FAIL"):
            problems.append(f"check {check['label']!r}: verdict disagrees")
    return problems


def _figure_problem(
    figure: dict[str, Any],
    figures: dict[str, dict[str, Any]],
    series: dict[str, dict[str, Any]],
) -> str | None:
    value = figure.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"not a number: {value!r}"
    if not math.isfinite(value):
        return f"not finite: {value!r}"

    stat, sources = figure.get("stat"), figure.get("of", [])
    if stat == "measured":
        return None if not sources else "a measured figure names sources"
    if stat == "ratio":
        if len(sources) != 2 or any(s not in figures for s in sources):
            return f"ratio of unknown figures {sources}"
        expected = figures[sources[0]]["value"] / figures[sources[1]]["value"]
    elif stat in STATS:
        if len(sources) != 1 or sources[0] not in series:
            return f"{stat} of unknown series {sources}"
        expected = STATS[stat](series[sources[0]]["values"])
    else:
        return f"unknown kind {stat!r}"
    if not math.isclose(value, expected, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE):
        return f"recorded {value!r} but its sources give {expected!r}"
    return None
