"""The scoring step of a batch: decode, plan (pure scoring), resolve identities, apply to Redis.

What :class:`router.worker.pipeline.Pipeline` runs first for every batch, and what backtests,
benchmarks and tests run without routing: decode the raw events, score each one (pure),
resolve who each belongs to, apply the whole batch to Redis in one pipelined round trip
(lead Lua, then account Lua), and score the touched leads with the active model.  Routing
and alerts for the leads that crossed are in ``pipeline.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import orjson

from models import (
    FORM_FIELDS,
    AccountPlan,
    AccountResult,
    ApplyResult,
    Event,
    EventPlan,
    EventType,
)
from router.storage.store import LeadRules, RedisStore
from router.worker.accounts import account_for
from router.worker.identity import is_known_person, resolve_batch, used_links
from scoring import (
    IcpConfig,
    ScoringConfig,
    classify_title,
    fit_grade,
    is_hand_raiser,
    score_event_hits,
    total_points,
)
from scoring.account_intent import AccountIntentConfig
from scoring.features import features_from_lead
from scoring.model import LeadModel

log = logging.getLogger(__name__)


def decode(raw: bytes | str | dict[str, object]) -> Event:
    data = raw if isinstance(raw, dict) else orjson.loads(raw)
    return Event.from_dict(data)


def event_fields(ev: Event) -> dict[str, str]:
    return {**ev.fields, **{k: v for k, v in ev.traits.items() if k in TRAIT_FIELDS}}


def plan_batch(events: Sequence[Event], lead_ids: Sequence[str], config: ScoringConfig,
               icp: IcpConfig | None = None, stored: Mapping[str, Mapping[str, str]] | None = None,
               verified: Sequence[bool] | None = None) -> list[EventPlan]:
    """What each event is worth and to which lead (from the identity resolution).

    When an event brings fields the fit grade is based on, the grade is
    recomputed from the lead's stored fields (``stored``: lead id -> fields)
    overlaid with everything the batch has said so far; an unverified event
    (``verified``, see :func:`fields_verified`) only adds fields the lead does not
    have, as apply_event.lua does.
    """
    plans: list[EventPlan] = []
    known: dict[str, dict[str, str]] = {k: dict(v) for k, v in (stored or {}).items()}
    trusted = list(verified) if verified is not None else [True] * len(events)
    for ev, lead_id, ok in zip(events, lead_ids, trusted, strict=True):
        hits = score_event_hits(ev, config)
        reasons = tuple(h.reason for h in hits)
        fields = event_fields(ev)
        grade = None
        if icp is not None and FIT_FIELDS.intersection(fields):
            merged = known.setdefault(lead_id, {})
            merged.update(fields if ok else {k: v for k, v in fields.items() if k not in merged})
            grade = fit_grade(merged, icp)
        plans.append(EventPlan(event=ev, lead_id=lead_id, reasons=reasons, points=total_points(reasons),
                               hand_raiser=is_hand_raiser(reasons), fields=fields, hits=hits, grade=grade,
                               verified=ok, field_source=field_source(ev, ok)))
    return plans


# Sources anyone on the internet can send as (no secret): their fields are a proposal for a lead
# that already has a value, unless they come from the lead's own browser.
UNVERIFIED_SOURCES: frozenset[str] = frozenset({"form", "snowplow", "pixel", "email"})


def fields_verified(event: Event, lead_id: str, visitors: Mapping[str, str]) -> bool:
    """May this event's fields replace what the lead said before?

    The verification model: an SDK call made with a write key (Segment, RudderStack:
    any source but the public ones in :data:`UNVERIFIED_SOURCES`) is the customer's own
    system speaking, so yes.  A form post (or Snowplow event) is verified only when it
    comes from the lead's own browser: its visitor id was already linked to this lead
    before this batch (``visitors``: visitor id -> lead id as stored).  A form from a new
    browser or a stranger with the lead's email is a proposal: kept beside the lead's
    value, with its source and time, and shown (lead explain, the admin API, the alert).
    """
    if event.source not in UNVERIFIED_SOURCES:
        return True
    return bool(event.visitor_id) and visitors.get(event.visitor_id or "") == lead_id


def field_source(event: Event, verified: bool) -> str:
    """How the field history names where a value came from, e.g. "form demo-request (unverified)"."""
    what = f"{event.source} {event.form_id}" if event.form_id else f"{event.source} {event.type.value}"
    return f"{what} ({'verified' if verified else 'unverified'})"


# Lead fields the fit grade (scoring/icp.yaml) is computed from.
FIT_FIELDS: frozenset[str] = frozenset({"industry", "employees", "country", "job_title", "company"})


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


@dataclass
class BatchOutcome:
    plans: list[EventPlan]
    results: list[ApplyResult]
    accounts: list[AccountResult]
    # Leads the model's new probability made sales-ready: (index of the lead's last plan, result).
    by_model: list[tuple[int, ApplyResult]] = field(default_factory=list)


def job_title(ev: Event) -> str:
    return ev.fields.get("job_title") or ev.traits.get("title") or ev.traits.get("job_title") or ""


def role_of(ev: Event) -> str:
    """The buying-committee role (department) an event's person holds, when it says."""
    title = job_title(ev)
    if not title:
        return ""
    _, department = classify_title(title)
    return department or ""


