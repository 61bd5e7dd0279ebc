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

A rep **out of office** (in the roster, or set through the admin API) is never
given a lead by any path: not as a fallback, not as the account owner, not by
SLA reassignment.

**Nobody available** (e.g. a lead arriving at night or on a weekend, or every
rep at work is at capacity): the team's declared after-hours policy decides (rules/availability.py; the
``hand_raiser`` policy for hand-raisers when the team has one):

* ``next_available`` (default): the rep whose working hours start first gets
  it (ties: the strategy), ``queued=True``, ``reason='no_rep_available'``; the
  alert goes out at once and the SLA clock starts when that rep starts
  (``Pick.available_at``);
* ``on_call``: the on-call rep takes it now, at any hour (unless out of office:
  then next_available);
* ``fallback_team``: a rep of the fallback team available now, else its next
  available rep.

When every rep of the team is out of office the lead goes to the policy's
``team`` if it names one, else it is :class:`Held` (``team_out_of_office``):
nobody is assigned, the crossing stays open, and the lead is routed again on
its next event or by the SLA ticker once a rep is back (router/worker/sla.py).  If every rep of the team is excluded (all rejected the lead) it
goes to the earliest of them anyway (``reason='all_reps_excluded'``) when
routing a fresh crossing; SLA reassignment instead gets ``None`` and escalates.

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
from router.storage import keys
from router.storage.store import RedisStore
from rules import Strategy, Team
from rules.availability import REASON_TEAM_OOO, Outcome, Policy
from rules.roster import SlaPolicy, Unavailable

log = logging.getLogger(__name__)

QUEUED_NO_REP: Final = "no_rep_available"
QUEUED_ALL_EXCLUDED: Final = "all_reps_excluded"

QueueReason = Literal["", "no_rep_available", "all_reps_excluded", "team_out_of_office"]
"""Why a pick is queued: '' (it is not), no rep available now, every rep excluded, or the team is away."""
DeadlineStep = Literal["reassign", "escalate"]
"""What a missed deadline does (see :func:`deadline_step`)."""
_QUEUE_REASONS: dict[str, QueueReason] = {"": "", QUEUED_NO_REP: QUEUED_NO_REP,
                                          QUEUED_ALL_EXCLUDED: QUEUED_ALL_EXCLUDED,
                                          "team_out_of_office": "team_out_of_office"}
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
    available_at: float | None = None  # when the SLA clock starts: now, or the rep's next working moment
    outcome: str = Outcome.AVAILABLE.value  # available | next_available | on_call | fallback_team

    def to_dict(self) -> dict[str, Any]:
        return {
            "assignment_id": self.assignment_id,
            "team": self.team,
            "rep_id": self.rep.rep_id,
            "strategy": self.strategy.value,
            "queued": self.queued,
            "reason": self.reason,
            "outcome": self.outcome,
            "available_at": self.available_at,
            "ts": self.ts,
            "skipped": dict(self.skipped),
            "remind_at": self.remind_at,
            "deadline_at": self.deadline_at,
            "deadline_step": self.deadline_step,
        }


@dataclass(frozen=True, slots=True)
class Held:
    """Nobody may take the lead: every rep of the team (and of its fallback team) is out of office."""

    assignment_id: str
    team: str
    reason: str = REASON_TEAM_OOO
    skipped: Mapping[str, str] = field(default_factory=dict)
    outcome: str = Outcome.HELD.value

    def to_dict(self) -> dict[str, Any]:
        return {"assignment_id": self.assignment_id, "team": self.team, "reason": self.reason,
                "outcome": self.outcome, "skipped": dict(self.skipped)}


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


def rep_slots(team: Team, now: datetime, exclude: Collection[str] = (), *,
              any_hour: bool = False) -> list[RepSlot]:
    """Each rep of ``team`` with its weight, caps and what the clock says at ``now`` (pure).

    ``any_hour``: working hours and days do not count (an on-call rep); out of office still does.
    """
    stamp = now.timestamp()
    out: list[RepSlot] = []
    for rep in team.reps:
        profile = team.profile(rep.rep_id)
        why = profile.unavailable(now)
        if any_hour and why is not Unavailable.OUT_OF_OFFICE:
            why = None
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
        if until is not None and slot.unavailable != Unavailable.OUT_OF_OFFICE.value:
            today = team.profile(slot.rep_id).local(now).date().isoformat()
            if until == "" or until >= today:
                slot = replace(slot, unavailable="out_of_office")
        out.append(slot)
    return out


