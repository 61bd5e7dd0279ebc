"""apply_event.lua and account_event.lua take a lead's (an account's) events of a batch in one call.

The batched call must leave Redis exactly as applying each event alone does: the
same hash, lists, counted ids, TTLs and results, in order, including the second
event of a lead that crossed in the same batch and a profile that became known
halfway through.  A failing event still writes back what the events before it did.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from models import AccountPlan, Event, EventType
from router.storage import keys
from router.storage.redis import flush
from router.storage.store import LeadRules, RedisStore
from router.worker.batch import plan_batch
from scoring import load_scoring_config

pytestmark = pytest.mark.integration

CONFIG = load_scoring_config(
    """
threshold: 40
half_life_days: 30
daily_cap: 60
rules:
  - {name: page, description: any page, event: page_view, points: 1}
  - {name: pricing, description: pricing page, event: page_view, url: /pricing, points: 10, cap_per_day: 15}
  - {name: open, description: email open, event: email_open, points: 2}
  - {name: first-form, description: first form, event: form_fill, points: 5, once_per_lead: true}
  - {name: demo, description: demo form, event: form_fill, form: demo-request, points: 50, hand_raiser: true}
""",
    "test.yaml",
)
T0 = 1_790_000_000.0
ANON = "A" + "1" * 32
KNOWN = keys.lead_id_for_email("jane@acme.com")


def ev(eid: str, kind: EventType, ts: float, **kw: Any) -> Event:
    source = {"page_view": "pixel", "email_open": "email", "form_fill": "form", "page_ping": "pixel"}[kind.value]
    return Event(event_id=eid, type=kind, ts=ts, source=source, **kw)


def traffic() -> tuple[list[Event], list[str]]:
    """Two leads interleaved: an anonymous visitor who fills a form (known halfway), and a known
    lead who asks for a demo (crosses) and keeps browsing (resumes); a redelivered event and a ping."""
    url = "https://example.com"
    items: list[tuple[Event, str]] = [
        (ev("a1", EventType.PAGE_VIEW, T0, visitor_id="v1", url=f"{url}/pricing"), ANON),
        (ev("k1", EventType.EMAIL_OPEN, T0 + 1, email="jane@acme.com", campaign="nov"), KNOWN),
        (ev("a2", EventType.PAGE_VIEW, T0 + 2, visitor_id="v1", url=f"{url}/pricing"), ANON),
        (ev("a3", EventType.PAGE_PING, T0 + 12, visitor_id="v1", url=f"{url}/pricing"), ANON),
        (ev("k2", EventType.FORM_FILL, T0 + 20, email="jane@acme.com", form_id="demo-request",
            fields={"company": "Acme", "job_title": "CTO"}), KNOWN),
        (ev("a4", EventType.FORM_FILL, T0 + 30, visitor_id="v1", email="bob@beta.io", form_id="newsletter",
            fields={"company": "Beta"}), ANON),
        (ev("k3", EventType.PAGE_VIEW, T0 + 40, email="jane@acme.com", url=f"{url}/pricing"), KNOWN),
        (ev("a5", EventType.PAGE_VIEW, T0 + 50, visitor_id="v1", url=f"{url}/pricing"), ANON),
        (ev("a2", EventType.PAGE_VIEW, T0 + 2, visitor_id="v1", url=f"{url}/pricing"), ANON),  # redelivered
    ]
    return [e for e, _ in items], [lid for _, lid in items]


async def dump(redis: Redis) -> dict[str, Any]:
    """Every key: its value by type, and whether it has a TTL."""
    out: dict[str, Any] = {}
    async for raw in redis.scan_iter(count=1000):
        key = raw.decode()
        kind = (await redis.type(key)).decode()
        if kind == "hash":
            value: Any = {k.decode(): v.decode() for k, v in (await redis.hgetall(key)).items()}
        elif kind == "list":
            value = [v.decode() for v in await redis.lrange(key, 0, -1)]
        elif kind == "zset":
            value = [(m.decode(), s) for m, s in await redis.zrange(key, 0, -1, withscores=True)]
        else:
            value = (await redis.get(key) or b"").decode()
        out[key] = (kind, value, await redis.ttl(key) > 0)
    return out


def summary(results: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.status, round(r.before, 9), round(r.after, 9), r.crossing, r.trigger, r.points, r.recycled,
             r.lead, r.reasons, r.recent) for r in results]


def accounts_for(events: list[Event], lead_ids: list[str]) -> list[AccountPlan]:
    return [AccountPlan(key_id="acme.com", event_id=e.event_id, ts=e.ts, points=3.0, lead_id=lid,
                        role="engineering" if i % 2 else "", known=lid == KNOWN, name="Acme", domain="acme.com")
            for i, (e, lid) in enumerate(zip(events, lead_ids, strict=True))]


async def test_a_batch_in_one_call_per_lead_leaves_redis_as_one_event_at_a_time(redis: Redis) -> None:
    store = RedisStore(redis, anonymous_ttl_s=3600)
    events, lead_ids = traffic()
    plans = plan_batch(events, lead_ids, CONFIG)
    accounts = accounts_for(events, lead_ids)
    rules = LeadRules.from_config(CONFIG)
    kw: dict[str, Any] = {"threshold": 40.0, "half_life_s": CONFIG.half_life_s, "now": T0 + 60, "rules": rules}

    batched, batched_accts = await store.apply_with_accounts(plans, accounts, **kw)
    after_batch = await dump(redis)
    await flush(redis)
    alone: list[Any] = []
    alone_accts: list[Any] = []
    for plan, acct in zip(plans, accounts, strict=True):
        r, a = await store.apply_with_accounts([plan], [acct], **kw)
        alone += r
        alone_accts += a
    assert await dump(redis) == after_batch
    assert summary(batched) == summary(alone)
    assert batched_accts == alone_accts
    # What the traffic was built to reach, so the comparison is not between two empty stores.
    assert [r.status for r in batched] == ["scored", "scored", "scored", "ping", "fired", "scored", "resume",
                                           "scored", "duplicate"]
    lead = after_batch[keys.lead(ANON)]
    assert lead[1]["email"] == "bob@beta.io" and lead[2] is False  # known halfway: the hash lost its TTL
    assert after_batch[keys.reasons(ANON)][2] is False
    assert after_batch[keys.lead(KNOWN)][1]["pending_crossing"] == "1"


async def test_an_anonymous_profile_keeps_its_ttl_across_a_batched_call(redis: Redis) -> None:
    store = RedisStore(redis, anonymous_ttl_s=3600)
    events = [ev(f"p{i}", EventType.PAGE_VIEW, T0 + i, visitor_id="v9", url="https://example.com/")
              for i in range(3)]
    plans = plan_batch(events, [ANON] * 3, CONFIG)
    await store.apply(plans, threshold=40.0, half_life_s=CONFIG.half_life_s, now=T0 + 5)
    for key in (keys.lead(ANON), keys.reasons(ANON), keys.recent(ANON)):
        assert 0 < await redis.ttl(key) <= 3600, key
    assert (await store.lead_hash(ANON))["events"] == "3"


async def test_a_failing_event_keeps_what_the_events_before_it_wrote(redis: Redis) -> None:
    store = RedisStore(redis)
    good = {"e": "g1", "t": T0, "y": "page_view", "d": "2026-09-21", "s": "{}", "h": False, "f": {},
            "i": KNOWN, "fv": True, "fs": "pixel", "m": "jane@acme.com",
            "r": [{"rule": "page", "points": 1, "rh": '["page",', "rt": ',"g1",0,1,"any page"'}]}
    # A hit without the compact reason's tail cannot be recorded: the script fails on it.
    bad = {**good, "e": "g2", "r": [{"rule": "x", "points": 5, "cap": 1, "rh": '["x",'}]}
    cfg = store._lead_cfg(LeadRules.from_config(CONFIG), T0)
    with pytest.raises(ResponseError, match="event g2"):
        await store._apply(keys=keys.apply_keys(KNOWN), args=[orjson.dumps([good, bad]), cfg])
    lead = await store.lead_hash(KNOWN)
    assert lead["events"] == "1" and float(lead["score"]) == 1.0  # g1 applied and written back
    assert await redis.zscore(keys.seen(KNOWN), "g1") is not None
