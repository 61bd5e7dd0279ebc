"""SMTP connection reuse (router.alerts.notifiers.SmtpNotifier) against a real aiosmtpd server.

The receiver counts the connections it accepts and can hang up on open ones (as a
server's idle timeout does) or answer MAIL FROM with ``421``; the notifier's idle
clock is driven by the test.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import cast

import aiohttp
import pytest

from models.lead import Alert, Assignment, LeadView, Reason, Rep, RoutingDecision, Stage
from router import metrics
from router.alerts.notifiers import SmtpNotifier, notifiers_from_settings
from router.alerts.render import render_email
from router.alerts.sender import AlertSender
from router.dev.receivers import SmtpReceiver
from router.errors import PermanentSendError, TransientSendError
from router.settings import Settings
from router.storage.store import RedisStore

pytestmark = pytest.mark.integration

TS = 1795372874.0
SENDER = "leadrouter@example.test"


def make_alert(n: int) -> Alert:
    rep = Rep("r1", "Rita Rep", "rita@example.test", "enterprise", None)
    decision = RoutingDecision("enterprise", "big-companies", "v7", ("root",))
    reasons = (Reason("demo_request", 50, "e1", "form_fill", TS, "filled form demo-request", True),)
    return Alert(
        assignment=Assignment(f"asg-{n}", f"lead-{n}", 1, rep, decision, TS),
        lead=LeadView(f"lead-{n}", f"p{n}@acme.test", 104.6, Stage.MQL, {"name": f"P {n}", "company": "Acme"},
                      reasons),
        threshold=100,
        trigger="hand-raiser form demo-request",
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpReceiver]:
    async with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def mailer(smtp: SmtpReceiver, clock: Clock) -> AsyncIterator[SmtpNotifier]:
    notifier = SmtpNotifier(smtp.host, smtp.port, SENDER, False, "", "", 5.0, idle_s=30.0, clock=clock)
    try:
        yield notifier
    finally:
        await notifier.aclose()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def connection_events() -> dict[str, float]:
    """``leadrouter_alert_smtp_connections_total`` by event, now."""
    return {event: metrics.REGISTRY.get_sample_value("leadrouter_alert_smtp_connections_total", {"event": event})
            or 0.0 for event in ("opened", "reused", "replaced", "closed_idle")}


def counted_since(before: dict[str, float]) -> dict[str, float]:
    return {k: v - before[k] for k, v in connection_events().items()}


def delivered(smtp: SmtpReceiver) -> Counter[str]:
    """How many times each alert (by its assignment header) arrived."""
    return Counter(str(m["X-Leadrouter-Assignment"]) for m in smtp.messages)


async def test_alerts_share_one_connection(smtp: SmtpReceiver, mailer: SmtpNotifier) -> None:
    before = connection_events()
    for n in range(10):
        await mailer.send(make_alert(n))
    await until(lambda: len(smtp.messages) == 10)
    assert delivered(smtp) == {f"asg-{n}": 1 for n in range(10)}
    assert smtp.connections == 1 and mailer.opened == 1
    assert smtp.open_connections == 1 and mailer.idle_connections == 1
    assert counted_since(before) == {"opened": 1, "reused": 9, "replaced": 0, "closed_idle": 0}
    await mailer.aclose()  # shutdown closes it (QUIT)
    await until(lambda: smtp.open_connections == 0)
    assert mailer.idle_connections == 0


@pytest.mark.parametrize("goodbye", [None, "421 4.4.2 mail.example.test Error: timeout exceeded"])
async def test_a_connection_the_server_dropped_is_replaced_and_the_alert_arrives_once(
    smtp: SmtpReceiver, mailer: SmtpNotifier, goodbye: str | None
) -> None:
    await mailer.send(make_alert(1))
    assert await smtp.drop_connections(goodbye) == 1  # the server's idle timeout, before ours
    before = connection_events()
    await mailer.send(make_alert(2))
    assert counted_since(before) == {"opened": 1, "reused": 1, "replaced": 1, "closed_idle": 0}
    await until(lambda: len(smtp.messages) == 2)
    assert delivered(smtp) == {"asg-1": 1, "asg-2": 1}
    assert smtp.connections == 2
    await mailer.send(make_alert(3))  # and the new connection is reused in turn
    await until(lambda: len(smtp.messages) == 3)
    assert smtp.connections == 2


async def test_421_on_mail_from_of_a_reused_connection_is_sent_once_on_a_new_one(
    smtp: SmtpReceiver, mailer: SmtpNotifier
) -> None:
    await mailer.send(make_alert(1))
    smtp.fail_mail_next(1, "421 4.7.0 Too many messages on this connection")
    await mailer.send(make_alert(2))
    await until(lambda: len(smtp.messages) == 2)
    assert delivered(smtp) == {"asg-1": 1, "asg-2": 1}
    assert smtp.failed == ["421 4.7.0 Too many messages on this connection"]
    assert smtp.connections == 2


async def test_421_on_a_new_connection_is_left_to_the_senders_retries(
    smtp: SmtpReceiver, mailer: SmtpNotifier
) -> None:
    smtp.fail_mail_next(1, "421 4.3.2 Service not available")
    with pytest.raises(TransientSendError, match="421"):
        await mailer.send(make_alert(1))
    assert smtp.messages == [] and smtp.connections == 1  # not retried here


@pytest.mark.parametrize(("reply", "error"), [("451 4.3.0 Try again later", TransientSendError),
                                              ("554 5.7.1 Rejected", PermanentSendError)])
async def test_a_failure_once_the_message_was_handed_over_is_never_resent_here(
    smtp: SmtpReceiver, mailer: SmtpNotifier, reply: str, error: type[Exception]
) -> None:
    await mailer.send(make_alert(1))
    smtp.fail_next(1, reply)  # answers the message's DATA, on the reused connection
    with pytest.raises(error, match=reply[:3]):
        await mailer.send(make_alert(2))
    assert smtp.failed == [reply] and delivered(smtp) == {"asg-1": 1}
    assert smtp.connections == 1 and mailer.opened == 1  # no second try on a new connection
    await mailer.send(make_alert(3))  # the failed transaction left nothing behind
    await until(lambda: len(smtp.messages) == 2)
    assert delivered(smtp) == {"asg-1": 1, "asg-3": 1}


async def test_idle_connections_close_after_the_idle_setting(
    smtp: SmtpReceiver, mailer: SmtpNotifier, clock: Clock
) -> None:
    await mailer.send(make_alert(1))
    clock.now += 29.9
    assert mailer.close_idle() == 0
    await mailer.send(make_alert(2))  # reused, and idle from now
    assert smtp.connections == 1
    clock.now += 29.9
    assert mailer.close_idle() == 0 and smtp.open_connections == 1
    clock.now += 0.1
    before = connection_events()
    assert mailer.close_idle() == 1
    assert counted_since(before)["closed_idle"] == 1
    await until(lambda: smtp.open_connections == 0)
    await mailer.send(make_alert(3))
    assert smtp.connections == 2
    clock.now += 31  # found expired by the next send: closed, and a new one opened
    await mailer.send(make_alert(4))
    assert smtp.connections == 3
    await until(lambda: smtp.open_connections == 1)
    assert delivered(smtp) == {f"asg-{n}": 1 for n in (1, 2, 3, 4)}


async def test_the_idle_watch_closes_them_without_another_send(
    smtp: SmtpReceiver, mailer: SmtpNotifier, clock: Clock
) -> None:
    await mailer.send(make_alert(1))
    clock.now += 30  # due now: the watch started by the send closes it on its own
    await until(lambda: smtp.open_connections == 0)
    assert mailer.idle_connections == 0


async def test_idle_zero_opens_a_connection_per_message(smtp: SmtpReceiver) -> None:
    notifier = SmtpNotifier(smtp.host, smtp.port, SENDER, False, "", "", 5.0, idle_s=0)
    for n in range(3):
        await notifier.send(make_alert(n))
    await until(lambda: smtp.open_connections == 0)
    assert smtp.connections == 3 and notifier.idle_connections == 0


async def test_the_settings_configure_the_pool(smtp: SmtpReceiver) -> None:
    async with aiohttp.ClientSession() as session:
        for raw, idle in (("", 30.0), ("0", 0.0)):
            env = {"smtp_host": smtp.host, "smtp_port": str(smtp.port)} | ({"smtp_pool_idle_s": raw} if raw else {})
            (notifier,) = notifiers_from_settings(Settings.of(**env).alerts, session)
            assert isinstance(notifier, SmtpNotifier) and notifier.idle_s == idle


async def test_concurrent_sends_from_threads_each_arrive_once(smtp: SmtpReceiver, clock: Clock) -> None:
    notifier = SmtpNotifier(smtp.host, smtp.port, SENDER, False, "", "", 5.0, pool_size=4, clock=clock)
    threads, per_thread = 8, 6
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            try:
                notifier.send_sync(render_email(make_alert(t * 100 + i), SENDER))
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)

    try:
        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()

        def join_all() -> None:
            for th in pool:
                th.join()

        await asyncio.to_thread(join_all)
        assert errors == []
        await until(lambda: len(smtp.messages) == threads * per_thread)
        assert delivered(smtp) == {f"asg-{t * 100 + i}": 1 for t in range(threads) for i in range(per_thread)}
        assert smtp.connections <= threads and notifier.idle_connections <= 4
        # and from the event loop, as the alert agent's instances send
        await asyncio.gather(*(notifier.send(make_alert(1000 + n)) for n in range(12)))
        await until(lambda: len(smtp.messages) == threads * per_thread + 12)
        assert all(count == 1 for count in delivered(smtp).values())
    finally:
        await notifier.aclose()
    await until(lambda: smtp.open_connections == 0)


async def test_the_sender_closes_the_pool_on_shutdown(smtp: SmtpReceiver) -> None:
    """AlertSender.aclose (the worker's Runtime.close, the console, alerts replay) closes the SMTP connections."""
    notifier = SmtpNotifier(smtp.host, smtp.port, SENDER, False, "", "", 5.0)

    async def no_dead_letters(key: str, value: bytes) -> None:
        raise AssertionError("nothing is dead-lettered here")

    sender = AlertSender(cast(RedisStore, None), [notifier], no_dead_letters, max_attempts=1, backoff_s=0.0)
    await notifier.send(make_alert(1))
    assert smtp.open_connections == 1
    await sender.aclose()
    await until(lambda: smtp.open_connections == 0)
    assert notifier.idle_connections == 0


async def test_connections_close_when_their_event_loop_ends_without_aclose(smtp: SmtpReceiver) -> None:
    notifier = SmtpNotifier(smtp.host, smtp.port, SENDER, False, "", "", 5.0)

    async def use() -> None:
        await notifier.send(make_alert(1))
        assert notifier.idle_connections == 1

    await asyncio.to_thread(asyncio.run, use())  # a loop of its own, ended with the watch still waiting
    await until(lambda: smtp.open_connections == 0)
    assert notifier.idle_connections == 0 and smtp.connections == 1
