"""Expiry against a real redis-server (issue 11.5): state that does not grow forever.

Anonymous profiles, their identity links, account ties, account-member entries
and de-duplication sets expire after inactivity; known leads and their history
never do.  Redis TTLs run on Redis's own clock, so the tests read TTLs right
after each step (exact to a second: no timing involved), simulate idle time by
shortening a TTL with EXPIRE, and wait for real only once, on a one-second TTL,
by polling until the keys are gone.  Account members are trimmed in event time,
which the tests drive.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.storage import keys
from router.storage.store import RedisStore
from router.worker.accounts import AccountRef
from router.worker.batch import apply_batch
from scoring import load_scoring_config
from scoring.account_intent import AccountIntentConfig
from tests.integration.test_lifecycle import make_team, route
from tests.support import T0, run_batch

pytestmark = pytest.mark.integration

CONFIG = load_scoring_config(
    """
threshold: 1000
rules:
  - {name: page, description: any page, event: page_view, points: 1}
  - {name: form, description: any form, event: form_fill, points: 10}
""",
    "expiry.yaml",
)
DAY = 86400
TTL = 90 * DAY
LINK_TTL = 395 * DAY
GROUP = AccountRef("d:acme.com", "Acme", "acme.com", "group")


def page(eid: str, vid: str, ts: float = T0, **kw: object) -> Event:
    return Event(event_id=eid, type=EventType.PAGE_VIEW, ts=ts, source="pixel", visitor_id=vid,  # type: ignore[arg-type]
                 url="https://x.io/pricing", **kw)


def group(eid: str, user_id: str, ts: float = T0) -> Event:
    return Event(event_id=eid, type=EventType.GROUP, ts=ts, source="segment", user_id=user_id,
                 group_id="org-7", traits={"name": "Acme", "website": "https://acme.com"})


def form(eid: str, vid: str, email: str, ts: float = T0) -> Event:
    return Event(event_id=eid, type=EventType.FORM_FILL, ts=ts, source="form", visitor_id=vid, email=email,
                 form_id="newsletter", fields={"job_title": "VP Engineering"})


def profile_keys(lead_id: str) -> list[str]:
    """What an anonymous profile leaves in Redis, besides its links (no history: it never crossed)."""
    return [k for k in keys.apply_keys(lead_id) if k != keys.history(lead_id)] + [keys.lead_account(lead_id)]


async def ttls(redis: Redis, names: list[str]) -> dict[str, int]:
    pipe = redis.pipeline(transaction=False)
    for n in names:
        pipe.ttl(n)
    return dict(zip(names, await pipe.execute(), strict=True))


async def assert_ttl(redis: Redis, names: list[str], ttl: int) -> None:
    got = await ttls(redis, names)
    # Read right after the write: whole seconds on Redis's clock, so ttl or ttl - 1.
    assert all(ttl - 1 <= t <= ttl for t in got.values()), got


async def user_profile(store: RedisStore, vid: str, uid: str, ts: float = T0) -> str:
    """A visitor whose anonymous profile is merged into a user's (no email: still anonymous), tied to an account."""
    await run_batch(store, CONFIG, [page(f"{vid}-p1", vid, ts)], now=ts)
    await run_batch(store, CONFIG, [
        Event(event_id=f"{vid}-id", type=EventType.IDENTIFY, ts=ts + 1, source="segment", visitor_id=vid,
              user_id=uid),
        group(f"{vid}-g", uid, ts + 2),
        page(f"{vid}-p2", vid, ts + 3),
    ], now=ts + 3)
    return keys.lead_id_for_user(uid)


async def test_an_anonymous_profile_its_links_and_dedupe_sets_expire_after_inactivity(redis: Redis) -> None:
    store = RedisStore(redis, anonymous_ttl_s=1, seen_window_s=1)
    u = await user_profile(store, "vid-gone-01", "user-gone-01")
    link = keys.visitor("vid-gone-01")
    names = [*profile_keys(u), link]
    assert await redis.get(link) == u.encode()
    assert await redis.sismember(keys.lead_ids(u), "v:vid-gone-01")
    assert await redis.get(keys.lead_account(u)) == GROUP.key_id.encode()
    assert await redis.exists(*names) == len(names)  # every one of them is there, with a TTL of a second
    assert all(0 <= t <= 1 for t in (await ttls(redis, names)).values())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10  # a bound, not a timing: expiry is due after one second
    while await redis.exists(*names) and loop.time() < deadline:
        await asyncio.sleep(0.1)
    assert await redis.exists(*names) == 0
    # The visitor comes back: its old profile's forwarding stub (kept MERGED_TTL_S from the
    # merge) still sends it to the user's profile, which starts afresh: nothing of the old one.
    [res] = await run_batch(store, CONFIG, [page("back-1", "vid-gone-01")])
    assert res.status == "scored"
    h = await store.lead_hash(u)
    assert h["events"] == "1" and float(h["score"]) == 1
    assert await redis.ttl(keys.lead(u)) == 1


