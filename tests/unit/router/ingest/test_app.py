"""The collector's HTTP layer, served by aiohttp's test server with an in-memory sink.

Kafka is not involved here: the sink is the seam the collector produces through
(``EventSink``), so these tests pin down what each endpoint answers and which
event it hands on.  The real broker path is covered by the e2e tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from models import Event, EventType
from router.ingest.app import MAX_FORM_BYTES, create_app, create_metrics_app
from router.ingest.request import GIF
from router.ingest.segment import MAX_FIELD, MAX_TEXT
from router.metrics import REGISTRY
from router.settings import Settings
from router.storage.kafka import ProduceError
from router.tokens import mint_token

SECRET = "collector-secret-0123456789abcdef"
NOW = 1_800_000_000.0
ORIGIN = "https://www.acme.io"
# The test client connects from 127.0.0.1: a trusted proxy here, so X-Forwarded-For is believed
# (10.0.0.0/8 is the site's own load balancer); ORIGIN is the site that may send credentials.
SETTINGS = Settings.of(token_secret=SECRET, trusted_proxies="127.0.0.0/8, 10.0.0.0/8", cors_origins=ORIGIN)
VID = "visitor_0123456789"


class MemorySink:
    """Keeps what the collector produced."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def send(self, event: Event) -> None:
        self.events.append(event)


class FailingSink:
    """A broker that never acknowledges."""

    def __init__(self, exc: Exception | None = None) -> None:
        self.exc = exc or ProduceError("Kafka did not acknowledge event: broker down")
        self.calls = 0

    async def send(self, event: Event) -> None:
        self.calls += 1
        raise self.exc


Make = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make_client() -> AsyncIterator[Make]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(sink: Any, settings: Settings = SETTINGS,
                   clock: Callable[[], float] = lambda: NOW) -> TestClient[web.Request, web.Application]:
        client = TestClient(TestServer(create_app(settings, sink, clock)))
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
async def client(make_client: Make, sink: MemorySink) -> TestClient[web.Request, web.Application]:
    return await make_client(sink)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def invalid(endpoint: str, field: str) -> float:
    return sample("leadrouter_collector_invalid_total", endpoint=endpoint, field=field)


def requests_total(endpoint: str, outcome: str) -> float:
    return sample("leadrouter_collector_requests_total", endpoint=endpoint, outcome=outcome)


def set_cookies(resp: Any) -> list[str]:
    return list(resp.headers.getall("Set-Cookie", []))


async def assert_gif(resp: Any) -> None:
    assert resp.status == 200
    body = await resp.read()
    assert body == GIF
    assert len(body) == 43
    assert body.startswith(b"GIF89a")
    assert resp.headers["Content-Type"] == "image/gif"
    cache = resp.headers["Cache-Control"]
    for word in ("no-cache", "no-store", "must-revalidate", "private", "max-age=0"):
        assert word in cache
    assert resp.headers["Pragma"] == "no-cache"
    assert resp.headers["Expires"] == "0"


# =========================================================================== pixel


