"""The review queue: suspicious hand-raisers are held for ops instead of going to a rep.

When a lead crosses the sales-ready line on a form fill (a hand-raiser, or a form that
pushed the score over), the pipeline (:meth:`router.worker.pipeline.Pipeline.route`)
asks :func:`crossing_trust` how far it believes a person sent it: the trust the
collector put on the event (HTTP-library or empty user agent, no or another site's
Origin, a disposable email domain, a filled honeypot, a rate-limited address; see
:mod:`scoring.trust`) and, from the lead, whether that person viewed any page of the
site before.  Below ``LEADROUTER_WORKER_REVIEW_TRUST_BELOW`` (0.5) the crossing is
**held**: no rep is picked, no alert goes out, nobody's capacity is used, and the lead
is listed in the review queue with the reasons (``GET /v1/review``, ``leadrouter
review list``).  A held crossing stays held whatever the lead does next (its next
events resume the crossing and find it held).

Ops then **release** it (``POST /v1/review/{lead_id}/release``, ``leadrouter review
release EMAIL``): the worker's review timer routes it normally within seconds, as if it
had never been held (the rules pick the team, the team's strategy the rep, the alert
goes out), or **dismiss** it as spam (``.../dismiss``): the crossing is closed (the lead
goes to nurture, not ready) and nobody is alerted.  Each step is one atomic Lua call on
the lead's slot (router/storage/lua/review.lua) and is recorded in the lead's history.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from models import Event, EventType
from router import metrics
from router.errors import RouterError
from router.storage.store import RedisStore
from scoring import trust as trust_mod

log = logging.getLogger(__name__)

MAX_UA = 200


class ReviewError(RouterError):
    """A review action that cannot apply: the lead is unknown, or not held for review."""


def gated(event: Event, trigger: str) -> bool:
    """Whether a crossing is checked for trust: hand-raisers, and crossings a form fill made."""
    return trigger == "hand_raiser" or event.type is EventType.FORM_FILL


def crossing_trust(event: Event, lead: Mapping[str, str]) -> tuple[float, tuple[str, ...]]:
    """The event's trust, lowered when the lead never viewed a page before raising a hand."""
    value, reasons = event.trust, event.trust_reasons
    views = lead.get("n:page_view") or "0"
    if event.type is EventType.FORM_FILL and (not views.isdigit() or int(views) == 0):
        value, reasons = trust_mod.with_reason(value, reasons, trust_mod.NO_PRIOR_PAGE_VIEW)
    return value, trust_mod.split_reasons(reasons)


def review_info(event: Event, value: float, reasons: tuple[str, ...], trigger: str) -> dict[str, Any]:
    """What the queue shows about a held crossing (and what a release routes it with)."""
    return {
        "trust": value, "reasons": list(reasons), "why": trust_mod.describe(reasons), "trigger": trigger,
        "event": {"event_id": event.event_id, "type": event.type.value, "source": event.source,
                  "form_id": event.form_id, "ts": event.ts, "ip": event.ip, "url": event.url,
                  "user_agent": (event.user_agent or "")[:MAX_UA]},
    }


async def hold(store: RedisStore, lead_id: str, crossing: int, info: Mapping[str, Any], now: float) -> str:
    """Hold the crossing for review: the review state afterwards (``held``, or ``released`` when ops
    already released it, or ``""`` when the crossing is no longer pending)."""
    out = await store.review_step("hold", lead_id, now, crossing=crossing, info=info)
    if out.get("status") == "held":
        metrics.REVIEW.labels("held").inc()
    if out.get("status") == "stale":
        return ""
    return str(out.get("state") or "")


def _entry(lead_id: str, data: Mapping[str, str]) -> dict[str, Any]:
    try:
        info = orjson.loads(data.get("review_info") or "{}")
    except orjson.JSONDecodeError:
        info = {}
    name = " ".join(x for x in (data.get("f:first_name", ""), data.get("f:last_name", "")) if x)
    return {
        "lead_id": lead_id, "email": data.get("email") or None, "name": name or data.get("f:name") or None,
        "company": data.get("f:company") or None, "state": data.get("review") or None,
        "crossing": int(data.get("review_crossing") or 0), "held_ts": float(data.get("review_ts") or 0),
        "trust": info.get("trust"), "reasons": info.get("reasons") or [], "why": info.get("why") or "",
        "trigger": info.get("trigger") or data.get("last_trigger") or "", "event": info.get("event") or {},
    }


async def list_held(store: RedisStore, limit: int = 100) -> list[dict[str, Any]]:
    """The leads held for review now, oldest first, with why."""
    ids = await store.review_queue(limit)
    hashes = await store.lead_hashes(ids)
    return [_entry(lid, hashes[lid]) for lid in ids if hashes.get(lid, {}).get("review") == "held"]


async def _act(store: RedisStore, op: str, lead_id: str, who: str, now: float) -> dict[str, Any]:
    data = await store.lead_hash(lead_id)
    if not data:
        msg = f"no lead {lead_id}; find it with `leadrouter review list` or GET /v1/review"
        raise ReviewError(msg)
    out = await store.review_step(op, lead_id, now, who=who)
    if out.get("status") == "not_held":
        state = data.get("review") or "not held"
        msg = (f"lead {lead_id} ({data.get('email', '')}) is {state} for review, not held; only a held "
               "lead can be released or dismissed (see `leadrouter review list`)")
        raise ReviewError(msg)
    metrics.REVIEW.labels(out["status"]).inc()
    log.info("review: lead %s %s by %s", lead_id, out["status"], who)
    return _entry(lead_id, await store.lead_hash(lead_id))


async def release(store: RedisStore, lead_id: str, who: str, now: float) -> dict[str, Any]:
    """Release a held lead: the worker routes it normally at its next review tick (every 2 s)."""
    return await _act(store, "release", lead_id, who, now)


async def dismiss(store: RedisStore, lead_id: str, who: str, now: float) -> dict[str, Any]:
    """Dismiss a held lead as spam: its crossing is closed (nurture, not ready); nobody is alerted."""
    return await _act(store, "dismiss", lead_id, who, now)


async def route_released(store: RedisStore, route: Callable[[str], Awaitable[bool]], limit: int = 100) -> int:
    """Route every released lead (the worker's review timer); the number routed.  Never raises."""
    routed = 0
    try:
        lead_ids = await store.review_released(limit)
    except Exception:
        log.exception("review timer: reading released leads failed; trying again at the next tick")
        return 0
    for lead_id in lead_ids:
        try:
            if await route(lead_id):
                routed += 1
        except Exception:  # left in the released set: tried again at the next tick
            log.exception("routing released lead %s failed; it will be retried", lead_id)
    return routed
