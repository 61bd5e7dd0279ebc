"""Alert rendering (plain text, HTML, Slack Block Kit), Slack pacing and delivery with retries.

Rendering is pure: :func:`render_text`, :func:`render_html` and
:func:`render_slack_blocks` turn an :class:`~models.lead.Alert` into what a rep
reads: who and which company, score (and fit grade when the lead has one), why
now (top reasons and the recent activity, in UTC), who else from the account is
active, the routing path (team, rule, rules version) and accept / reject / open
links.  :func:`render_digest_text` and friends do the same for a
:class:`Digest`, the one summary a rep gets per interval for low-priority alerts.
Everything that came from a lead (names, form fields, URLs, reason details,
account members) is treated as hostile: it is HTML-escaped in HTML, has Slack's
control characters (``&``, ``<``, ``>``) escaped in Slack text, has line breaks
folded in single-line places (subjects, headers, list items), and only plain
``http(s)`` URLs ever become links or buttons.

Delivery goes through a :class:`Notifier` per channel.  A notifier makes one
attempt and raises :class:`~router.errors.TransientSendError` (worth retrying)
or :class:`~router.errors.PermanentSendError` (not).  :func:`deliver` owns the
retry policy (full-jitter exponential backoff, capped, never shorter than a
server's ``Retry-After``) and never raises for a failed send.

Slack takes about one message per second per channel.  The Slack notifiers ask a
:class:`Pacer` for a slot before every attempt: :class:`LocalPacer` paces every
concurrent send of one process, :class:`RedisPacer` keeps one token bucket per
channel in Redis (one Lua call per message) so every worker shares the budget.
A 429 holds the channel's bucket for the ``Retry-After`` it names, so the other
sends to that channel wait too.
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import hashlib
import html
import json
import logging
import math
import random
import re
import smtplib
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from models.lead import Alert, Reason, Rep
from router import keys, metrics
from router.errors import PermanentSendError, SendError, SettingsError, TransientSendError
from router.settings import Settings

log = logging.getLogger(__name__)

MAX_REASONS = 5
MAX_RECENT = 10
MAX_MEMBERS = 5

# Block Kit limits (characters).
_HEADER_MAX = 150
_FIELD_MAX = 2000
_SECTION_MAX = 3000
_CONTEXT_MAX = 3000
_FALLBACK_MAX = 3000
_BUTTON_TEXT_MAX = 75
_BUTTON_VALUE_MAX = 2000
_URL_MAX = 3000
_BLOCKS_MAX = 50

_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f<>|\"'`\\]")


# --------------------------------------------------------------------------- helpers


Sleep = Callable[[float], Awaitable[object]]


def _one_line(value: object) -> str:
    """``value`` as text on one line: user data must not forge extra lines."""
    return _LINE_BREAKS.sub(" ", str(value)).strip()


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(text: str) -> str:
    """Escape Slack's mrkdwn control characters so user text cannot mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _h(value: object) -> str:
    return html.escape(_one_line(value), quote=True)


def _num(value: float) -> str:
    return f"{value:.0f}"


def _points(value: float) -> str:
    return f"{value:+g}"


def utc_time(ts: object) -> str:
    """``ts`` (epoch seconds, epoch ms, or ISO 8601) as ``YYYY-MM-DD HH:MM:SS UTC``.

    Anything that does not parse is returned as text rather than dropped.
    """
    dt: datetime | None = None
    if isinstance(ts, datetime):
        dt = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    elif isinstance(ts, int | float) and not isinstance(ts, bool):
        dt = _from_epoch(float(ts))
    elif isinstance(ts, str) and ts.strip():
        raw = ts.strip()
        try:
            dt = _from_epoch(float(raw))
        except ValueError:
            try:
                parsed = datetime.fromisoformat(raw)
            except ValueError:
                return _one_line(raw)
            dt = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if dt is None:
        return "" if ts is None else _one_line(ts)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _from_epoch(value: float) -> datetime | None:
    if not math.isfinite(value):
        return None
    if value > 1e11:  # epoch milliseconds
        value /= 1000.0
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def top_reasons(reasons: Iterable[Reason], limit: int = MAX_REASONS) -> list[Reason]:
    """The reasons worth showing: most points first (newest first on ties), at most ``limit``."""
    return sorted(reasons, key=lambda r: (-r.points, -r.ts))[:limit]


def reason_line(reason: Reason) -> str:
    """``+50 demo_request — filled form demo-request`` (unescaped, one line)."""
    line = f"{_points(reason.points)} {_one_line(reason.rule)}"
    if reason.detail:
        line += f" — {_one_line(reason.detail)}"
    return line


@dataclass(frozen=True, slots=True)
class Activity:
    """One recent-activity item, normalised for display (unescaped text)."""

    when: str
    type: str
    target: str
    detail: str


def _activity(item: Mapping[str, Any]) -> Activity:
    target = ""
    for key in ("url", "form_id", "campaign"):
        value = item.get(key)
        if value:
            target = _one_line(value)
            if key == "form_id":
                target = f"form {target}"
            elif key == "campaign":
                target = f"campaign {target}"
            break
    detail = item.get("detail") or item.get("title") or ""
    return Activity(
        when=utc_time(item.get("ts")),
        type=_one_line(item.get("type") or "event"),
        target=target,
        detail=_one_line(detail),
    )


def recent_activity(alert: Alert, limit: int = MAX_RECENT) -> list[Activity]:
    return [_activity(item) for item in alert.recent[:limit]]


def _activity_line(a: Activity) -> str:
    return " · ".join(x for x in (a.when, a.type, a.target, a.detail) if x)


def _title(alert: Alert) -> str:
    lead = alert.lead
    name = _one_line(lead.display_name)
    company = lead.company
    return f"{name} ({_one_line(company)})" if company else name


def email_subject(alert: Alert) -> str:
    """``Sales-ready lead: {name} ({company}) — score {score:.0f}``."""
    return f"Sales-ready lead: {_title(alert)} — score {_num(alert.lead.score)}"


def _routing_line(alert: Alert) -> str:
    """``team T · rule R (rules V); path a → b`` (unescaped, one line)."""
    d = alert.assignment.decision
    line = f"team {_one_line(d.team)} · rule {_one_line(d.rule)} (rules {_one_line(d.rules_version)})"
    if d.path:
        line += "; path " + " → ".join(_one_line(p) for p in d.path)
    return line


