"""One alert per assignment, even when the worker dies mid-send and Kafka redelivers.

Broker (Tansu), redis-server, the collector and the worker run as processes of
their own; the Slack-format and SMTP receivers run in the test.  Nothing is
mocked.

1. Slack answers 503 and the mail server 451 (both transient), so the worker
   routes a hand-raiser, records the assignment in Redis, and then keeps
   retrying its alert (many attempts, small capped backoff).
2. The worker is killed with SIGKILL mid-retry: its alert record was never
   acknowledged, so Kafka hands it to the next worker.
3. The failures are cleared and a new worker starts: exactly one team-channel
   webhook message, one DM and one email arrive for that assignment.
4. That worker is killed too once Redis shows every channel delivered, a third
   one starts, and the alert record is even produced again by hand (a
   redelivery for sure): the sender skips every channel, nothing more arrives.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from router.dev.receivers import SlackReceiver, SmtpReceiver
from router.dev.run import spawn_service
from router.dev.servers import ManagedProcess, free_port, wait_for_port
from router.settings import DEV_PII_KEY, Settings
from router.storage import keys
from router.storage.pii import Vault
from router.storage.store import RedisStore
from tests.e2e.stack import counts, delivered, metric, receivers, stack_settings, until
from tests.support import pid

pytestmark = pytest.mark.e2e

EMAIL = "hana.kowalski@vistula-robotics.pl"
NAME = "Hana Kowalski"
CHANNELS = {"slack_webhook", "slack_bot", "email"}
TIMEOUT_S = 60.0
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
           "Origin": "https://www.example-saas.com"}


@dataclass
class Stack:
    settings: Settings
    workdir: Path
    collector: ManagedProcess
    slack: SlackReceiver
    smtp: SmtpReceiver
    redis: Redis
    workers: list[ManagedProcess]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest.collector_port}"

    @property
    def worker(self) -> ManagedProcess:
        return self.workers[-1]

    def start_worker(self) -> ManagedProcess:
        proc = spawn_service("worker", self.settings, self.workdir / f"worker{len(self.workers) + 1}")
        self.workers.append(proc)
        return proc

    def logs(self) -> str:
        tails = [f"--- worker{i + 1}\n{w.log_tail(60)}" for i, w in enumerate(self.workers)]
        return f"--- collector\n{self.collector.log_tail(20)}\n" + "\n".join(tails)


@pytest.fixture
async def stack(servers: tuple[ManagedProcess, ManagedProcess], tmp_path: Path) -> AsyncIterator[Stack]:
    port = free_port()
    async with receivers() as (slack, smtp):
        settings = stack_settings(
            servers, port, slack=slack, smtp=smtp, worker_web_port=free_port(),
            # Keep retrying for as long as the test needs, a fraction of a second apart.
            alert_max_attempts=100_000, alert_backoff_s=0.05, alert_backoff_max_s=0.2,
            broker_session_timeout_s=6.0,  # a killed member leaves the group sooner
        )
        redis = Redis.from_url(settings.redis.url)
        collector = spawn_service("collector", settings, tmp_path, port=port)
        st = Stack(settings, tmp_path, collector, slack, smtp, redis, [])
        try:
            await asyncio.to_thread(wait_for_port, port, 30.0, collector.proc)
            yield st
        finally:
            collector.stop()
            for w in st.workers:
                w.stop()
            await redis.flushdb()
            await redis.aclose()


async def _until(st: Stack, condition: Callable[[], object], what: str, timeout: float = TIMEOUT_S) -> None:
    await until(condition, what, timeout=timeout, logs=st.logs)


async def _wait_until_consuming(st: Stack, vid: str) -> None:
    """A pixel hit the (new) worker must score: it has joined the group and is consuming."""
    lead_key = keys.lead(keys.lead_id_for_visitor(pid(vid)))
    async with aiohttp.ClientSession() as s, \
            s.get(f"{st.url}/t/p.gif", params={"vid": vid, "url": "https://example.com/"}) as r:
        assert r.status == 200

    async def scored() -> bool:
        assert st.worker.alive(), st.logs()
        return bool(await st.redis.exists(lead_key))

    await _until(st, scored, f"worker {len(st.workers)} did not consume")


async def _kill(worker: ManagedProcess) -> None:
    worker.signal(signal.SIGKILL)
    await asyncio.to_thread(worker.proc.wait, 10)
    assert worker.proc.returncode == -signal.SIGKILL


async def _produce_alert_again(settings: Settings, email: str) -> int:
    """Read the lead's alert record(s) off the assignments topic and produce them again.

    Records are keyed by the person's subject (a keyed hash of the email, issue 16.7)."""
    subject = Vault(Redis(), DEV_PII_KEY).subject(email)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all",
                                enable_idempotence=False)
    await consumer.start()
    await producer.start()
    try:
        parts = [TopicPartition(settings.kafka.topic_assignments, p) for p in range(settings.kafka.topic_partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        found = []
        deadline = time.monotonic() + 15

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in parts])

        while time.monotonic() < deadline and await behind():
            batch = await consumer.getmany(timeout_ms=300)
            found += [m for records in batch.values() for m in records if m.key == subject.encode()]
        for m in found:
            await producer.send_and_wait(settings.kafka.topic_assignments, m.value, key=m.key, partition=m.partition)
        return len(found)
    finally:
        await consumer.stop()
        await producer.stop()


