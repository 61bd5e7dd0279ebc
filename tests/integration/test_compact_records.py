"""The compact per-lead records (router/storage/records.py) against a real redis-server.

What people see (the explain view's reasons, the timeline, the field history, the snapshot an
alert is built from) is the same as with the old JSON objects, for leads written now and for
leads written before the upgrade (old entries, alone or mixed with new ones); de-duplication
is as exact with the compact ids, including ids stored before the upgrade.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from models import Event, EventPlan, EventType, Reason
from router.admin.app import create_app as create_admin
from router.admin.auth import Role, TokenStore
from router.settings import Settings
from router.storage import keys
from router.storage.records import seen_member
from router.storage.store import RedisStore
from scoring import load_scoring_config
from tests.support import run_batch

pytestmark = pytest.mark.integration

CONFIG = load_scoring_config(
    """
threshold: 1000
half_life_days: 30
rules:
  - {name: page, description: any page, event: page_view, points: 1, cap_per_day: 1}
  - {name: pricing, description: pricing page, event: page_view, url: /pricing, points: 10}
  - {name: form, description: any form, event: form_fill, points: 10, once_per_lead: true}
  - {name: demo, description: demo form, event: form_fill, form: demo-request, points: 50, hand_raiser: true}
""",
    "test.yaml",
)
T0 = 1_790_000_000.25
VID = "visitor-compact-0001"
EMAIL = "ada@analytical.example"
LEAD = keys.lead_id_for_email(EMAIL)
IDS = [f"{i:02d}" * 16 for i in range(1, 9)]  # 32 hex digits, as the collector mints them


def page(eid: str, path: str, ts: float) -> Event:
    return Event(event_id=eid, type=EventType.PAGE_VIEW, ts=ts, source="pixel", visitor_id=VID,
                 url=f"https://www.example.com{path}", title=f"Title of {path}")


def form(eid: str, form_id: str, ts: float, **fields: str) -> Event:
    return Event(event_id=eid, type=EventType.FORM_FILL, ts=ts, source="form", visitor_id=VID, email=EMAIL,
                 form_id=form_id, url="https://www.example.com/contact", fields=fields)


def traffic() -> list[Event]:
    return [
        page(IDS[0], "/pricing", T0),  # page + pricing: two reasons of one event
        page(IDS[1], "/pricing?utm_campaign=q4", T0 + 1.5),  # page capped: 0 of 1
        form(IDS[2], "newsletter", T0 + 2.125, company="Analytical Engines", job_title="Analyst"),
        form(IDS[3], "demo-request", T0 + 3.0625, company="Analytical Engines Ltd"),  # once: form; demo: hand
        Event(event_id="sdk-msg-7", type=EventType.EMAIL_OPEN, ts=T0 + 4, source="email", email=EMAIL,
              campaign="nov/launch"),  # an id that is not hex, and no rule
    ]


# What the readers returned for this traffic with the old JSON objects (checked against the code before
# the compact records: these assertions pass on both).
REASONS = [
    Reason(rule="demo", points=50.0, event_id=IDS[3], event_type="form_fill", ts=T0 + 3.0625,
           detail="filled form demo-request", hand_raiser=True),
    Reason(rule="form", points=0.0, event_id=IDS[3], event_type="form_fill", ts=T0 + 3.0625,
           detail="filled form demo-request (once per lead: already counted)"),
    Reason(rule="form", points=10.0, event_id=IDS[2], event_type="form_fill", ts=T0 + 2.125,
           detail="filled form newsletter"),
    Reason(rule="pricing", points=10.0, event_id=IDS[1], event_type="page_view", ts=T0 + 1.5,
           detail="viewed /pricing"),
    Reason(rule="page", points=0.0, event_id=IDS[1], event_type="page_view", ts=T0 + 1.5,
           detail="viewed /pricing (capped: 0 of 1)"),
    Reason(rule="pricing", points=10.0, event_id=IDS[0], event_type="page_view", ts=T0, detail="viewed /pricing"),
    Reason(rule="page", points=1.0, event_id=IDS[0], event_type="page_view", ts=T0, detail="viewed /pricing"),
]
RECENT = [
    {"type": "email_open", "ts": T0 + 4, "event_id": "sdk-msg-7", "campaign": "nov/launch"},
    {"type": "form_fill", "ts": T0 + 3.0625, "event_id": IDS[3], "url": "https://www.example.com/contact",
     "form_id": "demo-request"},
    {"type": "form_fill", "ts": T0 + 2.125, "event_id": IDS[2], "url": "https://www.example.com/contact",
     "form_id": "newsletter"},
    {"type": "page_view", "ts": T0 + 1.5, "event_id": IDS[1], "url": "https://www.example.com/pricing?utm_campaign=q4",
     "title": "Title of /pricing?utm_campaign=q4"},
    {"type": "page_view", "ts": T0, "event_id": IDS[0], "url": "https://www.example.com/pricing",
     "title": "Title of /pricing"},
]


FIRST, SECOND = "form newsletter (unverified)", "form demo-request (verified)"
CHANGES: list[dict[str, Any]] = [
    {"field": "company", "new": "Analytical Engines Ltd", "old": "Analytical Engines", "source": SECOND,
     "verified": True, "applied": True, "ts": T0 + 3.0625, "event_id": IDS[3]},
    {"field": "job_title", "new": "Analyst", "source": FIRST, "verified": False, "applied": True,
     "ts": T0 + 2.125, "event_id": IDS[2]},
    {"field": "company", "new": "Analytical Engines", "source": FIRST, "verified": False, "applied": True,
     "ts": T0 + 2.125, "event_id": IDS[2]},
]


def by_field(changes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Changes of one event come in no fixed order: compare them as a set per event, in event order."""
    return sorted((-c["ts"], tuple(sorted(c.items()))) for c in changes)


