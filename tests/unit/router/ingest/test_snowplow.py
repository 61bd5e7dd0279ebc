"""The Snowplow tracker protocol: GET /i (and /ice.png), POST tp2, and the mapping."""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from models import Event, EventType
from router.ingest.app import create_app
from router.ingest.request import GIF
from router.ingest.segment import IngestContext, MessageError, derive_event_id, parse_name_list
from router.ingest.snowplow import (
    MAX_BODY_BYTES,
    MAX_EVENTS,
    Ignored,
    map_event,
    schema_event_name,
    self_describing,
)
from router.metrics import REGISTRY
from router.settings import Settings

NOW = 1_800_000_000.0
SETTINGS = Settings.of(token_secret="snowplow-secret-0123456789abcdef")
TP2 = "/com.snowplowanalytics.snowplow/tp2"
SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
CTX = IngestContext(write_key="", source="snowplow", received_at=NOW, request_ip="198.51.100.2",
                    request_user_agent="python-requests/2.34.2", form_events=parse_name_list("Form Submitted"))


class MemorySink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def send(self, event: Event) -> None:
        self.events.append(event)


class MemoryDeduper:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def claim(self, event_ids: Sequence[str]) -> list[bool]:
        out = [e not in self.seen for e in event_ids]
        self.seen.update(event_ids)
        return out

    async def release(self, event_ids: Sequence[str]) -> None:
        self.seen.difference_update(event_ids)


Client = TestClient[web.Request, web.Application]
Make = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client() -> AsyncIterator[Make]:
    clients: list[Client] = []

    async def make(sink: Any, settings: Settings = SETTINGS) -> Client:
        client = TestClient(TestServer(create_app(settings, sink, lambda: NOW, dedupe=MemoryDeduper())))
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
async def client(make_client: Make, sink: MemorySink) -> Client:
    return await make_client(sink)


def ue(schema: str, data: dict[str, Any], *, b64: bool = True) -> dict[str, str]:
    envelope = orjson.dumps({"schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
                             "data": {"schema": schema, "data": data}})
    if b64:
        return {"e": "ue", "ue_px": base64.urlsafe_b64encode(envelope).decode().rstrip("=")}
    return {"e": "ue", "ue_pr": envelope.decode()}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# =========================================================================== GET pixel


@pytest.mark.parametrize("path", ["/i", "/ice.png"])
async def test_get_page_view_answers_the_gif(client: Client, sink: MemorySink, path: str) -> None:
    resp = await client.get(path, params={"e": "pv", "url": "https://ex.test/pricing", "page": "Pricing",
                                          "refr": "https://google.com/", "duid": "duid-0001", "sid": "s1",
                                          "eid": "eid-1", "aid": "site", "tv": "js-3.24.0"},
                            headers={"User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/130"})
    assert resp.status == 200 and await resp.read() == GIF
    assert resp.headers["Content-Type"] == "image/gif"
    [e] = sink.events
    assert (e.type, e.url, e.title, e.referrer) == (EventType.PAGE_VIEW, "https://ex.test/pricing", "Pricing",
                                                    "https://google.com/")
    assert (e.visitor_id, e.source, e.message_id) == ("duid-0001", "snowplow", "eid-1")
    assert e.event_id == derive_event_id("snowplow", "site", "eid-1")
    assert e.traits == {"$app_id": "site", "$session_id": "s1", "$library": "js-3.24.0"}
    assert e.user_agent == "Mozilla/5.0 (X11; Linux) Firefox/130" and e.machine == 0.0


async def test_get_garbage_still_answers_the_gif(client: Client, sink: MemorySink) -> None:
    for params in ({}, {"e": "se"}, {"e": "ue", "ue_px": "!!!"}, {"e": "zz"}):
        resp = await client.get("/i", params=params)
        assert resp.status == 200 and await resp.read() == GIF
    assert sink.events == []


async def test_get_retries_are_deduplicated(client: Client, sink: MemorySink) -> None:
    for _ in range(3):
        await client.get("/i", params={"e": "se", "se_ca": "email", "se_ac": "open", "eid": "dup-1"})
    assert len(sink.events) == 1


async def test_disabled_snowplow(make_client: Make, sink: MemorySink) -> None:
    client = await make_client(sink, SETTINGS.with_(snowplow_enabled=False))
    resp = await client.get("/i", params={"e": "pv", "url": "https://ex.test/"})
    assert resp.status == 200 and await resp.read() == GIF
    resp = await client.post(TP2, json={"schema": SCHEMA, "data": [{"e": "pv"}]})
    assert resp.status == 404
    assert "LEADROUTER_SNOWPLOW_ENABLED" in (await resp.json())["message"]
    assert sink.events == []


async def test_app_id_allowlist(make_client: Make, sink: MemorySink) -> None:
    client = await make_client(sink, SETTINGS.with_(snowplow_app_ids="site, shop"))
    await client.get("/i", params={"e": "pv", "url": "https://ex.test/", "aid": "site"})
    await client.get("/i", params={"e": "pv", "url": "https://ex.test/", "aid": "other"})
    await client.get("/i", params={"e": "pv", "url": "https://ex.test/"})
    resp = await client.post(TP2, json={"data": [{"e": "pv", "aid": "shop"}, {"e": "pv", "aid": "x"}]})
    assert resp.status == 200
    assert [e.traits["$app_id"] for e in sink.events] == ["site", "shop"]


