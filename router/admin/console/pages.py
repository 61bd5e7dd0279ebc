"""The ops console's pages (``/console/...``): sign-in, leads search, a lead, its accept/reject, a rep's queue.

Server-rendered HTML over the same reads and lifecycle functions as the JSON API
(router/admin/leads.py, lifecycle.py), with the same rules: a rep sees and acts on
their own leads only (another rep's lead is a 403 page), readonly changes nothing,
ops act on a lead as its owner.  Every form carries the session's CSRF token and
every POST checks it (and the Origin header when the browser sends one); the
sign-in form, before any session, uses a double-submit cookie.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from router import metrics
from router.admin.auth import AuthError, Principal, Role, bearer_token
from router.admin.console.audit import AuditPage
from router.admin.console.html import CSS, csrf_field, h, page, when
from router.admin.console.lead import LeadSections
from router.admin.console.live import LivePages, live_js
from router.admin.console.session import COOKIE, PRE_COOKIE, Session, SessionStore, same
from router.admin.core import LEAD_ID, PRINCIPAL
from router.admin.http import ApiError, as_str
from router.admin.leads import LeadHandlers
from router.admin.lifecycle import apply_action, apply_reassign
from router.admin.openapi import MAX_NOTE, MAX_REP_ID
from router.storage import keys

log = logging.getLogger(__name__)

# No script at all, styles from our own origin only, never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Same-origin (not no-referrer): with no-referrer browsers send "Origin: null" on our own forms.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    # The pages show people's names and emails: never keep them in a cache.
    "Cache-Control": "no-store",
}
ACTIONS = ("accept", "reject", "convert", "won", "lost")
DONE = {"accept": "Accepted: the lead is yours to work.", "reject": "Rejected: the lead goes back to routing.",
        "convert": "Converted to the next stage.", "won": "Marked won.", "lost": "Marked lost.",
        "reassign": "Reassigned: the new rep is alerted and their SLA starts now."}
QUEUE_SIZE = 100
MAX_QUERY = 320

LIVE_KEY = web.AppKey("console_live", LivePages)

Page = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def html_response(body: str, status: int = 200) -> web.Response:
    resp = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    resp.headers.update(SECURITY_HEADERS)
    return resp


def see_other(location: str) -> web.Response:
    resp = web.Response(status=303, headers={"Location": location})
    resp.headers.update(SECURITY_HEADERS)
    return resp


class Console:
    """The console's handlers over the admin app's handlers (reads, lifecycle) and a session store."""

    def __init__(self, admin: LeadHandlers) -> None:
        self.admin = admin
        self.sections = LeadSections(admin)
        self.sessions = SessionStore(admin.redis, admin.tokens, admin.settings.admin.console_session_ttl_s,
                                     token_ttl_s=admin.settings.admin.token_ttl_days * 86400, clock=admin.clock)

    # --- plumbing ------------------------------------------------------------------------------

    def secure(self, request: web.Request) -> bool:
        """Whether the browser reached us over HTTPS (directly, through a proxy, or by the public URL)."""
        return (request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
                or self.admin.settings.alerts.admin_url.startswith("https://"))

    @staticmethod
    def same_origin(request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None or origin == "null":  # no information (privacy settings): the CSRF token decides
            return True
        host = origin.split("://", 1)[-1].rstrip("/")
        return host == request.host or host == request.headers.get("X-Forwarded-Host", "")

    def page(self, handler: Page, *, roles: frozenset[Role] | None = None) -> Callable[[web.Request],
                                                                                       Awaitable[web.StreamResponse]]:
        """A handler that needs a signed-in session (and a CSRF token on POST), rendering refusals as pages."""

        async def run(request: web.Request) -> web.StreamResponse:
            session = await self.sessions.get(request.cookies.get(COOKIE, ""))
            if session is None:
                if request.method == "GET":
                    return see_other("/console/sign-in")
                return self.refusal(None, 403, "Your session has ended; sign in again.")
            if request.method == "POST":
                form = await request.post()
                if not same(str(form.get("csrf", "")), session.csrf) or not self.same_origin(request):
                    metrics.ADMIN_AUTH_FAILURES.labels("forbidden").inc()
                    return self.refusal(session, 403, "This form is stale or came from another site; reload the "
                                                      "page and try again.")
            if roles is not None and session.principal.role not in roles:
                metrics.ADMIN_AUTH_FAILURES.labels("forbidden").inc()
                return self.refusal(session, 403, f"A {session.principal.role.value} sign-in may not do this.")
            reset = PRINCIPAL.set(session.principal)
            try:
                return await handler(request, session)
            except ApiError as exc:
                return self.refusal(session, exc.status, exc.detail)
            finally:
                PRINCIPAL.reset(reset)

        return run

    @staticmethod
    def refusal(session: Session | None, status: int, message: str) -> web.Response:
        title = {403: "Not allowed", 404: "Not found"}.get(status, "Cannot do that")
        body = f'<h1>{h(title)}</h1><p class="msg err">{h(message)}</p><p><a href="/console/">Back</a></p>'
        return html_response(page(title, body, principal=session.principal if session else None,
                                  csrf=session.csrf if session else ""), status)

    # --- sign-in and out -----------------------------------------------------------------------

    def sign_in_page(self, pre: str, *, token: str = "", error: str = "", status: int = 200) -> web.Response:
        err = f'<p class="msg err">{h(error)}</p>' if error else ""
        body = (f'<h1>Sign in</h1>{err}<form method="post" action="/console/sign-in" class="card">'
                f'<input type="hidden" name="csrf" value="{h(pre)}">'
                f'<p><label>Admin token<br><input type="password" name="token" value="{h(token)}" '
                'autocomplete="current-password" size="48" required></label></p>'
                '<p class="muted">Ops make tokens with <code>leadrouter admin token create</code>.</p>'
                '<button type="submit" id="sign-in">Sign in</button></form>')
        resp = html_response(page("Sign in", body), status)
        return resp

    def with_pre_cookie(self, request: web.Request, resp: web.Response, pre: str) -> web.Response:
        resp.set_cookie(PRE_COOKIE, pre, path="/console/sign-in", httponly=True, samesite="Lax",
                        secure=self.secure(request), max_age=3600)
        return resp

    async def sign_in_form(self, request: web.Request) -> web.StreamResponse:
        pre = request.cookies.get(PRE_COOKIE, "")
        if not 20 <= len(pre) <= 100:
            pre = secrets.token_urlsafe(32)
        # `leadrouter dev` prints a link that fills the token in: one click signs in.
        token = request.query.get("token", "")[:200]
        return self.with_pre_cookie(request, self.sign_in_page(pre, token=token), pre)

    async def sign_in(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        pre = request.cookies.get(PRE_COOKIE, "")
        if not same(str(form.get("csrf", "")), pre) or not self.same_origin(request):
            fresh = secrets.token_urlsafe(32)
            return self.with_pre_cookie(request, self.sign_in_page(
                fresh, error="The sign-in form was stale or came from another site; try again.", status=403), fresh)
        token = str(form.get("token", "")).strip()
        try:
            bearer_token(f"Bearer {token}")
            session = await self.sessions.sign_in(token, now=self.admin.clock())
        except AuthError:
            session = None
        if session is None:
            metrics.ADMIN_AUTH_FAILURES.labels("unknown_token").inc()
            return self.sign_in_page(pre, error="That token is not known (mistyped, revoked or for another "
                                                "deployment); ask ops for one.", status=401)
        log.info("console sign-in: %s (%s)", session.principal.name, session.principal.role.value)
        resp = see_other("/console/")
        resp.set_cookie(COOKIE, session.session_id, path="/console", httponly=True, samesite="Lax",
                        secure=self.secure(request), max_age=int(self.admin.settings.admin.console_session_ttl_s))
        resp.del_cookie(PRE_COOKIE, path="/console/sign-in")
        return resp

    async def sign_out(self, request: web.Request, session: Session) -> web.StreamResponse:
        await self.sessions.sign_out(session.session_id)
        log.info("console sign-out: %s", session.principal.name)
        resp = see_other("/console/sign-in")
        resp.del_cookie(COOKIE, path="/console")
        return resp

    # --- pages ---------------------------------------------------------------------------------

    async def home(self, request: web.Request, session: Session) -> web.StreamResponse:
        return see_other("/console/queue" if session.principal.role is Role.REP else "/console/leads")

    @staticmethod
    def lead_rows(states: list[dict[str, Any]]) -> str:
        if not states:
            return '<p class="muted">No leads.</p>'
        rows = []
        for s in states:
            fields = s.get("fields") or {}
            name = " ".join(x for x in (fields.get("first_name"), fields.get("last_name")) if x) or s.get("email") \
                or s["lead_id"]
            ready = ' <span class="ready">ready</span>' if s.get("ready") else ""
            rows.append(f'<tr><td><a href="/console/leads/{h(s["lead_id"])}">{h(name)}</a>{ready}</td>'
                        f'<td class="opt">{h(fields.get("company", ""))}</td><td>{s["score_now"]:.1f}</td>'
                        f'<td>{h(s["stage"])}</td><td class="opt">{h(s.get("owner_name") or s.get("owner") or "-")}'
                        "</td></tr>")
        return ('<table><thead><tr><th>Lead</th><th class="opt">Company</th><th>Score</th><th>Stage</th>'
                f'<th class="opt">Owner</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')

    async def leads(self, request: web.Request, session: Session) -> web.StreamResponse:
        principal = session.principal
        q = request.query.get("q", "").strip()[:MAX_QUERY]
        found: list[dict[str, Any]] | None = None
        note = ""
        if q:
            found = await self.search(principal, q)
            if found is None:
                note = ("Search by email address or lead id" +
                        ("." if principal.role is Role.REP else ", or a rep id for that rep's open leads."))
                found = []
        hint = "email or lead id" if principal.role is Role.REP else "email, lead id or rep id"
        body = (f'<h1>Leads</h1><form method="get" action="/console/leads" class="card">'
                f'<input type="search" name="q" value="{h(q)}" placeholder="{h(hint)}" size="40" id="q"> '
                '<button type="submit">Find</button></form>'
                + (f'<p class="msg err">{h(note)}</p>' if note else "")
                + (self.lead_rows(found) if found is not None else ""))
        return html_response(page("Leads", body, principal=principal, csrf=session.csrf))

    async def search(self, principal: Principal, q: str) -> list[dict[str, Any]] | None:
        """Leads matching an email, a lead id or (ops, readonly) a rep id; a rep only ever gets their own."""
        owner_only = principal.rep_id if principal.role is Role.REP else None
        if "@" in q:
            return await self.admin.lead_states([keys.lead_id_for_email(q)], owner=owner_only)
        if LEAD_ID.match(q):
            return await self.admin.lead_states([q], owner=owner_only)
        if principal.role is Role.REP:
            return None
        raw: list[Any] = await self.admin.redis.zrevrange(keys.rep_leads(q), 0, QUEUE_SIZE - 1)
        ids = [as_str(x) for x in raw if LEAD_ID.match(as_str(x))]
        return await self.admin.lead_states(ids, owner=q)

    async def queue(self, request: web.Request, session: Session) -> web.StreamResponse:
        rep = session.principal.rep_id
        raw: list[Any] = await self.admin.redis.zrevrange(keys.rep_leads(rep), 0, QUEUE_SIZE - 1)
        ids = [as_str(x) for x in raw if LEAD_ID.match(as_str(x))]
        states = await self.admin.lead_states(ids, owner=rep)
        body = f"<h1>My queue</h1>{self.lead_rows(states)}"
        return html_response(page("My queue", body, principal=session.principal, csrf=session.csrf))

    async def lead(self, request: web.Request, session: Session) -> web.StreamResponse:
        lead_id, data = await self.admin.lead(request)  # 400 / 404 / 403 for another rep's lead
        states = await self.admin.lead_states([lead_id])
        if not states:
            raise ApiError(404, "unknown_lead", f"lead {lead_id} disappeared while being read; reload")
        s = states[0]
        fields = s["fields"]
        name = " ".join(x for x in (fields.get("first_name"), fields.get("last_name")) if x) or s["email"] or lead_id
        done = DONE.get(request.query.get("done", ""), "")
        facts = [("Score now", f'{s["score_now"]:.1f}'), ("Threshold", f'{s["threshold"]:.0f}'),
                 ("Sales-ready", "yes" if s["ready"] else "no"), ("Stage", s["stage"]),
                 ("Owner", s["owner_name"] or s["owner"] or "-"), ("Team", s["team"] or "-"),
                 ("Fit grade", f'{data.get("grade", "-")}' + (f' ({data["fit"]})' if data.get("fit") else "")),
                 ("Last seen", when(s["last_seen"]))]
        parts = [f'<h1 id="lead-name">{h(name)}</h1>',
                 f'<p class="msg ok" id="done">{h(done)}</p>' if done else "",
                 '<div class="card facts" id="facts">'
                 + "".join(f'<div><span>{h(k)}</span><b data-fact="{h(k)}">{h(v)}</b></div>' for k, v in facts)
                 + "</div>",
                 await self.action_forms(session, lead_id, data),
                 await self.reasons_table(lead_id),
                 *await self.sections.all(lead_id, data),
                 await self.history_table(lead_id)]
        return html_response(page(name, "".join(parts), principal=session.principal, csrf=session.csrf))

    async def action_forms(self, session: Session, lead_id: str, data: dict[str, str]) -> str:
        if session.principal.role is Role.READONLY or not data.get("owner"):
            return ""
        reasons = (await self.admin.config()).lifecycle.reject_reasons
        options = "".join(f'<option value="{h(r)}">{h(r)}</option>' for r in reasons)
        base = f"/console/leads/{h(lead_id)}"
        return (f'<div class="card" id="actions"><form method="post" class="inline" action="{base}/accept">'
                f'{csrf_field(session.csrf)}<button type="submit" id="accept">Accept</button></form>'
                f'<form method="post" class="inline" action="{base}/reject">{csrf_field(session.csrf)}'
                f'<select name="reason" required><option value="">reason…</option>{options}</select>'
                '<button type="submit" id="reject">Reject</button></form>'
                f'<form method="post" class="inline" action="{base}/convert">{csrf_field(session.csrf)}'
                '<select name="to"><option value="">next stage</option><option value="sql">sql</option>'
                '<option value="opportunity">opportunity</option></select>'
                '<button type="submit" id="convert">Convert</button></form>'
                f'<form method="post" class="inline" action="{base}/won">{csrf_field(session.csrf)}'
                '<input name="reason" placeholder="note" maxlength="500"><button type="submit" id="won">Won</button>'
                f'</form><form method="post" class="inline" action="{base}/lost">{csrf_field(session.csrf)}'
                '<input name="reason" placeholder="why" maxlength="500"><button type="submit" id="lost">Lost</button>'
                f"</form>{await self.reassign_form(session, base)}</div>")

    async def reassign_form(self, session: Session, base: str) -> str:
        if session.principal.role is not Role.OPS:
            return ""
        reps = sorted((await self.admin.config()).reps, key=lambda r: r.name)
        options = "".join(f'<option value="{h(r.rep_id)}">{h(r.name)} ({h(r.rep_id)})</option>' for r in reps)
        return (f'<form method="post" class="inline" action="{base}/reassign">{csrf_field(session.csrf)}'
                f'<select name="to" required><option value="">to rep…</option>{options}</select>'
                '<input name="reason" placeholder="why" maxlength="500" required>'
                '<button type="submit" id="reassign">Reassign</button></form>')

    async def reasons_table(self, lead_id: str) -> str:
        reasons = await self.admin.store.lead_reasons(lead_id, 20)
        if not reasons:
            return '<h2>Why this score</h2><p class="muted">No scored events yet.</p>'
        rows = "".join(f'<tr><td>{h(r.rule)}</td><td class="opt">{h(r.detail)}</td><td>{r.points:+.1f}</td>'
                       f'<td class="opt">{h(when(r.ts))}</td></tr>' for r in reasons)
        return ('<h2>Why this score</h2><table id="reasons"><thead><tr><th>Rule</th><th class="opt">Detail</th>'
                f'<th>Points</th><th class="opt">When</th></tr></thead><tbody>{rows}</tbody></table>')

    async def history_table(self, lead_id: str) -> str:
        history = await self.admin.store.lead_history(lead_id, 50)
        if not history:
            return ""
        rows = "".join(
            f'<tr><td>{h(when(float(e.get("ts") or 0)))}</td><td>{h(e.get("action", ""))}</td>'
            f'<td>{h(e.get("rep", ""))}</td><td class="opt">{h(e.get("from", ""))} → {h(e.get("to", ""))}</td>'
            f'<td class="opt">{h(e.get("reason", ""))}</td></tr>' for e in reversed(history))
        return ('<h2>History</h2><table id="history"><thead><tr><th>When</th><th>What</th><th>Rep</th>'
                f'<th class="opt">Stage</th><th class="opt">Reason</th></tr></thead><tbody>{rows}</tbody></table>')

    def act(self, action: str) -> Page:
        async def run(request: web.Request, session: Session) -> web.StreamResponse:
            principal = session.principal
            lead_id, data = await self.admin.lead(request)
            form = await request.post()
            reason = str(form.get("reason", "")).strip()
            to: str | None = None
            if action == "reject" and not reason:
                raise ApiError(422, "missing_reason", "Choose a reason to reject the lead.")
            if len(reason) > (100 if action == "reject" else MAX_NOTE):
                raise ApiError(422, "reason_too_long", "The reason is too long; shorten it.")
            if action in ("accept", "convert"):
                reason = ""
            if action == "convert":
                to = str(form.get("to", "")) or None
                if to not in (None, "sql", "opportunity"):
                    raise ApiError(422, "bad_value", "Convert to sql, opportunity, or the next stage.")
            acting = principal.rep_id if principal.role is Role.REP else data.get("owner", "")
            await apply_action(self.admin, action, lead_id, acting, reason=reason, to=to, via="console")
            log.info("console: lead %s %s as %s by %s (%s)", lead_id, action, acting, principal.name,
                     principal.role.value)
            return see_other(f"/console/leads/{lead_id}?done={action}")

        return run

    async def reassign(self, request: web.Request, session: Session) -> web.StreamResponse:
        """Ops move an open lead to another rep, with a reason (router.worker.reassign)."""
        principal = session.principal
        lead_id, _ = await self.admin.lead(request)
        form = await request.post()
        to_rep = str(form.get("to", "")).strip()
        reason = str(form.get("reason", "")).strip()
        if not to_rep or len(to_rep) > MAX_REP_ID:
            raise ApiError(422, "missing_rep", "Choose the rep to reassign the lead to.")
        if not reason or len(reason) > MAX_NOTE:
            raise ApiError(422, "missing_reason", f"Say why (1 to {MAX_NOTE} characters).")
        await apply_reassign(self.admin, lead_id, to_rep, reason=reason, by=principal.name or "ops", via="console")
        log.info("console: lead %s reassigned to %s by %s: %s", lead_id, to_rep, principal.name, reason)
        return see_other(f"/console/leads/{lead_id}?done=reassign")


async def stylesheet(request: web.Request) -> web.StreamResponse:
    resp = web.Response(text=CSS, content_type="text/css", charset="utf-8")
    resp.headers["Cache-Control"] = "public, max-age=3600"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def add_console_routes(app: web.Application, admin: LeadHandlers) -> Console:
    """Serve the console under /console/ on the admin app."""
    console = Console(admin)
    acting = frozenset({Role.OPS, Role.REP})
    r = app.router
    r.add_get("/console/static/console.css", stylesheet)
    r.add_get("/console/sign-in", console.sign_in_form)
    r.add_post("/console/sign-in", console.sign_in)
    r.add_post("/console/sign-out", console.page(console.sign_out))
    r.add_get("/console", console.page(console.home))
    r.add_get("/console/", console.page(console.home))
    r.add_get("/console/leads", console.page(console.leads))
    r.add_get("/console/queue", console.page(console.queue, roles=frozenset({Role.REP})))
    r.add_get("/console/leads/{lead_id}", console.page(console.lead))
    for action in ACTIONS:
        r.add_post(f"/console/leads/{{lead_id}}/{action}", console.page(console.act(action), roles=acting))
    r.add_post("/console/leads/{lead_id}/reassign", console.page(console.reassign, roles=frozenset({Role.OPS})))
    # Live feed, dead letters and audit (live.py, audit.py).
    live = LivePages(admin, html_response, see_other, console.sessions)
    r.add_get("/console/static/live.js", live_js)
    r.add_get("/console/live", console.page(live.page))
    r.add_get("/console/live/events", console.page(live.events))
    r.add_post("/console/live/dead/{entry_id}/replay", console.page(live.replay, roles=frozenset({Role.OPS})))
    r.add_get("/console/audit", console.page(AuditPage(admin, html_response).page, roles=frozenset({Role.OPS})))
    app[LIVE_KEY] = live

    async def end_streams(_: web.Application) -> None:
        live.hub.shutdown()

    async def close_live(_: web.Application) -> None:
        await live.close()

    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(close_live)
    return console