async def test_alert_arrives_once_per_channel_when_the_worker_dies_mid_send(stack: Stack) -> None:
    st = stack
    st.slack.fail_always(503, "upstream down")
    st.smtp.fail_always("451 4.3.0 Try again later")
    st.start_worker()
    await _wait_until_consuming(st, "warmup0000000001")

    # 1. A hand-raiser: routed at once; its alert cannot get through.
    # A browser's user agent: a form posted by an HTTP library is held for review, not routed.
    async with aiohttp.ClientSession(headers=BROWSER) as s, s.post(f"{st.url}/t/form", data={
        "form_id": "demo-request", "email": EMAIL, "first_name": "Hana", "last_name": "Kowalski",
        "company": "Vistula Robotics", "job_title": "COO", "country": "PL", "consent": "yes",
    }) as r:
        assert r.status == 202, await r.text()
    lead_id = keys.lead_id_for_email(EMAIL)
    store = RedisStore(st.redis)

    async def assigned() -> bool:
        return bool((await store.lead_hash(lead_id)).get("owner_name"))

    await _until(st, assigned, "the lead was not assigned")
    lead = await store.lead_hash(lead_id)
    aid = f"{lead_id}:{lead['crossing']}"

    def retrying() -> bool:
        failed = {r.endpoint for r in st.slack.requests if r.status == 503}
        return failed == {"webhook", "chat.postMessage"} and len(st.smtp.failed) >= 2

    await _until(st, retrying, "the worker did not try (and fail) every channel")
    assert await store.sent_channels(aid) == set()
    assert counts(st.slack, st.smtp, aid) == (0, 0, 0)

    # 2. Kill -9 between routing and a successful send.
    await _kill(st.worker)
    attempts = len(st.slack.requests) + len(st.smtp.failed)
    await asyncio.sleep(0.3)
    assert len(st.slack.requests) + len(st.smtp.failed) == attempts  # really dead: no more attempts
    st.slack.clear_failures()
    st.smtp.clear_failures()

    # 3. A new worker gets the unacknowledged alert record and delivers it, once per channel.
    st.start_worker()
    await _until(st, lambda: counts(st.slack, st.smtp, aid) == (1, 1, 1), "the alert did not arrive on every channel")

    async def all_marked() -> bool:
        return await store.sent_channels(aid) == CHANNELS

    await _until(st, all_marked, "the channels were not marked sent", timeout=10)
    hooks, dms, mails = delivered(st.slack, st.smtp, aid)
    assert NAME in (hooks[0].text or "") and NAME in (dms[0].text or "")
    assert hooks[0].channel == "sales"  # the default webhook: the shipped teams have none of their own
    assert dms[0].channel and dms[0].channel.startswith("U")
    assert NAME in mails[0]["Subject"]

    # 4. Kill that worker too (its offsets may not be committed yet), start another, and
    #    redeliver the alert by hand as well: every channel is skipped, nothing more arrives.
    await _kill(st.worker)
    st.start_worker()
    await _wait_until_consuming(st, "warmup0000000002")
    assert await _produce_alert_again(st.settings, EMAIL) >= 1

    async def skipped() -> bool:
        return await metric(st.settings.worker.web_port, "leadrouter_alert_sends_total", outcome="already_sent") >= len(CHANNELS)

    await _until(st, skipped, "the redelivered alert was not skipped", timeout=30)
    await asyncio.sleep(1.0)  # give a wrongly re-sent alert time to arrive
    assert counts(st.slack, st.smtp, aid) == (1, 1, 1), st.logs()
    assert await metric(st.settings.worker.web_port, "leadrouter_alert_sends_total", outcome="sent") == 0
    assert await metric(st.settings.worker.web_port, "leadrouter_alert_dead_letters_total") == 0
