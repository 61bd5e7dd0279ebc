"""Which rep inside a team gets a lead.

The team's ``strategy`` (rules/roster.py) decides the order: ``round_robin``
(default; one turn each in roster order), ``weighted`` (smooth weighted round
robin, nginx's algorithm, state in Redis) or ``load_balanced`` (fewest open
leads relative to ``capacity_30d``; ties rotate).  A rep is skipped when:

* they rejected this lead before, or already held this crossing (``exclude``);
* the clock says no: out of office, not a working day, outside working hours,
  all in the rep's own time zone (DST-aware, decided here in Python from the
  ``now`` the caller passes in, so tests freeze time);
* they are at ``capacity_day`` (assignments since their local midnight) or
  ``capacity_30d`` (assignments in the last 30 days).

**Nobody available** (e.g. a lead arriving at night or on a weekend): the lead
is never dropped or parked.  It goes to the next rep by the strategy among the
reps not excluded, with ``queued=True`` and ``reason='no_rep_available'``, so
the rep sees it first thing, the alert still goes out at once (a manager can
react), and the SLA clock starts when that rep's working hours begin, not at
3 a.m.  If every rep of the team is excluded (all rejected the lead) it goes to
the next rep anyway (``reason='all_reps_excluded'``) when routing a fresh
crossing; SLA reassignment instead gets ``None`` and escalates.

The pick, the capacity count and the SLA schedule are one Lua call on the
team's hash slot (router/storage/lua/distribute.lua), idempotent per assignment id: a
retried or redelivered crossing gets the same rep and counts once.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

from models import Rep, RepSlot
from router.storage.store import RedisStore
from rules import Strategy, Team
from rules.roster import SlaPolicy

log = logging.getLogger(__name__)

QUEUED_NO_REP: Final = "no_rep_available"
QUEUED_ALL_EXCLUDED: Final = "all_reps_excluded"

QueueReason = Literal["", "no_rep_available", "all_reps_excluded"]
"""Why a pick is queued: '' (it is not), no rep available now, or every rep excluded."""
DeadlineStep = Literal["reassign", "escalate"]
"""What a missed deadline does (see :func:`deadline_step`)."""
_QUEUE_REASONS: dict[str, QueueReason] = {"": "", QUEUED_NO_REP: QUEUED_NO_REP,
                                          QUEUED_ALL_EXCLUDED: QUEUED_ALL_EXCLUDED}
_DEADLINE_STEPS: dict[str, DeadlineStep] = {"reassign": "reassign", "escalate": "escalate"}


@dataclass(frozen=True, slots=True)
class Pick:
    """The rep one assignment went to, and how."""

    assignment_id: str
    team: str
    rep: Rep
    strategy: Strategy
    queued: bool = False
    reason: QueueReason = ""
    new: bool = True  # False: the pick was recorded by an earlier call (a retry)
    ts: float = 0.0
    skipped: Mapping[str, str] = field(default_factory=dict)  # rep_id -> why it was passed over
    remind_at: float | None = None
    deadline_at: float | None = None
    deadline_step: DeadlineStep | None = None  # None: no SLA

    def to_dict(self) -> dict[str, Any]:
        return {
            "assignment_id": self.assignment_id,
            "team": self.team,
            "rep_id": self.rep.rep_id,
            "strategy": self.strategy.value,
            "queued": self.queued,
            "reason": self.reason,
            "ts": self.ts,
            "skipped": dict(self.skipped),
            "remind_at": self.remind_at,
            "deadline_at": self.deadline_at,
            "deadline_step": self.deadline_step,
        }


def deadline_step(sla: SlaPolicy | None, reassigns: int) -> DeadlineStep | None:
    """What happens when an assignment that has been reassigned ``reassigns`` times misses its deadline.

    None: nothing (no SLA, or reassignments used up and no escalation); the
    lead stays with its holder, who still gets the reminder.
    """
    if sla is None:
        return None
    if reassigns < sla.max_reassignments:
        return "reassign"
    return "escalate" if sla.escalate_to_manager else None


def rep_slots(team: Team, now: datetime, exclude: Collection[str] = ()) -> list[RepSlot]:
    """Each rep of ``team`` with its weight, caps and what the clock says at ``now`` (pure)."""
    stamp = now.timestamp()
    out: list[RepSlot] = []
    for rep in team.reps:
        profile = team.profile(rep.rep_id)
        why = profile.unavailable(now)
        base = stamp if why is None else profile.next_available(now).timestamp()
        out.append(RepSlot(
            rep_id=rep.rep_id,
            weight=profile.weight,
            capacity_day=profile.capacity_day,
            capacity_30d=profile.capacity_30d,
            day_start=profile.day_start(now).timestamp(),
            unavailable=why.value if why is not None else "",
            excluded=rep.rep_id in exclude,
            sla_base=max(stamp, base),
        ))
    return out


async def _with_overrides(store: RedisStore, team: Team, slots: list[RepSlot], now: datetime) -> list[RepSlot]:
    """Reps set out of office through the admin API (until a date in their own zone) are unavailable."""
    overrides = await store.availability_overrides([s.rep_id for s in slots])
    out: list[RepSlot] = []
    for slot in slots:
        until = overrides.get(slot.rep_id)
        if until is not None and not slot.unavailable:
            today = team.profile(slot.rep_id).local(now).date().isoformat()
            if until == "" or until >= today:
                slot = replace(slot, unavailable="out_of_office")
        out.append(slot)
    return out


async def pick_rep(store: RedisStore, team: Team, assignment_id: str, lead_id: str, now: datetime, *,
                   exclude: Collection[str] = (), reassigns: int = 0, allow_excluded: bool = True) -> Pick | None:
    """Pick (or recall) the rep for ``assignment_id``; None only when every rep is excluded and
    ``allow_excluded`` is off.  Also schedules the assignment's SLA steps (team ``sla``)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    sla = team.sla
    step = deadline_step(sla, reassigns)
    remind = sla.remind_after.total_seconds() if sla is not None and sla.remind_after is not None else None
    deadline = sla.accept_within.total_seconds() if sla is not None and step is not None else None
    slots = await _with_overrides(store, team, rep_slots(team, now, exclude), now)
    raw = await store.distribute(
        team.name, team.strategy.value, assignment_id, lead_id, now.timestamp(), slots,
        remind_after_s=remind, deadline_after_s=deadline, deadline_step=step or "reassign",
        allow_excluded=allow_excluded,
    )
    if not raw.get("rep"):
        return None
    rep_id = str(raw["rep"])
    rep = team.rep(rep_id)
    if rep is None:  # the roster changed since this assignment was first picked
        log.warning("assignment %s was picked for %s, who is no longer in team %s; using %s",
                    assignment_id, rep_id, team.name, team.reps[0].rep_id)
        rep = team.reps[0]
    skipped = raw.get("skipped") or {}
    return Pick(
        assignment_id=assignment_id,
        team=team.name,
        rep=rep,
        strategy=Strategy(str(raw.get("strategy") or team.strategy.value)),
        queued=bool(raw.get("queued")),
        reason=_QUEUE_REASONS[str(raw.get("reason") or "")],
        new=raw.get("status") == "new",
        ts=float(raw.get("ts") or now.timestamp()),
        skipped={str(k): str(v) for k, v in skipped.items()} if isinstance(skipped, dict) else {},
        remind_at=_float_or_none(raw.get("remind_at")),
        deadline_at=_float_or_none(raw.get("deadline_at")),
        deadline_step=_DEADLINE_STEPS[str(raw["deadline_step"])] if raw.get("deadline_step") else None,
    )


