"""The one door to Redis: every client in ``router`` is made here.

The timeouts come from the ``redis`` settings section and depend on who uses
the client (its *role*): the collector gives up within
``LEADROUTER_REDIS_COLLECTOR_TIMEOUT_S``, the admin API and start-up reads
within ``LEADROUTER_REDIS_ADMIN_TIMEOUT_S``, the admin token commands within
``LEADROUTER_REDIS_ADMIN_CLI_TIMEOUT_S``; the worker, the CLI and the dev
stack use ``LEADROUTER_REDIS_SOCKET_TIMEOUT_S`` / ``_CONNECT_TIMEOUT_S``
(0: no timeout).
"""

from __future__ import annotations

from typing import Literal

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from router.settings import RedisSettings

__all__ = ["Redis", "RedisRole", "SyncRedis", "create_redis", "create_sync_redis", "timeouts"]

RedisRole = Literal["worker", "cli", "dev", "bench", "collector", "admin", "admin_cli", "startup"]


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


def create_redis(section: RedisSettings, *, role: RedisRole) -> Redis:
    """An asyncio client for ``section.url`` with the timeouts of ``role``."""
    socket, connect = timeouts(section, role)
    return Redis.from_url(section.url, socket_timeout=socket, socket_connect_timeout=connect)


def create_sync_redis(section: RedisSettings, *, role: RedisRole) -> SyncRedis:
    """A blocking client (one-off reads before the event loop runs)."""
    socket, connect = timeouts(section, role)
    return SyncRedis.from_url(section.url, socket_timeout=socket, socket_connect_timeout=connect)
