"""Lease settings: modes, priority classes and the frozen `LeaseConfig`."""

from __future__ import annotations

import enum
import hashlib
import os
from dataclasses import dataclass, field

__all__ = ["LeaseConfig", "Mode", "Priority", "lock_name_for"]


class Mode(str, enum.Enum):
    """What a lease allows: many shared readers or one exclusive writer."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"


class Priority(str, enum.Enum):
    """Waiting class: interactive waiters go before batch waiters."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


_DEFAULT_MAX_HOLD = {Priority.INTERACTIVE: 60.0, Priority.BATCH: 600.0}


@dataclass(frozen=True, kw_only=True)
class LeaseConfig:
    """Timing of leases, in seconds.

    Args:
        lease_ttl: how long a lease lives without renewal. A holder that dies
            frees the file at most this long after its last renewal.
        renew_every: renewal period; at most a third of ``lease_ttl``.
        wait_for: default budget for getting a lease (queue wait plus
            opening the file), overridable per call.
        batch_aging: a batch waiter goes ahead of interactive waiters that
            queued more than this many seconds after it, and after each batch
            turn the other batch waiters start ageing again. So under a
            continuous stream of interactive work the ETL still gets one turn
            per period, and the backend waits for at most one batch turn
            per period, however many ETL workers queue.
        waiter_heartbeat: a waiter that has not polled for this long is
            dropped from the queue (it died while waiting).
        max_hold: per priority class, the longest one lease may be renewed
            for. A runaway holder is told and then loses the lease.
        history_len: grants, releases and expiries kept for operators.
        key_prefix: first part of every Redis key; tests use their own.
        lock_name: the lock's name in Redis. By default it is derived from
            the file's resolved path, so every process must reach the file
            by the same path; where they do not (containers mounting it at
            different paths, hard links), give every process the same name.
    """

    lease_ttl: float = 10.0
    renew_every: float | None = None
    wait_for: float = 30.0
    batch_aging: float = 2.0
    waiter_heartbeat: float = 6.0
    max_hold: dict[Priority, float] = field(
        default_factory=lambda: dict(_DEFAULT_MAX_HOLD)
    )
    history_len: int = 2000
    key_prefix: str = "fluxion"
    lock_name: str | None = None

    def __post_init__(self) -> None:
        if self.lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be positive, got {self.lease_ttl!r}")
        if self.renew_every is not None and not (
            0 < self.renew_every <= self.lease_ttl / 3
        ):
            raise ValueError(
                f"renew_every must be in (0, lease_ttl/3 = {self.lease_ttl / 3:g}],"
                f" got {self.renew_every!r}"
            )
        if self.wait_for < 0:
            raise ValueError(f"wait_for must be >= 0, got {self.wait_for!r}")

    @property
    def renew_interval(self) -> float:
        return self.renew_every or self.lease_ttl / 3

    def max_hold_for(self, priority: Priority) -> float:
        return self.max_hold.get(priority, _DEFAULT_MAX_HOLD[priority])


def lock_name_for(db_path: str | os.PathLike[str]) -> str:
    """A readable, stable lock name for one database file.

    Two spellings of the same file (relative, symlinked) give the same name,
    so every process that opens it meets in the same queue.
    """
    real = os.path.realpath(os.fspath(db_path))
    digest = hashlib.sha1(real.encode()).hexdigest()[:10]
    return f"{os.path.basename(real)}:{digest}"
