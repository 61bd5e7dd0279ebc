"""The lead page's score chart over a real Redis: at each event it shows the score the store held right
after it, in between the scorer's exact decay, after a reject the cut score, and it ends on the score
the page shows; reasons the store no longer keeps are carried in, not lost."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from itertools import pairwise

import pytest
from redis.asyncio import Redis

from models import Event, EventPlan, EventType, Reason
from router.admin.auth import Role
from router.admin.console.chart import render, score_curve
from router.admin.http import num
from router.settings import Settings
from router.storage import keys
from router.storage.live_config import load_scoring_file
from router.storage.store import RedisStore
from scoring import score_at
from tests.integration.test_admin_api import NOW, Api, make_api, route_lead
from tests.integration.test_console import get, sign_in

pytestmark = pytest.mark.integration

DAY = 86400.0


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url))
    yield a
    await client.close()


async def score_event(store: RedisStore, lead_id: str, email: str, event_id: str, ts: float,
                      hits: list[tuple[str, float]], half_life_s: float, threshold: float) -> tuple[float, float]:
    """One page view scored with ``hits`` (rule, points), applied as the worker does; the stored (score, asof)."""
    ev = Event(event_id=event_id, type=EventType.PAGE_VIEW, ts=ts, source="web", email=email,
               url="https://example.test/pricing")
    reasons = tuple(Reason(rule=r, points=p, event_id=event_id, event_type="page_view", ts=ts, detail=r)
                    for r, p in hits)
    [res] = await store.apply([EventPlan(event=ev, lead_id=lead_id, reasons=reasons, points=sum(p for _, p in hits),
                                         hand_raiser=False, fields={})],
                              threshold=threshold, half_life_s=half_life_s, now=ts)
    assert res.status in ("scored", "fired")
    data = await store.lead_hash(lead_id)
    return num(data["score"]), num(data["asof"])


async def test_the_chart_equals_the_stored_score_at_each_event_and_decays_exactly_between(api: Api) -> None:
    scoring = load_scoring_file(api.settings.files.scoring_file)
    hl, th = scoring.half_life_s, scoring.threshold
    lead_id, _ = await route_lead(api, "jane@acme.com")  # 75 points at NOW, routed to its rep
    t0 = NOW.timestamp()
    first = await api.store.lead_hash(lead_id)
    after = [(t0, num(first["score"]), num(first["asof"]))]
    # Later events: a visit two days on, a careers-page penalty, a double hit five days on.
    for n, (days, hits) in enumerate([(2.0, [("pricing-page", 15.0)]), (3.5, [("careers-page", -10.0)]),
                                      (5.0, [("pricing-page", 15.0), ("webinar", 20.0)])]):
        ts = t0 + days * DAY
        after.append((ts, *await score_event(api.store, lead_id, "jane@acme.com", f"v{n}", ts, hits, hl, th)))
    # The rep rejects it a day later: the stored score is cut by the policy's factor.
    api.clock.now = t0 + 6 * DAY
    status, body = await api.call("POST", f"/v1/leads/{lead_id}/reject", json={"reason": "not-a-fit"})
    assert status == 200, body
    cut = await api.store.lead_hash(lead_id)
    reject_at = api.clock.now
    now = t0 + 9 * DAY
    api.clock.now = now
    curve = score_curve(await api.store.lead_reasons(lead_id), await api.store.lead_history(lead_id),
                        stored=num(cut["score"]), asof=num(cut["asof"]), now=now, half_life_s=hl, threshold=th)
    assert curve.carried == 0.0  # every reason is kept: nothing carried in
    assert [s.kind for s in curve.steps] == ["event"] * 4 + ["reject"]
    assert [s.points for s in curve.steps[:4]] == [75.0, 15.0, -10.0, 35.0]
    for (ts, stored, asof), step in zip(after, curve.steps, strict=False):
        assert step.ts == ts and asof == ts
        assert step.after == pytest.approx(stored, rel=1e-12), "the chart differs from the stored score"
        assert curve.value_at(ts) == pytest.approx(stored, rel=1e-12)
    for (ts, stored, asof), (nxt, _, _) in pairwise(after):
        for share in (0.25, 0.5, 0.99):
            t = ts + (nxt - ts) * share
            assert curve.value_at(t) == pytest.approx(score_at(stored, asof, t, hl), rel=1e-12)
    reject = curve.steps[-1]
    assert reject.ts == reject_at and reject.factor == pytest.approx(float(cut["score"]) / after[-1][1])
    assert reject.after == pytest.approx(score_at(num(cut["score"]), num(cut["asof"]), reject_at, hl), rel=1e-12)
    assert curve.value_at(reject_at - 1) == pytest.approx(score_at(after[-1][1], after[-1][2], reject_at - 1, hl))
    # It ends on the score the API (and the page) shows now.
    _, state = await api.call("GET", f"/v1/leads/{lead_id}")
    assert curve.now_value == pytest.approx(state["score_now"], rel=1e-12)
    # The page draws it: a marker per step at the stored score, with the event's type and points as its title.
    await sign_in(api, "ops")
    status, html, _ = await get(api, f"/console/leads/{lead_id}")
    assert status == 200 and '<svg id="score-chart"' in html and 'id="chart-threshold"' in html
    marks = re.findall(r'<circle class="score-mark"[^>]*data-ts="([^"]+)" data-score="([^"]+)" '
                       r'data-kind="(\w+)" data-event-type="(\w*)" data-points="([^"]+)"><title>([^<]+)</title>', html)
    assert [(float(m[0]), m[2]) for m in marks] == [(s.ts, s.kind) for s in curve.steps]
    for m, (_, stored, _) in zip(marks, after, strict=False):
        assert float(m[1]) == pytest.approx(stored, rel=1e-12)
    assert "form_fill +75.0 points (demo-request, pricing-page)" in marks[0][5]
    assert "page_view -10.0 points (careers-page)" in marks[2][5]
    assert "rejected" in marks[4][5]
    assert float(re.search(r'data-now-score="([^"]+)"', html)[1]) == pytest.approx(state["score_now"])  # type: ignore[index]


async def test_reasons_no_longer_kept_are_carried_in_so_the_chart_still_ends_on_the_stored_score(api: Api) -> None:
    scoring = load_scoring_file(api.settings.files.scoring_file)
    hl, th = scoring.half_life_s, scoring.threshold
    email = "busy@acme.com"
    lead_id = keys.lead_id_for_email(email)
    t0 = NOW.timestamp() - 30 * DAY
    n = keys.REASONS_KEPT + 20
    for i in range(n):
        last = await score_event(api.store, lead_id, email, f"b{i}", t0 + i * 3600.0, [("blog", 0.5)], hl, th)
    reasons = await api.store.lead_reasons(lead_id)
    assert len(reasons) == keys.REASONS_KEPT
    curve = score_curve(reasons, [], stored=last[0], asof=last[1], now=NOW.timestamp(), half_life_s=hl,
                        threshold=th)
    assert len(curve.steps) == keys.REASONS_KEPT
    # What the first 20 hourly points left when the first kept one came (exactly, up to rounding).
    first_kept = t0 + 20 * 3600.0
    expected = sum(score_at(0.5, t0 + i * 3600.0, first_kept, hl) for i in range(20))
    assert curve.carried == pytest.approx(expected, rel=1e-9)
    assert curve.steps[-1].after == pytest.approx(last[0], rel=1e-12)
    assert "Older events no longer kept" in render(curve)


async def test_a_lead_with_no_scored_events_has_no_chart(api: Api) -> None:
    curve = score_curve([], [], stored=0.0, asof=0.0, now=NOW.timestamp(), half_life_s=DAY, threshold=100.0)
    assert render(curve).startswith('<p class="muted" id="score-chart-empty">')
    assert (NOW + timedelta(days=1)).timestamp() > curve.start


async def test_the_lead_page_shows_fit_identity_account_routing_sla_and_audit(api: Api) -> None:
    lead_a, rep_a = await route_lead(api, "jane@acme.com")
    lead_b, _ = await route_lead(api, "sam@acme.com", event_id="e2")
    await api.store.write_links({("v", "visitor-123"): lead_a})
    # Both work at one account (as the worker's account step records it).
    acct = keys.account_keys("acme.com")
    await api.redis.hset(acct[0], mapping={"name": "Acme Corp", "domain": "acme.com", "intent": "42.5",
                                           "active_people": "2"})
    await api.redis.zadd(acct[3], {lead_a: 80.0, lead_b: 30.0})
    await api.store.set_lead_accounts({lead_a: "acme.com", lead_b: "acme.com"})
    await sign_in(api, "ops")
    status, html, _ = await get(api, f"/console/leads/{lead_a}")
    assert status == 200
    fit = html.split('id="fit"')[1].split("</div>")[0]
    assert 'id="fit-grade"' in fit and "employees" in html.split('id="fit-missing">')[1].split("<")[0]
    identity = html.split('id="identity"')[1].split("</div>")[0]
    assert "visitor-123" in identity and keys.lead_id_for_visitor("visitor-123") in identity
    account = html.split('id="account"')[1].split("</div>")[0]
    assert "Acme Corp" in account and "intent 42.5" in account and f'href="/console/leads/{lead_b}"' in account
    routing = html.split('id="routing"')[1].split("</div>")[0]
    assert "team central" in routing and "rule default" in routing and f"{lead_a}:1" in routing
    assert "SLA: waiting for accept" in routing
    assert 'id="reasons"' in html and 'id="history"' in html and 'id="lead-audit"' in html
    assert all(f'id="{x}"' in html for x in ("accept", "reject", "convert", "won", "lost", "reassign"))
    # The owner accepts: the SLA is met, and the page's audit shows it.
    await api.token("rep_a", Role.REP, rep_a)
    status, _ = await api.call("POST", f"/v1/leads/{lead_a}/accept", who="rep_a", json={})
    assert status == 200
    status, html, _ = await get(api, f"/console/leads/{lead_a}")
    assert f"SLA: accepted by {rep_a}" in html
    assert "lead.accept" in html.split('id="lead-audit"')[1]