async def plan_accounts(store: RedisStore, plans: Sequence[EventPlan]) -> tuple[list[AccountPlan], dict[str, str]]:
    """Tie leads to accounts from what events say, and roll every event of a
    lead with an account up to it: the account plans, and the ties to write
    (lead id -> account key id; written with the batch, RedisStore.apply_with_accounts)."""
    refs = [account_for(p.event) for p in plans]
    unknown = [p.lead_id for p, ref in zip(plans, refs, strict=True) if ref is None and not p.lead_id.startswith("A")]
    existing = await store.lead_accounts(unknown)
    links: dict[str, str] = {}
    out: list[AccountPlan] = []
    for plan, ref in zip(plans, refs, strict=True):
        lead_id = plan.lead_id
        if ref is not None:
            key_id, name, domain = ref.key_id, ref.name, ref.domain
            links[lead_id] = key_id
        else:
            key_id, name, domain = links.get(lead_id) or existing.get(lead_id) or "", "", ""
            if key_id and not is_known_person(lead_id):
                links[lead_id] = key_id  # re-written: an anonymous profile's tie expires with it
        if key_id and plan.event.type is not EventType.PAGE_PING:  # a heartbeat is no account activity
            ev = plan.event
            out.append(AccountPlan(key_id=key_id, event_id=ev.event_id, ts=ev.ts, points=plan.points,
                                   lead_id=lead_id, role=role_of(ev), known=is_known_person(lead_id),
                                   name=name, domain=domain))
    return out, links


