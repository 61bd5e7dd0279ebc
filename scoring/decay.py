"""Exact continuous exponential decay of a lead score.

This is the reference math; the Redis Lua script mirrors it line for line, so
keep the two in step.  A score is stored as ``(value, asof)``: ``value`` is the
score at epoch second ``asof``.  Its value at any ``t >= asof`` is::

    value * 2 ** (-(t - asof) / half_life_s)

Nothing is stepped or bucketed, so reading after ten half-lives gives exactly
``value / 1024`` (up to float rounding).

``add_points`` folds one event's points in without losing exactness, and the
result does not depend on the order the events arrive in: the stored pair
always equals ``(sum(points_i * 2 ** (-(asof - at_i) / h)), max(at_i))``.
Scores are not clamped at zero: negative rules (careers page) can push them
below, and clamping would make the result depend on arrival order.

A fresh score is ``(0.0, 0.0)``; ``asof == 0`` means "no score yet".
"""

from __future__ import annotations

import math

from scoring.errors import DecayError

NO_SCORE: tuple[float, float] = (0.0, 0.0)


def decay_factor(dt: float, half_life_s: float) -> float:
    """``2 ** (-dt / half_life_s)``: the share of a score left after ``dt`` seconds.

    ``dt <= 0`` gives ``1.0``: decay never inflates a score.  Raises
    :class:`DecayError` for a half-life that is not a finite number > 0, or a
    NaN ``dt``.
    """
    if not (half_life_s > 0 and math.isfinite(half_life_s)):
        msg = f"half_life_s must be a finite number of seconds > 0, got {half_life_s!r}; check half_life_days in the scoring config"
        raise DecayError(msg)
    if dt <= 0:
        return 1.0
    if math.isnan(dt):
        msg = "decay_factor dt is NaN; pass finite timestamps (epoch seconds)"
        raise DecayError(msg)
    return float(2.0 ** (-dt / half_life_s))


def score_at(value: float, asof: float, t: float, half_life_s: float) -> float:
    """The stored score ``(value, asof)`` read at time ``t``.

    For ``t < asof`` (a clock behind the newest event) the score as of
    ``asof`` is returned unchanged: reading never inflates a score by
    "un-decaying" it into the past.
    """
    return value * decay_factor(t - asof, half_life_s)


def add_points(
    value: float, asof: float, points: float, at: float, half_life_s: float
) -> tuple[float, float]:
    """Add ``points`` earned at time ``at`` to the score ``(value, asof)``; returns the new pair.

    * no score yet (``asof <= 0``): ``(value + points, at)``; ``value`` is 0 for a fresh score.
    * ``at >= asof``: the old value decays to ``at``, then the points are added: ``asof' = at``.
    * ``at < asof`` (an event arriving late): the points are added already
      decayed by ``asof - at`` and ``asof`` stays, exactly as if the event had
      arrived in order.
    """
    if not at > 0:
        msg = f"add_points at must be positive epoch seconds, got {at!r}; use the event's ts"
        raise DecayError(msg)
    if asof <= 0:
        return value + points, at
    if at >= asof:
        return value * decay_factor(at - asof, half_life_s) + points, at
    return value + points * decay_factor(asof - at, half_life_s), asof
