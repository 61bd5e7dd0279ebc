"""Matching events to rules and turning them into reasons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from models.events import Event, EventType
from models.lead import Reason
from scoring import (
    ScoringConfig,
    is_hand_raiser,
    load_scoring_config,
    score_event,
    total_points,
    url_target,
)

SHIPPED = Path(__file__).resolve().parents[3] / "scoring" / "scoring.yaml"
TS = 1_700_000_000.0


@pytest.fixture(scope="module")
def shipped() -> ScoringConfig:
    return load_scoring_config(SHIPPED.read_text(encoding="utf-8"), str(SHIPPED))


def event(etype: EventType, **kw: Any) -> Event:
    kw.setdefault("event_id", "ev-1")
    kw.setdefault("ts", TS)
    kw.setdefault("source", "test")
    return Event(type=etype, **kw)


def view(url: str) -> Event:
    return event(EventType.PAGE_VIEW, url=url)


def form(form_id: str | None) -> Event:
    return event(EventType.FORM_FILL, form_id=form_id, email="a@b.co")


def rule_names(reasons: tuple[Reason, ...]) -> list[str]:
    return [r.rule for r in reasons]


# --------------------------------------------------------------------------- shipped config


def test_pricing_view_adds_page_view_and_pricing(shipped: ScoringConfig) -> None:
    reasons = score_event(view("https://acme.io/pricing?plan=pro#faq"), shipped)
    assert rule_names(reasons) == ["page-view", "pricing-page"]
    assert total_points(reasons) == 11.0
    assert not is_hand_raiser(reasons)
    pricing = reasons[1]
    assert pricing == Reason(
        rule="pricing-page",
        points=10.0,
        event_id="ev-1",
        event_type="page_view",
        ts=TS,
        detail="viewed /pricing",
        hand_raiser=False,
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://acme.io/pricing", 11.0),
        ("https://acme.io/pricing/", 11.0),
        ("/pricing?utm_source=x", 11.0),
        ("https://acme.io/pricing-faq", 1.0),
        ("https://acme.io/blog/pricing", 1.0),
        ("https://acme.io/", 1.0),
        ("https://acme.io/features/routing", 4.0),
        ("https://acme.io/case-studies/globex", 6.0),
        ("https://acme.io/docs/api", 5.0),
        ("https://acme.io/integrations", 5.0),
        ("https://acme.io/careers", -9.0),
        ("https://acme.io/jobs/123", -9.0),
        ("https://acme.io/unsubscribe?e=abc", -19.0),
    ],
)
def test_page_view_points(shipped: ScoringConfig, url: str, expected: float) -> None:
    assert total_points(score_event(view(url), shipped)) == expected


def test_careers_page_is_negative(shipped: ScoringConfig) -> None:
    reasons = score_event(view("https://acme.io/careers/sales-engineer"), shipped)
    assert [(r.rule, r.points) for r in reasons] == [("page-view", 1.0), ("careers-page", -10.0)]


@pytest.mark.parametrize("form_id", ["demo-request", "talk-to-sales", "contact-sales"])
def test_hand_raiser_forms(shipped: ScoringConfig, form_id: str) -> None:
    reasons = score_event(form(form_id), shipped)
    assert rule_names(reasons) == ["form-fill", "hand-raiser"]
    assert total_points(reasons) == 60.0
    assert is_hand_raiser(reasons)
    assert [r.hand_raiser for r in reasons] == [False, True]
    assert {r.detail for r in reasons} == {f"filled form {form_id}"}


@pytest.mark.parametrize(
    ("form_id", "expected"),
    [
        ("webinar-registration", 30.0),
        ("whitepaper-download", 25.0),
        ("ebook-download", 25.0),
        ("newsletter", 10.0),
        (None, 10.0),
    ],
)
def test_other_forms(shipped: ScoringConfig, form_id: str | None, expected: float) -> None:
    reasons = score_event(form(form_id), shipped)
    assert total_points(reasons) == expected
    assert not is_hand_raiser(reasons)


def test_email_events(shipped: ScoringConfig) -> None:
    opened = score_event(event(EventType.EMAIL_OPEN, campaign="nov-webinar"), shipped)
    assert [(r.rule, r.points, r.detail) for r in opened] == [
        ("email-open", 2.0, "opened email campaign nov-webinar")
    ]
    clicked = score_event(
        event(EventType.EMAIL_CLICK, campaign="nov-webinar", url="https://acme.io/webinars/nov"), shipped
    )
    assert [(r.rule, r.points, r.detail) for r in clicked] == [
        ("email-click", 5.0, "clicked /webinars/nov in email campaign nov-webinar")
    ]
    assert score_event(event(EventType.EMAIL_OPEN), shipped)[0].detail == "opened an email"


# --------------------------------------------------------------------------- matching rules

CUSTOM = """\
threshold: 50
rules:
  - name: linkedin
    description: Came from LinkedIn.
    event: page_view
    url: utm_source=linkedin
    points: 3
  - name: any-view
    description: Any view.
    event: page_view
    points: 1
  - name: nov-open
    description: Opened the November webinar email.
    event: email_open
    campaign: nov-webinar
    points: 4
  - name: nov-demo
    description: Demo request from the November campaign.
    event: form_fill
    form: demo-request
    campaign: nov-webinar
    points: 7
