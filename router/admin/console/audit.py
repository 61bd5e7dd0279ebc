"""The console's Audit page (ops): every change made through the console, the admin API or the CLI.

Newest first, 100 a page (``?before=ID`` pages back), optionally one kind of action
(``?action=lead.`` for every lead action).  The entries come from router/storage/audit.py;
:func:`router.admin.audit.audit` records them.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from router.admin.console.html import h, page, when
from router.admin.console.session import Session
from router.admin.leads import LeadHandlers
from router.storage import audit
from router.storage.live import STREAM_ID

PAGE = 100
KINDS = ("lead.", "review.", "rep.", "rules.", "scoring.", "icp.", "alert.", "token.")


class AuditPage:
    def __init__(self, admin: LeadHandlers, html_response: Callable[[str], web.Response]) -> None:
        self.admin = admin
        self.html_response = html_response  # pages.py's answer (its security headers)

    async def page(self, request: web.Request, session: Session) -> web.StreamResponse:
        before = request.query.get("before", "")
        before = before if STREAM_ID.match(before) else ""
        action = request.query.get("action", "")[:40]
        entries = await audit.recent(self.admin.redis, PAGE, before=before or None, action=action)
        rows = []
        for e in entries:
            lead = f'<a href="/console/leads/{h(e.lead_id)}">{h(e.lead_id[:9])}</a>' if e.lead_id else ""
            rows.append(f'<tr data-action="{h(e.action)}"><td>{h(when(e.ts))}</td><td>{h(e.who)}'
                        f'{" (" + h(e.role) + ")" if e.role else ""}</td><td>{h(e.action)}</td><td>{lead}</td>'
                        f'<td>{h(e.target)}</td><td class="opt">{h(e.via)}</td><td class="opt">{h(e.detail)}</td>'
                        "</tr>")
        options = "".join(f'<option value="{h(k)}"{" selected" if k == action else ""}>{h(k.rstrip("."))}</option>'
                          for k in KINDS)
        older = (f'<p><a id="older" href="/console/audit?before={h(entries[-1].entry_id)}&amp;action={h(action)}">'
                 "Older</a></p>" if len(entries) == PAGE else "")
        table = ('<table id="audit"><thead><tr><th>When</th><th>Who</th><th>What</th><th>Lead</th><th>Target</th>'
                 f'<th class="opt">Via</th><th class="opt">Detail</th></tr></thead><tbody>{"".join(rows)}</tbody>'
                 "</table>") if rows else '<p class="muted" id="audit">Nothing recorded.</p>'
        body = ('<h1>Audit</h1><form method="get" action="/console/audit" class="inline">'
                f'<select name="action"><option value="">every change</option>{options}</select>'
                f'<button type="submit">Show</button></form>{table}{older}')
        return self.html_response(page("Audit", body, principal=session.principal, csrf=session.csrf))
