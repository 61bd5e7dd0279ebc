"""Ops change a rep's capacity on the Team page in a real headless Chromium: a bad value is refused next to its
field, a good one publishes a new routing version, which Rules history shows with its author and automatic note.

Screenshots go to ``test-artifacts/browser/pages/`` (gitignored; laptop and phone widths), as in
test_console_ops_browser.py; a failing test leaves its screenshot beside them (tests/browser/conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from router.storage.rules_store import RulesStore
from tests.browser.conftest import Console
from tests.browser.test_console_ops_browser import redis_call, shoot, sign_in

pytestmark = pytest.mark.browser

REP = "anna-snelling"


def test_ops_change_a_reps_capacity_on_team_and_see_the_new_version_in_rules_history(
        browser: Any, console: Console) -> None:
    sign_in(browser, console, "ops")
    browser.find_element(By.LINK_TEXT, "Team").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "reps")))
    assert "file routing.yaml" in browser.find_element(By.ID, "running").text
    browser.find_element(By.CSS_SELECTOR, f"#profile-{REP} summary").click()
    capacity = browser.find_element(By.ID, f"capacity_day-{REP}")
    assert capacity.get_attribute("value") == "12"
    # Zero is refused next to the field; nothing is published.
    capacity.clear()
    capacity.send_keys("0")
    browser.find_element(By.ID, f"publish-{REP}").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, f"err-{REP}-capacity_day")))
    error = browser.find_element(By.ID, f"err-{REP}-capacity_day")
    assert error.is_displayed() and "'0' must be a whole number from 1 to 1000" in error.text
    assert "file routing.yaml keeps routing" in browser.find_element(By.ID, "message").text
    assert redis_call(console.redis_url, lambda c: RulesStore(c).numbers()) == []
    shoot(browser, "team-capacity-refused")
    # 15 publishes routing v1.
    capacity = browser.find_element(By.ID, f"capacity_day-{REP}")
    capacity.clear()
    capacity.send_keys("15")
    browser.find_element(By.ID, f"publish-{REP}").click()
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "message"), "Published"))
    assert browser.find_element(By.ID, "running").text.startswith("published v1")
    assert redis_call(console.redis_url, lambda c: RulesStore(c).active_number()) == 1
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-rep="{REP}"]')
    assert "15/day" in row.text
    browser.find_element(By.CSS_SELECTOR, f"#profile-{REP} summary").click()
    shoot(browser, "team-capacity-published")
    browser.find_element(By.LINK_TEXT, "Rules history").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "versions")))
    version = browser.find_element(By.CSS_SELECTOR, '#versions tr[data-version="1"]')
    assert "active" in version.text and "olive" in version.text
    assert "Team page: capacity per day of Anna Snelling 12 → 15" in browser.find_element(By.ID, "changes").text
    shoot(browser, "team-capacity-rules-history")
