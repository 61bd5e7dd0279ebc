"""Every load-time error: kind, file, line, rule, bad value and suggestion."""

from __future__ import annotations

import textwrap

import pytest

from rules import (
    DuplicateNameError,
    EmptyTeamError,
    InvalidRegexError,
    MissingCatchAllError,
    MissingDescriptionError,
    NoRulesError,
    RulesError,
    RuleSyntaxError,
    RuleTypeError,
    UnknownFieldError,
    UnknownTeamError,
    load_routing,
)

# 12 lines: the first rule written after it starts on line 13.
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
"""

DEFAULT = """\
  - name: default
    description: Everything else
    when: always
    team: central
"""


def rules_text(body: str) -> str:
    """Rules written at column 0 in the test, indented under ``rules:`` (line 14 onwards)."""
    return TEAMS + "rules:\n" + textwrap.indent(textwrap.dedent(body).lstrip("\n"), "  ")


def load_problems(text: str, kind: type[RulesError]) -> tuple[str, ...]:
    with pytest.raises(kind) as info:
        load_routing(text, "routing.yaml")
    err = info.value
    assert type(err) is kind, f"{type(err).__name__}: {err}"
    assert str(err) == "\n".join(err.problems)
    return err.problems


def test_teams_block_is_twelve_lines() -> None:
    assert TEAMS.count("\n") == 12
    config = load_routing(rules_text("""
        - name: default
          description: Everything else
          when: always
          team: central
        """), "routing.yaml")
    assert config.rules[0].line == 14


def test_unknown_field_message_names_file_line_rule_value_and_suggestion() -> None:
    text = rules_text("""
        - name: emea-enterprise
          description: Big EMEA accounts
          when: {field: contry, in: [GB, DE]}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """)
    problems = load_problems(text, UnknownFieldError)
    assert problems == ("routing.yaml:16: rule 'emea-enterprise': unknown field 'contry'; did you mean 'country'?",)


def test_unknown_field_without_close_match_lists_the_catalogue() -> None:
    text = rules_text("""
        - name: r
          description: d
          when: {field: zzzzqq, equals: x}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """)
    (problem,) = load_problems(text, UnknownFieldError)
    assert problem.startswith("routing.yaml:16: rule 'r': unknown field 'zzzzqq'; expected one of: company, country,")
    assert "hand_raiser" in problem


def test_yaml_syntax_error_has_line() -> None:
    text = rules_text("""
        - name: r
          description: d
          when: {field: country, in: [GB
          team: east
        """)
    (problem,) = load_problems(text, RuleSyntaxError)
    assert problem.startswith("routing.yaml:17: YAML syntax error: ")
    assert "check the indentation and quoting" in problem


def test_empty_file() -> None:
    (problem,) = load_problems("# nothing yet\n", RuleSyntaxError)
    assert problem == (
        "routing.yaml:1: expected a mapping with keys version, teams, rules, got an empty file; "
        "see rules/routing.yaml for the shape"
    )


def test_unknown_top_level_key() -> None:
    text = TEAMS + "rulez:\n" + DEFAULT
    problems = load_problems(text, RuleSyntaxError)
    assert problems == (
        "routing.yaml:1: missing required key 'rules'; add 'rules:'",
        "routing.yaml:13: unknown key 'rulez'; did you mean 'rules'?",
    )


def test_unknown_rule_key_and_missing_description() -> None:
    text = rules_text("""
        - name: r
          descripton: typo
          when: {field: country, equals: GB}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """)
    problems = load_problems(text, RuleSyntaxError)  # MissingDescriptionError is a RuleSyntaxError
    assert problems == (
        "routing.yaml:14: rule 'r': missing required key 'description'; add a one-line description of who this is for",
        "routing.yaml:15: rule 'r': unknown key 'descripton'; did you mean 'description'?",
    )


def test_missing_description_alone_is_its_own_kind() -> None:
    text = rules_text("""
        - name: r
          when: {field: country, equals: GB}
          team: east
        - name: default
          description: ""
          when: always
          team: central
        """)
    problems = load_problems(text, MissingDescriptionError)
    assert problems == (
        "routing.yaml:14: rule 'r': missing required key 'description'; add a one-line description of who this is for",
        "routing.yaml:18: rule 'default': 'description' is empty; give it a value",
    )


def test_team_without_description() -> None:
    teams = TEAMS.replace("    description: Central office\n", "")
    text = teams + "rules:\n" + DEFAULT
    problems = load_problems(text, MissingDescriptionError)
    assert problems == (
        "routing.yaml:8: team 'central': missing required key 'description'; "
        "add a one-line description of who this is for",
    )


def test_unknown_condition_key() -> None:
    text = rules_text("""
        - name: r
          description: d
          when:
            all:
              - {feild: country, in: [GB]}
              - {field: score, rnage: {min: 1}}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """)
    problems = load_problems(text, RuleSyntaxError)
    assert problems == (
        "routing.yaml:18: rule 'r': unknown condition key 'feild'; did you mean 'field'?",
        "routing.yaml:19: rule 'r': unknown condition key 'rnage'; did you mean 'range'?",
        "routing.yaml:19: rule 'r': condition has a field but no operator; add one of: equals, in, range, regex, exists",
    )


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (
            '{field: score, equals: "abc"}',
            "equals: value 'abc' is a string but field 'score' is a number; write a number such as 50",
        ),
        (
            '{field: score, equals: "50"}',
            "equals: value '50' is a string but field 'score' is a number; remove the quotes",
        ),
        (
            "{field: country, range: {min: 1}}",
            "range works on number fields, but 'country' is a string; use in or regex",
        ),
        (
            "{field: form_id, in: [demo-request, 123]}",
            "in: value 123 is a number but field 'form_id' is a string; quote it: '123'",
        ),
        (
            '{field: hand_raiser, equals: "true"}',
            "equals: value 'true' is a string but field 'hand_raiser' is a boolean; write true or false without quotes",
        ),
        (
            "{field: employees, regex: '^1'}",
            "regex works on string fields, but 'employees' is a number; use range, equals or in",
        ),
        ("{field: email, exists: yes}", "exists takes true or false, got 'yes'; write exists: true"),
        ("{field: country, in: []}", "in takes a non-empty list of string values, got []; e.g. in: [GB, DE]"),
        ("{field: country, equals: de}", "equals: country 'de' must be an upper-case ISO-3166 alpha-2 code; did you mean 'DE'?"),
        ("{field: country, in: [GB, UK]}", "in: country 'UK' is not an ISO-3166 alpha-2 code; did you mean 'GB'?"),
        ("{field: score, range: {min: 80, max: 20}}", "range min 80 is above max 20, so it matches nothing; did you mean {min: 20, max: 80}?"),
        ("{field: score, range: {}}", "range takes {min, max} (either optional), got {}; e.g. range: {min: 50}"),
    ],
)
def test_type_errors(condition: str, expected: str) -> None:
    text = rules_text(f"""
        - name: typed
          description: d
          when: {condition}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """)
    problems = load_problems(text, RuleTypeError)
    assert problems == (f"routing.yaml:16: rule 'typed': {expected}",)


def test_unknown_range_key_suggests() -> None:
    text = rules_text("""
        - name: r
          description: d
          when: {field: score, range: {minimum: 5}}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """)
    (problem,) = load_problems(text, RuleSyntaxError)
    assert problem == "routing.yaml:16: rule 'r': unknown range key 'minimum'; did you mean 'min'?"


def test_invalid_regex() -> None:
    text = rules_text("""
        - name: vp-titles
          description: d
          when: {field: job_title, regex: "(vp|director"}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """)
    (problem,) = load_problems(text, InvalidRegexError)
    assert problem == (
        "routing.yaml:16: rule 'vp-titles': invalid regex '(vp|director': missing ), unterminated subpattern "
        "at position 0; fix the pattern (escape literal characters with \\)"
    )


def test_duplicate_rule_names() -> None:
    text = rules_text("""
        - name: emea
          description: d
          when: {field: country, equals: GB}
          team: east
        - name: emea
          description: d
          when: {field: country, equals: DE}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """)
    (problem,) = load_problems(text, DuplicateNameError)
    assert problem == (
        "routing.yaml:18: rule 'emea': rule name 'emea' is already used at line 14; decisions name the rule, "
        "so give this one another name"
    )


def test_unknown_team_suggests_closest() -> None:
    text = rules_text("""
        - name: r
          description: d
          when: {field: country, equals: GB}
          team: eats
        - name: default
          description: Everything else
          when: always
          team: Central
        """)
    problems = load_problems(text, UnknownTeamError)
    assert problems == (
        "routing.yaml:17: rule 'r': unknown team 'eats'; did you mean 'east'?",
        "routing.yaml:21: rule 'default': unknown team 'Central'; did you mean 'central'?",
    )


def test_team_with_no_reps() -> None:
    teams = TEAMS.replace(
        "    reps:\n      - {id: anna-snelling, name: Anna Snelling, email: anna.snelling@example.com}\n",
        "    reps: []\n",
    )
    (problem,) = load_problems(teams + "rules:\n" + DEFAULT, EmptyTeamError)
    assert problem == (
        "routing.yaml:11: team 'central': team has no reps, so its leads could not be assigned; "
        "add at least one rep under reps:"
    )


def test_duplicate_rep_ids_across_teams() -> None:
    teams = TEAMS.replace(
        "{id: anna-snelling, name: Anna Snelling, email: anna.snelling@example.com}",
        "{id: violet-mclelland, name: Anna Snelling, email: anna.snelling@example.com}",
    )
    (problem,) = load_problems(teams + "rules:\n" + DEFAULT, DuplicateNameError)
    assert problem == (
        "routing.yaml:12: team 'central' rep 'violet-mclelland': rep id 'violet-mclelland' is already used in "
        "team 'east' (line 7); a rep belongs to one team, so remove one or give it another id"
    )


def test_bad_rep_fields() -> None:
    teams = TEAMS.replace(
        "{id: anna-snelling, name: Anna Snelling, email: anna.snelling@example.com}",
        "{id: anna-snelling, name: Anna Snelling, emial: anna.snelling@example.com, slack_user_id: u123}",
    )
    problems = load_problems(teams + "rules:\n" + DEFAULT, RuleSyntaxError)
    assert problems == (
        "routing.yaml:12: team 'central' rep 'anna-snelling': unknown key 'emial'; did you mean 'email'?",
        "routing.yaml:12: team 'central' rep 'anna-snelling': missing required key 'email'; add 'email:'",
        "routing.yaml:12: team 'central' rep 'anna-snelling': slack_user_id 'u123' is not a Slack member id; "
        "copy it from the profile (U or W then upper-case letters and digits)",
    )


def test_team_without_reps_key() -> None:
    teams = TEAMS.replace(
        "    reps:\n      - {id: anna-snelling, name: Anna Snelling, email: anna.snelling@example.com}\n", ""
    )
    (problem,) = load_problems(teams + "rules:\n" + DEFAULT, EmptyTeamError)
    assert problem == (
        "routing.yaml:8: team 'central': team has no reps, so its leads could not be assigned; "
        "add at least one rep under reps:"
    )


def test_no_rules() -> None:
    (problem,) = load_problems(TEAMS + "rules: []\n", NoRulesError)
    assert problem.startswith("routing.yaml:13: no rules; add at least a final catch-all")


def test_last_rule_must_be_catch_all() -> None:
    text = rules_text("""
        - name: emea
          description: d
          when: {field: country, in: [GB, DE]}
          team: east
        - name: everyone-else
          description: d
          when: {field: country, exists: true}
          team: central
        """)
    (problem,) = load_problems(text, MissingCatchAllError)
    assert problem == (
        "routing.yaml:18: rule 'everyone-else': the last rule must be a catch-all (when: always) so no lead "
        "falls through; add - {name: default, description: Everything else, when: always, team: <team>}"
    )


def test_when_typo_suggests_always() -> None:
    text = rules_text("""
        - name: default
          description: Everything else
          when: allways
          team: central
        """)
    problems = load_problems(text, RulesError)
    assert problems[0].startswith("routing.yaml:14: rule 'default': the last rule must be a catch-all")
    assert problems[1] == (
        "routing.yaml:16: rule 'default': when 'allways' is not a condition; did you mean 'always'? "
        "(or give a condition such as {field: country, in: [GB]})"
    )


def test_duplicate_yaml_key_is_an_error() -> None:
    text = rules_text("""
        - name: r
          description: d
          when: {field: country, equals: GB}
          team: east
          team: central
        - name: default
          description: Everything else
          when: always
          team: central
        """)
    (problem,) = load_problems(text, RuleSyntaxError)
    assert problem == (
        "routing.yaml:18: key 'team' appears twice in one mapping (first at line 17); "
        "YAML would silently keep only the last one, so delete one"
    )


def test_version_must_be_a_string() -> None:
    text = TEAMS.replace('version: "test-1"', "version: 2026-11-22") + "rules:\n" + DEFAULT
    (problem,) = load_problems(text, RuleSyntaxError)
    assert problem == (
        "routing.yaml:1: version must be a non-empty string, got datetime.date(2026, 11, 22); "
        'quote it, e.g. version: "2026-11-22.1"'
    )


def test_all_problems_of_a_file_are_reported_together_in_line_order() -> None:
    text = rules_text("""
        - name: r
          description: d
          when: {field: contry, equals: GB}
          team: eats
        - name: s
          description: d
          when: {field: score, range: {min: high}}
          team: east
        """)
    with pytest.raises(RulesError) as info:
        load_routing(text, "rules/routing.yaml")
    err = info.value
    assert type(err) is RulesError  # mixed kinds: the common root
    assert err.problems == (
        "rules/routing.yaml:16: rule 'r': unknown field 'contry'; did you mean 'country'?",
        "rules/routing.yaml:17: rule 'r': unknown team 'eats'; did you mean 'east'?",
        "rules/routing.yaml:18: rule 's': the last rule must be a catch-all (when: always) so no lead falls "
        "through; add - {name: default, description: Everything else, when: always, team: <team>}",
        "rules/routing.yaml:20: rule 's': range min: value 'high' is a string but field 'score' is a number; "
        "write a number such as 50",
    )
    assert str(err).splitlines() == list(err.problems)


def test_norway_and_ontario_stay_strings() -> None:
    text = rules_text("""
        - name: nordics
          description: d
          when: {field: country, in: [NO, SE]}
          team: east
        - name: ontario
          description: d
          when: {field: region, equals: ON}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """)
    config = load_routing(text, "routing.yaml")
    assert config.decide({"country": "NO"}).rule == "nordics"
    assert config.decide({"country": "CA", "region": "ON"}).rule == "ontario"
    assert config.decide({"country": "DK"}).rule == "default"


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("{always: true}", "routing.yaml:16: rule 'r': unknown condition key 'always'; write when: always on its own"),
        (
            "{country: GB}",
            "routing.yaml:16: rule 'r': unknown condition key 'country'; 'country' is a field: write "
            "{field: country, equals: ...}",
        ),
        (
            "{equals: GB}",
            "routing.yaml:16: rule 'r': a condition needs 'field' and one operator (equals, in, range, regex, "
            "exists), or all/any/not",
        ),
        (
            "{field: country, equals: GB, in: [DE]}",
            "routing.yaml:16: rule 'r': condition has several operators (equals, in); use one per condition and "
            "combine them with all: [...]",
        ),
        (
            "{any: [{field: country, equals: GB}], not: {field: region, exists: true}}",
            "routing.yaml:16: rule 'r': a condition is either one of all/any/not or a field with one operator, "
            "found any, not; nest them, e.g. all: [{field: ..., in: [...]}, {not: {...}}]",
        ),
        (
            "{all: []}",
            "routing.yaml:16: rule 'r': all takes a non-empty list of conditions, e.g. all: [{field: country, in: [GB]}, ...]",
        ),
        (
            "{any: [always]}",
            "routing.yaml:16: rule 'r': 'always' can only be the whole when (when: always), not part of all/any/not",
        ),
    ],
)
def test_condition_shape_errors(condition: str, expected: str) -> None:
    text = rules_text(f"""
        - name: r
          description: d
          when: {condition}
          team: east
        - name: default
          description: Everything else
          when: always
          team: central
        """)
    assert load_problems(text, RuleSyntaxError) == (expected,)


def test_yaml_merge_keys_are_refused() -> None:
    text = rules_text("""
        - &base
          name: r
          description: d
          when: {field: country, equals: GB}
          team: east
        - <<: *base
          name: default
          when: always
        """)
    problems = load_problems(text, RuleSyntaxError)
    assert problems[0] == "routing.yaml:19: YAML merge keys (<<) are not supported; write the keys out"
