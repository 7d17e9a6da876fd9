"""The FastAPI application: `create_app(settings)`, and its lifespan.

Nothing is opened at import. At startup the lifespan connects the lease
manager, creates the schema under one short write lease (so reads work on
a new, empty file) and only then accepts requests; at shutdown it gives
every lease back and closes Redis.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI

from lockmanager import AsyncDuckDBWriteLockManager

from .deps import Database
from .errors import install_error_handlers
from .logging_setup import RequestContextMiddleware
from .metrics import Metrics, RequestMetricsMiddleware
from .routes import ROUTERS, admin_page
from .schema import ensure_schema
from .settings import Settings, mask_url

__all__ = ["app_from_env", "create_app"]

log = logging.getLogger("backend")

# Only the connect is bounded: the lease keeper blocks on its mailbox for a
# third of the lease TTL, so a read timeout would break renewal.
REDIS_CONNECT_TIMEOUT = 2.0


def create_app(settings: Settings) -> FastAPI:
    """Build the application; the database is touched only at startup."""
    metrics = Metrics()
    app = FastAPI(
        title="fluxion",
        summary="Sales dashboards, users and orders on one shared DuckDB file.",
        version="0.1.0",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics

    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    # Added last, so outermost: the id also covers the error handlers' logs.
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app, metrics)
    for router in (*ROUTERS, admin_page.router):
        app.include_router(router)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory``: settings from this process's env."""
    return create_app(Settings.from_env())


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    _require_db_directory(settings.db_path)

    client = aioredis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT
    )
    manager = AsyncDuckDBWriteLockManager(
        client,
        settings.db_path,
        config=settings.lease_config(),
        name=f"backend:{os.getpid()}",
    )
    try:
        database = Database(manager, settings, app.state.metrics)
        await database.write(ensure_schema, wait_for=settings.startup_wait)
        app.state.database = database
        log.info(
            "backend ready on %s (lock %s, Redis %s)",
            settings.db_path,
            manager.key,
            mask_url(settings.redis_url),
        )
        yield
    finally:
        await manager.aclose()
        log.info("backend stopped; leases on %s given back", settings.db_path)


def _require_db_directory(db_path: str) -> None:
    folder = os.path.dirname(os.path.abspath(db_path))
    if not os.path.isdir(folder):
        raise RuntimeError(
            f"cannot create or open {db_path}: folder {folder} does not exist;"
            " create it or point FLUXION_DB elsewhere"
        )