async def _distribute(store: RedisStore, team: Team, assignment_id: str, lead_id: str, now: datetime, *,
                      exclude: Collection[str] = (), reassigns: int = 0, allow_excluded: bool = True,
                      fallback: str = "earliest", outcome: str = "", any_hour: bool = False) -> Pick | str:
    """One distribute step on ``team``: the pick, or the reason nothing was recorded."""
    sla = team.sla
    step = deadline_step(sla, reassigns)
    remind = sla.remind_after.total_seconds() if sla is not None and sla.remind_after is not None else None
    deadline = sla.accept_within.total_seconds() if sla is not None and step is not None else None
    slots = await _with_overrides(store, team, rep_slots(team, now, exclude, any_hour=any_hour), now)
    raw = await store.distribute(
        team.name, team.strategy.value, assignment_id, lead_id, now.timestamp(), slots,
        remind_after_s=remind, deadline_after_s=deadline, deadline_step=step or "reassign",
        allow_excluded=allow_excluded, fallback=fallback, outcome=outcome,
    )
    if not raw.get("rep"):
        return str(raw.get("reason") or "all_reps_excluded")
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
        available_at=_float_or_none(raw.get("sla_base")),
        outcome=str(raw.get("outcome") or Outcome.AVAILABLE.value),
    )


