"""Time that acts on its own: the moments that matter, kept in Redis and acted on when due.

Decay is exact and lazy, so nothing about a lead changes until something looks at
it.  Some moments cannot wait for the lead's next event:

* **recycle** -- a sales-ready lead nobody accepted whose engagement decays below
  ``recycle_below`` goes back to nurture (and its sales-ready rule re-arms).  With
  exponential decay the moment is exact: ``t = asof + half_life * log2(score /
  recycle_below)``.  The lead's own Lua step (apply_event.lua) recomputes it on
  every score change and keeps it on the lead (``recycle_at``); the store indexes
  it in the lead's due shard (``keys.due("recycle", n)``, one of ``DUE_SHARDS``
  sorted sets, so each claim is one slot and the shards spread over a cluster);
* **SLA steps** -- remind, reassign, escalate, and leads held while everyone was
  away: scheduled in the team's slot atomically with the pick
  (router/worker/sla.py), claimed the same way;
* **digests** -- one per rep per interval, in their own due set with a lease
  (router/alerts/digest.py, run by the worker's digest timer).

Every kind follows one pattern: a sorted set member -> due time; a tick *claims*
what is due with a lease (router/storage/lua/sla_claim.lua moves the item's due time
ahead, so a second ticker does not see it, and a ticker that dies mid-step gives it
back after the lease); the step itself runs on the item's owner (the lead's slot)
and is idempotent, so it is taken once whatever the number of workers ticking; the
claim is then settled (removed, or re-armed at a newer exact time) only if nobody
re-armed it meanwhile (due_settle.lua).  The index is a hint and the lead is the
truth: an item whose lead moved on (accepted, rejected, more points) is dropped or
re-armed when it comes due, never acted on.

Cost per tick is the number of due items (plus one claim per shard and per team
step), not the number of leads.  A worker that was down (a night, a weekend) finds
everything that came due in the meantime on its first tick and catches up, in
rounds of ``limit`` items, each step as of its own exact moment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from router import metrics
from router.storage import keys
from router.storage.live_config import LiveFile
from router.storage.store import RedisStore
from router.worker.sla import Notify, SlaAction, log_notify, run_due
from rules import RoutingConfig
from scoring import ScoringConfig

log = logging.getLogger(__name__)

RETRY_S = 30.0  # a lead whose routing has not committed yet is looked at again after this
MAX_ROUNDS = 50  # claim rounds per kind and tick; a backlog beyond that continues at the next tick
FIGURES_PER_TICK = 5000


@dataclass(frozen=True, slots=True)
class Recycled:
    """A lead the tick sent back to nurture."""

    lead_id: str
    at: float  # the exact moment its engagement reached recycle_below
    ts: float  # when the tick did it
    owner: str = ""
    team: str = ""
    assignment_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"lead_id": self.lead_id, "at": self.at, "ts": self.ts, "owner": self.owner, "team": self.team,
                "assignment_id": self.assignment_id}


@dataclass
class TickReport:
    """What one tick did."""

    now: float
    recycled: list[Recycled] = field(default_factory=list)
    sla: list[SlaAction] = field(default_factory=list)
    figures: int = 0


async def recycle_due(store: RedisStore, scoring: ScoringConfig, now: float, *, limit: int = 200,
                      lease_s: float = keys.DUE_LEASE_S, max_rounds: int = MAX_ROUNDS) -> list[Recycled]:
    """Claim every recycle due by ``now`` (in rounds of ``limit`` per shard) and take each one once."""
    rb = scoring.ready.recycle_below
    out: list[Recycled] = []
    for _ in range(max_rounds):
        claimed = await store.due_claim("recycle", now, lease_s, limit)
        if not claimed:
            break
        if rb is None:  # recycling was switched off in scoring.yaml: what is indexed is dropped
            await store.due_settle("recycle", [(shard, item, lease, None) for shard, item, lease in claimed])
            metrics.SCHEDULER_ITEMS.labels("recycle", "cancel").inc(len(claimed))
            continue
        results = await store.recycle_leads([item for _, item, _ in claimed], now, scoring.half_life_s, rb)
        settle: list[tuple[int, str, str, float | None]] = []
        for (shard, lead_id, lease), res in zip(claimed, results, strict=True):
            status = str(res.get("status") or "gone")
            metrics.SCHEDULER_ITEMS.labels("recycle", status).inc()
            nxt: float | None = None
            if status == "later":
                nxt = float(res["at"])
            elif status == "retry":
                nxt = now + RETRY_S
            elif status == "ok":
                done = Recycled(lead_id=lead_id, at=float(res.get("at") or now), ts=now,
                                owner=str(res.get("owner") or ""), team=str(res.get("team") or ""),
                                assignment_id=str(res.get("assignment_id") or ""))
                out.append(done)
                metrics.RECYCLED.inc()
                metrics.SCHEDULER_LATENESS.labels("recycle").observe(max(0.0, now - done.at))
                if done.team and done.owner:  # it no longer counts toward the rep's open leads
                    await store.release_open(done.team, done.owner, lead_id)
                log.info("lead %s recycled to nurture: engagement reached recycle_below %g at %s, never accepted",
                         lead_id, rb, datetime.fromtimestamp(done.at, UTC).isoformat())
            settle.append((shard, lead_id, lease, nxt))
        await store.due_settle("recycle", settle)
        per_shard: dict[int, int] = {}
        for shard, _, _ in claimed:
            per_shard[shard] = per_shard.get(shard, 0) + 1
        if max(per_shard.values()) < limit:
            break
    return out


def count_sla(actions: list[SlaAction]) -> None:
    """The SLA steps a tick took, as metrics (per team)."""
    for a in actions:
        if a.kind == "remind":
            metrics.SLA_REMINDERS.labels(a.team).inc()
        elif a.kind == "reassign":
            metrics.SLA_REASSIGNMENTS.labels(a.team, "auto").inc()
        elif a.kind == "escalate":
            metrics.SLA_ESCALATIONS.labels(a.team).inc()


async def drain_figures(store: RedisStore, limit: int = FIGURES_PER_TICK) -> int:
    """Observe the accepts and manual reassignments the admin API and the CLI recorded (each once)."""
    figures = await store.pop_figures(limit)
    for f in figures:
        team = str(f.get("team") or "")
        if f.get("kind") == "accept":
            waited = f.get("waited_s")
            if isinstance(waited, (int, float)) and waited >= 0:
                metrics.SLA_TIME_TO_ACCEPT.labels(team).observe(float(waited))
        elif f.get("kind") == "reassign":
            metrics.SLA_REASSIGNMENTS.labels(team, "manual").inc()
    return len(figures)


async def tick(store: RedisStore, scoring: LiveFile[ScoringConfig] | ScoringConfig,
               routing: LiveFile[RoutingConfig] | RoutingConfig, notify: Notify = log_notify, *,
               clock: Callable[[], float] = time.time, limit: int = 200) -> TickReport:
    """One pass of the scheduler at ``clock()``: what the worker's timer calls (any number of workers)."""
    now = clock()
    report = TickReport(now=now)
    config = scoring.current if isinstance(scoring, LiveFile) else scoring
    rules = routing.current if isinstance(routing, LiveFile) else routing
    report.recycled = await recycle_due(store, config, now, limit=limit)
    at = datetime.fromtimestamp(now, UTC)
    for _ in range(MAX_ROUNDS):  # SLA steps, in rounds until a backlog is drained
        actions = await run_due(store, rules, at, notify, limit=limit)
        count_sla(actions)
        report.sla.extend(actions)
        if len(actions) < limit:
            break
    report.figures = await drain_figures(store)
    return report


def scheduler_timer(store: RedisStore, scoring: LiveFile[ScoringConfig], routing: LiveFile[RoutingConfig],
                    notify: Notify, clock: Callable[[], float] = time.time) -> Callable[[], Any]:
    """The body of the worker's scheduler timer; it never raises (the next tick tries again)."""

    async def scheduler_tick() -> None:
        try:
            await tick(store, scoring, routing, notify, clock=clock)
        except Exception:
            log.exception("scheduler tick failed; due items stay due and the next tick takes them")

    return scheduler_tick