def safe_url(value: object) -> str | None:
    """``value`` when it is a plain absolute http(s) URL fit for a link or a button, else None.

    Whitespace, quotes, ``<``, ``>`` and ``|`` are refused rather than escaped: they
    would break Slack's ``<url|label>`` syntax or an HTML attribute.
    """
    if not isinstance(value, str) or not value or len(value) > _URL_MAX or _URL_FORBIDDEN.search(value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return value


def lead_job_title(alert: Alert) -> str:
    f = alert.lead.fields
    return _one_line(f.get("job_title") or f.get("title") or "")


def lead_grade(alert: Alert) -> str | None:
    """The lead's fit grade (``fields["grade"]``), or None when it has none."""
    grade = _one_line(alert.lead.fields.get("grade") or "")
    return grade or None


def who_line(alert: Alert, *, with_email: bool = True) -> str:
    """``Jane Doe, Head of Procurement at Acme · jane@acme.test`` (unescaped, one line)."""
    lead = alert.lead
    name = _one_line(lead.display_name)
    line = name
    title = lead_job_title(alert)
    if title:
        line += f", {title}"
    if lead.company:
        line += f" at {_one_line(lead.company)}"
    if with_email and lead.email and _one_line(lead.email) != name:
        line += f" · {_one_line(lead.email)}"
    return line


@dataclass(frozen=True, slots=True)
class MemberView:
    """Another active person at the lead's account, normalised for display (unescaped)."""

    name: str
    title: str
    email: str
    last_active: str

    def line(self) -> str:
        bits = [self.name]
        if self.title:
            bits[0] += f" — {self.title}"
        if self.last_active:
            bits.append(f"last active {self.last_active}")
        return " · ".join(bits)


@dataclass(frozen=True, slots=True)
class AccountView:
    """The lead's account as alerts show it (unescaped)."""

    name: str
    domain: str
    intent: float | None
    active_people: int | None
    members: tuple[MemberView, ...]
    hidden: int  # members not shown (over the limit)

    def heading(self) -> str:
        """``Also active at Acme`` (or ``Account: Acme`` when nobody else is)."""
        label = self.name or self.domain
        return f"Also active at {label}" if self.members else f"Account: {label}"

    def facts(self) -> str:
        """``acme.test · intent 72 · 4 people active`` (what is known of it)."""
        bits: list[str] = []
        if self.name and self.domain:
            bits.append(self.domain)
        if self.intent is not None:
            bits.append(f"intent {_num(self.intent)}")
        if self.active_people is not None:
            bits.append(f"{self.active_people} {'person' if self.active_people == 1 else 'people'} active")
        return " · ".join(bits)


def _finite(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def account_view(alert: Alert, limit: int = MAX_MEMBERS) -> AccountView | None:
    """The account block's content, or None when the alert knows nothing of an account.

    ``alert.account["members"]`` is read defensively (it is data, not code): entries
    that are not objects or name nobody are skipped, and so is the lead itself.
    """
    acct = alert.account
    if not isinstance(acct, Mapping) or not acct:
        return None
    own = (alert.lead.email or "").strip().lower()
    members: list[MemberView] = []
    raw_members = acct.get("members")
    for item in raw_members if isinstance(raw_members, list | tuple) else ():
        if not isinstance(item, Mapping):
            continue
        mail = _one_line(item.get("email") or "")
        name = _one_line(item.get("name") or "") or mail
        if not name or (own and mail.lower() == own):
            continue
        raw_last = item.get("last_active")
        last = _finite(raw_last)
        if last is not None:
            when = utc_time(last) if last > 0 else ""  # 0: never seen
        else:
            when = utc_time(raw_last) if isinstance(raw_last, str) else ""  # ISO 8601 text
        members.append(MemberView(name, _one_line(item.get("title") or ""), mail, when))
    name = _one_line(acct.get("name") or "")
    domain = _one_line(acct.get("domain") or "")
    if not name and not domain and not members:
        return None
    intent = _finite(acct.get("intent"))
    people = _finite(acct.get("active_people"))
    return AccountView(
        name=name or domain or "the account",
        domain=domain,
        intent=intent,
        active_people=int(people) if people is not None and people >= 0 else None,
        members=tuple(members[:limit]),
        hidden=max(0, len(members) - limit),
    )


_LINKS = (("accept", "Accept"), ("reject", "Reject"), ("lead", "Open lead"))


def action_links(links: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(key, label, url)`` for the accept / reject / lead links that are safe http(s) URLs."""
    out: list[tuple[str, str, str]] = []
    for key, label in _LINKS:
        url = safe_url(links.get(key))
        if url is not None:
            out.append((key, label, url))
    return out


# --------------------------------------------------------------------------- renderers


def render_text(alert: Alert) -> str:
    """The plain-text alert (email text part, console)."""
    lead, asg = alert.lead, alert.assignment
    rep = asg.rep
    lines = [
        email_subject(alert),
        f"Trigger: {_one_line(alert.trigger)}",
        "",
        f"Who:        {who_line(alert, with_email=False)}",
        f"Score:      {_num(lead.score)} (threshold {_num(alert.threshold)})",
    ]
    grade = lead_grade(alert)
    if grade:
        lines.append(f"Grade:      {grade}")
    lines.append(f"Stage:      {_one_line(lead.stage)}")
    if lead.email:
        lines.append(f"Email:      {_one_line(lead.email)}")
    lines.append(
        f"Routed to:  {_one_line(rep.name)} <{_one_line(rep.email)}>, team {_one_line(asg.decision.team)}"
    )
    lines += ["", "Why now:"]
    reasons = top_reasons(lead.reasons)
    lines += [f"  {reason_line(r)}" for r in reasons] or ["  (no scoring reasons recorded)"]
    activity = recent_activity(alert)
    if activity:
        lines += ["", "Recent activity (UTC):"]
        lines += [f"  {_activity_line(a)}" for a in activity]
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
        f"Routing: {_routing_line(alert)}",
        f"Assignment: {_one_line(asg.assignment_id)} (lead {_one_line(asg.lead_id)}, crossing {asg.crossing})",
    ]
    return "\n".join(lines) + "\n"


_BUTTON_STYLE = {
    "accept": "background:#2e7d32;color:#fff",
    "reject": "background:#c62828;color:#fff",
    "lead": "background:#eee;color:#222",
}


def _html_buttons(links: Sequence[tuple[str, str, str]]) -> str:
    return " ".join(
        f'<a href="{_h(url)}" style="{_BUTTON_STYLE[key]};padding:6px 14px;border-radius:4px;'
        f'text-decoration:none;display:inline-block">{_h(label)}</a>'
        for key, label, url in links
    )


def render_html(alert: Alert) -> str:
    """The HTML alert (email HTML part); every user-supplied value is escaped."""
    lead, asg = alert.lead, alert.assignment
    rep = asg.rep
    td = 'style="padding:2px 12px 2px 0;color:#555"'
    rows = [
        ("Who", who_line(alert, with_email=False)),
        ("Score", f"{_num(lead.score)} (threshold {_num(alert.threshold)})"),
    ]
    grade = lead_grade(alert)
    if grade:
        rows.append(("Grade", grade))
    rows.append(("Stage", str(lead.stage)))
    if lead.email:
        rows.append(("Email", lead.email))
    rows.append(("Routed to", f"{rep.name} <{rep.email}>, team {asg.decision.team}"))
    table = "".join(f"<tr><td {td}>{_h(k)}</td><td>{_h(v)}</td></tr>" for k, v in rows)
    reasons = top_reasons(lead.reasons)
    why = (
        "".join(f"<li>{_h(reason_line(r))}</li>" for r in reasons) or "<li>(no scoring reasons recorded)</li>"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"></head>',
        '<body style="font-family:Arial,Helvetica,sans-serif;font-size:14px">',
        f"<h2>Sales-ready lead: {_h(_title(alert))}</h2>",
        f"<p><strong>Trigger:</strong> {_h(alert.trigger)}</p>",
        f"<table>{table}</table>",
    ]
    links = action_links(alert.links)
    if links:
        parts.append(f'<p style="margin:14px 0">{_html_buttons(links)}</p>')
    parts += ["<h3>Why now</h3>", f"<ul>{why}</ul>"]
    activity = recent_activity(alert)
    if activity:
        items = []
        for a in activity:
            target = _h(a.target)
            if a.target.lower().startswith(("http://", "https://")):
                target = f'<a href="{_h(a.target)}">{target}</a>'
            bits = [x for x in (_h(a.when), _h(a.type), target, _h(a.detail)) if x]
            items.append(f"<li>{' · '.join(bits)}</li>")
        parts += ["<h3>Recent activity (UTC)</h3>", f"<ul>{''.join(items)}</ul>"]
    acct = account_view(alert)
    if acct is not None:
        facts = acct.facts()
        parts.append(f"<h3>{_h(acct.heading())}</h3>")
        if facts:
            parts.append(f'<p style="color:#555">{_h(facts)}</p>')
        members = "".join(f"<li>{_h(m.line())}</li>" for m in acct.members)
        if acct.hidden:
            members += f"<li>…and {acct.hidden} more</li>"
        if members:
            parts.append(f"<ul>{members}</ul>")
    parts += [
        f'<p style="color:#777;font-size:12px">Routing: {_h(_routing_line(alert))}<br>',
        f"Assignment {_h(asg.assignment_id)} (lead {_h(asg.lead_id)}, crossing {asg.crossing})</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def render_slack_fallback(alert: Alert) -> str:
    """The notification text Slack shows where blocks cannot be (escaped mrkdwn)."""
    text = f"{email_subject(alert)} — {_one_line(alert.trigger)}"
    return _truncate(slack_escape(text), _FALLBACK_MAX)


def _slack_buttons(links: Sequence[tuple[str, str, str]], value: str) -> dict[str, Any]:
    """An actions block of link buttons (Slack opens the URL; no interactivity needed)."""
    elements: list[dict[str, Any]] = []
    for key, label, url in links:
        button: dict[str, Any] = {
            "type": "button",
            "action_id": f"leadrouter_{key}",
            "text": {"type": "plain_text", "text": _truncate(label, _BUTTON_TEXT_MAX)},
            "url": url,
            "value": _truncate(value, _BUTTON_VALUE_MAX),
        }
        if key == "accept":
            button["style"] = "primary"
        elif key == "reject":
            button["style"] = "danger"
        elements.append(button)
    return {"type": "actions", "block_id": "leadrouter_actions", "elements": elements}


def _slack_account(acct: AccountView) -> dict[str, Any]:
    e = slack_escape
    facts = acct.facts()
    head = f"*{e(acct.heading())}*" + (f" · {e(facts)}" if facts else "")
    lines = [head]
    for m in acct.members:
        line = f"• *{e(m.name)}*"
        if m.title:
            line += f" — {e(m.title)}"
        if m.last_active:
            line += f" · last active {e(m.last_active)}"
        lines.append(line)
    if acct.hidden:
        lines.append(f"…and {acct.hidden} more")
    return {"type": "section", "text": {"type": "mrkdwn", "text": _truncate("\n".join(lines), _SECTION_MAX)}}


def render_slack_blocks(alert: Alert) -> dict[str, Any]:
    """``{"text": fallback, "blocks": [...]}`` ready for a webhook or chat.postMessage.

    Blocks: header; who + trigger; score (grade), threshold, stage, routed-to
    fields; why now; recent activity (UTC); the account and who else there is
    active; the routing path; accept / reject / open-lead buttons when the
    alert has links.
    """
    lead, asg = alert.lead, alert.assignment
    rep = asg.rep
    e = slack_escape
    rep_text = e(_one_line(rep.name))
    if rep.slack_user_id and _SLACK_USER_ID.match(rep.slack_user_id):
        rep_text = f"<@{rep.slack_user_id}> ({rep_text})"
    fields = [("Score", _num(lead.score))]
    grade = lead_grade(alert)
    if grade:
        fields.append(("Grade", e(grade)))
    fields += [
        ("Threshold", _num(alert.threshold)),
        ("Stage", e(_one_line(lead.stage))),
        ("Routed to", f"{rep_text}, team {e(_one_line(asg.decision.team))}"),
    ]
    intro = f"*Who:* {e(who_line(alert))}\n*Trigger:* {e(_one_line(alert.trigger))}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _truncate(e(f"Sales-ready lead: {_title(alert)}"), _HEADER_MAX),
            },
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(intro, _SECTION_MAX)}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": _truncate(f"*{k}*\n{v}", _FIELD_MAX)} for k, v in fields],
        },
    ]
    reasons = top_reasons(lead.reasons)
    why = "\n".join(f"• {e(reason_line(r))}" for r in reasons) or "_no scoring reasons recorded_"
    blocks.append(
        {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(f"*Why now*\n{why}", _SECTION_MAX)}}
    )
    activity = recent_activity(alert)
    if activity:
        lines = "\n".join(e(_activity_line(a)) for a in activity)
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": _truncate(f"*Recent activity (UTC)*\n{lines}", _CONTEXT_MAX)}
                ],
            }
        )
    acct = account_view(alert)
    if acct is not None:
        blocks.append(_slack_account(acct))
    routing = f"Routing: {e(_routing_line(alert))} · assignment {e(_one_line(asg.assignment_id))}"
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _truncate(routing, _CONTEXT_MAX)}]}
    )
    links = action_links(alert.links)
    if links:
        blocks.append(_slack_buttons(links, asg.assignment_id))
    return {"text": render_slack_fallback(alert), "blocks": blocks}


def message_id(assignment_id: str, sender: str) -> str:
    """A Message-ID derived only from the assignment, so a resend is recognisable."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", assignment_id) or "_"
    if safe != assignment_id:
        safe += "." + hashlib.sha256(assignment_id.encode()).hexdigest()[:12]
    _, at, domain = email.utils.parseaddr(sender)[1].rpartition("@")
    if not at or not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        domain = "leadrouter.local"
    return f"<leadrouter.alert.{safe}@{domain}>"


# Headers fold only past RFC 5322's hard limit: CPython's folder otherwise doubles the
# space before an encoded word (the em dash) in long subjects.
_EMAIL_POLICY = email.policy.default.clone(max_line_length=998)


# Headers fold only past RFC 5322's hard limit: CPython's folder otherwise doubles the
# space before an encoded word (the em dash) in long subjects.
_EMAIL_POLICY = email.policy.default.clone(max_line_length=998)


def _new_email(subject: str, sender: str, to: str, mid: str) -> EmailMessage:
    msg = EmailMessage(policy=_EMAIL_POLICY)
    msg["Subject"] = subject
    msg["From"] = _one_line(sender)
    msg["To"] = _one_line(to)
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = mid
    return msg


def render_email(alert: Alert, sender: str) -> EmailMessage:
    """The multipart/alternative (text + HTML) email for the assigned rep.

    Raises ``ValueError`` when a header value is unusable (e.g. a malformed address).
    """
    asg = alert.assignment
    msg = _new_email(email_subject(alert), sender, asg.rep.email, message_id(asg.assignment_id, sender))
    msg["X-Leadrouter-Assignment"] = _one_line(asg.assignment_id)
    msg["X-Leadrouter-Lead"] = _one_line(asg.lead_id)
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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def digest_subject(digest: Digest) -> str:
    """``Lead digest for Rita Rep: 3 sales-ready leads``."""
    return f"Lead digest for {_one_line(digest.rep.name)}: {_plural(len(digest.alerts), 'sales-ready lead')}"


def digest_items(digest: Digest, limit: int) -> tuple[list[Alert], int]:
    """The alerts a digest lists (highest score first, then newest) and how many it leaves out."""
    ranked = sorted(digest.alerts, key=lambda a: (-a.lead.score, -a.assignment.ts))
    limit = max(1, limit)
    return ranked[:limit], max(0, len(ranked) - limit)


def _digest_detail(alert: Alert) -> str:
    """``score 72 · grade B — score 72 crossed … — routed 2026-… UTC`` (unescaped)."""
    line = f"score {_num(alert.lead.score)}"
    grade = lead_grade(alert)
    if grade:
        line += f" · grade {grade}"
    return f"{line} — {_one_line(alert.trigger)} — routed {utc_time(alert.assignment.ts)}"


def _digest_line(alert: Alert) -> str:
    return f"{_title(alert)} — {_digest_detail(alert)}"


def _period(digest: Digest) -> str:
    return f"{utc_time(digest.since)} to {utc_time(digest.until)}"


def render_digest_text(digest: Digest, limit: int = 25) -> str:
    shown, hidden = digest_items(digest, limit)
    lines = [digest_subject(digest), f"Alerts queued from {_period(digest)}", ""]
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
        item = f"<li><strong>{_h(_title(alert))}</strong> — {_h(_digest_detail(alert))}"
        acct = account_view(alert, limit=3)
        if acct is not None and acct.members:
            item += f"<br>{_h(acct.heading())}: {_h('; '.join(m.name for m in acct.members))}"
        links = action_links(alert.links)
        if links:
            item += f'<br><span style="line-height:2.4">{_html_buttons(links)}</span>'
        items.append(item + "</li>")
    if hidden:
        items.append(f"<li>…and {hidden} more</li>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"></head>',
        '<body style="font-family:Arial,Helvetica,sans-serif;font-size:14px">',
        f"<h2>{_h(digest_subject(digest))}</h2>",
        f'<p style="color:#555">Alerts queued from {_h(_period(digest))}</p>',
        f"<ul>{''.join(items)}</ul>",
        "</body></html>",
    ]) + "\n"


def render_digest_blocks(digest: Digest, limit: int = 25) -> dict[str, Any]:
    """One Slack message for the whole digest: a section per lead with its links."""
    e = slack_escape
    shown, hidden = digest_items(digest, min(limit, _BLOCKS_MAX - 4))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _truncate(e(digest_subject(digest)), _HEADER_MAX)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": e(f"Alerts queued from {_period(digest)}")}]},
    ]
    for alert in shown:
        text = f"*{e(_title(alert))}* — {e(_digest_detail(alert))}"
        acct = account_view(alert, limit=3)
        if acct is not None and acct.members:
            text += f"\n{e(acct.heading())}: {e('; '.join(m.name for m in acct.members))}"
        links = action_links(alert.links)
        if links:
            text += "\n" + " · ".join(f"<{e(url)}|{e(label)}>" for _, label, url in links)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _truncate(text, _SECTION_MAX)}})
    if hidden:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"…and {hidden} more"}]})
    fallback = _truncate(e(digest_subject(digest)), _FALLBACK_MAX)
    return {"text": fallback, "blocks": blocks}


