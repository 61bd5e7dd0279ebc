"""Engagement caps (per rule per day, per lead per day, once per lead) and the machine discount."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.events import Event, EventType
from models.lead import Reason
from scoring import (
    CapResult,
    RuleHit,
    ScoringConfig,
    ScoringConfigError,
    ScoringError,
    ScoringRule,
    apply_caps,
    apply_caps_detailed,
    day_bucket,
    hits_json,
    load_scoring_config,
    machine_discount,
    score_event,
    score_event_hits,
    total_points,
)

SHIPPED = Path(__file__).resolve().parents[3] / "scoring" / "scoring.yaml"
TS = 1_795_000_000.0  # 2026-11-18 UTC
DAY = 86_400.0

CAPPED = """\
threshold: 100
daily_cap: 40
rules:
  - name: page
    description: Any page.
    event: page_view
    points: 1
    cap_per_day: 3
  - name: pricing
    description: Pricing.
    event: page_view
    url: ^/pricing
    points: 10
    cap_per_day: 25
  - name: careers
    description: Careers.
    event: page_view
    url: ^/careers
    points: -10
  - name: known
    description: First form.
    event: form_fill
    points: 10
    once_per_lead: true
  - name: demo
    description: Demo.
    event: form_fill
    form: demo
    points: 50
    hand_raiser: true
