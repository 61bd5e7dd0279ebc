"""The ops pages in a real headless Chromium: a broken rules file is refused at its line while the running version
keeps routing; ops mark a rep out of office on Team; Health renders the fleet's metrics.

Each page is saved as a screenshot in ``test-artifacts/browser/pages/`` (gitignored; laptop and phone widths),
and a failing test leaves its screenshot beside them (tests/browser/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from redis.asyncio import Redis
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from router.dev.servers import free_port
from router.settings import Settings
from router.storage import keys
from router.storage.rules_store import RulesStore
from tests.browser.conftest import ARTIFACTS, Console, running_admin

pytestmark = pytest.mark.browser

PAGES = ARTIFACTS / "pages"
RULES = Path(Settings().files.rules_file)


def shoot(browser: Any, name: str) -> Path:
    """Save what the browser shows at laptop and phone widths; returns the laptop one."""
    PAGES.mkdir(parents=True, exist_ok=True)
    laptop = PAGES / f"{name}.png"
    browser.save_screenshot(str(laptop))
    browser.set_window_size(390, 844)
    browser.save_screenshot(str(PAGES / f"{name}-phone.png"))
    browser.set_window_size(1280, 900)
    return laptop


def redis_call(redis_url: str, fn: Any) -> Any:
    async def run() -> Any:
        client = Redis.from_url(redis_url)
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return asyncio.run(run())


@pytest.fixture
def metrics_url() -> Iterator[str]:
    """A real Prometheus endpoint, as a worker serves one, with the metrics the Health page sums."""
    reg = CollectorRegistry()
    Counter("leadrouter_events_total", "", ["type", "outcome"], registry=reg).labels("form_fill", "scored").inc(1234)
    Gauge("leadrouter_consumer_lag_messages", "", ["topic", "partition"], registry=reg).labels("events", "0").set(17)
    Gauge("leadrouter_spool_pending_events", "", registry=reg).set(3)
    Gauge("leadrouter_spool_bytes", "", registry=reg).set(2048)
    sends = Counter("leadrouter_alert_sends_total", "", ["channel", "outcome"], registry=reg)
    sends.labels("slack", "sent").inc(42)
    sends.labels("email", "failed").inc(2)
    Counter("leadrouter_alert_dead_letters_total", "", ["channel", "kind"], registry=reg).labels(
        "email", "exhausted").inc(1)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def ops_console(redis_url: str, tmp_path: Path, metrics_url: str) -> Iterator[Console]:
    """`leadrouter admin` as a real process (as tests/browser/conftest.py's), reading one metrics endpoint."""
    with running_admin(redis_url, tmp_path, LEADROUTER_ADMIN_METRICS_URLS=metrics_url) as c:
        yield c


def sign_in(browser: Any, console: Console, who: str) -> None:
    browser.get(f"{console.url}/console/sign-in?token={console.seeded.tokens[who]}")
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "header .who")))


def set_text(browser: Any, element_id: str, text: str) -> None:
    """Replace a textarea's text (typing 15 kB key by key is slow); the page itself runs no script."""
    browser.execute_script("arguments[0].value = arguments[1];", browser.find_element(By.ID, element_id), text)


