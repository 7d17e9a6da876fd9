"""Failures the library claims to survive, one test each.

Claims about processes use real ones: a child that dies while waiting or
holding, and a child that opens the DuckDB file behind the manager's back.
Redis failures are real too: a loopback relay the test cuts (connection
errors with Redis's state intact), and a private `redis-server` that is
stopped and started again on the same port. No test waits on a TTL longer
than 1.5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from lockmanager import (
    AsyncDuckDBWriteLockManager,
    DuckDBWriteLockManager,
    FileBusy,
    LeaseConfig,
    LeaseLost,
    LeaseTimeout,
    Mode,
)
from lockmanager.private_redis import PrivateRedis, start_redis_server

ROOT = Path(__file__).resolve().parents[1]

# Children, run as `python -c CODE ARGS...` from the repository root.
_WAITER = """
import sys
from lockmanager import DuckDBWriteLockManager, LeaseConfig, Mode
url, db, prefix, heartbeat = sys.argv[1:5]
config = LeaseConfig(key_prefix=prefix, lease_ttl=3, waiter_heartbeat=float(heartbeat))
mgr = DuckDBWriteLockManager(url, db, config=config, name="doomed waiter")
mgr.acquire(Mode.EXCLUSIVE, wait_for=60)
print("granted", flush=True)
"""

_HOLDER = """
import sys
from lockmanager import DuckDBWriteLockManager, LeaseConfig, Mode
url, db, prefix, ttl = sys.argv[1:5]
config = LeaseConfig(key_prefix=prefix, lease_ttl=float(ttl))
mgr = DuckDBWriteLockManager(url, db, config=config, name="doomed holder")
mgr.acquire(Mode.EXCLUSIVE)
print("holding", flush=True)
sys.stdin.read()
"""

_FOREIGN = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("ready", flush=True)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
else:
    sys.stdin.read()
con.close()
"""

_PROBE = """
import sys, duckdb
try:
    duckdb.connect(sys.argv[1], read_only=True).close()
    print("opened")
except duckdb.Error as exc:
    print("locked" if "lock" in str(exc).lower() else f"error: {exc}")
"""

Spawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start children; whatever is still running at the end is killed."""
    children: list[subprocess.Popen[str]] = []

    def start(code: str, *args: object) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, args)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()


def _first_line(child: subprocess.Popen[str]) -> str:
    assert child.stdout is not None
    return child.stdout.readline().strip()


def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never came true"
        time.sleep(0.01)


def _pids_waiting(mgr: DuckDBWriteLockManager) -> list[int | None]:
    return [w["pid"] for w in mgr.inspect()["waiters"]]


def _events(mgr: DuckDBWriteLockManager) -> list[str]:
    return [e["event"] for e in mgr.inspect(history=200)["history"]]


def _create_file(mgr: DuckDBWriteLockManager) -> None:
    with mgr.write() as lease, lease.transaction() as cur:
        cur.execute("CREATE TABLE t (who VARCHAR)")


def _create_file_alone(url: str, db_path: Path, config: LeaseConfig) -> None:
    mgr = DuckDBWriteLockManager(url, db_path, config=config)
    _create_file(mgr)
    mgr.close()


class _Relay:
    """A loopback TCP relay to Redis that a test can cut and restore.

    Cutting closes every relayed connection and refuses new ones, so the
    client sees connection errors while Redis keeps its state.
    """

    def __init__(self, target: str):
        self._target = ("127.0.0.1", urlsplit(target).port or 6379)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._server.getsockname()[1]}/0"
        self._open = True
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open:
                client.close()
                continue
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()

    def cut(self) -> None:
        self._open = False
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def restore(self) -> None:
        self._open = True

    def close(self) -> None:
        self.cut()
        self._server.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _shut(src)
        _shut(dst)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def relay(redis_url: str) -> Iterator[_Relay]:
    r = _Relay(redis_url)
    yield r
    r.close()


# -- a process that dies ---------------------------------------------------


def test_dead_waiter_is_dropped_within_its_heartbeat_and_does_not_block_the_line(
    redis_url: str, db_path: Path, key_prefix: str, spawn: Spawn
) -> None:
    """A killed waiter leaves the queue; the live one behind it gets the turn."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=3, waiter_heartbeat=1.5)
    mgr = DuckDBWriteLockManager(redis_url, db_path, config=config)
    holder = mgr.acquire(Mode.EXCLUSIVE)
    doomed = spawn(_WAITER, redis_url, db_path, key_prefix, 1.5)
    _until(lambda: doomed.pid in _pids_waiting(mgr))

    doomed.kill()
    killed_at = time.monotonic()
    granted: list[float] = []
    live = threading.Thread(target=_take_turn, args=(mgr, granted))
    live.start()
    _until(lambda: doomed.pid not in _pids_waiting(mgr))
    dropped_after = time.monotonic() - killed_at
    released_at = time.monotonic()
    mgr.release(holder)
    live.join()

    assert dropped_after < 1.5 + 1.0  # heartbeat, plus at most one poll
    assert granted[0] - released_at < 0.5
    assert "waiter_dropped" in _events(mgr)
    mgr.close()


