"""Real local receivers for reps' alerts: a Slack stand-in and an SMTP server.

``leadrouter dev`` points the notifiers at these so alerts show up on the
console, and the integration tests use them to check what was really sent.

* :class:`SlackReceiver` is an aiohttp app on 127.0.0.1 that speaks the two
  Slack endpoints the notifiers (and slack_sdk) use: incoming webhooks
  (``POST /services/{a}/{b}/{c}``) and ``POST /api/chat.postMessage``.
* :class:`SmtpReceiver` is an aiosmtpd server on 127.0.0.1 that parses each
  message into an :class:`email.message.EmailMessage`; optionally with
  STARTTLS or implicit TLS (give it a server ``ssl.SSLContext``), AUTH
  LOGIN/PLAIN against a user table, and injected failures (``fail_next`` /
  ``fail_always`` answer DATA with e.g. ``451`` until cleared).

Both pick a free port, record what they accept, let callers ``await
wait_for(predicate)``, and call an optional ``on_message`` callback.  Both
must be started and stopped from inside a running event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import parse_qsl, quote, unquote

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from multidict import CIMultiDict, CIMultiDictProxy

log = logging.getLogger(__name__)

T = TypeVar("T")

Endpoint = Literal["webhook", "chat.postMessage"]


# --------------------------------------------------------------------------- recording


class _Recorder(Generic[T]):
    """Accepted messages, async waiters and the ``on_message`` callback (owning loop only)."""

    def __init__(self, on_message: Callable[[T], None] | None) -> None:
        self.messages: list[T] = []
        self.on_message = on_message
        self._waiters: list[tuple[Callable[[T], bool], asyncio.Future[T]]] = []

    def add(self, item: T) -> None:
        self.messages.append(item)
        for predicate, fut in list(self._waiters):
            if fut.done():
                continue
            try:
                matched = predicate(item)
            except Exception as exc:
                fut.set_exception(exc)
                continue
            if matched:
                fut.set_result(item)
        if self.on_message is not None:
            try:
                self.on_message(item)
            except Exception:
                log.exception("on_message callback failed")

    async def wait_for(self, predicate: Callable[[T], bool] | None, timeout: float, what: str) -> T:
        pred: Callable[[T], bool] = predicate if predicate is not None else (lambda _m: True)
        for item in self.messages:
            if pred(item):
                return item
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        entry = (pred, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            msg = f"no matching {what} within {timeout}s ({len(self.messages)} received)"
            raise TimeoutError(msg) from None
        finally:
            self._waiters.remove(entry)


# --------------------------------------------------------------------------- Slack


@dataclass(frozen=True, slots=True)
class SlackRequest:
    """One request the Slack receiver got, accepted or not.

    ``payload`` is the parsed body (JSON object, or form fields with ``blocks``
    and ``attachments`` decoded); ``None`` when it did not parse.
    """

    endpoint: Endpoint
    path: str
    headers: Mapping[str, str]
    payload: dict[str, Any] | None
    status: int
    accepted: bool
    error: str | None = None
    ts: str | None = None
    received_at: float = field(default_factory=time.time)

    @property
    def text(self) -> str | None:
        value = (self.payload or {}).get("text")
        return value if isinstance(value, str) else None

    @property
    def blocks(self) -> list[Any]:
        value = (self.payload or {}).get("blocks")
        return value if isinstance(value, list) else []

    @property
    def channel(self) -> str | None:
        """The chat.postMessage channel, or the webhook's second path segment (the team)."""
        if self.endpoint == "webhook":
            parts = self.path.strip("/").split("/")
            return unquote(parts[2]) if len(parts) >= 4 else None
        value = (self.payload or {}).get("channel")
        return value if isinstance(value, str) else None


@dataclass(slots=True)
class _Failure:
    status: int
    retry_after: float | None
    body: str | None
    endpoint: Endpoint | None
    delay_s: float = 0.0

    def applies(self, endpoint: Endpoint) -> bool:
        return self.endpoint is None or self.endpoint == endpoint


