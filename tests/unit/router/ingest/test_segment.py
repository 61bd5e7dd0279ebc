"""The Segment-compatible HTTP API: auth, limits, gzip, mapping, de-duplication.

The collector is served by aiohttp's test server with an in-memory sink and
an in-memory de-duplicator; the real SDKs against Kafka and Redis are in
tests/integration/test_ingest_sdks.py.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from models import Event, EventType
from router.ingest.app import create_app
from router.ingest.machine import parse_networks
from router.ingest.segment import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    IngestContext,
    MessageError,
    basic_auth_user,
    derive_event_id,
    flatten,
    map_message,
    parse_name_list,
    profile_fields,
    utm_from,
)
from router.ingest.spool import Spool, SpoolSink
from router.metrics import REGISTRY
from router.settings import Settings, parse_write_keys
from router.storage.kafka import ProduceError

NOW = 1_800_000_000.0
SETTINGS = Settings.of(token_secret="ingest-secret-0123456789abcdef", segment_write_keys="WK_TEST, RWK=rudderstack")
CTX = IngestContext(write_key="WK_TEST", source="segment", received_at=NOW, request_ip="198.51.100.1",
                    form_events=parse_name_list(",".join(SETTINGS.ingest.segment_form_events)))


class MemorySink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def send(self, event: Event) -> None:
        self.events.append(event)


class FlakySink(MemorySink):
    """Fails the first ``failures`` sends, like a broker that comes back."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def send(self, event: Event) -> None:
        if self.failures:
            self.failures -= 1
            raise ProduceError("broker down")
        await super().send(event)


class MemoryDeduper:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.released: list[str] = []

    async def claim(self, event_ids: Sequence[str]) -> list[bool]:
        out = []
        for e in event_ids:
            out.append(e not in self.seen)
            self.seen.add(e)
        return out

    async def release(self, event_ids: Sequence[str]) -> None:
        self.released.extend(event_ids)
        self.seen.difference_update(event_ids)


