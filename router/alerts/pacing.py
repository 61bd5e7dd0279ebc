"""Slack pacing: about one message per second per channel.

The Slack notifiers ask a :class:`Pacer` for a slot before every attempt:
:class:`LocalPacer` paces every concurrent send of one process,
:class:`RedisPacer` keeps one token bucket per channel in Redis (one Lua call
per message) so every worker shares the budget.  A 429 holds the channel's
bucket for the ``Retry-After`` it names, so the other sends to that channel
wait too.

Priority lane: a trusted hand-raiser's alert (``Alert.priority``) never queues behind the
channel's other messages (a burst of score crossings, or whatever else is waiting).  It takes
its slot from the channel's own priority bucket (``<key>#p``, the same rate) and pushes the
normal lane back by one slot (``debit``), so over time the channel still gets about ``rate``
messages a second; at the moment a priority message jumps the queue the channel may see two
messages within one interval.  Suspicious hand-raisers never reach a rep's channel at all: they
are held for review (router/worker/review.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.exceptions import RedisError

from router import metrics
from router.settings import AlertSettings
from router.storage import keys
from router.storage.redis import AnyRedis
from router.storage.scripts import register

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[object]]

# --------------------------------------------------------------------------- pacing


class Pacer(Protocol):
    """Hands out send slots per channel so Slack's per-channel pace is kept."""

    async def acquire(self, key: str, *, priority: bool = False) -> float:
        """Wait for the channel's next slot (``priority``: the priority lane's); returns the seconds waited."""
        ...

    async def hold(self, key: str, seconds: float) -> None:
        """No slot on this channel sooner than ``seconds`` from now (Slack said 429 Retry-After)."""
        ...


def pace_key(kind: str, target: str) -> str:
    """The pacing key of one Slack channel: ``webhook:<sha256 of the URL>`` or ``dm:<user id>``.

    Webhook URLs are secrets, so only their digest is used as a key.
    """
    if kind == "webhook":
        return "webhook:" + hashlib.sha256(target.encode()).hexdigest()[:32]
    return f"{kind}:{target}"


PRIORITY_SUFFIX = "#p"


def bucket_step(tokens: float | None, ts: float | None, now: float, rate: float, burst: float,
                hold_s: float | None = None, *, debit: bool = False) -> tuple[float, float, float]:
    """One token-bucket step: ``(tokens, ts, wait)`` after taking a slot (or holding for ``hold_s``).

    The bucket refills ``rate`` tokens a second up to ``burst``.  Taking a slot
    spends a token; tokens may go below zero, which queues the caller behind the
    slots already promised (``wait = -tokens / rate``), so concurrent senders are
    spaced ``1 / rate`` apart in the order they asked.  A hold caps the tokens so
    the next slot is ``hold_s`` away.  ``debit`` spends a token without waiting for it (a
    priority message went first: later callers queue one slot further back).
    ``router/storage/lua/pace.lua`` is this function in Lua.
    """
    lag = 0.0
    if tokens is None or ts is None:
        tokens, ts = burst, now
    elif now > ts:
        tokens, ts = min(burst, tokens + (now - ts) * rate), now
    else:
        lag = ts - now  # another clock ran ahead: count from its time
    if hold_s is not None:
        return min(tokens, 1.0 - hold_s * rate), ts, 0.0
    tokens -= 1.0
    if debit:
        return tokens, ts, 0.0
    return tokens, ts, lag + (-tokens / rate if tokens < 0 else 0.0)


