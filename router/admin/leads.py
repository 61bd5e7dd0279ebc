"""Lead endpoints: find, show, explain a score, and the timeline (``GET /v1/leads...``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from aiohttp import web

from router import metrics
from router.admin.audit import audit
from router.admin.auth import Role
from router.admin.core import LEAD_ID, AdminCore
from router.admin.http import ApiError, as_str, json_response, num, opt_num
from router.admin.openapi import MAX_EMAIL, MAX_REP_ID
from router.storage import keys
from router.storage.model_registry import ActiveModelWatcher
from router.worker import review
from router.worker.learning import explain_at_crossing
from scoring import ScoringConfig, score_at


class LeadHandlers(AdminCore):
    """Handlers of the lead reads (GET /v1/leads...); a mixin of :class:`router.admin.app.Admin`."""

    def lead_state(self, lead_id: str, data: Mapping[str, str], rejected: set[str], now: float,
                   scoring: ScoringConfig) -> dict[str, Any]:
        stored, asof = num(data.get("score")), num(data.get("asof"))
        score_now = score_at(stored, asof, now, scoring.half_life_s) if asof > 0 else stored
        assignment = None
        if data.get("assignment_id"):
            assignment = {"assignment_id": data["assignment_id"], "team": data.get("team", ""),
                          "rule": data.get("rule", ""), "rules_version": data.get("rules_version", ""),
                          "assigned_ts": opt_num(data.get("assigned_ts")),
                          "accepted_by": data.get("accepted_by") or None}
        return {
            "lead_id": lead_id, "email": data.get("email") or None, "stage": data.get("stage", "anonymous"),
            "score_now": score_now, "score": stored, "score_asof": asof, "threshold": scoring.threshold,
            "ready": data.get("ready") == "1", "owner": data.get("owner") or None,
            "owner_name": data.get("owner_name") or None, "team": data.get("team") or None,
            "assignment": assignment, "rejected_by": sorted(rejected),
            "fields": {k[2:]: v for k, v in data.items() if k.startswith("f:")},
            "events": int(num(data.get("events"))), "first_seen": opt_num(data.get("first_seen")),
            "last_seen": opt_num(data.get("last_seen")), "escalated": data.get("escalated") == "1",
            "proposed_fields": {k[3:]: v for k, v in data.items() if k.startswith("fp:")},
            "review": data.get("review") or None,
        }

    async def lead_states(self, lead_ids: Sequence[str], owner: str | None = None) -> list[dict[str, Any]]:
        """States of several leads in one round trip; with ``owner`` only the leads that rep owns now."""
        if not lead_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for lid in lead_ids:
            pipe.hgetall(keys.lead(lid))
            pipe.smembers(keys.rejected(lid))
        raw = await pipe.execute()
        scoring, now = await self.scoring_now(), self.clock()
        out: list[dict[str, Any]] = []
        for i, lid in enumerate(lead_ids):
            data = {as_str(k): as_str(v) for k, v in raw[2 * i].items()}
            if not data or (owner is not None and data.get("owner", "") != owner):
                continue
            out.append(self.lead_state(lid, data, {as_str(x) for x in raw[2 * i + 1]}, now, scoring))
        return out

    async def find_leads(self, request: web.Request) -> web.StreamResponse:
        query = self.query(request, ("email", "owner", "limit"))
        principal = self.principal(request)
        limit = self.limit(query, 50)
        email, owner = query.get("email"), query.get("owner")
        if email is not None and owner is not None:
            raise ApiError(400, "bad_parameter", "give email= or owner=, not both")
        if email is not None:
            email = email.strip()
            if "@" not in email or len(email) > MAX_EMAIL or len(email) < 3:
                raise ApiError(400, "bad_parameter", f"email={email[:100]!r} is not an email address; write it as "
                                                     "name@example.com")
            lead_id = keys.lead_id_for_email(email)
            data = await self.store.lead_hash(lead_id)
            if not data:
                return json_response({"leads": []})
            self.check_owner(principal, lead_id, data)
            return json_response({"leads": await self.lead_states([lead_id])})
        if owner is None:
            if principal.role is not Role.REP:
                raise ApiError(400, "missing_parameter", "give email=ADDRESS to find a lead, or owner=REP_ID for a "
                                                         "rep's open leads")
            owner = principal.rep_id
        if len(owner) > MAX_REP_ID or not owner.strip():
            raise ApiError(400, "bad_parameter", f"owner must be a rep id of 1 to {MAX_REP_ID} characters")
        if principal.role is Role.REP and owner != principal.rep_id:
            metrics.ADMIN_AUTH_FAILURES.labels("forbidden").inc()
            raise ApiError(403, "not_your_leads", f"a rep token lists only its own leads (owner={principal.rep_id})")
        raw: list[Any] = await self.redis.zrevrange(keys.rep_leads(owner), 0, limit - 1)
        ids = [as_str(x) for x in raw if isinstance(x, (bytes, str)) and LEAD_ID.match(as_str(x))]
        return json_response({"leads": await self.lead_states(ids, owner=owner)})

    async def get_lead(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        lead_id, _ = await self.lead(request)
        states = await self.lead_states([lead_id])
        if not states:
            raise ApiError(404, "unknown_lead", f"lead {lead_id} disappeared while being read; try again")
        return json_response(states[0])

    async def explain_lead(self, request: web.Request) -> web.StreamResponse:
        limit = self.limit(self.query(request, ("limit",)), 10)
        lead_id, data = await self.lead(request)
        reasons = await self.store.lead_reasons(lead_id)
        scoring, now = await self.scoring_now(), self.clock()
        points = {rule.name: rule.points for rule in scoring.rules}
        hl = scoring.half_life_s
        stored, asof = num(data.get("score")), num(data.get("asof"))
        score_now = score_at(stored, asof, now, hl) if asof > 0 else stored
        parts: dict[str, dict[str, Any]] = {}
        items: list[dict[str, Any]] = []
        for r in reasons:
            worth = score_at(r.points, r.ts, now, hl) if r.ts > 0 else r.points
            part = parts.setdefault(r.rule, {"rule": r.rule, "events": 0, "points_earned": 0.0, "points_now": 0.0,
                                             "rule_points": points.get(r.rule)})
            part["events"] += 1
            part["points_earned"] += r.points
            part["points_now"] += worth
            items.append({"rule": r.rule, "detail": r.detail, "event_type": r.event_type, "event_id": r.event_id,
                          "ts": r.ts, "points": r.points, "points_now": worth, "hand_raiser": r.hand_raiser})
        explained = sum(p["points_now"] for p in parts.values())
        items.sort(key=lambda x: (-abs(x["points_now"]), -x["ts"]))
        return json_response({
            "lead_id": lead_id, "now": now, "score_now": score_now, "score": stored, "score_asof": asof,
            "threshold": scoring.threshold, "half_life_days": scoring.half_life_days,
            "scoring_version": self.scoring.tag, "ready": data.get("ready") == "1",
            "parts": sorted(parts.values(), key=lambda p: (-abs(p["points_now"]), p["rule"])),
            "explained": explained, "residual": score_now - explained, "reasons": items[:limit],
            "field_history": await self.store.field_history(lead_id),
            "model": await self._model_now(data),
        })

    async def _model_now(self, data: Mapping[str, str]) -> dict[str, Any] | None:
        """The active model's exact explanation of the lead as it is now (None without an active model)."""
        watcher: ActiveModelWatcher | None = getattr(self, "_model_watcher", None)
        if watcher is None:
            watcher = ActiveModelWatcher(self.settings.files.model_registry_dir)
            self._model_watcher = watcher
        await asyncio.to_thread(watcher.maybe_reload)
        return await asyncio.to_thread(partial(explain_at_crossing, watcher.current, data, now=self.clock()))

    async def lead_timeline(self, request: web.Request) -> web.StreamResponse:
        limit = self.limit(self.query(request, ("limit",)), 100)
        lead_id, _ = await self.lead(request)
        events = await self.store.lead_recent(lead_id, limit)
        history = await self.store.lead_history(lead_id, limit)
        entries = [{**e, "kind": "event", "ts": num(e.get("ts"))} for e in events]
        entries += [{**h, "kind": "history", "ts": num(h.get("ts"))} for h in history]
        entries.sort(key=lambda e: -e["ts"])
        return json_response({"lead_id": lead_id, "entries": entries[:limit]})

    # --- review queue (router/worker/review.py) -------------------------------------------------------

    async def list_review(self, request: web.Request) -> web.StreamResponse:
        limit = self.limit(self.query(request, ("limit",)), 100)
        return json_response({"leads": await review.list_held(self.store, limit)})

    async def _review_act(self, request: web.Request, op: str) -> web.StreamResponse:
        self.query(request, ())
        lead_id, _ = await self.lead(request)
        principal = self.principal(request)
        who = f"admin:{principal.name or principal.role.value}"
        try:
            if op == "release":
                entry = await review.release(self.store, lead_id, who, self.clock())
            else:
                entry = await review.dismiss(self.store, lead_id, who, self.clock())
        except review.ReviewError as exc:
            raise ApiError(409, "not_held", str(exc)) from None
        await audit(self, f"review.{op}", via="api", lead_id=lead_id)
        return json_response(entry)

    async def release_review(self, request: web.Request) -> web.StreamResponse:
        return await self._review_act(request, "release")

    async def dismiss_review(self, request: web.Request) -> web.StreamResponse:
        return await self._review_act(request, "dismiss")
