"""A rule an earlier rule always pre-empts is a load error, and only then."""

from __future__ import annotations

import textwrap

import pytest

from rules import ShadowedRuleError, load_routing

TEAMS = """\
version: "test-1"
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
"""


def two_rules(first: str, second: str, *, default: bool = True) -> str:
    """Rule ``first`` at line 14, ``second`` at line 18, then the catch-all at line 22."""
    body = f"""
        - name: first
          description: d
          when: {first}
          team: east
        - name: second
          description: d
          when: {second}
          team: east
        """
    if default:
        body += """- name: default
          description: Everything else
          when: always
          team: central
        """
    return TEAMS + textwrap.indent(textwrap.dedent(body).lstrip("\n"), "  ")


def shadow_problem(text: str) -> str:
    with pytest.raises(ShadowedRuleError) as info:
        load_routing(text, "routing.yaml")
    (problem,) = info.value.problems
    return problem


def test_rule_after_catch_all_is_shadowed() -> None:
    text = TEAMS + textwrap.indent(textwrap.dedent("""
        - name: default
          description: Everything else
          when: always
          team: central
        - name: late
          description: d
          when: {field: country, equals: GB}
          team: east
        - name: also-late
          description: d
          when: always
          team: east
        """).lstrip("\n"), "  ")
    with pytest.raises(ShadowedRuleError) as info:
        load_routing(text, "routing.yaml")
    assert info.value.problems == (
        "routing.yaml:18: rule 'late': can never match: catch-all rule 'default' (line 14) above it matches "
        "every lead; move the catch-all to the end",
        "routing.yaml:22: rule 'also-late': can never match: catch-all rule 'default' (line 14) above it "
        "matches every lead; move the catch-all to the end",
    )


def test_identical_conditions_are_shadowed_whatever_the_order() -> None:
    first = "{all: [{field: country, in: [GB, DE]}, {field: score, range: {min: 50}}]}"
    second = "{all: [{field: score, range: {min: 50}}, {field: country, in: [DE, GB]}]}"
    assert shadow_problem(two_rules(first, second)) == (
        "routing.yaml:18: rule 'second': can never match: its conditions are the same as rule 'first' "
        "(line 14); delete one or change its conditions"
    )


def test_in_subset_of_earlier_in_is_shadowed() -> None:
    problem = shadow_problem(two_rules("{field: country, in: [GB, DE, FR]}", "{field: country, in: [DE, FR]}"))
    assert problem == (
        "routing.yaml:18: rule 'second': can never match: every lead it matches is already matched by rule "
        "'first' (line 14); move it above 'first' or narrow 'first'"
    )


def test_equals_inside_earlier_in_is_shadowed() -> None:
    problem = shadow_problem(two_rules("{field: country, in: [GB, DE]}", "{field: country, equals: DE}"))
    assert problem.startswith("routing.yaml:18: rule 'second': can never match: every lead it matches")


def test_in_with_equal_single_value_is_the_same_condition() -> None:
    problem = shadow_problem(two_rules("{field: country, equals: DE}", "{field: country, in: [DE]}"))
    assert "its conditions are the same as rule 'first'" in problem


def test_narrower_all_is_shadowed_by_broader_leaf() -> None:
    problem = shadow_problem(
        two_rules("{field: country, in: [US, CA]}", "{all: [{field: country, equals: US}, {field: region, equals: NY}]}")
    )
    assert "every lead it matches is already matched by rule 'first'" in problem


def test_any_whose_branches_are_all_covered_is_shadowed() -> None:
    problem = shadow_problem(
        two_rules(
            "{any: [{field: country, in: [GB, DE]}, {field: hand_raiser, equals: true}]}",
            "{any: [{field: country, equals: GB}, {field: hand_raiser, equals: true}]}",
        )
    )
    assert "already matched by rule 'first'" in problem


def test_range_inside_earlier_range_is_shadowed() -> None:
    problem = shadow_problem(
        two_rules("{field: score, range: {min: 50}}", "{field: score, range: {min: 80, max: 100}}")
    )
    assert "already matched by rule 'first'" in problem


def test_value_condition_after_exists_is_shadowed() -> None:
    problem = shadow_problem(two_rules("{field: region, exists: true}", "{field: region, regex: '^N'}"))
    assert "already matched by rule 'first'" in problem


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("{field: country, in: [GB]}", "{field: country, in: [GB, DE]}"),  # later is broader
        ("{field: country, in: [GB, DE]}", "{field: region, in: [GB]}"),  # other field
        ("{all: [{field: country, in: [GB]}, {field: score, range: {min: 50}}]}", "{field: country, equals: GB}"),
        ("{field: score, range: {min: 50}}", "{field: score, range: {min: 40}}"),
        ("{field: score, range: {min: 50}}", "{field: score, in: [40, 60]}"),
        ("{not: {field: country, in: [GB, DE]}}", "{not: {field: country, in: [GB]}}"),
        ("{field: region, exists: false}", "{field: region, exists: true}"),
    ],
)
def test_reachable_rules_load(first: str, second: str) -> None:
    config = load_routing(two_rules(first, second), "routing.yaml")
    assert [r.name for r in config.rules] == ["first", "second", "default"]


def test_not_of_narrower_is_shadowed_by_not_of_broader_in_reverse() -> None:
    # not(in [GB]) matches everything not(in [GB, DE]) matches.
    problem = shadow_problem(two_rules("{not: {field: country, in: [GB]}}", "{not: {field: country, in: [GB, DE]}}"))
    assert "already matched by rule 'first'" in problem
