"""What a team does with a lead when nobody in it can take one right now.

Pure logic over ``rules.roster`` and the standard library.  Each team may
declare an ``after_hours`` policy, and a separate ``hand_raiser`` policy for
leads that asked for contact (speed to lead matters most there); a top-level
``defaults:`` section gives every team a policy it does not declare itself::

    defaults:
      after_hours: {policy: next_available}
    teams:
      east:
        after_hours: {policy: next_available, team: central}   # team: if everyone is out of office
        hand_raiser: {policy: on_call, rep: boris-faz}          # takes hand-raisers at any hour
      west:
        after_hours: {policy: fallback_team, team: central}

Policies (``next_available`` when nothing is declared):

* ``next_available``: the rep whose working hours start first gets the lead,
  queued, and the SLA clock starts then (ties: the team's strategy).
* ``fallback_team`` (needs ``team``): the lead goes to that team, to a rep
  available there now, else to its next available rep.
* ``on_call`` (needs ``rep``, a rep of the team): that rep takes leads at any
  hour, with the SLA clock starting now; when the on-call rep is out of office
  the team falls back to ``next_available``.

A rep out of office is never given a lead by any policy.  When every rep of
the team is out of office the lead goes to ``team`` when the policy names one,
else it is held (``held``: not assigned; the worker routes it again on the
lead's next event or when a rep is back).

:func:`plan` is the pure version of the decision (roster and clock only: no
capacity counts, no admin overrides); rule test cases with an ``at:`` clock
use it, and the worker follows the same steps against Redis
(router/worker/distribution.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol

from models import Rep
from rules._problems import ProblemLog, suggest
from rules._yaml import YMap
from rules.errors import RuleSyntaxError, UnknownTeamError
from rules.roster import RepProfile, Unavailable

POLICY_KEYS = ("policy", "team", "rep")
TEAM_POLICY_KEYS = ("after_hours", "hand_raiser")
DEFAULTS_KEYS = TEAM_POLICY_KEYS


class Policy(StrEnum):
    """What a team does when none of its reps can take a lead now."""

    NEXT_AVAILABLE = "next_available"
    FALLBACK_TEAM = "fallback_team"
    ON_CALL = "on_call"


class Outcome(StrEnum):
    """How a lead was placed (``available``: someone could take it now)."""

    AVAILABLE = "available"
    NEXT_AVAILABLE = "next_available"
    FALLBACK_TEAM = "fallback_team"
    ON_CALL = "on_call"
    HELD = "held"


# Reasons recorded on a pick or a held lead.
REASON_NO_REP: Final = "no_rep_available"
REASON_TEAM_OOO: Final = "team_out_of_office"


@dataclass(frozen=True, slots=True)
class AfterHours:
    """One declared policy: ``team`` is the fallback team (required for fallback_team; for the other
    policies the team used when every rep is out of office), ``rep`` the on-call rep."""

    policy: Policy = Policy.NEXT_AVAILABLE
    team: str | None = None
    rep: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"policy": self.policy.value, "team": self.team, "rep": self.rep}

    def __str__(self) -> str:
        extra = "".join(f", {k}: {v}" for k, v in (("team", self.team), ("rep", self.rep)) if v)
        return f"{{policy: {self.policy.value}{extra}}}"


DEFAULT_AFTER_HOURS = AfterHours()


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a lead would go at one moment, by roster and clock alone.

    ``reps`` is the pool the team's strategy picks from (one rep for on_call;
    empty when held); ``available_at`` is when the SLA clock starts.
    """

    outcome: Outcome
    team: str
    reps: tuple[str, ...]
    available_at: datetime
    reason: str = ""


# --- parsing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawPolicy:
    """A policy mapping as written, kept until every team is known (it names teams and reps)."""

    node: YMap
    key: str  # after_hours | hand_raiser
    context: str
    line: int


def read_policy_nodes(parent: YMap, context: str, log: ProblemLog) -> dict[str, RawPolicy]:
    """The ``after_hours`` / ``hand_raiser`` mappings under ``parent`` (a team or ``defaults``)."""
    out: dict[str, RawPolicy] = {}
    for key in TEAM_POLICY_KEYS:
        if key not in parent or parent[key] is None:
            continue
        node = parent[key]
        if not isinstance(node, YMap):
            log.add(RuleSyntaxError, parent.line_of(key), context,
                    f"{key} must be a mapping, got {node!r}; e.g. {key}: {{policy: next_available}}, "
                    f"{{policy: fallback_team, team: central}} or {{policy: on_call, rep: jane-doe}}")
            continue
        out[key] = RawPolicy(node, key, f"{context} {key}", parent.line_of(key))
    return out


