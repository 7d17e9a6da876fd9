"""What a request handler depends on: the database gateway, settings, admin.

`Database` is the only way the routes touch DuckDB. It takes the lease,
runs the caller's function with a cursor in a worker thread (DuckDB
blocks), records lease wait and hold times, and never lets a cursor outlive
its lease. Handlers receive it through the `DatabaseDep` alias.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, TypeVar

import duckdb
from fastapi import Depends, HTTPException, Request, status

from lockmanager import (
    AsyncDuckDBWriteLockManager,
    Lease,
    LockManagerError,
    Mode,
    Priority,
)

from .metrics import Metrics
from .settings import Settings

__all__ = [
    "AdminDep",
    "Database",
    "DatabaseDep",
    "MetricsDep",
    "SettingsDep",
    "fetch_dicts",
]

log = logging.getLogger("backend.database")

T = TypeVar("T")
Cursor = duckdb.DuckDBPyConnection
_Pending = tuple[Callable[[Cursor], object], "asyncio.Future[object]"]

# One group-commit turn ends after this long or this many changes, so that
# a stream of writes cannot keep readers and the ETL out.
GROUP_TURN_SECONDS = 0.25
GROUP_MAX_CHANGES = 64


class Database:
    """Runs queries under shared leases and changes under exclusive ones.

    Args:
        manager: the process's lease manager.
        settings: read and write wait budgets.
        metrics: where lease wait and hold times go.
    """

    def __init__(
        self,
        manager: AsyncDuckDBWriteLockManager,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.manager = manager
        self._settings = settings
        self._metrics = metrics
        self._pending: list[_Pending] = []
        self._committer: asyncio.Task[None] | None = None

    async def read(
        self, query: Callable[[Cursor], T], *, wait_for: float | None = None
    ) -> T:
        """Run ``query(cursor)`` under this process's shared lease.

        Raises:
            LeaseTimeout: no shared lease within the wait budget
                (``settings.read_wait`` unless ``wait_for`` is given).
        """
        budget = self._settings.read_wait if wait_for is None else wait_for
        lease_cm = self.manager.read(wait_for=budget)
        async with self._timed(Mode.SHARED, lease_cm) as lease:
            return await _in_thread_to_the_end(lambda: query(lease.cursor()))

    async def write(
        self, change: Callable[[Cursor], T], *, wait_for: float | None = None
    ) -> T:
        """Run ``change(cursor)`` in one fenced transaction, committed on return.

        Writes that arrive while the backend waits for (or holds) its write
        turn share that turn (group commit): one lease, one file open, one
        CHECKPOINT for all of them, each still in its own transaction and
        acknowledged only after its own COMMIT. The transaction stamps the
        lease's fence and confirms the lease with Redis before COMMIT, so a
        returned value means the change is durable.

        Raises:
            LeaseTimeout: no exclusive lease within the wait budget
                (``settings.write_wait`` unless ``wait_for`` is given).
            LeaseLost: the lease was taken away before COMMIT; nothing was
                written.
        """
        budget = self._settings.write_wait if wait_for is None else wait_for
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending.append((change, future))
        if self._committer is None or self._committer.done():
            # A fresh context: the committer serves many requests, so it must
            # not log under the request id of the one that started it.
            self._committer = asyncio.create_task(
                self._commit_turns(budget), context=contextvars.Context()
            )
        result = await future
        return result  # type: ignore[return-value]  # set by the change itself

    async def _commit_turns(self, budget: float) -> None:
        """Take write turns until no change is pending."""
        while self._pending:
            lease_cm = self.manager.write(
                priority=Priority.INTERACTIVE, wait_for=budget
            )
            try:
                async with self._timed(Mode.EXCLUSIVE, lease_cm) as lease:
                    await self._commit_pending(lease)
            except Exception as exc:
                failed, self._pending = self._pending, []
                for _, future in failed:
                    if not future.done():
                        future.set_exception(exc)

    async def _commit_pending(self, lease: Lease) -> None:
        """Commit what is pending, and what arrives meanwhile, up to a bound."""
        turn_ends = time.monotonic() + GROUP_TURN_SECONDS
        while self._pending and time.monotonic() < turn_ends:
            batch = self._pending[:GROUP_MAX_CHANGES]
            del self._pending[: len(batch)]

            changes = [change for change, _ in batch]
            try:
                outcomes = await _in_thread_to_the_end(
                    lambda: _commit_together(lease, changes)
                )
            except Exception as exc:  # the lease itself failed: all of them
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                raise
            for (_, future), (ok, value) in zip(batch, outcomes):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)  # type: ignore[arg-type]

    @asynccontextmanager
    async def _timed(
        self, mode: Mode, lease_cm: AbstractAsyncContextManager[Lease]
    ) -> AsyncIterator[Lease]:
        """Record the wait, and the hold up to the lease's give-back.

        The hold includes closing the file (a writer's CHECKPOINT), since
        everyone else waits for that too.
        """
        started = time.perf_counter()
        granted: float | None = None
        try:
            async with lease_cm as lease:
                granted = time.perf_counter()
                self._metrics.lease_wait_seconds.labels(mode=mode.value).observe(
                    granted - started
                )
                yield lease
        finally:
            if granted is not None:
                held = time.perf_counter() - granted
                self._metrics.lease_hold_seconds.labels(mode=mode.value).observe(held)


def _commit_together(
    lease: Lease, changes: list[Callable[[Cursor], object]]
) -> list[tuple[bool, object]]:
    """Commit the changes in one transaction; one by one if any fails.

    One COMMIT (one WAL sync, one fence stamp, one lease check) for the
    whole group is what makes a burst of writes cheap. If a change fails
    (a duplicate email, say), the group is rolled back and each change is
    run in its own transaction, so only the failing request fails.
    """
    if len(changes) > 1:
        try:
            with lease.transaction() as cur:
                return [(True, change(cur)) for change in changes]
        except LockManagerError:
            raise
        except Exception:
            log.debug("group of %d writes failed; retrying one by one", len(changes))
    outcomes: list[tuple[bool, object]] = []
    for change in changes:
        try:
            with lease.transaction() as cur:
                outcomes.append((True, change(cur)))
        except LockManagerError:
            raise
        except Exception as exc:  # handed to that request alone
            outcomes.append((False, exc))
    return outcomes


async def _in_thread_to_the_end(work: Callable[[], T]) -> T:
    """Run blocking work in a thread; if cancelled, still wait for it.

    A cancelled request must not leave its lease while the worker thread
    still uses the lease's cursor (the release closes it) or sits inside
    a transaction, so cancellation is passed on only once the thread ends.
    """
    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task})
        task.exception()  # retrieved, so asyncio does not log it as lost
        raise


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def require_admin(request: Request, settings: SettingsDep) -> str:
    """Check the bearer token; return who is acting, for the audit log.

    Raises:
        HTTPException: 403 when no admin token is configured, 401 when the
            request's token is missing or wrong.
    """
    expected = settings.admin_token
    if expected is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=(
                "admin endpoints are disabled because no admin token is"
                " configured; set FLUXION_ADMIN_TOKEN and restart the backend"
            ),
        )

    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    valid = scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.encode()
    )
    if not valid:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=(
                "missing or wrong admin token; send the header"
                " 'Authorization: Bearer <FLUXION_ADMIN_TOKEN>'"
            ),
            headers={"WWW-Authenticate": "Bearer"},
        )

    client = request.client.host if request.client else "unknown"
    return f"admin@{client}"


AdminDep = Annotated[str, Depends(require_admin)]


def fetch_dicts(
    cur: Cursor, sql: str, params: list[object] | None = None
) -> list[dict[str, object]]:
    """Run a parameterised query and return its rows as column -> value."""
    cur.execute(sql, params or [])
    names = [column[0] for column in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
