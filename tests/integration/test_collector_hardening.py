"""The production collector listener against slow, forged and abusive clients.

A :class:`CollectorService` (spool, forwarder to a real broker, Redis de-duplication, and
the production listener with its request-head deadline) runs in-process on 127.0.0.1;
requests are written on raw sockets.  Timeouts are set short here (1-2 s) so each case
is bounded; every socket is closed by the test within a few seconds whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from router.dev.servers import ManagedProcess, free_port
from router.errors import CollectorError
from router.ingest.app import CollectorService
from router.settings import Settings
from tests.support import open_events

pytestmark = pytest.mark.integration

SECRET = "hardening-secret-0123456789abcdef"
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
SITE = "https://www.acme.io"


@pytest.fixture
async def service(broker_server: ManagedProcess, redis_url: str, redis: Redis,
                  tmp_path: Path) -> AsyncIterator[CollectorService]:
    suffix = uuid.uuid4().hex[:10]
    port = free_port()
    settings = Settings.of(
        kafka_url=f"kafka://127.0.0.1:{broker_server.port}", redis_url=redis_url,
        topic_events=f"hard.events.{suffix}", topic_assignments=f"hard.assign.{suffix}",
        topic_dead_letter=f"hard.dlq.{suffix}", collector_port=port, public_url=f"http://127.0.0.1:{port}",
        token_secret=SECRET, segment_write_keys="WK_HARD", spool_dir=tmp_path / "spool",
        machine_networks="127.0.0.0/8", cors_origins=SITE,
        collector_header_timeout_s=HEADER_TIMEOUT, collector_body_timeout_s=BODY_TIMEOUT,
        collector_idle_timeout_s=IDLE_TIMEOUT, collector_metrics_port=free_port(),
    )
    svc = CollectorService(settings)
    await svc.start()
    try:
        await asyncio.wait_for(svc.forwarder.connected.wait(), 30.0)
        yield svc
    finally:
        await svc.stop()


def port_of(svc: CollectorService) -> int:
    return svc.settings.ingest.collector_port


async def read_until_closed(reader: asyncio.StreamReader, limit_s: float) -> tuple[bytes, float | None]:
    """Everything the server sends, and how long after the call it closed (None: still open at ``limit_s``)."""
    start = time.monotonic()
    data = b""
    try:
        async with asyncio.timeout(limit_s):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        return data, None
    except ConnectionError:
        pass
    return data, time.monotonic() - start


async def slow_head(port: int, delay_s: float, max_s: float) -> float | None:
    """Send a request head one byte every ``delay_s``; seconds until the server closed (None: never, within max_s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /t/p.gif?url=https://acme.io/ HTTP/1.1\r\nHost: collector.test\r\nUser-Agent: slowloris\r\n"
    start = time.monotonic()
    try:
        for byte in head * 10:
            if time.monotonic() - start > max_s:
                return None
            if reader.at_eof():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            try:
                async with asyncio.timeout(delay_s):
                    if not await reader.read(65536):
                        break
            except TimeoutError:
                pass
            except ConnectionError:
                break
        else:
            return None
        return time.monotonic() - start
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def test_slow_request_heads_are_closed(service: CollectorService) -> None:
    """Nine slowloris connections (the finding) are all closed after the header timeout."""
    closed = await asyncio.gather(*(slow_head(port_of(service), 0.1, 8.0) for _ in range(9)))
    assert all(t is not None and HEADER_TIMEOUT * 0.8 <= t <= HEADER_TIMEOUT + 2.0 for t in closed), closed


async def test_a_connection_that_sends_nothing_is_closed(service: CollectorService) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(service))
    try:
        data, after = await read_until_closed(reader, HEADER_TIMEOUT + 3.0)
    finally:
        writer.close()
    assert data == b"" and after is not None and after <= HEADER_TIMEOUT + 2.0, after


async def test_kept_alive_connections_work_then_close_when_idle(service: CollectorService) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(service))
    try:
        for _ in range(3):  # requests sent promptly on one connection are answered, past the header timeout
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: collector.test\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await asyncio.wait_for(reader.readexactly(length), 5.0)
            await asyncio.sleep(HEADER_TIMEOUT * 0.6)
        data, after = await read_until_closed(reader, IDLE_TIMEOUT + 3.0)
    finally:
        writer.close()
    assert data == b"" and after is not None and after <= IDLE_TIMEOUT + 1.5, after


