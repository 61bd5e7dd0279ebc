"""The alert action link page (``/a/<token>``): the assigned rep accepts or rejects the lead an alert named.

Who can act (issue 16.1).  The link is a capability sent only to the rep (their Slack DM
and email; the team channel's copy carries no link that changes anything), so it must
act only for that rep and only once:

* the token (router/tokens.py) is signed and names the rep, the lead, the assignment and
  its crossing, a random one-time id (jti) and an expiry (``LEADROUTER_ALERT_LINK_TTL_S``);
* on every use it is checked in Redis (router/storage/action_links.py, one Lua step on
  the lead's slot) that the assignment is still the lead's current one, held by that
  rep and not yet accepted; a reassigned or handled lead gets a page that says so;
* the POST records the jti atomically before acting, so a replay (or a second tab, or
  a scanner) gets an "already used" page and changes nothing;
* GET never writes (mail scanners and link previews fetch links), and shows the lead's
  name, company, score and stage only: the email address is shown after the rep
  accepted, in the answer to that POST;
* the POST is refused when the browser says it comes from another site (``Origin`` or
  ``Sec-Fetch-Site``); every page is sent with ``Content-Security-Policy`` (no scripts,
  forms only to this origin, no framing), ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer`` (the token is in the URL), ``Cache-Control: no-store``
  and ``X-Content-Type-Options: nosniff``.

A rep who needs more (a lead reassigned to them, an expired link) acts from the admin
API with their token or from ``leadrouter leads accept|reject``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from datetime import UTC, datetime
from html import escape as html_escape
from urllib.parse import urlsplit

from aiohttp import web

from models import lead_view_from_hash
from router import metrics
from router.admin.core import AdminCore
from router.admin.http import ApiError
from router.admin.lifecycle import apply_action
from router.storage.action_links import ActionLinkStore, LinkCheck
from router.tokens import ActionClaims, ActionLinkError, verify_action_token

log = logging.getLogger(__name__)

_STYLE = ("body{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em;line-height:1.4}"
          "form{margin:1em 0}button{padding:.4em 1.2em}")
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
PAGE_CSP = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'")
# Sent on every admin answer (router/admin/app.py adds any the handler did not set).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_FETCH_SITES_OK = frozenset({"same-origin", "none"})


def _h(text: str) -> str:
    return html_escape(text, quote=True)


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def page(status: int, title: str, body_html: str) -> web.Response:
    """A small HTML page with the link pages' security headers."""
    html = (f'<!doctype html><html><head><meta charset="utf-8"><meta name="robots" content="noindex">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_h(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{_h(title)}</h1>{body_html}</body></html>")
    resp = web.Response(status=status, text=html, content_type="text/html")
    resp.headers.update(SECURITY_HEADERS)
    resp.headers["Content-Security-Policy"] = PAGE_CSP
    return resp


_ELSEWHERE = ("<p>Nothing was changed. You can still act on your leads from the admin API with your token, "
              "or with <code>leadrouter leads accept|reject</code>.</p>")


def _refusal(method: str, check: LinkCheck) -> web.Response:
    """The page for a link that may not act (used, reassigned, handled, gone)."""
    metrics.ADMIN_ACTION_LINKS.labels(method, check.state).inc()
    if check.state == "used":
        how = f" to {_h(check.used_action)}" if check.used_action else ""
        when = f" at {_h(_utc(check.used_ts))}" if check.used_ts else ""
        return page(410, "This link was already used", f"<p>It was used{how}{when}. Each alert link works once."
                    f"</p>{_ELSEWHERE}")
    if check.state == "reassigned":
        return page(409, "This lead was reassigned", "<p>The lead has been reassigned (or routed again) since this "
                    "alert was sent, so this link no longer acts. A newer alert carries a fresh link for whoever "
                    f"holds it now.</p>{_ELSEWHERE}")
    if check.state == "handled":
        stage = f" (stage now {_h(check.stage)})" if check.stage else ""
        return page(409, "This lead was already handled", f"<p>The assignment this alert was sent for is no longer "
                    f"waiting for an answer{stage}.</p>{_ELSEWHERE}")
    return page(404, "This lead no longer exists", f"<p>The lead this link names is gone.</p>{_ELSEWHERE}")


class LinkHandlers(AdminCore):
    """Handlers of the signed alert link (GET and POST /a/{token}); a mixin of :class:`router.admin.app.Admin`."""

    _link_store: ActionLinkStore | None = None

    @property
    def links(self) -> ActionLinkStore:
        if self._link_store is None:
            self._link_store = ActionLinkStore(self.redis)
        return self._link_store

    def _claims(self, request: web.Request) -> ActionClaims | web.Response:
        try:
            return verify_action_token(self.settings.tokens.secret, request.match_info["token"], now=self.clock())
        except ActionLinkError as exc:
            if exc.problem == "expired":
                metrics.ADMIN_ACTION_LINKS.labels(request.method, "expired").inc()
                return page(410, "This link has expired", f"<p>Alert links work for a limited time.</p>{_ELSEWHERE}")
            if exc.problem == "old_format":
                metrics.ADMIN_ACTION_LINKS.labels(request.method, "expired").inc()
                return page(410, "This link no longer works", f"<p>{_h(str(exc))}</p>{_ELSEWHERE}")
            metrics.ADMIN_ACTION_LINKS.labels(request.method, "invalid").inc()
            return page(400, "This link is not valid", "<p>It was altered, cut short or made for another "
                        f"deployment. Open it again from the alert.</p>{_ELSEWHERE}")

    def _own_origins(self, request: web.Request) -> set[str]:
        origins = {f"{request.scheme}://{request.host}".lower()}
        admin_url = urlsplit(self.settings.alerts.admin_url)
        if admin_url.scheme and admin_url.netloc:
            origins.add(f"{admin_url.scheme}://{admin_url.netloc}".lower())
        return origins

    def _cross_site(self, request: web.Request) -> bool:
        """The browser says this POST comes from another site (absent headers: a non-browser client, allowed)."""
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site.strip().lower() not in _FETCH_SITES_OK:
            return True
        origin = request.headers.get("Origin")
        return origin is not None and origin.strip().lower() not in self._own_origins(request)

    async def action_page(self, request: web.Request) -> web.StreamResponse:
        """Show the lead and the two buttons; never writes (scanners and previews fetch links)."""
        claims = self._claims(request)
        if isinstance(claims, web.Response):
            return claims
        check = await self.links.check(claims.lead_id, claims.jti, claims.assignment_id, claims.rep_id,
                                       now=self.clock())
        if check.state != "ok":
            return _refusal("GET", check)
        data = await self.store.lead_hash(claims.lead_id)
        view = lead_view_from_hash(data)
        f = view.fields
        name = f.get("name") or " ".join(x for x in (f.get("first_name"), f.get("last_name")) if x)
        company = view.company or view.email_domain or ""
        heading = name or (f"A lead at {company}" if company else "A lead")
        policy = (await self.config()).lifecycle
        reasons = "".join(f'<option value="{_h(r)}">{_h(r)}</option>' for r in policy.reject_reasons)
        chosen = request.query.get("do", "")
        metrics.ADMIN_ACTION_LINKS.labels("GET", "shown").inc()
        body = (f"<p><strong>{_h(heading)}</strong>{' &middot; ' + _h(company) if name and company else ''}</p>"
                f"<p>Score {view.score:.0f} &middot; stage {_h(view.stage.value)} &middot; assigned to "
                f"{_h(data.get('owner_name', '') or claims.rep_id)}</p>"
                '<form method="post"><input type="hidden" name="action" value="accept">'
                f'<button type="submit"{" autofocus" if chosen == "accept" else ""}>Accept this lead</button></form>'
                '<form method="post"><input type="hidden" name="action" value="reject">'
                f'<label>Reason <select name="reason">{reasons}</select></label> '
                f'<button type="submit"{" autofocus" if chosen == "reject" else ""}>Reject</button></form>'
                f"<p><small>This link works once, for you, until {_h(_utc(claims.expires))} or until the lead is "
                "reassigned. The lead's contact details are shown once you accept.</small></p>")
        return page(200, "A lead was routed to you", body)

    async def action_submit(self, request: web.Request) -> web.StreamResponse:
        """Accept or reject, once, as the link's rep, while the assignment the link names stands."""
        if self._cross_site(request):
            metrics.ADMIN_ACTION_LINKS.labels("POST", "cross_site").inc()
            log.warning("alert link POST refused: cross-site (Origin %r, Sec-Fetch-Site %r)",
                        request.headers.get("Origin", "")[:100], request.headers.get("Sec-Fetch-Site", "")[:30])
            return page(403, "This request came from another site", "<p>Open the link from your alert and use the "
                        f"buttons on its page.</p>{_ELSEWHERE}")
        claims = self._claims(request)
        if isinstance(claims, web.Response):
            return claims
        if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            metrics.ADMIN_ACTION_LINKS.labels("POST", "bad_input").inc()
            raise ApiError(415, "unsupported_media_type", "send the form as application/x-www-form-urlencoded, "
                                                          "as the link's page does")
        form = await request.post()
        action, reason = str(form.get("action", "")), str(form.get("reason", "")).strip()[:100]
        if action not in ("accept", "reject"):
            metrics.ADMIN_ACTION_LINKS.labels("POST", "bad_input").inc()
            raise ApiError(400, "bad_value", f"action {action[:20]!r} must be accept or reject")
        policy = (await self.config()).lifecycle
        if action == "reject" and reason not in policy.reject_reasons:
            metrics.ADMIN_ACTION_LINKS.labels("POST", "bad_input").inc()
            raise ApiError(422, "bad_reason", f"reject reason {reason[:100]!r} is not one of the configured reasons; "
                                              f"use one of: {', '.join(policy.reject_reasons)}")
        now = self.clock()
        check = await self.links.use(claims.lead_id, claims.jti, claims.assignment_id, claims.rep_id,
                                     action=action, now=now, expires=claims.expires)
        if check.state != "ok":
            log.info("alert link for lead %s (rep %s, assignment %s) refused: %s", claims.lead_id, claims.rep_id,
                     claims.assignment_id, check.state)
            return _refusal("POST", check)
        try:
            result = await apply_action(self, action, claims.lead_id, claims.rep_id, reason=reason, via="link",
                                         who=f"rep {claims.rep_id} (alert link)")
        except BaseException:
            # Nothing changed (the lead moved on between the check and the transition, or Redis
            # failed): forget the use, so the page tells the truth the next time it is opened.
            await self.links.release(claims.lead_id, claims.jti)
            raise
        metrics.ADMIN_ACTION_LINKS.labels("POST", "accepted" if action == "accept" else "rejected").inc()
        log.info("lead %s %s by %s through an alert link (assignment %s)", claims.lead_id, action, claims.rep_id,
                 claims.assignment_id)
        if action == "accept":
            data = await self.store.lead_hash(claims.lead_id)
            view = lead_view_from_hash(data)
            contact = f"<p>Contact: {_h(view.email)}</p>" if view.email else ""
            return page(200, "Lead accepted", f"<p>{_h(view.display_name)} is yours. Stage now "
                        f"{_h(result.to_stage.value)}.</p>{contact}")
        return page(200, "Lead rejected", f"<p>Rejected ({_h(reason)}): back to marketing. Stage now "
                    f"{_h(result.to_stage.value)}.</p>")
