"""The signed CRM webhook against a real redis-server: what it accepts, what it refuses and why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from router.admin.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from router.settings import Settings
from router.storage import keys
from tests.integration.test_admin_api import Api, make_api, route_lead

pytestmark = pytest.mark.integration

SECRET = "crm-shared-secret-0123456789abcdef"
PATH = "/v1/webhooks/crm"


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url, admin_crm_webhook_secret=SECRET,
                                                  admin_crm_webhook_max_bytes=2048))
    yield a
    await client.close()


async def send(api: Api, body: Any, *, ts: float | None = None, secret: str = SECRET, raw: bytes | None = None,
               sig: str | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else orjson.dumps(body)
    stamp = str(int(api.clock() if ts is None else ts))
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sig or signature(secret, stamp, data),
               "Content-Type": "application/json"}
    return await api.call("POST", PATH, who=None, data=data, headers=headers)


async def test_won_walks_the_lifecycle_and_writes_the_training_row(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "jane@acme.com")
    status, body = await send(api, {"event": "opportunity.won", "lead": "jane@acme.com", "reason": "annual plan",
                                    "id": "crm-77"})
    assert status == 200, body
    assert [(s["action"], s["from"], s["to"]) for s in body["steps"]] == [
        ("accept", "mql", "sal"), ("convert", "sal", "opportunity"), ("won", "opportunity", "won")]
    assert all(s["rep_id"] == rep_id for s in body["steps"])
    rows: Any = await api.redis.xrange(keys.OUTCOMES)
    row = orjson.loads(rows[-1][1][b"json"])
    assert (row["lead_id"], row["outcome"], row["reason"]) == (lead_id, "won", "annual plan")


async def test_lost_converted_accepted_and_rejected(api: Api) -> None:
    a, _ = await route_lead(api, "a@acme.com", event_id="a")
    b, _ = await route_lead(api, "b@acme.com", event_id="b")
    c, _ = await route_lead(api, "c@acme.com", event_id="c")
    status, body = await send(api, {"event": "opportunity.lost", "lead": a})
    assert status == 200 and [s["to"] for s in body["steps"]] == ["sal", "sql", "lost"]
    status, body = await send(api, {"event": "opportunity.converted", "lead": "b@acme.com"})
    assert status == 200 and [s["to"] for s in body["steps"]] == ["sal", "opportunity"]
    assert (await api.store.lead_hash(b))["stage"] == "opportunity"
    api.clock.now += 1  # another delivery (a new timestamp)
    status, body = await send(api, {"event": "sales.rejected", "lead": c})
    assert status == 400 and body["error"] == "missing_field" and "'reason'" in body["detail"]
    status, body = await send(api, {"event": "sales.rejected", "lead": c, "reason": "bogus"})
    assert status == 422 and body["error"] == "bad_reason" and "not-a-fit" in body["detail"]
    api.clock.now += 1
    status, body = await send(api, {"event": "sales.rejected", "lead": c, "reason": "not-a-fit"})
    assert status == 200 and [s["to"] for s in body["steps"]] == ["nurture"]
    d, _ = await route_lead(api, "d@acme.com", event_id="d")
    status, body = await send(api, {"event": "sales.accepted", "lead": d})
    assert status == 200 and [s["to"] for s in body["steps"]] == ["sal"]
    status, body = await send(api, {"event": "sales.accepted", "lead": d, "id": "again"})
    assert status == 409 and body["error"] == "bad_stage"


async def test_bad_signature_wrong_secret_and_missing_headers_are_401(api: Api) -> None:
    lead_id, _ = await route_lead(api, "jane@acme.com")
    body = {"event": "sales.accepted", "lead": lead_id}
    status, answer = await send(api, body, secret="not-the-shared-secret-at-all")
    assert status == 401 and answer["error"] == "bad_signature"
    status, answer = await send(api, body, sig="sha256=" + "0" * 64)
    assert status == 401 and answer["error"] == "bad_signature"
    # The signature covers the body: a changed body with the old signature fails.
    stamp = str(int(api.clock()))
    good = signature(SECRET, stamp, orjson.dumps(body))
    tampered = orjson.dumps({"event": "opportunity.lost", "lead": lead_id})
    status, answer = await send(api, None, raw=tampered, sig=good)
    assert status == 401 and answer["error"] == "bad_signature"
    status, answer = await api.call("POST", PATH, who=None, data=orjson.dumps(body))
    assert status == 401 and answer["error"] == "missing_timestamp"
    assert (await api.store.lead_hash(lead_id))["stage"] == "mql"  # nothing moved


async def test_stale_and_future_timestamps_are_refused(api: Api) -> None:
    lead_id, _ = await route_lead(api, "jane@acme.com")
    body = {"event": "sales.accepted", "lead": lead_id}
    status, answer = await send(api, body, ts=api.clock() - 301)
    assert status == 401 and answer["error"] == "stale_timestamp" and "300 s window" in answer["detail"]
    status, answer = await send(api, body, ts=api.clock() + 400)
    assert status == 401 and answer["error"] == "stale_timestamp"
    status, answer = await send(api, body, ts=api.clock() - 299)
    assert status == 200, answer


async def test_a_replayed_delivery_is_refused_once_applied(api: Api) -> None:
    lead_id, _ = await route_lead(api, "jane@acme.com")
    body = {"event": "sales.accepted", "lead": lead_id}
    status, _ = await send(api, body)
    assert status == 200
    status, answer = await send(api, body)  # byte for byte the same delivery
    assert status == 409 and answer["error"] == "replayed"
    ttl = [await api.redis.ttl(k) async for k in api.redis.scan_iter(match=keys.webhook_seen("*"))]
    assert ttl and all(0 < t <= 600 for t in ttl)


async def test_a_refused_delivery_is_taken_when_the_crm_retries_it_unchanged(api: Api) -> None:
    # The CRM reports the outcome before the lead reached us (404); its retry, byte for byte the same
    # delivery, must not be refused as a replay once the lead exists.
    body = {"event": "sales.accepted", "lead": "late@acme.com"}
    stamp = api.clock()
    status, answer = await send(api, body, ts=stamp)
    assert status == 404 and answer["error"] == "unknown_lead"
    assert not [k async for k in api.redis.scan_iter(match=keys.webhook_seen("*"))]  # the claim was released
    lead_id, _ = await route_lead(api, "late@acme.com")
    status, answer = await send(api, body, ts=stamp)
    assert status == 200 and answer["lead_id"] == lead_id
    assert (await api.store.lead_hash(lead_id))["stage"] == "sal"
    status, answer = await send(api, body, ts=stamp)  # applied now: a third copy is a replay
    assert status == 409 and answer["error"] == "replayed"


async def test_oversized_bodies_are_413_before_anything_else(api: Api) -> None:
    lead_id, _ = await route_lead(api, "jane@acme.com")
    big = {"event": "sales.accepted", "lead": lead_id, "id": "x" * 3000}
    status, answer = await send(api, big)
    assert status == 413 and answer["error"] == "body_too_large" and "2048" in answer["detail"]
    assert (await api.store.lead_hash(lead_id))["stage"] == "mql"


async def test_unknown_lead_and_wrong_fields_name_the_field(api: Api) -> None:
    status, answer = await send(api, {"event": "opportunity.won", "lead": "nobody@nowhere.io"})
    assert status == 404 and answer["error"] == "unknown_lead" and "'lead'" in answer["detail"]
    api.clock.now += 1
    cases: list[tuple[Any, str, str]] = [
        ({"event": "opportunity.won", "lead": "a@b.c", "amount": 5}, "unknown_field", "'amount'"),
        ({"event": "deal.closed", "lead": "a@b.c"}, "bad_value", "field 'event'"),
        ({"lead": "a@b.c"}, "missing_field", "'event'"),
        ({"event": "opportunity.won", "lead": 42}, "bad_type", "'lead'"),
        ({"event": "opportunity.won"}, "missing_field", "'lead'"),
        (["opportunity.won"], "bad_json", "object"),
    ]
    for i, (body, code, words) in enumerate(cases):
        api.clock.now += 1
        status, answer = await send(api, body, ts=api.clock() + i * 0)
        assert (status, answer["error"]) == (400, code), (body, answer)
        assert words in answer["detail"], answer
    status, answer = await send(api, None, raw=b"{not json")
    assert status == 400 and answer["error"] == "bad_json"


async def test_without_a_secret_the_webhook_is_off(redis: Redis, redis_url: str) -> None:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url))
    try:
        status, answer = await send(a, {"event": "sales.accepted", "lead": "x@y.z"}, secret="")
        assert status == 503 and answer["error"] == "webhook_disabled"
        assert "LEADROUTER_ADMIN_CRM_WEBHOOK_SECRET" in answer["detail"]
    finally:
        await client.close()
