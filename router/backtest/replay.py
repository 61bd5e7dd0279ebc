"""``leadrouter backtest``: archived events replayed through the real worker, under current and new files.

Each side (current and new scoring, ICP, routing and accounts files) replays
the same archived events, in time order, through the worker's own
:class:`router.worker.pipeline.Pipeline` on an empty Redis: identity merges,
the Lua scoring step with caps and exact decay, fit grades, sales-ready
clauses, account intent, and routing by each team's own strategy, capacity,
working hours, out-of-office dates and after-hours policy.  The clock is the
events' own time, so 3 a.m. on a Sunday in the archive is 3 a.m. on a Sunday
in the replay.  Nothing is sent: alerts are recorded instead.

Not replayed: SLA steps (reminders, reassignment, escalation) and admin
overrides (the private Redis starts empty); leads held because everyone was
out of office are counted as held.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from models import ApplyResult, Assignment, Event, EventPlan
from router.errors import RouterError
from router.storage import redis as redis_door
from router.storage.live_config import LiveFile
from router.storage.redis import AnyRedis
from router.storage.store import RedisStore
from router.worker.pipeline import Pipeline
from rules import RoutingConfig
from rules.accounts import OWNER_RULE, AccountBook
from rules.simulation import working_days
from scoring import IcpConfig, ScoringConfig

T = TypeVar("T")
Progress = Callable[[int], None]
# A batch never spans more than this much event time (its clock is its last event's time).  Routing is
# not affected: each crossing is routed at the time of the event that made it.
MAX_BATCH_SPAN_S = 900.0
_ROUTE_AT: ContextVar[float | None] = ContextVar("backtest_route_at", default=None)


class BacktestError(RouterError):
    """The backtest could not run (no events, a Redis that is not empty, ...)."""


@dataclass(frozen=True, slots=True)
class Side:
    """One set of files to replay under."""

    name: str  # "current" | "new"
    scoring: ScoringConfig
    icp: IcpConfig
    routing: RoutingConfig
    accounts: AccountBook | None = None
    labels: Mapping[str, str] = field(default_factory=dict)  # file kind -> where it came from


@dataclass(frozen=True, slots=True)
class Crossing:
    """A lead became sales-ready (an MQL) and where it went."""

    lead_id: str
    email: str
    ts: float
    trigger: str
    team: str
    rep_id: str
    rep_name: str
    placement: str  # available | next_available | on_call | fallback_team | owner | held

    @property
    def held(self) -> bool:
        return self.placement == "held"


@dataclass
class SideResult:
    side: Side
    crossings: list[Crossing] = field(default_factory=list)
    events: int = 0
    invalid: int = 0
    duplicates: int = 0
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def first_crossings(self) -> dict[str, Crossing]:
        """Each lead's first crossing in the window."""
        out: dict[str, Crossing] = {}
        for c in self.crossings:
            out.setdefault(c.lead_id, c)
        return out


def _static(value: T, label: str) -> LiveFile[T]:
    return LiveFile(Path(label), lambda _p: value, label, value)


class _RecordingPipeline(Pipeline):
    """The worker's pipeline, recording every crossing it routes (or holds) instead of alerting."""

    sink: list[Crossing]
    # One by one, in event order: concurrent routes make the turn order of a team vary between
    # replays, which would show as leads "moved" between reps when nothing changed.
    route_concurrency = 1

    async def route(self, plan: EventPlan, result: ApplyResult, config: ScoringConfig) -> Assignment | None:
        # Routed at the time of the event that made the crossing (each route runs in its own task,
        # so the context variable is this crossing's alone), whatever the batch's clock.
        token = _ROUTE_AT.set(plan.event.ts)
        try:
            assignment = await super().route(plan, result, config)
        finally:
            _ROUTE_AT.reset(token)
        lead = result.lead
        email = str(lead.get("email", ""))
        if assignment is None:
            self.sink.append(Crossing(plan.lead_id, email, self.clock(), result.trigger or "", "", "", "", "held"))
        else:
            rep = assignment.rep
            placement = assignment.placement or "available"
            if assignment.decision.rule == OWNER_RULE:
                placement = "owner"
            self.sink.append(Crossing(plan.lead_id, email, self.clock(), result.trigger or "", rep.team,
                                      rep.rep_id, rep.name, placement))
        return assignment


