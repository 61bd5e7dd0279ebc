"""Test cases kept beside the scoring and ICP files (``scoring_test.yaml``, ``icp_test.yaml``).

Like the routing rules' cases (:mod:`rules.cases`), they run before a file is
published, so a change that scores the wrong thing is refused with the case
that broke.  Pure: no clock, no Redis; the caps are applied as the Lua step
does (:func:`scoring.caps.apply_caps_detailed`), per UTC day.

Scoring cases, a YAML list::

    - name: a whitepaper download is content interest
      events:
        - {type: track, name: Whitepaper Downloaded, properties: {format: pdf}}
      expect: {points: 15, reasons: [content-download-event], hand_raiser: false}

    - name: refreshing pricing the same day counts three times
      events:
        - {type: page_view, url: https://ex.test/pricing, repeat: 5}
      expect: {points: 40}

Event keys: ``type`` (required: page_view, email_open, email_click, form_fill,
track, identify), ``name``, ``url``, ``form``, ``campaign``, ``properties``
(values as the SDK sends them), ``category``, ``schema``, ``machine`` (0..1),
``at`` (ISO 8601 time, default 2026-01-05T10:00:00Z; events of different UTC
days are capped separately) and ``repeat`` (send it N times).  ``expect``:
``points`` (granted after caps, summed over the events), ``reasons`` (the
rules that granted points, in order of first grant), ``hand_raiser`` and
``sales_ready`` (the sales-ready rule on the summed points, no fit grade or
model).  At least one expectation is required.

ICP cases::

    - name: a VP of sales at a mid-size software company is an A
      lead: {industry: Software, employees: "500", country: US, job_title: VP Sales}
      expect: {grade: A}

``expect``: ``grade`` (A-D or ``?``), ``fit_at_least``/``fit_at_most`` (0-100)
and ``missing`` (the criteria left out for lack of data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from models.events import Event, EventType
from scoring.caps import apply_caps_detailed, day_bucket
from scoring.config import ScoringConfig
from scoring.errors import ScoringConfigError
from scoring.icp import CRITERIA, IcpConfig, fit_grade
from scoring.points import score_event_hits
from scoring.ready import GRADE_LETTERS, is_sales_ready
from scoring.yamlread import Entry, YamlReader, did_you_mean, line_of, node_kind

DEFAULT_AT = "2026-01-05T10:00:00+00:00"  # a Monday
CASE_KEYS = ("name", "description", "events", "expect")
EVENT_KEYS = ("type", "name", "url", "form", "campaign", "properties", "category", "schema", "machine", "at",
              "repeat")
EXPECT_KEYS = ("points", "reasons", "hand_raiser", "sales_ready")
ICP_CASE_KEYS = ("name", "description", "lead", "expect")
ICP_EXPECT_KEYS = ("grade", "fit_at_least", "fit_at_most", "missing")
ICP_LEAD_FIELDS = ("industry", "employees", "country", "job_title", "company")
MAX_REPEAT = 1000


class CaseFileError(ScoringConfigError):
    """A scoring or ICP test-case file failed to load; the message names file, line and fix."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case's outcome: ``message`` says what was expected and what happened."""

    name: str
    line: int
    passed: bool
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoringCase:
    name: str
    line: int
    events: tuple[Event, ...]
    points: float | None = None
    reasons: tuple[str, ...] | None = None
    hand_raiser: bool | None = None
    sales_ready: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IcpCase:
    name: str
    line: int
    lead: Mapping[str, str]
    grade: str | None = None
    fit_at_least: float | None = None
    fit_at_most: float | None = None
    missing: tuple[str, ...] | None = None


@dataclass
class _Lead:
    day: str = ""
    used: dict[str, float] = field(default_factory=dict)
    daily_used: float = 0.0
    fired: frozenset[str] = frozenset()


