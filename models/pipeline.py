"""What the worker passes between its steps: plans for Redis and what applying them returned.

The worker's pipeline builds :class:`EventPlan` and :class:`AccountPlan` (pure),
:meth:`router.storage.store.RedisStore.apply_with_accounts` carries them out and
answers with :class:`ApplyResult` and :class:`AccountResult`; the distribution
step hands the store one :class:`RepSlot` per rep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from models.events import Event
from models.lead import Reason
from models.score import FitGrade, RuleHit

ApplyStatus = Literal["scored", "fired", "resume", "duplicate", "moved", "forgotten", "ping"]
"""What applying an event did to its lead (router/storage/lua/apply_event.lua): ``scored`` (points
added, or none), ``fired`` (it crossed the sales-ready rule now), ``resume`` (an earlier crossing
whose routing did not finish), ``duplicate`` (seen before), ``ping`` (a page ping: only the
visit's time on site changed), ``moved`` (the profile was merged into
another: apply again to ``moved_to``), ``forgotten`` (the lead was erased)."""

AccountStatus = Literal["scored", "fired", "resume", "duplicate"]
"""What rolling an event up to an account did (router/storage/lua/account_event.lua); as
:data:`ApplyStatus`, ``fired`` meaning the account's intent crossed its threshold."""


@dataclass(frozen=True, slots=True)
class EventPlan:
    """What one event does to one lead, decided before touching Redis."""

    event: Event
    lead_id: str
    reasons: tuple[Reason, ...]
    points: float
    hand_raiser: bool
    fields: Mapping[str, str] = field(default_factory=dict)
    # Cap-aware hits (scoring.score_event_hits); without them the reasons count uncapped.
    hits: tuple[RuleHit, ...] = ()
    # The fit grade when this event changed what it is based on.
    grade: FitGrade | None = None
    # Whether the fields come from a verified source (an SDK call with a write key, a form from the
    # lead's own browser): only then may they replace what the lead said before.  ``field_source``
    # labels them in the lead's field history, e.g. "form (unverified)".
    verified: bool = True
    field_source: str = ""

    def applied_hits(self) -> tuple[RuleHit, ...]:
        """The hits the lead step applies: the cap-aware ones, else one per reason, else the bare points."""
        hits = self.hits or tuple(RuleHit(reason=r) for r in self.reasons)
        if not hits and self.points:
            ev = self.event
            hits = (RuleHit(reason=Reason(rule="points", points=self.points, event_id=ev.event_id,
                                          event_type=ev.type.value, ts=ev.ts)),)
        return hits


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """Roll event ``event_id`` (worth ``points`` to ``lead_id``) up to an account."""

    key_id: str
    event_id: str
    ts: float
    points: float
    lead_id: str
    role: str
    known: bool
    name: str = ""
    domain: str = ""


@dataclass(frozen=True, slots=True)
class AccountResult:
    key_id: str
    status: AccountStatus
    intent: float = 0.0
    people: int = 0
    roles: int = 0
    top: str = ""
    crossing: int = 0
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    status: ApplyStatus
    before: float = 0.0
    after: float = 0.0
    points: float = 0.0  # granted after caps
    recycled: bool = False
    crossing: int = 0
    trigger: str = ""
    moved_to: str = ""
    lead: Mapping[str, str] = field(default_factory=dict)
    reasons: tuple[Reason, ...] = ()
    recent: tuple[Mapping[str, Any], ...] = ()
    # When a sales-ready, unaccepted lead's score decays to the recycle level (epoch s); None: not armed.
    recycle_at: float | None = None

    @property
    def needs_routing(self) -> bool:
        return self.status in ("fired", "resume")


def summarise(event: Event) -> dict[str, Any]:
    """The timeline entry kept for an event (what alerts show as activity)."""
    out: dict[str, Any] = {"type": event.type.value, "ts": event.ts, "event_id": event.event_id}
    for name in ("url", "title", "form_id", "campaign"):
        value = getattr(event, name)
        if value:
            out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class RepSlot:
    """One rep as :meth:`router.storage.store.RedisStore.distribute` sees it: weight, caps and clock-based eligibility."""

    rep_id: str
    weight: int = 1
    capacity_day: int | None = None
    capacity_30d: int | None = None
    day_start: float = 0.0  # the rep's local midnight (epoch s): capacity_day counts from here
    unavailable: str = ""  # why the clock says no ('' = available)
    excluded: bool = False  # rejected the lead or already held this crossing
    sla_base: float = 0.0  # when the SLA clock starts if this rep gets it (their next working moment)
