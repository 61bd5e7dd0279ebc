"""What the worker does with a batch of events.

The scoring step (``batch.py``: decode, score, resolve identities, apply the
whole batch to Redis in one pipelined round trip), then route every lead that
crossed the sales-ready threshold and publish its alert.  Faust agents only
call this.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson

from models import (
    AccountResult,
    Alert,
    ApplyResult,
    Assignment,
    Event,
    EventPlan,
    EventType,
    InvalidEventError,
    LeadView,
    Reason,
    Reengagement,
    Rep,
    RoutingDecision,
    lead_view_from_hash,
)
from router import metrics
from router.settings import TokenSettings
from router.storage.decisions import log_decision
from router.storage.live import LiveFeed
from router.storage.live_config import LiveFile
from router.storage.pii import Vault
from router.storage.store import RedisStore
from router.tokens import mint_action_token
from router.worker.batch import apply_batch, decode
from router.worker.distribution import Held, Pick, assign_owner, assign_reengaged_owner, assign_rep
from router.worker.learning import crossing_record, explain_at_crossing, route_record
from router.worker.reengage import comeback, out_of_office, reengagement_of
from router.worker.review import crossing_trust, gated, review_info
from router.worker.review import hold as hold_for_review
from router.worker.review import route_released as route_released_leads
from router.worker.sla import escalation_facts, escalation_text
from rules import RoutingConfig, facts_from_lead
from rules.accounts import AccountBook, match_account, owner_first
from scoring import (
    HELD_STAGES,
    IcpConfig,
    ScoringConfig,
    score_at,
)
from scoring.account_intent import AccountIntentConfig
from scoring.model import LeadModel

log = logging.getLogger(__name__)

PublishAlert = Callable[[str, bytes], Awaitable[None]]
LINK_TTL_S = 72 * 3600  # default life of an alert's one-time accept/reject link (LEADROUTER_ALERT_LINK_TTL_S)
REENGAGE_RULE = "reengaged-owner"  # the decision's rule name when a re-engagement goes back to its owner
ROUTE_CONCURRENCY = 32  # crossings of one batch routed at once



@dataclass
class BatchReport:
    events: int = 0
    invalid: int = 0
    duplicates: int = 0
    fired: int = 0
    routed: int = 0


def trigger_text(result: ApplyResult, event: Event, threshold: float, *, late: bool = False) -> str:
    """Why the lead is sales-ready now; ``late``: a hand raised before the person was known."""
    if result.trigger == "account_intent":
        return "account intent: the buying committee is active"
    if result.trigger == "hand_raiser" and late:
        return "hand-raiser: asked anonymously, identified now"
    if result.trigger == "hand_raiser":
        if event.type is EventType.TRACK and event.name:
            return f"hand-raiser: {event.name}"
        return f"hand-raiser: filled form {event.form_id}" if event.form_id else "hand-raiser"
    if result.trigger and result.trigger != "threshold":
        return f"sales-ready: {result.trigger} (score {result.after:.0f})"
    return f"score {result.after:.0f} crossed the sales-ready threshold {threshold:.0f}"


class Pipeline:
    # Crossings of one batch routed at once; 1 routes them one by one, in event order (replays).
    route_concurrency: int = ROUTE_CONCURRENCY

    def __init__(self, store: RedisStore, scoring: LiveFile[ScoringConfig], routing: LiveFile[RoutingConfig],
                 publish_alert: PublishAlert, clock: Callable[[], float] = time.time,
                 intent: AccountIntentConfig | None = None, accounts: LiveFile[AccountBook] | None = None,
                 admin_url: str = "", icp: LiveFile[IcpConfig] | None = None,
                 model: Callable[[], LeadModel | None] | None = None, link_secret: str = "",
                 unique: frozenset[str] = frozenset({"email"}), vault: Vault | None = None,
                 review_below: float = 0.5, link_ttl_s: int = LINK_TTL_S) -> None:
        self.store = store
        self.review_below = review_below
        # Opens sealed events, drops forgotten people's, seals the alerts it publishes.
        self.vault = vault or Vault.from_settings(store.redis, TokenSettings())
        self.link_ttl_s = link_ttl_s
        self.unique = unique
        self.link_secret = link_secret
        self.icp = icp
        self.model = model
        self.intent_override = intent  # None: the scoring file's account_intent section
        self.accounts = accounts
        self.admin_url = admin_url
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
            except (InvalidEventError, orjson.JSONDecodeError, TypeError, ValueError) as exc:
                report.invalid += 1
                metrics.EVENTS.labels("unknown", "invalid").inc()
                log.error("skipped an invalid event (%d bytes): %s", len(bytes(raw)), type(exc).__name__)
        if not events:
            return report
        started = self.clock()
        for ev in events:  # the event's ts is when the collector received it
            metrics.EVENT_TO_WORKER_SECONDS.observe(max(0.0, started - ev.ts))
        events, dropped = await self.vault.open(events)
        for ev in dropped:  # a forgotten person's (or unreadable) sealed event: counted, never stored
            metrics.EVENTS.labels(ev.type.value, "forgotten").inc()
        if dropped:
            metrics.FORGOTTEN_DROPPED.labels("worker").inc(len(dropped))
        if not events:
            return report
        config = self.scoring.current
        outcome = await apply_batch(self.store, config, events, self.clock(), self.intent_override,
                                    self.icp.current if self.icp else None, self.model() if self.model else None,
                                    self.unique, self.versions())
        plans, results = outcome.plans, outcome.results
        routed: set[tuple[str, int]] = set()
        crossings = [(plans[i], r) for i, r in outcome.by_model]
        for plan, result in zip(plans, results, strict=True):
            if result.recycled:
                metrics.RECYCLED.inc()
                log.info("lead %s recycled to nurture: engagement fell below the recycle level", plan.lead_id)
            etype = plan.event.type.value
            if result.status in ("duplicate", "forgotten"):
                report.duplicates += result.status == "duplicate"
                metrics.EVENTS.labels(etype, result.status).inc()
                continue
            metrics.EVENTS.labels(etype, "fired" if result.status == "fired" else "scored").inc()
            if result.needs_routing:
                crossings.append((plan, result))
        todo: list[tuple[EventPlan, ApplyResult]] = []
        for plan, result in crossings:
            if (plan.lead_id, result.crossing) in routed:
                continue  # several events of one lead resumed the same crossing
            routed.add((plan.lead_id, result.crossing))
            report.fired += 1
            if result.status == "fired":
                metrics.CROSSINGS.labels(result.trigger if result.trigger in ("hand_raiser", "account_intent")
                                         else "rule").inc()
            todo.append((plan, result))
        # Different leads' crossings are independent (each pick is one atomic
        # Redis step), so they are routed concurrently, a bounded number at once.
        gate = asyncio.Semaphore(self.route_concurrency)

        async def route_one(plan: EventPlan, result: ApplyResult) -> None:
            async with gate:
                await self.route(plan, result, config)

        await asyncio.gather(*(route_one(p, r) for p, r in todo))
        report.routed += len(todo)
        by_event = {p.event.event_id: p for p in plans}
        for acct in outcome.accounts:
            if acct.status in ("fired", "resume") and acct.top:
                if await self.route_account(acct, by_event[acct.event_id], config):
                    report.routed += 1
        return report

    def versions(self) -> str:
        """The scoring and fit versions in force, as recorded on leads: ``scoring=v3:0381…;icp=5a2…``."""
        parts = [f"scoring={self.scoring.tag}"]
        if self.icp is not None:
            parts.append(f"icp={self.icp.tag}")
        return ";".join(parts)

    async def route_account(self, acct: AccountResult, plan: EventPlan, config: ScoringConfig) -> bool:
        """An account crossed its threshold: its most engaged lead becomes sales-ready."""
        ev = plan.event
        if acct.status == "fired":
            metrics.CROSSINGS.labels("account_intent").inc()
        intent = self.intent_override or config.intent
        detail = (f"account intent {acct.intent:.0f} reached {intent.threshold:.0f}: "
                  f"{acct.people} people and {acct.roles} roles active in {intent.window_days:g} days")
        reason = Reason(rule="account_intent", points=0.0, event_id=ev.event_id, event_type=ev.type.value,
                        ts=ev.ts, detail=detail)
        result = await self.store.force_ready(acct.top, f"acct:{acct.key_id}:{ev.event_id}", "account_intent",
                                              reason, self.clock())
        routed = False
        if result.needs_routing:
            await self.route(replace(plan, lead_id=acct.top, reasons=(), points=0.0, hand_raiser=False),
                             result, config)
            routed = True
        await self.store.account_done(acct.key_id, ev.event_id)
        return routed

    async def _owner_pick(self, lead: LeadView, facts: Mapping[str, object], assignment_id: str, lead_id: str,
                          crossing: int, at: datetime) -> tuple[Pick | None, RoutingDecision | None]:
        if self.accounts is None:
            return None, None
        routing = self.routing.current
        owner = owner_first(match_account(facts, self.accounts.current), routing)
        if owner.rep is None or owner.decision is None:
            return None, None
        pick = await assign_owner(self.store, routing.team(owner.rep.team), owner.rep, assignment_id, lead_id,
                                  crossing, at)
        return (pick, owner.decision) if pick is not None else (None, None)

    async def _account_context(self, lead_id: str) -> dict[str, object]:
        """The lead's account and who else there is active: for the alert."""
        key_id = (await self.store.lead_accounts([lead_id])).get(lead_id)
        if not key_id:
            return {}
        acct = await self.store.account_hash(key_id)
        others = [m for m, _ in await self.store.account_members(key_id, limit=6) if m != lead_id][:5]
        hashes = await self.store.lead_hashes(others)
        members = []
        for other in others:
            h = hashes.get(other, {})
            view = lead_view_from_hash(h)
            members.append({"name": view.display_name, "title": view.fields.get("job_title", ""),
                            "email": view.email or "", "last_active": float(h.get("last_seen", 0) or 0)})
        return {"name": acct.get("name", ""), "domain": acct.get("domain", ""),
                "intent": float(acct.get("intent", 0) or 0), "active_people": int(acct.get("active_people", 0) or 0),
                "members": members}

    async def sla_alert(self, kind: str, lead_id: str, assignment_id: str, rep: Rep) -> None:
        """An SLA step tells a rep: a reminder, a reassignment to them, or an escalation."""
        data = await self.store.lead_hash(lead_id)
        if not data:
            return
        config = self.scoring.current
        reasons = await self.store.lead_reasons(lead_id, limit=20)
        lead = lead_view_from_hash(data, reasons, now=self.clock(), half_life_s=config.half_life_s)
        crossing = int(data.get("crossing", 0) or 0)
        decision = RoutingDecision(team=rep.team, rule=data.get("rule", ""),
                                   rules_version=data.get("rules_version", ""), path=(f"sla:{kind}",))
        texts = {"assigned": "assigned to you: it was held while everyone who could take it was out of office",
                 "remind": "reminder: this lead is waiting for you to accept it",
                 "reassign": "reassigned to you: the previous rep did not accept it in time",
                 "escalate": f"escalated to the team: {data.get('owner_name', 'the rep')} has not accepted it"}
        # Each step is its own alert (its own sent-flags), so a reminder is never
        # swallowed as a duplicate of the original alert.
        alert_id = assignment_id if kind in ("reassign", "assigned", "manual_reassign") else f"{assignment_id}:{kind}"
        trigger, escalation = texts.get(kind, kind), {}
        links = self._links(lead_id, rep.rep_id, assignment_id, crossing)
        if kind == "escalation":  # to a manager (one alert each), not to the rep: no rep action links
            alert_id = f"{assignment_id}:escalation:{rep.rep_id}"
            team = self.routing.current.teams.get(data.get("team", ""))
            escalation = escalation_facts(data, team.sla if team else None, self.clock())
            trigger, links = escalation_text(escalation), {}
        elif kind == "manual_reassign":  # by hand (ops), with their reason
            trigger = (f"reassigned to you by {data['reassigned_by']}: "
                       f"{data.get('reassign_reason') or 'no reason given'}")
        assignment = Assignment(assignment_id=alert_id, lead_id=lead_id, crossing=crossing, rep=rep,
                                decision=decision, ts=self.clock())
        reengaged = await self._reengagement(lead_id, ApplyResult(status="scored", crossing=crossing, lead=data))
        record: dict[str, Any] = {}
        if kind in ("reassign", "assigned", "manual_reassign"):  # a routing decision: logged, and explained
            model = self.model() if self.model else None
            at = self.clock()
            explanation = await asyncio.to_thread(partial(explain_at_crossing, model, data, now=at))
            record = crossing_record(lead_id, crossing, data, ts=at, score=lead.score,
                                     threshold=config.threshold, trigger=data.get("last_trigger", ""),
                                     versions=self.versions(), reasons=reasons, half_life_s=config.half_life_s,
                                     model=model, explanation=explanation)
        alert = Alert(assignment=assignment, lead=lead, threshold=config.threshold,
                      trigger=trigger, recent=tuple(await self.store.lead_recent(lead_id, 10)),
                      account=await self._account_context(lead_id), links=links, reengagement=reengaged,
                      kind="escalation" if escalation else "lead", escalation=escalation,
                      model=record.get("explanation") or {})
        if await self._publish(lead_id, alert):
            await self._live().note("alert", lead=lead_id, rep=rep.rep_id, aid=alert_id, step=kind,
                                    team=rep.team, now=self.clock())
            if record:
                await log_decision(self.store.redis, route_record(
                    record, ts=self.clock(), team=rep.team, rule=f"sla:{kind}", rules_version=decision.rules_version,
                    rep_id=rep.rep_id))

    def _live(self) -> LiveFeed:
        """The console's live feed (router/storage/live.py), over the store's Redis."""
        feed = self.__dict__.get("_live_feed")
        if feed is None:
            feed = self.__dict__["_live_feed"] = LiveFeed(self.store.redis)
        return feed

    async def _publish(self, lead_id: str, alert: Alert) -> bool:
        """Publish the alert sealed under the lead's data key; False when the lead was forgotten meanwhile."""
        record = await self.vault.seal_alert(alert.to_dict())
        if record is None:
            metrics.FORGOTTEN_DROPPED.labels("alerts").inc()
            return False
        # Keyed by the subject (a keyed hash, one per person like the lead id, so still in order per
        # lead), not by the lead id: that is a plain digest of the email and outlives an erasure in Kafka.
        await self.publish_alert(str(record["subject"]), orjson.dumps(record))
        return True

    def _links(self, lead_id: str, rep_id: str, assignment_id: str, crossing: int) -> dict[str, str]:
        """One-time links for the rep the alert goes to, bound to the lead's current assignment (router/admin/links.py)."""
        if not self.admin_url or not self.link_secret or not rep_id or not assignment_id:
            return {}
        token = mint_action_token(self.link_secret, lead_id=lead_id, rep_id=rep_id, assignment_id=assignment_id,
                                  crossing=crossing, ttl_s=self.link_ttl_s, now=self.clock())
        page = f"{self.admin_url.rstrip('/')}/a/{token}"
        return {"lead": page, "accept": f"{page}?do=accept", "reject": f"{page}?do=reject"}

    async def _reengagement(self, lead_id: str, result: ApplyResult) -> Reengagement | None:
        """The re-engagement this crossing is, with what brought the lead back; None for a first crossing."""
        reengaged = reengagement_of(result.lead, result.crossing)
        if reengaged is None:
            return None
        recent = await self.store.lead_recent(lead_id)
        since = max(reengaged.last_outcome_ts, reengaged.last_crossing_ts)
        return replace(reengaged, back=comeback(recent, self.clock(), since))

    async def _notify_owner(self, plan: EventPlan, result: ApplyResult, config: ScoringConfig, lead: LeadView,
                            reengaged: Reengagement, rep: Rep, alert_id: str, started: float,
                            crossing: Mapping[str, Any]) -> Assignment | None:
        """The owner still holds the lead (sal, sql, opportunity): tell them; nothing is routed again."""
        routing = self.routing.current
        now = self.clock()
        decision = RoutingDecision(team=result.lead.get("team") or rep.team, rule=REENGAGE_RULE,
                                   rules_version=routing.version, path=(f"{REENGAGE_RULE}:holds-lead",))
        assignment = Assignment(assignment_id=alert_id, lead_id=plan.lead_id, crossing=result.crossing, rep=rep,
                                decision=decision, ts=now)
        links: dict[str, str] = {}  # already accepted: one-time links act only on unaccepted assignments
        alert = Alert(assignment=assignment, lead=lead, threshold=config.threshold,
                      trigger=trigger_text(result, plan.event, config.threshold), recent=result.recent,
                      event_ts=plan.event.ts, account=await self._account_context(plan.lead_id), links=links,
                      reengagement=reengaged, model=crossing.get("explanation") or {})
        if not await self._publish(plan.lead_id, alert):
            return None  # forgotten meanwhile: nothing is sent or recorded
        await self.store.reengage_notified(plan.lead_id, result.crossing, alert_id, rep.rep_id, rep.name, now)
        await log_decision(self.store.redis, route_record(crossing, ts=now, team=decision.team, rule=decision.rule,
                                                          rules_version=decision.rules_version, rep_id=rep.rep_id))
        metrics.REENGAGEMENTS.labels(reengaged.from_stage or "unknown", reengaged.route).inc()
        metrics.ROUTING_SECONDS.observe(time.perf_counter() - started)
        log.info("lead %s re-engaged in %s: told its owner %s", plan.lead_id, reengaged.from_stage, rep.rep_id)
        return assignment

    async def route(self, plan: EventPlan, result: ApplyResult, config: ScoringConfig) -> Assignment | None:
        """Route one crossing to a rep and publish its alert; safe to repeat.

        None when the lead is held (every rep who could take it is out of office):
        the crossing stays open; the lead's next event or the SLA ticker routes it
        once a rep is back.
        """
        started = time.perf_counter()
        crossing = await self._log_crossing(plan, result, config)
        if await self._held_for_review(plan, result):
            return None
        routing = self.routing.current
        lead = lead_view_from_hash(result.lead, result.reasons)
        facts = facts_from_lead(lead, {
            "hand_raiser": result.trigger == "hand_raiser",
            "form_id": plan.event.form_id,
            "source": plan.event.source,
        })
        assignment_id = f"{plan.lead_id}:{result.crossing}"
        at = datetime.fromtimestamp(self.clock(), UTC)
        owner_pick: Pick | None = None
        decision: RoutingDecision | None = None
        # A re-engagement goes to the rep who has the lead when that rep is not out
        # of office: told, not routed again, when they still hold it (sal, sql,
        # opportunity); given it back otherwise.  An away owner: the rules route it.
        reengaged = await self._reengagement(plan.lead_id, result)
        if reengaged is not None and reengaged.current_owner:
            rep0 = next((r for r in routing.reps if r.rep_id == reengaged.owner), None)
            if rep0 is None or await out_of_office(self.store, routing.team(rep0.team), rep0.rep_id, at):
                reengaged = replace(reengaged, route="owner_away")
            elif reengaged.from_stage in HELD_STAGES:
                return await self._notify_owner(plan, result, config, lead, replace(reengaged, route="owner_notified"),
                                                rep0, assignment_id, started, crossing)
            else:
                owner_pick = await assign_reengaged_owner(self.store, routing.team(rep0.team), rep0, assignment_id,
                                                          plan.lead_id, result.crossing, at)
                if owner_pick is not None:
                    decision = RoutingDecision(team=rep0.team, rule=REENGAGE_RULE, rules_version=routing.version,
                                               path=(f"{REENGAGE_RULE}:yes",))
                    reengaged = replace(reengaged, route="owner")
                else:
                    reengaged = replace(reengaged, route="owner_away")
        # An account with an available owner goes to that owner first; otherwise
        # the rules pick the team and the team's strategy picks the rep (skipping
        # reps who rejected the lead, are away or at capacity; never dropping it).
        if owner_pick is None:
            owner_pick, decision = await self._owner_pick(lead, facts, assignment_id, plan.lead_id, result.crossing,
                                                          at)
        pick: Pick | Held
        if owner_pick is None:
            decision = routing.decide(facts)
            pick = await assign_rep(self.store, routing.team(decision.team), assignment_id, plan.lead_id,
                                    result.crossing, at, teams=routing.teams,
                                    hand_raiser=bool(facts.get("hand_raiser")), rule=decision.rule,
                                    rules_version=decision.rules_version)
        else:
            pick = owner_pick
        assert decision is not None
        if isinstance(pick, Held):
            await self._live().note("held", lead=plan.lead_id, aid=assignment_id, team=pick.team,
                                    trigger=result.trigger, score=f"{result.after:.1f}", reason=pick.reason,
                                    now=self.clock())
            metrics.ROUTING_SECONDS.observe(time.perf_counter() - started)
            log.warning("lead %s held [%s] via rule %s: %s; routed when a rep is back",
                        plan.lead_id, pick.team, decision.rule, pick.reason)
            return None
        if pick.team != decision.team:  # the after-hours policy sent it to another team
            decision = replace(decision, team=pick.team, path=(*decision.path, f"after_hours:{pick.outcome}"))
        team = routing.team(pick.team)
        rep = pick.rep
        now = self.clock()
        assignment = Assignment(assignment_id=assignment_id, lead_id=plan.lead_id, crossing=result.crossing,
                                rep=rep, decision=decision, ts=now, available_at=pick.available_at,
                                placement=pick.outcome)
        alert = Alert(assignment=assignment, lead=lead, threshold=config.threshold,
                      trigger=trigger_text(result, plan.event, config.threshold,
                                           late=result.trigger == "hand_raiser" and not plan.hand_raiser),
                      recent=result.recent,
                      event_ts=plan.event.ts, account=await self._account_context(plan.lead_id),
                      links=self._links(plan.lead_id, rep.rep_id, assignment_id, result.crossing),
                      reengagement=reengaged, field_changes=await self._field_changes(plan.lead_id),
                      priority=result.trigger == "hand_raiser", model=crossing.get("explanation") or {})
        # Publish first, then close the crossing: a crash in between replays the
        # event, which resumes the crossing, gets the same rep and republishes;
        # the alert sender skips channels it already delivered on.
        if not await self._publish(plan.lead_id, alert):
            return None  # forgotten while it was being routed: nothing is sent or recorded
        await self.store.commit_assignment(plan.lead_id, result.crossing, assignment_id, rep.rep_id, rep.name,
                                           team.name, decision.rule, decision.rules_version, now)
        await self._live().note("crossing", lead=plan.lead_id, rep=rep.rep_id, aid=assignment_id, team=team.name,
                                trigger=result.trigger, score=f"{result.after:.1f}", rule=decision.rule, now=now)
        if reengaged is not None:
            metrics.REENGAGEMENTS.labels(reengaged.from_stage or "unknown", reengaged.route).inc()
            old_team = result.lead.get("team", "")
            if reengaged.current_owner and reengaged.owner != rep.rep_id and old_team:
                await self.store.release_open(old_team, reengaged.owner, plan.lead_id)
        await log_decision(self.store.redis, route_record(crossing, ts=now, team=team.name, rule=decision.rule,
                                                          rules_version=decision.rules_version, rep_id=rep.rep_id))
        metrics.ASSIGNMENTS.labels(team.name, rep.rep_id).inc()
        metrics.ROUTING_SECONDS.observe(time.perf_counter() - started)
        log.info("lead %s -> %s [%s] via rule %s (crossing %d, %s)", plan.lead_id, rep.rep_id, team.name,
                 decision.rule, result.crossing, result.trigger or "threshold")
        return assignment

    async def _log_crossing(self, plan: EventPlan, result: ApplyResult, config: ScoringConfig) -> dict[str, Any]:
        """Record what the worker knew at this crossing (router/worker/learning.py); returns the record."""
        model = self.model() if self.model else None
        at = self.clock()
        explanation = await asyncio.to_thread(partial(explain_at_crossing, model, result.lead, now=at))
        record = crossing_record(plan.lead_id, result.crossing, result.lead, ts=at, score=result.after,
                                 threshold=config.threshold, trigger=result.trigger or "threshold",
                                 versions=self.versions(), reasons=result.reasons, half_life_s=config.half_life_s,
                                 model=model, explanation=explanation)
        await log_decision(self.store.redis, record)
        return record

    # --- review queue and field provenance (issue 16.2, 16.3) -----------------------------------

    async def _held_for_review(self, plan: EventPlan, result: ApplyResult) -> bool:
        """True when this crossing is held for review (now, or since earlier): no rep, no alert.

        A crossing ops released is routed; one never held is checked here once
        (router/worker/review.py): a suspicious form crossing is held with its reasons.
        """
        lead = result.lead
        if lead.get("review") and lead.get("review_crossing") == str(result.crossing):
            return lead["review"] != "released"
        if self.review_below <= 0 or not gated(plan.event, result.trigger):
            return False
        value, reasons = crossing_trust(plan.event, lead)
        if value >= self.review_below:
            return False
        state = await hold_for_review(self.store, plan.lead_id, result.crossing,
                                      review_info(plan.event, value, reasons, result.trigger), self.clock())
        if state == "released":
            return False
        log.warning("lead %s held for review, not routed: trust %.2f (%s)", plan.lead_id,
                    value, ", ".join(reasons))
        return True

    async def _field_changes(self, lead_id: str, limit: int = 5) -> tuple[dict[str, object], ...]:
        """The lead's latest field changes and proposals (not first values), for the alert."""
        entries = await self.store.field_history(lead_id, 20)
        return tuple(e for e in entries if "old" in e)[:limit]

    async def route_released(self, lead_id: str) -> bool:
        """Route a lead ops released from review, normally; safe to repeat (True when routed now)."""
        data = await self.store.lead_hash(lead_id)
        crossing = data.get("pending_crossing", "")
        if not data or data.get("review") != "released" or not crossing.isdigit() \
                or data.get("review_crossing") != crossing:
            await self.store.review_routed(lead_id)  # routed, dismissed, forgotten or merged since
            return False
        config = self.scoring.current
        try:
            info = orjson.loads(data.get("review_info") or "{}")
        except orjson.JSONDecodeError:
            info = {}
        ev = info.get("event") if isinstance(info.get("event"), dict) else {}
        now = self.clock()
        form_id = ev.get("form_id") if isinstance(ev.get("form_id"), str) else None
        event = Event(event_id=data.get("pending_event") or f"review:{lead_id}",
                      type=EventType.FORM_FILL if form_id else EventType.TRACK,
                      ts=float(ev.get("ts") or now), source=str(ev.get("source") or "form"),
                      email=data.get("email"), form_id=form_id)
        stored, asof = float(data.get("score", 0) or 0), float(data.get("asof", 0) or 0)
        score = score_at(stored, asof, now, config.half_life_s) if asof > 0 else stored
        trigger = data.get("last_trigger", "")
        result = ApplyResult(status="resume", crossing=int(crossing), trigger=trigger, before=score, after=score,
                             lead=data, reasons=tuple(await self.store.lead_reasons(lead_id, limit=20)),
                             recent=tuple(await self.store.lead_recent(lead_id, 10)))
        plan = EventPlan(event=event, lead_id=lead_id, reasons=(), points=0.0, hand_raiser=trigger == "hand_raiser")
        await self.route(plan, result, config)
        await self.store.review_routed(lead_id)
        metrics.REVIEW.labels("routed").inc()
        return True

    async def review_tick(self) -> int:
        """Route the leads ops released (the worker's review timer); never raises."""
        return await route_released_leads(self.store, self.route_released)