def parse_defaults(doc: YMap, log: ProblemLog, teams: Mapping[str, Collection[str]]) -> dict[str, AfterHours]:
    """The optional top-level ``defaults:`` section: policies for teams that declare none."""
    if "defaults" not in doc or doc["defaults"] is None:
        return {}
    node = doc["defaults"]
    if not isinstance(node, YMap):
        log.add(RuleSyntaxError, doc.line_of("defaults"), "defaults",
                f"defaults must be a mapping, got {node!r}; e.g. defaults: {{after_hours: {{policy: next_available}}}}")
        return {}
    for key in node:
        if key not in DEFAULTS_KEYS:
            log.add(RuleSyntaxError, node.line_of(key), "defaults", f"unknown key {key!r}; {suggest(key, DEFAULTS_KEYS)}")
    out: dict[str, AfterHours] = {}
    for key, raw in read_policy_nodes(node, "defaults", log).items():
        policy = parse_policy(raw, None, teams, log)
        if policy is not None:
            out[key] = policy
    return out


def parse_policy(raw: RawPolicy, team: str | None, teams: Mapping[str, Collection[str]],
                 log: ProblemLog) -> AfterHours | None:
    """One policy mapping, checked against the declared ``teams`` (name -> rep ids).

    ``team`` is the team the policy belongs to; None for the ``defaults`` section.
    """
    node, context = raw.node, raw.context
    before = len(log)
    for key in node:
        if key not in POLICY_KEYS:
            log.add(RuleSyntaxError, node.line_of(key), context, f"unknown key {key!r}; {suggest(key, POLICY_KEYS)}")
    choices = [p.value for p in Policy]
    policy = Policy.NEXT_AVAILABLE
    if "policy" not in node:
        log.add(RuleSyntaxError, raw.line, context,
                f"missing required key 'policy'; add one of: {', '.join(choices)}")
    else:
        value = node["policy"]
        if isinstance(value, str) and value.strip() in choices:
            policy = Policy(value.strip())
        else:
            log.add(RuleSyntaxError, node.line_of("policy"), context,
                    f"unknown policy {value!r}; {suggest(str(value), choices)}")
    fallback: str | None = None
    if "team" in node:
        value = node["team"]
        if not isinstance(value, str) or not value.strip():
            log.add(RuleSyntaxError, node.line_of("team"), context, f"team must be a team name, got {value!r}")
        elif value.strip() not in teams:
            log.add(UnknownTeamError, node.line_of("team"), context,
                    f"unknown team {value.strip()!r}; {suggest(value.strip(), teams)}")
        elif team is not None and value.strip() == team:
            log.add(RuleSyntaxError, node.line_of("team"), context,
                    f"a team cannot fall back to itself; name another team (one of: "
                    f"{', '.join(sorted(t for t in teams if t != team)) or 'none declared'})")
        else:
            fallback = value.strip()
    elif policy is Policy.FALLBACK_TEAM:
        log.add(RuleSyntaxError, raw.line, context,
                "policy fallback_team needs the team to send leads to; add e.g. team: central")
    on_call: str | None = None
    if "rep" in node:
        value = node["rep"]
        own = teams.get(team, ()) if team is not None else ()
        everyone = {r: t for t, reps in teams.items() for r in reps}
        if policy is not Policy.ON_CALL:
            log.add(RuleSyntaxError, node.line_of("rep"), context,
                    f"rep is only used by policy on_call, not {policy.value}; remove it or write policy: on_call")
        elif team is None:
            log.add(RuleSyntaxError, node.line_of("rep"), context,
                    "an on-call rep belongs to one team; declare policy on_call on that team, not under defaults")
        elif not isinstance(value, str) or not value.strip():
            log.add(RuleSyntaxError, node.line_of("rep"), context, f"rep must be a rep id, got {value!r}")
        elif value.strip() not in own:
            rep_id = value.strip()
            where = f" (that rep is in team {everyone[rep_id]!r})" if rep_id in everyone else ""
            log.add(RuleSyntaxError, node.line_of("rep"), context,
                    f"rep {rep_id!r} is not in team {team!r}{where}; the on-call rep must be one of the team's reps; "
                    f"{suggest(rep_id, own)}")
        else:
            on_call = value.strip()
    elif policy is Policy.ON_CALL and team is not None:
        log.add(RuleSyntaxError, raw.line, context,
                "policy on_call needs the rep who takes leads at any hour; add e.g. rep: "
                f"{next(iter(teams.get(team, ())), 'jane-doe')}")
    elif policy is Policy.ON_CALL:
        log.add(RuleSyntaxError, raw.line, context,
                "an on-call rep belongs to one team; declare policy on_call on that team, not under defaults")
    if len(log) != before:
        return None
    return AfterHours(policy=policy, team=fallback, rep=on_call)


