"""Operator endpoints: see the lease, take it back. Both need the admin token.

The Redis fence and the file's fence high-water mark are shown side by
side: the file's may lag by the grants that never committed, but it must
never be ahead of Redis (see the fencing notes in `lockmanager`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, StringConstraints

from lockmanager import LeaseTimeout, LockManagerError

from ..deps import AdminDep, Cursor, Database, DatabaseDep, fetch_dicts

__all__ = ["router"]

router = APIRouter(prefix="/admin", tags=["admin"])

audit = logging.getLogger("backend.audit")

# Name of the table where `lockmanager` stamps each write's fence.
FENCE_TABLE = "_fluxion_fence"

# An operator looks at the locks precisely when the file is busy, so the
# file's fence is read with a short wait and reported missing, not a 503.
FILE_FENCE_WAIT = 0.5
AUDIT_WRITE_WAIT = 10.0


class FileFence(BaseModel):
    fence: int
    holder: str | None
    committed_at: datetime | None


class LocksView(BaseModel):
    key: str
    server_time_ms: int
    redis_fence: int
    file_fence: FileFence | None
    file_fence_error: str | None
    holders: list[dict[str, Any]]
    waiters: list[dict[str, Any]]
    counters: dict[str, int]
    history: list[dict[str, Any]]


class Liberacion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)
    ]


class Liberado(BaseModel):
    released: int
    fence: int
    by: str
    reason: str


@router.get("/locks", response_model=LocksView)
async def ver_locks(
    _: AdminDep,
    database: DatabaseDep,
    history: Annotated[int, Query(ge=1, le=500)] = 50,
) -> LocksView:
    """Holders, waiters, both fences, counters and recent grants/releases."""
    view = await database.manager.inspect(history=history)
    busy = view["waiters"] or any(h["mode"] == "exclusive" for h in view["holders"])
    if busy:
        # Queueing a read now would make the writer yield to a dashboard
        # refresh; the fence is shown again once the file is free.
        file_fence, error = None, "file busy (a writer holds or waits), not read"
    else:
        try:
            row = await database.read(_file_fence, wait_for=FILE_FENCE_WAIT)
            file_fence, error = FileFence.model_validate(row), None
        except LeaseTimeout as exc:
            file_fence, error = None, f"file busy, fence not read: {exc}"

    return LocksView(
        key=view["key"],
        server_time_ms=view["server_time_ms"],
        redis_fence=view["fence"],
        file_fence=file_fence,
        file_fence_error=error,
        holders=view["holders"],
        waiters=view["waiters"],
        counters=view["counters"],
        history=view["history"],
    )


@router.post("/locks/release", response_model=Liberado)
async def liberar_locks(
    body: Liberacion, who: AdminDep, database: DatabaseDep
) -> Liberado:
    """Take the lease from every holder; their uncommitted writes are refused."""
    result = await database.manager.force_release(body.reason, by=who)
    audit.warning(
        "force-release of %s by %s: %s holder(s) released, fence now %s; reason: %r",
        database.manager.key,
        who,
        result["released"],
        result["fence"],
        body.reason,
    )
    await _record(database, who, body.reason, result)
    return Liberado.model_validate(result)


async def _record(
    database: Database, who: str, reason: str, result: dict[str, Any]
) -> None:
    """Keep the audit record in the file too; the log line above stays if not."""
    detail = f"released {result['released']}, fence {result['fence']}"

    def insert(cur: Cursor) -> None:
        cur.execute(
            "INSERT INTO fluxion_audit (action, actor, reason, detail)"
            " VALUES ('force_release', ?, ?, ?)",
            [who, reason, detail],
        )

    try:
        await database.write(insert, wait_for=AUDIT_WRITE_WAIT)
    except LockManagerError as exc:
        audit.warning("audit row not written to the file (%s); the log has it", exc)


def _file_fence(cur: Cursor) -> dict[str, object]:
    rows = fetch_dicts(
        cur, f"SELECT fence, holder, committed_at FROM {FENCE_TABLE} WHERE id = 1"
    )
    if not rows:
        return {"fence": 0, "holder": None, "committed_at": None}

    row = rows[0]
    holder = row["holder"]
    return {**row, "holder": str(holder)[:8] if holder else None}
