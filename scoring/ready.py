"""When a lead is sales-ready: a list of clauses, any one of which is enough.

``scoring.yaml``::

    sales_ready:
      any:
        - {engagement_at_least: 100, grade_in: [A, B]}
        - {probability_at_least: 0.6}
        - {hand_raiser: true}
      recycle_below: 30

A **clause holds when every condition it has holds**; the **rule holds when
any clause holds**.  Clauses are tried in file order and the first that holds
names the trigger.  Conditions:

* ``engagement_at_least: N`` -- the decayed engagement score is ``>= N``.
* ``grade_in: [A, B]``       -- the fit grade is one of these letters.  An
  ungraded lead (``"?"``) or one without a grade never satisfies it.
* ``probability_at_least: p`` -- the model's conversion probability is
  ``>= p``.  No probability (``None``/NaN) never satisfies it.
* ``hand_raiser: true``      -- this event came from a hand-raiser form.

Without a ``sales_ready`` section the rule is ``engagement >= threshold`` or a
hand-raiser, exactly what older files meant.

``recycle_below`` (optional): a sales-ready lead whose engagement decays below
it is reported as recycled (:func:`should_recycle`).

``reengage`` (optional, :class:`Reengage`): when a lead that crossed before
may cross again (a *re-engagement*)::

    reengage:
      hand_raiser: [nurture, sal, sql, opportunity, won, lost]
      score: {nurture: 0, lost: 30}     # or a list, with score_after_days for all
      cooldown_hours: 24

Without it only a lead back in nurture (rejected or recycled) crosses again,
on a hand-raiser or a score crossing, at any time: what older files meant.

The Lua script evaluates the same clauses from :func:`ready_clauses_json`; the
evaluation rule is written out in :func:`is_sales_ready`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from scoring.errors import ScoringConfigError

GRADE_LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
"""The letters a ``grade_in`` list may hold (``"?"``, ungraded, never qualifies)."""

CLAUSE_JSON_KEYS: tuple[str, ...] = ("min_score", "grades", "min_p", "hand_raiser", "label")


def fmt_number(x: float) -> str:
    """``100`` for 100.0, ``0.6`` for 0.6: the shortest text that reads back as ``x``."""
    if math.isfinite(x) and x == int(x) and abs(x) < 2**53:
        return str(int(x))
    return repr(float(x))


def _json_number(x: float) -> int | float:
    return int(x) if math.isfinite(x) and x == int(x) and abs(x) < 2**53 else float(x)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadyClause:
    """One way to be sales-ready; holds when every condition it sets holds.

    ``min_score`` (engagement ``>=``), ``grades`` (fit letter in; ``()`` means
    no grade condition), ``min_p`` (probability ``>=``), ``hand_raiser``
    (``True`` requires a hand-raiser event; ``False`` means no condition).
    ``line`` is where the clause is in the file (not compared).
    """

    min_score: float | None = None
    grades: tuple[str, ...] = ()
    min_p: float | None = None
    hand_raiser: bool = False
    line: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.min_score is None and not self.grades and self.min_p is None and not self.hand_raiser:
            msg = "ReadyClause needs at least one condition (min_score, grades, min_p or hand_raiser)"
            raise ScoringConfigError(msg)
        if self.min_score is not None and not math.isfinite(self.min_score):
            msg = f"ReadyClause min_score must be finite, got {self.min_score!r}"
            raise ScoringConfigError(msg)
        bad = [g for g in self.grades if g not in GRADE_LETTERS]
        if bad:
            msg = f"ReadyClause grades must be letters from {', '.join(GRADE_LETTERS)}, got {bad!r}"
            raise ScoringConfigError(msg)
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            msg = f"ReadyClause min_p must be a probability from 0 to 1, got {self.min_p!r}"
            raise ScoringConfigError(msg)

    @property
    def label(self) -> str:
        """A short text naming the clause, e.g. ``engagement>=100 & grade in A,B``.

        Parts always come in this order: engagement, grade, probability, hand-raiser.
        """
        parts: list[str] = []
        if self.min_score is not None:
            parts.append(f"engagement>={fmt_number(self.min_score)}")
        if self.grades:
            parts.append(f"grade in {','.join(self.grades)}")
        if self.min_p is not None:
            parts.append(f"probability>={fmt_number(self.min_p)}")
        if self.hand_raiser:
            parts.append("hand-raiser")
        return " & ".join(parts)

    def holds(self, score: float, grade: str | None, probability: float | None, hand_raiser: bool) -> bool:
        """Whether every condition this clause sets holds (see :func:`is_sales_ready`)."""
        if self.min_score is not None and not score >= self.min_score:
            return False
        if self.grades and (grade is None or grade not in self.grades):
            return False
        if self.min_p is not None and (
            probability is None or math.isnan(probability) or not probability >= self.min_p
        ):
            return False
        return not (self.hand_raiser and not hand_raiser)

    def to_json_obj(self) -> dict[str, Any]:
        """The clause as the Lua script reads it; keys are present only when the condition is set."""
        obj: dict[str, Any] = {}
        if self.min_score is not None:
            obj["min_score"] = _json_number(self.min_score)
        if self.grades:
            obj["grades"] = list(self.grades)
        if self.min_p is not None:
            obj["min_p"] = _json_number(self.min_p)
        if self.hand_raiser:
            obj["hand_raiser"] = True
        obj["label"] = self.label
        return obj


REENGAGE_STAGES: tuple[str, ...] = ("nurture", "sal", "sql", "opportunity", "won", "lost")
"""The stages a lead that crossed before may cross again from (see :class:`Reengage`)."""

HELD_STAGES: tuple[str, ...] = ("sal", "sql", "opportunity")
"""Stages in which a rep holds the lead: a re-engagement notifies that rep instead of routing it again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reengage:
    """When a lead that has crossed before may cross again: a **re-engagement**.

    * ``hand_raiser`` -- stages from which a hand-raiser (a hand-raiser clause
      holding on this event) re-fires, whenever it happens.
    * ``score`` -- ``(stage, after_s)`` pairs: from these stages any other
      clause (engagement, grade, probability) re-fires, only when it *crosses*
      (it did not hold just before this event and holds now) and only
      ``after_s`` seconds after the lead's last crossing or last outcome
      (reject, won, lost, recycled), whichever is later.
    * ``cooldown_s`` -- no re-fire within this long of the lead's last
      crossing unless an outcome was recorded since (so a lead a rep holds
      is not re-alerted on every event; a lost lead asking again is).

    A lead in ``mql`` (an open, unaccepted assignment) never re-fires: its SLA
    reminds and reassigns.  In a held stage (sal, sql, opportunity) the owner
    is notified; from nurture, won and lost the lead is routed again, to its
    owner first when that rep is not out of office.
    """

    hand_raiser: tuple[str, ...] = ("nurture",)
    score: tuple[tuple[str, float], ...] = (("nurture", 0.0),)
    cooldown_s: float = 0.0

    def __post_init__(self) -> None:
        bad = [s for s in (*self.hand_raiser, *(st for st, _ in self.score)) if s not in REENGAGE_STAGES]
        if bad:
            msg = f"Reengage stages must be from {', '.join(REENGAGE_STAGES)}, got {bad!r}"
            raise ScoringConfigError(msg)
        for what, value in (("cooldown_s", self.cooldown_s), *((f"score after_s of {st}", a) for st, a in self.score)):
            if not math.isfinite(value) or value < 0:
                msg = f"Reengage {what} must be a finite number >= 0, got {value!r}"
                raise ScoringConfigError(msg)

    def score_after_s(self, stage: str) -> float | None:
        """How long after the last crossing or outcome a score crossing from ``stage`` re-fires; None: never."""
        return next((after for st, after in self.score if st == stage), None)

    def to_json_obj(self) -> dict[str, Any]:
        """What the Lua script reads: ``hs`` {stage: true}, ``ss`` {stage: after seconds}, ``cd`` seconds."""
        return {
            "hs": {s: True for s in self.hand_raiser},
            "ss": {s: _json_number(after) for s, after in self.score},
            "cd": _json_number(self.cooldown_s),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SalesReady:
    """The sales-ready rule: ``clauses`` (any one holds), the optional recycle level and re-engagement rules.

    ``reengage`` None means the default :class:`Reengage` (only nurture re-fires).
    """

    clauses: tuple[ReadyClause, ...]
    recycle_below: float | None = None
    reengage: Reengage | None = None

    @property
    def reengage_rules(self) -> Reengage:
        """The re-engagement rules in force: the declared ones or the default."""
        return self.reengage if self.reengage is not None else Reengage()

    def __post_init__(self) -> None:
        if not self.clauses:
            msg = "SalesReady needs at least one clause"
            raise ScoringConfigError(msg)
        if self.recycle_below is not None and not math.isfinite(self.recycle_below):
            msg = f"SalesReady recycle_below must be finite, got {self.recycle_below!r}"
            raise ScoringConfigError(msg)

    @classmethod
    def default(cls, threshold: float) -> SalesReady:
        """What a file without ``sales_ready`` means: engagement >= threshold, or a hand-raiser."""
        return cls(clauses=(ReadyClause(min_score=threshold), ReadyClause(hand_raiser=True)))


def is_sales_ready(
    clauses: SalesReady | Sequence[ReadyClause],
    score: float,
    grade: str | None,
    probability: float | None,
    hand_raiser: bool,
) -> str | None:
    """The label of the first clause that holds, or ``None`` when the lead is not sales-ready.

    The exact rule (the Lua script mirrors it), for each clause in order:

    1. ``min_score`` set: needs ``score >= min_score``.
    2. ``grades`` set: needs ``grade`` to be one of them; ``None`` or ``"?"`` fails.
    3. ``min_p`` set: needs ``probability`` present, not NaN, and ``>= min_p``.
    4. ``hand_raiser`` true: needs ``hand_raiser`` true.

    The first clause whose set conditions all pass wins; its label is returned.
    """
    items = clauses.clauses if isinstance(clauses, SalesReady) else clauses
    for clause in items:
        if clause.holds(score, grade, probability, hand_raiser):
            return clause.label
    return None


def should_recycle(ready: SalesReady, score: float) -> bool:
    """Whether a sales-ready lead at engagement ``score`` has decayed below ``recycle_below``.

    Always ``False`` when the config sets no ``recycle_below``.
    """
    return ready.recycle_below is not None and score < ready.recycle_below


class HasReady(Protocol):
    """Anything carrying a sales-ready rule, e.g. a :class:`scoring.ScoringConfig` (its ``ready``)."""

    @property
    def ready(self) -> SalesReady: ...


def ready_clauses_json(config: HasReady | SalesReady) -> str:
    """The sales-ready clauses as compact JSON for the Lua script.

    A list, in file order, of objects with these optional keys::

        min_score    number        engagement score must be >= it
        grades       [letters]     fit grade must be one of them (never "?")
        min_p        number 0..1   probability must be present and >= it
        hand_raiser  true          the event must be a hand-raiser
        label        text          not a condition: the trigger text to report

    e.g. ``[{"min_score":100,"grades":["A","B"],"label":"engagement>=100 & grade in A,B"},
    {"min_p":0.6,"label":"probability>=0.6"},{"hand_raiser":true,"label":"hand-raiser"}]``.
    A clause holds when all its condition keys hold; the rule holds when any
    clause does (see :func:`is_sales_ready`).  Whole numbers are written
    without a decimal point.
    """
    ready = config if isinstance(config, SalesReady) else config.ready
    return json.dumps(
        [c.to_json_obj() for c in ready.clauses], separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def reengage_json(config: HasReady | SalesReady) -> str:
    """The re-engagement rules in force as compact JSON for the Lua script (see :meth:`Reengage.to_json_obj`)."""
    ready = config if isinstance(config, SalesReady) else config.ready
    return json.dumps(ready.reengage_rules.to_json_obj(), separators=(",", ":"), allow_nan=False)


def clauses_from_json(text: str) -> tuple[ReadyClause, ...]:
    """Read :func:`ready_clauses_json` output back (``label`` is ignored: it is derived).

    Raises :class:`ScoringConfigError` on anything :func:`ready_clauses_json`
    would not have written.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        msg = f"sales-ready clauses are not valid JSON: {exc}"
        raise ScoringConfigError(msg) from None
    if not isinstance(data, list):
        msg = f"sales-ready clauses must be a JSON list, got {type(data).__name__}"
        raise ScoringConfigError(msg)
    return tuple(_clause_from_obj(obj, i) for i, obj in enumerate(data, start=1))


def _clause_from_obj(obj: object, index: int) -> ReadyClause:
    if not isinstance(obj, Mapping):
        msg = f"sales-ready clause #{index} must be a JSON object, got {type(obj).__name__}"
        raise ScoringConfigError(msg)
    unknown = sorted(set(obj) - set(CLAUSE_JSON_KEYS))
    if unknown:
        msg = f"sales-ready clause #{index} has unknown keys {unknown}; valid keys: {', '.join(CLAUSE_JSON_KEYS)}"
        raise ScoringConfigError(msg)
    grades = obj.get("grades", [])
    if not isinstance(grades, list) or not all(isinstance(g, str) for g in grades):
        msg = f"sales-ready clause #{index} 'grades' must be a list of letters, got {grades!r}"
        raise ScoringConfigError(msg)
    hand = obj.get("hand_raiser", False)
    if not isinstance(hand, bool):
        msg = f"sales-ready clause #{index} 'hand_raiser' must be true, got {hand!r}"
        raise ScoringConfigError(msg)
    return ReadyClause(
        min_score=_opt_number(obj, "min_score", index),
        grades=tuple(grades),
        min_p=_opt_number(obj, "min_p", index),
        hand_raiser=hand,
    )


def _opt_number(obj: Mapping[str, object], key: str, index: int) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"sales-ready clause #{index} {key!r} must be a number, got {value!r}"
        raise ScoringConfigError(msg)
    return float(value)


def labels(clauses: Iterable[ReadyClause]) -> tuple[str, ...]:
    """Every clause's label, in order (handy for logs and the admin view)."""
    return tuple(c.label for c in clauses)