Client = TestClient[web.Request, web.Application]
Make = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client() -> AsyncIterator[Make]:
    clients: list[Client] = []

    async def make(sink: Any, settings: Settings = SETTINGS, dedupe: Any = None) -> Client:
        client = TestClient(TestServer(create_app(settings, sink, lambda: NOW, dedupe=dedupe)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def dedupe() -> MemoryDeduper:
    return MemoryDeduper()


@pytest.fixture
async def client(make_client: Make, sink: MemorySink, dedupe: MemoryDeduper) -> Client:
    return await make_client(sink, dedupe=dedupe)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(**extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "track", "userId": "u1", "event": "Trial Started", "messageId": "m-1",
                           "properties": {"plan": "pro"}}
    msg.update(extra)
    return msg


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# =========================================================================== auth


async def test_basic_auth_write_key_and_success_body(client: Client, sink: MemorySink) -> None:
    resp = await client.post("/v1/track", json=track(), headers=basic("WK_TEST"))
    assert resp.status == 200
    assert await resp.json() == {"success": True}
    [e] = sink.events
    assert (e.type, e.name, e.user_id, e.source) == (EventType.TRACK, "Trial Started", "u1", "segment")
    assert e.event_id == derive_event_id("segment", "WK_TEST", "m-1") and e.message_id == "m-1"
    assert e.ts == NOW and e.traits["plan"] == "pro"


async def test_write_key_in_the_body_and_text_plain_like_analytics_js(client: Client, sink: MemorySink) -> None:
    body = orjson.dumps({**track(), "writeKey": "WK_TEST"})
    resp = await client.post("/v1/t", data=body, headers={"Content-Type": "text/plain"})
    assert resp.status == 200
    assert sink.events[0].name == "Trial Started"


async def test_a_labelled_write_key_sets_the_source(client: Client, sink: MemorySink) -> None:
    resp = await client.post("/v1/track", json=track(), headers=basic("RWK"))
    assert resp.status == 200
    [e] = sink.events
    assert e.source == "rudderstack" and e.event_id == derive_event_id("segment", "RWK", "m-1")


@pytest.mark.parametrize(("headers", "body_key"), [
    (basic("WK_WRONG"), None),
    (basic("WK_WRONG"), "WK_TEST"),  # the header decides
    ({}, "WK_WRONG"),
    ({}, None),
    ({"Authorization": "Basic !!!not-base64"}, None),
    ({"Authorization": "Bearer WK_TEST"}, None),
])
async def test_unknown_or_missing_write_keys_get_401(client: Client, sink: MemorySink, headers: dict[str, str],
                                                     body_key: str | None) -> None:
    body = track() if body_key is None else {**track(), "writeKey": body_key}
    resp = await client.post("/v1/track", json=body, headers=headers)
    assert resp.status == 401
    data = await resp.json()
    assert data["success"] is False and data["code"] == "invalid_write_key"
    assert "LEADROUTER_SEGMENT_WRITE_KEYS" in data["message"]
    assert sink.events == []


async def test_no_write_keys_configured_means_the_api_is_off(make_client: Make, sink: MemorySink) -> None:
    client = await make_client(sink, SETTINGS.with_(segment_write_keys=""))
    resp = await client.post("/v1/track", json=track(), headers=basic("WK_TEST"))
    assert resp.status == 401
    data = await resp.json()
    assert data["code"] == "api_disabled" and "LEADROUTER_SEGMENT_WRITE_KEYS" in data["message"]
    assert sink.events == []


def test_write_key_parsing() -> None:
    assert parse_write_keys(" a , b=rudderstack,, c= ") == (("a", "segment"), ("b", "rudderstack"), ("c", "segment"))
    assert parse_write_keys("") == ()
    assert basic_auth_user("Basic " + base64.b64encode(b"WK:").decode()) == "WK"
    assert basic_auth_user("basic " + base64.b64encode(b"WK:ignored").decode()) == "WK"
    assert basic_auth_user("Basic " + base64.b64encode(b":pw").decode()) is None
    assert basic_auth_user(None) is None and basic_auth_user("Basic %%%") is None


# =========================================================================== paths


@pytest.mark.parametrize(("path", "msg", "etype"), [
    ("/v1/identify", {"userId": "u1", "traits": {"email": "a@ex.test"}}, EventType.IDENTIFY),
    ("/v1/i", {"userId": "u1"}, EventType.IDENTIFY),
    ("/v1/track", {"userId": "u1", "event": "X"}, EventType.TRACK),
    ("/v1/t", {"anonymousId": "anon-0001", "event": "X"}, EventType.TRACK),
    ("/v1/page", {"anonymousId": "anon-0001", "properties": {"url": "https://ex.test/"}}, EventType.PAGE_VIEW),
    ("/v1/p", {"anonymousId": "anon-0001"}, EventType.PAGE_VIEW),
    ("/v1/screen", {"userId": "u1", "name": "Home"}, EventType.PAGE_VIEW),
    ("/v1/s", {"userId": "u1", "name": "Home"}, EventType.PAGE_VIEW),
    ("/v1/group", {"userId": "u1", "groupId": "g1"}, EventType.GROUP),
    ("/v1/g", {"userId": "u1", "groupId": "g1"}, EventType.GROUP),
    ("/v1/alias", {"userId": "u1", "previousId": "anon-0001"}, EventType.ALIAS),
    ("/v1/a", {"userId": "u1", "previousId": "anon-0001"}, EventType.ALIAS),
])
async def test_every_call_and_short_path(client: Client, sink: MemorySink, path: str, msg: dict[str, Any],
                                         etype: EventType) -> None:
    resp = await client.post(path, json={**msg, "type": "ignored-the-path-decides"}, headers=basic("WK_TEST"))
    assert resp.status == 200, await resp.text()
    assert [e.type for e in sink.events] == [etype]


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/b"])
async def test_batch_and_batch_level_context(client: Client, sink: MemorySink, path: str) -> None:
    resp = await client.post(path, headers=basic("WK_TEST"), json={
        "batch": [{"type": "track", "userId": "u1", "event": "A", "messageId": "b1"},
                  {"type": "page", "anonymousId": "anon-0002", "messageId": "b2",
                   "context": {"page": {"url": "https://ex.test/docs"}}}],
        "context": {"ip": "203.0.113.4", "page": {"url": "https://ex.test/ignored"}},
        "sentAt": "2026-11-22T18:41:13.961913+00:00"})
    assert resp.status == 200
    a, b = sink.events
    assert (a.name, a.ip, a.traits["$sent_at"]) == ("A", "203.0.113.4", "2026-11-22T18:41:13.961913+00:00")
    assert b.url == "https://ex.test/docs"  # the message's own context wins


async def test_unknown_call_is_404(client: Client) -> None:
    assert (await client.post("/v1/identity", json={}, headers=basic("WK_TEST"))).status == 404
    assert (await client.get("/v1/track")).status == 405


async def test_preflight_allows_the_sdk_headers(client: Client) -> None:
    resp = await client.options("/v1/t", headers={"Origin": "https://www.ex.test",
                                                  "Access-Control-Request-Method": "POST"})
    assert resp.status == 204
    # An origin not in LEADROUTER_CORS_ORIGINS: anonymous CORS, no credentials.
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    for h in ("Content-Type", "Authorization", "Content-Encoding"):
        assert h in resp.headers["Access-Control-Allow-Headers"]


# =========================================================================== gzip and limits


async def test_gzip_bodies(client: Client, sink: MemorySink) -> None:
    body = gzip.compress(orjson.dumps({"batch": [track(messageId=f"g{n}") for n in range(3)]}))
    resp = await client.post("/v1/batch", data=body, headers={**basic("WK_TEST"), "Content-Encoding": "gzip",
                                                               "Content-Type": "application/json"})
    assert resp.status == 200
    assert len(sink.events) == 3


async def test_broken_gzip_is_400(client: Client, sink: MemorySink) -> None:
    resp = await client.post("/v1/batch", data=b"\x1f\x8b\x08\x00not really gzip",
                             headers={**basic("WK_TEST"), "Content-Encoding": "gzip"})
    assert resp.status == 400
    assert sink.events == []


async def test_unknown_encodings_are_415(client: Client) -> None:
    resp = await client.post("/v1/track", data=orjson.dumps(track()),
                             headers={**basic("WK_TEST"), "Content-Encoding": "compress"})
    assert resp.status == 415
    assert (await resp.json())["code"] == "unsupported_encoding"


async def test_a_single_message_over_32_kb_is_413(client: Client, sink: MemorySink) -> None:
    body = orjson.dumps(track(properties={"blob": "x" * MAX_MESSAGE_BYTES}))
    resp = await client.post("/v1/track", data=body, headers=basic("WK_TEST"))
    assert resp.status == 413
    data = await resp.json()
    assert "32 KB" in data["message"] and data["success"] is False
    assert sink.events == []


async def test_a_batch_over_500_kb_is_413_with_or_without_content_length(client: Client, sink: MemorySink) -> None:
    batch = [track(messageId=f"m{n}", properties={"blob": "x" * 20_000}) for n in range(30)]
    body = orjson.dumps({"batch": batch})
    assert len(body) > MAX_BATCH_BYTES
    resp = await client.post("/v1/batch", data=body, headers=basic("WK_TEST"))
    assert resp.status == 413
    assert "500 KB" in (await resp.json())["message"]

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    resp = await client.post("/v1/batch", data=chunked(), headers=basic("WK_TEST"))
    assert resp.status == 413
    # The limit applies after gunzip: a small gzip that inflates past it is refused too.
    resp = await client.post("/v1/batch", data=gzip.compress(body),
                             headers={**basic("WK_TEST"), "Content-Encoding": "gzip"})
    assert resp.status == 413
    assert sink.events == []


async def test_more_than_2500_messages_is_400(client: Client, sink: MemorySink) -> None:
    batch = [{"type": "track", "userId": "u", "event": "e"}] * (MAX_BATCH_MESSAGES + 1)
    resp = await client.post("/v1/batch", json={"batch": batch}, headers=basic("WK_TEST"))
    assert resp.status == 400
    data = await resp.json()
    assert data["code"] == "batch_too_large" and "2500" in data["message"]
    assert sink.events == []


async def test_a_message_over_32_kb_inside_a_batch_is_400_naming_it(client: Client, sink: MemorySink) -> None:
    batch = [track(messageId="ok"), track(messageId="big", properties={"blob": "x" * MAX_MESSAGE_BYTES})]
    resp = await client.post("/v1/batch", json={"batch": batch}, headers=basic("WK_TEST"))
    assert resp.status == 400
    data = await resp.json()
    assert data["code"] == "message_too_large" and "message 1" in data["message"] and "32 KB" in data["message"]
    assert sink.events == []


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", "invalid_json"), (b"[1, 2]", "invalid_json"), (b"", "invalid_json"),
    (b'{"batch": {"type": "track"}}', "invalid_batch"),
])
async def test_bad_bodies_are_400(client: Client, body: bytes, code: str) -> None:
    path = "/v1/batch" if b"batch" in body else "/v1/track"
    resp = await client.post(path, data=body, headers=basic("WK_TEST"))
    assert resp.status == 400
    assert (await resp.json())["code"] == code


