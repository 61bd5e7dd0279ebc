"""The exact decay math the Redis Lua script mirrors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring import NO_SCORE, DecayError, add_points, decay_factor, score_at

DAY = 86_400.0
BASE = 1_700_000_000.0  # a realistic epoch second

half_lives = st.floats(min_value=60.0, max_value=365 * DAY, allow_nan=False, allow_infinity=False)
values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
points_st = st.floats(min_value=-500.0, max_value=500.0, allow_nan=False, allow_infinity=False)
offsets = st.floats(min_value=0.0, max_value=400 * DAY, allow_nan=False, allow_infinity=False)
events_st = st.lists(st.tuples(points_st, offsets), min_size=1, max_size=25)


def apply_all(events: list[tuple[float, float]], h: float) -> tuple[float, float]:
    value, asof = NO_SCORE
    for points, at in events:
        value, asof = add_points(value, asof, points, at, h)
    return value, asof


def closed_form(events: list[tuple[float, float]], t: float, h: float) -> float:
    return math.fsum(p * 2.0 ** (-(t - at) / h) for p, at in events)


def scale(events: list[tuple[float, float]], t: float, h: float) -> float:
    """The size of the sum's terms: the natural float tolerance when points cancel."""
    return math.fsum(abs(p) * 2.0 ** (-(t - at) / h) for p, at in events)


# --------------------------------------------------------------------------- examples


def test_one_half_life_halves() -> None:
    assert decay_factor(30 * DAY, 30 * DAY) == 0.5
    assert score_at(100.0, BASE, BASE + 30 * DAY, 30 * DAY) == 50.0


def test_ten_half_lives_is_exactly_1_over_1024() -> None:
    assert decay_factor(300 * DAY, 30 * DAY) == 1 / 1024
    assert score_at(1024.0, BASE, BASE + 300 * DAY, 30 * DAY) == 1.0


def test_no_elapsed_time_and_past_reads_do_not_change_the_score() -> None:
    assert decay_factor(0.0, DAY) == 1.0
    assert decay_factor(-5 * DAY, DAY) == 1.0
    assert score_at(42.0, BASE, BASE, DAY) == 42.0
    assert score_at(42.0, BASE, BASE - 10 * DAY, DAY) == 42.0


def test_fresh_score_takes_the_event_time() -> None:
    assert add_points(0.0, 0.0, 10.0, BASE, DAY) == (10.0, BASE)
    assert add_points(*NO_SCORE, -10.0, BASE, DAY) == (-10.0, BASE)


def test_in_order_event_decays_then_adds() -> None:
    assert add_points(100.0, BASE, 10.0, BASE + 30 * DAY, 30 * DAY) == (60.0, BASE + 30 * DAY)


def test_late_event_is_added_already_decayed() -> None:
    value, asof = add_points(100.0, BASE, 10.0, BASE - 30 * DAY, 30 * DAY)
    assert (value, asof) == (105.0, BASE)


def test_bad_arguments_raise() -> None:
    for h in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(DecayError, match="half_life_s"):
            decay_factor(1.0, h)
    with pytest.raises(DecayError, match="NaN"):
        decay_factor(math.nan, DAY)
    with pytest.raises(DecayError, match="epoch seconds"):
        add_points(0.0, 0.0, 1.0, 0.0, DAY)


# --------------------------------------------------------------------------- properties


@given(h=half_lives, n=st.integers(min_value=0, max_value=60))
def test_whole_half_lives_are_exact_powers_of_two(h: float, n: int) -> None:
    assert math.isclose(decay_factor(n * h, h), 2.0**-n, rel_tol=1e-12)


@given(value=values, h=half_lives)
def test_ten_half_lives_property(value: float, h: float) -> None:
    # BASE + 10 * h is rounded to a float near 1.7e9 (ulp 2.4e-7 s); that error in the
    # elapsed time shifts the result by up to ln 2 * ulp / h relative, more than 1e-12
    # when h is a minute.  Allow exactly that much on top of the math's own error.
    t = BASE + 10 * h
    rel = 1e-12 + math.log(2) * math.ulp(t) / h
    assert math.isclose(score_at(value, BASE, t, h), value / 1024, rel_tol=rel, abs_tol=1e-300)


@given(value=values, h=half_lives, a=offsets, b=offsets)
def test_reading_twice_equals_reading_once(value: float, h: float, a: float, b: float) -> None:
    once = score_at(value, BASE, BASE + a + b, h)
    mid = score_at(value, BASE, BASE + a, h)
    twice = score_at(mid, BASE + a, BASE + a + b, h)
    assert math.isclose(once, twice, rel_tol=1e-12, abs_tol=1e-300)


@given(value=values, h=half_lives, back=offsets)
def test_reading_in_the_past_never_inflates(value: float, h: float, back: float) -> None:
    assert score_at(value, BASE, BASE - back, h) == value


@given(events=events_st, h=half_lives, delay=offsets)
def test_add_points_equals_closed_form(events: list[tuple[float, float]], h: float, delay: float) -> None:
    timed = [(p, BASE + off) for p, off in events]
    value, asof = apply_all(timed, h)
    assert asof == max(at for _, at in timed)
    t = asof + delay
    got = score_at(value, asof, t, h)
    want = closed_form(timed, t, h)
    assert abs(got - want) <= 1e-9 * scale(timed, t, h) + 1e-300


@given(data=st.data(), events=events_st, h=half_lives, delay=offsets)
def test_add_points_is_independent_of_arrival_order(
    data: st.DataObject, events: list[tuple[float, float]], h: float, delay: float
) -> None:
    timed = [(p, BASE + off) for p, off in events]
    shuffled = data.draw(st.permutations(timed))
    v1, asof1 = apply_all(timed, h)
    v2, asof2 = apply_all(shuffled, h)
    assert asof1 == asof2
    t = asof1 + delay
    r1, r2 = score_at(v1, asof1, t, h), score_at(v2, asof2, t, h)
    assert abs(r1 - r2) <= 1e-9 * scale(timed, t, h) + 1e-300


@given(events=st.lists(st.tuples(st.floats(1.0, 500.0), offsets), min_size=1, max_size=25), h=half_lives)
def test_positive_points_order_independent_relative(events: list[tuple[float, float]], h: float) -> None:
    timed = [(p, BASE + off) for p, off in events]
    v1, asof1 = apply_all(timed, h)
    v2, asof2 = apply_all(list(reversed(sorted(timed, key=lambda e: e[1]))), h)
    t = asof1 + 7 * DAY
    assert math.isclose(score_at(v1, asof1, t, h), score_at(v2, asof2, t, h), rel_tol=1e-9, abs_tol=1e-300)
