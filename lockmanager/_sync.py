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
from ._base import ManagerBase, OpeningRenewer
from ._config import LeaseConfig, Mode, Priority
from ._connect import client_from_url
from ._duck import Handle, claim_fence, ensure_fence_table, open_database
from ._errors import LeaseTimeout, short
from ._lease import Callback, Lease, LeaseState
from ._scripts import LOST

log = logging.getLogger("lockmanager")
renew_log = logging.getLogger("lockmanager.renew")

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


class DuckDBWriteLockManager(ManagerBase):
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
        super().__init__(client, db_path, config, name)
        self._keepers: dict[str, _Keeper] = {}

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
        on_at_risk: Callback | None = None,
    ) -> Lease:
        """Wait for a turn and open the file for it.

        Args:
            mode: shared (read-only) or exclusive (read-write).
            priority: the waiting class.
            wait_for: budget in seconds for queueing and opening together.
            name: how this holder appears to operators.
            on_contended: called (from the keeper thread) when a waiter queues.
            on_lost: called when the lease is lost before release.
            on_at_risk: called when a renewal fails (Redis unreachable):
                the lease may be lost unless a renewal soon succeeds.

        Raises:
            LeaseTimeout: no turn within the budget. The caller's work never
                runs; nothing is left in the queue.
            FileBusy: the turn came but a foreign process held the file.
        """
        started = time.monotonic()
        deadline = started + self._budget(wait_for)
        token = core.new_token()
        who = name or self.name
        try:
            grant = self._wait_turn(token, mode, priority, who, started, deadline)
        except REDIS_DOWN as exc:
            return self._acquire_degraded(mode, priority, who, deadline, exc)
        granted_at = time.monotonic()

        handle: Handle | None = None
        try:
            renewer = self._renewer(token, priority)
            handle = open_database(
                self.db_path,
                read_only=mode is Mode.SHARED,
                budget=deadline - time.monotonic(),
                key=self.key,
                token=token,
                while_waiting=renewer,
            )
            fence = grant.fence
            if mode is Mode.EXCLUSIVE:
                fence = self._settle_fence(handle, token, grant.fence or 0)
        except BaseException:
            if handle is not None:  # never keep the file without the turn
                handle.close(checkpoint=False)
            self._give_back(token)
            raise

        lease = self._lease(
            token=token,
            mode=mode,
            priority=priority,
            who=who,
            fence=fence,
            handle=handle,
            started=started,
            granted_at=granted_at,
            ttl_left=grant.ttl_left,
            status=lambda: self._status(token),
            on_contended=on_contended,
            on_lost=on_lost,
            on_at_risk=on_at_risk,
        )
        lease.valid_until = max(lease.valid_until, renewer.valid_until)
        self._keep(lease)
        log.debug("granted %r after %.3fs", lease, lease.wait_s)
        return lease

    def release(self, lease: Lease) -> None:
        """Close the file (checkpointing a writer), then give the turn back."""
        self._stop_keeper(lease)
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
        self._stop_keeper(lease)
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
        on_at_risk: Callback | None = None,
    ) -> Lease:
        """Take over a lease detached by another process, by its token.

        Raises:
            LeaseLost: no lease is held under this token (expired, released,
                or a wrong token).
            FileBusy: the file stayed locked for the whole budget.
        """
        started = time.monotonic()
        status = self._status(token)
        if not status.held or status.mode is None or status.priority is None:
            raise self._lost(token, "cannot adopt: no lease is held under it")
        handle = open_database(
            self.db_path,
            read_only=status.mode is Mode.SHARED,
            budget=self._budget(wait_for),
            key=self.key,
            token=token,
        )
        lease = self._lease(
            token=token,
            mode=status.mode,
            priority=status.priority,
            who=name or self.name,
            fence=status.fence,
            handle=handle,
            started=started,
            granted_at=started,
            ttl_left=status.ttl_left,
            status=lambda: self._status(token),
            on_contended=on_contended,
            on_lost=on_lost,
            on_at_risk=on_at_risk,
        )
        self._keep(lease)
        return lease

    def release_token(self, token: str) -> bool:
        """Give back a lease held under `token`; False if none was held."""
        reply = self._call("release", token)
        return int(reply[0]) == 1

    def inspect(self, history: int = 50) -> dict[str, Any]:
        """Holders, waiters, fence, counters and the latest history events."""
        reply = self._scripts["snapshot"](keys=[self.key])
        view = core.parse_snapshot(reply, self.key)
        key = core.history_key(self.key)
        entries = self._redis.xrevrange(key, count=history) if history > 0 else []
        view["history"] = core.parse_history(entries)
        return view

    def force_release(
        self, reason: str, *, by: str, token: str | None = None
    ) -> dict[str, Any]:
        """Take the lease from its holders (or one), fence them out, audit it.

        The old holders' next commit is refused, the next waiter is woken,
        and the history keeps who did it and why.
        """
        reply = self._call("force_release", by, reason, token or "")
        return self._forced(reply, by, reason)

    def close(self) -> None:
        for keeper in list(self._keepers.values()):
            keeper.stop()
        self._redis.close()

    # -- internals --------------------------------------------------------

    def _call(self, script: str, *args: Any) -> Any:
        return self._scripts[script](**self._script_args(*args))

    def _keep(self, lease: Lease) -> None:
        keeper = _Keeper(self, lease)
        self._keepers[lease.token] = keeper
        keeper.start()

    def _stop_keeper(self, lease: Lease) -> None:
        keeper = self._keepers.pop(lease.token, None)
        if keeper is not None:
            keeper.stop()

    def _wait_turn(
        self,
        token: str,
        mode: Mode,
        priority: Priority,
        who: str,
        started: float,
        deadline: float,
    ) -> core.Granted:
        args = self._acquire_args(token, mode, priority, who)
        box = core.mailbox(self.key, token)
        try:
            while True:
                step = core.parse_acquire(self._call("acquire", *args))
                if isinstance(step, core.Granted):
                    return step
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout(token, mode, started, step)
                beat = self.config.waiter_heartbeat
                timeout = core.poll_timeout(step, remaining, beat)
                self._redis.blpop([box], timeout=timeout)
        except LeaseTimeout:
            self._cancel(token)
            raise
        except BaseException as exc:
            if not isinstance(exc, REDIS_DOWN):
                self._cancel(token)
            raise

    def _cancel(self, token: str) -> None:
        try:
            self._call("cancel", token)
        except RedisError:
            log.debug("cancel of %s failed; its heartbeat will expire", short(token))

    def _give_back(self, token: str) -> None:
        try:
            self._call("release", token)
        except RedisError:
            self._warn_not_released(token)

    def _settle_fence(self, handle: Handle, token: str, fence: int) -> int:
        """Put the lease's fence above anything the file recorded, and claim it."""
        recorded = ensure_fence_table(handle.connection)
        if fence <= recorded:
            reply = self._call("reseed", token, recorded)
            if int(reply[0]) == LOST:
                raise self._lost(token, "expired while opening the file")
            log.info(
                "fence on %s reseeded from %s to %s (Redis had lost its counter)",
                self.key,
                fence,
                reply[1],
            )
            fence = int(reply[1])
        claim_fence(handle.connection, fence=fence, token=token)
        return fence

    def _renewer(self, token: str, priority: Priority) -> OpeningRenewer:
        return OpeningRenewer(
            self, token, priority, lambda *args: self._call("renew", *args)
        )

    def _status(self, token: str) -> core.Status:
        return core.parse_status(self._call("status", token))

    def _acquire_degraded(
        self,
        mode: Mode,
        priority: Priority,
        who: str,
        deadline: float,
        exc: BaseException,
    ) -> Lease:
        self._warn_degraded(exc)
        started = time.monotonic()
        token = core.new_token()
        handle = open_database(
            self.db_path,
            read_only=mode is Mode.SHARED,
            budget=deadline - started,
            key=self.key,
            token=token,
        )
        fence = (
            ensure_fence_table(handle.connection) + 1
            if mode is Mode.EXCLUSIVE
            else None
        )
        return self._lease(
            token=token,
            mode=mode,
            priority=priority,
            who=who,
            fence=fence,
            handle=handle,
            started=started,
            granted_at=started,
            ttl_left=0,
            status=None,
        )

    def _renew(self, lease: Lease) -> None:
        """One renewal; called only from the lease's keeper thread."""
        asked = time.monotonic()
        reply = self._call("renew", *self._renew_args(lease))
        self._renewed(lease, reply, asked)


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
        return core.text(item[1])

    def _renew_once(self, lateness: float) -> None:
        self._manager._warn_late(self._lease, lateness)
        try:
            self._manager._renew(self._lease)
        except RedisError:
            renew_log.warning("renewal of %r failed", self._lease, exc_info=True)
            self._lease.mark_at_risk(True)

    def stop(self) -> None:
        self._stopping.set()
        try:
            with self._manager._redis.pipeline(transaction=False) as pipe:
                pipe.rpush(self._box, "stop").pexpire(self._box, 60_000).execute()
        except RedisError:
            pass
        if threading.current_thread() is not self:
            self.join(timeout=self._manager.config.renew_interval + 1)