def render_digest_email(digest: Digest, sender: str, limit: int = 25) -> EmailMessage:
    """The multipart/alternative digest email; its Message-ID is derived from the digest id."""
    msg = _new_email(digest_subject(digest), sender, digest.rep.email, message_id(digest.digest_id, sender))
    msg["X-Leadrouter-Digest"] = _one_line(digest.digest_id)
    msg.set_content(render_digest_text(digest, limit))
    msg.add_alternative(render_digest_html(digest, limit), subtype="html")
    return msg


# --------------------------------------------------------------------------- pacing


class Pacer(Protocol):
    """Hands out send slots per channel so Slack's per-channel pace is kept."""

    async def acquire(self, key: str) -> float:
        """Wait for the channel's next slot; returns the seconds waited."""
        ...

    async def hold(self, key: str, seconds: float) -> None:
        """No slot on this channel sooner than ``seconds`` from now (Slack said 429 Retry-After)."""
        ...


def pace_key(kind: str, target: str) -> str:
    """The pacing key of one Slack channel: ``webhook:<sha256 of the URL>`` or ``dm:<user id>``.

    Webhook URLs are secrets, so only their digest is used as a key.
    """
    if kind == "webhook":
        return "webhook:" + hashlib.sha256(target.encode()).hexdigest()[:32]
    return f"{kind}:{target}"


