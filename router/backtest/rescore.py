"""What-if scoring in pure Python: archived events re-scored under the running and an edited scoring or fit file.

``leadrouter backtest`` replays events through the worker's own pipeline, Lua
scoring step included, so it needs a private, empty Redis (it FLUSHes the
database it uses); the admin process must not start servers or write to the
live Redis to answer a console button.  This is the pure path the console's
Simulate uses for scoring and fit: the same scoring functions as the test
cases (:mod:`scoring`: rule hits, per-day and per-lead caps, exact decay, the
sales-ready clauses, the fit grade from the lead's fields), per lead and in
event time, with no Redis at all.

What it leaves out, compared with the backtest (say so where it is shown):
identity is resolved once over the whole window (an anonymous visitor's events
count for the email they identified with, even before they did); account intent
and the model's probability are not evaluated (a clause that needs a
probability does not hold); a lead counts once, at its first crossing
(recycling is not replayed).  Each lead that crosses on either side is placed
with the running routing rules (round robin per team, in crossing order, one
placement per lead for both sides), so the per-team and per-rep difference is
the difference in leads, not in turn order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from models import Event
from router.worker.pipeline import FIT_FIELDS, event_fields
from rules import RoutingConfig
from rules.simulation import SimLead, lead_facts, simulate
from scoring import (
    IcpConfig,
    ScoringConfig,
    add_points,
    apply_caps_detailed,
    day_bucket,
    fit_grade,
    is_hand_raiser,
    is_sales_ready,
    score_at,
    score_event_hits,
)

MAX_EVENTS = 300_000  # events one console simulation reads (the newest window first beyond that is cut)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A lead's first sales-ready moment under one scoring and fit."""

    lead: str
    ts: float
    clause: str
    score: float
    grade: str | None
    fields: Mapping[str, str]
    hand_raiser: bool = False


@dataclass
class _State:
    value: float = 0.0
    asof: float = 0.0
    day: str = ""
    used: dict[str, float] = field(default_factory=dict)
    daily_used: float = 0.0
    fired: frozenset[str] = frozenset()
    fields: dict[str, str] = field(default_factory=dict)
    grade: str | None = None


def lead_keys(events: Sequence[Event]) -> list[str]:
    """Each event's lead: its email, else the email its visitor or user id identified with in the window."""
    known: dict[str, str] = {}
    for e in events:
        if e.email:
            email = e.email.strip().lower()
            for alias in (e.visitor_id, e.user_id, e.previous_id):
                if alias:
                    known.setdefault(alias, email)
    out = []
    for e in events:
        if e.email:
            out.append(e.email.strip().lower())
            continue
        ids = [i for i in (e.visitor_id, e.user_id, e.previous_id) if i]
        out.append(next((known[i] for i in ids if i in known), f"visitor:{ids[0]}" if ids else f"event:{e.event_id}"))
    return out


def rescore(events: Sequence[Event], keys: Sequence[str], scoring: ScoringConfig, icp: IcpConfig
            ) -> dict[str, Crossing]:
    """Each lead's first crossing when ``events`` (time order) are scored under ``scoring`` and ``icp``."""
    states: dict[str, _State] = {}
    out: dict[str, Crossing] = {}
    half_life = scoring.half_life_s
    for event, key in zip(events, keys, strict=True):
        if key in out:
            continue
        st = states.setdefault(key, _State())
        fields = event_fields(event)
        if fields:
            st.fields.update(fields)
            if FIT_FIELDS.intersection(fields):
                st.grade = fit_grade(st.fields, icp).letter
        hits = score_event_hits(event, scoring)
        hand = False
        if hits:
            day = day_bucket(event.ts)
            if day != st.day:
                st.day, st.used, st.daily_used = day, {}, 0.0
            capped = apply_caps_detailed(hits, st.used, st.daily_used, scoring, fired=st.fired)
            st.used, st.daily_used, st.fired = dict(capped.used), capped.daily_used, frozenset(capped.fired)
            points = sum(r.points for r in capped.reasons)
            if points and event.ts > 0:
                st.value, st.asof = add_points(st.value, st.asof, points, event.ts, half_life)
            hand = is_hand_raiser(tuple(h.reason for h in hits))
        elif not fields:
            continue
        score = score_at(st.value, st.asof, event.ts, half_life) if st.asof > 0 else st.value
        clause = is_sales_ready(scoring.ready, score, st.grade, None, hand)
        if clause is not None:
            out[key] = Crossing(key, event.ts, clause, score, st.grade, dict(st.fields), hand)
    return out


