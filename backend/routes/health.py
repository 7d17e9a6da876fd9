"""Liveness and readiness (`/health`) and Prometheus metrics (`/metrics`)."""

from __future__ import annotations

import asyncio
import os
from typing import Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from lockmanager import AsyncDuckDBWriteLockManager

from ..deps import DatabaseDep, MetricsDep, SettingsDep
from ..metrics import CONTENT_TYPE_LATEST

__all__ = ["router"]

router = APIRouter(tags=["operaciones"])

REDIS_PING_TIMEOUT = 1.0


class Health(BaseModel):
    status: Literal["ok", "degraded", "down"]
    redis: Literal["ok", "down"]
    file: Literal["ok", "missing"]
    detail: str | None = None


@router.get("/health", response_model=Health)
async def health(
    database: DatabaseDep, settings: SettingsDep, response: Response
) -> Health:
    """ok; degraded when Redis is down (OS lock only); down without the file."""
    redis_ok = await _redis_answers(database.manager)
    # stat only: opening the file through any other API would silently drop
    # the OS lock DuckDB holds on it in this process
    file_ok = os.path.isfile(settings.db_path)

    if not file_ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Retry-After"] = "30"
        return Health(
            status="down",
            redis="ok" if redis_ok else "down",
            file="missing",
            detail=f"database file {settings.db_path} is missing",
        )
    if not redis_ok:
        return Health(
            status="degraded",
            redis="down",
            file="ok",
            detail=(
                "Redis does not answer: leases fall back to DuckDB's OS lock,"
                " still safe but without fair queueing; check REDIS_URL"
            ),
        )
    return Health(status="ok", redis="ok", file="ok")


@router.get("/metrics", include_in_schema=False)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def _redis_answers(manager: AsyncDuckDBWriteLockManager) -> bool:
    try:
        return await asyncio.wait_for(manager.ping(), REDIS_PING_TIMEOUT)
    except TimeoutError:
        return False
