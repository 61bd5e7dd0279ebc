"""Property-based fuzz of the admin API from its own /openapi.json: no input gives a 5xx.

Schemathesis reads the document the running app serves, generates requests for
every operation (valid ones, and invalid ones in negative mode) and sends them
with an ops token to the app started in-process on a free port, against a real
redis-server seeded with a routed lead so lead and rep routes reach real data.
Every answer must not be a server error, and must match the document: a
documented status, content type and body schema.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from models import Event, EventPlan, EventType
from router.admin.app import AdminService
from router.admin.auth import Role, TokenStore
from router.admin.openapi import OPERATIONS
from router.settings import Settings
from router.storage import keys
from router.storage.live_config import load_rules_file, load_scoring_file
from router.storage.redis import redis_from_url, sync_redis_from_url
from router.storage.store import RedisStore
from router.worker.distribution import assign_rep
from tests.support import sync_flush

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
POSITIVE_EXAMPLES = 25
NEGATIVE_EXAMPLES = 10
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@contextmanager
def running_admin(app_settings: Settings) -> Iterator[str]:
    """The admin service on a free loopback port, in its own thread and event loop; yields its base URL."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def run() -> None:
        service = AdminService(app_settings)
        try:
            await service.start()
        except BaseException as exc:
            state["error"] = exc
            ready.set()
            return
        stop = asyncio.Event()
        state.update(port=service.port, stop=stop, loop=asyncio.get_running_loop())
        ready.set()
        try:
            await stop.wait()
        finally:
            await service.stop()

    thread = threading.Thread(target=lambda: asyncio.run(run()), name="admin-api", daemon=True)
    thread.start()
    assert ready.wait(15), "the admin API did not start within 15 s"
    if "error" in state:
        raise state["error"]
    try:
        yield f"http://127.0.0.1:{state['port']}"
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(15)


async def seed(app_settings: Settings) -> tuple[str, str, str]:
    """An ops token and a routed lead: (token, lead_id, owner rep_id)."""
    redis = redis_from_url(app_settings.redis.url)
    try:
        token, _ = await TokenStore(redis).create(Role.OPS, name="fuzz", now=time.time())
        store = RedisStore(redis)
        scoring = load_scoring_file(app_settings.files.scoring_file)
        config = load_rules_file(app_settings.files.rules_file)
        email = "fuzz@example.com"
        lead_id = keys.lead_id_for_email(email)
        ts = NOW.timestamp()
        ev = Event(event_id="f1", type=EventType.FORM_FILL, ts=ts, source="form", email=email, form_id="demo-request",
                   fields={"company": "Fuzz Inc", "country": "US"})
        [res] = await store.apply([EventPlan(event=ev, lead_id=lead_id, reasons=(), points=60.0, hand_raiser=True,
                                             fields=dict(ev.fields))],
                                  threshold=scoring.threshold, half_life_s=scoring.half_life_s, now=ts)
        team = config.team("central")
        aid = f"{lead_id}:{res.crossing}"
        pick = await assign_rep(store, team, aid, lead_id, res.crossing, NOW)
        await store.commit_assignment(lead_id, res.crossing, aid, pick.rep.rep_id, pick.rep.name, team.name,
                                      "default", config.version, ts)
        return token, lead_id, pick.rep.rep_id
    finally:
        await redis.aclose()


def fuzz(strategy: st.SearchStrategy[Any], examples: int, base: str, headers: dict[str, str],
         checks: list[Any]) -> None:
    """Send ``examples`` generated requests to ``base``; every answer must pass ``checks``."""

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck), phases=(Phase.explicit, Phase.generate))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base, headers=headers, timeout=15)
        case.validate_response(response, checks=checks, headers=headers)

    run()


def test_no_request_from_the_spec_gets_a_server_error(redis_url: str) -> None:
    client = sync_redis_from_url(redis_url)
    sync_flush(client)
    client.close()
    # The CRM webhook on, so the fuzz reaches its signature checks (off, it answers 503 by design).
    app_settings = Settings.of(redis_url=redis_url, admin_port=0, admin_simulate_max_leads=200,
                               admin_max_rules_bytes=64 * 1024, admin_crm_webhook_secret="fuzz-webhook-secret-0123456789")
    token, lead_id, rep_id = asyncio.run(seed(app_settings))
    known = {"lead_id": lead_id, "rep_id": rep_id, "version": "1"}
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    failures: list[str] = []
    declared_ops = {(op.method, op.path): op for op in OPERATIONS}
    with running_admin(app_settings) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=10)
        operations = list(schema.get_all_operations())
        assert all(isinstance(r, Ok) for r in operations)
        seen = 0
        for result in operations:
            assert isinstance(result, Ok)
            operation = result.ok()
            fixed = {k: v for k, v in known.items() if f"{{{k}}}" in operation.path}
            declared = declared_ops[(operation.method.upper(), operation.path)]
            modes = [(GenerationMode.POSITIVE, POSITIVE_EXAMPLES)]
            if declared.params or declared.body is not None:  # nothing to make invalid otherwise
                modes.append((GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))
            for mode, examples in modes:
                checks = CHECKS if mode is GenerationMode.POSITIVE else [not_a_server_error]
                strategies = [operation.as_strategy(generation_mode=mode)]
                if fixed:
                    strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=fixed))

                try:
                    fuzz(st.one_of(strategies), examples, base, headers, checks)
                except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures, report all
                    failures.append(f"{operation.label} [{mode.value}]: {exc}")
                seen += 1
        assert seen > len(operations)
    elapsed = time.monotonic() - started
    assert not failures, "\n\n".join(failures)
    assert elapsed < 120, f"the fuzz took {elapsed:.0f} s; lower the example counts"
