"""Rules and scoring pages (``/console/rules/...``): edit, validate, test, simulate, publish, roll back, history.

Ops edit the routing, scoring and fit files in a textarea.  Validate shows each
problem at its line (a numbered listing with the line highlighted, the
validator's message and its suggestion); Run test cases shows pass or fail per
case; Simulate routes the shared history data sets under the running and the
edited routing rules and charts the per-team and per-rep difference (inline
SVG); Publish needs a note, and a text that does not compile or fails a case is
refused at its line while the running version keeps routing.  History lists
every version and every publish/rollback with who and when, diffs any two
versions, and rolls back.  Readonly sign-ins see all of it but have no buttons
and every POST refuses them; reps are refused the pages.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from router.admin.auth import Role
from router.admin.console.html import csrf_field, h, page, when
from router.admin.console.pages import html_response, see_other
from router.admin.console.rescore_pages import DEFAULT_WINDOW, WINDOWS, simulate_scoring, window_picker
from router.admin.console.rules_kinds import KINDS, TITLES, CaseOutcome, Current, RulesEditError, RulesKind
from router.admin.console.session import Session
from router.admin.console.views import Problem, delta_bars, diff_table, listing, problem_list, problems_of
from router.admin.core import AdminCore
from router.admin.http import ApiError
from router.admin.openapi import MAX_NOTE
from router.admin.rules import redact_webhooks
from router.backtest.simulate import DATASETS, DEFAULT_DATASETS, LeadFileError, dataset_leads
from rules import RulesError, load_routing
from rules.simulation import SimLead, SimulationReport, simulate

log = logging.getLogger(__name__)
OPS_PAGES = frozenset({Role.OPS, Role.READONLY})
MAX_CHART_REPS = 30


@functools.lru_cache(maxsize=4)
def _history_leads(name: str, datasets: Path) -> tuple[SimLead, ...]:
    """The shared data set's leads, read once per process (they are files that do not change)."""
    return tuple(dataset_leads(name, datasets))


@dataclass(frozen=True, slots=True)
class Draft:
    """What ops typed, shown again with the results."""

    text: str
    cases: str
    note: str
    dataset: str


