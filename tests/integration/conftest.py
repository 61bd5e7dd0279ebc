"""Every Lua script call in the integration tests must touch one hash slot.

Redis Cluster runs a script only when all its keys hash to the same slot.
This wraps redis-py's script call (the real server still runs every script)
and fails the test that made a call whose keys span slots, so the whole
integration suite checks issue 4's cluster rule on real flows.  On the
cluster variant (``[cluster]``, tests/conftest.py) a real Redis Cluster
refuses such a call as well, pipelined scripts included.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import key_slot
from redis.commands.core import AsyncScript


@pytest.fixture(autouse=True)
def scripts_use_one_hash_slot(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    original = AsyncScript.__call__
    crossed: list[str] = []

    async def checked(self: AsyncScript, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        names = [k.encode() if isinstance(k, str) else bytes(k) for k in (keys or [])]
        slots = {key_slot(k) for k in names}
        if len(slots) > 1:
            crossed.append(f"script touching keys in {len(slots)} slots: {[n.decode() for n in names]}")
        return await original(self, keys=keys, args=args, client=client)

    monkeypatch.setattr(AsyncScript, "__call__", checked)
    yield crossed
    assert not crossed, "\n".join(crossed)
