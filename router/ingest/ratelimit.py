"""Rate limits per client address and per visitor id, shared by every collector through Redis.

Fixed windows of ``LEADROUTER_RATE_LIMIT_WINDOW_S`` (60 s).  Each endpoint class has its own
limits (``LEADROUTER_RATE_LIMIT_<CLASS>_PER_IP`` / ``_PER_VISITOR``; 0 turns one off):

* ``form`` (``POST /t/form``): over the limit is a 429 with ``Retry-After`` (seconds to the
  window's end);
* ``pixel`` (``/t/p.gif``, Snowplow ``GET /i``): over the limit the hit is **dropped** and the
  GIF still answered (a page must never break, and a flood must not reach the spool, Kafka or
  the worker); counted in ``leadrouter_collector_requests_total{outcome="rate_limited"}``;
* ``sdk`` (Segment/RudderStack ``/v1/*``, Snowplow ``tp2``): per address only (one server sends
  for many visitors), a 429 with ``Retry-After``.

Email opens and clicks are not limited: their tokens are signed, and mail proxies (Apple's, Gmail's)
fetch them for many readers from a few addresses.

Cost.  A request whose key is already over its limit in this window is answered from this
process's memory.  Every key carries one of ``keys.RATE_LIMIT_TAGS`` (64) hash tags, picked by the
hash of its identifier, and one Lua call (router/storage/lua/rate_limit.lua) adds to every key of
one tag.  Forms are counted in Redis as they arrive (``sync``: one pipelined round trip; forms are
few and already wait for their fsync).  Pixels and SDK calls never wait for Redis (``batched``):
they are counted in memory at once, and every :attr:`RateLimiter.flush_s` (0.25 s) one pipelined
round trip adds each key's new requests to its shared counter and reads back the total of every
collector; a key over its limit is then refused locally until its window ends.  So a flush costs at
most 64 Lua calls however many keys it carries (Redis still does one INCRBY per distinct key: O(1)
per request, none once its address is over), and a client spread over several collectors may get
up to one flush interval of requests past its limit.
A visitor id the collector has just minted is not counted (it is new).

When Redis fails, the limiter *fails open* to this process's own counters for
:attr:`RateLimiter.breaker_s` (5 s) before trying Redis again: pixels, forms and SDK calls keep
being limited per collector process (never refused because Redis is down); the count is no longer
shared by the collectors, so a client spread over N collectors gets up to N times its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.exceptions import RedisError

from router import metrics
from router.settings import IngestSettings
from router.storage import keys
from router.storage.redis import AnyRedis
from router.storage.scripts import execute, queue, register

log = logging.getLogger(__name__)

LIMIT_CLASSES = ("form", "pixel", "sdk")
MAX_LOCAL_KEYS = 50_000  # per-process counters kept before the oldest are dropped
KEY_CACHE_SIZE = 32_768  # Redis key names remembered (oldest out first)
TTL_MARGIN_S = 5.0  # a window's counters outlive it by this much


@dataclass(frozen=True, slots=True)
class Check:
    """Count one request against ``limit`` for ``scope`` (``"form:ip"``, ``"pixel:visitor"``…)."""

    scope: str
    identifier: str
    limit: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool = True
    retry_after_s: int = 0
    over: tuple[str, ...] = ()  # scopes over their limit
    hot_ip: bool = False  # this address was over a limit in this window or the one before


ALLOW = Decision()
_HOT = Decision(hot_ip=True)  # allowed, from an address over a limit lately


class RateLimiter:
    """Fixed-window counters in Redis (shared) with per-process counts and a cache of keys already over."""

    def __init__(self, redis: AnyRedis | None, window_s: int = 60, *, clock: Callable[[], float] = time.time,
                 breaker_s: float = 5.0, flush_s: float = 0.25) -> None:
        self.redis = redis
        self.window_s = max(1, int(window_s))
        self.clock = clock
        self.breaker_s = breaker_s
        self.flush_s = flush_s
        self._script = register(redis, "rate_limit.lua") if redis is not None else None
        self._count: dict[str, int] = {}  # Redis key -> best known count of its window (shared + ours unsent)
        self._pending: dict[str, int] = {}  # Redis key -> requests counted here, not yet added in Redis
        self._blocked: dict[str, float] = {}  # Redis key -> end of the window it is over its limit in
        self._hot: dict[str, float] = {}  # client address -> until when it counts as a rate-limited neighbour
        self._broken_until = 0.0
        self._names: dict[tuple[str, str, int], str] = {}  # (scope, identifier, window) -> Redis key
        self._flusher: asyncio.Task[None] | None = None
        # One flush at a time: a flush called while the background one is in flight waits for its totals,
        # so whatever was counted before the call is shared (and the totals learned) when it returns.
        self._flushing = asyncio.Lock()

    @classmethod
    def from_settings(cls, ingest: IngestSettings, redis: AnyRedis | None) -> RateLimiter:
        return cls(redis, ingest.rate_limit_window_s)

    def is_hot(self, ip: str | None) -> bool:
        return self._is_hot(ip, self.clock())

    def _is_hot(self, ip: str | None, now: float) -> bool:
        return bool(ip) and self._hot.get(ip or "", 0.0) > now

    async def hit(self, checks: Sequence[Check], *, ip: str | None = None, batched: bool = False) -> Decision:
        """Count one request against every check; denied when any is over its limit.

        ``batched``: do not wait for Redis (pixels, SDK calls): decide on what this process knows and
        let the flusher share the count; otherwise (forms) count in Redis before deciding.
        """
        active = [c for c in checks if c.limit > 0 and c.identifier]
        if not active:
            return Decision(hot_ip=self.is_hot(ip))
        now = self.clock()
        window = int(now // self.window_s)
        end = (window + 1) * self.window_s
        names = [self._key(c.scope, c.identifier, window) for c in active]
        blocked = self._blocked
        over: tuple[str, ...] = ()
        if blocked:
            for c, k in zip(active, names, strict=True):
                if blocked.get(k, 0.0) > now:
                    over = (*over, c.scope)
            if over:  # answered from memory: a flood costs Redis nothing more this window
                return self._deny(over, ip, end, now)
        self._prune(window)
        count = self._count
        counts = []
        for k in names:
            n = count[k] = count.get(k, 0) + 1
            counts.append(n)
        if batched and self.redis is not None:
            pending = self._pending
            for k in names:
                pending[k] = pending.get(k, 0) + 1
            self._start_flusher()
        else:
            shared = await self._add(dict.fromkeys(names, 1), end - now)
            if shared is not None:
                counts = [shared[k] for k in names]
                for k in names:
                    count[k] = shared[k]
        for c, k, n in zip(active, names, counts, strict=True):
            if n > c.limit:
                blocked[k] = end
                over = (*over, c.scope)
        if over:
            return self._deny(over, ip, end, now)
        return _HOT if self._hot and self._is_hot(ip, now) else ALLOW

    def _key(self, scope: str, identifier: str, window: int) -> str:
        """:func:`keys.rate_limit`, remembered (it hashes the identifier; a visitor hits many times a window)."""
        names = self._names
        name = names.get((scope, identifier, window))
        if name is None:
            name = keys.rate_limit(scope, identifier, window)
            if len(names) >= KEY_CACHE_SIZE:
                del names[next(iter(names))]
            names[(scope, identifier, window)] = name
        return name

    def _deny(self, over: Sequence[str], ip: str | None, end: float, now: float) -> Decision:
        retry = max(1, math.ceil(end - now))  # seconds to the window's end
        if ip:
            self._hot[ip] = end + self.window_s  # this window and the next
        for scope in over:
            metrics.RATE_LIMITED.labels(scope).inc()
        return Decision(False, retry, tuple(over), hot_ip=True)

    async def _add(self, increments: dict[str, int], left_s: float) -> dict[str, int] | None:
        """Add ``increments`` to the shared counters in one pipelined round trip; their totals (None: Redis
        failed or is not used, the caller keeps its own count)."""
        if self.redis is None or self._script is None or self.clock() < self._broken_until or not increments:
            return None
        ttl_ms = int((max(0.0, left_s) + TTL_MARGIN_S) * 1000)
        # One Lua call per hash tag (at most keys.RATE_LIMIT_TAGS however many keys a flush carries).
        by_tag: dict[str, list[str]] = {}
        for k in increments:
            by_tag.setdefault(keys.rate_limit_tag(k), []).append(k)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for names in by_tag.values():
                await queue(pipe, self._script, keys=names, args=[ttl_ms, *(increments[k] for k in names)])
            replies = await execute(pipe)
        except (RedisError, OSError, TimeoutError) as exc:
            self._broken_until = self.clock() + self.breaker_s
            metrics.RATE_LIMIT_FALLBACKS.inc()
            log.warning("rate limits: Redis failed (%r); counting in this collector alone for %g s",
                        exc, self.breaker_s)
            return None
        totals: dict[str, int] = {}
        for names, counts in zip(by_tag.values(), replies, strict=True):
            totals.update(zip(names, (int(n) for n in counts), strict=True))
        return totals

    def _start_flusher(self) -> None:
        if self.redis is None or (self._flusher is not None and not self._flusher.done()):
            return
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="rate-limit-flush")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def flush(self) -> None:
        """Share the requests counted here since the last flush, and learn every collector's totals."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        now = self.clock()
        window = int(now // self.window_s)
        current = {k: n for k, n in batch.items() if k.endswith(f":{window}")}  # an ended window is dropped
        totals = await self._add(current, (window + 1) * self.window_s - now)
        if totals is None:
            return  # Redis failed: the local counts keep limiting this process
        for k, total in totals.items():
            # Requests counted here while the flush was in flight are not in ``total`` yet.
            self._count[k] = max(self._count.get(k, 0), total + self._pending.get(k, 0))

    async def close(self) -> None:
        """Stop the flusher, sharing what is still counted here."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        with contextlib.suppress(Exception):
            await self.flush()

    def _prune(self, window: int) -> None:
        if len(self._count) + len(self._blocked) + len(self._hot) <= MAX_LOCAL_KEYS:
            return
        now = self.clock()
        suffix = f":{window}"
        self._count = {k: n for k, n in self._count.items() if k.endswith(suffix)}
        self._blocked = {k: t for k, t in self._blocked.items() if t > now}
        self._hot = {k: t for k, t in self._hot.items() if t > now}
        if len(self._count) > MAX_LOCAL_KEYS:  # a flood of distinct ids in one window: rely on Redis
            self._count.clear()
        if len(self._hot) > MAX_LOCAL_KEYS:
            self._hot.clear()
        if len(self._blocked) > MAX_LOCAL_KEYS:
            self._blocked.clear()


def checks_for(ingest: IngestSettings, kind: str, ip: str | None, visitor_id: str | None) -> list[Check]:
    """The checks of one request of endpoint class ``kind`` (form, pixel, sdk)."""
    if kind == "pixel":
        per_ip, per_visitor = ingest.rate_limit_pixel_per_ip, ingest.rate_limit_pixel_per_visitor
    elif kind == "form":
        per_ip, per_visitor = ingest.rate_limit_form_per_ip, ingest.rate_limit_form_per_visitor
    elif kind == "sdk":
        per_ip, per_visitor = ingest.rate_limit_sdk_per_ip, 0
    else:
        msg = f"rate-limit class {kind!r} is unknown; use one of {', '.join(LIMIT_CLASSES)}"
        raise ValueError(msg)
    out = []
    if ip:
        out.append(Check(f"{kind}:ip", ip, per_ip))
    if visitor_id:
        out.append(Check(f"{kind}:visitor", visitor_id, per_visitor))
    return out
