"""Accept-within SLAs: remind, then reassign, then escalate to the managers.

When a lead is picked (router/worker/distribution.py) its SLA steps are scheduled in
the same atomic step, one sorted set per team and step (``remind``,
``reassign``, ``escalate``; member ``"<lead_id> <assignment_id>"``, score the
due time).  The clock starts when the rep can work: now, or the start of their
next working hours for a queued lead.

:func:`run_due` claims the due items of every team (a Lua lease: the item's
due time moves ``lease_s`` ahead, so a second ticker never sees it, and if
this one dies mid-step the item comes back after the lease), and for each:

* checks on the lead's slot that the assignment is still the lead's current
  one and still unaccepted (``mql``); otherwise the step lapses silently
  (accepted, rejected, reassigned or re-routed since).  A lead whose routing
  has not committed yet is retried a little later;
* ``remind``: history entry, ``notify("remind", lead, assignment, holder)``;
* ``reassign``: picks the next rep by the team's strategy, excluding every rep
  who held this crossing or rejected the lead, moves the lead to them
  (compare-and-set on the lead), ``notify("reassign", lead, new assignment,
  new rep)``; the new holder gets a fresh SLA window whose deadline step is
  ``reassign`` again until ``max_reassignments`` is used up, then
  ``escalate``.  With nobody left to take it, it escalates at once
  (or, with ``escalate_to_manager: false``, records ``sla_expired``);
* ``escalate``: marks the lead escalated, ``notify("escalate", lead,
  assignment, holder)``, and ``notify("escalation", lead, assignment, manager)``
  for each manager row of the team with an email or a Slack id (a direct
  message and an email saying the lead, who held it, how long it waited and
  the SLA; :func:`manager_rep`).
* ``held`` (a lead nobody could take: every rep out of office): routed again
  by the team's policy once its crossing is still open; when a rep takes it,
  the crossing is committed and ``notify("assigned", lead, assignment, rep)``;
  still nobody: looked at again when the first rep is back (at least hourly).

Every step is recorded once per assignment in the lead's history (the
lead-side step is idempotent), so two tickers racing, or a ticker re-running
an item after a lease expiry, never repeat a step.  A failing ``notify`` is
logged and reported (``notified=False``); the step itself stays done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from models import Rep
from models.lead import wait_text
from router.storage import keys
from router.storage.live_config import LiveFile
from router.storage.store import RedisStore
from router.worker.distribution import Held, assign_rep, held_retry_at, pick_rep
from rules import Manager, RoutingConfig, SlaPolicy, Team

log = logging.getLogger(__name__)

Notify = Callable[[str, str, str, Rep], Awaitable[None]]
RETRY_S = 30.0  # a lead whose routing has not committed yet is looked at again after this

SlaKind = Literal["remind", "reassign", "escalate", "expired", "assigned", "manual"]


@dataclass(frozen=True, slots=True)
class SlaAction:
    """One SLA step that was taken."""

    kind: SlaKind
    team: str
    lead_id: str
    assignment_id: str  # the assignment whose step came due
    rep: Rep | None  # who was told: the holder (remind, escalate) or the new holder (reassign)
    ts: float
    previous_rep: Rep | None = None  # reassign: who had it
    new_assignment_id: str | None = None  # reassign
    queued: bool = False  # reassign: the new rep is not available right now either
    managers: tuple[str, ...] = ()  # escalate: the team's managers
    notified: bool = False
    managers_reached: tuple[str, ...] = ()  # escalate: managers whose escalation alert was handed on

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "team": self.team, "lead_id": self.lead_id, "assignment_id": self.assignment_id,
            "rep_id": self.rep.rep_id if self.rep else None, "ts": self.ts,
            "previous_rep_id": self.previous_rep.rep_id if self.previous_rep else None,
            "new_assignment_id": self.new_assignment_id, "queued": self.queued, "managers": list(self.managers),
            "notified": self.notified, "managers_reached": list(self.managers_reached),
        }


async def log_notify(kind: str, lead_id: str, assignment_id: str, rep: Rep) -> None:
    """A ``notify`` that only logs (the default until alert channels are wired)."""
    log.info("sla %s: lead %s (%s) -> %s <%s>", kind, lead_id, assignment_id, rep.name, rep.email)


@dataclass(frozen=True, slots=True)
class _Item:
    lead_id: str
    assignment_id: str
    crossing: int
    reassigns: int
    base: str = ""  # the assignment id without its trailing ``:r<n>``


def parse_member(member: str) -> _Item | None:
    """``"<lead> <lead>:<crossing>[:m<k>][:r<n>]"`` -> its parts; None when malformed.

    ``:m<k>``: the k-th reassignment by hand (ops); ``:r<n>``: the n-th SLA reassignment since.
    """
    lead_id, _, aid = member.partition(" ")
    parts = aid.split(":")
    reassigns = 0
    try:
        crossing = int(parts[1])
        rest = parts[2:]
        if rest and rest[-1].startswith("r"):
            reassigns = int(rest[-1][1:])
            rest = rest[:-1]
        if any(not (p.startswith("m") and p[1:].isdigit()) for p in rest):
            return None
    except (IndexError, ValueError):
        return None
    if not lead_id or parts[0] != lead_id:
        return None
    base = ":".join(parts[:2] + rest)
    return _Item(lead_id, aid, crossing, reassigns, base)


def reassigned_id(item: _Item) -> str:
    return f"{item.base or f'{item.lead_id}:{item.crossing}'}:r{item.reassigns + 1}"


def _rep(team: Team, rep_id: str, name: str = "") -> Rep:
    return team.rep(rep_id) or Rep(rep_id=rep_id, name=name or rep_id, email="", team=team.name)


async def _notify(notify: Notify, kind: str, lead_id: str, assignment_id: str, rep: Rep) -> bool:
    try:
        await notify(kind, lead_id, assignment_id, rep)
    except Exception:
        log.exception("sla %s notification for lead %s to %s failed; the step is recorded", kind, lead_id,
                      rep.rep_id)
        return False
    return True


async def run_due(store: RedisStore, routing: RoutingConfig, now: datetime, notify: Notify, *,
                  limit: int = 100, lease_s: float = keys.SLA_LEASE_S) -> list[SlaAction]:
    """Claim and run every SLA step due by ``now`` (at most ``limit`` per team and step)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    ts = now.timestamp()
    actions: list[SlaAction] = []
    for team in routing.teams.values():
        for step in keys.SLA_STEPS:
            for member in await store.sla_claim(team.name, step, ts, lease_s, limit):
                item = parse_member(member)
                if item is None:
                    log.error("dropped a malformed SLA item %r of team %s", member, team.name)
                    await store.sla_done(team.name, step, member)
                    continue
                try:
                    done, action = await _run_step(store, team, step, item, now, notify)
                except Exception:  # leave it leased: it comes back after the lease
                    log.exception("sla %s for lead %s failed; it will be retried", step, item.lead_id)
                    continue
                if done:
                    await store.sla_done(team.name, step, member)
                else:
                    await store.sla_retry(team.name, step, member, ts + RETRY_S)
                if action is not None:
                    actions.append(action)
        for member in await store.sla_claim(team.name, keys.HELD_STEP, ts, lease_s, limit):
            item = parse_member(member)
            if item is None:
                log.error("dropped a malformed held item %r of team %s", member, team.name)
                await store.sla_done(team.name, keys.HELD_STEP, member)
                continue
            try:
                again_at, action = await _route_held(store, routing, team, item, now, notify)
            except Exception:  # leave it leased: it comes back after the lease
                log.exception("routing held lead %s failed; it will be retried", item.lead_id)
                continue
            if again_at is None:
                await store.sla_done(team.name, keys.HELD_STEP, member)
            else:
                await store.sla_retry(team.name, keys.HELD_STEP, member, again_at)
            if action is not None:
                actions.append(action)
        for member in await store.sla_claim(team.name, keys.NOTIFY_STEP, ts, lease_s, limit):
            action = await _notify_new_holder(store, team, member, ts, notify)
            if action is not None:
                actions.append(action)
    return actions


