"""Scoring rules for any tracked event: names, properties, categories, structured and self-describing events."""

from __future__ import annotations

import pytest

from models import Event, EventType
from scoring import ScoringConfigError, load_scoring_config, score_event

RULES = """\
threshold: 100
rules:
  - name: wp
    description: whitepaper
    event: track
    event_name: [Whitepaper Downloaded, Ebook Downloaded]
    points: 15
  - name: any-download
    description: anything downloaded
    event: track
    event_name_regex: Downloaded$
    properties: {format: [pdf, epub], pages: {at_least: 10, at_most: 500}, gated: true, campaign_id: {regex: ^q4-}}
    points: 5
  - name: paid-plan
    description: self-describing trial event, any version
    event: track
    schema: iglu:com.acme/trial_started
    properties: {plan: pro, seats: 10, coupon: {exists: false}}
    points: 30
  - name: email-open
    description: structured open
    event: track
    category: email
    action: open
    label: [nov-newsletter, dec-newsletter]
    points: 2
  - name: docs-screen
    description: a docs page or screen by name and category
    event: page_view
    event_name: Getting Started
    category: Docs
    points: 4
"""
CONFIG = load_scoring_config(RULES, "match.yaml")


def track(name: str | None, **traits: str) -> Event:
    return Event(event_id="e", type=EventType.TRACK, ts=1e9, source="segment", name=name, traits=traits)


def rules(event: Event) -> list[str]:
    return [r.rule for r in score_event(event, CONFIG)]


def test_track_by_exact_name_or_list() -> None:
    assert rules(track("Whitepaper Downloaded")) == ["wp"]
    assert rules(track("Ebook Downloaded")) == ["wp"]
    assert rules(track("whitepaper downloaded")) == []  # exact: a case slip is a different event
    assert rules(track(None)) == []


def test_properties_values_lists_ranges_booleans_regex() -> None:
    full = {"format": "pdf", "pages": "12", "gated": "true", "campaign_id": "q4-launch"}
    assert rules(track("Report Downloaded", **full)) == ["any-download"]
    assert rules(track("Report Downloaded", **{**full, "format": "epub"})) == ["any-download"]
    assert rules(track("Report Downloaded", **{**full, "pages": "12.0"})) == ["any-download"]  # numbers compare as numbers
    for bad in ({"format": "doc"}, {"pages": "9"}, {"pages": "501"}, {"pages": "many"}, {"gated": "false"},
                {"campaign_id": "q3-launch"}):
        assert rules(track("Report Downloaded", **{**full, **bad})) == [], bad
    missing = dict(full)
    del missing["format"]
    assert rules(track("Report Downloaded", **missing)) == []
    # Collector metadata ("$" keys) is never a property.
    assert rules(track("Report Downloaded", **{**full, "$schema": "x"})) == ["any-download"]


def test_self_describing_schema_without_version_and_data_fields() -> None:
    data = {"$schema": "iglu:com.acme/trial_started/jsonschema/1-0-2", "plan": "pro", "seats": "10"}
    assert rules(track("trial_started", **data)) == ["paid-plan"]
    assert rules(track("trial_started", **{**data, "coupon": "HALF"})) == []  # exists: false
    assert rules(track("trial_started", **{**data, "$schema": "iglu:com.acme/trial_started_v2/jsonschema/1-0-0"})) == []
    assert rules(track("trial_started", **{k: v for k, v in data.items() if k != "$schema"})) == []


def test_snowplow_structured_category_action_label() -> None:
    se = {"category": "email", "action": "open", "label": "nov-newsletter"}
    assert rules(track("email/open", **se)) == ["email-open"]
    assert rules(track("email/open", **{**se, "label": "spam-test"})) == []
    assert rules(track("email/click", **{**se, "action": "click"})) == []


def test_page_and_screen_by_name_and_category() -> None:
    screen = Event(event_id="s", type=EventType.PAGE_VIEW, ts=1e9, source="segment", name="Getting Started",
                   traits={"$category": "Docs", "$call": "screen"})
    [reason] = score_event(screen, CONFIG)
    assert (reason.rule, reason.detail) == ("docs-screen", "viewed screen 'Getting Started'")
    other = Event(event_id="s", type=EventType.PAGE_VIEW, ts=1e9, source="segment", name="Getting Started",
                  traits={"$category": "Blog"})
    assert score_event(other, CONFIG) == ()


def test_versions_change_with_matching_keys_only() -> None:
    plain = "threshold: 100\nrules:\n  - {name: a, description: d, event: track, points: 1}\n"
    named = "threshold: 100\nrules:\n  - {name: a, description: d, event: track, event_name: X, points: 1}\n"
    assert load_scoring_config(plain).version != load_scoring_config(named).version
    assert load_scoring_config(named).version == load_scoring_config(named + "# a comment\n").version


@pytest.mark.parametrize(("extra", "message"), [
    ("event: email_open\n    category: x", "'category' only applies to events page_view, track, but this rule's event is 'email_open'"),
    ("event: track\n    schema: com.acme/x", "'schema' 'com.acme/x' is not an iglu URI"),
    ("event: track\n    event_name_regex: '(unclosed'", "'event_name_regex' is not a valid regular expression"),
    ("event: track\n    properties: {pages: {at_least: 10, at_most: 2}}", "'at_most' 2 is below 'at_least' 10"),
    ("event: track\n    properties: {$schema: x}", "starts with '$'"),
    ("event: track\n    properties: {a: {regex: x, at_least: 1}}", "'regex' cannot be combined"),
    ("event: track\n    properties: {a: []}", "is an empty list"),
    ("event: track\n    properties: {}", "'properties' must be a non-empty mapping"),
    ("event: track\n    event_name: [X, '']", "'event_name' has an empty entry"),
])
def test_bad_matching_keys_name_the_line(extra: str, message: str) -> None:
    text = f"threshold: 100\nrules:\n  - name: r\n    description: d\n    points: 1\n    {extra}\n"
    with pytest.raises(ScoringConfigError) as info:
        load_scoring_config(text, "bad.yaml")
    assert str(info.value).startswith("bad.yaml:") and message in str(info.value), str(info.value)


def test_identify_window_and_account_intent_sections() -> None:
    cfg = load_scoring_config("threshold: 100\nidentify_window_hours: 24\naccount_intent: {threshold: 90, "
                              "per_role: 0}\nrules:\n  - {name: a, description: d, event: track, points: 1}\n")
    assert cfg.identify_window_s == 24 * 3600
    assert (cfg.intent.threshold, cfg.intent.window_days, cfg.intent.per_person, cfg.intent.per_role) == (
        90, 14, 10, 0)
    default = load_scoring_config("threshold: 100\nrules:\n  - {name: a, description: d, event: track, points: 1}\n")
    assert default.identify_window_s == 72 * 3600 and default.intent.threshold == 150
    with pytest.raises(ScoringConfigError, match=r"bad.yaml:2: account_intent: unknown key 'treshold'; did you mean"):
        load_scoring_config("threshold: 100\naccount_intent: {treshold: 9}\nrules: []\n", "bad.yaml")
    with pytest.raises(ScoringConfigError, match=r"bad.yaml:2: .*'identify_window_hours' must be at least 0"):
        load_scoring_config("threshold: 100\nidentify_window_hours: -1\nrules: []\n", "bad.yaml")
