"""The Team page (``/console/team``): reps with team, hours, time zone, out-of-office and capacity; who is available now.

Reads the roster in force through the same code as ``GET /v1/reps``
(router/admin/roster.py), whose availability comes from rules/ with the admin
clock, and the out-of-office overrides from Redis.  Per team it shows where a lead
arriving now would go (:func:`rules.availability.plan`, with reps whose
override is active left out, as routing does).  Ops set or clear a rep's
out-of-office override here, through the same validation as
``PATCH /v1/reps/{id}/availability``, recording who and when; the rest of a
rep's profile (hours, time zone, capacity, team) lives in routing.yaml and is
changed by publishing the rules (Rules page), with its test cases.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from router.admin.auth import Role
from router.admin.console.html import csrf_field, h, page, when
from router.admin.console.pages import html_response, see_other
from router.admin.console.session import Session
from router.admin.http import ApiError
from router.admin.openapi import MAX_NOTE, MAX_REP_ID
from router.admin.roster import RosterHandlers
from rules.availability import Outcome, plan

log = logging.getLogger(__name__)
REASONS = {"out_of_office": "out of office", "day_off": "day off", "outside_hours": "outside working hours"}


def _capacity(rep: dict[str, Any]) -> str:
    parts = [f"{rep['capacity_day']}/day" if rep["capacity_day"] is not None else "",
             f"{rep['capacity_30d']}/30 days" if rep["capacity_30d"] is not None else ""]
    return ", ".join(p for p in parts if p) or "no cap"


def _ooo(rep: dict[str, Any]) -> str:
    spans = [f"{r['from']} to {r['to']}" for r in rep["out_of_office"]]
    override = rep.get("override")
    if override and override["out_of_office"]:
        until = f" until {override['until']}" if override["until"] else " (until cleared)"
        state = "" if override["active"] else " (ended)"
        note = f": {override['note']}" if override["note"] else ""
        spans.append(f"set{until}{state} by {override['set_by']} {when(override['set_at'])}{note}")
    return "; ".join(spans) or "-"


class TeamPage:
    """The handlers of /console/team, over the roster handlers of the admin API."""

    def __init__(self, admin: RosterHandlers) -> None:
        self.admin = admin

    async def reps(self) -> tuple[list[dict[str, Any]], Any]:
        config = await self.admin.config()
        members = [(t, r) for t in config.teams.values() for r in t.reps]
        return await self.admin._reps_out(members), config

    @staticmethod
    def available(rep: dict[str, Any]) -> bool:
        override = rep.get("override")
        return bool(rep["available_now"]) and not (override and override["active"])

    def rep_row(self, session: Session, rep: dict[str, Any]) -> str:
        free = self.available(rep)
        if free:
            status = '<b class="ready">available</b>'
        else:
            override = rep.get("override")
            why = "out of office" if override and override["active"] else REASONS.get(
                rep["unavailable_reason"] or "", rep["unavailable_reason"] or "")
            nxt = f'<br><span class="muted">back {h(rep["next_available"][:16])}</span>' if rep["next_available"] \
                and not (override and override["active"]) else ""
            status = f"not now: {h(why)}{nxt}"
        hours = f"{rep['hours'] or 'any hour'}, {' '.join(rep['days'])}"
        form = ""
        if session.principal.role is Role.OPS:
            override = rep.get("override") or {}
            checked = " checked" if override.get("out_of_office") else ""
            form = (f'<details class="ooo" id="edit-{h(rep["id"])}"><summary>Edit</summary>'
                    f'<form method="post" class="inline ooo" action="/console/team/{h(rep["id"])}/availability">'
                    f'{csrf_field(session.csrf)}<label><input type="checkbox" name="out_of_office" value="1"'
                    f'{checked} id="ooo-{h(rep["id"])}"> out</label>'
                    f'<input type="date" name="until" value="{h(override.get("until") or "")}" '
                    f'id="until-{h(rep["id"])}" aria-label="until">'
                    f'<input name="note" maxlength="{MAX_NOTE}" placeholder="note" value="{h(override.get("note", ""))}"'
                    f' id="note-{h(rep["id"])}" size="10">'
                    f'<button type="submit" id="save-{h(rep["id"])}">Save</button></form></details>')
        return (f'<tr data-rep="{h(rep["id"])}" data-available="{"yes" if free else "no"}">'
                f'<td><b>{h(rep["name"])}</b><br><span class="muted">{h(rep["id"])}</span></td><td>{h(rep["team"])}</td>'
                f'<td class="opt">{h(hours)}</td><td class="opt">{h(rep["tz"])}</td>'
                f'<td class="ooo-cell">{h(_ooo(rep))}{form}</td><td class="opt">{h(_capacity(rep))}; '
                f'{rep["open_leads"]} open</td><td class="status">{status}</td></tr>')

    async def page(self, request: web.Request, session: Session) -> web.StreamResponse:
        reps, config = await self.reps()
        now = datetime.fromtimestamp(self.admin.clock(), UTC)
        away = {r["id"] for r in reps if r.get("override") and r["override"]["active"]}
        free = [r for r in reps if self.available(r)]
        teams = []
        for team in config.teams.values():
            p = plan(team, config.teams, now, exclude=away)
            names = ", ".join(p.reps) or "nobody"
            if p.outcome is Outcome.AVAILABLE:
                where = f"goes now to one of {names}"
            elif p.outcome is Outcome.HELD:
                where = "is held: every rep is out of office"
            else:
                where = (f"{p.outcome.value.replace('_', ' ')}: {names} in {p.team}, clock from "
                         f"{p.available_at.strftime('%Y-%m-%d %H:%M UTC')}")
            teams.append(f'<li data-team="{h(team.name)}" data-outcome="{h(p.outcome.value)}"><b>{h(team.name)}</b>: '
                         f"a lead {h(where)}</li>")
        done = '<p class="msg ok" id="message">Saved.</p>' if request.query.get("done") == "saved" else ""
        body = (f"<h1>Team</h1>{done}<div class=\"card\" id=\"now\"><p>At {h(when(now.timestamp()))}: "
                f'<b id="available-count">{len(free)}</b> of {len(reps)} reps available now.</p>'
                f'<ul>{"".join(teams)}</ul></div>'
                '<table id="reps"><thead><tr><th>Rep</th><th>Team</th><th class="opt">Hours</th>'
                '<th class="opt">Time zone</th><th>Out of office</th><th class="opt">Capacity</th><th>Now</th></tr>'
                f'</thead><tbody>{"".join(self.rep_row(session, r) for r in reps)}</tbody></table>'
                '<p class="muted">Hours, time zone, capacity and team live in routing.yaml: change them on the '
                '<a href="/console/rules/routing">Rules</a> page (published with its test cases).</p>')
        return html_response(page("Team", body, principal=session.principal, csrf=session.csrf))

    async def set_availability(self, request: web.Request, session: Session) -> web.StreamResponse:
        rep_id = request.match_info["rep_id"][:MAX_REP_ID]
        form = await request.post()
        out = str(form.get("out_of_office", "")) in ("1", "on", "true")
        until = str(form.get("until", "")).strip()
        note = str(form.get("note", "")).strip()
        if len(note) > MAX_NOTE:
            raise ApiError(422, "note_too_long", f"The note is longer than {MAX_NOTE} characters; shorten it.")
        config = await self.admin.config()
        team, rep = self.admin.find_rep(config, rep_id)
        await self.admin.apply_availability(team, rep, out, (until or None) if out else None, note if out else "",
                                            session.principal.name or "ops")
        log.info("console: %s out of office %s (until %s) by %s", rep.rep_id, out, until or "-",
                 session.principal.name)
        return see_other("/console/team?done=saved")
