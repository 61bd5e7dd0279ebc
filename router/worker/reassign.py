"""Ops move a lead to another rep by hand, with a reason: ``leadrouter leads reassign`` and the admin API.

* Only an open lead moves: assigned and ``mql`` (not accepted yet) or ``sal`` (accepted:
  it goes back to ``mql`` and the new rep accepts it).
* The new rep must be in the routing config in force and not out of office (in the
  roster, or set through the admin API); moving a lead to the rep who has it is refused.
* The pick goes through the same atomic team step as routing (the rep's load and
  capacity count it; it is idempotent per assignment id ``<lead>:<crossing>:m<k>``),
  which also schedules the new rep's SLA window: the SLA restarts.
* The move itself is a compare-and-set on the lead's slot (lead_sla.lua ``manual``): it
  happens only from the assignment read here, and is recorded in the lead's history
  with who, when and why.
* Then the old rep's pending SLA steps are cancelled, the lead stops counting as their
  open lead, and the new rep is told through the worker (a ``notify`` item due now in
  the team's SLA set: the next scheduler tick sends them the alert, once).
* The move is counted in ``leadrouter_sla_reassignments_total{how="manual"}`` by the
  worker that picks up the figure (keys.SLA_FIGURES).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from router.storage import keys
from router.storage.store import RedisStore
from router.worker.distribution import pick_rep
from router.worker.lifecycle import InvalidTransitionError, LifecycleError, UnknownLeadError, lead_id_of
from rules import RoutingConfig, Strategy, Team, Unavailable

MAX_REASON = 500


class ReassignError(LifecycleError):
    """A manual reassignment that is not allowed."""

    code = "bad_reassign"


class UnknownRepError(ReassignError):
    code = "unknown_rep"


class RepOutOfOfficeError(ReassignError):
    code = "out_of_office"


class ReassignConflictError(ReassignError):
    code = "conflict"


@dataclass(frozen=True, slots=True)
class ReassignResult:
    lead_id: str
    from_rep: str
    to_rep: str
    to_rep_name: str
    team: str
    from_stage: str
    assignment_id: str
    previous_assignment_id: str
    reason: str
    by: str
    ts: float
    queued: bool = False  # the new rep is outside their working hours: their SLA clock starts then
    sla_starts: float | None = None
    remind_at: float | None = None
    deadline_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id, "from_rep": self.from_rep, "to_rep": self.to_rep,
            "to_rep_name": self.to_rep_name, "team": self.team, "from_stage": self.from_stage,
            "assignment_id": self.assignment_id, "previous_assignment_id": self.previous_assignment_id,
            "reason": self.reason, "by": self.by, "ts": self.ts, "queued": self.queued,
            "sla_starts": self.sla_starts, "remind_at": self.remind_at, "deadline_at": self.deadline_at,
        }


def find_rep(routing: RoutingConfig, rep_id: str) -> Team:
    """The team of ``rep_id`` in the routing config in force; :class:`UnknownRepError` with a suggestion."""
    for team in routing.teams.values():
        if team.rep(rep_id) is not None:
            return team
    ids = [r.rep_id for t in routing.teams.values() for r in t.reps]
    close = difflib.get_close_matches(rep_id, ids, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "see the reps in routing.yaml (or GET /v1/roster)"
    msg = f"no rep {rep_id!r} in the routing config in force (version {routing.version}); {hint}"
    raise UnknownRepError(msg)


async def _away(store: RedisStore, team: Team, rep_id: str, now: datetime) -> str | None:
    """Why the rep is out of office at ``now`` (roster dates or an admin override), or None."""
    profile = team.profile(rep_id)
    if profile.unavailable(now) is Unavailable.OUT_OF_OFFICE:
        today = profile.local(now).date()
        ranges = [r for r in profile.out_of_office if r.covers(today)]
        return f"out of office until {ranges[0].end.isoformat()} (routing.yaml)" if ranges else "out of office"
    until = (await store.availability_overrides([rep_id])).get(rep_id)
    if until is not None and (until == "" or until >= profile.local(now).date().isoformat()):
        return f"out of office{f' until {until}' if until else ''} (set through the admin API)"
    return None


async def reassign(store: RedisStore, routing: RoutingConfig, lead: str, to_rep: str, *, reason: str, by: str,
                   now: datetime | float | None = None) -> ReassignResult:
    """Move an open lead to ``to_rep`` by hand; the SLA restarts for them and they are alerted."""
    at = (datetime.now(UTC) if now is None else now if isinstance(now, datetime)
          else datetime.fromtimestamp(now, UTC))
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    ts = at.timestamp()
    reason, by, to_rep = reason.strip(), by.strip(), to_rep.strip()
    if not reason or len(reason) > MAX_REASON:
        msg = f"a manual reassignment needs a reason of 1 to {MAX_REASON} characters (it is kept in the history)"
        raise ReassignError(msg)
    if not by:
        msg = "a manual reassignment needs who is doing it (--by NAME; the API uses the token's name)"
        raise ReassignError(msg)
    lead_id = lead_id_of(lead)
    data = await store.lead_hash(lead_id)
    if not data:
        msg = f"no lead {lead!r}; check the email (a lead exists once a tracked event names it)"
        raise UnknownLeadError(msg)
    stage, owner, old_aid = data.get("stage", ""), data.get("owner", ""), data.get("assignment_id", "")
    if stage not in ("mql", "sal") or not old_aid or not owner:
        what = "not assigned yet (held, or its routing is not finished)" if stage == "mql" else stage or "unknown"
        msg = (f"cannot reassign lead {lead!r}: it is {what}; reassign moves an open, assigned lead "
               "(mql or sal)")
        raise InvalidTransitionError(msg)
    team = find_rep(routing, to_rep)
    rep = team.rep(to_rep)
    assert rep is not None
    if to_rep == owner:
        msg = f"lead {lead!r} is already assigned to {rep.name} ({to_rep}); pick another rep"
        raise ReassignError(msg)
    away = await _away(store, team, to_rep, at)
    if away is not None:
        msg = f"cannot reassign lead {lead!r} to {rep.name} ({to_rep}): {away}; pick a rep who is in"
        raise RepOutOfOfficeError(msg)
    crossing = int(data.get("crossing") or 0)
    new_aid = f"{lead_id}:{crossing}:m{int(data.get('manual_reassigns') or 0) + 1}"
    solo = replace(team, reps=(rep,), strategy=Strategy.WEIGHTED)
    pick = await pick_rep(store, solo, new_aid, lead_id, at)
    if pick is None:  # set out of office between the check and the pick
        msg = f"cannot reassign lead {lead!r} to {rep.name} ({to_rep}): out of office; pick a rep who is in"
        raise RepOutOfOfficeError(msg)
    res = await store.lead_sla("manual", lead_id, old_aid, crossing, ts, rep_id=to_rep, rep_name=rep.name,
                               new_assignment_id=new_aid, team=team.name,
                               extra={"by": by, "reason": reason, "queued": pick.queued,
                                      "available_at": pick.available_at})
    if res.get("status") != "ok":
        await store.release_open(team.name, to_rep, lead_id)
        msg = (f"lead {lead!r} changed while it was being reassigned (now {res.get('stage') or 'moved'}, "
               f"assignment {res.get('current') or '-'}); look at it again (leadrouter leads show) and retry")
        raise ReassignConflictError(msg)
    old_team = data.get("team", "") or team.name
    member = keys.sla_member(lead_id, old_aid)
    pipe = store.redis.pipeline(transaction=False)
    for step in keys.SLA_STEPS:  # the old holder's pending steps
        pipe.zrem(keys.team_sla(old_team, step), member)
    pipe.zadd(keys.team_sla(team.name, keys.NOTIFY_STEP), {keys.sla_member(lead_id, new_aid): ts})
    await pipe.execute()
    await store.release_open(old_team, owner, lead_id)
    await store.note_rep_lead(to_rep, lead_id, ts)
    await store.push_figure({"kind": "reassign", "team": team.name, "ts": ts})
    return ReassignResult(
        lead_id=lead_id, from_rep=owner, to_rep=to_rep, to_rep_name=rep.name, team=team.name, from_stage=stage,
        assignment_id=new_aid, previous_assignment_id=old_aid, reason=reason, by=by, ts=ts, queued=pick.queued,
        sla_starts=pick.available_at, remind_at=pick.remind_at, deadline_at=pick.deadline_at,
    )
