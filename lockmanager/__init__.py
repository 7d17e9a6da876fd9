"""Leases on one DuckDB file, coordinated through Redis.

DuckDB lets one process write a file or many read it, never both. This
package gives every process its turn: shared leases for readers, exclusive
leases with a fencing token for writers, a fair queue with priority classes,
direct hand-off, renewal, expiry, and operator views.
"""

from ._async import AsyncDuckDBWriteLockManager
from ._config import LeaseConfig, Mode, Priority, lock_name_for
from ._duck import is_lock_conflict
from ._errors import (
    FenceRejected,
    FileBusy,
    LeaseLost,
    LeaseStateError,
    LeaseTimeout,
    LockManagerError,
)
from ._lease import Lease, LeaseState
from ._sync import DuckDBWriteLockManager

__all__ = [
    "AsyncDuckDBWriteLockManager",
    "DuckDBWriteLockManager",
    "FenceRejected",
    "FileBusy",
    "Lease",
    "LeaseConfig",
    "LeaseLost",
    "LeaseState",
    "LeaseStateError",
    "LeaseTimeout",
    "LockManagerError",
    "Mode",
    "Priority",
    "is_lock_conflict",
    "lock_name_for",
]
