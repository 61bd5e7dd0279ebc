"""The roster part of routing.yaml: strategies, rep profiles, availability (DST-aware), SLA and lifecycle."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime, timedelta
from importlib.resources import files

import pytest

from rules import (
    DateRange,
    LifecyclePolicy,
    RepProfile,
    RulesError,
    RuleSyntaxError,
    SlaPolicy,
    Strategy,
    Unavailable,
    WorkingHours,
    load_routing,
)
from rules.roster import parse_hours

SHIPPED = load_routing(files("rules").joinpath("routing.yaml").read_text(encoding="utf-8"), "rules/routing.yaml")
OFFICE_TZ = {"central": "America/Chicago", "east": "America/New_York", "west": "America/Los_Angeles"}

RULES = """\
rules:
  - name: default
    description: Everything else
    when: always
    team: east
"""


def routing(teams: str, extra: str = "") -> str:
    """A file whose teams block is ``teams`` (indented under ``teams:`` from line 3)."""
    return 'version: "t-1"\nteams:\n' + textwrap.indent(textwrap.dedent(teams).lstrip("\n"), "  ") + extra + RULES


def problems(text: str) -> tuple[str, ...]:
    with pytest.raises(RulesError) as info:
        load_routing(text, "routing.yaml")
    return info.value.problems


# --- the shipped file -------------------------------------------------------------------------------


def test_shipped_teams_have_a_strategy_an_sla_and_office_time_zones() -> None:
    assert {n: t.strategy for n, t in SHIPPED.teams.items()} == {
        "central": Strategy.LOAD_BALANCED, "east": Strategy.ROUND_ROBIN, "west": Strategy.WEIGHTED}
    for name, team in SHIPPED.teams.items():
        assert team.sla is not None and team.sla.escalate_to_manager
        assert team.sla.remind_after_minutes is not None
        assert team.sla.remind_after_minutes < team.sla.accept_within_minutes
        assert [p.rep_id for p in team.profiles] == [r.rep_id for r in team.reps]
        for p in team.profiles:
            assert p.tz == OFFICE_TZ[name], p.rep_id
            assert p.hours is not None and p.days and p.days <= set(range(5)), p.rep_id
            assert p.capacity_day is not None and p.capacity_30d is not None
            assert p.capacity_day <= p.capacity_30d
    assert sum(len(t.profiles) for t in SHIPPED.teams.values()) == 35
    assert SHIPPED.team("east").sla == SlaPolicy(15, 10, True, 1)
    west = {p.rep_id: p.weight for p in SHIPPED.team("west").profiles}
    assert west["vicki-laflamme"] == 3 and west["carl-lin"] == 1 and west["hayden-neloms"] == 2
    assert "not-a-fit" in SHIPPED.lifecycle.reject_reasons
    assert SHIPPED.lifecycle.reject_score_factor == 0.5


def test_shipped_first_reps_are_the_most_available_of_their_team() -> None:
    """A fresh round robin's first turn is the first rep whenever anyone is available (the e2e test relies on it)."""
    start = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday
    for name in ("east",):
        team = SHIPPED.team(name)
        first = team.profile(team.reps[0].rep_id)
        assert first.out_of_office == ()
        for step in range(7 * 24 * 4):  # every quarter hour of a week
            now = start + timedelta(minutes=15 * step)
            if first.unavailable(now) is not None:
                assert all(team.profile(r.rep_id).unavailable(now) is not None for r in team.reps), now


def test_content_hash_covers_the_roster() -> None:
    text = files("rules").joinpath("routing.yaml").read_text(encoding="utf-8")
    changed = text.replace("capacity_day: 5, capacity_30d: 60}", "capacity_day: 6, capacity_30d: 60}")
    assert changed != text
    assert load_routing(changed, "x").content_hash != SHIPPED.content_hash


# --- parsing ---------------------------------------------------------------------------------------


