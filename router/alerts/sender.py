"""Deliver one assignment's alert on every configured channel, once each.

:class:`AlertSender` is what the worker's ``send_alerts`` agent, the digest
timer (:func:`flush_due`, wired by :func:`digest_timer`) and ``leadrouter alerts
replay`` (:mod:`router.cli.alerts`) share:

* Channels already delivered for an assignment (``RedisStore.sent_channels``)
  are skipped, so a Kafka redelivery after a crash, a replay or a second worker
  never alerts a rep twice on one channel.  Each channel is marked sent as soon
  as it is delivered.
* Each remaining channel is delivered concurrently with retries
  (:func:`router.alerts.delivery.deliver`: capped full-jitter backoff, ``Retry-After``
  honoured, permanent errors not retried; the Slack notifiers pace themselves).
* A channel that still fails (permanently, or after the last attempt) is logged,
  counted (``leadrouter_alert_sends_total{outcome="failed"}`` and
  ``leadrouter_alert_dead_letters_total``) and sent to the dead-letter topic as
  ``{"alert_sealed" | "digest", "channel", "error", "attempts", "permanent", "kind", "ts"}``;
  the lead keeps its assignment (with a :class:`~router.storage.live.LiveFeed`, each
  channel's outcome -- sent, retrying, failed -- goes on the console's live feed and the
  dead-lettered record on its dead-letter list, for Replay).  Alerts are sealed under the lead's data key on the assignments
  and dead-letter topics (:mod:`router.storage.pii`); a digest's alerts each under their own
  (``alerts_sealed``).  An alert whose lead was forgotten is dropped, never sent.
* With a :class:`~router.alerts.digest.DigestQueue`, low-priority alerts (the
  configured triggers; never hand-raisers) are queued for the rep's digest instead;
  :func:`flush_due` sends each rep's digest when it is due.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import orjson
from redis.exceptions import RedisError

from models import Alert
from router import metrics
from router.alerts.delivery import DeliveryResult, deliver, deliver_call
from router.alerts.digest import DIGEST_CHANNEL, DigestQueue
from router.alerts.notifiers import ClosableNotifier, DigestNotifier, Notifier, notifiers_from_settings
from router.alerts.pacing import Sleep, pacer_from_settings
from router.alerts.render import Digest
from router.settings import AlertSettings
from router.storage.live import LiveFeed
from router.storage.live_config import LiveFile
from router.storage.pii import SealError, Vault, is_sealed_alert
from router.storage.store import RedisStore
from rules import RoutingConfig

log = logging.getLogger(__name__)

DeadLetter = Callable[[str, bytes], Awaitable[None]]

_DLQ_ATTEMPTS = 3


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


@dataclass(frozen=True, slots=True)
class AlertOutcome:
    """What :meth:`AlertSender.send_alert` did with one alert (or digest)."""

    assignment_id: str
    results: tuple[DeliveryResult, ...] = ()
    already_sent: tuple[str, ...] = ()
    not_configured: tuple[str, ...] = ()  # channels asked for that this sender does not have
    queued: bool = False  # held for the rep's digest instead
    invalid: str | None = None  # the record did not decode (dead-lettered as such)
    forgotten: bool = False  # the lead was forgotten: dropped, nothing sent

    @property
    def ok(self) -> bool:
        """Nothing failed: every channel asked for is delivered (now or before) or queued."""
        return self.invalid is None and not self.not_configured and all(r.ok for r in self.results)


CLAIM_TTL_MS = 15_000  # a dead sender's lease lapses this soon
CLAIM_POLL_S = 0.5


class AlertSender:
    def __init__(self, store: RedisStore, notifiers: Sequence[Notifier], dead_letter: DeadLetter, *,
                 max_attempts: int, backoff_s: float, backoff_max_s: float | None = None,
                 clock: Callable[[], float] = time.time, digest: DigestQueue | None = None,
                 rng: random.Random | None = None, sleep: Sleep = asyncio.sleep, vault: Vault | None = None,
                 live: LiveFeed | None = None) -> None:
        self.store = store
        self.live = live  # the console's live feed and dead-letter list (None: not recorded)
        # Opens sealed alert records and seals what goes to the dead-letter topic (None: plain records only).
        self.vault = vault
        self.notifiers = list(notifiers)
        self.dead_letter = dead_letter
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self.digest = digest
        self.rng = rng
        self.sleep = sleep

    @property
    def channels(self) -> list[str]:
        return [n.channel for n in self.notifiers]

    async def aclose(self) -> None:
        """Close what the channels hold open (the SMTP connection pool); call once on shutdown."""
        for notifier in self.notifiers:
            if isinstance(notifier, ClosableNotifier):
                try:
                    await notifier.aclose()
                except Exception:
                    log.exception("closing the %s channel failed", notifier.channel)

    async def handle(self, raw: bytes) -> list[DeliveryResult]:
        """Deliver one record of the assignments topic; the per-channel results of this attempt."""
        return list((await self.handle_raw(raw)).results)

    async def handle_raw(self, raw: bytes, *, channels: Collection[str] | None = None,
                         digest: bool = True) -> AlertOutcome:
        """Decode and deliver one alert record; an undecodable record is dead-lettered, never raised."""
        try:
            data = orjson.loads(raw)
            if isinstance(data, dict) and is_sealed_alert(data):
                if self.vault is None:
                    raise ValueError("a sealed alert, and this sender has no data-key store")
                opened = await self.vault.open_alert(data)
                if opened is None:  # the lead was forgotten after the alert was published
                    metrics.FORGOTTEN_DROPPED.labels("alerts").inc()
                    return AlertOutcome("", forgotten=True)
                data = opened
            alert = Alert.from_dict(data)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, SealError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("an alert record (%d bytes) did not decode (%s); sent to the dead-letter topic",
                      len(bytes(raw)), error)
            metrics.ALERT_DEAD_LETTERS.labels("none", "invalid").inc()
            await self._dead_letter("invalid", {"raw": bytes(raw).decode(errors="replace"), "channel": "",
                                                "error": error, "attempts": 0, "permanent": True,
                                                "kind": "invalid", "ts": self.clock()})
            return AlertOutcome("", invalid=error)
        return await self.send_alert(alert, channels=channels, digest=digest)

    async def send_alert(self, alert: Alert, *, channels: Collection[str] | None = None,
                         digest: bool = True) -> AlertOutcome:
        """Deliver ``alert`` on each channel (only ``channels`` when given) not delivered yet.

        With ``digest`` and a digest queue, an alert whose trigger is digested and
        that has gone out nowhere yet is queued for the rep's digest instead.
        """
        aid = alert.assignment.assignment_id
        done = await self.store.sent_channels(aid)
        if DIGEST_CHANNEL in done:  # it went into the rep's digest: that was its delivery
            skipped = tuple(n.channel for n in self.notifiers if channels is None or n.channel in channels)
            for ch in skipped:
                metrics.ALERT_SENDS.labels(ch, "already_sent").inc()
            return AlertOutcome(aid, already_sent=skipped or (DIGEST_CHANNEL,))
        if digest and self.digest is not None and not done and self.digest.wants(alert):
            await self.digest.enqueue(alert, self.clock())
            if self.live is not None:
                await self.live.delivery(aid=aid, rep=alert.assignment.rep.rep_id, channel=DIGEST_CHANNEL,
                                         status="queued", lead=alert.assignment.lead_id, now=self.clock())
            return AlertOutcome(aid, queued=True)
        wanted = [n for n in self.notifiers if channels is None or n.channel in channels]
        if alert.kind == "escalation":  # to a manager directly: their Slack DM and inbox, not the team channel
            wanted = [n for n in wanted if n.channel != "slack_webhook"
                      and (n.channel != "email" or alert.assignment.rep.email)]
        missing = tuple(sorted(set(channels or ()) - {n.channel for n in self.notifiers}))
        already = tuple(n.channel for n in wanted if n.channel in done)
        for ch in already:
            metrics.ALERT_SENDS.labels(ch, "already_sent").inc()
        todo = [n for n in wanted if n.channel not in done]
        results = await asyncio.gather(*(self._one(alert, n) for n in todo))
        return AlertOutcome(aid, tuple(results), already, missing)

    async def send_digest(self, digest: Digest, *, channels: Collection[str] | None = None) -> AlertOutcome:
        """Deliver a rep's digest on each channel (that can carry one) not delivered yet."""
        did = digest.digest_id
        done = await self.store.sent_channels(did)
        wanted = [n for n in self.notifiers if isinstance(n, DigestNotifier)
                  and (channels is None or n.channel in channels)]
        missing = tuple(sorted(set(channels or ()) - {n.channel for n in wanted}))
        already = tuple(n.channel for n in wanted if n.channel in done)
        todo = [n for n in wanted if n.channel not in done]
        results = await asyncio.gather(*(self._one_digest(digest, n) for n in todo))
        return AlertOutcome(did, tuple(results), already, missing)

    async def _one(self, alert: Alert, notifier: Notifier) -> DeliveryResult:
        aid = alert.assignment.assignment_id
        holder = uuid.uuid4().hex
        # Copies of one alert record can be in flight at once (a republish after
        # a crash, a replay): one sender holds a short lease on the channel,
        # renewed while it delivers; the others wait for it and then skip the
        # channel if it went out.  A sender that dies loses the lease in seconds.
        while not await self.store.claim_send(aid, notifier.channel, holder, "take", CLAIM_TTL_MS):
            await asyncio.sleep(CLAIM_POLL_S)
            if notifier.channel in await self.store.sent_channels(aid):
                metrics.ALERT_SENDS.labels(notifier.channel, "already_sent").inc()
                return DeliveryResult(notifier.channel, ok=True, attempts=0)
        if notifier.channel in await self.store.sent_channels(aid):
            await self.store.claim_send(aid, notifier.channel, holder, "drop")
            metrics.ALERT_SENDS.labels(notifier.channel, "already_sent").inc()
            return DeliveryResult(notifier.channel, ok=True, attempts=0)
        renew = asyncio.create_task(self._keep_claim(aid, notifier.channel, holder))
        rep_id, live = alert.assignment.rep.rep_id, self.live

        async def retrying(n: int, error: str) -> None:
            if live is not None:
                await live.delivery(aid=aid, rep=rep_id, channel=notifier.channel, status="retrying", attempt=n,
                                    error=error, lead=alert.assignment.lead_id, now=self.clock())

        try:
            result = await deliver(alert, notifier, max_attempts=self.max_attempts, backoff_s=self.backoff_s,
                                   backoff_max_s=self.backoff_max_s, rng=self.rng, sleep=self.sleep,
                                   on_retry=retrying)
        finally:
            renew.cancel()
        if live is not None:
            await live.delivery(aid=aid, rep=rep_id, channel=notifier.channel,
                                status="sent" if result.ok else "failed", attempt=result.attempts,
                                error=result.error, lead=alert.assignment.lead_id, now=self.clock())
        if not result.ok:
            await self.store.claim_send(aid, notifier.channel, holder, "drop")
        if result.ok:
            now = self.clock()
            await self.store.mark_sent(aid, notifier.channel, now)
            metrics.ALERT_SENDS.labels(notifier.channel, "sent").inc()
            if alert.event_ts:
                metrics.EVENT_TO_ALERT_SECONDS.labels(notifier.channel).observe(max(0.0, now - alert.event_ts))
            return result
        body = await self.sealed_alert_body(alert)
        # The record's key: the sealed alert's subject (a keyed hash), not the assignment id (a plain digest).
        sealed = (body or {}).get("alert_sealed")
        key = str(sealed["subject"]) if isinstance(sealed, dict) else aid
        await self._failed(f"alert {aid} to {alert.assignment.rep.name}", key, result, body,
                           meta=(aid, rep_id, alert.assignment.lead_id))
        return result

    async def sealed_alert_body(self, alert: Alert) -> dict[str, object] | None:
        """The alert as a dead-letter record carries it (sealed); None when its lead was forgotten."""
        if self.vault is None:
            return {"alert": alert.to_dict()}
        sealed = await self.vault.seal_alert(alert.to_dict())
        return None if sealed is None else {"alert_sealed": sealed}

    async def _keep_claim(self, aid: str, channel: str, holder: str) -> None:
        while True:
            await asyncio.sleep(CLAIM_TTL_MS / 3000)
            await self.store.claim_send(aid, channel, holder, "renew", CLAIM_TTL_MS)

    async def _one_digest(self, digest: Digest, notifier: Notifier) -> DeliveryResult:
        did = digest.digest_id
        assert isinstance(notifier, DigestNotifier)
        sender = notifier
        result = await deliver_call(lambda: sender.send_digest(digest), notifier.channel, f"digest {did}",
                                    max_attempts=self.max_attempts, backoff_s=self.backoff_s,
                                    backoff_max_s=self.backoff_max_s, rng=self.rng, sleep=self.sleep)
        if self.live is not None:
            await self.live.delivery(aid=did, rep=digest.rep.rep_id, channel=notifier.channel,
                                     status="sent" if result.ok else "failed", attempt=result.attempts,
                                     error=result.error, now=self.clock())
        if result.ok:
            await self.store.mark_sent(did, notifier.channel, self.clock())
            metrics.ALERT_SENDS.labels(notifier.channel, "sent").inc()
            return result
        body: dict[str, object] = {"digest": digest.to_dict()}
        if self.vault is not None:
            sealed = [await self.vault.seal_alert(a.to_dict()) for a in digest.alerts]
            body = {"digest": {**digest.to_dict(), "alerts": []}, "alerts_sealed": [a for a in sealed if a]}
        await self._failed(f"digest {did} ({len(digest.alerts)} alerts) to {digest.rep.name}", did, result, body,
                           meta=(did, digest.rep.rep_id, ""))
        return result

    async def open_digest_record(self, record: Mapping[str, object]) -> Digest:
        """A dead-lettered digest with its sealed alerts opened (forgotten leads' alerts left out)."""
        raw = record.get("digest")
        if not isinstance(raw, Mapping):
            raise ValueError("the record's 'digest' is not an object")
        alerts: list[dict[str, object]] = []
        for item in record.get("alerts_sealed") or []:  # type: ignore[attr-defined]
            if self.vault is None:
                raise ValueError("a sealed digest, and this sender has no data-key store")
            opened = await self.vault.open_alert(item)
            if opened is not None:
                alerts.append(opened)
        return Digest.from_dict({**raw, "alerts": [*list(raw.get("alerts") or []), *alerts]})

    async def _failed(self, what: str, key: str, result: DeliveryResult,
                      body: dict[str, object] | None, *, meta: tuple[str, str, str] = ("", "", "")) -> None:
        """Count, log and dead-letter a failed channel; ``meta`` is (alert or digest id, rep id, lead id)."""
        kind = "permanent" if result.permanent else "exhausted"
        metrics.ALERT_SENDS.labels(result.channel, "failed").inc()
        metrics.ALERT_DEAD_LETTERS.labels(result.channel, kind).inc()
        how = ("failed permanently (not retried)" if result.permanent
               else f"failed after {result.attempts} attempt(s)")
        log.error("%s on %s %s: %s; sent to the dead-letter topic (the lead keeps its assignment; "
                  "`leadrouter alerts replay` resends it)", what, result.channel, how, result.error)
        if body is None:  # the lead was forgotten meanwhile: nothing to keep
            metrics.FORGOTTEN_DROPPED.labels("alerts").inc()
            return
        record: dict[str, object] = {**body, "channel": result.channel, "error": result.error,
                                     "attempts": result.attempts, "permanent": result.permanent, "kind": kind,
                                     "ts": self.clock()}
        await self._dead_letter(key, record)
        if self.live is not None:
            aid, rep_id, lead_id = meta
            await self.live.dead_letter(orjson.dumps(record), aid=aid, rep=rep_id, channel=result.channel, kind=kind,
                                        error=result.error, attempts=result.attempts, lead=lead_id, now=self.clock())

    async def _dead_letter(self, key: str, record: dict[str, object]) -> None:
        value = orjson.dumps(record)
        for attempt in range(1, _DLQ_ATTEMPTS + 1):
            try:
                await self.dead_letter(key, value)
                return
            except Exception as exc:
                if attempt == _DLQ_ATTEMPTS:
                    log.critical("could not write to the dead-letter topic (%r); the record (sealed) is only in "
                                 "this log: %s", exc, value.decode(errors="replace"))
                    return
                await self.sleep(1.0)


