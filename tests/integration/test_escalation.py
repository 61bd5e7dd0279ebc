"""Escalation reaches people: the last SLA step sends each manager row a Slack DM and an email, through the
real broker (the assignments topic), the real sender, a local Slack receiver and an aiosmtpd server, with a
driven clock; each channel once, even when the records are delivered again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from models import Event, EventType, Rep
from router import metrics
from router.alerts.sender import AlertSender, build_sender
from router.dev.receivers import SlackReceiver, SmtpReceiver
from router.dev.servers import ManagedProcess
from router.settings import Settings
from router.storage.kafka import ensure_topics
from router.storage.live_config import LiveFile, load_scoring_file
from router.storage.pii import Vault
from router.storage.store import RedisStore
from router.worker.batch import apply_batch
from router.worker.distribution import Pick, assign_rep
from router.worker.pipeline import Pipeline
from router.worker.scheduler import tick
from rules import Manager, RepProfile, RoutingConfig, SlaPolicy, Strategy, Team

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCORING = load_scoring_file(REPO / "scoring" / "scoring.yaml")
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 in New York
CARA = Manager("Cara Losch", "cara.losch@example.com", "UCARA0001", "America/New_York")
ROCCO = Manager("Rocco Neubert", "rocco.neubert@example.com", None)  # email only
NAMELESS = Manager("Old Style")  # a plain name from an older file: no contact


def make_team(sla: SlaPolicy, managers: tuple[Manager, ...] = (CARA, ROCCO, NAMELESS)) -> Team:
    reps = tuple(Rep(rep_id=r, name=f"Rep {r.upper()}", email=f"{r}@example.com", team="t",
                     slack_user_id=f"U0REP{r.upper()}") for r in "ab")
    profiles = tuple(RepProfile(r, tz="America/New_York") for r in "ab")
    return Team(name="t", description="test", manager=", ".join(m.name for m in managers), slack_webhook=None,
                reps=reps, managers=tuple(m.name for m in managers), manager_rows=managers,
                strategy=Strategy.ROUND_ROBIN, profiles=profiles, sla=sla)


def live(value: object, label: str) -> LiveFile:  # type: ignore[type-arg]
    return LiveFile(path=Path(f"/nonexistent/{label}.yaml"), loader=lambda _p: value, label=label, current=value)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


@pytest.fixture
async def slack() -> AsyncIterator[SlackReceiver]:
    receiver = SlackReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
async def settings(broker_server: ManagedProcess, redis_url: str, slack: SlackReceiver,
                   smtp: SmtpReceiver) -> Settings:
    out = Settings.of(
        kafka_url=f"kafka://127.0.0.1:{broker_server.port}", redis_url=redis_url, topic_partitions=1,
        topic_assignments=f"test.assignments.{uuid.uuid4().hex[:10]}",
        topic_dead_letter=f"test.dlq.{uuid.uuid4().hex[:10]}",
        slack_webhook_url=slack.webhook_url("sales"), slack_api_url=slack.api_url, slack_bot_token="xoxb-test",
        smtp_host=smtp.host, smtp_port=smtp.port, smtp_from="leadrouter@example.test", alert_max_attempts=2,
        alert_backoff_s=0.01, slack_rate_per_s=0,
    )
    await ensure_topics(out.kafka)
    return out


class Flow:
    """Alerts as the worker moves them: publish to the assignments topic, read them back, send them."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer, sender: AlertSender) -> None:
        self.settings = settings
        self.producer = producer
        self.sender = sender
        self.offset = 0

    async def publish(self, key: str, value: bytes) -> None:
        await self.producer.send_and_wait(self.settings.kafka.topic_assignments, value, key=key.encode())

    async def records(self, start: int = 0) -> list[bytes]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(self.settings.kafka.topic_assignments, 0)
            consumer.assign([tp])
            consumer.seek(tp, start)
            end = (await consumer.end_offsets([tp]))[tp]
            out: list[bytes] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while start + len(out) < end and loop.time() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                out += [m.value for msgs in batch.values() for m in msgs if m.value is not None]
            return out
        finally:
            await consumer.stop()

    async def deliver_new(self) -> int:
        """Send every record published since the last call (the send_alerts agent's job)."""
        new = await self.records(self.offset)
        self.offset += len(new)
        for raw in new:
            await self.sender.handle(raw)
        return len(new)


@pytest.fixture
async def flow(settings: Settings, redis: Redis) -> AsyncIterator[Flow]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()

    async def no_dlq(key: str, value: bytes) -> None:
        raise AssertionError(f"nothing should be dead-lettered: {value[:300]!r}")

    async with aiohttp.ClientSession() as session:
        sender = build_sender(settings.alerts, RedisStore(redis), session, no_dlq, team_webhooks={},
                              vault=Vault.from_settings(redis, settings.tokens))
        try:
            yield Flow(settings, producer, sender)
        finally:
            await producer.stop()