async def test_each_event_refreshes_the_profile_its_link_and_its_account_tie(redis: Redis) -> None:
    store = RedisStore(redis)
    u = await user_profile(store, "vid-live-01", "user-live-01")
    link = keys.visitor("vid-live-01")
    names = [keys.lead(u), keys.reasons(u), keys.recent(u), keys.lead_ids(u), keys.lead_account(u), link]
    await assert_ttl(redis, names, TTL)
    await assert_ttl(redis, [keys.seen(u)], keys.SEEN_WINDOW_S)
    # 89 days idle, as far as Redis can tell ...
    for n in [*names, keys.seen(u)]:
        await redis.expire(n, DAY)
    # ... then one page view: everything lives another 90 days (the counted ids their window).
    await run_batch(store, CONFIG, [page("live-p3", "vid-live-01", T0 + 89 * DAY)], now=T0 + 89 * DAY)
    await assert_ttl(redis, names, TTL)
    await assert_ttl(redis, [keys.seen(u)], keys.SEEN_WINDOW_S)
    assert (await store.lead_hash(u))["events"] == "5"  # 1 absorbed from the visitor's profile + 4


async def test_a_known_lead_and_its_history_never_expire(redis: Redis) -> None:
    store = RedisStore(redis)
    await run_batch(store, CONFIG, [page("k1", "vid-known-01"), form("k2", "vid-known-01", "kim@acme.com")])
    lead_id, _ = await route(store, make_team(), "kim@acme.com", datetime.fromtimestamp(T0 + 60, tz=UTC),
                             event_id="k3")
    assert await redis.llen(keys.history(lead_id)) >= 1
    kept = [keys.lead(lead_id), keys.reasons(lead_id), keys.recent(lead_id), keys.lead_ids(lead_id),
            keys.history(lead_id), keys.lead_account(lead_id)]
    assert await redis.exists(*kept) == len(kept)
    assert set((await ttls(redis, kept)).values()) == {-1}
    # Its counted event ids are kept for the redelivery window only, like everyone's.
    await assert_ttl(redis, [keys.seen(lead_id)], keys.SEEN_WINDOW_S)
    # Its browser's link lives as long as the collector's cookie, refreshed on each use.
    await assert_ttl(redis, [keys.visitor("vid-known-01")], LINK_TTL)
    await redis.expire(keys.visitor("vid-known-01"), DAY)
    await run_batch(store, CONFIG, [page("k4", "vid-known-01", T0 + 300 * DAY)], now=T0 + 300 * DAY)
    await assert_ttl(redis, [keys.visitor("vid-known-01")], LINK_TTL)
    assert set((await ttls(redis, kept)).values()) == {-1}
    assert (await store.lead_hash(lead_id))["events"] == "4"  # the page view 300 days on counted for Kim


async def test_a_merge_leaves_what_the_known_lead_keeps_without_a_ttl(redis: Redis) -> None:
    store = RedisStore(redis)
    vid = "vid-merge-01"
    await run_batch(store, CONFIG, [page(f"m{i}", vid, T0 + i) for i in range(3)])
    anon = keys.lead_id_for_visitor(vid)
    await assert_ttl(redis, [keys.lead(anon), keys.reasons(anon), keys.recent(anon)], TTL)
    await run_batch(store, CONFIG, [form("m9", vid, "max@acme.com", T0 + 10)], now=T0 + 10)
    lead_id = keys.lead_id_for_email("max@acme.com")
    h = await store.lead_hash(lead_id)
    assert float(h["score"]) == pytest.approx(13) and h["events"] == "4"
    kept = [keys.lead(lead_id), keys.reasons(lead_id), keys.recent(lead_id), keys.lead_ids(lead_id)]
    assert set((await ttls(redis, kept)).values()) == {-1}
    assert len(await store.lead_reasons(lead_id)) == 4
    # The anonymous keys are gone; only the forwarding stub is left, and it expires.
    assert await redis.exists(keys.seen(anon), keys.reasons(anon), keys.recent(anon)) == 0
    assert (await store.lead_hash(anon))["merged_into"] == lead_id
    await assert_ttl(redis, [keys.lead(anon)], keys.MERGED_TTL_S)
    await assert_ttl(redis, [keys.visitor(vid)], LINK_TTL)