async def play(store: RedisStore) -> None:
    for ev in traffic():
        await run_batch(store, CONFIG, [ev], now=ev.ts)


async def test_what_readers_return_is_what_the_old_records_gave(redis: Redis) -> None:
    store = RedisStore(redis)
    await play(store)
    assert await store.lead_reasons(LEAD) == REASONS
    assert await store.lead_recent(LEAD) == RECENT
    assert by_field(await store.field_history(LEAD)) == by_field(CHANGES)
    # the limits readers take count whole entries, as before
    assert await store.lead_reasons(LEAD, 2) == REASONS[:2]
    assert await store.lead_recent(LEAD, 1) == RECENT[:1]


async def test_the_stored_entries_are_compact(redis: Redis) -> None:
    store = RedisStore(redis)
    await play(store)
    reasons = await redis.lrange(keys.reasons(LEAD), 0, -1)
    assert all(r.startswith(b"[") for r in reasons)
    # one event's second reason refers to its first: no event id, type or time of its own
    assert reasons[1] == b'["form",0,null,0,0]' and IDS[3].encode() not in reasons[1]
    # against the same entries as JSON objects (the old format; the old code's cjson took a few more bytes)
    assert sum(map(len, reasons)) < 0.35 * sum(len(orjson.dumps(r.to_dict())) for r in REASONS)
    recent = await redis.lrange(keys.recent(LEAD), 0, -1)
    assert sum(map(len, recent)) < 0.75 * sum(len(orjson.dumps(e)) for e in RECENT)
    fields = await redis.lrange(keys.field_history(LEAD), 0, -1)
    assert sum(map(len, fields)) < 0.7 * sum(len(orjson.dumps(c)) for c in CHANGES)
    seen = await redis.zrange(keys.seen(LEAD), 0, -1, withscores=True)
    members = {m for m, _ in seen}
    assert members == {b"\xff" + bytes.fromhex(i) for i in IDS[:4]} | {b"sdk-msg-7"}
    assert all(score == int(score) for _, score in seen)  # whole seconds: a few bytes each in a listpack


