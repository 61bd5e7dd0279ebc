"""Email clicks (GET /t/c/{token}: a 302 only to the signed URL) and machine-flagged opens."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from models import Event, EventType
from router.ingest.app import create_app
from router.ingest.request import GIF, INVALID_LINK_PAGE
from router.metrics import REGISTRY
from router.settings import Settings
from router.storage.kafka import ProduceError
from router.tokens import _sign, mint_token

SECRET = "email-secret-0123456789abcdef"
NOW = 1_800_000_000.0
# The test client (127.0.0.1) stands for the load balancer, whose X-Forwarded-For is believed.
SETTINGS = Settings.of(token_secret=SECRET, machine_networks="192.0.2.0/24", trusted_proxies="127.0.0.1")
DEST = "https://www.acme.test/pricing?plan=pro&utm_source=newsletter&utm_campaign=nov"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130 Safari/537.36"


class MemorySink:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[Event] = []
        self.fail = fail

    async def send(self, event: Event) -> None:
        if self.fail:
            raise ProduceError("broker down")
        self.events.append(event)


Client = TestClient[web.Request, web.Application]
Make = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client() -> AsyncIterator[Make]:
    clients: list[Client] = []

    async def make(sink: Any, settings: Settings = SETTINGS) -> Client:
        client = TestClient(TestServer(create_app(settings, sink, lambda: NOW)))
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


def click_token(url: str = DEST, *, secret: str = SECRET, sent_ago: float = 600, ttl_s: int = 3600,
                kind: str = "click") -> str:
    return mint_token(secret, email="Jane@Acme.test", campaign="nov-webinar", ttl_s=ttl_s, kind=kind, url=url,
                      now=NOW - sent_ago)


def forge(claims: dict[str, Any], secret: str = SECRET) -> str:
    body = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"{body}.{_sign(secret, body)}"


async def get(client: Client, path: str, **kw: Any) -> Any:
    return await client.get(path, allow_redirects=False, **kw)


def invalid(endpoint: str, field: str) -> float:
    return REGISTRY.get_sample_value("leadrouter_collector_invalid_total", {"endpoint": endpoint, "field": field}) or 0


async def assert_refused(resp: Any) -> None:
    assert resp.status == 400
    assert "Location" not in resp.headers
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert await resp.text() == INVALID_LINK_PAGE
    assert resp.headers["Cache-Control"] == "no-store"


# =========================================================================== clicks


async def test_a_click_redirects_to_the_signed_url_and_produces_an_event(client: Client, sink: MemorySink) -> None:
    resp = await get(client, f"/t/c/{click_token()}", headers={"User-Agent": CHROME, "X-Forwarded-For": "203.0.113.3"})
    assert resp.status == 302
    assert resp.headers["Location"] == DEST
    assert resp.headers["Referrer-Policy"] == "no-referrer"  # the token must not leak to the destination
    assert resp.headers["Cache-Control"] == "no-store"
    [e] = sink.events
    assert e.type is EventType.EMAIL_CLICK and e.source == "email"
    assert (e.email, e.campaign, e.url) == ("jane@acme.test", "nov-webinar", DEST)
    assert e.utm == {"utm_source": "newsletter", "utm_campaign": "nov"}
    assert (e.user_agent, e.ip, e.ts, e.machine) == (CHROME, "203.0.113.3", NOW, 0.0)
    assert e.partition_key() == "e:jane@acme.test"


@pytest.mark.parametrize("query", [
    "url=https://evil.test/", "next=https://evil.test/", "redirect=//evil.test", "u=https://evil.test/&to=x",
    "url=javascript:alert(1)",
])
async def test_parameters_never_choose_the_destination(client: Client, query: str) -> None:
    resp = await get(client, f"/t/c/{click_token()}?{query}")
    assert resp.status == 302 and resp.headers["Location"] == DEST


@pytest.mark.parametrize("token", [
    click_token(secret="another-secret-0123456789abcdef"),  # forged
    click_token()[:-3],  # truncated signature
    click_token().split(".")[0],  # no signature
    "not-a-token",
    "abc.def",
    "x" * 5000 + ".sig",  # absurdly long
])
async def test_forged_or_garbage_tokens_get_a_plain_400(client: Client, sink: MemorySink, token: str) -> None:
    before = invalid("email_click", "token")
    await assert_refused(await get(client, f"/t/c/{token}"))
    assert sink.events == []
    assert invalid("email_click", "token") == before + 1


async def test_a_tampered_destination_is_refused(client: Client, sink: MemorySink) -> None:
    genuine = click_token()  # opaque: the URL cannot even be found, so a flipped byte stands for tampering
    flipped = genuine[:10] + ("A" if genuine[10] != "A" else "B") + genuine[11:]
    await assert_refused(await get(client, f"/t/c/{flipped}"))
    # A version-1 token (readable claims, still accepted until it expires) with its URL swapped.
    claims = {"v": 1, "e": "jane@acme.test", "c": "nov", "x": int(NOW) + 3600, "k": "click", "s": int(NOW) - 60,
              "u": DEST}
    body = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    sig = _sign(SECRET, body)
    claims["u"] = "https://evil.test/"
    tampered = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    await assert_refused(await get(client, f"/t/c/{tampered}.{sig}"))
    assert sink.events == []
    resp = await get(client, f"/t/c/{body}.{sig}")  # the genuine version-1 token still redirects
    assert resp.status == 302
    assert resp.headers["Location"].startswith("https://www.acme.test/pricing")


async def test_expired_and_open_tokens_are_refused(client: Client, sink: MemorySink) -> None:
    await assert_refused(await get(client, f"/t/c/{click_token(ttl_s=60, sent_ago=3600)}"))
    opener = mint_token(SECRET, email="jane@acme.test", campaign="c", ttl_s=3600, now=NOW)
    await assert_refused(await get(client, f"/t/c/{opener}"))
    assert sink.events == []


@pytest.mark.parametrize("url", [
    "javascript:alert(document.cookie)", "data:text/html,<script>alert(1)</script>", "//evil.test/path",
    "/relative", "ftp://files.test/x", "https://acme.test/\r\nSet-Cookie: x=1", "https://" + "a" * 3000 + ".test/",
])
async def test_a_signed_but_unsafe_destination_is_refused(client: Client, sink: MemorySink, url: str) -> None:
    # Even our own signature does not make a non-http(s) or malformed URL a redirect target.
    token = forge({"v": 1, "e": "jane@acme.test", "c": "c", "x": int(NOW + 3600), "k": "click", "u": url,
                   "s": int(NOW - 600)})
    await assert_refused(await get(client, f"/t/c/{token}"))
    assert sink.events == []


async def test_a_non_ascii_token_is_a_400_not_an_error(client: Client, sink: MemorySink) -> None:
    await assert_refused(await get(client, "/t/c/" + quote("abc.dé")))
    assert sink.events == []


async def test_no_token_is_404(client: Client) -> None:
    assert (await get(client, "/t/c/")).status == 404


async def test_a_click_redirects_even_when_the_event_cannot_be_stored(make_client: Make) -> None:
    client = await make_client(MemorySink(fail=True))
    resp = await get(client, f"/t/c/{click_token()}")
    assert resp.status == 302 and resp.headers["Location"] == DEST


async def test_machine_clicks_are_flagged_not_dropped(client: Client, sink: MemorySink) -> None:
    await get(client, f"/t/c/{click_token(sent_ago=0.5)}", headers={"User-Agent": CHROME})  # a link scanner
    await get(client, f"/t/c/{click_token()}", headers={"User-Agent": "Mozilla/5.0 (compatible; bingbot/2.0)"})
    await get(client, f"/t/c/{click_token()}", headers={"User-Agent": CHROME, "X-Forwarded-For": "192.0.2.8"})
    await get(client, f"/t/c/{click_token()}", headers={"User-Agent": "python-requests/2.32"})
    a, b, c, d = sink.events
    assert (a.machine, a.machine_reason) == (0.9, "too_soon_after_send")
    assert b.machine_reason == "crawler:bot"
    assert (c.machine, c.machine_reason) == (1.0, "network:192.0.2.0/24")
    assert d.machine == 0.0  # HTTP libraries only with machine_flag_http_clients


async def test_http_library_clicks_when_configured(make_client: Make, sink: MemorySink) -> None:
    client = await make_client(sink, SETTINGS.with_(machine_flag_http_clients=True))
    await get(client, f"/t/c/{click_token()}", headers={"User-Agent": "python-requests/2.32"})
    await get(client, "/t/p.gif", headers={"User-Agent": "curl/8.5.0"})
    click, page = sink.events
    assert click.machine_reason == "http_library:python-requests"
    assert (page.type, page.machine_reason) == (EventType.PAGE_VIEW, "http_library:curl")


async def test_pixel_flags_crawlers_by_default(client: Client, sink: MemorySink) -> None:
    await get(client, "/t/p.gif", headers={"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"})
    await get(client, "/t/p.gif", headers={"User-Agent": "curl/8.5.0"})
    bot, script = sink.events
    assert (bot.machine, bot.machine_reason) == (0.95, "crawler:bot")
    assert script.machine == 0.0


# =========================================================================== opens


def open_token(sent_ago: float = 3600) -> str:
    return mint_token(SECRET, email="jane@acme.test", campaign="nov", ttl_s=86400, now=NOW - sent_ago)


@pytest.mark.parametrize(("headers", "sent_ago", "score", "reason"), [
    ({"User-Agent": "Mozilla/5.0", "X-Forwarded-For": "17.58.63.10"}, 3600, 0.97, "apple_mpp:user_agent+ip"),
    ({"User-Agent": "Mozilla/5.0"}, 3600, 0.9, "apple_mpp:user_agent"),
    ({"User-Agent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"},
     3600, 0.2, "image_proxy:google"),
    ({"User-Agent": "Microsoft Office/16.0 (Microsoft Outlook 16.0.17928; Pro)"}, 1.0, 0.9, "too_soon_after_send"),
    ({"User-Agent": "Microsoft Office/16.0 (Microsoft Outlook 16.0.17928; Pro)"}, 3600, 0.0, None),
])
async def test_machine_opens_are_flagged_not_dropped(client: Client, sink: MemorySink, headers: dict[str, str],
                                                     sent_ago: float, score: float, reason: str | None) -> None:
    before = REGISTRY.get_sample_value("leadrouter_collector_machine_flagged_total",
                                       {"type": "email_open", "reason": (reason or "x").split(":")[0]}) or 0
    resp = await get(client, f"/t/o/{open_token(sent_ago)}.gif", headers=headers)
    assert resp.status == 200 and await resp.read() == GIF
    [e] = sink.events
    assert e.type is EventType.EMAIL_OPEN
    assert (e.machine, e.machine_reason) == (score, reason)
    if reason:
        after = REGISTRY.get_sample_value("leadrouter_collector_machine_flagged_total",
                                          {"type": "email_open", "reason": reason.split(":")[0]})
        assert after == before + 1


async def test_an_international_destination_is_sent_as_an_ascii_location(client: Client, sink: MemorySink) -> None:
    resp = await get(client, f"/t/c/{click_token('https://bücher.test/straße?q=ä#teil')}")
    assert resp.status == 302
    assert resp.headers["Location"] == "https://xn--bcher-kva.test/stra%C3%9Fe?q=%C3%A4#teil"
    assert sink.events[0].url == "https://bücher.test/straße?q=ä#teil"
