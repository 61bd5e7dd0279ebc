"""Real tracker SDKs -> collector process -> Kafka -> worker process -> lead state in Redis.

The companies' existing Segment, RudderStack and Snowplow trackers point at us
unchanged; what they send joins into one person and one company.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from router.dev.run import spawn_service
from router.dev.servers import ManagedProcess, free_port, wait_for_port
from router.settings import Settings
from router.storage import keys
from router.storage.store import RedisStore
from router.worker.accounts import AccountRef
from tests.support import pid

pytestmark = pytest.mark.e2e

SECRET = "e2e-sdk-secret-0123456789"


@pytest.fixture
async def stack(servers: tuple[ManagedProcess, ManagedProcess], tmp_path: Path
                ) -> AsyncIterator[tuple[Settings, Redis]]:
    broker, redis_proc = servers
    port = free_port()
    settings = Settings.of(
        kafka_url=f"kafka://127.0.0.1:{broker.port}", redis_url=f"redis://127.0.0.1:{redis_proc.port}/0",
        collector_port=port, public_url=f"http://127.0.0.1:{port}", worker_web_port=free_port(),
        token_secret=SECRET, segment_write_keys="WK_E2E,RWK_E2E=rudderstack", spool_dir=tmp_path / "spool",
    )
    collector = spawn_service("collector", settings, tmp_path, port=port)
    worker = spawn_service("worker", settings, tmp_path)
    redis = Redis.from_url(settings.redis.url)
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0, collector.proc)
        yield settings, redis
    finally:
        collector.stop()
        worker.stop()
        await redis.flushdb()
        await redis.aclose()


async def eventually(check: Callable[[], Any], timeout: float = 45.0) -> Any:
    """The worker joins its group (a few seconds on the dev broker) then catches up."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    return last


def segment(url: str, write_key: str, calls: Callable[[Any], None], *, rudder: bool = False) -> list[Any]:
    errors: list[Any] = []
    if rudder:
        from rudderstack.analytics.client import Client as RudderClient

        client: Any = RudderClient(write_key=write_key, host=url, on_error=lambda *a: errors.append(a),
                                   max_retries=1, upload_interval=0.05)
    else:
        from segment.analytics.client import Client as SegmentClient

        client = SegmentClient(write_key=write_key, host=url, on_error=lambda *a: errors.append(a),
                               max_retries=1, upload_interval=0.05)
    calls(client)
    client.flush()
    client.shutdown()
    return errors


async def test_segment_browsing_then_identify_and_group_become_one_lead_and_account(
        stack: tuple[Settings, Redis]) -> None:
    settings, redis = stack
    url = settings.ingest.public_url

    def calls(c: Any) -> None:
        ua = {"userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"}
        c.page(anonymous_id="anon-seg-7f3a", name="Pricing", properties={"url": "https://www.example-saas.com/pricing"},
               context=ua)
        c.page(anonymous_id="anon-seg-7f3a", name="Product",
               properties={"url": "https://www.example-saas.com/product"}, context=ua)
        c.identify(user_id="user-1042", anonymous_id="anon-seg-7f3a", context=ua,
                   traits={"email": "Lena.Fischer@Nordlicht.de", "firstName": "Lena", "lastName": "Fischer",
                           "title": "Head of Revenue Operations", "company": "Nordlicht Bank"})
        c.group(user_id="user-1042", group_id="org-77", context=ua,
                traits={"name": "Nordlicht Bank", "website": "https://www.nordlicht.de", "industry": "Banking",
                        "employees": 2300})
        c.track(user_id="user-1042", event="Report Exported", properties={"format": "csv"}, context=ua)

    errors = await asyncio.to_thread(segment, url, "WK_E2E", calls)
    assert errors == []
    store = RedisStore(redis)
    lead_id = keys.lead_id_for_email("lena.fischer@nordlicht.de")

    async def lead_done() -> dict[str, str] | None:
        h = await store.lead_hash(lead_id)
        return h if int(h.get("events", 0)) >= 5 else None

    lead = await eventually(lead_done)
    assert lead, f"lead never reached 5 events: {await store.lead_hash(lead_id)}"
    # The anonymous pages count toward the identified lead, once.
    assert lead["n:page_view"] == "2" and lead["user_id"] == pid("user-1042")
    assert lead["f:first_name"] == "Lena" and lead["f:company"] == "Nordlicht Bank"
    # The anonymous browser's profile now forwards to the lead (its pages were
    # merged in, or, when they shared a batch with identify, followed it there).
    anon = await store.lead_hash(keys.lead_id_for_visitor(pid("anon-seg-7f3a")))
    assert anon.get("merged_into") == lead_id and lead["events"] == "5"
    reasons = {r.rule for r in await store.lead_reasons(lead_id)}
    assert "pricing-page" in reasons or any("pricing" in r for r in reasons)
    # Server-side track by user id only reaches the same lead.
    assert lead.get("n:track") == "1"
    # The company is one account, from the email domain and the group call alike.
    kid = AccountRef("d:nordlicht.de", "", "", "").key_id
    assert await redis.zscore(keys.account_keys(kid)[2], lead_id) is not None  # a member

    async def ranked() -> list[tuple[str, float]] | None:
        # The account's ranking is written in the same batch as the lead's last event, but a later
        # batch may still be rolling up: wait for it rather than race the worker.
        found = await store.account_members(kid)
        return found if found and found[0][0] == lead_id else None

    members = await eventually(ranked)
    assert members and members[0][0] == lead_id, await store.account_members(kid)  # its most engaged member
    assert (await store.account_hash(kid))["domain"] == "nordlicht.de"


