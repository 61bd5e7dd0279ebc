"""The console's Live page over a real Redis: entries pushed over SSE, role filtering, Last-Event-ID resume,
closed browsers freed, delivery status per channel and dead letters replayed through a real Slack stand-in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from models import Event, EventPlan, EventType
from router.admin.console.pages import LIVE_KEY
from router.admin.console.session import COOKIE
from router.alerts.sender import build_sender
from router.dev.receivers import SlackReceiver
from router.settings import Settings
from router.storage import audit, keys
from router.storage.live import LiveFeed
from router.storage.live_config import LiveFile, load_rules_file, load_scoring_file
from router.storage.pii import Vault
from router.storage.store import RedisStore
from router.worker.pipeline import Pipeline
from router.worker.privacy import forget
from tests.integration.test_admin_api import Api, make_api, two_leads
from tests.integration.test_alert_delivery import make_alert
from tests.integration.test_console import csrf_of, sign_in

pytestmark = pytest.mark.integration


@pytest.fixture
async def slack() -> AsyncIterator[SlackReceiver]:
    async with SlackReceiver() as receiver:
        yield receiver


@pytest.fixture
async def api(redis: Redis, redis_url: str, slack: SlackReceiver) -> AsyncIterator[Api]:
    settings = Settings.of(redis_url=redis_url, slack_webhook_url=slack.webhook_url("sales"), alert_max_attempts=2,
                           alert_backoff_s=0.01, slack_rate_per_s=50.0, admin_console_live_heartbeat_s=0.2)
    a, client = await make_api(redis, settings)
    yield a
    await client.close()


async def cookie_for(api: Api, who: str) -> dict[str, str]:
    """Sign in as ``who``; the Cookie header of that session (the client's jar is left empty)."""
    await sign_in(api, who)
    jar = {c.key: c.value for c in api.client.session.cookie_jar}
    api.client.session.cookie_jar.clear()
    return {"Cookie": f"{COOKIE}={jar[COOKIE]}"}


class Stream:
    """One open SSE stream: its events, parsed as a browser's EventSource would."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        event: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.resp.content.readline()).decode()
                if not line:
                    raise EOFError("the stream ended")
                line = line.rstrip("\n")
                if not line:
                    if "data" in event:
                        return {"id": event.get("id"), "event": event.get("event"), **orjson.loads(event["data"])}
                    event = {}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(": ")
                event[name] = value

    async def nothing(self, within: float = 0.6) -> None:
        with pytest.raises(TimeoutError):
            await self.next(within)


async def open_stream(api: Api, headers: dict[str, str], **extra: str) -> tuple[aiohttp.ClientResponse, Stream]:
    resp = await api.client.get("/console/live/events", headers={**headers, **extra})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    return resp, Stream(resp)


async def test_entries_are_pushed_as_they_happen_and_reps_see_only_their_own(api: Api) -> None:
    lead_a, rep_a, lead_b, rep_b = await two_leads(api)
    ops, rep = await cookie_for(api, "ops"), await cookie_for(api, "rep_a")
    feed = LiveFeed(api.redis)
    ops_resp, ops_stream = await open_stream(api, ops)
    rep_resp, rep_stream = await open_stream(api, rep)
    try:
        await ops_stream.nothing()  # nothing old is replayed to a fresh stream
        # What the worker writes when it routes a crossing (router/worker/pipeline.py).
        await feed.note("crossing", lead=lead_b, rep=rep_b, aid=f"{lead_b}:1", team="central", trigger="hand_raiser",
                        score="75.0")
        await feed.note("crossing", lead=lead_a, rep=rep_a, aid=f"{lead_a}:1", team="central", trigger="hand_raiser",
                        score="75.0")
        first, second = await ops_stream.next(), await ops_stream.next()
        assert (first["lead"], second["lead"]) == (lead_b, lead_a)
        assert first["kind"] == "crossing" and first["name"] == "Jane" and first["rep"] == rep_b
        assert first["event"] == "entry" and first["id"] < second["id"]
        mine = await rep_stream.next()
        assert (mine["lead"], mine["rep"]) == (lead_a, rep_a)
        await rep_stream.nothing()  # rep b's crossing never reached rep a
    finally:
        ops_resp.close()
        rep_resp.close()


async def test_a_reconnect_with_last_event_id_gets_exactly_what_it_missed(api: Api) -> None:
    lead_a, rep_a, _, _ = await two_leads(api)
    ops = await cookie_for(api, "ops")
    feed = LiveFeed(api.redis)
    resp, stream = await open_stream(api, ops)
    await feed.note("crossing", lead=lead_a, rep=rep_a, aid=f"{lead_a}:1")
    seen = await stream.next()
    resp.close()
    missed = [await feed.delivery(aid=f"{lead_a}:1", rep=rep_a, channel=ch, status="sent", attempt=1)
              for ch in ("slack_bot", "email")]
    resp, stream = await open_stream(api, ops, **{"Last-Event-ID": seen["id"]})
    try:
        got = [await stream.next(), await stream.next()]
        assert [e["id"] for e in got] == missed
        assert [(e["kind"], e["channel"], e["status"]) for e in got] == [("delivery", "slack_bot", "sent"),
                                                                          ("delivery", "email", "sent")]
        await stream.nothing()
        # The page's first connect resumes the same way from the entry it rendered last (?after=).
        later = await feed.note("held", lead=lead_a, aid=f"{lead_a}:2", team="central")
        assert (await stream.next())["id"] == later
    finally:
        resp.close()
    resp = await api.client.get(f"/console/live/events?after={missed[0]}", headers=ops)
    try:
        stream = Stream(resp)
        assert [(await stream.next())["id"], (await stream.next())["id"]] == [missed[1], later]
    finally:
        resp.close()


async def test_a_closed_browser_frees_its_stream_and_the_reader_stops(api: Api) -> None:
    lead_a, rep_a, _, _ = await two_leads(api)
    live = api.client.app[LIVE_KEY]
    ops = await cookie_for(api, "ops")
    resp, stream = await open_stream(api, ops)
    await LiveFeed(api.redis).note("crossing", lead=lead_a, rep=rep_a, aid=f"{lead_a}:1")
    await stream.next()
    assert live.streams == 1 and len(live.hub.subscribers) == 1 and live.hub.task is not None
    resp.close()  # the browser goes away without a word
    deadline = time.monotonic() + 10
    while (live.streams or live.hub.subscribers or not live.hub.task.done()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert live.streams == 0 and not live.hub.subscribers, "the closed stream's handler is still running"
    assert live.hub.task.done(), "the reader task still runs with nobody listening"
    # The next browser starts a fresh reader.
    resp, stream = await open_stream(api, ops)
    try:
        await LiveFeed(api.redis).note("crossing", lead=lead_a, rep=rep_a, aid=f"{lead_a}:2")
        assert (await stream.next())["aid"] == f"{lead_a}:2"
    finally:
        resp.close()


async def test_a_session_holds_a_bounded_number_of_streams(api: Api) -> None:
    """Each stream holds a connection and a queue: a fifth tab of one session is refused, others are not."""
    await two_leads(api)
    live = api.client.app[LIVE_KEY]
    assert live.per_session == 4
    ops, rep = await cookie_for(api, "ops"), await cookie_for(api, "rep_a")
    opened = [await open_stream(api, ops) for _ in range(4)]
    try:
        async with api.client.get("/console/live/events", headers=ops) as refused:
            assert refused.status == 429
            assert "LEADROUTER_ADMIN_CONSOLE_LIVE_STREAMS_PER_SESSION" in await refused.text()
        rep_resp, _ = await open_stream(api, rep)  # another session is not held back
        rep_resp.close()
        opened.pop()[0].close()  # a tab closed: its slot is free once its handler has ended
        deadline = time.monotonic() + 10
        while live.streams > 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        opened.append(await open_stream(api, ops))
    finally:
        for resp, _ in opened:
            resp.close()
    deadline = time.monotonic() + 10
    while live.streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert live.streams == 0 and live.by_session == {}, "closed streams still counted"


async def test_the_stream_needs_a_session_and_ends_with_it(api: Api) -> None:
    async with api.client.get("/console/live/events", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/console/sign-in"
    ops = await cookie_for(api, "ops")
    resp, stream = await open_stream(api, ops)
    try:
        await api.redis.delete(*[k async for k in api.redis.scan_iter(match=keys.console_session("*"))])
        with pytest.raises(EOFError):  # the server closes it at the next heartbeat
            await stream.next(timeout=5.0)
    finally:
        resp.close()


async def test_delivery_per_channel_and_dead_letters_replayed_by_ops_only(api: Api, slack: SlackReceiver) -> None:
    lead_a, rep_a, _, _ = await two_leads(api)
    dead: list[tuple[str, bytes]] = []

    async def dead_letter(key: str, value: bytes) -> None:  # the worker's Kafka topic; here, a list
        dead.append((key, value))

    vault = Vault.from_settings(api.redis, api.settings.tokens)
    async with aiohttp.ClientSession() as session:
        sender = build_sender(api.settings.alerts, api.store, session, dead_letter, vault=vault)
        slack.fail_next(2, status=500, retry_after=None)
        alert = make_alert(assignment_id=f"{lead_a}:1", rep_id=rep_a, name="Jane")
        alert = replace(alert, assignment=replace(alert.assignment, lead_id=lead_a))
        outcome = await sender.send_alert(alert, channels={"slack_webhook"}, digest=False)
    assert not outcome.ok and len(dead) == 1
    feed = LiveFeed(api.redis)
    statuses = [(f["kind"], f.get("channel"), f.get("status")) for _, f in await feed.tail(10)]
    assert statuses == [("delivery", "slack_webhook", "retrying"), ("delivery", "slack_webhook", "failed")]
    [(entry_id, letter)] = await feed.dead(10)
    assert (letter["aid"], letter["lead"], letter["rep"], letter["channel"]) == (f"{lead_a}:1", lead_a, rep_a,
                                                                                 "slack_webhook")
    assert "Jane" not in str(letter) and "jane@" not in str(letter)  # sealed: no name, no email
    # The page: the delivery table shows the failure, the dead letter has a Replay button for ops only.
    ops = await cookie_for(api, "ops")
    async with api.client.get("/console/live", headers=ops) as resp:
        html = await resp.text()
        assert resp.status == 200 and "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert f'data-aid="{lead_a}:1"' in html and 'class="st-failed">failed' in html
    assert f'/console/live/dead/{entry_id}/replay"' in html
    for who in ("viewer", "rep_a"):
        headers = await cookie_for(api, who)
        async with api.client.get("/console/live", headers=headers) as resp:
            page = await resp.text()
        assert "/replay" not in page and entry_id in page
        csrf = csrf_of(page)
        async with api.client.post(f"/console/live/dead/{entry_id}/replay", data={"csrf": csrf}, headers=headers,
                                   allow_redirects=False) as resp:
            assert resp.status == 403
    headers = await cookie_for(api, "rep_b")
    async with api.client.get("/console/live", headers=headers) as resp:
        assert entry_id not in await resp.text()  # rep b sees nothing of rep a's
    # Ops replay: CSRF needed, then sent through the Slack stand-in, once.
    async with api.client.post(f"/console/live/dead/{entry_id}/replay", data={"csrf": "stale"}, headers=ops,
                               allow_redirects=False) as resp:
        assert resp.status == 403
    before = len(slack.messages)
    async with api.client.post(f"/console/live/dead/{entry_id}/replay", data={"csrf": csrf_of(html)}, headers=ops,
                               allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/console/live?done=sent"
    assert len(slack.messages) == before + 1
    assert await feed.dead(10) == []
    assert "slack_webhook" in await api.store.sent_channels(f"{lead_a}:1")
    last = (await feed.tail(1))[0][1]
    assert (last["kind"], last["channel"], last["status"], last["who"]) == ("replay", "slack_webhook", "sent", "ops")
    [entry] = await audit.recent(api.redis, 1)
    assert (entry.action, entry.who, entry.via, entry.lead_id, entry.target) == ("alert.replay", "ops", "console",
                                                                                 lead_a, "slack_webhook")


async def test_forgetting_a_lead_removes_its_live_dead_letter_and_audit_entries(api: Api) -> None:
    lead_a, rep_a, lead_b, rep_b = await two_leads(api)
    feed = LiveFeed(api.redis)
    await feed.note("crossing", lead=lead_a, rep=rep_a, aid=f"{lead_a}:1")
    await feed.note("crossing", lead=lead_b, rep=rep_b, aid=f"{lead_b}:1")
    await feed.dead_letter(b"{}", aid=f"{lead_a}:1", rep=rep_a, channel="email", kind="exhausted", error="x",
                           attempts=2)
    await audit.record(api.redis, who="ops", role="ops", action="lead.accept", via="console", lead_id=lead_a)
    await audit.record(api.redis, who="ops", role="ops", action="lead.accept", via="console", lead_id=lead_b)
    report = await forget(api.store, api.config, "jane@acme.com", vault=Vault.from_settings(api.redis,
                                                                                           api.settings.tokens))
    assert report.console_entries_deleted == 3
    assert [f["lead"] for _, f in await feed.tail(10)] == [lead_b]
    assert await feed.dead(10) == []
    assert [e.lead_id for e in await audit.recent(api.redis, 10)] == [lead_b]
    assert not await api.redis.exists(keys.lead_audit(lead_a))


async def test_the_live_page_escapes_what_it_shows(api: Api) -> None:
    lead_a, rep_a, _, _ = await two_leads(api)
    await LiveFeed(api.redis).note("held", lead=lead_a, aid=f"{lead_a}:1", reason="<script>alert(1)</script>")
    await LiveFeed(api.redis).delivery(aid=f"{lead_a}:1", rep=rep_a, channel="email", status="failed",
                                       error='<img src=x onerror="alert(1)">')
    ops = await cookie_for(api, "ops")
    async with api.client.get("/console/live", headers=ops) as resp:
        html = await resp.text()
    assert "<img src=x" not in html and "&lt;img src=x" in html


async def test_the_worker_puts_each_routed_crossing_on_the_feed_once_per_route(redis: Redis) -> None:
    repo = Path(__file__).resolve().parents[2]
    at = datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp()
    store = RedisStore(redis)
    routing = LiveFile.open(repo / "rules" / "routing.yaml", load_rules_file, "routing")
    scoring = LiveFile.open(repo / "scoring" / "scoring.yaml", load_scoring_file, "scoring")

    async def publish(key: str, value: bytes) -> None:
        return None

    pipeline = Pipeline(store, scoring, routing, publish, clock=lambda: at)
    email = "buyer@elbe-mb.de"
    lead_id = keys.lead_id_for_email(email)
    ev = Event(event_id="e1", type=EventType.FORM_FILL, ts=at, source="form", email=email, form_id="demo-request",
               fields={"country": "DE", "company": "Elbe", "first_name": "Berta"})
    plan = EventPlan(event=ev, lead_id=lead_id, reasons=(), points=60.0, hand_raiser=True, fields=dict(ev.fields))
    [result] = await store.apply([plan], threshold=scoring.current.threshold,
                                 half_life_s=scoring.current.half_life_s, now=at)
    assignment = await pipeline.route(plan, result, scoring.current)
    assert assignment is not None
    [(_, entry)] = await LiveFeed(redis).tail(10)
    assert entry == {"kind": "crossing", "ts": repr(at), "lead": lead_id, "rep": assignment.rep.rep_id,
                     "aid": f"{lead_id}:1", "team": "east", "trigger": "hand_raiser", "score": "60.0",
                     "rule": assignment.decision.rule}
    raw = b"".join(v for _, f in await redis.xrange(keys.LIVE) for v in f.values())
    assert b"Berta" not in raw and b"elbe-mb" not in raw  # ids only, never a name or an email


async def test_stopping_the_app_ends_open_streams_at_once(api: Api) -> None:
    live = api.client.app[LIVE_KEY]
    resp, stream = await open_stream(api, await cookie_for(api, "ops"))
    try:
        live.hub.shutdown()  # what the app's on_shutdown does
        with pytest.raises(EOFError):
            await stream.next(timeout=2.0)
    finally:
        resp.close()
