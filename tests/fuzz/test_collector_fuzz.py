"""Hypothesis fuzzing of the collector's HTTP inputs, for a bounded number of examples.

The collector app (``router.ingest.app.create_app``) is served by aiohttp's
``TestServer`` with an in-memory sink: this fuzzes the HTTP layer, not Kafka
(the fault tests in ``tests/faults`` cover the real broker).  The sink can be
told to behave like a full spool (``SpoolFull``) so the 503 path is fuzzed too.

Properties, whatever the input:

* no 5xx, except 503 from a full spool;
* the pixels (``/t/p.gif``, ``/t/o/<token>.gif``, Snowplow ``/i``) always answer
  200 with the 43-byte GIF;
* a form answers only 202, a 4xx or 503; a 202 hands exactly one valid
  ``form_fill`` on (its ``event_id`` is the one answered), a 4xx hands on nothing;
* a click redirects only to the URL signed in a genuine click token;
* Segment and Snowplow answer JSON/text in their documented status set.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import re
import string
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import pytest
from aiohttp import DummyCookieJar
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from yarl import URL

from models import Event, EventType
from router.ingest.app import create_app
from router.ingest.request import GIF
from router.ingest.segment import FORM_ID_RE, valid_email
from router.ingest.spool import SpoolFull
from router.settings import Settings
from router.tokens import mint_token, verify_token

SECRET = "fuzz-secret-0123456789abcdef"
WRITE_KEY = "WK_FUZZ"
# Rate limits off: the fuzzer posts thousands of bodies from one address, and what is fuzzed is the parsing
# (the limits answer 429 before a body is read; tests/integration/test_form_spam.py covers them).
SETTINGS = Settings.of(token_secret=SECRET, segment_write_keys=WRITE_KEY, rate_limit_form_per_ip=0,
                       rate_limit_form_per_visitor=0, rate_limit_pixel_per_ip=0, rate_limit_pixel_per_visitor=0,
                       rate_limit_sdk_per_ip=0)
VISITOR_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
FORM_STATUSES = {202, 400, 413, 415, 422, 503}
# aiohttp answers a request line longer than 8190 bytes with its own 400 before any handler runs
# (max_line_size); a pixel URL that long cannot get its GIF, so the fuzzing stays below it.
MAX_REQUEST_LINE = 8000


def fuzz(n: int) -> settings:
    # The whole module stays well under 60 s on a 2-core machine.
    return settings(max_examples=n, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class FuzzSink:
    """The collector's EventSink, in memory; ``full`` makes it refuse like a full spool."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.full = False

    async def send(self, event: Event) -> None:
        if self.full:
            raise SpoolFull("fuzz: the spool is full")
        self.events.append(event)

    def take(self) -> list[Event]:
        out, self.events = self.events, []
        return out


Client = TestClient[Any, Any]


@pytest.fixture
async def http() -> AsyncIterator[tuple[Client, FuzzSink]]:
    sink = FuzzSink()
    client: Client = TestClient(TestServer(create_app(SETTINGS, sink)), cookie_jar=DummyCookieJar())
    await client.start_server()
    yield client, sink
    await client.close()


# --------------------------------------------------------------------------- strategies

text = st.text(st.characters(codec="utf-8"), max_size=80)
short = st.text(st.characters(codec="utf-8"), max_size=20)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
urlish = st.one_of(
    text,
    st.sampled_from(["https://www.example-saas.com/pricing?utm_source=x", "http://a.b/", "javascript:alert(1)",
                     "ftp://x/y", "//no-scheme", "https://", "https://a.b/" + "x" * 3000, "data:text/html,hi"]),
    st.builds(lambda p, q: f"https://acme.io/{p}?{q}", text, text),
)
vids = st.one_of(st.text(st.sampled_from(string.ascii_letters + string.digits + "_-"), min_size=0, max_size=70),
                 short)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
                        text)
json_value = st.recursive(json_scalar, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(short, kids, max_size=4)), max_leaves=12)


def nest(depth: int, leaf: Any, in_list: bool) -> Any:
    for _ in range(depth):
        leaf = [leaf] if in_list else {"a": leaf}
    return leaf


