"""The collector: a stateless HTTP process that turns hits into events.

Endpoints
    ``GET /t/p.gif`` (web visit), ``POST /t/form`` (form fill),
    ``GET /t/o/{token}.gif`` (email open), ``GET /t/c/{token}`` (email click:
    a 302 to the URL signed inside the click token, never anywhere else),
    the Segment/RudderStack HTTP API ``POST /v1/<call>`` (see
    :mod:`router.ingest.segment`) and the Snowplow tracker protocol ``GET /i``,
    ``GET /ice.png``, ``POST /com.snowplowanalytics.snowplow/tp2`` (see
    :mod:`router.ingest.snowplow`).

Every accepted hit becomes one or more :class:`models.Event` handed to the sink: in
production the durable spool (:mod:`router.ingest.spool`), which a forwarder drains
into Kafka (acks=all, keyed by person).  A pixel always answers its GIF and a
click always redirects to its signed URL: bad input is counted and logged,
never raised.

Machines are flagged, never dropped (:mod:`router.ingest.machine`): ``Event.machine``
and ``machine_reason`` on page views, form fills, SDK page/track events, email
opens and clicks.

Abuse
    * The client address is the TCP peer's; ``X-Forwarded-For`` counts only from
      ``LEADROUTER_TRUSTED_PROXIES`` (:func:`client_ip`).
    * The server never decompresses: a handler that reads a body decodes it itself,
      bounded as it streams (:func:`read_limited`, 413 past the route's limit, 400 for a
      truncated stream), so a compression bomb to any other route costs nothing.
    * Request heads, bodies and idle connections have timeouts (``LEADROUTER_COLLECTOR_*_TIMEOUT_S``,
      :class:`HeaderDeadline`); JSON deeper than 32 levels is a 400 naming the field.
    * CORS: credentials only for ``LEADROUTER_CORS_ORIGINS``; other origins get ``*``.

Privacy
    * ``DNT: 1`` or ``Sec-GPC: 1`` on the anonymous web pixel (``/t/p.gif``)
      and the Snowplow GET pixel without a ``uid``: the GIF, but no cookie and
      no event (counted in ``leadrouter_collector_privacy_total``).  On a form
      post they stop a new visitor cookie being set.
    * A form posted with ``consent=false`` is recorded (``fields.consent =
      "false"`` marks it so the worker and the email sender must not track or
      market to the person), but no visitor cookie is set and the browser's
      visitor id is not attached, so earlier anonymous browsing is not joined
      to the person.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.asyncio import Redis
from yarl import URL

from models import Event, EventType
from router import metrics
from router.errors import TokenError
from router.ingest.machine import Verdict, classify_email_hit, classify_web_hit, network_of, parse_ip
from router.ingest.segment import (
    CALLS,
    FORM_ID_RE,
    MAX_BATCH_BYTES,
    MAX_FIELD,
    MAX_MESSAGE_BYTES,
    MAX_TEXT,
    MESSAGE_TYPES,
    Deduper,
    IngestContext,
    IngestError,
    MessageDeduper,
    MessageError,
    basic_auth_user,
    check_depth,
    check_encoding,
    clean_url,
    normalise_event_name,
    parse_object,
    split_messages,
    utm_from,
    valid_email,
)
from router.ingest.segment import map_message as map_segment_message
from router.ingest.snowplow import MAX_BODY_BYTES as SNOWPLOW_MAX_BODY
from router.ingest.snowplow import Ignored, payload_events, stringify
from router.ingest.snowplow import map_event as map_snowplow_event
from router.ingest.spool import KafkaForwarder, Spool, SpoolFull, SpoolSink
from router.settings import IngestSettings, Network, Settings, SpoolSettings, TokenSettings
from router.storage.kafka import EventSink, ProduceError
from router.storage.redis import create_redis
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
VISITOR_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
FORM_TEXT_FIELDS = ("first_name", "last_name", "name", "company", "job_title", "country", "region", "phone")
TRUE_WORDS = {"1", "true", "yes", "on", "y"}
FALSE_WORDS = {"0", "false", "no", "off", "n", ""}
SPOOL_FULL = "spool_full"
INVALID_LINK_PAGE = (
    "This link is invalid or has expired.\n\n"
    "It may have been copied incompletely from the email. Open the link from the original email again.\n"
)


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    value: Any
    problem: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "value": _echo(self.value), "problem": self.problem, "fix": self.fix}


MAX_ECHO_BYTES = 512


def _echo(value: Any) -> Any:
    """``value`` as a 422 may show it: as sent when it serialises to a short JSON value, else a note."""
    try:
        size = len(orjson.dumps(value))
    except (orjson.JSONEncodeError, TypeError):
        return f"(a {type(value).__name__} that cannot be shown)"
    if size <= MAX_ECHO_BYTES:
        return value
    if isinstance(value, str):
        return value[:40] + "…"
    return f"(a {type(value).__name__} of {size} bytes, not shown)"


def new_visitor_id() -> str:
    return uuid.uuid4().hex


def privacy_signal(request: web.Request) -> str | None:
    """``dnt`` or ``gpc`` when the browser asks not to be tracked."""
    if request.headers.get("DNT", "").strip() == "1":
        return "dnt"
    if request.headers.get("Sec-GPC", "").strip() == "1":
        return "gpc"
    return None


def _valid_ip(value: str | None) -> str | None:
    addr = parse_ip(value)
    return str(addr) if addr is not None else None


def client_ip(request: web.Request, trusted_proxies: Sequence[Network] = ()) -> str | None:
    """The client's address, always a valid IP address (or None when the peer has none).

    ``X-Forwarded-For`` is believed only when the direct peer is in ``trusted_proxies``
    (LEADROUTER_TRUSTED_PROXIES): then the right-most listed address that is not itself a
    trusted proxy is the client's.  Anything else in the header is the client's own say and
    ignored; an entry that is not an IP address where the client's should be falls back to
    the peer address.
    """
    peer = _valid_ip(request.remote)
    if peer is None or not trusted_proxies or network_of(peer, trusted_proxies) is None:
        return peer
    hops = [hop.strip() for line in request.headers.getall("X-Forwarded-For", ()) for hop in line.split(",")]
    client = peer
    for hop in reversed(hops):
        addr = _valid_ip(hop)
        if addr is None:
            return peer
        client = addr
        if network_of(addr, trusted_proxies) is None:
            return addr
    return client  # every hop is a trusted proxy: the first one is the client


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


# Compressed bytes may exceed the decoded limit by a little (headers, incompressible data), no more.
COMPRESSED_SLACK = 1024


class BodyDecoder:
    """Decodes a request body as it streams in, refusing (413) more than ``limit`` decoded bytes.

    The collector's aiohttp server does not decompress (``auto_decompress=False``): only a
    handler that reads a body decodes it, here, never producing more than ``limit + 1`` bytes
    whatever the compression ratio.  ``gzip``/``x-gzip`` (several members allowed) and
    ``deflate`` (zlib-wrapped, or raw as some clients send it); a stream that ends early or
    carries data after its end is a 400.
    """

    def __init__(self, encoding: str, limit: int, too_large: IngestError) -> None:
        self.encoding = encoding
        self.limit = limit
        self.too_large = too_large
        self.raw = 0
        self.buf = bytearray()
        self._inflater: Any = None  # zlib's decompress object for the current stream/member

    def feed(self, chunk: bytes) -> None:
        self.raw += len(chunk)
        if not self.encoding:
            self.buf += chunk
            if len(self.buf) > self.limit:
                raise self.too_large
            return
        if self.raw > self.limit + COMPRESSED_SLACK:
            raise self.too_large
        data = chunk
        while data:
            if self._inflater is None or self._inflater.eof:
                if self._inflater is not None and self.encoding != "gzip":
                    raise IngestError(400, "invalid_encoding", "the body has data after the end of its deflate stream")
                self._inflater = _inflater(self.encoding, data)
            self.buf += self._inflater.decompress(data, self.limit - len(self.buf) + 1)
            if len(self.buf) > self.limit:
                raise self.too_large
            data = self._inflater.unused_data if self._inflater.eof else self._inflater.unconsumed_tail

    def finish(self) -> bytes:
        if self.encoding and self._inflater is not None and not self._inflater.eof:
            raise IngestError(400, "invalid_encoding",
                              f"the {self.encoding} body is truncated: it ends before its compressed stream does")
        return bytes(self.buf)


def _inflater(encoding: str, first: bytes) -> Any:
    if encoding == "gzip":
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    # RFC 1950 (zlib) says "deflate"; some clients send a raw RFC 1951 stream instead.
    return zlib.decompressobj(wbits=zlib.MAX_WBITS if first[0] & 0x0F == 8 else -zlib.MAX_WBITS)


def body_timeout_error(timeout_s: float) -> IngestError:
    return IngestError(408, "body_timeout",
                       f"the request body did not arrive within {timeout_s:g} s; send the whole body at once")


async def read_limited(request: web.Request, limit: int, what: str, timeout_s: float = 0.0) -> bytes:
    """The decoded body, refusing (413) more than ``limit`` decoded bytes whether or not
    Content-Length says so, as soon as the decoded size passes it (see :class:`BodyDecoder`);
    408 when the body takes longer than ``timeout_s`` (0: no limit) to arrive."""
    encoding = check_encoding(request.headers.get("Content-Encoding"))
    too_large = IngestError(413, "payload_too_large", f"{what} is limited to {limit // 1024} KB ({limit} bytes)")
    if request.content_length is not None and request.content_length > limit + (COMPRESSED_SLACK if encoding else 0):
        raise too_large
    decoder = BodyDecoder(encoding, limit, too_large)
    try:
        async with asyncio.timeout(timeout_s if timeout_s > 0 else None):
            async for chunk in request.content.iter_chunked(64 * 1024):
                decoder.feed(chunk)
        return decoder.finish()
    except IngestError:
        raise
    except TimeoutError:
        raise body_timeout_error(timeout_s) from None
    except Exception as exc:  # zlib: not really gzip/deflate; aiohttp: the body ended early, ...
        raise IngestError(400, "invalid_encoding", f"the body could not be decoded: {exc}") from None


class Collector:
    def __init__(self, ingest: IngestSettings, tokens: TokenSettings, spool: SpoolSettings, sink: EventSink,
                 clock: Callable[[], float] = time.time, dedupe: Deduper | None = None, *,
                 topic: str) -> None:
        self.ingest = ingest
        self.tokens = tokens
        self.spool_retry_after_s = spool.retry_after_s
        self.topic = topic  # the events topic, for the produce-failure metric
        self.sink = sink
        self.clock = clock
        self.dedupe = dedupe
        self.networks = ingest.machine_networks
        self.trusted_proxies = ingest.trusted_proxies
        self.cors_origins = frozenset(ingest.cors_origins)
        self.body_timeout_s = ingest.collector_body_timeout_s
        self.write_keys = dict(ingest.segment_write_keys)
        self.form_events = frozenset(normalise_event_name(n) for n in ingest.segment_form_events)
        self.snowplow_app_ids = frozenset(ingest.snowplow_app_ids)

    # --- helpers ---------------------------------------------------------
    def _gif(self, visitor_id: str | None = None, set_cookie: bool = False) -> web.Response:
        resp = web.Response(body=GIF, headers=GIF_HEADERS)
        if set_cookie and visitor_id:
            self._set_cookie(resp, visitor_id)
        return resp

    def _set_cookie(self, resp: web.StreamResponse, visitor_id: str) -> None:
        resp.set_cookie(
            self.ingest.cookie_name, visitor_id, max_age=self.ingest.cookie_max_age_s, path="/",
            httponly=True, secure=self.ingest.cookie_secure,
            samesite="None" if self.ingest.cookie_secure else "Lax",
        )

    def _visitor(self, request: web.Request, endpoint: str) -> tuple[str, bool]:
        """(visitor id, minted): the cookie wins, then a ``vid`` parameter."""
        cookie = request.cookies.get(self.ingest.cookie_name)
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

    def _client_ip(self, request: web.Request) -> str | None:
        return client_ip(request, self.trusted_proxies)

    def _cors(self, request: web.Request, resp: web.StreamResponse) -> None:
        """Credentialed CORS only for LEADROUTER_CORS_ORIGINS; anonymous ``*`` for any other origin."""
        resp.headers["Vary"] = "Origin"
        origin = request.headers.get("Origin")
        if not origin:
            return
        if origin in self.cors_origins:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Credentials"] = "true"
        else:
            resp.headers["Access-Control-Allow-Origin"] = "*"

    def _flag(self, event: Event, verdict: Verdict) -> Event:
        if not verdict.score:
            return event
        metrics.MACHINE_FLAGGED.labels(event.type.value, verdict.kind).inc()
        return replace(event, machine=verdict.score, machine_reason=verdict.reason)

    async def _store(self, events: Sequence[Event], endpoint: str, *, beacon: bool = False) -> str:
        """Hand events to the sink: ``accepted``, ``spool_full`` or ``unavailable``.

        A ``beacon`` (pixel, open, click, Snowplow GET) answers once its event is
        written, not after the fsync: a pixel must never slow a page, and the
        written event already survives the collector process dying.  Forms and
        API calls wait until their events are durable.
        """
        if not events:
            return "accepted"
        try:
            send_many = getattr(self.sink, "send_many", None)
            if send_many is not None and beacon:
                await send_many(events, wait_durable=False)
            elif send_many is not None:
                await send_many(events)
            else:
                for event in events:
                    await self.sink.send(event)
        except SpoolFull as exc:
            metrics.SPOOL_REFUSED.labels(endpoint).inc(len(events))
            log.error("%s: refused %d events: %s", endpoint, len(events), exc)
            return SPOOL_FULL
        except ProduceError as exc:
            metrics.PRODUCE_FAILURES.labels(self.topic).inc()
            log.error("%s", exc)
            return "unavailable"
        return "accepted"

    async def _produce(self, event: Event, endpoint: str, *, beacon: bool = False) -> str:
        return await self._store([event], endpoint, beacon=beacon)

    def _unavailable(self, request: web.Request, outcome: str, body: Mapping[str, Any] | None = None) -> web.Response:
        retry = str(self.spool_retry_after_s) if outcome == SPOOL_FULL else "5"
        detail = ("the collector's local spool is full while the event store is unreachable; retry later"
                  if outcome == SPOOL_FULL else "the event store is unreachable; retry shortly")
        payload = dict(body) if body is not None else {"error": "unavailable", "detail": detail}
        return self._json(request, 503, payload, headers={"Retry-After": retry})

    def _user_agent(self, request: web.Request) -> str | None:
        return (request.headers.get("User-Agent") or "")[:MAX_TEXT] or None

    # --- endpoints -------------------------------------------------------
    async def pixel(self, request: web.Request) -> web.Response:
        endpoint = "pixel"
        try:
            signal = privacy_signal(request)
            if signal is not None:
                metrics.PRIVACY_SKIPPED.labels(endpoint, signal).inc()
                metrics.COLLECTOR_REQUESTS.labels(endpoint, "not_tracked").inc()
                return self._gif()
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
            ua, ip = self._user_agent(request), self._client_ip(request)
            event = Event(
                event_id=uuid.uuid4().hex, type=EventType.PAGE_VIEW, ts=self.clock(), source="pixel",
                visitor_id=vid, url=url, referrer=referrer, title=title, utm=utm_from(q, url),
                user_agent=ua, ip=ip,
            )
            event = self._flag(event, classify_web_hit(ua, ip, self.networks,
                                                       browser_expected=self.ingest.machine_flag_http_clients))
            metrics.COLLECTOR_REQUESTS.labels(endpoint, await self._produce(event, endpoint, beacon=True)).inc()
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
                claims = verify_token(self.tokens.secret, token, now=self.clock())
            except TokenError as exc:
                metrics.COLLECTOR_INVALID.labels(endpoint, "token").inc()
                metrics.COLLECTOR_REQUESTS.labels(endpoint, "rejected").inc()
                log.info("email open: %s", exc)
                return self._gif()
            if claims.kind != "open":
                metrics.COLLECTOR_INVALID.labels(endpoint, "token").inc()
                metrics.COLLECTOR_REQUESTS.labels(endpoint, "rejected").inc()
                return self._gif()
            now = self.clock()
            ua, ip = self._user_agent(request), self._client_ip(request)
            event = Event(
                event_id=uuid.uuid4().hex, type=EventType.EMAIL_OPEN, ts=now, source="email",
                email=claims.email, campaign=claims.campaign, user_agent=ua, ip=ip,
            )
            event = self._flag(event, classify_email_hit(
                "open", ua, ip, sent_at=claims.sent_at, now=now, min_delay_s=self.ingest.machine_open_delay_s,
                networks=self.networks))
            metrics.COLLECTOR_REQUESTS.labels(endpoint, await self._produce(event, endpoint, beacon=True)).inc()
            return self._gif()
        except Exception:
            log.exception("email open: unexpected error")
            metrics.COLLECTOR_REQUESTS.labels(endpoint, "error").inc()
            return self._gif()

    def _invalid_link(self) -> web.Response:
        return web.Response(status=400, text=INVALID_LINK_PAGE, content_type="text/plain",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                     "X-Content-Type-Options": "nosniff"})

    async def email_click(self, request: web.Request) -> web.StreamResponse:
        """302 to the URL signed inside a click token; never to anything a request carries."""
        endpoint = "email_click"
        token = request.match_info.get("token", "")
        try:
            claims = verify_token(self.tokens.secret, token, now=self.clock())
        except (TokenError, ValueError, TypeError, UnicodeError) as exc:
            metrics.COLLECTOR_INVALID.labels(endpoint, "token").inc()
            metrics.COLLECTOR_REQUESTS.labels(endpoint, "rejected").inc()
            log.info("email click: %s", exc)
            return self._invalid_link()
        target, ok = clean_url(claims.url)
        location = _ascii_url(target) if ok and target else None
        if claims.kind != "click" or not ok or target is None or location is None:
            metrics.COLLECTOR_INVALID.labels(endpoint, "token" if claims.kind != "click" else "url").inc()
            metrics.COLLECTOR_REQUESTS.labels(endpoint, "rejected").inc()
            return self._invalid_link()
        try:
            now = self.clock()
            ua, ip = self._user_agent(request), self._client_ip(request)
            event = Event(
                event_id=uuid.uuid4().hex, type=EventType.EMAIL_CLICK, ts=now, source="email",
                email=claims.email, campaign=claims.campaign, url=target, utm=utm_from({}, target),
                user_agent=ua, ip=ip,
            )
            event = self._flag(event, classify_email_hit(
                "click", ua, ip, sent_at=claims.sent_at, now=now, min_delay_s=self.ingest.machine_open_delay_s,
                networks=self.networks, browser_expected=self.ingest.machine_flag_http_clients))
            outcome = await self._produce(event, endpoint, beacon=True)
        except Exception:  # the reader still gets to the page
            log.exception("email click: unexpected error")
            outcome = "error"
        metrics.COLLECTOR_REQUESTS.labels(endpoint, outcome).inc()
        # The token must not leak to the destination in a Referer header.
        return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store",
                                                 "Referrer-Policy": "no-referrer"})

    async def form(self, request: web.Request) -> web.Response:
        endpoint = "form"
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            metrics.COLLECTOR_REQUESTS.labels(endpoint, "too_large").inc()
            return self._json(request, 413, {"error": "payload_too_large",
                                             "detail": f"form posts are limited to {MAX_FORM_BYTES} bytes"})
        try:
            data = await self._form_body(request)
        except IngestError as exc:  # over the limit while reading, or a body that does not decode
            if exc.status not in (408, 413):
                metrics.COLLECTOR_INVALID.labels(endpoint, "body").inc()
            metrics.COLLECTOR_REQUESTS.labels(endpoint, _outcome(exc)).inc()
            return self._json(request, exc.status, {"error": exc.code, "detail": exc.message})
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
        vid: str | None
        vid, minted = self._visitor(request, endpoint)
        if isinstance(data.get("vid"), str) and VISITOR_RE.match(data["vid"]) and minted:
            vid = data["vid"]
        may_set_cookie = minted
        if fields.get("consent") == "false":
            # Recorded, but not joined to the browser's history, and no cookie.
            metrics.PRIVACY_SKIPPED.labels(endpoint, "consent_false").inc()
            vid, may_set_cookie = None, False
        else:
            signal = privacy_signal(request)
            if signal is not None:
                metrics.PRIVACY_SKIPPED.labels(endpoint, signal).inc()
                if minted and vid is not None and request.query.get("vid") != vid and data.get("vid") != vid:
                    vid = None  # a fresh random id without a cookie would identify nothing
                may_set_cookie = False
        page_url, _ = clean_url(data.get("url") if isinstance(data.get("url"), str) else
                                request.headers.get("Referer"))
        form_id = fields.pop("form_id")
        email = fields.pop("email")
        ua, ip = self._user_agent(request), self._client_ip(request)
        event = Event(
            event_id=uuid.uuid4().hex, type=EventType.FORM_FILL, ts=self.clock(), source="form",
            visitor_id=vid, email=email, form_id=form_id, fields=fields, url=page_url,
            utm=utm_from({k: v for k, v in data.items() if isinstance(v, str)}, page_url),
            user_agent=ua, ip=ip,
        )
        event = self._flag(event, classify_web_hit(ua, ip, self.networks, browser_expected=False))
        outcome = await self._produce(event, endpoint)
        metrics.COLLECTOR_REQUESTS.labels(endpoint, outcome).inc()
        if outcome != "accepted":
            return self._unavailable(request, outcome)
        resp = self._json(request, 202, {"accepted": True, "event_id": event.event_id, "visitor_id": vid})
        if may_set_cookie and vid is not None:
            self._set_cookie(resp, vid)
        return resp

    async def _form_body(self, request: web.Request) -> dict[str, Any]:
        ctype = request.content_type
        if ctype not in ("application/json", "application/x-www-form-urlencoded", "multipart/form-data"):
            raise ValueError(f"unsupported Content-Type {ctype!r}; send application/x-www-form-urlencoded or "
                             "application/json")
        if ctype == "multipart/form-data":
            return await self._multipart_fields(request)
        raw = await read_limited(request, MAX_FORM_BYTES, "a form post", self.body_timeout_s)
        if ctype == "application/json":
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"body is not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise ValueError("JSON body must be an object of form fields")
            check_depth(data)
            return data
        try:
            text = raw.decode(request.charset or "utf-8")
        except (UnicodeDecodeError, LookupError) as exc:
            raise ValueError(f"form body is not valid text: {exc}") from None
        return dict(parse_qsl(text, keep_blank_values=True))

    async def _multipart_fields(self, request: web.Request) -> dict[str, Any]:
        """Text fields of a multipart form, counting every byte against the form limit; files are ignored."""
        too_large = IngestError(413, "payload_too_large",
                                f"a form post is limited to {MAX_FORM_BYTES // 1024} KB ({MAX_FORM_BYTES} bytes)")
        encoding = check_encoding(request.headers.get("Content-Encoding"))
        out: dict[str, Any] = {}
        seen = 0
        timeout_s = self.body_timeout_s
        try:
            async with asyncio.timeout(timeout_s if timeout_s > 0 else None):
                if encoding:  # decoded (bounded) first, then parsed from memory
                    body = await read_limited(request, MAX_FORM_BYTES, "a form post")
                    content = StreamReader(request.protocol, 2 * MAX_FORM_BYTES, loop=asyncio.get_running_loop())
                    content.feed_data(body)
                    content.feed_eof()
                    reader = MultipartReader(request.headers, content)
                else:
                    reader = await request.multipart()
                async for part in reader:
                    if not isinstance(part, BodyPartReader):
                        continue
                    buf = bytearray()
                    while chunk := await part.read_chunk(8192):
                        seen += len(chunk)
                        if seen > MAX_FORM_BYTES:
                            raise too_large
                        buf += chunk
                    if part.name and part.filename is None:
                        out[part.name] = buf.decode(part.get_charset("utf-8"), errors="replace")
        except IngestError:
            raise
        except TimeoutError:
            raise body_timeout_error(timeout_s) from None
        except Exception as exc:  # the decoder or multipart parser: not decodable as sent
            raise IngestError(400, "invalid_encoding", f"the multipart body could not be read: {exc}") from None
        return out

    def _json(self, request: web.Request, status: int, body: Mapping[str, Any],
              headers: Mapping[str, str] | None = None) -> web.Response:
        resp = web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                            headers=headers)
        if status == 408:  # a body too slow to arrive: do not wait for more on this connection
            resp.force_close()
        self._cors(request, resp)
        return resp

    # --- SDK ingest --------------------------------------------------------
    async def _accept_sdk(self, api: str, endpoint: str, events: list[Event]) -> str:
        """De-duplicate by sender message id, store; the storage outcome."""
        keyed = [e for e in events if e.message_id]
        firsts = iter(await self.dedupe.claim([e.event_id for e in keyed]) if self.dedupe is not None and keyed
                      else [True] * len(keyed))
        claimed: list[str] = []
        fresh: list[Event] = []
        seen_here: set[str] = set()
        for e in events:
            if e.message_id:
                first = next(firsts)
                if first:
                    claimed.append(e.event_id)
                if not first or e.event_id in seen_here:
                    metrics.SDK_MESSAGES.labels(api, e.type.value, "duplicate").inc()
                    continue
                seen_here.add(e.event_id)
            fresh.append(e)
        outcome = await self._store(fresh, endpoint)
        if outcome != "accepted":
            if self.dedupe is not None:
                await self.dedupe.release(claimed)
            for e in fresh:
                metrics.SDK_MESSAGES.labels(api, e.type.value, "refused").inc()
            return outcome
        for e in fresh:
            metrics.SDK_MESSAGES.labels(api, e.type.value, "accepted").inc()
            if e.machine:
                metrics.MACHINE_FLAGGED.labels(e.type.value, (e.machine_reason or "none").split(":", 1)[0]).inc()
        return outcome

    def _sdk_error(self, request: web.Request, endpoint: str, exc: IngestError, outcome: str) -> web.Response:
        metrics.COLLECTOR_REQUESTS.labels(endpoint, outcome).inc()
        return self._json(request, exc.status, exc.body())

    async def segment(self, request: web.Request) -> web.Response:
        endpoint = "segment"
        call = CALLS.get(request.match_info.get("call", ""))
        if call is None:
            raise web.HTTPNotFound(text="unknown Segment call; use /v1/identify, track, page, screen, group, "
                                        "alias or batch\n")
        if not self.write_keys:
            return self._sdk_error(request, endpoint, IngestError(
                401, "api_disabled", "the Segment-compatible API is off: set LEADROUTER_SEGMENT_WRITE_KEYS to the "
                                     "write keys to accept (comma-separated)"), "unauthorized")
        header_key = basic_auth_user(request.headers.get("Authorization"))
        if header_key is not None and header_key not in self.write_keys:
            return self._sdk_error(request, endpoint, _bad_key(), "unauthorized")
        limit = MAX_BATCH_BYTES if call == "batch" else MAX_MESSAGE_BYTES
        what = "a batch request" if call == "batch" else "a message"
        try:
            body = await read_limited(request, limit, what, self.body_timeout_s)
            data = parse_object(body)
        except IngestError as exc:
            metrics.COLLECTOR_INVALID.labels(endpoint, "body").inc()
            return self._sdk_error(request, endpoint, exc, _outcome(exc))
        write_key = header_key
        if write_key is None:
            body_key = data.get("writeKey")
            write_key = body_key if isinstance(body_key, str) and body_key in self.write_keys else None
        if write_key is None:
            return self._sdk_error(request, endpoint, _bad_key(), "unauthorized")
        try:
            messages = split_messages(call, data, len(body))
        except IngestError as exc:
            metrics.COLLECTOR_INVALID.labels(endpoint, "batch").inc()
            return self._sdk_error(request, endpoint, exc, _outcome(exc))
        ctx = IngestContext(write_key=write_key, source=self.write_keys[write_key], received_at=self.clock(),
                            request_ip=self._client_ip(request), request_user_agent=self._user_agent(request),
                            form_events=self.form_events, networks=self.networks)
        events: list[Event] = []
        for msg in messages:
            try:
                mapped = map_segment_message(msg, ctx)
            except MessageError as exc:
                metrics.COLLECTOR_INVALID.labels(endpoint, exc.field).inc()
                mtype = msg.get("type")
                metrics.SDK_MESSAGES.labels("segment", mtype if mtype in MESSAGE_TYPES else "unknown",
                                            "invalid").inc()
                if call != "batch":
                    return self._sdk_error(request, endpoint, IngestError(400, "invalid_message", exc.message),
                                           "invalid")
                log.info("segment: skipped message %s of a batch: %s", msg.get("_index"), exc.message)
                continue
            for name in mapped.dropped:
                metrics.COLLECTOR_INVALID.labels(endpoint, name).inc()
            events.append(mapped.event)
        outcome = await self._accept_sdk("segment", endpoint, events)
        metrics.COLLECTOR_REQUESTS.labels(endpoint, outcome).inc()
        if outcome != "accepted":
            return self._unavailable(request, outcome, {
                "success": False, "code": "unavailable",
                "message": "the collector cannot store events right now; retry later"})
        return self._json(request, 200, {"success": True})

    def _snowplow_context(self, request: web.Request) -> IngestContext:
        return IngestContext(write_key="", source="snowplow", received_at=self.clock(),
                             request_ip=self._client_ip(request), request_user_agent=self._user_agent(request),
                             form_events=self.form_events, networks=self.networks,
                             flag_http_clients=self.ingest.machine_flag_http_clients)

    def _snowplow_map(self, params: Mapping[str, Any], ctx: IngestContext, endpoint: str) -> Event | None:
        try:
            aid = params.get("aid")
            if self.snowplow_app_ids and aid not in self.snowplow_app_ids:
                raise Ignored("app_id")
            mapped = map_snowplow_event(params, ctx)
        except Ignored as exc:
            metrics.SDK_MESSAGES.labels("snowplow", _snowplow_type(params), "ignored").inc()
            metrics.COLLECTOR_INVALID.labels(endpoint, f"ignored_{exc.kind}").inc()
            return None
        except MessageError as exc:
            metrics.SDK_MESSAGES.labels("snowplow", _snowplow_type(params), "invalid").inc()
            metrics.COLLECTOR_INVALID.labels(endpoint, exc.field).inc()
            log.info("snowplow: skipped an event: %s", exc.message)
            return None
        for name in mapped.dropped:
            metrics.COLLECTOR_INVALID.labels(endpoint, name).inc()
        return mapped.event

    async def snowplow_pixel(self, request: web.Request) -> web.Response:
        endpoint = "snowplow_get"
        try:
            if not self.ingest.snowplow_enabled:
                metrics.COLLECTOR_REQUESTS.labels(endpoint, "disabled").inc()
                return self._gif()
            params = {k: request.query.get(k) for k in request.query}
            signal = privacy_signal(request)
            if signal is not None and not params.get("uid"):
                metrics.PRIVACY_SKIPPED.labels(endpoint, signal).inc()
                metrics.COLLECTOR_REQUESTS.labels(endpoint, "not_tracked").inc()
                return self._gif()
            event = self._snowplow_map(params, self._snowplow_context(request), endpoint)
            outcome = await self._accept_sdk("snowplow", endpoint, [event]) if event is not None else "ignored"
            metrics.COLLECTOR_REQUESTS.labels(endpoint, outcome).inc()
        except Exception:  # a pixel must never break a page
            log.exception("snowplow pixel: unexpected error")
            metrics.COLLECTOR_REQUESTS.labels(endpoint, "error").inc()
        return self._gif()

    async def snowplow_post(self, request: web.Request) -> web.Response:
        endpoint = "snowplow_post"
        if not self.ingest.snowplow_enabled:
            return self._sdk_error(request, endpoint, IngestError(
                404, "api_disabled", "the Snowplow endpoint is off: set LEADROUTER_SNOWPLOW_ENABLED=1"), "disabled")
        try:
            body = await read_limited(request, SNOWPLOW_MAX_BODY, "a Snowplow payload", self.body_timeout_s)
            items = payload_events(parse_object(body))
        except IngestError as exc:
            metrics.COLLECTOR_INVALID.labels(endpoint, "body").inc()
            return self._sdk_error(request, endpoint, exc, _outcome(exc))
        ctx = self._snowplow_context(request)
        events: list[Event] = []
        for item in items:
            if not isinstance(item, dict):
                metrics.COLLECTOR_INVALID.labels(endpoint, "event").inc()
                continue
            event = self._snowplow_map(stringify(item), ctx, endpoint)
            if event is not None:
                events.append(event)
        outcome = await self._accept_sdk("snowplow", endpoint, events)
        metrics.COLLECTOR_REQUESTS.labels(endpoint, outcome).inc()
        if outcome != "accepted":
            return self._unavailable(request, outcome)
        resp = web.Response(status=200, text="ok", content_type="text/plain")
        self._cors(request, resp)
        return resp

    # --- misc --------------------------------------------------------------
    async def preflight(self, request: web.Request) -> web.Response:
        resp = web.Response(status=204)
        self._cors(request, resp)
        resp.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        resp.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization, Content-Encoding"
        resp.headers["Access-Control-Max-Age"] = "86400"
        return resp

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def metrics_page(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(metrics.REGISTRY))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp


def _ascii_url(url: str) -> str | None:
    """The URL as it goes into a Location header: IDNA host, percent-encoded path (None if unusable)."""
    try:
        out = str(URL(url))
    except (ValueError, UnicodeError):
        return None
    return out if out.isascii() and out.startswith(("http://", "https://")) else None


_SNOWPLOW_TYPES = frozenset({"pv", "pp", "se", "ue", "tr", "ti", "ad"})


def _snowplow_type(params: Mapping[str, Any]) -> str:
    """The tracker's event type as a metric label (bounded: unknown values are "unknown")."""
    e = params.get("e")
    return e if isinstance(e, str) and e in _SNOWPLOW_TYPES else "unknown"


