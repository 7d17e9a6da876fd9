"""The asyncio shell: `AsyncDuckDBWriteLockManager`, used by the backend.

Same protocol and decisions as the sync shell (`_core` and the scripts);
only the waiting is awaited. DuckDB itself is blocking, so opening, closing
and every query run in worker threads; `Lease.transaction` must be called
from such a thread (it confirms the lease with Redis through the loop).

Readers share one lease per process (`read()`): while nobody else wants the
file the read-only connection stays open across requests, which saves the
open cost; as soon as a writer queues, new readers stop joining, in-flight
ones finish, and the lease is given back so the writer gets its turn.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import _core as core
from ._base import ManagerBase, OpeningRenewer
from ._config import LeaseConfig, Mode, Priority
from ._connect import async_client_from_url
from ._duck import Handle, claim_fence, ensure_fence_table, open_database
from ._errors import LeaseStateError, short
from ._lease import Callback, Lease, LeaseState
from ._scripts import LOST
from ._sync import REDIS_DOWN

log = logging.getLogger("lockmanager")
renew_log = logging.getLogger("lockmanager.renew")


class AsyncDuckDBWriteLockManager(ManagerBase):
    """The asyncio twin of `DuckDBWriteLockManager`; same arguments."""

    def __init__(
        self,
        client: aioredis.Redis | str,
        db_path: str | os.PathLike[str],
        *,
        config: LeaseConfig | None = None,
        name: str | None = None,
    ):
        if isinstance(client, str):
            client = async_client_from_url(client)
        super().__init__(client, db_path, config, name)
        self._keepers: dict[str, asyncio.Task[None]] = {}
        self._pool = _ReaderPool(self)

    @asynccontextmanager
    async def write(self, **kwargs: Any) -> AsyncIterator[Lease]:
        """An exclusive lease; see `DuckDBWriteLockManager.acquire`."""
        lease = await self.acquire(Mode.EXCLUSIVE, **kwargs)
        try:
            yield lease
        finally:
            await self.release(lease)

    @asynccontextmanager
    async def read(
        self, *, wait_for: float | None = None, name: str | None = None
    ) -> AsyncIterator[Lease]:
        """A shared lease, pooled with this process's other readers."""
        lease = await self._pool.join(wait_for=wait_for, name=name)
        try:
            yield lease
        finally:
            await self._pool.leave(lease)

    async def acquire(
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
        """Wait for a turn and open the file; see the sync `acquire`."""
        started = time.monotonic()
        deadline = started + self._budget(wait_for)
        token = core.new_token()
        who = name or self.name
        try:
            grant = await self._wait_turn(token, mode, priority, who, started, deadline)
        except REDIS_DOWN as exc:
            return await self._acquire_degraded(mode, priority, who, deadline, exc)
        granted_at = time.monotonic()

        loop = asyncio.get_running_loop()
        renewer = self._renewer_from_thread(token, priority, loop)
        opening = asyncio.ensure_future(
            asyncio.to_thread(
                open_database,
                self.db_path,
                read_only=mode is Mode.SHARED,
                budget=deadline - time.monotonic(),
                key=self.key,
                token=token,
                while_waiting=renewer,
            )
        )
        try:
            # Shielded: a cancelled request must not abandon an open that
            # its worker thread finishes anyway (the file would stay locked).
            handle = await asyncio.shield(opening)
            fence = grant.fence
            if mode is Mode.EXCLUSIVE:
                fence = await self._settle_fence(handle, token, grant.fence or 0)
        except BaseException:
            await asyncio.shield(self._abandon(opening, token))
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
            status=lambda: self._status_from_thread(token, loop),
            on_contended=on_contended,
            on_lost=on_lost,
            on_at_risk=on_at_risk,
        )
        lease.valid_until = max(lease.valid_until, renewer.valid_until)
        # The keeper outlives the request that took the lease: give it a
        # context of its own, so caller-bound values (request ids) stay out.
        self._keepers[token] = asyncio.create_task(
            self._keep(lease), context=contextvars.Context()
        )
        return lease

    async def release(self, lease: Lease) -> None:
        """Close the file (checkpointing a writer), then give the turn back.

        Safe against cancellation: the hand-back to Redis is shielded, so a
        cancelled request never leaves its lease to run out its TTL.
        """
        keeper = self._keepers.pop(lease.token, None)
        if keeper is not None:
            keeper.cancel()
        try:
            await asyncio.shield(asyncio.to_thread(lease.close_database))
        finally:
            lease.finish()
            if not lease.degraded:
                await asyncio.shield(self._give_back(lease.token))

    async def inspect(self, history: int = 50) -> dict[str, Any]:
        """Holders, waiters, fence, counters and the latest history events."""
        reply = await self._scripts["snapshot"](keys=[self.key])
        view = core.parse_snapshot(reply, self.key)
        key = core.history_key(self.key)
        entries = await self._redis.xrevrange(key, count=history) if history > 0 else []
        view["history"] = core.parse_history(entries)
        return view

    async def force_release(
        self, reason: str, *, by: str, token: str | None = None
    ) -> dict[str, Any]:
        """Take the lease from its holders; see the sync `force_release`."""
        reply = await self._call("force_release", by, reason, token or "")
        return self._forced(reply, by, reason)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def aclose(self) -> None:
        await self._pool.close()
        for task in list(self._keepers.values()):
            task.cancel()
        await self._redis.aclose()

    # -- internals --------------------------------------------------------

    async def _call(self, script: str, *args: Any) -> Any:
        return await self._scripts[script](**self._script_args(*args))

    async def _wait_turn(
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
                step = core.parse_acquire(await self._call("acquire", *args))
                if isinstance(step, core.Granted):
                    return step
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout(token, mode, started, step)
                beat = self.config.waiter_heartbeat
                timeout = core.poll_timeout(step, remaining, beat)
                await self._redis.blpop([box], timeout=timeout)
        except BaseException as exc:
            if not isinstance(exc, REDIS_DOWN):
                await asyncio.shield(self._cancel(token))
            raise

    async def _abandon(self, opening: asyncio.Future[Handle], token: str) -> None:
        """Close whatever the open produced, then give the turn back."""
        try:
            handle = await opening
        except BaseException:  # the open failed: nothing to close
            handle = None
        if handle is not None:
            await asyncio.to_thread(handle.close, checkpoint=False)
        await self._give_back(token)

    def _renewer_from_thread(
        self, token: str, priority: Priority, loop: asyncio.AbstractEventLoop
    ) -> OpeningRenewer:
        def renew(*args: Any) -> Any:
            call = self._call("renew", *args)
            return asyncio.run_coroutine_threadsafe(call, loop).result(5)

        return OpeningRenewer(self, token, priority, renew)

    async def _cancel(self, token: str) -> None:
        try:
            await self._call("cancel", token)
        except RedisError:
            log.debug("cancel of %s failed; its heartbeat will expire", short(token))

    async def _give_back(self, token: str) -> None:
        try:
            await self._call("release", token)
        except RedisError:
            self._warn_not_released(token)

    async def _settle_fence(self, handle: Handle, token: str, fence: int) -> int:
        """Put the lease's fence above anything the file recorded, and claim it."""
        con = handle.connection
        recorded = await asyncio.to_thread(ensure_fence_table, con)
        if fence <= recorded:
            reply = await self._call("reseed", token, recorded)
            if int(reply[0]) == LOST:
                raise self._lost(token, "expired while opening the file")
            fence = int(reply[1])
        await asyncio.to_thread(claim_fence, con, fence=fence, token=token)
        return fence

    async def _status(self, token: str) -> core.Status:
        return core.parse_status(await self._call("status", token))

    def _status_from_thread(
        self, token: str, loop: asyncio.AbstractEventLoop
    ) -> core.Status:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise LeaseStateError(
                "Lease.transaction() blocks; call it from a worker thread"
                " (await asyncio.to_thread(...)), not on the event loop",
                key=self.key,
                token=token,
            )
        future = asyncio.run_coroutine_threadsafe(self._status(token), loop)
        return future.result(timeout=max(1.0, self.config.lease_ttl / 3))

    async def _acquire_degraded(
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
        handle = await asyncio.to_thread(
            open_database,
            self.db_path,
            read_only=mode is Mode.SHARED,
            budget=deadline - started,
            key=self.key,
            token=token,
        )
        fence = None
        if mode is Mode.EXCLUSIVE:
            fence = await asyncio.to_thread(ensure_fence_table, handle.connection) + 1
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

    async def _keep(self, lease: Lease) -> None:
        """Renew the lease and read its mailbox until it is released."""
        interval = self.config.renew_interval
        box = core.mailbox(self.key, lease.token)
        due = time.monotonic() + interval
        while lease.state is LeaseState.HELD:
            timeout = max(0.01, due - time.monotonic())
            try:
                item = await self._redis.blpop([box], timeout=timeout)
            except RedisError:
                renew_log.debug("mailbox read failed for %r", lease, exc_info=True)
                item = None
                await asyncio.sleep(min(timeout, 0.2))
            if item:
                lease.notice(core.text(item[1]))
            if time.monotonic() >= due:
                await self._renew(lease, lateness=time.monotonic() - due)
                due = time.monotonic() + interval
            if time.monotonic() > lease.valid_until:
                lease.mark_lost("not renewed within its TTL (Redis unreachable?)")

    async def _renew(self, lease: Lease, lateness: float) -> None:
        self._warn_late(lease, lateness)
        asked = time.monotonic()
        try:
            reply = await self._call("renew", *self._renew_args(lease))
        except RedisError:
            renew_log.warning("renewal of %r failed", lease, exc_info=True)
            lease.mark_at_risk(True)
            return
        self._renewed(lease, reply, asked)


class _ReaderPool:
    """One shared lease per process, joined by concurrent readers.

    A reader joins the open lease unless a writer waits (the lease is then
    draining); otherwise it queues for a fresh shared lease like anyone
    else, behind that writer. The last reader out of a draining lease gives
    it back; an idle, uncontended lease stays open for the next request.
    """

    def __init__(self, manager: AsyncDuckDBWriteLockManager):
        self._manager = manager
        self._lease: Lease | None = None
        self._users: dict[str, int] = {}
        self._opening = asyncio.Lock()

    def _usable(self, lease: Lease | None) -> bool:
        # A degraded lease (Redis down) hears of no waiter, so it is never
        # kept open: the next request, or a writer, must be able to get in.
        return (
            lease is not None
            and lease.state is LeaseState.HELD
            and not lease.degraded
            and not lease._contended.is_set()
        )

    async def join(self, *, wait_for: float | None, name: str | None) -> Lease:
        if self._usable(self._lease):
            return self._enter(self._lease)  # type: ignore[arg-type]
        async with self._opening:
            if self._usable(self._lease):
                return self._enter(self._lease)  # type: ignore[arg-type]
            lease = await self._manager.acquire(
                Mode.SHARED,
                wait_for=wait_for,
                name=name or f"{self._manager.name} readers",
                on_contended=self._on_contended,
                on_lost=self._on_contended,
            )
            self._lease = lease
            return self._enter(lease)

    def _enter(self, lease: Lease) -> Lease:
        self._users[lease.token] = self._users.get(lease.token, 0) + 1
        return lease

    async def leave(self, lease: Lease) -> None:
        left = self._users[lease.token] - 1
        self._users[lease.token] = left
        if left == 0 and not self._usable(lease):
            await self._retire(lease)

    def _on_contended(self, lease: Lease) -> None:
        if self._users.get(lease.token, 0) != 0:
            return  # the last reader out retires it
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # off the loop (a worker thread): leave() retires it
        loop.create_task(self._retire(lease))

    async def _retire(self, lease: Lease) -> None:
        if self._users.pop(lease.token, None) is None:
            return  # already retired by another path
        if self._lease is lease:
            self._lease = None
        await self._manager.release(lease)

    async def close(self) -> None:
        lease = self._lease
        if lease is not None and self._users.get(lease.token, 0) == 0:
            await self._retire(lease)