async def test_pixel_answers_the_gif_and_produces_a_page_view(client: Any, sink: MemorySink) -> None:
    resp = await client.get("/t/p.gif", params={
        "url": "https://acme.io/pricing?plan=pro", "ref": "https://google.com/search?q=acme",
        "title": "Pricing | Acme",
    }, headers={"User-Agent": "Mozilla/5.0 test", "X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
    await assert_gif(resp)
    [ev] = sink.events
    assert ev.type is EventType.PAGE_VIEW
    assert ev.source == "pixel"
    assert ev.ts == NOW
    assert ev.url == "https://acme.io/pricing?plan=pro"
    assert ev.referrer == "https://google.com/search?q=acme"
    assert ev.title == "Pricing | Acme"
    assert ev.user_agent == "Mozilla/5.0 test"
    assert ev.ip == "203.0.113.7"
    assert ev.email is None
    assert ev.utm == {}
    assert len(ev.event_id) == 32


async def test_pixel_short_parameter_names(client: Any, sink: MemorySink) -> None:
    await assert_gif(await client.get("/t/p.gif", params={
        "u": "https://acme.io/docs", "r": "https://news.ycombinator.com/", "t": "Docs"}))
    [ev] = sink.events
    assert (ev.url, ev.referrer, ev.title) == ("https://acme.io/docs", "https://news.ycombinator.com/", "Docs")


async def test_pixel_uses_the_referer_header_as_page_url(client: Any, sink: MemorySink) -> None:
    await assert_gif(await client.get("/t/p.gif", headers={"Referer": "https://acme.io/features?utm_source=ads"}))
    [ev] = sink.events
    assert ev.url == "https://acme.io/features?utm_source=ads"
    assert ev.utm == {"utm_source": "ads"}


async def test_pixel_without_ip_header_uses_the_peer_address(client: Any, sink: MemorySink) -> None:
    await client.get("/t/p.gif")
    assert sink.events[0].ip == "127.0.0.1"


async def test_pixel_each_hit_gets_its_own_event_id(client: Any, sink: MemorySink) -> None:
    for _ in range(3):
        await client.get("/t/p.gif")
    assert len({e.event_id for e in sink.events}) == 3


async def test_pixel_utm_from_parameters(client: Any, sink: MemorySink) -> None:
    await client.get("/t/p.gif", params={
        "url": "https://acme.io/?utm_source=fromurl", "utm_source": "newsletter", "utm_medium": "email",
        "utm_campaign": "q4", "utm_term": "crm", "utm_content": "hero", "utm_other": "ignored"})
    assert sink.events[0].utm == {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "q4",
                                  "utm_term": "crm", "utm_content": "hero"}


async def test_pixel_utm_from_page_url_when_no_parameters(client: Any, sink: MemorySink) -> None:
    await client.get("/t/p.gif", params={
        "url": "https://acme.io/pricing?utm_source=linkedin&utm_campaign=spring&utm_medium=&x=1"})
    assert sink.events[0].utm == {"utm_source": "linkedin", "utm_campaign": "spring"}


async def test_pixel_long_utm_and_title_are_truncated(client: Any, sink: MemorySink) -> None:
    await client.get("/t/p.gif", params={"utm_source": "s" * 1000, "title": "t" * 2000})
    ev = sink.events[0]
    assert ev.utm["utm_source"] == "s" * MAX_FIELD
    assert ev.title == "t" * MAX_TEXT


# --------------------------------------------------------------------------- visitor cookie


async def test_pixel_mints_and_sets_a_cookie_when_missing(client: Any, sink: MemorySink) -> None:
    resp = await client.get("/t/p.gif")
    await assert_gif(resp)
    vid = sink.events[0].visitor_id
    assert vid and len(vid) == 32
    [cookie] = set_cookies(resp)
    assert cookie.startswith(f"lr_vid={vid};")
    low = cookie.lower()
    assert "httponly" in low
    assert "path=/" in low
    assert f"max-age={SETTINGS.ingest.cookie_max_age_s}" in low
    assert "samesite=lax" in low
    assert "secure" not in low.replace("samesite", "")


async def test_pixel_reuses_the_cookie_it_is_sent(client: Any, sink: MemorySink) -> None:
    first = await client.get("/t/p.gif")
    minted = sink.events[0].visitor_id
    assert set_cookies(first)
    # The client's cookie jar now sends lr_vid back.
    second = await client.get("/t/p.gif")
    await assert_gif(second)
    assert sink.events[1].visitor_id == minted
    assert set_cookies(second) == []


async def test_pixel_cookie_wins_over_vid(client: Any, sink: MemorySink) -> None:
    resp = await client.get("/t/p.gif", params={"vid": "param_visitor_1"}, headers={"Cookie": f"lr_vid={VID}"})
    assert sink.events[0].visitor_id == VID
    assert set_cookies(resp) == []


async def test_pixel_honours_vid_and_sets_it_as_cookie(client: Any, sink: MemorySink) -> None:
    resp = await client.get("/t/p.gif", params={"vid": VID})
    await assert_gif(resp)
    assert sink.events[0].visitor_id == VID
    [cookie] = set_cookies(resp)
    assert cookie.startswith(f"lr_vid={VID};")


async def test_pixel_secure_cookie_settings(make_client: Make, sink: MemorySink) -> None:
    client = await make_client(sink, SETTINGS.with_(cookie_secure=True, cookie_name="my_vid"))
    resp = await client.get("/t/p.gif")
    [cookie] = set_cookies(resp)
    assert cookie.startswith(f"my_vid={sink.events[0].visitor_id};")
    assert "samesite=none" in cookie.lower()
    assert "secure" in cookie.lower().replace("samesite", "")


async def test_pixel_invalid_cookie_is_replaced_and_counted(client: Any, sink: MemorySink) -> None:
    before = invalid("pixel", "cookie")
    resp = await client.get("/t/p.gif", headers={"Cookie": "lr_vid=bad"})
    await assert_gif(resp)
    vid = sink.events[0].visitor_id
    assert vid != "bad" and vid is not None and len(vid) == 32
    assert set_cookies(resp)[0].startswith(f"lr_vid={vid};")
    assert invalid("pixel", "cookie") == before + 1


@pytest.mark.parametrize("vid", ["short", "has space in it!", "x" * 65, "<script>alert(1)</script>"])
async def test_pixel_invalid_vid_is_ignored_and_counted(client: Any, sink: MemorySink, vid: str) -> None:
    before = invalid("pixel", "vid")
    resp = await client.get("/t/p.gif", params={"vid": vid})
    await assert_gif(resp)
    minted = sink.events[0].visitor_id
    assert minted != vid and minted is not None and len(minted) == 32
    assert set_cookies(resp)[0].startswith(f"lr_vid={minted};")
    assert invalid("pixel", "vid") == before + 1


# --------------------------------------------------------------------------- garbage still gets the GIF


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "/relative/path", "ftp://acme.io/file", "https://", "http://[::1",
    "https://acme.io/" + "a" * 3000,
])
async def test_pixel_invalid_url_is_dropped_and_counted(client: Any, sink: MemorySink, url: str) -> None:
    before = invalid("pixel", "url")
    resp = await client.get("/t/p.gif", params={"url": url, "utm_source": "kept"})
    await assert_gif(resp)
    [ev] = sink.events
    assert ev.url is None
    assert ev.utm == {"utm_source": "kept"}
    assert invalid("pixel", "url") == before + 1


