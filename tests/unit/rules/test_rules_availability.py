"""After-hours policies: parsing and checks (file:line, did-you-mean), the pure plan, and clock-fixed cases."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta, timezone
from importlib.resources import files

import pytest

from rules import RulesError, load_routing, load_rule_tests, run_rule_tests
from rules.availability import AfterHours, Outcome, Policy, plan

SHIPPED = load_routing(files("rules").joinpath("routing.yaml").read_text(encoding="utf-8"), "rules/routing.yaml")

TEAMS = """\
version: "t-1"
{defaults}teams:
  east:
    description: East
    manager: Cara Losch
    rep_defaults: {{tz: America/New_York, hours: "08:00-17:00", days: [mon-fri]}}
{east}    reps:
      - {{id: ann, name: Ann, email: ann@example.com}}
      - {{id: bob, name: Bob, email: bob@example.com, out_of_office: [{{from: 2026-12-01, to: 2027-01-29}}]}}
      - {{id: cat, name: Cat, email: cat@example.com, hours: "07:00-15:00"}}
  west:
    description: West
    manager: Celia Rouche
    rep_defaults: {{tz: America/Los_Angeles, hours: "08:00-17:00", days: [mon-fri]}}
{west}    reps:
      - {{id: wes, name: Wes, email: wes@example.com}}
      - {{id: wil, name: Wil, email: wil@example.com, hours: "11:00-20:00"}}
rules:
  - name: default
    description: Everything else
    when: always
    team: east
