"""Suggestions ops can check: a new sales-ready bar and rule points, each backtested on the logged crossings.

Pure logic over :class:`LoggedCrossing` (built by router/cli/suggest.py from the
worker's crossing records, their routing decisions and the leads' lifecycle steps).

What the backtest can and cannot tell.  The log holds the leads that *crossed*,
with their score at the crossing and each scoring rule's share of it (decayed
points, router/worker/learning.py).  Under a candidate a logged crossing is
*kept* when its trigger did not depend on the score (a hand-raiser, the model's
probability, account intent) or when its re-computed score
``score + sum(share_r * (new_points_r / old_points_r - 1))`` still reaches the
candidate's bar for the clause that fired (the bar is read from the trigger
label, ``engagement>=100 & ...``, and scaled by ``new threshold / old
threshold``).  So a *raised* bar or *lowered* points can be measured exactly on
the crossings we saw (which would have been missed, which won deals with them);
a lowered bar or raised points would add leads that never crossed and are not in
the log: such changes are not proposed here (``leadrouter backtest`` replays the
event archive for them).  A dropped crossing counts as not alerted at all,
though the lead might have crossed later.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from scoring.errors import ScoringError

_BAR: Final = re.compile(r"engagement\s*>=\s*([0-9]+(?:\.[0-9]+)?)")


@dataclass(frozen=True, slots=True)
class LoggedCrossing:
    lead_id: str
    ts: float
    score: float
    trigger: str
    rules: Mapping[str, float]  # rule -> its decayed points at the crossing
    team: str = ""  # "" when it was not routed (held, review)
    accepted: bool = False
    won: bool = False
    closed: bool = False  # won, lost or rejected: the outcome is known

    @property
    def bar(self) -> float | None:
        """The engagement bar of the clause that fired; None when the trigger did not depend on the score."""
        m = _BAR.search(self.trigger)
        return float(m.group(1)) if m else None


@dataclass(frozen=True, slots=True)
class Candidate:
    threshold: float
    points: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # rule -> (old, new)

    def label(self, base: float) -> str:
        parts = [f"threshold {_num(base)} -> {_num(self.threshold)}"] if self.threshold != base else []
        parts += [f"{r} points {_num(o)} -> {_num(n)}" for r, (o, n) in sorted(self.points.items())]
        return ", ".join(parts) or "current file"


@dataclass(frozen=True, slots=True)
class Backtest:
    mqls: int
    days: float
    accepted: int
    won: int
    won_total: int  # won deals among all logged crossings
    load: Mapping[str, int]

    @property
    def mqls_per_day(self) -> float:
        return self.mqls / self.days if self.days > 0 else float(self.mqls)

    @property
    def accepted_per_mql(self) -> float:
        return self.accepted / self.mqls if self.mqls else 0.0

    @property
    def won_per_mql(self) -> float:
        return self.won / self.mqls if self.mqls else 0.0

    @property
    def won_missed(self) -> int:
        return self.won_total - self.won


def rescored(c: LoggedCrossing, points: Mapping[str, tuple[float, float]]) -> float:
    s = c.score
    for rule, (old, new) in points.items():
        share = c.rules.get(rule, 0.0)
        if share and old:
            s += share * (new / old - 1.0)
    return s


def kept(c: LoggedCrossing, candidate: Candidate, base_threshold: float) -> bool:
    bar = c.bar
    if bar is None:
        return True
    return rescored(c, candidate.points) >= bar * candidate.threshold / base_threshold - 1e-9


def backtest(crossings: Sequence[LoggedCrossing], candidate: Candidate, base_threshold: float) -> Backtest:
    if crossings:
        span = (max(c.ts for c in crossings) - min(c.ts for c in crossings)) / 86400.0
    else:
        span = 0.0
    days = max(span, 1.0)
    keep = [c for c in crossings if kept(c, candidate, base_threshold)]
    load: dict[str, int] = {}
    for c in keep:
        load[c.team or "(not routed)"] = load.get(c.team or "(not routed)", 0) + 1
    return Backtest(len(keep), days, sum(c.accepted for c in keep), sum(c.won for c in keep),
                    sum(c.won for c in crossings), dict(sorted(load.items())))


@dataclass(frozen=True, slots=True)
class RuleFinding:
    rule: str
    points: float
    crossings: int  # logged crossings the rule contributed to
    won_rate: float  # won per such crossing
    overall: float  # won per logged crossing
    proposal: float | None  # new points, or None: unchanged
    note: str


@dataclass(frozen=True, slots=True)
class Suggestion:
    base: Candidate
    threshold: Candidate
    rules: tuple[RuleFinding, ...]
    combined: Candidate
    results: Mapping[str, Backtest]  # candidate label -> its backtest


def suggest(crossings: Sequence[LoggedCrossing], *, threshold: float, points: Mapping[str, float],
            max_missed: float = 0.05, min_support: int = 20, weak: float = 0.7) -> Suggestion:
    """Propose a raised threshold and lowered points of weak rules, each with its backtest.

    Threshold: the highest of ``threshold x 1.0, 1.1 ... 2.0`` that loses at most ``max_missed`` of the
    logged won deals, if it raises won per MQL.  A rule is weak when the crossings it contributed to
    (at least ``min_support``) won at under ``weak`` x the overall rate; its points are halved (positive
    rules only).  Each change is backtested alone and all together.
    """
    base = Candidate(threshold)
    results: dict[str, Backtest] = {}
    now = backtest(crossings, base, threshold)
    results[base.label(threshold)] = now
    allowed = math.floor(max_missed * now.won_total + 1e-9)
    best = base
    best_bt = now
    for step in range(1, 11):
        cand = Candidate(_round(threshold * (1 + step / 10)))
        bt = backtest(crossings, cand, threshold)
        if bt.won_missed <= allowed and bt.mqls and bt.won_per_mql > best_bt.won_per_mql:
            best, best_bt = cand, bt
    if best is not base:
        results[best.label(threshold)] = best_bt
    closed = [c for c in crossings if c.closed]
    overall = sum(c.won for c in closed) / len(closed) if closed else 0.0
    findings: list[RuleFinding] = []
    for rule, pts in sorted(points.items()):
        mine = [c for c in closed if c.rules.get(rule, 0.0) > 0]
        if len(mine) < min_support or overall == 0.0:
            findings.append(RuleFinding(rule, pts, len(mine), 0.0, overall, None,
                                        f"too few closed crossings ({len(mine)} < {min_support}) to judge"))
            continue
        rate = sum(c.won for c in mine) / len(mine)
        if pts > 0 and rate < weak * overall:
            new = _round(pts / 2)
            cand = Candidate(best.threshold, {rule: (pts, new)})
            results[cand.label(threshold)] = backtest(crossings, cand, threshold)
            findings.append(RuleFinding(rule, pts, len(mine), rate, overall, new,
                                        f"its crossings won {rate:.1%} vs {overall:.1%} overall: halve its points"))
        elif rate > overall / weak:
            findings.append(RuleFinding(rule, pts, len(mine), rate, overall, None,
                                        f"its crossings won {rate:.1%} vs {overall:.1%} overall: a strong signal; "
                                        "raising it adds leads the log never saw, check with 'leadrouter backtest'"))
        else:
            findings.append(RuleFinding(rule, pts, len(mine), rate, overall, None,
                                        f"its crossings won {rate:.1%} vs {overall:.1%} overall: keep"))
    changes = {f.rule: (f.points, f.proposal) for f in findings if f.proposal is not None}
    combined = Candidate(best.threshold, changes)
    results[combined.label(threshold)] = backtest(crossings, combined, threshold)
    return Suggestion(base, best, tuple(findings), combined, results)


def _round(x: float) -> float:
    return float(round(x)) if abs(x) >= 10 else round(x, 1)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# ---------------------------------------------------------------- the candidate file


class SuggestFileError(ScoringError, ValueError):
    """The scoring file's text could not be edited (a key the edit needs is not where it should be)."""