async def test_an_invalid_single_message_is_400_but_a_batch_skips_it(client: Client, sink: MemorySink) -> None:
    before = sample("leadrouter_sdk_messages_total", api="segment", type="track", outcome="invalid")
    resp = await client.post("/v1/track", json={"event": "No ids"}, headers=basic("WK_TEST"))
    assert resp.status == 400
    data = await resp.json()
    assert data["code"] == "invalid_message" and "userId or anonymousId" in data["message"]
    resp = await client.post("/v1/batch", headers=basic("WK_TEST"), json={"batch": [
        {"type": "track", "event": "No ids"}, {"type": "track", "userId": "u1"}, "not an object",
        {"type": "bogus", "userId": "u1"}, {"type": "track", "userId": "u1", "event": "Good"}]})
    assert resp.status == 200 and await resp.json() == {"success": True}
    assert [e.name for e in sink.events] == ["Good"]
    assert sample("leadrouter_sdk_messages_total", api="segment", type="track", outcome="invalid") == before + 3


# =========================================================================== de-duplication and failures


async def test_a_retried_message_is_stored_once(client: Client, sink: MemorySink, dedupe: MemoryDeduper) -> None:
    for _ in range(3):
        resp = await client.post("/v1/track", json=track(messageId="retry-1"), headers=basic("WK_TEST"))
        assert resp.status == 200 and await resp.json() == {"success": True}
    resp = await client.post("/v1/batch", headers=basic("WK_TEST"), json={"batch": [
        track(messageId="retry-1"), track(messageId="retry-2"), track(messageId="retry-2")]})
    assert resp.status == 200
    assert [e.message_id for e in sink.events] == ["retry-1", "retry-2"]
    # Another write key is another sender: its "retry-1" is a different message.
    await client.post("/v1/track", json=track(messageId="retry-1"), headers=basic("RWK"))
    assert len(sink.events) == 3 and sink.events[2].event_id != sink.events[0].event_id


