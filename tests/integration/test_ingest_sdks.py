"""The real analytics SDKs against a running collector, a real broker and a real Redis.

segment-analytics-python (``segment.analytics``), rudder-sdk-python
(``rudderstack.analytics``) and snowplow-tracker send to a collector started
in-process on a free port (spool, forwarder and Redis de-duplication as in
production); the test reads what landed in the Kafka topic with aiokafka.
The SDKs are blocking, so they run in a thread while the event loop serves.
The wire captures in the shared datasets are replayed byte for byte.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from router.dev.servers import ManagedProcess, free_port
from router.ingest.app import CollectorService
from router.ingest.request import GIF
from router.ingest.segment import derive_event_id
from router.settings import Settings
from tests.conftest import datasets_or_skip
from tests.support import open_events, pid

pytestmark = pytest.mark.integration

SECRET = "ingest-secret-0123456789abcdef"
WRITE_KEYS = "WK_TEST,RWK_TEST=rudderstack"


@dataclass
class Running:
    settings: Settings
    service: CollectorService

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest.collector_port}"


def make_settings(broker: ManagedProcess, redis_url: str, spool_dir: Path, **extra: Any) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    port = free_port()
    return Settings.of(
        kafka_url=f"kafka://127.0.0.1:{broker.port}", redis_url=redis_url,
        topic_events=f"test.events.{suffix}", topic_assignments=f"test.assign.{suffix}",
        topic_dead_letter=f"test.dlq.{suffix}", collector_port=port, public_url=f"http://127.0.0.1:{port}",
        token_secret=SECRET, segment_write_keys=WRITE_KEYS, spool_dir=spool_dir, collector_metrics_port=0, **extra,
    )


@pytest.fixture
async def collector(broker_server: ManagedProcess, redis_url: str, redis: Redis,
                    tmp_path: Path) -> AsyncIterator[Running]:
    settings = make_settings(broker_server, redis_url, tmp_path / "spool")
    service = CollectorService(settings)
    await service.start()
    try:
        await asyncio.wait_for(service.forwarder.connected.wait(), 30.0)
        yield Running(settings, service)
    finally:
        await service.stop()


async def read_topic(settings: Settings, expected: int, timeout: float = 20.0,
                     settle: float = 1.0) -> list[dict[str, Any]]:
    """Every event in the topic (waiting for ``expected``, then ``settle`` s more for extras)."""
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
                    event["_partition"], event["_offset"], event["_key"] = tp.partition, m.offset, m.key
                    out.append(event)
            if len(out) >= expected:
                quiet_until = quiet_until or time.monotonic() + settle
                if time.monotonic() >= quiet_until:
                    break
        return await open_events(settings.redis.url, out)  # as the worker sees them (issue 16.7)
    finally:
        await consumer.stop()


def by_type(events: list[dict[str, Any]], etype: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == etype]


class Errors:
    """Collects the SDKs' error callbacks (called from their threads)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, *args: Any) -> None:
        with self.lock:
            self.items.append(args)


# =========================================================================== Segment


def _segment_session(url: str, errors: Errors, *, gzip_on: bool, sync: bool,
                     calls: Callable[[Any], None], write_key: str = "WK_TEST") -> None:
    from segment.analytics.client import Client

    client = Client(write_key=write_key, host=url, gzip=gzip_on, sync_mode=sync, on_error=errors,
                    max_retries=1, upload_interval=0.05)
    try:
        calls(client)
        client.flush()
    except Exception as exc:  # sync mode raises what async mode reports through on_error
        errors(exc)
    finally:
        if not sync:  # the SDK's shutdown() fails in sync mode (no consumer threads to join)
            client.shutdown()


