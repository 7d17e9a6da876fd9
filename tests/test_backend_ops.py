"""Operator surface: admin auth and force-release, 503s, health, metrics.

Against a real Redis and a real DuckDB file; the "file is busy" case holds a
real exclusive lease from the sync manager the ETL uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from pathlib import Path

import duckdb
import pytest

from backend.settings import Settings
from lockmanager import DuckDBWriteLockManager, Lease, Mode
from lockmanager.private_redis import free_port
from tests.support import ADMIN_TOKEN, AUTH, serving

pytestmark = pytest.mark.anyio

# -- fixtures ---------------------------------------------------------------


@pytest.fixture
def settings(redis_url: str, key_prefix: str, tmp_path: Path) -> Settings:
    """Settings on a fresh file with the test's own key prefix."""
    return Settings(
        db_path=str(tmp_path / "ventas.duckdb"),
        redis_url=redis_url,
        admin_token=ADMIN_TOKEN,
        key_prefix=key_prefix,
    )


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text, 0 when absent."""
    for line in metrics_text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match[3])
    return 0.0


# -- admin ------------------------------------------------------------------


async def test_admin_refuses_missing_and_wrong_tokens(settings: Settings) -> None:
    """No header or a wrong token is 401 with a Bearer challenge."""
    async with serving(settings) as client:
        missing = await client.get("/admin/locks")
        wrong = await client.get(
            "/admin/locks", headers={"Authorization": "Bearer nope"}
        )
        basic = await client.post(
            "/admin/locks/release",
            json={"reason": "test"},
            headers={"Authorization": f"Basic {ADMIN_TOKEN}"},
        )

    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "FLUXION_ADMIN_TOKEN" in response.json()["detail"]


async def test_admin_without_configured_token_is_forbidden(
    settings: Settings,
) -> None:
    """With no token configured the endpoints say how to enable them."""
    unset = dataclasses.replace(settings, admin_token=None)
    async with serving(unset) as client:
        response = await client.get("/admin/locks", headers=AUTH)

    assert response.status_code == 403
    assert "set FLUXION_ADMIN_TOKEN" in response.json()["detail"]


async def test_admin_locks_shows_both_fences_and_history(
    settings: Settings,
) -> None:
    """The Redis fence is never behind the file's high-water mark."""
    async with serving(settings) as client:
        await client.post("/usuarios", json={"nombre": "A", "email": "a@b.co"})
        for _ in range(40):  # the write turn may still be closing the file
            response = await client.get("/admin/locks", headers=AUTH)
            if response.json().get("file_fence"):
                break
            await asyncio.sleep(0.05)

    view = response.json()
    assert response.status_code == 200, response.text
    assert view["file_fence"]["fence"] >= 2  # schema, then the user
    assert view["redis_fence"] >= view["file_fence"]["fence"]
    assert view["file_fence_error"] is None
    grants = [e for e in view["history"] if e["event"] == "grant"]
    assert grants and "wait_s" in grants[0]
    released = [e for e in view["history"] if e["event"] == "released"]
    assert released and "hold_s" in released[0]
    assert view["counters"]["grant"] >= 2


async def test_force_release_is_audited_and_recorded(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The pooled reader loses its lease, history says who and why."""
    caplog.set_level(logging.WARNING, logger="backend.audit")
    async with serving(settings) as client:
        assert (await client.get("/ventas")).status_code == 200
        short = await client.post(
            "/admin/locks/release", json={"reason": ""}, headers=AUTH
        )
        forced = await client.post(
            "/admin/locks/release", json={"reason": "stuck reader"}, headers=AUTH
        )
        view = (await client.get("/admin/locks", headers=AUTH)).json()
        after = await client.get("/ventas")

    assert [e["loc"][-1] for e in short.json()["detail"]] == ["reason"]
    assert forced.status_code == 200, forced.text
    body = forced.json()
    assert body["released"] == 1
    assert body["by"] == "admin@127.0.0.1"
    event = next(e for e in view["history"] if e["event"] == "forced")
    assert (event["by"], event["reason"]) == ("admin@127.0.0.1", "stuck reader")
    assert after.status_code == 200
    audit = [r.getMessage() for r in caplog.records if r.name == "backend.audit"]
    assert any("admin@127.0.0.1" in m and "stuck reader" in m for m in audit)
    con = duckdb.connect(settings.db_path, read_only=True)
    rows = con.execute("SELECT actor, reason FROM fluxion_audit").fetchall()
    con.close()
    assert rows == [("admin@127.0.0.1", "stuck reader")]


# -- busy database ----------------------------------------------------------


async def test_write_that_cannot_get_its_lease_is_503_with_retry_after(
    settings: Settings,
) -> None:
    """A held exclusive lease turns writes and reads into clean 503s."""
    quick = dataclasses.replace(settings, read_wait=0.2, write_wait=0.2)
    holder = DuckDBWriteLockManager(
        settings.redis_url, settings.db_path, config=settings.lease_config()
    )
    async with serving(quick) as client:
        lease: Lease = await asyncio.to_thread(
            holder.acquire, Mode.EXCLUSIVE, wait_for=5.0
        )
        try:
            write = await client.post(
                "/usuarios", json={"nombre": "B", "email": "b@b.co"}
            )
            read = await client.get("/ventas")
            metrics = (await client.get("/metrics")).text
        finally:
            await asyncio.to_thread(holder.release, lease)
        retried = await client.post(
            "/usuarios", json={"nombre": "B", "email": "b@b.co"}
        )
    holder.close()

    for response in (write, read):
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) >= 1
        assert "database is busy" in response.json()["detail"]
    busy = sample(metrics, "fluxion_busy_responses_total", reason="LeaseTimeout")
    assert busy == 2
    assert retried.status_code == 201


# -- health and metrics -----------------------------------------------------


async def test_health_ok_with_redis_and_file(settings: Settings) -> None:
    """Both dependencies answer: ok."""
    async with serving(settings) as client:
        response = await client.get("/health")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "redis": "ok",
        "file": "ok",
        "detail": None,
    }


async def test_health_degraded_when_redis_is_unreachable(
    settings: Settings,
) -> None:
    """Redis on a closed port: the app still starts and reads, but says so."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    offline = dataclasses.replace(settings, redis_url=closed)
    async with serving(offline) as client:
        health = await client.get("/health")
        read = await client.get("/ventas")

    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["redis"] == "down"
    assert "OS lock" in health.json()["detail"]
    assert read.status_code == 200


async def test_degraded_write_after_read_succeeds(settings: Settings) -> None:
    """Without Redis a write after a read still gets the file (OS lock only)."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    offline = dataclasses.replace(settings, redis_url=closed, write_wait=0.3)
    async with serving(offline) as client:
        await client.get("/ventas")
        write = await client.post("/usuarios", json={"nombre": "D", "email": "d@x.es"})

    assert write.status_code == 201, write.text


async def test_metrics_move_with_traffic(settings: Settings) -> None:
    """Request latency by route template, lease waits and holds by mode."""
    async with serving(settings) as client:
        before = (await client.get("/metrics")).text
        await client.get("/ventas")
        await client.get("/pedidos/12345")
        after = (await client.get("/metrics")).text

    count = "fluxion_http_request_duration_seconds_count"
    assert sample(before, count, route="/ventas") == 0
    assert sample(after, count, route="/ventas", status="200") == 1
    assert sample(after, count, route="/pedidos/{pedido_id}", status="404") == 1
    assert sample(after, "fluxion_lease_wait_seconds_count", mode="shared") == 2
    assert sample(after, "fluxion_lease_hold_seconds_count", mode="exclusive") == 1