# =========================================================================== POST tp2


async def test_post_payload_data(client: Client, sink: MemorySink) -> None:
    data = [
        {"e": "pv", "url": "https://ex.test/", "duid": "d-1", "uid": "u-1", "eid": "a"},
        {"e": "se", "se_ca": "video", "se_ac": "play", "se_la": "intro", "se_pr": "hd", "se_va": 12.5, "eid": "b"},
        {**ue("iglu:com.snowplowanalytics.snowplow/submit_form/jsonschema/1-0-0",
              {"formId": "demo-request", "elements": [
                  {"name": "work_email", "value": "Kim@Ex.Test"}, {"name": "firstName", "value": "Kim"},
                  {"name": "company", "value": "Globex"}, {"name": "consent", "value": "true"}]}), "eid": "c"},
        {**ue("iglu:com.acme/whitepaper/jsonschema/1-0-0", {"paper": "roi"}, b64=False), "eid": "d"},
        {"e": "tr", "tr_id": "order-1", "tr_tt": "99.5", "eid": "e"},
        {"e": "pp", "eid": "f", "duid": "d-1"},
        "not an event",
    ]
    resp = await client.post(TP2, json={"schema": SCHEMA, "data": data},
                             headers={"Origin": "https://www.ex.test"})
    assert resp.status == 200 and await resp.text() == "ok"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"  # not a listed origin: no credentials
    assert "Access-Control-Allow-Credentials" not in resp.headers
    kinds = [(e.type, e.name) for e in sink.events]
    assert kinds == [(EventType.PAGE_VIEW, None), (EventType.TRACK, "video/play"),
                     (EventType.FORM_FILL, "submit_form"), (EventType.TRACK, "whitepaper"),
                     (EventType.TRACK, "transaction"), (EventType.PAGE_PING, None)]
    pv, se, form, wp, tr, pp = sink.events
    assert pp.event_id == derive_event_id("snowplow", "", "f") and pp.partition_key() == "v:d-1"
    assert (pv.visitor_id, pv.user_id) == ("d-1", "u-1") and pv.partition_key() == "v:d-1"
    assert se.traits == {"category": "video", "action": "play", "label": "intro", "property": "hd", "value": "12.5"}
    assert (form.form_id, form.email) == ("demo-request", "kim@ex.test")
    assert form.fields == {"first_name": "Kim", "company": "Globex", "consent": "true"}
    assert form.traits["$schema"] == "iglu:com.snowplowanalytics.snowplow/submit_form/jsonschema/1-0-0"
    assert wp.traits["paper"] == "roi"
    assert tr.traits == {"tr_id": "order-1", "tr_tt": "99.5"}


async def test_post_gzip(client: Client, sink: MemorySink) -> None:
    body = gzip.compress(orjson.dumps({"schema": SCHEMA, "data": [{"e": "pv", "url": "https://ex.test/"}]}))
    resp = await client.post(TP2, data=body, headers={"Content-Encoding": "gzip",
                                                       "Content-Type": "application/json; charset=utf-8"})
    assert resp.status == 200
    assert len(sink.events) == 1


