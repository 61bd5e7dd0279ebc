"""The forwarder in its own process (``leadrouter forwarder``; LEADROUTER_SPOOL_FORWARDER=external/process).

The collector only appends to its spool; another process drains the files into Kafka.  Against a real
Tansu broker: events spooled while the forwarder is down arrive once it is back, the collector answers
while it is away, and a forwarder killed with SIGKILL mid-round (its batch unanswered, the broker frozen)
neither loses nor duplicates anything after its restart.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from router.dev.run import spawn_service
from router.dev.servers import ManagedProcess, free_port
from router.ingest.app import CollectorService
from router.settings import Settings
from tests.integration.test_spool_broker import (
    assert_exactly_once_in_order,
    make_settings,
    read_topic,
    send_traffic,
)

pytestmark = pytest.mark.integration


def forwarder(settings: Settings, workdir: Path) -> ManagedProcess:
    return spawn_service("forwarder", settings, workdir)


async def test_events_spooled_while_the_forwarder_is_down_arrive_exactly_once(
        server_factory: Callable[..., ManagedProcess], redis_url: str, redis: Redis, tmp_path: Path) -> None:
    broker = server_factory("broker")
    settings = make_settings(broker.port, redis_url, tmp_path / "spool", spool_forwarder="external",
                             spool_forwarder_metrics_port=0)
    service = CollectorService(settings)
    await service.start()
    sent: dict[str, list[str]] = {}
    visitors = [f"sidecar{n:04d}xyz" for n in range(6)]
    url = f"http://127.0.0.1:{settings.ingest.collector_port}"
    proc: ManagedProcess | None = None
    try:
        async with aiohttp.ClientSession() as s:
            # No forwarder yet: the collector answers (forms get 202 at once) and keeps everything.
            await send_traffic(s, url, visitors, 3, sent, "nofwd")
            assert await read_topic(settings, 1, timeout=2.0, settle=0.0) == []
            proc = forwarder(settings, tmp_path / "fwd1")
            await send_traffic(s, url, visitors, 2, sent, "fwd")
            assert len(await read_topic(settings, 30)) == 30
            await asyncio.to_thread(proc.stop)  # SIGTERM: it finishes its round and writes its checkpoint
            await send_traffic(s, url, visitors, 2, sent, "stopped")
            proc = forwarder(settings, tmp_path / "fwd2")
            await send_traffic(s, url, visitors, 1, sent, "again")
        total = sum(len(v) for v in sent.values())
        events = await read_topic(settings, total)
        assert len(events) == total
        assert_exactly_once_in_order(events, sent)
    finally:
        if proc is not None:
            proc.stop()
        await service.stop()


async def test_a_forwarder_killed_mid_round_loses_and_duplicates_nothing(
        server_factory: Callable[..., ManagedProcess], redis_url: str, redis: Redis, tmp_path: Path) -> None:
    broker = server_factory("broker")
    settings = make_settings(broker.port, redis_url, tmp_path / "spool", spool_forwarder="external",
                             spool_forwarder_metrics_port=0)
    service = CollectorService(settings)
    await service.start()
    sent: dict[str, list[str]] = {}
    visitors = [f"killed{n:04d}abc" for n in range(6)]
    url = f"http://127.0.0.1:{settings.ingest.collector_port}"
    proc = forwarder(settings, tmp_path / "fwd1")
    try:
        async with aiohttp.ClientSession() as s:
            await send_traffic(s, url, visitors, 2, sent, "before")
            assert len(await read_topic(settings, 12)) == 12
            broker.signal(signal.SIGSTOP)
            try:
                # The forwarder sends these and waits for an answer the frozen broker cannot give...
                await send_traffic(s, url, visitors, 3, sent, "frozen")
                await asyncio.sleep(1.0)
                proc.signal(signal.SIGKILL)  # ...and dies mid-round, its batches in the broker's socket
                await asyncio.to_thread(proc.proc.wait, 10.0)
            finally:
                broker.signal(signal.SIGCONT)
            # The broker appends what it had read; the restarted forwarder must not send it again.
            proc = forwarder(settings, tmp_path / "fwd2")
            await send_traffic(s, url, visitors, 1, sent, "after")
        total = sum(len(v) for v in sent.values())
        events = await read_topic(settings, total, settle=3.0)
        assert len(events) == total
        assert_exactly_once_in_order(events, sent)
    finally:
        proc.stop()
        await service.stop()


async def test_the_collector_restarts_its_forwarder_process_and_keeps_answering(
        server_factory: Callable[..., ManagedProcess], redis_url: str, redis: Redis, tmp_path: Path) -> None:
    broker = server_factory("broker")
    settings = make_settings(broker.port, redis_url, tmp_path / "spool", spool_forwarder="process",
                             collector_metrics_port=free_port())
    service = CollectorService(settings)
    await service.start()
    sent: dict[str, list[str]] = {}
    visitors = [f"child{n:04d}abc" for n in range(6)]
    url = f"http://127.0.0.1:{settings.ingest.collector_port}"
    try:
        async with aiohttp.ClientSession() as s:
            await send_traffic(s, url, visitors, 2, sent, "first")
            assert len(await read_topic(settings, 12)) == 12
            child = service._child
            assert child is not None and child.proc is not None
            first_pid = child.proc.pid
            traffic = asyncio.create_task(send_traffic(s, url, visitors, 4, sent, "during"))
            await asyncio.sleep(0.2)
            child.proc.kill()  # SIGKILL while traffic flows
            await traffic
            for _ in range(100):  # the collector notices and starts another (after RESTART_DELAY_S)
                if child.starts >= 2:
                    break
                await asyncio.sleep(0.1)
            assert child.starts == 2 and child.proc.pid != first_pid
            await send_traffic(s, url, visitors, 1, sent, "after")
        total = sum(len(v) for v in sent.values())
        events = await read_topic(settings, total, settle=3.0)
        assert len(events) == total
        assert_exactly_once_in_order(events, sent)
        # One scrape target: the collector's /metrics shows the child's forwarding figures.
        async with aiohttp.ClientSession() as s, \
                s.get(f"http://127.0.0.1:{service.metrics_port}/metrics") as resp:
            page = await resp.text()
        forwarded = {f.name: f for f in text_string_to_metric_families(page)}["leadrouter_spool_forwarded"]
        # The restarted child's counters (a restart resets them, as Prometheus expects of a counter).
        assert 0 < sum(x.value for x in forwarded.samples if x.name.endswith("_total")) <= total
        assert "leadrouter_spool_pending_events 0.0" in page
    finally:
        await service.stop()
    # Stopped with the collector: the child is gone, nothing is left to forward.
    assert child.proc.returncode is not None
