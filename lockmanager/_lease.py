"""The lease a holder works under: its state, its DuckDB connection, its fence.

One class serves both shells. What differs (how to ask Redis whether the
lease is still held) is passed in as a plain callable, so the state rules
and the write path are written once.
"""

from __future__ import annotations

import concurrent.futures
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import duckdb
from redis.exceptions import RedisError

from ._config import Mode, Priority
from ._core import Status
from ._duck import Handle, stamp_fence
from ._errors import LeaseLost, LeaseStateError, short

log = logging.getLogger("lockmanager.lease")

# What "Redis did not answer" looks like from a status check: a network
# error, or a timeout waiting on the event loop (async leases).
UNANSWERED = (RedisError, TimeoutError, concurrent.futures.TimeoutError, OSError)


class LeaseState(str, enum.Enum):
    """Where a lease is in its life."""

    #: granted by Redis; the DuckDB file is open for the holder
    HELD = "held"
    #: given back by the holder; the file is closed
    RELEASED = "released"
    #: taken away (expired, force-released, max-hold); writes are refused
    LOST = "lost"


Callback = Callable[["Lease"], None]


class Lease:
    """A granted turn on the database file.

    Attributes:
        key: the lock's Redis key prefix.
        token: this grant's owner token; only it can release the lease.
        mode: shared (read-only connection) or exclusive (read-write).
        fence: for exclusive leases, a number larger than any earlier
            grant's; every write transaction records it in the file.
        wait_s: seconds spent waiting for the turn, file opening included.
        degraded: granted through DuckDB's OS lock alone because Redis did
            not answer: safe, but without queue fairness.
    """

    def __init__(
        self,
        *,
        key: str,
        token: str,
        mode: Mode,
        priority: Priority,
        name: str,
        fence: int | None,
        handle: Handle,
        wait_s: float,
        status: Callable[[], Status] | None,
        on_contended: Callback | None = None,
        on_lost: Callback | None = None,
        on_at_risk: Callback | None = None,
        degraded: bool = False,
    ):
        self.key = key
        self.token = token
        self.mode = mode
        self.priority = priority
        self.name = name
        self.fence = fence
        self.wait_s = wait_s
        self.degraded = degraded
        self.acquired_at = time.monotonic()
        #: monotonic time until which the lease is surely valid; the keeper
        #: moves it forward at each renewal
        self.valid_until = float("inf")
        self.state = LeaseState.HELD
        self.lost_reason: str | None = None
        self._handle: Handle | None = handle
        self._cursors: dict[int, duckdb.DuckDBPyConnection] = {}
        self._cursor_lock = threading.Lock()
        self._status = status
        self._contended = threading.Event()
        self._on_contended = on_contended
        self._on_lost = on_lost
        self._on_at_risk = on_at_risk
        #: renewal is failing (Redis unreachable); the lease may be lost
        #: once `valid_until` passes
        self.at_risk = False

    def __repr__(self) -> str:
        return (
            f"<Lease {self.mode.value} {self.key} token={short(self.token)}"
            f" fence={self.fence} state={self.state.value}>"
        )

    @property
    def held_s(self) -> float:
        return time.monotonic() - self.acquired_at

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The lease's DuckDB connection (one thread at a time; see cursor)."""
        self._require(LeaseState.HELD, "use its connection")
        assert self._handle is not None
        return self._handle.connection

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for the calling thread, closed with the lease.

        DuckDB 2.0 refuses one connection used from several threads at once,
        so each thread gets its own cursor on the shared instance.
        """
        self._require(LeaseState.HELD, "open a cursor")
        assert self._handle is not None
        ident = threading.get_ident()
        with self._cursor_lock:
            cur = self._cursors.get(ident)
            if cur is None:
                cur = self._cursors[ident] = self._handle.cursor()
            return cur

    @property
    def contended(self) -> bool:
        """Whether anyone waits for the file now (asks Redis when it can).

        A degraded lease (taken without Redis) cannot know, so it says yes:
        a holder that yields when contended then yields after every turn,
        and nobody is locked out for a whole load.
        """
        if self.degraded:
            return True
        if self._contended.is_set() or self._status is None:
            return self._contended.is_set()
        try:
            return self._status().waiters > 0
        except Exception:  # Redis trouble: fall back to what was pushed to us
            log.debug("contended check failed for %s", self, exc_info=True)
            return self._contended.is_set()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction that commits only under a live lease.

        The fence is stamped first inside the transaction; the lease is
        confirmed with Redis just before COMMIT. A holder whose lease was
        lost therefore rolls back with `LeaseLost`, and one that lost it to
        a writer who already committed is refused by the file itself.
        """
        if self.mode is not Mode.EXCLUSIVE or self.fence is None:
            raise LeaseStateError(
                f"{self!r} is a read lease; take a write lease to change data",
                key=self.key,
                token=self.token,
            )
        cur = self.cursor()
        cur.execute("BEGIN TRANSACTION")
        try:
            stamp_fence(cur, fence=self.fence, token=self.token, key=self.key)
            yield cur
            self.confirm_held()
            cur.execute("COMMIT")
        except BaseException:
            _rollback_quietly(cur)
            raise

    def confirm_held(self) -> None:
        """Raise `LeaseLost` unless Redis still lists this lease as held."""
        self._require(LeaseState.HELD, "commit")
        if self._status is None:
            return
        try:
            status = self._status()
        except UNANSWERED:
            # Redis did not answer. The file's OS lock is still ours and the
            # fence stamp refuses us if a later holder committed, so commit
            # while the last renewal still vouches for the lease.
            if time.monotonic() < self.valid_until:
                return
            self.mark_lost("not confirmed: Redis unreachable past the TTL")
            self._require(LeaseState.HELD, "commit")
            return
        if not status.held:
            self.mark_lost("expired or force-released")
            self._require(LeaseState.HELD, "commit")

    # -- called by the shells -------------------------------------------

    def notice(self, message: str) -> None:
        """Handle one mailbox message pushed by the scripts."""
        if message == "contended":
            if not self._contended.is_set():
                self._contended.set()
                log.debug("%r is contended", self)
                _call(self._on_contended, self)
        elif message == "lost":
            self.mark_lost("expired or force-released")

    def mark_at_risk(self, at_risk: bool) -> None:
        """Renewal failed (True) or worked again (False)."""
        if at_risk == self.at_risk or self.state is not LeaseState.HELD:
            return
        self.at_risk = at_risk
        if at_risk:
            log.warning("lease at risk: %r could not be renewed", self)
            _call(self._on_at_risk, self)

    def mark_lost(self, why: str) -> None:
        if self.state is not LeaseState.HELD:
            return
        self.state = LeaseState.LOST
        self.lost_reason = why
        log.warning("lease lost: %r (%s)", self, why)
        _call(self._on_lost, self)

    def close_database(self) -> None:
        """Close cursors and connection; a writer checkpoints first."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        with self._cursor_lock:
            cursors = list(self._cursors.values())
            self._cursors.clear()
        for cur in cursors:
            cur.close()
        write = self.mode is Mode.EXCLUSIVE and self.state is LeaseState.HELD
        handle.close(checkpoint=write)

    def finish(self) -> None:
        if self.state is LeaseState.HELD:
            self.state = LeaseState.RELEASED

    def _require(self, state: LeaseState, action: str) -> None:
        if self.state is state:
            return
        if self.state is LeaseState.LOST:
            raise LeaseLost(
                f"cannot {action}: lease {short(self.token)} on {self.key} was"
                f" lost ({self.lost_reason}). Renewal runs every third of the"
                " lease TTL; a holder paused longer than the TTL loses its turn.",
                key=self.key,
                token=self.token,
                why=self.lost_reason or "lost",
            )
        raise LeaseStateError(
            f"cannot {action}: lease {short(self.token)} on {self.key} is"
            f" {self.state.value}",
            key=self.key,
            token=self.token,
        )


def _rollback_quietly(cur: duckdb.DuckDBPyConnection) -> None:
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error:
        log.debug("rollback after failure also failed", exc_info=True)


def _call(callback: Callback | None, lease: Lease) -> None:
    if callback is None:
        return
    try:
        callback(lease)
    except Exception:
        log.exception("lease callback %r failed", callback)
