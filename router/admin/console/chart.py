"""A lead's score over time as an inline SVG chart: the decay curve between events, and each event that moved it.

The curve is rebuilt from what the store keeps about the lead (router/storage/store.py): its
reasons (one per rule an event matched, with the points granted after caps, the event's id,
type and time, merged profiles' included) and its history (a reject multiplies the score by
``score_after / score_before``), with the scorer's own decay (:mod:`scoring.decay`:
``add_points`` at each event, ``score_at`` in between), so at each event the chart shows the
score the store held right after it, and in between exactly the decayed value a read would give.

Reasons are capped (``keys.REASONS_KEPT``): when older ones were dropped, the points they left
are carried in as a starting value, solved so the curve ends on the stored score
(``(score, asof)`` on the lead hash) -- the chart never disagrees with the score the page shows.

No script and no style attribute (the console's CSP forbids both): presentation attributes only;
each marker has a ``<title>`` (the browser's tooltip) with the time, event type, points and rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models import Reason
from router.admin.console.html import h, when
from scoring.decay import add_points, decay_factor, score_at

WIDTH, HEIGHT = 720, 240
PAD_L, PAD_R, PAD_T, PAD_B = 44, 12, 12, 28
SAMPLES = 24  # points per gap between events on the drawn curve


@dataclass(frozen=True, slots=True)
class Step:
    """One thing that moved the score: an event's points, or a reject's cut."""

    ts: float
    kind: str  # "event" | "reject"
    points: float = 0.0  # event: the points granted
    factor: float = 1.0  # reject: the multiplier
    event_type: str = ""
    event_id: str = ""
    rules: tuple[str, ...] = ()
    before: float = 0.0  # the score just before and just after, filled in by :func:`score_curve`
    after: float = 0.0

    def label(self) -> str:
        if self.kind == "reject":
            return f"{when(self.ts)}: rejected, score x{self.factor:.2f} ({self.before:.1f} -> {self.after:.1f})"
        rules = ", ".join(self.rules)
        return (f"{when(self.ts)}: {self.event_type} {self.points:+.1f} points ({rules}); "
                f"score {self.before:.1f} -> {self.after:.1f}")


@dataclass(frozen=True, slots=True)
class ScoreCurve:
    steps: tuple[Step, ...]
    carried: float  # the score before the first step kept (from reasons no longer kept), 0 when complete
    start: float  # the time of the first step
    now: float
    half_life_s: float
    threshold: float

    def value_at(self, t: float) -> float:
        """The score at ``t`` (after any step at exactly ``t``), from the steps and the carried value."""
        value, asof = self.carried, self.start
        for s in self.steps:
            if s.ts > t:
                break
            value, asof = _apply(value, asof, s, self.half_life_s)
        return score_at(value, asof, t, self.half_life_s) if t >= asof else value

    @property
    def now_value(self) -> float:
        return self.value_at(self.now)


def _apply(value: float, asof: float, s: Step, hl: float) -> tuple[float, float]:
    if s.kind == "reject":
        return score_at(value, asof, s.ts, hl) * s.factor, max(asof, s.ts)
    return add_points(value, asof, s.points, s.ts, hl) if s.ts > 0 else (value + s.points, asof)


def steps_of(reasons: Sequence[Reason], history: Sequence[Mapping[str, Any]]) -> list[Step]:
    """The events (reasons grouped by event id; those that granted no points left out) and rejects, in time order."""
    events: dict[str, list[Reason]] = {}
    for r in reasons:
        events.setdefault(r.event_id, []).append(r)
    steps = []
    for eid, rs in events.items():
        pts = sum(r.points for r in rs)
        if pts == 0:
            continue
        steps.append(Step(ts=min(r.ts for r in rs), kind="event", points=pts, event_type=rs[0].event_type,
                          event_id=eid, rules=tuple(dict.fromkeys(r.rule for r in reversed(rs)))))
    for e in history:
        if e.get("action") != "reject":
            continue
        try:
            before, after, ts = float(e.get("score_before", 0)), float(e.get("score_after", 0)), float(e["ts"])
        except (KeyError, TypeError, ValueError):
            continue
        steps.append(Step(ts=ts, kind="reject", factor=after / before if before else 1.0))
    steps.sort(key=lambda s: (s.ts, s.kind != "event"))
    return steps


def score_curve(reasons: Sequence[Reason], history: Sequence[Mapping[str, Any]], *, stored: float, asof: float,
                now: float, half_life_s: float, threshold: float) -> ScoreCurve:
    """The lead's score over time, ending on its stored score (see the module docstring)."""
    steps = steps_of(reasons, history)
    if not steps:
        return ScoreCurve((), stored, asof or now, now, half_life_s, threshold)
    start = steps[0].ts
    end = max(asof, steps[-1].ts)
    # The curve is affine in the carried value: end = carried * gain + without; solve for the stored score.
    value, at, gain = 0.0, start, 1.0
    for s in steps:
        value, at = _apply(value, at, s, half_life_s)
        gain *= s.factor
    without = score_at(value, at, end, half_life_s)
    gain *= decay_factor(end - start, half_life_s)
    truth = score_at(stored, asof, end, half_life_s) if asof > 0 else stored
    carried = (truth - without) / gain if gain > 0 else 0.0
    if abs(carried) < 1e-9 * max(1.0, abs(truth)):
        carried = 0.0
    filled = []
    value, at = carried, start
    for s in steps:
        before = score_at(value, at, s.ts, half_life_s) if s.ts >= at else value
        value, at = _apply(value, at, s, half_life_s)
        after = score_at(value, at, s.ts, half_life_s) if s.ts >= at else value
        filled.append(Step(s.ts, s.kind, s.points, s.factor, s.event_type, s.event_id, s.rules, before, after))
    return ScoreCurve(tuple(filled), carried, start, max(now, end), half_life_s, threshold)


