"""Issue 16.7: ``forget`` erases for real.  The forget-then-search probe, against real servers.

A collector runs in-process on a free port with its spool and forwarder (as in production),
real Tansu and redis-server; the worker's pipeline consumes the events topic and publishes
alerts to the assignments topic; the alert sender fails delivery so the alert is
dead-lettered on the DLQ topic; a won outcome writes a training row.  One person fills a
form, opens an email, is identified through the Segment API and browses; a colleague at
the same company is the control.  Every log record of the whole flow is captured.

Then the person is forgotten, and the probe reads back everything: every Redis key and
value, every record (key and value) of the three topics, every spool file and every log
line, and looks for the email, the names, the phone number, the job title and the raw
visitor and user ids.  Nothing may be found.  Before the forget the same probe finds the
person in Redis, so it is able to find them (and finds nothing outside Redis even then:
personal data is sealed from the moment the collector accepts it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from models import Alert, Event, EventType
from router import metrics
from router.alerts.sender import AlertSender
from router.dev.servers import ManagedProcess, free_port
from router.errors import PermanentSendError
from router.ingest.app import CollectorService
from router.settings import Settings
from router.storage import keys
from router.storage.kafka import ensure_topics
from router.storage.live_config import LiveFile, load_rules_file, load_scoring_file
from router.storage.pii import Vault
from router.storage.store import RedisStore
from router.tokens import mint_token
from router.worker.lifecycle import outcome_row
from router.worker.pipeline import Pipeline
from router.worker.privacy import forget

pytestmark = pytest.mark.integration

SECRET = "erasure-token-secret-0123456789"
PII_KEY = "erasure-pii-master-key-0123456789abcdef"
WRITE_KEY = "WK_ERASE"
SEGMENT_AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
BROWSER = {"User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                         "Version/17.5 Safari/605.1.15"}

EMAIL = "Erinhilde.Vandersloot@Globex-Erasure.io"
FIRST, LAST = "Erinhilde", "Vandersloot"
PHONE = "+1 415 555 0199"
TITLE = "Chief Widget Officer"
VID = "vidErasure0000000000001"
USER_ID = "crm-user-erinhilde-77431"
OTHER = "keepme.stays@globex-erasure.io"
NEEDLES = [EMAIL, EMAIL.lower(), FIRST, LAST, PHONE, "4155550199", TITLE, VID, USER_ID]

SCORING = """
threshold: 1000
half_life_days: 30
daily_cap: 500
rules:
  - {name: page, description: any page, event: page_view, points: 1}
  - {name: open, description: an email open, event: email_open, points: 2}
  - {name: demo, description: asked for a demo, event: form_fill, form: demo-request, points: 50, hand_raiser: true}
sales_ready:
  any:
    - {hand_raiser: true}
"""
ROUTING = """
version: "erasure-1"
teams:
  east:
    description: east
    manager: Mia
    reps:
      - {id: rep-a, name: Rep A, email: rep.a@example.com}
      - {id: rep-b, name: Rep B, email: rep.b@example.com}
rules:
  - {name: all, description: everyone, when: always, team: east}
