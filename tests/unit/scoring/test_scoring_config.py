"""Loading and strictly validating scoring configs."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from models.events import EventType
from scoring import ScoringConfig, ScoringConfigError, ScoringRule, load_scoring_config

SHIPPED = Path(__file__).resolve().parents[3] / "scoring" / "scoring.yaml"

# Line numbers below refer to this text: line 1 is "threshold: 100".
GOOD = """\
threshold: 100
half_life_days: 14
rules:
  - name: pricing
    description: Viewed pricing.
    event: page_view
    url: ^/pricing(?:[/?]|$)
    points: 10
  - name: demo
    description: Asked for a demo.
    event: form_fill
    form: [demo-request, contact-sales]
    points: 50
    hand_raiser: true
"""


def load(text: str, source: str = "scoring.yaml") -> ScoringConfig:
    return load_scoring_config(textwrap.dedent(text), source)


def error(text: str, source: str = "bad.yaml") -> str:
    with pytest.raises(ScoringConfigError) as info:
        load_scoring_config(textwrap.dedent(text), source)
    return str(info.value)


def rule_yaml(extra: str = "", *, name: str = "pricing", event: str = "page_view", points: str = "10") -> str:
    """A config whose one rule starts at line 3; ``extra`` lines start at line 7."""
    return (
        "threshold: 100\n"
        "rules:\n"
        f"  - name: {name}\n"
        "    description: A rule.\n"
        f"    event: {event}\n"
        f"    points: {points}\n" + textwrap.indent(textwrap.dedent(extra), "    ")
    )


# --------------------------------------------------------------------------- valid configs


def test_good_config_parses_every_field() -> None:
    config = load(GOOD)
    assert config.threshold == 100.0
    assert config.half_life_days == 14.0
    assert config.half_life_s == 14 * 86_400.0
    pricing, demo = config.rules
    assert pricing == ScoringRule(
        name="pricing",
        description="Viewed pricing.",
        event=EventType.PAGE_VIEW,
        url=re.compile(r"^/pricing(?:[/?]|$)"),
        points=10.0,
        line=4,
    )
    assert demo.forms == ("demo-request", "contact-sales")
    assert demo.hand_raiser is True
    assert demo.event is EventType.FORM_FILL
    assert demo.line == 9
    assert demo.url is None and demo.campaign is None


def test_half_life_defaults_to_30_days() -> None:
    config = load(rule_yaml())
    assert config.half_life_days == 30.0
    assert config.half_life_s == 2_592_000.0


def test_form_accepts_a_single_string_and_campaign_is_kept() -> None:
    config = load(rule_yaml("form: webinar-registration\ncampaign: nov-webinar\n", event="form_fill"))
    (rule,) = config.rules
    assert rule.forms == ("webinar-registration",)
    assert rule.campaign == "nov-webinar"
    assert rule.hand_raiser is False


def test_negative_points_are_allowed() -> None:
    (rule,) = load(rule_yaml(points="-10")).rules
    assert rule.points == -10.0


def test_version_is_a_content_hash_ignoring_formatting() -> None:
    a = load(GOOD)
    reformatted = "# a comment\n" + GOOD.replace(
        "form: [demo-request, contact-sales]", "form:\n      - demo-request\n      - contact-sales"
    ).replace("threshold: 100", "threshold: 100.0")
    b = load(reformatted)
    assert re.fullmatch(r"[0-9a-f]{12}", a.version)
    assert b.version == a.version
    assert b.rules[1].line != a.rules[1].line or b.rules[0].line != a.rules[0].line
    changed = load(GOOD.replace("points: 10", "points: 11"))
    assert changed.version != a.version
    assert load(GOOD.replace("threshold: 100", "threshold: 90")).version != a.version


def test_single_form_string_and_one_item_list_hash_the_same() -> None:
    one = load(rule_yaml("form: demo\n", event="form_fill"))
    listed = load(rule_yaml("form: [demo]\n", event="form_fill"))
    assert one.version == listed.version


def test_direct_construction_computes_version_and_validates() -> None:
    rule = ScoringRule(name="x", description="d", event=EventType.EMAIL_OPEN, points=2)
    config = ScoringConfig(threshold=50, rules=(rule,))
    again = ScoringConfig(threshold=50, rules=(rule,))
    assert config.version == again.version
    assert config.rules_for(EventType.EMAIL_OPEN) == (rule,)
    assert config.rules_for(EventType.PAGE_VIEW) == ()
    with pytest.raises(ScoringConfigError, match="threshold"):
        ScoringConfig(threshold=0, rules=(rule,))
    with pytest.raises(ScoringConfigError, match="half_life_days"):
        ScoringConfig(threshold=1, half_life_days=float("nan"), rules=(rule,))


def test_shipped_scoring_yaml_loads() -> None:
    config = load_scoring_config(SHIPPED.read_text(encoding="utf-8"), str(SHIPPED))
    assert config.threshold == 100.0
    assert config.half_life_days == 30.0
    by_name = {r.name: r for r in config.rules}
    assert len(by_name) == len(config.rules) >= 13
    assert all(r.description for r in config.rules)
    assert by_name["pricing-page"].points == 10.0
    assert by_name["careers-page"].points == -10.0
    assert by_name["unsubscribe-page"].points == -20.0
    assert by_name["email-open"].points == 2.0
    assert by_name["email-click"].points == 5.0
    assert by_name["webinar-registration"].points == 20.0
    assert by_name["content-download"].points == 15.0
    hand = by_name["hand-raiser"]
    assert hand.hand_raiser is True
    assert hand.points == 50.0
    assert set(hand.forms) == {"demo-request", "talk-to-sales", "contact-sales"}
    assert [r.name for r in config.rules if r.hand_raiser] == ["hand-raiser"]


# --------------------------------------------------------------------------- errors


def test_unknown_rule_key_suggests_closest() -> None:
    msg = error(rule_yaml("poinst: 3\n"))
    assert msg.startswith("bad.yaml:7: rule 'pricing': unknown key 'poinst'")
    assert "did you mean 'points'?" in msg
    assert (
        "valid keys: name, description, event, url, form, campaign, event_name, event_name_regex, properties, "
        "category, action, label, schema, points, hand_raiser, cap_per_day, once_per_lead, repeatable" in msg
    )


def test_unknown_top_level_key_suggests_closest() -> None:
    msg = error("threshold: 100\nhalf_life: 10\nrules: []\n")
    assert msg.startswith("bad.yaml:2: top level: unknown key 'half_life'")
    assert "did you mean 'half_life_days'?" in msg


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    msg = error(rule_yaml("colour: blue\n"))
    assert "bad.yaml:7: rule 'pricing': unknown key 'colour'" in msg
    assert "did you mean" not in msg
    assert "valid keys:" in msg


def test_unknown_event_suggests_closest_event_type() -> None:
    msg = error(rule_yaml(event="pageview"))
    assert msg.startswith("bad.yaml:5: rule 'pricing': unknown event 'pageview'")
    assert "did you mean 'page_view'?" in msg
    assert "valid events: page_view, email_open, email_click, form_fill" in msg


def test_a_page_ping_is_no_rule_event() -> None:
    msg = error(rule_yaml(event="page_ping"))
    assert "unknown event 'page_ping'" in msg and "page_ping," not in msg.split("valid events:")[1]


def test_event_with_dashes_suggests_the_underscore_spelling() -> None:
    assert "did you mean 'email_click'?" in error(rule_yaml(event="Email-Click"))


def test_points_wrong_type() -> None:
    msg = error(rule_yaml(points="ten"))
    assert msg.startswith("bad.yaml:6: rule 'pricing': 'points' must be a number, got text 'ten'")


def test_points_boolean_is_not_a_number() -> None:
    assert "'points' must be a number, got boolean True" in error(rule_yaml(points="true"))


def test_points_must_be_finite() -> None:
    msg = error(rule_yaml(points=".inf"))
    assert msg.startswith("bad.yaml:6: rule 'pricing': 'points' must be finite, got inf")


def test_exponent_without_dot_is_explained() -> None:
    msg = error(rule_yaml().replace("threshold: 100", "threshold: 1e2"))
    assert msg.startswith("bad.yaml:1: top level: 'threshold' must be a number, got text '1e2'")
    assert "decimal point" in msg


@pytest.mark.parametrize("value", ["0", "-5"])
def test_threshold_must_be_positive(value: str) -> None:
    msg = error(rule_yaml().replace("threshold: 100", f"threshold: {value}"))
    assert msg.startswith(f"bad.yaml:1: top level: 'threshold' must be greater than 0, got {value}")


def test_half_life_must_be_positive() -> None:
    msg = error(rule_yaml().replace("threshold: 100\n", "threshold: 100\nhalf_life_days: 0\n"))
    assert msg.startswith("bad.yaml:2: top level: 'half_life_days' must be greater than 0")


def test_missing_threshold() -> None:
    msg = error("rules:\n  - name: a\n    description: d\n    event: page_view\n    points: 1\n")
    assert msg.startswith("bad.yaml:1: top level: missing required key 'threshold'")


def test_missing_description_names_rule_and_line() -> None:
    text = "threshold: 100\nrules:\n  - name: ok\n    description: d\n    event: page_view\n    points: 1\n  - name: nodesc\n    event: page_view\n    points: 1\n"
    msg = error(text)
    assert msg.startswith("bad.yaml:7: rule 'nodesc': missing required key 'description'")
    assert "add 'description:' to the rule" in msg


def test_missing_name_uses_rule_position() -> None:
    msg = error("threshold: 100\nrules:\n  - description: d\n    event: page_view\n    points: 1\n")
    assert msg.startswith("bad.yaml:3: rule #1: missing required key 'name'")


def test_empty_description_is_an_error() -> None:
    msg = error(rule_yaml().replace("description: A rule.", 'description: "  "'))
    assert msg.startswith("bad.yaml:4: rule 'pricing': 'description' is empty")


def test_duplicate_rule_names_name_both_lines() -> None:
    text = (
        "threshold: 100\nrules:\n"
        "  - name: pricing\n    description: a\n    event: page_view\n    points: 1\n"
        "  - name: pricing\n    description: b\n    event: page_view\n    points: 2\n"
    )
    msg = error(text)
    assert msg.startswith("bad.yaml:7: rule 'pricing': duplicate rule name (also used by the rule at line 3)")
    assert "rename one" in msg


def test_duplicate_yaml_key_is_an_error() -> None:
    msg = error(rule_yaml("points: 20\n"))
    assert msg.startswith("bad.yaml:7: rule 'pricing': key 'points' appears twice (first at line 6)")


def test_invalid_regex() -> None:
    msg = error(rule_yaml("url: ^/pricing(\n"))
    assert msg.startswith("bad.yaml:7: rule 'pricing': 'url' is not a valid regular expression '^/pricing('")
    assert "missing )" in msg
    assert "escape special characters" in msg


def test_form_only_on_form_fill() -> None:
    msg = error(rule_yaml("form: demo-request\n"))
    assert msg.startswith("bad.yaml:7: rule 'pricing': 'form' only applies to event 'form_fill'")
    assert "'page_view'" in msg


def test_hand_raiser_only_on_named_events() -> None:
    msg = error(rule_yaml("hand_raiser: true\n", event="email_open"))
    assert msg.startswith("bad.yaml:7: rule 'pricing': 'hand_raiser: true' only applies to events form_fill, "
                          "page_view, track, but this rule's event is 'email_open'")


def test_hand_raiser_must_be_boolean() -> None:
    msg = error(rule_yaml("hand_raiser: sometimes\n", event="form_fill"))
    assert msg.startswith(
        "bad.yaml:7: rule 'pricing': 'hand_raiser' must be true or false, got text 'sometimes'"
    )


def test_form_empty_list() -> None:
    msg = error(rule_yaml("form: []\n", event="form_fill"))
    assert msg.startswith("bad.yaml:7: rule 'pricing': 'form' is an empty list")


def test_form_entry_wrong_type() -> None:
    msg = error(rule_yaml("form:\n  - demo\n  - 42\n", event="form_fill"))
    assert msg.startswith("bad.yaml:9: rule 'pricing': 'form' entries must be non-empty text, got number 42")


def test_name_must_be_text() -> None:
    msg = error(rule_yaml(name="[a, b]"))
    assert msg.startswith("bad.yaml:3: rule #1: 'name' must be a single value, got a list")


def test_rules_must_be_a_non_empty_list() -> None:
    assert error("threshold: 100\nrules: []\n").startswith(
        "bad.yaml:2: top level: 'rules' must be a non-empty list of rules, got an empty list"
    )
    assert "got a mapping" in error("threshold: 100\nrules:\n  a: 1\n")


def test_rule_must_be_a_mapping() -> None:
    msg = error("threshold: 100\nrules:\n  - pricing\n")
    assert msg.startswith("bad.yaml:3: rule #1: must be a mapping of rule keys, got a value")


def test_yaml_syntax_error_names_line() -> None:
    msg = error("threshold: 100\nrules:\n  - name: [unclosed\n    points: 1\n")
    assert msg.startswith("bad.yaml:")
    assert "YAML syntax" in msg
    line = int(msg.split(":")[1])
    assert 3 <= line <= 5


def test_empty_file_and_non_mapping_root() -> None:
    assert error("").startswith("bad.yaml:1: file: is empty")
    assert error("# only a comment\n").startswith("bad.yaml:1: file: is empty")
    assert error("- a\n- b\n").startswith("bad.yaml:1: file: must be a mapping, got a list")


def test_merge_keys_are_rejected() -> None:
    text = rule_yaml().replace("    points: 10\n", "    points: 10\n    <<: {campaign: x}\n")
    msg = error(text)
    assert msg.startswith("bad.yaml:7: rule 'pricing': YAML merge keys ('<<') are not supported")


def test_default_source_name() -> None:
    with pytest.raises(ScoringConfigError, match=r"^<string>:1: "):
        load_scoring_config("threshold: 0\nrules: []\n")
