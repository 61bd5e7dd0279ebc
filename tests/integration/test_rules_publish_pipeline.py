"""A routing decision made by the worker's pipeline records the published rules version."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.storage.live_config import LiveFile, RedisRulesSource
from router.storage.rules_store import RulesStore, check_files
from router.storage.store import RedisStore
from router.worker.pipeline import Pipeline
from scoring import ScoringConfig, load_scoring_config
from tests.support import open_alert

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCORING = """\
threshold: 100
half_life_days: 30
rules:
  - {name: demo, description: demo form, event: form_fill, form: demo-request, points: 50, hand_raiser: true}
"""


def demo_request(event_id: str, email: str, country: str) -> bytes:
    event = Event(event_id=event_id, type=EventType.FORM_FILL, ts=1_790_000_000.0, source="form", email=email,
                  form_id="demo-request", fields={"country": country, "company": "Hottechi"})
    return orjson.dumps(event.to_dict())


async def test_decisions_record_the_published_version(redis: Redis, tmp_path: Path) -> None:
    shutil.copy(REPO / "rules" / "examples" / "routing_alt.yaml", tmp_path / "alt.yaml")
    shutil.copy(REPO / "rules" / "examples" / "routing_alt_test.yaml", tmp_path / "alt_test.yaml")
    (tmp_path / "scoring.yaml").write_text(SCORING, encoding="utf-8")
    scoring = LiveFile.open(tmp_path / "scoring.yaml",
                            lambda p: load_scoring_config(p.read_text(encoding="utf-8"), str(p)), "scoring-test")
    routing = RedisRulesSource(REPO / "rules" / "routing.yaml", redis, label="routing-test")
    alerts: list[dict[str, object]] = []

    async def publish_alert(key: str, value: bytes) -> None:
        alerts.append(await open_alert(redis, value))

    pipeline = Pipeline(RedisStore(redis), scoring, routing, publish_alert, clock=lambda: 1_790_000_001.0)
    await pipeline.process([demo_request("e1", "a@hottechi.kr", "JP")])
    first = alerts[-1]["assignment"]["decision"]  # type: ignore[index]
    assert first["team"] == "west" and ":" not in first["rules_version"]  # the file, nothing published

    published = await RulesStore(redis).publish(check_files(tmp_path / "alt.yaml"), author="alice")
    assert await routing.poll() is True
    await pipeline.process([demo_request("e2", "b@hottechi.kr", "JP")])
    second = alerts[-1]["assignment"]["decision"]  # type: ignore[index]
    assert second["team"] == "central" and second["rule"] == "apac"
    assert second["rules_version"] == published.tag == "v1:2026-11-22.1-apac-central"
    assert isinstance(scoring.current, ScoringConfig)