async def test_pixel_invalid_referrer_is_dropped_and_counted(client: Any, sink: MemorySink) -> None:
    before = invalid("pixel", "referrer")
    await assert_gif(await client.get("/t/p.gif", params={"url": "https://acme.io/", "ref": "android-app://x"}))
    assert sink.events[0].referrer is None
    assert sink.events[0].url == "https://acme.io/"
    assert invalid("pixel", "referrer") == before + 1


async def test_pixel_binary_garbage_still_answers_the_gif(client: Any, sink: MemorySink) -> None:
    resp = await client.get("/t/p.gif?url=%FF%FE%00&title=%00%01&vid=%C3%28&ref=%E2%82")
    await assert_gif(resp)


async def test_pixel_answers_the_gif_when_the_sink_fails(make_client: Make) -> None:
    failing = FailingSink()
    client = await make_client(failing)
    before_req = requests_total("pixel", "unavailable")
    before_fail = sample("leadrouter_produce_failures_total", topic=SETTINGS.kafka.topic_events)
    resp = await client.get("/t/p.gif", params={"url": "https://acme.io/"})
    await assert_gif(resp)
    assert failing.calls == 1
    assert requests_total("pixel", "unavailable") == before_req + 1
    assert sample("leadrouter_produce_failures_total", topic=SETTINGS.kafka.topic_events) == before_fail + 1


async def test_pixel_answers_the_gif_on_an_unexpected_error(make_client: Make) -> None:
    client = await make_client(FailingSink(RuntimeError("boom")))
    before = requests_total("pixel", "error")
    await assert_gif(await client.get("/t/p.gif"))
    assert requests_total("pixel", "error") == before + 1