def edit_scoring_text(text: str, candidate: Candidate, base_threshold: float) -> str:
    """The scoring file with the candidate's threshold, scaled ``engagement_at_least`` bars and rule points.

    Line-level edits, so comments and layout stay and ``diff`` shows only the changed numbers.
    """
    k = candidate.threshold / base_threshold
    out, n = re.subn(r"(?m)^(threshold:[ \t]*)([0-9]+(?:\.[0-9]+)?)", lambda m: m.group(1) + _num(
        candidate.threshold), text, count=1)
    if n != 1:
        raise SuggestFileError("no top-level 'threshold:' line to change")
    if k != 1.0:
        out = re.sub(r"(engagement_at_least:[ \t]*)([0-9]+(?:\.[0-9]+)?)",
                     lambda m: m.group(1) + _num(_round(float(m.group(2)) * k)), out)
    for rule, (_, new) in candidate.points.items():
        pattern = re.compile(rf"(?ms)^(\s*-\s+name:\s*{re.escape(rule)}\s*$.*?^\s+points:[ \t]*)(-?[0-9]+(?:\.[0-9]+)?)")
        replacement = _num(new)

        def put(m: re.Match[str], value: str = replacement) -> str:
            return m.group(1) + value

        out, n = pattern.subn(put, out, count=1)
        if n != 1:
            raise SuggestFileError(f"rule {rule!r} has no 'points:' line to change")
    return out