async def test_segment_sdk_every_call_lands_mapped(collector: Running) -> None:
    errors = Errors()

    def calls(c: Any) -> None:
        c.page(anonymous_id="anon-seg-0001", name="Pricing",
               properties={"url": "https://www.example.test/pricing?utm_source=google", "title": "Pricing | Ex",
                           "referrer": "https://www.google.com/"},
               context={"userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0", "ip": "203.0.113.9"})
        c.identify("u-seg-1", {"email": "Jane@Example.test", "company": "Acme", "title": "VP Sales",
                               "firstName": "Jane", "address": {"country": "de", "city": "Hamburg"}},
                   anonymous_id="anon-seg-0001")
        c.track("u-seg-1", "Demo Requested", {"email": "jane@example.test", "form_id": "demo-request",
                                              "plan": "enterprise", "consent": True},
                anonymous_id="anon-seg-0001")
        c.track("u-seg-1", "Trial Started", {"plan": "pro", "seats": 5})
        c.screen(anonymous_id="anon-seg-0001", name="Dashboard")
        c.group("u-seg-1", "acme-inc", {"name": "Acme Inc", "website": "https://acme.example", "industry": "Retail",
                                        "employees": 250})
        c.alias("anon-seg-0001", "u-seg-1")

    await asyncio.to_thread(_segment_session, collector.url, errors, gzip_on=False, sync=False, calls=calls)
    assert errors.items == []
    events = await read_topic(collector.settings, 7)
    assert len(events) == 7, events
    assert {e["source"] for e in events} == {"segment"}

    [page] = [e for e in by_type(events, "page_view") if e["name"] == "Pricing"]
    assert page["visitor_id"] == pid("anon-seg-0001") and page["user_id"] is None
    assert page["url"] == "https://www.example.test/pricing?utm_source=google"
    assert page["title"] == "Pricing | Ex" and page["referrer"] == "https://www.google.com/"
    assert page["utm"] == {"utm_source": "google"}
    assert page["ip"] == "203.0.113.0" and page["user_agent"].startswith("Mozilla/5.0 (X11")
    assert page["machine"] == 0.0
    assert page["traits"]["$library"].startswith("analytics-python/")
    assert page["traits"]["$timestamp"] and page["traits"]["$sent_at"] and float(page["traits"]["$event_ts"]) > 0
    assert page["event_id"] == derive_event_id("segment", "WK_TEST", page["message_id"])
    assert page["_key"] == f"v:{pid('anon-seg-0001')}".encode()

    [ident] = by_type(events, "identify")
    assert (ident["user_id"], ident["visitor_id"], ident["email"]) == (pid("u-seg-1"), pid("anon-seg-0001"), "jane@example.test")
    assert ident["traits"]["company"] == "Acme" and ident["traits"]["title"] == "VP Sales"
    assert ident["traits"]["address.city"] == "Hamburg"
    assert ident["fields"] == {"first_name": "Jane", "company": "Acme", "job_title": "VP Sales", "country": "DE"}

    [form] = by_type(events, "form_fill")
    assert form["name"] == "Demo Requested" and form["form_id"] == "demo-request"
    assert form["email"] == "jane@example.test" and form["fields"]["consent"] == "true"
    assert form["traits"]["plan"] == "enterprise"

    [track] = by_type(events, "track")
    assert track["name"] == "Trial Started" and track["user_id"] == pid("u-seg-1")
    assert track["traits"]["plan"] == "pro" and track["traits"]["seats"] == "5"
    assert track["_key"] == f"u:{pid('u-seg-1')}".encode()

    [group] = by_type(events, "group")
    assert group["group_id"] == "acme-inc" and group["user_id"] == pid("u-seg-1")
    assert group["traits"]["name"] == "Acme Inc" and group["traits"]["employees"] == "250"
    assert group["traits"]["website"] == "https://acme.example" and group["traits"]["industry"] == "Retail"

    [alias] = by_type(events, "alias")
    assert (alias["user_id"], alias["previous_id"]) == (pid("u-seg-1"), pid("anon-seg-0001"))
    [screen] = [e for e in by_type(events, "page_view") if e["name"] == "Dashboard"]
    assert screen["url"] is None and screen["title"] == "Dashboard" and screen["traits"]["$call"] == "screen"


async def test_segment_sdk_gzip_sync_mode_and_retries_count_once(collector: Running) -> None:
    errors = Errors()
    message_id = str(uuid.uuid4())

    def calls(c: Any) -> None:
        for _ in range(3):  # the SDK retrying the same message
            c.track("u-gzip-1", "Signed Up", {"email": "sam@example.test"}, message_id=message_id)

    await asyncio.to_thread(_segment_session, collector.url, errors, gzip_on=True, sync=True, calls=calls)
    assert errors.items == []
    events = await read_topic(collector.settings, 1, settle=1.5)
    assert len(events) == 1
    [e] = events
    assert e["type"] == "form_fill" and e["form_id"] == "signed-up" and e["email"] == "sam@example.test"
    assert e["event_id"] == derive_event_id("segment", "WK_TEST", message_id)


async def test_segment_sdk_with_an_unknown_write_key_gets_401_and_nothing_lands(collector: Running) -> None:
    errors = Errors()
    await asyncio.to_thread(_segment_session, collector.url, errors, gzip_on=False, sync=True,
                            calls=lambda c: c.track("u1", "Signed Up"), write_key="WK_WRONG")
    assert errors.items, "the SDK should report the refusal"
    exc = errors.items[0][0]
    assert getattr(exc, "status", None) == 401 and getattr(exc, "code", None) == "invalid_write_key"
    assert await read_topic(collector.settings, 0, timeout=1.5, settle=0.0) == []


# =========================================================================== RudderStack