def bucket_step(tokens: float | None, ts: float | None, now: float, rate: float, burst: float,
                hold_s: float | None = None) -> tuple[float, float, float]:
    """One token-bucket step: ``(tokens, ts, wait)`` after taking a slot (or holding for ``hold_s``).

    The bucket refills ``rate`` tokens a second up to ``burst``.  Taking a slot
    spends a token; tokens may go below zero, which queues the caller behind the
    slots already promised (``wait = -tokens / rate``), so concurrent senders are
    spaced ``1 / rate`` apart in the order they asked.  A hold caps the tokens so
    the next slot is ``hold_s`` away.  ``_PACE_LUA`` is this function in Lua.
    """
    lag = 0.0
    if tokens is None or ts is None:
        tokens, ts = burst, now
    elif now > ts:
        tokens, ts = min(burst, tokens + (now - ts) * rate), now
    else:
        lag = ts - now  # another clock ran ahead: count from its time
    if hold_s is not None:
        return min(tokens, 1.0 - hold_s * rate), ts, 0.0
    tokens -= 1.0
    return tokens, ts, lag + (-tokens / rate if tokens < 0 else 0.0)


class LocalPacer:
    """Per-channel token buckets for one process, shared by all its concurrent sends.

    Reserving a slot is synchronous (no await between reading and writing the
    bucket), so concurrent coroutines never get the same slot.
    """

    _PRUNE_AT = 4096

    def __init__(self, rate_per_s: float = 1.0, burst: int = 1, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Sleep | None = None) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate = rate_per_s
        self.burst = float(max(1, burst))
        self._clock = clock
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        self._buckets: dict[str, tuple[float, float]] = {}

    def reserve(self, key: str) -> float:
        """Take the channel's next slot now; returns how long until it comes."""
        now = self._clock()
        tokens, ts = self._buckets.get(key, (None, None))
        tokens, ts, wait = bucket_step(tokens, ts, now, self.rate, self.burst)
        self._buckets[key] = (tokens, ts)
        if len(self._buckets) > self._PRUNE_AT:
            self._prune(now)
        return wait

    def _prune(self, now: float) -> None:
        full = [k for k, (t, ts) in self._buckets.items() if t + (now - ts) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]

    async def acquire(self, key: str) -> float:
        wait = self.reserve(key)
        if wait > 0:
            await self._sleep(wait)
        return wait

    async def hold(self, key: str, seconds: float) -> None:
        tokens, ts = self._buckets.get(key, (None, None))
        tokens, ts, _ = bucket_step(tokens, ts, self._clock(), self.rate, self.burst, hold_s=max(0.0, seconds))
        self._buckets[key] = (tokens, ts)


