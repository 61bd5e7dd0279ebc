"""Pipeline.route picks reps through the distributor, with the shipped routing.yaml, before publish-then-commit."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from prometheus_client import Histogram
from redis.asyncio import Redis

from models import Event, EventPlan, EventType
from router import metrics
from router.storage import keys
from router.storage.live_config import LiveFile, load_rules_file, load_scoring_file
from router.storage.store import RedisStore
from router.worker.pipeline import Pipeline

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TUESDAY_10_NY = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


async def test_route_uses_the_team_strategy_skips_leave_and_records_history(redis: Redis) -> None:
    store = RedisStore(redis)
    routing_path, scoring_path = REPO / "rules" / "routing.yaml", REPO / "scoring" / "scoring.yaml"
    routing = LiveFile.open(routing_path, load_rules_file, "routing")
    scoring = LiveFile.open(scoring_path, load_scoring_file, "scoring")
    published: list[tuple[str, dict[str, object], bool]] = []

    async def publish(key: str, value: bytes) -> None:
        committed = "owner" in await store.lead_hash(key)
        published.append((key, orjson.loads(value), committed))

    pipeline = Pipeline(store, scoring, routing, publish, clock=TUESDAY_10_NY.timestamp)
    names = []
    for i in range(4):
        email = f"buyer{i}@elbe-mb.de"
        lead_id = keys.lead_id_for_email(email)
        ev = Event(event_id=f"e{i}", type=EventType.FORM_FILL, ts=TUESDAY_10_NY.timestamp(), source="form",
                   email=email, form_id="demo-request", fields={"country": "DE", "company": "Elbe"})
        plan = EventPlan(event=ev, lead_id=lead_id, reasons=(), points=60.0, hand_raiser=True, fields=dict(ev.fields))
        [result] = await store.apply([plan], threshold=scoring.current.threshold,
                                     half_life_s=scoring.current.half_life_s, now=TUESDAY_10_NY.timestamp())
        assignment = await pipeline.route(plan, result, scoring.current)
        names.append(assignment.rep.rep_id)
        lead = await store.lead_hash(lead_id)
        assert lead["owner"] == assignment.rep.rep_id and lead["team"] == "east"
        history = await store.lead_history(lead_id)
        assert [(h["action"], h["rep"], h["queued"]) for h in history] == [("assigned", assignment.rep.rep_id, False)]
        # Replaying the crossing (a crash before commit) gets the same rep: no skipped or doubled turn.
        again = await pipeline.route(plan, result, scoring.current)
        assert again.rep == assignment.rep
    # East is round robin; Garret Kinder is on leave (routing.yaml), so his turn passes to the next rep.
    assert names == ["violet-mclelland", "corliss-cosme", "rosie-papadopoulos", "wilburn-farren"]
    assert len(published) == 8
    assert all(not committed for _, _, committed in published[::2])  # first publish precedes the commit, as before
    reminders = await store.sla_pending("east", "remind")
    assert len(reminders) == 4
    assert {round(due - TUESDAY_10_NY.timestamp()) for _, due in reminders} == {600}


async def test_process_records_how_long_each_event_took_to_reach_the_worker(redis: Redis) -> None:
    """leadrouter_event_to_worker_seconds: the worker's clock at the batch's start minus each event's receive time."""
    store = RedisStore(redis)
    routing = LiveFile.open(REPO / "rules" / "routing.yaml", load_rules_file, "routing")
    scoring = LiveFile.open(REPO / "scoring" / "scoring.yaml", load_scoring_file, "scoring")

    async def publish(key: str, value: bytes) -> None:
        return None

    now = TUESDAY_10_NY.timestamp()
    pipeline = Pipeline(store, scoring, routing, publish, clock=lambda: now)
    histogram = metrics.EVENT_TO_WORKER_SECONDS
    count0, sum0 = _sample(histogram, "_count"), _sample(histogram, "_sum")
    raws = [orjson.dumps({"event_id": f"w{i}", "type": "page_view", "ts": now - delay, "source": "pixel",
                          "visitor_id": f"visitor-{i:04d}", "url": "https://example.com/"})
            for i, delay in enumerate((0.04, 2.5))]
    await pipeline.process(raws)
    assert _sample(histogram, "_count") - count0 == 2
    assert _sample(histogram, "_sum") - sum0 == pytest.approx(2.54)


def _sample(histogram: Histogram, suffix: str) -> float:
    [metric] = histogram.collect()
    return sum(s.value for s in metric.samples if s.name.endswith(suffix))