async def _notify_new_holder(store: RedisStore, team: Team, member: str, ts: float,
                             notify: Notify) -> SlaAction | None:
    """Tell the rep a lead was reassigned to them by hand, if it is still theirs and unaccepted."""
    item = parse_member(member)
    if item is None:
        log.error("dropped a malformed notify item %r of team %s", member, team.name)
        await store.sla_done(team.name, keys.NOTIFY_STEP, member)
        return None
    try:
        check = await store.lead_sla("check", item.lead_id, item.assignment_id, item.crossing, ts, team=team.name)
        if check.get("status") == "retry":
            await store.sla_retry(team.name, keys.NOTIFY_STEP, member, ts + RETRY_S)
            return None
        action = None
        if check.get("status") == "ok":
            rep = _rep(team, str(check.get("owner") or ""))
            notified = await _notify(notify, "manual_reassign", item.lead_id, item.assignment_id, rep)
            action = SlaAction(kind="manual", team=team.name, lead_id=item.lead_id,
                               assignment_id=item.assignment_id, rep=rep, ts=ts, notified=notified)
    except Exception:  # leave it leased: it comes back after the lease
        log.exception("telling the new holder of lead %s failed; it will be retried", item.lead_id)
        return None
    await store.sla_done(team.name, keys.NOTIFY_STEP, member)
    return action


