"""The Markdown report: a summary of every check, then one section per measure.

Every number printed is looked up in the run's figures (see
`bench.markdown`); the sections live in `bench.sections`.
"""

from __future__ import annotations

from .markdown import cell, fmt, table
from .results import Check, Results
from .sections import (
    Layout,
    daily_section,
    etl_section,
    growth_section,
    locks_section,
    queries_section,
    serving_section,
)

__all__ = ["Layout", "render", "summary_table"]


def _measured(res: Results, check: Check) -> str:
    parts = []
    for name in check.figures:
        short = name.rsplit(".", 1)[-1].removesuffix("_ratio").removesuffix("_ms")
        parts.append(
            cell(res, name) if len(check.figures) == 1 else f"{short} {cell(res, name)}"
        )
    return ", ".join(parts)


def summary_table(res: Results) -> list[str]:
    rows = [
        [
            c.measure,
            c.label,
            f"{c.op} {fmt(c.threshold)}",
            _measured(res, c),
            f"**{c.verdict}**",
        ]
        for c in res.checks
    ]
    return table(["measure", "what", "target", "measured", "verdict"], rows)


def render(res: Results, layout: Layout) -> str:
    meta = res.meta
    lines = [
        f"# fluxion benchmark ({meta.get('scale')} run)",
        "",
        (
            f"Run {meta.get('started')} on {meta.get('host')}: {meta.get('cpus')} CPUs,"
            f" load average {meta.get('loadavg_start')} at start and"
            f" {meta.get('loadavg_end')} at the end; the run took"
            f" {cell(res, 'run.seconds')} s. Versions: {meta.get('versions')}."
        ),
        "",
        (
            "Every figure below was measured in this run. Alternatives ran in the"
            " same run, interleaved; ratios are taken within one repeat and the"
            " median over repeats is shown. p50/p99 pool every sample of every"
            " repeat. `results.json` holds each figure with the samples or figures"
            " it comes from."
        ),
        "",
        "## Summary",
        "",
        *summary_table(res),
        "",
    ]
    lines += locks_section(res) + etl_section(res, layout)
    lines += serving_section(res, layout) + daily_section(res, layout)
    lines += queries_section(res, layout) + growth_section(res, layout)
    lines += _caveats(res)
    return "\n".join(lines) + "\n"


def _caveats(res: Results) -> list[str]:
    lines = ["## Not measured, and notes", ""]
    lines += [f"- {c.measure} {c.label}: {c.note}" for c in res.checks if c.note]
    lines += [f"- not measured: {u['what']}: {u['reason']}" for u in res.unmeasured]
    lines += [
        f"- {name}: {text}"
        for name, text in res.notes.items()
        if not name.endswith((".same_answer", ".outcome"))
    ]
    if len(lines) == 2:
        lines.append("- nothing left out in this run")
    return [*lines, ""]