def render(curve: ScoreCurve) -> str:
    """The chart as inline SVG (or a line saying there is nothing to draw)."""
    if not curve.steps:
        return '<p class="muted" id="score-chart-empty">No scored events to chart yet.</p>'
    t0, t1 = curve.start, curve.now
    span = max(t1 - t0, 3600.0)
    t0 -= span * 0.03
    samples: list[tuple[float, float]] = []
    value, at = curve.carried, curve.start
    samples.append((t0, value))
    for i, s in enumerate(curve.steps):
        samples.append((s.ts, s.before))
        samples.append((s.ts, s.after))
        value, at = _apply(value, at, s, curve.half_life_s)
        nxt = curve.steps[i + 1].ts if i + 1 < len(curve.steps) else t1
        for k in range(1, SAMPLES + 1):
            t = s.ts + (nxt - s.ts) * k / SAMPLES
            samples.append((t, score_at(value, at, t, curve.half_life_s)))
    values = [v for _, v in samples] + [curve.threshold]
    lo, hi = min(0.0, *values), max(values) * 1.1 or 1.0
    w, hgt = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def x(t: float) -> float:
        return PAD_L + (t - t0) / (t1 - t0 or 1.0) * w

    def y(v: float) -> float:
        return PAD_T + (hi - v) / ((hi - lo) or 1.0) * hgt

    line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in samples)
    ticks = []
    for v in _ticks(lo, hi):
        ticks.append(f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e3e6eb"/>'
                     f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11" fill="#5a6272">'
                     f"{v:g}</text>")
    th = (f'<line id="chart-threshold" x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y(curve.threshold):.1f}" '
          f'y2="{y(curve.threshold):.1f}" stroke="#b35c00" stroke-dasharray="5 4"><title>sales-ready threshold '
          f"{curve.threshold:g}</title></line>")
    marks = []
    for s in curve.steps:
        color = "#b42318" if s.kind == "reject" or s.points < 0 else "#0a7a31"
        marks.append(f'<circle class="score-mark" cx="{x(s.ts):.1f}" cy="{y(s.after):.1f}" r="5" fill="{color}" '
                     f'stroke="#fff" stroke-width="1.5" data-ts="{s.ts!r}" data-score="{s.after!r}" '
                     f'data-kind="{h(s.kind)}" data-event-type="{h(s.event_type)}" data-points="{s.points!r}">'
                     f"<title>{h(s.label())}</title></circle>")
    axis = (f'<text x="{PAD_L}" y="{HEIGHT - 8}" font-size="11" fill="#5a6272">{h(when(curve.start))}</text>'
            f'<text x="{WIDTH - PAD_R}" y="{HEIGHT - 8}" font-size="11" fill="#5a6272" text-anchor="end">now '
            f"{curve.now_value:.1f}</text>")
    note = (f'<p class="muted">Older events no longer kept left {curve.carried:.1f} points when the first kept '
            "event came.</p>" if curve.carried else "")
    return (f'<svg id="score-chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
            f'aria-labelledby="score-chart-title" data-now="{curve.now!r}" data-now-score="{curve.now_value!r}">'
            f'<title id="score-chart-title">Score over time: {len(curve.steps)} events, now '
            f"{curve.now_value:.1f}</title>{''.join(ticks)}{th}"
            f'<polyline id="score-curve" points="{line}" fill="none" stroke="#1d4ed8" stroke-width="2"/>'
            f"{''.join(marks)}{axis}</svg>{note}")


def _ticks(lo: float, hi: float) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    step = 10 ** math.floor(math.log10(span / 4))
    for m in (1, 2, 5, 10):
        if span / (step * m) <= 6:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 6) for i in range(int((hi - first) / step) + 1)]