async def test_pixel_accepted_requests_are_counted(client: Any) -> None:
    before = requests_total("pixel", "accepted")
    await client.get("/t/p.gif")
    assert requests_total("pixel", "accepted") == before + 1


# =========================================================================== email open


def open_token(**kw: Any) -> str:
    args: dict[str, Any] = {"email": "Jane@Acme.com", "campaign": "nov-webinar", "ttl_s": 3600, "now": NOW - 60}
    args.update(kw)
    return mint_token(SECRET, **args)


async def test_email_open_with_a_valid_token_produces_an_event(client: Any, sink: MemorySink) -> None:
    resp = await client.get(f"/t/o/{open_token()}.gif", headers={"User-Agent": "Outlook"})
    await assert_gif(resp)
    [ev] = sink.events
    assert ev.type is EventType.EMAIL_OPEN
    assert ev.source == "email"
    assert ev.email == "jane@acme.com"
    assert ev.campaign == "nov-webinar"
    assert ev.visitor_id is None
    assert ev.user_agent == "Outlook"
    assert ev.ts == NOW
    assert set_cookies(resp) == []


async def test_email_open_counts_accepted(client: Any) -> None:
    before = requests_total("email_open", "accepted")
    await client.get(f"/t/o/{open_token()}.gif")
    assert requests_total("email_open", "accepted") == before + 1


@pytest.mark.parametrize("token", [
    mint_token("another-secret-0123456789", email="jane@acme.com", campaign="c", ttl_s=3600, now=NOW),
    open_token()[:-4],  # truncated signature
    "not-a-token",
    "abc.def",
])
async def test_email_open_forged_or_garbage_token_gives_no_event(client: Any, sink: MemorySink, token: str) -> None:
    before_invalid = invalid("email_open", "token")
    before_rejected = requests_total("email_open", "rejected")
    resp = await client.get(f"/t/o/{token}.gif")
    await assert_gif(resp)
    assert sink.events == []
    assert invalid("email_open", "token") == before_invalid + 1
    assert requests_total("email_open", "rejected") == before_rejected + 1


async def test_email_open_expired_token_gives_no_event(make_client: Make, sink: MemorySink) -> None:
    token = open_token(ttl_s=60, now=NOW - 3600)
    client = await make_client(sink)
    before = invalid("email_open", "token")
    await assert_gif(await client.get(f"/t/o/{token}.gif"))
    assert sink.events == []
    assert invalid("email_open", "token") == before + 1
    # The same token is accepted by a collector whose clock is before the expiry.
    early = await make_client(sink, clock=lambda: NOW - 3600 + 30)
    await assert_gif(await early.get(f"/t/o/{token}.gif"))
    assert [e.email for e in sink.events] == ["jane@acme.com"]


async def test_email_open_refuses_click_tokens(client: Any, sink: MemorySink) -> None:
    token = open_token(kind="click", url="https://acme.io/pricing")
    before = invalid("email_open", "token")
    await assert_gif(await client.get(f"/t/o/{token}.gif"))
    assert sink.events == []
    assert invalid("email_open", "token") == before + 1


async def test_email_open_answers_the_gif_when_the_sink_fails(make_client: Make) -> None:
    failing = FailingSink()
    client = await make_client(failing)
    before = requests_total("email_open", "unavailable")
    await assert_gif(await client.get(f"/t/o/{open_token()}.gif"))
    assert failing.calls == 1
    assert requests_total("email_open", "unavailable") == before + 1


async def test_email_open_non_ascii_token_is_counted_as_invalid(client: Any, sink: MemorySink) -> None:
    before = invalid("email_open", "token")
    resp = await client.get("/t/o/" + quote("abc.dé") + ".gif")
    await assert_gif(resp)
    assert sink.events == []
    assert invalid("email_open", "token") == before + 1


# =========================================================================== forms


def good_form(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"form_id": "demo-request", "email": "jane@acme.com"}
    data.update(extra)
    return data


