"""The shipped routing.yaml loads, its roster is the Maven CRM one, and routing_test.yaml passes."""

from __future__ import annotations

import csv
import re
from importlib.resources import files
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import FIELDS, RoutingConfig, load_routing, load_rule_tests, run_rule_tests

ROUTING_TEXT = files("rules").joinpath("routing.yaml").read_text(encoding="utf-8")
CASES_TEXT = files("rules").joinpath("routing_test.yaml").read_text(encoding="utf-8")
ROSTER_CSV = Path("/work/shared/datasets/maven_crm_sales_teams.csv")


SHIPPED = load_routing(ROUTING_TEXT, "rules/routing.yaml")


@pytest.fixture
def config() -> RoutingConfig:
    return SHIPPED


def test_shipped_config_shape(config: RoutingConfig) -> None:
    assert config.version == "2026-11-22.1"
    assert list(config.teams) == ["central", "east", "west"]
    assert [r.name for r in config.rules] == [
        "emea",
        "north-america-east",
        "north-america-west",
        "north-america-central",
        "apac",
        "latam",
        "default",
    ]
    assert config.rules[-1].catch_all
    assert all(r.description for r in config.rules)
    assert {r.team for r in config.rules} == {"central", "east", "west"}
    assert {name: len(t.reps) for name, t in config.teams.items()} == {"central": 11, "east": 12, "west": 12}
    assert config.team("east").managers == ("Cara Losch", "Rocco Neubert")
    assert config.team("west").managers == ("Celia Rouche", "Summer Sewald")
    assert config.team("central").managers == ("Dustin Brinkmann", "Melvin Marxen")


def test_reps_are_well_formed(config: RoutingConfig) -> None:
    reps = config.reps
    assert len(reps) == 35
    assert len({r.rep_id for r in reps}) == 35
    assert len({r.slack_user_id for r in reps}) == 35
    for rep in reps:
        assert rep.rep_id == re.sub(r"[^a-z0-9]+", "-", rep.name.lower()).strip("-")
        first, last = rep.name.lower().split(" ", 1)
        assert rep.email == f"{first}.{last}@example.com"
        assert rep.slack_user_id is not None and re.fullmatch(r"U[A-Z0-9]{8}", rep.slack_user_id)
    mei = next(r for r in reps if r.rep_id == "mei-mei-johns")
    assert (mei.name, mei.email, mei.team) == ("Mei-Mei Johns", "mei-mei.johns@example.com", "central")


@pytest.mark.skipif(not ROSTER_CSV.exists(), reason="Maven CRM data set not present on this machine")
def test_roster_matches_the_maven_crm_data_set(config: RoutingConfig) -> None:
    with ROSTER_CSV.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    expected = {(row["sales_agent"], row["regional_office"].lower()) for row in rows}
    assert {(r.name, r.team) for r in config.reps} == expected
    managers: dict[str, set[str]] = {}
    for row in rows:
        managers.setdefault(row["regional_office"].lower(), set()).add(row["manager"])
    assert {name: set(team.managers) for name, team in config.teams.items()} == managers


def test_shipped_rule_tests_all_pass_and_cover_every_rule(config: RoutingConfig) -> None:
    cases = load_rule_tests(CASES_TEXT, "rules/routing_test.yaml", config)
    assert len(cases) >= 10
    results = run_rule_tests(config, cases)
    failures = [r.message for r in results if not r.passed]
    assert failures == []
    assert {r.actual_rule for r in results} == {r.name for r in config.rules}


@pytest.mark.parametrize(
    ("facts", "team", "rule"),
    [
        ({"country": "NO"}, "east", "emea"),
        ({"country": "IL", "hand_raiser": True}, "east", "emea"),
        ({"country": "US", "region": "FL"}, "east", "north-america-east"),
        ({"country": "CA", "region": "QC"}, "east", "north-america-east"),
        ({"country": "US", "region": "CO"}, "west", "north-america-west"),
        ({"country": "US", "region": "IL"}, "central", "north-america-central"),
        ({"country": "CA", "region": "MB"}, "central", "north-america-central"),
        ({"country": "SG"}, "west", "apac"),
        ({"country": "AR"}, "central", "latam"),
        ({"region": "NY"}, "central", "default"),  # a region without a country is not enough
        ({}, "central", "default"),
    ],
)
def test_shipped_routing(config: RoutingConfig, facts: dict[str, object], team: str, rule: str) -> None:
    decision = config.decide(facts)
    assert (decision.team, decision.rule, decision.rules_version) == (team, rule, "2026-11-22.1")


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["US", "CA", "GB", "NY", "CA", "ON", "BC", "MX", "JP"]),
    st.lists(st.text(max_size=3), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), _VALUES, max_size=6))
def test_decide_never_raises_and_always_routes(facts: dict[str, object]) -> None:
    decision = SHIPPED.decide(facts)
    assert decision.team in SHIPPED.teams
    assert decision.path[-1] == f"{decision.rule}:yes"
    assert all(p.endswith(":no") for p in decision.path[:-1])
