"""What scoring hands on to the rest: the rules an event hit and a lead's fit grade.

Data shapes only; :mod:`scoring.caps` and :mod:`scoring.icp` compute them (and
re-export them, so ``from scoring import RuleHit, FitGrade`` keeps working).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.lead import Reason

UNGRADED = "?"
"""The fit letter of a lead too little is known about to grade."""


@dataclass(frozen=True, slots=True)
class RuleHit:
    """One rule an event matched, with what the cap logic needs to know about that rule.

    ``reason.points`` is what the rule asks for (after the machine discount);
    ``cap_per_day`` is the rule's daily cap or ``None``; ``once`` is its
    ``once_per_lead``.
    """

    reason: Reason
    cap_per_day: float | None = None
    once: bool = False

    @property
    def rule(self) -> str:
        return self.reason.rule

    @property
    def points(self) -> float:
        return self.reason.points

    def to_json_obj(self) -> dict[str, Any]:
        """``{"rule", "points"[, "cap"][, "once"]}``: what the Lua cap step reads for this hit."""
        obj: dict[str, Any] = {"rule": self.reason.rule, "points": self.reason.points}
        if self.cap_per_day is not None:
            obj["cap"] = self.cap_per_day
        if self.once:
            obj["once"] = True
        return obj


@dataclass(frozen=True, slots=True, kw_only=True)
class FitGrade:
    """How well a lead fits the profile (see :func:`scoring.fit_grade`).

    ``letter``: ``A``-``D``, or ``"?"`` when less than ``min_known`` of the
    weight is known.  ``points``: the normalised fit, ``100 * raw / possible``
    over the known criteria.  ``reasons``: one line per scored criterion (and
    per unreadable value).  ``missing``: criteria left out for lack of data,
    in :data:`scoring.icp.CRITERIA` order.
    """

    letter: str
    points: float
    reasons: tuple[str, ...]
    missing: tuple[str, ...]
    raw: float = 0.0
    possible: float = 0.0
    known_share: float = 0.0

    @property
    def graded(self) -> bool:
        return self.letter != UNGRADED