def _outcome(exc: IngestError) -> str:
    """The ``leadrouter_collector_requests_total`` outcome of a refused body."""
    return {413: "too_large", 408: "timeout"}.get(exc.status, "invalid")


class HeaderDeadline(asyncio.Protocol):
    """aiohttp's per-connection protocol, with a deadline for a request's line and headers.

    A connection must send a complete request head within ``timeout_s`` of connecting, or of
    the first byte of a further request on a kept-alive connection; otherwise it is closed
    (slowloris).  While a request is being handled the clock is stopped (the body has its own
    timeout in :func:`read_limited`); an idle kept-alive connection is closed by aiohttp's
    ``keepalive_timeout``.  The ``header_deadline`` middleware reports request starts and ends.
    """

    def __init__(self, inner: RequestHandler, timeout_s: float, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self.loop = loop
        self._busy = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if data and not self._busy and self._timer is None:
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> None:
        self.inner.eof_received()  # None: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def request_started(self) -> None:
        self._busy += 1
        self._cancel()

    def request_done(self) -> None:
        self._busy -= 1

    def _arm(self) -> None:
        if self.timeout_s > 0:
            self._timer = self.loop.call_later(self.timeout_s, self._expire)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._busy:
            return
        metrics.COLLECTOR_INVALID.labels("connection", "header_timeout").inc()
        log.info("closed a connection that sent no complete request head within %g s (peer %s)",
                 self.timeout_s, self.inner.peername)
        self.inner.force_close()


@web.middleware
async def header_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    transport = request.transport
    proto = transport.get_protocol() if transport is not None else None
    if not isinstance(proto, HeaderDeadline):
        return await handler(request)
    proto.request_started()
    try:
        return await handler(request)
    finally:
        proto.request_done()


def _bad_key() -> IngestError:
    return IngestError(401, "invalid_write_key",
                       "unknown write key: send one of LEADROUTER_SEGMENT_WRITE_KEYS as the Basic-auth user name "
                       "or as \"writeKey\" in the body")


@web.middleware
async def timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    try:
        return await handler(request)
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        metrics.COLLECTOR_LATENCY.labels(name).observe(time.perf_counter() - start)


def create_app(settings: Settings, sink: EventSink, clock: Callable[[], float] = time.time, *,
               dedupe: Deduper | None = None) -> web.Application:
    c = Collector(settings.ingest, settings.tokens, settings.spool, sink, clock, dedupe,
                  topic=settings.kafka.topic_events)
    # The server never decompresses a body itself: handlers that read one decode it, bounded, in
    # read_limited; a bomb sent to any other route costs nothing.  keepalive_timeout: the idle timeout.
    app = web.Application(middlewares=[header_deadline, timing], client_max_size=MAX_FORM_BYTES * 2,
                          handler_args={"auto_decompress": False,
                                        "keepalive_timeout": settings.ingest.collector_idle_timeout_s})
    app.router.add_get("/t/p.gif", c.pixel)
    app.router.add_get("/t/o/{token}.gif", c.email_open)
    app.router.add_get("/t/c/{token}", c.email_click)
    app.router.add_post("/t/form", c.form)
    app.router.add_route("OPTIONS", "/t/form", c.preflight)
    app.router.add_post("/v1/{call}", c.segment)
    app.router.add_route("OPTIONS", "/v1/{call}", c.preflight)
    app.router.add_get("/i", c.snowplow_pixel)
    app.router.add_get("/ice.png", c.snowplow_pixel)
    app.router.add_post("/com.snowplowanalytics.snowplow/tp2", c.snowplow_post)
    app.router.add_route("OPTIONS", "/com.snowplowanalytics.snowplow/tp2", c.preflight)
    app.router.add_get("/healthz", c.health)
    app.router.add_get("/metrics", c.metrics_page)
    return app


class CollectorService:
    """The collector with its spool, forwarder and Redis de-duplicator, on a TCP port.

    ``leadrouter collector`` runs one; the integration tests start one in-process.
    """

    def __init__(self, settings: Settings, *, drain_timeout_s: float = 5.0) -> None:
        self.settings = settings
        self.drain_timeout_s = drain_timeout_s
        self.spool = Spool.from_settings(settings.spool)
        self.forwarder = KafkaForwarder(settings.kafka, settings.spool, self.spool)
        self._forward_stop = asyncio.Event()
        self._forward_task: asyncio.Task[None] | None = None
        self._redis: Redis | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    async def start(self) -> None:
        self.spool.open()
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await self.spool.start()
        self._forward_task = asyncio.create_task(self.forwarder.run(self._forward_stop), name="spool-forwarder")
        self._redis = create_redis(self.settings.redis, role="collector")
        dedupe = MessageDeduper(self._redis, self.settings.ingest.message_dedupe_ttl_s)
        app = create_app(self.settings, SpoolSink(self.spool), dedupe=dedupe)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        ingest = self.settings.ingest
        server = self._runner.server
        assert server is not None
        # Like web.TCPSite, but each connection's protocol is wrapped in a request-head deadline.
        loop = asyncio.get_running_loop()
        header_timeout_s = ingest.collector_header_timeout_s
        self._listener = await loop.create_server(
            lambda: HeaderDeadline(server(), header_timeout_s, loop),
            ingest.collector_host, ingest.collector_port, backlog=1024)
        log.info("collector listening on http://%s:%d (spool %s)", ingest.collector_host,
                 ingest.collector_port, self.settings.spool.dir)

    async def stop(self) -> None:
        """Stop taking requests, give the forwarder a moment to drain, keep the rest spooled."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._forward_task is not None:
            if not await self.forwarder.drain(self.drain_timeout_s):
                log.warning("collector stopping with %d events spooled; they are sent after the next start",
                            self.spool.pending)
            self._forward_stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._forward_task), 15.0)
            except TimeoutError:
                self._forward_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._forward_task
            self._forward_task = None
        await self.spool.close()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the collector until ``stop`` is set (or forever)."""
    service = CollectorService(settings)
    await service.start()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await service.stop()
