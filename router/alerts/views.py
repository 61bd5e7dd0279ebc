"""What an alert says, whatever the medium: the views the text, HTML, email and Slack renderers share.

Pure.  Escaping (:func:`slack_escape`, :func:`html_text`), one-line folding and
truncation, times in UTC, the top reasons and recent activity, the title and kind
of an alert, the re-engagement, escalation, routing and field-change lines, the
account and its active members (:func:`account_view`), the action links a rep may
use (:func:`action_links`: only plain ``http(s)`` URLs) and the model's explanation
lines.  The renderers are :mod:`router.alerts.render` (text, HTML, email, the
:class:`~router.alerts.render.Digest` shape), :mod:`router.alerts.render_slack` and
:mod:`router.alerts.render_digest`.

Everything that came from a lead is treated as hostile: HTML-escaped in HTML,
Slack's control characters escaped in Slack text, line breaks folded in
single-line places, and only plain ``http(s)`` URLs ever become links.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from models.lead import Alert, Reason, wait_text

log = logging.getLogger(__name__)

MAX_REASONS = 5
MAX_RECENT = 10
MAX_MEMBERS = 5

# The longest URL that becomes a link or button (Slack's Block Kit limit, kept for every format).
_URL_MAX = 3000

_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f<>|\"'`\\]")


# --------------------------------------------------------------------------- helpers


def one_line(value: object) -> str:
    """``value`` as text on one line: user data must not forge extra lines."""
    return _LINE_BREAKS.sub(" ", str(value)).strip()


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(text: str) -> str:
    """Escape Slack's mrkdwn control characters so user text cannot mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def html_text(value: object) -> str:
    """``value`` on one line, HTML-escaped (quotes too)."""
    return html.escape(one_line(value), quote=True)


def score_text(value: float) -> str:
    """A score as a whole number."""
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
                return one_line(raw)
            dt = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if dt is None:
        return "" if ts is None else one_line(ts)
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
    line = f"{_points(reason.points)} {one_line(reason.rule)}"
    if reason.detail:
        line += f" — {one_line(reason.detail)}"
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
            target = one_line(value)
            if key == "form_id":
                target = f"form {target}"
            elif key == "campaign":
                target = f"campaign {target}"
            break
    detail = item.get("detail") or item.get("title") or ""
    return Activity(
        when=utc_time(item.get("ts")),
        type=one_line(item.get("type") or "event"),
        target=target,
        detail=one_line(detail),
    )


def recent_activity(alert: Alert, limit: int = MAX_RECENT) -> list[Activity]:
    return [_activity(item) for item in alert.recent[:limit]]


def activity_line(a: Activity) -> str:
    """``when · type · target · detail`` (unescaped, one line)."""
    return " · ".join(x for x in (a.when, a.type, a.target, a.detail) if x)


def alert_title(alert: Alert) -> str:
    lead = alert.lead
    name = one_line(lead.display_name)
    company = lead.company
    return f"{name} ({one_line(company)})" if company else name


def alert_kind(alert: Alert) -> str:
    """``Re-engaged lead`` for a lead that crossed before, else ``Sales-ready lead`` (an escalation to a
    manager: ``Escalation: not accepted in time``)."""
    if alert.kind == "escalation":
        return "Escalation: not accepted in time"
    return "Re-engaged lead" if alert.reengagement is not None else "Sales-ready lead"


def email_subject(alert: Alert) -> str:
    """``Sales-ready lead: {name} ({company}) — score {score:.0f}`` (``Re-engaged lead: …`` for a re-engagement;
    an escalation says who held it and how long it waited)."""
    if alert.kind == "escalation":
        return f"{alert_kind(alert)}: {alert_title(alert)} — {escalation_line(alert)}"
    return f"{alert_kind(alert)}: {alert_title(alert)} — score {score_text(alert.lead.score)}"


_OUTCOME_TEXT = {"lost": "closed-lost", "won": "closed-won (a customer: expansion signal)",
                 "rejected": "rejected", "recycled": "recycled to nurture"}


def _day(ts: float) -> str:
    dt = _from_epoch(ts) if ts > 0 else None
    return dt.strftime("%Y-%m-%d") if dt is not None else ""


def reengagement_line(alert: Alert) -> str:
    """The history of a re-engaged lead on one line (unescaped), '' for a first crossing.

    e.g. ``closed-lost on 2026-07-03 (budget), owner Rosalina Dieter; back on /pricing 3 times this week,
    filled form demo-request``.
    """
    re = alert.reengagement
    if re is None:
        return ""
    bits: list[str] = []
    who = one_line(re.owner_name or re.owner)
    if re.last_outcome and re.last_outcome_ts > 0 and re.from_stage not in ("sal", "sql", "opportunity"):
        text = f"{_OUTCOME_TEXT.get(re.last_outcome, one_line(re.last_outcome))} on {_day(re.last_outcome_ts)}"
        if re.last_outcome_reason:
            text += f" ({truncate(one_line(re.last_outcome_reason), 80)})"
        if who:
            text += f" by {who}" if re.last_outcome == "rejected" else f", owner {who}"
        bits.append(text)
    else:
        text = f"{one_line(re.from_stage) or 'in progress'}"
        if who:
            text += f" with {who}"
        if re.last_crossing_ts > 0:
            text += f", last alerted {_day(re.last_crossing_ts)}"
        bits.append(text)
    line = "; ".join(bits)
    if re.back:
        line += "; " + ", ".join(truncate(one_line(b), 80) for b in re.back)
    route = {"owner_notified": f"still with {who}: told, not routed again",
             "owner": f"back to {who}",
             "owner_away": f"{who} is out of office: routed by the rules"}.get(re.route, "")
    if route and who:
        line += f" — {route}"
    return line


