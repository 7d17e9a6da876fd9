"""Errors the routes raise, and the one place that turns them into HTTP.

Handlers never build error responses themselves: they raise one of the
exceptions below (or the lease manager raises its own), and the handlers
installed by `install_error_handlers` answer:

==========================  ====  ============================================
`NotFoundError`             404   the resource does not exist
`ConflictError`             409   duplicate email, forbidden state change
`UnknownReferenceError`     422   the body names a row that does not exist;
                                  same shape as a validation error
`LockManagerError`          503   no lease in time, or lease lost before
                                  COMMIT (nothing was written); Retry-After
`RedisError`                503   Redis refused an operator call
==========================  ====  ============================================
"""

from __future__ import annotations

import json
import logging
import math

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError

from lockmanager import LeaseLost, LeaseTimeout, LockManagerError

from .metrics import Metrics

__all__ = [
    "ConflictError",
    "NotFoundError",
    "UnknownReferenceError",
    "install_error_handlers",
]

log = logging.getLogger("backend")


class NotFoundError(Exception):
    """The requested resource does not exist."""


class ConflictError(Exception):
    """The request contradicts data already stored."""


class UnknownReferenceError(Exception):
    """A body field names a row that does not exist.

    Args:
        field: the body field, as the client spelled it.
        message: what is wrong and how to fix it.
    """

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Register the handlers described in the module docstring."""

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def conflict(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    async def unknown_reference(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, UnknownReferenceError)
        detail = [{"loc": ["body", exc.field], "msg": str(exc), "type": "not_found"}]
        return JSONResponse({"detail": detail}, status_code=422)

    async def busy(request: Request, exc: Exception) -> JSONResponse:
        reason = type(exc).__name__
        metrics.busy_responses.labels(reason=reason).inc()
        retry_after = _retry_after(exc)
        log.info("503 for %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {
                "detail": _busy_message(exc, retry_after),
                "reason": reason,
                "retry_after": retry_after,
            },
            status_code=503,
            headers={"Retry-After": str(retry_after)},
        )

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # ASCII-escaped, so input that cannot be encoded as UTF-8 (a lone
        # surrogate in a JSON string) is echoed back instead of crashing.
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    async def file_missing(request: Request, exc: Exception) -> JSONResponse:
        metrics.busy_responses.labels(reason="FileMissing").inc()
        log.error("database file missing for %s: %s", request.url.path, exc)
        return JSONResponse(
            {"detail": f"the database file is not there: {exc}", "retry_after": 30},
            status_code=503,
            headers={"Retry-After": "30"},
        )

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(FileNotFoundError, file_missing)
    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(ConflictError, conflict)
    app.add_exception_handler(UnknownReferenceError, unknown_reference)
    app.add_exception_handler(LockManagerError, busy)
    app.add_exception_handler(RedisError, busy)


def _retry_after(exc: Exception) -> int:
    if isinstance(exc, LeaseTimeout):
        return max(1, math.ceil(exc.retry_after))
    return 1


def _busy_message(exc: Exception, retry_after: int) -> str:
    if isinstance(exc, RedisError):
        return (
            "the lock coordinator (Redis) did not answer; nothing was changed."
            f" Retry in {retry_after}s; if it persists, check REDIS_URL and"
            " GET /health."
        )
    if isinstance(exc, LeaseTimeout):
        return (
            "the database is busy (another process holds the file, most"
            " likely an ETL load); nothing was changed. Retry in"
            f" {retry_after}s."
        )
    if isinstance(exc, LeaseLost):
        return (
            "the database turn was lost before the change could be committed"
            " (for example an operator force-release); nothing was changed."
            f" Retry in {retry_after}s."
        )
    return (
        f"the database lease manager refused the operation ({exc});"
        f" nothing was changed. Retry in {retry_after}s."
    )
