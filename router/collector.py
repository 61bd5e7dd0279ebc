"""The collector: a stateless HTTP process that turns hits into events.

``GET /t/p.gif`` (web visit), ``POST /t/form`` (form fill) and
``GET /t/o/{token}.gif`` (email open).  Every accepted hit becomes one
:class:`models.Event`, produced to Kafka with acks=all and keyed by person.
A pixel always answers its GIF: bad input is counted and logged, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from models import Event, EventType
from router import metrics
from router.errors import TokenError
from router.kafka import EventSink, KafkaEventSink, ProduceError, ensure_topics
from router.settings import Settings
from router.tokens import verify_token

log = logging.getLogger(__name__)

# The classic 1x1 transparent GIF: 43 bytes.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
GIF_HEADERS = {
    "Content-Type": "image/gif",
    "Cache-Control": "no-cache, no-store, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
MAX_FORM_BYTES = 64 * 1024
MAX_URL = 2048
MAX_TEXT = 512
MAX_FIELD = 256
VISITOR_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
# Deliberately practical, not RFC 5322: one @, a dotted domain, no spaces.
EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
FORM_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
FORM_TEXT_FIELDS = ("first_name", "last_name", "name", "company", "job_title", "country", "region", "phone")
TRUE_WORDS = {"1", "true", "yes", "on", "y"}
FALSE_WORDS = {"0", "false", "no", "off", "n", ""}


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    value: Any
    problem: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "value": self.value, "problem": self.problem, "fix": self.fix}


def new_visitor_id() -> str:
    return uuid.uuid4().hex


def valid_email(value: str) -> bool:
    return len(value) <= 254 and EMAIL_RE.match(value) is not None


def clean_url(value: str | None) -> tuple[str | None, bool]:
    """(url, ok): only absolute http(s) URLs of sane length are kept."""
    if not value:
        return None, True
    if len(value) > MAX_URL:
        return None, False
    try:
        parts = urlsplit(value)
    except ValueError:
        return None, False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None, False
    return value, True


def utm_from(params: Mapping[str, str], url: str | None) -> dict[str, str]:
    utm = {k: params[k][:MAX_FIELD] for k in UTM_KEYS if params.get(k)}
    if url and not utm:
        query = dict(parse_qsl(urlsplit(url).query))
        utm = {k: query[k][:MAX_FIELD] for k in UTM_KEYS if query.get(k)}
    return utm


def client_ip(request: web.Request) -> str | None:
    fwd = request.headers.get("X-Forwarded-For")
    if fwd:
        return fwd.split(",")[0].strip() or None
    return request.remote


def parse_form(data: Mapping[str, Any]) -> tuple[dict[str, str], list[Problem]]:
    """Validate a form post; returns the clean fields and every problem found."""
    problems: list[Problem] = []
    out: dict[str, str] = {}
    form_id = data.get("form_id")
    if not isinstance(form_id, str) or not form_id.strip():
        problems.append(Problem("form_id", form_id, "missing", "send the id of the form, e.g. form_id=demo-request"))
    elif not FORM_ID_RE.match(form_id.strip()):
        problems.append(Problem("form_id", form_id, "invalid",
                                "use 1-64 letters, digits, '-', '_', '.' or ':'"))
    else:
        out["form_id"] = form_id.strip()
    email = data.get("email")
    if not isinstance(email, str) or not email.strip():
        problems.append(Problem("email", email, "missing", "send the person's work email, e.g. email=jane@acme.com"))
    elif not valid_email(email.strip()):
        problems.append(Problem("email", email, "not a valid email address",
                                "send an address like jane@acme.com"))
    else:
        out["email"] = email.strip().lower()
    for name in FORM_TEXT_FIELDS:
        value = data.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            problems.append(Problem(name, value, "must be text", f"send {name} as a string"))
            continue
        value = value.strip()
        if len(value) > MAX_FIELD:
            problems.append(Problem(name, value[:40] + "…", f"longer than {MAX_FIELD} characters",
                                    f"shorten {name}"))
            continue
        if name in ("country", "region") and len(value) <= 3:
            value = value.upper()
        if value:
            out[name] = value
    consent = data.get("consent")
    if consent is not None:
        word = str(consent).strip().lower()
        if word in TRUE_WORDS:
            out["consent"] = "true"
        elif word in FALSE_WORDS:
            out["consent"] = "false"
        else:
            problems.append(Problem("consent", consent, "not a yes/no value", "send consent=true or consent=false"))
    return out, problems


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Collector:
    def __init__(self, settings: Settings, sink: EventSink, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.sink = sink
        self.clock = clock

    # --- helpers ---------------------------------------------------------
    def _gif(self, visitor_id: str | None = None, set_cookie: bool = False) -> web.Response:
        resp = web.Response(body=GIF, headers=GIF_HEADERS)
        if set_cookie and visitor_id:
            self._set_cookie(resp, visitor_id)
        return resp

    def _set_cookie(self, resp: web.StreamResponse, visitor_id: str) -> None:
        resp.set_cookie(
            self.settings.cookie_name, visitor_id, max_age=self.settings.cookie_max_age_s, path="/",
            httponly=True, secure=self.settings.cookie_secure,
            samesite="None" if self.settings.cookie_secure else "Lax",
        )

    def _visitor(self, request: web.Request, endpoint: str) -> tuple[str, bool]:
        """(visitor id, minted): the cookie wins, then a ``vid`` parameter."""
        cookie = request.cookies.get(self.settings.cookie_name)
        if cookie and VISITOR_RE.match(cookie):
            return cookie, False
        if cookie:
            metrics.COLLECTOR_INVALID.labels(endpoint, "cookie").inc()
        vid = request.query.get("vid")
        if vid and VISITOR_RE.match(vid):
            return vid, True
        if vid:
            metrics.COLLECTOR_INVALID.labels(endpoint, "vid").inc()
            log.info("ignored invalid vid %r", vid[:80])
        return new_visitor_id(), True

    def _cors(self, request: web.Request, resp: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Credentials"] = "true"
            resp.headers["Vary"] = "Origin"

    async def _produce(self, event: Event) -> bool:
        try:
            await self.sink.send(event)
        except ProduceError as exc:
            metrics.PRODUCE_FAILURES.labels(self.settings.topic_events).inc()
            log.error("%s", exc)
            return False
        return True

    # --- endpoints -------------------------------------------------------
    async def pixel(self, request: web.Request) -> web.Response:
        endpoint = "pixel"
        try:
            vid, minted = self._visitor(request, endpoint)
            q = request.query
            raw_url = q.get("url") or q.get("u") or request.headers.get("Referer")
            url, ok = clean_url(raw_url)
            if not ok:
                metrics.COLLECTOR_INVALID.labels(endpoint, "url").inc()
                log.info("pixel: ignored invalid url %r", (raw_url or "")[:120])
            referrer, ok_ref = clean_url(q.get("ref") or q.get("r"))
            if not ok_ref:
                metrics.COLLECTOR_INVALID.labels(endpoint, "referrer").inc()
            title = (q.get("title") or q.get("t") or "")[:MAX_TEXT] or None
            event = Event(
                event_id=uuid.uuid4().hex, type=EventType.PAGE_VIEW, ts=self.clock(), source="pixel",
                visitor_id=vid, url=url, referrer=referrer, title=title, utm=utm_from(q, url),
                user_agent=(request.headers.get("User-Agent") or "")[:MAX_TEXT] or None, ip=client_ip(request),
            )
            outcome = "accepted" if await self._produce(event) else "unavailable"
            metrics.COLLECTOR_REQUESTS.labels(endpoint, outcome).inc()
            return self._gif(vid, set_cookie=minted)
        except Exception:  # a pixel must never break a page
            log.exception("pixel: unexpected error")
            metrics.COLLECTOR_REQUESTS.labels(endpoint, "error").inc()
            return self._gif()

    async def email_open(self, request: web.Request) -> web.Response:
        endpoint = "email_open"
        try:
            token = request.match_info.get("token", "")
            try:
                claims = verify_token(self.settings.token_secret, token, now=self.clock())
            except TokenError as exc:
                metrics.COLLECTOR_INVALID.labels(endpoint, "token").inc()
                metrics.COLLECTOR_REQUESTS.labels(endpoint, "rejected").inc()
                log.info("email open: %s", exc)
                return self._gif()
            if claims.kind != "open":
                metrics.COLLECTOR_INVALID.labels(endpoint, "token").inc()
                metrics.COLLECTOR_REQUESTS.labels(endpoint, "rejected").inc()
                return self._gif()
            event = Event(
                event_id=uuid.uuid4().hex, type=EventType.EMAIL_OPEN, ts=self.clock(), source="email",
                email=claims.email, campaign=claims.campaign,
                user_agent=(request.headers.get("User-Agent") or "")[:MAX_TEXT] or None, ip=client_ip(request),
            )
            outcome = "accepted" if await self._produce(event) else "unavailable"
            metrics.COLLECTOR_REQUESTS.labels(endpoint, outcome).inc()
            return self._gif()
        except Exception:
            log.exception("email open: unexpected error")
            metrics.COLLECTOR_REQUESTS.labels(endpoint, "error").inc()
            return self._gif()

    async def form(self, request: web.Request) -> web.Response:
        endpoint = "form"
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            metrics.COLLECTOR_REQUESTS.labels(endpoint, "too_large").inc()
            return self._json(request, 413, {"error": "payload_too_large",
                                             "detail": f"form posts are limited to {MAX_FORM_BYTES} bytes"})
        try:
            data = await self._form_body(request)
        except ValueError as exc:
            metrics.COLLECTOR_INVALID.labels(endpoint, "body").inc()
            metrics.COLLECTOR_REQUESTS.labels(endpoint, "invalid").inc()
            return self._json(request, 400, {"error": "invalid_body", "detail": str(exc)})
        fields, problems = parse_form(data)
        if problems:
            for p in problems:
                metrics.COLLECTOR_INVALID.labels(endpoint, p.field).inc()
            metrics.COLLECTOR_REQUESTS.labels(endpoint, "invalid").inc()
            return self._json(request, 422, {"error": "invalid_form",
                                             "problems": [p.to_dict() for p in problems]})
        vid, minted = self._visitor(request, endpoint)
        if isinstance(data.get("vid"), str) and VISITOR_RE.match(data["vid"]) and minted:
            vid = data["vid"]
        page_url, _ = clean_url(data.get("url") if isinstance(data.get("url"), str) else
                                request.headers.get("Referer"))
        form_id = fields.pop("form_id")
        email = fields.pop("email")
        event = Event(
            event_id=uuid.uuid4().hex, type=EventType.FORM_FILL, ts=self.clock(), source="form",
            visitor_id=vid, email=email, form_id=form_id, fields=fields, url=page_url,
            utm=utm_from({k: v for k, v in data.items() if isinstance(v, str)}, page_url),
            user_agent=(request.headers.get("User-Agent") or "")[:MAX_TEXT] or None, ip=client_ip(request),
        )
        if not await self._produce(event):
            metrics.COLLECTOR_REQUESTS.labels(endpoint, "unavailable").inc()
            return self._json(request, 503, {"error": "unavailable",
                                             "detail": "the event store is unreachable; retry shortly"},
                              headers={"Retry-After": "5"})
        metrics.COLLECTOR_REQUESTS.labels(endpoint, "accepted").inc()
        resp = self._json(request, 202, {"accepted": True, "event_id": event.event_id, "visitor_id": vid})
        if minted:
            self._set_cookie(resp, vid)
        return resp

    async def _form_body(self, request: web.Request) -> dict[str, Any]:
        ctype = request.content_type
        if ctype == "application/json":
            raw = await request.read()
            if len(raw) > MAX_FORM_BYTES:
                raise ValueError(f"body larger than {MAX_FORM_BYTES} bytes")
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"body is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise ValueError("JSON body must be an object of form fields")
            return data
        if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            post = await request.post()
            return {k: v for k, v in post.items() if isinstance(v, str)}
        raise ValueError(f"unsupported Content-Type {ctype!r}; send application/x-www-form-urlencoded or "
                         "application/json")

    def _json(self, request: web.Request, status: int, body: Mapping[str, Any],
              headers: Mapping[str, str] | None = None) -> web.Response:
        resp = web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                            headers=headers)
        self._cors(request, resp)
        return resp

    async def preflight(self, request: web.Request) -> web.Response:
        resp = web.Response(status=204)
        self._cors(request, resp)
        resp.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        resp.headers["Access-Control-Allow-Headers"] = "Content-Type"
        resp.headers["Access-Control-Max-Age"] = "86400"
        return resp

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def metrics_page(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(metrics.REGISTRY))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp


@web.middleware
async def timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    try:
        return await handler(request)
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        metrics.COLLECTOR_LATENCY.labels(name).observe(time.perf_counter() - start)


def create_app(settings: Settings, sink: EventSink, clock: Callable[[], float] = time.time) -> web.Application:
    c = Collector(settings, sink, clock)
    app = web.Application(middlewares=[timing], client_max_size=MAX_FORM_BYTES * 2)
    app.router.add_get("/t/p.gif", c.pixel)
    app.router.add_get("/t/o/{token}.gif", c.email_open)
    app.router.add_post("/t/form", c.form)
    app.router.add_route("OPTIONS", "/t/form", c.preflight)
    app.router.add_get("/healthz", c.health)
    app.router.add_get("/metrics", c.metrics_page)
    return app


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the collector until ``stop`` is set (or forever)."""
    await ensure_topics(settings)
    sink = KafkaEventSink(settings)
    await sink.start()
    app = create_app(settings, sink)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.collector_host, settings.collector_port, backlog=1024)
    await site.start()
    log.info("collector listening on http://%s:%d", settings.collector_host, settings.collector_port)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
        await sink.stop()
