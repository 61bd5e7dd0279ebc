"""Operator semantics, missing facts, composition, decisions and their path."""

from __future__ import annotations

import textwrap

import pytest

from models import Rep, RoutingDecision
from rules import MissingCatchAllError, RoutingConfig, UnknownTeamError, load_routing

TEAMS = """\
version: "2026-11-22.1"
teams:
  east:
    description: East office
    manager: [Cara Losch, Rocco Neubert]
    slack_webhook: https://hooks.slack.com/services/T000/B000/XXXX
    reps:
      - {id: violet-mclelland, name: Violet Mclelland, email: violet.mclelland@example.com, slack_user_id: UF7GQETRU}
      - {id: boris-faz, name: Boris Faz, email: boris.faz@example.com}
  central:
    description: Central office
    manager: Dustin Brinkmann
    slack_webhook: ""
    reps:
      - {id: anna-snelling, name: Anna Snelling, email: anna.snelling@example.com}
rules:
"""


def config_with(when: str) -> RoutingConfig:
    body = f"""
        - name: probe
          description: the condition under test
          when: {when}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """
    return load_routing(TEAMS + textwrap.indent(textwrap.dedent(body).lstrip("\n"), "  "), "routing.yaml")


def hits(when: str, facts: dict[str, object]) -> bool:
    return config_with(when).decide(facts).rule == "probe"


@pytest.mark.parametrize(
    ("when", "facts", "expected"),
    [
        ("{field: country, equals: DE}", {"country": "DE"}, True),
        ("{field: country, equals: DE}", {"country": "de"}, True),  # strings compare without case
        ("{field: country, equals: DE}", {"country": "AT"}, False),
        ("{field: industry, equals: Software}", {"industry": "software"}, True),
        ("{field: employees, equals: 500}", {"employees": 500.0}, True),
        ("{field: employees, equals: 500}", {"employees": 501}, False),
        ("{field: hand_raiser, equals: true}", {"hand_raiser": True}, True),
        ("{field: hand_raiser, equals: true}", {"hand_raiser": False}, False),
        ("{field: hand_raiser, equals: false}", {"hand_raiser": 0}, False),  # 0 is not a boolean fact
        ("{field: country, in: [GB, DE]}", {"country": "GB"}, True),
        ("{field: country, in: [GB, DE]}", {"country": "FR"}, False),
        ("{field: score, range: {min: 50, max: 80}}", {"score": 50}, True),  # bounds are inclusive
        ("{field: score, range: {min: 50, max: 80}}", {"score": 80.0}, True),
        ("{field: score, range: {min: 50, max: 80}}", {"score": 80.01}, False),
        ("{field: score, range: {min: 50, max: 80}}", {"score": 49.99}, False),
        ("{field: score, range: {min: 50}}", {"score": 1e9}, True),
        ("{field: score, range: {max: 10}}", {"score": -5}, True),
        ("{field: score, range: {max: 10}}", {"score": True}, False),  # a boolean is not a number
        ("{field: job_title, regex: '\\bvp\\b'}", {"job_title": "Senior VP, Sales"}, True),  # search, no case
        ("{field: job_title, regex: '^vp'}", {"job_title": "Senior VP, Sales"}, False),
        ("{field: email_domain, regex: '\\.(edu|ac\\.uk)$'}", {"email_domain": "ox.ac.uk"}, True),
        ("{field: region, exists: true}", {"region": "NY"}, True),
        ("{field: region, exists: true}", {"region": "  "}, False),  # blank is missing
        ("{field: region, exists: false}", {"region": None}, True),
        ("{field: region, exists: false}", {"country": "US"}, True),
        ("{field: region, exists: false}", {"region": "NY"}, False),
    ],
)
def test_operators(when: str, facts: dict[str, object], expected: bool) -> None:
    assert hits(when, facts) is expected


@pytest.mark.parametrize(
    "when",
    [
        "{field: country, equals: DE}",
        "{field: country, in: [DE]}",
        "{field: score, range: {min: 0}}",
        "{field: job_title, regex: '.*'}",
        "{field: hand_raiser, equals: false}",
        "{field: company, exists: true}",
    ],
)
def test_conditions_on_missing_facts_do_not_match_and_do_not_raise(when: str) -> None:
    config = config_with(when)
    assert config.decide({}).rule == "default"
    assert config.decide({"country": None, "score": None, "job_title": None, "hand_raiser": None}).rule == "default"


@pytest.mark.parametrize(
    ("when", "facts"),
    [
        ("{field: score, range: {min: 0}}", {"score": "high"}),
        ("{field: score, range: {min: 0}}", {"score": float("nan")}),
        ("{field: country, in: [DE]}", {"country": 49}),
        ("{field: job_title, regex: 'vp'}", {"job_title": ["vp"]}),
        ("{field: hand_raiser, equals: true}", {"hand_raiser": "true"}),
    ],
)
def test_wrongly_typed_facts_do_not_match_and_do_not_raise(when: str, facts: dict[str, object]) -> None:
    assert config_with(when).decide(facts).rule == "default"


