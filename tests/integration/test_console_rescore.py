"""Simulate on the console's Scoring and Fit pages: the archived events re-scored under the running and the edited
file in pure Python (real Redis for the session and the running versions; nothing is written to it)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.settings import Settings
from router.storage import keys
from router.storage.archive import write_events
from tests.integration.test_admin_api import Api, make_api
from tests.integration.test_console import post, sign_in

pytestmark = pytest.mark.integration

T0 = 1_795_000_000.0  # 2026-11-18 UTC; the admin clock is set 10 days later
GOOD = {"company": "Acme", "industry": "Software", "employees": "500", "country": "US", "job_title": "VP Sales"}
POOR = {"company": "Tiny", "industry": "Restaurants", "employees": "3", "country": "US", "job_title": "Intern"}


def browse(email: str, vid: str, day: int, fields: dict[str, str] | None = None) -> list[Event]:
    """A day of browsing: 3 pricing views and 7 blog pages (40 points a day under the shipped scoring)."""
    t = T0 + day * 86400
    out = []
    if fields:
        out.append(Event(event_id=f"{vid}-{day}-id", type=EventType.IDENTIFY, ts=t, source="segment", email=email,
                         visitor_id=vid, traits=fields))
    out += [Event(event_id=f"{vid}-{day}-p{k}", type=EventType.PAGE_VIEW, ts=t + 60 + k, source="pixel",
                  visitor_id=vid, url="https://www.example.com/pricing") for k in range(3)]
    out += [Event(event_id=f"{vid}-{day}-v{k}", type=EventType.PAGE_VIEW, ts=t + 120 + k, source="pixel",
                  visitor_id=vid, url=f"https://www.example.com/blog/{k}") for k in range(7)]
    return out


@pytest.fixture
async def api(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    events: list[Event] = []
    for day in range(3):  # two leads at ~110-120 points over 3 days: one a good fit, one a poor fit
        events += browse("g@acme.com", "vg", day, GOOD if day == 0 else None)
        events += browse("p@tiny.io", "vp", day, POOR if day == 0 else None)
    events.append(Event(event_id="h1", type=EventType.FORM_FILL, ts=T0 + 3600, source="form", email="h@hands.example",
                        form_id="demo-request", fields={"company": "Hands", "country": "DE"}))
    events.append(Event(event_id="old", type=EventType.FORM_FILL, ts=T0 - 60 * 86400, source="form",
                        email="old@past.example", form_id="demo-request"))  # outside the 30-day window
    write_events(tmp_path / "archive", events, writer_id="w1")
    a, client = await make_api(redis, Settings.of(redis_url=redis_url, archive_dir=tmp_path / "archive"))
    a.clock.now = T0 + 10 * 86400
    yield a
    await client.close()


def number(page: str, element_id: str) -> int:
    m = re.search(rf'id="{element_id}">([0-9,]+)<', page)
    assert m, element_id
    return int(m.group(1).replace(",", ""))


def rows(page: str, table_id: str) -> list[str]:
    m = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.DOTALL)
    return [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<tr><td>(.*?)</td>", m.group(1))] if m else []


async def test_a_scoring_edit_is_simulated_on_the_archive_without_touching_redis(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    text = api.settings.files.scoring_file.read_text(encoding="utf-8")
    edited = text.replace("- {engagement_at_least: 150}", "- {engagement_at_least: 110}")
    assert edited != text
    keys_before = sorted([k async for k in api.redis.scan_iter(match="*")])
    status, page, _ = await post(api, "/console/rules/scoring", {"csrf": csrf, "text": edited, "cases": "",
                                                                  "action": "simulate", "dataset": "30"})
    assert status == 200, re.findall(r'id="message">([^<]*)', page)
    assert "Re-scored 63 archived events" in page  # 2 leads x 31 events + the hand-raiser; not the 60-day-old one
    # Running: the hand-raiser and the engaged good fit; edited: the poor fit too (over 110, no fit needed).
    assert (number(page, "mql-running"), number(page, "mql-edited")) == (2, 3)
    assert (number(page, "newly"), number(page, "no-longer")) == (1, 0)
    assert rows(page, "newly-crossing") == ["p@tiny.io (Tiny, US)"]
    assert f'<a href="/console/leads/{keys.lead_id_for_email("p@tiny.io")}">' in page
    assert 'id="chart-teams"' in page and 'id="chart-reps"' in page
    assert "MQLs per team: running vs edited" in page
    assert sorted([k async for k in api.redis.scan_iter(match="*")]) == keys_before  # nothing written (sessions were made before)
    # The edited text is kept in the editor, and the running version is untouched.
    assert "engagement_at_least: 110" in page
    assert await api.redis.get("{cfg}:scoring:active") is None


async def test_a_fit_edit_is_simulated_and_a_broken_edit_is_refused_at_its_line(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    text = api.settings.files.icp_file.read_text(encoding="utf-8")
    edited = text.replace("  A: 70\n  B: 50\n", "  A: 100\n  B: 99.5\n")
    assert edited != text
    status, page, _ = await post(api, "/console/rules/icp", {"csrf": csrf, "text": edited, "cases": "",
                                                              "action": "simulate", "dataset": "30"})
    assert status == 200, re.findall(r'id="message">([^<]*)', page)
    # The good fit is no longer an A or B, so 110 points are not enough any more.
    assert (number(page, "mql-running"), number(page, "mql-edited")) == (2, 1)
    assert rows(page, "no-longer-crossing") == ["g@acme.com (Acme, US)"]
    status, page, _ = await post(api, "/console/rules/icp", {"csrf": csrf, "text": text.replace("  A: 70", "  A: x"),
                                                              "cases": "", "action": "simulate", "dataset": "30"})
    assert status == 422 and "cannot be simulated" in page and 'id="problems"' in page
    status, page, _ = await post(api, "/console/rules/icp", {"csrf": csrf, "text": text, "cases": "",
                                                              "action": "simulate", "dataset": "365"})
    assert status == 422 and "Pick an archive window" in page


async def test_simulate_needs_ops_and_says_when_the_archive_is_empty(api: Api, tmp_path: Path) -> None:
    text = api.settings.files.scoring_file.read_text(encoding="utf-8")
    csrf = await sign_in(api, "viewer")
    status, _, _ = await post(api, "/console/rules/scoring", {"csrf": csrf, "text": text, "action": "simulate",
                                                              "dataset": "30"})
    assert status == 403
    csrf = await sign_in(api, "ops")
    status, _, _ = await post(api, "/console/rules/scoring", {"csrf": "forged", "text": text, "action": "simulate",
                                                              "dataset": "30"})
    assert status == 403
    # The last 7 days (from T0 + 3 days) hold no archived day.
    status, page, _ = await post(api, "/console/rules/scoring", {"csrf": csrf, "text": text, "action": "simulate",
                                                                 "dataset": "7"})
    assert status == 404 and "No archived events" in page