# The token bucket of bucket_step(), atomically in Redis: one call per message.
_PACE_LUA = """
-- KEYS[1] the channel's bucket (hash: tokens, ts)
-- ARGV[1] rate (tokens/s), ARGV[2] burst, ARGV[3] 'take' | 'hold', ARGV[4] hold seconds,
-- ARGV[5] now in epoch seconds ('' = the Redis server's clock, shared by every worker),
-- ARGV[6] ttl ms.  Returns the seconds the caller waits for its slot (text: Lua
-- numbers would be truncated to integers on the way out).
if redis.replicate_commands then pcall(redis.replicate_commands) end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
local lag = 0
if not tokens or not ts then
  tokens = burst
  ts = now
elseif now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
else
  lag = ts - now
end
local wait = 0
if ARGV[3] == 'hold' then
  local floor = 1 - tonumber(ARGV[4]) * rate
  if tokens > floor then tokens = floor end
else
  tokens = tokens - 1
  wait = lag
  if tokens < 0 then wait = lag - tokens / rate end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.9f', tokens), 'ts', string.format('%.6f', ts))
local idle = 0
if tokens < burst then idle = (burst - tokens) / rate end
redis.call('PEXPIRE', KEYS[1], math.ceil((idle + lag) * 1000) + tonumber(ARGV[6]))
return string.format('%.6f', wait)
"""


class RedisPacer:
    """One token bucket per channel in Redis (``keys.alert_pace``), shared by every worker.

    Each slot is one Lua call on one key.  By default the bucket runs on the Redis
    server's clock, so workers' clocks need not agree; ``clock`` overrides it
    (tests).  While Redis fails, sends are paced by ``fallback`` (this process
    only), logged once and counted in ``leadrouter_alert_pacer_fallbacks_total``.
    """

    def __init__(self, redis: Redis, rate_per_s: float = 1.0, burst: int = 1, *,
                 clock: Callable[[], float] | None = None, sleep: Sleep | None = None,
                 fallback: LocalPacer | None = None) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self._clock = clock
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        self._script = redis.register_script(_PACE_LUA)
        self._fallback = fallback or LocalPacer(rate_per_s, burst, sleep=self._sleep)
        self._failing = False

    async def _call(self, key: str, op: str, seconds: float) -> float:
        now = "" if self._clock is None else repr(self._clock())
        raw = await self._script(
            keys=[keys.alert_pace(key)],
            args=[repr(self.rate), self.burst, op, repr(seconds), now, keys.PACE_TTL_S * 1000],
        )
        return float(raw.decode() if isinstance(raw, bytes) else raw)

    def _redis_failed(self, exc: Exception) -> None:
        metrics.ALERT_PACER_FALLBACKS.inc()
        if not self._failing:
            log.warning("Slack pacing: Redis failed (%r); pacing this process alone until it answers", exc)
        self._failing = True

    async def reserve(self, key: str) -> float:
        """Take the channel's next slot; the seconds until it comes."""
        try:
            wait = await self._call(key, "take", 0.0)
        except RedisError as exc:
            self._redis_failed(exc)
            return self._fallback.reserve(key)
        if self._failing:
            log.info("Slack pacing: Redis answers again; pacing is shared by every worker again")
            self._failing = False
        return wait

    async def acquire(self, key: str) -> float:
        wait = await self.reserve(key)
        if wait > 0:
            await self._sleep(wait)
        return wait

    async def hold(self, key: str, seconds: float) -> None:
        await self._fallback.hold(key, seconds)
        try:
            await self._call(key, "hold", max(0.0, seconds))
        except RedisError as exc:
            self._redis_failed(exc)


