"""Lua scripts shipped in ``router/storage/lua/``, loaded by name."""

from __future__ import annotations

from functools import cache
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


@cache
def lua(name: str) -> str:
    """The source of ``router/storage/lua/<name>``."""
    return resources.files("router.storage").joinpath("lua", name).read_text()


def register(redis: Redis, name: str) -> AsyncScript:
    """``router/storage/lua/<name>`` registered on ``redis`` (EVALSHA, loaded on first use)."""
    return redis.register_script(lua(name))
