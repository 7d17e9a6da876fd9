"""The benchmark harness end to end on tiny sizes: files written, figures measured.

Speed targets are not asserted here; they are the benchmark's verdicts, in
its report (DESIGN.md, "Measured, not asserted").
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.results import verify

ROOT = Path(__file__).resolve().parents[1]
MEASURES = ("M1", "M2", "M3", "M4", "M5")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One smoke-scale run of `python -m bench.run` into a temporary folder."""
    out = tmp_path_factory.mktemp("bench-results")
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--scale", "smoke", "--out", str(out)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out, done.stdout


@pytest.fixture
def doc(smoke: tuple[Path, str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((smoke[0] / "results.json").read_text())
    return data


def test_report_json_and_plots_are_written(smoke: tuple[Path, str]) -> None:
    """report.md, results.json and the PNG plots exist and are not empty."""
    out, _ = smoke
    for name in (
        "report.md",
        "results.json",
        "m1_locks.png",
        "m2_etl.png",
        "m3_backend.png",
        "m5_queries.png",
        "m6_growth.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "m1_locks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_is_a_finite_number_derived_from_what_was_recorded(
    doc: dict[str, Any],
) -> None:
    """verify() recomputes each statistic and ratio from its samples or figures."""
    assert doc["figures"], "no figure at all"
    assert verify(doc) == []
    for name, figure in doc["figures"].items():
        value = figure["value"]
        assert not isinstance(value, bool) and math.isfinite(value), name


def test_timings_are_positive_and_samples_vary(doc: dict[str, Any]) -> None:
    """Every time is above zero and raw latency series are not one repeated value."""
    for name, figure in doc["figures"].items():
        if figure["unit"] in ("ms", "s") and "wait" not in name:
            assert figure["value"] > 0, name
    raw = {n: s["values"] for n, s in doc["series"].items() if "of" not in s}
    assert raw, "no raw samples recorded"
    for name, values in raw.items():
        if len(values) >= 5:
            assert len(set(values)) > 1, f"{name} holds one repeated value"


def test_a_figure_typed_in_by_hand_is_caught(doc: dict[str, Any]) -> None:
    """Changing one statistic, or one raw sample, makes verify() complain."""
    name = next(n for n, f in doc["figures"].items() if f["stat"] == "p99")
    edited = copy.deepcopy(doc)
    edited["figures"][name]["value"] += 1.0
    assert any(name in problem for problem in verify(edited))

    source = doc["figures"][name]["of"][0]
    edited = copy.deepcopy(doc)
    edited["series"][source]["values"] = [1.0] * len(edited["series"][source]["values"])
    assert verify(edited)


def test_every_measure_has_checks_with_verdicts(
    doc: dict[str, Any], smoke: tuple[Path, str]
) -> None:
    """Each measure states targets; each check is PASS or FAIL and is printed."""
    measures = {check["measure"] for check in doc["checks"]}
    assert set(MEASURES) <= measures
    report = (smoke[0] / "report.md").read_text()
    for check in doc["checks"]:
        assert check["verdict"] in ("PASS", "FAIL")
        assert all(name in doc["figures"] for name in check["figures"]), check
        assert check["label"] in report and check["label"] in smoke[1]
