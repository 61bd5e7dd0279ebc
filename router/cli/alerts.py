"""``leadrouter alerts replay``: resend dead-lettered alerts.

Reads the dead-letter topic (``LEADROUTER_TOPIC_DEAD_LETTER``) as the consumer
group ``leadrouter-alerts-replay``: the first replay starts at the beginning,
every later one where the last stopped (offsets are committed only for records
it dealt with, and never on ``--dry-run``), so a replay is not repeated.  It
reads up to the end of the topic as it was when it started: an alert that fails
again is dead-lettered again, for a later replay, instead of looping.

Each record goes back through the same :class:`~router.alerts.sender.AlertSender`
the worker uses, on the record's channel only: a channel already delivered
(by the worker after all, or by an earlier replay) is skipped, so nobody gets
an alert twice.  One line per record says what happened:

``sent`` | ``already sent`` | ``failed again (dead-lettered again)`` |
``would send`` / ``would skip: already sent`` (``--dry-run``) |
``skipped: other channel`` (``--channel``) | ``not configured`` | ``invalid record``.

Records skipped for ``--channel`` or a channel that is not configured stay in
the group's backlog (the commit stops before them) for a later replay.

Exit codes: 0 every record replayed (or nothing to do); 1 some failed again or
could not be sent; 2 (from ``router.cli.main``) Kafka or Redis could not be used.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from models import Alert
from router import metrics
from router.alerts.digest import DIGEST_CHANNEL
from router.alerts.sender import AlertOutcome, AlertSender, TeamWebhooks, build_sender
from router.errors import RouterError
from router.settings import Settings
from router.storage import audit
from router.storage.live import lead_of_alert_id
from router.storage.live_config import RedisRulesSource
from router.storage.pii import SealError, Vault
from router.storage.redis import AnyRedis, create_redis
from router.storage.store import RedisStore

log = logging.getLogger(__name__)

REPLAY_GROUP = "leadrouter-alerts-replay"
CHANNELS = ("slack_webhook", "slack_bot", "email")


class AlertReplayError(RouterError):
    """The replay could not reach Kafka or Redis."""


@dataclass(frozen=True, slots=True)
class ReplayLine:
    """What happened to one dead-letter record."""

    partition: int
    offset: int
    key: str  # assignment or digest id
    channel: str
    outcome: str
    detail: str = ""
    ok: bool = True  # False: failed again, or left for later

    def format(self) -> str:
        text = f"{self.partition}:{self.offset}  {self.key or '-'}  {self.channel or '-'}  {self.outcome}"
        return f"{text}  ({self.detail})" if self.detail else text


@dataclass
class ReplaySummary:
    lines: list[ReplayLine] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)  # partition -> next offset committed

    def count(self, outcome: str) -> int:
        return sum(1 for line in self.lines if line.outcome == outcome)

    @property
    def ok(self) -> bool:
        return all(line.ok for line in self.lines)


def _record(raw: bytes | None) -> dict[str, Any] | None:
    try:
        data = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


async def _replay_one(sender: AlertSender, msg: ConsumerRecord[bytes, bytes], record: dict[str, Any] | None,
                      *, dry_run: bool) -> ReplayLine:
    """Resend one record (or, with ``dry_run``, say what would happen)."""
    where = (msg.partition, msg.offset)
    channel = str((record or {}).get("channel") or "")
    if record is None or not {"alert", "alert_sealed", "digest"} & set(record):
        return ReplayLine(*where, "", channel, "invalid record", "not an alert or digest; nothing to resend")
    try:
        if "alert_sealed" in record:
            if sender.vault is None:
                raise ValueError("a sealed alert, and no data-key store")
            opened = await sender.vault.open_alert(record["alert_sealed"])
            if opened is None:
                return ReplayLine(*where, "", channel, "skipped: lead forgotten", "its data key is deleted")
            alert = Alert.from_dict(opened)
            key, what = alert.assignment.assignment_id, "alert"
        elif "alert" in record:
            alert = Alert.from_dict(record["alert"])
            key, what = alert.assignment.assignment_id, "alert"
        else:
            digest = await sender.open_digest_record(record)
            key, what = digest.digest_id, "digest"
    except (KeyError, TypeError, ValueError, AttributeError, SealError) as exc:
        return ReplayLine(*where, "", channel, "invalid record", f"{type(exc).__name__}: {exc}")
    if channel not in sender.channels:
        return ReplayLine(*where, key, channel, "not configured",
                          f"this {what}'s channel is not configured here; set it up and replay again", ok=False)
    if dry_run:
        done = await sender.store.sent_channels(key)
        if channel in done or DIGEST_CHANNEL in done:
            return ReplayLine(*where, key, channel, "would skip: already sent")
        return ReplayLine(*where, key, channel, "would send", f"failed before: {record.get('error')}")
    outcome: AlertOutcome
    if what == "alert":
        outcome = await sender.send_alert(alert, channels={channel}, digest=False)
    else:
        outcome = await sender.send_digest(digest, channels={channel})
    if outcome.results:
        result = outcome.results[0]
        if result.ok:
            return ReplayLine(*where, key, channel, "sent", f"{result.attempts} attempt(s)")
        how = "permanent" if result.permanent else f"after {result.attempts} attempt(s)"
        return ReplayLine(*where, key, channel, "failed again", f"{how}: {result.error}; dead-lettered again",
                          ok=False)
    return ReplayLine(*where, key, channel, "already sent")


async def replay_dead_letters(
    settings: Settings,
    sender: AlertSender,
    *,
    limit: int | None = None,
    channel: str | None = None,
    dry_run: bool = False,
    group: str = REPLAY_GROUP,
    out: Callable[[ReplayLine], None] | None = None,
    idle_timeout_s: float = 10.0,
) -> ReplaySummary:
    """Replay the dead-letter topic from the group's committed offsets (or the beginning).

    Stops at the topic's end as of the start, after ``limit`` records handled
    (records skipped for ``channel`` do not count), or when nothing arrives for
    ``idle_timeout_s``.
    """
    topic = settings.kafka.topic_dead_letter
    summary = ReplaySummary()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=group,
                                client_id=f"{settings.kafka.app_id}-alerts-replay", enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()  # fetch metadata
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            return summary
        parts = [TopicPartition(topic, p) for p in sorted(numbers)]
        consumer.assign(parts)
        ends: Mapping[TopicPartition, int] = await consumer.end_offsets(parts)
        starts = {tp: await consumer.position(tp) for tp in parts}
        pending = {tp for tp in parts if starts[tp] < ends[tp]}
        commit_to: dict[TopicPartition, int] = dict(starts)
        blocked: set[TopicPartition] = set()  # a record was left for later: commit no further here
        handled = 0
        while pending and (limit is None or handled < limit):
            batch = await consumer.getmany(*pending, timeout_ms=int(idle_timeout_s * 1000), max_records=50)
            if not batch:
                log.warning("alerts replay: nothing more arrived within %.0fs; stopping", idle_timeout_s)
                break
            for tp, records in batch.items():
                for msg in records:
                    if tp not in pending or (limit is not None and handled >= limit):
                        break
                    if msg.offset >= ends[tp]:
                        pending.discard(tp)
                        break
                    record = _record(msg.value)
                    rec_channel = str((record or {}).get("channel") or "")
                    if channel is not None and rec_channel != channel:
                        line = ReplayLine(tp.partition, msg.offset, _key_of(record), rec_channel,
                                          "skipped: other channel", ok=True)
                        left = True
                    else:
                        line = await _replay_one(sender, msg, record, dry_run=dry_run)
                        handled += 1
                        left = line.outcome == "not configured"
                        metrics.ALERT_REPLAYS.labels(line.outcome.split(":")[0].replace(" ", "_")).inc()
                    summary.lines.append(line)
                    if out is not None:
                        out(line)
                    if left:
                        blocked.add(tp)
                    elif tp not in blocked:
                        commit_to[tp] = msg.offset + 1
                    if msg.offset + 1 >= ends[tp]:
                        pending.discard(tp)
        advanced = {tp: off for tp, off in commit_to.items() if off > starts[tp]}
        if advanced and not dry_run:
            await consumer.commit(advanced)
            summary.committed = {tp.partition: off for tp, off in advanced.items()}
        return summary
    finally:
        await consumer.stop()


def _key_of(record: dict[str, Any] | None) -> str:
    try:
        if record and "alert" in record:
            return str(record["alert"]["assignment"]["assignment_id"])
        if record and "digest" in record:
            return str(record["digest"]["digest_id"])
    except (KeyError, TypeError):
        pass
    return ""


async def run_replay(settings: Settings, *, limit: int | None, channel: str | None, dry_run: bool,
                     group: str = REPLAY_GROUP, stream: TextIO = sys.stdout) -> ReplaySummary:
    """Build the worker's sender (same channels, retries, pacing and sent-marks) and replay with it."""
    redis = create_redis(settings.redis, role="cli")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all", enable_idempotence=False,
                                client_id=f"{settings.kafka.app_id}-alerts-replay")
    session = aiohttp.ClientSession()
    started = False
    sender: AlertSender | None = None
    try:
        await producer.start()
        started = True

        async def dead_letter(key: str, value: bytes) -> None:
            await producer.send_and_wait(settings.kafka.topic_dead_letter, value, key=key.encode())

        routing = RedisRulesSource(settings.files.rules_file, redis)
        await routing.poll()  # the published rules' team webhooks, as the workers use
        sender = build_sender(settings.alerts, RedisStore(redis), session, dead_letter,
                              team_webhooks=TeamWebhooks(routing), vault=Vault.from_settings(redis, settings.tokens))

        def show(line: ReplayLine) -> None:
            print(line.format(), file=stream, flush=True)

        summary = await replay_dead_letters(settings, sender, limit=limit, channel=channel, dry_run=dry_run,
                                            group=group, out=show)
        if not dry_run:
            await _audit(redis, summary)
        return summary
    except KafkaError as exc:
        msg = f"Kafka at {settings.kafka.url} failed: {exc!r}; check KAFKA_URL and that the broker is running"
        raise AlertReplayError(msg) from exc
    except RedisError as exc:
        msg = f"Redis at {settings.redis.url} failed: {exc}; check REDIS_URL and that redis-server is running"
        raise AlertReplayError(msg) from exc
    finally:
        if sender is not None:
            await sender.aclose()  # its SMTP connections
        await session.close()
        if started:
            await producer.stop()
        await redis.aclose()