async def test_urlencoded_form_is_cleaned_and_produced(client: Any, sink: MemorySink) -> None:
    resp = await client.post("/t/form", data={
        "form_id": " demo-request ", "email": "  Jane.Doe@Acme.COM ", "first_name": "  Jane ",
        "last_name": "Doe", "company": "Acme Corp", "job_title": "VP Sales", "country": "us",
        "region": "california", "phone": "+1 555 0100", "consent": "Yes", "password": "hunter2",
        "name": "   ",
    }, headers={"User-Agent": "Mozilla/5.0", "Origin": ORIGIN})
    assert resp.status == 202
    body = await resp.json()
    [ev] = sink.events
    assert body == {"accepted": True, "event_id": ev.event_id, "visitor_id": ev.visitor_id}
    assert ev.type is EventType.FORM_FILL
    assert ev.source == "form"
    assert ev.form_id == "demo-request"
    assert ev.email == "jane.doe@acme.com"
    assert dict(ev.fields) == {
        "first_name": "Jane", "last_name": "Doe", "company": "Acme Corp", "job_title": "VP Sales",
        "country": "US", "region": "california", "phone": "+1 555 0100", "consent": "true",
    }
    assert ev.user_agent == "Mozilla/5.0"
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_json_form_is_cleaned_and_produced(client: Any, sink: MemorySink) -> None:
    resp = await client.post("/t/form", json=good_form(
        email="JANE@ACME.COM", country="de", region="by", consent=False, company="  Acme  ",
        url="https://acme.io/demo?utm_source=google&utm_campaign=q4", extra={"nested": 1}))
    assert resp.status == 202
    [ev] = sink.events
    assert ev.email == "jane@acme.com"
    assert dict(ev.fields) == {"company": "Acme", "country": "DE", "region": "BY", "consent": "false"}
    assert ev.url == "https://acme.io/demo?utm_source=google&utm_campaign=q4"
    assert ev.utm == {"utm_source": "google", "utm_campaign": "q4"}


@pytest.mark.parametrize(("consent", "expected"), [
    (True, "true"), (1, "true"), ("on", "true"), ("Y", "true"), (" TRUE ", "true"),
    (False, "false"), (0, "false"), ("no", "false"), ("", "false"), ("off", "false"),
])
async def test_consent_is_normalised(client: Any, sink: MemorySink, consent: Any, expected: str) -> None:
    resp = await client.post("/t/form", json=good_form(consent=consent))
    assert resp.status == 202
    assert sink.events[0].fields["consent"] == expected


async def test_form_utm_fields_win_over_the_page_url(client: Any, sink: MemorySink) -> None:
    await client.post("/t/form", json=good_form(url="https://acme.io/?utm_source=fromurl", utm_source="field"))
    assert sink.events[0].utm == {"utm_source": "field"}


async def test_form_page_url_falls_back_to_referer(client: Any, sink: MemorySink) -> None:
    await client.post("/t/form", data=good_form(), headers={"Referer": "https://acme.io/contact?utm_medium=cpc"})
    ev = sink.events[0]
    assert ev.url == "https://acme.io/contact?utm_medium=cpc"
    assert ev.utm == {"utm_medium": "cpc"}


async def test_form_invalid_page_url_is_dropped(client: Any, sink: MemorySink) -> None:
    resp = await client.post("/t/form", json=good_form(url="javascript:void(0)"))
    assert resp.status == 202
    assert sink.events[0].url is None


async def test_form_mints_a_visitor_cookie_when_missing(client: Any, sink: MemorySink) -> None:
    resp = await client.post("/t/form", json=good_form())
    vid = (await resp.json())["visitor_id"]
    assert vid == sink.events[0].visitor_id and len(vid) == 32
    [cookie] = set_cookies(resp)
    assert cookie.startswith(f"lr_vid={vid};")


async def test_form_uses_the_cookie_it_is_sent(client: Any, sink: MemorySink) -> None:
    resp = await client.post("/t/form", json=good_form(vid="body_visitor_99"), headers={"Cookie": f"lr_vid={VID}"})
    assert (await resp.json())["visitor_id"] == VID
    assert sink.events[0].visitor_id == VID
    assert set_cookies(resp) == []


