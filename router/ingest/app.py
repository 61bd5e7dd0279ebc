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
    * Rate limits per client address and visitor id, shared through Redis
      (:mod:`router.ingest.ratelimit`): forms and SDK calls get 429 with ``Retry-After``,
      pixels over the limit are dropped (the GIF still answered).
    * Form spam: a filled honeypot field (``LEADROUTER_FORM_HONEYPOT_FIELDS``) is accepted
      with 202 but flagged (trust 0, machine 1.0); every form fill carries a ``trust``
      (0..1) with reasons (:func:`router.ingest.machine.form_trust`): HTTP-library or empty
      user agents, no or another site's Origin, disposable email domains, a rate-limited
      address.  The worker holds a suspicious hand-raiser for review instead of alerting a rep.
    * ``/metrics`` is not on the public port (a 404 there): :class:`CollectorService` serves it
      on its own listener, ``LEADROUTER_COLLECTOR_METRICS_HOST``/``_PORT`` (default
      127.0.0.1:9108; port 0 serves none), for Prometheus on a private network.

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
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CollectorRegistry, Metric, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from router import metrics
from router.errors import CollectorError
from router.ingest.forwarder import KafkaForwarder
from router.ingest.handlers import Collector
from router.ingest.ratelimit import RateLimiter
from router.ingest.request import MAX_FORM_BYTES
from router.ingest.segment import (
    Deduper,
    MessageDeduper,
)
from router.ingest.snippet import snippet
from router.ingest.spool import Spool, SpoolSink
from router.settings import Settings
from router.storage.kafka import EventSink
from router.storage.pii import Vault
from router.storage.redis import AnyRedis, create_redis

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

