"""Deliver one assignment's alert on every configured channel, once each."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence

import orjson

from models import Alert
from router import metrics
from router.alerts import DeliveryResult, Notifier, deliver
from router.config import LiveFile
from router.store import RedisStore
from rules import RoutingConfig

log = logging.getLogger(__name__)

DeadLetter = Callable[[str, bytes], Awaitable[None]]


class TeamWebhooks(Mapping[str, str]):
    """Team -> incoming-webhook URL, read live from the routing config in force."""

    def __init__(self, routing: LiveFile[RoutingConfig]) -> None:
        self.routing = routing

    def _urls(self) -> dict[str, str]:
        return {name: t.slack_webhook for name, t in self.routing.current.teams.items() if t.slack_webhook}

    def __getitem__(self, key: str) -> str:
        return self._urls()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._urls())

    def __len__(self) -> int:
        return len(self._urls())


class AlertSender:
    def __init__(self, store: RedisStore, notifiers: Sequence[Notifier], dead_letter: DeadLetter, *,
                 max_attempts: int, backoff_s: float, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.notifiers = list(notifiers)
        self.dead_letter = dead_letter
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.clock = clock

    async def handle(self, raw: bytes) -> list[DeliveryResult]:
        alert = Alert.from_dict(orjson.loads(raw))
        aid = alert.assignment.assignment_id
        done = await self.store.sent_channels(aid)
        todo = [n for n in self.notifiers if n.channel not in done]
        for n in self.notifiers:
            if n.channel in done:
                metrics.ALERT_SENDS.labels(n.channel, "already_sent").inc()
        results = await asyncio.gather(*(self._one(alert, n) for n in todo))
        return list(results)

    async def _one(self, alert: Alert, notifier: Notifier) -> DeliveryResult:
        aid = alert.assignment.assignment_id
        result = await deliver(alert, notifier, max_attempts=self.max_attempts, backoff_s=self.backoff_s)
        if result.ok:
            now = self.clock()
            await self.store.mark_sent(aid, notifier.channel, now)
            metrics.ALERT_SENDS.labels(notifier.channel, "sent").inc()
            if alert.event_ts:
                metrics.EVENT_TO_ALERT_SECONDS.labels(notifier.channel).observe(max(0.0, now - alert.event_ts))
            return result
        metrics.ALERT_SENDS.labels(notifier.channel, "failed").inc()
        log.error("alert %s to %s on %s failed after %d attempt(s): %s; sent to the dead-letter topic "
                  "(the lead keeps its assignment)", aid, alert.assignment.rep.name, notifier.channel,
                  result.attempts, result.error)
        await self.dead_letter(aid, orjson.dumps({
            "alert": alert.to_dict(),
            "channel": notifier.channel,
            "error": result.error,
            "attempts": result.attempts,
            "permanent": result.permanent,
            "ts": self.clock(),
        }))
        return result