async def test_form_vid_field_is_used_without_a_cookie(client: Any, sink: MemorySink) -> None:
    resp = await client.post("/t/form", data=good_form(vid=VID))
    assert sink.events[0].visitor_id == VID
    [cookie] = set_cookies(resp)
    assert cookie.startswith(f"lr_vid={VID};")


async def test_form_invalid_vid_field_is_ignored(client: Any, sink: MemorySink) -> None:
    await client.post("/t/form", json=good_form(vid="bad vid"))
    vid = sink.events[0].visitor_id
    assert vid != "bad vid" and vid is not None and len(vid) == 32


# --------------------------------------------------------------------------- 422


async def test_invalid_form_names_every_bad_field(client: Any, sink: MemorySink) -> None:
    fields = ("form_id", "email", "company", "job_title", "consent")
    before = {f: invalid("form", f) for f in fields}
    before_req = requests_total("form", "invalid")
    long_title = "x" * (MAX_FIELD + 1)
    resp = await client.post("/t/form", json={
        "email": "not-an-email", "company": 5, "job_title": long_title, "consent": "perhaps",
        "first_name": "Jane",
    }, headers={"Origin": ORIGIN})
    assert resp.status == 422
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    body = await resp.json()
    assert body["error"] == "invalid_form"
    problems = {p["field"]: p for p in body["problems"]}
    assert set(problems) == set(fields)
    assert problems["form_id"]["value"] is None
    assert problems["form_id"]["problem"] == "missing"
    assert problems["email"]["value"] == "not-an-email"
    assert problems["email"]["problem"] == "not a valid email address"
    assert problems["company"]["value"] == 5
    assert problems["company"]["problem"] == "must be text"
    assert problems["job_title"]["value"] == "x" * 40 + "…"
    assert str(MAX_FIELD) in problems["job_title"]["problem"]
    assert problems["consent"]["value"] == "perhaps"
    for p in body["problems"]:
        assert set(p) == {"field", "value", "problem", "fix"}
        assert p["fix"]
    assert sink.events == []
    assert {f: invalid("form", f) for f in fields} == {f: before[f] + 1 for f in fields}
    assert requests_total("form", "invalid") == before_req + 1


@pytest.mark.parametrize(("data", "field", "problem"), [
    ({"email": "jane@acme.com"}, "form_id", "missing"),
    ({"form_id": "  ", "email": "jane@acme.com"}, "form_id", "missing"),
    ({"form_id": "demo request!", "email": "jane@acme.com"}, "form_id", "invalid"),
    ({"form_id": "demo"}, "email", "missing"),
    ({"form_id": "demo", "email": "jane@acme"}, "email", "not a valid email address"),
    ({"form_id": "demo", "email": "jane doe@acme.com"}, "email", "not a valid email address"),
    ({"form_id": "demo", "email": "a@b@acme.com"}, "email", "not a valid email address"),
    ({"form_id": "demo", "email": ["jane@acme.com"]}, "email", "missing"),
    ({"form_id": "demo", "email": "jane@acme.com", "phone": 5551234}, "phone", "must be text"),
    ({"form_id": "demo", "email": "jane@acme.com", "consent": ["yes"]}, "consent", "not a yes/no value"),
])
async def test_each_invalid_field_gets_a_422(client: Any, sink: MemorySink, data: dict[str, Any], field: str,
                                             problem: str) -> None:
    resp = await client.post("/t/form", json=data)
    assert resp.status == 422
    [p] = (await resp.json())["problems"]
    assert p["field"] == field
    assert p["problem"] == problem
    assert p["value"] == data.get(field)
    assert sink.events == []


async def test_urlencoded_invalid_email_gets_a_422(client: Any, sink: MemorySink) -> None:
    resp = await client.post("/t/form", data={"form_id": "demo", "email": "nobody"})
    assert resp.status == 422
    assert (await resp.json())["problems"] == [{
        "field": "email", "value": "nobody", "problem": "not a valid email address",
        "fix": "send an address like jane@acme.com"}]


