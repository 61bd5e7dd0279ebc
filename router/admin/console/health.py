"""The Health page (``/console/health``): throughput, consumer lag, spool depth and alert delivery.

Where the numbers come from, and why: every collector and worker keeps its
Prometheus metrics (router/metrics.py) in its own process and serves them on its
metrics endpoint (the collector's private listener, the worker's web port).  The
admin is another process, so its own registry holds none of them.  The page
therefore reads the endpoints listed in ``LEADROUTER_ADMIN_METRICS_URLS`` and sums
them: the same numbers Prometheus scrapes, for any number of processes on any
hosts, with no extra write on the event path (Redis-backed counters would add a
Redis call to every event and alert, and still miss the spool, which lives on a
collector's disk).  An endpoint that does not answer is shown as down and left
out of the sums.

History for the sparklines is kept in Redis (:func:`router.storage.keys.health_samples`,
newest first, trimmed), so every admin process shows the same history and a
restart keeps it: each admin process samples every ``LEADROUTER_ADMIN_HEALTH_SAMPLE_S``
(and on each view), and a ``SET NX`` tick per interval lets only one record per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisError

from router.admin.console.html import h, page, when
from router.admin.console.pages import html_response
from router.admin.console.session import Session
from router.admin.console.views import sparkline
from router.settings import Settings
from router.storage import keys
from router.storage.redis import AnyRedis

log = logging.getLogger(__name__)
MAX_METRICS_BYTES = 8 * 1024 * 1024
SCRAPE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Source:
    url: str
    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    """The fleet's metrics summed at one moment (counters are totals since each process started)."""

    ts: float
    events: float = 0.0  # leadrouter_events_total, every type and outcome
    lag: float = 0.0  # leadrouter_consumer_lag_messages, every topic and partition
    spool_events: float = 0.0  # leadrouter_spool_pending_events
    spool_bytes: float = 0.0  # leadrouter_spool_bytes
    sent: float = 0.0  # leadrouter_alert_sends_total{outcome="sent"}
    failed: float = 0.0  # leadrouter_alert_sends_total{outcome="failed"}
    dead: float = 0.0  # leadrouter_alert_dead_letters_total
    up: int = 0  # endpoints that answered
    sources: tuple[Source, ...] = field(default=())

    def to_json(self) -> bytes:
        doc = asdict(self)
        doc.pop("sources")
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Sample | None:
        try:
            doc: Any = orjson.loads(raw)
            return cls(ts=float(doc["ts"]), events=float(doc["events"]), lag=float(doc["lag"]),
                       spool_events=float(doc["spool_events"]), spool_bytes=float(doc["spool_bytes"]),
                       sent=float(doc["sent"]), failed=float(doc["failed"]), dead=float(doc["dead"]),
                       up=int(doc.get("up", 0)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def add_metrics(totals: dict[str, float], text: str) -> None:
    """Add one endpoint's exposition text into ``totals`` (the fields of :class:`Sample`)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not math.isfinite(s.value):
                continue
            name, labels = s.name, s.labels
            if name == "leadrouter_events_total":
                totals["events"] += s.value
            elif name == "leadrouter_consumer_lag_messages":
                totals["lag"] += s.value
            elif name == "leadrouter_spool_pending_events":
                totals["spool_events"] += s.value
            elif name == "leadrouter_spool_bytes":
                totals["spool_bytes"] += s.value
            elif name == "leadrouter_alert_sends_total" and labels.get("outcome") in ("sent", "failed"):
                totals[labels["outcome"]] += s.value
            elif name == "leadrouter_alert_dead_letters_total":
                totals["dead"] += s.value


async def _fetch(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)) as resp:
        if resp.status != 200:
            msg = f"HTTP {resp.status}"
            raise ValueError(msg)
        body = await resp.content.read(MAX_METRICS_BYTES + 1)
        if len(body) > MAX_METRICS_BYTES:
            msg = f"more than {MAX_METRICS_BYTES} bytes"
            raise ValueError(msg)
        return body.decode("utf-8", "replace")


async def scrape(urls: Sequence[str], now: float) -> Sample:
    """Read every endpoint at once and sum what they say; an endpoint that fails is reported, not counted."""
    totals = dict.fromkeys(("events", "lag", "spool_events", "spool_bytes", "sent", "failed", "dead"), 0.0)
    sources: list[Source] = []
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(_fetch(http, u) for u in urls), return_exceptions=True)
    for url, answer in zip(urls, answers, strict=True):
        if isinstance(answer, BaseException):
            sources.append(Source(url, False, f"{type(answer).__name__}: {answer}"[:200]))
            continue
        try:
            add_metrics(totals, answer)
        except ValueError as exc:
            sources.append(Source(url, False, f"not Prometheus text: {exc}"[:200]))
            continue
        sources.append(Source(url, True))
    return Sample(ts=now, **totals, up=sum(1 for s in sources if s.ok), sources=tuple(sources))


def rates(samples: Sequence[Sample], attr: str) -> list[float]:
    """Per-second increase of a counter between consecutive samples (oldest first); a restart counts from zero."""
    out: list[float] = []
    for a, b in itertools.pairwise(samples):
        dt = b.ts - a.ts
        if dt <= 0:
            continue
        inc = getattr(b, attr) - getattr(a, attr)
        if inc < 0:  # a process restarted: its counter began again
            inc = getattr(b, attr)
        out.append(inc / dt)
    return out


class HealthPage:
    """The Health page and the sampler that keeps its history in Redis."""

    def __init__(self, settings: Settings, redis: AnyRedis, clock: Callable[[], float]) -> None:
        self.urls = settings.admin.metrics_urls
        self.every_s = settings.admin.health_sample_s
        self.redis = redis
        self.clock = clock

    async def record(self, sample: Sample) -> bool:
        """Keep a sample unless one was kept in its interval (by any admin process); True when kept."""
        bucket = int(sample.ts // self.every_s)
        if not await self.redis.set(keys.health_tick(bucket), repr(sample.ts), nx=True,
                                    ex=max(1, int(self.every_s * 2))):
            return False
        pipe = self.redis.pipeline(transaction=False)  # one key (the tick is separate, and only a throttle)
        pipe.lpush(keys.health_samples(), sample.to_json())
        pipe.ltrim(keys.health_samples(), 0, keys.HEALTH_SAMPLES_MAX - 1)
        await pipe.execute()
        return True

    async def history(self) -> list[Sample]:
        raw = await self.redis.lrange(keys.health_samples(), 0, keys.HEALTH_SAMPLES_MAX - 1)
        samples = [s for s in (Sample.from_json(r) for r in raw) if s is not None]
        return sorted(samples, key=lambda s: s.ts)

    async def sample_forever(self) -> None:
        while True:
            try:
                await self.record(await scrape(self.urls, self.clock()))
            except RedisError as exc:
                log.warning("health sample not kept: Redis failed (%r)", exc)
            await asyncio.sleep(self.every_s)

    async def sampler(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: sample in the background while the admin app runs (when URLs are set)."""
        task = asyncio.create_task(self.sample_forever()) if self.urls else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @staticmethod
    def tile(name: str, tid: str, value: str, series: Sequence[float], note: str = "") -> str:
        return (f'<div class="tile" id="{h(tid)}"><span>{h(name)}</span><b data-value="{h(tid)}">{h(value)}</b>'
                f'{sparkline(series, element_id=f"spark-{tid}", title=name)}'
                + (f'<small class="muted">{h(note)}</small>' if note else "") + "</div>")

    async def page(self, request: web.Request, session: Session) -> web.StreamResponse:
        if not self.urls:
            body = ('<h1>Health</h1><p class="msg err" id="message">No metrics endpoints are configured: set '
                    "LEADROUTER_ADMIN_METRICS_URLS to the collectors' and workers' metrics URLs (e.g. "
                    "http://10.0.0.5:9108/metrics for a collector, http://10.0.0.6:6066/metrics for a worker).</p>")
            return html_response(page("Health", body, principal=session.principal, csrf=session.csrf))
        now = await scrape(self.urls, self.clock())
        try:
            await self.record(now)
            history = await self.history()
        except RedisError:
            history = []
        if not history or history[-1].ts != now.ts:
            history.append(now)
        window = history[-60:]
        throughput = rates(window, "events")
        sent_rate, failed_rate, dead_rate = (rates(window, a) for a in ("sent", "failed", "dead"))
        per_min = (throughput[-1] * 60) if throughput else None
        per_process = "since the processes started; the line is per minute"
        tiles = [
            self.tile("Events per minute", "throughput", f"{per_min:,.0f}" if per_min is not None else "-",
                      [r * 60 for r in throughput], f"{now.events:,.0f} events since the processes started"),
            self.tile("Consumer lag (messages)", "lag", f"{now.lag:,.0f}", [s.lag for s in window]),
            self.tile("Spool depth (events)", "spool", f"{now.spool_events:,.0f}", [s.spool_events for s in window],
                      f"{now.spool_bytes / 1024:,.0f} KiB on disk"),
            self.tile("Alerts sent", "sent", f"{now.sent:,.0f}", [r * 60 for r in sent_rate], per_process),
            self.tile("Alerts failed", "failed", f"{now.failed:,.0f}", [r * 60 for r in failed_rate], per_process),
            self.tile("Dead-lettered alerts", "dead", f"{now.dead:,.0f}", [r * 60 for r in dead_rate], per_process),
        ]
        rows = "".join(f'<tr data-ok="{"yes" if s.ok else "no"}"><td><code>{h(s.url)}</code></td>'
                       f'<td>{"up" if s.ok else "down"}</td><td class="opt">{h(s.error)}</td></tr>'
                       for s in now.sources)
        span = f"{when(window[0].ts)} to {when(window[-1].ts)}" if len(window) > 1 else "this moment"
        body = (f'<h1>Health</h1><p class="muted">{now.up} of {len(now.sources)} metrics endpoints answered at '
                f'{h(when(now.ts))}; lines cover {h(span)}, one sample every {self.every_s:g} s.</p>'
                f'<div class="tiles" id="tiles">{"".join(tiles)}</div>'
                '<h2>Endpoints</h2><table id="sources"><thead><tr><th>URL</th><th>State</th>'
                f'<th class="opt">Error</th></tr></thead><tbody>{rows}</tbody></table>')
        return html_response(page("Health", body, principal=session.principal, csrf=session.csrf))
