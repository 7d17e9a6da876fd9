"""The lease protocol in one process, against a real Redis."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from lockmanager import (
    DuckDBWriteLockManager,
    FenceRejected,
    LeaseConfig,
    LeaseLost,
    LeaseState,
    LeaseStateError,
    LeaseTimeout,
    Mode,
    Priority,
)


@pytest.fixture
def manager(redis_url: str, db_path: Path, lease_config: LeaseConfig):
    mgr = DuckDBWriteLockManager(redis_url, db_path, config=lease_config)
    with mgr.write() as lease, lease.transaction() as cur:
        cur.execute("CREATE TABLE t (who VARCHAR, fence BIGINT)")
    yield mgr
    mgr.close()


def _queue_in_background(mgr, mode, order, label, **kwargs):
    def run():
        with _Turn(mgr, mode, **kwargs):
            order.append(label)
            time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


class _Turn:
    def __init__(self, mgr, mode, **kwargs):
        self.mgr, self.mode, self.kwargs = mgr, mode, kwargs

    def __enter__(self):
        self.lease = self.mgr.acquire(self.mode, **self.kwargs)
        return self.lease

    def __exit__(self, *exc):
        self.mgr.release(self.lease)


def _wait_for_waiters(mgr, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while len(mgr.inspect()["waiters"]) < n:
        assert time.monotonic() < deadline, "waiters never queued"
        time.sleep(0.01)


def test_write_then_read_sees_committed_rows(manager):
    """A committed write is visible to the next reader."""
    with manager.write() as lease, lease.transaction() as cur:
        cur.execute("INSERT INTO t VALUES ('a', ?)", [lease.fence])

    with manager.read() as lease:
        rows = lease.cursor().execute("SELECT who FROM t").fetchall()

    assert rows == [("a",)]


def test_fences_strictly_increase_per_exclusive_grant(manager):
    """Each exclusive grant gets a larger fence than the one before."""
    fences = []
    for _ in range(3):
        with manager.write() as lease:
            fences.append(lease.fence)

    assert fences == sorted(fences) and len(set(fences)) == 3


def test_waiters_of_one_class_are_served_in_arrival_order(manager):
    """FIFO inside a priority class."""
    order: list[str] = []
    holder = manager.acquire(Mode.EXCLUSIVE)
    threads = []
    for i in range(4):
        threads.append(_queue_in_background(manager, Mode.EXCLUSIVE, order, f"w{i}"))
        _wait_for_waiters(manager, i + 1)
    manager.release(holder)
    for t in threads:
        t.join()

    assert order == ["w0", "w1", "w2", "w3"]


def test_interactive_waiter_goes_before_an_earlier_batch_waiter(manager):
    """Priority classes: interactive before batch (within the aging window)."""
    order: list[str] = []
    holder = manager.acquire(Mode.EXCLUSIVE)
    batch = _queue_in_background(
        manager, Mode.EXCLUSIVE, order, "batch", priority=Priority.BATCH
    )
    _wait_for_waiters(manager, 1)
    inter = _queue_in_background(manager, Mode.EXCLUSIVE, order, "interactive")
    _wait_for_waiters(manager, 2)
    manager.release(holder)
    batch.join()
    inter.join()

    assert order == ["interactive", "batch"]


def test_aged_batch_waiter_goes_before_later_interactive(
    redis_url, db_path, key_prefix
):
    """Aging: a batch waiter that waited longer than batch_aging goes first."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=3, batch_aging=0.3)
    mgr = DuckDBWriteLockManager(redis_url, db_path, config=config)
    order: list[str] = []
    holder = mgr.acquire(Mode.EXCLUSIVE)
    batch = _queue_in_background(
        mgr, Mode.EXCLUSIVE, order, "batch", priority=Priority.BATCH
    )
    _wait_for_waiters(mgr, 1)
    time.sleep(0.5)
    inter = _queue_in_background(mgr, Mode.EXCLUSIVE, order, "interactive")
    _wait_for_waiters(mgr, 2)
    mgr.release(holder)
    batch.join()
    inter.join()

    assert order == ["batch", "interactive"]


def test_queued_writer_stops_new_readers(manager):
    """Writer preference: a reader arriving after a queued writer waits."""
    order: list[str] = []
    reader = manager.acquire(Mode.SHARED)
    writer = _queue_in_background(manager, Mode.EXCLUSIVE, order, "writer")
    _wait_for_waiters(manager, 1)
    late_reader = _queue_in_background(manager, Mode.SHARED, order, "late reader")
    _wait_for_waiters(manager, 2)

    assert order == []
    manager.release(reader)
    writer.join()
    late_reader.join()
    assert order == ["writer", "late reader"]