async def replay_side(redis: AnyRedis, side: Side, events: Iterable[Event], *, batch_size: int = 500,
                      progress: Progress | None = None, every: int = 20_000) -> SideResult:
    """Replay ``events`` (time order) under ``side`` on ``redis``, which is emptied first (FLUSHDB; every primary of a cluster)."""
    await redis_door.flush(redis)
    store = RedisStore(redis)
    clock = [0.0]

    async def no_alert(key: str, value: bytes) -> None:
        return None

    pipeline = _RecordingPipeline(
        store, _static(side.scoring, f"{side.name}-scoring"), _static(side.routing, f"{side.name}-routing"),
        no_alert, clock=lambda: _ROUTE_AT.get() or clock[0], icp=_static(side.icp, f"{side.name}-icp"),
        accounts=_static(side.accounts, f"{side.name}-accounts") if side.accounts is not None else None)
    pipeline.sink = []
    result = SideResult(side)
    batch: list[bytes] = []
    first = last = 0.0
    started = time.perf_counter()
    next_report = every

    async def flush() -> None:
        clock[0] = last
        report = await pipeline.process(batch)
        result.invalid += report.invalid
        result.duplicates += report.duplicates
        result.events += len(batch)
        batch.clear()

    for event in events:
        if batch and (len(batch) >= batch_size or event.ts - first > MAX_BATCH_SPAN_S):
            await flush()
            if progress is not None and result.events >= next_report:
                progress(result.events)
                next_report = result.events + every
        if not batch:
            first = event.ts
        last = max(last, event.ts)
        batch.append(orjson.dumps(event.to_dict()))
    if batch:
        await flush()
    if progress is not None:
        progress(result.events)
    result.seconds = time.perf_counter() - started
    result.crossings = list(pipeline.sink)
    return result


# --------------------------------------------------------------------------- outcomes


def read_outcomes(path: Path) -> dict[str, str]:
    """Lead id or email -> the furthest outcome (accepted < won; lost counts as accepted) from JSONL or CSV.

    Columns/keys: ``email`` or ``lead_id``, and ``outcome`` (accepted, sql, opportunity, won, lost).
    """
    import csv

    rank = {"accepted": 1, "sql": 1, "opportunity": 1, "lost": 1, "won": 2}
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read outcomes {path}: {exc.strerror}; check the --outcomes path"
        raise BacktestError(msg) from None
    rows: list[Mapping[str, Any]]
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = list(csv.DictReader(text.splitlines()))
    for i, row in enumerate(rows, start=1):
        key = str(row.get("email") or row.get("lead_id") or "").strip().lower()
        outcome = str(row.get("outcome") or row.get("action") or "").strip().lower()
        if not key or outcome not in rank:
            msg = (f"{path} row {i}: needs email (or lead_id) and outcome (one of {', '.join(rank)}), got {row!r}")
            raise BacktestError(msg)
        if rank[outcome] > rank.get(out.get(key, ""), 0):
            out[key] = "won" if outcome == "won" else "accepted"
    return out


# --------------------------------------------------------------------------- the report


