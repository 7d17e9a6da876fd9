"""The asyncio shell against a real Redis.

The first part mirrors `tests/test_lockmanager_protocol.py` test for test,
wherever the sync semantics apply to `AsyncDuckDBWriteLockManager`. The
second covers what only the async shell has: cancellation of waiting and
holding tasks, the pooled readers of `read()`, and the guard that keeps
blocking DuckDB work off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from lockmanager import (
    AsyncDuckDBWriteLockManager,
    FenceRejected,
    Lease,
    LeaseConfig,
    LeaseLost,
    LeaseState,
    LeaseStateError,
    LeaseTimeout,
    Mode,
    Priority,
)
from lockmanager.private_redis import PrivateRedis

pytestmark = pytest.mark.anyio

Manager = AsyncDuckDBWriteLockManager


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def manager(
    redis_url: str, db_path: Path, lease_config: LeaseConfig
) -> AsyncIterator[Manager]:
    mgr = Manager(redis_url, db_path, config=lease_config)
    async with mgr.write() as lease:
        await asyncio.to_thread(
            _write, lease, "CREATE TABLE t (who VARCHAR, fence BIGINT)"
        )
    yield mgr
    await mgr.aclose()


# -- helpers: DuckDB work runs in worker threads, as the shell requires ---


def _write(lease: Lease, sql: str, *params: Any) -> None:
    with lease.transaction() as cur:
        cur.execute(sql, list(params))


def _rows(lease: Lease, sql: str) -> list[tuple[Any, ...]]:
    return lease.cursor().execute(sql).fetchall()


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition never came true"
        await asyncio.sleep(0.01)


async def _waiters(mgr: Manager, n: int) -> None:
    async def queued() -> bool:
        return len((await mgr.inspect())["waiters"]) >= n

    await _until(queued)


async def _turn(
    mgr: Manager, mode: Mode, order: list[str], label: str, **kwargs: Any
) -> None:
    lease = await mgr.acquire(mode, **kwargs)
    try:
        order.append(label)
        await asyncio.sleep(0.05)
    finally:
        await mgr.release(lease)


def _queue(
    mgr: Manager, mode: Mode, order: list[str], label: str, **kwargs: Any
) -> asyncio.Task[None]:
    return asyncio.create_task(_turn(mgr, mode, order, label, **kwargs))


async def _events(mgr: Manager) -> list[str]:
    return [e["event"] for e in (await mgr.inspect())["history"]]


# -- the sync protocol's semantics ------------------------------------------


async def test_write_then_read_sees_committed_rows(manager: Manager) -> None:
    """A committed write is visible to the next reader."""
    async with manager.write() as lease:
        await asyncio.to_thread(
            _write, lease, "INSERT INTO t VALUES ('a', ?)", lease.fence
        )

    async with manager.read() as lease:
        rows = await asyncio.to_thread(_rows, lease, "SELECT who FROM t")

    assert rows == [("a",)]


async def test_fences_strictly_increase_per_exclusive_grant(manager: Manager) -> None:
    """Each exclusive grant gets a larger fence than the one before."""
    fences = []
    for _ in range(3):
        async with manager.write() as lease:
            fences.append(lease.fence)

    assert fences == sorted(fences) and len(set(fences)) == 3


async def test_waiters_of_one_class_are_served_in_arrival_order(
    manager: Manager,
) -> None:
    """FIFO inside a priority class."""
    order: list[str] = []
    holder = await manager.acquire(Mode.EXCLUSIVE)
    tasks = []
    for i in range(4):
        tasks.append(_queue(manager, Mode.EXCLUSIVE, order, f"w{i}"))
        await _waiters(manager, i + 1)
    await manager.release(holder)
    await asyncio.gather(*tasks)

    assert order == ["w0", "w1", "w2", "w3"]


async def test_interactive_waiter_goes_before_an_earlier_batch_waiter(
    manager: Manager,
) -> None:
    """Priority classes: interactive before batch (within the aging window)."""
    order: list[str] = []
    holder = await manager.acquire(Mode.EXCLUSIVE)
    batch = _queue(manager, Mode.EXCLUSIVE, order, "batch", priority=Priority.BATCH)
    await _waiters(manager, 1)
    interactive = _queue(manager, Mode.EXCLUSIVE, order, "interactive")
    await _waiters(manager, 2)
    await manager.release(holder)
    await asyncio.gather(batch, interactive)

    assert order == ["interactive", "batch"]


async def test_aged_batch_waiter_goes_before_later_interactive(
    redis_url: str, db_path: Path, key_prefix: str
) -> None:
    """Aging: a batch waiter that waited longer than batch_aging goes first."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=3, batch_aging=0.3)
    mgr = Manager(redis_url, db_path, config=config)
    order: list[str] = []
    holder = await mgr.acquire(Mode.EXCLUSIVE)
    batch = _queue(mgr, Mode.EXCLUSIVE, order, "batch", priority=Priority.BATCH)
    await _waiters(mgr, 1)
    await asyncio.sleep(0.5)
    interactive = _queue(mgr, Mode.EXCLUSIVE, order, "interactive")
    await _waiters(mgr, 2)
    await mgr.release(holder)
    await asyncio.gather(batch, interactive)
    await mgr.aclose()

    assert order == ["batch", "interactive"]


