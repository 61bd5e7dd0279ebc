"""Delivery with retries: one message on one channel until it is sent, refused for good, or out of attempts.

:func:`deliver` (an alert) and :func:`deliver_call` (any one-attempt send, e.g. a
digest) retry a :class:`~router.errors.TransientSendError` with full-jitter
exponential backoff (capped, never shorter than a server's ``Retry-After``),
stop at a :class:`~router.errors.PermanentSendError`, and never raise for a
failed send.  The channels themselves are in :mod:`router.alerts.notifiers`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from models.lead import Alert
from router.alerts.notifiers import Notifier
from router.alerts.pacing import Sleep
from router.errors import PermanentSendError, SendError, TransientSendError

log = logging.getLogger(__name__)

OnRetry = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    channel: str
    ok: bool
    attempts: int
    error: str | None = None
    permanent: bool = False


def backoff_delay(
    failed_attempts: int,
    backoff_s: float,
    rng: random.Random,
    retry_after: float | None,
    max_s: float | None = None,
) -> float:
    """Full jitter: ``uniform(0, min(max_s, backoff_s * 2**(failed_attempts-1)))``, never below ``retry_after``."""
    ceiling = backoff_s * 2.0 ** min(max(0, failed_attempts - 1), 62)
    if max_s is not None:
        ceiling = min(ceiling, max_s)
    delay = rng.uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


async def deliver_call(
    attempt: Callable[[], Awaitable[None]],
    channel: str,
    what: str,
    *,
    max_attempts: int,
    backoff_s: float,
    backoff_max_s: float | None = None,
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
    on_retry: OnRetry | None = None,
) -> DeliveryResult:
    """Run ``attempt`` (one send on ``channel``) until it succeeds, fails permanently or runs out.

    After the n-th failed attempt (n = 1, 2, ...) it waits
    ``uniform(0, min(backoff_max_s, backoff_s * 2**(n-1)))`` seconds, or the
    server's ``retry_after`` when that is longer.  A permanent error stops at
    once.  Never raises for a failed send; an unexpected exception from the
    notifier is logged and reported as a permanent failure.  ``what`` names the
    message in logs (``alert asg-42``).  ``on_retry(n, error)`` is awaited after
    the n-th failed attempt when another follows (the console's live feed shows
    "retrying"); it must not raise.
    """
    rng = rng if rng is not None else random.Random()
    max_attempts = max(1, max_attempts)
    error: str | None = None
    for n in range(1, max_attempts + 1):
        retry_after: float | None = None
        try:
            await attempt()
        except PermanentSendError as exc:
            log.warning("%s on %s failed permanently: %s", what, channel, exc)
            return DeliveryResult(channel, False, n, str(exc), True)
        except TransientSendError as exc:
            error, retry_after = str(exc), exc.retry_after
        except SendError as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("%s on %s: unexpected error from the notifier", what, channel)
            return DeliveryResult(channel, False, n, f"{type(exc).__name__}: {exc}", True)
        else:
            return DeliveryResult(channel, True, n)
        if n == max_attempts:
            break
        delay = backoff_delay(n, backoff_s, rng, retry_after, backoff_max_s)
        if on_retry is not None:
            await on_retry(n, error or "")
        log.info(
            "%s on %s failed (attempt %d/%d): %s; retrying in %.2fs", what, channel, n, max_attempts, error, delay
        )
        await sleep(delay)
    log.warning("%s on %s gave up after %d attempts: %s", what, channel, max_attempts, error)
    return DeliveryResult(channel, False, max_attempts, error, False)


async def deliver(
    alert: Alert,
    notifier: Notifier,
    *,
    max_attempts: int,
    backoff_s: float,
    backoff_max_s: float | None = None,
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
    on_retry: OnRetry | None = None,
) -> DeliveryResult:
    """Send ``alert`` on one channel, retrying transient failures (see :func:`deliver_call`)."""
    return await deliver_call(
        lambda: notifier.send(alert),
        notifier.channel,
        f"alert {alert.assignment.assignment_id}",
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        backoff_max_s=backoff_max_s,
        rng=rng,
        sleep=sleep,
        on_retry=on_retry,
    )
