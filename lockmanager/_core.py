"""The decision core shared by the sync and async shells.

Everything here is plain computation: key names, script arguments, mapping
script replies to named outcomes, and how long a waiter may block. The shells
in ``_sync.py`` and ``_async.py`` only move bytes to and from Redis and
DuckDB, so both behave the same by construction.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any

from . import _scripts as s
from ._config import LeaseConfig, Mode, Priority, lock_name_for

MODE_CODE = {Mode.SHARED: "s", Mode.EXCLUSIVE: "x"}
CODE_MODE = {v: k for k, v in MODE_CODE.items()}

# A waiter never blocks longer than this between polls, whatever the hint,
# so its heartbeat stays fresh and a missed message costs little.
MAX_POLL = 1.0
MIN_POLL = 0.005


def new_token() -> str:
    return secrets.token_hex(12)


def prefix_for(config: LeaseConfig, db_path: str | os.PathLike[str]) -> str:
    """The lock's key prefix, with a Redis Cluster hash tag around the name."""
    name = config.lock_name or lock_name_for(db_path)
    return f"{config.key_prefix}:{{{name}}}"


def mailbox(prefix: str, token: str) -> str:
    return f"{prefix}:m:{token}"


def history_key(prefix: str) -> str:
    return f"{prefix}:hist"


def owner_meta(name: str) -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "name": name})


def acquire_args(
    config: LeaseConfig,
    token: str,
    mode: Mode,
    priority: Priority,
    name: str,
    meta: str,
    ttl: float,
) -> list[Any]:
    penalty = config.batch_aging if priority is Priority.BATCH else 0.0
    return [
        config.history_len,
        token,
        MODE_CODE[mode],
        priority.value,
        int(ttl * 1000),
        int(config.waiter_heartbeat * 1000),
        int(penalty * 1000),
        name,
        meta,
    ]


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fence(value: Any) -> int | None:
    digits = text(value)
    return int(digits) if digits else None


@dataclass(frozen=True)
class Granted:
    fence: int | None
    ttl_left: float


@dataclass(frozen=True)
class Queued:
    position: int
    holder_expires_in: float | None


def parse_acquire(reply: list[Any]) -> Granted | Queued:
    if int(reply[0]) == s.GRANTED:
        return Granted(fence=_fence(reply[1]), ttl_left=int(reply[2]) / 1000)
    wake = int(reply[2])
    return Queued(
        position=int(reply[1]), holder_expires_in=None if wake < 0 else wake / 1000
    )


def poll_timeout(step: Queued, remaining: float, heartbeat: float) -> float:
    """How long a waiter may block on its mailbox before polling again.

    It wakes at the latest just after the first holder's lease would expire,
    so a dead holder's turn passes on promptly and not at the waiter's own
    timeout; and never later than MAX_POLL or a third of its heartbeat, so
    the scripts never take a live waiter for a dead one.
    """
    timeout = min(remaining, MAX_POLL, heartbeat / 3)
    if step.holder_expires_in is not None:
        timeout = min(timeout, step.holder_expires_in + 0.002)
    return max(MIN_POLL, timeout)


@dataclass(frozen=True)
class RenewOutcome:
    held: bool
    max_hold_reached: bool
    ttl_left: float
    waiters: int


def parse_renew(reply: list[Any]) -> RenewOutcome:
    code = int(reply[0])
    if code == s.LOST:
        return RenewOutcome(held=False, max_hold_reached=False, ttl_left=0, waiters=0)
    return RenewOutcome(
        held=True,
        max_hold_reached=code == s.MAX_HOLD,
        ttl_left=int(reply[1]) / 1000,
        waiters=int(reply[2]),
    )


@dataclass(frozen=True)
class Status:
    held: bool
    fence: int | None
    ttl_left: float
    waiters: int
    mode: Mode | None = None
    priority: Priority | None = None


def parse_status(reply: list[Any]) -> Status:
    held = int(reply[0]) == 1
    return Status(
        held=held,
        fence=_fence(reply[1]),
        ttl_left=int(reply[2]) / 1000,
        waiters=int(reply[3]),
        mode=CODE_MODE[text(reply[4])] if held else None,
        priority=Priority(text(reply[5])) if held else None,
    )


def _pairs(flat: list[Any]) -> dict[str, str]:
    items = [text(v) for v in flat]
    return dict(zip(items[::2], items[1::2]))


def _num(fields: dict[str, str], key: str) -> float | None:
    value = fields.get(key, "")
    return float(value) if value not in ("", None) else None


def parse_snapshot(reply: list[Any], key: str) -> dict[str, Any]:
    """Turn the SNAPSHOT reply into the operator view (plain JSON types)."""
    now = int(reply[0])
    holders = []
    for flat in reply[2]:
        h = _pairs(flat)
        meta = json.loads(h.get("meta") or "{}")
        since = _num(h, "since") or now
        holders.append(
            {
                "token": h["token"][:8],
                "name": h.get("name", ""),
                "host": meta.get("host"),
                "pid": meta.get("pid"),
                "mode": CODE_MODE.get(h.get("mode", ""), Mode.SHARED).value,
                "priority": h.get("prio"),
                "fence": int(h["fence"]) if h.get("fence") else None,
                "held_s": round((now - since) / 1000, 3),
                "waited_s": round((_num(h, "wait_ms") or 0) / 1000, 3),
                "ttl_left_s": round(((_num(h, "exp") or now) - now) / 1000, 3),
                "renewals": int(h.get("renewals", 0)),
            }
        )
    waiters = []
    for flat in reply[3]:
        w = _pairs(flat)
        meta = json.loads(w.get("meta") or "{}")
        waiters.append(
            {
                "token": w["token"][:8],
                "name": w.get("name", ""),
                "host": meta.get("host"),
                "pid": meta.get("pid"),
                "mode": CODE_MODE.get(w.get("mode", ""), Mode.SHARED).value,
                "priority": w.get("prio"),
                "waiting_s": round((now - (_num(w, "since") or now)) / 1000, 3),
            }
        )
    stats = {k: int(v) for k, v in _pairs(reply[4]).items()}
    return {
        "key": key,
        "server_time_ms": now,
        "fence": int(text(reply[1])),
        "holders": holders,
        "waiters": waiters,
        "counters": stats,
    }


def parse_history(entries: list[Any]) -> list[dict[str, Any]]:
    """XREVRANGE entries to dicts, newest first, with seconds not ms."""
    out = []
    for entry_id, fields in entries:
        e = _pairs([x for kv in fields.items() for x in kv])
        ms = int(text(entry_id).split("-")[0])
        row: dict[str, Any] = {"at_ms": ms, "event": e.pop("event", "")}
        row["token"] = e.pop("token", "")[:8]
        for k in ("wait_ms", "hold_ms"):
            if e.get(k):
                row[k.replace("_ms", "_s")] = round(int(float(e.pop(k))) / 1000, 3)
        row.update({k: v for k, v in e.items() if v != ""})
        out.append(row)
    return out