def run_scoring_case(case: ScoringCase, config: ScoringConfig) -> CaseResult:
    lead = _Lead()
    total = 0.0
    granted: list[str] = []
    hand = False
    for event in case.events:
        hits = score_event_hits(event, config)
        day = day_bucket(event.ts)
        if day != lead.day:
            lead = _Lead(day=day, fired=lead.fired)
        result = apply_caps_detailed(hits, lead.used, lead.daily_used, config, fired=lead.fired)
        lead.used, lead.daily_used, lead.fired = result.used, result.daily_used, result.fired
        for reason in result.reasons:
            total += reason.points
            if reason.points != 0 and reason.rule not in granted:
                granted.append(reason.rule)
        hand = hand or any(h.reason.hand_raiser for h in hits)
    got = f"got {_num(total)} points from [{', '.join(granted)}], hand_raiser {str(hand).lower()}"
    problems: list[str] = []
    if case.points is not None and not math.isclose(total, case.points, abs_tol=1e-6):
        problems.append(f"points {_num(case.points)}")
    if case.reasons is not None and tuple(granted) != case.reasons:
        problems.append(f"reasons [{', '.join(case.reasons)}]")
    if case.hand_raiser is not None and hand is not case.hand_raiser:
        problems.append(f"hand_raiser {str(case.hand_raiser).lower()}")
    if case.sales_ready is not None:
        ready = is_sales_ready(config.ready, total, None, None, hand) is not None
        got += f", sales_ready {str(ready).lower()}"
        if ready is not case.sales_ready:
            problems.append(f"sales_ready {str(case.sales_ready).lower()}")
    if problems:
        return CaseResult(case.name, case.line, False, f"line {case.line} {case.name!r}: expected "
                          f"{'; '.join(problems)}, {got}")
    return CaseResult(case.name, case.line, True, f"line {case.line} {case.name!r}: {got}")


def run_icp_case(case: IcpCase, config: IcpConfig) -> CaseResult:
    grade = fit_grade(case.lead, config)
    got = f"got grade {grade.letter} (fit {grade.points:.0f}, missing [{', '.join(grade.missing)}])"
    problems: list[str] = []
    if case.grade is not None and grade.letter != case.grade:
        problems.append(f"grade {case.grade}")
    if case.fit_at_least is not None and not grade.points >= case.fit_at_least:
        problems.append(f"fit at least {_num(case.fit_at_least)}")
    if case.fit_at_most is not None and not grade.points <= case.fit_at_most:
        problems.append(f"fit at most {_num(case.fit_at_most)}")
    if case.missing is not None and tuple(sorted(grade.missing)) != tuple(sorted(case.missing)):
        problems.append(f"missing [{', '.join(case.missing)}]")
    if problems:
        return CaseResult(case.name, case.line, False, f"line {case.line} {case.name!r}: expected "
                          f"{'; '.join(problems)}, {got}")
    return CaseResult(case.name, case.line, True, f"line {case.line} {case.name!r}: {got}")


def run_scoring_cases(config: ScoringConfig, cases: Sequence[ScoringCase]) -> list[CaseResult]:
    return [run_scoring_case(c, config) for c in cases]


def run_icp_cases(config: IcpConfig, cases: Sequence[IcpCase]) -> list[CaseResult]:
    return [run_icp_case(c, config) for c in cases]


def load_scoring_cases(text: str, source: str, config: ScoringConfig) -> list[ScoringCase]:
    """Parse ``scoring_test.yaml``; rule names in ``reasons`` must exist in ``config``."""
    return _CaseLoader(source).scoring(text, config)


def load_icp_cases(text: str, source: str) -> list[IcpCase]:
    return _CaseLoader(source).icp(text)


def _num(x: float) -> str:
    return f"{x:g}"