async def _route_held(store: RedisStore, routing: RoutingConfig, team: Team, item: _Item, now: datetime,
                      notify: Notify) -> tuple[float | None, SlaAction | None]:
    """(when to look again or None when done, action): route a held lead if someone can take it now."""
    lead = await store.lead_hash(item.lead_id)
    if not lead or lead.get("pending_crossing") != str(item.crossing):
        return None, None  # routed since (the lead's next event), forgotten or merged
    pick = await assign_rep(store, team, item.assignment_id, item.lead_id, item.crossing, now, teams=routing.teams,
                            hand_raiser=lead.get("last_trigger") == "hand_raiser")
    if isinstance(pick, Held):
        return held_retry_at(team, now), None
    ts = now.timestamp()
    committed = await store.commit_assignment(item.lead_id, item.crossing, item.assignment_id, pick.rep.rep_id,
                                              pick.rep.name, pick.team, lead.get("held_rule", ""),
                                              lead.get("held_rules_version", ""), ts)
    if not committed:  # the lead's own next event routed it first (to the same rep)
        return None, None
    notified = await _notify(notify, "assigned", item.lead_id, item.assignment_id, pick.rep)
    log.info("held lead %s assigned to %s [%s]", item.lead_id, pick.rep.name, pick.team)
    return None, SlaAction(kind="assigned", team=pick.team, lead_id=item.lead_id, assignment_id=item.assignment_id,
                           rep=pick.rep, ts=ts, queued=pick.queued, notified=notified)


async def _run_step(store: RedisStore, team: Team, step: str, item: _Item, now: datetime,
                    notify: Notify) -> tuple[bool, SlaAction | None]:
    """(done, action): done False means try again later (routing not committed yet)."""
    ts = now.timestamp()
    if step == "reassign":
        return await _reassign(store, team, item, now, notify)
    res = await store.lead_sla(step, item.lead_id, item.assignment_id, item.crossing, ts, team=team.name)
    return _settle(res, step, item) or await _after_mark(team, step, item, res, ts, notify)


def _settle(res: dict[str, Any], step: str, item: _Item) -> tuple[bool, SlaAction | None] | None:
    status = res.get("status")
    if status == "ok":
        return None
    if status == "retry":
        return False, None
    log.debug("sla %s for %s lapsed: %s", step, item.assignment_id, status)
    return True, None


async def _after_mark(team: Team, step: str, item: _Item, res: dict[str, Any], ts: float,
                      notify: Notify) -> tuple[bool, SlaAction | None]:
    holder = _rep(team, str(res.get("owner") or ""))
    kinds: dict[str, SlaKind] = {"remind": "remind", "escalate": "escalate", "expired": "expired"}
    kind = kinds[step]
    notified = False
    if kind != "expired":
        notified = await _notify(notify, kind, item.lead_id, item.assignment_id, holder)
    managers = tuple(team.managers or (team.manager,)) if kind == "escalate" else ()
    reached: tuple[str, ...] = ()
    if kind == "escalate":
        log.warning("lead %s not accepted in time by %s [%s]: escalated to %s", item.lead_id, holder.name,
                    team.name, ", ".join(managers))
        reached = await _tell_managers(team, item, notify)
    return True, SlaAction(kind=kind, team=team.name, lead_id=item.lead_id, assignment_id=item.assignment_id,
                           rep=holder, ts=ts, managers=managers, notified=notified, managers_reached=reached)


def sla_text(sla: SlaPolicy | None) -> str:
    if sla is None:
        return "no SLA"
    text = f"accept within {sla.accept_within_minutes:g} min"
    if sla.remind_after_minutes is not None:
        text += f", reminder at {sla.remind_after_minutes:g} min"
    return text + f", up to {sla.max_reassignments} reassignment(s), then the managers"


def escalation_facts(lead: Mapping[str, str], sla: SlaPolicy | None, now: float) -> dict[str, Any]:
    """What an escalation tells a manager: who holds the lead, since when it waits, the SLA."""
    since = float(lead.get("mql_ts") or lead.get("assigned_ts") or now)
    return {"holder_id": lead.get("owner", ""), "holder_name": lead.get("owner_name") or lead.get("owner", ""),
            "team": lead.get("team", ""), "waiting_since": since, "waited_s": max(0.0, now - since),
            "sla": sla_text(sla), "reassignments": int(float(lead.get("sla_reassigns") or 0))}