async def test_rudderstack_and_snowplow_land_on_the_same_worker_path(stack: tuple[Settings, Redis]) -> None:
    settings, redis = stack

    def rudder_calls(c: Any) -> None:
        c.identify(user_id="rs-9", anonymous_id="anon-rs-0001",
                   traits={"email": "omar@tidewater.nl", "company": "Tidewater Shipping"})

    errors = await asyncio.to_thread(segment, settings.ingest.public_url, "RWK_E2E", rudder_calls, rudder=True)
    assert errors == []

    def snowplow() -> None:
        from snowplow_tracker.emitters import Emitter
        from snowplow_tracker.events.page_view import PageView
        from snowplow_tracker.events.self_describing import SelfDescribing
        from snowplow_tracker.self_describing_json import SelfDescribingJson
        from snowplow_tracker.subject import Subject
        from snowplow_tracker.tracker import Tracker

        subject = Subject().set_domain_user_id("duid-e2e-0001").set_useragent(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36")
        emitter = Emitter("127.0.0.1", protocol="http", port=settings.ingest.collector_port, method="post", batch_size=5)
        tracker = Tracker("ns-e2e", emitter, subject=subject, app_id="site")
        tracker.track(PageView(page_url="https://www.example-saas.com/pricing", page_title="Pricing"))
        tracker.track(SelfDescribing(SelfDescribingJson(
            "iglu:com.snowplowanalytics.snowplow/submit_form/jsonschema/1-0-0",
            {"formId": "demo-request", "elements": [
                {"name": "email", "value": "ines@iberiatel.es", "nodeName": "INPUT", "type": "email"}]})))
        tracker.flush()

    await asyncio.to_thread(snowplow)
    store = RedisStore(redis)
    rs_lead = keys.lead_id_for_email("omar@tidewater.nl")
    sp_lead = keys.lead_id_for_email("ines@iberiatel.es")

    async def both() -> bool:
        a, b = await store.lead_hash(rs_lead), await store.lead_hash(sp_lead)
        return bool(a.get("email")) and int(b.get("events", 0)) >= 2

    assert await eventually(both), (await store.lead_hash(rs_lead), await store.lead_hash(sp_lead))
    rs = await store.lead_hash(rs_lead)
    assert rs["user_id"] == pid("rs-9") and rs["f:company"] == "Tidewater Shipping"
    sp = await store.lead_hash(sp_lead)
    # The Snowplow visitor's pricing view joined the person who filled the demo form,
    # and the hand-raiser made them sales-ready.
    assert sp["n:page_view"] == "1" and sp["n:form_fill"] == "1"
    assert sp["ready"] == "1" and sp["last_trigger"] == "hand_raiser"
