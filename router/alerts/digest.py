"""Rep digests: low-priority alerts batched into one summary per rep per interval.

``LEADROUTER_DIGEST_TRIGGERS`` (e.g. ``threshold,account_intent``) names the
triggers whose alerts wait; ``LEADROUTER_DIGEST_INTERVAL_S`` (default 3600) is the
least time between two digests to one rep.  Hand-raisers are never digested, and
neither is anything whose trigger is not recognised (SLA reminders, reassignments):
when in doubt an alert goes out at once.

How it works (Redis; a rep's keys share the hash tag ``{D:<rep_id>}``):

* :meth:`DigestQueue.enqueue` (called by :class:`~router.alerts.sender.AlertSender`
  instead of sending) puts the alert in the rep's queue hash under its
  assignment id (a redelivery changes nothing), schedules the rep in
  ``keys.DIGEST_DUE`` at ``now + interval`` unless already scheduled, and marks
  the assignment's channel ``digest`` sent, so a redelivered alert is not
  queued or sent again once its digest went out.
* :func:`router.alerts.sender.flush_due`, run by a faust timer on every worker,
  takes the reps that are due, and for each claims the queue in one Lua call: the queue becomes the
  rep's *batch* (numbered ``seq``) under a lease, so two workers never send the
  same digest, and a worker that dies mid-send leaves the batch for the next one
  after the lease.  The digest ``digest:<rep>:<seq>`` goes out through the
  sender on every channel that can carry one, each marked sent under the digest
  id (a resumed digest skips channels already delivered); failures are
  dead-lettered like alerts.  Then the batch is dropped and the rep is
  rescheduled an interval later if more alerts arrived meanwhile.

This module is the queue (what waits, and the Redis side); sending what is due
is the sender's (:mod:`router.alerts.sender`), which uses the queue.  Wiring: the
worker needs one timer line (see :func:`router.alerts.sender.digest_timer`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from models import Alert
from router import metrics
from router.alerts.render import Digest
from router.settings import DIGEST_TRIGGERS, AlertSettings
from router.storage import keys
from router.storage.scripts import register
from router.storage.store import RedisStore

log = logging.getLogger(__name__)

DIGEST_CHANNEL = "digest"
"""The pseudo-channel an assignment is marked sent on once its alert is queued for a digest."""

TRIGGERS = ("hand_raiser", "threshold", "account_intent")
DIGESTIBLE: frozenset[str] = frozenset(DIGEST_TRIGGERS)
LEASE_S = 600.0


def trigger_kind(alert: Alert) -> str:
    """``hand_raiser``, ``threshold``, ``account_intent`` or ``other``, from the alert's trigger text.

    Keyed on the texts of ``router.worker.pipeline.trigger_text``; anything else (SLA
    reminders, reassignments, escalations) is ``other`` and never digested.
    """
    text = alert.trigger.strip().lower()
    if text.startswith(("hand-raiser", "hand_raiser", "hand raiser")):
        return "hand_raiser"
    if text.startswith(("account intent", "account_intent")):
        return "account_intent"
    if text.startswith("score ") and "crossed the sales-ready threshold" in text:
        return "threshold"
    return "other"





ClaimStatus = Literal["ok", "empty", "busy"]
_NOT_OK: dict[str, ClaimStatus] = {"empty": "empty", "busy": "busy"}  # what the claim script answers besides ok


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of :meth:`DigestQueue.claim`: ``ok`` (a batch to send), ``empty`` or ``busy``."""

    status: ClaimStatus
    rep_id: str
    seq: int = 0
    since: float | None = None
    until: float = 0.0
    alerts: tuple[Alert, ...] = ()

    def digest(self) -> Digest:
        ordered = sorted(self.alerts, key=lambda a: a.assignment.ts)
        since = self.since if self.since is not None else ordered[0].assignment.ts
        return Digest(digest_id=f"digest:{self.rep_id}:{self.seq}", rep=ordered[-1].assignment.rep,
                      alerts=tuple(ordered), since=since, until=self.until)