async def test_a_slow_head_after_prompt_requests_on_one_connection_is_closed(service: CollectorService) -> None:
    """The head deadline moves with each request on a kept-alive connection (its timer is reused): prompt
    requests for longer than the timeout are answered, then a slow head is closed within the timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(service))
    try:
        start = time.monotonic()
        while time.monotonic() - start < HEADER_TIMEOUT * 1.5:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: collector.test\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            assert head.startswith(b"HTTP/1.1 200"), head
            await asyncio.wait_for(reader.readuntil(b"}"), 5.0)
            await asyncio.sleep(HEADER_TIMEOUT / 7)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: coll")  # and nothing more
        await writer.drain()
        data, after = await read_until_closed(reader, HEADER_TIMEOUT + 3.0)
    finally:
        writer.close()
    assert data == b"" and after is not None and HEADER_TIMEOUT * 0.8 <= after <= HEADER_TIMEOUT + 1.5, after


async def test_a_slow_body_is_answered_408_and_closed(service: CollectorService) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(service))
    body = orjson.dumps({"form_id": "demo-request", "email": "slow@acme.com", "company": "Slow " * 10})
    writer.write(b"POST /t/form HTTP/1.1\r\nHost: collector.test\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode())
    start = time.monotonic()
    answer = b""
    try:
        for byte in body[:40]:  # at most 40 x 0.1 s
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                async with asyncio.timeout(0.1):
                    answer += await reader.read(65536)
            except TimeoutError:
                continue
            if answer:
                break
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    took = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert BODY_TIMEOUT * 0.8 <= took <= BODY_TIMEOUT + 2.0, took


async def test_a_bomb_to_a_route_without_a_body_costs_no_cpu(service: CollectorService) -> None:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    bomb = b"".join([*(c.compress(block) for _ in range(256)), c.flush()])  # 256 MiB of zeros in ~256 KiB
    start = time.process_time()
    for target in ("/nope", "/v1/batch"):
        raw = (f"POST {target} HTTP/1.1\r\nHost: collector.test\r\nContent-Encoding: gzip\r\n"
               f"Authorization: Basic V1JPTkc6\r\nContent-Length: {len(bomb)}\r\nConnection: close\r\n\r\n").encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(service))
        try:
            writer.write(raw + bomb)
            await writer.drain()
            answer, _ = await read_until_closed(reader, 15.0)
        finally:
            writer.close()
        assert answer.startswith((b"HTTP/1.1 404", b"HTTP/1.1 401")), answer[:100]
    spent = time.process_time() - start
    assert spent < 0.4, f"{spent:.2f} s CPU on two requests whose body nobody reads"


async def test_forged_headers_and_deep_json_end_to_end(service: CollectorService) -> None:
    """No trusted proxy: X-Forwarded-For changes nothing; deep JSON is a 400, not a 500; only a listed
    origin gets credentials.  What lands in the topic carries the peer address and the machine flag."""
    url = f"http://127.0.0.1:{port_of(service)}"
    async with aiohttp.ClientSession() as s:
        for xff in ("<script>alert(1)</script>", "203.0.113.9"):
            async with s.post(f"{url}/t/form", json={"form_id": "demo", "email": f"{uuid.uuid4().hex[:8]}@acme.com"},
                              headers={"X-Forwarded-For": xff, "Origin": "https://evil.example"}) as r:
                assert r.status == 202
                assert r.headers["Access-Control-Allow-Origin"] == "*"
                assert "Access-Control-Allow-Credentials" not in r.headers
        async with s.post(f"{url}/t/form", data=json.dumps({"form_id": "demo", "email": "a@acme.com",
                                                            "company": _nested(500)}),
                          headers={"Content-Type": "application/json", "Origin": SITE}) as r:
            assert r.status == 400, await r.text()
            assert r.headers["Access-Control-Allow-Origin"] == SITE
            assert r.headers["Access-Control-Allow-Credentials"] == "true"
        batch = {"batch": [{"type": "track", "userId": "u1", "event": "Deep", "properties": _nested(300)}]}
        async with s.post(f"{url}/v1/batch", data=json.dumps(batch), headers={"Authorization": "Basic V0tfSEFSRDo="}) as r:
            assert r.status == 400, await r.text()
            assert "properties" in (await r.json())["message"]
    events = await read_topic(service.settings, 2)
    assert [(e["ip"], e["machine"]) for e in events] == [("127.0.0.0", 1.0)] * 2, events  # truncated, /24


def _nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


async def read_topic(settings: Settings, expected: int, timeout: float = 20.0) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        parts = [TopicPartition(settings.kafka.topic_events, p) for p in range(settings.kafka.topic_partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[dict[str, object]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(out) < expected:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(orjson.loads(m.value) for m in records)
        return await open_events(settings.redis.url, out)  # as the worker sees them (issue 16.7)
    finally:
        await consumer.stop()


async def test_metrics_are_only_on_the_private_listener(service: CollectorService) -> None:
    """Issue 16.8: the public port has no /metrics in any spelling; the private listener (loopback) has it."""
    ingest = service.settings.ingest
    assert service.metrics_port == ingest.collector_metrics_port and ingest.collector_metrics_host == "127.0.0.1"
    public = f"http://127.0.0.1:{port_of(service)}"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{public}/t/p.gif", params={"url": "notaurl"}) as r:  # counted in the metrics
            assert r.status == 200
        for path in ("/metrics", "/metrics/", "/METRICS", "/metrics?name[]=x", "//metrics", "/%6detrics",
                     "/./metrics", "/t/../metrics"):
            for method in ("GET", "HEAD", "POST"):
                async with s.request(method, public + path) as r:
                    body = await r.read()
                    assert r.status in (404, 405), (method, path, r.status)
                    assert b"leadrouter_" not in body and b"# HELP" not in body, (method, path)
        async with s.get(f"http://127.0.0.1:{service.metrics_port}/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    assert 'leadrouter_collector_invalid_total{endpoint="pixel",field="url"}' in text
    # The private listener serves nothing else (no collector routes there).
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{service.metrics_port}/t/p.gif") as r:
        assert r.status == 404


async def test_a_taken_metrics_port_fails_the_start_with_the_fix(service: CollectorService, tmp_path: Path) -> None:
    taken = service.settings.with_(collector_port=free_port(), spool_dir=tmp_path / "spool2")
    second = CollectorService(taken)
    with pytest.raises(CollectorError, match=r"cannot serve metrics on 127\.0\.0\.1:\d+ .*_METRICS_PORT"):
        await second.start()
