"""Roster endpoints: teams, reps, and reps' out-of-office overrides (``/v1/teams``, ``/v1/reps``)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from models import Rep
from router import metrics
from router.admin.audit import audit
from router.admin.auth import Role
from router.admin.core import AdminCore
from router.admin.http import ApiError, as_str, json_response, kind, num, suggest
from router.admin.openapi import MAX_NOTE
from router.storage import keys
from router.storage.audit import Via
from rules import RoutingConfig, Team


def _team_out(team: Team) -> dict[str, Any]:
    return {"name": team.name, "description": team.description, "managers": list(team.managers or (team.manager,)),
            "strategy": team.strategy.value, "sla": team.sla.to_json() if team.sla else None,
            "has_slack_webhook": bool(team.slack_webhook), "reps": [r.rep_id for r in team.reps],
            "after_hours": team.after_hours.to_json(),
            "hand_raiser": team.hand_raiser_policy.to_json() if team.hand_raiser_policy else None}


def _override_out(raw: Mapping[str, str], today: date) -> dict[str, Any] | None:
    if not raw:
        return None
    until = raw.get("until") or None
    ooo = raw.get("out_of_office") == "1"
    active = ooo
    if ooo and until:
        try:
            active = today <= date.fromisoformat(until)
        except ValueError:
            active = True
    return {"out_of_office": ooo, "until": until, "note": raw.get("note", ""), "set_by": raw.get("set_by", ""),
            "set_at": num(raw.get("set_at")), "active": active, "honoured_by_routing": True}



class RosterHandlers(AdminCore):
    """Handlers of /v1/teams and /v1/reps; a mixin of :class:`router.admin.app.Admin`."""

    async def list_teams(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        config = await self.config()
        return json_response({"rules_version": config.version, "rules_source": self.config_source(),
                              "teams": [_team_out(t) for t in config.teams.values()]})

    async def _reps_out(self, members: Sequence[tuple[Team, Rep]]) -> list[dict[str, Any]]:
        pipe = self.redis.pipeline(transaction=False)
        for _, rep in members:
            pipe.zcard(keys.rep_leads(rep.rep_id))
            pipe.hgetall(keys.rep_availability(rep.rep_id))
        raw = await pipe.execute()
        now = datetime.fromtimestamp(self.clock(), UTC)
        out: list[dict[str, Any]] = []
        for i, (team, rep) in enumerate(members):
            profile = team.profile(rep.rep_id)
            why = profile.unavailable(now)
            override = {as_str(k): as_str(v) for k, v in raw[2 * i + 1].items()}
            doc = profile.to_json()
            out.append({
                "id": rep.rep_id, "name": rep.name, "email": rep.email, "slack_user_id": rep.slack_user_id,
                "team": team.name, "weight": doc["weight"], "capacity_day": doc["capacity_day"],
                "capacity_30d": doc["capacity_30d"], "tz": doc["tz"], "hours": doc["hours"], "days": doc["days"],
                "out_of_office": doc["out_of_office"], "available_now": why is None,
                "unavailable_reason": why.value if why is not None else None,
                "next_available": (profile.local(profile.next_available(now)).isoformat()
                                   if why is not None else None),
                "open_leads": int(raw[2 * i]),
                "override": _override_out(override, profile.local(now).date()),
            })
        return out

    def find_rep(self, config: RoutingConfig, rep_id: str) -> tuple[Team, Rep]:
        for team in config.teams.values():
            rep = team.rep(rep_id)
            if rep is not None:
                return team, rep
        ids = [r.rep_id for r in config.reps]
        close = difflib.get_close_matches(rep_id, ids, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "see GET /v1/reps for the rep ids"
        raise ApiError(404, "unknown_rep", f"no rep {rep_id[:100]!r} in the routing config in force "
                                           f"({config.version}); {hint}")

    async def list_reps(self, request: web.Request) -> web.StreamResponse:
        query = self.query(request, ("team",))
        config = await self.config()
        teams = list(config.teams.values())
        if "team" in query:
            name = query["team"]
            if name not in config.teams:
                raise ApiError(404, "unknown_team", f"no team {name[:100]!r}; {suggest(name, list(config.teams))}")
            teams = [config.teams[name]]
        members = [(t, r) for t in teams for r in t.reps]
        return json_response({"rules_version": config.version, "rules_source": self.config_source(),
                              "reps": await self._reps_out(members)})

    async def get_rep(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        config = await self.config()
        [rep] = await self._reps_out([self.find_rep(config, request.match_info["rep_id"])])
        return json_response(rep)

    async def set_availability(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        principal = self.principal(request)
        rep_id = request.match_info["rep_id"]
        if principal.role is Role.REP and rep_id != principal.rep_id:
            metrics.ADMIN_AUTH_FAILURES.labels("forbidden").inc()
            raise ApiError(403, "not_your_rep", f"a rep token sets only its own availability "
                                                f"(PATCH /v1/reps/{principal.rep_id}/availability)")
        config = await self.config()
        team, rep = self.find_rep(config, rep_id)
        body = await self.body(request, self._ops["set_availability"], ("out_of_office", "until", "note"))
        out_of_office = body.flag("out_of_office", required=True)
        note = body.text("note", max_len=MAX_NOTE) or ""
        await self.apply_availability(team, rep, bool(out_of_office), body.data.get("until"), note, principal.name)
        [out] = await self._reps_out([(team, rep)])
        return json_response(out)

    async def apply_availability(self, team: Team, rep: Rep, out_of_office: bool, until_raw: object, note: str,
                                 by: str, *, via: Via = "api") -> None:
        """Set or clear a rep's out-of-office override (who and when recorded, and audited as
        ``rep.availability``); the API and the console share it."""
        key = keys.rep_availability(rep.rep_id)
        until = ""
        if not out_of_office:
            if until_raw is not None:
                raise ApiError(400, "bad_value", "'until' only goes with out_of_office: true; drop it to clear the "
                                                 "override")
            await self.redis.delete(key)
        else:
            if until_raw is not None:
                if not isinstance(until_raw, str):
                    raise ApiError(400, "bad_type", f"'until' must be a date string YYYY-MM-DD or null, got "
                                                    f"{kind(until_raw)}")
                try:
                    day = date.fromisoformat(until_raw.strip())
                except ValueError:
                    raise ApiError(422, "bad_date", f"'until' {until_raw[:40]!r} is not a date; write YYYY-MM-DD, "
                                                    "e.g. 2026-12-31") from None
                profile = team.profile(rep.rep_id)
                today = profile.local(datetime.fromtimestamp(self.clock(), UTC)).date()
                if day < today:
                    raise ApiError(422, "date_in_past", f"'until' {day.isoformat()} is before today "
                                                        f"({today.isoformat()} in {profile.tz}); give today or later, "
                                                        "or out_of_office: false to clear")
                until = day.isoformat()
            await self.redis.hset(key, mapping={"out_of_office": "1", "until": until, "note": note,
                                                "set_by": by, "set_at": repr(self.clock())})
        await audit(self, "rep.availability", via=via, target=rep.rep_id, who=by,
                    detail=(f"out of office until {until or 'further notice'}" if out_of_office else "back")
                    + (f": {note}" if note else ""))
