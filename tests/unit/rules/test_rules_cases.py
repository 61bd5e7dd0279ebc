"""Rule test case files: loading, checking and running."""

from __future__ import annotations

import textwrap

import pytest

from rules import (
    RulesError,
    RuleSyntaxError,
    RuleTypeError,
    UnknownFieldError,
    UnknownRuleError,
    UnknownTeamError,
    load_routing,
    load_rule_tests,
    run_rule_tests,
)

ROUTING = """\
version: "cases-1"
teams:
  east:
    description: East office
    manager: Cara Losch
    reps:
      - {id: violet-mclelland, name: Violet Mclelland, email: violet.mclelland@example.com}
  central:
    description: Central office
    manager: Dustin Brinkmann
    reps:
      - {id: anna-snelling, name: Anna Snelling, email: anna.snelling@example.com}
rules:
  - name: emea
    description: d
    when: {field: country, in: [GB, DE]}
    team: east
  - name: academics
    description: d
    when: {field: email_domain, regex: '\\.edu$'}
    team: east
  - name: default
    description: Everything else
    when: always
    team: central
"""

CONFIG = load_routing(ROUTING, "routing.yaml")


def cases_text(body: str) -> str:
    return textwrap.dedent(body).lstrip("\n")


def test_load_and_run_cases() -> None:
    cases = load_rule_tests(cases_text("""
        - name: german
          description: a German lead
          lead: {country: DE, score: 80, hand_raiser: true}
          expect: {team: east, rule: emea}
        - name: student
          lead: {email: sam@mit.edu}
          expect: {rule: academics}
        - name: wrong-on-purpose
          lead: {country: FR}
          expect: {team: east}
        """), "routing_test.yaml", CONFIG)
    assert [c.name for c in cases] == ["german", "student", "wrong-on-purpose"]
    assert dict(cases[0].facts) == {"country": "DE", "score": 80.0, "hand_raiser": True}
    assert cases[0].line == 1
    assert dict(cases[1].facts) == {"email": "sam@mit.edu", "email_domain": "mit.edu"}
    assert cases[1].expect_team is None

    results = run_rule_tests(CONFIG, cases)
    assert [r.passed for r in results] == [True, True, False]
    failed = results[2]
    assert (failed.expected_team, failed.expected_rule) == ("east", None)
    assert (failed.actual_team, failed.actual_rule) == ("central", "default")
    assert failed.path == ("emea:no", "academics:no", "default:yes")
    assert failed.message == (
        "routing_test.yaml:8: case 'wrong-on-purpose': expected east, got central via default "
        "(path: emea:no, academics:no, default:yes)"
    )
    assert results[1].message == "routing_test.yaml:5: case 'student': ok (east via academics)"


def test_unknown_lead_field_suggests() -> None:
    with pytest.raises(UnknownFieldError) as info:
        load_rule_tests(cases_text("""
            - name: typo
              lead:
                contry: DE
              expect: {team: east}
            """), "routing_test.yaml")
    assert info.value.problems == (
        "routing_test.yaml:3: case 'typo': unknown field 'contry'; did you mean 'country'?",
    )


def test_lead_values_are_type_checked() -> None:
    with pytest.raises(RuleTypeError) as info:
        load_rule_tests(cases_text("""
            - name: typed
              lead: {score: high, country: uk}
              expect: {team: east}
            """), "routing_test.yaml")
    assert info.value.problems == (
        "routing_test.yaml:2: case 'typed': value 'high' is a string but field 'score' is a number; "
        "write a number such as 50",
        "routing_test.yaml:2: case 'typed': country 'uk' is not an ISO-3166 alpha-2 code; did you mean 'GB'?",
    )


def test_expectations_are_checked_against_the_config() -> None:
    with pytest.raises(RulesError) as info:
        load_rule_tests(cases_text("""
            - name: a
              lead: {country: DE}
              expect: {team: eats, rule: emae}
            - name: b
              lead: {country: DE}
              expect: {team: central, rule: emea}
            """), "routing_test.yaml", CONFIG)
    assert info.value.problems == (
        "routing_test.yaml:3: case 'a': unknown team 'eats'; did you mean 'east'?",
        "routing_test.yaml:3: case 'a': unknown rule 'emae'; did you mean 'emea'?",
        "routing_test.yaml:6: case 'b': rule 'emea' routes to team 'east', so expecting team 'central' can never "
        "pass; did you mean team: east?",
    )


def test_unknown_team_alone_has_its_kind() -> None:
    with pytest.raises(UnknownTeamError):
        load_rule_tests("- {name: a, lead: {}, expect: {team: west}}\n", "t.yaml", CONFIG)
    with pytest.raises(UnknownRuleError):
        load_rule_tests("- {name: a, lead: {}, expect: {rule: apac}}\n", "t.yaml", CONFIG)


def test_case_shape_errors() -> None:
    with pytest.raises(RuleSyntaxError) as info:
        load_rule_tests(cases_text("""
            - name: a
              lead: {country: DE}
              expected: {team: east}
            - name: b
              lead: {country: GB}
              expect: {}
            """), "routing_test.yaml")
    assert info.value.problems == (
        "routing_test.yaml:1: case 'a': missing required key 'expect'; add 'expect:'",
        "routing_test.yaml:3: case 'a': unknown key 'expected'; did you mean 'expect'?",
        "routing_test.yaml:6: case 'b': expect needs team, rule or both, e.g. expect: {team: east, rule: emea}",
    )


def test_duplicate_case_names() -> None:
    with pytest.raises(RulesError) as info:
        load_rule_tests(cases_text("""
            - {name: a, lead: {country: DE}, expect: {team: east}}
            - {name: a, lead: {country: GB}, expect: {team: east}}
            """), "routing_test.yaml")
    assert info.value.problems == (
        "routing_test.yaml:2: case 'a': case name 'a' is already used at line 1; give this one another name",
    )


def test_empty_case_file() -> None:
    with pytest.raises(RulesError) as info:
        load_rule_tests("", "routing_test.yaml")
    assert info.value.problems == (
        "routing_test.yaml:1: expected a non-empty list of cases: - {name: ..., lead: {country: DE}, "
        "expect: {team: east}}",
    )