async def route(store: RedisStore, team: Team, email: str, at: datetime) -> tuple[str, Pick]:
    outcome = await apply_batch(store, SCORING, [Event(event_id=f"f-{email}", type=EventType.FORM_FILL,
                                                       ts=at.timestamp(), source="form", email=email,
                                                       form_id="demo-request")], at.timestamp())
    [res] = outcome.results
    lead_id = outcome.plans[0].lead_id
    aid = f"{lead_id}:{res.crossing}"
    pick = await assign_rep(store, team, aid, lead_id, res.crossing, at)
    assert isinstance(pick, Pick)
    await store.commit_assignment(lead_id, res.crossing, aid, pick.rep.rep_id, pick.rep.name, team.name, "r", "v",
                                  at.timestamp())
    return lead_id, pick


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_escalation_sends_each_manager_a_dm_and_an_email_once(
        redis: Redis, flow: Flow, slack: SlackReceiver, smtp: SmtpReceiver) -> None:
    store = RedisStore(redis)
    team = make_team(SlaPolicy(accept_within_minutes=15, remind_after_minutes=10, escalate_to_manager=True,
                               max_reassignments=0))
    routing = RoutingConfig(version="v", source="test", teams={"t": team}, rules=())
    clock = Clock(T0)
    pipeline = Pipeline(store, live(SCORING, "scoring"), live(routing, "routing"), flow.publish, clock=clock)
    lead_id, pick = await route(store, team, "jo@acme.example", T0)
    assert pick.rep.rep_id == "a"
    escalations = sample("leadrouter_sla_escalations_total", team="t")

    clock.set(T0 + timedelta(minutes=14, seconds=59))
    first = await tick(store, live(SCORING, "scoring"), live(routing, "routing"), pipeline.sla_alert, clock=clock)
    assert [a.kind for a in first.sla] == ["remind"]
    await flow.deliver_new()
    clock.set(T0 + timedelta(minutes=47))  # the tick ran late: the lead has waited 47 minutes
    report = await tick(store, live(SCORING, "scoring"), live(routing, "routing"), pipeline.sla_alert, clock=clock)
    [esc] = report.sla
    assert esc.kind == "escalate" and esc.managers_reached == ("Cara Losch", "Rocco Neubert")
    assert sample("leadrouter_sla_escalations_total", team="t") == escalations + 1
    slack.messages.clear()
    smtp.messages.clear()
    assert await flow.deliver_new() == 3  # the holder's escalate alert, and one per reachable manager

    dms = [m for m in slack.messages if m.endpoint == "chat.postMessage" and m.channel == "UCARA0001"]
    [dm] = dms
    header = dm.blocks[0]["text"]["text"]
    assert header == "Escalation: not accepted in time: jo@acme.example"
    body = str(dm.blocks)
    assert "held by Rep A (a), waiting 47 min" in body and "accept within 15 min" in body
    assert "team t SLA" in body
    assert not [m for m in slack.messages if m.endpoint == "chat.postMessage" and m.channel not in ("UCARA0001", "U0REPA")]
    # The team channel hears of it once (the holder's alert), never the managers' copies.
    hooks = [m for m in slack.messages if m.endpoint == "webhook"]
    assert len(hooks) == 1 and "Escalation" not in (hooks[0].text or "")

    mails = {str(m["To"]): m for m in smtp.messages}
    assert set(mails) == {"cara.losch@example.com", "rocco.neubert@example.com", "a@example.com"}
    subject = str(mails["rocco.neubert@example.com"]["Subject"])
    assert subject.startswith("Escalation: not accepted in time: jo@acme.example — held by Rep A (a), waiting 47 min")
    text = mails["cara.losch@example.com"].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "it has waited 47 min since it became sales-ready" in text
    assert "accept within 15 min, reminder at 10 min, up to 0 reassignment(s)" in text

    # Kafka redelivers everything from the start: each channel of each alert went out once.
    before = (len(slack.messages), len(smtp.messages))
    for raw in await flow.records(0):
        await flow.sender.handle(raw)
    assert (len(slack.messages), len(smtp.messages)) == before
    # A later tick does not escalate again.
    clock.set(T0 + timedelta(hours=5))
    again = await tick(store, live(SCORING, "scoring"), live(routing, "routing"), pipeline.sla_alert, clock=clock)
    assert again.sla == [] and await flow.deliver_new() == 0
    assert (await store.lead_hash(lead_id))["escalated"] == "1"


async def test_a_team_without_reachable_managers_still_escalates_and_says_so(
        redis: Redis, flow: Flow, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore(redis)
    team = make_team(SlaPolicy(15, None, True, 0), managers=(NAMELESS,))
    routing = RoutingConfig(version="v", source="test", teams={"t": team}, rules=())
    sent: list[tuple[str, str]] = []

    async def notify(kind: str, lead_id: str, assignment_id: str, rep: Rep) -> None:
        sent.append((kind, rep.rep_id))

    await route(store, team, "nobody@acme.example", T0)
    later: Callable[[], float] = (T0 + timedelta(minutes=16)).timestamp
    report = await tick(store, SCORING, routing, notify, clock=later)
    assert [a.kind for a in report.sla] == ["escalate"] and report.sla[0].managers_reached == ()
    assert sent == [("escalate", "a")]
    assert "manager Old Style has no email or slack_user_id" in caplog.text


