"""Alert rendering: what a rep reads, as plain text, HTML and email.

Pure: :func:`render_text` and :func:`render_html` turn an
:class:`~models.lead.Alert` into what a rep reads: who and which company, score
(and fit grade when the lead has one), why now (top reasons and the recent
activity, in UTC), who else from the account is active, the routing path (team,
rule, rules version) and accept / reject / open links; :func:`render_email` wraps
both in one email.  The views every medium shares (:func:`account_view`,
:func:`recent_activity`, :func:`action_links`, ...) are in :mod:`router.alerts.views`;
:class:`Digest`, the one summary a rep gets per interval for low-priority alerts, is here.

The other formats: Slack Block Kit for alerts and digests in
:mod:`router.alerts.render_slack`; digest text, HTML and email in
:mod:`router.alerts.render_digest`.

Everything that came from a lead is treated as hostile: HTML-escaped in HTML,
Slack's control characters (``&``, ``<``, ``>``) escaped in Slack text, line
breaks folded in single-line places, and only plain ``http(s)`` URLs ever become
links or buttons.
"""

from __future__ import annotations

import email.policy
import email.utils
import functools
import hashlib
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from typing import Any

from models.lead import Alert, Rep
from router.alerts.views import (
    account_view,
    action_links,
    activity_line,
    alert_kind,
    alert_title,
    email_subject,
    escalation_line,
    field_change_lines,
    html_text,
    lead_grade,
    model_heading,
    model_lines,
    one_line,
    reason_line,
    recent_activity,
    reengagement_line,
    routing_line,
    score_text,
    top_reasons,
    who_line,
)

log = logging.getLogger(__name__)


def render_text(alert: Alert) -> str:
    """The plain-text alert (email text part, console)."""
    lead, asg = alert.lead, alert.assignment
    rep = asg.rep
    lines = [
        email_subject(alert),
        f"Trigger: {one_line(alert.trigger)}",
    ]
    if alert.reengagement is not None:
        lines.append(f"Re-engaged: {reengagement_line(alert)}")
    lines += [
        "",
        f"Who:        {who_line(alert, with_email=False)}",
        f"Score:      {score_text(lead.score)} (threshold {score_text(alert.threshold)})",
    ]
    grade = lead_grade(alert)
    if grade:
        lines.append(f"Grade:      {grade}")
    lines.append(f"Stage:      {one_line(lead.stage)}")
    if lead.email:
        lines.append(f"Email:      {one_line(lead.email)}")
    if alert.kind == "escalation":
        lines.append(f"Escalation: {escalation_line(alert)}")
    else:
        lines.append(
            f"Routed to:  {one_line(rep.name)} <{one_line(rep.email)}>, team {one_line(asg.decision.team)}"
        )
    lines += ["", "Why now:"]
    reasons = top_reasons(lead.reasons)
    lines += [f"  {reason_line(r)}" for r in reasons] or ["  (no scoring reasons recorded)"]
    heading = model_heading(alert)
    if heading:
        lines += ["", f"Model: {heading}, log-odds contributions:"]
        lines += [f"  {c}" for c in model_lines(alert)]
    changes = field_change_lines(alert)
    if changes:
        lines += ["", "Field changes:"]
        lines += [f"  {c}" for c in changes]
    activity = recent_activity(alert)
    if activity:
        lines += ["", "Recent activity (UTC):"]
        lines += [f"  {activity_line(a)}" for a in activity]
    acct = account_view(alert)
    if acct is not None:
        facts = acct.facts()
        lines += ["", f"{acct.heading()}{f' ({facts})' if facts else ''}:"]
        lines += [f"  {m.line()}" for m in acct.members]
        if acct.hidden:
            lines.append(f"  …and {acct.hidden} more")
    links = action_links(alert.links)
    if links:
        lines += ["", "Act on it:"]
        lines += [f"  {label}: {url}" for _, label, url in links]
    lines += [
        "",
        f"Routing: {routing_line(alert)}",
        f"Assignment: {one_line(asg.assignment_id)} (lead {one_line(asg.lead_id)}, crossing {asg.crossing})",
    ]
    return "\n".join(lines) + "\n"


_BUTTON_STYLE = {
    "accept": "background:#2e7d32;color:#fff",
    "reject": "background:#c62828;color:#fff",
    "lead": "background:#eee;color:#222",
}


