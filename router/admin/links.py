"""The signed alert-link page (``/a/<token>``): a rep accepts or rejects the lead an alert named, without a login.

The link's token (router/tokens.py) names the lead and the rep; a GET only shows the
lead and the two buttons (a link preview changes nothing), the POST acts.
"""

from __future__ import annotations

import logging
from html import escape as html_escape

from aiohttp import web

from models import lead_view_from_hash
from router.admin.core import AdminCore
from router.admin.http import ApiError
from router.admin.lifecycle import apply_action
from router.errors import TokenError
from router.tokens import ActionClaims, verify_action_token

log = logging.getLogger(__name__)


def _h(text: str) -> str:
    return html_escape(text, quote=True)


class LinkHandlers(AdminCore):
    """Handlers of the signed alert link (GET and POST /a/{token}); a mixin of :class:`router.admin.app.Admin`."""

    def _claims(self, request: web.Request) -> ActionClaims:
        try:
            return verify_action_token(self.settings.tokens.secret, request.match_info["token"], now=self.clock())
        except TokenError as exc:
            raise ApiError(400, "bad_link", str(exc)) from None

    async def action_page(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request)
        data = await self.store.lead_hash(claims.lead_id)
        if not data or data.get("forgotten") == "1":
            raise ApiError(404, "unknown_lead", "this lead no longer exists")
        view = lead_view_from_hash(data)
        policy = (await self.config()).lifecycle
        reasons = "".join(f'<option value="{_h(r)}">{_h(r)}</option>' for r in policy.reject_reasons)
        state = (f"stage {_h(view.stage.value)}; owner {_h(data.get('owner_name', '-'))}"
                 f"{'' if data.get('owner') == claims.rep_id else ' (no longer you)'}")
        chosen = request.query.get("do", "")
        html = f"""<!doctype html><html><head><meta charset="utf-8"><title>Lead {_h(view.display_name)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"></head><body style="font-family:sans-serif">
<h1>{_h(view.display_name)}{' &middot; ' + _h(view.company) if view.company else ''}</h1>
<p>{_h(view.email or '')} &middot; score {view.score:.0f} &middot; {state}</p>
<form method="post"><input type="hidden" name="action" value="accept">
<button type="submit"{' autofocus' if chosen == 'accept' else ''}>Accept this lead</button></form>
<form method="post"><input type="hidden" name="action" value="reject">
<label>Reason <select name="reason">{reasons}</select></label>
<button type="submit"{' autofocus' if chosen == 'reject' else ''}>Reject</button></form>
</body></html>"""
        return web.Response(text=html, content_type="text/html")

    async def action_submit(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request)
        form = await request.post()
        action, reason = str(form.get("action", "")), str(form.get("reason", "")).strip()[:100]
        if action not in ("accept", "reject"):
            raise ApiError(400, "bad_value", f"action {action[:20]!r} must be accept or reject")
        result = await apply_action(self, action, claims.lead_id, claims.rep_id, reason=reason)
        log.info("lead %s %s by %s through an alert link", claims.lead_id, action, claims.rep_id)
        done = "accepted: it is yours" if action == "accept" else f"rejected ({_h(reason)}): back to marketing"
        return web.Response(text=f"<!doctype html><html><body style='font-family:sans-serif'><p>Lead {done}. "
                                 f"Stage now {_h(result.to_stage.value)}.</p></body></html>",
                            content_type="text/html")