async def test_messages_without_an_id_are_never_deduplicated(client: Client, sink: MemorySink) -> None:
    msg = track()
    del msg["messageId"]
    for _ in range(2):
        await client.post("/v1/track", json=msg, headers=basic("WK_TEST"))
    assert len({e.event_id for e in sink.events}) == 2


async def test_a_refused_message_is_accepted_when_retried(make_client: Make, dedupe: MemoryDeduper) -> None:
    sink = FlakySink(failures=1)
    client = await make_client(sink, dedupe=dedupe)
    resp = await client.post("/v1/track", json=track(messageId="again"), headers=basic("WK_TEST"))
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert (await resp.json())["success"] is False
    assert dedupe.released == [derive_event_id("segment", "WK_TEST", "again")]
    resp = await client.post("/v1/track", json=track(messageId="again"), headers=basic("WK_TEST"))
    assert resp.status == 200
    assert [e.message_id for e in sink.events] == ["again"]


async def test_a_full_spool_is_503_with_retry_after(make_client: Make, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1024, segment_bytes=1024, fsync="never").open()
    await spool.start()
    try:
        client = await make_client(SpoolSink(spool), SETTINGS.with_(spool_retry_after_s=42))
        before = sample("leadrouter_spool_refused_total", endpoint="segment")
        statuses = []
        for n in range(5):
            resp = await client.post("/v1/track", json=track(messageId=f"f{n}", properties={"blob": "x" * 400}),
                                     headers=basic("WK_TEST"))
            statuses.append(resp.status)
            if resp.status == 503:
                assert resp.headers["Retry-After"] == "42"
                assert (await resp.json())["success"] is False
        assert statuses[0] == 200 and statuses[-1] == 503
        refused = statuses.count(503)
        assert sample("leadrouter_spool_refused_total", endpoint="segment") == before + refused
    finally:
        await spool.close()


