"""DuckDB side of a lease: open under the OS lock, fence, close cleanly.

DuckDB never waits for its file lock: a conflicting open fails at once. A
lease from Redis says it is our turn, but the previous holder's process may
still be closing (or be paused with the file open after its lease expired).
So the open retries with jittered backoff inside the caller's budget, and
DuckDB's lock error never reaches the caller: it becomes `FileBusy`, which
names the process that holds the file when DuckDB tells us.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable

import duckdb
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from ._errors import FenceRejected, FileBusy, short

log = logging.getLogger("lockmanager.duckdb")

FENCE_TABLE = "_fluxion_fence"
_PID = re.compile(r"PID (\d+)")

_FENCE_DDL = f"""
CREATE TABLE IF NOT EXISTS {FENCE_TABLE} (
    id INTEGER PRIMARY KEY,
    fence BIGINT NOT NULL,
    holder VARCHAR,
    committed_at TIMESTAMP
);
INSERT INTO {FENCE_TABLE}
    SELECT 1, 0, NULL, NULL
    WHERE NOT EXISTS (SELECT 1 FROM {FENCE_TABLE});
"""


def is_lock_conflict(exc: BaseException) -> bool:
    """True for DuckDB's "another process holds the file" error.

    The second message appears when this very process still has the file
    open in the other mode (a reader lease not fully closed yet).
    """
    text = str(exc)
    return isinstance(exc, duckdb.Error) and (
        "Could not set lock" in text
        or "Conflicting lock" in text
        or "different configuration" in text
    )


def open_database(
    path: str,
    *,
    read_only: bool,
    budget: float,
    key: str,
    token: str | None,
    sleep: Callable[[float], None] = time.sleep,
) -> duckdb.DuckDBPyConnection:
    """Open the file, retrying while another process still holds its lock.

    Raises:
        FileBusy: the lock stayed taken for the whole budget.
    """
    started = time.monotonic()
    retrying = Retrying(
        retry=retry_if_exception(is_lock_conflict),
        wait=wait_random_exponential(multiplier=0.005, max=0.25),
        stop=stop_after_delay(max(budget, 0.0)),
        sleep=sleep,
        reraise=False,
    )
    try:
        for attempt in retrying:
            with attempt:
                return _connect(path, read_only)
    except RetryError as err:
        last = err.last_attempt.exception()
        waited = time.monotonic() - started
        pid = _foreign_pid(last)
        who = f"process {pid}" if pid else "another process"
        message = (
            f"{path} stayed locked by {who} for {waited:.1f}s although lease"
            f" {short(token)} on {key} was granted. If {who} is not managed by"
            " fluxion (a notebook, the DuckDB CLI), close it there; otherwise"
            " raise the wait budget."
        )
        raise FileBusy(
            message, key=key, token=token, waited=waited, foreign_pid=pid
        ) from None
    raise AssertionError("unreachable: tenacity returns or raises")


def _connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    if read_only and not os.path.exists(path):
        # A reader must not create the file; the first writer does.
        raise FileNotFoundError(f"{path} does not exist yet; run a write first")
    return duckdb.connect(path, read_only=read_only)


def _foreign_pid(exc: BaseException | None) -> int | None:
    match = _PID.search(str(exc or ""))
    if match is None:
        return None
    pid = int(match.group(1))
    return None if pid == os.getpid() else pid


def ensure_fence_table(con: duckdb.DuckDBPyConnection) -> int:
    """Create the fence table if needed; return the highest fence committed."""
    con.execute(_FENCE_DDL)
    row = con.execute(f"SELECT fence FROM {FENCE_TABLE} WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def stamp_fence(
    cur: duckdb.DuckDBPyConnection, *, fence: int, token: str, key: str
) -> None:
    """Record this transaction's fence, or refuse if a newer one committed.

    Runs inside the caller's open transaction, so the stamp and the caller's
    rows commit or vanish together.
    """
    changed = cur.execute(
        f"UPDATE {FENCE_TABLE} SET fence = ?, holder = ?, committed_at = now()"
        " WHERE id = 1 AND fence <= ?",
        [fence, token, fence],
    ).fetchone()
    if changed and int(changed[0]) == 1:
        return
    seen = ensure_fence_table(cur)
    raise FenceRejected(
        f"write refused on {key}: lease {short(token)} has fence {fence} but the"
        f" file already recorded fence {seen} from a later holder; this lease was"
        " lost (expired or force-released) and must not commit.",
        key=key,
        token=token,
        fence=fence,
        seen=seen,
    )


def checkpoint_and_close(con: duckdb.DuckDBPyConnection, *, write: bool) -> None:
    """End a turn: checkpoint a writer's WAL into the file, then close."""
    try:
        if write:
            con.execute("CHECKPOINT")
    finally:
        con.close()