# --- the pure decision -----------------------------------------------------------------------------


class Team(Protocol):
    """What placing a lead needs of a team (``rules.engine.Team``; a Protocol so the engine can import this module)."""

    @property
    def name(self) -> str: ...

    @property
    def reps(self) -> tuple[Rep, ...]: ...

    def policy_for(self, hand_raiser: bool = False) -> AfterHours: ...

    def profile(self, rep_id: str) -> RepProfile: ...


def _present(team: Team, now: datetime, exclude: Collection[str]) -> list[str]:
    """The reps of ``team`` not excluded and not out of office at ``now``."""
    return [r.rep_id for r in team.reps if r.rep_id not in exclude
            and team.profile(r.rep_id).unavailable(now) is not Unavailable.OUT_OF_OFFICE]


def _earliest(team: Team, reps: list[str], now: datetime) -> tuple[tuple[str, ...], datetime]:
    opens = {r: team.profile(r).next_available(now) for r in reps}
    first = min(opens.values())
    return tuple(r for r in reps if opens[r] == first), first


def _in_team(team: Team, now: datetime, exclude: Collection[str], outcome: Outcome) -> Plan | None:
    """Someone available now, else the earliest opening among those not out of office; None if all are."""
    present = _present(team, now, exclude)
    if not present:
        return None
    free = tuple(r for r in present if team.profile(r).unavailable(now) is None)
    if free:
        return Plan(outcome if outcome is Outcome.FALLBACK_TEAM else Outcome.AVAILABLE, team.name, free, now)
    reps, at = _earliest(team, present, now)
    return Plan(outcome, team.name, reps, at, REASON_NO_REP)


def plan(team: Team, teams: Mapping[str, Team], now: datetime, *, hand_raiser: bool = False,
         exclude: Collection[str] = ()) -> Plan:
    """Where a lead for ``team`` goes at ``now`` (timezone-aware), by roster and clock alone."""
    here = _present(team, now, exclude)
    free = tuple(r for r in here if team.profile(r).unavailable(now) is None)
    if free:
        return Plan(Outcome.AVAILABLE, team.name, free, now)
    policy = team.policy_for(hand_raiser)
    other = teams.get(policy.team) if policy.team else None
    if here:
        if policy.policy is Policy.ON_CALL and policy.rep in here:
            return Plan(Outcome.ON_CALL, team.name, (policy.rep,), now, REASON_NO_REP)
        if policy.policy is Policy.FALLBACK_TEAM and other is not None:
            found = _in_team(other, now, (), Outcome.FALLBACK_TEAM)
            if found is not None:
                return found
        reps, at = _earliest(team, here, now)
        return Plan(Outcome.NEXT_AVAILABLE, team.name, reps, at, REASON_NO_REP)
    if other is not None:
        found = _in_team(other, now, (), Outcome.FALLBACK_TEAM)
        if found is not None:
            return Plan(Outcome.FALLBACK_TEAM, found.team, found.reps, found.available_at, REASON_TEAM_OOO)
    return Plan(Outcome.HELD, team.name, (), now, REASON_TEAM_OOO)


__all__ = [
    "DEFAULT_AFTER_HOURS",
    "POLICY_KEYS",
    "REASON_NO_REP",
    "REASON_TEAM_OOO",
    "TEAM_POLICY_KEYS",
    "AfterHours",
    "Outcome",
    "Plan",
    "Policy",
    "RawPolicy",
    "parse_defaults",
    "parse_policy",
    "plan",
    "read_policy_nodes",
]