def test_full_schema_with_defaults_and_overrides() -> None:
    config = load_routing(routing("""
        east:
          description: East
          manager: Cara Losch
          strategy: weighted
          sla: {accept_within_minutes: 15, remind_after_minutes: 10, escalate_to_manager: false, max_reassignments: 2}
          rep_defaults: {tz: America/New_York, hours: "08:30-17:30", days: [mon-fri], capacity_day: 10, capacity_30d: 150}
          reps:
            - {id: a, name: A, email: a@example.com}
            - {id: b, name: B, email: b@example.com, weight: 3, tz: Europe/Berlin, hours: "09:00-24:00",
               days: [Monday, wed, fri-sun], capacity_day: 4, capacity_30d: 40,
               out_of_office: [{from: 2026-12-21, to: 2027-01-01}, {from: "2026-11-26", to: "2026-11-26"}]}
        """, extra="lifecycle: {reject_reasons: [junk, no-budget], reject_score_factor: 0.25}\n"), "routing.yaml")
    team = config.team("east")
    assert team.strategy is Strategy.WEIGHTED
    assert team.sla == SlaPolicy(accept_within_minutes=15, remind_after_minutes=10, escalate_to_manager=False,
                                 max_reassignments=2)
    a, b = team.profile("a"), team.profile("b")
    assert a == RepProfile("a", 1, 10, 150, "America/New_York", WorkingHours(510, 1050), frozenset(range(5)), ())
    assert b.weight == 3 and b.tz == "Europe/Berlin" and b.capacity_day == 4 and b.capacity_30d == 40
    assert b.hours == WorkingHours(540, 1440) and str(b.hours) == "09:00-24:00"
    assert b.days == frozenset({0, 2, 4, 5, 6})
    assert [(r.start, r.end) for r in b.out_of_office] == [(date(2026, 11, 26), date(2026, 11, 26)),
                                                          (date(2026, 12, 21), date(2027, 1, 1))]
    assert config.lifecycle == LifecyclePolicy(reject_reasons=("junk", "no-budget"), reject_score_factor=0.25)
    # A rep the file says nothing about (hand-built team) is always available.
    assert team.profile("nobody") == RepProfile("nobody")


def test_defaults_without_roster_keys() -> None:
    config = load_routing(routing("""
        east:
          description: East
          manager: Cara Losch
          reps:
            - {id: a, name: A, email: a@example.com}
        """), "routing.yaml")
    team = config.team("east")
    assert team.strategy is Strategy.ROUND_ROBIN and team.sla is None
    assert team.profile("a") == RepProfile("a")
    assert config.lifecycle == LifecyclePolicy()


@pytest.mark.parametrize(("text", "expected"), [
    ("09:00-17:30", WorkingHours(540, 1050)),
    (" 8:00 - 12:30 ", WorkingHours(480, 750)),
    ("00:00-24:00", WorkingHours(0, 1440)),
    ("17:00-09:00", None),
    ("09:00-09:00", None),
    ("25:00-26:00", None),
    ("09:60-10:00", None),
    ("nine to five", None),
])
def test_parse_hours(text: str, expected: WorkingHours | None) -> None:
    assert parse_hours(text) == expected


