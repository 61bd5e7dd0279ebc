"""X Education rows -> event streams -> real collector -> Kafka -> worker process -> Redis -> features.

30 rows of the export (tests/xedu_stream.py) become what their people would have done: visits
with gaps between them, page pings from the snippet, a landing tagged with the row's source, a
form with their answers, then their last activity (an e-mail opened or clicked, an identify call,
a chat, a page).  Each request goes to the collector's real endpoints (pixel, ping, form, Segment,
Snowplow, e-mail links); the collector runs in this process only so that its receive clock can be
driven (an hour between visits takes no hour).  The worker runs as its own process.  For every row
the features the worker's lead state gives must equal the row mapped by the X Education mapping.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from router.dev.run import spawn_service
from router.dev.servers import ManagedProcess, free_port, wait_for_port
from router.ingest.app import CollectorService
from router.settings import Settings
from router.storage import keys
from router.storage.store import RedisStore
from router.tokens import mint_token
from scoring.features import features_from_lead, training_row
from tests.xedu_stream import Step, expand, mapping, sample

pytestmark = pytest.mark.e2e

SECRET = "e2e-xedu-secret-0123456789"
WRITE_KEY = "WK_XEDU"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
T0 = 1_790_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stack(servers: tuple[ManagedProcess, ManagedProcess], tmp_path: Path
                ) -> AsyncIterator[tuple[Settings, Redis, Clock]]:
    broker, redis_proc = servers
    port = free_port()
    settings = Settings.of(
        kafka_url=f"kafka://127.0.0.1:{broker.port}", redis_url=f"redis://127.0.0.1:{redis_proc.port}/0",
        collector_port=port, public_url=f"http://127.0.0.1:{port}", worker_web_port=free_port(),
        token_secret=SECRET, segment_write_keys=WRITE_KEY, spool_dir=tmp_path / "spool",
        collector_metrics_port=0, rate_limit_pixel_per_ip=0, rate_limit_pixel_per_visitor=0,
        rate_limit_form_per_ip=0, rate_limit_form_per_visitor=0, rate_limit_sdk_per_ip=0,
    )
    clock = Clock()
    collector = CollectorService(settings, clock=clock)
    await collector.start()
    worker = spawn_service("worker", settings, tmp_path)
    redis = Redis.from_url(settings.redis.url)
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0)
        yield settings, redis, clock
    finally:
        worker.stop()
        await collector.stop()
        await redis.flushdb()
        await redis.aclose()


async def send(http: aiohttp.ClientSession, url: str, clock: Clock, start: float, step: Step, vid: str,
               email: str) -> None:
    clock.now = start + step.at
    headers = {"User-Agent": UA}
    if step.kind in ("pv", "pp"):
        params = {"vid": vid, "url": step.url, **({"ref": step.referrer} if step.referrer else {}),
                  **({"ping": "1"} if step.kind == "pp" else {})}
        resp = await http.get(f"{url}/t/p.gif", params=params, headers=headers)
        assert resp.status == 200
    elif step.kind == "form":
        body: dict[str, Any] = {"form_id": "apply", "email": email, "vid": vid, "url": step.url, **step.fields,
                                **{f"answer.{k}": v for k, v in step.answers.items()}}
        if step.referrer:
            body["ref"] = step.referrer
        resp = await http.post(f"{url}/t/form", json=body, headers=headers)
        assert resp.status == 202, await resp.text()
    elif step.kind == "identify":
        auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
        traits: dict[str, Any] = {"email": email, **{k: v == "true" for k, v in step.fields.items()}}
        resp = await http.post(f"{url}/v1/identify", json={"anonymousId": vid, "traits": traits},
                               headers={**headers, "Authorization": auth})
        assert resp.status == 200, await resp.text()
    elif step.kind in ("open", "click"):
        token = mint_token(SECRET, email=email, campaign="march", ttl_s=30 * 86400, kind=step.kind,
                           url=step.url if step.kind == "click" else None, now=clock.now - 7200)
        path = f"/t/o/{token}.gif" if step.kind == "open" else f"/t/c/{token}"
        resp = await http.get(f"{url}{path}", headers=headers, allow_redirects=False)
        assert resp.status in (200, 302)
    elif step.kind in ("chat", "other"):
        ca, ac = ("chat", "conversation") if step.kind == "chat" else ("crm", "sms_sent")
        params = {"e": "se", "se_ca": ca, "se_ac": ac, "duid": vid, "eid": uuid.uuid4().hex, "ua": UA,
                  **({"url": step.url} if step.kind == "chat" else {})}
        resp = await http.get(f"{url}/i", params=params, headers=headers)
        assert resp.status == 200
    else:  # pragma: no cover - the expander makes only the kinds above
        raise AssertionError(step.kind)


async def test_rows_sent_through_the_collector_give_the_worker_their_mapped_features(
        stack: tuple[Settings, Redis, Clock]) -> None:
    settings, redis, clock = stack
    m = mapping()
    picked = sample(30)
    want: dict[str, dict[str, object]] = {}
    counts: dict[str, int] = {}
    jar = aiohttp.DummyCookieJar()  # every request names its visitor; no cookie carries over
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        for n, (index, row) in enumerate(picked):
            vid, email = f"xedu-{index:05d}-{uuid.uuid4().hex[:8]}", f"lead{index}@xedu.example"
            start = T0 + n * 30 * 86400
            steps = expand(row, m)
            for step in steps:
                await send(http, settings.ingest.public_url, clock, start, step, vid, email)
            want[email] = training_row(m, row)
            counts[email] = sum(1 for s in steps if s.kind != "pp")  # pings are no events of the lead
    store = RedisStore(redis)
    deadline = time.monotonic() + 120
    got: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline:
        for email in want:
            if got.get(email) != want[email]:  # the worker catches up: wait until equal (or the deadline)
                got[email] = features_from_lead(await store.lead_hash(keys.lead_id_for_email(email)), m.names)
        if got == want:
            break
        await asyncio.sleep(0.5)
    events = {e: int((await store.lead_hash(keys.lead_id_for_email(e))).get("events", 0)) for e in want}
    assert all(events[e] == counts[e] for e in want), {e: (events[e], counts[e]) for e in want}
    wrong = {e: {k: (got[e][k], want[e][k]) for k in want[e] if got[e][k] != want[e][k]}
             for e in want if got[e] != want[e]}
    assert not wrong, wrong
    # Not vacuous: visits, time on site, several sources and last activities came through.
    values = list(got.values())
    assert len({v["lead_source"] for v in values}) >= 3 and len({v["last_activity"] for v in values}) >= 3
    assert any((v["sessions"] or 0) >= 2 for v in values) and any((v["time_on_site"] or 0) > 100 for v in values)
