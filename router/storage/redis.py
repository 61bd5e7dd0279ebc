"""The one door to Redis: every client in ``router`` is made here.

The timeouts come from the ``redis`` settings section and depend on who uses
the client (its *role*): the collector gives up within
``LEADROUTER_REDIS_COLLECTOR_TIMEOUT_S``, the admin API and start-up reads
within ``LEADROUTER_REDIS_ADMIN_TIMEOUT_S``, the admin token commands within
``LEADROUTER_REDIS_ADMIN_CLI_TIMEOUT_S``; the worker, the CLI and the dev
stack use ``LEADROUTER_REDIS_SOCKET_TIMEOUT_S`` / ``_CONNECT_TIMEOUT_S``
(0: no timeout).

Redis Cluster: a ``REDIS_URL`` of the form
``redis+cluster://host:port[,host:port...]`` (nodes of the cluster as seeds,
any one that answers is enough; database 0 only) makes a cluster client
(``redis.asyncio.cluster.RedisCluster``), which follows the slot map,
MOVED/ASK redirections and failovers by itself.  The client types are unions
of the single-server and the cluster client (``AnyRedis``,
``AnySyncRedis``), so callers use only what both do: every multi-key step
(Lua script, transaction) stays inside one hash slot (``keys.py``), scans
walk every primary (the cluster client's ``scan_iter``), a read of many keys
goes through :func:`mget`, and whole-database commands through
:func:`flush` / :func:`dbsize`.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.cluster import ClusterNode as SyncClusterNode
from redis.cluster import RedisCluster as SyncRedisCluster

from router.errors import RouterError
from router.settings import RedisSettings

__all__ = [
    "CLUSTER_SCHEME",
    "AnyRedis",
    "AnySyncRedis",
    "ClusterUrlError",
    "Redis",
    "RedisCluster",
    "RedisRole",
    "SyncRedis",
    "SyncRedisCluster",
    "cluster_nodes",
    "create_redis",
    "create_sync_redis",
    "dbsize",
    "flush",
    "is_cluster_url",
    "mget",
    "redis_from_url",
    "sync_redis_from_url",
    "timeouts",
]

RedisRole = Literal["worker", "cli", "dev", "bench", "collector", "admin", "admin_cli", "startup"]

AnyRedis: TypeAlias = Redis | RedisCluster
"""An asyncio client: one server, or a Redis Cluster."""
AnySyncRedis: TypeAlias = SyncRedis | SyncRedisCluster
"""A blocking client: one server, or a Redis Cluster."""

CLUSTER_SCHEME = "redis+cluster"


class ClusterUrlError(RouterError):
    """A ``redis+cluster://`` URL that names no usable node."""


def is_cluster_url(url: str) -> bool:
    return url.startswith(f"{CLUSTER_SCHEME}://")


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The seed nodes (host, port) of a ``redis+cluster://h:p[,h:p...][/0]`` URL."""
    parts = urlsplit(url)
    if parts.path not in ("", "/", "/0") or parts.query:
        msg = (f"REDIS_URL={url!r}: a Redis Cluster has database 0 only and takes no options; "
               "give redis+cluster://host:port[,host:port...]")
        raise ClusterUrlError(msg)
    out: list[tuple[str, int]] = []
    for seed in parts.netloc.split(","):
        host, sep, port = seed.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            msg = (f"REDIS_URL={url!r}: the node {seed!r} is not host:port; "
                   "give redis+cluster://host:port[,host:port...], e.g. redis+cluster://10.0.0.5:6379")
            raise ClusterUrlError(msg)
        out.append((host, int(port)))
    return out


def _or_none(seconds: float) -> float | None:
    return seconds if seconds > 0 else None


def timeouts(section: RedisSettings, role: RedisRole) -> tuple[float | None, float | None]:
    """(socket timeout, connect timeout) in seconds for a client of ``role``; None waits forever."""
    if role == "collector":
        return _or_none(section.collector_timeout_s), _or_none(section.collector_timeout_s)
    if role in ("admin", "startup"):
        return _or_none(section.admin_timeout_s), _or_none(section.admin_timeout_s)
    if role == "admin_cli":
        return _or_none(section.admin_cli_timeout_s), _or_none(section.admin_timeout_s)
    return _or_none(section.socket_timeout_s), _or_none(section.connect_timeout_s)


def redis_from_url(url: str, **kwargs: Any) -> AnyRedis:
    """An asyncio client for ``url``: a cluster client for ``redis+cluster://``, else ``Redis.from_url``."""
    if is_cluster_url(url):
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes(url)], **kwargs)
    return Redis.from_url(url, **kwargs)


def sync_redis_from_url(url: str, **kwargs: Any) -> AnySyncRedis:
    """A blocking client for ``url`` (see :func:`redis_from_url`)."""
    if is_cluster_url(url):
        return SyncRedisCluster(startup_nodes=[SyncClusterNode(h, p) for h, p in cluster_nodes(url)],  # type: ignore[no-untyped-call]
                                **kwargs)
    return SyncRedis.from_url(url, **kwargs)


def create_redis(section: RedisSettings, *, role: RedisRole) -> AnyRedis:
    """An asyncio client for ``section.url`` with the timeouts of ``role``."""
    socket, connect = timeouts(section, role)
    return redis_from_url(section.url, socket_timeout=socket, socket_connect_timeout=connect)


def create_sync_redis(section: RedisSettings, *, role: RedisRole) -> AnySyncRedis:
    """A blocking client (one-off reads before the event loop runs)."""
    socket, connect = timeouts(section, role)
    return sync_redis_from_url(section.url, socket_timeout=socket, socket_connect_timeout=connect)


async def mget(redis: AnyRedis, names: list[str]) -> list[Any]:
    """GET of every key in ``names``, in order; on a cluster one MGET per slot (keys of many slots)."""
    if not names:
        return []
    if isinstance(redis, RedisCluster):
        return await redis.mget_nonatomic(names)
    return await redis.mget(names)


async def flush(redis: AnyRedis) -> None:
    """Empty the database (on a cluster: every primary)."""
    if isinstance(redis, RedisCluster):
        await redis.flushall(target_nodes=RedisCluster.PRIMARIES)
    else:
        await redis.flushdb()


async def dbsize(redis: AnyRedis) -> int:
    """How many keys the database holds (on a cluster: summed over the primaries)."""
    if isinstance(redis, RedisCluster):
        return int(await redis.dbsize(target_nodes=RedisCluster.PRIMARIES))
    return int(await redis.dbsize())
