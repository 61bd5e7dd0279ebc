"""Alert channels: one :class:`Notifier` per channel (Slack webhook, Slack bot, SMTP).

A notifier makes one attempt and raises :class:`~router.errors.TransientSendError`
(worth retrying) or :class:`~router.errors.PermanentSendError` (not).
:func:`router.alerts.delivery.deliver` owns the retry policy (full-jitter
exponential backoff, capped, never shorter than a server's ``Retry-After``) and
never raises for a failed send.  What the messages say is in
:mod:`router.alerts.render` (with render_slack and render_digest); how fast
Slack may be sent to is in :mod:`router.alerts.pacing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import email.utils
import json
import logging
import math
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import aiohttp

from models.lead import Alert, Rep
from router import metrics
from router.alerts.pacing import Pacer, pace_key
from router.alerts.render import Digest, render_email
from router.alerts.render_digest import render_digest_email
from router.alerts.render_slack import render_digest_blocks, render_slack_blocks
from router.alerts.views import one_line, truncate
from router.errors import PermanentSendError, SendError, TransientSendError
from router.settings import AlertSettings

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- notifiers


@runtime_checkable
class Notifier(Protocol):
    """One delivery channel.  ``send`` makes a single attempt."""

    channel: str

    async def send(self, alert: Alert) -> None:
        """Deliver ``alert``; raise TransientSendError or PermanentSendError on failure."""
        ...


@runtime_checkable
class ClosableNotifier(Protocol):
    """A channel holding connections of its own (SMTP) that are closed on shutdown."""

    channel: str

    async def aclose(self) -> None: ...


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
    return truncate(one_line(body), limit) or "(empty body)"


_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


async def _pace(pacer: Pacer | None, key: str, channel: str, *, priority: bool = False) -> None:
    if pacer is None:
        return
    waited = await pacer.acquire(key, priority=priority)
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
        # The team channel's copy has no accept/reject links: they act for the assigned rep only.
        await self._post(url, where, render_slack_blocks(alert, team_channel=True), priority=alert.priority)

    async def send_digest(self, digest: Digest) -> None:
        url, where = self._target(digest.team)
        await self._post(url, where, render_digest_blocks(digest, team_channel=True))

    async def _post(self, url: str, where: str, payload: Mapping[str, Any], *, priority: bool = False) -> None:
        key = pace_key("webhook", url)
        await _pace(self._pacer, key, self.channel, priority=priority)
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
        await self._to_rep(alert.assignment.rep, render_slack_blocks(alert), priority=alert.priority)

    async def send_digest(self, digest: Digest) -> None:
        await self._to_rep(digest.rep, render_digest_blocks(digest))

    async def _to_rep(self, rep: Rep, message: Mapping[str, Any], *, priority: bool = False) -> None:
        if not rep.slack_user_id:
            log.debug("slack_bot: rep %s has no slack_user_id; skipped", rep.rep_id)
            return
        if not self._token:
            raise PermanentSendError("no Slack bot token: set LEADROUTER_SLACK_BOT_TOKEN")
        key = pace_key("dm", rep.slack_user_id)
        await _pace(self._pacer, key, self.channel, priority=priority)
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


class _Smtp(smtplib.SMTP):
    """smtplib's client, noting when the message was handed over (the DATA command sent)."""

    handed_over = False

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        self.handed_over = True
        return super().data(msg)


class _SmtpSsl(smtplib.SMTP_SSL):
    """SMTPS (implicit TLS), noting when the message was handed over like :class:`_Smtp`."""

    handed_over = False

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        self.handed_over = True
        return super().data(msg)


_Conn = _Smtp | _SmtpSsl