def test_every_roster_problem_is_reported_with_file_line_context_and_a_fix() -> None:
    text = routing("""
        east:
          description: East
          manager: Cara Losch
          strategy: round_robbin
          sla: {accept_within_minutes: 10, remind_after_minutes: 12}
          rep_defaults: {tz: America/Chicgo}
          reps:
            - {id: a, name: A, email: a@example.com, wieght: 2}
            - {id: b, name: B, email: b@example.com, hours: "17:00-09:00", days: [mon, tues, fri-mon]}
            - {id: c, name: C, email: c@example.com, capacity_day: 20, capacity_30d: 10, weight: 0}
            - {id: d, name: D, email: d@example.com, out_of_office: [{from: 2027-01-05, to: 2027-01-01}, {from: 2026-13-01}]}
        central:
          description: Central
          manager: Dustin Brinkmann
          strategy: load_balanced
          reps:
            - {id: e, name: E, email: e@example.com, hours: 9}
        """, extra="lifecycle: {reject_reasons: [Not A Fit, junk, junk], reject_score_factor: 2}\n")
    found = problems(text)
    expected = [
        "routing.yaml:6: team 'east': unknown strategy 'round_robbin'; did you mean 'round_robin'?",
        "routing.yaml:7: team 'east' sla: remind_after_minutes 12 is not before accept_within_minutes 10",
        "routing.yaml:8: team 'east' rep_defaults: tz 'America/Chicgo' is not an IANA time zone; "
        "did you mean 'America/Chicago'?",
        "routing.yaml:10: team 'east' rep 'a': unknown key 'wieght'; did you mean 'weight'?",
        "routing.yaml:11: team 'east' rep 'b': hours '17:00-09:00' is not a local time range HH:MM-HH:MM "
        "(the end is not after the start",
        "routing.yaml:11: team 'east' rep 'b': day 'tues' is not a weekday or a range like mon-fri; did you mean 'tue'?",
        "routing.yaml:11: team 'east' rep 'b': day range 'fri-mon' runs backwards",
        "routing.yaml:12: team 'east' rep 'c': weight must be a whole number from 1 up to 1000, got 0",
        "routing.yaml:12: team 'east' rep 'c': capacity_day 20 is above capacity_30d 10",
        "routing.yaml:13: team 'east' rep 'd': out_of_office from 2027-01-05 is after to 2027-01-01; "
        "did you mean {from: 2027-01-01, to: 2027-01-05}?",
        "routing.yaml:13: team 'east' rep 'd': out_of_office #2 is missing 'to'",
        "routing.yaml:13: team 'east' rep 'd': out_of_office from '2026-13-01' is not a date; write it as YYYY-MM-DD",
        "routing.yaml:19: team 'central' rep 'e': hours must be a quoted local time range, got 9",
        "routing.yaml:19: team 'central' rep 'e': strategy load_balanced compares open leads with capacity_30d, "
        "but this rep has none; add capacity_30d",
        "routing.yaml:20: lifecycle: reject reason 'Not A Fit' must be a lower-case code of letters, digits, "
        "'-' and '_'; did you mean 'not-a-fit'?",
        "routing.yaml:20: lifecycle: reject reason 'junk' is listed twice; delete one",
        "routing.yaml:20: lifecycle: reject_score_factor multiplies the score of a rejected lead and must be "
        "from 0 to 1, got 2",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in found), f"missing {want!r} in:\n" + "\n".join(found)
    assert len(found) == len(expected), "\n".join(found)


def test_shape_errors_use_the_syntax_error_class() -> None:
    text = routing("""
        east:
          description: East
          manager: Cara Losch
          sla: 15
          rep_defaults: [tz]
          reps:
            - {id: a, name: A, email: a@example.com, days: mon, out_of_office: 2026-12-24, tz: 5}
        """, extra="lifecycle: [x]\nlifecyle: {}\n")
    with pytest.raises(RuleSyntaxError) as info:
        load_routing(text, "routing.yaml")
    found = info.value.problems
    assert any("sla must be a mapping" in p and p.startswith("routing.yaml:6:") for p in found)
    assert any("rep_defaults must be a mapping" in p for p in found)
    assert any("days must be a non-empty list of weekdays" in p for p in found)
    assert any("out_of_office must be a list of {from, to} date ranges" in p for p in found)
    assert any("tz must be an IANA time zone name, got 5" in p for p in found)
    assert any(p.startswith("routing.yaml:10: lifecycle must be a mapping") for p in found)
    assert any("unknown key 'lifecyle'; did you mean 'lifecycle'?" in p for p in found)


def test_sla_needs_accept_within() -> None:
    found = problems(routing("""
        east:
          description: East
          manager: Cara Losch
          sla: {remind_after_minutes: 5, escalate_to_manager: yes}
          reps:
            - {id: a, name: A, email: a@example.com}
        """))
    assert any("missing required key 'accept_within_minutes'" in p for p in found)
    assert any("escalate_to_manager must be true or false, got 'yes'" in p for p in found)


# --- availability ----------------------------------------------------------------------------------


def berlin() -> RepProfile:
    return RepProfile("b", tz="Europe/Berlin", hours=WorkingHours(9 * 60, 17 * 60 + 30), days=frozenset(range(5)))


def chicago() -> RepProfile:
    return RepProfile("c", tz="America/Chicago", hours=WorkingHours(8 * 60, 17 * 60), days=frozenset(range(5)))


