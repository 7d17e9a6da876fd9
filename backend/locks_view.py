"""`fluxion locks` as a terminal table: who holds the file, who waits."""

from __future__ import annotations

import time
from typing import Any


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return out


def render_table(view: dict[str, Any]) -> str:
    """Holders, waiters, fence and recent history, for a person at 3 a.m."""
    lines = [f"lock {view['key']}   fence {view['fence']}"]
    holders = [
        [
            h["name"],
            h["host"],
            h["pid"],
            h["mode"],
            h["priority"],
            h["fence"] or "-",
            f"{h['held_s']:.1f}s",
            f"{h['ttl_left_s']:.1f}s",
            h["renewals"],
            h["token"],
        ]
        for h in view["holders"]
    ]
    lines += ["", f"holders ({len(holders)})"]
    lines += (
        _table(
            [
                "name",
                "host",
                "pid",
                "mode",
                "class",
                "fence",
                "held",
                "ttl left",
                "renewals",
                "token",
            ],
            holders,
        )
        if holders
        else ["  nobody holds the file"]
    )
    waiters = [
        [
            w["name"],
            w["host"],
            w["pid"],
            w["mode"],
            w["priority"],
            f"{w['waiting_s']:.1f}s",
            w["token"],
        ]
        for w in view["waiters"]
    ]
    lines += ["", f"waiters ({len(waiters)})"]
    lines += (
        _table(["name", "host", "pid", "mode", "class", "waiting", "token"], waiters)
        if waiters
        else ["  nobody waits"]
    )
    history = [
        [
            time.strftime("%H:%M:%S", time.localtime(e["at_ms"] / 1000)),
            e["event"],
            e.get("name", ""),
            e.get("mode", ""),
            e.get("fence", ""),
            e.get("wait_s", ""),
            e.get("hold_s", ""),
            e.get("reason", ""),
        ]
        for e in view.get("history", [])
    ]
    if history:
        lines += ["", "recent history (newest first)"]
        lines += _table(
            ["at", "event", "name", "mode", "fence", "waited s", "held s", "reason"],
            history,
        )
    counters = ", ".join(f"{k} {v}" for k, v in sorted(view["counters"].items()))
    lines += ["", f"counters: {counters or 'none yet'}"]
    return "\n".join(lines)
