"""The faust worker: thin agents over the pipeline and the alert sender.

``process_events`` takes batches off the events topic and hands them to
:class:`router.worker.pipeline.Pipeline`; ``send_alerts`` delivers each published
assignment.  Everything the agents call is plain async code, tested without
faust.  ``LEADROUTER_WORKER_ROLE`` (:func:`create_app`) runs both, or one side
each in processes of their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
import faust
from aiokafka.errors import KafkaError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT
from faust.web import Request, Response, View
from prometheus_client import generate_latest
from redis.exceptions import RedisError
from threadpoolctl import threadpool_limits

from router import metrics
from router.alerts import digest
from router.alerts.sender import AlertSender, TeamWebhooks, build_sender, digest_timer
from router.settings import Settings
from router.storage.archive import ArchiveWriter
from router.storage.config_store import ICP, SCORING
from router.storage.kafka import ensure_topics
from router.storage.live_config import (
    LiveFile,
    RedisConfigSource,
    RedisRulesSource,
    load_accounts_file,
)
from router.storage.model_registry import ActiveModelWatcher
from router.storage.pii import PiiKeysUnavailable, Vault
from router.storage.redis import create_redis
from router.storage.store import RedisStore
from router.worker.fetchwait import FetchWaitGovernor
from router.worker.pipeline import Pipeline
from router.worker.scheduler import scheduler_timer

log = logging.getLogger(__name__)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust hard-codes fetch_max_wait_ms=1500; take ours from the app."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", 1500)
        governor = getattr(self.app, "fetch_wait", None)
        if governor is not None:
            governor.attach(consumer)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class LeadRouterApp(faust.App):
    fetch_max_wait_ms: int = 1500
    fetch_wait: FetchWaitGovernor | None = None

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)


class Runtime:
    """The connections and live config one worker process holds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        files = settings.files
        self.redis = create_redis(settings.redis, role="worker")
        # Published scoring and ICP versions (leadrouter scoring|icp publish) win over the files, as for the rules.
        self.scoring = RedisConfigSource(SCORING, files.scoring_file, self.redis, startup=settings.redis)
        # Published rules (leadrouter rules publish) win over the file; the
        # file is used, and reloaded on change, until something is published.
        self.routing = RedisRulesSource(files.rules_file, self.redis, startup=settings.redis)
        self.accounts = (LiveFile.open(files.accounts_file, load_accounts_file, "accounts")
                         if files.accounts_file.exists() else None)
        self.icp = RedisConfigSource(ICP, files.icp_file, self.redis, startup=settings.redis)
        self.model = ActiveModelWatcher(files.model_registry_dir)
        self.archive = (ArchiveWriter(files.archive_dir, retention_days=files.archive_retention_days)
                        if settings.worker.archive else None)
        self.store = RedisStore(self.redis, anonymous_ttl_s=settings.worker.anonymous_ttl_s,
                                known_link_ttl_s=settings.worker.known_link_ttl_s)
        self._http: aiohttp.ClientSession | None = None
        self._sender: AlertSender | None = None

    async def close(self) -> None:
        if self._sender is not None:
            await self._sender.aclose()  # its SMTP connections
        if self._http is not None:
            await self._http.close()
        await self.redis.aclose()


def new_app(settings: Settings) -> LeadRouterApp:
    """A faust app configured for this service (the worker's, and the benchmark's baseline)."""
    kafka = settings.kafka
    app = LeadRouterApp(
        kafka.app_id,
        broker=kafka.url,
        store="memory://",
        autodiscover=False,
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=kafka.topic_partitions,
        topic_disable_leader=True,
        broker_session_timeout=kafka.broker_session_timeout_s,
        broker_heartbeat_interval=max(1.0, kafka.broker_session_timeout_s / 5),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_host="127.0.0.1",
        web_port=settings.worker.web_port,
        web_in_thread=False,
    )
    app.fetch_max_wait_ms = kafka.fetch_max_wait_ms
    if kafka.fetch_idle_wait_ms > 0:
        app.fetch_wait = FetchWaitGovernor(kafka.fetch_max_wait_ms, kafka.fetch_idle_wait_ms,
                                           kafka.fetch_idle_after_s)
    return app


