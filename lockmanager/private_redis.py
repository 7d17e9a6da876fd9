"""A private Redis for demos and tests on a machine that has none running.

`start_private_redis` prefers a real ``redis-server`` found on PATH, on a
free loopback port with nothing written to disk; without one it runs an
embedded Redis-protocol server (fakeredis, with Lua) in a thread. Either
way the caller gets a URL and a ``stop()``; the log says which it is.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

log = logging.getLogger("lockmanager.private_redis")

__all__ = ["PrivateRedis", "free_port", "start_private_redis", "start_redis_server"]


@dataclass
class PrivateRedis:
    url: str
    kind: str  # "redis-server" or "embedded"
    port: int
    _stop: Callable[[], None] = field(repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def stop(self) -> None:
        self._stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_private_redis(*, prefer_server: bool = True) -> PrivateRedis:
    """Start a Redis nobody else uses; see the module docstring."""
    if prefer_server and shutil.which("redis-server"):
        return start_redis_server()
    return _start_embedded()


def start_redis_server(port: int | None = None) -> PrivateRedis:
    """Run ``redis-server`` on 127.0.0.1 (a free port unless given)."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="fluxion-redis-")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    _wait_until_up(url, proc)
    log.info("started private redis-server on 127.0.0.1:%d", port)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return PrivateRedis(
        url=url, kind="redis-server", port=port, _stop=stop, process=proc
    )


def _start_embedded() -> PrivateRedis:
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = int(server.server_address[1])
    url = f"redis://127.0.0.1:{port}/0"
    _wait_until_up(url, None)
    log.info(
        "no redis-server on PATH: started the embedded Redis-protocol server"
        " (fakeredis) on 127.0.0.1:%d",
        port,
    )

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return PrivateRedis(url=url, kind="embedded", port=port, _stop=stop)


def _wait_until_up(url: str, proc: subprocess.Popen[bytes] | None) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"private Redis at {url} did not answer in 60s")
                time.sleep(0.02)
    finally:
        client.close()
