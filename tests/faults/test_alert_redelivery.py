"""A redelivered assignment record alerts the rep once per channel, even when its copies arrive together.

Copies of one assignment record are part of the design: a worker that dies
between publishing an alert and closing the crossing republishes it on
restart (``Pipeline.route``: "the alert sender skips channels it already
delivered on"), a producer without idempotence may write a batch twice, and
``leadrouter alerts replay`` resends.  Here the copies are written straight to
the assignments topic of a running worker, back to back, the way a
redelivery lands them: one fetch, one partition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from router.settings import DEV_PII_KEY
from router.storage.pii import Vault
from tests.faults.harness import BROWSER_UA, Stack, Workload

pytestmark = pytest.mark.e2e

COPIES = 2
ASSIGNMENTS = 3


async def read_topic(st: Stack, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=st.settings.kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(st.settings.kafka.topic_partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[Any] = []
        quiet = time.monotonic()
        while time.monotonic() - quiet < 1.5:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
                quiet = time.monotonic()
        return out
    finally:
        await consumer.stop()


async def test_concurrent_copies_of_an_assignment_alert_once(stack_of: Callable[..., Any]) -> None:
    st: Stack = await stack_of(slack_rate_per_s=1.0)  # the default pacing
    work = Workload(st.url, n_leads=1)
    async with aiohttp.ClientSession(headers={"User-Agent": BROWSER_UA}) as s:
        await work.identify(s)
        await work.stream(s, rounds=1, rate_per_s=50, raise_at={0: 0})
    await work.wait_processed(st, timeout=30, settle_s=0)
    await work.check_alerts(st)  # the real alert: once per channel
    records = await read_topic(st, st.settings.kafka.topic_assignments)
    assert len(records) == 1, records
    original = records[0]

    producer = AIOKafkaProducer(bootstrap_servers=st.settings.kafka.bootstrap, acks="all",
                                enable_idempotence=False)
    await producer.start()
    vault = Vault(st.redis, DEV_PII_KEY)  # the record is sealed under the lead's key (issue 16.7)
    try:
        for i in range(ASSIGNMENTS):
            alert = await vault.open_alert(orjson.loads(original.value))
            assert alert is not None
            alert["assignment"]["assignment_id"] = f"{alert['assignment']['assignment_id']}:redelivery{i}"
            value = orjson.dumps(await vault.seal_alert(alert))
            batch = producer.create_batch()
            for _ in range(COPIES):
                batch.append(key=original.key, value=value, timestamp=None)
            await (await producer.send_batch(batch, st.settings.kafka.topic_assignments, partition=original.partition))
    finally:
        await producer.stop()

    want = 1 + ASSIGNMENTS  # the original and one per new assignment, per channel
    deadline = time.monotonic() + 20
    lead = work.leads[0]
    while time.monotonic() < deadline:
        got = work.deliveries(st)
        if all(len(got.get((lead.email, ch), [])) >= want for ch in ("webhook", "chat.postMessage", "email")):
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(2.5)  # paced (1/s per Slack channel) duplicates have time to arrive
    got = work.deliveries(st)
    counts = {ch: len(got.get((lead.email, ch), [])) for ch in ("webhook", "chat.postMessage", "email")}
    assert counts == dict.fromkeys(counts, want), f"deliveries per channel {counts}, want {want} each"
