"""Scoring and alert delivery in processes of their own (issue 15: LEADROUTER_WORKER_ROLE).

Broker (Tansu), redis-server, the collector and the workers run as processes of
their own; the Slack-format and SMTP receivers run in the test.  Nothing is
mocked.  One test walks a deployment through the switch, so the group joins are
paid once:

1. One ``all`` worker (today's single process) routes a hand-raiser and
   delivers its alert on every channel; it is stopped and its consumer group's
   offsets on the assignments topic are committed to the end.
2. A ``scoring`` worker alone routes a second hand-raiser: the assignment is
   recorded and its alert published to the assignments topic, and nothing is
   sent (the process has no alert agent; /healthz says its role).
3. An ``alerts`` worker joins (the same consumer group): it delivers the second
   alert once per channel, and, with both running, a third hand-raiser's alert
   once per channel.  It never re-reads the first alert (the group's committed
   offsets carry over the switch): its ``already_sent`` count stays 0 and the
   first alert arrived once.
4. The first alert's record is produced again by hand (a redelivery for sure):
   the alerts worker skips every channel, nothing more arrives.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from router.dev.receivers import SlackReceiver, SmtpReceiver
from router.dev.run import spawn_service
from router.dev.servers import ManagedProcess, free_port, wait_for_port
from router.settings import DEV_PII_KEY, Settings
from router.storage import keys
from router.storage.pii import Vault
from router.storage.store import RedisStore
from tests.e2e.stack import counts, metric, receivers, stack_settings, until
from tests.support import pid

pytestmark = pytest.mark.e2e

CHANNELS = {"slack_webhook", "slack_bot", "email"}
TIMEOUT_S = 60.0
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
           "Origin": "https://www.example-saas.com"}
PEOPLE = (("ines.moreau@rhone-optique.fr", "Ines", "Moreau", "Rhone Optique", "FR"),
          ("tomas.novak@vltava-stroje.cz", "Tomas", "Novak", "Vltava Stroje", "CZ"),
          ("aino.virtanen@saimaa-data.fi", "Aino", "Virtanen", "Saimaa Data", "FI"))


@dataclass
class Stack:
    settings: Settings
    workdir: Path
    collector: ManagedProcess
    slack: SlackReceiver
    smtp: SmtpReceiver
    redis: Redis
    workers: dict[str, ManagedProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest.collector_port}"

    def start_worker(self, role: str) -> ManagedProcess:
        port = free_port()
        settings = self.settings.with_(worker_role=role, worker_web_port=port)
        proc = spawn_service("worker", settings, self.workdir / f"worker-{role}")
        self.workers[role], self.ports[role] = proc, port
        return proc

    def logs(self) -> str:
        tails = [f"--- worker {role}\n{w.log_tail(60)}" for role, w in self.workers.items()]
        return f"--- collector\n{self.collector.log_tail(20)}\n" + "\n".join(tails)


@pytest.fixture
async def stack(servers: tuple[ManagedProcess, ManagedProcess], tmp_path: Path) -> AsyncIterator[Stack]:
    port = free_port()
    async with receivers() as (slack, smtp):
        settings = stack_settings(servers, port, slack=slack, smtp=smtp,
                                  broker_session_timeout_s=6.0)  # shorter group joins on Tansu
        redis = Redis.from_url(settings.redis.url)
        collector = spawn_service("collector", settings, tmp_path, port=port)
        st = Stack(settings, tmp_path, collector, slack, smtp, redis)
        try:
            await asyncio.to_thread(wait_for_port, port, 30.0, collector.proc)
            yield st
        finally:
            collector.stop()
            for w in st.workers.values():
                w.stop()
            await redis.flushdb()
            await redis.aclose()


async def _until(st: Stack, condition: Callable[[], object], what: str, timeout: float = TIMEOUT_S) -> None:
    def alive() -> None:
        for role, w in st.workers.items():
            assert w.alive() or role == "all", st.logs()

    await until(condition, what, timeout=timeout, logs=st.logs, alive=alive)


async def _wait_until_scoring(st: Stack, vid: str) -> None:
    """A pixel hit the (new) scoring side must score: it has joined the group and is consuming."""
    lead_key = keys.lead(keys.lead_id_for_visitor(pid(vid)))
    async with aiohttp.ClientSession() as s, \
            s.get(f"{st.url}/t/p.gif", params={"vid": vid, "url": "https://example.com/"}) as r:
        assert r.status == 200
    await _until(st, lambda: st.redis.exists(lead_key), "the worker did not consume")


async def _hand_raiser(st: Stack, person: tuple[str, str, str, str, str]) -> str:
    """A demo-form fill; the assignment id once the lead is routed."""
    email, first, last, company, country = person
    async with aiohttp.ClientSession(headers=BROWSER) as s, s.post(f"{st.url}/t/form", data={
        "form_id": "demo-request", "email": email, "first_name": first, "last_name": last,
        "company": company, "job_title": "COO", "country": country, "consent": "yes",
    }) as r:
        assert r.status == 202, await r.text()
    lead_id = keys.lead_id_for_email(email)
    store = RedisStore(st.redis)

    async def assigned() -> bool:
        return bool((await store.lead_hash(lead_id)).get("owner_name"))

    await _until(st, assigned, f"{email} was not assigned")
    return f"{lead_id}:{(await store.lead_hash(lead_id))['crossing']}"


async def _get(st: Stack, role: str, path: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{st.ports[role]}{path}") as r:
        return await r.text()


async def _metric(st: Stack, role: str, name: str, **labels: str) -> float:
    return await metric(st.ports[role], name, **labels)


def _parts(settings: Settings) -> list[TopicPartition]:
    return [TopicPartition(settings.kafka.topic_assignments, p) for p in range(settings.kafka.topic_partitions)]


async def _assignment_records(settings: Settings, email: str) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of the person's records on the assignments topic (keyed by their subject)."""
    subject = Vault(Redis(), DEV_PII_KEY).subject(email).encode()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = _parts(settings)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        found: list[tuple[int, bytes, bytes]] = []
        deadline = time.monotonic() + 15

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in parts])

        while time.monotonic() < deadline and await behind():
            batch = await consumer.getmany(timeout_ms=300)
            found += [(m.partition, m.key, m.value) for records in batch.values() for m in records
                      if m.key == subject and m.value is not None]
        return found
    finally:
        await consumer.stop()