@dataclass(frozen=True, slots=True)
class Changed:
    """A lead that crosses under one side only."""

    crossing: Crossing
    team: str
    rep_id: str

    @property
    def label(self) -> str:
        f = self.crossing.fields
        who = ", ".join(x for x in (f.get("company", ""), f.get("country", "")) if x)
        return f"{self.crossing.lead}" + (f" ({who})" if who else "")


@dataclass(frozen=True)
class RescoreReport:
    events: int
    leads: int
    first: float | None
    last: float | None
    running: Mapping[str, Crossing]
    edited: Mapping[str, Crossing]
    team_counts: tuple[Mapping[str, int], Mapping[str, int]]
    rep_counts: tuple[Mapping[str, int], Mapping[str, int]]
    rep_names: Mapping[str, str]
    newly: tuple[Changed, ...]
    no_longer: tuple[Changed, ...]
    newly_count: int
    no_longer_count: int

    def team_rows(self) -> list[tuple[str, int, int]]:
        a, b = self.team_counts
        return [(t, a.get(t, 0), b.get(t, 0)) for t in sorted(set(a) | set(b))]

    def rep_rows(self) -> list[tuple[str, str, int, int]]:
        """(rep id, name, running, edited), the largest change first."""
        a, b = self.rep_counts
        rows = [(r, self.rep_names.get(r, r), a.get(r, 0), b.get(r, 0)) for r in set(a) | set(b)]
        rows.sort(key=lambda x: (-abs(x[3] - x[2]), -x[3], x[0]))
        return rows


def compare(events: Iterable[Event], running: tuple[ScoringConfig, IcpConfig], edited: tuple[ScoringConfig, IcpConfig],
            routing: RoutingConfig, *, examples: int = 10) -> RescoreReport:
    """Re-score ``events`` under both sides; place every lead that crosses on either side with ``routing``."""
    ordered = sorted(events, key=lambda e: (e.ts, e.event_id))
    keys = lead_keys(ordered)
    before = rescore(ordered, keys, *running)
    after = rescore(ordered, keys, *edited)
    union = sorted(set(before) | set(after), key=lambda k: (min(c.ts for c in (before.get(k), after.get(k)) if c), k))
    sims = []
    for key in union:
        c = after.get(key) or before[key]
        raw: dict[str, object] = {**c.fields, "email": key if "@" in key else None, "score": c.score,
                                  "hand_raiser": c.hand_raiser}
        sims.append(SimLead(key, lead_facts(raw), c.ts))
    placed = simulate(sims, routing, routing, examples=0).current.placements
    where = {lead.lead_id: p for lead, p in zip(sims, placed, strict=True)}
    teams: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
    reps: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
    for side, crossings in enumerate((before, after)):
        for key in crossings:
            teams[side][where[key].team] += 1
            reps[side][where[key].rep_id] += 1
    newly = [k for k in union if k in after and k not in before]
    gone = [k for k in union if k in before and k not in after]
    stamps = [e.ts for e in ordered]
    return RescoreReport(
        events=len(ordered), leads=len(set(keys)), first=stamps[0] if stamps else None,
        last=stamps[-1] if stamps else None, running=before, edited=after,
        team_counts=(dict(teams[0]), dict(teams[1])), rep_counts=(dict(reps[0]), dict(reps[1])),
        rep_names={r.rep_id: r.name for r in routing.reps},
        newly=tuple(Changed(after[k], where[k].team, where[k].rep_id) for k in newly[:examples]),
        no_longer=tuple(Changed(before[k], where[k].team, where[k].rep_id) for k in gone[:examples]),
        newly_count=len(newly), no_longer_count=len(gone))


def day_text(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else "-"
