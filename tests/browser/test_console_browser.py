"""The ops console in a real headless Chromium: sign in, find a lead that crossed, see why, accept it; reps stay in their lane."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import Console, shot

pytestmark = pytest.mark.browser


def sign_in(browser: Any, console: Console, who: str) -> None:
    """The one-click link `leadrouter dev` prints: the form with the token filled in, then one click."""
    browser.get(f"{console.url}/console/sign-in?token={console.seeded.tokens[who]}")
    shot(browser, "sign-in")
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "header .who")))


def fact(browser: Any, name: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, f'[data-fact="{name}"]').text)


def test_ops_find_a_crossed_lead_see_its_score_and_reasons_and_accept_it(browser: Any, console: Console) -> None:
    lead_id = console.seeded.lead_a
    sign_in(browser, console, "ops")
    assert browser.current_url.endswith("/console/leads")
    assert "olive (ops)" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    box = browser.find_element(By.ID, "q")
    box.send_keys("jane@acme.com")
    box.submit()
    shot(browser, "leads-search")
    browser.find_element(By.LINK_TEXT, "Jane").click()
    WebDriverWait(browser, 10).until(ec.url_contains(f"/console/leads/{lead_id}"))
    assert browser.find_element(By.ID, "lead-name").text == "Jane"
    assert float(fact(browser, "Score now")) == pytest.approx(75.0, abs=0.5)
    assert fact(browser, "Sales-ready") == "yes" and fact(browser, "Stage") == "mql"
    reasons = browser.find_element(By.ID, "reasons").text
    assert "demo-request" in reasons and "pricing-page" in reasons and "+60.0" in reasons
    browser.find_element(By.ID, "accept").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "done")))
    assert "Accepted" in browser.find_element(By.ID, "done").text
    assert fact(browser, "Stage") == "sal"
    assert "accept" in browser.find_element(By.ID, "history").text
    assert console.stage(lead_id) == "sal"
    # Sign out: the console is closed to this browser again.
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    WebDriverWait(browser, 10).until(ec.url_contains("/console/sign-in"))
    browser.get(f"{console.url}/console/leads/{lead_id}")
    assert browser.current_url.endswith("/console/sign-in")


def test_a_rep_cannot_open_another_reps_lead(browser: Any, console: Console) -> None:
    s = console.seeded
    sign_in(browser, console, "rep_b")
    assert browser.current_url.endswith("/console/queue")
    queue = browser.find_element(By.TAG_NAME, "main").text
    assert "Sam" in queue and "Jane" not in queue
    browser.get(f"{console.url}/console/leads/{s.lead_a}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    assert "not assigned to rep" in browser.find_element(By.CSS_SELECTOR, ".msg.err").text
    assert "Jane" not in browser.page_source and "acme" not in browser.page_source.lower()
    shot(browser, "lead-of-another-rep-refused")
    assert console.stage(s.lead_a) == "mql"
