"""Issue 16.7, end to end: ``leadrouter forget`` run as a command against the collector and worker processes.

Broker (Tansu), redis-server, ``leadrouter collector`` and ``leadrouter worker`` run as
processes of their own, logging at DEBUG to their files.  A person browses, fills the
demo form and opens an email; the worker makes them a lead.  ``leadrouter forget EMAIL``
runs as a subprocess.  Then every Redis key and value, every record of the three topics,
every file of the collector's spool and every line of both processes' logs is searched
for the email, the names, the phone number, the job title and the raw visitor id: none
is found.  A form the person posts afterwards is dropped at the collector.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from router.dev.run import spawn_service
from router.dev.servers import ManagedProcess, free_port, wait_for_port
from router.settings import Settings
from router.storage import keys
from router.storage.pii import pseudonym
from router.tokens import mint_token
from tests.integration.test_erasure import read_topic, redis_dump

pytestmark = pytest.mark.e2e

SECRET = "e2e-forget-token-secret-0123456789"
PII_KEY = "e2e-forget-pii-master-key-0123456789"
BROWSER = {"User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                         "Version/17.5 Safari/605.1.15"}
EMAIL = "Ottilie.Brandvold@Fjord-Logistics.no"
FIRST, LAST, PHONE, TITLE = "Ottilie", "Brandvold", "+47 912 34 567", "Head of Procurement"
VID = "vidE2eForget000000000007"
NEEDLES = [EMAIL, EMAIL.lower(), FIRST, LAST, PHONE, "91234567", TITLE, VID]


@dataclass
class Stack:
    settings: Settings
    collector: ManagedProcess
    worker: ManagedProcess
    redis: Redis
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest.collector_port}"

    def logs(self) -> str:
        return f"--- collector\n{self.collector.log_tail()}\n--- worker\n{self.worker.log_tail(80)}"


@pytest.fixture
async def stack(servers: tuple[ManagedProcess, ManagedProcess], tmp_path: Path) -> AsyncIterator[Stack]:
    broker, redis_proc = servers
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    settings = Settings.of(
        kafka_url=f"kafka://127.0.0.1:{broker.port}", redis_url=f"redis://127.0.0.1:{redis_proc.port}/0",
        topic_events=f"forget.events.{suffix}", topic_assignments=f"forget.assign.{suffix}",
        topic_dead_letter=f"forget.dlq.{suffix}", app_id=f"forget-{suffix}",
        collector_port=port, public_url=f"http://127.0.0.1:{port}", worker_web_port=free_port(),
        token_secret=SECRET, pii_key=PII_KEY, spool_dir=tmp_path / "spool", log_level="DEBUG",
    )
    collector = spawn_service("collector", settings, tmp_path, port=port)
    worker = spawn_service("worker", settings, tmp_path)
    redis = Redis.from_url(settings.redis.url)
    st = Stack(settings, collector, worker, redis, tmp_path)
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0, collector.proc)
        await _until(st, _warm(st), "the worker did not consume", timeout=60.0)
        yield st
    finally:
        collector.stop()
        worker.stop()
        await redis.flushdb()
        await redis.aclose()


def _warm(st: Stack) -> object:
    lead_key = keys.lead(keys.lead_id_for_visitor(pseudonym(PII_KEY, "warmup0000000009")))

    async def check() -> bool:
        async with aiohttp.ClientSession() as s, s.get(f"{st.url}/t/p.gif", headers=BROWSER,
                                                        params={"vid": "warmup0000000009"}) as r:
            assert r.status == 200
        return bool(await st.redis.exists(lead_key))

    return check


async def _until(st: Stack, check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        assert st.worker.alive() and st.collector.alive(), st.logs()
        await asyncio.sleep(0.3)
    pytest.fail(f"{what} within {timeout}s\n{st.logs()}")


async def _form(st: Stack, s: aiohttp.ClientSession) -> None:
    async with s.post(f"{st.url}/t/form", headers=BROWSER, cookies={"lr_vid": VID}, data={
            "form_id": "demo-request", "email": EMAIL, "first_name": FIRST, "last_name": LAST, "phone": PHONE,
            "job_title": TITLE, "company": "Fjord Logistics", "country": "NO"}) as r:
        assert r.status == 202, await r.text()


def _found(blob: bytes) -> list[str]:
    low = blob.lower()
    return [n for n in NEEDLES if n.encode() in blob or n.lower().encode() in low]


async def test_forget_command_then_search_every_store_and_log(stack: Stack) -> None:
    st = stack
    lead_id = keys.lead_id_for_email(EMAIL)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{st.url}/t/p.gif", headers=BROWSER, cookies={"lr_vid": VID},
                         params={"url": "https://fjord-logistics.no/pricing"}) as r:
            assert r.status == 200
        await _form(st, s)
        token = mint_token(SECRET, email=EMAIL, campaign="nov", ttl_s=86400, now=time.time() - 3600)
        async with s.get(f"{st.url}/t/o/{token}.gif", headers=BROWSER) as r:
            assert r.status == 200

    async def known() -> bool:
        lead = await st.redis.hgetall(keys.lead(lead_id))
        return lead.get(b"f:phone") == PHONE.encode() and int(lead.get(b"events", b"0")) >= 3

    await _until(st, known, "the person did not become a lead with their fields")
    # The probe can find them: in Redis, in the clear, as designed.
    assert any(_found(body) for _, body in await redis_dump(st.redis))

    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "router.cli.main", "forget", EMAIL], env=st.settings.to_env(),
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "erased" in done.stdout and "data key shredded" in done.stdout, done.stdout
    assert EMAIL.lower() not in done.stdout.lower()

    # A later form from the person is answered as usual but dropped at the collector.
    before = await read_topic(st.settings, st.settings.kafka.topic_events)
    async with aiohttp.ClientSession() as s:
        await _form(st, s)
    await asyncio.sleep(2.0)
    assert len(await read_topic(st.settings, st.settings.kafka.topic_events)) == len(before)
    assert await st.redis.hgetall(keys.lead(lead_id)) in ({}, {b"forgotten": b"1"})

    found: list[tuple[str, list[str]]] = []
    for key, body in await redis_dump(st.redis):
        if hits := _found(body):
            found.append((f"redis {key}", hits))
    k = st.settings.kafka
    for topic in (k.topic_events, k.topic_assignments, k.topic_dead_letter):
        for i, (rkey, value) in enumerate(await read_topic(st.settings, topic)):
            if hits := _found(rkey + b"\x00" + value):
                found.append((f"{topic}#{i}", hits))
    spool = [p for p in (st.workdir / "spool").rglob("*") if p.is_file()]
    assert spool, "the collector's spool is where the settings say"
    logs = [p for p in (st.collector.log_path, st.worker.log_path) if p is not None]
    assert len(logs) == 2 and all(p.stat().st_size > 0 for p in logs)
    for path in [*spool, *logs]:
        if hits := _found(path.read_bytes()):
            found.append((str(path), hits))
    assert found == [], found