async def apply_batch(store: RedisStore, config: ScoringConfig, events: Sequence[Event], now: float,
                      intent: AccountIntentConfig | None = None, icp: IcpConfig | None = None,
                      model: LeadModel | None = None, unique: frozenset[str] = frozenset({"email"}),
                      versions: str = "") -> BatchOutcome:
    """Resolve identities, merge and link, then score leads and accounts in one round trip.

    Round trips per batch: identities; stored fields of leads whose fit grade
    changes (only when some event brings such fields); the leads' account ties;
    the scoring pipeline itself, which also writes the batch's identity links and
    account ties ahead of the scripts; and, with an active model, the touched leads'
    state and their new probabilities.  ``versions`` (the scoring and ICP
    versions in force) is recorded on every lead scored and on each crossing.
    """
    intent = intent or config.intent
    visitors, users = await store.resolve_identities(*identify(events))
    resolution = resolve_batch(list(events), visitors, users, unique)
    lead_ids = list(resolution.lead_ids)
    if resolution.merges:  # once per identification; pipelined in dependency waves
        statuses = await store.merge_many(resolution.merges, half_life_s=config.half_life_s, now=now)
        # This batch's events of a profile merged just now go straight to the lead it joined, in
        # event order (re-applied after the rest as 'moved', a visit's page views would come after
        # its later events, and sessions and the last activity depend on order).
        into = {m.source: m.target for m, st in zip(resolution.merges, statuses, strict=True)
                if st in ("frozen", "done", "empty")}
        for i, lid in enumerate(lead_ids):
            seen: set[str] = set()
            while lid in into and lid not in seen:
                seen.add(lid)
                lid = into[lid]
            lead_ids[i] = lid
    for c in resolution.conflicts:
        await store.log_identity("conflict", identifier=c.identifier, previous=c.previous, current=c.current,
                                 event_id=c.event_id, ts=c.ts)
        log.info("kept two people apart: a %s identifier of lead %s now names lead %s",
                 c.identifier.partition(":")[0] or "shared", c.previous, c.current)
    stored: dict[str, dict[str, str]] = {}
    if icp is not None:
        grading = [lid for ev, lid in zip(events, resolution.lead_ids, strict=True)
                   if FIT_FIELDS.intersection(event_fields(ev))]
        if grading:
            hashes = await store.lead_hashes(grading)
            stored = {lid: {k[2:]: v for k, v in h.items() if k.startswith("f:")} for lid, h in hashes.items()}
    verified = [fields_verified(ev, lid, visitors) for ev, lid in zip(events, resolution.lead_ids, strict=True)]
    plans = plan_batch(events, resolution.lead_ids, config, icp, stored, verified)
    plans = [p if p.lead_id == lid else replace(p, lead_id=lid) for p, lid in zip(plans, lead_ids, strict=True)]
    account_plans, ties = await plan_accounts(store, plans)
    rules = LeadRules.from_config(config, versions)
    results, accounts = await store.apply_with_accounts(
        plans, account_plans, threshold=config.threshold, half_life_s=config.half_life_s, now=now, intent=intent,
        rules=rules, links=resolution.links, used_links=used_links(visitors, users), lead_accounts=ties)
    moved = [i for i, r in enumerate(results) if r.status == "moved"]
    if moved:
        # A profile was merged after we resolved it (earlier in this batch, or
        # by another worker): those events go to the lead it now belongs to.
        moved_plans = [replace(plans[i], lead_id=results[i].moved_to) for i in moved]
        moved_accounts, moved_ties = await plan_accounts(store, moved_plans)
        again, more_accounts = await store.apply_with_accounts(
            moved_plans, moved_accounts, threshold=config.threshold, half_life_s=config.half_life_s, now=now,
            intent=intent, rules=rules, lead_accounts=moved_ties)
        accounts += more_accounts
        for i, plan, r in zip(moved, moved_plans, again, strict=True):
            plans[i], results[i] = plan, r
    outcome = BatchOutcome(plans, results, accounts)
    if model is not None:
        outcome.by_model = await _score_with_model(store, model, plans, results, rules, now)
    return outcome


async def _score_with_model(store: RedisStore, model: LeadModel, plans: Sequence[EventPlan],
                            results: Sequence[ApplyResult], rules: LeadRules, now: float
                            ) -> list[tuple[int, ApplyResult]]:
    """One batched model call for the known leads this batch touched."""
    last: dict[str, int] = {}
    for i, (plan, result) in enumerate(zip(plans, results, strict=True)):
        if result.status in ("scored", "fired") and is_known_person(plan.lead_id):
            last[plan.lead_id] = i
    if not last:
        return []
    hashes = await store.lead_hashes(list(last))
    lead_ids = [lid for lid in last if hashes.get(lid)]
    rows = [features_from_lead(hashes[lid], model.features, now=now) for lid in lead_ids]  # recency as of now
    probs = await asyncio.to_thread(model.predict_proba, rows)
    batch_id = plans[-1].event.event_id
    updated = await store.set_probabilities(dict(zip(lead_ids, probs, strict=True)), rules, now, batch_id)
    return [(last[lid], r) for lid, r in updated.items() if r.needs_routing]
