"""The one-hash-slot check (tests/integration/conftest.py) catches a cross-slot script."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.cluster import key_slot
from redis.exceptions import RedisClusterException

from router.storage import keys

pytestmark = pytest.mark.integration


async def test_a_script_spanning_two_slots_is_caught(redis: Redis, redis_mode: str,
                                                     scripts_use_one_hash_slot: list[str]) -> None:
    script = redis.register_script("return #KEYS")
    a, b = keys.lead("Laaa"), keys.lead("Lbbb")
    assert key_slot(a.encode()) != key_slot(b.encode())
    if redis_mode == "cluster":  # a real cluster refuses it outright
        with pytest.raises(RedisClusterException, match="same key slot"):
            await script(keys=[a, b], args=[])
    else:
        assert await script(keys=[a, b], args=[]) == 2  # the one server still ran it
    assert len(scripts_use_one_hash_slot) == 1 and "2 slots" in scripts_use_one_hash_slot[0]
    scripts_use_one_hash_slot.clear()  # expected here; any other test fails on it


async def test_one_leads_keys_share_a_slot(redis: Redis, scripts_use_one_hash_slot: list[str]) -> None:
    for lead_id in ("Labc", "A123", "U9"):
        assert len({key_slot(k.encode()) for k in keys.lead_keys(lead_id)}) == 1
        # apply_event.lua's seven keys: the lead's, its history, ids and field history (KEYS[7])
        applied = keys.apply_keys(lead_id)
        assert len(applied) == 7 and applied[6] == keys.field_history(lead_id)
        assert len({key_slot(k.encode()) for k in applied}) == 1
    assert len({key_slot(k.encode()) for k in keys.account_keys("c0ffee")}) == 1
