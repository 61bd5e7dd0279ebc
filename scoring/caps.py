"""Engagement caps: how many points a rule, or a whole day, may add to one lead.

This is the reference implementation; the Redis Lua script mirrors
:func:`apply_caps_detailed` step for step, so keep the two in step.

Rule options in ``scoring.yaml``:

* ``cap_per_day: N``      -- this rule adds at most ``N`` points to one lead per UTC day.
* ``once_per_lead: true`` -- this rule counts only the first time it grants points to a lead.
* repeatable (default)    -- every match counts, up to the caps.

Top level ``daily_cap: N`` (optional): all positive points together add at
most ``N`` to one lead per UTC day.

The day is the UTC calendar day of the **event's** timestamp
(:func:`day_bucket`), so a replayed or late event is capped against the day it
happened, whatever the clock says when it is processed.

State the caller keeps per lead (Redis, see the Lua script):

* ``used``       -- per UTC day: rule name -> points that rule has granted
  today; only rules with ``cap_per_day`` are tracked.
* ``daily_used`` -- per UTC day: positive points granted today by all rules.
* ``fired``      -- for the lead's lifetime: names of ``once_per_lead``
  rules that have granted points.

The algorithm (:func:`apply_caps_detailed`), one hit at a time, in the order
given (rule order for one event)::

    for hit in hits:
        p = hit.points                                       # already machine-discounted
        if hit.once and hit.rule in fired:       g = 0       # counted before: nothing
        elif p <= 0:                             g = p       # negative/zero: never capped,
                                                             #   and uses no cap room
        else:
            g = p
            if hit.cap is not None:                          # 1. the rule's own cap
                g = min(g, max(0, hit.cap - used[hit.rule]))
            if daily_cap is not None:                        # 2. then the daily cap
                g = min(g, max(0, daily_cap - daily_used))
            if hit.cap is not None:
                used[hit.rule] = count_up(used[hit.rule], g, hit.cap)
            daily_used = count_up(daily_used, g, daily_cap)
        if hit.once and g != 0:          fired.add(hit.rule)
        grant g for hit

    count_up(u, g, cap) = u + g                       if cap is None
                        = max(u, min(cap, u + g))     otherwise

``count_up`` only stops float rounding from pushing a counter past its cap
(``used + (cap - used)`` can land one ulp above ``cap``); it never lowers a
counter that is already above (e.g. after a config lowered the cap).
``used[rule]`` is 0 when absent.  A ``once_per_lead`` rule is marked fired
only when it actually granted points, so a fully machine-discounted hit (0
points) does not use up the lead's one chance; a hit the caps cut to 0 does
not either.  Negative points always apply in full, never count toward any cap,
and never free cap room.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from models.lead import Reason
from models.score import RuleHit
from scoring.errors import ScoringError
from scoring.ready import fmt_number

if TYPE_CHECKING:
    from scoring.config import ScoringConfig


def _count_up(used: float, granted: float, cap: float | None) -> float:
    """``used + granted``, kept from overshooting ``cap`` by float rounding (never lowered)."""
    if cap is None:
        return used + granted
    return max(used, min(cap, used + granted))


def _show(x: float) -> str:
    """Points for a human: at most two decimals, ``4`` rather than ``4.0``."""
    return fmt_number(round(x, 2) + 0.0)


def day_bucket(ts: float) -> str:
    """The UTC calendar day of epoch second ``ts``, e.g. ``"2026-11-22"``: the key caps count under.

    Raises :class:`ScoringError` for a timestamp that is not a finite number.
    """
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        msg = f"day_bucket needs finite epoch seconds, got {ts!r}; pass the event's ts"
        raise ScoringError(msg)
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def hits_json(hits: Sequence[RuleHit]) -> str:
    """The hits as a compact JSON list of :meth:`RuleHit.to_json_obj`, in order, for the Lua script."""
    return json.dumps(
        [h.to_json_obj() for h in hits], separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


@dataclass(frozen=True, slots=True)
class CapResult:
    """What :func:`apply_caps_detailed` granted and the state to store afterwards.

    ``reasons`` line up one-to-one with the hits given (a hit cut to 0 still
    has its reason, with ``points == 0`` and a note in ``detail``; storage may
    skip those).  ``used``, ``daily_used`` and ``fired`` are the new values of
    the state passed in (full values, not increments).
    """

    reasons: tuple[Reason, ...]
    used: dict[str, float]
    daily_used: float
    fired: frozenset[str]
    granted: float = field(default=0.0)


def apply_caps(
    hits: Sequence[RuleHit],
    used: Mapping[str, float],
    daily_used: float,
    config: ScoringConfig,
    *,
    fired: Collection[str] = frozenset(),
) -> tuple[tuple[Reason, ...], dict[str, float]]:
    """The reasons with the points actually granted, and the new per-rule ``used`` for today.

    A thin form of :func:`apply_caps_detailed` (which also returns the new
    ``daily_used`` and ``fired``); the algorithm is in the module docstring.
    """
    result = apply_caps_detailed(hits, used, daily_used, config, fired=fired)
    return result.reasons, result.used


def apply_caps_detailed(
    hits: Sequence[RuleHit],
    used: Mapping[str, float],
    daily_used: float,
    config: ScoringConfig,
    *,
    fired: Collection[str] = frozenset(),
) -> CapResult:
    """Clamp ``hits`` by the caps given what the lead already used today; see the module docstring.

    ``used``, ``daily_used`` are for the UTC day of the hits; all hits must
    fall on one UTC day (raises :class:`ScoringError` otherwise).  ``fired``
    holds the ``once_per_lead`` rules that already granted points to this lead.
    Nothing passed in is modified.
    """
    days = {day_bucket(h.reason.ts) for h in hits}
    if len(days) > 1:
        msg = (
            f"apply_caps got hits from several UTC days {sorted(days)}; cap one event (or one day) at a time"
        )
        raise ScoringError(msg)
    daily_cap = config.daily_cap
    new_used = dict(used)
    day_total = float(daily_used)
    fired_now = set(fired)
    out: list[Reason] = []
    for hit in hits:
        rule, asked = hit.rule, hit.points
        notes: list[str] = []
        if hit.once and rule in fired_now:
            granted = 0.0
            notes.append("once per lead, already counted")
        elif asked <= 0:
            granted = asked
        else:
            granted = asked
            cap = hit.cap_per_day
            if cap is not None:
                room = max(0.0, cap - new_used.get(rule, 0.0))
                if granted > room:
                    granted = room
                    notes.append(f"{rule} cap {fmt_number(cap)}/day")
            if daily_cap is not None:
                room = max(0.0, daily_cap - day_total)
                if granted > room:
                    granted = room
                    notes.append(f"daily cap {fmt_number(daily_cap)}")
            if cap is not None:
                new_used[rule] = _count_up(new_used.get(rule, 0.0), granted, cap)
            day_total = _count_up(day_total, granted, daily_cap)
        if hit.once and granted != 0:
            fired_now.add(rule)
        reason = hit.reason
        if granted != asked or notes:
            detail = f"{reason.detail} ({'; '.join(notes)}: {_show(granted)} of {_show(asked)})"
            reason = replace(reason, points=granted, detail=detail.strip())
        out.append(reason)
    return CapResult(
        reasons=tuple(out),
        used=new_used,
        daily_used=day_total,
        fired=frozenset(fired_now),
        granted=math.fsum(r.points for r in out),
    )
