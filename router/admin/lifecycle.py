"""Lifecycle endpoints: a lead's owner accepts, rejects, converts, wins or loses it (``POST /v1/leads/{id}/...``)."""

from __future__ import annotations

import logging

from aiohttp import web

from router import metrics
from router.admin.audit import audit
from router.admin.auth import Role
from router.admin.core import AdminCore
from router.admin.http import ApiError, json_response
from router.admin.openapi import MAX_NOTE, MAX_REP_ID, Operation, operation
from router.storage.audit import Via
from router.worker import lifecycle
from router.worker.reassign import ReassignResult, UnknownRepError, reassign

log = logging.getLogger(__name__)

async def apply_action(admin: AdminCore, action: str, lead_id: str, rep_id: str, *, reason: str = "",
                       to: str | None = None, via: Via = "api", who: str = "") -> lifecycle.TransitionResult:
    """Move the lead through the lifecycle under the policy in force, and audit it (``lead.<action>``);
    a refusal is a 404, 422 or 409 ApiError (and no audit entry)."""
    policy = (await admin.config()).lifecycle
    try:
        result = await lifecycle.apply(admin.store, action, lead_id, rep_id, policy=policy, reason=reason, to=to,
                                       now=admin.clock())
    except lifecycle.UnknownLeadError as exc:
        raise ApiError(404, exc.code, str(exc)) from None
    except lifecycle.InvalidReasonError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    except lifecycle.LifecycleError as exc:  # not_owner, bad_stage, ...
        raise ApiError(409, exc.code, str(exc)) from None
    detail = f"{result.from_stage} -> {result.to_stage}" + (f": {reason}" if reason else "")
    await audit(admin, f"lead.{action}", via=via, lead_id=lead_id, target=rep_id, detail=detail, who=who)
    return result


async def apply_reassign(admin: AdminCore, lead_id: str, to_rep: str, *, reason: str, by: str,
                         via: Via = "api") -> ReassignResult:
    """Ops move an open lead to another rep (router.worker.reassign), audited as ``lead.reassign``;
    a refusal is a 404, 422 or 409 ApiError."""
    try:
        result = await reassign(admin.store, await admin.config(), lead_id, to_rep, reason=reason, by=by,
                                now=admin.clock())
    except lifecycle.UnknownLeadError as exc:
        raise ApiError(404, exc.code, str(exc)) from None
    except UnknownRepError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    except lifecycle.LifecycleError as exc:  # out of office, same rep, stage, conflict
        raise ApiError(409, exc.code, str(exc)) from None
    await audit(admin, "lead.reassign", via=via, lead_id=lead_id, target=to_rep,
                detail=f"{result.from_rep} -> {result.to_rep}: {reason}")
    return result


class LifecycleHandlers(AdminCore):
    """Handlers of the lead actions (POST /v1/leads/{id}/ACTION and /reassign); a mixin of :class:`router.admin.app.Admin`."""

    async def reassign(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/leads/{id}/reassign (ops): move an open lead to another rep, with a reason."""
        self.query(request, ())
        principal = self.principal(request)
        lead_id, _ = await self.lead(request)
        body = await self.body(request, operation("reassign"), ("to", "reason"))
        to_rep = (body.text("to", max_len=MAX_REP_ID, required=True, min_len=1) or "").strip()
        reason = (body.text("reason", max_len=MAX_NOTE, required=True, min_len=1) or "").strip()
        result = await apply_reassign(self, lead_id, to_rep, reason=reason, by=principal.name or "ops")
        log.info("lead %s reassigned %s -> %s by %s: %s", lead_id, result.from_rep, result.to_rep, principal.name,
                 reason)
        return json_response(result.to_dict())

    async def transition(self, request: web.Request, op: Operation, action: str) -> web.StreamResponse:
        self.query(request, ())
        principal = self.principal(request)
        lead_id, data = await self.lead(request)
        allowed = {"accept": ("rep_id",), "reject": ("reason", "rep_id"), "convert": ("to", "rep_id"),
                   "won": ("reason", "rep_id"), "lost": ("reason", "rep_id")}[action]
        body = await self.body(request, op, allowed)
        rep_id = body.text("rep_id", max_len=MAX_REP_ID, min_len=1)
        reason = ""
        to: str | None = None
        if action == "reject":
            reason = (body.text("reason", max_len=100, required=True, min_len=1) or "").strip()
        elif action in ("won", "lost"):
            reason = (body.text("reason", max_len=MAX_NOTE) or "").strip()
        elif action == "convert":
            to = body.text("to", max_len=20)
            if to is not None and to not in ("sql", "opportunity"):
                raise ApiError(400, "bad_value", f"'to' {to[:20]!r} must be sql or opportunity (or left out for the "
                                                 "next stage)")
        if principal.role is Role.REP:
            if rep_id is not None and rep_id != principal.rep_id:
                metrics.ADMIN_AUTH_FAILURES.labels("forbidden").inc()
                raise ApiError(403, "not_your_rep", f"a rep token acts as its own rep ({principal.rep_id!r}); drop "
                                                    "rep_id")
            acting = principal.rep_id
        else:
            acting = rep_id if rep_id is not None else data.get("owner", "")
        result = await apply_action(self, action, lead_id, acting, reason=reason, to=to)
        log.info("lead %s %s by %s (token %s, %s)", lead_id, action, acting, principal.name, principal.role.value)
        return json_response(result.to_dict())