async def test_every_view_is_the_same_for_a_lead_stored_before_the_upgrade(redis: Redis) -> None:
    """Entries as the old code wrote them (JSON objects; the ids themselves in ``seen``) read as before."""
    store = RedisStore(redis)
    old_reasons = [orjson.dumps(r.to_dict()) for r in REASONS]
    old_recent = [orjson.dumps(e) for e in RECENT]
    old_fields = [orjson.dumps(c) for c in CHANGES]
    await redis.rpush(keys.reasons(LEAD), *old_reasons)
    await redis.rpush(keys.recent(LEAD), *old_recent)
    await redis.rpush(keys.field_history(LEAD), *old_fields)
    await redis.zadd(keys.seen(LEAD), {e: T0 for e in [*IDS[:4], "sdk-msg-7"]})
    await redis.hset(keys.lead(LEAD), mapping={"email": EMAIL, "score": "71", "asof": repr(T0 + 4),
                                               "stage": "known", "lead_id": LEAD, "events": "5"})
    assert await store.lead_reasons(LEAD) == REASONS
    assert await store.lead_recent(LEAD) == RECENT
    assert await store.field_history(LEAD) == [orjson.loads(c) for c in old_fields]
    # Redelivered events stored in the old form are still duplicates; a new one counts once.
    results = await run_batch(store, CONFIG, [*traffic(), page(IDS[5], "/", T0 + 5)], now=T0 + 5)
    assert [r.status for r in results] == ["duplicate"] * 5 + ["scored"]
    assert (await store.lead_hash(LEAD))["events"] == "6"
    # New entries go on top, in the compact form; the list reads as one.
    reasons = await store.lead_reasons(LEAD)
    assert reasons[1:] == REASONS and reasons[0].event_id == IDS[5] and reasons[0].rule == "page"
    recent = await store.lead_recent(LEAD)
    assert recent[1:] == RECENT and recent[0]["event_id"] == IDS[5]


async def test_the_explain_and_timeline_views_read_both_formats(redis: Redis, redis_url: str) -> None:
    store = RedisStore(redis)
    await play(store)
    old_lead = keys.lead_id_for_email("old@analytical.example")
    await redis.hset(keys.lead(old_lead), mapping=await store.lead_hash(LEAD))
    await redis.rpush(keys.reasons(old_lead), *[orjson.dumps(r.to_dict()) for r in REASONS])
    await redis.rpush(keys.recent(old_lead), *[orjson.dumps(e) for e in RECENT])
    await redis.rpush(keys.field_history(old_lead), *[orjson.dumps(c) for c in await store.field_history(LEAD)])
    client: TestClient[Any, Any] = TestClient(TestServer(create_admin(Settings.of(redis_url=redis_url), redis,
                                                                      clock=lambda: T0 + 10)))
    await client.start_server()
    try:
        token, _ = await TokenStore(redis).create(Role.OPS, name="ops", now=T0)
        auth = {"Authorization": f"Bearer {token}"}
        views: dict[str, list[Any]] = {}
        for lead_id in (LEAD, old_lead):
            async with client.get(f"/v1/leads/{lead_id}/explain", headers=auth) as r:
                assert r.status == 200
                body = await r.json()
            async with client.get(f"/v1/leads/{lead_id}/timeline", headers=auth) as r:
                assert r.status == 200
                timeline = (await r.json())["entries"]
            views[lead_id] = [body["reasons"], body["parts"], body["field_history"], timeline]
        assert views[LEAD] == views[old_lead]
        reasons = views[LEAD][0]
        assert {(r["rule"], r["detail"], r["event_id"]) for r in reasons} == {
            (r.rule, r.detail, r.event_id) for r in REASONS}
    finally:
        await client.close()


async def test_a_crossing_snapshot_carries_the_same_reasons_and_activity(redis: Redis) -> None:
    """The fired snapshot (what the alert is built from) decodes the compact entries too."""
    store = RedisStore(redis)
    config = load_scoring_config(CONFIG_TEXT_HAND, "hand.yaml")
    [fired] = await run_batch(store, config, [form(IDS[6], "demo-request", T0, company="Acme")], now=T0)
    assert fired.status == "fired"
    assert fired.reasons == (Reason(rule="demo", points=50.0, event_id=IDS[6], event_type="form_fill", ts=T0,
                                    detail="filled form demo-request", hand_raiser=True),)
    assert fired.recent == ({"type": "form_fill", "ts": T0, "event_id": IDS[6],
                             "url": "https://www.example.com/contact", "form_id": "demo-request"},)


