"""What-if routing: how a set of leads would be shared out under two rule sets.

Pure and deterministic: leads are routed in the order given, each team's reps
take turns by round robin (one in-memory counter per team and rule set, like
the shared Redis counter the worker uses), and nothing touches Redis.  The
report counts leads per team and per rep under the current and the new rules,
lists the leads that change team, and turns the counts into a daily load per
rep over the working days the leads' timestamps span.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from models import Rep
from rules.accounts import AccountBook, match_account, owner_first
from rules.catalogue import coerce_fact, domain_of
from rules.engine import RoutingConfig, Team

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class SimLead:
    """One lead to route: its id, catalogue facts and (when known) when it arrived, epoch seconds."""

    lead_id: str
    facts: Mapping[str, object]
    ts: float | None = None

    @property
    def label(self) -> str:
        """A short description for examples: company and country when known."""
        parts = [str(self.facts[k]) for k in ("company", "country", "region") if self.facts.get(k) not in (None, "")]
        return ", ".join(parts) or "no company or country"


def lead_facts(raw: Mapping[str, object]) -> dict[str, object]:
    """Catalogue facts from raw lead fields: each coerced to its type, blanks dropped, ``email_domain`` derived.

    Keys outside the catalogue (e.g. ``website``, used for account matching) are kept as stripped strings.
    """
    facts: dict[str, object] = {}
    for key, value in raw.items():
        coerced = coerce_fact(key, value)
        if isinstance(coerced, str):
            coerced = coerced.strip() or None
        if coerced is not None:
            facts[key] = coerced
    email = facts.get("email")
    if isinstance(email, str) and "email_domain" not in facts:
        domain = domain_of(email)
        if domain:
            facts["email_domain"] = domain
    return facts


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one lead lands under one rule set."""

    team: str
    rule: str
    rep_id: str


@dataclass(frozen=True, slots=True)
class Move:
    """A lead that changes team between the current and the new rules."""

    lead: SimLead
    before: Placement
    after: Placement


class RoundRobin:
    """Each team's reps take turns, in roster order, starting with the first rep."""

    def __init__(self) -> None:
        self._turns: Counter[str] = Counter()

    def pick(self, team: Team) -> Rep:
        turn = self._turns[team.name]
        self._turns[team.name] += 1
        return team.reps[turn % len(team.reps)]


@dataclass(frozen=True, slots=True)
class Span:
    """The time the leads cover: first and last timestamp and the Monday-to-Friday days between (inclusive)."""

    first: float
    last: float
    working_days: int

    @property
    def first_day(self) -> date:
        return datetime.fromtimestamp(self.first, UTC).date()

    @property
    def last_day(self) -> date:
        return datetime.fromtimestamp(self.last, UTC).date()


def working_days(first: date, last: date) -> int:
    """Monday-to-Friday days from ``first`` to ``last`` inclusive; at least 1."""
    if last < first:
        first, last = last, first
    days = (last - first).days + 1
    weeks, extra = divmod(days, 7)
    count = weeks * 5
    start = first + timedelta(days=weeks * 7)
    count += sum(1 for i in range(extra) if (start + timedelta(days=i)).weekday() < 5)
    return max(count, 1)


def span_of(leads: Sequence[SimLead]) -> Span | None:
    stamps = [lead.ts for lead in leads if lead.ts is not None]
    if not stamps:
        return None
    first, last = min(stamps), max(stamps)
    days = working_days(datetime.fromtimestamp(first, UTC).date(), datetime.fromtimestamp(last, UTC).date())
    return Span(first, last, days)


@dataclass(frozen=True)
class SideResult:
    """The outcome under one rule set."""

    version: str
    placements: tuple[Placement, ...]
    team_counts: Mapping[str, int]
    rep_counts: Mapping[str, int]
    rule_counts: Mapping[str, int]
    owner_routed: int = 0


@dataclass(frozen=True, slots=True)
class RepRow:
    rep_id: str
    name: str
    team_current: str | None
    team_new: str | None
    current: int
    new: int
    current_per_day: float | None
    new_per_day: float | None

    @property
    def delta(self) -> int:
        return self.new - self.current


@dataclass(frozen=True, slots=True)
class TeamRow:
    team: str
    current: int
    new: int
    reps_current: int
    reps_new: int
    current_per_rep_day: float | None
    new_per_rep_day: float | None

    @property
    def delta(self) -> int:
        return self.new - self.current