async def _audit(redis: AnyRedis, summary: ReplaySummary) -> None:
    """Each record resent (or tried) goes on the audit trail (router/storage/audit.py) as ``alert.replay``."""
    for line in summary.lines:
        if line.outcome in ("sent", "failed again", "already sent"):
            await audit.record(redis, who=audit.cli_who(), role="", action="alert.replay", via="cli",
                               lead_id=lead_of_alert_id(line.key), target=line.channel,
                               detail=f"{line.key}: {line.outcome}")


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        print("leadrouter alerts replay: --limit must be at least 1", file=sys.stderr)
        return 2
    summary = asyncio.run(run_replay(settings, limit=args.limit, channel=args.channel, dry_run=args.dry_run,
                                     group=args.group))
    sent, again, already = summary.count("sent"), summary.count("failed again"), summary.count("already sent")
    if args.dry_run:
        print(f"dry run: {summary.count('would send')} would be sent, "
              f"{summary.count('would skip: already sent')} already sent; nothing sent, nothing committed")
    else:
        where = ", ".join(f"partition {p} at {o}" for p, o in sorted(summary.committed.items())) or "nothing new"
        print(f"replayed {len(summary.lines)} dead letter(s): {sent} sent, {already} already sent, "
              f"{again} failed again; group {args.group} committed {where}")
    return 0 if summary.ok else 1


def register(sub: Any) -> None:
    """``leadrouter alerts replay [--limit N] [--channel C] [--dry-run]``."""
    p = sub.add_parser("alerts", help="alert delivery: replay dead-lettered alerts")
    asub = p.add_subparsers(dest="alerts_command", required=True)
    r = asub.add_parser("replay", help="resend the alerts on the dead-letter topic (each channel at most once)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--limit", type=int, default=None, help="handle at most N records")
    r.add_argument("--channel", choices=CHANNELS, default=None, help="only records of this channel")
    r.add_argument("--dry-run", action="store_true", help="say what would be sent; send and commit nothing")
    r.add_argument("--group", default=REPLAY_GROUP, help=f"consumer group (default {REPLAY_GROUP})")
    r.set_defaults(fn=cmd_replay)
