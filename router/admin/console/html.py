"""The console's HTML: escaping, the page frame and small pieces.  Plain Python strings, no template engine.

Every value put into a page goes through :func:`h` (or :func:`attr`); the pages carry
no inline script or style, so the Content-Security-Policy forbids both.
"""

from __future__ import annotations

import time
from html import escape

from router.admin.auth import Principal, Role
from router.admin.console.ops_frame import OPS_CSS, OPS_LINKS

CSS = """
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,sans-serif;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.8rem;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}header .who{margin-left:auto;opacity:.85}
header form{margin:0}main{max-width:960px;margin:0 auto;padding:1rem}
h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.4rem .5rem;
border-bottom:1px solid #e3e6eb;vertical-align:top}th{font-size:.85rem;color:#5a6272}
.card{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:1rem;margin-bottom:1rem}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:.6rem}
.facts div span{display:block;font-size:.8rem;color:#5a6272}.facts div b{font-size:1.1rem}
.msg{padding:.6rem .8rem;border-radius:6px;margin-bottom:1rem}.ok{background:#e3f5e8}.err{background:#fbe4e4}
form.inline{display:inline-flex;gap:.4rem;align-items:center;margin:.2rem .6rem .2rem 0}
input,select,button{font:inherit;padding:.35rem .5rem}button{cursor:pointer}
.ready{color:#0a7a31;font-weight:600}.muted{color:#5a6272}
.st-sent{color:#0a7a31}.st-failed{color:#b42318;font-weight:600}.st-retrying{color:#b35c00}tr.fresh{background:#eef6ff}
#score-chart{display:block;max-width:100%;height:auto}
@media (max-width:600px){th.opt,td.opt{display:none}}
"""


def h(value: object) -> str:
    """Text for an element's content or a quoted attribute."""
    return escape("" if value is None else str(value), quote=True)


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


CSS += OPS_CSS  # the ops pages' styles (ops_frame.py)


def csrf_field(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{h(csrf)}">'


def page(title: str, body: str, *, principal: Principal | None = None, csrf: str = "") -> str:
    nav = ""
    if principal is not None:
        links = ['<a href="/console/leads">Leads</a>', '<a href="/console/live">Live</a>']
        if principal.role is Role.REP:
            links.insert(0, '<a href="/console/queue">My queue</a>')
        if principal.role in (Role.OPS, Role.READONLY):
            links += OPS_LINKS
        if principal.role is Role.OPS:
            links.append('<a href="/console/audit">Audit</a>')
        who = f"{h(principal.name)} ({h(principal.role.value)}{', ' + h(principal.rep_id) if principal.rep_id else ''})"
        nav = (" ".join(links) + f'<span class="who">{who}</span>'
               f'<form method="post" action="/console/sign-out">{csrf_field(csrf)}'
               '<button type="submit">Sign out</button></form>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>{h(title)} · leadrouter</title><link rel="stylesheet" href="/console/static/console.css">'
            f'</head><body><header><a href="/console/">leadrouter</a>{nav}</header><main>{body}</main></body></html>')