def test_ops_publish_a_broken_rules_file_and_see_the_error_at_its_line_while_routing_goes_on(
        browser: Any, ops_console: Console) -> None:
    sign_in(browser, ops_console, "ops")
    browser.find_element(By.LINK_TEXT, "Rules").click()
    WebDriverWait(browser, 10).until(ec.url_contains("/console/rules/routing"))
    assert "file routing.yaml" in browser.find_element(By.ID, "running").text
    # A good publish first: v1 routes.
    browser.find_element(By.ID, "note").send_keys("baseline from the console")
    browser.find_element(By.ID, "publish").click()
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "message"), "Published"))
    assert browser.find_element(By.ID, "running").text.startswith("published v1")
    shoot(browser, "rules-published")
    # Now a typo in one condition.
    lines = RULES.read_text().split("\n")
    n = next(i for i, line in enumerate(lines) if "when: {field: country, in: [US, CA]}" in line)
    lines[n] = lines[n].replace("field: country", "field: contry")
    set_text(browser, "text", "\n".join(lines))
    browser.find_element(By.ID, "validate").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, f"text-L{n + 1}")))
    browser.find_element(By.ID, "note").send_keys("EMEA tweak")
    browser.find_element(By.ID, "publish").click()
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "message"), "Not published"))
    assert "published v1" in browser.find_element(By.ID, "message").text
    row = browser.find_element(By.ID, f"text-L{n + 1}")
    assert row.get_attribute("class") == "bad" and row.is_displayed() and "contry" in row.text
    problems = browser.find_element(By.ID, "text-problems").text
    assert f"line {n + 1}" in problems and "unknown field 'contry'" in problems and "did you mean 'country'?" in problems
    # The error line's number is beside it; the edited text is kept for fixing.
    assert row.find_element(By.CSS_SELECTOR, "td.ln").text == str(n + 1)
    assert "field: contry" in browser.find_element(By.ID, "text").get_attribute("value")
    shoot(browser, "rules-broken-refused")
    # Routing goes on with v1: nothing new was stored, and the version in force is still v1.
    assert redis_call(ops_console.redis_url, lambda c: RulesStore(c).numbers()) == [1]
    assert redis_call(ops_console.redis_url, lambda c: RulesStore(c).active_number()) == 1
    assert browser.find_element(By.ID, "in-force").text.startswith("v1")
    browser.find_element(By.LINK_TEXT, "History and rollback").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "versions")))
    assert "olive" in browser.find_element(By.ID, "versions").text
    shoot(browser, "rules-history")


def test_ops_mark_a_rep_out_of_office_on_team(browser: Any, ops_console: Console) -> None:
    sign_in(browser, ops_console, "ops")
    browser.find_element(By.LINK_TEXT, "Team").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "reps")))
    shoot(browser, "team")
    rep = "anna-snelling"
    browser.find_element(By.CSS_SELECTOR, f"#edit-{rep} summary").click()
    browser.find_element(By.ID, f"ooo-{rep}").click()
    browser.find_element(By.ID, f"note-{rep}").send_keys("dentist")
    browser.find_element(By.ID, f"save-{rep}").click()
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "message"), "Saved"))
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-rep="{rep}"]')
    assert row.get_attribute("data-available") == "no" and "out of office" in row.text
    assert "by olive" in row.text and "dentist" in row.text
    stored = redis_call(ops_console.redis_url, lambda c: c.hgetall(keys.rep_availability(rep)))
    assert stored[b"out_of_office"] == b"1" and stored[b"set_by"] == b"olive" and stored[b"note"] == b"dentist"
    browser.find_element(By.CSS_SELECTOR, f"#edit-{rep} summary").click()
    shoot(browser, "team-out-of-office")
    # Clear it again (the form is open from the screenshot).  The page still says "Saved" from the first
    # save, so wait for the new page (the old one's message element goes stale) before reading Redis.
    before = browser.find_element(By.ID, "message")
    browser.find_element(By.ID, f"ooo-{rep}").click()
    browser.find_element(By.ID, f"save-{rep}").click()
    WebDriverWait(browser, 10).until(ec.staleness_of(before))
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "message"), "Saved"))
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-rep="{rep}"]')
    assert "out of office" not in row.text, row.text  # (available or not depends on the hour: not asserted)
    assert not redis_call(ops_console.redis_url, lambda c: c.exists(keys.rep_availability(rep)))


def test_the_health_page_renders(browser: Any, ops_console: Console) -> None:
    sign_in(browser, ops_console, "ops")
    browser.find_element(By.LINK_TEXT, "Health").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "tiles")))
    values = {e.get_attribute("data-value"): e.text
              for e in browser.find_elements(By.CSS_SELECTOR, "#tiles b[data-value]")}
    assert values.pop("throughput") in ("-", "0")  # one sample, or the background sampler's and this view's
    assert values == {"lag": "17", "spool": "3", "sent": "42", "failed": "2", "dead": "1"}
    assert "1 of 1 metrics endpoints answered" in browser.find_element(By.TAG_NAME, "main").text
    assert browser.find_element(By.ID, "tiles").is_displayed()
    shoot(browser, "health")