def pacer_from_settings(settings: Settings, redis: Redis | None) -> Pacer | None:
    """The pacer the settings ask for (None when ``slack_rate_per_s`` is 0)."""
    if settings.slack_rate_per_s <= 0:
        return None
    kind = settings.slack_pacer.strip().lower()
    if kind == "redis" and redis is not None:
        return RedisPacer(redis, settings.slack_rate_per_s, settings.slack_burst)
    if kind in ("local", "redis"):
        return LocalPacer(settings.slack_rate_per_s, settings.slack_burst)
    msg = f"setting LEADROUTER_SLACK_PACER={settings.slack_pacer!r} is not one of: redis, local"
    raise SettingsError(msg)


# --------------------------------------------------------------------------- notifiers


@runtime_checkable
class Notifier(Protocol):
    """One delivery channel.  ``send`` makes a single attempt."""

    channel: str

    async def send(self, alert: Alert) -> None:
        """Deliver ``alert``; raise TransientSendError or PermanentSendError on failure."""
        ...


@runtime_checkable
class DigestNotifier(Protocol):
    """A channel that can also deliver a rep's digest (one attempt, same errors as ``send``)."""

    channel: str

    async def send_digest(self, digest: Digest) -> None: ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value or not value.strip():
        return None
    raw = value.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _short(body: str, limit: int = 200) -> str:
    return _truncate(_one_line(body), limit) or "(empty body)"


_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


async def _pace(pacer: Pacer | None, key: str, channel: str) -> None:
    if pacer is None:
        return
    waited = await pacer.acquire(key)
    metrics.ALERT_PACING_SECONDS.labels(channel).observe(waited)


async def _rate_limited(pacer: Pacer | None, key: str, channel: str, retry_after: float | None) -> None:
    """Slack said slow down: count it and hold the channel for everyone in this process (or fleet)."""
    metrics.ALERT_RATE_LIMITED.labels(channel).inc()
    if pacer is not None:
        await pacer.hold(key, retry_after if retry_after is not None else 1.0)


class SlackWebhookNotifier:
    """Posts the Block Kit alert to the team's Slack incoming webhook (default URL as fallback).

    ``team_webhooks`` is read on every send (it may be a live view of the routing
    config).  With a ``pacer``, every attempt waits for its webhook's slot.
    """

    channel = "slack_webhook"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        default_webhook_url: str,
        team_webhooks: Mapping[str, str],
        timeout_s: float,
        *,
        pacer: Pacer | None = None,
    ) -> None:
        self._session = session
        self._default = default_webhook_url
        self._teams = team_webhooks
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._pacer = pacer

    def _target(self, team: str) -> tuple[str, str]:
        """(URL, how to name it in errors): the webhook URL is a secret, so errors name the team."""
        team_url = self._teams.get(team)
        url = team_url or self._default
        where = f"Slack webhook for team {team!r}" if team_url else "default Slack webhook"
        if not url:
            msg = (
                f"no Slack webhook URL for team {team!r}: set LEADROUTER_SLACK_WEBHOOK_URL "
                "(or a webhook for the team)"
            )
            raise PermanentSendError(msg)
        return url, where

    async def send(self, alert: Alert) -> None:
        url, where = self._target(alert.assignment.decision.team)
        await self._post(url, where, render_slack_blocks(alert))

    async def send_digest(self, digest: Digest) -> None:
        url, where = self._target(digest.team)
        await self._post(url, where, render_digest_blocks(digest))

    async def _post(self, url: str, where: str, payload: Mapping[str, Any]) -> None:
        key = pace_key("webhook", url)
        await _pace(self._pacer, key, self.channel)
        data = json.dumps(payload).encode()
        try:
            async with self._session.post(
                url, data=data, headers=_JSON_HEADERS, timeout=self._timeout
            ) as resp:
                status = resp.status
                body = await resp.text(errors="replace")
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except aiohttp.InvalidURL:
            msg = f"{where} has an invalid URL; check LEADROUTER_SLACK_WEBHOOK_URL"
            raise PermanentSendError(msg) from None
        except TimeoutError:
            msg = f"{where} timed out"
            raise TransientSendError(msg) from None
        except aiohttp.ClientError as exc:
            msg = f"{where} unreachable: {type(exc).__name__}"
            raise TransientSendError(msg) from None
        if 200 <= status < 300:
            return
        detail = f"{where} answered HTTP {status} {_short(body)}"
        if status == 429:
            await _rate_limited(self._pacer, key, self.channel, retry_after)
            raise TransientSendError(f"{detail} (rate limited)", retry_after)
        if status >= 500 or status == 408:
            raise TransientSendError(detail, retry_after)
        raise PermanentSendError(detail)


_BOT_PERMANENT = frozenset(
    {
        "not_authed",
        "invalid_auth",
        "channel_not_found",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "is_archived",
        "user_not_found",
        "missing_scope",
        "not_in_channel",
        "no_permission",
        "invalid_blocks",
        "invalid_arguments",
        "msg_too_long",
        "no_text",
    }
)
_BOT_TRANSIENT = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
_BOT_TOKEN_ERRORS = frozenset(
    {"not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired"}
)


