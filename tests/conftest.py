"""Shared fixtures: a real Redis for every test, and a key prefix per test.

The session uses `FLUXION_TEST_REDIS_URL` when set, else the machine's Redis
on 127.0.0.1:6379 when it answers, else it starts a private one (a
`redis-server` from PATH, else the embedded server) and stops it at the end.
Tests that restart, pause or flush Redis use `own_redis` instead: a server
of their own on a free port.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401  (see below)
import pytest
import redis

from lockmanager import LeaseConfig
from lockmanager.private_redis import (
    PrivateRedis,
    start_private_redis,
    start_redis_server,
)

# Imported up front on purpose: when no test module imports hypothesis,
# its pytest plugin imports it at the terminal summary, under pytest's
# assertion rewriter, and CPython 3.11.7 then fails with "SystemError: AST
# constructor recursion depth mismatch", turning a green run red.

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_private: PrivateRedis | None = None


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def pytest_configure(config: pytest.Config) -> None:
    global _private
    url = os.environ.get("FLUXION_TEST_REDIS_URL")
    if url is None:
        url = "redis://127.0.0.1:6379/0"
        if not _answers(url):
            _private = start_private_redis()
            url = _private.url
    # Children and helpers read the same variable, so every process of a
    # test meets on the same server.
    os.environ["FLUXION_TEST_REDIS_URL"] = url


def pytest_unconfigure(config: pytest.Config) -> None:
    if _private is not None:
        _private.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["FLUXION_TEST_REDIS_URL"]


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"fluxion-test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def lease_config(key_prefix: str) -> LeaseConfig:
    return LeaseConfig(key_prefix=key_prefix, lease_ttl=3.0, wait_for=10.0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ventas.duckdb"


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which it may restart or flush."""
    server = start_redis_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real store exports not found at {SHARED_DATA} (needs ../shared)")
    return SHARED_DATA