@dataclass(frozen=True)
class SimulationReport:
    leads: int
    current: SideResult
    new: SideResult
    moves: int
    rule_changes: int
    examples: tuple[Move, ...]
    span: Span | None
    reps: Mapping[str, Rep] = field(repr=False)
    rosters: tuple[Mapping[str, Team], Mapping[str, Team]] = field(repr=False)

    def per_day(self, count: int) -> float | None:
        return count / self.span.working_days if self.span is not None else None

    def team_rows(self) -> list[TeamRow]:
        cur_teams, new_teams = self.rosters
        names = sorted(set(self.current.team_counts) | set(self.new.team_counts) | set(cur_teams) | set(new_teams))
        rows: list[TeamRow] = []
        for name in names:
            cur, new = self.current.team_counts.get(name, 0), self.new.team_counts.get(name, 0)
            rc = len(cur_teams[name].reps) if name in cur_teams else 0
            rn = len(new_teams[name].reps) if name in new_teams else 0
            cpd = self.per_day(cur)
            npd = self.per_day(new)
            rows.append(TeamRow(name, cur, new, rc, rn,
                                cpd / rc if cpd is not None and rc else None,
                                npd / rn if npd is not None and rn else None))
        return rows

    def rep_rows(self) -> list[RepRow]:
        """Every rep of either roster, busiest under the new rules first."""
        cur_teams, new_teams = self.rosters
        team_of_cur = {r.rep_id: t.name for t in cur_teams.values() for r in t.reps}
        team_of_new = {r.rep_id: t.name for t in new_teams.values() for r in t.reps}
        rows = []
        for rep_id, rep in self.reps.items():
            cur, new = self.current.rep_counts.get(rep_id, 0), self.new.rep_counts.get(rep_id, 0)
            rows.append(RepRow(rep_id, rep.name, team_of_cur.get(rep_id), team_of_new.get(rep_id), cur, new,
                               self.per_day(cur), self.per_day(new)))
        rows.sort(key=lambda r: (-r.new, -r.current, r.rep_id))
        return rows


class _Side:
    """Routes leads one by one under one rule set, with its own round robin."""

    def __init__(self, config: RoutingConfig, accounts: AccountBook | None) -> None:
        self.config = config
        self.accounts = accounts
        self.rr = RoundRobin()
        self.placements: list[Placement] = []
        self.owners = 0

    def route(self, lead: SimLead) -> Placement:
        placement: Placement | None = None
        if self.accounts is not None:
            route = owner_first(match_account(lead.facts, self.accounts), self.config)
            if route.rep is not None and route.decision is not None:
                self.owners += 1
                placement = Placement(route.decision.team, route.decision.rule, route.rep.rep_id)
        if placement is None:
            decision = self.config.decide(lead.facts)
            rep = self.rr.pick(self.config.team(decision.team))
            placement = Placement(decision.team, decision.rule, rep.rep_id)
        self.placements.append(placement)
        return placement

    def result(self) -> SideResult:
        placements = self.placements
        return SideResult(
            version=self.config.version,
            placements=tuple(placements),
            team_counts=dict(Counter(p.team for p in placements)),
            rep_counts=dict(Counter(p.rep_id for p in placements)),
            rule_counts=dict(Counter(p.rule for p in placements)),
            owner_routed=self.owners,
        )


def simulate(
    leads: Sequence[SimLead],
    current: RoutingConfig,
    new: RoutingConfig,
    *,
    examples: int = 10,
    accounts: AccountBook | None = None,
    progress: Progress | None = None,
    every: int = 5000,
) -> SimulationReport:
    """Route ``leads`` (in the order given) under ``current`` and ``new``; compare the outcomes.

    With ``accounts``, a lead whose account owner is in a rule set's roster goes
    to that owner first (every rep counts as available), as the worker would.
    ``progress(done, total)`` is called after every ``every`` leads and once at the end.
    """
    total = len(leads)
    cur, nxt = _Side(current, accounts), _Side(new, accounts)
    moves: list[Move] = []
    moved = rule_changes = 0
    for done, lead in enumerate(leads, start=1):
        before, after = cur.route(lead), nxt.route(lead)
        if before.team != after.team:
            moved += 1
            if len(moves) < examples:
                moves.append(Move(lead, before, after))
        elif before.rule != after.rule:
            rule_changes += 1
        if progress is not None and every > 0 and done % every == 0 and done < total:
            progress(done, total)
    if progress is not None:
        progress(total, total)
    reps: dict[str, Rep] = {}
    for config in (current, new):
        for rep in config.reps:
            reps.setdefault(rep.rep_id, rep)
    return SimulationReport(
        leads=total,
        current=cur.result(),
        new=nxt.result(),
        moves=moved,
        rule_changes=rule_changes,
        examples=tuple(moves),
        span=span_of(leads),
        reps=reps,
        rosters=(current.teams, new.teams),
    )
