"""Sentinel and Cluster deployments, each started for real on loopback."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from lockmanager import DuckDBWriteLockManager, LeaseConfig, Mode
from lockmanager.private_redis import free_port, start_redis_server

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="needs redis-server and redis-cli on PATH to start real topologies",
)


def _exercise(url: str, db: Path, prefix: str) -> None:
    config = LeaseConfig(key_prefix=prefix, lease_ttl=3)
    mgr = DuckDBWriteLockManager(url, db, config=config)
    with mgr.write() as lease, lease.transaction() as cur:
        cur.execute("CREATE TABLE t AS SELECT 1 AS x")
    reader = mgr.acquire(Mode.SHARED)
    assert mgr.inspect()["holders"][0]["mode"] == "shared"
    mgr.release(reader)
    with mgr.write() as lease:
        assert lease.fence == 2
    mgr.close()


def test_leases_work_through_sentinel(tmp_path, key_prefix):
    """A redis+sentinel:// URL finds the master and runs the whole protocol."""
    master = start_redis_server()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\n"
        f"sentinel monitor fluxion 127.0.0.1 {master.port} 1\n"
    )
    sentinel = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = redis.Redis(port=port)
        deadline = time.monotonic() + 60
        while True:
            try:
                if probe.sentinel_get_master_addr_by_name("fluxion"):
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "sentinel never answered"
            time.sleep(0.05)
        _exercise(
            f"redis+sentinel://127.0.0.1:{port}/fluxion", tmp_path / "s.db", key_prefix
        )
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=10)
        master.stop()


def test_leases_work_on_a_redis_cluster(tmp_path, key_prefix):
    """A redis+cluster:// URL: every script stays in one slot (one hash tag)."""
    ports = _distinct_ports(3)
    procs = []
    for port in ports:
        node = tmp_path / f"node-{port}"
        node.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(node),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        for port in ports:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    assert all(p.poll() is None for p in procs), "a node exited"
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 60
        while redis.Redis(port=ports[0]).cluster("info")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "cluster never became ok"
            time.sleep(0.1)
        _exercise(
            f"redis+cluster://127.0.0.1:{ports[0]}", tmp_path / "c.db", key_prefix
        )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def _distinct_ports(n: int) -> list[int]:
    """n free ports, all different, each with room for its cluster bus port.

    A cluster node also listens on port + 10000, so ports above 55535 make
    redis-server exit; ports are held open together while they are chosen.
    """
    import socket

    held: list[socket.socket] = []
    try:
        while len(held) < n:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            if sock.getsockname()[1] + 10000 <= 65535:
                held.append(sock)
            else:
                sock.close()
        return [int(sock.getsockname()[1]) for sock in held]
    finally:
        for sock in held:
            sock.close()
