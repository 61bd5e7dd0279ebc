"""Alert rendering (plain text, HTML, Slack Block Kit) and delivery with retries.

Rendering is pure: :func:`render_text`, :func:`render_html` and
:func:`render_slack_blocks` turn an :class:`~models.lead.Alert` into what a rep
reads.  Everything that came from a lead (names, form fields, URLs, reason
details) is treated as hostile: it is HTML-escaped in HTML, has Slack's control
characters (``&``, ``<``, ``>``) escaped in Slack text, and has line breaks
folded in single-line places (subjects, headers, list items).

Delivery goes through a :class:`Notifier` per channel.  A notifier makes one
attempt and raises :class:`~router.errors.TransientSendError` (worth retrying)
or :class:`~router.errors.PermanentSendError` (not).  :func:`deliver` owns the
retry policy and never raises for a failed send.
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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol, runtime_checkable

import aiohttp

from models.lead import Alert, Reason
from router.errors import PermanentSendError, SendError, TransientSendError
from router.settings import Settings

log = logging.getLogger(__name__)

MAX_REASONS = 5
MAX_RECENT = 10

# Block Kit limits (characters).
_HEADER_MAX = 150
_FIELD_MAX = 2000
_SECTION_MAX = 3000
_CONTEXT_MAX = 3000
_FALLBACK_MAX = 3000

_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")


# --------------------------------------------------------------------------- helpers


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
    d = alert.assignment.decision
    line = f"rule {_one_line(d.rule)} (rules {_one_line(d.rules_version)})"
    if d.path:
        line += "; path " + " → ".join(_one_line(p) for p in d.path)
    return line


# --------------------------------------------------------------------------- renderers


def render_text(alert: Alert) -> str:
    """The plain-text alert (email text part, console)."""
    lead, asg = alert.lead, alert.assignment
    rep = asg.rep
    lines = [
        email_subject(alert),
        f"Trigger: {_one_line(alert.trigger)}",
        "",
        f"Score:      {_num(lead.score)} (threshold {_num(alert.threshold)})",
        f"Stage:      {_one_line(lead.stage)}",
    ]
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
    lines += [
        "",
        f"Routing: {_routing_line(alert)}",
        f"Assignment: {_one_line(asg.assignment_id)} (lead {_one_line(asg.lead_id)}, crossing {asg.crossing})",
    ]
    return "\n".join(lines) + "\n"


def render_html(alert: Alert) -> str:
    """The HTML alert (email HTML part); every user-supplied value is escaped."""
    lead, asg = alert.lead, alert.assignment
    rep = asg.rep
    td = 'style="padding:2px 12px 2px 0;color:#555"'
    rows = [
        ("Score", f"{_num(lead.score)} (threshold {_num(alert.threshold)})"),
        ("Stage", str(lead.stage)),
    ]
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
        "<h3>Why now</h3>",
        f"<ul>{why}</ul>",
    ]
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


def render_slack_blocks(alert: Alert) -> dict[str, Any]:
    """``{"text": fallback, "blocks": [...]}`` ready for a webhook or chat.postMessage."""
    lead, asg = alert.lead, alert.assignment
    rep = asg.rep
    e = slack_escape
    rep_text = e(_one_line(rep.name))
    if rep.slack_user_id and _SLACK_USER_ID.match(rep.slack_user_id):
        rep_text = f"<@{rep.slack_user_id}> ({rep_text})"
    fields = [
        ("Score", _num(lead.score)),
        ("Threshold", _num(alert.threshold)),
        ("Stage", e(_one_line(lead.stage))),
        ("Routed to", f"{rep_text}, team {e(_one_line(asg.decision.team))}"),
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _truncate(e(f"Sales-ready lead: {_title(alert)}"), _HEADER_MAX),
            },
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _truncate(f"*Trigger:* {e(_one_line(alert.trigger))}", _SECTION_MAX),
            },
        },
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
    routing = f"Routing: {e(_routing_line(alert))} · assignment {e(_one_line(asg.assignment_id))}"
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _truncate(routing, _CONTEXT_MAX)}]}
    )
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


def render_email(alert: Alert, sender: str) -> EmailMessage:
    """The multipart/alternative (text + HTML) email for the assigned rep.

    Raises ``ValueError`` when a header value is unusable (e.g. a malformed address).
    """
    msg = EmailMessage(policy=_EMAIL_POLICY)
    msg["Subject"] = email_subject(alert)
    msg["From"] = _one_line(sender)
    msg["To"] = _one_line(alert.assignment.rep.email)
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = message_id(alert.assignment.assignment_id, sender)
    msg["X-Leadrouter-Assignment"] = _one_line(alert.assignment.assignment_id)
    msg["X-Leadrouter-Lead"] = _one_line(alert.assignment.lead_id)
    msg.set_content(render_text(alert))
    msg.add_alternative(render_html(alert), subtype="html")
    return msg


# --------------------------------------------------------------------------- notifiers


@runtime_checkable
class Notifier(Protocol):
    """One delivery channel.  ``send`` makes a single attempt."""

    channel: str

    async def send(self, alert: Alert) -> None:
        """Deliver ``alert``; raise TransientSendError or PermanentSendError on failure."""
        ...


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


class SlackWebhookNotifier:
    """Posts the Block Kit alert to the team's Slack incoming webhook (default URL as fallback)."""

    channel = "slack_webhook"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        default_webhook_url: str,
        team_webhooks: Mapping[str, str],
        timeout_s: float,
    ) -> None:
        self._session = session
        self._default = default_webhook_url
        self._teams = dict(team_webhooks)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, alert: Alert) -> None:
        team = alert.assignment.decision.team
        url = self._teams.get(team) or self._default
        # The webhook URL is a secret: error messages name the team, never the URL.
        where = f"Slack webhook for team {team!r}" if self._teams.get(team) else "default Slack webhook"
        if not url:
            msg = (
                f"no Slack webhook URL for team {team!r}: set LEADROUTER_SLACK_WEBHOOK_URL "
                "(or a webhook for the team)"
            )
            raise PermanentSendError(msg)
        data = json.dumps(render_slack_blocks(alert)).encode()
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
    """

    channel = "slack_bot"

    def __init__(
        self, session: aiohttp.ClientSession, api_url: str, bot_token: str, timeout_s: float
    ) -> None:
        self._session = session
        self._url = api_url.rstrip("/") + "/chat.postMessage"
        self._token = bot_token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, alert: Alert) -> None:
        rep = alert.assignment.rep
        if not rep.slack_user_id:
            log.debug("slack_bot: rep %s has no slack_user_id; skipped", rep.rep_id)
            return
        if not self._token:
            raise PermanentSendError("no Slack bot token: set LEADROUTER_SLACK_BOT_TOKEN")
        payload = {"channel": rep.slack_user_id, **render_slack_blocks(alert)}
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
        if error in _BOT_TRANSIENT:
            raise TransientSendError(detail, retry_after)
        if error in _BOT_TOKEN_ERRORS:
            detail += "; check LEADROUTER_SLACK_BOT_TOKEN"
        raise PermanentSendError(detail)


class SmtpNotifier:
    """Emails the alert (text + HTML) to the rep with stdlib smtplib in a worker thread."""

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
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._starttls = starttls
        self._user = user
        self._password = password
        self._timeout_s = timeout_s

    async def send(self, alert: Alert) -> None:
        if not self._host:
            raise PermanentSendError("no SMTP server: set LEADROUTER_SMTP_HOST")
        rep = alert.assignment.rep
        if not rep.email:
            raise PermanentSendError(f"rep {rep.rep_id} has no email address")
        try:
            msg = render_email(alert, self._sender)
        except ValueError as exc:
            raise PermanentSendError(f"cannot build the alert email for rep {rep.rep_id}: {exc}") from None
        try:
            await asyncio.to_thread(self._send_sync, msg)
        except SendError:
            raise
        except Exception as exc:
            raise _smtp_error(exc, rep.email) from None

    def _send_sync(self, msg: EmailMessage) -> None:
        with smtplib.SMTP(self._host, self._port, timeout=self._timeout_s) as smtp:
            if self._starttls:
                smtp.starttls(context=ssl.create_default_context())
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
    if isinstance(exc, TimeoutError):
        return TransientSendError(f"{where}: timed out")
    if isinstance(exc, smtplib.SMTPException | OSError):
        return TransientSendError(f"{where}: {type(exc).__name__}: {_short(str(exc), 160)}")
    return PermanentSendError(f"{where}: {type(exc).__name__}: {_short(str(exc), 160)}")


def notifiers_from_settings(
    settings: Settings,
    session: aiohttp.ClientSession,
    team_webhooks: Mapping[str, str] | None = None,
) -> list[Notifier]:
    """The notifiers the settings configure: webhook, bot and/or SMTP (only those with a target)."""
    out: list[Notifier] = []
    teams = dict(team_webhooks or {})
    if settings.slack_webhook_url or teams:
        out.append(SlackWebhookNotifier(session, settings.slack_webhook_url, teams, settings.alert_timeout_s))
    if settings.slack_bot_token:
        out.append(
            SlackBotNotifier(
                session, settings.slack_api_url, settings.slack_bot_token, settings.alert_timeout_s
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


Sleep = Callable[[float], Awaitable[object]]


def backoff_delay(
    failed_attempts: int, backoff_s: float, rng: random.Random, retry_after: float | None
) -> float:
    """Full jitter: uniform(0, backoff_s * 2**(failed_attempts-1)), but never less than ``retry_after``."""
    delay = rng.uniform(0.0, backoff_s * 2 ** (failed_attempts - 1))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


async def deliver(
    alert: Alert,
    notifier: Notifier,
    *,
    max_attempts: int,
    backoff_s: float,
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
) -> DeliveryResult:
    """Send ``alert`` on one channel, retrying transient failures.

    After the n-th failed attempt (n = 1, 2, ...) it waits
    ``uniform(0, backoff_s * 2**(n-1))`` seconds, or the server's
    ``retry_after`` when that is longer.  A permanent error stops at once.
    Never raises for a failed send; an unexpected exception from the
    notifier is logged and reported as a permanent failure.
    """
    rng = rng if rng is not None else random.Random()
    max_attempts = max(1, max_attempts)
    channel = notifier.channel
    asg = alert.assignment.assignment_id
    error: str | None = None
    for attempt in range(1, max_attempts + 1):
        retry_after: float | None = None
        try:
            await notifier.send(alert)
        except PermanentSendError as exc:
            log.warning("alert %s on %s failed permanently: %s", asg, channel, exc)
            return DeliveryResult(channel, False, attempt, str(exc), True)
        except TransientSendError as exc:
            error, retry_after = str(exc), exc.retry_after
        except SendError as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("alert %s on %s: unexpected error from the notifier", asg, channel)
            return DeliveryResult(channel, False, attempt, f"{type(exc).__name__}: {exc}", True)
        else:
            return DeliveryResult(channel, True, attempt)
        if attempt == max_attempts:
            break
        delay = backoff_delay(attempt, backoff_s, rng, retry_after)
        log.info(
            "alert %s on %s failed (attempt %d/%d): %s; retrying in %.2fs",
            asg,
            channel,
            attempt,
            max_attempts,
            error,
            delay,
        )
        await sleep(delay)
    log.warning("alert %s on %s gave up after %d attempts: %s", asg, channel, max_attempts, error)
    return DeliveryResult(channel, False, max_attempts, error, False)


async def deliver_all(
    alert: Alert,
    notifiers: Sequence[Notifier],
    *,
    max_attempts: int,
    backoff_s: float,
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
) -> list[DeliveryResult]:
    """Deliver on every channel concurrently; one result per notifier, in order."""
    return list(
        await asyncio.gather(
            *(
                deliver(alert, n, max_attempts=max_attempts, backoff_s=backoff_s, rng=rng, sleep=sleep)
                for n in notifiers
            )
        )
    )
