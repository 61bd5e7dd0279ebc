"""Digest rendering: one summary of a rep's queued low-priority alerts, as text, HTML and email.

The Slack form is :func:`router.alerts.render_slack.render_digest_blocks`; the
:class:`~router.alerts.render.Digest` itself is defined with the alert renderers.
"""

from __future__ import annotations

from email.message import EmailMessage

from models.lead import Alert
from router.alerts.render import Digest, html_buttons, message_id, new_email
from router.alerts.views import (
    account_view,
    action_links,
    alert_title,
    html_text,
    lead_grade,
    lead_job_title,
    one_line,
    score_text,
    utc_time,
)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def digest_subject(digest: Digest) -> str:
    """``Lead digest for Rita Rep: 3 sales-ready leads``."""
    return f"Lead digest for {one_line(digest.rep.name)}: {_plural(len(digest.alerts), 'sales-ready lead')}"


def digest_items(digest: Digest, limit: int) -> tuple[list[Alert], int]:
    """The alerts a digest lists (highest score first, then newest) and how many it leaves out."""
    ranked = sorted(digest.alerts, key=lambda a: (-a.lead.score, -a.assignment.ts))
    limit = max(1, limit)
    return ranked[:limit], max(0, len(ranked) - limit)


def digest_detail(alert: Alert) -> str:
    """``score 72 · grade B — score 72 crossed … — routed 2026-… UTC`` (unescaped)."""
    line = f"score {score_text(alert.lead.score)}"
    grade = lead_grade(alert)
    if grade:
        line += f" · grade {grade}"
    return f"{line} — {one_line(alert.trigger)} — routed {utc_time(alert.assignment.ts)}"


def _digest_line(alert: Alert) -> str:
    return f"{alert_title(alert)} — {digest_detail(alert)}"


def digest_period(digest: Digest) -> str:
    """The time span the digest covers, in UTC."""
    return f"{utc_time(digest.since)} to {utc_time(digest.until)}"


def render_digest_text(digest: Digest, limit: int = 25) -> str:
    shown, hidden = digest_items(digest, limit)
    lines = [digest_subject(digest), f"Alerts queued from {digest_period(digest)}", ""]
    for alert in shown:
        lines.append(f"* {_digest_line(alert)}")
        title = lead_job_title(alert)
        if title:
            lines.append(f"    {title}")
        acct = account_view(alert, limit=3)
        if acct is not None and acct.members:
            lines.append(f"    {acct.heading()}: " + "; ".join(m.name for m in acct.members))
        for _, label, url in action_links(alert.links):
            lines.append(f"    {label}: {url}")
    if hidden:
        lines.append(f"…and {hidden} more")
    return "\n".join(lines) + "\n"


def render_digest_html(digest: Digest, limit: int = 25) -> str:
    shown, hidden = digest_items(digest, limit)
    items = []
    for alert in shown:
        item = f"<li><strong>{html_text(alert_title(alert))}</strong> — {html_text(digest_detail(alert))}"
        acct = account_view(alert, limit=3)
        if acct is not None and acct.members:
            item += f"<br>{html_text(acct.heading())}: {html_text('; '.join(m.name for m in acct.members))}"
        links = action_links(alert.links)
        if links:
            item += f'<br><span style="line-height:2.4">{html_buttons(links)}</span>'
        items.append(item + "</li>")
    if hidden:
        items.append(f"<li>…and {hidden} more</li>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"></head>',
        '<body style="font-family:Arial,Helvetica,sans-serif;font-size:14px">',
        f"<h2>{html_text(digest_subject(digest))}</h2>",
        f'<p style="color:#555">Alerts queued from {html_text(digest_period(digest))}</p>',
        f"<ul>{''.join(items)}</ul>",
        "</body></html>",
    ]) + "\n"


def render_digest_email(digest: Digest, sender: str, limit: int = 25) -> EmailMessage:
    """The multipart/alternative digest email; its Message-ID is derived from the digest id."""
    msg = new_email(digest_subject(digest), sender, digest.rep.email, message_id(digest.digest_id, sender))
    msg["X-Leadrouter-Digest"] = one_line(digest.digest_id)
    msg.set_content(render_digest_text(digest, limit))
    msg.add_alternative(render_digest_html(digest, limit), subtype="html")
    return msg
