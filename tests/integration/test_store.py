"""The Lua steps against a real redis-server: dedupe, merge, decay, crossings, turns."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from models import Event, EventPlan, EventType
from router.storage import keys
from router.storage.store import RedisStore
from scoring import add_points, load_scoring_config, score_at
from tests.support import run_batch

pytestmark = pytest.mark.integration

CONFIG = load_scoring_config(
    """
threshold: 100
half_life_days: 30
rules:
  - {name: page, description: any page, event: page_view, points: 1}
  - {name: pricing, description: pricing page, event: page_view, url: /pricing, points: 10}
  - {name: open, description: email open, event: email_open, points: 2}
  - {name: form, description: any form, event: form_fill, points: 10}
  - {name: demo, description: demo form, event: form_fill, form: demo-request, points: 50, hand_raiser: true}
""",
    "test.yaml",
)
T0 = 1_790_000_000.0
DAY = 86400.0


def page(eid: str, vid: str, path: str = "/", ts: float = T0) -> Event:
    return Event(event_id=eid, type=EventType.PAGE_VIEW, ts=ts, source="pixel", visitor_id=vid,
                 url=f"https://example.com{path}")


def form(eid: str, vid: str | None, email: str, form_id: str = "newsletter", ts: float = T0,
         **fields: str) -> Event:
    return Event(event_id=eid, type=EventType.FORM_FILL, ts=ts, source="form", visitor_id=vid, email=email,
                 form_id=form_id, fields=fields)


async def test_anonymous_history_counts_once_toward_the_identified_lead(redis: Redis) -> None:
    store = RedisStore(redis)
    await run_batch(store, CONFIG, [page("e1", "vid-aaaaaaaa", "/pricing"), page("e2", "vid-aaaaaaaa")])
    anon = await store.lead_hash(keys.lead_id_for_visitor("vid-aaaaaaaa"))
    assert float(anon["score"]) == pytest.approx(12.0)
    assert anon["stage"] == "anonymous"

    results = await run_batch(store, CONFIG, [form("e3", "vid-aaaaaaaa", "Jane@Acme.com", company="Acme")])
    lead_id = keys.lead_id_for_email("jane@acme.com")
    lead = await store.lead_hash(lead_id)
    assert float(lead["score"]) == pytest.approx(22.0)  # 11 + 1 (anonymous) + 10 (form)
    assert lead["email"] == "jane@acme.com"
    assert lead["f:company"] == "Acme"
    assert lead["stage"] == "known"
    assert lead["events"] == "3"
    assert lead["merges"] == "1"
    assert results[0].status == "scored"

    # Later anonymous visits of the same browser now go to the lead.
    await run_batch(store, CONFIG, [page("e4", "vid-aaaaaaaa", "/pricing")])
    assert float((await store.lead_hash(lead_id))["score"]) == pytest.approx(33.0)

    # Redelivering everything, old anonymous events included, changes nothing.
    again = await run_batch(store, CONFIG, [page("e1", "vid-aaaaaaaa", "/pricing"), page("e2", "vid-aaaaaaaa"),
                              form("e3", "vid-aaaaaaaa", "jane@acme.com"), page("e4", "vid-aaaaaaaa", "/pricing")])
    assert [r.status for r in again] == ["duplicate"] * 4
    assert float((await store.lead_hash(lead_id))["score"]) == pytest.approx(33.0)
    reasons = await store.lead_reasons(lead_id)
    assert sorted(r.rule for r in reasons) == ["form", "page", "page", "page", "pricing", "pricing"]


async def test_identification_within_one_batch_routes_later_hits_to_the_lead(redis: Redis) -> None:
    store = RedisStore(redis)
    await run_batch(store, CONFIG, [page("a1", "vid-bbbbbbbb"), form("a2", "vid-bbbbbbbb", "bo@corp.io"),
                      page("a3", "vid-bbbbbbbb", "/pricing")])
    lead = await store.lead_hash(keys.lead_id_for_email("bo@corp.io"))
    assert float(lead["score"]) == pytest.approx(1 + 10 + 11)  # page, form, pricing page
    anon = await store.lead_hash(keys.lead_id_for_visitor("vid-bbbbbbbb"))
    assert anon["merged_into"] == keys.lead_id_for_email("bo@corp.io")


async def test_threshold_crossing_fires_exactly_once(redis: Redis) -> None:
    store = RedisStore(redis)
    events = [form("f0", None, "kim@big.co")] + [page(f"p{i}", "vid-cccccccc", "/pricing") for i in range(10)]
    # link the browser first so page views count toward the lead
    await run_batch(store, CONFIG, [form("link", "vid-cccccccc", "kim@big.co")])
    results = await run_batch(store, CONFIG, events)
    statuses = [r.status for r in results]
    assert statuses.count("fired") == 1
    fired = results[statuses.index("fired")]
    assert fired.trigger == "engagement>=100"  # the sales-ready clause that held
    assert fired.before < 100 <= fired.after
    assert fired.crossing == 1
    # Until the crossing is routed (committed), any event of the lead resumes it...
    pending = await run_batch(store, CONFIG, [page("q0", "vid-cccccccc", "/pricing")])
    assert pending[0].status == "resume" and pending[0].crossing == 1
    lead_id = keys.lead_id_for_email("kim@big.co")
    assert await store.commit_assignment(lead_id, 1, f"{lead_id}:1", "rep-1", "Rep One", "east", "r", "v1", T0)
    # ...and once routed, more points while sales-ready fire nothing.
    more = await run_batch(store, CONFIG, [page(f"q{i}", "vid-cccccccc", "/pricing") for i in range(1, 5)])
    assert {r.status for r in more} == {"scored"}


async def test_redelivered_trigger_resumes_until_the_assignment_is_committed(redis: Redis) -> None:
    store = RedisStore(redis)
    first = await run_batch(store, CONFIG, [form("d1", None, "raj@plant.de", form_id="demo-request")])
    assert first[0].status == "fired" and first[0].trigger == "hand_raiser"
    lead_id = keys.lead_id_for_email("raj@plant.de")
    # Crash before routing finished: the redelivered event resumes the same crossing.
    again = await run_batch(store, CONFIG, [form("d1", None, "raj@plant.de", form_id="demo-request")])
    assert again[0].status == "resume" and again[0].crossing == 1
    assert again[0].lead["email"] == "raj@plant.de"
    assert await store.commit_assignment(lead_id, 1, f"{lead_id}:1", "rep-1", "Rep One", "east", "r", "v1", T0)
    assert not await store.commit_assignment(lead_id, 1, f"{lead_id}:1", "rep-1", "Rep One", "east", "r", "v1", T0)
    final = await run_batch(store, CONFIG, [form("d1", None, "raj@plant.de", form_id="demo-request")])
    assert final[0].status == "duplicate"
    lead = await store.lead_hash(lead_id)
    assert lead["owner"] == "rep-1" and lead["stage"] == "mql" and "pending_event" not in lead


async def test_decay_in_lua_matches_the_python_reference_out_of_order(redis: Redis) -> None:
    store = RedisStore(redis)
    h = CONFIG.half_life_s
    arrivals = [(T0 + 40 * DAY, 10.0), (T0, 50.0), (T0 + 5 * DAY, 1.0), (T0 + 90 * DAY, 2.0), (T0 + 1 * DAY, 10.0)]
    plans = [EventPlan(event=page(f"o{i}", "vid-dddddddd", ts=ts), lead_id="Lorder", reasons=(), points=p,
                       hand_raiser=False) for i, (ts, p) in enumerate(arrivals)]
    await store.apply(plans, threshold=1e9, half_life_s=h, now=T0 + 100 * DAY)
    lead = await store.lead_hash("Lorder")
    value, asof = 0.0, 0.0
    for ts, p in arrivals:
        value, asof = add_points(value, asof, p, ts, h)
    t = T0 + 120 * DAY
    expected = sum(p * 2 ** (-(t - ts) / h) for ts, p in arrivals)
    got = score_at(float(lead["score"]), float(lead["asof"]), t, h)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(score_at(value, asof, t, h), rel=1e-12)
