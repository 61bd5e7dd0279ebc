"""The identity graph against a real redis-server.

Shared browsers, late identification, alias chains and user-id-only
profiles: each person's past points count exactly once, and two people are
never merged because they used the same browser.
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.storage import keys
from router.storage.store import RedisStore
from scoring import load_scoring_config
from tests.support import T0, run_batch

pytestmark = pytest.mark.integration

CONFIG = load_scoring_config(
    """
threshold: 1000
rules:
  - {name: page, description: any page, event: page_view, points: 1}
  - {name: pricing, description: pricing page, event: page_view, url: /pricing, points: 10}
  - {name: form, description: any form, event: form_fill, points: 10}
  - {name: trial, description: trial started, event: track, points: 20}
""",
    "identity.yaml",
)


def ev(eid: str, etype: EventType, **kw: object) -> Event:
    return Event(event_id=eid, type=etype, ts=T0, source="test", **kw)  # type: ignore[arg-type]


async def score(store: RedisStore, lead_id: str) -> float:
    return float((await store.lead_hash(lead_id)).get("score", 0))


async def test_colleagues_sharing_a_browser_stay_two_people(redis: Redis) -> None:
    store = RedisStore(redis)
    vid = "shared-kiosk-01"
    await run_batch(store, CONFIG, [
        ev("s1", EventType.PAGE_VIEW, visitor_id=vid, url="https://x.io/pricing"),
        ev("s2", EventType.FORM_FILL, visitor_id=vid, email="ann@acme.com", form_id="newsletter"),
    ])
    ann = keys.lead_id_for_email("ann@acme.com")
    assert await score(store, ann) == pytest.approx(21)
    # Bob identifies on the same browser: Ann's points stay Ann's.
    await run_batch(store, CONFIG, [
        ev("s3", EventType.FORM_FILL, visitor_id=vid, email="bob@acme.com", form_id="newsletter"),
        ev("s4", EventType.PAGE_VIEW, visitor_id=vid, url="https://x.io/pricing"),
    ])
    bob = keys.lead_id_for_email("bob@acme.com")
    assert await score(store, ann) == pytest.approx(21)
    assert await score(store, bob) == pytest.approx(10 + 11)  # his form, then the browser follows him
    log = await redis.xrange(keys.IDENTITY_LOG)
    kinds = [entry[b"kind"] for _, entry in log]
    assert b"conflict" in kinds
    conflict = next(e for _, e in log if e[b"kind"] == b"conflict")
    assert conflict[b"previous"].decode() == ann and conflict[b"current"].decode() == bob


async def test_late_identification_counts_weeks_of_anonymous_history_once(redis: Redis) -> None:
    store = RedisStore(redis)
    vid = "late-visitor-01"
    pages = [ev(f"l{i}", EventType.PAGE_VIEW, visitor_id=vid, url="https://x.io/pricing") for i in range(5)]
    for p in pages:  # separate batches, as over weeks
        await run_batch(store, CONFIG, [p])
    await run_batch(store, CONFIG, [ev("l-form", EventType.FORM_FILL, visitor_id=vid, email="cy@big.co",
                                       form_id="webinar")])
    lead = keys.lead_id_for_email("cy@big.co")
    assert await score(store, lead) == pytest.approx(5 * 11 + 10)
    # Everything again (at-least-once delivery), in one batch: nothing moves.
    results = await run_batch(store, CONFIG, [*pages, ev("l-form", EventType.FORM_FILL, visitor_id=vid,
                                                         email="cy@big.co", form_id="webinar")])
    assert {r.status for r in results} == {"duplicate"}
    assert await score(store, lead) == pytest.approx(65)
    assert (await store.lead_hash(lead))["n:page_view"] == "5"
    anon = await store.lead_hash(keys.lead_id_for_visitor(vid))
    assert anon == {"merged_into": lead, "cleaned": "1", "first_seen": anon["first_seen"]}


async def test_alias_chain_joins_anonymous_ids_and_user_ids_into_one_lead(redis: Redis) -> None:
    store = RedisStore(redis)
    # Two devices browse anonymously; the app later aliases both to user u-42,
    # whose identify call finally brings the email.
    await run_batch(store, CONFIG, [
        ev("a1", EventType.PAGE_VIEW, visitor_id="phone-anon-1", url="https://x.io/"),
        ev("a2", EventType.PAGE_VIEW, visitor_id="laptop-anon-1", url="https://x.io/pricing"),
    ])
    await run_batch(store, CONFIG, [ev("a3", EventType.ALIAS, previous_id="phone-anon-1", user_id="u-42")])
    await run_batch(store, CONFIG, [ev("a4", EventType.TRACK, user_id="u-42", name="Trial Started")])
    await run_batch(store, CONFIG, [ev("a5", EventType.ALIAS, previous_id="laptop-anon-1", user_id="u-42")])
    user_profile = keys.lead_id_for_user("u-42")
    assert await score(store, user_profile) == pytest.approx(1 + 20 + 11)
    await run_batch(store, CONFIG, [ev("a6", EventType.IDENTIFY, user_id="u-42", email="dee@corp.io",
                                       traits={"company": "Corp", "job_title": "CTO"})])
    lead = keys.lead_id_for_email("dee@corp.io")
    assert await score(store, lead) == pytest.approx(32)
    data = await store.lead_hash(lead)
    assert data["f:company"] == "Corp" and data["user_id"] == "u-42"
    # Any identifier of the chain now reaches the lead.
    for extra in (ev("a7", EventType.PAGE_VIEW, visitor_id="phone-anon-1", url="https://x.io/"),
                  ev("a8", EventType.PAGE_VIEW, visitor_id="laptop-anon-1", url="https://x.io/"),
                  ev("a9", EventType.TRACK, user_id="u-42", name="Seat Added")):
        await run_batch(store, CONFIG, [extra])
    assert await score(store, lead) == pytest.approx(32 + 1 + 1 + 20)
    merges = [e for _, e in await redis.xrange(keys.IDENTITY_LOG) if e[b"kind"] == b"merge"]
    assert {m[b"target"].decode() for m in merges} == {user_profile, lead}
    assert len(merges) == 3


async def test_a_merge_interrupted_half_way_completes_once_on_redelivery(redis: Redis) -> None:
    store = RedisStore(redis)
    vid = "crashy-visitor-1"
    await run_batch(store, CONFIG, [ev("c1", EventType.PAGE_VIEW, visitor_id=vid, url="https://x.io/pricing")])
    lead = keys.lead_id_for_email("eve@corp.io")
    anon = keys.lead_id_for_visitor(vid)
    # The worker froze the anonymous profile and absorbed it, then died before cleanup.
    from models import Merge

    m = Merge(anon, lead, f"visitor:{vid}", "c2", T0)
    frozen = await store._freeze(keys=keys.lead_keys(anon), args=[lead, 60])
    assert b"frozen" in frozen
    await store.merge(m, half_life_s=CONFIG.half_life_s, now=T0)  # the redelivered attempt
    await store.merge(m, half_life_s=CONFIG.half_life_s, now=T0)  # and once more
    await run_batch(store, CONFIG, [ev("c2", EventType.FORM_FILL, visitor_id=vid, email="eve@corp.io",
                                       form_id="newsletter")])
    assert await score(store, lead) == pytest.approx(11 + 10)
    assert (await store.lead_hash(lead))["merges"] == "1"


async def test_user_id_as_a_unique_identifier_keeps_two_logins_on_one_browser_apart(redis: Redis) -> None:
    from router.worker.batch import apply_batch

    store = RedisStore(redis)
    both = frozenset({"email", "user_id"})
    kiosk = "kiosk-browser-07"
    await apply_batch(store, CONFIG, [ev("k1", EventType.TRACK, user_id="u-alice", visitor_id=kiosk, name="Login"),
                                      ev("k2", EventType.PAGE_VIEW, visitor_id=kiosk, url="https://x.io/pricing")],
                      T0, unique=both)
    alice = keys.lead_id_for_user("u-alice")
    assert await score(store, alice) == pytest.approx(20 + 11)
    # Bob logs in on the same browser: with user_id unique, he is someone else.
    await apply_batch(store, CONFIG, [ev("k3", EventType.TRACK, user_id="u-bob", visitor_id=kiosk, name="Login"),
                                      ev("k4", EventType.PAGE_VIEW, visitor_id=kiosk, url="https://x.io/pricing")],
                      T0, unique=both)
    bob = keys.lead_id_for_user("u-bob")
    assert await score(store, alice) == pytest.approx(31)
    assert await score(store, bob) == pytest.approx(31)
    kinds = [e[b"kind"] for _, e in await redis.xrange(keys.IDENTITY_LOG)]
    assert b"conflict" in kinds


async def test_by_default_only_email_is_unique_so_user_ids_on_one_browser_join(redis: Redis) -> None:
    from router.worker.batch import apply_batch

    store = RedisStore(redis)
    kiosk = "kiosk-browser-08"
    await apply_batch(store, CONFIG, [ev("j1", EventType.TRACK, user_id="u-one", visitor_id=kiosk, name="Login")], T0)
    await apply_batch(store, CONFIG, [ev("j2", EventType.TRACK, user_id="u-two", visitor_id=kiosk, name="Login")], T0)
    assert await score(store, keys.lead_id_for_user("u-one")) == pytest.approx(40)
    assert await redis.get(keys.user("u-two")) == keys.lead_id_for_user("u-one").encode()