"""


@pytest.fixture(scope="module")
def capped() -> ScoringConfig:
    return load_scoring_config(CAPPED, "capped.yaml")


@pytest.fixture(scope="module")
def shipped() -> ScoringConfig:
    return load_scoring_config(SHIPPED.read_text(encoding="utf-8"), str(SHIPPED))


def event(etype: EventType = EventType.PAGE_VIEW, **kw: Any) -> Event:
    kw.setdefault("event_id", "ev-1")
    kw.setdefault("ts", TS)
    kw.setdefault("source", "test")
    return Event(type=etype, **kw)


def hit(rule: str, points: float, *, cap: float | None = None, once: bool = False, ts: float = TS) -> RuleHit:
    reason = Reason(rule=rule, points=points, event_id="e", event_type="page_view", ts=ts, detail="did x")
    return RuleHit(reason=reason, cap_per_day=cap, once=once)


def config_with(daily_cap: float | None = None) -> ScoringConfig:
    rule = ScoringRule(name="r", description="d", event=EventType.PAGE_VIEW, points=1)
    return ScoringConfig(threshold=100, daily_cap=daily_cap, rules=(rule,))


def error(text: str) -> str:
    with pytest.raises(ScoringConfigError) as info:
        load_scoring_config(textwrap.dedent(text), "bad.yaml")
    return str(info.value)


def rule_yaml(extra: str, *, points: str = "10", event: str = "page_view") -> str:
    """One rule starting at line 3; ``extra`` lines start at line 7."""
    return (
        "threshold: 100\nrules:\n  - name: pricing\n    description: A rule.\n"
        f"    event: {event}\n    points: {points}\n" + textwrap.indent(textwrap.dedent(extra), "    ")
    )


# --------------------------------------------------------------------------- config


def test_cap_options_parse(capped: ScoringConfig) -> None:
    by_name = {r.name: r for r in capped.rules}
    assert capped.daily_cap == 40.0
    assert by_name["page"].cap_per_day == 3.0 and not by_name["page"].once_per_lead
    assert by_name["known"].once_per_lead and by_name["known"].cap_per_day is None
    assert by_name["careers"].cap_per_day is None and by_name["careers"].points == -10.0


def test_repeatable_true_is_the_default_and_keeps_the_version() -> None:
    plain = load_scoring_config(rule_yaml(""))
    assert plain.rules[0].once_per_lead is False
    assert load_scoring_config(rule_yaml("repeatable: true\n")).version == plain.version
    assert load_scoring_config(rule_yaml("once_per_lead: false\n")).version == plain.version
    assert load_scoring_config(rule_yaml("once_per_lead: true\n")).version != plain.version
    assert load_scoring_config(rule_yaml("cap_per_day: 5\n")).version != plain.version
    assert (
        load_scoring_config(rule_yaml("").replace("rules:", "daily_cap: 9\nrules:")).version != plain.version
    )


def test_files_without_new_options_keep_their_old_version() -> None:
    # Hashes the code produced before caps and sales_ready existed.
    text = (
        "threshold: 100\nhalf_life_days: 14\nrules:\n"
        "  - name: pricing\n    description: Viewed pricing.\n    event: page_view\n"
        "    url: ^/pricing(?:[/?]|$)\n    points: 10\n"
        "  - name: demo\n    description: Asked for a demo.\n    event: form_fill\n"
        "    form: [demo-request, contact-sales]\n    points: 50\n    hand_raiser: true\n"
    )
    assert load_scoring_config(text).version == "bdf7a77607a0"


def test_cap_per_day_on_negative_points_is_an_error() -> None:
    msg = error(rule_yaml("cap_per_day: 5\n", points="-10"))
    assert msg.startswith("bad.yaml:7: rule 'pricing': 'cap_per_day' has no effect on a rule with -10 points")
    assert "negative points are never capped" in msg
    assert msg.endswith("remove 'cap_per_day'")


@pytest.mark.parametrize("value", ["0", "-3"])
def test_cap_per_day_must_be_positive(value: str) -> None:
    msg = error(rule_yaml(f"cap_per_day: {value}\n"))
    assert msg.startswith(f"bad.yaml:7: rule 'pricing': 'cap_per_day' must be greater than 0, got {value}")


def test_cap_per_day_must_be_a_number() -> None:
    msg = error(rule_yaml("cap_per_day: lots\n"))
    assert msg.startswith("bad.yaml:7: rule 'pricing': 'cap_per_day' must be a number, got text 'lots'")


def test_cap_and_once_together_is_an_error() -> None:
    msg = error(rule_yaml("once_per_lead: true\ncap_per_day: 5\n"))
    assert msg.startswith("bad.yaml:8: rule 'pricing': 'cap_per_day' and 'once_per_lead: true' together")


def test_once_per_lead_must_be_boolean() -> None:
    msg = error(rule_yaml("once_per_lead: yes please\n"))
    assert msg.startswith(
        "bad.yaml:7: rule 'pricing': 'once_per_lead' must be true or false, got text 'yes please'"
    )


def test_repeatable_false_points_to_once_per_lead() -> None:
    msg = error(rule_yaml("repeatable: false\n"))
    assert msg.startswith("bad.yaml:7: rule 'pricing': 'repeatable: false' is spelled 'once_per_lead: true'")


def test_repeatable_contradicting_once_is_an_error() -> None:
    msg = error(rule_yaml("once_per_lead: true\nrepeatable: true\n"))
    assert msg.startswith("bad.yaml:8: rule 'pricing': 'repeatable: true' contradicts 'once_per_lead: true'")


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("cap_per_dya", "cap_per_day"), ("once_per_leed", "once_per_lead"), ("repeatabel", "repeatable")],
)
def test_misspelt_cap_keys_suggest_the_right_one(typo: str, suggestion: str) -> None:
    msg = error(rule_yaml(f"{typo}: 5\n"))
    assert msg.startswith(f"bad.yaml:7: rule 'pricing': unknown key {typo!r}")
    assert f"did you mean {suggestion!r}?" in msg


def test_daily_cap_validation() -> None:
    assert error(rule_yaml("").replace("rules:", "daily_cap: 0\nrules:")).startswith(
        "bad.yaml:2: top level: 'daily_cap' must be greater than 0, got 0"
    )
    msg = error(rule_yaml("").replace("rules:", "daily_capp: 10\nrules:"))
    assert msg.startswith("bad.yaml:2: top level: unknown key 'daily_capp'")
    assert "did you mean 'daily_cap'?" in msg


def test_direct_construction_validates_caps() -> None:
    with pytest.raises(ScoringConfigError, match="cap_per_day"):
        ScoringRule(name="x", description="d", event=EventType.PAGE_VIEW, points=1, cap_per_day=0)
    with pytest.raises(ScoringConfigError, match="daily_cap"):
        config_with(daily_cap=math.inf)


# --------------------------------------------------------------------------- day bucket


def test_day_bucket_is_the_utc_calendar_day() -> None:
    assert day_bucket(TS) == "2026-11-18"
    midnight = 1_795_046_400.0  # 2026-11-19T00:00:00Z
    assert day_bucket(midnight - 0.001) == "2026-11-18"
    assert day_bucket(midnight) == "2026-11-19"
    assert day_bucket(1_700_000_000) == "2023-11-14"


@pytest.mark.parametrize("bad", [math.nan, math.inf, True])
def test_day_bucket_rejects_non_finite(bad: float) -> None:
    with pytest.raises(ScoringError, match="finite epoch seconds"):
        day_bucket(bad)


# --------------------------------------------------------------------------- hits


def test_hits_carry_caps_and_match_score_event(capped: ScoringConfig) -> None:
    ev = event(url="https://acme.io/pricing")
    hits = score_event_hits(ev, capped)
    assert [(h.rule, h.points, h.cap_per_day, h.once) for h in hits] == [
        ("page", 1.0, 3.0, False),
        ("pricing", 10.0, 25.0, False),
    ]
    assert tuple(h.reason for h in hits) == score_event(ev, capped)
    form = score_event_hits(event(EventType.FORM_FILL, form_id="demo"), capped)
    assert [(h.rule, h.once, h.reason.hand_raiser) for h in form] == [
        ("known", True, False),
        ("demo", False, True),
    ]


def test_hits_json_is_what_lua_reads() -> None:
    hits = (hit("page", 1.0, cap=3), hit("known", 10.0, once=True), hit("careers", -10.0))
    assert hits_json(hits) == (
        '[{"rule":"page","points":1.0,"cap":3},{"rule":"known","points":10.0,"once":true},'
        '{"rule":"careers","points":-10.0}]'
    )


# --------------------------------------------------------------------------- machine discount


def test_machine_discount_scales_points_and_says_why(capped: ScoringConfig) -> None:
    ev = event(EventType.PAGE_VIEW, url="/pricing", machine=0.9, machine_reason="apple mail privacy proxy")
    reasons = score_event(ev, capped)
    assert [r.points for r in reasons] == [0.1, 1.0]
    assert reasons[1].detail == "viewed /pricing (discounted 90%: apple mail privacy proxy)"
    assert total_points(reasons) == pytest.approx(1.1)


def test_machine_discount_without_reason_and_negative_points(capped: ScoringConfig) -> None:
    (page, careers) = score_event(event(url="/careers", machine=0.25), capped)
    assert careers.points == -7.5
    assert page.detail == "viewed /careers (discounted 25%: likely automated)"


def test_full_machine_gives_zero_not_negative_zero(capped: ScoringConfig) -> None:
    (_, careers) = score_event(event(url="/careers", machine=1.0), capped)
    assert careers.points == 0.0 and math.copysign(1.0, careers.points) == 1.0


def test_no_machine_no_note(capped: ScoringConfig) -> None:
    (page,) = score_event(event(url="/"), capped)
    assert page.detail == "viewed /" and page.points == 1.0


@pytest.mark.parametrize(
    ("points", "machine", "expected"),
    [
        (10.0, 0.0, 10.0),
        (10.0, 0.9, 1.0),
        (10.0, 0.5, 5.0),
        (-20.0, 0.5, -10.0),
        (3.0, 1.0, 0.0),
        (3.0, 1.5, 0.0),
        (3.0, -0.2, 3.0),
        (3.0, math.nan, 3.0),
        (2.0, 1 / 3, 1.333333),
    ],
)
def test_machine_discount_table(points: float, machine: float, expected: float) -> None:
    assert machine_discount(points, machine) == expected


def test_machine_made_hand_raiser_does_not_raise_a_hand(capped: ScoringConfig) -> None:
    bot = score_event(event(EventType.FORM_FILL, form_id="demo", machine=0.5, machine_reason="bot"), capped)
    assert bot[1].rule == "demo" and bot[1].points == 25.0 and bot[1].hand_raiser is False
    person = score_event(event(EventType.FORM_FILL, form_id="demo", machine=0.49), capped)
    assert person[1].hand_raiser is True


# --------------------------------------------------------------------------- apply_caps examples


def test_per_rule_cap_clamps_and_counts_across_events() -> None:
    config = config_with()
    reasons, used = apply_caps((hit("pricing", 10, cap=25),), {"pricing": 20.0}, 0.0, config)
    assert reasons[0].points == 5.0
    assert reasons[0].detail == "did x (pricing cap 25/day: 5 of 10)"
    assert used == {"pricing": 25.0}
    reasons, used = apply_caps((hit("pricing", 10, cap=25),), used, 5.0, config)
    assert reasons[0].points == 0.0 and used == {"pricing": 25.0}


def test_uncapped_rules_are_not_tracked_in_used() -> None:
    reasons, used = apply_caps((hit("page", 1.0), hit("pricing", 10, cap=25)), {}, 0.0, config_with())
    assert [r.points for r in reasons] == [1.0, 10.0]
    assert used == {"pricing": 10.0}


def test_daily_cap_clamps_remaining_positive_points_in_order() -> None:
    hits = (hit("a", 10, cap=6), hit("b", 10), hit("c", 10))
    result = apply_caps_detailed(hits, {}, 0.0, config_with(daily_cap=12))
    # a: rule cap first (6), then the daily cap has 12 -> 6 granted; b: 6 left; c: nothing.
    assert [r.points for r in result.reasons] == [6.0, 6.0, 0.0]
    assert result.reasons[0].detail == "did x (a cap 6/day: 6 of 10)"
    assert result.reasons[1].detail == "did x (daily cap 12: 6 of 10)"
    assert result.reasons[2].detail == "did x (daily cap 12: 0 of 10)"
    assert result.used == {"a": 6.0}
    assert result.daily_used == 12.0
    assert result.granted == 12.0


def test_rule_and_daily_cap_together_are_both_named() -> None:
    result = apply_caps_detailed((hit("a", 10, cap=8),), {"a": 2.0}, 7.0, config_with(daily_cap=10))
    assert result.reasons[0].points == 3.0
    assert result.reasons[0].detail == "did x (a cap 8/day; daily cap 10: 3 of 10)"
    assert result.used == {"a": 5.0}


def test_daily_used_already_over_the_cap_grants_nothing_positive() -> None:
    result = apply_caps_detailed((hit("a", 5), hit("neg", -4)), {}, 50.0, config_with(daily_cap=40))
    assert [r.points for r in result.reasons] == [0.0, -4.0]
    assert result.daily_used == 50.0  # never lowered, never raised


def test_negative_points_are_never_capped_and_free_no_room() -> None:
    hits = (hit("careers", -10), hit("a", 10, cap=10), hit("careers", -10))
    result = apply_caps_detailed(hits, {"a": 8.0}, 38.0, config_with(daily_cap=40))
    assert [r.points for r in result.reasons] == [-10.0, 2.0, -10.0]
    assert result.reasons[0].detail == "did x"
    assert result.daily_used == 40.0 and result.used == {"a": 10.0}


def test_once_per_lead_grants_only_the_first_time() -> None:
    config = config_with()
    first = apply_caps_detailed((hit("known", 10, once=True),), {}, 0.0, config)
    assert first.reasons[0].points == 10.0 and first.fired == frozenset({"known"})
    again = apply_caps_detailed((hit("known", 10, once=True),), {}, 0.0, config, fired=first.fired)
    assert again.reasons[0].points == 0.0
    assert again.reasons[0].detail == "did x (once per lead, already counted: 0 of 10)"
    twice_in_one_call = apply_caps_detailed((hit("k", 3, once=True), hit("k", 3, once=True)), {}, 0.0, config)
    assert [r.points for r in twice_in_one_call.reasons] == [3.0, 0.0]


def test_once_per_lead_is_not_used_up_by_a_zero_grant() -> None:
    config = config_with(daily_cap=10)
    machine = apply_caps_detailed((hit("known", 0.0, once=True),), {}, 0.0, config)
    assert machine.fired == frozenset()
    full_day = apply_caps_detailed((hit("known", 10, once=True),), {}, 10.0, config)
    assert full_day.reasons[0].points == 0.0 and full_day.fired == frozenset()
    partial = apply_caps_detailed((hit("known", 10, once=True),), {}, 7.0, config)
    assert partial.reasons[0].points == 3.0 and partial.fired == frozenset({"known"})


def test_negative_once_rule_counts_once() -> None:
    config = config_with()
    first = apply_caps_detailed((hit("unsub", -20, once=True),), {}, 0.0, config)
    assert first.reasons[0].points == -20.0 and first.fired == {"unsub"}
    second = apply_caps_detailed((hit("unsub", -20, once=True),), {}, 0.0, config, fired=first.fired)
    assert second.reasons[0].points == 0.0


def test_inputs_are_not_modified_and_reasons_keep_everything_else() -> None:
    used = {"a": 1.0}
    fired = {"z"}
    h = hit("a", 10, cap=5)
    result = apply_caps_detailed((h,), used, 0.0, config_with(), fired=fired)
    assert used == {"a": 1.0} and fired == {"z"}
    assert result.fired == frozenset({"z"})
    assert replace(result.reasons[0], points=h.points, detail=h.reason.detail) == h.reason


def test_apply_caps_is_the_short_form() -> None:
    hits = (hit("a", 10, cap=5), hit("b", 3))
    short = apply_caps(hits, {}, 0.0, config_with(daily_cap=6))
    full = apply_caps_detailed(hits, {}, 0.0, config_with(daily_cap=6))
    assert short == (full.reasons, full.used)
    assert isinstance(full, CapResult)


def test_hits_from_two_days_are_refused() -> None:
    with pytest.raises(ScoringError, match="several UTC days"):
        apply_caps((hit("a", 1), hit("a", 1, ts=TS + DAY)), {}, 0.0, config_with())


def test_no_hits_changes_nothing() -> None:
    result = apply_caps_detailed((), {"a": 2.0}, 3.0, config_with(daily_cap=5), fired={"x"})
    assert result == CapResult(
        reasons=(), used={"a": 2.0}, daily_used=3.0, fired=frozenset({"x"}), granted=0.0
    )


def test_shipped_caps_stop_a_day_of_pricing_page_refreshes(shipped: ScoringConfig) -> None:
    used: dict[str, float] = {}
    daily = 0.0
    total = 0.0
    for i in range(50):
        ev = event(url="https://acme.io/pricing", event_id=f"ev-{i}", ts=TS + i)
        result = apply_caps_detailed(score_event_hits(ev, shipped), used, daily, shipped)
        used, daily, total = result.used, result.daily_used, total + result.granted
    assert total == 40.0  # page-view 10/day + pricing-page 30/day
    assert used == {"page-view": 10.0, "pricing-page": 30.0}


def test_shipped_caps(shipped: ScoringConfig) -> None:
    by_name = {r.name: r for r in shipped.rules}
    assert shipped.daily_cap == 120.0
    assert by_name["page-view"].cap_per_day == 10.0
    assert by_name["pricing-page"].cap_per_day == 30.0
    assert by_name["email-open"].cap_per_day == 6.0
    assert by_name["form-fill"].once_per_lead is True
    assert by_name["careers-page"].cap_per_day is None
    assert all(r.cap_per_day is None for r in shipped.rules if r.points < 0)


# --------------------------------------------------------------------------- properties

RULES = ("a", "b", "c", "d")
caps_st = st.one_of(st.none(), st.floats(min_value=0.5, max_value=50, allow_nan=False))
hit_st = st.tuples(
    st.sampled_from(RULES),
    st.one_of(st.floats(min_value=-30, max_value=60, allow_nan=False), st.sampled_from([0.0, 1.0, 10.0])),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[tuple[RuleHit, ...], dict[str, float], float, float | None, set[str]]:
    caps = {r: draw(caps_st) for r in RULES}
    once = {r: caps[r] is None and draw(st.booleans()) for r in RULES}
    hits = tuple(hit(r, p, cap=caps[r], once=once[r]) for r, p in draw(st.lists(hit_st, max_size=12)))
    used = {
        r: draw(st.floats(min_value=0, max_value=60, allow_nan=False)) for r in RULES if caps[r] is not None
    }
    daily_used = draw(st.floats(min_value=0, max_value=150, allow_nan=False))
    daily_cap = draw(st.one_of(st.none(), st.floats(min_value=1, max_value=120, allow_nan=False)))
    fired = {r for r in RULES if once[r] and draw(st.booleans())}
    return hits, used, daily_used, daily_cap, fired


EPS = 1e-9


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_caps_are_never_exceeded(
    scenario: tuple[tuple[RuleHit, ...], dict[str, float], float, float | None, set[str]],
) -> None:
    hits, used, daily_used, daily_cap, fired = scenario
    result = apply_caps_detailed(hits, used, daily_used, config_with(daily_cap), fired=fired)
    granted = [r.points for r in result.reasons]
    assert len(granted) == len(hits)
    positive_total = 0.0
    per_rule: dict[str, float] = {}
    once_grants: dict[str, int] = {}
    fired_so_far = set(fired)
    for h, g in zip(hits, granted, strict=True):
        if h.once and h.rule in fired_so_far:
            assert g == 0.0
        elif h.points <= 0:
            assert g == h.points  # negatives are never capped
        else:
            assert 0.0 <= g <= h.points  # granted <= asked
            positive_total += g
            per_rule[h.rule] = per_rule.get(h.rule, 0.0) + g
        if h.once and g != 0:
            once_grants[h.rule] = once_grants.get(h.rule, 0) + 1
            fired_so_far.add(h.rule)
    assert all(n == 1 and r not in fired for r, n in once_grants.items())
    assert result.fired == frozenset(fired_so_far)
    for h in hits:
        if h.cap_per_day is not None:
            room = max(0.0, h.cap_per_day - used.get(h.rule, 0.0))
            assert per_rule.get(h.rule, 0.0) <= room + EPS
            if used.get(h.rule, 0.0) <= h.cap_per_day:
                assert result.used[h.rule] <= h.cap_per_day
    if daily_cap is not None:
        assert positive_total <= max(0.0, daily_cap - daily_used) + EPS
        if daily_used <= daily_cap:
            assert result.daily_used <= daily_cap
    assert result.daily_used >= daily_used


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_one_call_equals_one_hit_at_a_time(
    scenario: tuple[tuple[RuleHit, ...], dict[str, float], float, float | None, set[str]],
) -> None:
    hits, used, daily_used, daily_cap, fired = scenario
    config = config_with(daily_cap)
    together = apply_caps_detailed(hits, used, daily_used, config, fired=fired)
    state_used: Mapping[str, float] = used
    state_daily, state_fired = daily_used, frozenset(fired)
    one_by_one: list[Reason] = []
    for h in hits:
        step = apply_caps_detailed((h,), state_used, state_daily, config, fired=state_fired)
        one_by_one.extend(step.reasons)
        state_used, state_daily, state_fired = step.used, step.daily_used, step.fired
    assert tuple(one_by_one) == together.reasons
    assert (dict(state_used), state_daily, state_fired) == (
        together.used,
        together.daily_used,
        together.fired,
    )


def lua_like(
    hits_text: str, used: dict[str, float], daily_used: float, daily_cap: float | None, fired: set[str]
) -> list[float]:
    """The documented algorithm, written the way the Lua script reads it: from hits_json only."""
    granted: list[float] = []
    for h in json.loads(hits_text):
        rule, p, cap, once = h["rule"], h["points"], h.get("cap"), h.get("once", False)
        if once and rule in fired:
            g = 0.0
        elif p <= 0:
            g = p
        else:
            g = p
            if cap is not None:
                g = min(g, max(0.0, cap - used.get(rule, 0.0)))
            if daily_cap is not None:
                g = min(g, max(0.0, daily_cap - daily_used))
            if cap is not None:
                used[rule] = max(used.get(rule, 0.0), min(cap, used.get(rule, 0.0) + g))
            daily_used = (
                daily_used + g if daily_cap is None else max(daily_used, min(daily_cap, daily_used + g))
            )
        if once and g != 0:
            fired.add(rule)
        granted.append(g)
    return granted


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_documented_algorithm_from_json_matches(
    scenario: tuple[tuple[RuleHit, ...], dict[str, float], float, float | None, set[str]],
) -> None:
    hits, used, daily_used, daily_cap, fired = scenario
    result = apply_caps_detailed(hits, used, daily_used, config_with(daily_cap), fired=fired)
    mirror = lua_like(hits_json(hits), dict(used), daily_used, daily_cap, set(fired))
    assert mirror == [r.points for r in result.reasons]