class SlackBotNotifier:
    """Sends the alert as a direct message to the rep with ``chat.postMessage``.

    A rep without ``slack_user_id`` is skipped quietly.  Unknown Slack error
    codes count as permanent: retrying a request Slack rejected rarely helps.
    With a ``pacer``, every attempt waits for the rep's DM channel's slot.
    """

    channel = "slack_bot"

    def __init__(
        self, session: aiohttp.ClientSession, api_url: str, bot_token: str, timeout_s: float, *,
        pacer: Pacer | None = None,
    ) -> None:
        self._session = session
        self._url = api_url.rstrip("/") + "/chat.postMessage"
        self._token = bot_token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._pacer = pacer

    async def send(self, alert: Alert) -> None:
        await self._to_rep(alert.assignment.rep, render_slack_blocks(alert))

    async def send_digest(self, digest: Digest) -> None:
        await self._to_rep(digest.rep, render_digest_blocks(digest))

    async def _to_rep(self, rep: Rep, message: Mapping[str, Any]) -> None:
        if not rep.slack_user_id:
            log.debug("slack_bot: rep %s has no slack_user_id; skipped", rep.rep_id)
            return
        if not self._token:
            raise PermanentSendError("no Slack bot token: set LEADROUTER_SLACK_BOT_TOKEN")
        key = pace_key("dm", rep.slack_user_id)
        await _pace(self._pacer, key, self.channel)
        payload = {"channel": rep.slack_user_id, **message}
        headers = {**_JSON_HEADERS, "Authorization": f"Bearer {self._token}"}
        try:
            async with self._session.post(
                self._url, data=json.dumps(payload).encode(), headers=headers, timeout=self._timeout
            ) as resp:
                status = resp.status
                body = await resp.text(errors="replace")
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except aiohttp.InvalidURL:
            raise PermanentSendError(
                "chat.postMessage: invalid URL; check LEADROUTER_SLACK_API_URL"
            ) from None
        except TimeoutError:
            raise TransientSendError("chat.postMessage timed out") from None
        except aiohttp.ClientError as exc:
            raise TransientSendError(f"chat.postMessage unreachable: {type(exc).__name__}") from None
        if status == 429:
            await _rate_limited(self._pacer, key, self.channel, retry_after)
            raise TransientSendError(f"chat.postMessage rate limited (HTTP 429 {_short(body)})", retry_after)
        if status >= 500:
            raise TransientSendError(f"chat.postMessage answered HTTP {status} {_short(body)}", retry_after)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            detail = f"chat.postMessage answered HTTP {status} with a non-JSON body {_short(body)}"
            if status >= 400:
                raise PermanentSendError(detail)
            raise TransientSendError(detail, retry_after)
        if answer.get("ok") is True:
            return
        error = str(answer.get("error") or "unknown_error")
        detail = f"chat.postMessage to {rep.slack_user_id} failed: {_short(error, 100)}"
        if error in ("ratelimited", "rate_limited"):
            await _rate_limited(self._pacer, key, self.channel, retry_after)
        if error in _BOT_TRANSIENT:
            raise TransientSendError(detail, retry_after)
        if error in _BOT_TOKEN_ERRORS:
            detail += "; check LEADROUTER_SLACK_BOT_TOKEN"
        raise PermanentSendError(detail)


class SmtpNotifier:
    """Emails the alert (text + HTML) to the rep with stdlib smtplib in a worker thread.

    ``starttls`` upgrades a plain connection; ``implicit_tls`` connects with TLS
    from the start (SMTPS).  Either way the server's certificate is verified,
    against ``ca_file`` when given (a private CA or a self-signed certificate),
    else against the system's CAs.  ``user`` logs in after TLS.
    """

    channel = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        starttls: bool,
        user: str,
        password: str,
        timeout_s: float,
        *,
        implicit_tls: bool = False,
        ca_file: str = "",
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._starttls = starttls
        self._implicit_tls = implicit_tls
        self._ca_file = ca_file
        self._user = user
        self._password = password
        self._timeout_s = timeout_s
        self._context: ssl.SSLContext | None = None

    def tls_context(self) -> ssl.SSLContext:
        """The client TLS context (certificate and host name verified), built once."""
        if self._context is None:
            try:
                self._context = ssl.create_default_context(cafile=self._ca_file or None)
            except (OSError, ssl.SSLError) as exc:
                msg = (f"cannot load the SMTP CA file {self._ca_file!r}: {exc}; "
                       "check LEADROUTER_SMTP_TLS_CA_FILE (a PEM file)")
                raise PermanentSendError(msg) from None
        return self._context

    async def send(self, alert: Alert) -> None:
        rep = alert.assignment.rep
        self._check(rep)
        try:
            msg = render_email(alert, self._sender)
        except ValueError as exc:
            raise PermanentSendError(f"cannot build the alert email for rep {rep.rep_id}: {exc}") from None
        await self._deliver(msg, rep.email)

    async def send_digest(self, digest: Digest) -> None:
        self._check(digest.rep)
        try:
            msg = render_digest_email(digest, self._sender)
        except ValueError as exc:
            raise PermanentSendError(f"cannot build the digest email for rep {digest.rep.rep_id}: {exc}") from None
        await self._deliver(msg, digest.rep.email)

    def _check(self, rep: Rep) -> None:
        if not self._host:
            raise PermanentSendError("no SMTP server: set LEADROUTER_SMTP_HOST")
        if not rep.email:
            raise PermanentSendError(f"rep {rep.rep_id} has no email address")

    async def _deliver(self, msg: EmailMessage, rcpt: str) -> None:
        context = self.tls_context() if self._starttls or self._implicit_tls else None
        try:
            await asyncio.to_thread(self._send_sync, msg, context)
        except SendError:
            raise
        except Exception as exc:
            raise _smtp_error(exc, rcpt) from None

    def _send_sync(self, msg: EmailMessage, context: ssl.SSLContext | None) -> None:
        smtp: smtplib.SMTP
        if self._implicit_tls:
            smtp = smtplib.SMTP_SSL(self._host, self._port, timeout=self._timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout_s)
        with smtp:
            if self._starttls and not self._implicit_tls:
                smtp.starttls(context=context)
            if self._user:
                smtp.login(self._user, self._password)
            smtp.send_message(msg)


def _smtp_reply(code: int, text: bytes | str) -> str:
    raw = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return f"{code} {_short(raw, 160)}"