def test_readers_share_the_file(manager):
    """Two shared leases are held at once."""
    first = manager.acquire(Mode.SHARED)
    second = manager.acquire(Mode.SHARED, wait_for=2)

    assert len(manager.inspect()["holders"]) == 2
    manager.release(first)
    manager.release(second)


def test_holder_sees_contention_only_when_someone_waits(manager):
    """`contended` is false alone and true once a waiter queues."""
    order: list[str] = []
    with manager.write(priority=Priority.BATCH) as lease:
        assert lease.contended is False
        waiter = _queue_in_background(manager, Mode.SHARED, order, "reader")
        _wait_for_waiters(manager, 1)
        assert lease.contended is True
    waiter.join()


def test_timeout_never_runs_the_critical_section_and_leaves_no_waiter(manager):
    """A LeaseTimeout leaves the queue clean and says how long it waited."""
    holder = manager.acquire(Mode.EXCLUSIVE)
    ran = []
    with pytest.raises(LeaseTimeout) as info, manager.write(wait_for=0.2):
        ran.append(True)
    manager.release(holder)

    assert ran == []
    assert info.value.waited >= 0.2
    assert manager.inspect()["waiters"] == []


def test_release_hands_over_directly_without_polling_delay(manager):
    """The next waiter is woken by its mailbox, not by a poll interval."""
    holder = manager.acquire(Mode.EXCLUSIVE)
    granted_at: list[float] = []

    def wait():
        lease = manager.acquire(Mode.EXCLUSIVE)
        granted_at.append(time.monotonic())
        manager.release(lease)

    thread = threading.Thread(target=wait)
    thread.start()
    _wait_for_waiters(manager, 1)
    released_at = time.monotonic()
    manager.release(holder)
    thread.join()

    assert granted_at[0] - released_at < 0.5


def test_force_release_fences_out_the_old_holder(manager):
    """After a force-release the old holder's commit is refused."""
    lease = manager.acquire(Mode.EXCLUSIVE)
    manager.force_release("stuck holder", by="test")

    with pytest.raises(LeaseLost), lease.transaction() as cur:
        cur.execute("INSERT INTO t VALUES ('stale', ?)", [lease.fence])
    manager.release(lease)
    events = [e["event"] for e in manager.inspect()["history"]]
    assert "forced" in events

    with manager.read() as reader:
        stale = reader.cursor().execute("SELECT count(*) FROM t WHERE who = 'stale'")
        assert stale.fetchone() == (0,)


def test_file_refuses_an_older_fence_once_a_newer_one_committed(manager):
    """The fence table in the file is the last line against a stale writer."""
    with manager.write() as lease:
        stale_fence = lease.fence
    with manager.write() as lease:
        with lease.transaction() as cur:
            cur.execute("INSERT INTO t VALUES ('new', ?)", [lease.fence])
        lease.fence = stale_fence
        with pytest.raises(FenceRejected), lease.transaction() as cur:
            cur.execute("INSERT INTO t VALUES ('old', ?)", [stale_fence])


def test_fence_stays_above_the_file_after_redis_loses_its_keys(
    own_redis, db_path, key_prefix
):
    """After FLUSHALL the next fence still exceeds every recorded one."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=3)
    mgr = DuckDBWriteLockManager(own_redis.url, db_path, config=config)
    for _ in range(3):
        with mgr.write() as lease, lease.transaction():
            pass
    recorded = lease.fence
    redis.Redis.from_url(own_redis.url).flushall()

    with mgr.write() as lease, lease.transaction():
        pass

    assert lease.fence > recorded
    mgr.close()


def test_read_lease_refuses_a_write_transaction(manager):
    with manager.read() as lease, pytest.raises(LeaseStateError):
        with lease.transaction():
            pass


def test_released_lease_refuses_its_connection(manager):
    with manager.read() as lease:
        pass

    assert lease.state is LeaseState.RELEASED
    with pytest.raises(LeaseStateError):
        lease.cursor()


def test_expired_holder_frees_the_file_for_the_next_waiter(
    redis_url, db_path, key_prefix
):
    """A holder that stops renewing loses its lease within the TTL."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=0.6)
    mgr = DuckDBWriteLockManager(redis_url, db_path, config=config)
    stuck = mgr.acquire(Mode.EXCLUSIVE)
    mgr._keepers.pop(stuck.token).stop()  # as if the process froze
    stuck.close_database()  # ...but let the OS lock go

    started = time.monotonic()
    with mgr.write(wait_for=5):
        waited = time.monotonic() - started

    assert waited < 0.6 + 0.5
    events = [e["event"] for e in mgr.inspect()["history"]]
    assert "expired" in events