def test_not_of_a_missing_fact_matches() -> None:
    assert hits("{not: {field: country, in: [US]}}", {}) is True
    assert hits("{not: {field: country, in: [US]}}", {"country": "US"}) is False


ENTERPRISE_EMEA = (
    "{all: ["
    "{field: country, in: [GB, DE, FR]}, "
    "{any: [{field: employees, range: {min: 1000}}, {field: hand_raiser, equals: true}]}, "
    "{not: {field: email_domain, regex: '(gmail|yahoo)\\.'}}"
    "]}"
)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({"country": "GB", "employees": 5000, "email_domain": "bigco.co.uk"}, True),
        ({"country": "GB", "hand_raiser": True, "email_domain": "bigco.co.uk"}, True),
        ({"country": "GB", "hand_raiser": True}, True),  # no domain: the not-regex holds
        ({"country": "GB", "employees": 10, "hand_raiser": False}, False),  # any fails
        ({"country": "US", "employees": 5000}, False),  # all fails on country
        ({"country": "DE", "employees": 5000, "email_domain": "gmail.com"}, False),  # not fails
    ],
)
def test_all_any_not(facts: dict[str, object], expected: bool) -> None:
    assert hits(ENTERPRISE_EMEA, facts) is expected


def three_rule_config() -> RoutingConfig:
    body = """
        - name: emea-enterprise
          description: d
          when: {all: [{field: country, in: [GB, DE]}, {field: employees, range: {min: 1000}}]}
          team: east
        - name: north-america
          description: d
          when: {field: country, in: [US, CA]}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """
    return load_routing(TEAMS + textwrap.indent(textwrap.dedent(body).lstrip("\n"), "  "), "routing.yaml")


def test_decide_records_the_path_and_version() -> None:
    config = three_rule_config()
    assert config.decide({"country": "US"}) == RoutingDecision(
        team="east",
        rule="north-america",
        rules_version="2026-11-22.1",
        path=("emea-enterprise:no", "north-america:yes"),
    )
    assert config.decide({"country": "DE", "employees": 2000}).path == ("emea-enterprise:yes",)
    assert config.decide({"country": "DE", "employees": 20}) == RoutingDecision(
        team="central",
        rule="default",
        rules_version="2026-11-22.1",
        path=("emea-enterprise:no", "north-america:no", "default:yes"),
    )


def test_decide_without_catch_all_raises_instead_of_guessing() -> None:
    config = three_rule_config()
    broken = RoutingConfig(version="v", source="hand-built", teams=config.teams, rules=config.rules[:1])
    with pytest.raises(MissingCatchAllError, match=r"hand-built: no rule matched \(path emea-enterprise:no\)"):
        broken.decide({})


def test_teams_and_reps() -> None:
    config = three_rule_config()
    east = config.team("east")
    assert east.name == "east"
    assert east.description == "East office"
    assert east.manager == "Cara Losch, Rocco Neubert"
    assert east.managers == ("Cara Losch", "Rocco Neubert")
    assert east.slack_webhook == "https://hooks.slack.com/services/T000/B000/XXXX"
    assert east.reps == (
        Rep(rep_id="violet-mclelland", name="Violet Mclelland", email="violet.mclelland@example.com",
            team="east", slack_user_id="UF7GQETRU"),
        Rep(rep_id="boris-faz", name="Boris Faz", email="boris.faz@example.com", team="east", slack_user_id=None),
    )
    central = config.team("central")
    assert central.slack_webhook is None
    assert central.manager == "Dustin Brinkmann"
    assert [r.team for r in central.reps] == ["central"]
    assert list(config.teams) == ["east", "central"]


def test_unknown_team_lookup_suggests() -> None:
    with pytest.raises(UnknownTeamError, match=r"^routing.yaml: unknown team 'eest'; did you mean 'east'\?$"):
        three_rule_config().team("eest")


def test_config_is_immutable() -> None:
    config = three_rule_config()
    with pytest.raises(TypeError):
        config.teams["west"] = config.team("east")  # type: ignore[index]
    assert isinstance(config.rules, tuple)


def test_content_hash_is_stable_and_ignores_layout_and_comments() -> None:
    a = three_rule_config()
    b = three_rule_config()
    assert a.content_hash == b.content_hash
    assert len(a.content_hash) == 64
    text = TEAMS + textwrap.indent(textwrap.dedent("""
        # a comment ops added
        - name: emea-enterprise
          description: d
          when:
            all:
              - field: country
                in: [GB, DE]
              - {field: employees, range: {min: 1000}}
          team: east
        - {name: north-america, description: d, when: {field: country, in: [US, CA]}, team: east}
        - name: default
          description: Everything else
          when: always
          team: central
        """).lstrip("\n"), "  ")
    assert load_routing(text, "other.yaml").content_hash == a.content_hash
    changed = text.replace("in: [US, CA]", "in: [US, CA, MX]")
    assert load_routing(changed, "other.yaml").content_hash != a.content_hash
    bumped = text.replace('version: "2026-11-22.1"', 'version: "2026-11-22.2"')
    assert load_routing(bumped, "other.yaml").content_hash != a.content_hash
