"""Loading, checking and evaluating the routing rules ops staff edit.

:func:`load_routing` compiles and type-checks the whole file and raises one
:class:`~rules.errors.RulesError` listing every problem, so a typo can never
reach production and misroute a lead.  :meth:`RoutingConfig.decide` then runs
the ordered rules over a lead's facts: first match wins, and the decision
records every rule it looked at.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType

from models import Rep, RoutingDecision
from rules._problems import ProblemLog, suggest
from rules._yaml import YList, YMap, parse
from rules.availability import (
    DEFAULT_AFTER_HOURS,
    TEAM_POLICY_KEYS,
    AfterHours,
    RawPolicy,
    parse_defaults,
    parse_policy,
    read_policy_nodes,
)
from rules.catalogue import FIELDS, FieldSpec, FieldType, value_problem
from rules.conditions import (
    AllOf,
    Always,
    AnyOf,
    Condition,
    Equals,
    Exists,
    Facts,
    In,
    Not,
    Range,
    Regex,
    implies,
)
from rules.errors import (
    DuplicateNameError,
    EmptyTeamError,
    InvalidRegexError,
    MissingCatchAllError,
    MissingDescriptionError,
    NoRulesError,
    RulesError,
    RuleSyntaxError,
    RuleTypeError,
    ShadowedRuleError,
    UnknownFieldError,
    UnknownTeamError,
)
from rules.roster import (
    REP_ROSTER_KEYS,
    TEAM_ROSTER_KEYS,
    LifecyclePolicy,
    Manager,
    RepProfile,
    SlaPolicy,
    Strategy,
    parse_lifecycle,
    parse_managers,
    parse_team_roster,
)

TOP_KEYS = ("version", "teams", "rules")
# Optional top-level sections (see rules/roster.py).
OPTIONAL_TOP_KEYS = ("lifecycle", "defaults")
TEAM_KEYS = ("description", "manager", "slack_webhook", "reps", *TEAM_ROSTER_KEYS, *TEAM_POLICY_KEYS)
REP_KEYS = ("id", "name", "email", "slack_user_id", *REP_ROSTER_KEYS)
RULE_KEYS = ("name", "description", "when", "team")
OPERATORS = ("equals", "in", "range", "regex", "exists")
COMBINATORS = ("all", "any", "not")
CONDITION_KEYS = ("field", *OPERATORS, *COMBINATORS)
RANGE_KEYS = ("min", "max")
ALWAYS = "always"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TEAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


@dataclass(frozen=True, slots=True)
class Team:
    """A sales team and its reps; every rep's ``team`` is this team's name."""

    name: str
    description: str
    manager: str
    slack_webhook: str | None
    reps: tuple[Rep, ...]
    managers: tuple[str, ...] = ()
    # Distribution inside the team, per-rep availability and capacity, and the SLA (rules/roster.py).
    strategy: Strategy = Strategy.ROUND_ROBIN
    profiles: tuple[RepProfile, ...] = ()
    sla: SlaPolicy | None = None
    # What happens when nobody in the team can take a lead now (rules/availability.py).
    after_hours: AfterHours = DEFAULT_AFTER_HOURS
    hand_raiser_policy: AfterHours | None = None
    # The managers as roster rows (name, email, Slack id, time zone): who an escalation reaches.
    manager_rows: tuple[Manager, ...] = ()

    def policy_for(self, hand_raiser: bool = False) -> AfterHours:
        """The after-hours policy for a lead: the team's ``hand_raiser`` policy for hand-raisers, if declared."""
        if hand_raiser and self.hand_raiser_policy is not None:
            return self.hand_raiser_policy
        return self.after_hours

    def profile(self, rep_id: str) -> RepProfile:
        """The rep's availability and capacity; a rep the file says nothing about is always available."""
        for p in self.profiles:
            if p.rep_id == rep_id:
                return p
        return RepProfile(rep_id=rep_id)

    def rep(self, rep_id: str) -> Rep | None:
        return next((r for r in self.reps if r.rep_id == rep_id), None)

    def to_json(self) -> dict[str, object]:
        profiles = {p.rep_id: p.to_json() for p in self.profiles}
        return {
            "name": self.name,
            "description": self.description,
            "managers": list(self.managers or (self.manager,)),
            "slack_webhook": self.slack_webhook,
            "strategy": self.strategy.value,
            "sla": self.sla.to_json() if self.sla else None,
            "after_hours": self.after_hours.to_json(),
            "hand_raiser": self.hand_raiser_policy.to_json() if self.hand_raiser_policy else None,
            "reps": [
                {"id": r.rep_id, "name": r.name, "email": r.email, "slack_user_id": r.slack_user_id,
                 "profile": profiles.get(r.rep_id) or RepProfile(r.rep_id).to_json()}
                for r in self.reps
            ],
        }


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule, compiled: ``when`` is a :class:`~rules.conditions.Condition`."""

    name: str
    description: str
    team: str
    when: Condition
    line: int = 0

    @property
    def catch_all(self) -> bool:
        return isinstance(self.when, Always)

    def matches(self, facts: Facts) -> bool:
        return self.when.matches(facts)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description, "team": self.team, "when": self.when.to_json()}


@dataclass(frozen=True)
class RoutingConfig:
    """A loaded, checked routing file.  Build it with :func:`load_routing`."""

    version: str
    source: str
    teams: Mapping[str, Team]
    rules: tuple[CompiledRule, ...]
    lifecycle: LifecyclePolicy = field(default_factory=LifecyclePolicy)
    _by_name: Mapping[str, CompiledRule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "teams", MappingProxyType(dict(self.teams)))
        object.__setattr__(self, "_by_name", MappingProxyType({r.name: r for r in self.rules}))

    def decide(self, facts: Facts) -> RoutingDecision:
        """Route ``facts``: the first rule that matches wins; ``path`` lists each rule tried."""
        path: list[str] = []
        for rule in self.rules:
            if rule.matches(facts):
                path.append(f"{rule.name}:yes")
                return RoutingDecision(team=rule.team, rule=rule.name, rules_version=self.version, path=tuple(path))
            path.append(f"{rule.name}:no")
        msg = f"{self.source}: no rule matched (path {', '.join(path)}); end the rules with a `when: always` rule"
        raise MissingCatchAllError(msg)

    def team(self, name: str) -> Team:
        try:
            return self.teams[name]
        except KeyError:
            msg = f"{self.source}: unknown team {name!r}; {suggest(name, self.teams)}"
            raise UnknownTeamError(msg) from None

    def rule(self, name: str) -> CompiledRule:
        try:
            return self._by_name[name]
        except KeyError:
            msg = f"{self.source}: unknown rule {name!r}; {suggest(name, self._by_name)}"
            raise RulesError(msg) from None

    @property
    def reps(self) -> tuple[Rep, ...]:
        return tuple(rep for team in self.teams.values() for rep in team.reps)

    @cached_property
    def content_hash(self) -> str:
        """sha256 over the compiled content (version, teams, rules); comments and layout do not count."""
        doc = {
            "version": self.version,
            "teams": {name: team.to_json() for name, team in sorted(self.teams.items())},
            "rules": [rule.to_json() for rule in self.rules],
            "lifecycle": self.lifecycle.to_json(),
        }
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def load_routing(text: str, source: str = "<string>") -> RoutingConfig:
    """Parse, compile and check a routing file; raise one :class:`RulesError` listing every problem."""
    log = ProblemLog(source)
    parsed, doc = parse(text, log)
    if not parsed:
        log.raise_if_any()
    if not isinstance(doc, YMap):
        got = "an empty file" if doc is None else f"{type(doc).__name__}"
        log.add(RuleSyntaxError, getattr(doc, "line", 1), None,
                f"expected a mapping with keys {', '.join(TOP_KEYS)}, got {got}; see rules/routing.yaml for the shape")
        log.raise_if_any()
        raise AssertionError("unreachable")
    check_keys(doc, (*TOP_KEYS, *OPTIONAL_TOP_KEYS), None, log, required=TOP_KEYS)
    version = _version(doc, log)
    policies: dict[str, dict[str, RawPolicy]] = {}
    teams, declared = _teams(doc, log, policies)
    teams = _with_policies(doc, teams, declared, policies, log)
    rules = _rules(doc, declared, log)
    lifecycle = parse_lifecycle(doc, log)
    log.raise_if_any()
    return RoutingConfig(version=version, source=source, teams=teams, rules=rules, lifecycle=lifecycle)


# --- shared checks -------------------------------------------------------------------------------


def check_keys(
    node: YMap,
    allowed: tuple[str, ...],
    context: str | None,
    log: ProblemLog,
    required: tuple[str, ...] = (),
    line: int | None = None,
) -> None:
    """Log unknown keys (with did-you-mean) and missing required keys (at ``line``, default the mapping's)."""
    for key in node:
        if key not in allowed:
            log.add(RuleSyntaxError, node.line_of(key), context, f"unknown key {key!r}; {suggest(key, allowed)}")
    for key in required:
        if key not in node:
            kind: type[RulesError] = MissingDescriptionError if key == "description" else RuleSyntaxError
            hint = "add a one-line description of who this is for" if key == "description" else f"add '{key}:'"
            log.add(kind, node.line if line is None else line, context, f"missing required key {key!r}; {hint}")


def required_str(node: YMap, key: str, context: str | None, log: ProblemLog) -> str | None:
    """The non-blank string under ``key``; logs and returns None otherwise (a missing key is logged elsewhere)."""
    if key not in node:
        return None
    value = node[key]
    if isinstance(value, str) and value.strip():
        return value.strip()
    kind: type[RulesError] = MissingDescriptionError if key == "description" else RuleSyntaxError
    if value is None or (isinstance(value, str) and not value.strip()):
        log.add(kind, node.line_of(key), context, f"{key!r} is empty; give it a value")
    else:
        log.add(kind, node.line_of(key), context, f"{key!r} must be a string, got {value!r}; quote it: '{value}'")
    return None


def _version(doc: YMap, log: ProblemLog) -> str:
    if "version" not in doc:
        return ""
    value = doc["version"]
    if isinstance(value, str) and value.strip():
        return value.strip()
    log.add(RuleSyntaxError, doc.line_of("version"), None,
            f"version must be a non-empty string, got {value!r}; quote it, e.g. version: \"2026-11-22.1\"")
    return ""


# --- teams ---------------------------------------------------------------------------------------


def _with_policies(doc: YMap, teams: dict[str, Team], declared: set[str],
                   policies: Mapping[str, Mapping[str, RawPolicy]], log: ProblemLog) -> dict[str, Team]:
    """Each team's after-hours and hand-raiser policies (its own, else the ``defaults:`` section's)."""
    members: dict[str, tuple[str, ...]] = {name: () for name in declared}
    members.update({name: tuple(r.rep_id for r in team.reps) for name, team in teams.items()})
    defaults = parse_defaults(doc, log, members)
    out: dict[str, Team] = {}
    for name, team in teams.items():
        parsed: dict[str, AfterHours | None] = {}
        for key, raw in policies.get(name, {}).items():
            parsed[key] = parse_policy(raw, name, members, log)
        after = parsed.get("after_hours") or defaults.get("after_hours") or DEFAULT_AFTER_HOURS
        if after.team == name:  # a default fallback team does not fall back to itself
            after = DEFAULT_AFTER_HOURS
        hand = parsed.get("hand_raiser") or defaults.get("hand_raiser")
        if hand is not None and hand.team == name:
            hand = None
        out[name] = replace(team, after_hours=after, hand_raiser_policy=hand)
    return out


def _teams(doc: YMap, log: ProblemLog,
           policies: dict[str, dict[str, RawPolicy]] | None = None) -> tuple[dict[str, Team], set[str]]:
    teams: dict[str, Team] = {}
    declared: set[str] = set()
    node = doc.get("teams")
    if "teams" not in doc:
        return teams, declared
    if not isinstance(node, YMap) or not node:
        log.add(RuleSyntaxError, doc.line_of("teams"), None,
                "teams must be a mapping of team name to team, e.g. teams: {east: {description: ..., reps: [...]}}")
        return teams, declared
    seen_ids: dict[str, tuple[str, int]] = {}
    seen_emails: dict[str, tuple[str, int]] = {}
    for name, tnode in node.items():
        declared.add(name)
        context = f"team {name!r}"
        line = node.line_of(name)
        if not _TEAM_NAME.match(name):
            slug = _slug(name)
            log.add(RuleSyntaxError, line, context,
                    f"team names use lower-case letters, digits, '-' and '_'; did you mean {slug!r}?")
        if not isinstance(tnode, YMap):
            log.add(RuleSyntaxError, line, context, "a team must be a mapping with description, manager and reps")
            continue
        check_keys(tnode, TEAM_KEYS, context, log, required=("description", "manager"), line=line)
        description = required_str(tnode, "description", context, log)
        manager_rows = parse_managers(tnode, context, log)
        managers = tuple(m.name for m in manager_rows)
        webhook = _webhook(tnode, context, log)
        rep_nodes: dict[str, tuple[YMap, str]] = {}
        reps = _reps(tnode, name, line, context, log, seen_ids, seen_emails, rep_nodes)
        roster = parse_team_roster(tnode, name, context, log, rep_nodes)
        if policies is not None:
            policies[name] = read_policy_nodes(tnode, context, log)
        if description is not None and managers and reps:
            teams[name] = Team(
                name=name,
                description=description,
                manager=", ".join(managers),
                slack_webhook=webhook,
                reps=reps,
                managers=managers,
                manager_rows=manager_rows,
                strategy=roster.strategy,
                profiles=roster.profiles,
                sla=roster.sla,
            )
    return teams, declared


def _webhook(tnode: YMap, context: str, log: ProblemLog) -> str | None:
    value = tnode.get("slack_webhook")
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().startswith("https://"):
        return value.strip()
    log.add(RuleSyntaxError, tnode.line_of("slack_webhook"), context,
            f"slack_webhook {value!r} is not an https:// URL; paste the Slack incoming-webhook URL or leave it \"\"")
    return None


def _reps(
    tnode: YMap,
    team: str,
    team_line: int,
    context: str,
    log: ProblemLog,
    seen_ids: dict[str, tuple[str, int]],
    seen_emails: dict[str, tuple[str, int]],
    rep_nodes: dict[str, tuple[YMap, str]] | None = None,
) -> tuple[Rep, ...]:
    node = tnode.get("reps")
    if node is None or (isinstance(node, YList) and not node):
        line = tnode.line_of("reps") if "reps" in tnode else team_line
        log.add(EmptyTeamError, line, context,
                "team has no reps, so its leads could not be assigned; add at least one rep under reps:")
        return ()
    if not isinstance(node, YList):
        log.add(RuleSyntaxError, tnode.line_of("reps"), context,
                "reps must be a list, e.g. - {id: jane-doe, name: Jane Doe, email: jane.doe@example.com}")
        return ()
    reps: list[Rep] = []
    for index, rnode in enumerate(node):
        line = node.line_of(index)
        if not isinstance(rnode, YMap):
            log.add(RuleSyntaxError, line, context,
                    f"rep #{index + 1} must be a mapping, e.g. {{id: jane-doe, name: Jane Doe, email: jane.doe@example.com}}")
            continue
        raw_id = rnode.get("id")
        has_id = isinstance(raw_id, str) and raw_id.strip()
        rep_context = f"{context} rep {str(raw_id).strip()!r}" if has_id else f"{context} rep #{index + 1}"
        check_keys(rnode, REP_KEYS, rep_context, log, required=("id", "name", "email"))
        rep_id = required_str(rnode, "id", rep_context, log)
        name = required_str(rnode, "name", rep_context, log)
        email = required_str(rnode, "email", rep_context, log)
        slack_id: str | None = None
        if rnode.get("slack_user_id") not in (None, ""):
            slack_id = required_str(rnode, "slack_user_id", rep_context, log)
            if slack_id is not None and not _SLACK_ID.match(slack_id):
                log.add(RuleSyntaxError, rnode.line_of("slack_user_id"), rep_context,
                        f"slack_user_id {slack_id!r} is not a Slack member id; "
                        "copy it from the profile (U or W then upper-case letters and digits)")
                slack_id = None
        if email is not None and not _EMAIL.match(email):
            log.add(RuleSyntaxError, rnode.line_of("email"), rep_context,
                    f"email {email!r} is not an email address; write it as name@example.com")
            email = None
        ok = True
        if rep_id is not None:
            if rep_id in seen_ids:
                other, other_line = seen_ids[rep_id]
                log.add(DuplicateNameError, rnode.line_of("id"), rep_context,
                        f"rep id {rep_id!r} is already used in team {other!r} (line {other_line}); "
                        "a rep belongs to one team, so remove one or give it another id")
                ok = False
            else:
                seen_ids[rep_id] = (team, rnode.line_of("id"))
        if email is not None:
            folded = email.casefold()
            if folded in seen_emails:
                other, other_line = seen_emails[folded]
                log.add(DuplicateNameError, rnode.line_of("email"), rep_context,
                        f"email {email!r} is already used in team {other!r} (line {other_line}); "
                        "each rep needs their own address")
                ok = False
            else:
                seen_emails[folded] = (team, rnode.line_of("email"))
        if ok and rep_id is not None and name is not None and email is not None:
            reps.append(Rep(rep_id=rep_id, name=name, email=email, team=team, slack_user_id=slack_id))
            if rep_nodes is not None:
                rep_nodes[rep_id] = (rnode, rep_context)
    return tuple(reps)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "name"


# --- rules ---------------------------------------------------------------------------------------


def _rules(doc: YMap, declared_teams: set[str], log: ProblemLog) -> tuple[CompiledRule, ...]:
    if "rules" not in doc:
        return ()
    node = doc["rules"]
    if node is None or (isinstance(node, YList) and not node):
        log.add(NoRulesError, doc.line_of("rules"), None,
                "no rules; add at least a final catch-all: - {name: default, description: ..., when: always, team: ...}")
        return ()
    if not isinstance(node, YList):
        log.add(RuleSyntaxError, doc.line_of("rules"), None,
                "rules must be a list; start each rule with '- name: ...'")
        return ()
    compiled: list[CompiledRule] = []
    names: dict[str, int] = {}
    last_is_always = False
    for index, rnode in enumerate(node):
        line = node.line_of(index)
        if not isinstance(rnode, YMap):
            log.add(RuleSyntaxError, line, f"rule #{index + 1}",
                    "a rule must be a mapping with name, description, when and team")
            last_is_always = False
            continue
        raw_name = rnode.get("name")
        context = f"rule {raw_name!r}" if isinstance(raw_name, str) and raw_name.strip() else f"rule #{index + 1}"
        check_keys(rnode, RULE_KEYS, context, log, required=RULE_KEYS)
        name = required_str(rnode, "name", context, log)
        if name is not None:
            if not _NAME.match(name):
                log.add(RuleSyntaxError, rnode.line_of("name"), context,
                        f"rule names use letters, digits, '-', '_' and '.'; did you mean {_slug(name)!r}?")
            if name in names:
                log.add(DuplicateNameError, rnode.line_of("name"), context,
                        f"rule name {name!r} is already used at line {names[name]}; decisions name the rule, "
                        "so give this one another name")
            else:
                names[name] = rnode.line_of("name")
        description = required_str(rnode, "description", context, log)
        team = required_str(rnode, "team", context, log)
        if team is not None and team not in declared_teams:
            log.add(UnknownTeamError, rnode.line_of("team"), context,
                    f"unknown team {team!r}; {suggest(team, declared_teams)}")
            team = None
        before = len(log)
        when: Condition | None = None
        if "when" in rnode:
            when = _when(rnode, context, log)
        last_is_always = rnode.get("when") == ALWAYS
        if name is not None and description is not None and team is not None and when is not None:
            if len(log) == before:
                compiled.append(CompiledRule(name=name, description=description, team=team, when=when,
                                             line=line))
    _check_shadowing(compiled, log)
    if not last_is_always and not any(r.catch_all for r in compiled):
        last = node[-1]
        context = f"rule {last.get('name')!r}" if isinstance(last, YMap) else f"rule #{len(node)}"
        log.add(MissingCatchAllError, node.line_of(len(node) - 1), context,
                "the last rule must be a catch-all (when: always) so no lead falls through; "
                "add - {name: default, description: Everything else, when: always, team: <team>}")
    return tuple(compiled)


def _check_shadowing(compiled: list[CompiledRule], log: ProblemLog) -> None:
    for index, rule in enumerate(compiled):
        for earlier in compiled[:index]:
            if earlier.catch_all:
                log.add(ShadowedRuleError, rule.line, f"rule {rule.name!r}",
                        f"can never match: catch-all rule {earlier.name!r} (line {earlier.line}) above it matches "
                        "every lead; move the catch-all to the end")
                break
            if rule.when.key() == earlier.when.key():
                log.add(ShadowedRuleError, rule.line, f"rule {rule.name!r}",
                        f"can never match: its conditions are the same as rule {earlier.name!r} (line {earlier.line}); "
                        "delete one or change its conditions")
                break
            if implies(rule.when, earlier.when):
                log.add(ShadowedRuleError, rule.line, f"rule {rule.name!r}",
                        f"can never match: every lead it matches is already matched by rule {earlier.name!r} "
                        f"(line {earlier.line}); move it above {earlier.name!r} or narrow {earlier.name!r}")
                break


def _when(rnode: YMap, context: str, log: ProblemLog) -> Condition | None:
    value = rnode["when"]
    line = rnode.line_of("when")
    if isinstance(value, str):
        if value == ALWAYS:
            return Always()
        log.add(RuleSyntaxError, line, context,
                f"when {value!r} is not a condition; {suggest(value, [ALWAYS])} "
                "(or give a condition such as {field: country, in: [GB]})")
        return None
    return compile_condition(value, line, context, log)


def compile_condition(node: object, line: int, context: str, log: ProblemLog) -> Condition | None:
    """Compile one condition mapping; log every problem and return None if there was any."""
    before = len(log)
    cond = _condition(node, line, context, log)
    return cond if len(log) == before else None


def _condition(node: object, line: int, context: str, log: ProblemLog) -> Condition | None:
    if isinstance(node, str) and node == ALWAYS:
        log.add(RuleSyntaxError, line, context,
                "'always' can only be the whole when (when: always), not part of all/any/not")
        return None
    if not isinstance(node, YMap):
        log.add(RuleSyntaxError, line, context,
                f"a condition must be a mapping such as {{field: country, in: [GB, DE]}} or all/any/not, got {node!r}")
        return None
    line = node.line
    unknown = [k for k in node if k not in CONDITION_KEYS]
    for key in unknown:
        if key == ALWAYS:
            hint = "write when: always on its own"
        elif key in FIELDS:
            hint = f"{key!r} is a field: write {{field: {key}, equals: ...}}"
        else:
            hint = suggest(key, CONDITION_KEYS)
        log.add(RuleSyntaxError, node.line_of(key), context, f"unknown condition key {key!r}; {hint}")
    combinators = [k for k in node if k in COMBINATORS]
    if combinators:
        if len(node) - len(unknown) > 1:
            others = ", ".join(k for k in node if k in CONDITION_KEYS)
            log.add(RuleSyntaxError, line, context,
                    f"a condition is either one of all/any/not or a field with one operator, found {others}; "
                    "nest them, e.g. all: [{field: ..., in: [...]}, {not: {...}}]")
            return None
        key = combinators[0]
        kline = node.line_of(key)
        value = node[key]
        if key == "not":
            child = _condition(value, kline, context, log)
            return Not(child) if child is not None else None
        if not isinstance(value, YList) or not value:
            log.add(RuleSyntaxError, kline, context,
                    f"{key} takes a non-empty list of conditions, e.g. {key}: [{{field: country, in: [GB]}}, ...]")
            return None
        children = [_condition(item, value.line_of(i), context, log) for i, item in enumerate(value)]
        if any(c is None for c in children):
            return None
        kids = tuple(c for c in children if c is not None)
        return AllOf(kids) if key == "all" else AnyOf(kids)
    if "field" not in node:
        if not unknown:  # unknown keys were reported with their own hint
            log.add(RuleSyntaxError, line, context,
                    "a condition needs 'field' and one operator (equals, in, range, regex, exists), or all/any/not")
        return None
    spec = _field_spec(node, context, log)
    operators = [k for k in node if k in OPERATORS]
    if not operators:
        log.add(RuleSyntaxError, line, context,
                "condition has a field but no operator; add one of: " + ", ".join(OPERATORS))
        return None
    if len(operators) > 1:
        log.add(RuleSyntaxError, line, context,
                f"condition has several operators ({', '.join(operators)}); use one per condition and combine "
                "them with all: [...]")
        return None
    if spec is None:
        return None
    op = operators[0]
    return _leaf(spec, op, node[op], node.line_of(op), context, log)


def _field_spec(node: YMap, context: str, log: ProblemLog) -> FieldSpec | None:
    name = node["field"]
    line = node.line_of("field")
    if not isinstance(name, str):
        log.add(RuleSyntaxError, line, context, f"field must be a field name, got {name!r}; {suggest(str(name), FIELDS)}")
        return None
    spec = FIELDS.get(name)
    if spec is None:
        log.add(UnknownFieldError, line, context, f"unknown field {name!r}; {suggest(name, FIELDS)}")
    return spec


def _leaf(spec: FieldSpec, op: str, value: object, line: int, context: str, log: ProblemLog) -> Condition | None:
    if op == "exists":
        if not isinstance(value, bool):
            log.add(RuleTypeError, line, context, f"exists takes true or false, got {value!r}; write exists: true")
            return None
        return Exists(spec.name, value)
    if op == "equals":
        problem = value_problem(spec, value)
        if problem is not None:
            log.add(RuleTypeError, line, context, f"equals: {problem}")
            return None
        assert isinstance(value, (str, int, float, bool))
        return Equals(spec.name, spec.type, value)
    if op == "in":
        return _in(spec, value, line, context, log)
    if op == "range":
        return _range(spec, value, line, context, log)
    return _regex(spec, value, line, context, log)


def _in(spec: FieldSpec, value: object, line: int, context: str, log: ProblemLog) -> Condition | None:
    if not isinstance(value, YList) or not value:
        example = "[GB, DE]" if spec.type is FieldType.STRING else "[10, 20]" if spec.type is FieldType.NUMBER else "[true]"
        log.add(RuleTypeError, line, context,
                f"in takes a non-empty list of {spec.type.value} values, got {value!r}; e.g. in: {example}")
        return None
    options: list[str | float | bool] = []
    ok = True
    for index, item in enumerate(value):
        problem = value_problem(spec, item)
        if problem is not None:
            log.add(RuleTypeError, value.line_of(index), context, f"in: {problem}")
            ok = False
        elif isinstance(item, (str, int, float, bool)):
            options.append(item)
    return In(spec.name, spec.type, tuple(options)) if ok else None


def _range(spec: FieldSpec, value: object, line: int, context: str, log: ProblemLog) -> Condition | None:
    if spec.type is not FieldType.NUMBER:
        use = "equals or in" if spec.type is FieldType.BOOLEAN else "in or regex"
        log.add(RuleTypeError, line, context,
                f"range works on number fields, but {spec.name!r} is a {spec.type.value}; use {use}")
        return None
    if not isinstance(value, YMap) or not value:
        log.add(RuleTypeError, line, context, f"range takes {{min, max}} (either optional), got {value!r}; e.g. range: {{min: 50}}")
        return None
    ok = True
    bounds: dict[str, float | None] = {"min": None, "max": None}
    for key, bound in value.items():
        if key not in RANGE_KEYS:
            log.add(RuleSyntaxError, value.line_of(key), context, f"unknown range key {key!r}; {suggest(key, RANGE_KEYS)}")
            ok = False
            continue
        problem = value_problem(spec, bound)
        if problem is not None:
            log.add(RuleTypeError, value.line_of(key), context, f"range {key}: {problem}")
            ok = False
        elif isinstance(bound, (int, float)):
            bounds[key] = float(bound)
    low, high = bounds["min"], bounds["max"]
    if ok and low is None and high is None:
        log.add(RuleTypeError, line, context, "range needs min, max or both; e.g. range: {min: 50}")
        ok = False
    if ok and low is not None and high is not None and low > high:
        log.add(RuleTypeError, line, context,
                f"range min {low:g} is above max {high:g}, so it matches nothing; did you mean {{min: {high:g}, max: {low:g}}}?")
        ok = False
    return Range(spec.name, low, high) if ok else None


def _regex(spec: FieldSpec, value: object, line: int, context: str, log: ProblemLog) -> Condition | None:
    if spec.type is not FieldType.STRING:
        use = "range, equals or in" if spec.type is FieldType.NUMBER else "equals"
        log.add(RuleTypeError, line, context,
                f"regex works on string fields, but {spec.name!r} is a {spec.type.value}; use {use}")
        return None
    if not isinstance(value, str) or not value:
        log.add(RuleTypeError, line, context, f"regex takes a non-empty pattern string, got {value!r}; quote it")
        return None
    try:
        pattern = re.compile(value, re.IGNORECASE)
    except re.error as exc:
        log.add(InvalidRegexError, line, context,
                f"invalid regex {value!r}: {exc}; fix the pattern (escape literal characters with \\)")
        return None
    return Regex(spec.name, pattern)