async def test_rudderstack_sdk_gzip_basic_auth_lands(collector: Running) -> None:
    errors = Errors()

    def run() -> None:
        from rudderstack.analytics.client import Client

        # The SDK's defaults: gzip on, a background consumer thread batching to /v1/batch.
        client = Client(write_key="RWK_TEST", host=collector.url, on_error=errors, max_retries=1,
                        upload_interval=0.05)
        try:
            client.identify("u-rs-1", {"email": "ravi@example.test", "company": "Initech"})
            client.track("u-rs-1", "Form Submitted", {"form_id": "contact-us", "email": "ravi@example.test"})
            client.page("u-rs-1", name="Docs", properties={"url": "https://www.example.test/docs"})
            client.group("u-rs-1", "initech", {"name": "Initech", "domain": "initech.example"})
            client.alias("anon-rs-0001", "u-rs-1")
            client.flush()
        finally:
            client.shutdown()

    await asyncio.to_thread(run)
    assert errors.items == []
    events = await read_topic(collector.settings, 5)
    assert len(events) == 5
    assert {e["source"] for e in events} == {"rudderstack"}
    assert {e["type"] for e in events} == {"identify", "form_fill", "page_view", "group", "alias"}
    [form] = by_type(events, "form_fill")
    assert form["form_id"] == "contact-us" and form["email"] == "ravi@example.test"
    [ident] = by_type(events, "identify")
    assert ident["email"] == "ravi@example.test" and ident["traits"]["company"] == "Initech"
    for e in events:
        assert e["event_id"] == derive_event_id("segment", "RWK_TEST", e["message_id"])


# =========================================================================== Snowplow


async def test_snowplow_tracker_post_and_get_land_mapped(collector: Running) -> None:
    failures = Errors()

    def run() -> None:
        from snowplow_tracker.emitters import Emitter
        from snowplow_tracker.events.page_view import PageView
        from snowplow_tracker.events.self_describing import SelfDescribing
        from snowplow_tracker.events.structured_event import StructuredEvent
        from snowplow_tracker.self_describing_json import SelfDescribingJson
        from snowplow_tracker.subject import Subject
        from snowplow_tracker.tracker import Tracker

        port = collector.settings.ingest.collector_port
        subject = Subject().set_user_id("u-sp-1").set_domain_user_id("duid-sp-0001").set_domain_session_id("sess-1")
        post = Emitter("127.0.0.1", protocol="http", port=port, method="post", batch_size=10, on_failure=failures)
        tracker = Tracker("ns-post", post, subject=subject, app_id="site")
        tracker.track(PageView(page_url="https://www.example.test/pricing", page_title="Pricing",
                               referrer="https://www.google.com/"))
        tracker.track(StructuredEvent(category="video", action="play", label="demo-video", value=30))
        tracker.track(SelfDescribing(SelfDescribingJson(
            "iglu:com.snowplowanalytics.snowplow/submit_form/jsonschema/1-0-0",
            {"formId": "demo-request", "elements": [
                {"name": "email", "value": "Kim@Example.test", "nodeName": "INPUT", "type": "email"},
                {"name": "company", "value": "Globex", "nodeName": "INPUT"}]})))
        tracker.track(SelfDescribing(SelfDescribingJson(
            "iglu:com.example/whitepaper_download/jsonschema/1-0-0", {"paper": "roi-guide"})))
        tracker.flush()
        get = Emitter("127.0.0.1", protocol="http", port=port, method="get", on_failure=failures)
        gtracker = Tracker("ns-get", get, subject=Subject().set_domain_user_id("duid-sp-0002"), app_id="site")
        gtracker.track(StructuredEvent(category="email", action="open", label="q3-nurture"))
        gtracker.track(PageView(page_url="https://www.example.test/blog", page_title="Blog"))
        gtracker.flush()

    await asyncio.to_thread(run)
    assert failures.items == []
    events = await read_topic(collector.settings, 6)
    assert len(events) == 6
    assert {e["source"] for e in events} == {"snowplow"}
    pages = {e["url"]: e for e in by_type(events, "page_view")}
    pricing = pages["https://www.example.test/pricing"]
    assert pricing["title"] == "Pricing" and pricing["referrer"] == "https://www.google.com/"
    assert pricing["visitor_id"] == pid("duid-sp-0001") and pricing["user_id"] == pid("u-sp-1")
    assert pricing["traits"]["$session_id"] == "sess-1" and pricing["traits"]["$app_id"] == "site"
    assert pricing["traits"]["$library"].startswith("py-")
    # python-requests is the tracker's HTTP client, not the visitor: not flagged.
    assert pricing["machine"] == 0.0
    assert pricing["event_id"] == derive_event_id("snowplow", "site", pricing["message_id"])
    assert pages["https://www.example.test/blog"]["visitor_id"] == pid("duid-sp-0002")
    tracks = {e["name"]: e for e in by_type(events, "track")}
    assert tracks["video/play"]["traits"]["label"] == "demo-video"
    assert tracks["email/open"]["traits"]["label"] == "q3-nurture"
    assert tracks["whitepaper_download"]["traits"]["paper"] == "roi-guide"
    assert tracks["whitepaper_download"]["traits"]["$schema"] == "iglu:com.example/whitepaper_download/jsonschema/1-0-0"
    [form] = by_type(events, "form_fill")
    assert form["form_id"] == "demo-request" and form["email"] == "kim@example.test"
    assert form["fields"] == {"company": "Globex"}


