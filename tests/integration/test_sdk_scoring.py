"""Named SDK events earn points as scoring.yaml says: the real SDKs, collector, Kafka, worker pipeline and Redis.

The calls from issue 13, as a new user makes them: a Segment ``track("Demo
Requested")`` sent before ``identify()`` (a hand-raiser once the person is
known), a RudderStack ``track("Whitepaper Downloaded")`` and a Snowplow
structured event (category email, action open), each with a rule in the
shipped ``scoring/scoring.yaml``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from router.storage import keys
from router.storage.live_config import LiveFile, load_icp_file, load_rules_file, load_scoring_file
from router.storage.store import RedisStore
from router.worker.pipeline import Pipeline
from tests.integration.test_ingest_sdks import Errors, Running, collector, read_topic
from tests.support import open_alert, pid

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
__all__ = ["collector"]  # the collector fixture, shared with test_ingest_sdks


class Worker:
    """The worker's pipeline over what the collector put on the topic, each event once, in topic order."""

    def __init__(self, running: Running, redis: Redis) -> None:
        self.running = running
        self.store = RedisStore(redis)
        self.alerts: list[dict[str, Any]] = []
        self.done: set[str] = set()
        scoring = LiveFile.open(REPO / "scoring" / "scoring.yaml", load_scoring_file, "scoring-sdk")
        icp = LiveFile.open(REPO / "scoring" / "icp.yaml", load_icp_file, "icp-sdk")
        routing = LiveFile.open(REPO / "rules" / "routing.yaml", load_rules_file, "routing-sdk")
        self.pipeline = Pipeline(self.store, scoring, routing, self.publish, icp=icp)

    async def publish(self, key: str, value: bytes) -> None:
        self.alerts.append(await open_alert(self.store.redis, value))

    async def drain(self, expected: int) -> list[dict[str, Any]]:
        events = await read_topic(self.running.settings, len(self.done) + expected)
        new = sorted((e for e in events if e["event_id"] not in self.done),
                     key=lambda e: (e["_partition"], e["_offset"]))
        self.done.update(e["event_id"] for e in new)
        raw = [orjson.dumps({k: v for k, v in e.items() if not k.startswith("_")}) for e in new]
        report = await self.pipeline.process(raw)
        assert report.invalid == 0
        return new


def sdk(running: Running, calls: Callable[[Any], None], *, rudder: bool = False) -> list[Any]:
    errors = Errors()
    if rudder:
        from rudderstack.analytics.client import Client as RudderClient

        client: Any = RudderClient(write_key="RWK_TEST", host=running.url, on_error=errors, max_retries=1,
                                   upload_interval=0.05)
    else:
        from segment.analytics.client import Client as SegmentClient

        client = SegmentClient(write_key="WK_TEST", host=running.url, on_error=errors, max_retries=1,
                               upload_interval=0.05)
    calls(client)
    client.flush()
    client.shutdown()
    return errors.items