def escalation_line(alert: Alert) -> str:
    """``held by Rep B (b) for 47 min; SLA: accept within 15 min, ...`` (unescaped, one line)."""
    e = alert.escalation
    holder = one_line(e.get("holder_name") or "nobody")
    if e.get("holder_id") and e.get("holder_id") != e.get("holder_name"):
        holder += f" ({one_line(e.get('holder_id'))})"
    waited = _finite(e.get("waited_s"))
    return (f"held by {holder}, waiting {wait_text(waited or 0.0)}; "
            f"team {one_line(e.get('team') or alert.assignment.decision.team)} SLA: {one_line(e.get('sla') or '-')}")


def routing_line(alert: Alert) -> str:
    """``team T · rule R (rules V); path a → b`` (unescaped, one line)."""
    d = alert.assignment.decision
    line = f"team {one_line(d.team)} · rule {one_line(d.rule)} (rules {one_line(d.rules_version)})"
    if d.path:
        line += "; path " + " → ".join(one_line(p) for p in d.path)
    return line + _placement_note(alert)


def _placement_note(alert: Alert) -> str:
    """After hours: how the rep was found and when their SLA clock starts ('' in working hours)."""
    asg = alert.assignment
    if asg.placement in ("", "available"):
        return ""
    note = f"; after hours: {one_line(asg.placement.replace('_', ' '))}"
    if asg.available_at is not None and asg.available_at > asg.ts + 60:
        note += f", SLA clock starts {utc_time(asg.available_at)}"
    return note


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
    return one_line(f.get("job_title") or f.get("title") or "")


def lead_grade(alert: Alert) -> str | None:
    """The lead's fit grade (``fields["grade"]``), or None when it has none."""
    grade = one_line(alert.lead.fields.get("grade") or "")
    return grade or None


def who_line(alert: Alert, *, with_email: bool = True) -> str:
    """``Jane Doe, Head of Procurement at Acme · jane@acme.test`` (unescaped, one line)."""
    lead = alert.lead
    name = one_line(lead.display_name)
    line = name
    title = lead_job_title(alert)
    if title:
        line += f", {title}"
    if lead.company:
        line += f" at {one_line(lead.company)}"
    if with_email and lead.email and one_line(lead.email) != name:
        line += f" · {one_line(lead.email)}"
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
            bits.append(f"intent {score_text(self.intent)}")
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
        mail = one_line(item.get("email") or "")
        name = one_line(item.get("name") or "") or mail
        if not name or (own and mail.lower() == own):
            continue
        raw_last = item.get("last_active")
        last = _finite(raw_last)
        if last is not None:
            when = utc_time(last) if last > 0 else ""  # 0: never seen
        else:
            when = utc_time(raw_last) if isinstance(raw_last, str) else ""  # ISO 8601 text
        members.append(MemberView(name, one_line(item.get("title") or ""), mail, when))
    name = one_line(acct.get("name") or "")
    domain = one_line(acct.get("domain") or "")
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


_FIELD_LABELS = {"job_title": "job title", "first_name": "first name", "last_name": "last name"}
MAX_FIELD_SHOWN = 80


def _quoted(value: object) -> str:
    return f"'{truncate(one_line(value), MAX_FIELD_SHOWN)}'"


def field_change_lines(alert: Alert) -> list[str]:
    """The lead's recent field changes as plain text (escape per medium), e.g.
    "job title changed from 'CFO' to 'Intern' via form demo-request (verified) on 2026-11-23 14:02 UTC", or
    for an unverified value kept beside the lead's own: "job title: 'Intern' from form demo-request
    (unverified) on … was not applied; the lead said 'CFO'"."""
    out: list[str] = []
    for c in alert.field_changes:
        name = str(c.get("field", ""))
        label = _FIELD_LABELS.get(name, name.replace("_", " "))
        ts = c.get("ts")
        when = (f" on {datetime.fromtimestamp(float(ts), UTC):%Y-%m-%d %H:%M} UTC"
                if isinstance(ts, (int, float)) and math.isfinite(ts) and ts > 0 else "")
        source = one_line(c.get("source", "")) or "an unknown source"
        old, new = c.get("old", ""), c.get("new", "")
        if c.get("applied", True):
            out.append(f"{label} changed from {_quoted(old)} to {_quoted(new)} via {source}{when}")
        else:
            out.append(f"{label}: {_quoted(new)} from {source}{when} was not applied; the lead said {_quoted(old)}")
    return out


# --------------------------------------------------------------------------- renderers


def model_heading(alert: Alert) -> str:
    """``Model: probability 0.63 (model 2026…)``, or "" when no model scored the crossing."""
    m = alert.model
    if not m:
        return ""
    p = _finite(m.get("probability"))
    if p is None:
        return ""
    version = one_line(str(m.get("version", "")))[:60]
    return f"probability {p:.2f}" + (f" (model {version})" if version else "")


def model_lines(alert: Alert, limit: int = 5) -> list[str]:
    """The model's top signed contributions, in calibrated log-odds: ``+0.21 page views: 12``."""
    out: list[str] = []
    for c in list(alert.model.get("contributions") or [])[:limit]:
        if not isinstance(c, Mapping):
            continue
        v = _finite(c.get("log_odds"))
        if v is None:
            continue
        sign = "+" if v >= 0 else "\N{MINUS SIGN}"
        label = truncate(one_line(str(c.get("label") or c.get("feature") or "")), 60)
        value = truncate(one_line(str(c.get("value", ""))), 60)
        out.append(f"{sign}{abs(v):.2f} {label}: {value}")
    more = alert.model.get("more")
    if isinstance(more, int) and more > 0:
        out.append(f"…and {more} smaller")
    return out
