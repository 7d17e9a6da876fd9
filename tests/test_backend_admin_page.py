"""The admin page: served safely, and, in headless Chromium, showing the lock.

The browser test runs a real backend (`fluxion serve` in its own process)
on a free loopback port, holds an exclusive lease as ``etl-test-holder``
with another process's manager queued behind it, and reads the DOM after
the page's script has fetched ``/admin/locks``. It is skipped only when no
Chromium binary is installed (``apt-get install -y chromium``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.app import create_app
from backend.settings import Settings
from lockmanager import DuckDBWriteLockManager, LeaseConfig, Priority
from lockmanager.private_redis import free_port

ADMIN_TOKEN = "page-test-admin-token-0123456789"
HOLDER = "etl-test-holder"
WAITER = "etl-test-waiter"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,1300",
    # Lets the page's polling timers run while the fetches take real time.
    "--virtual-time-budget=1000",
)


def _client(settings: Settings) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://backend")


@pytest.mark.anyio
async def test_page_shell_holds_no_data_and_locks_itself_down(
    tmp_path: Path,
) -> None:
    """Without a token the page has no lock data; its headers forbid the rest."""
    settings = Settings(
        db_path=str(tmp_path / "x.duckdb"),
        redis_url="redis://127.0.0.1:1/0",
        admin_token=ADMIN_TOKEN,
    )
    async with _client(settings) as client:
        first = await client.get("/admin")
        second = await client.get("/admin")

    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/html")
    policy = first.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce and f'<script nonce="{nonce.group(1)}">' in first.text
    assert "{{nonce}}" not in first.text
    assert policy != second.headers["content-security-policy"]  # fresh nonce
    assert "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    assert first.headers["cache-control"] == "no-store"
    assert first.headers["referrer-policy"] == "no-referrer"
    assert ADMIN_TOKEN not in first.text


@pytest.mark.anyio
async def test_page_without_configured_token_says_how_to_enable_it(
    tmp_path: Path,
) -> None:
    """No admin token: 403, and the page names the variable to set."""
    settings = Settings(
        db_path=str(tmp_path / "x.duckdb"), redis_url="redis://127.0.0.1:1/0"
    )
    async with _client(settings) as client:
        response = await client.get("/admin")

    assert response.status_code == 403
    assert "FLUXION_ADMIN_TOKEN" in response.text
    assert "restart the backend" in response.text


# -- the browser test -------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    names = ", ".join(CHROMIUM_NAMES)
    pytest.skip(
        f"no Chromium binary on PATH (looked for {names});"
        " install it with: apt-get install -y chromium"
    )


@pytest.fixture
def backend_url(
    redis_url: str, key_prefix: str, db_path: Path, tmp_path: Path
) -> Iterator[str]:
    """`fluxion serve` on a free loopback port; its log goes to backend.log."""
    port = free_port()
    env = {**os.environ, "FLUXION_ADMIN_TOKEN": ADMIN_TOKEN}
    command = [
        sys.executable, "-m", "backend.cli", "serve", "--db", str(db_path),
        "--redis", redis_url, "--key-prefix", key_prefix,
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    log_path = tmp_path / "backend.log"
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(command, env=env, stderr=log_file)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, server, log_path)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)


def _wait_until_up(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"backend exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"backend did not answer within 30 s:\n{log.read_text()}")


def _browse(chromium: str, url: str, profile: Path, *extra: str) -> str:
    """Load ``url`` in a fresh profile; return what Chromium printed."""
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
    browser = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        out, _ = browser.communicate(timeout=60)
    finally:
        browser.kill()
        browser.wait()
    return out


def _section(dom: str, tbody_id: str) -> str:
    match = re.search(rf'<tbody id="{tbody_id}">(.*?)</tbody>', dom, re.DOTALL)
    assert match, f"no <tbody id={tbody_id}> in the rendered page:\n{dom[:2000]}"
    return match.group(1)


def test_page_in_chromium_shows_holder_queue_and_turns(
    chromium: str,
    backend_url: str,
    redis_url: str,
    key_prefix: str,
    db_path: Path,
    tmp_path: Path,
) -> None:
    """A browser with the token sees the ETL holding, a writer queued, turns."""
    config = LeaseConfig(key_prefix=key_prefix, lease_ttl=5.0)
    holder = DuckDBWriteLockManager(redis_url, db_path, config=config, name=HOLDER)
    waiter = DuckDBWriteLockManager(redis_url, db_path, config=config, name=WAITER)
    with holder.write(priority=Priority.BATCH):
        pass  # one finished turn, for the timeline

    with holder.write(priority=Priority.BATCH):
        queued = threading.Thread(target=_take_turn, args=(waiter,), daemon=True)
        queued.start()
        _wait_for_waiter(holder)
        url = f"{backend_url}/admin#token={ADMIN_TOKEN}"
        shot = tmp_path / "admin.png"
        dom = _browse(chromium, url, tmp_path / "profile-dom", "--dump-dom")
        _browse(chromium, url, tmp_path / "profile-shot", f"--screenshot={shot}")

    queued.join(timeout=30)
    holder.close()
    waiter.close()

    holders = _section(dom, "holders")
    assert HOLDER in holders and "exclusive" in holders and "batch" in holders
    assert WAITER in _section(dom, "queue")
    assert 'aria-label="lease turns over time"' in dom and HOLDER in dom
    assert "hold-exclusive" in dom
    assert "#token=" not in dom and ADMIN_TOKEN not in dom
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (tmp_path / "backend.log").read_text()
    assert re.search(r"rid=\w+ method=GET route=/admin/locks status=200", log), log


def _take_turn(manager: DuckDBWriteLockManager) -> None:
    with manager.write(wait_for=30):
        pass


def _wait_for_waiter(manager: DuckDBWriteLockManager) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(w["name"] == WAITER for w in manager.inspect()["waiters"]):
            return
        time.sleep(0.05)
    pytest.fail(f"{WAITER} never showed up in the queue")
