"""Kafka plumbing shared by the collector, the worker and the tools."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from models import Event
from router.errors import RouterError
from router.settings import KafkaSettings

log = logging.getLogger(__name__)


class ProduceError(RouterError):
    """The broker did not acknowledge a message in time."""


class EventSink(Protocol):
    """Where the collector puts accepted events."""

    async def send(self, event: Event) -> None: ...


def encode_event(event: Event) -> tuple[bytes, bytes]:
    return event.partition_key().encode(), orjson.dumps(event.to_dict())


async def ensure_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> None:
    """Create the service's topics if they are missing (idempotent)."""
    wanted: Mapping[str, int] = {
        kafka.topic_events: kafka.topic_partitions,
        kafka.topic_assignments: kafka.topic_partitions,
        kafka.topic_dead_letter: 1,
    }
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [NewTopic(name, n, 1) for name, n in wanted.items() if name not in existing]
            if missing:
                try:
                    await admin.create_topics(missing)
                    log.info("created topics %s", [t.name for t in missing])
                except TopicAlreadyExistsError:
                    pass
            return
        except KafkaError as exc:
            if asyncio.get_running_loop().time() > deadline:
                msg = f"could not reach Kafka at {kafka.url} to create topics: {exc!r}; check KAFKA_URL"
                raise ProduceError(msg) from exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


def new_producer(kafka: KafkaSettings, *, request_timeout_ms: int = 10_000,
                 max_batch_size: int = 16_384) -> AIOKafkaProducer:
    # acks=all: an event is accepted only once every in-sync replica has it.
    # Idempotent/transactional producers are off: not every Kafka-compatible
    # broker supports them, and the worker de-duplicates by event id anyway
    # (the spool forwarder also checks what landed before it resends).
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        acks="all",
        linger_ms=1,
        request_timeout_ms=request_timeout_ms,
        max_batch_size=max_batch_size,
        max_request_size=max(1_048_576, 2 * max_batch_size),
        enable_idempotence=False,
        client_id=f"{kafka.app_id}-collector",
    )


class KafkaEventSink:
    def __init__(self, kafka: KafkaSettings, send_timeout_s: float = 10.0) -> None:
        self.topic = kafka.topic_events
        self.producer = new_producer(kafka)
        self.send_timeout_s = send_timeout_s

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send(self, event: Event) -> None:
        key, value = encode_event(event)
        try:
            await asyncio.wait_for(self.producer.send_and_wait(self.topic, value, key=key), self.send_timeout_s)
        except (KafkaError, TimeoutError) as exc:
            msg = f"Kafka did not acknowledge event {event.event_id} on {self.topic}: {exc!r}"
            raise ProduceError(msg) from exc
