"""The public collector against abusive requests.

The collector app is served by aiohttp's test server on 127.0.0.1 with an in-memory sink;
every request goes to it over a real socket.  The connection timeouts need the production
listener and are in tests/integration/test_collector_hardening.py.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from models import Event
from router.errors import SettingsError
from router.ingest.app import MAX_FORM_BYTES, create_app
from router.ingest.segment import MAX_JSON_DEPTH
from router.settings import Settings

SECRET = "hardening-secret-0123456789abcdef"
NOW = 1_800_000_000.0
SITE = "https://www.acme.io"
SETTINGS = Settings.of(token_secret=SECRET, segment_write_keys="WK_HARD", machine_networks="127.0.0.0/8, 192.0.2.0/24",
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


# =========================================================================== 2. compressed bodies


@functools.cache
def bomb(mib: int = 128) -> bytes:
    """A gzip body of about mib KiB that expands to ``mib`` MiB of zeros."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    return b"".join([*(c.compress(block) for _ in range(mib)), c.flush()])


async def test_routes_that_read_no_body_never_decompress_it(make_client: Make) -> None:
    """A bomb sent to a 404, a wrong method or a 401 is not inflated (before: about 0.5 s CPU each here)."""
    client = await make_client()
    no_keys = await make_client(SETTINGS.with_(segment_write_keys=""))
    body = bomb()
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    start = time.process_time()
    for c, method, path, extra, status in [
        (client, "POST", "/nope", {}, 404),
        (client, "PUT", "/t/form", {}, 405),
        (client, "POST", "/v1/batch", {"Authorization": "Basic " + base64.b64encode(b"WRONG:").decode()}, 401),
        (no_keys, "POST", "/v1/batch", AUTH, 401),
    ]:
        resp = await c.request(method, path, data=body, headers={**headers, **extra})
        assert resp.status == status
        await resp.read()
    spent = time.process_time() - start
    assert spent < 0.3, f"{spent:.2f} s of CPU for four requests that read no body"


@pytest.mark.parametrize(("path", "extra"), [("/t/form", {}), ("/v1/batch", AUTH), (TP2, {})])
async def test_a_bomb_is_stopped_at_the_route_limit(client: Client, sink: MemorySink, path: str,
                                                    extra: dict[str, str]) -> None:
    start = time.process_time()
    resp = await client.post(path, data=bomb(), headers={"Content-Encoding": "gzip",
                                                         "Content-Type": "application/json", **extra})
    spent = time.process_time() - start
    assert resp.status == 413
    assert spent < 0.3, f"{spent:.2f} s of CPU to refuse a bomb"
    assert sink.events == []


@pytest.mark.parametrize(("path", "extra", "body"), [
    ("/t/form", {}, orjson.dumps(form())),
    ("/v1/track", AUTH, orjson.dumps({"userId": "u1", "event": "Clicked"})),
    (TP2, {}, orjson.dumps({"schema": PAYLOAD_SCHEMA, "data": [{"e": "pv", "url": "https://acme.io/", "eid": "e1", "duid": "d1"}]})),
])
async def test_truncated_or_trailing_compressed_bodies_are_400(client: Client, sink: MemorySink, path: str,
                                                               extra: dict[str, str], body: bytes) -> None:
    gz = gzip.compress(body)
    deflated = zlib.compress(body)
    headers = {"Content-Type": "application/json", **extra}
    for encoding, data in [("gzip", gz[:-8]), ("gzip", gz[:len(gz) // 2]), ("gzip", b"\x1f\x8bjunk"),
                           ("deflate", deflated[:-4]), ("deflate", deflated + b"trailing")]:
        resp = await client.post(path, data=data, headers={**headers, "Content-Encoding": encoding})
        assert resp.status == 400, (encoding, data[-8:], resp.status, await resp.text())
        assert resp.content_type == "application/json"
    assert sink.events == []
    # Complete bodies are read: gzip, x-gzip, two gzip members, zlib deflate and raw deflate.
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = raw.compress(body) + raw.flush()
    half = len(body) // 2
    for encoding, data in [("gzip", gz), ("x-gzip", gz), ("gzip", gzip.compress(body[:half]) + gzip.compress(body[half:])),
                           ("deflate", deflated), ("deflate", raw_deflate), ("identity", body)]:
        resp = await client.post(path, data=data, headers={**headers, "Content-Encoding": encoding})
        assert resp.status in (200, 202), (encoding, resp.status, await resp.text())


async def test_unsupported_encodings_are_415(client: Client) -> None:
    for encoding in ("br", "zstd", "compress", "gzip, gzip"):
        resp = await client.post("/t/form", data=b"{}", headers={"Content-Type": "application/json",
                                                                 "Content-Encoding": encoding})
        assert resp.status == 415, encoding
        assert "gzip" in (await resp.json())["detail"]


async def test_compressed_multipart_form_is_read_and_bounded(client: Client, sink: MemorySink) -> None:
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"form_id\"\r\n\r\ndemo-request\r\n"
            b"--xyz\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\njane@acme.com\r\n--xyz--\r\n")
    headers = {"Content-Type": "multipart/form-data; boundary=xyz", "Content-Encoding": "gzip"}
    resp = await client.post("/t/form", data=gzip.compress(body), headers=headers)
    assert resp.status == 202, await resp.text()
    assert sink.events[-1].email == "jane@acme.com"
    big = body.replace(b"demo-request", b"x" * (2 * MAX_FORM_BYTES))
    resp = await client.post("/t/form", data=gzip.compress(big), headers=headers)
    assert resp.status == 413
    resp = await client.post("/t/form", data=gzip.compress(body)[:-8], headers=headers)
    assert resp.status == 400


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