async def pick_rep(store: RedisStore, team: Team, assignment_id: str, lead_id: str, now: datetime, *,
                   exclude: Collection[str] = (), reassigns: int = 0, allow_excluded: bool = True) -> Pick | None:
    """Pick (or recall) the rep for ``assignment_id`` inside ``team``; never a rep out of office.

    Nobody available: the rep whose hours start first, queued.  None when nothing
    could be recorded: every rep excluded (``allow_excluded`` off) or every rep who
    is not excluded is out of office.  Also schedules the assignment's SLA steps
    (team ``sla``).  SLA reassignment calls this (it stays inside the team).
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    got = await _distribute(store, team, assignment_id, lead_id, now, exclude=exclude, reassigns=reassigns,
                            allow_excluded=allow_excluded)
    return got if isinstance(got, Pick) else None


async def _recorded(store: RedisStore, team: Team, assignment_id: str) -> bool:
    return bool(await store.redis.exists(keys.team_pick(team.name, assignment_id)))


async def place(store: RedisStore, team: Team, assignment_id: str, lead_id: str, now: datetime, *,
                teams: Mapping[str, Team] | None = None, hand_raiser: bool = False,
                exclude: Collection[str] = ()) -> Pick | Held:
    """Where a fresh crossing goes: a rep available now, else the team's after-hours policy.

    ``teams`` (the routing config's) resolves a fallback team; without it a
    fallback team is not followed.  Idempotent per assignment id: a retry gets
    the pick recorded first, in whichever team it was recorded.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    policy = team.policy_for(hand_raiser)
    other = teams.get(policy.team) if teams is not None and policy.team else None
    if other is not None and other.name != team.name and await _recorded(store, other, assignment_id):
        recalled = await _distribute(store, other, assignment_id, lead_id, now, exclude=exclude,
                                     allow_excluded=False, outcome=Outcome.FALLBACK_TEAM.value)
        if isinstance(recalled, Pick):
            return recalled
    mode = "earliest" if policy.policy is Policy.NEXT_AVAILABLE else "none"
    got = await _distribute(store, team, assignment_id, lead_id, now, exclude=exclude, fallback=mode)
    if isinstance(got, Pick):
        return got
    reason = got
    if reason != REASON_TEAM_OOO:  # nobody available now, someone is not away: the policy decides
        on_call_rep = team.rep(policy.rep) if policy.policy is Policy.ON_CALL and policy.rep else None
        if on_call_rep is not None:
            solo = replace(team, reps=(on_call_rep,), strategy=Strategy.WEIGHTED)
            on_call = await _distribute(store, solo, assignment_id, lead_id, now, exclude=exclude,
                                        allow_excluded=False, fallback="none", outcome=Outcome.ON_CALL.value,
                                        any_hour=True)
            if isinstance(on_call, Pick):
                return on_call
        if policy.policy is Policy.FALLBACK_TEAM and other is not None:
            there = await _distribute(store, other, assignment_id, lead_id, now, allow_excluded=False,
                                      exclude=exclude, outcome=Outcome.FALLBACK_TEAM.value)
            if isinstance(there, Pick):
                return there
        again = await _distribute(store, team, assignment_id, lead_id, now, exclude=exclude)
        if isinstance(again, Pick):
            return again
        reason = again
    if other is not None and other.name != team.name:
        there = await _distribute(store, other, assignment_id, lead_id, now, exclude=exclude, allow_excluded=False,
                                  outcome=Outcome.FALLBACK_TEAM.value)
        if isinstance(there, Pick):
            return replace(there, reason=REASON_TEAM_OOO)
    skipped = {r.rep_id: "out_of_office" for r in team.reps if r.rep_id not in exclude}
    return Held(assignment_id=assignment_id, team=team.name, reason=reason, skipped=skipped)


def held_retry_at(team: Team, now: datetime, exclude: Collection[str] = ()) -> float:
    """When to look at a held lead again: the first rep's return, and at least every ``HELD_RETRY_S``."""
    stamp = now.timestamp()
    returns = [team.profile(r.rep_id).next_available(now).timestamp() for r in team.reps if r.rep_id not in exclude]
    back = min((t for t in returns if t > stamp), default=stamp + keys.HELD_RETRY_S)
    return min(back, stamp + keys.HELD_RETRY_S)


async def assign_rep(store: RedisStore, team: Team, assignment_id: str, lead_id: str, crossing: int,
                     now: datetime, *, teams: Mapping[str, Team] | None = None,
                     hand_raiser: bool = False, rule: str = "", rules_version: str = "") -> Pick | Held:
    """The rep for a fresh crossing (what :meth:`router.worker.pipeline.Pipeline.route` calls).

    Excludes every rep who rejected the lead, picks by the team's strategy and
    its after-hours policy (:func:`place`), and records the assignment in the
    lead's history, once per assignment id; safe to repeat (a retry gets the
    same rep and no second history entry).  :class:`Held` when every rep who
    could take it is out of office (recorded in the history once, as ``held``,
    and queued for the SLA ticker, which routes it when a rep is back; ``rule``
    and ``rules_version`` are kept for that commit).
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    rejected = await store.rejected_reps(lead_id)
    pick = await place(store, team, assignment_id, lead_id, now, teams=teams, hand_raiser=hand_raiser,
                       exclude=rejected)
    if isinstance(pick, Held):
        res = await store.lead_sla("held", lead_id, assignment_id, crossing, now.timestamp(), team=pick.team,
                                   extra={"reason": pick.reason})
        if res.get("status") == "ok":
            log.warning("lead %s held [%s]: %s; nobody is assigned until a rep is back", lead_id, pick.team,
                        pick.reason)
            await store.redis.hset(keys.lead(lead_id), mapping={"held_rule": rule,
                                                                "held_rules_version": rules_version})
        await store.redis.zadd(keys.team_sla(team.name, keys.HELD_STEP),
                               {keys.sla_member(lead_id, assignment_id): held_retry_at(team, now, rejected)}, nx=True)
        return pick
    await store.lead_sla("assigned", lead_id, assignment_id, crossing, now.timestamp(), rep_id=pick.rep.rep_id,
                         rep_name=pick.rep.name, team=pick.team,
                         extra={"queued": pick.queued, "reason": pick.reason, "strategy": pick.strategy.value,
                                "outcome": pick.outcome, "available_at": pick.available_at})
    if pick.queued and pick.new:
        log.warning("lead %s queued for %s [%s]: %s (%s)", lead_id, pick.rep.name, pick.team, pick.reason,
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
    until = (await store.availability_overrides([rep.rep_id])).get(rep.rep_id)
    if until is not None and (until == "" or until >= team.profile(rep.rep_id).local(now).date().isoformat()):
        return None  # out of office through the admin API: the rules route it
    solo = replace(team, reps=(rep,), strategy=Strategy.WEIGHTED)
    pick = await pick_rep(store, solo, assignment_id, lead_id, now, allow_excluded=False)
    if pick is None:
        return None
    await store.lead_sla("assigned", lead_id, assignment_id, crossing, now.timestamp(), rep_id=rep.rep_id,
                         rep_name=rep.name, team=team.name,
                         extra={"queued": pick.queued, "reason": pick.reason or "account_owner",
                                "strategy": "account_owner", "outcome": pick.outcome,
                                "available_at": pick.available_at})
    return pick


async def assign_reengaged_owner(store: RedisStore, team: Team, rep: Rep, assignment_id: str, lead_id: str,
                                 crossing: int, now: datetime) -> Pick | None:
    """Give a re-engaged lead back to the rep who had it, unless that rep is out of office.

    Unlike :func:`assign_owner` the clock only says no when the rep is away: a
    lead that comes back at night or on a weekend waits for its own rep
    (queued, the SLA clock starting at their next working moment).  None: the
    rep is out of office (roster or admin API) or rejected the lead; route by
    the rules instead.  Idempotent per assignment id, like every pick.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if rep.rep_id in await store.rejected_reps(lead_id):
        return None
    solo = replace(team, reps=(rep,), strategy=Strategy.WEIGHTED)
    slots = await _with_overrides(store, solo, rep_slots(solo, now), now)
    if any(s.unavailable == Unavailable.OUT_OF_OFFICE.value for s in slots):
        return None
    pick = await pick_rep(store, solo, assignment_id, lead_id, now, allow_excluded=False)
    if pick is None:
        return None
    await store.lead_sla("assigned", lead_id, assignment_id, crossing, now.timestamp(), rep_id=rep.rep_id,
                         rep_name=rep.name, team=team.name,
                         extra={"queued": pick.queued, "reason": pick.reason or "reengaged_owner",
                                "strategy": "reengaged_owner", "outcome": pick.outcome,
                                "available_at": pick.available_at})
    return pick
