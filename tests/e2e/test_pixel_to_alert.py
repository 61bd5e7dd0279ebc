"""A pixel hit and a form fill become a Slack and email alert, through real processes.

Broker (Tansu), redis-server, the collector and the worker run as processes of
their own; the Slack-format and SMTP receivers run in the test.  Nothing is
mocked.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from models import Event, EventType
from router.dev.servers import ManagedProcess, free_port
from router.settings import Settings
from router.storage import keys
from router.storage.store import RedisStore
from router.tokens import mint_token
from rules import Strategy, facts_from_lead, load_routing
from rules.availability import plan
from scoring import load_scoring_config, score_event, total_points
from tests.e2e.stack import SECRET, Stack, metric, one_worker_stack
from tests.support import pid

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ALERT_DEADLINE_S = 10.0
# A real browser's user agent: the collector rightly discounts hits from HTTP libraries as likely bots.
BROWSER = {"User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                         "Version/17.5 Safari/605.1.15"}


@pytest.fixture
async def stack(servers: tuple[ManagedProcess, ManagedProcess], tmp_path: Path) -> AsyncIterator[Stack]:
    async with one_worker_stack(servers, tmp_path, _wait_until_consuming, collector_metrics_port=free_port()) as st:
        yield st


async def _wait_until_consuming(st: Stack, timeout: float = 60.0) -> None:
    """Send a warm-up hit until the worker has joined its group and processed it."""
    vid = "warmup0000000001"
    lead_key = keys.lead(keys.lead_id_for_visitor(pid(vid)))
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{st.url}/t/p.gif", params={"vid": vid, "url": "https://example.com/"}) as r:
            assert r.status == 200
        while time.monotonic() < deadline:
            if await st.redis.exists(lead_key):
                return
            assert st.worker.alive(), st.logs()
            await asyncio.sleep(0.2)
    pytest.fail(f"worker did not consume within {timeout}s\n{st.logs()}")


def _expected_rep(email: str, country: str) -> tuple[str, str, str]:
    """(team, rep name, rep email) the shipped rules give a first hand-raiser now (wall clock: after
    hours the team's hand-raiser policy may send it to another team)."""
    from models import LeadView, Stage

    routing = load_routing((REPO / "rules" / "routing.yaml").read_text(), "routing.yaml")
    lead = LeadView(lead_id="x", email=email, score=0, stage=Stage.MQL, fields={"country": country})
    decision = routing.decide(facts_from_lead(lead, {"hand_raiser": True, "form_id": "demo-request",
                                                     "source": "form"}))
    placed = plan(routing.team(decision.team), routing.teams, datetime.now(UTC), hand_raiser=True)
    team = routing.team(placed.team)
    pool = [r for r in team.reps if r.rep_id in placed.reps]
    # The first turn of a fresh rotation: roster order, or the highest weight (first on ties) when weighted.
    rep = max(pool, key=lambda r: team.profile(r.rep_id).weight) if team.strategy is Strategy.WEIGHTED else pool[0]
    return team.name, rep.name, rep.email


async def test_pixel_and_demo_form_alert_the_right_rep_once(stack: Stack) -> None:
    st = stack
    email, country = "greta.lindqvist@elbe-mb.de", "DE"
    team, rep_name, rep_email = _expected_rep(email, country)
    # unsafe=True: aiohttp's jar otherwise keeps no cookies for IP-address hosts.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers=BROWSER) as s:
        # 1. An anonymous visit: the pixel sets the first-party visitor cookie.
        async with s.get(f"{st.url}/t/p.gif", params={"url": "https://www.example-saas.com/pricing",
                                                      "title": "Pricing"}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/gif"
            assert len(await r.read()) == 43
            assert "no-store" in r.headers["Cache-Control"]
            cookie = r.cookies[st.settings.ingest.cookie_name].value
        assert re.fullmatch(r"[0-9a-f]{32}", cookie)
        # 2. The same browser (cookie sent back) fills the demo form: a hand-raiser.
        sent_at = time.monotonic()
        async with s.post(f"{st.url}/t/form", data={
            "form_id": "demo-request", "email": email, "first_name": "Greta", "last_name": "Lindqvist",
            "company": "Elbe Maschinenbau", "job_title": "Head of Procurement", "country": country,
            "consent": "yes"}) as r:
            body = await r.json()
            assert r.status == 202, body
            assert body["visitor_id"] == cookie

    webhook = await st.slack.wait_for(lambda m: m.endpoint == "webhook", timeout=ALERT_DEADLINE_S)
    dm = await st.slack.wait_for(lambda m: m.endpoint == "chat.postMessage", timeout=ALERT_DEADLINE_S)
    mail = await st.smtp.wait_for(timeout=ALERT_DEADLINE_S)
    took = time.monotonic() - sent_at
    assert took < ALERT_DEADLINE_S, st.logs()
    for text in (webhook.text or "", dm.text or ""):
        assert "Greta Lindqvist" in text and "Elbe Maschinenbau" in text
    blocks = str(webhook.blocks)
    assert rep_name in blocks and "demo-request" in blocks and "pricing" in blocks
    routing = load_routing((REPO / "rules" / "routing.yaml").read_text(), "routing.yaml")
    rep = next(r for r in routing.team(team).reps if r.name == rep_name)
    assert dm.channel == rep.slack_user_id
    assert mail["To"] == rep_email
    assert "Greta Lindqvist" in mail["Subject"]
    plain = mail.get_body(("plain",))
    assert plain is not None and "demo-request" in plain.get_content()

    # Redis holds the expected score: the anonymous pricing visit counts toward the lead.
    config = load_scoring_config((REPO / "scoring" / "scoring.yaml").read_text(), "scoring.yaml")
    visit = Event(event_id="x", type=EventType.PAGE_VIEW, ts=1.0, source="pixel",
                  url="https://www.example-saas.com/pricing")
    fill = Event(event_id="y", type=EventType.FORM_FILL, ts=1.0, source="form", form_id="demo-request")
    expected = total_points(score_event(visit, config)) + total_points(score_event(fill, config))
    store = RedisStore(st.redis)
    lead_id = keys.lead_id_for_email(email)
    lead = await store.lead_hash(lead_id)
    assert float(lead["score"]) == pytest.approx(expected, rel=1e-4)
    assert lead["owner_name"] == rep_name and lead["team"] == team and lead["stage"] == "mql"
    assert lead["f:company"] == "Elbe Maschinenbau"

    # 3. An email open with a signed token adds its points; a forged one adds nothing.
    # Minted a minute ago: an open seconds after sending looks like a mail scanner.
    token = mint_token(SECRET, email=email, campaign="nov-webinar", ttl_s=3600, now=time.time() - 60)
    forged = mint_token("another-secret-0123456789", email=email, campaign="nov-webinar", ttl_s=3600,
                        now=time.time() - 60)
    async with aiohttp.ClientSession(headers=BROWSER) as s:
        for t in (token, forged):
            async with s.get(f"{st.url}/t/o/{t}.gif") as r:
                assert r.status == 200 and len(await r.read()) == 43
    opened = Event(event_id="z", type=EventType.EMAIL_OPEN, ts=1.0, source="email", campaign="nov-webinar")
    expected += total_points(score_event(opened, config))
    deadline = time.monotonic() + ALERT_DEADLINE_S
    while time.monotonic() < deadline and int((await store.lead_hash(lead_id)).get("events", 0)) < 3:
        await asyncio.sleep(0.1)
    lead = await store.lead_hash(lead_id)
    assert lead["events"] == "3"
    assert float(lead["score"]) == pytest.approx(expected, rel=1e-4)

    # 4. Kafka redelivers: every event produced so far is sent again.  Scores do
    # not move and nobody is alerted twice.
    dup_before = await metric(st.settings.worker.web_port, "leadrouter_events_total", outcome="duplicate")
    replayed = await _replay_events_topic(st.settings)
    assert replayed >= 4
    deadline = time.monotonic() + ALERT_DEADLINE_S
    while time.monotonic() < deadline:
        if await metric(st.settings.worker.web_port, "leadrouter_events_total", outcome="duplicate") - dup_before >= replayed:
            break
        await asyncio.sleep(0.2)
    assert await metric(st.settings.worker.web_port, "leadrouter_events_total", outcome="duplicate") - dup_before == replayed
    await asyncio.sleep(1.0)  # give a wrongly re-sent alert time to arrive
    assert len([m for m in st.slack.messages if "Greta" in (m.text or "")]) == 2  # one webhook, one DM
    assert len([m for m in st.smtp.messages if m["To"] == rep_email]) == 1
    lead = await store.lead_hash(lead_id)
    assert float(lead["score"]) == pytest.approx(expected, rel=1e-4)
    assert lead["crossing"] == "1"


async def _replay_events_topic(settings: Settings) -> int:
    """Read the events topic from the start and produce every message again."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all",
                                enable_idempotence=False)
    await consumer.start()
    await producer.start()
    try:
        parts = [TopicPartition(settings.kafka.topic_events, p) for p in range(settings.kafka.topic_partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        messages = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 2.0:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                messages.extend(records)
                quiet_since = time.monotonic()
        for m in messages:
            await producer.send_and_wait(settings.kafka.topic_events, m.value, key=m.key, partition=m.partition)
        return len(messages)
    finally:
        await consumer.stop()
        await producer.stop()


async def test_bad_input_is_answered_clearly_and_the_pixel_never_breaks(stack: Stack) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{stack.url}/t/form", data={"email": "not-an-email"}) as r:
            assert r.status == 422
            problems = {p["field"]: p for p in (await r.json())["problems"]}
        assert set(problems) == {"form_id", "email"}
        assert problems["email"]["value"] == "not-an-email" and "jane@acme.com" in problems["email"]["fix"]
        for query in ("url=javascript:alert(1)", "vid=%00%01bad&url=ftp://x", "url=" + "a" * 5000, ""):
            async with s.get(f"{stack.url}/t/p.gif?{query}") as r:
                assert r.status == 200 and len(await r.read()) == 43
        async with s.get(f"{stack.url}/t/o/not-a-token.gif") as r:
            assert r.status == 200 and len(await r.read()) == 43
        async with s.get(f"{stack.url}/metrics") as r:
            assert r.status == 404  # issue 16.8: not on the public port
        async with s.get(f"http://127.0.0.1:{stack.settings.ingest.collector_metrics_port}/metrics") as r:
            text = await r.text()
    assert re.search(r'leadrouter_collector_invalid_total\{endpoint="form",field="email"\} 1\.0', text)
    assert re.search(r'leadrouter_collector_invalid_total\{endpoint="email_open",field="token"\} 1\.0', text)
    assert re.search(r'leadrouter_collector_invalid_total\{endpoint="pixel",field="url"\} [2-9]', text)