async def test_a_ttl_left_on_a_known_lead_is_removed_by_its_next_event(redis: Redis) -> None:
    # E.g. an email lead's keys written while it had no email yet (a crash between merge and apply).
    store = RedisStore(redis)
    await run_batch(store, CONFIG, [form("t1", "vid-ttl-01", "tia@acme.com")])
    lead_id = keys.lead_id_for_email("tia@acme.com")
    kept = [keys.lead(lead_id), keys.reasons(lead_id), keys.recent(lead_id), keys.lead_ids(lead_id)]
    for n in kept:
        await redis.expire(n, 3600)
    await run_batch(store, CONFIG, [page("t2", "vid-ttl-01", T0 + 5)], now=T0 + 5)
    assert set((await ttls(redis, kept)).values()) == {-1}


async def test_a_redelivered_event_inside_the_window_is_counted_once(redis: Redis) -> None:
    store = RedisStore(redis)
    vid = "vid-dup-01"
    first = [page("d1", vid), form("d2", vid, "dee@acme.com", T0 + 1)]
    await run_batch(store, CONFIG, first, now=T0 + 1)
    lead_id = keys.lead_id_for_email("dee@acme.com")
    # Redelivered six days later (a worker down for the weekend and then some): both duplicates.
    again = await run_batch(store, CONFIG, first, now=T0 + 6 * DAY)
    assert [r.status for r in again] == ["duplicate", "duplicate"]
    h = await store.lead_hash(lead_id)
    assert float(h["score"]) == pytest.approx(11) and h["events"] == "2"
    # The ids are kept for the window from when they were counted, not forever: the lead's
    # next event past it drops them (and the set expires a window after the last event).
    await run_batch(store, CONFIG, [page("d3", vid, T0 + 8 * DAY)], now=T0 + 1 + keys.SEEN_WINDOW_S + 1)
    assert await redis.zrange(keys.seen(lead_id), 0, -1) == [b"d3"]
    await assert_ttl(redis, [keys.seen(lead_id)], keys.SEEN_WINDOW_S)


async def test_account_members_inactive_past_the_horizon_leave_it(redis: Redis) -> None:
    store = RedisStore(redis, member_horizon_s=30 * DAY)
    intent = AccountIntentConfig(threshold=10_000, window_days=14, per_person=10, per_role=15)
    acct = keys.account_keys(GROUP.key_id)
    users = [f"user-m{i}" for i in range(3)]
    await apply_batch(store, CONFIG, [group(f"g{i}", u, T0 + i) for i, u in enumerate(users)], T0 + 3, intent)
    await apply_batch(store, CONFIG, [form("gk", "vid-gk", "gus@acme.com", T0 + 4)], T0 + 4, intent)
    known = keys.lead_id_for_email("gus@acme.com")
    members = {m.decode() for m in await redis.zrange(acct[2], 0, -1)}
    assert members == {keys.lead_id_for_user(u) for u in users} | {known}
    await redis.hset(acct[4], mapping={keys.lead_id_for_user(users[0]): "it"})
    assert await redis.hget(acct[4], known) == b"engineering"
    # Only user-m2 is active again, 20 days on: nobody leaves yet (the horizon is 30 days).
    await apply_batch(store, CONFIG, [group("g20", users[2], T0 + 20 * DAY)], T0 + 20 * DAY, intent)
    assert await redis.zcard(acct[2]) == 4
    # 31 days on: the three inactive members leave the set; the anonymous one's role goes with it,
    # the known lead keeps its role (and its engagement ranking) for when it comes back.
    await apply_batch(store, CONFIG, [group("g31", users[2], T0 + 31 * DAY)], T0 + 31 * DAY, intent)
    assert {m.decode() for m in await redis.zrange(acct[2], 0, -1)} == {keys.lead_id_for_user(users[2])}
    assert await redis.hget(acct[4], keys.lead_id_for_user(users[0])) is None
    assert await redis.hget(acct[4], known) == b"engineering"
    assert await redis.zscore(acct[3], known) is not None
    assert (await store.account_hash(GROUP.key_id))["active_people"] == "1"
    await assert_ttl(redis, [acct[1]], keys.SEEN_WINDOW_S)
    assert set((await ttls(redis, [acct[0], acct[2], acct[3], acct[4]])).values()) == {-1}


async def test_with_expiry_off_nothing_anonymous_gets_a_ttl(redis: Redis) -> None:
    store = RedisStore(redis, anonymous_ttl_s=0, known_link_ttl_s=0)
    u = await user_profile(store, "vid-off-01", "user-off-01")
    names = [keys.lead(u), keys.reasons(u), keys.recent(u), keys.lead_ids(u), keys.lead_account(u),
             keys.visitor("vid-off-01")]
    assert set((await ttls(redis, names)).values()) == {-1}
