"""The Live page, the score chart and the Audit page in a real headless Chromium.

The Live page gets a crossing pushed (Server-Sent Events) without a reload; a rep opens their lead, sees
its score chart (markers with the event as tooltip) and accepts it; ops see that on the Audit page.
Each page visited is saved as a screenshot in test-artifacts/browser/pages/.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from models import Event, EventPlan, EventType, Reason
from router.settings import Settings
from router.storage.live import LiveFeed
from router.storage.live_config import load_scoring_file
from router.storage.store import RedisStore
from tests.browser.conftest import Console, shot
from tests.browser.test_console_browser import fact, sign_in

pytestmark = pytest.mark.browser


def note(console: Console, kind: str, **fields: Any) -> str:
    """Write a live-feed entry as the worker and the sender do (router/worker/pipeline.py, alerts/sender.py)."""

    async def write() -> str:
        client = Redis.from_url(console.redis_url)
        try:
            entry_id = await LiveFeed(client).note(kind, **fields)  # type: ignore[arg-type]
            assert entry_id is not None
            return entry_id
        finally:
            await client.aclose()

    return asyncio.run(write())


def test_the_live_page_shows_a_crossing_and_its_delivery_without_a_reload(browser: Any, console: Console) -> None:
    s = console.seeded
    sign_in(browser, console, "ops")
    browser.find_element(By.LINK_TEXT, "Live").click()
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "live-status"), "live"))
    shot(browser, "live-empty")
    browser.execute_script("window.__sameDocument = 'yes';")
    aid = f"{s.lead_b}:1"
    note(console, "crossing", lead=s.lead_b, rep=s.rep_b, aid=aid, team="central", trigger="hand_raiser",
         score="75.0")
    row = WebDriverWait(browser, 10).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, '#live-feed tr[data-kind="crossing"]')))
    assert "Sam" in row.text and "crossed, routed" in row.text and s.rep_b in row.text
    note(console, "delivery", lead=s.lead_b, rep=s.rep_b, aid=aid, channel="slack_bot", status="retrying",
         attempt=1, error="Slack answered 503")
    note(console, "delivery", lead=s.lead_b, rep=s.rep_b, aid=aid, channel="slack_bot", status="sent", attempt=2)
    note(console, "delivery", lead=s.lead_b, rep=s.rep_b, aid=aid, channel="email", status="failed", attempt=3,
         error="550 mailbox unavailable")
    cell = f'#deliveries tr[data-aid="{aid}"] td[data-channel="%s"]'
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, cell % "email"), "failed"))
    assert browser.find_element(By.CSS_SELECTOR, cell % "slack_bot").text == "sent"
    assert browser.find_element(By.CSS_SELECTOR, cell % "slack_webhook").text == "-"
    assert browser.execute_script("return window.__sameDocument") == "yes", "the page was reloaded"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#live-feed tr")) == 4
    shot(browser, "live-crossing-pushed", phone=True)
    # A reload renders the same entries from the stream.
    browser.refresh()
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "live-status"), "live"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#live-feed tr")) == 4
    assert "failed" in browser.find_element(By.CSS_SELECTOR, cell % "email").text


def test_a_rep_sees_only_their_own_entries_live(browser: Any, console: Console) -> None:
    s = console.seeded
    sign_in(browser, console, "rep_a")
    browser.get(f"{console.url}/console/live")
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "live-status"), "live"))
    note(console, "crossing", lead=s.lead_b, rep=s.rep_b, aid=f"{s.lead_b}:1", trigger="hand_raiser")
    note(console, "crossing", lead=s.lead_a, rep=s.rep_a, aid=f"{s.lead_a}:1", trigger="hand_raiser")
    row = WebDriverWait(browser, 10).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, '#live-feed tr[data-kind="crossing"]')))
    assert "Jane" in row.text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#live-feed tr")) == 1 and "Sam" not in browser.page_source
    shot(browser, "live-rep")


def earlier_visits(console: Console, lead_id: str) -> float:
    """Two visits days before the form fill (a pricing page, then the careers page), scored as the worker does;
    the lead's stored score afterwards."""

    async def apply() -> float:
        client = Redis.from_url(console.redis_url)
        try:
            store = RedisStore(client)
            scoring = load_scoring_file(Settings.of(redis_url=console.redis_url).files.scoring_file)
            now = time.time()
            for n, (days, rule, points) in enumerate([(5, "pricing-page", 15.0), (3, "careers-page", -10.0)]):
                ts = now - days * 86400
                ev = Event(event_id=f"visit{n}", type=EventType.PAGE_VIEW, ts=ts, source="web",
                           email="jane@acme.com", url=f"https://example.test/{rule}")
                reason = Reason(rule=rule, points=points, event_id=ev.event_id, event_type="page_view", ts=ts,
                                detail=rule)
                await store.apply([EventPlan(event=ev, lead_id=lead_id, reasons=(reason,), points=points,
                                             hand_raiser=False, fields={})],
                                  threshold=scoring.threshold, half_life_s=scoring.half_life_s, now=now)
            return float((await store.lead_hash(lead_id))["score"])
        finally:
            await client.aclose()

    return asyncio.run(apply())


