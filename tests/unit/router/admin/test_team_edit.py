"""The Team page's edit of one rep in the routing text: only that rep's entry changes, comments and layout stay,
the result compiles, and what ops type is checked with errors naming field, value and fix."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from router.admin.console.team_edit import (
    TeamEditError,
    apply_changes,
    changes_of,
    check_form,
    describe,
    rep_entries,
)
from rules import load_routing

RULES = Path(__file__).resolve().parents[4] / "rules" / "routing.yaml"
TEAMS = ["central", "east", "west"]
BLOCK = """version: "1"
teams:
  a:
    description: Team A
    manager: Ann Boss
    rep_defaults: {tz: UTC, hours: "09:00-17:00", days: [mon-fri], capacity_day: 5}
    reps:
      # the first
      - id: r1
        name: Rep One
        email: r1@example.com
        capacity_day: 3   # part-time
        hours: "10:00-14:00"
      - id: r2
        name: Rep Two
        email: r2@example.com
  b:
    description: Team B
    manager: Bob Boss
    reps:
      - {id: r3, name: Rep Three, email: r3@example.com}
rules:
  - name: all
    description: everyone
    when: always
    team: a
"""


def diff(a: str, b: str) -> list[str]:
    return [ln for ln in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def test_reading_reps_gives_their_own_values_only() -> None:
    entries = rep_entries(RULES.read_text(encoding="utf-8"))
    assert len(entries) == 35
    lajuana = entries["lajuana-vencill"]
    assert (lajuana.team, lajuana.name) == ("central", "Lajuana Vencill")
    assert dict(lajuana.own) == {"hours": "08:00-12:30", "days": "mon-thu", "capacity_day": "5", "capacity_30d": "70"}
    assert dict(entries["niesha-huffines"].own) == {}


def test_changing_a_flow_entry_rewrites_only_its_values_and_appends_or_drops_keys() -> None:
    text = RULES.read_text(encoding="utf-8")
    anna = rep_entries(text)["anna-snelling"]
    wanted, errors = check_form({"team": "central", "hours": "09:00-17:30", "days": "", "tz": "",
                                 "capacity_day": "15", "capacity_30d": ""}, TEAMS)
    assert errors == {}
    changes = changes_of(anna, wanted)
    assert changes == {"hours": ("", "09:00-17:30"), "capacity_day": ("12", "15"), "capacity_30d": ("200", "")}
    out = apply_changes(text, "anna-snelling", changes)
    assert diff(text, out) == ["-         capacity_day: 12, capacity_30d: 200}",
                               '+         capacity_day: 15, hours: "09:00-17:30"}']
    profile = load_routing(out, "routing.yaml").teams["central"].profile("anna-snelling")
    assert profile.capacity_day == 15 and profile.capacity_30d == 150 and str(profile.hours) == "09:00-17:30"
    assert describe(anna, {"capacity_day": ("12", "15")}) == "Team page: capacity per day of Anna Snelling 12 → 15"


def test_block_entries_keep_comments_and_indentation() -> None:
    r1 = rep_entries(BLOCK)["r1"]
    out = apply_changes(BLOCK, "r1", {"capacity_day": ("3", "4"), "hours": ("10:00-14:00", ""),
                                      "tz": ("", "Europe/Berlin"), "days": ("", "mon, wed")})
    assert sorted(diff(BLOCK, out)) == sorted(["-        capacity_day: 3   # part-time",
                                               "+        capacity_day: 4   # part-time",
                                               '-        hours: "10:00-14:00"', "+        tz: Europe/Berlin",
                                               "+        days: [mon, wed]"])
    profile = load_routing(out, "x").teams["a"].profile("r1")
    assert profile.tz == "Europe/Berlin" and str(profile.hours) == "09:00-17:00" and sorted(profile.days) == [0, 2]
    assert r1.own["capacity_day"] == "3"


def test_moving_a_rep_cuts_its_lines_and_appends_them_to_the_other_team_reindented() -> None:
    out = apply_changes(BLOCK, "r2", {"team": ("a", "b")})
    config = load_routing(out, "x")
    assert [r.rep_id for r in config.teams["a"].reps] == ["r1"]
    assert [r.rep_id for r in config.teams["b"].reps] == ["r3", "r2"]
    assert "      # the first\n      - id: r1" in out  # the comment stays where it was
    text = RULES.read_text(encoding="utf-8")
    moved = apply_changes(text, "lajuana-vencill", {"team": ("central", "west")})
    config = load_routing(moved, "routing.yaml")
    assert config.teams["west"].reps[-1].rep_id == "lajuana-vencill"
    assert len(diff(text, moved)) == 4  # two lines out, the same two lines in


def test_layouts_it_does_not_handle_are_refused_not_guessed() -> None:
    flow = BLOCK.replace("      - {id: r3, name: Rep Three, email: r3@example.com}",
                         "      [{id: r3, name: Rep Three, email: r3@example.com}]").replace("    reps:\n      [",
                                                                                           "    reps: [")
    with pytest.raises(TeamEditError, match="flow list"):
        apply_changes(flow, "r1", {"team": ("a", "b")})
    with pytest.raises(TeamEditError, match="not in the running routing version"):
        apply_changes(BLOCK, "nobody", {"capacity_day": ("", "3")})
    with pytest.raises(TeamEditError, match="not YAML"):
        rep_entries("teams: [")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("tz", "Europe/Berlinn", "time zone 'Europe/Berlinn' is not an IANA time zone name; write it as Area/City"),
    ("tz", "../../etc/passwd", "is not an IANA time zone name"),
    ("hours", "9-5", "hours '9-5' is not a local time range HH:MM-HH:MM"),
    ("hours", "17:00-09:00", "with the end after the start"),
    ("days", "mon-sun-fri", "is not a weekday or a range"),
    ("days", "sat-tue", "runs backwards; write it from the earlier day, e.g. tue-sat"),
    ("capacity_day", "0", "capacity per day '0' must be a whole number from 1 to 1000"),
    ("capacity_day", "2.5", "must be a whole number"),
    ("capacity_30d", "30001", "from 1 to 30000"),
    ("team", "north", "team 'north' is not a team of the routing file; pick one of central, east, west"),
])
def test_bad_values_name_field_value_and_fix(key: str, value: str, message: str) -> None:
    form = {"team": "central", key: value}
    _, errors = check_form(form, TEAMS)
    assert list(errors) == [key] and message in errors[key]


def test_good_values_are_normalised() -> None:
    wanted, errors = check_form({"team": "east", "hours": " 08:00 - 16:00 ", "days": "Mon-Wed, fri",
                                 "tz": "America/Los_Angeles", "capacity_day": "007", "capacity_30d": ""}, TEAMS)
    assert errors == {}
    assert wanted == {"team": "east", "hours": "08:00-16:00", "days": "mon-wed, fri", "tz": "America/Los_Angeles",
                      "capacity_day": "7", "capacity_30d": ""}