async def test_queued_writer_stops_new_readers(manager: Manager) -> None:
    """Writer preference: a reader arriving after a queued writer waits."""
    order: list[str] = []
    reader = await manager.acquire(Mode.SHARED)
    writer = _queue(manager, Mode.EXCLUSIVE, order, "writer")
    await _waiters(manager, 1)
    late_reader = _queue(manager, Mode.SHARED, order, "late reader")
    await _waiters(manager, 2)

    assert order == []
    await manager.release(reader)
    await asyncio.gather(writer, late_reader)
    assert order == ["writer", "late reader"]


async def test_readers_share_the_file(manager: Manager) -> None:
    """Two shared leases are held at once."""
    first = await manager.acquire(Mode.SHARED)
    second = await manager.acquire(Mode.SHARED, wait_for=2)

    assert len((await manager.inspect())["holders"]) == 2
    await manager.release(first)
    await manager.release(second)


async def test_holder_sees_contention_only_when_someone_waits(
    manager: Manager,
) -> None:
    """`contended` is false alone and true once a waiter queues."""
    order: list[str] = []
    async with manager.write(priority=Priority.BATCH) as lease:
        assert await asyncio.to_thread(lambda: lease.contended) is False
        waiter = _queue(manager, Mode.SHARED, order, "reader")
        await _waiters(manager, 1)
        assert await asyncio.to_thread(lambda: lease.contended) is True
    await waiter


async def test_timeout_never_runs_the_critical_section_and_leaves_no_waiter(
    manager: Manager,
) -> None:
    """A LeaseTimeout leaves the queue clean and says how long it waited."""
    holder = await manager.acquire(Mode.EXCLUSIVE)
    ran = []
    with pytest.raises(LeaseTimeout) as info:
        async with manager.write(wait_for=0.2):
            ran.append(True)
    await manager.release(holder)

    assert ran == []
    assert info.value.waited >= 0.2
    assert (await manager.inspect())["waiters"] == []


async def test_release_hands_over_directly_without_polling_delay(
    manager: Manager,
) -> None:
    """The next waiter is woken by its mailbox, not by a poll interval."""
    holder = await manager.acquire(Mode.EXCLUSIVE)
    granted_at: list[float] = []

    async def wait() -> None:
        lease = await manager.acquire(Mode.EXCLUSIVE)
        granted_at.append(time.monotonic())
        await manager.release(lease)

    task = asyncio.create_task(wait())
    await _waiters(manager, 1)
    released_at = time.monotonic()
    await manager.release(holder)
    await task

    assert granted_at[0] - released_at < 0.5