class HeaderDeadline(asyncio.Protocol):
    """aiohttp's per-connection protocol, with a deadline for a request's line and headers.

    A connection must send a complete request head within ``timeout_s`` of connecting, or of
    the first byte of a further request on a kept-alive connection; otherwise it is closed
    (slowloris).  While a request is being handled the clock is stopped (the body has its own
    timeout in :func:`read_limited`); an idle kept-alive connection is closed by aiohttp's
    ``keepalive_timeout``.  The ``observe`` middleware reports request starts and ends.
    """

    def __init__(self, inner: RequestHandler, timeout_s: float, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self.loop = loop
        self._busy = 0
        # The running head's deadline (loop time; None: no head is being waited for), and the one timer
        # that checks it.  A timer outlives the request it was armed for: the next head moves the
        # deadline, not the timer, so a kept-alive connection costs a timer per timeout, not per request.
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if data and not self._busy and self._deadline is None:
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> None:
        self.inner.eof_received()  # None: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def request_started(self) -> None:
        self._busy += 1
        self._deadline = None

    def request_done(self) -> None:
        self._busy -= 1

    def _arm(self) -> None:
        if self.timeout_s > 0:
            self._deadline = self.loop.time() + self.timeout_s
            if self._timer is None:
                self._timer = self.loop.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if self._busy or deadline is None:
            return
        if deadline > self.loop.time():  # a later head than the one this timer was armed for
            self._timer = self.loop.call_at(deadline, self._expire)
            return
        self._deadline = None
        metrics.COLLECTOR_INVALID.labels("connection", "header_timeout").inc()
        log.info("closed a connection that sent no complete request head within %g s (peer %s)",
                 self.timeout_s, self.inner.peername)
        self.inner.force_close()


# The latency histogram's child per route, bound once (a ``labels()`` lookup per request adds up).
_LATENCY: dict[str, Any] = {}


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One middleware for every request: stops the connection's request-head clock
    (:class:`HeaderDeadline`) while the request is handled, and times it per route."""
    start = time.perf_counter()
    transport = request.transport
    proto = transport.get_protocol() if transport is not None else None
    deadline = proto if isinstance(proto, HeaderDeadline) else None
    if deadline is not None:
        deadline.request_started()
    try:
        return await handler(request)
    finally:
        if deadline is not None:
            deadline.request_done()
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        child = _LATENCY.get(name)
        if child is None:
            child = _LATENCY[name] = metrics.COLLECTOR_LATENCY.labels(name)
        child.observe(time.perf_counter() - start)


def create_app(settings: Settings, sink: EventSink, clock: Callable[[], float] = time.time, *,
               dedupe: Deduper | None = None, limiter: RateLimiter | None = None,
               vault: Vault | None = None) -> web.Application:
    """The collector's routes.  ``vault`` protects personal data before ``sink`` sees it; the
    service (:class:`CollectorService`) always passes one, only request-parsing tests leave it out."""
    c = Collector(settings.ingest, settings.tokens, settings.spool, sink, clock, dedupe,
                  topic=settings.kafka.topic_events, limiter=limiter, vault=vault)
    # The server never decompresses a body itself: handlers that read one decode it, bounded, in
    # read_limited; a bomb sent to any other route costs nothing.  keepalive_timeout: the idle timeout.
    app = web.Application(middlewares=[observe], client_max_size=MAX_FORM_BYTES * 2,
                          handler_args={"auto_decompress": False,
                                        "keepalive_timeout": settings.ingest.collector_idle_timeout_s})
    app.router.add_get("/t/p.gif", c.pixel)
    app.router.add_get("/t/p.js", snippet)
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
    return app


# The forwarder's metric families.  With LEADROUTER_SPOOL_FORWARDER=process the collector's /metrics
# shows the forwarder child's values for these (fetched from its private listener) instead of its own,
# so one scrape target keeps giving the spool backlog and the forwarding counters.
FORWARDER_FAMILIES = frozenset({"leadrouter_spool_pending_events", "leadrouter_spool_forwarded",
                                "leadrouter_spool_send_failures"})
UrlOf = Callable[[], str | None]
FORWARDER_METRICS_URL: web.AppKey[UrlOf] = web.AppKey("forwarder_metrics_url")


class _WithForwarder:
    """A prometheus collector: this process's families, the forwarder's from the child."""

    def __init__(self, child: list[Metric]) -> None:
        self.child = child

    def collect(self) -> Iterator[Metric]:
        for family in metrics.REGISTRY.collect():
            if family.name not in FORWARDER_FAMILIES:
                yield family
        yield from self.child


async def _forwarder_families(url: str) -> list[Metric]:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session, \
                session.get(url) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("collector metrics: the spool forwarder process's metrics at %s did not answer (%r)", url, exc)
        return []
    return [f for f in text_string_to_metric_families(text) if f.name in FORWARDER_FAMILIES]


async def metrics_page(request: web.Request) -> web.Response:
    url_of = request.app.get(FORWARDER_METRICS_URL)
    url = url_of() if url_of is not None else None
    if url is None:
        body = generate_latest(metrics.REGISTRY)
    else:
        merged = CollectorRegistry(auto_describe=False)
        merged.register(_WithForwarder(await _forwarder_families(url)))
        body = generate_latest(merged)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def create_metrics_app(forwarder_metrics_url: Callable[[], str | None] | None = None) -> web.Application:
    """The private listener's app: ``GET /metrics`` only (never on the public collector port).
    ``forwarder_metrics_url``: where the forwarder child serves its own (process mode)."""
    app = web.Application()
    if forwarder_metrics_url is not None:
        app[FORWARDER_METRICS_URL] = forwarder_metrics_url
    app.router.add_get("/metrics", metrics_page)
    return app


class CollectorService:
    """The collector with its spool, forwarder and Redis de-duplicator, on a TCP port.

    ``leadrouter collector`` runs one; the integration tests start one in-process.  Where the forwarder
    runs is ``LEADROUTER_SPOOL_FORWARDER``: ``inline`` on this event loop (``self.forwarder``),
    ``process`` in a ``leadrouter forwarder`` child this service starts, restarts if it exits, and stops
    last, or ``external`` (run ``leadrouter forwarder`` on the same spool directory yourself).  Out of
    line, the request handlers' loop only appends and fsyncs; the forwarder's Kafka rounds use another
    core.
    """

    def __init__(self, settings: Settings, *, drain_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        """``clock``: the receive time events get (tests drive it; production keeps ``time.time``)."""
        self.settings = settings
        self.clock = clock
        self.drain_timeout_s = drain_timeout_s
        self.inline = settings.spool.forwarder == "inline"
        self.spool = Spool.from_settings(settings.spool, role="both" if self.inline else "writer")
        # Only used inline (out of line, the forwarder process has its own).
        self.forwarder = KafkaForwarder(settings.kafka, settings.spool, self.spool)
        self._forward_stop = asyncio.Event()
        self._forward_task: asyncio.Task[None] | None = None
        self._child: ForwarderChild | None = None
        self._redis: AnyRedis | None = None
        self._limiter: RateLimiter | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.metrics_port: int | None = None  # bound port of the metrics listener (None: not serving)

    async def start(self) -> None:
        self.spool.open()
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await self.spool.start()
        if self.inline:
            self._forward_task = asyncio.create_task(self.forwarder.run(self._forward_stop), name="spool-forwarder")
        elif self.settings.spool.forwarder == "process":
            self._child = ForwarderChild(self.settings)
            await self._child.start()
        self._redis = create_redis(self.settings.redis, role="collector")
        dedupe = MessageDeduper(self._redis, self.settings.ingest.message_dedupe_ttl_s)
        self._limiter = RateLimiter.from_settings(self.settings.ingest, self._redis)
        if self.settings.tokens.pii_master()[1]:
            log.warning("LEADROUTER_PII_KEY is not set: personal data is sealed with the built-in development "
                        "key; set a long random LEADROUTER_PII_KEY in production")
        vault = Vault.from_settings(self._redis, self.settings.tokens)
        app = create_app(self.settings, SpoolSink(self.spool), self.clock, dedupe=dedupe, limiter=self._limiter,
                         vault=vault)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        ingest = self.settings.ingest
        # The private metrics listener first: once the public port answers, metrics do too.
        if ingest.collector_metrics_port:
            child = self._child
            self._metrics_runner = web.AppRunner(
                create_metrics_app(None if child is None else lambda: child.metrics_url), access_log=None)
            await self._metrics_runner.setup()
            site = web.TCPSite(self._metrics_runner, ingest.collector_metrics_host, ingest.collector_metrics_port)
            try:
                await site.start()
            except OSError as exc:
                msg = (f"cannot serve metrics on {ingest.collector_metrics_host}:{ingest.collector_metrics_port} "
                       f"({exc.strerror or exc}); set LEADROUTER_COLLECTOR_METRICS_PORT to a free port, or 0 to "
                       "serve no metrics")
                raise CollectorError(msg) from exc
            self.metrics_port = int(self._metrics_runner.addresses[0][1])
            log.info("collector metrics on http://%s:%d/metrics (not on the public port)",
                     ingest.collector_metrics_host, self.metrics_port)
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
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
            self.metrics_port = None
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
        if self._child is not None:  # after the spool's last fsync: it forwards what is left, then exits
            await self._child.stop(self.drain_timeout_s)
            self._child = None
        if self._limiter is not None:
            await self._limiter.close()
            self._limiter = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


# The forwarder process batches a trickle of events for up to this long (see KafkaForwarder's linger_s):
# out of line, a produce round per few events would cost more CPU than the events themselves.
FORWARDER_LINGER_S = 0.01


class ForwarderChild:
    """``leadrouter forwarder`` as a child of the collector (``LEADROUTER_SPOOL_FORWARDER=process``):
    same settings, restarted (after a second) whenever it exits, stopped with SIGTERM (it forwards what
    is spooled for up to its drain time, then exits), SIGKILL if it does not."""

    RESTART_DELAY_S = 1.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.metrics_port: int | None = None
        self.starts = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._supervise(), name="forwarder-child")

    @property
    def metrics_url(self) -> str | None:
        return None if self.metrics_port is None else f"http://127.0.0.1:{self.metrics_port}/metrics"

    async def _spawn(self) -> None:
        # Its metrics on a private loopback port; the collector's /metrics shows them (FORWARDER_FAMILIES).
        self.metrics_port = _free_loopback_port()
        env = {**os.environ, **self.settings.to_env(), "LEADROUTER_COLLECTOR_METRICS_HOST": "127.0.0.1",
               "LEADROUTER_SPOOL_FORWARDER_METRICS_PORT": str(self.metrics_port)}
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "router.cli.main", "forwarder",
                                                         "--exit-with-parent",
                                                         env=env, stdin=asyncio.subprocess.DEVNULL)
        self.starts += 1
        log.info("collector: started the spool forwarder process (pid %d)", self.proc.pid)

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            log.error("collector: the spool forwarder process exited with code %s; restarting it in %.0f s "
                      "(events stay spooled meanwhile)", code, self.RESTART_DELAY_S)
            await asyncio.sleep(self.RESTART_DELAY_S)
            if not self._stopping:
                await self._spawn()

    async def stop(self, drain_timeout_s: float) -> None:
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), drain_timeout_s + 20.0)
            except TimeoutError:
                log.error("collector: the spool forwarder process did not stop; killing it")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve_forwarder(settings: Settings, stop: asyncio.Event, *, drain_timeout_s: float = 5.0) -> None:
    """``leadrouter forwarder``: drain the collector's spool (``LEADROUTER_SPOOL_DIR``, the same directory,
    so the same host or volume) into Kafka until ``stop`` is set, then forward what is spooled for up to
    ``drain_timeout_s`` more.  One per spool directory; the collector runs with
    ``LEADROUTER_SPOOL_FORWARDER=external`` (or ``process``, which starts this itself)."""
    spool = Spool.from_settings(settings.spool, role="reader").open()
    forwarder = KafkaForwarder(settings.kafka, settings.spool, spool, linger_s=FORWARDER_LINGER_S)
    runner: web.AppRunner | None = None
    forward_stop = asyncio.Event()
    task = asyncio.create_task(forwarder.run(forward_stop), name="spool-forwarder")
    try:
        port = settings.spool.forwarder_metrics_port
        if port:
            runner = web.AppRunner(create_metrics_app(), access_log=None)
            await runner.setup()
            host = settings.ingest.collector_metrics_host
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                msg = (f"cannot serve forwarder metrics on {host}:{port} ({exc.strerror or exc}); set "
                       "LEADROUTER_SPOOL_FORWARDER_METRICS_PORT to a free port, or 0 to serve no metrics")
                raise CollectorError(msg) from exc
        log.info("spool forwarder: draining %s into Kafka (%d events waiting)", settings.spool.dir, spool.pending)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not task.done() and not await forwarder.drain(drain_timeout_s):
            log.warning("spool forwarder stopping with events spooled; they are sent after the next start")
    finally:
        forward_stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 15.0)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if runner is not None:
            await runner.cleanup()
        await spool.close()


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the collector until ``stop`` is set (or forever)."""
    service = CollectorService(settings)
    await service.start()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await service.stop()