def html_buttons(links: Sequence[tuple[str, str, str]]) -> str:
    """The ``(key, label, url)`` links as styled HTML buttons."""
    return " ".join(
        f'<a href="{html_text(url)}" style="{_BUTTON_STYLE[key]};padding:6px 14px;border-radius:4px;'
        f'text-decoration:none;display:inline-block">{html_text(label)}</a>'
        for key, label, url in links
    )


def render_html(alert: Alert) -> str:
    """The HTML alert (email HTML part); every user-supplied value is escaped."""
    lead, asg = alert.lead, alert.assignment
    rep = asg.rep
    td = 'style="padding:2px 12px 2px 0;color:#555"'
    rows = [
        ("Who", who_line(alert, with_email=False)),
        ("Score", f"{score_text(lead.score)} (threshold {score_text(alert.threshold)})"),
    ]
    grade = lead_grade(alert)
    if grade:
        rows.append(("Grade", grade))
    rows.append(("Stage", str(lead.stage)))
    if lead.email:
        rows.append(("Email", lead.email))
    rows.append(("Routed to", f"{rep.name} <{rep.email}>, team {asg.decision.team}"))
    table = "".join(f"<tr><td {td}>{html_text(k)}</td><td>{html_text(v)}</td></tr>" for k, v in rows)
    reasons = top_reasons(lead.reasons)
    why = (
        "".join(f"<li>{html_text(reason_line(r))}</li>" for r in reasons) or "<li>(no scoring reasons recorded)</li>"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"></head>',
        '<body style="font-family:Arial,Helvetica,sans-serif;font-size:14px">',
        f"<h2>{html_text(alert_kind(alert))}: {html_text(alert_title(alert))}</h2>",
        f"<p><strong>Trigger:</strong> {html_text(alert.trigger)}</p>",
    ]
    if alert.reengagement is not None:
        parts.append(f"<p><strong>Re-engaged:</strong> {html_text(reengagement_line(alert))}</p>")
    parts += [
        f"<table>{table}</table>",
    ]
    links = action_links(alert.links)
    if links:
        parts.append(f'<p style="margin:14px 0">{html_buttons(links)}</p>')
    parts += ["<h3>Why now</h3>", f"<ul>{why}</ul>"]
    model = model_heading(alert)
    if model:
        shares = "".join(f"<li>{html_text(c)}</li>" for c in model_lines(alert))
        parts += [f"<h3>Model: {html_text(model)}</h3>", f"<ul>{shares}</ul>"]
    changes = field_change_lines(alert)
    if changes:
        parts += ["<h3>Field changes</h3>", f"<ul>{''.join(f'<li>{html_text(c)}</li>' for c in changes)}</ul>"]
    activity = recent_activity(alert)
    if activity:
        items = []
        for a in activity:
            target = html_text(a.target)
            if a.target.lower().startswith(("http://", "https://")):
                target = f'<a href="{html_text(a.target)}">{target}</a>'
            bits = [x for x in (html_text(a.when), html_text(a.type), target, html_text(a.detail)) if x]
            items.append(f"<li>{' · '.join(bits)}</li>")
        parts += ["<h3>Recent activity (UTC)</h3>", f"<ul>{''.join(items)}</ul>"]
    acct = account_view(alert)
    if acct is not None:
        facts = acct.facts()
        parts.append(f"<h3>{html_text(acct.heading())}</h3>")
        if facts:
            parts.append(f'<p style="color:#555">{html_text(facts)}</p>')
        members = "".join(f"<li>{html_text(m.line())}</li>" for m in acct.members)
        if acct.hidden:
            members += f"<li>…and {acct.hidden} more</li>"
        if members:
            parts.append(f"<ul>{members}</ul>")
    parts += [
        f'<p style="color:#777;font-size:12px">Routing: {html_text(routing_line(alert))}<br>',
        f"Assignment {html_text(asg.assignment_id)} (lead {html_text(asg.lead_id)}, crossing {asg.crossing})</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def message_id(assignment_id: str, sender: str) -> str:
    """A Message-ID derived only from the assignment, so a resend is recognisable."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", assignment_id) or "_"
    if safe != assignment_id:
        safe += "." + hashlib.sha256(assignment_id.encode()).hexdigest()[:12]
    _, at, domain = email.utils.parseaddr(sender)[1].rpartition("@")
    if not at or not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        domain = "leadrouter.local"
    return f"<leadrouter.alert.{safe}@{domain}>"


# Headers whose values repeat from one email to the next (see _HeaderClasses).
_REPEATED = frozenset({"from", "to", "date", "mime-version", "content-type", "content-transfer-encoding"})


class _HeaderClasses(HeaderRegistry):
    """The stdlib header factory, with each header name's class built once and repeated values parsed once.

    ``HeaderRegistry.__getitem__`` builds a new class (``type(...)``) on every call,
    and the email package calls it twice per header set (to check the header's
    ``max_count``, then to parse the value); parsing a value with the RFC 5322 parser
    costs 5-60 µs.  That was most of the time of :func:`render_email`.  The classes
    hold no state, so one per name serves every message; and a parsed header is
    immutable (a ``str`` with its parse tree), so the values every email repeats
    (sender, rep address, content type and encoding, MIME version, the date within
    one second) are parsed once and shared: ``_REPEATED`` names only, so no lead's
    data (a subject, an id) is kept.  Validation is unchanged: the policy refuses
    CR/LF in a value before the factory is called, and the output is the stdlib's.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}
        self._parsed = functools.lru_cache(maxsize=256)(super().__call__)

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if type(value) is str and name.lower() in _REPEATED:
            return self._parsed(name, value)
        return super().__call__(name, value)

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._classes.clear()
        self._parsed.cache_clear()

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = super().__getitem__(name)
            if len(self._classes) < 64:  # our own few names; anything else is built as before
                self._classes[key] = cls
        return cls


# Headers fold only past RFC 5322's hard limit: CPython's folder otherwise doubles the
# space before an encoded word (the em dash) in long subjects.
_EMAIL_POLICY = email.policy.default.clone(max_line_length=998, header_factory=_HeaderClasses())


def new_email(subject: str, sender: str, to: str, mid: str) -> EmailMessage:
    """An empty email with the common headers set (the caller adds the body)."""
    msg = EmailMessage(policy=_EMAIL_POLICY)
    msg["Subject"] = subject
    msg["From"] = one_line(sender)
    msg["To"] = one_line(to)
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = mid
    return msg


def render_email(alert: Alert, sender: str) -> EmailMessage:
    """The multipart/alternative (text + HTML) email for the assigned rep.

    Raises ``ValueError`` when a header value is unusable (e.g. a malformed address).
    """
    asg = alert.assignment
    msg = new_email(email_subject(alert), sender, asg.rep.email, message_id(asg.assignment_id, sender))
    msg["X-Leadrouter-Assignment"] = one_line(asg.assignment_id)
    msg["X-Leadrouter-Lead"] = one_line(asg.lead_id)
    msg.set_content(render_text(alert))
    msg.add_alternative(render_html(alert), subtype="html")
    return msg


# --------------------------------------------------------------------------- digests


@dataclass(frozen=True, slots=True)
class Digest:
    """One summary for one rep: the low-priority alerts queued for them over an interval.

    ``digest_id`` (``digest:<rep>:<n>``) plays the part of an assignment id: channels
    are marked sent under it, so a resumed or replayed digest goes out once per channel.
    """

    digest_id: str
    rep: Rep
    alerts: tuple[Alert, ...]
    since: float
    until: float

    @property
    def team(self) -> str:
        """The team channel the digest goes to: the team most of its alerts were routed in."""
        teams = Counter(a.assignment.decision.team for a in self.alerts)
        return teams.most_common(1)[0][0] if teams else self.rep.team

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest_id": self.digest_id,
            "rep": {
                "rep_id": self.rep.rep_id,
                "name": self.rep.name,
                "email": self.rep.email,
                "team": self.rep.team,
                "slack_user_id": self.rep.slack_user_id,
            },
            "alerts": [a.to_dict() for a in self.alerts],
            "since": self.since,
            "until": self.until,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Digest:
        r = d["rep"]
        return cls(
            digest_id=str(d["digest_id"]),
            rep=Rep(str(r["rep_id"]), str(r["name"]), str(r["email"]), str(r["team"]), r.get("slack_user_id")),
            alerts=tuple(Alert.from_dict(a) for a in d.get("alerts") or ()),
            since=float(d.get("since", 0.0)),
            until=float(d.get("until", 0.0)),
        )
