"""Privacy: DNT / Sec-GPC on anonymous pixels, and forms posted with consent=false."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from models import Event, EventType
from router.ingest.app import create_app
from router.ingest.request import GIF
from router.metrics import REGISTRY
from router.settings import Settings

NOW = 1_800_000_000.0
SETTINGS = Settings.of(token_secret="privacy-secret-0123456789abcdef")
VID = "visitor_0123456789"


class MemorySink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def send(self, event: Event) -> None:
        self.events.append(event)


Client = TestClient[web.Request, web.Application]


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
async def client(sink: MemorySink) -> AsyncIterator[Client]:
    c = TestClient(TestServer(create_app(SETTINGS, sink, lambda: NOW)))
    await c.start_server()
    yield c
    await c.close()


def privacy(endpoint: str, signal: str) -> float:
    return REGISTRY.get_sample_value("leadrouter_collector_privacy_total",
                                     {"endpoint": endpoint, "signal": signal}) or 0.0


def cookies(resp: Any) -> list[str]:
    return list(resp.headers.getall("Set-Cookie", []))


@pytest.mark.parametrize(("header", "signal"), [("DNT", "dnt"), ("Sec-GPC", "gpc")])
async def test_pixel_honours_do_not_track(client: Client, sink: MemorySink, header: str, signal: str) -> None:
    before = privacy("pixel", signal)
    resp = await client.get("/t/p.gif", params={"url": "https://ex.test/", "vid": VID}, headers={header: "1"})
    assert resp.status == 200 and await resp.read() == GIF
    assert cookies(resp) == []
    assert sink.events == []
    assert privacy("pixel", signal) == before + 1


async def test_pixel_tracks_when_the_signal_is_off(client: Client, sink: MemorySink) -> None:
    resp = await client.get("/t/p.gif", headers={"DNT": "0", "Sec-GPC": "0"})
    assert cookies(resp) and len(sink.events) == 1


async def test_snowplow_pixel_honours_dnt_for_anonymous_hits_only(client: Client, sink: MemorySink) -> None:
    before = privacy("snowplow_get", "gpc")
    resp = await client.get("/i", params={"e": "pv", "duid": "d-1"}, headers={"Sec-GPC": "1"})
    assert resp.status == 200 and await resp.read() == GIF
    assert sink.events == [] and privacy("snowplow_get", "gpc") == before + 1
    await client.get("/i", params={"e": "pv", "duid": "d-1", "uid": "u-1"}, headers={"Sec-GPC": "1"})
    assert [e.user_id for e in sink.events] == ["u-1"]


@pytest.mark.parametrize("consent", ["false", "no", "0"])
async def test_form_without_consent_is_recorded_but_not_tracked(client: Client, sink: MemorySink,
                                                                consent: str) -> None:
    before = privacy("form", "consent_false")
    resp = await client.post("/t/form", data={"form_id": "demo", "email": "jane@ex.test", "consent": consent,
                                              "vid": VID}, headers={"Cookie": f"lr_vid={VID}"})
    assert resp.status == 202
    body = await resp.json()
    assert body["visitor_id"] is None
    assert cookies(resp) == []
    [e] = sink.events
    assert e.type is EventType.FORM_FILL and e.email == "jane@ex.test"
    assert e.fields["consent"] == "false"
    assert e.visitor_id is None  # earlier anonymous browsing is not joined to the person
    assert e.partition_key() == "e:jane@ex.test"
    assert privacy("form", "consent_false") == before + 1


async def test_form_with_consent_sets_the_cookie(client: Client, sink: MemorySink) -> None:
    resp = await client.post("/t/form", data={"form_id": "demo", "email": "jane@ex.test", "consent": "yes"})
    assert cookies(resp) and sink.events[0].visitor_id


async def test_form_under_dnt_sets_no_cookie(client: Client, sink: MemorySink) -> None:
    resp = await client.post("/t/form", data={"form_id": "demo", "email": "a@ex.test"}, headers={"DNT": "1"})
    assert resp.status == 202 and cookies(resp) == []
    assert sink.events[0].visitor_id is None  # a random id without a cookie would identify nothing
    resp = await client.post("/t/form", data={"form_id": "demo", "email": "a@ex.test"},
                             headers={"DNT": "1", "Cookie": f"lr_vid={VID}"})
    assert cookies(resp) == [] and sink.events[1].visitor_id == VID  # the browser's own cookie still links
    resp = await client.post("/t/form", data={"form_id": "demo", "email": "a@ex.test", "vid": VID},
                             headers={"Sec-GPC": "1"})
    assert cookies(resp) == [] and sink.events[2].visitor_id == VID
