"""A Slack stand-in: incoming webhooks and ``chat.postMessage`` on 127.0.0.1, recording every message.

:class:`SlackReceiver` is an aiohttp app that speaks the two Slack endpoints the
notifiers (and slack_sdk) use: incoming webhooks (``POST /services/{a}/{b}/{c}``)
and ``POST /api/chat.postMessage``; ``fail_next`` / ``fail_always`` make it answer
as Slack does when it refuses.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from router.dev.receivers.recording import Recorder

log = logging.getLogger(__name__)

Endpoint = Literal["webhook", "chat.postMessage"]


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
        self._recorder: Recorder[SlackRequest] = Recorder(on_message)
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
