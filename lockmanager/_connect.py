"""Redis clients from URLs: plain, Sentinel and Cluster.

- ``redis://[:password@]host:port/db`` (and ``rediss://``): one server.
- ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``:
  ask the Sentinels for the current master of ``service``; after a
  failover the client follows the new master.
- ``redis+cluster://[:password@]host:port[/...]``: a Redis Cluster. Every
  lease script touches one key prefix with one hash tag, so it runs on one
  node; no command of the protocol spans slots.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

__all__ = ["async_client_from_url", "client_from_url"]

SENTINEL = "redis+sentinel"
CLUSTER = ("redis+cluster", "rediss+cluster")


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, dict[str, Any]]:
    parts = urlsplit(url)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.partition(":")
        hosts.append((host, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError(
            f"{url!r}: a Sentinel URL names the service after the hosts,"
            " e.g. redis+sentinel://127.0.0.1:26379/mymaster"
        )
    db = int(path[1]) if len(path) > 1 else 0
    auth = {}
    if parts.password:
        auth["password"] = unquote(parts.password)
    return hosts, path[0], db, auth


def client_from_url(url: str) -> Any:
    """A sync client for any of the URL forms in the module docstring."""
    scheme = urlsplit(url).scheme
    if scheme == SENTINEL:
        hosts, service, db, auth = _sentinel_parts(url)
        sentinel = Sentinel(hosts, sentinel_kwargs=auth)
        return sentinel.master_for(service, db=db, **auth)
    if scheme in CLUSTER:
        return RedisCluster.from_url(url.replace("+cluster", "", 1))
    return redis.Redis.from_url(url)


def async_client_from_url(url: str) -> Any:
    """An asyncio client for any of the URL forms in the module docstring."""
    scheme = urlsplit(url).scheme
    if scheme == SENTINEL:
        hosts, service, db, auth = _sentinel_parts(url)
        sentinel = AsyncSentinel(hosts, sentinel_kwargs=auth)
        return sentinel.master_for(service, db=db, **auth)
    if scheme in CLUSTER:
        return AsyncRedisCluster.from_url(url.replace("+cluster", "", 1))
    return aioredis.Redis.from_url(url)
