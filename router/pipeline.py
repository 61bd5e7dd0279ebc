"""What the worker does with a batch of events.

Decode, score (pure), resolve who each event belongs to, apply the whole batch
to Redis in one pipelined round trip, then route every lead that crossed the
sales-ready threshold and publish its alert.  Faust agents only call this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import orjson

from models import Alert, Assignment, Event, InvalidEventError
from router import keys, metrics
from router.config import LiveFile
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


def plan_batch(events: Sequence[Event], known: dict[str, str], config: ScoringConfig) -> list[EventPlan]:
    """Decide, per event, which lead it belongs to and what it is worth.

    ``known`` maps visitor ids already identified to their lead; it is updated
    as the batch links visitors, so later events of the same visitor in the
    same batch go to the lead too.
    """
    plans: list[EventPlan] = []
    for ev in events:
        reasons = score_event(ev, config)
        link: str | None = None
        if ev.email:
            lead_id = keys.lead_id_for_email(ev.email)
            if ev.visitor_id and known.get(ev.visitor_id) != lead_id:
                link = ev.visitor_id
                known[ev.visitor_id] = lead_id
        elif ev.visitor_id:
            lead_id = known.get(ev.visitor_id) or keys.lead_id_for_visitor(ev.visitor_id)
        else:
            lead_id = keys.lead_id_for_visitor(f"event:{ev.event_id}")
        plans.append(EventPlan(
            event=ev, lead_id=lead_id, reasons=reasons, points=total_points(reasons),
            hand_raiser=is_hand_raiser(reasons), fields=dict(ev.fields), link_visitor=link,
        ))
    return plans


def trigger_text(result: ApplyResult, event: Event, threshold: float) -> str:
    if result.trigger == "hand_raiser":
        return f"hand-raiser: filled form {event.form_id}" if event.form_id else "hand-raiser"
    return f"score {result.after:.0f} crossed the sales-ready threshold {threshold:.0f}"


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
        anonymous = [e.visitor_id for e in events if e.visitor_id]
        known = await self.store.resolve_visitors(anonymous)
        plans = plan_batch(events, known, config)
        results = await self.store.apply(plans, threshold=config.threshold, half_life_s=config.half_life_s,
                                         now=self.clock())
        moved = [i for i, r in enumerate(results) if r.status == "moved"]
        if moved:
            # A visitor was identified after we resolved it (another batch);
            # retry those events against the lead they now belong to.
            retry = [EventPlan(event=plans[i].event, lead_id=results[i].moved_to, reasons=plans[i].reasons,
                               points=plans[i].points, hand_raiser=plans[i].hand_raiser,
                               fields=plans[i].fields) for i in moved]
            again = await self.store.apply(retry, threshold=config.threshold, half_life_s=config.half_life_s,
                                           now=self.clock())
            for i, r in zip(moved, again, strict=True):
                results[i] = r
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