# =========================================================================== wire captures


def _captures() -> list[dict[str, Any]]:
    path = datasets_or_skip() / "sdk_wire_captures.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [c for c in lines if not c["client"].startswith("slack_sdk")]


async def _replay(url: str, capture: dict[str, Any]) -> tuple[int, bytes]:
    headers = {k: v for k, v in capture["headers"].items() if k.lower() not in ("content-length", "connection")}
    body = capture["body"].encode()
    if capture["body_was_gzip"]:
        body = gzip.compress(body)
    async with aiohttp.ClientSession(auto_decompress=False) as s, \
            s.request(capture["method"], url + capture["path"], data=body or None, headers=headers) as r:
        return r.status, await r.read()


async def test_every_wire_capture_replays_with_the_expected_result(collector: Running) -> None:
    captures = _captures()
    assert len(captures) == 5
    for c in captures:
        status, body = await _replay(collector.url, c)
        assert status == 200, (c["client"], body)
        if c["method"] == "GET":
            assert body == GIF
        elif c["path"].startswith("/v1/"):
            assert orjson.loads(body) == {"success": True}
    events = await read_topic(collector.settings, 8)
    assert len(events) == 8, events
    seg = [e for e in events if e["source"] == "segment"]
    rs = [e for e in events if e["source"] == "rudderstack"]
    sp = [e for e in events if e["source"] == "snowplow"]
    assert (len(seg), len(rs), len(sp)) == (4, 1, 3)

    [ident] = by_type(seg, "identify")
    assert (ident["user_id"], ident["email"], ident["traits"]["company"]) == (pid("u1"), "jane@example.test", "Acme")
    assert ident["ip"] == "203.0.113.0"
    assert ident["event_id"] == derive_event_id("segment", "WK_TEST", "614167e8-ad04-43fc-b08d-4c0a5287ae56")
    tracks = {e["name"]: e for e in by_type(seg, "track")}
    # "Form Submitted" without an email is a form fill all the same; the worker finds the person
    # from the user id (the identify before it carried the email).
    [form] = by_type(seg, "form_fill")
    assert (form["name"], form["user_id"], form["email"], form["form_id"]) == (
        "Form Submitted", pid("u1"), None, "demo-request")
    assert tracks["Email Opened"]["visitor_id"] == pid("anon-123")
    assert tracks["Email Opened"]["traits"]["campaign"] == "q3-nurture"
    [page] = by_type(seg, "page_view")
    assert page["visitor_id"] == pid("anon-123") and page["name"] == "Pricing"
    assert page["url"] == "https://www.example.test/pricing" and page["referrer"] == "https://www.google.com/"
    assert page["traits"]["$sent_at"] == "2026-11-22T18:41:13.961913+00:00"

    [rs_track] = rs
    assert rs_track["type"] == "form_fill" and rs_track["name"] == "Form Submitted" and rs_track["user_id"] == pid("u1")

    [sp_page] = by_type(sp, "page_view")
    assert sp_page["url"] == "https://www.example.test/pricing" and sp_page["title"] == "Pricing"
    assert sp_page["referrer"] == "https://www.google.com/"
    assert sp_page["message_id"] == "e4b24788-5078-4108-bcb8-86eea1931c28"
    sp_tracks = {e["name"]: e for e in by_type(sp, "track")}
    assert sp_tracks["form_submit"]["traits"]["formId"] == "demo-request"
    assert sp_tracks["form_submit"]["traits"]["$schema"] == "iglu:com.example/form_submit/jsonschema/1-0-0"
    assert sp_tracks["email/open"]["traits"] == {
        "category": "email", "action": "open", "label": "q3-nurture", "$app_id": "site", "$library": "py-1.1.0",
        "$timestamp": "2026-11-22T18:41:14.504+00:00", "$sent_at": "2026-11-22T18:41:14.000+00:00",
        "$event_ts": sp_tracks["email/open"]["traits"]["$event_ts"]}

    # The SDKs retry: the same requests again are answered the same and add nothing.
    for c in captures:
        status, _ = await _replay(collector.url, c)
        assert status == 200
    again = await read_topic(collector.settings, 8, timeout=3.0, settle=1.5)
    assert sorted(e["event_id"] for e in again) == sorted(e["event_id"] for e in events)
