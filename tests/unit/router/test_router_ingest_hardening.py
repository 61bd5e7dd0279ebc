"""The public collector against abusive requests.

The collector app is served by aiohttp's test server on 127.0.0.1 with an in-memory sink;
every request goes to it over a real socket.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from models import Event
from router.errors import SettingsError
from router.ingest.app import create_app
from router.ingest.segment import MAX_JSON_DEPTH
from router.settings import Settings

SECRET = "hardening-secret-0123456789abcdef"
NOW = 1_800_000_000.0
SITE = "https://www.acme.io"
SETTINGS = Settings(token_secret=SECRET, segment_write_keys="WK_HARD", machine_networks="127.0.0.0/8, 192.0.2.0/24",
                    cors_origins=f"{SITE}, https://app.acme.io")
AUTH = {"Authorization": "Basic " + base64.b64encode(b"WK_HARD:").decode()}
TP2 = "/com.snowplowanalytics.snowplow/tp2"
PAYLOAD_SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"

Client = TestClient[web.Request, web.Application]
Make = Callable[..., Awaitable[Client]]


class MemorySink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def send(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
async def make_client(sink: MemorySink) -> AsyncIterator[Make]:
    clients: list[Client] = []

    async def make(settings: Settings = SETTINGS) -> Client:
        client = TestClient(TestServer(create_app(settings, sink, lambda: NOW), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


@pytest.fixture
async def client(make_client: Make) -> Client:
    return await make_client()


def form(**extra: Any) -> dict[str, Any]:
    return {"form_id": "demo-request", "email": "jane@acme.com", **extra}


def nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


# =========================================================================== 1. X-Forwarded-For


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(client: Client, sink: MemorySink) -> None:
    """No trusted proxy (the default): the header cannot hide a machine network or plant text as the IP."""
    for xff in ("203.0.113.9", "<script>alert(1)</script>", "203.0.113.9, <script>"):
        resp = await client.get("/t/p.gif", params={"url": "https://acme.io/"},
                                headers={"User-Agent": "Mozilla/5.0 (X11) Firefox/120", "X-Forwarded-For": xff})
        assert resp.status == 200
    resp = await client.post("/t/form", json=form(), headers={"X-Forwarded-For": "<script>"})
    assert resp.status == 202
    assert [e.ip for e in sink.events] == ["127.0.0.1"] * 4
    # 127.0.0.0/8 is a configured machine network: the flag stays on whatever the header says.
    assert all(e.machine == 1.0 and (e.machine_reason or "").startswith("network:127.0.0.0/8") for e in sink.events)


async def test_forwarded_for_from_a_trusted_proxy_is_used(make_client: Make, sink: MemorySink) -> None:
    client = await make_client(SETTINGS.with_(trusted_proxies="127.0.0.1/32, 10.0.0.0/8"))
    cases = [
        ("198.51.100.7", "198.51.100.7"),
        # The right-most address that is not a trusted proxy: the left part is the client's own say.
        ("192.0.2.1, 198.51.100.7", "198.51.100.7"),
        ("192.0.2.1, 198.51.100.7, 10.1.2.3", "198.51.100.7"),
        ("  2001:db8::1 ", "2001:db8::1"),
        ("::ffff:198.51.100.8", "198.51.100.8"),
        # Not an address where the client's should be: the peer's.
        ("<script>", "127.0.0.1"),
        ("198.51.100.7, <script>", "127.0.0.1"),
        ("999.1.1.1", "127.0.0.1"),
        ("", "127.0.0.1"),
        # Only trusted proxies listed: the first of them.
        ("10.9.9.9, 10.1.1.1", "10.9.9.9"),
    ]
    for xff, _ in cases:
        resp = await client.get("/t/p.gif", params={"url": "https://acme.io/"},
                                headers={"User-Agent": "Mozilla/5.0 (X11) Firefox/120", "X-Forwarded-For": xff})
        assert resp.status == 200
    assert [e.ip for e in sink.events] == [want for _, want in cases]
    flagged = {e.ip: e.machine for e in sink.events}
    assert flagged["198.51.100.7"] == 0.0  # machine matching uses the resolved client address
    assert flagged["127.0.0.1"] == 1.0


async def test_forwarded_for_on_sdk_calls(make_client: Make, sink: MemorySink) -> None:
    trusted = await make_client(SETTINGS.with_(trusted_proxies="127.0.0.1"))
    untrusted = await make_client()
    msg = {"type": "page", "anonymousId": "anon-1", "properties": {"url": "https://acme.io/"},
           "context": {"userAgent": "Mozilla/5.0 (X11) Firefox/120"}}
    for c in (trusted, untrusted):
        resp = await c.post("/v1/batch", json={"batch": [msg]}, headers={**AUTH, "X-Forwarded-For": "192.0.2.44"})
        assert resp.status == 200
    assert [(e.ip, e.machine) for e in sink.events] == [("192.0.2.44", 1.0), ("127.0.0.1", 1.0)]


def test_trusted_proxies_setting_must_be_ranges(sink: MemorySink) -> None:
    with pytest.raises(SettingsError, match="LEADROUTER_TRUSTED_PROXIES"):
        create_app(SETTINGS.with_(trusted_proxies="10.0.0.0/8, lb.internal"), sink)


# =========================================================================== 4. nesting depth


async def test_deeply_nested_form_field_is_a_400_naming_it(client: Client, sink: MemorySink) -> None:
    resp = await client.post("/t/form", json=form(company=nested(500)), headers={"Origin": SITE})
    assert resp.status == 400, await resp.text()
    detail = (await resp.json())["detail"]
    assert "company" in detail and str(MAX_JSON_DEPTH) in detail
    assert sink.events == []


async def test_deep_but_allowed_form_value_is_a_422_that_does_not_break(client: Client) -> None:
    resp = await client.post("/t/form", json=form(company=nested(MAX_JSON_DEPTH - 1)))
    assert resp.status == 422
    [problem] = (await resp.json())["problems"]
    assert problem["field"] == "company"


@pytest.mark.parametrize("call", ["batch", "track"])
async def test_deeply_nested_sdk_properties_are_a_400_naming_them(client: Client, sink: MemorySink,
                                                                  call: str) -> None:
    msg = {"type": "track", "userId": "u1", "event": "Clicked", "properties": nested(300)}
    body = {"batch": [msg]} if call == "batch" else msg
    # json, not orjson: orjson refuses to write more than 254 levels.
    resp = await client.post(f"/v1/{call}", data=json.dumps(body), headers=AUTH)
    assert resp.status == 400, await resp.text()
    data = await resp.json()
    assert data["code"] == "too_deeply_nested"
    assert "properties" in data["message"] and str(MAX_JSON_DEPTH) in data["message"]
    assert sink.events == []
    ok = {"batch": [{**msg, "properties": nested(20)}]} if call == "batch" else {**msg, "properties": nested(20)}
    resp = await client.post(f"/v1/{call}", data=orjson.dumps(ok), headers=AUTH)
    assert resp.status == 200


async def test_deeply_nested_snowplow_payload_is_a_400(client: Client) -> None:
    resp = await client.post(TP2, data=json.dumps({"schema": PAYLOAD_SCHEMA, "data": [nested(300)]}))
    assert resp.status == 400
    assert (await resp.json())["code"] == "too_deeply_nested"


# =========================================================================== 5. CORS


@pytest.mark.parametrize(("method", "path", "kwargs"), [
    ("POST", "/t/form", {"json": form()}),
    ("OPTIONS", "/t/form", {}),
    ("POST", "/v1/track", {"json": {"userId": "u1", "event": "Clicked"}, "headers": AUTH}),
    ("OPTIONS", "/v1/batch", {}),
    ("POST", TP2, {"json": {"schema": PAYLOAD_SCHEMA, "data": []}}),
    ("OPTIONS", TP2, {}),
])
async def test_credentials_only_for_listed_origins(client: Client, method: str, path: str,
                                                   kwargs: dict[str, Any]) -> None:
    headers = kwargs.pop("headers", {})
    for origin, allow, credentials in [(SITE, SITE, "true"), ("https://app.acme.io", "https://app.acme.io", "true"),
                                       ("https://evil.example", "*", None), ("null", "*", None),
                                       (SITE + ".evil.example", "*", None), (SITE + "/", "*", None)]:
        resp = await client.request(method, path, headers={**headers, "Origin": origin,
                                                           "Access-Control-Request-Method": "POST"}, **kwargs)
        assert resp.status < 300, (origin, resp.status, await resp.text())
        assert resp.headers["Access-Control-Allow-Origin"] == allow, origin
        assert resp.headers.get("Access-Control-Allow-Credentials") == credentials, origin
        assert resp.headers["Vary"] == "Origin"


async def test_no_listed_origins_means_no_credentials_for_anyone(make_client: Make) -> None:
    client = await make_client(SETTINGS.with_(cors_origins=""))
    resp = await client.post("/t/form", json=form(), headers={"Origin": SITE})
    assert resp.status == 202
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers


def test_cors_origins_setting_must_be_origins(sink: MemorySink) -> None:
    for bad in ("www.acme.io", "https://www.acme.io/", "https://www.acme.io/path", "*"):
        with pytest.raises(SettingsError, match="LEADROUTER_CORS_ORIGINS"):
            create_app(SETTINGS.with_(cors_origins=bad), sink)