def _smtp_error(exc: Exception, rcpt: str) -> SendError:
    """Classify an smtplib/socket failure: 5xx replies are permanent, the rest transient."""
    where = f"SMTP to {rcpt}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
        text = "; ".join(_smtp_reply(code, m) for code, m in replies) or "refused"
        detail = f"{where}: recipient refused ({text})"
        if replies and all(code >= 500 for code, _ in replies):
            return PermanentSendError(detail)
        return TransientSendError(detail)
    if isinstance(exc, smtplib.SMTPConnectError | smtplib.SMTPServerDisconnected):
        return TransientSendError(f"{where}: {type(exc).__name__}: {_short(str(exc), 160)}")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return PermanentSendError(
            f"{where}: authentication failed ({_smtp_reply(exc.smtp_code, exc.smtp_error)}); "
            "check LEADROUTER_SMTP_USER and LEADROUTER_SMTP_PASSWORD"
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        detail = f"{where}: {type(exc).__name__} ({_smtp_reply(exc.smtp_code, exc.smtp_error)})"
        if exc.smtp_code >= 500:
            return PermanentSendError(detail)
        return TransientSendError(detail)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentSendError(
            f"{where}: server does not support a required extension ({_short(str(exc), 160)}); "
            "check LEADROUTER_SMTP_STARTTLS / LEADROUTER_SMTP_USER"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentSendError(
            f"{where}: the server's TLS certificate was not accepted ({_short(exc.verify_message or str(exc), 160)}); "
            "set LEADROUTER_SMTP_TLS_CA_FILE to the CA (or self-signed certificate) that signs it, "
            "and LEADROUTER_SMTP_HOST to a name the certificate is for"
        )
    if isinstance(exc, TimeoutError):
        return TransientSendError(f"{where}: timed out")
    if isinstance(exc, smtplib.SMTPException | OSError):
        return TransientSendError(f"{where}: {type(exc).__name__}: {_short(str(exc), 160)}")
    return PermanentSendError(f"{where}: {type(exc).__name__}: {_short(str(exc), 160)}")


def notifiers_from_settings(
    settings: Settings,
    session: aiohttp.ClientSession,
    team_webhooks: Mapping[str, str] | None = None,
    *,
    pacer: Pacer | None = None,
) -> list[Notifier]:
    """The notifiers the settings configure: webhook, bot and/or SMTP (only those with a target).

    ``team_webhooks`` is kept as given (not copied), so a live view of the routing
    config (``router.sender.TeamWebhooks``) follows rules changes.
    """
    out: list[Notifier] = []
    teams: Mapping[str, str] = team_webhooks if team_webhooks is not None else {}
    if settings.slack_webhook_url or len(teams):
        out.append(SlackWebhookNotifier(session, settings.slack_webhook_url, teams, settings.alert_timeout_s,
                                        pacer=pacer))
    if settings.slack_bot_token:
        out.append(
            SlackBotNotifier(
                session, settings.slack_api_url, settings.slack_bot_token, settings.alert_timeout_s, pacer=pacer
            )
        )
    if settings.smtp_host:
        out.append(
            SmtpNotifier(
                settings.smtp_host,
                settings.smtp_port,
                settings.smtp_from,
                settings.smtp_starttls,
                settings.smtp_user,
                settings.smtp_password,
                settings.alert_timeout_s,
                implicit_tls=settings.smtp_ssl,
                ca_file=settings.smtp_tls_ca_file,
            )
        )
    return out


# --------------------------------------------------------------------------- delivery


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    channel: str
    ok: bool
    attempts: int
    error: str | None = None
    permanent: bool = False


def backoff_delay(
    failed_attempts: int,
    backoff_s: float,
    rng: random.Random,
    retry_after: float | None,
    max_s: float | None = None,
) -> float:
    """Full jitter: ``uniform(0, min(max_s, backoff_s * 2**(failed_attempts-1)))``, never below ``retry_after``."""
    ceiling = backoff_s * 2.0 ** min(max(0, failed_attempts - 1), 62)
    if max_s is not None:
        ceiling = min(ceiling, max_s)
    delay = rng.uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


async def deliver_call(
    attempt: Callable[[], Awaitable[None]],
    channel: str,
    what: str,
    *,
    max_attempts: int,
    backoff_s: float,
    backoff_max_s: float | None = None,
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
) -> DeliveryResult:
    """Run ``attempt`` (one send on ``channel``) until it succeeds, fails permanently or runs out.

    After the n-th failed attempt (n = 1, 2, ...) it waits
    ``uniform(0, min(backoff_max_s, backoff_s * 2**(n-1)))`` seconds, or the
    server's ``retry_after`` when that is longer.  A permanent error stops at
    once.  Never raises for a failed send; an unexpected exception from the
    notifier is logged and reported as a permanent failure.  ``what`` names the
    message in logs (``alert asg-42``).
    """
    rng = rng if rng is not None else random.Random()
    max_attempts = max(1, max_attempts)
    error: str | None = None
    for n in range(1, max_attempts + 1):
        retry_after: float | None = None
        try:
            await attempt()
        except PermanentSendError as exc:
            log.warning("%s on %s failed permanently: %s", what, channel, exc)
            return DeliveryResult(channel, False, n, str(exc), True)
        except TransientSendError as exc:
            error, retry_after = str(exc), exc.retry_after
        except SendError as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("%s on %s: unexpected error from the notifier", what, channel)
            return DeliveryResult(channel, False, n, f"{type(exc).__name__}: {exc}", True)
        else:
            return DeliveryResult(channel, True, n)
        if n == max_attempts:
            break
        delay = backoff_delay(n, backoff_s, rng, retry_after, backoff_max_s)
        log.info(
            "%s on %s failed (attempt %d/%d): %s; retrying in %.2fs", what, channel, n, max_attempts, error, delay
        )
        await sleep(delay)
    log.warning("%s on %s gave up after %d attempts: %s", what, channel, max_attempts, error)
    return DeliveryResult(channel, False, max_attempts, error, False)


async def deliver(
    alert: Alert,
    notifier: Notifier,
    *,
    max_attempts: int,
    backoff_s: float,
    backoff_max_s: float | None = None,
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
) -> DeliveryResult:
    """Send ``alert`` on one channel, retrying transient failures (see :func:`deliver_call`)."""
    return await deliver_call(
        lambda: notifier.send(alert),
        notifier.channel,
        f"alert {alert.assignment.assignment_id}",
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        backoff_max_s=backoff_max_s,
        rng=rng,
        sleep=sleep,
    )


