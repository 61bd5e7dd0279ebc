"""The Team page (``/console/team``): reps with team, hours, time zone, out-of-office and capacity; who is available now.

Reads the roster in force through the same code as ``GET /v1/reps``
(router/admin/roster.py), whose availability comes from rules/ with the admin
clock, and the out-of-office overrides from Redis.  Per team it shows where a lead
arriving now would go (:func:`rules.availability.plan`, with reps whose
override is active left out, as routing does).  Ops set or clear a rep's
out-of-office override here, through the same validation as
``PATCH /v1/reps/{id}/availability``, recording who and when.  The rest of a
rep's profile (team, hours, days, time zone, capacity) lives in routing.yaml:
ops change it here per rep, which publishes a NEW routing version (the active
version's text with just that rep's entry changed, team_edit.py) through the
same check and test cases as the Rules page, with an automatic note and the
signed-in user as author; a change that fails is refused next to its field
while the running version keeps routing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from router.admin.auth import Role
from router.admin.console.html import csrf_field, h, page, when
from router.admin.console.pages import html_response, see_other
from router.admin.console.rules_kinds import RulesEditError, RulesKind
from router.admin.console.session import Session
from router.admin.console.team_edit import (
    EDIT_FIELDS,
    LABELS,
    RepEntry,
    TeamEditError,
    apply_changes,
    changes_of,
    check_form,
    describe,
    rep_entries,
)
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


@dataclass(frozen=True, slots=True)
class ProfileEdit:
    """A refused profile edit, shown again next to its fields."""

    rep_id: str
    values: Mapping[str, str]
    errors: Mapping[str, str]
    message: str


class TeamPage:
    """The handlers of /console/team, over the roster handlers of the admin API."""

    def __init__(self, admin: RosterHandlers) -> None:
        self.admin = admin
        self.routing = RulesKind(admin, "routing")

    async def reps(self) -> tuple[list[dict[str, Any]], Any]:
        config = await self.admin.config()
        members = [(t, r) for t in config.teams.values() for r in t.reps]
        return await self.admin._reps_out(members), config

    @staticmethod
    def available(rep: dict[str, Any]) -> bool:
        override = rep.get("override")
        return bool(rep["available_now"]) and not (override and override["active"])

    @staticmethod
    def profile_form(session: Session, rep: dict[str, Any], entry: RepEntry | None, teams: list[str], base: str,
                     edit: ProfileEdit | None) -> str:
        """The per-rep form for team, hours, days, time zone and capacity (ops only): publishes a routing version."""
        if session.principal.role is not Role.OPS or entry is None:
            return ""
        rid = h(rep["id"])
        mine = edit is not None and edit.rep_id == rep["id"]
        values = dict(edit.values) if mine and edit is not None else {"team": entry.team, **entry.own}
        errors = edit.errors if mine and edit is not None else {}
        effective = {"hours": rep["hours"] or "any hour", "days": ", ".join(rep["days"]), "tz": rep["tz"],
                     "capacity_day": "" if rep["capacity_day"] is None else str(rep["capacity_day"]),
                     "capacity_30d": "" if rep["capacity_30d"] is None else str(rep["capacity_30d"])}

        def err(key: str) -> str:
            return (f'<span class="field-err" id="err-{rid}-{key}" role="alert">{h(errors[key])}</span>'
                    if key in errors else "")

        first_bad = next((k for k in EDIT_FIELDS if k in errors), None)

        def field(key: str, size: int, hint: str) -> str:
            placeholder = f"default {effective[key]}" if effective[key] else "team default"
            invalid = ' aria-invalid="true"' if key in errors else ""
            if key == first_bad:  # brings the refused field into view (the page runs no script)
                invalid += " autofocus"
            return (f'<label>{h(LABELS[key].capitalize())} <input name="{key}" id="{key}-{rid}" size="{size}" '
                    f'value="{h(values.get(key, ""))}" placeholder="{h(placeholder)}" title="{h(hint)}"'
                    f'{invalid}></label>{err(key)}')

        options = "".join(f'<option value="{h(t)}"{" selected" if t == values.get("team") else ""}>{h(t)}</option>'
                          for t in teams)
        top = (f'<p class="field-err" id="err-{rid}-form" role="alert">{h(errors["form"])}</p>'
               if "form" in errors else "")
        return (f'<details class="ooo profile" id="profile-{rid}"{" open" if mine else ""}><summary>Schedule'
                f'</summary><form method="post" class="profile" action="/console/team/{rid}/profile">'
                f'{csrf_field(session.csrf)}<input type="hidden" name="base" value="{h(base)}">{top}'
                f'<label>Team <select name="team" id="team-{rid}">{options}</select></label>{err("team")}'
                + field("hours", 12, "HH:MM-HH:MM local time, e.g. 09:00-17:30")
                + field("days", 14, "e.g. mon-fri or mon, tue, wed")
                + field("tz", 18, "IANA name, e.g. America/Chicago")
                + field("capacity_day", 5, "leads per local day, 1-1000")
                + field("capacity_30d", 6, "leads per rolling 30 days, 1-30000")
                + f'<button type="submit" id="publish-{rid}">Publish change</button>'
                '<span class="muted">publishes a new routing version after its test cases pass; empty = team '
                "default</span></form></details>")

    def rep_row(self, session: Session, rep: dict[str, Any], profile: str = "") -> str:
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
                f'<td><b>{h(rep["name"])}</b><br><span class="muted">{h(rep["id"])}</span>{profile}</td>'
                f'<td>{h(rep["team"])}</td>'
                f'<td class="opt">{h(hours)}</td><td class="opt">{h(rep["tz"])}</td>'
                f'<td class="ooo-cell">{h(_ooo(rep))}{form}</td><td class="opt">{h(_capacity(rep))}; '
                f'{rep["open_leads"]} open</td><td class="status">{status}</td></tr>')

    async def page(self, request: web.Request, session: Session, edit: ProfileEdit | None = None
                   ) -> web.StreamResponse:
        reps, config = await self.reps()
        current = await self.routing.current()
        try:
            entries = rep_entries(current.text)
        except TeamEditError:
            entries = {}
        base = str(current.number) if current.number is not None else "file"
        team_names = list(config.teams)
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
        done = {"saved": '<p class="msg ok" id="message">Saved.</p>',
                "published": f'<p class="msg ok" id="message">Published: routing is now {h(current.label)}.</p>'
                }.get(request.query.get("done", ""), "")
        if edit is not None:
            done = f'<p class="msg err" id="message">{h(edit.message)}</p>'
        rows = "".join(self.rep_row(session, r, self.profile_form(session, r, entries.get(r["id"]), team_names,
                                                                   base, edit)) for r in reps)
        body = (f"<h1>Team</h1>{done}<div class=\"card\" id=\"now\"><p>At {h(when(now.timestamp()))}: "
                f'<b id="available-count">{len(free)}</b> of {len(reps)} reps available now.</p>'
                f'<ul>{"".join(teams)}</ul></div>'
                '<table id="reps"><thead><tr><th>Rep</th><th>Team</th><th class="opt">Hours</th>'
                '<th class="opt">Time zone</th><th>Out of office</th><th class="opt">Capacity</th><th>Now</th></tr>'
                f'</thead><tbody>{rows}</tbody></table>'
                f'<p class="muted">Running routing: <b id="running">{h(current.label)}</b>. Team, hours, days, time '
                'zone and capacity live in routing.yaml: a change here publishes a new version after its test cases '
                'pass (<a href="/console/rules/routing/history">Rules history</a>).</p>')
        return html_response(page("Team", body, principal=session.principal, csrf=session.csrf),
                             422 if edit is not None else 200)

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
                                            session.principal.name or "ops", via="console")
        log.info("console: %s out of office %s (until %s) by %s", rep.rep_id, out, until or "-",
                 session.principal.name)
        return see_other("/console/team?done=saved")

    async def set_profile(self, request: web.Request, session: Session) -> web.StreamResponse:
        """Publish a routing version with this rep's team, hours, days, time zone or capacity changed."""
        rep_id = request.match_info["rep_id"][:MAX_REP_ID]
        form = await request.post()
        raw = {k: str(form.get(k, ""))[:1000] for k in EDIT_FIELDS}
        base = str(form.get("base", ""))
        current = await self.routing.current()
        running = current.label

        async def refuse(errors: dict[str, str], message: str) -> web.StreamResponse:
            log.info("console: team profile of %s by %s refused: %s", rep_id, session.principal.name, errors)
            return await self.page(request, session, ProfileEdit(rep_id, raw, errors, f"{message} The running "
                                                                                   f"{running} keeps routing."))

        try:
            entries = rep_entries(current.text)
        except TeamEditError as exc:
            return await refuse({"form": str(exc)}, "Not published.")
        entry = entries.get(rep_id)
        if entry is None:
            raise ApiError(404, "unknown_rep", f"rep {rep_id!r} is not in the running routing version; reload the "
                                               "Team page")
        now_base = str(current.number) if current.number is not None else "file"
        if base != now_base:
            return await refuse({"form": f"the routing rules changed since this page was loaded (now {running}); "
                                         "check the values and publish again"}, "Not published.")
        wanted, errors = check_form(raw, list(dict.fromkeys(e.team for e in entries.values())))
        if errors:
            return await refuse(errors, f"Not published: {len(errors)} field(s) to fix.")
        changes = changes_of(entry, wanted)
        if not changes:
            return await refuse({"form": "nothing changed: edit a field first"}, "Nothing to publish.")
        try:
            text = apply_changes(current.text, rep_id, changes)
        except TeamEditError as exc:
            return await refuse({"form": str(exc)}, "Not published.")
        note = describe(entry, changes)[:MAX_NOTE]
        try:
            version = await self.routing.publish(text, current.cases, author=session.principal.name or "ops",
                                                 note=note)
        except RulesEditError as exc:
            why = f"not published: {exc}: " + "; ".join(exc.problems[:5])
            where = next(iter(changes)) if len(changes) == 1 else "form"
            return await refuse({where: why}, "Not published.")
        log.info("console: routing v%d published from the Team page by %s: %s", version.number,
                 session.principal.name, note)
        return see_other(f"/console/team?done=published#profile-{rep_id}")