def _closed_by_server(exc: BaseException) -> bool:
    """The failure of a reused connection the server had closed (idle timeout, restart, ``421``)."""
    if isinstance(exc, smtplib.SMTPServerDisconnected | ConnectionError):
        return True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(code == 421 for code, _ in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == 421


class SmtpNotifier:
    """Emails the alert (text + HTML) to the rep with stdlib smtplib in a worker thread.

    ``starttls`` upgrades a plain connection; ``implicit_tls`` connects with TLS
    from the start (SMTPS).  Either way the server's certificate is verified,
    against ``ca_file`` when given (a private CA or a self-signed certificate),
    else against the system's CAs.  ``user`` logs in after TLS.

    Connections are kept for reuse: after a send, an open (and logged-in)
    connection goes back to a pool of at most ``pool_size`` idle ones, and the next
    send takes the most recently used one.  A connection idle for ``idle_s`` or
    longer is closed (QUIT): by the next send that finds it, and by a task on the
    event loop that wakes when the oldest one is due; :meth:`aclose` (or
    :meth:`close`) closes them all.  ``idle_s=0`` opens a connection per message.

    A connection serves one thread at a time (it is out of the pool while used),
    and only a transaction that succeeded puts it back, so a failed one cannot
    leave state behind for the next.  A reused connection the server has closed
    meanwhile fails at MAIL or RCPT, before the message is handed over
    (disconnected, reset, or ``421``): the message is then sent once on a new
    connection.  Any failure from the DATA command on (or on a new connection) is
    classified as before (:func:`_smtp_error`) and left to the sender's retries,
    so a message the server may have accepted is never sent again from here.
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
        pool_size: int = 4,
        idle_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
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
        self._pool_size = pool_size if idle_s > 0 else 0
        self._idle_s = idle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: list[tuple[_Conn, float]] = []  # (connection, idle since), most recent last
        self._closed = False
        self._reaper: asyncio.Task[None] | None = None
        self.opened = 0  # connections opened so far (for tests and the bench)

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
            await asyncio.to_thread(self.send_sync, msg, context)
        except SendError:
            raise
        except Exception as exc:
            raise _smtp_error(exc, rcpt) from None
        finally:
            self._watch_idle()

    def send_sync(self, msg: EmailMessage, context: ssl.SSLContext | None = None) -> None:
        """Send ``msg`` (blocking; any thread), on a pooled connection when one is open.

        Raises smtplib's and the socket's errors as they are (:meth:`send` classifies them).
        """
        conn = self._take()
        reused = conn is not None
        if conn is None:
            conn = self._open(context)
        try:
            conn.send_message(msg)
        except Exception as exc:
            self._quit(conn)
            if not (reused and not conn.handed_over and _closed_by_server(exc)):
                raise
            log.info("SMTP: a reused connection to %s:%s was closed by the server (%s: %s); "
                     "sending on a new one", self._host, self._port, type(exc).__name__, _short(str(exc), 120))
            metrics.ALERT_SMTP_CONNECTIONS.labels("replaced").inc()
            conn = self._open(context)
            try:
                conn.send_message(msg)
            except BaseException:
                self._quit(conn)
                raise
        except BaseException:
            self._quit(conn)
            raise
        self._put(conn)

    def _open(self, context: ssl.SSLContext | None) -> _Conn:
        smtp: _Conn
        if self._implicit_tls:
            smtp = _SmtpSsl(self._host, self._port, timeout=self._timeout_s, context=context)
        else:
            smtp = _Smtp(self._host, self._port, timeout=self._timeout_s)
        with self._lock:
            self.opened += 1
        metrics.ALERT_SMTP_CONNECTIONS.labels("opened").inc()
        try:
            if self._starttls and not self._implicit_tls:
                smtp.starttls(context=context)
            if self._user:
                smtp.login(self._user, self._password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _take(self) -> _Conn | None:
        """The most recently used idle connection, closing those idle too long."""
        expired: list[_Conn] = []
        taken: _Conn | None = None
        now = self._clock()
        with self._lock:
            while self._idle:
                conn, since = self._idle.pop()
                if now - since < self._idle_s:
                    taken = conn
                    break
                expired.append(conn)  # and every older one below it
        self._quit_idle(expired)
        if taken is not None:
            taken.handed_over = False
            metrics.ALERT_SMTP_CONNECTIONS.labels("reused").inc()
        return taken

    def _put(self, conn: _Conn) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._pool_size:
                self._idle.append((conn, self._clock()))
                return
        self._quit(conn)

    def _quit(self, conn: _Conn) -> None:
        """Close politely (QUIT, briefly) when the connection still answers; always close the socket."""
        try:
            if conn.sock is not None:
                conn.sock.settimeout(min(self._timeout_s, 2.0))
                conn.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            conn.close()

    @property
    def idle_s(self) -> float:
        """How long a connection may stay idle before it is closed (0: no reuse)."""
        return self._idle_s

    @property
    def idle_connections(self) -> int:
        with self._lock:
            return len(self._idle)

    def close_idle(self) -> int:
        """Close the connections idle for ``idle_s`` or longer (blocking); how many were closed."""
        now = self._clock()
        with self._lock:
            expired = [c for c, since in self._idle if now - since >= self._idle_s]
            self._idle = [(c, since) for c, since in self._idle if now - since < self._idle_s]
        self._quit_idle(expired)
        return len(expired)

    def _quit_idle(self, expired: list[_Conn]) -> None:
        for conn in expired:
            self._quit(conn)
            metrics.ALERT_SMTP_CONNECTIONS.labels("closed_idle").inc()

    def close(self) -> None:
        """Close every idle connection (blocking); later sends open and close their own."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._quit(conn)

    async def aclose(self) -> None:
        """Stop the idle watch and close every idle connection (on shutdown)."""
        reaper, self._reaper = self._reaper, None
        if reaper is not None and not reaper.done():
            if reaper.get_loop() is asyncio.get_running_loop():
                reaper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reaper
            else:  # started on an event loop that has ended (or another one)
                with contextlib.suppress(RuntimeError):
                    reaper.get_loop().call_soon_threadsafe(reaper.cancel)
        await asyncio.to_thread(self.close)

    def _next_due(self) -> float | None:
        """Seconds until the oldest idle connection is due to close (None: none idle)."""
        with self._lock:
            if not self._idle:
                return None
            oldest = min(since for _, since in self._idle)
        return max(0.0, oldest + self._idle_s - self._clock())

    def _watch_idle(self) -> None:
        """Make sure a task closes idle connections when they are due (one per notifier)."""
        if self._closed or self._pool_size == 0 or not self.idle_connections:
            return
        loop = asyncio.get_running_loop()
        if self._reaper is not None and not self._reaper.done() and self._reaper.get_loop() is loop:
            return
        self._reaper = loop.create_task(self._reap(), name="smtp-idle-close")

    async def _reap(self) -> None:
        me = asyncio.current_task()
        try:
            while (due := self._next_due()) is not None:
                await asyncio.sleep(due + 0.05)
                await asyncio.to_thread(self.close_idle)
        except Exception:
            log.exception("the SMTP idle-connection watch failed; closing the idle connections")
            if self._reaper is me:
                self.close()
        except BaseException:
            # Cancelled, or collected with its loop, without aclose (which closes them itself, off the
            # loop): close the sockets here rather than leave them open.
            if self._reaper is me:
                self.close()
            raise
        finally:
            if self._reaper is me:
                self._reaper = None


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
    alerts: AlertSettings,
    session: aiohttp.ClientSession,
    team_webhooks: Mapping[str, str] | None = None,
    *,
    pacer: Pacer | None = None,
) -> list[Notifier]:
    """The notifiers the alerts settings configure: webhook, bot and/or SMTP (only those with a target).

    ``team_webhooks`` is kept as given (not copied), so a live view of the routing
    config (``router.alerts.sender.TeamWebhooks``) follows rules changes.
    """
    out: list[Notifier] = []
    teams: Mapping[str, str] = team_webhooks if team_webhooks is not None else {}
    if alerts.slack_webhook_url or len(teams):
        out.append(SlackWebhookNotifier(session, alerts.slack_webhook_url, teams, alerts.timeout_s,
                                        pacer=pacer))
    if alerts.slack_bot_token:
        out.append(
            SlackBotNotifier(
                session, alerts.slack_api_url, alerts.slack_bot_token, alerts.timeout_s, pacer=pacer
            )
        )
    if alerts.smtp_host:
        out.append(
            SmtpNotifier(
                alerts.smtp_host,
                alerts.smtp_port,
                alerts.smtp_from,
                alerts.smtp_starttls,
                alerts.smtp_user,
                alerts.smtp_password,
                alerts.timeout_s,
                implicit_tls=alerts.smtp_ssl,
                ca_file=alerts.smtp_tls_ca_file,
                idle_s=alerts.smtp_pool_idle_s,
            )
        )
    return out