# --------------------------------------------------------------------------- 413 / 400


async def test_oversized_form_gets_413(client: Any, sink: MemorySink) -> None:
    before = requests_total("form", "too_large")
    big = b'{"form_id": "demo", "email": "jane@acme.com", "company": "' + b"x" * MAX_FORM_BYTES + b'"}'
    resp = await client.post("/t/form", data=big, headers={"Content-Type": "application/json", "Origin": ORIGIN})
    assert resp.status == 413
    body = await resp.json()
    assert body["error"] == "payload_too_large"
    assert str(MAX_FORM_BYTES) in body["detail"]
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert sink.events == []
    assert requests_total("form", "too_large") == before + 1


@pytest.mark.parametrize(("ctype", "body"), [
    ("application/json",
     b'{"form_id": "demo", "email": "jane@acme.com", "junk": "' + b"x" * (MAX_FORM_BYTES + 1000) + b'"}'),
    ("application/x-www-form-urlencoded",
     b"form_id=demo&email=jane%40acme.com&junk=" + b"x" * (MAX_FORM_BYTES + 1000)),
])
async def test_oversized_chunked_form_gets_413(client: Any, sink: MemorySink, ctype: str, body: bytes) -> None:
    async def chunked() -> AsyncIterator[bytes]:
        yield body

    resp = await client.post("/t/form", data=chunked(), headers={"Content-Type": ctype})
    assert resp.status == 413
    assert sink.events == []


@pytest.mark.parametrize(("body", "needle"), [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[1, 2, 3]", "must be an object"),
    (b'"demo"', "must be an object"),
])
async def test_bad_json_gets_400(client: Any, sink: MemorySink, body: bytes, needle: str) -> None:
    before = invalid("form", "body")
    resp = await client.post("/t/form", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    data = await resp.json()
    assert data["error"] == "invalid_body"
    assert needle in data["detail"]
    assert sink.events == []
    assert invalid("form", "body") == before + 1


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml"])
async def test_unsupported_content_type_gets_400(client: Any, sink: MemorySink, ctype: str) -> None:
    resp = await client.post("/t/form", data=b"form_id=demo&email=jane@acme.com", headers={"Content-Type": ctype})
    assert resp.status == 400
    data = await resp.json()
    assert data["error"] == "invalid_body"
    assert f"unsupported Content-Type {ctype!r}" in data["detail"]
    assert sink.events == []


# --------------------------------------------------------------------------- 503


async def test_form_gets_503_with_retry_after_when_the_sink_fails(make_client: Make) -> None:
    failing = FailingSink()
    client = await make_client(failing)
    before = requests_total("form", "unavailable")
    resp = await client.post("/t/form", json=good_form(), headers={"Origin": ORIGIN})
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert (await resp.json())["error"] == "unavailable"
    assert failing.calls == 1
    assert set_cookies(resp) == []
    assert requests_total("form", "unavailable") == before + 1


# --------------------------------------------------------------------------- CORS


async def test_cors_headers_echo_a_listed_origin(client: Any) -> None:
    resp = await client.post("/t/form", json=good_form(), headers={"Origin": ORIGIN})
    assert resp.status == 202
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Vary"] == "Origin"


async def test_no_cors_headers_without_an_origin(client: Any) -> None:
    resp = await client.post("/t/form", json=good_form())
    assert resp.status == 202
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_options_preflight(client: Any, sink: MemorySink) -> None:
    resp = await client.options("/t/form", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]
    assert int(resp.headers["Access-Control-Max-Age"]) > 0
    assert sink.events == []


# =========================================================================== health, metrics, routing


async def test_healthz(client: Any) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"ok": True}