async def test_segment_demo_requested_before_identify_is_a_hand_raiser_once(collector: Running,
                                                                           redis: Redis) -> None:
    worker = Worker(collector, redis)

    def anonymous(c: Any) -> None:
        c.track(anonymous_id="anon-seg-demo-1", event="Demo Requested", properties={"form_id": "demo-request"})

    assert await asyncio.to_thread(sdk, collector, anonymous) == []
    [ev] = await worker.drain(1)
    assert (ev["type"], ev["email"], ev["form_id"]) == ("form_fill", None, "demo-request")
    anon = await worker.store.lead_hash(keys.lead_id_for_visitor(pid("anon-seg-demo-1")))
    assert float(anon["score"]) == 60.0 and "hr_ts" in anon and anon.get("ready") != "1"
    assert worker.alerts == []  # nobody to route yet

    def identify(c: Any) -> None:
        c.identify(anonymous_id="anon-seg-demo-1", user_id="u-maya",
                   traits={"email": "maya@brightpath.io", "firstName": "Maya", "company": "Brightpath"})

    assert await asyncio.to_thread(sdk, collector, identify) == []
    await worker.drain(1)
    lead_id = keys.lead_id_for_email("maya@brightpath.io")
    lead = await worker.store.lead_hash(lead_id)
    assert lead["ready"] == "1" and lead["last_trigger"] == "hand_raiser" and lead["crossing"] == "1"
    assert "hr_ts" not in lead and lead["versions"].startswith("scoring=") and "icp=" in lead["versions"]
    assert lead["mql_versions"] == lead["versions"]
    reasons = {r.rule: r.points for r in await worker.store.lead_reasons(lead_id)}
    assert reasons == {"form-fill": 10.0, "hand-raiser": 50.0}  # the anonymous points, counted once
    [alert] = worker.alerts
    assert alert["trigger"] == "hand-raiser: asked anonymously, identified now"

    # Identifying again (another visit, same person) does not raise the hand a second time.
    def again(c: Any) -> None:
        c.identify(anonymous_id="anon-seg-demo-1", user_id="u-maya", traits={"email": "maya@brightpath.io"})

    assert await asyncio.to_thread(sdk, collector, again) == []
    await worker.drain(1)
    assert (await worker.store.lead_hash(lead_id))["crossing"] == "1" and len(worker.alerts) == 1


async def test_rudderstack_whitepaper_downloaded_earns_its_rule(collector: Running, redis: Redis) -> None:
    worker = Worker(collector, redis)

    def calls(c: Any) -> None:
        c.identify(anonymous_id="anon-rs-wp-1", traits={"email": "tom@fjordline.no"})
        c.track(anonymous_id="anon-rs-wp-1", event="Whitepaper Downloaded",
                properties={"title": "Routing leads in real time", "format": "pdf"})
        c.track(anonymous_id="anon-rs-wp-1", event="Whitepaper Viewed")  # no rule: nothing

    assert await asyncio.to_thread(sdk, collector, calls, rudder=True) == []
    events = await worker.drain(3)
    assert {e["source"] for e in events} == {"rudderstack"}
    lead_id = keys.lead_id_for_email("tom@fjordline.no")
    reasons = await worker.store.lead_reasons(lead_id)
    assert [(r.rule, r.points, r.detail) for r in reasons] == [
        ("content-download-event", 15.0, "did 'Whitepaper Downloaded'")]
    assert float((await worker.store.lead_hash(lead_id))["score"]) == 15.0


async def test_snowplow_structured_email_open_earns_its_rule(collector: Running, redis: Redis) -> None:
    worker = Worker(collector, redis)
    failures = Errors()

    def run() -> None:
        from snowplow_tracker.emitters import Emitter
        from snowplow_tracker.events.structured_event import StructuredEvent
        from snowplow_tracker.subject import Subject
        from snowplow_tracker.tracker import Tracker

        subject = Subject().set_domain_user_id("duid-sp-open-1")
        emitter = Emitter("127.0.0.1", protocol="http", port=collector.settings.ingest.collector_port,
                          method="post", batch_size=5, on_failure=failures)
        tracker = Tracker("ns-open", emitter, subject=subject, app_id="mail")
        tracker.track(StructuredEvent(category="email", action="open", label="nov-newsletter"))
        tracker.track(StructuredEvent(category="email", action="bounce"))  # no rule: nothing
        tracker.flush()

    await asyncio.to_thread(run)
    assert failures.items == []
    await worker.drain(2)
    lead_id = keys.lead_id_for_visitor(pid("duid-sp-open-1"))
    reasons = await worker.store.lead_reasons(lead_id)
    assert [(r.rule, r.points) for r in reasons] == [("snowplow-email-open", 2.0)]
    lead = await worker.store.lead_hash(lead_id)
    assert lead["n:track"] == "2" and float(lead["score"]) == 2.0