def test_the_lead_page_shows_the_score_chart_and_the_rep_accepts(browser: Any, console: Console) -> None:
    s = console.seeded
    stored = earlier_visits(console, s.lead_a)
    sign_in(browser, console, "rep_a")
    shot(browser, "queue-rep")
    browser.find_element(By.LINK_TEXT, "Jane").click()
    WebDriverWait(browser, 10).until(ec.url_contains(f"/console/leads/{s.lead_a}"))
    chart = browser.find_element(By.ID, "score-chart")
    marks = chart.find_elements(By.CSS_SELECTOR, "circle.score-mark")
    titles = [m.find_element(By.TAG_NAME, "title").get_attribute("textContent") for m in marks]
    assert len(marks) == 3 and "page_view +15.0 points (pricing-page)" in titles[0]
    assert "page_view -10.0 points (careers-page)" in titles[1]
    assert "form_fill +75.0 points (demo-request, pricing-page)" in titles[2]
    # The last point is the score the store holds (the early visits, decayed, plus the form fill).
    assert float(marks[2].get_attribute("data-score")) == pytest.approx(stored, rel=1e-9) and stored > 75.0
    assert browser.find_element(By.ID, "score-curve").get_attribute("points").count(",") > 10
    assert float(chart.get_attribute("data-now-score")) == pytest.approx(float(fact(browser, "Score now")), abs=0.05)
    assert browser.find_element(By.ID, "fit-grade").text
    assert "SLA: waiting for accept" in browser.find_element(By.ID, "sla").text
    shot(browser, "lead-chart", phone=True)
    browser.find_element(By.ID, "accept").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "done")))
    assert "Accepted" in browser.find_element(By.ID, "done").text and fact(browser, "Stage") == "sal"
    assert console.stage(s.lead_a) == "sal"
    assert "lead.accept" in browser.find_element(By.ID, "lead-audit").text
    assert f"SLA: accepted by {s.rep_a}" in browser.find_element(By.ID, "sla").text
    shot(browser, "lead-accepted")
    # Ops find it on the Audit page; the rep has no Audit page.
    assert not browser.find_elements(By.LINK_TEXT, "Audit")
    browser.get(f"{console.url}/console/audit")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    WebDriverWait(browser, 10).until(ec.url_contains("/console/sign-in"))
    sign_in(browser, console, "ops")
    browser.find_element(By.LINK_TEXT, "Audit").click()
    row = browser.find_element(By.CSS_SELECTOR, '#audit tr[data-action="lead.accept"]')
    assert "rep a" in row.text and "console" in row.text and "mql -> sal" in row.text
    shot(browser, "audit")
