"""The consumer's fetch wait, short while messages flow and longer when the worker is idle.

Some Kafka-compatible brokers (Tansu among them) hold every fetch for the full
``fetch_max_wait_ms`` even when data is waiting, so the worker sets a short
wait (``LEADROUTER_FETCH_MAX_WAIT_MS``, 10 ms) to keep latency low.  Idle, that
is about 100 empty fetches a second: measured here, 0.065 cores of an idle
worker and as much of the broker, nearly all of it the consumer thread's fetch
loop.  The governor lengthens the wait to ``LEADROUTER_FETCH_IDLE_WAIT_MS``
once no message came for ``LEADROUTER_FETCH_IDLE_AFTER_S`` and shortens it
again on the first message (so a burst pays the long wait at most once).  A
broker that answers as soon as data arrives (Kafka) adds no latency either way.

aiokafka reads the wait from its fetcher each round; the governor sets that
attribute (an int, from the event loop's thread; the consumer thread reads it on
its next round).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["FetchWaitGovernor"]


class FetchWaitGovernor:
    def __init__(self, busy_ms: int, idle_ms: int, idle_after_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.busy_ms = busy_ms
        self.idle_ms = idle_ms if idle_ms > 0 else busy_ms
        self.idle_after_s = idle_after_s
        self.clock = clock
        self.last_seen = clock()
        self.current = busy_ms
        self._consumers: list[Any] = []  # aiokafka AIOKafkaConsumer (their fetcher exists once started)

    def attach(self, consumer: Any) -> None:
        """Govern this aiokafka consumer's fetch wait (set as busy until it has been idle)."""
        consumer._fetch_max_wait_ms = self.busy_ms
        self._consumers.append(consumer)

    def saw(self, messages: int = 1) -> None:
        """Messages arrived: back to the short wait at once."""
        if messages <= 0:
            return
        self.last_seen = self.clock()
        if self.current != self.busy_ms:
            self._apply(self.busy_ms)

    def tick(self) -> int:
        """Called periodically: the long wait once idle long enough.  Returns the wait now in force."""
        if self.current != self.idle_ms and self.clock() - self.last_seen >= self.idle_after_s:
            self._apply(self.idle_ms)
        return self.current

    def _apply(self, wait_ms: int) -> None:
        self.current = wait_ms
        for consumer in self._consumers:
            consumer._fetch_max_wait_ms = wait_ms
            fetcher = getattr(consumer, "_fetcher", None)
            if fetcher is not None:
                fetcher._fetch_max_wait_ms = wait_ms