CONFIG_TEXT_HAND = """
threshold: 1000
half_life_days: 30
rules:
  - {name: demo, description: demo form, event: form_fill, form: demo-request, points: 50, hand_raiser: true}
"""


async def test_compact_seen_ids_are_one_to_one(redis: Redis) -> None:
    """A 17-byte id never meets the 0xFF and 16 bytes of a hex id (0xFF is never in UTF-8 text)."""
    store = RedisStore(redis)
    hex_id = "4a" * 16  # its 16 bytes are b"JJJJJJJJJJJJJJJJ"
    plain = "J" * 16
    both = "\N{LATIN SMALL LETTER Y WITH DIAERESIS}" + plain  # U+00FF: in UTF-8 it is 0xC3 0xBF, never 0xFF
    evs = [page(hex_id, "/", T0), page(plain, "/", T0 + 1), page(both, "/", T0 + 2), page(hex_id.upper(), "/", T0 + 3)]
    results = await run_batch(store, CONFIG, evs, now=T0 + 3)
    assert [r.status for r in results] == ["scored"] * 4
    anon = keys.lead_id_for_visitor(VID)
    members = {b"\xff" + b"J" * 16, plain.encode(), both.encode(), hex_id.upper().encode()}
    assert set(await redis.zrange(keys.seen(anon), 0, -1)) == members
    assert {seen_member(e.event_id) for e in evs} == members
    again = await run_batch(store, CONFIG, evs[::-1], now=T0 + 4)
    assert [r.status for r in again] == ["duplicate"] * 4


async def test_merged_profile_ids_stay_duplicates(redis: Redis) -> None:
    """The anonymous profile's compact ids travel through the merge (hex-encoded) and stay exact."""
    store = RedisStore(redis)
    await run_batch(store, CONFIG, [page(IDS[0], "/pricing", T0), page(IDS[1], "/", T0 + 1)], now=T0 + 1)
    await run_batch(store, CONFIG, [form(IDS[2], "newsletter", T0 + 2)], now=T0 + 2)
    assert set(await redis.zrange(keys.seen(LEAD), 0, -1)) == {seen_member(i) for i in IDS[:3]}
    again = await run_batch(store, CONFIG, [page(IDS[0], "/pricing", T0), page(IDS[1], "/", T0 + 1)], now=T0 + 3)
    assert [r.status for r in again] == ["duplicate", "duplicate"]
    assert (await store.lead_hash(LEAD))["events"] == "3"
    # the anonymous reasons joined the lead's, readable as one list
    assert [r.event_id for r in await store.lead_reasons(LEAD)] == [IDS[2], IDS[1], IDS[0], IDS[0]]


async def test_account_roll_up_counts_each_event_once_in_both_id_formats(redis: Redis) -> None:
    store = RedisStore(redis)
    await play(store)
    [key_id] = (await store.lead_accounts([LEAD])).values()
    acct, seen = keys.account_keys(key_id)[:2]
    counted = {m for m in await redis.zrange(seen, 0, -1)}
    assert {seen_member(i) for i in IDS[2:4]} | {b"sdk-msg-7"} <= counted
    assert all(m == b"sdk-msg-7" or len(m) == 17 for m in counted)
    # as stored before the upgrade: the ids themselves
    await redis.delete(seen)
    await redis.zadd(seen, {e.event_id: T0 for e in traffic()})
    before = await store.account_hash(key_id)
    results = await run_batch(store, CONFIG, traffic()[2:], now=T0 + 5)
    assert {r.status for r in results} == {"resume"}  # the demo request's crossing is still being routed
    assert await store.account_hash(key_id) == before
    assert await redis.hget(acct, "score") == before["score"].encode()


async def test_points_without_a_rule_read_as_one_reason(redis: Redis) -> None:
    store = RedisStore(redis)
    ev = page(IDS[7], "/", T0)
    lead_id = keys.lead_id_for_visitor(VID)
    await store.apply([EventPlan(event=ev, lead_id=lead_id, reasons=(), points=7.5, hand_raiser=False)],
                      threshold=1000.0, half_life_s=30 * 86400.0, now=T0)
    assert await store.lead_reasons(lead_id) == [Reason(rule="points", points=7.5, event_id=IDS[7],
                                                        event_type="page_view", ts=T0)]
