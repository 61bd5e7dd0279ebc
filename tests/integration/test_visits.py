"""Sessions, time on site and first/last touch on the lead (apply_event.lua / merge_absorb.lua), real Redis.

Every time is the event's receive time, driven here: the 30-minute boundary, midnight, a DST
change (Europe/Berlin, 2026-03-29 02:00 -> 03:00), a hostile client pinging fast and forever,
out-of-order hits, and an anonymous visitor's visits merged into the lead they turn out to be.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.storage import keys
from router.storage.store import RedisStore
from scoring import load_scoring_config
from scoring.features import features_from_lead
from scoring.touch import PING_CAP_S, SESSION_GAP_S, SESSION_TIME_CAP_S
from tests.support import run_batch

pytestmark = pytest.mark.integration

CONFIG = load_scoring_config(
    """
threshold: 1000
half_life_days: 30
rules:
  - {name: page, description: any page, event: page_view, points: 1}
  - {name: form, description: any form, event: form_fill, points: 10}
""",
    "test.yaml",
)
BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=BERLIN).timestamp()
VID = "vid-visits-0001"
_n = 0


def _eid() -> str:
    global _n
    _n += 1
    return f"v{_n}"


def pv(ts: float, vid: str = VID, url: str = "https://ex.test/", referrer: str | None = None,
       **utm: str) -> Event:
    return Event(event_id=_eid(), type=EventType.PAGE_VIEW, ts=ts, source="pixel", visitor_id=vid, url=url,
                 referrer=referrer, utm=utm)


def ping(ts: float, vid: str = VID) -> Event:
    return Event(event_id=_eid(), type=EventType.PAGE_PING, ts=ts, source="pixel", visitor_id=vid,
                 url="https://ex.test/")


async def lead(store: RedisStore, vid: str = VID) -> dict[str, str]:
    return await store.lead_hash(keys.lead_id_for_visitor(vid))


async def test_a_session_ends_after_30_minutes_without_a_hit(redis: Redis) -> None:
    store = RedisStore(redis)
    await run_batch(store, CONFIG, [pv(T0), pv(T0 + SESSION_GAP_S)])  # exactly 30 min: the same session
    assert (await lead(store))["w:ss"] == "1"
    await run_batch(store, CONFIG, [pv(T0 + 2 * SESSION_GAP_S + 0.001)])  # 30 min and a moment: a new one
    h = await lead(store)
    assert h["w:ss"] == "2" and h["n:page_view"] == "3"
    f = features_from_lead(h)
    assert (f["sessions"], f["pages_per_session"]) == (2.0, 1.5)
    # 30 s counted for the 30-minute gap inside the first session (one interval's cap), none across sessions
    assert float(h["w:time"]) == PING_CAP_S


async def test_pings_keep_a_session_alive_and_count_time(redis: Redis) -> None:
    store = RedisStore(redis)
    events = [pv(T0)] + [ping(T0 + 15 * i) for i in range(1, 241)]  # an hour of pings every 15 s
    await run_batch(store, CONFIG, events)
    await run_batch(store, CONFIG, [pv(T0 + 3600 + 60)])  # a minute after the last ping: same session
    h = await lead(store)
    assert h["w:ss"] == "1"
    assert float(h["w:time"]) == 3600 + PING_CAP_S
    assert h["n:page_view"] == "2" and "n:page_ping" not in h  # pings are no activity ...
    assert h["events"] == "2" and h["last_type"] == "page_view"  # ... and no event of the timeline
    assert await redis.llen(keys.lead_keys(keys.lead_id_for_visitor(VID))[3]) == 2


async def test_a_ping_never_opens_a_session(redis: Redis) -> None:
    store = RedisStore(redis)
    results = await run_batch(store, CONFIG, [ping(T0), ping(T0 + 10)])
    assert [r.status for r in results] == ["ping", "ping"]
    h = await lead(store)
    assert "w:ss" not in h and "w:time" not in h
    await run_batch(store, CONFIG, [pv(T0 + 100), ping(T0 + 100 + SESSION_GAP_S + 1)])  # a ping too late
    h = await lead(store)
    assert h["w:ss"] == "1" and "w:time" not in h


async def test_a_hostile_client_cannot_inflate_time_on_site(redis: Redis) -> None:
    store = RedisStore(redis)
    # 2000 pings within 10 seconds of receive time: at most the 10 real seconds count.
    await run_batch(store, CONFIG, [pv(T0)] + [ping(T0 + i * 0.005) for i in range(1, 2001)])
    assert float((await lead(store))["w:time"]) == pytest.approx(10.0)
    # Pinging for ten hours without a pause: one session counts at most its cap.
    await run_batch(store, CONFIG, [ping(T0 + 10 + 20 * i) for i in range(1, 1801)])
    h = await lead(store)
    assert h["w:ss"] == "1" and float(h["w:time"]) == SESSION_TIME_CAP_S
    # A redelivered ping (the same event id) counts once.
    again = ping(T0 + 10 + 20 * 1801)
    await run_batch(store, CONFIG, [pv(T0 + 20 * 1900)])  # a new session after the flood
    before = float((await lead(store))["w:time"])
    await run_batch(store, CONFIG, [ping(T0 + 20 * 1900 + 25)])
    dup_results = await run_batch(store, CONFIG, [again, again])
    assert [r.status for r in dup_results][-1] == "duplicate"
    assert float((await lead(store))["w:time"]) == before + 25


async def test_midnight_does_not_split_a_session_and_dst_changes_nothing(redis: Redis) -> None:
    store = RedisStore(redis)
    late = datetime(2026, 3, 28, 23, 50, tzinfo=BERLIN).timestamp()
    await run_batch(store, CONFIG, [pv(late), pv(late + 15 * 60)])  # 23:50 -> 00:05
    assert (await lead(store))["w:ss"] == "1"
    # The night clocks go forward: 01:50 CET and 03:10 CEST are 20 minutes apart, one session.
    before = datetime(2026, 3, 29, 1, 50, tzinfo=BERLIN).timestamp()
    after = datetime(2026, 3, 29, 3, 10, tzinfo=BERLIN).timestamp()
    assert after - before == 20 * 60
    await run_batch(store, CONFIG, [pv(before, vid="vid-dst-00001"), pv(after, vid="vid-dst-00001")])
    assert (await lead(store, "vid-dst-00001"))["w:ss"] == "1"


async def test_a_new_campaign_starts_a_new_session_and_touches_are_kept(redis: Redis) -> None:
    store = RedisStore(redis)
    await run_batch(store, CONFIG, [pv(T0, referrer="https://www.google.com/")])
    await run_batch(store, CONFIG, [pv(T0 + 60, utm_source="news", utm_medium="email", utm_campaign="march")])
    await run_batch(store, CONFIG, [pv(T0 + 120, utm_source="news", utm_medium="email", utm_campaign="march")])
    h = await lead(store)
    assert h["w:ss"] == "2"  # the campaign opened a session; the same campaign again did not
    assert (h["w:ft"], h["w:lt"]) == ("organic_search", "email")
    await run_batch(store, CONFIG, [pv(T0 + DAY)])  # a direct visit the next day: last non-direct stays
    h = await lead(store)
    assert (h["w:ss"], h["w:ft"], h["w:lt"]) == ("3", "organic_search", "email")
    # An older hit arriving late is part of the session in progress and moves nothing back.
    await run_batch(store, CONFIG, [pv(T0 + DAY - 10, referrer="https://t.co/x")])
    h = await lead(store)
    assert h["w:ss"] == "3" and float(h["w:last"]) == T0 + DAY


async def test_anonymous_visits_add_up_when_the_visitor_is_identified(redis: Redis) -> None:
    store = RedisStore(redis)
    # The person: two sessions on the laptop before anyone knew them ...
    await run_batch(store, CONFIG, [pv(T0, referrer="https://www.bing.com/"), ping(T0 + 15), ping(T0 + 30)])
    await run_batch(store, CONFIG, [pv(T0 + 3 * 3600, utm_source="fb", utm_medium="paid_social"),
                                    ping(T0 + 3 * 3600 + 20)])
    # ... and a known lead from an e-mail click on the phone, the day before.
    click = Event(event_id=_eid(), type=EventType.EMAIL_CLICK, ts=T0 - DAY, source="email", email="ana@ex.test",
                  url="https://ex.test/offer")
    await run_batch(store, CONFIG, [click])
    lead_id = keys.lead_id_for_email("ana@ex.test")
    known = await store.lead_hash(lead_id)
    assert (known["w:ft"], known["w:lt"]) == ("email", "email") and "w:ss" not in known
    # The form on the laptop identifies them: the anonymous visits join the lead.
    fill = Event(event_id=_eid(), type=EventType.FORM_FILL, ts=T0 + 3 * 3600 + 60, source="form", visitor_id=VID,
                 email="ana@ex.test", form_id="demo", url="https://ex.test/demo")
    await run_batch(store, CONFIG, [fill])
    h = await store.lead_hash(lead_id)
    assert h["merges"] == "1" and h["w:ss"] == "2"
    assert float(h["w:time"]) == 30 + 20  # the pings; a form fill is a touch, not a hit of the session
    assert h["w:ft"] == "email"  # the earlier touch (the e-mail, a day before) stays first
    assert h["w:lt"] == "paid_social"  # the latest non-direct one
    f = features_from_lead(h, now=T0 + 3 * 3600 + 60)
    assert (f["sessions"], f["time_on_site"], f["page_views"], f["pages_per_session"]) == (2.0, 50.0, 2.0, 1.0)
    assert f["recency_days"] == 0.0 and f["lead_source"] == "email"
    # Merged once: the form redelivered adds nothing.
    await run_batch(store, CONFIG, [fill])
    assert (await store.lead_hash(lead_id))["w:ss"] == "2"


async def test_engagement_and_its_change_over_the_latest_active_day(redis: Redis) -> None:
    store = RedisStore(redis)
    await run_batch(store, CONFIG, [pv(T0), pv(T0 + 60)])
    await run_batch(store, CONFIG, [pv(T0 + DAY), pv(T0 + DAY + 60), pv(T0 + DAY + 120)])
    f = features_from_lead(await lead(store))
    assert f["engagement"] == pytest.approx(2 * 2 ** (-1 / 30) + 3, abs=1e-3)
    assert f["engagement_change"] == pytest.approx(3.0, abs=1e-3)


async def test_forgotten_leads_keep_no_visits(redis: Redis) -> None:
    store = RedisStore(redis)
    lead_id = keys.lead_id_for_visitor(VID)
    await redis.hset(keys.lead_keys(lead_id)[0], mapping={"forgotten": "1"})
    results = await run_batch(store, CONFIG, [pv(T0), ping(T0 + 15)])
    assert [r.status for r in results] == ["forgotten", "forgotten"]
    assert await store.lead_hash(lead_id) == {"forgotten": "1"}


DAY = 86400.0


async def test_identified_in_the_same_batch_or_later_the_visits_are_the_same(redis: Redis) -> None:
    store = RedisStore(redis)

    def stream(vid: str, email: str) -> list[Event]:
        out = [pv(T0, vid=vid, referrer="https://www.google.com/"), ping(T0 + 15, vid), pv(T0 + 20, vid),
               pv(T0 + 3600, vid=vid), ping(T0 + 3610, vid)]
        out.append(Event(event_id=_eid(), type=EventType.FORM_FILL, ts=T0 + 3610, source="form", visitor_id=vid,
                         email=email, form_id="apply", url="https://ex.test/apply"))
        return out

    await run_batch(store, CONFIG, stream("vid-one-batch-1", "one@ex.test"))  # the worker's batch holds it all
    split = stream("vid-two-batch-1", "two@ex.test")
    await run_batch(store, CONFIG, split[:3])
    await run_batch(store, CONFIG, split[3:])
    web = ("w:ss", "w:time", "w:ft", "w:lt", "n:page_view", "last_type", "first_seen")
    one = await store.lead_hash(keys.lead_id_for_email("one@ex.test"))
    two = await store.lead_hash(keys.lead_id_for_email("two@ex.test"))
    assert {k: one.get(k) for k in web} == {k: two.get(k) for k in web}
    assert (one["w:ss"], float(one["w:time"]), one["w:ft"], one["last_type"]) == ("2", 30.0, "organic_search",
                                                                                   "form_fill")


async def test_an_older_event_applied_late_is_not_the_last_activity(redis: Redis) -> None:
    store = RedisStore(redis)
    await run_batch(store, CONFIG, [pv(T0 + 100)])
    late = Event(event_id=_eid(), type=EventType.TRACK, ts=T0, source="segment", visitor_id=VID, name="chat started")
    await run_batch(store, CONFIG, [late])
    h = await lead(store)
    assert h["last_type"] == "page_view" and "last_name" not in h and h["events"] == "2"
    newer = Event(event_id=_eid(), type=EventType.TRACK, ts=T0 + 200, source="segment", visitor_id=VID,
                  name="Olark chat started")
    await run_batch(store, CONFIG, [newer])
    assert features_from_lead(await lead(store))["last_activity"] == "chat"