async def _group_behind(settings: Settings) -> dict[int, int]:
    """Per assignments partition: end offset minus the worker group's committed offset (0: all committed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.kafka.app_id, partitions=_parts(settings))
        ends = await consumer.end_offsets(_parts(settings))
    finally:
        await consumer.stop()
        await admin.close()
    return {tp.partition: end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
            for tp, end in ends.items()}


async def test_a_split_deployment_sends_each_alert_once_and_nothing_again(stack: Stack) -> None:
    st = stack
    store = RedisStore(st.redis)

    # 1. Today's single process: scores, routes and delivers.
    st.start_worker("all")
    await _wait_until_scoring(st, "warmup0000000001")
    aid1 = await _hand_raiser(st, PEOPLE[0])
    await _until(st, lambda: counts(st.slack, st.smtp, aid1) == (1, 1, 1), "the first alert did not arrive on every channel")

    async def all_marked(aid: str) -> bool:
        return await store.sent_channels(aid) == CHANNELS

    await _until(st, lambda: all_marked(aid1), "the first alert's channels were not marked sent", timeout=10)
    await asyncio.to_thread(st.workers["all"].stop)
    # Stopped cleanly, the group has committed every assignments record it read: a split
    # deployment in the same group starts after them.
    assert set((await _group_behind(st.settings)).values()) == {0}, st.logs()

    # 2. A scoring-only worker routes and publishes, and sends nothing.
    st.start_worker("scoring")
    await _wait_until_scoring(st, "warmup0000000002")
    aid2 = await _hand_raiser(st, PEOPLE[1])

    async def published() -> bool:
        return bool(await _assignment_records(st.settings, PEOPLE[1][0]))

    await _until(st, published, "the second alert was not published to the assignments topic", timeout=20)
    assert json.loads(await _get(st, "scoring", "/healthz"))["role"] == "scoring"
    assert counts(st.slack, st.smtp, aid2) == (0, 0, 0)
    assert await store.sent_channels(aid2) == set()
    assert await _metric(st, "scoring", "leadrouter_alert_sends_total") == 0
    assert max((await _group_behind(st.settings)).values()) >= 1  # nobody in the group reads assignments

    # 3. An alerts-only worker joins: the waiting alert, and a new one with both running, go out once.
    st.start_worker("alerts")
    await _until(st, lambda: counts(st.slack, st.smtp, aid2) == (1, 1, 1), "the alerts worker did not deliver the second alert")
    assert json.loads(await _get(st, "alerts", "/healthz"))["role"] == "alerts"
    aid3 = await _hand_raiser(st, PEOPLE[2])
    await _until(st, lambda: counts(st.slack, st.smtp, aid3) == (1, 1, 1), "the third alert did not arrive on every channel")
    await _until(st, lambda: all_marked(aid3), "the third alert's channels were not marked sent", timeout=10)
    assert await _metric(st, "scoring", "leadrouter_alert_sends_total") == 0
    assert await _metric(st, "alerts", "leadrouter_alert_sends_total", outcome="sent") == 2 * len(CHANNELS)
    assert await _metric(st, "alerts", "leadrouter_alert_sends_total", outcome="already_sent") == 0
    assert await _metric(st, "alerts", "leadrouter_events_total") == 0
    assert counts(st.slack, st.smtp, aid1) == (1, 1, 1)

    # 4. The first alert redelivered to the alerts worker: every channel is skipped.
    records = await _assignment_records(st.settings, PEOPLE[0][0])
    assert records
    producer = AIOKafkaProducer(bootstrap_servers=st.settings.kafka.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for partition, key, value in records:
            await producer.send_and_wait(st.settings.kafka.topic_assignments, value, key=key, partition=partition)
    finally:
        await producer.stop()

    async def skipped() -> bool:
        return await _metric(st, "alerts", "leadrouter_alert_sends_total",
                             outcome="already_sent") >= len(CHANNELS) * len(records)

    await _until(st, skipped, "the redelivered first alert was not skipped", timeout=30)
    assert [counts(st.slack, st.smtp, aid) for aid in (aid1, aid2, aid3)] == [(1, 1, 1)] * 3, st.logs()
    assert await _metric(st, "alerts", "leadrouter_alert_sends_total", outcome="sent") == 2 * len(CHANNELS)
    assert await _metric(st, "alerts", "leadrouter_alert_dead_letters_total") == 0
