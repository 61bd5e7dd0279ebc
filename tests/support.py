"""Helpers shared by the integration tests."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from models import ApplyResult, Event
from router.settings import DEV_PII_KEY
from router.storage.pii import Vault, pseudonym
from router.storage.redis import AnyRedis, AnySyncRedis, RedisCluster, SyncRedisCluster, redis_from_url
from router.storage.store import RedisStore
from router.worker.pipeline import apply_batch
from scoring import ScoringConfig

T0 = 1_790_000_000.0


async def run_batch(store: RedisStore, config: ScoringConfig, events: list[Event], now: float = T0
                    ) -> list[ApplyResult]:
    """The worker's batch path minus routing."""
    return (await apply_batch(store, config, events, now)).results


def pid(identifier: str, master: str = DEV_PII_KEY) -> str:
    """The pseudonym the collector gives a visitor, user or alias id (issue 16.7)."""
    return pseudonym(master, identifier)


async def open_events(redis_url: str, events: list[dict[str, Any]], master: str = DEV_PII_KEY
                      ) -> list[dict[str, Any]]:
    """Events read off the topic as the worker sees them: personal fields opened with the person's key.

    Extra keys (``_partition``...) are kept; an event that does not open (forgotten) is left sealed.
    """
    redis = redis_from_url(redis_url)
    try:
        vault = Vault(redis, master)
        out: list[dict[str, Any]] = []
        for data in events:
            if not data.get("sealed"):
                out.append(data)
                continue
            kept, _ = await vault.open([Event.from_dict(data)])
            extra = {k: v for k, v in data.items() if k.startswith("_")}
            out.append({**kept[0].to_dict(), **extra} if kept else data)
        return out
    finally:
        await redis.aclose()


async def open_alert(redis: Redis, value: bytes, master: str = DEV_PII_KEY) -> dict[str, Any]:
    """An alert record off the assignments topic as the sender reads it: opened with the lead's key."""
    record = orjson.loads(value)
    opened = await Vault(redis, master).open_alert(record)
    assert opened is not None, "the alert's lead was forgotten"
    return opened


def sync_flush(client: AnySyncRedis) -> None:
    """FLUSHDB through a blocking client (on a cluster: every primary)."""
    if isinstance(client, SyncRedisCluster):
        client.flushall(target_nodes=SyncRedisCluster.PRIMARIES)
    else:
        client.flushdb()


async def all_keys(redis: AnyRedis, pattern: str = "*") -> list[bytes]:
    """Every key matching ``pattern`` (KEYS on one server; a SCAN of every primary on a cluster)."""
    if isinstance(redis, RedisCluster):
        return [k async for k in redis.scan_iter(match=pattern, count=1000)]
    return list(await redis.keys(pattern))