"""


@pytest.fixture(scope="module")
def custom() -> ScoringConfig:
    return load_scoring_config(CUSTOM, "custom.yaml")


def test_url_regex_searches_path_and_query(custom: ScoringConfig) -> None:
    reasons = score_event(view("https://acme.io/blog?utm_source=linkedin&utm_medium=social"), custom)
    assert rule_names(reasons) == ["linkedin", "any-view"]
    assert total_points(reasons) == 4.0


def test_url_regex_ignores_host_and_fragment(custom: ScoringConfig) -> None:
    assert rule_names(score_event(view("https://utm_source=linkedin.example/"), custom)) == ["any-view"]
    assert rule_names(score_event(view("https://acme.io/#utm_source=linkedin"), custom)) == ["any-view"]


def test_url_rule_needs_a_url(custom: ScoringConfig) -> None:
    assert rule_names(score_event(event(EventType.PAGE_VIEW), custom)) == ["any-view"]


def test_campaign_must_match_exactly(custom: ScoringConfig) -> None:
    assert total_points(score_event(event(EventType.EMAIL_OPEN, campaign="nov-webinar"), custom)) == 4.0
    assert score_event(event(EventType.EMAIL_OPEN, campaign="dec-webinar"), custom) == ()
    assert score_event(event(EventType.EMAIL_OPEN), custom) == ()


def test_form_and_campaign_must_both_match(custom: ScoringConfig) -> None:
    hit = event(EventType.FORM_FILL, form_id="demo-request", campaign="nov-webinar")
    assert rule_names(score_event(hit, custom)) == ["nov-demo"]
    assert score_event(event(EventType.FORM_FILL, form_id="demo-request"), custom) == ()
    assert score_event(event(EventType.FORM_FILL, form_id="other", campaign="nov-webinar"), custom) == ()


def test_event_type_must_match(custom: ScoringConfig) -> None:
    assert score_event(event(EventType.EMAIL_CLICK, campaign="nov-webinar"), custom) == ()


def test_reasons_carry_the_event(custom: ScoringConfig) -> None:
    ev = event(EventType.EMAIL_OPEN, event_id="abc", ts=TS + 5, campaign="nov-webinar")
    (reason,) = score_event(ev, custom)
    assert (reason.event_id, reason.event_type, reason.ts) == ("abc", "email_open", TS + 5)


def test_total_points_and_hand_raiser_of_nothing() -> None:
    assert total_points(()) == 0.0
    assert is_hand_raiser(()) is False


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://acme.io/pricing?plan=pro#faq", "/pricing?plan=pro"),
        ("https://acme.io", "/"),
        ("/docs", "/docs"),
        ("http://[::1", "http://[::1"),
        (None, None),
        ("", None),
    ],
)
def test_url_target(url: str | None, target: str | None) -> None:
    assert url_target(url) == target