def test_working_hours_follow_each_zones_own_dst() -> None:
    # Europe moves its clocks on 2026-03-29, the US on 2026-03-08: the same UTC wall time
    # is outside hours before the change and inside after it.
    assert berlin().unavailable(datetime(2026, 3, 27, 7, 45, tzinfo=UTC)) is Unavailable.OUTSIDE_HOURS  # 08:45 CET
    assert berlin().unavailable(datetime(2026, 3, 30, 7, 45, tzinfo=UTC)) is None  # 09:45 CEST
    assert chicago().unavailable(datetime(2026, 3, 6, 13, 45, tzinfo=UTC)) is Unavailable.OUTSIDE_HOURS  # 07:45 CST
    assert chicago().unavailable(datetime(2026, 3, 9, 13, 45, tzinfo=UTC)) is None  # 08:45 CDT
    # In the weeks between (US on summer time, Europe not yet) the two overlap one hour more.
    gap = datetime(2026, 3, 18, 15, 15, tzinfo=UTC)  # 16:15 CET, 10:15 CDT
    assert berlin().unavailable(gap) is None and chicago().unavailable(gap) is None
    # End of the working day, half past five Berlin time, is exclusive.
    assert berlin().unavailable(datetime(2026, 7, 1, 15, 29, tzinfo=UTC)) is None
    assert berlin().unavailable(datetime(2026, 7, 1, 15, 30, tzinfo=UTC)) is Unavailable.OUTSIDE_HOURS


def test_days_and_out_of_office_are_local_dates() -> None:
    la = RepProfile("w", tz="America/Los_Angeles", hours=WorkingHours(20 * 60, 24 * 60), days=frozenset({4}),
                    out_of_office=(DateRange(date(2026, 12, 25), date(2026, 12, 25)),))
    # Friday 21:00 in Los Angeles is Saturday 05:00 UTC: the rep's Friday, so available.
    assert la.unavailable(datetime(2026, 11, 28, 5, 0, tzinfo=UTC)) is None
    assert la.unavailable(datetime(2026, 11, 28, 9, 0, tzinfo=UTC)) is Unavailable.DAY_OFF  # Saturday 01:00 local
    # Christmas (a Friday) is out of office from local midnight to local midnight.
    assert la.unavailable(datetime(2026, 12, 26, 5, 0, tzinfo=UTC)) is Unavailable.OUT_OF_OFFICE  # 25th 21:00 PST
    assert la.unavailable(datetime(2027, 1, 2, 5, 0, tzinfo=UTC)) is None  # Friday 1 Jan 21:00 PST


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        berlin().unavailable(datetime(2026, 3, 27, 7, 45))


def test_next_available_skips_nights_weekends_leave_and_dst() -> None:
    p = chicago()
    friday_evening = datetime(2026, 3, 6, 23, 30, tzinfo=UTC)  # 17:30 CST Friday
    # Next opening is Monday 08:00 local, which is already summer time (CDT, UTC-5).
    assert p.next_available(friday_evening) == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)
    early = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 07:00 CDT Tuesday
    assert p.next_available(early) == datetime(2026, 3, 10, 13, 0, tzinfo=UTC)
    inside = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    assert p.next_available(inside) == inside
    on_leave = RepProfile("c", tz="America/Chicago", hours=WorkingHours(480, 1020), days=frozenset(range(5)),
                          out_of_office=(DateRange(date(2026, 3, 10), date(2026, 3, 16)),))
    assert on_leave.next_available(inside) == datetime(2026, 3, 17, 13, 0, tzinfo=UTC)
    never = RepProfile("n", days=frozenset({0}), out_of_office=(DateRange(date(2026, 1, 1), date(2030, 1, 1)),))
    assert never.next_available(inside) == inside  # nothing opens within the horizon: do not wait for ever


def test_day_start_is_local_midnight_across_dst() -> None:
    p = berlin()
    assert p.day_start(datetime(2026, 3, 29, 12, 0, tzinfo=UTC)) == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert p.day_start(datetime(2026, 3, 30, 12, 0, tzinfo=UTC)) == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)
    assert p.day_start(datetime(2026, 3, 29, 22, 30, tzinfo=UTC)) == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)