# =========================================================================== mapping


def mapped(msg: dict[str, Any], ctx: IngestContext = CTX) -> Event:
    return map_message(msg, ctx).event


def test_page_mapping() -> None:
    e = mapped({"type": "page", "anonymousId": "anon-0003", "name": "Pricing", "messageId": "p1",
                "timestamp": "2026-11-22T18:41:13.000Z", "sentAt": "2026-11-22T18:41:15.000Z",
                "properties": {"path": "/pricing", "search": "?x=1"},
                "context": {"page": {"url": "https://ex.test/pricing?utm_source=news", "title": "Pricing",
                                     "referrer": "https://google.com/"},
                            "userAgent": "Mozilla/5.0 (X11) Firefox/130", "ip": "203.0.113.8",
                            "library": {"name": "analytics.js", "version": "next-1.70.0"}}})
    assert e.type is EventType.PAGE_VIEW and e.source == "segment"
    assert (e.url, e.title, e.referrer, e.name) == ("https://ex.test/pricing?utm_source=news", "Pricing",
                                                    "https://google.com/", "Pricing")
    assert e.utm == {"utm_source": "news"}
    assert (e.visitor_id, e.user_id, e.ip) == ("anon-0003", None, "203.0.113.8")
    assert e.traits == {"path": "/pricing", "search": "?x=1", "$library": "analytics.js/next-1.70.0",
                        "$timestamp": "2026-11-22T18:41:13.000Z", "$sent_at": "2026-11-22T18:41:15.000Z",
                        "$event_ts": f"{NOW - 2.0:.3f}"}
    assert e.ts == NOW and e.machine == 0.0
    assert e.partition_key() == "v:anon-0003"


def test_page_and_screen_category_is_collector_metadata() -> None:
    page = mapped({"type": "page", "anonymousId": "anon-0007", "name": "Pricing", "category": "Docs",
                   "properties": {"$category": "spoofed", "category": "mine"}})
    assert page.traits["$category"] == "Docs" and page.traits["category"] == "mine"
    screen = mapped({"type": "screen", "userId": "u9", "name": "Plans", "category": "Billing"})
    assert (screen.type, screen.name, screen.traits["$category"], screen.traits["$call"]) == (
        EventType.PAGE_VIEW, "Plans", "Billing", "screen")
    assert "$category" not in mapped({"type": "page", "anonymousId": "anon-0008", "name": "Home"}).traits


def test_page_campaign_and_bad_url() -> None:
    m = map_message({"type": "page", "anonymousId": "anon-0004",
                     "properties": {"url": "javascript:alert(1)", "referrer": "ftp://x"},
                     "context": {"campaign": {"name": "spring", "source": "li", "medium": "social"}}}, CTX)
    assert m.event.url is None and m.event.referrer is None
    assert m.dropped == ["url", "referrer"]
    assert m.event.utm == {"utm_source": "li", "utm_medium": "social", "utm_campaign": "spring"}
    assert m.event.ip == "198.51.100.1"  # no context.ip: the request's address


def test_screen_mapping() -> None:
    e = mapped({"type": "screen", "userId": 42, "name": "Settings"})
    assert (e.type, e.url, e.title, e.name, e.user_id) == (EventType.PAGE_VIEW, None, "Settings", "Settings", "42")
    assert e.traits["$call"] == "screen"