def _take_turn(mgr: DuckDBWriteLockManager, granted: list[float]) -> None:
    with mgr.write(wait_for=10):
        granted.append(time.monotonic())


def test_holder_expiry_wakes_the_next_waiter_promptly(
    redis_url: str, db_path: Path, key_prefix: str, spawn: Spawn
) -> None:
    """A killed holder's lease passes on as it expires, not at a poll or timeout."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=1.5, wait_for=10)
    mgr = DuckDBWriteLockManager(redis_url, db_path, config=config)
    doomed = spawn(_HOLDER, redis_url, db_path, key_prefix, 1.5)
    assert _first_line(doomed) == "holding"
    granted: list[float] = []
    waiter = threading.Thread(target=_take_turn, args=(mgr, granted))
    waiter.start()
    _until(lambda: len(_pids_waiting(mgr)) == 1)

    doomed.kill()
    doomed.wait()
    holder = mgr.inspect()["holders"][0]
    expires_at = time.monotonic() + holder["ttl_left_s"]
    waiter.join()

    assert -0.05 < granted[0] - expires_at < 0.3
    assert "expired" in _events(mgr)
    mgr.close()


def test_acquire_timeout_never_runs_the_critical_section(
    redis_url: str, db_path: Path, key_prefix: str, spawn: Spawn
) -> None:
    """While another process holds the file, a timed-out turn never starts."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=1.5)
    mgr = DuckDBWriteLockManager(redis_url, db_path, config=config)
    _create_file(mgr)
    holder = spawn(_HOLDER, redis_url, db_path, key_prefix, 1.5)
    assert _first_line(holder) == "holding"
    ran: list[str] = []

    for mode in (Mode.EXCLUSIVE, Mode.SHARED):
        with pytest.raises(LeaseTimeout) as info:
            lease = mgr.acquire(mode, wait_for=0.3)
            ran.append(mode.value)
            mgr.release(lease)
        assert info.value.retry_after >= 1.0

    assert ran == []
    assert mgr.inspect()["waiters"] == []
    mgr.close()


# -- Redis that fails ------------------------------------------------------


