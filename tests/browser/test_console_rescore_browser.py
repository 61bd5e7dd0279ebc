"""Simulate on the Scoring page in a real headless Chromium: an edited sales-ready clause re-scored on the archive
shows the MQL counts, the per-team and per-rep bar charts and the lead that would newly cross.

Screenshots go to ``test-artifacts/browser/pages/`` (gitignored), as in test_console_ops_browser.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from router.settings import Settings
from router.storage.archive import write_events
from tests.browser.conftest import Console, running_admin
from tests.browser.test_console_ops_browser import set_text, shoot, sign_in
from tests.integration.test_console_rescore import GOOD, POOR, browse

pytestmark = pytest.mark.browser

SCORING = Path(Settings().files.scoring_file)


@pytest.fixture
def archive_console(redis_url: str, tmp_path: Path) -> Iterator[Console]:
    """`leadrouter admin` as a real process whose archive holds three days of two leads' browsing, a week ago."""
    shift = time.time() - 7 * 86400 - 1_795_000_000.0
    events = []
    for day in range(3):
        events += browse("g@acme.com", "vg", day, GOOD if day == 0 else None)
        events += browse("p@tiny.io", "vp", day, POOR if day == 0 else None)
    write_events(tmp_path / "archive", [replace(e, ts=e.ts + shift) for e in events], writer_id="w1")
    with running_admin(redis_url, tmp_path, LEADROUTER_ARCHIVE_DIR=str(tmp_path / "archive")) as c:
        yield c


def test_ops_simulate_a_scoring_edit_on_the_archive(browser: Any, archive_console: Console) -> None:
    sign_in(browser, archive_console, "ops")
    browser.get(f"{archive_console.url}/console/rules/scoring")
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "simulate")))
    text = SCORING.read_text(encoding="utf-8").replace("- {engagement_at_least: 150}", "- {engagement_at_least: 110}")
    set_text(browser, "text", text)
    browser.find_element(By.ID, "simulate").click()
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "simulation")))
    assert browser.find_element(By.ID, "mql-running").text == "1"
    assert browser.find_element(By.ID, "mql-edited").text == "2"
    assert "p@tiny.io (Tiny, US)" in browser.find_element(By.ID, "newly-crossing").text
    for chart in ("chart-teams", "chart-reps"):
        assert browser.find_element(By.ID, chart).is_displayed()
    assert "engagement_at_least: 110" in browser.find_element(By.ID, "text").get_attribute("value")
    browser.execute_script("document.getElementById('simulation').scrollIntoView()")
    shoot(browser, "scoring-simulate")