@dataclass
class Comparison:
    current: SideResult
    new: SideResult
    start: datetime
    end: datetime
    outcomes: Mapping[str, str] | None = None

    def days(self) -> list[str]:
        found = {_day(c.ts) for r in (self.current, self.new) for c in r.crossings}
        return sorted(found)

    def per_day(self, result: SideResult) -> Counter[str]:
        return Counter(_day(c.ts) for c in result.crossings)

    def working_days(self) -> int:
        first = self.start.astimezone(UTC).date()
        last = (self.end.astimezone(UTC).date() if self.end.timestamp() % 86400 else
                date.fromordinal(self.end.astimezone(UTC).date().toordinal() - 1))
        return max(1, working_days(first, last))

    def moves(self) -> tuple[list[tuple[Crossing, Crossing]], int, int]:
        """(leads routed to another rep, MQL only under current, only under new)."""
        a, b = self.current.first_crossings(), self.new.first_crossings()
        moved = [(a[k], b[k]) for k in a.keys() & b.keys() if (a[k].team, a[k].rep_id) != (b[k].team, b[k].rep_id)]
        moved.sort(key=lambda p: p[0].ts)
        return moved, len(a.keys() - b.keys()), len(b.keys() - a.keys())

    def conversion(self, result: SideResult) -> tuple[float, float] | None:
        """(accepted per MQL, won per MQL) when outcomes are known."""
        if not self.outcomes:
            return None
        leads = result.first_crossings().values()
        if not leads:
            return (0.0, 0.0)
        got = [self.outcomes.get(c.email.lower()) or self.outcomes.get(c.lead_id.lower()) for c in leads]
        n = len(got)
        return (sum(1 for g in got if g) / n, sum(1 for g in got if g == "won") / n)


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _delta(a: float, b: float) -> str:
    d = b - a
    return f"{d:+,.0f}" if d else "="


def format_comparison(cmp: Comparison, *, examples: int = 10, reps: int | None = None) -> list[str]:
    cur, new = cmp.current, cmp.new
    out: list[str] = []
    for side in (cur.side, new.side):
        labels = ", ".join(f"{k} {v}" for k, v in side.labels.items())
        out.append(f"{side.name + ':':<9}{labels}")
    out.append(f"window:  {cmp.start.isoformat()} to {cmp.end.isoformat()} ({cmp.working_days()} working days); "
               f"{cur.events:,} events replayed per side")
    out.append("")
    w = 34
    out.append(f"{'':<{w}}{'current':>10}{'new':>10}{'change':>10}")

    def row(label: str, a: float, b: float, fmt: str = ",.0f") -> None:
        out.append(f"{label:<{w}}{a:>10{fmt}}{b:>10{fmt}}{_delta(a, b) if fmt == ',.0f' else '':>10}")

    row("MQLs (crossings)", len(cur.crossings), len(new.crossings))
    row("  leads", len(cur.first_crossings()), len(new.first_crossings()))
    row("  hand-raisers", sum(c.trigger == "hand_raiser" for c in cur.crossings),
        sum(c.trigger == "hand_raiser" for c in new.crossings))
    triggers = sorted({c.trigger for r in (cur, new) for c in r.crossings} - {"hand_raiser"})
    for trig in triggers:
        row(f"  {trig or 'threshold'}"[:w], sum(c.trigger == trig for c in cur.crossings),
            sum(c.trigger == trig for c in new.crossings))
    row("  held (everyone away)", sum(c.held for c in cur.crossings), sum(c.held for c in new.crossings))
    conv_a, conv_b = cmp.conversion(cur), cmp.conversion(new)
    if conv_a is not None and conv_b is not None:
        row("accepted per MQL", conv_a[0], conv_b[0], ".2f")
        row("won per MQL", conv_a[1], conv_b[1], ".2f")
    out.append("")
    out.append("MQLs per day (UTC)")
    per_a, per_b = cmp.per_day(cur), cmp.per_day(new)
    for day in cmp.days():
        row(f"  {day}", per_a[day], per_b[day])
    out.append("")
    out.append("per team")
    teams = sorted({c.team for r in (cur, new) for c in r.crossings if c.team})
    for team in teams:
        row(f"  {team}", sum(c.team == team for c in cur.crossings), sum(c.team == team for c in new.crossings))
    out.append("")
    days = cmp.working_days()
    out.append(f"per rep: leads, and load per working day ({days} days)")
    rep_a = Counter((c.rep_id, c.rep_name, c.team) for c in cur.crossings if c.rep_id)
    rep_b = Counter((c.rep_id, c.rep_name, c.team) for c in new.crossings if c.rep_id)
    names = {k[0]: f"{k[1]} [{k[2]}]" for k in (*rep_a, *rep_b)}
    count_a = Counter({k[0]: v for k, v in rep_a.items()})
    count_b = Counter({k[0]: v for k, v in rep_b.items()})
    ranked = sorted(names, key=lambda r: (-(count_a[r] + count_b[r]), r))
    for rep_id in ranked[:reps] if reps else ranked:
        a, b = count_a[rep_id], count_b[rep_id]
        out.append(f"  {names[rep_id][:w - 2]:<{w - 2}}{a:>10,}{b:>10,}{_delta(a, b):>10}"
                   f"   {a / days:>5.2f} -> {b / days:.2f} per day")
    moved, only_a, only_b = cmp.moves()
    out.append("")
    out.append(f"moved leads: {len(moved):,} MQL under both go to another rep "
               f"({sum(x.team != y.team for x, y in moved):,} to another team); "
               f"{only_a:,} MQL only under current, {only_b:,} only under new")
    for was, now in moved[:examples]:
        out.append(f"  {was.email or was.lead_id:<34} {was.team}/{was.rep_id} -> {now.team}/{now.rep_id}")
    if len(moved) > examples:
        out.append(f"  ... {len(moved) - examples:,} more (--examples N to list more)")
    out.append("")
    out.append(f"replay speed: current {cur.events_per_s:,.0f} events/s ({cur.seconds:.1f} s), "
               f"new {new.events_per_s:,.0f} events/s ({new.seconds:.1f} s)")
    return out