class RulesPages:
    """The handlers of /console/rules/..., over the admin handlers (config in force, Redis, clock)."""

    def __init__(self, admin: AdminCore, *, datasets: Path = DEFAULT_DATASETS) -> None:
        self.admin = admin
        self.kinds = {name: RulesKind(admin, name) for name in KINDS}
        self.datasets = datasets

    def kind(self, request: web.Request) -> RulesKind:
        name = request.match_info["kind"]
        if name not in self.kinds:
            raise ApiError(404, "unknown_kind", f"there is no {name[:40]!r} file; edit routing, scoring or icp")
        return self.kinds[name]

    # --- pieces ------------------------------------------------------------------------------------

    @staticmethod
    def tabs(active: str, suffix: str = "") -> str:
        links = [f'<a href="/console/rules/{k}{suffix}"{" class=on" if k == active else ""}>{h(TITLES[k])}</a>'
                 for k in KINDS]
        return f'<nav class="tabs">{" ".join(links)}</nav>'

    def editor(self, session: Session, kind: RulesKind, text: str, cases: str, note: str, dataset: str) -> str:
        ops = session.principal.role is Role.OPS
        ro = "" if ops else " readonly"
        buttons = ""
        if ops:
            if kind.name == "routing":
                options = "".join(f'<option value="{h(d)}"{" selected" if d == dataset else ""}>{h(d)}</option>'
                                  for d in DATASETS)
                sim = f'<label>History <select name="dataset" id="dataset">{options}</select></label>'
            else:  # scoring and fit: the archive re-scored (rescore_pages.py)
                sim = window_picker(dataset if dataset in WINDOWS else DEFAULT_WINDOW)
            sim += '<button type="submit" name="action" value="simulate" id="simulate">Simulate</button>'
            buttons = ('<p class="actions"><button type="submit" name="action" value="validate" id="validate">'
                       'Validate</button><button type="submit" name="action" value="test" id="test">Run test cases'
                       f'</button>{sim}</p>'
                       f'<p><label>Note (required to publish)<br><input name="note" id="note" maxlength="{MAX_NOTE}" '
                       f'size="60" value="{h(note)}"></label> <button type="submit" name="action" value="publish" '
                       'id="publish">Publish</button></p>')
        return (f'<form method="post" action="/console/rules/{kind.name}" class="card editor">'
                f'{csrf_field(session.csrf)}'
                f'<label for="text"><b>{h(kind.source)}</b></label>'
                f'<textarea name="text" id="text" rows="22" spellcheck="false"{ro}>{h(text)}</textarea>'
                f'<details><summary>Test cases ({h(kind.cases_source)})</summary>'
                f'<textarea name="cases" id="cases" rows="14" spellcheck="false"{ro}>{h(cases)}</textarea></details>'
                f"{buttons}</form>")

    async def render(self, session: Session, kind: RulesKind, draft: Draft | None = None, *, results: str = "",
                     message: str = "", ok: bool = True, status: int = 200) -> web.Response:
        current: Current = await kind.current()
        if session.principal.role is not Role.OPS:  # Slack webhook URLs are credentials: ops only (as the API)
            current = Current(redact_webhooks(current.text), current.cases, current.number, current.label)
        in_force = ""
        if kind.name == "routing":
            in_force = f' · in force: <b id="in-force">{h((await self.admin.config()).version)}</b>'
        msg = f'<p class="msg {"ok" if ok else "err"}" id="message">{h(message)}</p>' if message else ""
        body = (f"<h1>{h(kind.title)}</h1>{self.tabs(kind.name)}"
                f'<p class="muted">Running: <b id="running">{h(current.label)}</b>{in_force} · '
                f'<a href="/console/rules/{kind.name}/history">History and rollback</a></p>{msg}{results}'
                + self.editor(session, kind, current.text if draft is None else draft.text,
                              current.cases if draft is None else draft.cases, draft.note if draft else "",
                              draft.dataset if draft else "maven"))
        return html_response(page(kind.title, body, principal=session.principal, csrf=session.csrf), status)

    @staticmethod
    def problems_block(kind: RulesKind, problems: list[Problem], text: str, cases: str) -> str:
        in_cases = [p for p in problems if p.source == kind.cases_source]
        in_text = [p for p in problems if p not in in_cases]
        out = [problem_list(in_text, "text"), listing(text, in_text, "text")]
        if in_cases:
            out += [f"<h2>In {h(kind.cases_source)}</h2>", problem_list(in_cases, "cases"),
                    listing(cases, in_cases, "cases")]
        return '<div class="card" id="problems">' + "".join(out) + "</div>"

    @staticmethod
    def cases_table(results: list[CaseOutcome]) -> str:
        rows = "".join(f'<tr class="{"pass" if r.passed else "fail"}" data-case="{h(r.name)}"><td>{h(r.name)}</td>'
                       f'<td><b>{"pass" if r.passed else "FAIL"}</b></td><td class="opt">{h(r.message)}</td></tr>'
                       for r in results)
        return ('<div class="card"><table id="cases-results"><thead><tr><th>Case</th><th>Result</th>'
                f'<th class="opt">Detail</th></tr></thead><tbody>{rows}</tbody></table></div>')

    @staticmethod
    def simulation(report: SimulationReport, dataset: str, current_label: str) -> str:
        teams = [(r.team, r.current, r.new) for r in report.team_rows()]
        reps = sorted(report.rep_rows(), key=lambda r: (-abs(r.delta), -r.new, r.rep_id))
        shown = [r for r in reps if r.delta] or reps
        rep_bars = [(f"{r.name} ({r.rep_id})", r.current, r.new) for r in shown[:MAX_CHART_REPS]]
        span = report.span
        when_txt = f" from {span.first} to {span.last}" if span else ""
        moved = "".join(f"<tr><td>{h(m.lead.label)}</td><td>{h(m.before.team)} / {h(m.before.rep_id)}</td>"
                        f"<td>{h(m.after.team)} / {h(m.after.rep_id)}</td></tr>" for m in report.examples)
        examples = ('<h2>Examples of moved leads</h2><table id="moved"><thead><tr><th>Lead</th><th>Running</th>'
                    f"<th>Edited</th></tr></thead><tbody>{moved}</tbody></table>") if moved else ""
        more = (f'<p class="muted">The {MAX_CHART_REPS} reps with the largest change are charted.</p>'
                if len(shown) > MAX_CHART_REPS else "")
        return (f'<div class="card" id="simulation"><h2>Simulated on {report.leads:,} {h(dataset)} leads{h(when_txt)}'
                f'</h2><p><b id="moves">{report.moves:,}</b> leads change team and {report.rule_changes:,} change '
                f"rule only, against {h(current_label)}.</p><h2>Per team</h2>"
                + delta_bars(teams, title="Leads per team: running vs edited", element_id="chart-teams")
                + "<h2>Per rep</h2>"
                + delta_bars(rep_bars, title="Leads per rep: running vs edited", element_id="chart-reps")
                + more + examples + "</div>")

    # --- handlers ----------------------------------------------------------------------------------

    async def edit_page(self, request: web.Request, session: Session) -> web.StreamResponse:
        kind = self.kind(request)
        done = request.query.get("done", "")
        message = {"published": "Published: the new version is routing now.",
                   "rolled-back": "Rolled back: that version is active again."}.get(done, "")
        return await self.render(session, kind, message=message)

    async def edit_action(self, request: web.Request, session: Session) -> web.StreamResponse:
        kind = self.kind(request)
        form = await request.post()
        text = str(form.get("text", "")).replace("\r\n", "\n")
        cases = str(form.get("cases", "")).replace("\r\n", "\n")
        note = str(form.get("note", "")).strip()
        action = str(form.get("action", ""))
        dataset = str(form.get("dataset", "maven"))
        limit = self.admin.settings.admin.max_rules_bytes
        if max(len(text.encode()), len(cases.encode())) > limit:
            return await self.render(session, kind, Draft(text[:limit], cases[:limit], note, dataset), ok=False,
                                     status=413, message=f"The text is larger than {limit} bytes "
                                                         "(LEADROUTER_ADMIN_MAX_RULES_BYTES); shorten it.")
        keep = Draft(text, cases, note, dataset)
        if action == "validate":
            problems = problems_of(await asyncio.to_thread(kind.validate, text))
            if problems:
                return await self.render(session, kind, keep, ok=False, status=422,
                                         message=f"{len(problems)} problem(s); nothing was published.",
                                         results=self.problems_block(kind, problems, text, cases))
            return await self.render(session, kind, keep, message="Valid: the text compiles.")
        if action == "test":
            stops, results = await asyncio.to_thread(kind.run_cases, text, cases)
            if stops:
                problems = problems_of(stops)
                return await self.render(session, kind, keep, ok=False, status=422,
                                         message="The test cases could not run.",
                                         results=self.problems_block(kind, problems, text, cases))
            failed = sum(1 for r in results if not r.passed)
            return await self.render(session, kind, keep, ok=not failed and bool(results),
                                     message=f"{len(results) - failed} of {len(results)} test cases pass.",
                                     results=self.cases_table(results))
        if action == "simulate":
            return await self.simulate(session, kind, text, cases, note, dataset)
        if action == "publish":
            return await self.publish(session, kind, text, cases, note, dataset)
        raise ApiError(400, "unknown_action", "Use Validate, Run test cases, Simulate or Publish.")

    async def simulate(self, session: Session, kind: RulesKind, text: str, cases: str, note: str,
                       dataset: str) -> web.StreamResponse:
        keep = Draft(text, cases, note, dataset)
        if kind.name != "routing":
            problems = problems_of(await asyncio.to_thread(kind.validate, text))
            if problems:
                return await self.render(session, kind, keep, ok=False, status=422,
                                         message="The edited text does not compile, so it cannot be simulated.",
                                         results=self.problems_block(kind, problems, text, cases))
            results, message = await simulate_scoring(self.admin, self.kinds, kind, text, dataset)
            return await self.render(session, kind, keep, message=message, results=results)
        if dataset not in DATASETS:
            raise ApiError(422, "unknown_dataset", f"Pick a history data set: {', '.join(DATASETS)}.")
        problems = problems_of(await asyncio.to_thread(kind.validate, text))
        if problems:
            return await self.render(session, kind, keep, ok=False, status=422,
                                     message="The edited text does not compile, so it cannot be simulated.",
                                     results=self.problems_block(kind, problems, text, cases))
        current = await self.admin.config()

        def work() -> SimulationReport:
            leads = _history_leads(dataset, self.datasets)
            try:
                new = load_routing(text, kind.source)
            except RulesError as exc:  # validated just above; a race with nothing
                raise ApiError(422, "rules_invalid", str(exc)) from None
            return simulate(leads, current, new, examples=10)

        try:
            report = await asyncio.to_thread(work)
        except LeadFileError as exc:
            raise ApiError(503, "no_history", f"The history data set cannot be read: {exc}") from None
        return await self.render(session, kind, keep, message=f"Simulated against {current.version}.",
                                 results=self.simulation(report, dataset, current.version))

    async def publish(self, session: Session, kind: RulesKind, text: str, cases: str, note: str,
                      dataset: str) -> web.StreamResponse:
        keep = Draft(text, cases, note, dataset)
        if not note or len(note) > MAX_NOTE:
            return await self.render(session, kind, keep, ok=False, status=422,
                                     message=f"Say what changed and why in the note (1 to {MAX_NOTE} characters); "
                                             "nothing was published.")
        running = (await kind.current()).label
        try:
            version = await kind.publish(text, cases, author=session.principal.name or "ops", note=note)
        except RulesEditError as exc:
            problems = problems_of(exc.problems)
            log.info("console: %s publish by %s refused: %s", kind.name, session.principal.name, exc)
            return await self.render(session, kind, keep, ok=False, status=422,
                                     message=f"Not published: {exc}. {running} keeps running.",
                                     results=self.problems_block(kind, problems, text, cases))
        log.info("console: %s v%d published by %s: %s", kind.name, version.number, session.principal.name, note)
        return see_other(f"/console/rules/{kind.name}?done=published")

    async def history_page(self, request: web.Request, session: Session) -> web.StreamResponse:
        kind = self.kind(request)
        versions = await kind.versions()
        active = await kind.active_number()
        by_number = {v.number: v for v in versions}
        ops = session.principal.role is Role.OPS
        rows = []
        for v in reversed(versions):
            diff = (f'<a href="?a={v.number - 1}&amp;b={v.number}">diff vs v{v.number - 1}</a>'
                    if v.number - 1 in by_number else "")
            action = ""
            if ops and v.number != active:
                action = (f'<form method="post" class="inline" action="/console/rules/{kind.name}/rollback">'
                          f'{csrf_field(session.csrf)}<input type="hidden" name="version" value="{v.number}">'
                          f'<input name="note" placeholder="why" maxlength="{MAX_NOTE}" required>'
                          f'<button type="submit" id="rollback-{v.number}">Roll back to v{v.number}</button></form>')
            mark = ' <b class="ready">active</b>' if v.number == active else ""
            rows.append(f'<tr data-version="{v.number}"><td>{h(v.tag)}{mark}</td><td>{h(v.author)}</td>'
                        f'<td>{h(when(v.ts))}</td><td class="opt">{h(v.note)}</td><td>{diff} {action}</td></tr>')
        table = ('<table id="versions"><thead><tr><th>Version</th><th>By</th><th>When</th><th class="opt">Note</th>'
                 f'<th></th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
                 if rows else '<p class="muted">Nothing published yet: the file on disk is running.</p>')
        changes = "".join(f"<tr><td>{h(e.action)}</td><td>v{e.number}</td>"
                          f'<td>{"v" + str(e.previous) if e.previous else "file"}</td><td>{h(e.author)}</td>'
                          f'<td>{h(when(e.ts))}</td><td class="opt">{h(e.note)}</td></tr>'
                          for e in reversed(await kind.history()))
        log_table = ('<h2>Changes</h2><table id="changes"><thead><tr><th>What</th><th>To</th><th>From</th><th>By</th>'
                     f'<th>When</th><th class="opt">Note</th></tr></thead><tbody>{changes}</tbody></table>'
                     if changes else "")
        diff_html = ""
        a, b = request.query.get("a", ""), request.query.get("b", "")
        if a or b:
            if not (a.isdigit() and b.isdigit() and int(a) in by_number and int(b) in by_number):
                raise ApiError(404, "unknown_version", "Pick two published versions to compare.")
            va, vb = by_number[int(a)], by_number[int(b)]
            old, new = va.content, vb.content
            if not ops:
                old, new = redact_webhooks(old), redact_webhooks(new)
            diff_html = (f"<h2>Diff v{va.number} → v{vb.number}</h2>"
                         + diff_table(old, new, f"v{va.number}", f"v{vb.number}"))
        if len(versions) > 1:
            def pick(name: str, chosen: int) -> str:
                opts = "".join(f'<option value="{v.number}"{" selected" if v.number == chosen else ""}>v{v.number}'
                               "</option>" for v in versions)
                return f'<select name="{name}" id="diff-{name}">{opts}</select>'

            newest = versions[-1].number
            diff_html = (f'<form method="get" class="inline" id="compare">Compare {pick("a", newest - 1)} with '
                         f'{pick("b", newest)}<button type="submit">Diff</button></form>' + diff_html)
        done = '<p class="msg ok" id="message">Rolled back.</p>' if request.query.get("done") == "rolled-back" else ""
        body = (f"<h1>{h(kind.title)}: history</h1>{self.tabs(kind.name, '/history')}{done}"
                f'<p><a href="/console/rules/{kind.name}">Edit</a></p>{diff_html}{table}{log_table}')
        return html_response(page(f"{kind.title} history", body, principal=session.principal, csrf=session.csrf))

    async def rollback(self, request: web.Request, session: Session) -> web.StreamResponse:
        kind = self.kind(request)
        form = await request.post()
        raw = str(form.get("version", "")).strip().lower().removeprefix("v")
        note = str(form.get("note", "")).strip()
        if not raw.isdigit() or len(raw) > 9:
            raise ApiError(422, "bad_version", "Pick a version to roll back to from the history.")
        if not note or len(note) > MAX_NOTE:
            raise ApiError(422, "missing_note", f"Say why you roll back (1 to {MAX_NOTE} characters).")
        try:
            await kind.rollback(int(raw), author=session.principal.name or "ops", note=note)
        except RulesEditError as exc:
            raise ApiError(409, "rollback_refused", str(exc)) from None
        log.info("console: %s rolled back to v%s by %s: %s", kind.name, raw, session.principal.name, note)
        return see_other(f"/console/rules/{kind.name}/history?done=rolled-back")
