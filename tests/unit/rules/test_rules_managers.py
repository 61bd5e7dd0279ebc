"""Managers as roster rows (name, email, Slack id, time zone): validated at load with file:line errors."""

from __future__ import annotations

import textwrap
from importlib.resources import files

import pytest

from rules import Manager, RulesError, load_routing

SHIPPED = load_routing(files("rules").joinpath("routing.yaml").read_text(encoding="utf-8"), "rules/routing.yaml")

RULES = """\
rules:
  - name: default
    description: Everything else
    when: always
    team: east
"""


def routing(manager: str) -> str:
    """A one-team file: ``manager:`` is on line 5, and the rows of a block list on lines 6, 7, ..."""
    value = textwrap.dedent(manager).strip("\n")
    if "\n" in value or value.startswith("- "):
        value = "\n" + textwrap.indent(value, "      ")
    else:
        value = " " + value
    return ('version: "t-1"\nteams:\n  east:\n    description: East\n    manager:' + value + "\n"
            "    reps:\n      - {id: ann, name: Ann, email: ann@example.com}\n" + RULES)


def problems(text: str) -> tuple[str, ...]:
    with pytest.raises(RulesError) as info:
        load_routing(text, "routing.yaml")
    return info.value.problems


def test_shipped_managers_are_rows_that_an_escalation_reaches() -> None:
    for team in SHIPPED.teams.values():
        assert len(team.manager_rows) == 2
        for m in team.manager_rows:
            assert m.reachable and m.email and m.email.endswith("@example.com") and m.slack_user_id
            assert m.tz and m.manager_id.startswith("manager:")
        assert team.managers == tuple(m.name for m in team.manager_rows)


def test_rows_names_and_a_single_row() -> None:
    cfg = load_routing(routing("""
        - {name: Cara Losch, email: cara@example.com, slack_user_id: UCARA0001, tz: America/New_York}
        - Rocco Neubert
    """), "routing.yaml")
    east = cfg.teams["east"]
    assert east.manager_rows == (Manager("Cara Losch", "cara@example.com", "UCARA0001", "America/New_York"),
                                 Manager("Rocco Neubert"))
    assert east.managers == ("Cara Losch", "Rocco Neubert") and east.manager == "Cara Losch, Rocco Neubert"
    assert not east.manager_rows[1].reachable
    assert east.manager_rows[0].manager_id == "manager:cara-losch"
    one = load_routing(routing("{name: Cara Losch, slack_user_id: WCARA0001}"), "routing.yaml").teams["east"]
    assert one.manager_rows == (Manager("Cara Losch", None, "WCARA0001"),)


def test_bad_rows_are_reported_with_file_line_and_a_fix() -> None:
    found = problems(routing("""
        - {name: Cara Losch, emial: cara@example.com}
        - {name: Rocco Neubert, email: not-an-address, slack_user_id: rocco}
        - {name: Celia Rouche, email: celia@example.com, tz: Mars/Olympus}
        - {email: nobody@example.com}
    """))
    text = "\n".join(found)
    assert "routing.yaml:6: team 'east' manager 'Cara Losch': unknown key 'emial'; did you mean 'email'?" in text
    assert "routing.yaml:6: team 'east' manager 'Cara Losch': a manager row needs an email or a slack_user_id" in text
    assert "routing.yaml:7: team 'east' manager 'Rocco Neubert': email 'not-an-address' is not an email" in text
    assert "routing.yaml:7: team 'east' manager 'Rocco Neubert': slack_user_id 'rocco' is not a Slack member id" in text
    assert "routing.yaml:8: team 'east' manager 'Celia Rouche': tz 'Mars/Olympus' is not an IANA time zone" in text
    assert "routing.yaml:9: team 'east' manager: a manager row needs a name" in text
    [twice] = problems(routing("""
        - {name: Cara Losch, email: cara@example.com}
        - {name: cara losch, email: cara2@example.com}
    """))
    assert twice == "routing.yaml:7: team 'east': manager 'cara losch' is listed twice; delete one"


def test_a_manager_that_is_neither_a_name_nor_a_row_is_refused() -> None:
    [found] = problems(routing("[42]"))
    assert found.startswith("routing.yaml:5: team 'east': manager #1 must be a name or a row, got 42")
