"""Lua scripts shipped in ``router/storage/lua/``, loaded by name, and run alone or in pipelines.

A script runs with EVALSHA and is loaded (SCRIPT LOAD) when a server answers
NOSCRIPT: on a Redis Cluster the client loads it on every primary.  In a
pipeline, :func:`queue` and :func:`execute` do the same for both kinds of
client: a single server's pipeline loads its scripts before it is sent; a
cluster pipeline (redis-py's has no script support) first makes sure every
script queued in this process is loaded on every primary, so a primary that
came up without them (a replica promoted in a failover does not carry the
script cache) runs them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, TypeAlias

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import AsyncScript

from router.storage.redis import AnyRedis

AnyPipeline: TypeAlias = Pipeline | ClusterPipeline
"""A non-transactional pipeline of either kind of client."""

# sha1 -> source of every script queued on a cluster pipeline in this process (a few dozen at most).
_CLUSTER_SCRIPTS: dict[str, str] = {}


@cache
def lua(name: str) -> str:
    """The source of ``router/storage/lua/<name>``."""
    return resources.files("router.storage").joinpath("lua", name).read_text()


def register(redis: AnyRedis, name: str) -> AsyncScript:
    """``router/storage/lua/<name>`` registered on ``redis`` (EVALSHA, loaded on first use)."""
    return redis.register_script(lua(name))


async def queue(pipe: AnyPipeline, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> None:
    """Add one call of ``script`` to ``pipe``; its reply comes from :func:`execute` in its place."""
    if isinstance(pipe, Pipeline):
        await script(keys=keys, args=args, client=pipe)
        return
    _CLUSTER_SCRIPTS.setdefault(script.sha, script.script.decode() if isinstance(script.script, bytes)
                                else str(script.script))
    # redis-py blocks the evalsha method on cluster pipelines (it cannot load scripts there); execute()
    # loads them first, and the command is routed by its keys like any other.
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


async def execute(pipe: AnyPipeline) -> list[Any]:
    """Send ``pipe``; the replies in order (a failed command raises, as ``Pipeline.execute`` does)."""
    if isinstance(pipe, ClusterPipeline) and _CLUSTER_SCRIPTS:
        await ensure_loaded(pipe.cluster_client, _CLUSTER_SCRIPTS)
    return list(await pipe.execute())


async def ensure_loaded(cluster: RedisCluster, sources: dict[str, str]) -> None:
    """SCRIPT LOAD on every primary each script (sha -> source) that any primary lacks."""
    shas = list(sources)
    present = await cluster.script_exists(*shas)  # every primary; True where all have it
    for sha, ok in zip(shas, present, strict=True):
        if not ok:
            await cluster.script_load(sources[sha])
