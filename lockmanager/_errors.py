"""Exceptions raised by :mod:`lockmanager`.

The tree is shallow on purpose::

    LockManagerError
    ├── LeaseTimeout        the lease was not granted inside the wait budget
    │   └── FileBusy        granted, but a process outside the manager holds
    │                       the DuckDB file (its PID is named when known)
    ├── LeaseLost           the lease expired, was force-released or hit its
    │                       max-hold budget; further writes are refused
    │   └── FenceRejected   the file has seen a newer fence: a later holder
    │                       already committed, so this one must not
    └── LeaseStateError     a call that does not fit the lease's state

Every error carries the lock ``key`` and, where there is one, the lease
``token`` (shortened in messages), so logs and HTTP handlers can say which
lock and which holder without parsing text.
"""

from __future__ import annotations

__all__ = [
    "FenceRejected",
    "FileBusy",
    "LeaseLost",
    "LeaseStateError",
    "LeaseTimeout",
    "LockManagerError",
]


def short(token: str | None) -> str:
    return (token or "-")[:8]


class LockManagerError(Exception):
    """Root of every error this package raises on purpose."""

    def __init__(self, message: str, *, key: str, token: str | None = None):
        super().__init__(message)
        self.key = key
        self.token = token

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive pickling by default, and
        # these errors cross process boundaries (ETL workers).
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return (_rebuild, (type(self), str(self), fields))


def _rebuild(
    cls: type[LockManagerError], message: str, fields: dict[str, object]
) -> LockManagerError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(fields)
    return error


class LeaseTimeout(LockManagerError):
    """The lease was not granted before the caller's wait budget ran out."""

    def __init__(
        self,
        message: str,
        *,
        key: str,
        token: str | None = None,
        waited: float,
        retry_after: float = 1.0,
    ):
        super().__init__(message, key=key, token=token)
        self.waited = waited
        self.retry_after = retry_after


class FileBusy(LeaseTimeout):
    """The lease was granted but DuckDB's OS lock stayed taken."""

    def __init__(
        self,
        message: str,
        *,
        key: str,
        token: str | None = None,
        waited: float,
        foreign_pid: int | None,
    ):
        super().__init__(message, key=key, token=token, waited=waited)
        self.foreign_pid = foreign_pid


class LeaseLost(LockManagerError):
    """The lease is no longer held; the holder must stop writing."""

    def __init__(self, message: str, *, key: str, token: str | None, why: str):
        super().__init__(message, key=key, token=token)
        self.why = why


class FenceRejected(LeaseLost):
    """The database already recorded a newer fence than this lease's."""

    def __init__(
        self, message: str, *, key: str, token: str | None, fence: int, seen: int
    ):
        super().__init__(message, key=key, token=token, why="fenced")
        self.fence = fence
        self.seen = seen


class LeaseStateError(LockManagerError):
    """A method was called on a lease in a state that does not allow it."""