_WEBHOOK_ERRORS = {
    400: "invalid_payload",
    403: "action_prohibited",
    404: "no_service",
    410: "channel_is_archived",
    429: "rate_limited",
}
_API_ERRORS = {429: "ratelimited", 500: "internal_error", 503: "service_unavailable"}
_JSON_TYPES = ("application/json", "text/json")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class SlackReceiver:
    """A local Slack: incoming webhooks and ``chat.postMessage``.

    ``bot_token``: when set, chat.postMessage requires exactly this token
    (else ``invalid_auth``); by default any Bearer token is accepted.
    """

    def __init__(
        self,
        *,
        bot_token: str | None = None,
        on_message: Callable[[SlackRequest], None] | None = None,
    ) -> None:
        self.bot_token = bot_token
        self.requests: list[SlackRequest] = []
        self._recorder: _Recorder[SlackRequest] = _Recorder(on_message)
        self._failures: deque[_Failure] = deque()
        self._always: _Failure | None = None
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("SlackReceiver already started")
        app = web.Application()
        app.router.add_post("/services/{a}/{b}/{c}", self._webhook)
        app.router.add_post("/api/chat.postMessage", self._post_message)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SlackReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # addresses ----------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("SlackReceiver is not started")
        return self._url

    @property
    def api_url(self) -> str:
        """What to use as ``LEADROUTER_SLACK_API_URL``."""
        return f"{self.url}/api"

    def webhook_url(self, team: str = "default") -> str:
        return f"{self.url}/services/T000/{quote(team, safe='')}/hook"

    # records and waiting -----------------------------------------------------

    @property
    def messages(self) -> list[SlackRequest]:
        """Accepted messages, in arrival order."""
        return self._recorder.messages

    @property
    def on_message(self) -> Callable[[SlackRequest], None] | None:
        return self._recorder.on_message

    @on_message.setter
    def on_message(self, callback: Callable[[SlackRequest], None] | None) -> None:
        self._recorder.on_message = callback

    async def wait_for(
        self, predicate: Callable[[SlackRequest], bool] | None = None, timeout: float = 5.0
    ) -> SlackRequest:
        """The first accepted message (already received or arriving) that matches ``predicate``."""
        return await self._recorder.wait_for(predicate, timeout, "Slack message")

    # failure injection --------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        retry_after: float | None = 1,
        error_body: str | None = None,
        *,
        endpoint: Endpoint | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Answer the next ``n`` requests (to ``endpoint``, default any) with an error.

        Webhooks get ``error_body`` as the text body; chat.postMessage gets
        ``{"ok": false, "error": error_body}`` with HTTP ``status`` (use 200
        for Slack's usual API errors such as ``channel_not_found``).
        ``delay_s`` makes the receiver wait before answering (for timeouts).
        """
        for _ in range(n):
            self._failures.append(_Failure(status, retry_after, error_body, endpoint, delay_s))

    def fail_always(
        self,
        status: int,
        body: str | None = None,
        *,
        retry_after: float | None = None,
        endpoint: Endpoint | None = None,
    ) -> None:
        """Answer every request with this error until :meth:`clear_failures`."""
        self._always = _Failure(status, retry_after, body, endpoint)

    def clear_failures(self) -> None:
        self._failures.clear()
        self._always = None

    def _take_failure(self, endpoint: Endpoint) -> _Failure | None:
        for i, failure in enumerate(self._failures):
            if failure.applies(endpoint):
                del self._failures[i]
                return failure
        if self._always is not None and self._always.applies(endpoint):
            return self._always
        return None

    # handlers -----------------------------------------------------------------

    def _record(self, req: SlackRequest) -> None:
        self.requests.append(req)
        if req.accepted:
            self._recorder.add(req)

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        payload, parse_error = await _parse_webhook(request)

        def answer(status: int, body: str, retry_after: float | None = None) -> web.Response:
            self._record(
                SlackRequest(
                    "webhook",
                    request.path,
                    headers,
                    payload,
                    status,
                    status == 200,
                    None if status == 200 else body,
                )
            )
            extra = {"Retry-After": _fmt_seconds(retry_after)} if retry_after is not None else {}
            return web.Response(status=status, text=body, headers=extra)

        failure = self._take_failure("webhook")
        if failure is not None:
            if failure.delay_s:
                await asyncio.sleep(failure.delay_s)
            body = failure.body or _WEBHOOK_ERRORS.get(failure.status, "internal_error")
            return answer(failure.status, body, failure.retry_after)
        if payload is None:
            return answer(400, parse_error or "invalid_payload")
        if not payload.get("text") and not payload.get("blocks") and not payload.get("attachments"):
            return answer(400, "no_text")
        return answer(200, "ok")

    async def _post_message(self, request: web.Request) -> web.StreamResponse:
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        payload, parse_error = await _parse_api(request)

        def answer(
            body: dict[str, Any], status: int = 200, retry_after: float | None = None, ts: str | None = None
        ) -> web.Response:
            ok = body.get("ok") is True
            self._record(
                SlackRequest(
                    "chat.postMessage",
                    request.path,
                    headers,
                    payload,
                    status,
                    ok and status == 200,
                    None if ok else str(body.get("error")),
                    ts,
                )
            )
            extra = {"Retry-After": _fmt_seconds(retry_after)} if retry_after is not None else {}
            return web.json_response(body, status=status, headers=extra)

        failure = self._take_failure("chat.postMessage")
        if failure is not None:
            if failure.delay_s:
                await asyncio.sleep(failure.delay_s)
            error = failure.body or _API_ERRORS.get(failure.status, "fatal_error")
            return answer({"ok": False, "error": error}, failure.status, failure.retry_after)
        token = _bearer(request.headers.get("Authorization")) or str((payload or {}).get("token") or "")
        if not token:
            return answer({"ok": False, "error": "not_authed"})
        if self.bot_token is not None and token != self.bot_token:
            return answer({"ok": False, "error": "invalid_auth"})
        if payload is None:
            return answer({"ok": False, "error": parse_error or "invalid_arguments"})
        channel = payload.get("channel")
        if not isinstance(channel, str) or not channel:
            return answer({"ok": False, "error": "channel_not_found"})
        if not payload.get("text") and not payload.get("blocks") and not payload.get("attachments"):
            return answer({"ok": False, "error": "no_text"})
        ts = f"{int(time.time())}.{next(self._seq):06d}"
        message = {
            "type": "message",
            "text": payload.get("text", ""),
            "user": "U0LEADROUTER",
            "bot_id": "B0LEADROUTER",
            "ts": ts,
        }
        if "blocks" in payload:
            message["blocks"] = payload["blocks"]
        return answer({"ok": True, "channel": channel, "ts": ts, "message": message}, ts=ts)


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _bearer(value: str | None) -> str:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return ""


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8")
    except (LookupError, UnicodeDecodeError):
        return raw.decode("utf-8", errors="replace")


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def _form_fields(request: web.Request) -> dict[str, Any]:
    if request.content_type == "multipart/form-data":
        form = await request.post()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    text = _decode(await request.read(), request.charset)
    return dict(parse_qsl(text, keep_blank_values=True))


async def _parse_webhook(request: web.Request) -> tuple[dict[str, Any] | None, str | None]:
    """Incoming webhooks take a JSON body, or a form with a JSON ``payload`` field."""
    if request.content_type in _FORM_TYPES:
        fields = await _form_fields(request)
        raw = fields.get("payload")
        if not isinstance(raw, str):
            return None, "invalid_payload"
        obj = _json_object(raw)
    else:
        obj = _json_object(_decode(await request.read(), request.charset))
    return (obj, None) if obj is not None else (None, "invalid_payload")


async def _parse_api(request: web.Request) -> tuple[dict[str, Any] | None, str | None]:
    """Web API methods take JSON, or form fields whose structured values are JSON strings."""
    query: dict[str, Any] = dict(request.query)
    if request.content_type in _FORM_TYPES:
        fields = {**query, **await _form_fields(request)}
        for key in ("blocks", "attachments", "metadata"):
            value = fields.get(key)
            if isinstance(value, str) and value:
                try:
                    fields[key] = json.loads(value)
                except ValueError:
                    return None, f"invalid_{key}"
        return fields, None
    if request.content_type in _JSON_TYPES or request.body_exists:
        raw = await request.read()
        if not raw:
            return query, None
        obj = _json_object(_decode(raw, request.charset))
        return ({**query, **obj}, None) if obj is not None else (None, "invalid_json")
    return query, None


# --------------------------------------------------------------------------- SMTP


@dataclass(frozen=True, slots=True)
class SmtpEnvelope:
    """How one accepted message arrived: envelope addresses, whether over TLS, and who logged in."""

    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    tls: bool = False
    auth_user: str | None = None


class _BoundController(Controller):
    """An aiosmtpd Controller serving on a socket we bound ourselves (port 0 → free port)."""

    def __init__(self, handler: Any, sock: socket.socket, **smtp_kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, ready_timeout=10.0, **smtp_kwargs)
        self._sock = sock

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class _SmtpHandler:
    """aiosmtpd hooks; they run on the controller's thread and hand results to the owning loop."""

    def __init__(self, receiver: SmtpReceiver) -> None:
        self._receiver = receiver

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self._receiver._refusals.get(address.lower())
        if reply is not None:
            self._receiver._threadsafe(self._receiver.refused.append, address)
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._receiver._auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        failure = self._receiver._take_failure()
        if failure is not None:
            self._receiver._threadsafe(self._receiver.failed.append, failure)
            return failure
        content = envelope.original_content or envelope.content or b""
        raw = content.encode("utf-8", errors="surrogateescape") if isinstance(content, str) else content
        msg = BytesParser(_class=EmailMessage, policy=policy.default).parsebytes(raw)
        user = session.auth_data if isinstance(session.auth_data, str) else None
        transport = server.transport
        tls = session.ssl is not None or (transport is not None and transport.get_extra_info("ssl_object") is not None)
        env = SmtpEnvelope(envelope.mail_from, tuple(envelope.rcpt_tos), tls, user)
        self._receiver._threadsafe(self._receiver._add, msg, env)
        return "250 Message accepted for delivery"


class _Authenticator:
    """AUTH PLAIN / LOGIN against the receiver's user table; ``auth_data`` is the user name."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode(errors="replace")
        password = auth_data.password.decode(errors="replace")
        if user in self._users and self._users[user] == password:
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)


class SmtpReceiver:
    """A local SMTP server recording each message as an ``EmailMessage``.

    ``refuse`` maps addresses (case-insensitive) to the RCPT reply that
    refuses them, e.g. ``{"gone@example.test": "550 5.1.1 User unknown"}``;
    :meth:`refuse` adds one later.

    TLS: ``tls_context`` (a server context with the certificate loaded) offers
    STARTTLS, and ``require_starttls`` refuses mail before it; with
    ``implicit_tls`` the socket speaks TLS from the first byte (SMTPS) instead.
    ``users`` (name -> password) enables AUTH PLAIN / LOGIN, only over TLS, and
    ``auth_required`` refuses mail from clients that did not log in.
    :attr:`envelopes` records, per accepted message, whether it came over TLS and
    who logged in.
    """

    def __init__(
        self,
        *,
        refuse: Mapping[str, str] | Iterable[str] = (),
        on_message: Callable[[EmailMessage], None] | None = None,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        users: Mapping[str, str] | None = None,
        auth_required: bool = False,
    ) -> None:
        if (require_starttls or implicit_tls) and tls_context is None:
            raise ValueError("require_starttls / implicit_tls need a tls_context")
        self._tls_context = tls_context
        self._require_starttls = require_starttls
        self._implicit_tls = implicit_tls
        self._users = dict(users or {})
        self._auth_required = auth_required
        self._lock = threading.Lock()
        self._failures: deque[str] = deque()
        self._always: str | None = None
        self.failed: list[str] = []
        self._refusals: dict[str, str] = {}
        if isinstance(refuse, Mapping):
            for addr, reply in refuse.items():
                self.refuse(addr, reply)
        else:
            for addr in refuse:
                self.refuse(addr)
        self.envelopes: list[SmtpEnvelope] = []
        self.refused: list[str] = []
        self._recorder: _Recorder[EmailMessage] = _Recorder(on_message)
        self._controller: _BoundController | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None

    def refuse(self, address: str, reply: str = "550 5.1.1 Recipient address rejected: User unknown") -> None:
        """Refuse RCPT TO ``address`` with ``reply`` (use a 4xx reply for a temporary refusal)."""
        self._refusals[address.lower()] = reply

    def fail_next(self, n: int = 1, reply: str = "451 4.3.0 Temporary failure, try again later") -> None:
        """Answer the next ``n`` messages' DATA with ``reply`` (4xx: transient, 5xx: permanent)."""
        with self._lock:
            self._failures.extend([reply] * n)

    def fail_always(self, reply: str = "451 4.3.0 Temporary failure, try again later") -> None:
        """Answer every message's DATA with ``reply`` until :meth:`clear_failures`."""
        with self._lock:
            self._always = reply

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()
            self._always = None

    def _take_failure(self) -> str | None:
        with self._lock:
            if self._failures:
                return self._failures.popleft()
            return self._always

    async def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError("SmtpReceiver already started")
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(100)
            sock.setblocking(False)
            smtp_kwargs: dict[str, Any] = {}
            if self._implicit_tls:
                smtp_kwargs["ssl_context"] = self._tls_context
            elif self._tls_context is not None:
                smtp_kwargs.update(tls_context=self._tls_context, require_starttls=self._require_starttls)
            if self._users:
                # AUTH only over TLS.  An implicit-TLS socket is TLS though aiosmtpd cannot
                # tell (it would refuse AUTH, and warns when told not to), so there the
                # handler enforces auth_required itself.
                smtp_kwargs["authenticator"] = _Authenticator(self._users)
                if self._implicit_tls:
                    smtp_kwargs["auth_require_tls"] = False
                else:
                    smtp_kwargs["auth_required"] = self._auth_required
            controller = _BoundController(_SmtpHandler(self), sock, **smtp_kwargs)
        except BaseException:
            sock.close()
            raise
        try:
            await asyncio.to_thread(controller.start)
        except BaseException:
            await asyncio.to_thread(controller.stop, True)
            sock.close()
            if not controller.loop.is_closed():
                controller.loop.close()
            raise
        self._controller = controller
        self._host, self._port = sock.getsockname()[:2]

    async def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            await asyncio.to_thread(controller.stop)

    async def __aenter__(self) -> SmtpReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SmtpReceiver is not started")
        return self._port

    @property
    def messages(self) -> list[EmailMessage]:
        return self._recorder.messages

    @property
    def on_message(self) -> Callable[[EmailMessage], None] | None:
        return self._recorder.on_message

    @on_message.setter
    def on_message(self, callback: Callable[[EmailMessage], None] | None) -> None:
        self._recorder.on_message = callback

    async def wait_for(
        self, predicate: Callable[[EmailMessage], bool] | None = None, timeout: float = 5.0
    ) -> EmailMessage:
        """The first message (already received or arriving) that matches ``predicate``."""
        return await self._recorder.wait_for(predicate, timeout, "email")

    def _add(self, msg: EmailMessage, env: SmtpEnvelope) -> None:
        self.envelopes.append(env)
        self._recorder.add(msg)

    def _threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            log.warning("SmtpReceiver: owning event loop is gone; dropping a record")
            return
        loop.call_soon_threadsafe(fn, *args)