def escalation_text(facts: Mapping[str, Any]) -> str:
    """The escalation's one-line trigger: who, how long, which SLA."""
    return (f"escalated to you: {facts['holder_name'] or 'nobody'} has not accepted this lead; it has waited "
            f"{wait_text(float(facts['waited_s']))} since it became sales-ready "
            f"(team {facts['team']} SLA: {facts['sla']})")


def manager_rep(team: Team, manager: Manager) -> Rep:
    """A manager as the addressee of an alert (a Slack DM and an email; never the team channel)."""
    return Rep(rep_id=manager.manager_id, name=manager.name, email=manager.email or "", team=team.name,
               slack_user_id=manager.slack_user_id)


async def _tell_managers(team: Team, item: _Item, notify: Notify) -> tuple[str, ...]:
    """The escalation alert to each manager row with a contact; the names of those it was handed to."""
    reached: list[str] = []
    for manager in team.manager_rows:
        if not manager.reachable:
            log.warning("team %s manager %s has no email or slack_user_id in the routing file; the escalation of "
                        "lead %s cannot reach them directly", team.name, manager.name, item.lead_id)
            continue
        if await _notify(notify, "escalation", item.lead_id, item.assignment_id, manager_rep(team, manager)):
            reached.append(manager.name)
    return tuple(reached)


async def _reassign(store: RedisStore, team: Team, item: _Item, now: datetime,
                    notify: Notify) -> tuple[bool, SlaAction | None]:
    ts = now.timestamp()
    check = await store.lead_sla("check", item.lead_id, item.assignment_id, item.crossing, ts, team=team.name)
    settled = _settle(check, "reassign", item)
    if settled is not None:
        return settled
    owner = str(check.get("owner") or "")
    exclude = {owner, *_strs(check.get("holders")), *_strs(check.get("rejected"))}
    new_aid = reassigned_id(item)
    pick = await pick_rep(store, team, new_aid, item.lead_id, now, exclude=exclude,
                          reassigns=item.reassigns + 1, allow_excluded=False)
    if pick is None:  # everyone in the team had it or rejected it
        fallback = "escalate" if team.sla is None or team.sla.escalate_to_manager else "expired"
        res = await store.lead_sla(fallback, item.lead_id, item.assignment_id, item.crossing, ts, team=team.name,
                                   extra={"why": "no rep left to reassign to"})
        return _settle(res, fallback, item) or await _after_mark(team, fallback, item, res, ts, notify)
    commit = await store.lead_sla(
        "reassign", item.lead_id, item.assignment_id, item.crossing, ts, rep_id=pick.rep.rep_id,
        rep_name=pick.rep.name, new_assignment_id=new_aid, team=team.name,
        extra={"queued": pick.queued, "reason": pick.reason, "strategy": pick.strategy.value},
    )
    if commit.get("status") != "ok":
        # Accepted (or otherwise moved on) between the check and now: undo the orphan pick's load,
        # unless the move is this very reassignment, finished by a ticker whose lease we outlived.
        if commit.get("current") != new_aid:
            await store.release_open(team.name, pick.rep.rep_id, item.lead_id)
        return _settle(commit, "reassign", item) or (True, None)
    previous = _rep(team, owner)
    await store.release_open(team.name, owner, item.lead_id)
    await store.note_rep_lead(pick.rep.rep_id, item.lead_id, ts)
    notified = await _notify(notify, "reassign", item.lead_id, new_aid, pick.rep)
    log.info("lead %s not accepted in time by %s: reassigned to %s [%s]", item.lead_id, previous.name,
             pick.rep.name, team.name)
    return True, SlaAction(kind="reassign", team=team.name, lead_id=item.lead_id, assignment_id=item.assignment_id,
                           rep=pick.rep, ts=ts, previous_rep=previous, new_assignment_id=new_aid,
                           queued=pick.queued, notified=notified)


def _strs(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


async def sla_tick(store: RedisStore, routing: LiveFile[RoutingConfig] | RoutingConfig, notify: Notify = log_notify,
                   *, clock: Callable[[], float] = time.time, limit: int = 100) -> list[SlaAction]:
    """One SLA pass at ``clock()`` over the routing config in force.

    The worker runs it inside the scheduler's tick (router/worker/scheduler.py ``tick``,
    wired in router/worker/app.py), with recycles and the SLA figures; any number of
    workers may run it and each step is taken once.  ``notify(kind, lead_id,
    assignment_id, rep)`` is an async callable (kind: remind, reassign, escalate,
    escalation, assigned, manual_reassign); :func:`log_notify` only logs.
    """
    config = routing.current if isinstance(routing, LiveFile) else routing
    now = datetime.fromtimestamp(clock(), UTC)
    return await run_due(store, config, now, notify, limit=limit)
