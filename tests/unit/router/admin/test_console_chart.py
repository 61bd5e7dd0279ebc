"""The score chart's curve (router/admin/console/chart.py): steps from reasons and rejects, the scorer's decay."""

from __future__ import annotations

import pytest

from models import Reason
from router.admin.console.chart import render, score_curve, steps_of
from scoring.decay import add_points, score_at

H = 10 * 86400.0  # half-life
T = 1_790_000_000.0


def r(event_id: str, ts: float, points: float, rule: str = "rule", event_type: str = "page_view") -> Reason:
    return Reason(rule=rule, points=points, event_id=event_id, event_type=event_type, ts=ts)


def test_reasons_of_one_event_are_one_step_and_events_that_granted_nothing_are_left_out() -> None:
    steps = steps_of([r("b", T + 10, 5.0, "webinar"), r("a", T, 2.0, "x"), r("a", T, 3.0, "y"), r("z", T + 5, 0.0)],
                     [{"action": "accept", "ts": T + 1}, {"action": "reject", "ts": T + 20, "score_before": 8.0,
                                                          "score_after": 4.0}])
    assert [(s.kind, s.ts, s.points, s.factor) for s in steps] == [
        ("event", T, 5.0, 1.0), ("event", T + 10, 5.0, 1.0), ("reject", T + 20, 0.0, 0.5)]
    assert steps[0].rules == ("y", "x")  # stored newest first (LPUSH); shown in the order they matched


def test_the_curve_follows_add_points_and_score_at_and_ends_on_the_stored_score() -> None:
    events = [(T, 40.0), (T + 3 * 86400, -10.0), (T + 8 * 86400, 25.0)]
    value, asof = 0.0, 0.0
    for ts, p in events:
        value, asof = add_points(value, asof, p, ts, H)
    curve = score_curve([r(f"e{i}", ts, p) for i, (ts, p) in enumerate(events)], [], stored=value, asof=asof,
                        now=T + 20 * 86400, half_life_s=H, threshold=50.0)
    assert curve.carried == 0.0
    assert curve.steps[1].before == pytest.approx(score_at(40.0, T, T + 3 * 86400, H))
    assert curve.now_value == pytest.approx(score_at(value, asof, T + 20 * 86400, H))
    assert curve.value_at(T - 1) == 0.0
    svg = render(curve)
    assert svg.count('class="score-mark"') == 3 and 'fill="#b42318"' in svg  # the penalty in red


def test_a_stored_score_from_events_no_longer_kept_is_carried_in() -> None:
    # 30 points at T are no longer among the reasons; 10 more at T + 5 days are.
    value, asof = add_points(*add_points(0.0, 0.0, 30.0, T, H), 10.0, T + 5 * 86400, H)
    curve = score_curve([r("kept", T + 5 * 86400, 10.0)], [], stored=value, asof=asof, now=T + 6 * 86400,
                        half_life_s=H, threshold=50.0)
    assert curve.carried == pytest.approx(score_at(30.0, T, T + 5 * 86400, H))
    assert curve.steps[0].after == pytest.approx(value)
    assert "Older events no longer kept" in render(curve)


def test_nothing_to_chart() -> None:
    curve = score_curve([], [], stored=0.0, asof=0.0, now=T, half_life_s=H, threshold=50.0)
    assert 'id="score-chart-empty"' in render(curve) and curve.now_value == 0.0
