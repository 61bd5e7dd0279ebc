"""A local SMTP server (aiosmtpd on 127.0.0.1) recording each message as an :class:`email.message.EmailMessage`.

Optionally with STARTTLS or implicit TLS (give it a server ``ssl.SSLContext``),
AUTH LOGIN/PLAIN against a user table, refused recipients, and injected failures
(``fail_next`` / ``fail_always`` answer DATA with e.g. ``451`` until cleared;
``fail_mail_next`` answers MAIL FROM).  It counts the connections it accepts and
can drop the open ones (:meth:`SmtpReceiver.drop_connections`), as a server's
idle timeout does, so tests can check how a client reuses its connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from router.dev.receivers.recording import Recorder

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SmtpEnvelope:
    """How one accepted message arrived: envelope addresses, whether over TLS, and who logged in."""

    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    tls: bool = False
    auth_user: str | None = None


class _TrackedSMTP(SMTP):
    """aiosmtpd's server side of one connection, leaving the receiver's list of open ones when closed."""

    def __init__(self, handler: Any, receiver: SmtpReceiver, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._receiver = receiver

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # aiosmtpd writes a multi-line reply (EHLO) a line at a time: without this, Nagle holds each
            # next line for the client's delayed ACK, 40 ms per EHLO on loopback.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._receiver._lost(self)


class _BoundController(Controller):
    """An aiosmtpd Controller serving on a socket we bound ourselves (port 0 → free port)."""

    def __init__(self, handler: Any, sock: socket.socket, receiver: SmtpReceiver, **smtp_kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, ready_timeout=10.0, **smtp_kwargs)
        self._sock = sock
        self._receiver = receiver

    def factory(self) -> SMTP:
        # One per accepted connection (the protocol factory); the controller's first call is its own
        # readiness probe, which is a connection too.
        server = _TrackedSMTP(self.handler, self._receiver, **self.SMTP_kwargs)
        self._receiver._opened(server)
        return server

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class _SmtpHandler:
    """aiosmtpd hooks; they run on the controller's thread and hand results to the owning loop."""

    def __init__(self, receiver: SmtpReceiver) -> None:
        self._receiver = receiver

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        reply = self._receiver._take_mail_failure()
        if reply is not None:
            self._receiver._threadsafe(self._receiver.failed.append, reply)
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

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
        self._mail_failures: deque[str] = deque()
        self._live: set[SMTP] = set()
        self.connections = 0  # connections accepted, the controller's readiness probe not counted
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
        self._recorder: Recorder[EmailMessage] = Recorder(on_message)
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

    def fail_mail_next(self, n: int = 1, reply: str = "421 4.7.0 Too many messages on this connection") -> None:
        """Answer the next ``n`` MAIL FROM commands with ``reply`` (before any message data)."""
        with self._lock:
            self._mail_failures.extend([reply] * n)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()
            self._mail_failures.clear()
            self._always = None

    def _take_mail_failure(self) -> str | None:
        with self._lock:
            return self._mail_failures.popleft() if self._mail_failures else None

    def _opened(self, server: SMTP) -> None:
        with self._lock:
            self._live.add(server)
            if self._controller is not None:  # started: not the controller's readiness probe
                self.connections += 1

    def _lost(self, server: SMTP) -> None:
        with self._lock:
            self._live.discard(server)

    @property
    def open_connections(self) -> int:
        """Connections open now (the server's side)."""
        with self._lock:
            return len(self._live)

    async def drop_connections(self, reply: str | None = None) -> int:
        """Close every open connection from the server's side, as an idle timeout does; how many.

        ``reply`` (e.g. ``421 4.4.2 Idle timeout``) is written first, as Postfix does (on a
        plain connection: a TLS one is aborted at once, and the reply may be lost).
        """
        controller = self._controller
        if controller is None:
            return 0
        with self._lock:
            live = list(self._live)

        async def drop() -> None:
            for server in live:
                transport = server.transport
                if isinstance(transport, asyncio.WriteTransport):
                    if reply is not None:
                        transport.write(reply.encode() + b"\r\n")
                    if transport.get_extra_info("ssl_object") is not None:
                        transport.abort()  # a TLS close would wait (30 s) for the client's close_notify
                    else:
                        transport.close()
            for _ in range(5000):  # until aiosmtpd has seen them closed (at most ~5 s)
                with self._lock:
                    if not any(srv in self._live for srv in live):
                        return
                await asyncio.sleep(0.001)

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(drop(), controller.loop))
        return len(live)

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
            controller = _BoundController(_SmtpHandler(self), sock, self, **smtp_kwargs)
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
        if self._controller is not None:
            await self.drop_connections()  # clients that kept theirs open (connection reuse)
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