def write_comparison_chart(cmp: Comparison, path: Path) -> Path:
    """A PNG: MQLs per day (current vs new) above leads per rep (current vs new)."""
    import logging

    from router.backtest.simulate import ChartError

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        msg = f"matplotlib is not installed ({exc}); `pip install matplotlib` or pass --no-chart"
        raise ChartError(msg) from None
    days = cmp.days()
    per_a, per_b = cmp.per_day(cmp.current), cmp.per_day(cmp.new)
    rep_a = Counter(c.rep_id for c in cmp.current.crossings if c.rep_id)
    rep_b = Counter(c.rep_id for c in cmp.new.crossings if c.rep_id)
    reps = sorted(rep_a.keys() | rep_b.keys(), key=lambda r: (-(rep_a[r] + rep_b[r]), r))
    fig, (ax_day, ax_rep) = plt.subplots(2, 1, figsize=(max(12.0, 0.42 * len(reps) + 2), 10))
    width = 0.4
    xs = range(len(days))
    ax_day.bar([x - width / 2 for x in xs], [per_a[d] for d in days], width, label="current")
    ax_day.bar([x + width / 2 for x in xs], [per_b[d] for d in days], width, label="new")
    ax_day.set_xticks(list(xs), days, rotation=45, ha="right", fontsize=8)
    ax_day.set_ylabel("MQLs")
    ax_day.set_title(f"MQLs per day: {len(cmp.current.crossings):,} current, {len(cmp.new.crossings):,} new")
    ax_day.legend()
    xr = range(len(reps))
    ax_rep.bar([x - width / 2 for x in xr], [rep_a[r] for r in reps], width, label="current")
    ax_rep.bar([x + width / 2 for x in xr], [rep_b[r] for r in reps], width, label="new")
    ax_rep.set_xticks(list(xr), reps, rotation=75, ha="right", fontsize=7)
    ax_rep.set_ylabel("leads")
    ax_rep.set_title(f"Leads per rep, each team's own strategy ({cmp.working_days()} working days)")
    ax_rep.legend()
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as exc:
        msg = f"cannot write the chart {path}: {exc.strerror}; pass --chart with a writable path"
        raise ChartError(msg) from None
    finally:
        plt.close(fig)
    return path


def sides_differ(a: Side, b: Side) -> Sequence[str]:
    """Which files differ between the sides (by content version)."""
    out = []
    if a.scoring.version != b.scoring.version:
        out.append("scoring")
    if a.icp.version != b.icp.version:
        out.append("icp")
    if a.routing.content_hash != b.routing.content_hash:
        out.append("rules")
    if (a.accounts.version if a.accounts else None) != (b.accounts.version if b.accounts else None):
        out.append("accounts")
    return out