"""


def routing(east: str = "", west: str = "", defaults: str = "") -> str:
    def block(text: str, indent: str) -> str:
        return textwrap.indent(textwrap.dedent(text).lstrip("\n"), indent) if text else ""
    return TEAMS.format(east=block(east, "    "), west=block(west, "    "), defaults=block(defaults, ""))


def problems(text: str) -> tuple[str, ...]:
    with pytest.raises(RulesError) as info:
        load_routing(text, "routing.yaml")
    return info.value.problems


# --- parsing ---------------------------------------------------------------------------------------------


def test_without_a_policy_every_team_is_next_available() -> None:
    config = load_routing(routing(), "routing.yaml")
    for team in config.teams.values():
        assert team.after_hours == AfterHours(Policy.NEXT_AVAILABLE)
        assert team.policy_for(hand_raiser=True) == team.after_hours
        assert team.to_json()["after_hours"] == {"policy": "next_available", "team": None, "rep": None}


def test_team_policies_defaults_and_hand_raisers() -> None:
    config = load_routing(routing(
        east="""
            after_hours: {policy: on_call, rep: cat, team: west}
            hand_raiser: {policy: fallback_team, team: west}
            """,
        defaults="""
            defaults:
              after_hours: {policy: fallback_team, team: east}
              hand_raiser: {policy: next_available}
            """), "routing.yaml")
    east, west = config.teams["east"], config.teams["west"]
    assert east.after_hours == AfterHours(Policy.ON_CALL, team="west", rep="cat")
    assert east.policy_for(hand_raiser=True) == AfterHours(Policy.FALLBACK_TEAM, team="west")
    assert east.policy_for(hand_raiser=False) == east.after_hours
    assert west.after_hours == AfterHours(Policy.FALLBACK_TEAM, team="east")  # from defaults
    assert west.policy_for(hand_raiser=True) == AfterHours(Policy.NEXT_AVAILABLE)
    # The content hash (what publishing compares) sees the policies.
    assert config.content_hash != load_routing(routing(), "routing.yaml").content_hash


def test_a_default_fallback_team_does_not_fall_back_to_itself() -> None:
    config = load_routing(routing(defaults="""
        defaults:
          after_hours: {policy: fallback_team, team: west}
        """), "routing.yaml")
    assert config.teams["east"].after_hours == AfterHours(Policy.FALLBACK_TEAM, team="west")
    assert config.teams["west"].after_hours == AfterHours(Policy.NEXT_AVAILABLE)


def test_policy_errors_name_file_line_and_suggest() -> None:
    found = problems(routing(
        east="""
            after_hours: {policy: next_avaliable}
            hand_raiser: {policy: fallback_team, team: wset}
            """,
        west="""
            after_hours: {policy: on_call, rep: ann}
            hand_raiser: {policy: on_call, rep: wse, tema: east}
            """))
    assert found == (
        "routing.yaml:7: team 'east' after_hours: unknown policy 'next_avaliable'; did you mean 'next_available'?",
        "routing.yaml:8: team 'east' hand_raiser: unknown team 'wset'; did you mean 'west'?",
        "routing.yaml:17: team 'west' after_hours: rep 'ann' is not in team 'west' (that rep is in team 'east'); "
        "the on-call rep must be one of the team's reps; expected one of: wes, wil",
        "routing.yaml:18: team 'west' hand_raiser: unknown key 'tema'; did you mean 'team'?",
        "routing.yaml:18: team 'west' hand_raiser: rep 'wse' is not in team 'west'; the on-call rep must be one "
        "of the team's reps; did you mean 'wes'?",
    )


def test_missing_and_misplaced_policy_keys() -> None:
    found = problems(routing(
        east="""
            after_hours: {policy: fallback_team}
            hand_raiser: {policy: on_call}
            """,
        west="""
            after_hours: {policy: fallback_team, team: west}
            hand_raiser: {team: east, rep: wes}
            """,
        defaults="""
            defaults:
              after_hours: {policy: on_call, rep: ann}
              hand_raisers: {policy: next_available}
            """))
    assert found == (
        "routing.yaml:3: defaults after_hours: an on-call rep belongs to one team; declare policy on_call on that "
        "team, not under defaults",
        "routing.yaml:4: defaults: unknown key 'hand_raisers'; did you mean 'hand_raiser'?",
        "routing.yaml:10: team 'east' after_hours: policy fallback_team needs the team to send leads to; "
        "add e.g. team: central",
        "routing.yaml:11: team 'east' hand_raiser: policy on_call needs the rep who takes leads at any hour; "
        "add e.g. rep: ann",
        "routing.yaml:20: team 'west' after_hours: a team cannot fall back to itself; name another team "
        "(one of: east)",
        "routing.yaml:21: team 'west' hand_raiser: missing required key 'policy'; add one of: next_available, "
        "fallback_team, on_call",
        "routing.yaml:21: team 'west' hand_raiser: rep is only used by policy on_call, not next_available; "
        "remove it or write policy: on_call",
    )


def test_policy_must_be_a_mapping_and_unknown_team_keys_still_suggest() -> None:
    found = problems(routing(east="""
        after_hours: next_available
        afterhours: {policy: next_available}
        """))
    assert found == (
        "routing.yaml:7: team 'east': after_hours must be a mapping, got 'next_available'; e.g. after_hours: "
        "{policy: next_available}, {policy: fallback_team, team: central} or {policy: on_call, rep: jane-doe}",
        "routing.yaml:8: team 'east': unknown key 'afterhours'; did you mean 'after_hours'?",
    )


def test_shipped_file_declares_policies_that_name_real_teams() -> None:
    east = SHIPPED.teams["east"]
    assert east.after_hours == AfterHours(Policy.NEXT_AVAILABLE, team="central")
    assert east.policy_for(hand_raiser=True) == AfterHours(Policy.FALLBACK_TEAM, team="west")
    for team in SHIPPED.teams.values():
        assert team.after_hours.team in SHIPPED.teams and team.after_hours.team != team.name


# --- the pure plan ---------------------------------------------------------------------------------------


CONFIG = load_routing(routing(
    east="""
        after_hours: {policy: next_available, team: west}
        hand_raiser: {policy: on_call, rep: cat}
        """,
    west="""
        after_hours: {policy: fallback_team, team: east}
        """), "routing.yaml")
EAST, WEST = CONFIG.teams["east"], CONFIG.teams["west"]
SATURDAY_NIGHT = datetime(2026, 12, 5, 3, 0, tzinfo=timezone(timedelta(hours=1)))  # Friday 21:00 New York


def test_plan_in_hours_is_everyone_available_but_the_rep_on_leave() -> None:
    p = plan(EAST, CONFIG.teams, datetime(2026, 12, 8, 15, 0, tzinfo=UTC))  # Tuesday 10:00 New York
    assert (p.outcome, p.reps, p.reason) == (Outcome.AVAILABLE, ("ann", "cat"), "")


def test_plan_weekend_night_waits_for_the_earliest_start_never_the_rep_on_leave() -> None:
    p = plan(EAST, CONFIG.teams, SATURDAY_NIGHT)
    assert (p.outcome, p.team, p.reps) == (Outcome.NEXT_AVAILABLE, "east", ("cat",))
    assert p.available_at == datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # Monday 07:00 New York
    hot = plan(EAST, CONFIG.teams, SATURDAY_NIGHT, hand_raiser=True)
    assert (hot.outcome, hot.reps, hot.available_at) == (Outcome.ON_CALL, ("cat",), SATURDAY_NIGHT)


def test_plan_fallback_team_then_its_next_opening() -> None:
    # Tuesday 18:00 Los Angeles: Wil works until 20:00, so west's after-hours lead stays in west.
    evening = datetime(2026, 12, 9, 2, 0, tzinfo=UTC)
    assert plan(WEST, CONFIG.teams, evening).reps == ("wil",)
    # Tuesday 21:00 Los Angeles: west closed, east (Wednesday 00:00) too: east's earliest, Cat at 07:00.
    late = datetime(2026, 12, 9, 5, 0, tzinfo=UTC)
    p = plan(WEST, CONFIG.teams, late)
    assert (p.outcome, p.team, p.reps) == (Outcome.FALLBACK_TEAM, "east", ("cat",))
    assert p.available_at == datetime(2026, 12, 9, 12, 0, tzinfo=UTC)


def test_plan_whole_team_out_of_office_goes_to_the_declared_team_else_held() -> None:
    away = load_routing(routing(
        east="""
            after_hours: {policy: next_available, team: west}
            """).replace("email: ann@example.com}", "email: ann@example.com, out_of_office: "
                                                    "[{from: 2026-12-01, to: 2026-12-31}]}")
        .replace("email: cat@example.com, hours", "email: cat@example.com, out_of_office: "
                                                  "[{from: 2026-12-01, to: 2026-12-31}], hours"), "routing.yaml")
    tuesday = datetime(2026, 12, 8, 19, 0, tzinfo=UTC)  # 14:00 New York, 11:00 Los Angeles
    p = plan(away.teams["east"], away.teams, tuesday)
    assert (p.outcome, p.team, p.reps, p.reason) == (Outcome.FALLBACK_TEAM, "west", ("wes", "wil"),
                                                     "team_out_of_office")
    alone = {"east": away.teams["east"]}
    held = plan(away.teams["east"], alone, tuesday)
    assert (held.outcome, held.reps, held.reason) == (Outcome.HELD, (), "team_out_of_office")


def test_plan_follows_dst_in_each_rep_zone() -> None:
    # Sunday 8 March 2026: New York moves to EDT, so Monday 07:00 is 11:00 UTC (a week earlier: 12:00 UTC).
    assert plan(EAST, CONFIG.teams, datetime(2026, 3, 8, 18, 0, tzinfo=UTC)).available_at == \
        datetime(2026, 3, 9, 11, 0, tzinfo=UTC)
    assert plan(EAST, CONFIG.teams, datetime(2026, 3, 1, 18, 0, tzinfo=UTC)).available_at == \
        datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


# --- rule test cases with a clock ---------------------------------------------------------------------------


def cases(body: str) -> str:
    return textwrap.dedent(body).lstrip("\n")


def test_cases_with_a_clock_check_outcome_rep_not_rep_and_available_at() -> None:
    loaded = load_rule_tests(cases("""
        - name: weekend
          at: 2026-12-05T03:00:00+01:00
          lead: {country: DE}
          expect: {team: east, outcome: next_available, rep: cat, not_rep: [bob, ann],
                   available_at: 2026-12-07T07:00:00-05:00}
        - name: hand-raiser-at-night
          at: "2026-12-05T02:00:00Z"
          lead: {hand_raiser: true}
          expect: {outcome: on_call, rep: cat}
        - name: wrong-on-purpose
          at: 2026-12-05T03:00:00+01:00
          lead: {}
          expect: {outcome: available, not_rep: cat, available_at: 2026-12-07T08:00:00-05:00}
        """), "routing_test.yaml", CONFIG)
    assert loaded[0].at == SATURDAY_NIGHT and loaded[1].at == datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
    results = run_rule_tests(CONFIG, loaded)
    assert [r.passed for r in results] == [True, True, False]
    assert results[0].message.endswith(
        "ok (east via default; next_available in east (cat), clock from 2026-12-07T13:00:00+01:00, "
        "no_rep_available)")
    assert results[2].message == (
        "routing_test.yaml:10: case 'wrong-on-purpose': expected outcome available; never cat; "
        "clock from 2026-12-07T08:00:00-05:00, got next_available in east (cat), clock from "
        "2026-12-07T13:00:00+01:00, no_rep_available")


def test_case_clock_errors() -> None:
    with pytest.raises(RulesError) as info:
        load_rule_tests(cases("""
            - name: no-offset
              at: 2026-12-05T03:00:00
              lead: {}
              expect: {team: east}
            - name: a-day
              at: 2026-12-05
              lead: {}
              expect: {team: east}
            - name: no-clock
              lead: {}
              expect: {team: east, outcome: next_available}
            - name: typos
              at: 2026-12-05T03:00:00+01:00
              lead: {}
              expect: {outcome: next_availble, rep: catt, not_rep: [bobb], availble_at: x}
            """), "routing_test.yaml", CONFIG)
    assert info.value.problems == (
        "routing_test.yaml:2: case 'no-offset': at 2026-12-05 03:00:00 has no UTC offset, so the time is "
        "ambiguous; add it, e.g. at: 2026-12-05T03:00:00+01:00 (or Z for UTC)",
        "routing_test.yaml:6: case 'a-day': at 2026-12-05 is a day, not a moment; give the time and its UTC "
        "offset, e.g. at: 2026-12-05T03:00:00+01:00",
        "routing_test.yaml:11: case 'no-clock': expect outcome depends on the clock; fix it with at:, e.g. "
        "at: 2026-12-05T03:00:00+01:00",
        "routing_test.yaml:15: case 'typos': unknown key 'availble_at'; did you mean 'available_at'?",
        "routing_test.yaml:15: case 'typos': unknown outcome 'next_availble'; did you mean 'next_available'?",
        "routing_test.yaml:15: case 'typos': unknown rep 'catt'; did you mean 'cat'?",
        "routing_test.yaml:15: case 'typos': unknown rep 'bobb'; did you mean 'bob'?",
    )