class LocalPacer:
    """Per-channel token buckets for one process, shared by all its concurrent sends.

    Reserving a slot is synchronous (no await between reading and writing the
    bucket), so concurrent coroutines never get the same slot.
    """

    _PRUNE_AT = 4096

    def __init__(self, rate_per_s: float = 1.0, burst: int = 1, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Sleep | None = None) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate = rate_per_s
        self.burst = float(max(1, burst))
        self._clock = clock
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        self._buckets: dict[str, tuple[float, float]] = {}

    def reserve(self, key: str, *, priority: bool = False) -> float:
        """Take the channel's next slot now (``priority``: from its priority lane); how long until it comes."""
        now = self._clock()
        lane = key + PRIORITY_SUFFIX if priority else key
        tokens, ts = self._buckets.get(lane, (None, None))
        tokens, ts, wait = bucket_step(tokens, ts, now, self.rate, self.burst)
        self._buckets[lane] = (tokens, ts)
        if priority:
            self.debit(key)
        if len(self._buckets) > self._PRUNE_AT:
            self._prune(now)
        return wait

    def debit(self, key: str) -> None:
        """The normal lane gives up its next slot (a priority message went first)."""
        tokens, ts = self._buckets.get(key, (None, None))
        tokens, ts, _ = bucket_step(tokens, ts, self._clock(), self.rate, self.burst, debit=True)
        self._buckets[key] = (tokens, ts)

    def _prune(self, now: float) -> None:
        full = [k for k, (t, ts) in self._buckets.items() if t + (now - ts) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]

    async def acquire(self, key: str, *, priority: bool = False) -> float:
        wait = self.reserve(key, priority=priority)
        if wait > 0:
            await self._sleep(wait)
        return wait

    async def hold(self, key: str, seconds: float) -> None:
        tokens, ts = self._buckets.get(key, (None, None))
        tokens, ts, _ = bucket_step(tokens, ts, self._clock(), self.rate, self.burst, hold_s=max(0.0, seconds))
        self._buckets[key] = (tokens, ts)




class RedisPacer:
    """One token bucket per channel in Redis (``keys.alert_pace``), shared by every worker.

    Each slot is one Lua call on one key.  By default the bucket runs on the Redis
    server's clock, so workers' clocks need not agree; ``clock`` overrides it
    (tests).  While Redis fails, sends are paced by ``fallback`` (this process
    only), logged once and counted in ``leadrouter_alert_pacer_fallbacks_total``.
    """

    def __init__(self, redis: AnyRedis, rate_per_s: float = 1.0, burst: int = 1, *,
                 clock: Callable[[], float] | None = None, sleep: Sleep | None = None,
                 fallback: LocalPacer | None = None) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self._clock = clock
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        self._script = register(redis, "pace.lua")
        self._fallback = fallback or LocalPacer(rate_per_s, burst, sleep=self._sleep)
        self._failing = False

    async def _call(self, key: str, op: str, seconds: float) -> float:
        now = "" if self._clock is None else repr(self._clock())
        raw = await self._script(
            keys=[keys.alert_pace(key)],
            args=[repr(self.rate), self.burst, op, repr(seconds), now, keys.PACE_TTL_S * 1000],
        )
        return float(raw.decode() if isinstance(raw, bytes) else raw)

    def _redis_failed(self, exc: Exception) -> None:
        metrics.ALERT_PACER_FALLBACKS.inc()
        if not self._failing:
            log.warning("Slack pacing: Redis failed (%r); pacing this process alone until it answers", exc)
        self._failing = True

    async def reserve(self, key: str, *, priority: bool = False) -> float:
        """Take the channel's next slot (``priority``: from its priority lane); the seconds until it comes."""
        try:
            if priority:
                wait = await self._call(key + PRIORITY_SUFFIX, "take", 0.0)
                await self._call(key, "debit", 0.0)
            else:
                wait = await self._call(key, "take", 0.0)
        except RedisError as exc:
            self._redis_failed(exc)
            return self._fallback.reserve(key, priority=priority)
        if self._failing:
            log.info("Slack pacing: Redis answers again; pacing is shared by every worker again")
            self._failing = False
        return wait

    async def acquire(self, key: str, *, priority: bool = False) -> float:
        wait = await self.reserve(key, priority=priority)
        if wait > 0:
            await self._sleep(wait)
        return wait

    async def hold(self, key: str, seconds: float) -> None:
        await self._fallback.hold(key, seconds)
        try:
            await self._call(key, "hold", max(0.0, seconds))
        except RedisError as exc:
            self._redis_failed(exc)


def pacer_from_settings(alerts: AlertSettings, redis: AnyRedis | None) -> Pacer | None:
    """The pacer the alerts settings ask for (None when ``slack_rate_per_s`` is 0)."""
    if alerts.slack_rate_per_s <= 0:
        return None
    if alerts.slack_pacer == "redis" and redis is not None:
        return RedisPacer(redis, alerts.slack_rate_per_s, alerts.slack_burst)
    return LocalPacer(alerts.slack_rate_per_s, alerts.slack_burst)