@pytest.mark.parametrize(("body", "code"), [
    (b"{nope", "invalid_json"),
    (b'{"schema": "iglu:com.acme/other/jsonschema/1-0-0", "data": []}', "invalid_schema"),
    (b'{"data": {"e": "pv"}}', "invalid_payload"),
])
async def test_post_bad_bodies_are_400(client: Client, body: bytes, code: str) -> None:
    resp = await client.post(TP2, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["code"] == code


async def test_post_limits(client: Client, sink: MemorySink) -> None:
    resp = await client.post(TP2, json={"data": [{"e": "pv"}] * (MAX_EVENTS + 1)})
    assert resp.status == 400 and (await resp.json())["code"] == "too_many_events"
    big = b'{"data": ["' + b"x" * MAX_BODY_BYTES + b'"]}'

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    resp = await client.post(TP2, data=chunked())
    assert resp.status == 413
    assert sink.events == []


async def test_post_preflight(client: Client) -> None:
    resp = await client.options(TP2, headers={"Origin": "https://www.ex.test",
                                              "Access-Control-Request-Method": "POST"})
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers


# =========================================================================== mapping


def test_times_and_skew() -> None:
    e = map_event({"e": "pv", "url": "https://ex.test/", "dtm": "1795372874500", "stm": "1795372875000"}, CTX).event
    assert e.ts == NOW
    assert e.traits["$timestamp"] == "2026-11-22T18:41:14.500+00:00"
    assert e.traits["$sent_at"] == "2026-11-22T18:41:15.000+00:00"
    assert e.traits["$event_ts"] == f"{NOW - 0.5:.3f}"
    only = map_event({"e": "pv", "dtm": "1795372874500"}, CTX).event
    assert only.traits["$event_ts"] == "1795372874.500"
    assert "$timestamp" not in map_event({"e": "pv", "dtm": "soon"}, CTX).event.traits


def test_identity_fallbacks_and_bad_urls() -> None:
    m = map_event({"e": "pv", "nuid": "net-1", "url": "javascript:x", "refr": "ftp://x"}, CTX)
    assert m.event.visitor_id == "net-1" and m.event.url is None and m.dropped == ["url", "referrer"]
    assert map_event({"e": "pv", "tnuid": "t-1"}, CTX).event.visitor_id == "t-1"
    no_eid = map_event({"e": "pv"}, CTX).event
    assert no_eid.message_id is None and len(no_eid.event_id) == 32


def test_the_server_side_trackers_http_client_is_not_a_bot() -> None:
    assert map_event({"e": "pv"}, CTX).event.machine == 0.0
    assert map_event({"e": "pv", "ua": "curl/8.0"}, CTX).event.machine == 0.0
    strict = IngestContext(**{**{f: getattr(CTX, f) for f in CTX.__slots__}, "flag_http_clients": True})
    assert map_event({"e": "pv", "ua": "curl/8.0"}, strict).event.machine_reason == "http_library:curl"
    assert map_event({"e": "pv"}, strict).event.machine == 0.0  # python-requests is the tracker, not the visitor
    bot = map_event({"e": "pv", "ua": "Mozilla/5.0 (compatible; Googlebot/2.1)"}, CTX).event
    assert bot.machine > 0.9 and bot.user_agent == "Mozilla/5.0 (compatible; Googlebot/2.1)"


def test_form_events_need_an_email() -> None:
    no_email = map_event(ue("iglu:com.snowplowanalytics.snowplow/submit_form/jsonschema/1-0-0",
                            {"formId": "x", "elements": [{"name": "q", "value": "hi"}]}), CTX).event
    assert no_email.type is EventType.TRACK and no_email.traits["formId"] == "x" and no_email.traits["q"] == "hi"
    bad = map_event(ue("iglu:com.acme/form_submitted/jsonschema/1-0-0", {"email": "nope"}), CTX)
    assert bad.event.type is EventType.TRACK and bad.dropped == ["email"]
    custom = map_event(ue("iglu:com.acme/Form Submitted/jsonschema/1-0-0", {"email": "a@ex.test"}), CTX).event
    assert custom.type is EventType.FORM_FILL and custom.form_id == "form-submitted"


def test_invalid_and_ignored() -> None:
    with pytest.raises(MessageError):
        map_event({}, CTX)
    with pytest.raises(MessageError):
        map_event({"e": "se", "se_ca": "only-category"}, CTX)
    with pytest.raises(MessageError):
        map_event({"e": "ue"}, CTX)
    with pytest.raises(MessageError):
        map_event({"e": "ue", "ue_pr": "{not json"}, CTX)
    with pytest.raises(MessageError):
        map_event({"e": "ue", "ue_pr": '{"data": {"no": "schema"}}'}, CTX)
    with pytest.raises(Ignored) as exc:
        map_event({"e": "ad"}, CTX)
    assert exc.value.kind == "unknown"


def test_a_page_ping_is_time_on_site_of_the_visitor() -> None:
    mapped = map_event({"e": "pp", "duid": "d-9", "url": "https://ex.test/pricing?utm_source=x", "eid": "p1",
                        "pp_mix": "0", "pp_max": "900"}, CTX)
    ev = mapped.event
    assert (ev.type, ev.visitor_id, ev.url, ev.ts) == (EventType.PAGE_PING, "d-9", "https://ex.test/pricing?utm_source=x",
                                                      CTX.received_at)
    # the tracker's own scroll offsets are not trusted or kept
    assert "pp_max" not in ev.traits


def test_self_describing_and_schema_names() -> None:
    params = ue("iglu:com.acme/signup/jsonschema/2-0-1", {"a": 1})
    assert self_describing(params) == ("iglu:com.acme/signup/jsonschema/2-0-1", {"a": 1})
    # The standard base64 alphabet works too.
    std = base64.b64encode(orjson.dumps({"data": {"schema": "iglu:x/y/jsonschema/1-0-0", "data": {}}})).decode()
    assert self_describing({"ue_px": std})[0] == "iglu:x/y/jsonschema/1-0-0"
    assert schema_event_name("iglu:com.snowplowanalytics.snowplow/link_click/jsonschema/1-0-1") == "link_click"
    assert schema_event_name("not-iglu/thing") == "thing"


async def test_invalid_events_are_counted(client: Client) -> None:
    before = sample("leadrouter_sdk_messages_total", api="snowplow", type="se", outcome="invalid")
    ignored = sample("leadrouter_sdk_messages_total", api="snowplow", type="ad", outcome="ignored")
    await client.post(TP2, json={"data": [{"e": "se"}, {"e": "ad"}]})
    assert sample("leadrouter_sdk_messages_total", api="snowplow", type="se", outcome="invalid") == before + 1
    assert sample("leadrouter_sdk_messages_total", api="snowplow", type="ad", outcome="ignored") == ignored + 1
