"""What the sync and async managers share, apart from waiting.

Both shells subclass `ManagerBase`: it holds the settings, the scripts and
the key, builds leases and errors, and applies a renewal's outcome. The
subclasses only do I/O (blocking or awaited) around these pieces.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from . import _core as core
from ._config import LeaseConfig, Mode, Priority
from ._duck import Handle
from ._errors import LeaseLost, LeaseTimeout, short
from ._lease import UNANSWERED, Callback, Lease
from ._scripts import ALL

log = logging.getLogger("lockmanager")
renew_log = logging.getLogger("lockmanager.renew")


class ManagerBase:
    """Settings, key and scripts of one lock; the shells add the waiting."""

    def __init__(
        self,
        client: Any,
        db_path: str | os.PathLike[str],
        config: LeaseConfig | None,
        name: str | None,
    ):
        self._redis = client
        self.db_path = os.fspath(db_path)
        self.config = config or LeaseConfig()
        self.key = core.prefix_for(self.config, self.db_path)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._scripts = {n: client.register_script(src) for n, src in ALL.items()}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} db={self.db_path!r}>"

    def _budget(self, wait_for: float | None) -> float:
        return self.config.wait_for if wait_for is None else wait_for

    def _script_args(self, *args: Any) -> dict[str, Any]:
        return {"keys": [self.key], "args": [self.config.history_len, *args]}

    def _acquire_args(
        self, token: str, mode: Mode, priority: Priority, who: str
    ) -> list[Any]:
        return core.acquire_args(
            self.config,
            token,
            mode,
            priority,
            who,
            core.owner_meta(who),
            self.config.lease_ttl,
        )[1:]

    def _timeout(
        self, token: str, mode: Mode, started: float, step: core.Queued
    ) -> LeaseTimeout:
        retry = step.holder_expires_in or self.config.lease_ttl / 3
        return LeaseTimeout(
            f"no {mode.value} lease on {self.key} within the wait budget"
            f" (position {step.position} in the queue). The file is busy;"
            " retry later or raise wait_for.",
            key=self.key,
            token=token,
            waited=time.monotonic() - started,
            retry_after=max(1.0, retry),
        )

    def _lost(self, token: str, what: str) -> LeaseLost:
        return LeaseLost(
            f"lease {short(token)} on {self.key}: {what}",
            key=self.key,
            token=token,
            why=what,
        )

    def _lease(
        self,
        *,
        token: str,
        mode: Mode,
        priority: Priority,
        who: str,
        fence: int | None,
        handle: Handle,
        started: float,
        granted_at: float,
        ttl_left: float,
        status: Callable[[], core.Status] | None,
        on_contended: Callback | None = None,
        on_lost: Callback | None = None,
        on_at_risk: Callback | None = None,
    ) -> Lease:
        lease = Lease(
            key=self.key,
            token=token,
            mode=mode,
            priority=priority,
            name=who,
            fence=fence,
            handle=handle,
            wait_s=time.monotonic() - started,
            status=status,
            on_contended=on_contended,
            on_lost=on_lost,
            on_at_risk=on_at_risk,
            degraded=status is None,
        )
        if status is not None:
            lease.valid_until = granted_at + ttl_left
        return lease

    def _warn_degraded(self, exc: BaseException) -> None:
        log.warning(
            "Redis unreachable (%s); degraded: taking %s through DuckDB's OS"
            " lock alone, without queue fairness",
            exc,
            self.db_path,
        )

    def _warn_not_released(self, token: str) -> None:
        log.warning(
            "could not release lease %s on %s; it frees itself within the"
            " lease TTL (%.0fs)",
            short(token),
            self.key,
            self.config.lease_ttl,
        )

    def _forced(self, reply: Any, by: str, reason: str) -> dict[str, Any]:
        count, fence = int(reply[0]), int(reply[1])
        log.warning(
            "force-release on %s by %s: %d holder(s) released, fence now %d;"
            " reason: %s",
            self.key,
            by,
            count,
            fence,
            reason,
        )
        return {"released": count, "fence": fence, "by": by, "reason": reason}

    def _renew_args(self, lease: Lease) -> list[Any]:
        max_hold = self.config.max_hold_for(lease.priority)
        return [lease.token, int(self.config.lease_ttl * 1000), int(max_hold * 1000)]

    def _renewed(self, lease: Lease, reply: Any, asked: float) -> None:
        """Apply one renewal's outcome to the lease."""
        outcome = core.parse_renew(reply)
        lease.mark_at_risk(False)
        if not outcome.held:
            lease.mark_lost("expired before renewal")
            return
        lease.valid_until = asked + outcome.ttl_left
        if outcome.max_hold_reached:
            renew_log.warning(
                "%r reached its max hold of %.0fs; it ends in %.1fs unless released",
                lease,
                self.config.max_hold_for(lease.priority),
                outcome.ttl_left,
            )
        if outcome.waiters or outcome.max_hold_reached:
            lease.notice("contended")

    def _warn_late(self, lease: Lease, lateness: float) -> None:
        interval = self.config.renew_interval
        if lateness > interval / 2:
            renew_log.warning(
                "renewal of %r is %.2fs late (interval %.2fs); the process may"
                " be overloaded, paused, or its event loop blocked",
                lease,
                lateness,
                interval,
            )


class OpeningRenewer:
    """Renews a granted lease now and then while its file is still locked.

    The keeper starts only once the file is open; until then this, called
    between open attempts, keeps the lease alive and remembers how long the
    last renewal vouches for it. `renew` sends the RENEW script's arguments
    and returns its reply (blocking, from the opening thread).
    """

    def __init__(
        self,
        manager: ManagerBase,
        token: str,
        priority: Priority,
        renew: Callable[..., Any],
    ):
        self._manager = manager
        self._token = token
        self._priority = priority
        self._renew = renew
        self._due = time.monotonic() + manager.config.renew_interval
        self.valid_until = 0.0

    def __call__(self) -> None:
        config = self._manager.config
        if time.monotonic() < self._due:
            return
        asked = time.monotonic()
        self._due = asked + config.renew_interval
        max_hold = int(config.max_hold_for(self._priority) * 1000)
        ttl = int(config.lease_ttl * 1000)
        try:
            reply = self._renew(self._token, ttl, max_hold)
        except UNANSWERED:
            renew_log.warning("renewal of %s while opening failed", short(self._token))
            return
        outcome = core.parse_renew(reply)
        if not outcome.held:
            raise self._manager._lost(self._token, "expired while waiting for the file")
        self.valid_until = asked + outcome.ttl_left
