"""The forwarder: the one path from the collector's spool (:mod:`router.ingest.spool`) to Kafka.

:class:`KafkaForwarder` drains the spool in order, acks=all, keyed by person, and
after any unanswered send re-reads the affected partitions so that an event the
broker appended anyway is not sent twice (see the spool's module docstring,
"Exactly once in the topic, in order").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from router import metrics
from router.ingest.spool import Spool, SpoolRecord, sleep_or_stop
from router.settings import KafkaSettings, SpoolSettings
from router.storage.kafka import ProduceError, ensure_topics, new_producer

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=16_384)
def _key_hash(key: bytes) -> int:
    """The Java client's (and aiokafka's DefaultPartitioner's) key hash: murmur2, positive.  Pure Python in
    aiokafka, so remembered per key (a person's events share one) in a bounded LRU."""
    return int(murmur2(key)) & 0x7FFFFFFF


@dataclass
class _Slot:
    record: SpoolRecord
    done: bool = False


class KafkaForwarder:
    """Drains the spool into Kafka in order; see the module docstring for the guarantees."""

    def __init__(self, kafka: KafkaSettings, settings: SpoolSettings, spool: Spool, *, round_bytes: int = 256 * 1024,
                 round_records: int = 2000, window_records: int = 20_000, scan_limit: int = 500_000,
                 linger_s: float = 0.0) -> None:
        """``linger_s``: after a small round (under a quarter of ``round_records``), wait this long for more
        events before the next, so a steady trickle goes in fewer, larger produce requests (each costs the
        forwarder ~1 ms of CPU whatever its size).  0 (inline): send as soon as there is anything."""
        self.kafka = kafka
        self.recheck_delay_s = settings.recheck_delay_s
        self.spool = spool
        self.topic = kafka.topic_events
        self.round_bytes = round_bytes
        self.round_records = round_records
        self.window_records = window_records
        self.scan_limit = scan_limit
        self.timeout_s = settings.send_timeout_s
        self._window: list[_Slot] = []
        self._producer: AIOKafkaProducer | None = None
        self._partitions: list[int] = []
        # Set when a send went unanswered (or events were pending at start): check the
        # topic before sending again.
        self._uncertain: set[int] = set()
        self._backoff = 0.2
        self.linger_s = linger_s
        self._last_round = 0  # events sent in the last round
        self.connected = asyncio.Event()
        self.idle = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        if self.spool.restored_pending and self.spool.known_end:
            self._uncertain = set(self.spool.known_end)
        try:
            while not stop.is_set():
                try:
                    if self._producer is None:
                        await self._connect()
                    await self._round(stop)
                except (KafkaError, ProduceError, OSError, TimeoutError) as exc:
                    log.warning("spool forwarder: Kafka unavailable (%r); %d events spooled, retrying in %.1fs",
                                exc, self.spool.pending, self._backoff)
                    await self._disconnect()
                    await sleep_or_stop(stop, self._backoff)
                    self._backoff = min(self._backoff * 2, 5.0)
                except Exception:  # never let the only path to Kafka die
                    log.exception("spool forwarder: unexpected error; %d events spooled, retrying in %.1fs",
                                  self.spool.pending, self._backoff)
                    self._uncertain |= set(self._partitions)
                    await self._disconnect()
                    await sleep_or_stop(stop, self._backoff)
                    self._backoff = min(self._backoff * 2, 5.0)
        finally:
            await self._disconnect()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything spooled is in Kafka (True) or the time is up (False)."""
        deadline = time.monotonic() + timeout_s
        while (self.spool.pending or self.spool.has_unread()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.spool.pending == 0 and not self.spool.has_unread()

    # --- connection ----------------------------------------------------------
    async def _connect(self) -> None:
        await ensure_topics(self.kafka, timeout_s=self.timeout_s)
        producer = new_producer(self.kafka, request_timeout_ms=int(self.timeout_s * 1000),
                                max_batch_size=max(self.round_bytes * 2, 1_048_576))
        try:
            await asyncio.wait_for(producer.start(), self.timeout_s * 2)
            partitions = sorted(await asyncio.wait_for(producer.partitions_for(self.topic), self.timeout_s))
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer = producer
        self._partitions = partitions
        missing = [p for p in partitions if p not in self.spool.known_end]
        if missing:
            # A baseline for the landed-already check.  A broker may report a
            # lower end than the truth (Tansu does for multi-record batches):
            # that only makes a check read a little more.
            ends = await self._end_offsets(missing)
            self.spool.note_known_end(ends)
        log.info("spool forwarder: connected to Kafka; %d events to forward", self.spool.pending)
        self.connected.set()

    async def _disconnect(self) -> None:
        self.connected.clear()
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5.0)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(bootstrap_servers=self.kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                request_timeout_ms=int(self.timeout_s * 1000) + 5000,
                                client_id=f"{self.kafka.app_id}-spool-check")

    async def _end_offsets(self, partitions: list[int]) -> dict[int, int]:
        consumer = self._consumer()
        await asyncio.wait_for(consumer.start(), self.timeout_s)
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            ends = await asyncio.wait_for(consumer.end_offsets(tps), self.timeout_s)
            return {tp.partition: int(off) for tp, off in ends.items()}
        finally:
            await consumer.stop()

    # --- one round -------------------------------------------------------------
    def _fill_window(self) -> None:
        room = self.window_records - len(self._window)
        if room > 0:
            self._window.extend(_Slot(r) for r in self.spool.read(max_records=room, max_bytes=8 * 1024 * 1024))

    async def _round(self, stop: asyncio.Event) -> None:
        if self.linger_s and 0 < self._last_round < self.round_records // 4:
            self._last_round = 0
            await sleep_or_stop(stop, self.linger_s)
        self._fill_window()
        if not any(not s.done for s in self._window):
            self.idle.set()
            await self._ack_prefix()
            if not await self.spool.wait_unread(timeout=0.5) or stop.is_set():
                return
            self.idle.clear()
            self._fill_window()
        if self._uncertain:
            await self._resolve_uncertain()
        await self._send_round()
        await self._ack_prefix()

    async def _resolve_uncertain(self) -> None:
        assert self._producer is not None
        # The broker must answer again before we ask what it kept.
        await asyncio.wait_for(self._producer.client.fetch_all_metadata(), self.timeout_s)
        await asyncio.sleep(self.recheck_delay_s)
        partitions = sorted(self._uncertain)
        candidates = {s.record.event_id for s in self._window if not s.done and s.record.event_id}
        found, ends = await self._scan(partitions, candidates)
        landed = 0
        for s in self._window:
            if not s.done and s.record.event_id in found:
                s.done = True
                landed += 1
        if landed:
            metrics.SPOOL_FORWARDED.labels("already_in_kafka").inc(landed)
            log.warning("spool forwarder: %d events the broker did not acknowledge had landed; not resending",
                        landed)
        self.spool.note_known_end(ends)
        self._uncertain.clear()

    async def _scan(self, partitions: list[int], candidates: set[str]) -> tuple[set[str], dict[int, int]]:
        """Event ids among ``candidates`` found after the known ends of ``partitions``, and the new ends."""
        consumer = self._consumer()
        await asyncio.wait_for(consumer.start(), self.timeout_s)
        found: set[str] = set()
        ends: dict[int, int] = {}
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, self.spool.known_end.get(tp.partition, 0))
            quiet = 0
            scanned = 0
            while quiet < 3 and scanned < self.scan_limit:
                batch = await consumer.getmany(*tps, timeout_ms=300)
                got = sum(len(v) for v in batch.values())
                if not got:
                    quiet += 1
                    continue
                quiet = 0
                scanned += got
                for tp, records in batch.items():
                    for m in records:
                        ends[tp.partition] = m.offset + 1
                        eid = _event_id_of(m.value)
                        if eid in candidates:
                            found.add(eid)
            if scanned >= self.scan_limit:
                log.warning("spool forwarder: stopped checking after %d messages; some events may be sent twice "
                            "(the worker de-duplicates by event id)", scanned)
        finally:
            await consumer.stop()
        return found, ends

    async def _send_round(self) -> None:
        producer = self._producer
        assert producer is not None
        partitions = self._partitions
        batches: dict[int, Any] = {}
        members: dict[int, list[_Slot]] = {}
        blocked: set[int] = set()
        taken = 0
        count = 0
        for slot in self._window:
            if slot.done:
                continue
            if count >= self.round_records or (count and taken + len(slot.record.value) > self.round_bytes):
                break
            rec = slot.record
            p = partitions[_key_hash(rec.key) % len(partitions)]
            if p in blocked:
                continue
            batch = batches.get(p)
            if batch is None:
                batch = batches[p] = producer.create_batch()
                members[p] = []
            if batch.append(key=rec.key, value=rec.value, timestamp=None) is None:
                blocked.add(p)  # the rest of this partition waits for the next round, in order
                continue
            members[p].append(slot)
            taken += len(rec.value)
            count += 1
        self._last_round = count
        if not members:
            return
        sent: dict[int, asyncio.Future[Any]] = {}
        failed: set[int] = set()
        for p, batch in batches.items():
            if not members[p]:
                continue
            try:
                sent[p] = await asyncio.wait_for(producer.send_batch(batch, self.topic, partition=p), self.timeout_s)
            except (KafkaError, TimeoutError) as exc:
                log.warning("spool forwarder: could not queue a batch for partition %d: %r", p, exc)
                failed.add(p)
        try:
            results: list[Any] = await asyncio.wait_for(
                asyncio.gather(*sent.values(), return_exceptions=True), self.timeout_s * 3)
        except TimeoutError:
            results = [TimeoutError("no answer from the broker")] * len(sent)
        ends: dict[int, int] = {}
        for p, result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                failed.add(p)
                continue
            for slot in members[p]:
                slot.done = True
            ends[p] = int(result.offset) + len(members[p])
            metrics.SPOOL_FORWARDED.labels("sent").inc(len(members[p]))
        if ends:
            self.spool.known_end.update(ends)
        if failed:
            metrics.SPOOL_SEND_FAILURES.inc()
            # Did the broker keep what it did not acknowledge?  Check before resending.
            self._uncertain |= failed
            msg = f"the broker did not acknowledge batches for partitions {sorted(failed)}"
            await self._ack_prefix()
            raise ProduceError(msg)
        self._backoff = 0.2

    async def _ack_prefix(self) -> None:
        n = 0
        while n < len(self._window) and self._window[n].done:
            n += 1
        if n:
            last = self._window[n - 1].record
            del self._window[:n]
            self.spool.ack(last, n)


def _event_id_of(value: bytes | None) -> str:
    if not value:
        return ""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return ""
    return str(data.get("event_id") or "") if isinstance(data, dict) else ""

