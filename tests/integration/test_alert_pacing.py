"""Slack pacing against real Redis and the local Slack receiver: about one message per second per channel.

The Redis token bucket (one Lua call per message) is shared by every sender
that uses the same Redis, as workers do; a 429 holds the channel for all of them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from redis.asyncio import Redis

from models.lead import Alert, Assignment, LeadView, Reason, Rep, RoutingDecision, Stage
from router import metrics
from router.alerts.notifiers import SlackBotNotifier, SlackWebhookNotifier
from router.alerts.pacing import LocalPacer, RedisPacer, pace_key
from router.alerts.sender import AlertSender
from router.dev.receivers import SlackReceiver
from router.storage import keys
from router.storage.store import RedisStore

pytestmark = pytest.mark.integration

TS = 1795372874.0


def alert(n: int, team: str = "enterprise") -> Alert:
    rep = Rep("r1", "Rita Rep", "rita@example.test", team, "U0REP1")
    decision = RoutingDecision(team, "big-companies", "v7", ("root",))
    reason = Reason("demo_request", 50, f"e{n}", "form_fill", TS, "filled form demo-request", True)
    return Alert(
        assignment=Assignment(f"asg-{n}", f"lead-{n}", 1, rep, decision, TS),
        lead=LeadView(f"lead-{n}", f"p{n}@acme.test", 104.6, Stage.MQL, {"name": f"Person {n}"}, (reason,)),
        threshold=100,
        trigger="hand-raiser: filled form demo-request",
    )


class FakeClock:
    def __init__(self, now: float = 5000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.fixture
async def slack() -> AsyncIterator[SlackReceiver]:
    receiver = SlackReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


async def _noop_dead_letter(key: str, value: bytes) -> None:
    raise AssertionError(f"nothing should be dead-lettered here: {key} {value[:200]!r}")


async def test_redis_bucket_two_workers_share_one_per_second_fake_clock(redis: Redis) -> None:
    clock = FakeClock()
    a = RedisPacer(redis, 1.0, 1, clock=clock, sleep=clock.sleep)
    b = RedisPacer(redis, 1.0, 1, clock=clock, sleep=clock.sleep)
    key = pace_key("webhook", "https://hooks.slack.test/services/T/B/C")
    waits = [await (a if i % 2 else b).acquire(key) for i in range(6)]
    # Six messages to one channel from two workers: the last goes out 5 s after the first.
    assert waits == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert await a.acquire(pace_key("dm", "U0OTHER")) == 0.0  # other channels keep their own budget
    clock.now += 10.0  # the queue drains and the bucket refills (to one message: burst 1)
    assert await b.acquire(key) == 0.0
    assert await a.acquire(key) == pytest.approx(1.0)
    # One key per channel, expiring when idle.
    ttl = await redis.pttl(keys.alert_pace(key))
    assert 0 < ttl <= (keys.PACE_TTL_S + 5) * 1000


async def test_redis_bucket_hold_delays_every_worker(redis: Redis) -> None:
    clock = FakeClock()
    a = RedisPacer(redis, 1.0, 1, clock=clock, sleep=clock.sleep)
    b = RedisPacer(redis, 1.0, 1, clock=clock, sleep=clock.sleep)
    assert await a.acquire("dm:U1") == 0.0
    clock.now += 5.0
    await a.hold("dm:U1", 30.0)  # Slack: 429, Retry-After: 30
    assert await b.acquire("dm:U1") == pytest.approx(30.0)


async def test_two_senders_share_a_channels_budget_in_real_time(redis: Redis, slack: SlackReceiver) -> None:
    rate, per_sender = 5.0, 3
    store = RedisStore(redis)
    async with aiohttp.ClientSession() as s1, aiohttp.ClientSession() as s2:
        senders = [
            AlertSender(store, [SlackWebhookNotifier(session, slack.webhook_url("sales"), {}, 5.0,
                                                     pacer=RedisPacer(redis, rate, 1))],
                        _noop_dead_letter, max_attempts=2, backoff_s=0.01)
            for session in (s1, s2)
        ]
        started = time.monotonic()
        outcomes = await asyncio.gather(*(
            senders[i % 2].send_alert(alert(i)) for i in range(2 * per_sender)
        ))
        took = time.monotonic() - started
    assert all(o.ok and len(o.results) == 1 for o in outcomes)
    arrivals = sorted(m.received_at for m in slack.messages)
    assert len(arrivals) == 2 * per_sender
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # N messages at `rate`/s take at least (N-1)/rate seconds, whichever sender sent them.
    assert arrivals[-1] - arrivals[0] >= (2 * per_sender - 1) / rate - 0.05, gaps
    assert min(gaps) >= 1 / rate - 0.05, gaps
    assert took < 5.0


async def test_one_message_per_second_to_a_reps_dm(redis: Redis, slack: SlackReceiver) -> None:
    store = RedisStore(redis)
    async with aiohttp.ClientSession() as session:
        bot = SlackBotNotifier(session, slack.api_url, "xoxb-test", 5.0, pacer=RedisPacer(redis, 1.0, 1))
        sender = AlertSender(store, [bot], _noop_dead_letter, max_attempts=1, backoff_s=0.01)
        await asyncio.gather(*(sender.send_alert(alert(i)) for i in range(3)))
    arrivals = sorted(m.received_at for m in slack.messages)
    assert len(arrivals) == 3
    assert arrivals[-1] - arrivals[0] >= 2.0 - 0.05  # 3 messages at 1/s: at least 2 s


async def test_429_retry_after_holds_the_channel_for_other_senders(redis: Redis, slack: SlackReceiver) -> None:
    store = RedisStore(redis)
    slack.fail_next(1, status=429, retry_after=1, endpoint="webhook")
    async with aiohttp.ClientSession() as s1, aiohttp.ClientSession() as s2:
        first, second = (
            AlertSender(store, [SlackWebhookNotifier(session, slack.webhook_url("sales"), {}, 5.0,
                                                     pacer=RedisPacer(redis, 50.0, 1))],
                        _noop_dead_letter, max_attempts=3, backoff_s=0.01)
            for session in (s1, s2)
        )
        task = asyncio.create_task(first.send_alert(alert(1)))
        deadline = time.monotonic() + 5
        while not slack.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        limited_at = slack.requests[0].received_at
        assert slack.requests[0].status == 429
        other = await second.send_alert(alert(2))  # another worker, same channel
        retried = await task
    assert retried.results[0].ok and retried.results[0].attempts == 2
    assert other.results[0].ok and other.results[0].attempts == 1
    accepted = [m.received_at - limited_at for m in slack.messages]
    assert len(accepted) == 2
    assert min(accepted) >= 1.0 - 0.05  # nobody posted to the channel during Retry-After


async def test_pacing_survives_a_redis_outage_with_the_local_pacer() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    clock = FakeClock()
    before = _metric("leadrouter_alert_pacer_fallbacks_total")
    try:
        pacer = RedisPacer(dead, 1.0, 1, clock=clock, sleep=clock.sleep,
                           fallback=LocalPacer(1.0, 1, clock=clock, sleep=clock.sleep))
        waits = [await pacer.acquire("dm:U1") for _ in range(3)]
    finally:
        await dead.aclose()
    assert waits == [0.0, 1.0, 2.0]
    assert _metric("leadrouter_alert_pacer_fallbacks_total") - before == 3


def _metric(name: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name)
    return value or 0.0


async def test_a_hand_raiser_jumps_the_channels_queue_and_the_queue_moves_back_one_slot(redis: Redis) -> None:
    """Issue 16.2: a real lead's alert must not queue behind a burst on the same channel (priority lane)."""
    clock = FakeClock()
    a = RedisPacer(redis, 1.0, 1, clock=clock, sleep=clock.sleep)
    b = RedisPacer(redis, 1.0, 1, clock=clock, sleep=clock.sleep)
    key = pace_key("webhook", "https://hooks.slack.test/services/T/B/PRIO")
    queued = [await a.acquire(key) for _ in range(30)]  # thirty other messages already waiting
    assert queued[-1] == pytest.approx(29.0)
    assert await b.acquire(key, priority=True) == 0.0  # the hand-raiser goes out now
    assert await b.acquire(key, priority=True) == pytest.approx(1.0)  # priority messages are paced too
    assert await a.acquire(key) == pytest.approx(32.0)  # the normal lane gave up two slots
    clock.now += 40.0
    assert await a.acquire(key) == 0.0 and await b.acquire(key, priority=True) == 0.0


async def test_local_pacer_priority_lane() -> None:
    clock = FakeClock()
    pacer = LocalPacer(1.0, 1, clock=clock, sleep=clock.sleep)
    assert [pacer.reserve("dm:U2") for _ in range(3)] == pytest.approx([0.0, 1.0, 2.0])
    assert pacer.reserve("dm:U2", priority=True) == 0.0
    assert pacer.reserve("dm:U2") == pytest.approx(4.0)
