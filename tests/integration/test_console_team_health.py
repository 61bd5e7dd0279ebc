"""The console's Team and Health pages over a real Redis: who is available at a frozen clock (night, weekend, DST),
out-of-office edits by ops (who and when recorded), and the fleet's metrics read from real metrics endpoints."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from redis.asyncio import Redis

from router.admin.auth import Role
from router.admin.console.health import Sample, add_metrics, rates
from router.admin.http import as_str
from router.settings import Settings
from router.storage import keys
from tests.integration.test_admin_api import Api, make_api
from tests.integration.test_console import get, post, sign_in

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url))
    await a.token("rep", Role.REP, "anna-snelling")
    yield a
    await client.close()


def rep_state(html: str, rep_id: str) -> str:
    m = re.search(rf'<tr data-rep="{re.escape(rep_id)}" data-available="(yes|no)">(.*?)</tr>', html, re.DOTALL)
    assert m, f"no row for {rep_id}"
    return m.group(1) + " " + re.sub(r"<[^>]+>", " ", m.group(2).split('class="status">')[1])


async def team_at(api: Api, when: datetime) -> str:
    api.clock.now = when.timestamp()
    status, html, _ = await get(api, "/console/team")
    assert status == 200
    return html


async def test_who_is_available_follows_the_clock_nights_weekends_and_dst(api: Api) -> None:
    await sign_in(api, "ops")
    # Tuesday 09:00 in Chicago: central's full-timers work; Moses is out of office only from the 25th.
    html = await team_at(api, datetime(2026, 11, 24, 15, 0, tzinfo=UTC))
    assert rep_state(html, "anna-snelling").startswith("yes")
    assert rep_state(html, "moses-frase").startswith("yes")
    assert "not now: out of office" in rep_state(html, "garret-kinder")  # parental leave in routing.yaml
    assert 'data-team="central" data-outcome="available"' in html
    assert "America/Chicago" in html and "08:00-17:00" in html and "10/day" in html
    # Monday 22:00 in Chicago: nobody in central or east works; leads wait for the next morning.
    html = await team_at(api, datetime(2026, 11, 24, 4, 0, tzinfo=UTC))
    assert "outside working hours" in rep_state(html, "anna-snelling")
    assert "back 2026-11-24T08:00" in rep_state(html, "anna-snelling")
    assert 'data-team="central" data-outcome="next_available"' in html
    # Saturday noon in Chicago: a day off.
    html = await team_at(api, datetime(2026, 11, 28, 18, 0, tzinfo=UTC))
    assert "day off" in rep_state(html, "anna-snelling") and "back 2026-11-30T08:00" in rep_state(html, "anna-snelling")
    # DST: 13:30 UTC is 08:30 in Chicago in October (CDT) but 07:30 after the clocks went back on 1 November.
    html = await team_at(api, datetime(2026, 10, 26, 13, 30, tzinfo=UTC))
    assert rep_state(html, "anna-snelling").startswith("yes")
    html = await team_at(api, datetime(2026, 11, 2, 13, 30, tzinfo=UTC))
    assert "outside working hours" in rep_state(html, "anna-snelling")
    html = await team_at(api, datetime(2026, 11, 2, 14, 0, tzinfo=UTC))
    assert rep_state(html, "anna-snelling").startswith("yes")


async def test_ops_set_and_clear_out_of_office_with_who_and_when(api: Api) -> None:
    api.clock.now = datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp()
    csrf = await sign_in(api, "ops")
    path = "/console/team/anna-snelling/availability"
    status, _, headers = await post(api, path, {"csrf": csrf, "out_of_office": "1", "until": "2026-11-30",
                                                "note": "<i>sick</i>"})
    assert status == 303 and headers["Location"] == "/console/team?done=saved"
    raw = {as_str(k): as_str(v) for k, v in (await api.redis.hgetall(keys.rep_availability("anna-snelling"))).items()}
    assert raw["until"] == "2026-11-30" and raw["set_by"] == "ops" and float(raw["set_at"]) == api.clock()
    status, html, _ = await get(api, "/console/team?done=saved")
    assert "Saved" in html and rep_state(html, "anna-snelling").startswith("no")
    assert "&lt;i&gt;sick&lt;/i&gt;" in html and "<i>sick" not in html and "set until 2026-11-30" in html
    # The API reads the same override.
    status, data = await api.call("GET", "/v1/reps/anna-snelling")
    assert data["override"]["active"] is True and data["override"]["set_by"] == "ops"
    # A date in the past is refused with the API's message; nothing changes.
    status, html, _ = await post(api, path, {"csrf": csrf, "out_of_office": "1", "until": "2026-11-01"})
    assert status == 422 and "before today" in html
    assert (await api.redis.hget(keys.rep_availability("anna-snelling"), "until")) == b"2026-11-30"
    status, html, _ = await post(api, "/console/team/anna-snellin/availability", {"csrf": csrf, "out_of_office": "1"})
    assert status == 404 and "did you mean" in html
    # Unticked: the override is cleared.
    status, _, _ = await post(api, path, {"csrf": csrf, "until": "2026-11-30", "note": "back"})
    assert status == 303 and not await api.redis.exists(keys.rep_availability("anna-snelling"))


async def test_team_edits_need_ops_and_the_sessions_csrf(api: Api) -> None:
    path = "/console/team/anna-snelling/availability"
    csrf = await sign_in(api, "viewer")
    status, html, _ = await get(api, "/console/team")
    assert status == 200 and 'data-rep="anna-snelling"' in html and "/availability" not in html
    status, _, _ = await post(api, path, {"csrf": csrf, "out_of_office": "1"})
    assert status == 403
    csrf = await sign_in(api, "rep")
    status, _, _ = await post(api, path, {"csrf": csrf, "out_of_office": "1"})
    assert status == 403
    await sign_in(api, "ops")
    status, _, _ = await post(api, path, {"csrf": "forged", "out_of_office": "1"})
    assert status == 403
    assert not await api.redis.exists(keys.rep_availability("anna-snelling"))


# --- Health ----------------------------------------------------------------------------------------


def exposition(events: float, lag: float, spool: float, sent: float, failed: float, dead: float) -> bytes:
    """A process's /metrics text with the metrics the Health page sums (names and labels of router/metrics.py)."""
    reg = CollectorRegistry()
    ev = Counter("leadrouter_events_total", "", ["type", "outcome"], registry=reg)
    ev.labels("form_fill", "scored").inc(events * 0.75)
    ev.labels("page_view", "scored").inc(events * 0.25)
    Gauge("leadrouter_consumer_lag_messages", "", ["topic", "partition"], registry=reg).labels("events", "0").set(lag)
    Gauge("leadrouter_spool_pending_events", "", registry=reg).set(spool)
    Gauge("leadrouter_spool_bytes", "", registry=reg).set(spool * 300)
    sends = Counter("leadrouter_alert_sends_total", "", ["channel", "outcome"], registry=reg)
    sends.labels("slack", "sent").inc(sent)
    sends.labels("slack", "failed").inc(failed)
    sends.labels("slack", "skipped").inc(99)
    Counter("leadrouter_alert_dead_letters_total", "", ["channel", "kind"], registry=reg).labels(
        "slack", "exhausted").inc(dead)
    return generate_latest(reg)


