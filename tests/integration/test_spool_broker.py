"""Nothing accepted is lost while the broker is away: the spool against a real, stopped broker.

A private Tansu broker is frozen with SIGSTOP (its in-memory log survives),
traffic keeps coming, the broker is continued, and every accepted event must
be in the topic exactly once and, per person, in the order it was accepted.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from router import metrics
from router.dev.servers import ManagedProcess, free_port
from router.ingest.app import CollectorService
from router.ingest.request import GIF
from router.settings import Settings
from tests.support import open_events, pid

pytestmark = pytest.mark.integration

SECRET = "spool-secret-0123456789abcdef"


def make_settings(kafka_port: int, redis_url: str, spool_dir: Path, **extra: Any) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    port = free_port()
    values: dict[str, Any] = {
        "kafka_url": f"kafka://127.0.0.1:{kafka_port}", "redis_url": redis_url,
        "topic_events": f"spool.events.{suffix}", "topic_assignments": f"spool.assign.{suffix}",
        "topic_dead_letter": f"spool.dlq.{suffix}", "collector_port": port,
        "public_url": f"http://127.0.0.1:{port}", "token_secret": SECRET, "segment_write_keys": "WK_SPOOL",
        "spool_dir": spool_dir, "spool_send_timeout_s": 2.0, "spool_recheck_delay_s": 0.5,
        # These tests post hundreds of forms from one loopback address: not a flood, a load.
        "rate_limit_form_per_ip": 0, "rate_limit_form_per_visitor": 0, "rate_limit_pixel_per_ip": 0,
        "collector_metrics_port": 0,
    }
    values.update(extra)
    return Settings.of(**values)


async def read_topic(settings: Settings, expected: int, timeout: float = 30.0,
                     settle: float = 1.5) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        parts = [TopicPartition(settings.kafka.topic_events, p) for p in range(settings.kafka.topic_partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        quiet_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for m in records:
                    event = orjson.loads(m.value)
                    event["_partition"], event["_offset"] = tp.partition, m.offset
                    out.append(event)
            if len(out) >= expected:
                quiet_until = quiet_until or time.monotonic() + settle
                if time.monotonic() >= quiet_until:
                    break
        return await open_events(settings.redis.url, out)  # as the worker sees them (issue 16.7)
    finally:
        await consumer.stop()


async def wait_drained(service: CollectorService, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while service.spool.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert service.spool.pending == 0, f"{service.spool.pending} events still spooled"


def assert_exactly_once_in_order(events: list[dict[str, Any]], sent: dict[str, list[str]]) -> None:
    """``sent``: visitor -> the sequence labels in the order they were accepted."""
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "an event landed twice"
    got: dict[str, list[tuple[int, int, str | None]]] = {}
    for e in events:
        label = e.get("title") or (e.get("fields") or {}).get("first_name")
        got.setdefault(e["visitor_id"], []).append((e["_partition"], e["_offset"], label))
    assert set(got) == {pid(v) for v in sent}
    for vid, labels in sent.items():
        rows = sorted(got[pid(vid)])
        assert len({p for p, _, _ in rows}) == 1, f"{vid} spread over partitions"
        assert [label for _, _, label in rows] == labels, f"{vid} out of order or incomplete"


async def send_traffic(session: aiohttp.ClientSession, url: str, visitors: list[str], rounds: int,
                       sent: dict[str, list[str]], tag: str) -> None:
    """Interleaved pixel hits and form posts per visitor; forms must get 202 at once."""
    for r in range(rounds):
        for i, vid in enumerate(visitors):
            label = f"{tag}-{r}"
            if (r + i) % 2:
                async with session.get(f"{url}/t/p.gif", params={"vid": vid, "url": "https://ex.test/p",
                                                                 "title": label}) as resp:
                    assert resp.status == 200 and await resp.read() == GIF
            else:
                started = time.monotonic()
                async with session.post(f"{url}/t/form", json={
                        "form_id": "demo", "email": f"{vid}@ex.test", "vid": vid, "first_name": label}) as resp:
                    body = await resp.json()
                    assert resp.status == 202, body
                assert time.monotonic() - started < 2.0, "a form waited for the broker"
            sent.setdefault(vid, []).append(label)


async def test_a_frozen_broker_loses_nothing_and_duplicates_nothing(
        server_factory: Callable[..., ManagedProcess], redis_url: str, redis: Redis, tmp_path: Path) -> None:
    broker = server_factory("broker")
    settings = make_settings(broker.port, redis_url, tmp_path / "spool")
    service = CollectorService(settings)
    await service.start()
    sent: dict[str, list[str]] = {}
    visitors = [f"visitor{n:04d}xyz" for n in range(8)]
    url = f"http://127.0.0.1:{settings.ingest.collector_port}"
    try:
        await asyncio.wait_for(service.forwarder.connected.wait(), 30.0)
        async with aiohttp.ClientSession() as s:
            await send_traffic(s, url, visitors, 2, sent, "before")
            await wait_drained(service)
            broker.signal(signal.SIGSTOP)
            try:
                await send_traffic(s, url, visitors, 3, sent, "frozen")
                assert service.spool.pending > 0
                assert (metrics.REGISTRY.get_sample_value("leadrouter_spool_pending_events") or 0) > 0
                # Long enough for the forwarder's send to go unanswered and be retried.
                await asyncio.sleep(settings.spool.send_timeout_s * 2)
                await send_traffic(s, url, visitors, 2, sent, "later")
            finally:
                broker.signal(signal.SIGCONT)
            await wait_drained(service)
            await send_traffic(s, url, visitors, 1, sent, "after")
            await wait_drained(service)
        total = sum(len(v) for v in sent.values())
        events = await read_topic(settings, total)
        assert len(events) == total
        assert_exactly_once_in_order(events, sent)
    finally:
        await service.stop()


async def test_a_restarted_collector_replays_its_spool(
        server_factory: Callable[..., ManagedProcess], redis_url: str, redis: Redis, tmp_path: Path) -> None:
    broker = server_factory("broker")
    spool_dir = tmp_path / "spool"
    settings = make_settings(broker.port, redis_url, spool_dir)
    first = CollectorService(settings, drain_timeout_s=0.5)
    await first.start()
    sent: dict[str, list[str]] = {}
    visitors = [f"restart{n:04d}abc" for n in range(5)]
    url = f"http://127.0.0.1:{settings.ingest.collector_port}"
    await asyncio.wait_for(first.forwarder.connected.wait(), 30.0)
    broker.signal(signal.SIGSTOP)
    try:
        async with aiohttp.ClientSession() as s:
            await send_traffic(s, url, visitors, 3, sent, "first")
        await asyncio.sleep(settings.spool.send_timeout_s + 0.5)
        await first.stop()
        assert any(spool_dir.glob("seg-*.jsonl"))
        second = CollectorService(settings)
        await second.start()
        assert second.spool.pending == 15
    finally:
        broker.signal(signal.SIGCONT)
    try:
        await wait_drained(second)
        async with aiohttp.ClientSession() as s:
            await send_traffic(s, url, visitors, 1, sent, "second")
        await wait_drained(second)
        events = await read_topic(settings, 20)
        assert len(events) == 20
        assert_exactly_once_in_order(events, sent)
    finally:
        await second.stop()
    # Everything acknowledged: the first run's segment is deleted, the checkpoint is at the end
    # of the one segment left (the last active one, kept until it grows or the next start).
    [left] = list(spool_dir.glob("seg-*.jsonl"))
    checkpoint = orjson.loads((spool_dir / "checkpoint.json").read_bytes())
    assert left.name == f"seg-{checkpoint['segment']:012d}.jsonl"
    assert checkpoint["offset"] == left.stat().st_size


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_full_spool_refuses_api_clients_but_pixels_still_answer(
        server_factory: Callable[..., ManagedProcess], redis_url: str, redis: Redis, tmp_path: Path) -> None:
    kafka_port = free_port()  # no broker there yet
    settings = make_settings(kafka_port, redis_url, tmp_path / "spool", spool_max_bytes=6000,
                             spool_segment_bytes=2048, spool_retry_after_s=17)
    service = CollectorService(settings)
    await service.start()
    url = f"http://127.0.0.1:{settings.ingest.collector_port}"
    try:
        async with aiohttp.ClientSession() as s:
            # Filled with the smallest events of the kinds refused below (a form's personal fields are
            # sealed, so it is larger than an anonymous track or page view), so none of them fits.
            accepted = 0
            for n in range(300):
                async with s.post(f"{url}/v1/track", json={"userId": "u1", "event": "Fill", "writeKey": "WK_SPOOL",
                                                           "messageId": f"m-fill-{n}"}) as r:
                    if r.status != 200:
                        break
                    accepted += 1
            assert 0 < accepted < 300
            for n in range(300):
                async with s.post(f"{url}/com.snowplowanalytics.snowplow/tp2",
                                  json={"data": [{"e": "pv", "url": "https://ex.test/", "eid": f"f{n}"}]}) as r:
                    if r.status != 200:
                        break
                    accepted += 1
            before = {e: _sample("leadrouter_spool_refused_total", endpoint=e)
                      for e in ("form", "segment", "snowplow_post", "pixel")}
            async with s.post(f"{url}/t/form", json={"form_id": "demo", "email": "late@ex.test"}) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "17"
                assert (await r.json())["error"] == "unavailable"
            async with s.post(f"{url}/v1/track", json={"userId": "u1", "event": "Signed Up", "writeKey": "WK_SPOOL",
                                                       "messageId": "m-full-1"}) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "17"
                assert (await r.json())["success"] is False
            async with s.post(f"{url}/com.snowplowanalytics.snowplow/tp2",
                              json={"data": [{"e": "pv", "url": "https://ex.test/", "eid": "sp-full-1"}]}) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "17"
            async with s.get(f"{url}/t/p.gif", params={"url": "https://ex.test/"}) as r:
                assert r.status == 200 and await r.read() == GIF
            for endpoint in ("form", "segment", "snowplow_post", "pixel"):
                assert _sample("leadrouter_spool_refused_total", endpoint=endpoint) == before[endpoint] + 1
            # The broker comes up: the spool drains and the refused message's retry is accepted
            # (its message id was not burnt by the refusal).
            server_factory("broker", port=kafka_port)
            await wait_drained(service, timeout=60.0)
            async with s.post(f"{url}/v1/track", json={"userId": "u1", "event": "Signed Up", "writeKey": "WK_SPOOL",
                                                       "messageId": "m-full-1"}) as r:
                assert r.status == 200
            await wait_drained(service)
        events = await read_topic(settings, accepted + 1)
        assert len(events) == accepted + 1
        assert [e["name"] for e in events if e["name"] and e["name"] != "Fill"] == ["Signed Up"]  # the API call (a form fill)
    finally:
        await service.stop()
