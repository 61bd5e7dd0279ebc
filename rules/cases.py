"""Rule test cases kept beside the rules (like OPA's ``x_test.rego``).

A case file is a YAML list::

    - name: german-hand-raiser
      lead: {country: DE, hand_raiser: true}
      expect: {team: east, rule: emea}

Lead fields are checked against the catalogue when the file loads, with the
same error style as the routing file.  When a lead gives ``email`` but no
``email_domain`` the domain is derived, as :func:`~rules.catalogue.facts_from_lead` does.

A case may fix the clock with ``at`` (ISO 8601 with a UTC offset) and then
also expect where the lead lands inside the team, by roster and clock alone
(:func:`rules.availability.plan`: no capacity counts or admin overrides)::

    - name: saturday-night-hand-raiser
      at: 2026-12-05T03:00:00+01:00
      lead: {country: DE, hand_raiser: true}
      expect: {team: east, outcome: next_available, not_rep: garret-kinder,
               available_at: 2026-12-07T07:00:00-05:00}

``outcome`` is available | next_available | on_call | fallback_team | held;
``rep`` must be in the pool the team's strategy picks from (when the pool is
one rep, that is who gets it); ``not_rep`` (a rep id or a list) must not be;
``available_at`` is when the SLA clock starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType

from rules._problems import ProblemLog, suggest
from rules._yaml import YList, YMap, parse
from rules.availability import Outcome, Plan, plan
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

CASE_KEYS = ("name", "description", "at", "lead", "expect")
EXPECT_KEYS = ("team", "rule", "outcome", "rep", "not_rep", "available_at")
CLOCK_KEYS = ("outcome", "rep", "not_rep", "available_at")


@dataclass(frozen=True, slots=True)
class RuleTestCase:
    name: str
    facts: Mapping[str, object]
    expect_team: str | None
    expect_rule: str | None
    source: str = "<string>"
    line: int = 0
    description: str = ""
    at: datetime | None = None  # the clock for the placement expectations
    expect_outcome: str | None = None
    expect_rep: str | None = None
    expect_not_reps: tuple[str, ...] = ()
    expect_available_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RuleTestResult:
    case: RuleTestCase
    passed: bool
    expected_team: str | None
    expected_rule: str | None
    actual_team: str
    actual_rule: str
    path: tuple[str, ...]
    plan: Plan | None = None  # where the lead lands at the case's ``at``
    misses: tuple[str, ...] = ()  # the placement expectations that failed

    @property
    def placement(self) -> str:
        p = self.plan
        if p is None:
            return ""
        pool = ", ".join(p.reps) or "nobody"
        text = f"{p.outcome.value} in {p.team} ({pool}), clock from {p.available_at.isoformat()}"
        return text + (f", {p.reason}" if p.reason else "")

    @property
    def message(self) -> str:
        where = f"{self.case.source}:{self.case.line}: case {self.case.name!r}"
        placed = f"; {self.placement}" if self.plan is not None else ""
        if self.passed:
            return f"{where}: ok ({self.actual_team} via {self.actual_rule}{placed})"
        if self.misses:
            return f"{where}: expected {'; '.join(self.misses)}, got {self.placement}"
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
        at = _instant(node, "at", context, log) if "at" in node else None
        team, rule = _expect(node, context, log, config) if "expect" in node else (None, None)
        placement = _placement(node, at, context, log, config)
        if len(log) == before and name is not None:
            cases.append(RuleTestCase(
                name=name,
                facts=MappingProxyType(facts),
                expect_team=team,
                expect_rule=rule,
                source=source,
                line=line,
                description=description if isinstance(description, str) else "",
                at=at,
                expect_outcome=placement.outcome,
                expect_rep=placement.rep,
                expect_not_reps=placement.not_reps,
                expect_available_at=placement.available_at,
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


def _instant(node: YMap, key: str, context: str, log: ProblemLog) -> datetime | None:
    """An ISO 8601 moment with a UTC offset (YAML may already have read it as a datetime)."""
    value = node[key]
    example = f"{key}: 2026-12-05T03:00:00+01:00"
    moment: datetime | None = None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            moment = None
    elif isinstance(value, date):
        log.add(RuleSyntaxError, node.line_of(key), context,
                f"{key} {value} is a day, not a moment; give the time and its UTC offset, e.g. {example}")
        return None
    if moment is None:
        log.add(RuleSyntaxError, node.line_of(key), context,
                f"{key} {value!r} is not an ISO 8601 date and time; e.g. {example}")
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        log.add(RuleSyntaxError, node.line_of(key), context,
                f"{key} {value!s} has no UTC offset, so the time is ambiguous; add it, e.g. {example} "
                "(or Z for UTC)")
        return None
    return moment


@dataclass(frozen=True, slots=True)
class _Placement:
    outcome: str | None = None
    rep: str | None = None
    not_reps: tuple[str, ...] = ()
    available_at: datetime | None = None


def _placement(node: YMap, at: datetime | None, context: str, log: ProblemLog,
               config: RoutingConfig | None) -> _Placement:
    """The clock-dependent expectations: outcome, rep, not_rep, available_at (they need ``at``)."""
    expect = node.get("expect")
    if not isinstance(expect, YMap) or not any(k in expect for k in CLOCK_KEYS):
        return _Placement()
    if "at" not in node:
        first = next(k for k in expect if k in CLOCK_KEYS)
        log.add(RuleSyntaxError, expect.line_of(first), context,
                f"expect {first} depends on the clock; fix it with at:, e.g. at: 2026-12-05T03:00:00+01:00")
        return _Placement()
    outcome: str | None = None
    if "outcome" in expect:
        value = expect["outcome"]
        choices = [o.value for o in Outcome]
        if isinstance(value, str) and value.strip() in choices:
            outcome = value.strip()
        else:
            log.add(RuleSyntaxError, expect.line_of("outcome"), context,
                    f"unknown outcome {value!r}; {suggest(str(value), choices)}")
    reps = [r.rep_id for r in config.reps] if config is not None else None
    rep = required_str(expect, "rep", context, log)
    if rep is not None and reps is not None and rep not in reps:
        log.add(RuleSyntaxError, expect.line_of("rep"), context, f"unknown rep {rep!r}; {suggest(rep, reps)}")
    not_reps: list[str] = []
    if "not_rep" in expect:
        value = expect["not_rep"]
        items = list(value) if isinstance(value, YList) else [value]
        for item in items:
            if not isinstance(item, str) or not item.strip():
                log.add(RuleSyntaxError, expect.line_of("not_rep"), context,
                        f"not_rep must be a rep id or a list of them, got {value!r}")
            elif reps is not None and item.strip() not in reps:
                log.add(RuleSyntaxError, expect.line_of("not_rep"), context,
                        f"unknown rep {item.strip()!r}; {suggest(item.strip(), reps)}")
            else:
                not_reps.append(item.strip())
    available_at = _instant(expect, "available_at", context, log) if "available_at" in expect else None
    return _Placement(outcome, rep, tuple(not_reps), available_at)


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
        placed: Plan | None = None
        misses: list[str] = []
        if case.at is not None:
            placed = plan(config.team(decision.team), config.teams, case.at,
                          hand_raiser=case.facts.get("hand_raiser") is True)
            misses = _misses(case, placed)
        results.append(RuleTestResult(
            case=case,
            passed=passed and not misses,
            expected_team=case.expect_team,
            expected_rule=case.expect_rule,
            actual_team=decision.team,
            actual_rule=decision.rule,
            path=decision.path,
            plan=placed,
            misses=tuple(misses) if passed else (),
        ))
    return results


def _misses(case: RuleTestCase, placed: Plan) -> list[str]:
    misses: list[str] = []
    if case.expect_outcome is not None and case.expect_outcome != placed.outcome.value:
        misses.append(f"outcome {case.expect_outcome}")
    if case.expect_rep is not None and case.expect_rep not in placed.reps:
        misses.append(f"rep {case.expect_rep}")
    misses += [f"never {r}" for r in case.expect_not_reps if r in placed.reps]
    if case.expect_available_at is not None and case.expect_available_at != placed.available_at:
        misses.append(f"clock from {case.expect_available_at.isoformat()}")
    return misses
