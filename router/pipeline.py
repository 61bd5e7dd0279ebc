"""What the worker does with a batch of events.

Decode, score (pure), resolve who each event belongs to, apply the whole batch
to Redis in one pipelined round trip, then route every lead that crossed the
sales-ready threshold and publish its alert.  Faust agents only call this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import orjson

from models import FORM_FIELDS, Alert, Assignment, Event, InvalidEventError
from router import metrics
from router.config import LiveFile
from router.identity import resolve_batch
from router.store import ApplyResult, EventPlan, RedisStore, lead_view_from_hash
from rules import RoutingConfig, facts_from_lead
from scoring import ScoringConfig, is_hand_raiser, score_event, total_points

log = logging.getLogger(__name__)

PublishAlert = Callable[[str, bytes], Awaitable[None]]


@dataclass
class BatchReport:
    events: int = 0
    invalid: int = 0
    duplicates: int = 0
    fired: int = 0
    routed: int = 0


def decode(raw: bytes | str | dict[str, object]) -> Event:
    data = raw if isinstance(raw, dict) else orjson.loads(raw)
    return Event.from_dict(data)


def plan_batch(events: Sequence[Event], lead_ids: Sequence[str], config: ScoringConfig) -> list[EventPlan]:
    """What each event is worth and to which lead (from the identity resolution)."""
    plans: list[EventPlan] = []
    for ev, lead_id in zip(events, lead_ids, strict=True):
        reasons = score_event(ev, config)
        fields = {**ev.fields, **{k: v for k, v in ev.traits.items() if k in TRAIT_FIELDS}}
        plans.append(EventPlan(event=ev, lead_id=lead_id, reasons=reasons, points=total_points(reasons),
                               hand_raiser=is_hand_raiser(reasons), fields=fields))
    return plans


# Segment/RudderStack identify traits kept on the lead, under our field names.
TRAIT_FIELDS: frozenset[str] = frozenset(FORM_FIELDS) | {"industry", "employees", "website"}


def identify(events: Sequence[Event]) -> tuple[list[str], list[str]]:
    """The visitor ids and user ids a batch mentions (alias previous ids as both)."""
    vids = [e.visitor_id for e in events if e.visitor_id]
    uids = [e.user_id for e in events if e.user_id]
    for e in events:
        if e.previous_id:
            vids.append(e.previous_id)
            uids.append(e.previous_id)
    return vids, uids


def trigger_text(result: ApplyResult, event: Event, threshold: float) -> str:
    if result.trigger == "hand_raiser":
        return f"hand-raiser: filled form {event.form_id}" if event.form_id else "hand-raiser"
    return f"score {result.after:.0f} crossed the sales-ready threshold {threshold:.0f}"


async def apply_batch(store: RedisStore, config: ScoringConfig, events: Sequence[Event], now: float
                      ) -> tuple[list[EventPlan], list[ApplyResult]]:
    """Resolve identities, merge and link, then score the whole batch in one round trip."""
    visitors, users = await store.resolve_identities(*identify(events))
    resolution = resolve_batch(list(events), visitors, users)
    for merge in resolution.merges:  # rare: once per identification
        await store.merge(merge, half_life_s=config.half_life_s, now=now)
    for c in resolution.conflicts:
        await store.log_identity("conflict", identifier=c.identifier, previous=c.previous, current=c.current,
                                 event_id=c.event_id, ts=c.ts)
        log.info("kept two people apart: %s was %s, now %s", c.identifier, c.previous, c.current)
    await store.write_links(resolution.links)
    plans = plan_batch(events, resolution.lead_ids, config)
    results = await store.apply(plans, threshold=config.threshold, half_life_s=config.half_life_s, now=now)
    moved = [i for i, r in enumerate(results) if r.status == "moved"]
    if moved:
        # A profile was merged after we resolved it (earlier in this batch, or
        # by another worker): those events go to the lead it now belongs to.
        again = await store.apply([replace(plans[i], lead_id=results[i].moved_to) for i in moved],
                                  threshold=config.threshold, half_life_s=config.half_life_s, now=now)
        for i, r in zip(moved, again, strict=True):
            results[i] = r
    return plans, results


class Pipeline:
    def __init__(self, store: RedisStore, scoring: LiveFile[ScoringConfig], routing: LiveFile[RoutingConfig],
                 publish_alert: PublishAlert, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.scoring = scoring
        self.routing = routing
        self.publish_alert = publish_alert
        self.clock = clock

    async def process(self, raw_values: Sequence[bytes]) -> BatchReport:
        report = BatchReport(events=len(raw_values))
        events: list[Event] = []
        for raw in raw_values:
            try:
                events.append(decode(raw))
            except (InvalidEventError, orjson.JSONDecodeError, TypeError) as exc:
                report.invalid += 1
                metrics.EVENTS.labels("unknown", "invalid").inc()
                log.error("skipped an invalid event: %s: %r", exc, bytes(raw)[:200])
        if not events:
            return report
        config = self.scoring.current
        plans, results = await apply_batch(self.store, config, events, self.clock())
        for plan, result in zip(plans, results, strict=True):
            etype = plan.event.type.value
            if result.status == "duplicate":
                report.duplicates += 1
                metrics.EVENTS.labels(etype, "duplicate").inc()
                continue
            metrics.EVENTS.labels(etype, "fired" if result.status == "fired" else "scored").inc()
            if result.needs_routing:
                report.fired += 1
                if result.status == "fired":
                    metrics.CROSSINGS.labels(result.trigger).inc()
                await self.route(plan, result, config)
                report.routed += 1
        return report

    async def route(self, plan: EventPlan, result: ApplyResult, config: ScoringConfig) -> Assignment:
        """Route one crossing to a rep and publish its alert; safe to repeat."""
        started = time.perf_counter()
        routing = self.routing.current
        lead = lead_view_from_hash(result.lead, result.reasons)
        facts = facts_from_lead(lead, {
            "hand_raiser": result.trigger == "hand_raiser",
            "form_id": plan.event.form_id,
            "source": plan.event.source,
        })
        decision = routing.decide(facts)
        team = routing.team(decision.team)
        assignment_id = f"{plan.lead_id}:{result.crossing}"
        rep_id = await self.store.assign_turn(team.name, assignment_id, [r.rep_id for r in team.reps])
        rep = next((r for r in team.reps if r.rep_id == rep_id), None)
        if rep is None:  # the roster changed between the turn and now
            rep = team.reps[0]
        now = self.clock()
        assignment = Assignment(assignment_id=assignment_id, lead_id=plan.lead_id, crossing=result.crossing,
                                rep=rep, decision=decision, ts=now)
        alert = Alert(assignment=assignment, lead=lead, threshold=config.threshold,
                      trigger=trigger_text(result, plan.event, config.threshold), recent=result.recent,
                      event_ts=plan.event.ts)
        # Publish first, then close the crossing: a crash in between replays the
        # event, which resumes the crossing, gets the same rep and republishes;
        # the alert sender skips channels it already delivered on.
        await self.publish_alert(plan.lead_id, orjson.dumps(alert.to_dict()))
        await self.store.commit_assignment(plan.lead_id, result.crossing, assignment_id, rep.rep_id, rep.name,
                                           team.name, decision.rule, decision.rules_version, now)
        metrics.ASSIGNMENTS.labels(team.name, rep.rep_id).inc()
        metrics.ROUTING_SECONDS.observe(time.perf_counter() - started)
        log.info("lead %s (%s) -> %s [%s] via rule %s: %s", lead.display_name, lead.email, rep.name, team.name,
                 decision.rule, alert.trigger)
        return assignment