def test_no_lease_keys_are_left_once_everything_is_released(
    manager, redis_url, key_prefix
):
    """Only the fence, the arrival order, counters and history outlive leases."""
    with manager.write():
        pass
    with manager.read():
        pass
    client = redis.Redis.from_url(redis_url)
    left = sorted(
        k.decode().rsplit(":", 1)[-1] for k in client.scan_iter(f"{key_prefix}:*")
    )

    assert left == ["fence", "hist", "order", "seq", "stats"]


def test_lease_handed_to_another_process_by_token(
    manager, redis_url, db_path, lease_config
):
    """A coordinator takes the turn, a worker with the token uses and ends it."""
    coordinator = manager
    lease = coordinator.acquire(Mode.EXCLUSIVE)
    token = coordinator.detach(lease)
    worker = DuckDBWriteLockManager(redis_url, db_path, config=lease_config)
    stranger = DuckDBWriteLockManager(redis_url, db_path, config=lease_config)

    adopted = worker.adopt(token)
    with adopted.transaction() as cur:
        cur.execute("INSERT INTO t VALUES ('worker', ?)", [adopted.fence])

    assert adopted.fence == lease.fence
    assert stranger.release_token("not-the-token") is False
    assert len(stranger.inspect()["holders"]) == 1
    worker.release(adopted)
    assert stranger.inspect()["holders"] == []
    with pytest.raises(LeaseLost):
        worker.adopt(token)
    worker.close()
    stranger.close()


def test_decorator_form_never_runs_the_body_on_timeout(manager):
    """`@manager.write(...)` as a decorator: a timeout skips the function."""
    ran = []

    @manager.write(wait_for=0.2)
    def critical() -> None:
        ran.append(True)

    holder = manager.acquire(Mode.EXCLUSIVE)
    with pytest.raises(LeaseTimeout):
        critical()
    manager.release(holder)
    critical()

    assert ran == [True]


def test_holder_is_told_when_its_lease_is_at_risk_then_lost(own_redis, db_path):
    """Redis gone mid-lease: at-risk callback at the first failed renewal,
    then the lease is marked lost once its TTL has surely run out."""
    config = LeaseConfig(key_prefix="risk", lease_ttl=1.5)
    mgr = DuckDBWriteLockManager(own_redis.url, db_path, config=config)
    told: list[str] = []
    lease = mgr.acquire(
        Mode.EXCLUSIVE,
        on_at_risk=lambda _: told.append("at risk"),
        on_lost=lambda _: told.append("lost"),
    )
    own_redis.stop()

    deadline = time.monotonic() + 5
    while "lost" not in told and time.monotonic() < deadline:
        time.sleep(0.05)

    assert told == ["at risk", "lost"]
    assert lease.state is LeaseState.LOST
    with pytest.raises(LeaseLost):
        with lease.transaction():
            pass
    mgr.release(lease)


def test_errors_cross_process_boundaries_intact():
    """Workers send errors to their parent: they must unpickle whole."""
    import pickle

    from lockmanager import FileBusy

    error = FileBusy("busy", key="k", token="t", waited=2.5, foreign_pid=42)
    copy = pickle.loads(pickle.dumps(error))

    assert (type(copy), str(copy), copy.foreign_pid, copy.waited) == (
        FileBusy,
        "busy",
        42,
        2.5,
    )


def test_one_aged_batch_turn_per_period_however_many_batch_waiters(
    redis_url, db_path, key_prefix
):
    """Two aged ETL workers: one goes first, then the backend, then the other."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=3, batch_aging=0.3)
    mgr = DuckDBWriteLockManager(redis_url, db_path, config=config)
    order: list[str] = []
    holder = mgr.acquire(Mode.EXCLUSIVE)
    first = _queue_in_background(
        mgr, Mode.EXCLUSIVE, order, "etl-1", priority=Priority.BATCH
    )
    _wait_for_waiters(mgr, 1)
    second = _queue_in_background(
        mgr, Mode.EXCLUSIVE, order, "etl-2", priority=Priority.BATCH
    )
    _wait_for_waiters(mgr, 2)
    time.sleep(0.5)  # both have aged past the interactive class
    backend = _queue_in_background(mgr, Mode.EXCLUSIVE, order, "backend")
    _wait_for_waiters(mgr, 3)
    mgr.release(holder)
    for thread in (first, second, backend):
        thread.join()

    assert order == ["etl-1", "backend", "etl-2"]
    mgr.close()