@pytest.mark.parametrize("name", ["Form Submitted", "form_submitted", "SIGNED-UP", "Demo  Requested"])
def test_form_like_tracks_with_an_email_are_form_fills(name: str) -> None:
    e = mapped({"type": "track", "userId": "u1", "event": name,
                "properties": {"email": " Jane@Ex.Test ", "formId": "contact-sales", "firstName": "Jane",
                               "company": {"name": "Acme"}, "consent": "no", "plan": "pro"}})
    assert e.type is EventType.FORM_FILL and e.name == name
    assert (e.email, e.form_id) == ("jane@ex.test", "contact-sales")
    assert e.fields == {"first_name": "Jane", "company": "Acme", "consent": "false"}
    assert e.traits["plan"] == "pro" and e.traits["company.name"] == "Acme"


def test_form_like_track_fallbacks() -> None:
    e = mapped({"type": "track", "anonymousId": "anon-0005", "event": "Demo Requested",
                "context": {"traits": {"email": "sam@ex.test", "title": "CTO"}}, "properties": {"form_id": "bad id!"}})
    assert e.type is EventType.FORM_FILL and e.form_id == "demo-requested" and e.email == "sam@ex.test"
    assert e.fields == {"job_title": "CTO"}
    # A form event without an email is an anonymous form fill: it counts when the person identifies.
    anon = mapped({"type": "track", "anonymousId": "anon-0006", "event": "Demo Requested",
                   "properties": {"form_id": "demo-request"}})
    assert (anon.type, anon.email, anon.form_id, anon.visitor_id) == (
        EventType.FORM_FILL, None, "demo-request", "anon-0006")
    assert mapped({"type": "track", "userId": "u1", "event": "Clicked", "properties": {"email": "a@ex.test"}}
                  ).type is EventType.TRACK
    bad = map_message({"type": "track", "userId": "u1", "event": "Signed Up", "properties": {"email": "nope"}}, CTX)
    assert bad.event.type is EventType.FORM_FILL and bad.event.email is None and bad.dropped == ["email"]
    custom = CTX.__class__(**{**CTX.__dict__, "form_events": parse_name_list("Webinar Registered")}) \
        if hasattr(CTX, "__dict__") else IngestContext(write_key="WK_TEST", source="segment", received_at=NOW,
                                                       form_events=parse_name_list("Webinar Registered"))
    e2 = mapped({"type": "track", "userId": "u1", "event": "webinar_registered", "properties": {"email": "a@ex.test"}},
                custom)
    assert e2.type is EventType.FORM_FILL and e2.form_id == "webinar-registered"


def test_identify_mapping() -> None:
    e = mapped({"type": "identify", "userId": "u1", "anonymousId": "anon-0006", "messageId": "i1",
                "traits": {"email": "JANE@ex.test", "name": "Jane Doe", "title": "VP Sales", "company": "Acme",
                           "employees": 250, "vip": True, "tags": ["a", "b"], "address": {"country": "us",
                                                                                        "state": "CA"},
                           "$secret": "dropped", "nothing": None, "nested": {"a": {"b": {"c": "too deep"}}}}})
    assert e.type is EventType.IDENTIFY
    assert (e.user_id, e.visitor_id, e.email) == ("u1", "anon-0006", "jane@ex.test")
    assert e.traits == {"email": "JANE@ex.test", "name": "Jane Doe", "title": "VP Sales", "company": "Acme",
                        "employees": "250", "vip": "true", "tags": "a,b", "address.country": "us",
                        "address.state": "CA"}
    assert e.fields == {"name": "Jane Doe", "company": "Acme", "job_title": "VP Sales", "country": "US",
                        "region": "CA"}
    assert e.partition_key() == "v:anon-0006"


def test_identify_traits_from_context() -> None:
    e = mapped({"type": "identify", "userId": "u2", "context": {"traits": {"email": "k@ex.test"}}})
    assert e.email == "k@ex.test"