async def test_force_release_fences_out_the_old_holder(manager: Manager) -> None:
    """After a force-release the old holder's commit is refused."""
    lease = await manager.acquire(Mode.EXCLUSIVE)
    await manager.force_release("stuck holder", by="test")

    with pytest.raises(LeaseLost):
        await asyncio.to_thread(_write, lease, "INSERT INTO t VALUES ('stale', 0)")
    await manager.release(lease)
    assert "forced" in await _events(manager)

    async with manager.read() as reader:
        sql = "SELECT count(*) FROM t WHERE who = 'stale'"
        assert await asyncio.to_thread(_rows, reader, sql) == [(0,)]


async def test_file_refuses_an_older_fence_once_a_newer_one_committed(
    manager: Manager,
) -> None:
    """The fence table in the file is the last line against a stale writer."""
    async with manager.write() as lease:
        stale_fence = lease.fence
    async with manager.write() as lease:
        await asyncio.to_thread(_write, lease, "INSERT INTO t VALUES ('new', 0)")
        lease.fence = stale_fence
        with pytest.raises(FenceRejected):
            await asyncio.to_thread(_write, lease, "INSERT INTO t VALUES ('old', 0)")


async def test_fence_stays_above_the_file_after_redis_loses_its_keys(
    own_redis: PrivateRedis, db_path: Path, key_prefix: str
) -> None:
    """After FLUSHALL the next fence still exceeds every recorded one."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=3)
    mgr = Manager(own_redis.url, db_path, config=config)
    recorded = 0
    for _ in range(3):
        async with mgr.write() as lease:
            await asyncio.to_thread(_write, lease, "SELECT 1")
            recorded = lease.fence or 0
    flusher = aioredis.Redis.from_url(own_redis.url)
    await flusher.flushall()
    await flusher.aclose()

    async with mgr.write() as lease:
        await asyncio.to_thread(_write, lease, "SELECT 1")
    await mgr.aclose()

    assert (lease.fence or 0) > recorded


async def test_read_lease_refuses_a_write_transaction(manager: Manager) -> None:
    """A shared lease has no write path."""
    async with manager.read() as lease:
        with pytest.raises(LeaseStateError):
            await asyncio.to_thread(_write, lease, "SELECT 1")


async def test_released_lease_refuses_its_connection(manager: Manager) -> None:
    """Once released, the lease's cursors are gone for good."""
    async with manager.write() as lease:
        pass

    assert lease.state is LeaseState.RELEASED
    with pytest.raises(LeaseStateError):
        lease.cursor()