def create_app(settings: Settings) -> LeadRouterApp:
    """The worker's faust app for ``settings.worker.role``.

    ``all`` runs everything below; ``scoring`` the events agent and the timers that score, route
    and publish alerts (config reload, scheduler/SLA steps, review); ``alerts`` the assignments
    agent and the digest timer (and reloads only the rules, for the teams' own webhooks).  Every
    role runs the fetch-wait governor, the consumer-lag sampler, /metrics and /healthz.

    Every role is a member of the same consumer group (``kafka.app_id``): faust's assignor gives a
    member partitions only of the topics it subscribes to (its agents' topics), so a scoring
    process never holds an assignments partition and an alerts process never an events one, and a
    deployment switched from ``all`` to split roles (or back) carries on from the offsets already
    committed: nothing is read twice but what was in flight, nothing is skipped.
    """
    role = settings.worker.role
    scoring, alerts = role in ("all", "scoring"), role in ("all", "alerts")
    app = new_app(settings)
    rt = Runtime(settings)
    kafka = settings.kafka
    events_topic = app.topic(kafka.topic_events, value_serializer="raw", key_serializer="raw",
                             partitions=kafka.topic_partitions)
    alerts_topic = app.topic(kafka.topic_assignments, value_serializer="raw", key_serializer="raw",
                             partitions=kafka.topic_partitions)
    dlq_topic = app.topic(kafka.topic_dead_letter, value_serializer="raw", key_serializer="raw",
                          partitions=1)

    async def publish_alert(key: str, value: bytes) -> None:
        fut = await alerts_topic.send(key=key.encode(), value=value)
        await fut

    async def dead_letter(key: str, value: bytes) -> None:
        fut = await dlq_topic.send(key=key.encode(), value=value)
        await fut

    if settings.tokens.pii_master()[1]:
        log.warning("LEADROUTER_PII_KEY is not set: personal data is sealed with the built-in development key; "
                    "set a long random LEADROUTER_PII_KEY in production (the same for collector, worker and CLI)")
    vault = Vault.from_settings(rt.store.redis, settings.tokens)
    log.info("worker role %s: %s", role, {"all": "scoring and alert delivery", "scoring": "scoring only (alerts "
             "are published for alerts-role workers)", "alerts": "alert delivery only"}[role])

    if scoring:
        _scoring_side(app, settings, rt, events_topic, publish_alert, vault)
    if alerts:
        _alerts_side(app, settings, rt, alerts_topic, dead_letter, vault)
    if not scoring:
        @app.timer(interval=2.0)  # type: ignore[untyped-decorator]
        async def reload_rules() -> None:
            # The alerts side reads the teams' own webhooks off the published rules.
            await rt.routing.poll()

    if app.fetch_wait is not None:
        governor = app.fetch_wait

        @app.timer(interval=min(0.25, kafka.fetch_idle_after_s / 2))  # type: ignore[untyped-decorator]
        async def fetch_wait() -> None:
            governor.tick()

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def consumer_lag() -> None:
        sample_consumer_lag(app.consumer, (kafka.topic_events, kafka.topic_assignments))

    @app.page("/metrics")
    async def metrics_page(self: View, request: Request) -> Response:
        # aiohttp refuses a charset inside content_type; the exposition is UTF-8 text.
        return self.bytes(generate_latest(metrics.REGISTRY), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def health(self: View, request: Request) -> Response:
        return self.json({"ok": True, "role": role, "scoring": rt.scoring.tag, "icp": rt.icp.tag,
                          "rules": rt.routing.current.version})

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _close(app: faust.App, **kwargs: Any) -> None:
        await rt.close()

    return app


def _scoring_side(app: LeadRouterApp, settings: Settings, rt: Runtime, events_topic: faust.TopicT,
                  publish_alert: Callable[[str, bytes], Awaitable[None]], vault: Vault) -> None:
    """The events agent and the timers that score, route and publish alerts (roles all and scoring)."""
    pipeline = Pipeline(rt.store, rt.scoring, rt.routing, publish_alert, accounts=rt.accounts,
                        admin_url=settings.alerts.admin_url, icp=rt.icp, model=lambda: rt.model.current,
                        link_secret=settings.tokens.secret, unique=settings.worker.unique_identifiers, vault=vault,
                        review_below=settings.worker.review_trust_below, link_ttl_s=settings.alerts.link_ttl_s)

    @app.agent(events_topic)
    async def process_events(stream: faust.StreamT[bytes]) -> None:
        async for batch in stream.take(settings.worker.batch_size, within=settings.worker.batch_window_s):
            if app.fetch_wait is not None:
                app.fetch_wait.saw(len(batch))
            with metrics.BATCH_SECONDS.time():
                await until_done(f"batch of {len(batch)} events", partial(pipeline.process, batch))
            metrics.BATCH_SIZE.observe(len(batch))
            if rt.archive is not None:
                await archive_batch(rt.archive, batch)

    @app.timer(interval=2.0)  # type: ignore[untyped-decorator]
    async def reload_config() -> None:
        await rt.scoring.poll()
        await rt.icp.poll()
        await rt.routing.poll()
        if rt.accounts is not None:
            rt.accounts.maybe_reload()
        await asyncio.to_thread(rt.model.maybe_reload)

    # Due recycles and SLA steps (router/worker/scheduler.py): any number of workers
    # run it; each step is claimed once and a missed tick catches up.  Its reminders,
    # reassignments and escalations are published to the assignments topic, like a crossing's alert.
    app.timer(interval=settings.worker.scheduler_tick_s, name="scheduler")(
        scheduler_timer(rt.store, rt.scoring, rt.routing, pipeline.sla_alert))

    @app.timer(interval=2.0)  # type: ignore[untyped-decorator]
    async def review_timer() -> None:
        # Leads ops released from the review queue are routed normally (router/worker/review.py).
        await pipeline.review_tick()


def _alerts_side(app: LeadRouterApp, settings: Settings, rt: Runtime, alerts_topic: faust.TopicT,
                 dead_letter: Callable[[str, bytes], Awaitable[None]], vault: Vault) -> None:
    """The assignments agent and the digest timer (roles all and alerts)."""

    @app.agent(alerts_topic, concurrency=4)
    async def send_alerts(stream: faust.StreamT[bytes]) -> None:
        # One sender per process, shared by the agent's instances: Slack paced per
        # channel (a Redis token bucket shared by every worker), capped jittered
        # retries, channels already delivered skipped, failures dead-lettered, and
        # low-priority triggers queued for the rep's digest (router/alerts/digest.py).
        if rt._sender is None:
            rt._http = aiohttp.ClientSession()
            rt._sender = build_sender(settings.alerts, rt.store, rt._http, dead_letter,
                                      team_webhooks=TeamWebhooks(rt.routing), vault=vault)
        sender = rt._sender
        async for raw in stream:
            if app.fetch_wait is not None:
                app.fetch_wait.saw()
            await until_done("alert delivery", partial(sender.handle, raw))

    # Low-priority alerts queued for a rep's digest go out once per interval.
    app.timer(interval=digest.check_interval_s(settings.alerts), name="alert_digests")(
        digest_timer(lambda: rt._sender))


BACKOFF_MAX_S = 5.0


async def archive_batch(archive: ArchiveWriter, batch: list[bytes]) -> None:
    """Archive a processed batch for backtests; a full or broken disk never stops scoring (logged, counted)."""
    try:
        written = await asyncio.to_thread(archive.append, batch)
    except OSError as exc:
        metrics.ARCHIVED.labels("failed").inc(len(batch))
        log.error("could not archive a batch of %d events to %s: %r", len(batch), archive.root, exc)
        return
    metrics.ARCHIVED.labels("written").inc(written)


async def until_done(what: str, step: Callable[[], Awaitable[object]],
                     sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Run one agent step, retrying it while Redis or Kafka is unreachable.

    An error escaping an agent makes faust restart it, and a restarted agent
    can stop receiving messages while the consumer keeps committing offsets:
    those messages would be lost.  So an agent never lets go of its step; every
    step is safe to repeat (events count once by id, an unfinished crossing
    resumes with the same rep, an alert channel is delivered once).
    """
    delay = 0.1
    while True:
        try:
            await step()
            return
        # PiiKeysUnavailable: the data-key store (Redis) did not answer while opening or sealing
        # personal data; it wraps the RedisError, so it must be retried like one.
        except (RedisError, PiiKeysUnavailable, KafkaError, OSError, TimeoutError) as exc:
            metrics.BATCH_RETRIES.labels(type(exc).__name__).inc()
            log.warning("%s failed (%r); retrying in %.1fs", what, exc, delay)
            await sleep(delay)
            delay = min(BACKOFF_MAX_S, delay * 2)


def sample_consumer_lag(consumer: Any, topics: tuple[str, ...]) -> None:
    """Lag = the partition's end offset minus the next offset this worker will read.

    (Some Kafka-compatible brokers report end offsets loosely, Tansu among
    them; on Apache Kafka the figure is exact.)
    """
    read_offsets = getattr(consumer, "_read_offset", {})
    for tp in consumer.assignment():
        if tp.topic not in topics:
            continue
        try:
            end = consumer.highwater(tp)
        except Exception:  # not known yet (no fetch answered for it)
            continue
        if end is None:
            continue
        read = read_offsets.get(tp)
        lag = end - (read + 1 if read is not None else 0)
        metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, lag))


def run_worker(settings: Settings) -> None:
    """Run one worker process until SIGINT/SIGTERM."""
    # The model scores a batch in one call; on a small box, BLAS/OpenMP threads
    # only fight the event loop for the same cores.
    threadpool_limits(1)
    asyncio.run(ensure_topics(settings.kafka))
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
