"""Request ids on every log record, one access line per request, the log config.

`RequestContextMiddleware` takes the caller's ``X-Request-ID`` (or makes
one), keeps it in a context variable while the request runs and returns it
in the response header. `RequestIdFilter`, attached to the handlers, copies
it onto each record as ``request_id`` (``-`` outside a request), so a
handler's log lines, the lease manager's and the access line all carry it.
Worker threads started with `asyncio.to_thread` inherit it too.

Nothing here touches logging at import: only the edge (`backend.serve`)
applies `logging_config()`. Lease events stay at DEBUG and degraded mode at
WARNING, as the library logs them; the default level here is INFO.

Note:
    A task created during a request copies the request's context, so a
    background task it starts (the group-commit turn, a lease keeper) keeps
    logging that request's id for as long as it lives.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import UNMATCHED_ROUTE

__all__ = [
    "LOG_FORMAT",
    "REQUEST_ID_HEADER",
    "RequestContextMiddleware",
    "RequestIdFilter",
    "current_request_id",
    "logging_config",
]

REQUEST_ID_HEADER = "X-Request-ID"
LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [%(process)d] rid=%(request_id)s %(message)s"
)

# A caller's id goes into every log line: only short, plain ids are taken,
# so nobody can forge extra log lines with a newline or flood the log.
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_request_id: ContextVar[str | None] = ContextVar("fluxion_request_id", default=None)

access_log = logging.getLogger("backend.access")
log = logging.getLogger("backend")


def current_request_id() -> str | None:
    """The id of the request being handled in this context, if any."""
    return _request_id.get()


class RequestIdFilter(logging.Filter):
    """Stamp ``record.request_id``; attach it to handlers, not loggers.

    A filter on a handler sees the records of every logger that reaches it,
    including the library's and uvicorn's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get() or "-"
        return True


class RequestContextMiddleware:
    """Give each HTTP request an id, and log one access line when it ends.

    An unhandled error is logged here, with the id and its traceback, and
    answered with a 500 that carries the id, so a user can quote it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        given = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        rid = given if _ACCEPTED_ID.fullmatch(given) else uuid.uuid4().hex
        reset = _request_id.set(rid)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if response_started:
                raise
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            answer = JSONResponse(
                {"detail": f"internal error; quote request id {rid} to report it"},
                status_code=500,
            )
            await answer(scope, receive, send_with_id)
        finally:
            _log_access(scope, status, time.perf_counter() - started)
            _request_id.reset(reset)


def _log_access(scope: Scope, status: int, seconds: float) -> None:
    route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
    ms = round(seconds * 1000, 1)
    access_log.info(
        "method=%s route=%s status=%d ms=%.1f",
        scope["method"],
        route,
        status,
        ms,
        extra={"method": scope["method"], "route": route, "status": status, "ms": ms},
    )


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: one stderr handler with request ids.

    Our loggers, the lease manager's and uvicorn's share the handler;
    uvicorn's own access log is off, since `RequestContextMiddleware`
    writes one line per request with the route template and the id.
    Other libraries reach it through the root logger at WARNING. uvicorn
    applies it in every worker process.
    """

    def ours() -> dict[str, Any]:
        return {"handlers": ["fluxion"], "level": level, "propagate": False}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "backend.logging_setup.RequestIdFilter"}},
        "formatters": {"fluxion": {"format": LOG_FORMAT}},
        "handlers": {
            "fluxion": {
                "class": "logging.StreamHandler",
                "formatter": "fluxion",
                "filters": ["request_id"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "backend": ours(),
            "lockmanager": ours(),
            "etl": ours(),
            "uvicorn": ours(),
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["fluxion"], "level": "WARNING"},
    }
