"""The signed inbound CRM webhook: ``POST /v1/webhooks/crm`` (issue 12.2).

A CRM reports what happened to a lead; the lead moves through the lifecycle
transitions that outcome implies (router/worker/lifecycle.py), acting as its
owner, so the outcome lands where the CLI, the admin API and alert links put
theirs (the won/lost training row on ``lr:outcomes``, the lead's history).

=======================  ==============================================================
event                    transitions, from the lead's stage
=======================  ==============================================================
sales.accepted           accept (mql -> sal)
sales.rejected           reject with ``reason`` (one of ``lifecycle.reject_reasons``)
opportunity.converted    mql: accept; then convert to opportunity (none when it is one)
opportunity.won          as converted, then won
opportunity.lost         mql: accept; sal: convert to sql; then lost
=======================  ==============================================================

Authentication is the signature, not a bearer token: ``X-LeadRouter-Signature:
sha256=<hex>`` is HMAC-SHA256 with the shared secret
(``LEADROUTER_ADMIN_CRM_WEBHOOK_SECRET``) over ``<timestamp>.`` + the raw body,
``<timestamp>`` being the ``X-LeadRouter-Timestamp`` header (unix seconds).  Checks,
in order: the secret is configured (503), the body is at most
``crm_webhook_max_bytes`` (413, before it is read further), the timestamp is
present, a number and within ``crm_webhook_window_s`` of now (401), the
signature matches (``hmac.compare_digest``, 401), the delivery was not seen
before (409: its signature is remembered for twice the window, so a replay
inside the window is refused and one outside it fails the timestamp check),
the JSON names only known fields with valid values (400 naming the field), the
lead exists (404).  A delivery that was not applied (any error after the replay
check) releases its claim, so the CRM's byte-identical retry is taken.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from typing import Any, Final

import orjson
from aiohttp import web

from models import Stage
from router.admin.core import AdminCore
from router.admin.http import ApiError, json_response
from router.admin.lifecycle import apply_action
from router.storage import keys
from router.worker import lifecycle

log = logging.getLogger(__name__)

TIMESTAMP_HEADER: Final = "X-LeadRouter-Timestamp"
SIGNATURE_HEADER: Final = "X-LeadRouter-Signature"
EVENTS: Final = ("opportunity.won", "opportunity.lost", "opportunity.converted", "sales.accepted", "sales.rejected")
FIELDS: Final = ("event", "lead", "reason", "id")
_MAX_LEAD: Final = 320
_MAX_REASON: Final = 500


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: what a CRM sends in ``X-LeadRouter-Signature``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def plan_steps(event: str, stage: str) -> list[tuple[str, str | None]]:
    """The (action, convert target) steps that take a lead at ``stage`` to what ``event`` reports."""
    if event == "sales.accepted":
        return [("accept", None)]
    if event == "sales.rejected":
        return [("reject", None)]
    steps: list[tuple[str, str | None]] = []
    if stage == Stage.MQL.value:
        steps.append(("accept", None))
        stage = Stage.SAL.value
    if event == "opportunity.lost":
        if stage == Stage.SAL.value:
            steps.append(("convert", Stage.SQL.value))
        return [*steps, ("lost", None)]
    if stage in (Stage.SAL.value, Stage.SQL.value):
        steps.append(("convert", Stage.OPPORTUNITY.value))
    if event == "opportunity.won":
        steps.append(("won", None))
    return steps


class WebhookHandlers(AdminCore):
    """``POST /v1/webhooks/crm``; a mixin of :class:`router.admin.app.Admin`."""

    async def crm_webhook(self, request: web.Request) -> web.StreamResponse:
        cfg = self.settings.admin
        secret = cfg.crm_webhook_secret
        if len(secret) < 16:
            raise ApiError(503, "webhook_disabled", "the CRM webhook has no secret (or one under 16 characters); "
                                                    "set LEADROUTER_ADMIN_CRM_WEBHOOK_SECRET to a long random value")
        body = await self._capped_body(request, cfg.crm_webhook_max_bytes)
        ts_text = request.headers.get(TIMESTAMP_HEADER, "").strip()
        if not ts_text:
            raise ApiError(401, "missing_timestamp", f"the {TIMESTAMP_HEADER} header (unix seconds) is missing")
        try:
            ts = float(ts_text)
        except ValueError:
            ts = math.nan
        if not math.isfinite(ts):
            raise ApiError(401, "bad_timestamp", f"{TIMESTAMP_HEADER} {ts_text[:40]!r} is not unix seconds; send "
                                                 "e.g. 1764650000")
        now = self.clock()
        if abs(now - ts) > cfg.crm_webhook_window_s:
            raise ApiError(401, "stale_timestamp", f"{TIMESTAMP_HEADER} is {now - ts:+.0f} s from the server's "
                                                   f"clock, outside the {cfg.crm_webhook_window_s:g} s window; send "
                                                   "the current time and check the CRM's clock")
        sent = request.headers.get(SIGNATURE_HEADER, "").strip()
        expected = signature(secret, ts_text, body)
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise ApiError(401, "bad_signature", f"{SIGNATURE_HEADER} does not match: sign '<timestamp>.' + the raw "
                                                 "body with HMAC-SHA256 and the shared secret, as sha256=<hex>")
        seen = keys.webhook_seen(hashlib.sha256(expected.encode()).hexdigest())
        if not await self.redis.set(seen, str(now), nx=True, ex=max(1, int(2 * cfg.crm_webhook_window_s))):
            raise ApiError(409, "replayed", "this delivery (same timestamp and body) was received before; send a "
                                            "new delivery with the current timestamp")
        try:
            return await self._apply(body)
        except BaseException:
            # Not applied (a bad field, an unknown lead, Redis failing midway): the claim is released, so
            # the CRM's byte-identical retry is taken rather than refused as a replay.
            await self.redis.delete(seen)
            raise

    async def _apply(self, body: bytes) -> web.StreamResponse:
        data = self._fields(body)
        event, lead, reason = data["event"], data["lead"], data.get("reason", "")
        lead_id = lifecycle.lead_id_of(lead)
        state = await self.store.lead_hash(lead_id)
        if not state or state.get("forgotten") == "1":
            raise ApiError(404, "unknown_lead", f"no lead {lead[:80]!r}; the 'lead' field takes the lead's email or "
                                                "its lead id")
        owner = state.get("owner", "")
        steps = plan_steps(event, state.get("stage", ""))
        done: list[dict[str, Any]] = []
        for action, to in steps:
            result = await apply_action(self, action, lead_id, owner, reason=reason if action in
                                        ("reject", "won", "lost") else "", to=to)
            done.append(result.to_dict())
        log.info("CRM webhook %s for lead %s (delivery %s): %s", event, lead_id, str(data.get("id", ""))[:80],
                 " -> ".join(a for a, _ in steps) or "no change")
        return json_response({"ok": True, "lead_id": lead_id, "event": event, "steps": done})

    @staticmethod
    async def _capped_body(request: web.Request, limit: int) -> bytes:
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "body_too_large", f"the body is {request.content_length} bytes, over the "
                                                  f"{limit}-byte limit (LEADROUTER_ADMIN_CRM_WEBHOOK_MAX_BYTES); "
                                                  "send one outcome per call")
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"the body is over the {limit}-byte limit "
                                                  "(LEADROUTER_ADMIN_CRM_WEBHOOK_MAX_BYTES); send one outcome per call")
        return body

    @staticmethod
    def _fields(body: bytes) -> dict[str, str]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ApiError(400, "bad_json", "the body is not JSON; send an object like "
                                            '{"event": "opportunity.won", "lead": "ann@example.com"}') from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_json", "the body must be a JSON object with 'event' and 'lead'")
        unknown = [k for k in data if k not in FIELDS]
        if unknown:
            raise ApiError(400, "unknown_field", f"unknown field {str(unknown[0])[:40]!r}; the fields are "
                                                 f"{', '.join(FIELDS)}")
        out: dict[str, str] = {}
        for name, limit in (("event", 40), ("lead", _MAX_LEAD), ("reason", _MAX_REASON), ("id", 200)):
            if name not in data:
                continue
            value = data[name]
            if not isinstance(value, str):
                raise ApiError(400, "bad_type", f"field {name!r} must be a string, got {type(value).__name__}")
            if len(value) > limit:
                raise ApiError(400, "too_long", f"field {name!r} is {len(value)} characters; at most {limit}")
            out[name] = value.strip()
        for name in ("event", "lead"):
            if not out.get(name):
                raise ApiError(400, "missing_field", f"field {name!r} is required")
        if out["event"] not in EVENTS:
            raise ApiError(400, "bad_value", f"field 'event' is {out['event'][:40]!r}; use one of {', '.join(EVENTS)}")
        if out["event"] == "sales.rejected" and not out.get("reason"):
            raise ApiError(400, "missing_field", "field 'reason' is required for sales.rejected (one of the "
                                                 "configured reject reasons)")
        return out
