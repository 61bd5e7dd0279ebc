"""The admin process scores with the PUBLISHED scoring version in Redis, as the worker does: the explain endpoint and
the console's lead page use the file only while nothing is published, and follow a publish or a rollback without a
restart (real Redis, the console's own publish form)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from router.settings import Settings
from router.storage.live_config import load_scoring_file
from scoring import score_at
from tests.integration.test_admin_api import NOW, Api, make_api, route_lead
from tests.integration.test_console import get, post, sign_in

pytestmark = pytest.mark.integration

PRICING = "url: ^/pricing(?:[/?]|$)\n    points: {}\n"


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url))
    yield a
    await client.close()


def fact(page: str, name: str) -> str:
    m = re.search(rf'data-fact="{name}">([^<]*)<', page)
    assert m, name
    return m.group(1)


async def test_explain_and_lead_page_follow_the_published_scoring_without_restart(api: Api) -> None:
    lead_id, _rep = await route_lead(api, "jane@acme.com")
    api.clock.now = (NOW + timedelta(days=15)).timestamp()
    file_scoring = load_scoring_file(api.settings.files.scoring_file)
    # Nothing published: the file's points, threshold and half-life.
    csrf = await sign_in(api, "ops")
    status, page, _ = await get(api, f"/console/leads/{lead_id}")
    assert status == 200 and "Half-life 30 days" in page
    status, ex = await api.call("GET", f"/v1/leads/{lead_id}/explain")
    assert status == 200 and ex["scoring_version"] == file_scoring.version
    assert ex["threshold"] == 100 and ex["half_life_days"] == 30
    pricing = next(p for p in ex["parts"] if p["rule"] == "pricing-page")
    assert pricing["rule_points"] == 10
    assert ex["score_now"] == pytest.approx(score_at(75.0, NOW.timestamp(), api.clock(), 30 * 86400.0))
    # Ops publish v1 on the console: pricing worth 12, threshold 90, a 10-day half-life (cases updated to match).
    text = (api.settings.files.scoring_file.read_text(encoding="utf-8")
            .replace(PRICING.format(10), PRICING.format(12)).replace("half_life_days: 30", "half_life_days: 10")
            .replace("threshold: 100        #", "threshold: 90         #"))
    cases_path = api.settings.files.scoring_file.with_name("scoring_test.yaml")
    cases = cases_path.read_text(encoding="utf-8")
    cases = cases.replace("expect: {points: 11", "expect: {points: 13", 1)
    assert text.count("points: 12") == 1
    status, page, _ = await post(api, "/console/rules/scoring", {"csrf": csrf, "text": text, "cases": cases,
                                                                  "note": "pricing 12", "action": "publish"})
    assert status == 303, re.findall(r'id="message">([^<]*)', page)
    # The same admin process, no restart: the explain endpoint uses v1.
    status, ex = await api.call("GET", f"/v1/leads/{lead_id}/explain")
    assert status == 200 and ex["scoring_version"].startswith("v1:")
    assert ex["threshold"] == 90 and ex["half_life_days"] == 10
    pricing = next(p for p in ex["parts"] if p["rule"] == "pricing-page")
    assert pricing["rule_points"] == 12
    v1_now = score_at(75.0, NOW.timestamp(), api.clock(), 10 * 86400.0)
    assert ex["score_now"] == pytest.approx(v1_now) and pricing["points_now"] == pytest.approx(
        score_at(15.0, NOW.timestamp(), api.clock(), 10 * 86400.0))
    status, state = await api.call("GET", f"/v1/leads/{lead_id}")
    assert state["threshold"] == 90 and state["score_now"] == pytest.approx(v1_now)
    status, page, _ = await get(api, f"/console/leads/{lead_id}")
    assert status == 200 and fact(page, "Threshold") == "90" and fact(page, "Score now") == f"{v1_now:.1f}"
    assert "Half-life 10 days" in page  # the score chart decays with v1 too
    # Roll back to the file? Not possible (nothing older is published); a v2 back to 10 points takes over too.
    status, _, _ = await post(api, "/console/rules/scoring", {
        "csrf": csrf, "text": text.replace(PRICING.format(12), PRICING.format(10)),
        "cases": cases.replace("expect: {points: 13", "expect: {points: 11", 1), "note": "back", "action": "publish"})
    assert status == 303
    status, ex = await api.call("GET", f"/v1/leads/{lead_id}/explain")
    assert ex["scoring_version"].startswith("v2:")
    assert next(p for p in ex["parts"] if p["rule"] == "pricing-page")["rule_points"] == 10
    status, _, _ = await post(api, "/console/rules/scoring/rollback", {"csrf": csrf, "version": "1", "note": "again"})
    assert status == 303
    status, ex = await api.call("GET", f"/v1/leads/{lead_id}/explain")
    assert ex["scoring_version"].startswith("v1:")
    assert next(p for p in ex["parts"] if p["rule"] == "pricing-page")["rule_points"] == 12
