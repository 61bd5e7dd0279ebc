"""The fetch-wait governor: short while messages flow, long once idle, short again on the first message."""

from __future__ import annotations

from dataclasses import dataclass

from router.worker.fetchwait import FetchWaitGovernor


@dataclass
class Fetcher:
    _fetch_max_wait_ms: int = 1500


@dataclass
class Consumer:
    """The two attributes of aiokafka's AIOKafkaConsumer the governor sets (the fetcher exists once started)."""

    _fetch_max_wait_ms: int = 1500
    _fetcher: Fetcher | None = None


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_lengthens_the_wait_and_the_first_message_shortens_it() -> None:
    clock = Clock()
    gov = FetchWaitGovernor(busy_ms=10, idle_ms=100, idle_after_s=1.0, clock=clock)
    consumer = Consumer()
    gov.attach(consumer)
    assert consumer._fetch_max_wait_ms == 10  # before start: the consumer's own setting
    consumer._fetcher = Fetcher(_fetch_max_wait_ms=10)  # started

    clock.now += 0.9
    assert gov.tick() == 10  # not idle long enough
    clock.now += 0.2
    assert gov.tick() == 100
    assert consumer._fetcher._fetch_max_wait_ms == 100 and consumer._fetch_max_wait_ms == 100

    gov.saw(3)  # a batch arrived: short at once, not on the next tick
    assert gov.current == 10 and consumer._fetcher._fetch_max_wait_ms == 10
    clock.now += 0.5
    assert gov.tick() == 10
    gov.saw(0)  # an empty batch is not a message
    clock.now += 0.6
    assert gov.tick() == 100


def test_a_zero_idle_wait_keeps_the_short_wait() -> None:
    clock = Clock()
    gov = FetchWaitGovernor(busy_ms=10, idle_ms=0, idle_after_s=1.0, clock=clock)
    consumer = Consumer(_fetcher=Fetcher())
    gov.attach(consumer)
    clock.now += 3600
    assert gov.tick() == 10 and consumer._fetch_max_wait_ms == 10
