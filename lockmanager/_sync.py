"""The synchronous shell: `DuckDBWriteLockManager`, used by the ETL.

A turn goes: queue in Redis (ACQUIRE), block on this waiter's mailbox until
the script hands the lease over (or the first holder's TTL would run out),
open DuckDB under the OS lock, work, CHECKPOINT and close, and only then
give the lease back (RELEASE), which hands it to the next waiter at once.
A keeper thread renews the lease and listens to its mailbox meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _core as core
from ._connect import client_from_url
from ._config import LeaseConfig, Mode, Priority
from ._duck import ensure_fence_table, open_database
from ._errors import LeaseLost, LeaseTimeout, short
from ._lease import Callback, Lease, LeaseState
from ._scripts import ALL, LOST

log = logging.getLogger("lockmanager")
renew_log = logging.getLogger("lockmanager.renew")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


class DuckDBWriteLockManager:
    """Hands out leases on one DuckDB file, coordinated through Redis.

    Args:
        client: a ``redis.Redis`` client or a URL: ``redis://``,
            ``redis+sentinel://`` or ``redis+cluster://`` (see `_connect`).
            Its socket timeout, if any, must exceed the renewal interval:
            the keeper blocks on its mailbox that long.
        db_path: the DuckDB file every process shares.
        config: lease timing; see `LeaseConfig`.
        name: how this process appears to operators.
    """

    def __init__(
        self,
        client: redis.Redis | str,
        db_path: str | os.PathLike[str],
        *,
        config: LeaseConfig | None = None,
        name: str | None = None,
    ):
        if isinstance(client, str):
            client = client_from_url(client)
        self._redis = client
        self.db_path = os.fspath(db_path)
        self.config = config or LeaseConfig()
        self.key = core.prefix_for(self.config, self.db_path)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._scripts = {n: client.register_script(src) for n, src in ALL.items()}
        self._keepers: dict[str, _Keeper] = {}

    def __repr__(self) -> str:
        return f"<DuckDBWriteLockManager {self.key} db={self.db_path!r}>"

    @contextmanager
    def write(self, **kwargs: Any) -> Iterator[Lease]:
        """An exclusive lease with a read-write connection; see `acquire`."""
        lease = self.acquire(Mode.EXCLUSIVE, **kwargs)
        try:
            yield lease
        finally:
            self.release(lease)

    @contextmanager
    def read(self, **kwargs: Any) -> Iterator[Lease]:
        """A shared lease with a read-only connection; see `acquire`."""
        lease = self.acquire(Mode.SHARED, **kwargs)
        try:
            yield lease
        finally:
            self.release(lease)

    def acquire(
        self,
        mode: Mode,
        *,
        priority: Priority = Priority.INTERACTIVE,
        wait_for: float | None = None,
        name: str | None = None,
        on_contended: Callback | None = None,
        on_lost: Callback | None = None,
    ) -> Lease:
        """Wait for a turn and open the file for it.

        Args:
            mode: shared (read-only) or exclusive (read-write).
            priority: the waiting class.
            wait_for: budget in seconds for queueing and opening together.
            name: how this holder appears to operators.
            on_contended: called (from the keeper thread) when a waiter queues.
            on_lost: called when the lease is lost before release.

        Raises:
            LeaseTimeout: no turn within the budget. The caller's work never
                runs; nothing is left in the queue.
            FileBusy: the turn came but a foreign process held the file.
        """
        budget = self.config.wait_for if wait_for is None else wait_for
        started = time.monotonic()
        deadline = started + budget
        token = core.new_token()
        who = name or self.name
        try:
            grant = self._wait_turn(token, mode, priority, who, started, deadline)
        except REDIS_DOWN as exc:
            return self._acquire_degraded(mode, priority, who, deadline, exc)

        try:
            con = open_database(
                self.db_path,
                read_only=mode is Mode.SHARED,
                budget=deadline - time.monotonic(),
                key=self.key,
                token=token,
            )
            fence = grant.fence
            if mode is Mode.EXCLUSIVE:
                fence = self._settle_fence(con, token, grant.fence or 0)
        except BaseException:
            self._give_back(token)
            raise

        lease = Lease(
            key=self.key,
            token=token,
            mode=mode,
            priority=priority,
            name=who,
            fence=fence,
            connection=con,
            wait_s=time.monotonic() - started,
            status=lambda: self._status(token),
            on_contended=on_contended,
            on_lost=on_lost,
        )
        lease.valid_until = time.monotonic() + grant.ttl_left
        keeper = _Keeper(self, lease)
        self._keepers[token] = keeper
        keeper.start()
        log.debug("granted %r after %.3fs", lease, lease.wait_s)
        return lease

    def release(self, lease: Lease) -> None:
        """Close the file (checkpointing a writer), then give the turn back."""
        keeper = self._keepers.pop(lease.token, None)
        if keeper is not None:
            keeper.stop()
        try:
            lease.close_database()
        finally:
            lease.finish()
            if not lease.degraded:
                self._give_back(lease.token)
        log.debug("released %r after %.3fs", lease, lease.held_s)

    def detach(self, lease: Lease) -> str:
        """Close the file but keep the turn; return the token to hand over.

        The lease stays held in Redis (it expires within its TTL unless the
        receiver adopts it), so a coordinator can take the turn and a worker
        can use and release it. Only a holder of the token can release it.
        """
        keeper = self._keepers.pop(lease.token, None)
        if keeper is not None:
            keeper.stop()
        lease.close_database()
        lease.finish()
        return lease.token

    def adopt(
        self,
        token: str,
        *,
        wait_for: float | None = None,
        name: str | None = None,
        on_contended: Callback | None = None,
        on_lost: Callback | None = None,
    ) -> Lease:
        """Take over a lease detached by another process, by its token.

        Raises:
            LeaseLost: no lease is held under this token (expired, released,
                or a wrong token).
            FileBusy: the file stayed locked for the whole budget.
        """
        started = time.monotonic()
        budget = self.config.wait_for if wait_for is None else wait_for
        status = self._status(token)
        if not status.held or status.mode is None or status.priority is None:
            raise LeaseLost(
                f"cannot adopt lease {short(token)} on {self.key}: no lease is"
                " held under that token (expired, released, or never granted)",
                key=self.key, token=token, why="not held",
            )
        con = open_database(
            self.db_path, read_only=status.mode is Mode.SHARED,
            budget=budget, key=self.key, token=token,
        )
        lease = Lease(
            key=self.key, token=token, mode=status.mode,
            priority=status.priority, name=name or self.name, fence=status.fence,
            connection=con, wait_s=time.monotonic() - started,
            status=lambda: self._status(token), on_contended=on_contended,
            on_lost=on_lost,
        )
        lease.valid_until = started + status.ttl_left
        keeper = _Keeper(self, lease)
        self._keepers[token] = keeper
        keeper.start()
        return lease

    def release_token(self, token: str) -> bool:
        """Give back a lease held under `token`; False if none was held."""
        reply = self._call("release", token)
        return int(reply[0]) == 1

    def inspect(self, history: int = 50) -> dict[str, Any]:
        """Holders, waiters, fence, counters and the latest history events."""
        view = core.parse_snapshot(self._scripts["snapshot"](keys=[self.key]), self.key)
        entries = self._redis.xrevrange(core.history_key(self.key), count=history)
        view["history"] = core.parse_history(entries)
        return view

    def force_release(
        self, reason: str, *, by: str, token: str | None = None
    ) -> dict[str, Any]:
        """Take the lease from its holders (or one), fence them out, audit it.

        The old holders' next commit is refused, the next waiter is woken,
        and the history keeps who did it and why.
        """
        count, fence = self._call("force_release", by, reason, token or "")
        log.warning(
            "force-release on %s by %s: %s holder(s) released, fence now %s;"
            " reason: %s",
            self.key, by, count, fence, reason,
        )
        return {"released": int(count), "fence": int(fence), "by": by, "reason": reason}

    def close(self) -> None:
        for keeper in list(self._keepers.values()):
            keeper.stop()
        self._redis.close()

    # -- internals --------------------------------------------------------

    def _call(self, script: str, *args: Any) -> Any:
        return self._scripts[script](
            keys=[self.key], args=[self.config.history_len, *args]
        )

    def _wait_turn(
        self,
        token: str,
        mode: Mode,
        priority: Priority,
        who: str,
        started: float,
        deadline: float,
    ) -> core.Granted:
        args = core.acquire_args(
            self.config, token, mode, priority, who, core.owner_meta(who),
            self.config.lease_ttl,
        )[1:]
        box = core.mailbox(self.key, token)
        try:
            while True:
                step = core.parse_acquire(self._call("acquire", *args))
                if isinstance(step, core.Granted):
                    return step
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout(token, mode, started, step)
                self._redis.blpop([box], timeout=core.poll_timeout(step, remaining))
        except LeaseTimeout:
            self._cancel(token)
            raise
        except BaseException as exc:
            if not isinstance(exc, REDIS_DOWN):
                self._cancel(token)
            raise

    def _timeout(
        self, token: str, mode: Mode, started: float, step: core.Queued
    ) -> LeaseTimeout:
        waited = time.monotonic() - started
        retry = step.holder_expires_in or self.config.lease_ttl / 3
        return LeaseTimeout(
            f"no {mode.value} lease on {self.key} within the wait budget"
            f" (position {step.position} in the queue). The file is busy;"
            " retry later or raise wait_for.",
            key=self.key,
            token=token,
            waited=waited,
            retry_after=max(1.0, retry),
        )

    def _cancel(self, token: str) -> None:
        try:
            self._call("cancel", token)
        except RedisError:
            log.debug("cancel of %s failed; its heartbeat will expire", short(token))

    def _give_back(self, token: str) -> None:
        try:
            self._call("release", token)
        except RedisError:
            log.warning(
                "could not release lease %s on %s; it frees itself within the"
                " lease TTL (%.0fs)", short(token), self.key, self.config.lease_ttl,
            )

    def _settle_fence(self, con: Any, token: str, fence: int) -> int:
        """Make sure the lease's fence is above anything the file recorded."""
        recorded = ensure_fence_table(con)
        if fence > recorded:
            return fence
        reply = self._call("reseed", token, recorded)
        if int(reply[0]) == LOST:
            raise LeaseLost(
                f"lease {short(token)} on {self.key} expired while opening the file",
                key=self.key, token=token, why="expired",
            )
        log.info(
            "fence on %s reseeded from %s to %s (Redis had lost its counter)",
            self.key, fence, reply[1],
        )
        return int(reply[1])

    def _status(self, token: str) -> core.Status:
        return core.parse_status(self._call("status", token))

    def _acquire_degraded(
        self, mode: Mode, priority: Priority, who: str, deadline: float,
        exc: BaseException,
    ) -> Lease:
        log.warning(
            "Redis unreachable (%s); degraded: taking %s through DuckDB's OS"
            " lock alone, without queue fairness", exc, self.db_path,
        )
        started = time.monotonic()
        token = core.new_token()
        con = open_database(
            self.db_path, read_only=mode is Mode.SHARED,
            budget=deadline - started, key=self.key, token=token,
        )
        fence = ensure_fence_table(con) + 1 if mode is Mode.EXCLUSIVE else None
        return Lease(
            key=self.key, token=token, mode=mode, priority=priority, name=who,
            fence=fence, connection=con, wait_s=time.monotonic() - started,
            status=None, degraded=True,
        )

    def _renew(self, lease: Lease) -> None:
        """One renewal; called only from the lease's keeper thread."""
        asked = time.monotonic()
        ttl = self.config.lease_ttl
        max_hold = self.config.max_hold_for(lease.priority)
        outcome = core.parse_renew(
            self._call("renew", lease.token, int(ttl * 1000), int(max_hold * 1000))
        )
        if not outcome.held:
            lease.mark_lost("expired before renewal")
            return
        lease.valid_until = asked + outcome.ttl_left
        if outcome.waiters:
            lease.notice("contended")
        if outcome.max_hold_reached:
            renew_log.warning(
                "%r reached its max hold of %.0fs; it ends in %.1fs unless"
                " released", lease, max_hold, outcome.ttl_left,
            )
            lease.notice("contended")