"""


class Refusing:
    """A channel that refuses every alert (permanently), so it is dead-lettered."""

    channel = "slack_channel"

    def __init__(self) -> None:
        self.seen: list[Alert] = []

    async def send(self, alert: Alert) -> None:
        self.seen.append(alert)
        raise PermanentSendError("channel_not_found (test)")


@dataclass
class Flow:
    settings: Settings
    service: CollectorService
    redis: Redis
    store: RedisStore
    vault: Vault
    pipeline: Pipeline
    sender: AlertSender
    notifier: Refusing
    producer: AIOKafkaProducer
    spool_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest.collector_port}"

    @property
    def topics(self) -> list[str]:
        k = self.settings.kafka
        return [k.topic_events, k.topic_assignments, k.topic_dead_letter]


@pytest.fixture
async def flow(broker_server: ManagedProcess, redis_url: str, redis: Redis, tmp_path: Path
               ) -> AsyncIterator[Flow]:
    suffix = uuid.uuid4().hex[:10]
    port = free_port()
    (tmp_path / "scoring.yaml").write_text(SCORING)
    (tmp_path / "routing.yaml").write_text(ROUTING)
    settings = Settings.of(
        kafka_url=f"kafka://127.0.0.1:{broker_server.port}", redis_url=redis_url,
        topic_events=f"erase.events.{suffix}", topic_assignments=f"erase.assign.{suffix}",
        topic_dead_letter=f"erase.dlq.{suffix}", collector_port=port, public_url=f"http://127.0.0.1:{port}",
        token_secret=SECRET, pii_key=PII_KEY, segment_write_keys=WRITE_KEY, spool_dir=tmp_path / "spool",
        trusted_proxies="127.0.0.1", collector_metrics_port=0,  # 9108 may be taken on a shared machine
    )
    scoring = LiveFile.open(tmp_path / "scoring.yaml", load_scoring_file, "scoring")
    routing = LiveFile.open(tmp_path / "routing.yaml", load_rules_file, "routing")
    await ensure_topics(settings.kafka)
    service = CollectorService(settings)
    await service.start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    await producer.start()
    store = RedisStore(redis)
    vault = Vault(redis, PII_KEY)

    async def publish(key: str, value: bytes) -> None:
        await producer.send_and_wait(settings.kafka.topic_assignments, value, key=key.encode())

    async def dead_letter(key: str, value: bytes) -> None:
        await producer.send_and_wait(settings.kafka.topic_dead_letter, value, key=key.encode())

    pipeline = Pipeline(store, scoring, routing, publish, vault=vault)
    notifier = Refusing()
    sender = AlertSender(store, [notifier], dead_letter, max_attempts=1, backoff_s=0.0, vault=vault)
    try:
        await asyncio.wait_for(service.forwarder.connected.wait(), 30.0)
        yield Flow(settings, service, redis, store, vault, pipeline, sender, notifier, producer, tmp_path / "spool")
    finally:
        await producer.stop()
        await service.stop()


# --------------------------------------------------------------------------- reading everything back


async def read_topic(settings: Settings, topic: str, *, at_least: int = 0, timeout: float = 20.0
                     ) -> list[tuple[bytes, bytes]]:
    """Every record (key, value) of ``topic``, up to its end offsets (waiting for ``at_least``)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if parts or time.monotonic() > deadline:
                break
            await consumer.force_metadata_update()
            await asyncio.sleep(0.2)
        if not parts:
            return []
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[tuple[bytes, bytes]] = []
        while time.monotonic() < deadline:
            ends = await consumer.end_offsets(parts)
            positions = [await consumer.position(tp) for tp in parts]
            if len(out) >= at_least and all(pos >= ends[tp] for pos, tp in zip(positions, parts, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend((m.key or b"", m.value or b"") for m in records)
        return out
    finally:
        await consumer.stop()


async def redis_dump(redis: Redis) -> list[tuple[str, bytes]]:
    """Every key with everything it holds, as bytes (strings, hashes, lists, sets, sorted sets, streams)."""
    out: list[tuple[str, bytes]] = []
    async for raw in redis.scan_iter(count=1000):
        key = raw.decode()
        kind = (await redis.type(raw)).decode()
        if kind == "string":
            body = await redis.get(raw) or b""
        elif kind == "hash":
            body = orjson.dumps({k.decode(errors="replace"): v.decode(errors="replace")
                                 for k, v in (await redis.hgetall(raw)).items()})
        elif kind == "list":
            body = b"\n".join(await redis.lrange(raw, 0, -1))
        elif kind == "set":
            body = b"\n".join(await redis.smembers(raw))
        elif kind == "zset":
            body = b"\n".join(m for m, _ in await redis.zrange(raw, 0, -1, withscores=True))
        elif kind == "stream":
            body = b"\n".join(orjson.dumps({k.decode(): v.decode(errors="replace") for k, v in fields.items()})
                              for _, fields in await redis.xrange(raw))
        else:
            body = b""
        out.append((key, key.encode() + b"\x00" + body))
    return out


def spool_files(spool_dir: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for p in sorted(spool_dir.rglob("*")) if p.is_file()]


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for r in caplog.records:
        lines.append(f"{r.levelname} {r.name} {r.getMessage()}")
        if r.exc_info and r.exc_info[1] is not None:
            lines.append(repr(r.exc_info[1]))
    return "\n".join(lines)


def readable(blob: bytes) -> list[str]:
    """The needles found in ``blob``: as they are, lowercased, and base64-encoded at any alignment."""
    low = blob.lower()
    found = [n for n in NEEDLES if n.encode() in blob or n.lower().encode() in low]
    for n in (EMAIL.lower(), VID, USER_ID):
        for shift in range(3):
            enc = base64.b64encode(b"\x00" * shift + n.encode())[4 if shift else 0:-4]
            enc_url = enc.replace(b"+", b"-").replace(b"/", b"_")
            if enc in blob or enc_url in blob:
                found.append(f"base64({n})")
    return found


@dataclass
class Probe:
    redis: list[tuple[str, list[str]]]
    topics: list[tuple[str, list[str]]]
    spool: list[tuple[str, list[str]]]
    logs: list[str]

    @property
    def outside_redis(self) -> list[Any]:
        return [*self.topics, *self.spool, *([("logs", self.logs)] if self.logs else [])]

    @property
    def anything(self) -> list[Any]:
        return [*self.redis, *self.outside_redis]


async def probe(f: Flow, caplog: pytest.LogCaptureFixture) -> Probe:
    """forget-then-search: every Redis key/value, topic record, spool file and log line, searched."""
    in_redis = [(k, hits) for k, body in await redis_dump(f.redis) if (hits := readable(body))]
    in_topics = []
    for topic in f.topics:
        for i, (key, value) in enumerate(await read_topic(f.settings, topic)):
            if hits := readable(key + b"\x00" + value):
                in_topics.append((f"{topic}#{i}", hits))
    in_spool = [(name, hits) for name, body in spool_files(f.spool_dir) if (hits := readable(body))]
    return Probe(in_redis, in_topics, in_spool, readable(log_text(caplog).encode()))


# --------------------------------------------------------------------------- traffic


async def person_traffic(f: Flow, s: aiohttp.ClientSession) -> None:
    cookies = {"lr_vid": VID}
    async with s.get(f"{f.url}/t/p.gif", params={"url": "https://globex-erasure.io/pricing"}, headers=BROWSER,
                     cookies=cookies) as r:
        assert r.status == 200
    form = {"form_id": "demo-request", "email": EMAIL, "first_name": FIRST, "last_name": LAST, "phone": PHONE,
            "job_title": TITLE, "company": "Globex Erasure", "country": "US",
            "url": f"https://globex-erasure.io/demo?email={EMAIL}"}
    async with s.post(f"{f.url}/t/form", data=form, headers={**BROWSER, "X-Forwarded-For": "203.0.113.77"},
                      cookies=cookies) as r:
        assert r.status in (200, 202, 204), await r.text()
    token = mint_token(SECRET, email=EMAIL, campaign="nov", ttl_s=86400, now=time.time() - 3600)
    async with s.get(f"{f.url}/t/o/{token}.gif", headers=BROWSER) as r:
        assert r.status == 200
    identify = {"type": "identify", "userId": USER_ID, "anonymousId": VID, "messageId": uuid.uuid4().hex,
                "traits": {"email": EMAIL, "name": f"{FIRST} {LAST}", "phone": PHONE, "title": TITLE}}
    async with s.post(f"{f.url}/v1/identify", json=identify,
                      headers=SEGMENT_AUTH) as r:
        assert r.status == 200, await r.text()


async def colleague_traffic(f: Flow, s: aiohttp.ClientSession) -> None:
    form = {"form_id": "demo-request", "email": OTHER, "first_name": "Keepme", "last_name": "Stays",
            "job_title": "Buyer", "company": "Globex Erasure", "country": "US"}
    # Posted from the site's page as a browser does (Origin): a real hand-raiser, not held for review.
    async with s.post(f"{f.url}/t/form", data=form, headers={**BROWSER, "Origin": "https://globex-erasure.io"}) as r:
        assert r.status in (200, 202, 204), await r.text()


async def work(f: Flow, *, events_at_least: int) -> None:
    """The worker's part: the events topic through the pipeline, then every alert through the sender."""
    assert await f.service.forwarder.drain(20.0)
    records = await read_topic(f.settings, f.settings.kafka.topic_events, at_least=events_at_least)
    await f.pipeline.process([v for _, v in records])
    for _, value in await read_topic(f.settings, f.settings.kafka.topic_assignments):
        await f.sender.handle(value)


def dropped(where: str) -> float:
    return metrics.REGISTRY.get_sample_value("leadrouter_forgotten_dropped_total", {"where": where}) or 0.0


# --------------------------------------------------------------------------- the probe


async def test_forget_then_search_finds_nothing_readable(flow: Flow, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    f = flow
    async with aiohttp.ClientSession() as s:
        await person_traffic(f, s)
        await colleague_traffic(f, s)
    await work(f, events_at_least=5)
    lead_id = keys.lead_id_for_email(EMAIL)
    other_id = keys.lead_id_for_email(OTHER)
    lead = await f.store.lead_hash(lead_id)
    # The flow really ran: the person is a routed lead with their fields, merged with their browsing.
    assert lead["email"] == EMAIL.lower() and lead["f:first_name"] == FIRST and lead["owner"] in ("rep-a", "rep-b")
    assert lead["f:phone"] == PHONE and lead["f:job_title"] == TITLE
    assert len(f.notifier.seen) == 2  # both alerts were opened by the sender ...
    mine = next(a for a in f.notifier.seen if a.lead.email == EMAIL.lower())
    assert mine.lead.fields["phone"] == PHONE
    theirs = next(a for a in f.notifier.seen if a.lead.email == OTHER)
    assert [m["email"] for m in theirs.account.get("members", [])] == [EMAIL.lower()]
    assert len(await read_topic(f.settings, f.settings.kafka.topic_dead_letter, at_least=2)) == 2  # ... dead-lettered
    await f.store.record_outcome(lead_id, orjson.dumps(outcome_row(lead_id, "won", lead, time.time())))
    assert await f.redis.xlen(keys.IDENTITY_LOG) >= 1

    before = await probe(f, caplog)
    # The probe finds the person where they are in the clear (Redis, by design) ...
    assert any(EMAIL.lower() in hits for _, hits in before.redis)
    assert any(TITLE in hits for key, hits in before.redis if key == keys.OUTCOMES)
    # ... and nowhere else, even before the erasure: sealed from the moment the collector took it.
    assert before.outside_redis == []

    # A scheduled recycle names the lead too (the scheduler's due set): forget removes it.
    await f.redis.zadd(keys.due("recycle", keys.due_shard(lead_id)), {lead_id: time.time() + 3600})
    report = await forget(f.store, f.pipeline.routing.current, EMAIL, vault=f.vault)
    assert lead_id not in await f.store.due_pending("recycle")
    assert report.existed and report.key_shredded and report.outcomes_deleted == 1
    # Its crossing and routing decision were logged (feature vectors for learning): both are gone.
    assert report.decisions_deleted >= 2
    assert not [e for e in await f.redis.xrange(keys.VECTORS) if lead_id in str(e[1])]
    assert report.identity_log_deleted >= 1

    after = await probe(f, caplog)
    assert after.anything == [], after
    # The colleague is untouched, and their queued data still reads.
    assert (await f.store.lead_hash(other_id))["f:first_name"] == "Keepme"

    # What stays in Kafka is unreadable: the events and alerts are still there, but do not open.
    events = await read_topic(f.settings, f.settings.kafka.topic_events)
    sealed = [orjson.loads(v) for _, v in events if orjson.loads(v).get("subject") == f.vault.subject(EMAIL)]
    assert len(sealed) == 3  # the form, the open and the identify
    kept, gone = await f.vault.open([Event.from_dict(e) for e in sealed])
    assert kept == [] and len(gone) == 3
    dlq = [orjson.loads(v) for _, v in await read_topic(f.settings, f.settings.kafka.topic_dead_letter)]
    opened = [await f.vault.open_alert(r["alert_sealed"]) for r in dlq]
    assert [o["lead"]["email"] for o in opened if o is not None] == [OTHER]
    # The colleague's alert named the person as an account member: that part no longer opens either.
    survivor = next(o for o in opened if o is not None)
    assert all(m.get("email") != EMAIL.lower() for m in survivor["account"].get("members", []))
    # Replaying the whole events topic into the worker recreates nothing of the person.
    before_drop = dropped("worker")
    await f.pipeline.process([v for _, v in events])
    assert dropped("worker") - before_drop == 3
    assert await f.store.lead_hash(lead_id) in ({}, {"forgotten": "1"})
    assert (await probe(f, caplog)).anything == []


async def test_a_forgotten_persons_later_hits_are_dropped_at_the_collector(
        flow: Flow, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    f = flow
    async with aiohttp.ClientSession() as s:
        await person_traffic(f, s)
    await work(f, events_at_least=4)
    await forget(f.store, f.pipeline.routing.current, EMAIL, vault=f.vault)
    spooled = f.service.spool.pending + len(await read_topic(f.settings, f.settings.kafka.topic_events))
    form_before, open_before, sdk_before = dropped("form"), dropped("email_open"), dropped("segment")
    async with aiohttp.ClientSession() as s:
        form = {"form_id": "demo-request", "email": EMAIL.upper(), "first_name": FIRST, "phone": PHONE}
        async with s.post(f"{f.url}/t/form", data=form, headers=BROWSER) as r:
            assert r.status in (200, 202, 204)  # the client is not told who is forgotten
        token = mint_token(SECRET, email=EMAIL, campaign="dec", ttl_s=86400)
        async with s.get(f"{f.url}/t/o/{token}.gif", headers=BROWSER) as r:
            assert r.status == 200
        identify = {"type": "identify", "userId": USER_ID, "messageId": uuid.uuid4().hex, "traits": {"email": EMAIL}}
        async with s.post(f"{f.url}/v1/identify", json=identify, headers=SEGMENT_AUTH) as r:
            assert r.status == 200
        # A colleague's hit still goes through.
        await colleague_traffic(f, s)
    assert (dropped("form"), dropped("email_open"), dropped("segment")) == (
        form_before + 1, open_before + 1, sdk_before + 1)
    assert await f.service.forwarder.drain(20.0)
    after = len(await read_topic(f.settings, f.settings.kafka.topic_events, at_least=spooled + 1))
    assert after == spooled + 1  # only the colleague's form
    assert (await probe(f, caplog)).anything == []


async def test_the_tombstone_is_a_keyed_hash_not_a_digest_of_the_email(flow: Flow) -> None:
    f = flow
    async with aiohttp.ClientSession() as s:
        await person_traffic(f, s)
    await work(f, events_at_least=4)
    await forget(f.store, f.pipeline.routing.current, EMAIL, vault=f.vault, now=1_800_000_000.0)
    subject = f.vault.subject(EMAIL)
    assert await f.redis.get(keys.pii_gone(subject)) == b"1800000000.0"
    assert not await f.redis.exists(keys.pii_key(subject))
    normal = EMAIL.strip().lower().encode()
    digests = {hashlib.new(name, normal).hexdigest() for name in ("sha256", "sha1", "md5", "sha512", "blake2b")}
    assert not any(d.startswith(subject[:16]) or subject[:16] in d for d in digests)
    assert Vault(f.redis, "another-pii-master-key-0123456789").subject(EMAIL) != subject
    # What is left keyed by the plain digest (the lead id) is only the short-lived marker that stops a
    # batch already in flight from writing the lead again; it expires.
    plain = keys.lead_id_for_email(EMAIL)
    for key, body in await redis_dump(f.redis):
        if plain.encode() in body:
            assert key == keys.lead(plain), key
            assert 0 < await f.redis.ttl(key) <= keys.FORGET_GRACE_S


async def test_while_redis_is_away_identified_events_are_sealed_in_escrow_and_still_dropped_once_forgotten(
        redis: Redis) -> None:
    vault = Vault(redis, PII_KEY)
    ev = Event(event_id="esc1", type=EventType.FORM_FILL, ts=1_800_000_000.0, source="form", email=EMAIL,
               visitor_id=VID, form_id="demo-request", fields={"first_name": FIRST, "phone": PHONE})
    [escrowed] = vault.protect_in_escrow([ev])  # what the collector does when Redis does not answer
    assert escrowed.sealed and escrowed.sealed.startswith("e1.") and escrowed.email is None
    assert readable(orjson.dumps(escrowed.to_dict())) == []
    kept, gone = await vault.open([escrowed])
    assert gone == [] and kept[0].email == EMAIL and kept[0].fields["phone"] == PHONE
    await vault.shred(vault.subject(EMAIL), 1_800_000_100.0)
    kept, gone = await vault.open([escrowed])
    assert kept == [] and [e.event_id for e in gone] == ["esc1"]
