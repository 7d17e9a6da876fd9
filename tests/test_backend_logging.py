"""Request ids: the header round trip, the id on log records, the edge config."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from backend.app import create_app
from backend.logging_setup import (
    REQUEST_ID_HEADER,
    RequestContextMiddleware,
    RequestIdFilter,
    current_request_id,
)
from backend.settings import Settings

pytestmark = pytest.mark.anyio

ADMIN_TOKEN = "logging-test-admin-token-0123"


@pytest.fixture
def ids(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at INFO whose handler stamps request ids, as the edge's does."""
    id_filter = RequestIdFilter()
    caplog.handler.addFilter(id_filter)
    caplog.set_level(logging.INFO)
    yield caplog
    caplog.handler.removeFilter(id_filter)


def _field(record: logging.LogRecord, name: str) -> object:
    """An attribute a filter or ``extra=`` put on the record."""
    return record.__dict__.get(name)


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://backend")


async def test_request_id_is_echoed_made_when_missing_and_replaced_when_odd(
    tmp_path: Path,
) -> None:
    """A plain id comes back as sent; a missing or unsafe one is replaced."""
    settings = Settings(
        db_path=str(tmp_path / "x.duckdb"), redis_url="redis://127.0.0.1:1/0"
    )
    async with _client(create_app(settings)) as client:
        echoed = await client.get("/admin", headers={REQUEST_ID_HEADER: "ops-7f3a.1"})
        made = [await client.get("/admin") for _ in range(2)]
        odd = await client.get("/admin", headers={REQUEST_ID_HEADER: "a b\tc"})
        long = await client.get("/admin", headers={REQUEST_ID_HEADER: "x" * 129})

    assert echoed.headers[REQUEST_ID_HEADER] == "ops-7f3a.1"
    made_ids = {r.headers[REQUEST_ID_HEADER] for r in made}
    assert len(made_ids) == 2
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in made_ids)
    for response in (odd, long):
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers[REQUEST_ID_HEADER])


async def test_records_logged_while_handling_carry_the_request_id(
    ids: pytest.LogCaptureFixture, redis_url: str, key_prefix: str, db_path: Path
) -> None:
    """The audit line, the library's warning and the access line share the id."""
    settings = Settings(
        db_path=str(db_path),
        redis_url=redis_url,
        admin_token=ADMIN_TOKEN,
        key_prefix=key_prefix,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), _client(app) as client:
        ids.clear()
        response = await client.post(
            "/admin/locks/release",
            json={"reason": "logging test"},
            headers={
                "Authorization": f"Bearer {ADMIN_TOKEN}",
                REQUEST_ID_HEADER: "release-42",
            },
        )
    logging.getLogger("backend").info("after the request")

    assert response.status_code == 200
    assert response.headers[REQUEST_ID_HEADER] == "release-42"
    by_logger = {r.name: r for r in ids.records}
    assert _field(by_logger["backend.audit"], "request_id") == "release-42"
    library = [r for r in ids.records if r.name.startswith("lockmanager")]
    assert library and all(_field(r, "request_id") == "release-42" for r in library)
    access = by_logger["backend.access"]
    fields = ("request_id", "method", "route", "status")
    assert [_field(access, name) for name in fields] == [
        "release-42",
        "POST",
        "/admin/locks/release",
        200,
    ]
    assert access.getMessage().startswith("method=POST route=/admin/locks/release")
    assert _field(ids.records[-1], "request_id") == "-"


async def test_unhandled_error_is_logged_with_the_id_and_answered_500(
    ids: pytest.LogCaptureFixture,
) -> None:
    """The traceback record and the 500 answer both name the request id."""
    app = FastAPI()
    app.add_middleware(RequestContextMiddleware)

    @app.get("/boom")
    async def boom() -> None:
        logging.getLogger("backend.test").info("about to fail in %s", "boom")
        raise RuntimeError(f"broken inside {current_request_id()}")

    async with _client(app) as client:
        response = await client.get("/boom", headers={REQUEST_ID_HEADER: "crash-1"})

    assert response.status_code == 500
    assert response.headers[REQUEST_ID_HEADER] == "crash-1"
    assert "crash-1" in response.json()["detail"]
    failure = next(r for r in ids.records if r.levelno == logging.ERROR)
    assert _field(failure, "request_id") == "crash-1"
    assert failure.exc_info and "broken inside crash-1" in str(failure.exc_info[1])
    ours = [r for r in ids.records if r.name.startswith("backend")]
    assert [_field(r, "request_id") for r in ours] == ["crash-1"] * 3


def test_edge_config_puts_the_id_on_every_line() -> None:
    """`logging_config()` applies cleanly and its lines show ``rid=``."""
    script = (
        "import logging, logging.config\n"
        "from backend.logging_setup import logging_config\n"
        "logging.config.dictConfig(logging_config())\n"
        "logging.getLogger('backend').info('outside a request')\n"
        "logging.getLogger('lockmanager.lease').debug('hidden at INFO')\n"
        "logging.getLogger('uvicorn.access').info('replaced by ours')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert re.search(r" INFO backend \[\d+\] rid=- outside a request$", lines[0])