class _CaseLoader(YamlReader):
    error_class = CaseFileError

    def cases(self, text: str, what: str, keys: tuple[str, ...]) -> list[tuple[MappingNode, dict[str, Entry], str]]:
        if not isinstance(text, str):
            msg = f"{self.source}: {what} must be handed in as text, got {type(text).__name__}"
            raise CaseFileError(msg)
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            self.fail(int(mark.line) + 1 if mark else 1, "YAML syntax", str(exc.problem or "invalid YAML"),
                      "fix the YAML syntax (check indentation, colons and quotes)")
        if not isinstance(root, SequenceNode) or not root.value:
            self.fail(1 if root is None else line_of(root), "file",
                      f"must be a non-empty list of cases, got {'nothing' if root is None else node_kind(root)}",
                      "write each case as '- name: ...' with what goes in and 'expect:'")
        out: list[tuple[MappingNode, dict[str, Entry], str]] = []
        names: dict[str, int] = {}
        for index, node in enumerate(root.value, start=1):
            where = f"case #{index}"
            if not isinstance(node, MappingNode):
                self.fail(line_of(node), where, f"must be a mapping, got {node_kind(node)}", "write '- name: ...'")
            entries = self.mapping(node, where, keys)
            self.require(entries, ("name", "expect"), line_of(node), where, "add '{key}:' to the case")
            name = self.text(entries["name"], where, "name")
            if name in names:
                self.fail(line_of(node), f"case {name!r}", f"duplicate case name (also at line {names[name]})",
                          "give each case its own name")
            names[name] = line_of(node)
            out.append((node, entries, f"case {name!r}"))
        return out

    # ------------------------------------------------------------------ scoring

    def scoring(self, text: str, config: ScoringConfig) -> list[ScoringCase]:
        cases: list[ScoringCase] = []
        rule_names = tuple(r.name for r in config.rules)
        for node, entries, where in self.cases(text, "scoring test cases", CASE_KEYS):
            self.require(entries, ("events",), line_of(node), where, "add 'events:' with at least one event")
            events: list[Event] = []
            for i, item in enumerate(self.sequence(entries["events"], where, "events",
                                                   "- {type: page_view, url: https://ex.test/pricing}"), start=1):
                event, repeat = self.event(item, f"{where} event #{i}", len(events))
                events.extend(replace(event, event_id=f"{event.event_id}.{n}") for n in range(repeat))
            expect = self.mapping(entries["expect"].node, where, EXPECT_KEYS, what="'expect'")
            if not expect:
                self.fail(line_of(entries["expect"].node), where, "'expect' is empty",
                          f"expect at least one of: {', '.join(EXPECT_KEYS)}")
            reasons: tuple[str, ...] | None = None
            if "reasons" in expect:
                node_r = expect["reasons"].node
                items = list(node_r.value) if isinstance(node_r, SequenceNode) else [node_r]
                names: list[str] = []
                for item in items:
                    rule = self.text_node(item, where, "reasons")
                    if rule not in rule_names:
                        self.fail(line_of(item), where, f"'reasons' names rule {rule!r}, which the scoring file "
                                  "does not have", f"{did_you_mean(rule, rule_names)}rules: {', '.join(rule_names)}")
                    names.append(rule)
                reasons = tuple(names)
            cases.append(ScoringCase(
                name=where[6:-1], line=line_of(node), events=tuple(events),
                points=self.number(expect["points"], where, "points") if "points" in expect else None,
                reasons=reasons,
                hand_raiser=self.boolean(expect["hand_raiser"], where, "hand_raiser") if "hand_raiser" in expect
                else None,
                sales_ready=self.boolean(expect["sales_ready"], where, "sales_ready") if "sales_ready" in expect
                else None,
            ))
        return cases

    def event(self, node: Node, where: str, index: int) -> tuple[Event, int]:
        entries = self.mapping(node, where, EVENT_KEYS, what="an event")
        self.require(entries, ("type",), line_of(node), where, "add 'type:' (page_view, track, form_fill, ...)")
        raw_type = self.text(entries["type"], where, "type")
        allowed = tuple(t.value for t in EventType)
        if raw_type not in allowed:
            self.fail(line_of(entries["type"].node), where, f"unknown event type {raw_type!r}",
                      f"{did_you_mean(raw_type, allowed)}use one of: {', '.join(allowed)}")
        at = DEFAULT_AT
        if "at" in entries:
            at = self.text(entries["at"], where, "at")
        try:
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            self.fail(line_of(entries["at"].node), where, f"'at' {at!r} is not an ISO 8601 time with an offset",
                      "write e.g. 2026-12-05T03:00:00+01:00 or 2026-12-05T02:00:00Z")
        traits: dict[str, str] = {}
        if "properties" in entries:
            pnode = entries["properties"].node
            if not isinstance(pnode, MappingNode):
                self.fail(line_of(pnode), where, f"'properties' must be a mapping, got {node_kind(pnode)}",
                          "write properties: {format: pdf, pages: 12}")
            for key_node, value_node in pnode.value:
                key = str(self.scalar(key_node, where, "properties key"))
                value = self.scalar(value_node, where, key)
                traits[key] = _as_sent(value)
        if "category" in entries:
            traits["$category"] = self.text(entries["category"], where, "category")
        if "schema" in entries:
            traits["$schema"] = self.text(entries["schema"], where, "schema")
        machine = 0.0
        if "machine" in entries:
            machine = self.number(entries["machine"], where, "machine", at_least=0.0, at_most=1.0)
        repeat = 1
        if "repeat" in entries:
            repeat = self.integer(entries["repeat"], where, "repeat", at_least=1)
            if repeat > MAX_REPEAT:
                self.fail(line_of(entries["repeat"].node), where, f"'repeat' {repeat} is more than {MAX_REPEAT}",
                          f"use at most {MAX_REPEAT}")
        opt = {k: self.text(entries[k], where, k) for k in ("name", "url", "form", "campaign") if k in entries}
        event = Event(event_id=f"case-{index}", type=EventType(raw_type), ts=when.timestamp(), source="case",
                      visitor_id="case", name=opt.get("name"), url=opt.get("url"), form_id=opt.get("form"),
                      campaign=opt.get("campaign"), traits=traits, machine=machine)
        return event, repeat

    # ------------------------------------------------------------------ icp

    def icp(self, text: str) -> list[IcpCase]:
        cases: list[IcpCase] = []
        for node, entries, where in self.cases(text, "ICP test cases", ICP_CASE_KEYS):
            self.require(entries, ("lead",), line_of(node), where, "add 'lead:' with the lead's fields")
            lead_entries = self.mapping(entries["lead"].node, where, ICP_LEAD_FIELDS, what="'lead'")
            lead = {k: _as_sent(self.scalar(e.node, where, k)) for k, e in lead_entries.items()}
            expect = self.mapping(entries["expect"].node, where, ICP_EXPECT_KEYS, what="'expect'")
            if not expect:
                self.fail(line_of(entries["expect"].node), where, "'expect' is empty",
                          f"expect at least one of: {', '.join(ICP_EXPECT_KEYS)}")
            grade: str | None = None
            if "grade" in expect:
                grade = self.text(expect["grade"], where, "grade").upper()
                if grade not in (*GRADE_LETTERS, "?"):
                    self.fail(line_of(expect["grade"].node), where, f"unknown grade {grade!r}",
                              f"use one of {', '.join(GRADE_LETTERS)} or '?'")
            missing: tuple[str, ...] | None = None
            if "missing" in expect:
                mnode = expect["missing"].node
                items: list[Any] = list(mnode.value) if isinstance(mnode, SequenceNode) else [mnode]
                names = []
                for item in items:
                    if isinstance(item, ScalarNode) and item.value == "":
                        continue
                    name = self.text_node(item, where, "missing")
                    if name not in CRITERIA:
                        self.fail(line_of(item), where, f"'missing' names {name!r}, not a criterion",
                                  f"{did_you_mean(name, CRITERIA)}criteria: {', '.join(CRITERIA)}")
                    names.append(name)
                missing = tuple(names)
            cases.append(IcpCase(
                name=where[6:-1], line=line_of(node), lead=lead, grade=grade, missing=missing,
                fit_at_least=self.number(expect["fit_at_least"], where, "fit_at_least", at_least=0, at_most=100)
                if "fit_at_least" in expect else None,
                fit_at_most=self.number(expect["fit_at_most"], where, "fit_at_most", at_least=0, at_most=100)
                if "fit_at_most" in expect else None,
            ))
        return cases


def _as_sent(value: object) -> str:
    """A YAML value as the collector stores an SDK's property (``flatten``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value) if not isinstance(value, str) else value


__all__ = [
    "CaseFileError",
    "CaseResult",
    "IcpCase",
    "ScoringCase",
    "load_icp_cases",
    "load_scoring_cases",
    "run_icp_cases",
    "run_scoring_cases",
]