def build_sender(alerts: AlertSettings, store: RedisStore, session: aiohttp.ClientSession,
                 dead_letter: DeadLetter, *, team_webhooks: Mapping[str, str] | None = None,
                 vault: Vault | None = None) -> AlertSender:
    """The sender the alerts settings describe: notifiers (Slack paced per channel), retries and digests."""
    pacer = pacer_from_settings(alerts, store.redis)
    notifiers = notifiers_from_settings(alerts, session, team_webhooks, pacer=pacer)
    if not notifiers:
        log.warning("no alert channel is configured: set LEADROUTER_SLACK_WEBHOOK_URL, "
                    "LEADROUTER_SLACK_BOT_TOKEN or LEADROUTER_SMTP_HOST")
    digest = DigestQueue.from_settings(alerts, store)
    return AlertSender(store, notifiers, dead_letter, max_attempts=alerts.max_attempts,
                       backoff_s=alerts.backoff_s, backoff_max_s=alerts.backoff_max_s,
                       digest=digest, vault=vault, live=LiveFeed(store.redis))


@dataclass(frozen=True, slots=True)
class DigestReport:
    """One digest :func:`flush_due` sent (or tried to)."""

    rep_id: str
    digest_id: str
    alerts: int
    results: tuple[DeliveryResult, ...]
    already_sent: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