# Nested past the collector's depth limit (32) and past what orjson writes (254): a 400, never a 500.
deep_value = st.builds(nest, st.integers(25, 600), json_scalar, st.booleans())


def dumps(value: Any) -> bytes:
    """orjson, or the standard library's json for what orjson refuses to write (nesting past 254)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value).encode()


emails = st.one_of(st.emails().map(str), text, st.sampled_from(["jane@acme.com", " JANE@ACME.COM ", "a@b", "@",
                                                                "x@y.z" * 30, "jane@acme.com\n"]))
form_ids = st.one_of(st.sampled_from(["demo-request", "contact-us", "webinar-registration", "a:b.c_d"]), text)


def pixel_headers() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({}, optional={
        "DNT": st.sampled_from(["1", "0", "yes", ""]),
        "Sec-GPC": st.sampled_from(["1", "0", ""]),
        "Cookie": st.builds(lambda v: f"lr_vid={quote(v)}", vids),
        "Referer": header_text,
        "User-Agent": st.one_of(header_text, st.sampled_from([
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "Googlebot/2.1", "curl/8.0", ""])),
        "X-Forwarded-For": header_text,
        "Origin": header_text,
    })


def assert_gif(status: int, body: bytes, ctype: str | None) -> None:
    assert status == 200, (status, body[:200])
    assert body == GIF and len(body) == 43
    assert ctype == "image/gif"


# --------------------------------------------------------------------------- pixel


@fuzz(350)
@given(params=st.dictionaries(st.one_of(st.sampled_from(["url", "u", "vid", "ref", "r", "title", "t",
                                                         "utm_source", "utm_campaign"]), short),
                              st.one_of(urlish, vids, text), max_size=6),
       headers=pixel_headers(), full=st.booleans())
async def test_pixel_always_answers_the_gif(http: tuple[Client, FuzzSink], params: dict[str, str],
                                            headers: dict[str, str], full: bool) -> None:
    client, sink = http
    sink.full = full
    query = urlencode(params)
    assume(len(query) < MAX_REQUEST_LINE)
    async with client.get("/t/p.gif?" + query, headers=headers) as r:
        assert_gif(r.status, await r.read(), r.content_type)
    events = sink.take()
    assert len(events) <= 1
    for ev in events:
        assert ev.type is EventType.PAGE_VIEW
        assert ev.visitor_id is not None and VISITOR_RE.match(ev.visitor_id)
        assert ev.url is None or ev.url.startswith(("http://", "https://"))
        Event.from_dict(orjson.loads(orjson.dumps(ev.to_dict())))  # what Kafka carries decodes again


@fuzz(300)
@given(raw=st.binary(max_size=300))
async def test_pixel_survives_any_query_bytes(http: tuple[Client, FuzzSink], raw: bytes) -> None:
    client, _ = http
    # Any bytes, percent-encoded, with the separators left in so keys and values split oddly.
    query = quote(raw, safe="=&;+%")
    async with client.get(f"/t/p.gif?{query}") as r:
        assert_gif(r.status, await r.read(), r.content_type)


# --------------------------------------------------------------------------- forms


def form_fields() -> st.SearchStrategy[dict[str, Any]]:
    known = st.fixed_dictionaries({}, optional={
        "form_id": form_ids, "email": emails, "first_name": text, "last_name": text, "company": text,
        "job_title": text, "country": short, "region": short, "phone": short,
        "consent": st.sampled_from(["yes", "no", "true", "false", "", "maybe", "1", "0"]), "vid": vids,
        "url": urlish, "utm_source": short,
    })
    return st.builds(lambda a, b: {**b, **a}, known, st.dictionaries(short, text, max_size=3))


def check_form_answer(status: int, body: bytes, ctype: str | None, events: list[Event], full: bool) -> None:
    assert status in FORM_STATUSES, (status, body[:300])
    assert status != 503 or full, "503 without a full spool"
    if status in (400, 413, 415) and ctype == "text/plain":
        # Rejected by aiohttp's HTTP parser before the handler (e.g. an undecodable
        # Content-Encoding): a plain-text 4xx, and nothing handed on.
        assert events == [], (status, events)
        return
    assert ctype == "application/json", (status, ctype, body[:200])
    data = orjson.loads(body)
    if status == 202:
        assert len(events) == 1, events
        ev = events[0]
        assert data["accepted"] is True and data["event_id"] == ev.event_id
        assert ev.type is EventType.FORM_FILL and ev.email and valid_email(ev.email) and ev.email == ev.email.lower()
        assert ev.form_id is not None and FORM_ID_RE.match(ev.form_id)
        Event.from_dict(orjson.loads(orjson.dumps(ev.to_dict())))
    else:
        assert events == [], (status, events)
        if status == 422:
            assert {p["field"] for p in data["problems"]}, data


@fuzz(350)
@given(fields=form_fields(), full=st.booleans(), dnt=st.booleans())
async def test_form_urlencoded(http: tuple[Client, FuzzSink], fields: dict[str, Any], full: bool,
                               dnt: bool) -> None:
    client, sink = http
    sink.full = full
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if dnt:
        headers["DNT"] = "1"
    async with client.post("/t/form", data=urlencode({k: str(v) for k, v in fields.items()}).encode(),
                           headers=headers) as r:
        body = await r.read()
        check_form_answer(r.status, body, r.content_type, sink.take(), full)


@fuzz(350)
@given(body=st.one_of(st.builds(lambda f, extra: {**{k: v for k, v in f.items()}, **extra}, form_fields(),
                                st.dictionaries(short, json_value, max_size=3)),
                      json_value,
                      st.fixed_dictionaries({"form_id": json_value, "email": json_value},
                                            optional={"consent": json_value,
                                                      "company": st.one_of(json_value, deep_value),
                                                      "vid": json_value})),
       full=st.booleans())
async def test_form_json(http: tuple[Client, FuzzSink], body: Any, full: bool) -> None:
    client, sink = http
    sink.full = full
    async with client.post("/t/form", data=dumps(body), headers={"Content-Type": "application/json"}) as r:
        check_form_answer(r.status, await r.read(), r.content_type, sink.take(), full)


@fuzz(300)
@given(raw=st.binary(max_size=400), ctype=st.sampled_from([
    "application/json", "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data; boundary=xyz", "text/plain", "application/json; charset=utf-16"]),
    encoding=st.sampled_from([None, "gzip", "deflate", "br", "identity", "x-unknown"]))
async def test_form_raw_bodies(http: tuple[Client, FuzzSink], raw: bytes, ctype: str,
                               encoding: str | None) -> None:
    client, sink = http
    if ctype.startswith("multipart/") and encoding in ("gzip", "deflate"):
        # A known product bug (a 500), pinned by test_multipart_form_with_undecodable_body_is_a_4xx below.
        raw = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    # Connection: close: after a body aiohttp could not decode, it drops the keep-alive connection.
    headers = {"Content-Type": ctype, "Connection": "close"}
    if encoding:
        headers["Content-Encoding"] = encoding
    async with client.post("/t/form", data=raw, headers=headers) as r:
        check_form_answer(r.status, await r.read(), r.content_type, sink.take(), False)


# --------------------------------------------------------------------------- e-mail tokens


def sign(body: str) -> str:
    mac = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def signed(claims: Any) -> str:
    """A token signed with the real secret around arbitrary claims (a buggy minting tool)."""
    body = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"{body}.{sign(body)}"


genuine_open = st.builds(lambda e, c: mint_token(SECRET, email=e, campaign=c, ttl_s=3600),
                         st.emails().map(str), short)
genuine_click = st.builds(lambda e, u: mint_token(SECRET, email=e, campaign="c", ttl_s=3600, kind="click", url=u),
                          st.emails().map(str), urlish.filter(bool))
mutated = st.builds(lambda t, i, ch: t[:i % (len(t) + 1)] + ch + t[i % (len(t) + 1) + 1:],
                    genuine_open, st.integers(0, 400), st.sampled_from(["", "A", ".", "%2e", "~", "é"]))
tokens = st.one_of(
    genuine_open, genuine_click, mutated, text, vids,
    st.builds(signed, st.one_of(json_value, st.fixed_dictionaries(
        {"e": json_value, "c": json_value, "x": st.one_of(st.integers(0, 2**62), json_value)},
        optional={"k": st.sampled_from(["open", "click", "other"]), "u": st.one_of(urlish, json_value),
                  "s": json_value}))),
).filter(lambda t: t and t not in (".", "..") and not set(t) & set("{}"))
# An empty token is another path (/t/o/.gif); aiohttp's {token} never matches '{' or '}' (a 404);
# the client normalises "/t/c/." and "/t/c/.." away (dot segments): none is a token a mail client could send.


@fuzz(350)
@given(token=tokens, full=st.booleans(), ua=header_text)
async def test_email_open_always_answers_the_gif(http: tuple[Client, FuzzSink], token: str, full: bool,
                                                 ua: str) -> None:
    client, sink = http
    sink.full = full
    async with client.get(f"/t/o/{quote(token, safe='')}.gif", headers={"User-Agent": ua}) as r:
        assert_gif(r.status, await r.read(), r.content_type)
    for ev in sink.take():
        assert ev.type is EventType.EMAIL_OPEN


@fuzz(350)
@given(token=tokens, full=st.booleans())
async def test_email_click_redirects_only_where_signed(http: tuple[Client, FuzzSink], token: str,
                                                       full: bool) -> None:
    client, sink = http
    sink.full = full
    async with client.get(f"/t/c/{quote(token, safe='')}", allow_redirects=False) as r:
        body = await r.read()
        assert r.status in (302, 400), (r.status, body[:200])
        if r.status == 302:
            claims = verify_token(SECRET, token)  # opaque (2.) or signed (v1) alike
            # The Location is the signed URL (aiohttp may percent-encode characters such as '}').
            assert claims.kind == "click" and claims.url and URL(r.headers["Location"]) == URL(claims.url)
            assert r.headers["Location"].startswith(("http://", "https://"))
    events = sink.take()
    assert all(ev.type is EventType.EMAIL_CLICK for ev in events) and len(events) <= 1


# --------------------------------------------------------------------------- Segment / Snowplow

segment_messages = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["identify", "track", "page", "screen", "group", "alias", "nope"]),
    "userId": st.one_of(short, json_value), "anonymousId": st.one_of(vids, json_value),
    "messageId": st.one_of(short, json_value), "event": st.one_of(
        st.sampled_from(["Form Submitted", "Demo Requested", "Signed Up", "Clicked"]), json_value),
    "previousId": short, "groupId": st.one_of(short, json_value),
    "traits": st.one_of(st.dictionaries(short, json_value, max_size=4),
                        st.fixed_dictionaries({"email": emails}), json_value),
    "properties": st.one_of(st.dictionaries(short, json_value, max_size=4),
                            st.fixed_dictionaries({"email": emails, "form_id": form_ids, "url": urlish}),
                            json_value, deep_value),
    "context": st.one_of(st.fixed_dictionaries({}, optional={
        "ip": short, "userAgent": short, "page": st.dictionaries(short, urlish, max_size=3),
        "traits": st.dictionaries(short, json_value, max_size=3), "campaign": json_value}), json_value),
    "timestamp": st.one_of(st.sampled_from(["2026-11-22T10:00:00Z", "not a date", "9999-99-99"]), json_value),
    "sentAt": st.one_of(st.sampled_from(["2026-11-22T10:00:01.5+01:00"]), json_value),
    "writeKey": st.sampled_from([WRITE_KEY, "wrong"]),
})


@fuzz(350)
@given(call=st.sampled_from(["identify", "track", "page", "screen", "group", "alias", "batch", "t", "b", "nope"]),
       body=st.one_of(segment_messages,
                      st.fixed_dictionaries({"batch": st.lists(st.one_of(segment_messages, json_value),
                                                               max_size=5)},
                                            optional={"context": json_value, "writeKey": st.just(WRITE_KEY)}),
                      json_value),
       auth=st.sampled_from(["key", "wrong", "none", "garbage"]), full=st.booleans())
async def test_segment_api(http: tuple[Client, FuzzSink], call: str, body: Any, auth: str, full: bool) -> None:
    client, sink = http
    sink.full = full
    headers = {"Content-Type": "application/json"}
    if auth != "none":
        user = {"key": WRITE_KEY, "wrong": "nope"}.get(auth)
        headers["Authorization"] = ("Basic " + base64.b64encode(f"{user}:".encode()).decode()) if user else "Basic %%%"
    async with client.post(f"/v1/{call}", data=dumps(body), headers=headers) as r:
        raw = await r.read()
        assert r.status in {200, 400, 401, 404, 413, 503}, (r.status, raw[:300])
        assert r.status != 503 or full
        if r.status != 404:
            data = orjson.loads(raw)
            assert data.get("success") is (r.status == 200), data
    if r.status != 200:
        assert sink.take() == []
    for ev in sink.take():
        Event.from_dict(orjson.loads(orjson.dumps(ev.to_dict())))


snowplow_params = st.fixed_dictionaries({}, optional={
    "e": st.sampled_from(["pv", "se", "ue", "pp", "tr", "x", ""]), "url": urlish, "refr": urlish,
    "uid": short, "duid": vids, "nuid": vids, "eid": short, "aid": short, "page": text, "se_ca": short,
    "se_ac": short, "dtm": short, "stm": short, "tv": short, "p": short,
    "ue_pr": st.one_of(st.builds(lambda v: orjson.dumps(v).decode(), json_value), text),
    "ue_px": st.one_of(st.builds(lambda v: base64.urlsafe_b64encode(orjson.dumps(v)).decode(), json_value),
                       st.builds(lambda v: base64.urlsafe_b64encode(orjson.dumps({
                           "schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
                           "data": {"schema": "iglu:com.snowplowanalytics.snowplow/submit_form/jsonschema/1-0-0",
                                    "data": v}})).decode(),
                                 st.fixed_dictionaries({"formId": form_ids, "elements": st.lists(
                                     st.fixed_dictionaries({"name": st.sampled_from(["email", "name", "x"]),
                                                            "value": st.one_of(emails, json_value)}),
                                     max_size=3)})),
                       text),
    "co": text, "cx": text,
})


@fuzz(350)
@given(params=snowplow_params, headers=pixel_headers(), full=st.booleans())
async def test_snowplow_get_always_answers_the_gif(http: tuple[Client, FuzzSink], params: dict[str, str],
                                                   headers: dict[str, str], full: bool) -> None:
    client, sink = http
    sink.full = full
    query = urlencode(params)
    assume(len(query) < MAX_REQUEST_LINE)
    async with client.get("/i?" + query, headers=headers) as r:
        assert_gif(r.status, await r.read(), r.content_type)
    assert len(sink.take()) <= 1


@fuzz(350)
@given(body=st.one_of(
    st.fixed_dictionaries({"schema": st.one_of(st.just(
        "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"), text),
        "data": st.one_of(st.lists(st.one_of(snowplow_params, json_value), max_size=5), json_value)}),
    json_value), full=st.booleans())
async def test_snowplow_post(http: tuple[Client, FuzzSink], body: Any, full: bool) -> None:
    client, sink = http
    sink.full = full
    async with client.post("/com.snowplowanalytics.snowplow/tp2", data=orjson.dumps(body),
                           headers={"Content-Type": "application/json; charset=utf-8"}) as r:
        raw = await r.read()
        assert r.status in {200, 400, 413, 503}, (r.status, raw[:300])
        assert r.status != 503 or full
    if r.status != 200:
        assert sink.take() == []
    assert len(sink.take()) <= 5


# --------------------------------------------------------------------------- bugs the fuzzing found


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_multipart_form_with_undecodable_body_is_a_4xx(http: tuple[Client, FuzzSink], encoding: str) -> None:
    client, sink = http
    async with client.post("/t/form", data=b"--xyz\r\nnot compressed at all\r\n--xyz--\r\n", headers={
            "Content-Type": "multipart/form-data; boundary=xyz", "Content-Encoding": encoding,
            "Connection": "close"}) as r:
        body = await r.read()
        assert r.status < 500, (r.status, body[:200])
    assert sink.take() == []