class _Keeper(threading.Thread):
    """Renews one lease and reads its mailbox until the lease is released."""

    def __init__(self, manager: DuckDBWriteLockManager, lease: Lease):
        super().__init__(name=f"lease-keeper-{short(lease.token)}", daemon=True)
        self._manager = manager
        self._lease = lease
        self._box = core.mailbox(manager.key, lease.token)
        self._stopping = threading.Event()

    def run(self) -> None:
        interval = self._manager.config.renew_interval
        due = time.monotonic() + interval
        lease = self._lease
        while not self._stopping.is_set() and lease.state is LeaseState.HELD:
            message = self._next_message(max(0.01, due - time.monotonic()))
            if self._stopping.is_set():
                break
            if message:
                lease.notice(message)
            if time.monotonic() >= due:
                self._renew_once(lateness=time.monotonic() - due)
                due = time.monotonic() + interval
            if time.monotonic() > lease.valid_until:
                lease.mark_lost("not renewed within its TTL (Redis unreachable?)")

    def _next_message(self, timeout: float) -> str | None:
        try:
            item = self._manager._redis.blpop([self._box], timeout=timeout)
        except RedisError:
            renew_log.debug("mailbox read failed for %r", self._lease, exc_info=True)
            self._stopping.wait(min(timeout, 0.2))
            return None
        if item is None:
            return None
        return core._text(item[1])

    def _renew_once(self, lateness: float) -> None:
        interval = self._manager.config.renew_interval
        if lateness > interval / 2:
            renew_log.warning(
                "renewal of %r is %.2fs late (interval %.2fs); the process may"
                " be overloaded or paused", self._lease, lateness, interval,
            )
        try:
            self._manager._renew(self._lease)
        except RedisError:
            renew_log.warning("renewal of %r failed", self._lease, exc_info=True)

    def stop(self) -> None:
        self._stopping.set()
        try:
            with self._manager._redis.pipeline(transaction=False) as pipe:
                pipe.rpush(self._box, "stop").pexpire(self._box, 60_000).execute()
        except RedisError:
            pass
        if threading.current_thread() is not self:
            self.join(timeout=self._manager.config.renew_interval + 1)