async def test_expired_holder_frees_the_file_for_the_next_waiter(
    redis_url: str, db_path: Path, key_prefix: str
) -> None:
    """A holder that stops renewing loses its lease within the TTL."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=0.6)
    mgr = Manager(redis_url, db_path, config=config)
    stuck = await mgr.acquire(Mode.EXCLUSIVE)
    mgr._keepers.pop(stuck.token).cancel()  # as if the process froze
    await asyncio.to_thread(stuck.close_database)  # ...but let the OS lock go

    started = time.monotonic()
    async with mgr.write(wait_for=5):
        waited = time.monotonic() - started

    assert waited < 0.6 + 0.5
    assert "expired" in await _events(mgr)
    await mgr.aclose()


async def test_no_lease_keys_are_left_once_everything_is_released(
    manager: Manager, redis_url: str, key_prefix: str
) -> None:
    """Only the fence, the arrival order, counters and history outlive leases."""
    async with manager.write():
        pass
    lease = await manager.acquire(Mode.SHARED)
    await manager.release(lease)
    client = aioredis.Redis.from_url(redis_url)
    keys = [k.decode() async for k in client.scan_iter(f"{key_prefix}:*")]
    await client.aclose()

    left = sorted(k.rsplit(":", 1)[-1] for k in keys)
    assert left == ["fence", "hist", "order", "seq", "stats"]


async def test_decorator_form_never_runs_the_body_on_timeout(
    manager: Manager,
) -> None:
    """`@manager.write(...)` on a coroutine: a timeout skips the function."""
    ran = []

    @manager.write(wait_for=0.2)
    async def body() -> None:
        ran.append(True)

    holder = await manager.acquire(Mode.EXCLUSIVE)
    with pytest.raises(LeaseTimeout):
        await body()
    await manager.release(holder)

    assert ran == []


# -- what only the async shell has --------------------------------------------


async def test_task_cancelled_while_waiting_leaves_no_waiter(manager: Manager) -> None:
    """Cancelling a queued acquire takes its waiter out of the queue at once."""
    holder = await manager.acquire(Mode.EXCLUSIVE)
    waiting = asyncio.create_task(manager.acquire(Mode.EXCLUSIVE, wait_for=30))
    await _waiters(manager, 1)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert (await manager.inspect())["waiters"] == []
    assert "gave_up" in await _events(manager)
    await manager.release(holder)


async def test_task_cancelled_while_holding_gives_the_lease_back(
    manager: Manager,
) -> None:
    """A request cancelled inside `write()` still releases its lease."""
    entered = asyncio.Event()

    async def request() -> None:
        async with manager.write():
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(request())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert (await manager.inspect())["holders"] == []
    started = time.monotonic()
    async with manager.write(wait_for=2):
        assert time.monotonic() - started < 0.5


async def test_pooled_readers_share_one_lease(manager: Manager) -> None:
    """Concurrent `read()` calls in one process hold a single shared lease."""
    inside = asyncio.Barrier(3)
    tokens: list[str] = []

    async def reader() -> None:
        async with manager.read() as lease:
            tokens.append(lease.token)
            await inside.wait()
            await inside.wait()

    tasks = [asyncio.create_task(reader()) for _ in range(2)]
    await inside.wait()
    holders = (await manager.inspect())["holders"]
    await inside.wait()
    await asyncio.gather(*tasks)

    assert len(set(tokens)) == 1
    assert len(holders) == 1 and holders[0]["mode"] == "shared"


async def test_idle_pooled_lease_is_given_back_when_a_writer_queues(
    manager: Manager, redis_url: str, db_path: Path, lease_config: LeaseConfig
) -> None:
    """Kept open while idle; handed over promptly once someone else writes."""
    async with manager.read() as lease:
        pooled = lease.token
    assert [h["token"] for h in (await manager.inspect())["holders"]] == [pooled[:8]]

    other = Manager(redis_url, db_path, config=lease_config)  # another process
    started = time.monotonic()
    async with other.write(wait_for=5):
        waited = time.monotonic() - started
    await other.aclose()

    assert waited < 1.0  # not the pool's TTL (3 s)
    assert lease.state is LeaseState.RELEASED


async def test_busy_pooled_lease_drains_for_a_queued_writer(manager: Manager) -> None:
    """In-flight readers finish, later readers queue behind the writer."""
    order: list[str] = []
    leave = asyncio.Event()

    async def early_reader() -> None:
        async with manager.read():
            await leave.wait()
        order.append("early reader out")

    async def late_reader() -> None:
        async with manager.read():
            order.append("late reader in")

    early = asyncio.create_task(early_reader())
    await _until(lambda: _holder_count(manager, 1))
    writer = _queue(manager, Mode.EXCLUSIVE, order, "writer")
    await _waiters(manager, 1)
    late = asyncio.create_task(late_reader())
    await _waiters(manager, 2)
    leave.set()
    await asyncio.gather(early, writer, late)

    assert order == ["early reader out", "writer", "late reader in"]


async def _holder_count(mgr: Manager, n: int) -> bool:
    return len((await mgr.inspect())["holders"]) == n


async def test_transaction_on_the_event_loop_is_refused(manager: Manager) -> None:
    """Called on the loop thread, `transaction()` raises and commits nothing."""
    async with manager.write() as lease:
        with pytest.raises(LeaseStateError, match="to_thread"):
            _write(lease, "INSERT INTO t VALUES ('on the loop', 0)")

    async with manager.read() as reader:
        rows = await asyncio.to_thread(_rows, reader, "SELECT count(*) FROM t")
    assert rows == [(0,)]