class DigestQueue:
    """The Redis side of digests: queue, schedule, claim and finish (see the module doc)."""

    def __init__(self, store: RedisStore, triggers: Iterable[str], interval_s: float, *,
                 max_items: int = 25, lease_s: float = LEASE_S) -> None:
        self.store = store
        self.redis = store.redis
        self.triggers = frozenset(triggers) & DIGESTIBLE
        self.interval_s = max(0.0, interval_s)
        self.max_items = max(1, max_items)
        self.lease_s = lease_s
        self._claim = register(self.redis, "digest_claim.lua")
        self._finish = register(self.redis, "digest_finish.lua")

    @classmethod
    def from_settings(cls, alerts: AlertSettings, store: RedisStore) -> DigestQueue | None:
        """The queue the alerts settings ask for, or None when no trigger is digested."""
        triggers = alerts.digest_triggers
        if not triggers:
            return None
        return cls(store, triggers, alerts.digest_interval_s, max_items=alerts.digest_max_items)

    def wants(self, alert: Alert) -> bool:
        """Whether ``alert`` waits for the digest (its trigger is digested; never a hand-raiser)."""
        kind = trigger_kind(alert)
        return kind != "hand_raiser" and kind in self.triggers

    async def enqueue(self, alert: Alert, now: float) -> bool:
        """Queue ``alert`` for its rep's digest; False when it was already queued (a redelivery)."""
        asg = alert.assignment
        added = await self.redis.hsetnx(keys.digest_queue(asg.rep.rep_id), asg.assignment_id,
                                        orjson.dumps(alert.to_dict()))
        await self.redis.zadd(keys.DIGEST_DUE, {asg.rep.rep_id: now + self.interval_s}, nx=True)
        await self.store.mark_sent(asg.assignment_id, DIGEST_CHANNEL, now)
        metrics.ALERT_DIGEST.labels("queued" if added else "already_queued").inc()
        log.info("alert %s for %s queued for the rep's digest (trigger %s)", asg.assignment_id, asg.rep.name,
                 trigger_kind(alert))
        return bool(added)

    async def due(self, now: float, limit: int = 100) -> list[str]:
        """Rep ids whose digest is due at ``now``, earliest first."""
        raw = await self.redis.zrangebyscore(keys.DIGEST_DUE, "-inf", repr(now), start=0, num=limit)
        return [x.decode() if isinstance(x, bytes) else str(x) for x in raw]

    async def pending(self, rep_id: str) -> int:
        """Alerts queued for the rep's next digest (not counting one being sent)."""
        return int(await self.redis.hlen(keys.digest_queue(rep_id)))

    async def claim(self, rep_id: str, now: float, token: str) -> Claim:
        """The rep's digest to send under ``token``'s lease (status ``ok``), or ``empty`` / ``busy``."""
        raw: list[Any] = await self._claim(keys=keys.digest_keys(rep_id),
                                           args=[repr(now), repr(now + self.lease_s), token])
        status = _s(raw[0])
        if status != "ok":
            return Claim(_NOT_OK[status], rep_id)
        seq, since, until = int(_s(raw[1]) or 0), _s(raw[2]), _s(raw[3])
        alerts: list[Alert] = []
        pairs = raw[4:]
        for aid, body in zip(pairs[0::2], pairs[1::2], strict=True):
            try:
                alerts.append(Alert.from_dict(orjson.loads(body)))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.error("digest for rep %s: queued alert %s does not decode (%s); left out", rep_id, _s(aid), exc)
        return Claim("ok", rep_id, seq, float(since) if since else None, float(until or now), tuple(alerts))

    async def finish(self, rep_id: str, token: str, now: float) -> bool:
        """Drop the sent batch and reschedule the rep; False when the lease was lost to another worker."""
        done = bool(await self._finish(keys=keys.digest_keys(rep_id), args=[token]))
        await self.reschedule(rep_id, now)
        return done

    async def reschedule(self, rep_id: str, now: float) -> None:
        """Unschedule the rep, then schedule it an interval out if alerts arrived meanwhile.

        In this order (remove, then look) an alert queued concurrently is never
        left without a schedule: either it scheduled itself after the removal, or
        the look sees it.
        """
        await self.redis.zrem(keys.DIGEST_DUE, rep_id)
        if await self.pending(rep_id):
            await self.redis.zadd(keys.DIGEST_DUE, {rep_id: now + self.interval_s}, nx=True)


def check_interval_s(alerts: AlertSettings) -> float:
    """How often the digest timer looks for due digests: a minute, or sooner for short intervals."""
    return max(1.0, min(60.0, alerts.digest_interval_s / 4))


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