async def test_metrics_exposes_the_invalid_counters(client: Any) -> None:
    before_url = invalid("pixel", "url")
    before_token = invalid("email_open", "token")
    await client.get("/t/p.gif", params={"url": "notaurl"})
    await client.get("/t/o/forged.sig.gif")
    # Issue 16.8: not on the public port; the private listener's app serves them.
    assert (await client.get("/metrics")).status == 404
    async with TestClient(TestServer(create_metrics_app())) as private:
        resp = await private.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    exposed: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "leadrouter_collector_invalid":
            for s in family.samples:
                if s.name == "leadrouter_collector_invalid_total":
                    exposed[(s.labels["endpoint"], s.labels["field"])] = s.value
    assert exposed[("pixel", "url")] == before_url + 1
    assert exposed[("email_open", "token")] == before_token + 1
    assert "leadrouter_collector_requests_total" in text


async def test_unknown_paths_and_methods(client: Any) -> None:
    assert (await client.get("/nope")).status == 404
    assert (await client.get("/t/form")).status == 405
    assert (await client.post("/t/p.gif")).status == 405


async def test_multipart_form_fills_are_read_and_bounded(client: Any, sink: MemorySink) -> None:
    form = aiohttp.FormData()
    form.add_field("form_id", "demo-request")
    form.add_field("email", "Jane@Acme.com")
    form.add_field("company", "Acme")
    form.add_field("cv", b"%PDF-1.7 ...", filename="cv.pdf", content_type="application/pdf")  # files are ignored
    resp = await client.post("/t/form", data=form)
    assert resp.status == 202
    [event] = sink.events
    assert event.email == "jane@acme.com" and event.form_id == "demo-request" and event.fields["company"] == "Acme"
    big = aiohttp.FormData()
    big.add_field("form_id", "demo-request")
    big.add_field("email", "jane@acme.com")
    big.add_field("notes", "x" * (MAX_FORM_BYTES + 10))
    resp = await client.post("/t/form", data=big)
    assert resp.status == 413 and len(sink.events) == 1


async def test_form_answers_are_kept_under_their_names(client: Any, sink: MemorySink) -> None:
    resp = await client.post("/t/form", json=good_form(**{
        "answer.occupation": "  Working   Professional ", "answer.specialization": "Finance Management",
        "answer.empty": "", "ref": "https://www.google.com/", "url": "https://acme.io/apply"}))
    assert resp.status == 202
    ev = sink.events[0]
    assert dict(ev.fields) == {"occupation": "Working Professional", "specialization": "Finance Management"}
    assert ev.referrer == "https://www.google.com/"


@pytest.mark.parametrize("extra", [
    {"answer.Bad-Name": "x"}, {"answer.email": "x@y.z"}, {"answer.country": "IN"}, {"answer.city": ["a"]},
    {"answer.city": "x" * 5000}, {f"answer.q{i}": "x" for i in range(21)},
    {"answer.<script>": "<script>alert(1)</script>"},
])
async def test_hostile_form_answers_are_refused(client: Any, sink: MemorySink, extra: dict[str, Any]) -> None:
    resp = await client.post("/t/form", json=good_form(**extra))
    assert resp.status == 422
    body = await resp.json()
    assert body["error"] == "invalid_form" and body["problems"][0]["fix"]
    assert sink.events == []


async def test_the_pixel_counts_a_ping_as_a_page_ping(client: Any, sink: MemorySink) -> None:
    await assert_gif(await client.get("/t/p.gif", params={"url": "https://acme.io/pricing", "ping": "1"}))
    await assert_gif(await client.get("/t/p.gif", params={"url": "https://acme.io/pricing", "ping": "yes"}))
    assert [e.type for e in sink.events] == [EventType.PAGE_PING, EventType.PAGE_VIEW]


async def test_the_snippet_sends_a_page_view_then_visible_pings(client: Any) -> None:
    resp = await client.get("/t/p.js")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/javascript")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    js = await resp.text()
    assert "/t/p.gif?" in js and "hit({});" in js
    assert "visibilityState==='visible'" in js and "ping:'1'" in js and ",15000)" in js and "n<480" in js
    # a constant: nothing from the request is reflected into the script
    again = await client.get("/t/p.js?x=%3Cscript%3E", headers={"Referer": "https://evil.example/<script>"})
    assert await again.text() == js