async def flush_due(sender: AlertSender, *, now: float | None = None, limit: int = 100) -> list[DigestReport]:
    """Send every digest that is due: one summary message per rep, on each channel, once.

    Safe on any number of workers at once (leases) and after a crash (the batch
    is resumed and channels already delivered are skipped).  Redis errors for one
    rep are logged and that rep is tried again at the next call.
    """
    queue = sender.digest
    if queue is None:
        return []
    now = sender.clock() if now is None else now
    token = uuid.uuid4().hex
    reports: list[DigestReport] = []
    for rep_id in await queue.due(now, limit):
        try:
            claim = await queue.claim(rep_id, now, token)
            if claim.status == "busy":
                continue  # another worker is sending it
            if claim.status == "empty":
                await queue.reschedule(rep_id, now)
                continue
            if not claim.alerts:  # nothing in it decoded (logged)
                await queue.finish(rep_id, token, now)
                continue
            digest = claim.digest()
            outcome = await sender.send_digest(digest)
            await queue.finish(rep_id, token, now)
        except RedisError as exc:
            log.error("digest for rep %s not sent this time: Redis failed (%r); it stays due", rep_id, exc)
            continue
        report = DigestReport(rep_id, digest.digest_id, len(digest.alerts), outcome.results, outcome.already_sent)
        metrics.ALERT_DIGEST.labels("sent" if report.ok else "failed").inc()
        metrics.ALERT_DIGEST.labels("alerts_sent").inc(len(digest.alerts))
        log.info("digest %s for %s: %d alert(s) on %s", digest.digest_id, digest.rep.name, len(digest.alerts),
                 ", ".join(f"{r.channel} {'ok' if r.ok else 'failed'}" for r in outcome.results) or "no channel")
        reports.append(report)
    return reports


def digest_timer(get_sender: Callable[[], AlertSender | None],
                 clock: Callable[[], float] = time.time) -> Callable[[], Awaitable[None]]:
    """The body of the worker's digest timer; the worker wires it with one line::

        app.timer(interval=digest.check_interval_s(settings.alerts), name="alert_digests")(
            digest_timer(lambda: rt._sender))

    It does nothing until the ``send_alerts`` agent has built the sender, or when
    no trigger is digested, and never raises (a failure is logged; the next tick
    tries again).
    """

    async def flush_digests() -> None:
        sender = get_sender()
        if sender is None or sender.digest is None:
            return
        try:
            await flush_due(sender, now=clock())
        except Exception:
            log.exception("digest timer: flushing due digests failed; trying again at the next tick")

    return flush_digests