@pytest.fixture
async def endpoints() -> AsyncIterator[tuple[list[str], Callable[[int, bytes], None]]]:
    """Two real HTTP metrics endpoints (a collector and a worker) whose text the test sets."""
    bodies = [exposition(0, 0, 0, 0, 0, 0), exposition(0, 0, 0, 0, 0, 0)]
    servers = []
    for i in range(2):
        async def serve(request: web.Request, i: int = i) -> web.Response:
            return web.Response(body=bodies[i], content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", serve)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)

    def set_body(i: int, body: bytes) -> None:
        bodies[i] = body

    yield [str(s.make_url("/metrics")) for s in servers], set_body
    for s in servers:
        await s.close()


async def test_health_sums_every_endpoint_and_keeps_a_history(
        redis: Redis, redis_url: str, endpoints: tuple[list[str], Callable[[int, bytes], None]]) -> None:
    urls, set_body = endpoints
    dead_url = "http://127.0.0.1:9/metrics"  # nothing listens on the discard port
    set_body(0, exposition(100, 0, 7, 0, 0, 0))  # a collector: spooled events
    set_body(1, exposition(1000, 40, 0, 50, 2, 1))  # a worker: lag and alerts
    api, client = await make_api(redis, Settings.of(redis_url=redis_url, admin_metrics_urls=[*urls, dead_url],
                                                    admin_health_sample_s=30))
    try:
        await api.token("rep", Role.REP, "anna-snelling")
        await sign_in(api, "rep")
        status, _, _ = await get(api, "/console/health")
        assert status == 403
        await sign_in(api, "viewer")
        status, html, _ = await get(api, "/console/health")
        assert status == 200
        values = dict(re.findall(r'data-value="(\w+)">([^<]*)<', html))
        assert values == {"throughput": "-", "lag": "40", "spool": "7", "sent": "50", "failed": "2", "dead": "1"}
        assert "2 of 3 metrics endpoints answered" in html and '<tr data-ok="no"><td><code>' + dead_url in html
        assert await redis.llen(keys.health_samples()) == 1
        # A minute later 600 more events were processed: 600 per minute; the lines have two points now.
        api.clock.now += 60
        set_body(1, exposition(1600, 10, 0, 80, 2, 1))
        status, html, _ = await get(api, "/console/health")
        values = dict(re.findall(r'data-value="(\w+)">([^<]*)<', html))
        assert values["throughput"] == "600" and values["lag"] == "10" and values["sent"] == "80"
        assert 'id="spark-lag"' in html and "<polyline" in html
        assert await redis.llen(keys.health_samples()) == 2
        # Within the interval another view (or the background sampler) records nothing: admin processes share one
        # history.
        api.clock.now += 1
        await get(api, "/console/health")
        assert await redis.llen(keys.health_samples()) == 2
    finally:
        await client.close()


async def test_health_without_endpoints_says_what_to_set(api: Api) -> None:
    await sign_in(api, "ops")
    status, html, _ = await get(api, "/console/health")
    assert status == 200 and "LEADROUTER_ADMIN_METRICS_URLS" in html


def test_rates_count_a_restarted_process_from_zero_and_the_sums_skip_other_series() -> None:
    samples = [Sample(ts=0, events=100), Sample(ts=10, events=200), Sample(ts=20, events=30)]
    assert rates(samples, "events") == [10.0, 3.0]
    totals = dict.fromkeys(("events", "lag", "spool_events", "spool_bytes", "sent", "failed", "dead"), 0.0)
    add_metrics(totals, exposition(10, 1, 2, 3, 4, 5).decode())
    add_metrics(totals, exposition(10, 1, 2, 3, 4, 5).decode())
    assert totals == {"events": 20, "lag": 2, "spool_events": 4, "spool_bytes": 1200, "sent": 6, "failed": 8,
                      "dead": 10}
    assert Sample.from_json(b"not json") is None
    restored = Sample.from_json(Sample(ts=5, events=1, lag=2).to_json())
    assert restored is not None and restored.lag == 2
