"""The locks measure 1 compares, each reduced to one acquire+release call.

A fluxion lease does more than a Redis lock: it also opens the DuckDB file,
checks the fence and checkpoints and closes the file on release. So it is
timed twice: once whole, on a tiny file, and once with the DuckDB side
replaced by a do-nothing stand-in, which leaves exactly the Redis part
(acquire script, mailbox, keeper thread, release script).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import duckdb
import redis
import redis_lock

import lockmanager._sync as lease_shell
from lockmanager import DuckDBWriteLockManager, LeaseConfig

__all__ = ["KINDS", "lock_op"]

Op = Callable[[], None]

KINDS: dict[str, str] = {
    "fluxion_protocol": "fluxion write lease with DuckDB stubbed out: acquire"
    " script, mailbox wait, keeper thread start/stop, release script",
    "fluxion_file": "fluxion write lease on a tiny DuckDB file: the above plus"
    " open, fence check, CHECKPOINT and close",
    "duckdb_open": "no lock, what a plain process does per turn: duckdb.connect"
    " + CHECKPOINT + close of the same tiny file",
    "redis_py": "redis-py Lock, default polling sleep (0.1 s)",
    "redis_py_1ms": "redis-py Lock, sleep=0.001 (polls 100x more often)",
    "prl": "python-redis-lock Lock, defaults (waiters block on a signal list)",
    "prl_renew": "python-redis-lock Lock, auto_renewal=True (a renewal thread,"
    " as fluxion's keeper)",
}
_EXPIRE_S = 30


class _NoFile:
    """Stands in for the DuckDB side of a lease (handle, connection, cursor).

    Any attribute is this object again and calling it does nothing, so the
    stand-in keeps working when the lease shell renames what it calls.
    """

    def __getattr__(self, name: str) -> _NoFile:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _NoFile:
        return self


@contextmanager
def _duckdb_stubbed() -> Iterator[None]:
    """Replace the lease shell's DuckDB open and fence read, nothing else.

    Raises:
        RuntimeError: the shell no longer has these names; the protocol-only
            timing must then be rewired to the new ones.
    """
    for name in ("open_database", "ensure_fence_table"):
        if not hasattr(lease_shell, name):
            raise RuntimeError(
                f"lockmanager._sync.{name} is gone; update bench.lockkinds to"
                " stub the DuckDB side of a lease another way"
            )
    with ExitStack() as stack:
        stack.enter_context(
            mock.patch.object(lease_shell, "open_database", lambda *a, **k: _NoFile())
        )
        stack.enter_context(
            mock.patch.object(lease_shell, "ensure_fence_table", lambda con: 0)
        )
        yield


@contextmanager
def lock_op(kind: str, redis_url: str, *, prefix: str, tiny_db: str) -> Iterator[Op]:
    """One acquire+release of lock `kind`, built once, called many times."""
    client = redis.Redis.from_url(redis_url)
    try:
        if kind in ("fluxion_protocol", "fluxion_file"):
            manager = DuckDBWriteLockManager(
                client,
                tiny_db,
                config=LeaseConfig(key_prefix=prefix),
                name=f"bench-{os.getpid()}",
            )

            def lease_op() -> None:
                with manager.write():
                    pass

            if kind == "fluxion_protocol":
                with _duckdb_stubbed():
                    yield lease_op
            else:
                yield lease_op
        elif kind == "duckdb_open":
            yield lambda: _open_close(tiny_db)
        else:
            yield _redis_lock_op(kind, client, prefix)
    finally:
        client.close()


def _open_close(path: str) -> None:
    con = duckdb.connect(path)
    con.execute("CHECKPOINT")
    con.close()


def _redis_lock_op(kind: str, client: redis.Redis, prefix: str) -> Op:
    if kind in ("redis_py", "redis_py_1ms"):
        sleep = 0.001 if kind == "redis_py_1ms" else 0.1
        plain = client.lock(f"{prefix}:redis-py", timeout=_EXPIRE_S, sleep=sleep)

        def plain_op() -> None:
            plain.acquire(blocking=True)
            plain.release()

        return plain_op
    if kind in ("prl", "prl_renew"):
        signalled = redis_lock.Lock(
            client, f"{prefix}:prl", expire=_EXPIRE_S, auto_renewal=kind == "prl_renew"
        )

        def signalled_op() -> None:
            signalled.acquire(blocking=True)
            signalled.release()

        return signalled_op
    raise ValueError(f"unknown lock kind {kind!r}; known: {', '.join(KINDS)}")
