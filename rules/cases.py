"""Rule test cases kept beside the rules (like OPA's ``x_test.rego``).

A case file is a YAML list::

    - name: german-hand-raiser
      lead: {country: DE, hand_raiser: true}
      expect: {team: east, rule: emea}

Lead fields are checked against the catalogue when the file loads, with the
same error style as the routing file.  When a lead gives ``email`` but no
``email_domain`` the domain is derived, as :func:`~rules.catalogue.facts_from_lead` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from rules._problems import ProblemLog, suggest
from rules._yaml import YList, YMap, parse
from rules.catalogue import FIELDS, coerce_fact, domain_of, value_problem
from rules.engine import RoutingConfig, check_keys, required_str
from rules.errors import (
    DuplicateNameError,
    NoRulesError,
    RuleSyntaxError,
    RuleTypeError,
    UnknownFieldError,
    UnknownRuleError,
    UnknownTeamError,
)

CASE_KEYS = ("name", "description", "lead", "expect")
EXPECT_KEYS = ("team", "rule")


@dataclass(frozen=True, slots=True)
class RuleTestCase:
    name: str
    facts: Mapping[str, object]
    expect_team: str | None
    expect_rule: str | None
    source: str = "<string>"
    line: int = 0
    description: str = ""


@dataclass(frozen=True, slots=True)
class RuleTestResult:
    case: RuleTestCase
    passed: bool
    expected_team: str | None
    expected_rule: str | None
    actual_team: str
    actual_rule: str
    path: tuple[str, ...]

    @property
    def message(self) -> str:
        where = f"{self.case.source}:{self.case.line}: case {self.case.name!r}"
        if self.passed:
            return f"{where}: ok ({self.actual_team} via {self.actual_rule})"
        want = " via ".join(x for x in (self.expected_team or "any team", self.expected_rule) if x)
        return f"{where}: expected {want}, got {self.actual_team} via {self.actual_rule} (path: {', '.join(self.path)})"


def load_rule_tests(
    text: str, source: str = "<string>", config: RoutingConfig | None = None
) -> tuple[RuleTestCase, ...]:
    """Parse and check a case file; with ``config``, expected teams and rules must exist in it."""
    log = ProblemLog(source)
    parsed, doc = parse(text, log)
    if not parsed:
        log.raise_if_any()
    if not isinstance(doc, YList) or not doc:
        line = doc.line if isinstance(doc, (YMap, YList)) else 1
        kind = NoRulesError if doc is None or isinstance(doc, YList) else RuleSyntaxError
        log.add(kind, line, None,
                "expected a non-empty list of cases: - {name: ..., lead: {country: DE}, expect: {team: east}}")
        log.raise_if_any()
    assert isinstance(doc, YList)
    cases: list[RuleTestCase] = []
    names: dict[str, int] = {}
    for index, node in enumerate(doc):
        line = doc.line_of(index)
        if not isinstance(node, YMap):
            log.add(RuleSyntaxError, line, f"case #{index + 1}", "a case must be a mapping with name, lead and expect")
            continue
        raw_name = node.get("name")
        context = f"case {raw_name!r}" if isinstance(raw_name, str) and raw_name.strip() else f"case #{index + 1}"
        before = len(log)
        check_keys(node, CASE_KEYS, context, log, required=("name", "lead", "expect"))
        name = required_str(node, "name", context, log)
        if name is not None:
            if name in names:
                log.add(DuplicateNameError, node.line_of("name"), context,
                        f"case name {name!r} is already used at line {names[name]}; give this one another name")
            else:
                names[name] = node.line_of("name")
        description = node.get("description")
        facts = _lead(node, context, log) if "lead" in node else {}
        team, rule = _expect(node, context, log, config) if "expect" in node else (None, None)
        if len(log) == before and name is not None:
            cases.append(RuleTestCase(
                name=name,
                facts=MappingProxyType(facts),
                expect_team=team,
                expect_rule=rule,
                source=source,
                line=line,
                description=description if isinstance(description, str) else "",
            ))
    log.raise_if_any()
    return tuple(cases)


def _lead(node: YMap, context: str, log: ProblemLog) -> dict[str, object]:
    lead = node["lead"]
    if lead is None:
        return {}
    if not isinstance(lead, YMap):
        log.add(RuleSyntaxError, node.line_of("lead"), context,
                "lead must be a mapping of catalogue fields, e.g. lead: {country: DE, score: 80}")
        return {}
    facts: dict[str, object] = {}
    for field, value in lead.items():
        spec = FIELDS.get(field)
        if spec is None:
            log.add(UnknownFieldError, lead.line_of(field), context, f"unknown field {field!r}; {suggest(field, FIELDS)}")
            continue
        if value is None:
            continue  # an explicitly missing fact
        problem = value_problem(spec, value)
        if problem is not None:
            log.add(RuleTypeError, lead.line_of(field), context, problem)
            continue
        facts[field] = coerce_fact(field, value)
    email = facts.get("email")
    if isinstance(email, str) and "email_domain" not in lead:
        domain = domain_of(email)
        if domain:
            facts["email_domain"] = domain
    return facts


def _expect(
    node: YMap, context: str, log: ProblemLog, config: RoutingConfig | None
) -> tuple[str | None, str | None]:
    expect = node["expect"]
    line = node.line_of("expect")
    if not isinstance(expect, YMap) or not any(k in expect for k in EXPECT_KEYS):
        log.add(RuleSyntaxError, line, context, "expect needs team, rule or both, e.g. expect: {team: east, rule: emea}")
        return None, None
    check_keys(expect, EXPECT_KEYS, context, log)
    team = required_str(expect, "team", context, log)
    rule = required_str(expect, "rule", context, log)
    if config is not None:
        if team is not None and team not in config.teams:
            log.add(UnknownTeamError, expect.line_of("team"), context,
                    f"unknown team {team!r}; {suggest(team, config.teams)}")
        rule_names = [r.name for r in config.rules]
        if rule is not None and rule not in rule_names:
            log.add(UnknownRuleError, expect.line_of("rule"), context,
                    f"unknown rule {rule!r}; {suggest(rule, rule_names)}")
        if team is not None and rule is not None and rule in rule_names and team in config.teams:
            routed_to = config.rule(rule).team
            if routed_to != team:
                log.add(RuleSyntaxError, expect.line_of("team"), context,
                        f"rule {rule!r} routes to team {routed_to!r}, so expecting team {team!r} can never pass; "
                        f"did you mean team: {routed_to}?")
    return team, rule


def run_rule_tests(config: RoutingConfig, cases: Iterable[RuleTestCase]) -> list[RuleTestResult]:
    """Route each case's lead through ``config`` and compare with what it expects."""
    results: list[RuleTestResult] = []
    for case in cases:
        decision = config.decide(case.facts)
        passed = (case.expect_team is None or case.expect_team == decision.team) and (
            case.expect_rule is None or case.expect_rule == decision.rule
        )
        results.append(RuleTestResult(
            case=case,
            passed=passed,
            expected_team=case.expect_team,
            expected_rule=case.expect_rule,
            actual_team=decision.team,
            actual_rule=decision.rule,
            path=decision.path,
        ))
    return results