def test_group_and_alias_mapping() -> None:
    g = mapped({"type": "group", "userId": "u1", "groupId": 991,
                "traits": {"name": "Acme", "domain": "acme.test", "industry": "Retail", "employees": "50-99",
                           "email": "billing@acme.test"}})
    assert (g.type, g.group_id, g.user_id, g.email) == (EventType.GROUP, "991", "u1", None)
    assert g.traits["name"] == "Acme" and g.traits["domain"] == "acme.test" and g.traits["employees"] == "50-99"
    a = mapped({"type": "alias", "userId": "u1", "previousId": "anon-0007"})
    assert (a.type, a.user_id, a.previous_id, a.visitor_id) == (EventType.ALIAS, "u1", "anon-0007", None)
    assert a.partition_key() == "u:u1"


@pytest.mark.parametrize(("msg", "field"), [
    ({"type": "alias", "userId": "u1"}, "previousId"),
    ({"type": "alias", "previousId": "p"}, "previousId"),
    ({"type": "group", "userId": "u1"}, "groupId"),
    ({"type": "track", "userId": "u1", "event": "  "}, "event"),
    ({"type": "identify", "userId": "", "anonymousId": None}, "userId"),
    ({"type": "identify", "userId": "bad\nid"}, "userId"),
    ({"type": "launch", "userId": "u1"}, "type"),
    ({"userId": "u1"}, "type"),
])
def test_invalid_messages(msg: dict[str, Any], field: str) -> None:
    with pytest.raises(MessageError) as exc:
        map_message(msg, CTX)
    assert exc.value.field == field and exc.value.message


def test_event_ids_are_deterministic_per_sender() -> None:
    one = mapped({"type": "track", "userId": "u1", "event": "X", "messageId": "same"})
    two = mapped({"type": "track", "userId": "u9", "event": "Y", "messageId": "same"})
    assert one.event_id == two.event_id == derive_event_id("segment", "WK_TEST", "same")
    assert len(one.event_id) == 32
    other = IngestContext(write_key="OTHER", source="segment", received_at=NOW)
    assert mapped({"type": "track", "userId": "u1", "event": "X", "messageId": "same"}, other).event_id != one.event_id


def test_crawler_page_views_are_flagged_not_dropped() -> None:
    ctx = IngestContext(write_key="WK_TEST", source="segment", received_at=NOW,
                        networks=parse_networks("192.0.2.0/24"))
    e = mapped({"type": "page", "anonymousId": "anon-0008",
                "context": {"userAgent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}}, ctx)
    assert e.machine > 0.9 and e.machine_reason == "crawler:bot"
    e = mapped({"type": "page", "anonymousId": "anon-0008", "context": {"ip": "192.0.2.10"}}, ctx)
    assert e.machine == 1.0
    # A server-side SDK's missing agent is not a bot signal.
    assert mapped({"type": "page", "anonymousId": "anon-0008"}, ctx).machine == 0.0


def test_helpers() -> None:
    assert flatten({"a": {"b": 1}, "l": [1, None, "x", {"no": 1}], "f": 1.5, "n": None}) == {
        "a.b": "1", "l": "1,x", "f": "1.5"}
    assert len(flatten({f"k{n}": n for n in range(500)})) == 100
    assert profile_fields({"firstName": "A", "lastname": "B", "jobTitle": "C", "phone": 123, "state": "ny"}) == {
        "first_name": "A", "last_name": "B", "job_title": "C", "phone": "123", "region": "NY"}
    assert parse_name_list(" Form Submitted ,signed_up,") == frozenset({"formsubmitted", "signedup"})


@pytest.mark.parametrize(("url", "utm"), [
    ("https://a.test/p?utm_source=news&utm_campaign=q3", {"utm_source": "news", "utm_campaign": "q3"}),
    ("https://a.test/p?utm%5Fsource=news", {"utm_source": "news"}),  # a percent-encoded key still counts
    ("https://a.test/p?%75tm_medium=mail", {"utm_medium": "mail"}),
    ("https://a.test/p?source=news", {}),
    ("https://a.test/utm_source", {}),
    (None, {}),
])
def test_utm_from_the_page_url(url: str | None, utm: dict[str, str]) -> None:
    assert utm_from({}, url) == utm
