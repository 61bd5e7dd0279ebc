"""A hand raised before the person is known counts when they identify: within the window, once."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.storage import keys
from router.storage.store import RedisStore
from scoring import ScoringConfig, load_scoring_config
from tests.support import T0, run_batch

pytestmark = pytest.mark.integration

HOUR = 3600.0


def config(window: str = "identify_window_hours: 72\n") -> ScoringConfig:
    return load_scoring_config(
        "threshold: 100\n" + window + """
rules:
  - {name: form, description: any form, event: form_fill, points: 10, once_per_lead: true}
  - {name: demo, description: demo form, event: form_fill, form: demo-request, points: 50, hand_raiser: true}
  - {name: talk, description: asked for sales in the app, event: track, event_name: Talk To Sales,
     points: 40, hand_raiser: true}
""", "late.yaml")


def demo(eid: str, vid: str, ts: float) -> Event:
    return Event(event_id=eid, type=EventType.FORM_FILL, ts=ts, source="segment", visitor_id=vid,
                 form_id="demo-request")


def identify(eid: str, vid: str, email: str, ts: float) -> Event:
    return Event(event_id=eid, type=EventType.IDENTIFY, ts=ts, source="segment", visitor_id=vid, email=email)


def page(eid: str, vid: str, ts: float) -> Event:
    return Event(event_id=eid, type=EventType.PAGE_VIEW, ts=ts, source="pixel", visitor_id=vid,
                 url="https://ex.test/")


async def test_identified_within_the_window_fires_once(redis: Redis) -> None:
    store, cfg = RedisStore(redis), config()
    await run_batch(store, cfg, [demo("d1", "v1", T0)], now=T0)
    later = T0 + 71 * HOUR
    [r] = await run_batch(store, cfg, [identify("i1", "v1", "ana@ex.test", later)], now=later)
    assert (r.status, r.trigger) == ("fired", "hand_raiser")
    lead = await store.lead_hash(keys.lead_id_for_email("ana@ex.test"))
    assert "hr_ts" not in lead and float(lead["score"]) > 0
    # The identify redelivered, and a second identification from another browser: no new crossing.
    [again] = await run_batch(store, cfg, [identify("i1", "v1", "ana@ex.test", later)], now=later)
    assert again.status in ("resume", "duplicate")
    [other] = await run_batch(store, cfg, [identify("i2", "v2", "ana@ex.test", later + 60)], now=later + 60)
    assert other.status == "resume"  # the one crossing, not yet routed here; never a second one
    assert (await store.lead_hash(keys.lead_id_for_email("ana@ex.test")))["crossing"] == "1"


async def test_identified_after_the_window_is_not_a_hand_raiser(redis: Redis) -> None:
    store, cfg = RedisStore(redis), config()
    await run_batch(store, cfg, [demo("d1", "v1", T0)], now=T0)
    late = T0 + 72 * HOUR + 1
    [r] = await run_batch(store, cfg, [identify("i1", "v1", "bo@ex.test", late)], now=late)
    assert r.status == "scored"
    lead = await store.lead_hash(keys.lead_id_for_email("bo@ex.test"))
    assert "hr_ts" not in lead  # the wait is over: a later event cannot revive it
    assert float(lead["score"]) > 50  # the points still count (decayed), only the hand-raise lapsed
    [r2] = await run_batch(store, cfg, [page("p1", "v1", late + 10)], now=late + 10)
    assert r2.status == "scored"


async def test_window_zero_never_counts_an_anonymous_hand(redis: Redis) -> None:
    store, cfg = RedisStore(redis), config("identify_window_hours: 0\n")
    await run_batch(store, cfg, [demo("d1", "v1", T0)], now=T0)
    [r] = await run_batch(store, cfg, [identify("i1", "v1", "cy@ex.test", T0 + 60)], now=T0 + 60)
    assert r.status == "scored"


async def test_same_batch_and_a_named_track_hand_raiser(redis: Redis) -> None:
    """The anonymous track and the identify in one batch; the latest anonymous hand is the one kept."""
    store, cfg = RedisStore(redis), config()
    talk = Event(event_id="t1", type=EventType.TRACK, ts=T0, source="rudderstack", visitor_id="v9",
                 name="Talk To Sales")
    results = await run_batch(store, cfg, [talk, identify("i9", "v9", "di@ex.test", T0 + 5)], now=T0 + 5)
    # The track was merged along with its profile and then applied to the known lead.
    fired = [r for r in results if r.status == "fired"]
    assert len(fired) == 1 and fired[0].trigger == "hand_raiser"
    assert (await store.lead_hash(keys.lead_id_for_email("di@ex.test")))["crossing"] == "1"


async def test_a_known_lead_ready_already_is_not_fired_again(redis: Redis) -> None:
    store, cfg = RedisStore(redis), config()
    first = Event(event_id="f1", type=EventType.FORM_FILL, ts=T0, source="form", email="ed@ex.test",
                  visitor_id="v5", form_id="demo-request")
    [r] = await run_batch(store, cfg, [first], now=T0)
    assert r.status == "fired"
    await run_batch(store, cfg, [demo("d2", "v6", T0 + 10)], now=T0 + 10)  # another browser, anonymous
    [r2] = await run_batch(store, cfg, [identify("i6", "v6", "ed@ex.test", T0 + 20)], now=T0 + 20)
    assert r2.status in ("scored", "resume")
    assert (await store.lead_hash(keys.lead_id_for_email("ed@ex.test")))["crossing"] == "1"