def test_failed_release_leaves_the_lease_to_expire_and_a_late_retry_is_harmless(
    redis_url: str,
    db_path: Path,
    key_prefix: str,
    relay: _Relay,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A release lost to an outage: the TTL frees the file; a late retry is a no-op."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=1.5)
    cut_off = DuckDBWriteLockManager(relay.url, db_path, config=config)
    other = DuckDBWriteLockManager(redis_url, db_path, config=config)
    lease = cut_off.acquire(Mode.EXCLUSIVE)

    relay.cut()
    with caplog.at_level(logging.WARNING, logger="lockmanager"):
        cut_off.release(lease)
    assert "could not release" in caplog.text
    assert [h["token"] for h in other.inspect()["holders"]] == [lease.token[:8]]

    started = time.monotonic()
    with other.write(wait_for=5) as successor:
        waited = time.monotonic() - started
        relay.restore()
        cut_off.release(lease)  # the retry, after the TTL did the job
        successor.confirm_held()
    assert waited < 1.5 + 0.5
    cut_off.close()
    other.close()


def test_release_retried_once_redis_answers_frees_the_lease_at_once(
    redis_url: str, db_path: Path, key_prefix: str, relay: _Relay
) -> None:
    """A release that failed can simply be called again."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=1.5)
    cut_off = DuckDBWriteLockManager(relay.url, db_path, config=config)
    other = DuckDBWriteLockManager(redis_url, db_path, config=config)
    lease = cut_off.acquire(Mode.EXCLUSIVE)
    relay.cut()
    cut_off.release(lease)

    relay.restore()
    cut_off.release(lease)

    assert other.inspect()["holders"] == []
    cut_off.close()
    other.close()


def test_redis_down_degrades_to_the_os_lock_and_leases_resume_when_it_returns(
    own_redis: PrivateRedis,
    db_path: Path,
    key_prefix: str,
    spawn: Spawn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No Redis: the file is still taken safely; Redis back: leases as before."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=3, wait_for=5)
    mgr = DuckDBWriteLockManager(own_redis.url, db_path, config=config)
    _create_file(mgr)

    own_redis.stop()
    warnings = caplog.at_level(logging.WARNING, logger="lockmanager")
    with warnings, mgr.write() as lease:
        with lease.transaction() as cur:
            cur.execute("INSERT INTO t VALUES ('degraded')")
        probe = spawn(_PROBE, db_path)
        assert _first_line(probe) == "locked"
    assert lease.degraded
    assert "degraded" in caplog.text

    back = start_redis_server(own_redis.port)
    try:
        with mgr.write() as resumed:
            with resumed.transaction() as cur:
                cur.execute("INSERT INTO t VALUES ('resumed')")
            holders = [h["token"] for h in mgr.inspect()["holders"]]
        with mgr.read() as reader:
            rows = reader.cursor().execute("SELECT who FROM t ORDER BY who").fetchall()
    finally:
        mgr.close()
        back.stop()

    assert not resumed.degraded and holders == [resumed.token[:8]]
    assert (resumed.fence or 0) > (lease.fence or 0)
    assert rows == [("degraded",), ("resumed",)]


# -- a process outside the manager -------------------------------------------


def test_foreign_process_holding_the_file_makes_the_waiter_raise_file_busy(
    redis_url: str, db_path: Path, lease_config: LeaseConfig, spawn: Spawn
) -> None:
    """FileBusy names the PID that holds the file, once the budget runs out."""
    mgr = DuckDBWriteLockManager(redis_url, db_path, config=lease_config)
    _create_file(mgr)
    foreign = spawn(_FOREIGN, db_path)
    assert _first_line(foreign) == "ready"
    ran: list[str] = []

    for mode, budget in ((Mode.EXCLUSIVE, 1.0), (Mode.SHARED, 0.5)):
        with pytest.raises(FileBusy) as info:
            lease = mgr.acquire(mode, wait_for=budget)
            ran.append(mode.value)
            mgr.release(lease)
        assert info.value.foreign_pid == foreign.pid
        assert f"process {foreign.pid}" in str(info.value)
        assert info.value.waited >= budget * 0.8

    assert ran == []
    view = mgr.inspect()
    assert view["holders"] == [] and view["waiters"] == []
    assert foreign.stdin is not None
    foreign.stdin.close()
    foreign.wait()
    with mgr.write(wait_for=2):
        pass
    mgr.close()


def test_grant_stays_held_while_a_foreign_process_still_has_the_file(
    redis_url: str, db_path: Path, key_prefix: str, spawn: Spawn
) -> None:
    """Waiting on the OS lock longer than the TTL does not cost the grant."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=1.0)
    mgr = DuckDBWriteLockManager(redis_url, db_path, config=config)
    _create_file(mgr)
    foreign = spawn(_FOREIGN, db_path, 1.6)
    assert _first_line(foreign) == "ready"

    lease = mgr.acquire(Mode.EXCLUSIVE, wait_for=5)

    lease.confirm_held()
    mgr.release(lease)
    mgr.close()


def test_async_grant_stays_held_while_a_foreign_process_still_has_the_file(
    redis_url: str, db_path: Path, key_prefix: str, spawn: Spawn
) -> None:
    """The async twin keeps a grant alive through a long file open, too."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=1.0)
    _create_file_alone(redis_url, db_path, config)
    foreign = spawn(_FOREIGN, db_path, 1.6)
    assert _first_line(foreign) == "ready"

    async def scenario() -> None:
        mgr = AsyncDuckDBWriteLockManager(redis_url, db_path, config=config)
        lease = await mgr.acquire(Mode.EXCLUSIVE, wait_for=5)
        try:
            await asyncio.to_thread(lease.confirm_held)
        finally:
            await mgr.release(lease)
            await mgr.aclose()

    asyncio.run(scenario())


def test_turn_lost_while_opening_leaves_the_file_closed(
    own_redis: PrivateRedis, db_path: Path, key_prefix: str, spawn: Spawn
) -> None:
    """A grant that is gone by the time the file opens leaves the file closed."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=3)
    mgr = DuckDBWriteLockManager(own_redis.url, db_path, config=config)
    _create_file(mgr)
    flusher = redis.Redis.from_url(own_redis.url)
    flusher.flushall()  # the next grant's fence is not above the file's: reseed
    flusher.close()
    foreign = spawn(_FOREIGN, db_path, 1.0)
    assert _first_line(foreign) == "ready"
    failures: list[BaseException] = []
    opener = threading.Thread(target=_acquire_into, args=(mgr, failures))
    opener.start()
    _until(lambda: len(mgr.inspect()["holders"]) == 1)

    mgr.force_release("taken while the file was busy", by="test")
    opener.join()

    assert [type(f) for f in failures] == [LeaseLost]
    assert _first_line(spawn(_PROBE, db_path)) == "opened"
    mgr.close()


def _acquire_into(mgr: DuckDBWriteLockManager, failures: list[BaseException]) -> None:
    try:
        mgr.release(mgr.acquire(Mode.EXCLUSIVE, wait_for=5))
    except LeaseLost as exc:
        failures.append(exc)


def test_async_acquire_cancelled_while_opening_leaves_the_file_closed(
    redis_url: str, db_path: Path, lease_config: LeaseConfig, spawn: Spawn
) -> None:
    """A request cancelled while its turn waits on the file lock leaves no trace."""
    _create_file_alone(redis_url, db_path, lease_config)
    foreign = spawn(_FOREIGN, db_path, 1.0)
    assert _first_line(foreign) == "ready"

    async def scenario() -> None:
        mgr = AsyncDuckDBWriteLockManager(redis_url, db_path, config=lease_config)
        task = asyncio.create_task(mgr.acquire(Mode.EXCLUSIVE, wait_for=5))
        while not (await mgr.inspect())["holders"]:
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(foreign.wait)
        await asyncio.sleep(0.6)  # the open retried at most 0.25 s apart
        assert (await mgr.inspect())["holders"] == []
        await mgr.aclose()

    asyncio.run(scenario())

    assert _first_line(spawn(_PROBE, db_path)) == "opened"


# -- configurations the library accepts -----------------------------------------


def test_live_waiter_keeps_its_place_whatever_heartbeat_the_config_accepts(
    redis_url: str, db_path: Path, key_prefix: str
) -> None:
    """A heartbeat LeaseConfig accepts never drops a waiter that is alive."""
    try:
        config = LeaseConfig(key_prefix=key_prefix, lease_ttl=3, waiter_heartbeat=0.4)
    except ValueError:
        return  # refusing it up front is as good
    mgr = DuckDBWriteLockManager(redis_url, db_path, config=config)
    holder = mgr.acquire(Mode.EXCLUSIVE)
    granted: list[float] = []
    waiter = threading.Thread(target=_take_turn, args=(mgr, granted))
    waiter.start()
    _until(lambda: len(_pids_waiting(mgr)) == 1)
    time.sleep(1.5)

    events = _events(mgr)
    mgr.release(holder)
    waiter.join()
    mgr.close()

    assert "waiter_dropped" not in events
