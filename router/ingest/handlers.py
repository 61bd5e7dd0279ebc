"""The collector's request handlers: one method per endpoint, each turning a hit into events.

:class:`Collector` is what :func:`router.ingest.app.create_app` routes to.  What a
request carries is read with :mod:`router.ingest.request`; what a Segment or Snowplow
call means is decided in :mod:`router.ingest.segment` and :mod:`router.ingest.snowplow`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.streams import StreamReader
from yarl import URL

from models import Event, EventType
from router import metrics
from router.errors import TokenError
from router.ingest.machine import Verdict, classify_email_hit, classify_web_hit, form_trust
from router.ingest.ratelimit import ALLOW, Decision, RateLimiter, checks_for
from router.ingest.request import (
    GIF,
    GIF_HEADERS,
    INVALID_LINK_PAGE,
    MAX_FORM_BYTES,
    SPOOL_FULL,
    VISITOR_RE,
    body_timeout_error,
    client_ip,
    cookie_value,
    honeypot_filled,
    load_disposable_domains,
    new_event_id,
    new_visitor_id,
    parse_form,
    privacy_signal,
    read_limited,
)
from router.ingest.segment import (
    CALLS,
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_TEXT,
    MESSAGE_TYPES,
    Deduper,
    IngestContext,
    IngestError,
    MessageError,
    basic_auth_user,
    check_depth,
    check_encoding,
    clean_url,
    normalise_event_name,
    parse_object,
    split_messages,
    utm_from,
)
from router.ingest.segment import map_message as map_segment_message
from router.ingest.snowplow import MAX_BODY_BYTES as SNOWPLOW_MAX_BODY
from router.ingest.snowplow import Ignored, payload_events, stringify
from router.ingest.snowplow import map_event as map_snowplow_event
from router.ingest.spool import SpoolFull
from router.settings import IngestSettings, SpoolSettings, TokenSettings
from router.storage.kafka import EventSink, ProduceError
from router.storage.pii import PiiKeysUnavailable, SealError, Vault
from router.tokens import verify_token

log = logging.getLogger(__name__)

class Collector:
    def __init__(self, ingest: IngestSettings, tokens: TokenSettings, spool: SpoolSettings, sink: EventSink,
                 clock: Callable[[], float] = time.time, dedupe: Deduper | None = None, *,
                 topic: str, limiter: RateLimiter | None = None, vault: Vault | None = None) -> None:
        self.ingest = ingest
        # Pseudonymises ids, truncates IPs and seals identified events before the sink sees them;
        # drops forgotten people's events.  None only in tests of request parsing.
        self.vault = vault
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
        self.limiter = limiter if limiter is not None else RateLimiter(None, ingest.rate_limit_window_s, clock=clock)
        self.honeypots = tuple(ingest.form_honeypot_fields)
        self.disposable = load_disposable_domains(ingest.disposable_domains_file)
        self._cookie_head, self._cookie_tail = self._cookie_template()
        self._requests: dict[tuple[str, str], Any] = {}  # bound children of COLLECTOR_REQUESTS

    def _count(self, endpoint: str, outcome: str) -> None:
        """``leadrouter_collector_requests_total{endpoint, outcome}`` += 1, the labelled child bound once."""
        child = self._requests.get((endpoint, outcome))
        if child is None:
            child = self._requests[(endpoint, outcome)] = metrics.COLLECTOR_REQUESTS.labels(endpoint, outcome)
        child.inc()

    # --- helpers ---------------------------------------------------------
    def _gif(self, visitor_id: str | None = None, set_cookie: bool = False) -> web.Response:
        resp = web.Response(body=GIF, headers=GIF_HEADERS)
        if set_cookie and visitor_id:
            self._set_cookie(resp, visitor_id)
        return resp

    def _cookie_template(self) -> tuple[str, str]:
        """The visitor cookie's ``Set-Cookie`` value around its id, rendered once by :mod:`http.cookies`
        (as ``StreamResponse.set_cookie`` would); a visitor id matches VISITOR_RE, so it never needs quoting."""
        placeholder = "VISITORID"
        jar: SimpleCookie = SimpleCookie()
        jar[self.ingest.cookie_name] = placeholder
        morsel = jar[self.ingest.cookie_name]
        morsel["max-age"] = str(self.ingest.cookie_max_age_s)
        morsel["path"] = "/"
        morsel["httponly"] = True
        if self.ingest.cookie_secure:
            morsel["secure"] = True
        morsel["samesite"] = "None" if self.ingest.cookie_secure else "Lax"
        head, _, tail = morsel.OutputString().partition(placeholder)
        return head, tail

    def _set_cookie(self, resp: web.StreamResponse, visitor_id: str) -> None:
        if not VISITOR_RE.match(visitor_id):  # never: every caller passes a checked or minted id
            msg = f"visitor id {visitor_id!r} is not a valid cookie value; it must match {VISITOR_RE.pattern}"
            raise ValueError(msg)
        resp.headers.add("Set-Cookie", f"{self._cookie_head}{visitor_id}{self._cookie_tail}")

    def _visitor(self, request: web.Request, endpoint: str) -> tuple[str, bool]:
        """(visitor id, minted): the cookie wins, then a ``vid`` parameter."""
        cookie = cookie_value(request, self.ingest.cookie_name)
        if cookie and VISITOR_RE.match(cookie):
            return cookie, False
        if cookie:
            metrics.COLLECTOR_INVALID.labels(endpoint, "cookie").inc()
        vid = request.query.get("vid")
        if vid and VISITOR_RE.match(vid):
            return vid, True
        if vid:
            metrics.COLLECTOR_INVALID.labels(endpoint, "vid").inc()
            log.info("ignored an invalid vid (%d characters)", len(vid))
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
        if self.vault is not None:
            try:
                events, dropped = await self.vault.protect(events)
            except PiiKeysUnavailable as exc:  # a Redis restart: accepted, sealed under the escrow key
                escrowed = sum(1 for e in events if e.email)
                events, dropped = self.vault.protect_in_escrow(events), []
                metrics.PII_ESCROWED.labels(endpoint).inc(escrowed)
                log.warning("%s: %d events with personal data sealed under the escrow key: %s", endpoint,
                            escrowed, exc)
            except SealError as exc:  # a data key that does not unwrap: another LEADROUTER_PII_KEY
                log.error("%s: refused %d events with personal data: %s", endpoint, len(events), exc)
                return "unavailable"
            if dropped:  # a forgotten person: counted, never stored; the client is not told
                metrics.FORGOTTEN_DROPPED.labels(endpoint).inc(len(dropped))
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

    async def _limit(self, kind: str, ip: str | None, visitor_id: str | None = None) -> Decision:
        """Count a request of endpoint class ``kind`` against its rate limits (router/ingest/ratelimit.py)."""
        checks = checks_for(self.ingest, kind, ip, visitor_id)
        if not checks:
            return ALLOW
        # Forms are counted in Redis before the answer; pixels and SDK calls never wait for it.
        return await self.limiter.hit(checks, ip=ip, batched=kind != "form")

    def _too_many(self, request: web.Request, endpoint: str, decision: Decision,
                  body: Mapping[str, Any] | None = None) -> web.Response:
        metrics.COLLECTOR_REQUESTS.labels(endpoint, "rate_limited").inc()
        payload = dict(body) if body is not None else {
            "error": "rate_limited",
            "detail": f"too many requests from this client; retry after {decision.retry_after_s} s"}
        return self._json(request, 429, payload, headers={"Retry-After": str(decision.retry_after_s)})

    def _user_agent(self, request: web.Request) -> str | None:
        return (request.headers.get("User-Agent") or "")[:MAX_TEXT] or None

    # --- endpoints -------------------------------------------------------
    async def pixel(self, request: web.Request) -> web.Response:
        endpoint = "pixel"
        try:
            signal = privacy_signal(request)
            if signal is not None:
                metrics.PRIVACY_SKIPPED.labels(endpoint, signal).inc()
                self._count(endpoint, "not_tracked")
                return self._gif()
            vid, minted = self._visitor(request, endpoint)
            q = request.query
            raw_url = q.get("url") or q.get("u") or request.headers.get("Referer")
            url, ok = clean_url(raw_url)
            if not ok:
                metrics.COLLECTOR_INVALID.labels(endpoint, "url").inc()
                log.info("pixel: ignored an invalid url (%d characters)", len(raw_url or ""))
            referrer, ok_ref = clean_url(q.get("ref") or q.get("r"))
            if not ok_ref:
                metrics.COLLECTOR_INVALID.labels(endpoint, "referrer").inc()
            title = (q.get("title") or q.get("t") or "")[:MAX_TEXT] or None
            ua, ip = self._user_agent(request), self._client_ip(request)
            counted = vid if not minted or q.get("vid") == vid else None  # not an id minted just now
            if not (await self._limit("pixel", ip, counted)).allowed:
                # Dropped, not flagged: a flood must not reach the spool, Kafka or the worker.
                self._count(endpoint, "rate_limited")
                return self._gif()
            # ``ping=1``: the snippet's heartbeat while the page is visible (time on site; the worker
            # bounds it by receive times, so a fast or endless pinger adds no more than real time, capped).
            kind = EventType.PAGE_PING if q.get("ping") == "1" else EventType.PAGE_VIEW
            event = Event(
                event_id=new_event_id(), type=kind, ts=self.clock(), source="pixel",
                visitor_id=vid, url=url, referrer=referrer, title=title, utm=utm_from(q, url),
                user_agent=ua, ip=ip,
            )
            event = self._flag(event, classify_web_hit(ua, ip, self.networks,
                                                       browser_expected=self.ingest.machine_flag_http_clients))
            self._count(endpoint, await self._produce(event, endpoint, beacon=True))
            return self._gif(vid, set_cookie=minted)
        except Exception:  # a pixel must never break a page
            log.exception("pixel: unexpected error")
            self._count(endpoint, "error")
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
                event_id=new_event_id(), type=EventType.EMAIL_OPEN, ts=now, source="email",
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
                event_id=new_event_id(), type=EventType.EMAIL_CLICK, ts=now, source="email",
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
        ip = self._client_ip(request)
        cookie = cookie_value(request, self.ingest.cookie_name)
        limited = await self._limit(endpoint, ip, cookie if cookie and VISITOR_RE.match(cookie) else None)
        if not limited.allowed:
            return self._too_many(request, endpoint, limited)
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
        referrer, _ = clean_url(data.get("ref") if isinstance(data.get("ref"), str) else None)
        form_id = fields.pop("form_id")
        email = fields.pop("email")
        ua = self._user_agent(request)
        if vid is not None and vid != cookie and vid in (request.query.get("vid"), data.get("vid")):
            # A visitor id sent in the query or body (not the cookie counted above) counts too.
            limited = await self._limit(endpoint, None, vid)
            if not limited.allowed:
                return self._too_many(request, endpoint, limited)
        honeypot = honeypot_filled(data, self.honeypots)
        trust, why = form_trust(ua, request.headers.get("Origin"), email, cors_origins=self.cors_origins,
                                disposable=self.disposable, honeypot=honeypot,
                                hot_ip=limited.hot_ip or self.limiter.is_hot(ip))
        for reason in why:
            metrics.FORM_SUSPICIOUS.labels(reason).inc()
        event = Event(
            event_id=new_event_id(), type=EventType.FORM_FILL, ts=self.clock(), source="form",
            visitor_id=vid, email=email, form_id=form_id, fields=fields, url=page_url, referrer=referrer,
            utm=utm_from({k: v for k, v in data.items() if isinstance(v, str)}, page_url),
            user_agent=ua, ip=ip, trust=trust, trust_reasons=",".join(why) or None,
        )
        event = self._flag(event, classify_web_hit(ua, ip, self.networks, browser_expected=False))
        if honeypot:  # spam: recorded, worth nothing, never a hand-raiser; the bot is not told
            event = replace(event, machine=1.0, machine_reason=",".join(
                ("honeypot", *(r for r in (event.machine_reason or "").split(",") if r))))
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
        limited = await self._limit("sdk", self._client_ip(request))
        if not limited.allowed:
            return self._too_many(request, endpoint, limited, {
                "success": False, "code": "rate_limited",
                "message": f"too many requests from this address; retry after {limited.retry_after_s} s"})
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
            duid = params.get("duid")
            if not (await self._limit("pixel", self._client_ip(request),
                                      duid if isinstance(duid, str) and duid else None)).allowed:
                metrics.COLLECTOR_REQUESTS.labels(endpoint, "rate_limited").inc()
                return self._gif()
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
        limited = await self._limit("sdk", self._client_ip(request))
        if not limited.allowed:
            return self._too_many(request, endpoint, limited)
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


def _bad_key() -> IngestError:
    return IngestError(401, "invalid_write_key",
                       "unknown write key: send one of LEADROUTER_SEGMENT_WRITE_KEYS as the Basic-auth user name "
                       "or as \"writeKey\" in the body")