async def assign_rep(store: RedisStore, team: Team, assignment_id: str, lead_id: str, crossing: int,
                     now: datetime) -> Pick:
    """The rep for a fresh crossing (what :meth:`router.worker.pipeline.Pipeline.route` calls).

    Excludes every rep who rejected the lead, picks by the team's strategy,
    and records the assignment in the lead's history, once per assignment id;
    safe to repeat (a retry gets the same rep and no second history entry).
    """
    rejected = await store.rejected_reps(lead_id)
    pick = await pick_rep(store, team, assignment_id, lead_id, now, exclude=rejected, allow_excluded=True)
    if pick is None:  # cannot happen with allow_excluded, but never drop a lead
        msg = f"team {team.name} has no rep to assign {assignment_id} to"
        raise RuntimeError(msg)
    await store.lead_sla("assigned", lead_id, assignment_id, crossing, now.timestamp(), rep_id=pick.rep.rep_id,
                         rep_name=pick.rep.name, team=team.name,
                         extra={"queued": pick.queued, "reason": pick.reason, "strategy": pick.strategy.value})
    if pick.queued and pick.new:
        log.warning("lead %s queued for %s [%s]: %s (%s)", lead_id, pick.rep.name, team.name, pick.reason,
                    ", ".join(f"{k}: {v}" for k, v in sorted(pick.skipped.items())))
    return pick


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


async def assign_owner(store: RedisStore, team: Team, rep: Rep, assignment_id: str, lead_id: str, crossing: int,
                       now: datetime) -> Pick | None:
    """Give a crossing to its account's owner when the owner can take it now.

    The owner must not have rejected the lead and must be inside their
    working hours and not out of office.  The pick goes through the same Lua
    step as any other (capacity counted, SLA scheduled, idempotent per
    assignment id) as a one-rep weighted team, which leaves the team's own
    rotation untouched.  None means: route by the rules instead.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if rep.rep_id in await store.rejected_reps(lead_id) or team.profile(rep.rep_id).unavailable(now) is not None:
        return None
    solo = replace(team, reps=(rep,), strategy=Strategy.WEIGHTED)
    pick = await pick_rep(store, solo, assignment_id, lead_id, now, allow_excluded=False)
    if pick is None:
        return None
    await store.lead_sla("assigned", lead_id, assignment_id, crossing, now.timestamp(), rep_id=rep.rep_id,
                         rep_name=rep.name, team=team.name,
                         extra={"queued": pick.queued, "reason": pick.reason or "account_owner",
                                "strategy": "account_owner"})
    return pick
