"""Manual reassignment by ops against a real redis-server, through the admin API and the CLI: recorded with
who, when and why; the SLA restarts for the new rep, who is alerted by the next tick; the old rep's pending
steps are cancelled; a rep cannot do it and an out-of-office rep is refused."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from models import Alert, Rep
from router import metrics
from router.admin.auth import Role
from router.settings import Settings
from router.storage import audit, keys
from router.storage.live_config import LiveFile, load_rules_file, load_scoring_file
from router.storage.redis import flush, redis_from_url
from router.storage.store import RedisStore
from router.worker import lifecycle
from router.worker.pipeline import Pipeline
from router.worker.scheduler import tick
from tests.integration.test_admin_api import NOW, Api, make_api, route_lead
from tests.support import open_alert

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCORING = load_scoring_file(REPO / "scoring" / "scoring.yaml")
WEDNESDAY = NOW + timedelta(days=1)  # 2026-11-25 09:00 in Chicago: moses-frase is out of office (roster)


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url))
    yield a
    await client.close()


def live(value: object, label: str) -> LiveFile:  # type: ignore[type-arg]
    return LiveFile(path=Path(f"/nonexistent/{label}.yaml"), loader=lambda _p: value, label=label, current=value)


class Inbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def __call__(self, kind: str, lead_id: str, assignment_id: str, rep: Rep) -> None:
        self.sent.append((kind, assignment_id, rep.rep_id))


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def pending(store: RedisStore, team: str, step: str) -> dict[str, float]:
    return dict(await store.sla_pending(team, step))


async def test_reassign_through_the_api_restarts_the_sla_and_alerts_the_new_rep(api: Api) -> None:
    lead_id, owner = await route_lead(api, "jane@acme.com", at=WEDNESDAY)
    api.clock.now = WEDNESDAY.timestamp() + 120
    central = api.config.team("central")
    target = next(r.rep_id for r in central.reps if r.rep_id not in (owner, "moses-frase"))
    old_aid = f"{lead_id}:1"
    assert keys.sla_member(lead_id, old_aid) in await pending(api.store, "central", "remind")
    await api.token("rep", Role.REP, owner)
    manual = sample("leadrouter_sla_reassignments_total", team="central", how="manual")

    # Who may: ops only.  What: a known rep who is in, not the one who has it, with a reason.
    body = {"to": target, "reason": "Jane asked for a German speaker"}
    for who in ("rep", "viewer"):
        status, err = await api.call("POST", f"/v1/leads/{lead_id}/reassign", who=who, json=body)
        assert status == 403 and err["error"] == "forbidden"
    status, err = await api.call("POST", f"/v1/leads/{lead_id}/reassign", json={"to": target})
    assert status == 400 and "reason" in err["detail"]
    status, err = await api.call("POST", f"/v1/leads/{lead_id}/reassign", json={**body, "to": "anna-snelin"})
    assert status == 422 and err["error"] == "unknown_rep" and "did you mean 'anna-snelling'?" in err["detail"]
    status, err = await api.call("POST", f"/v1/leads/{lead_id}/reassign", json={**body, "to": "moses-frase"})
    assert status == 409 and err["error"] == "out_of_office"
    assert "out of office until 2026-11-27 (routing.yaml)" in err["detail"]
    status, err = await api.call("POST", f"/v1/leads/{lead_id}/reassign", json={**body, "to": owner})
    assert status == 409 and "already assigned to" in err["detail"]
    assert (await api.store.lead_hash(lead_id))["owner"] == owner  # nothing moved

    status, res = await api.call("POST", f"/v1/leads/{lead_id}/reassign", json=body)
    assert status == 200, res
    assert (res["from_rep"], res["to_rep"], res["by"], res["team"]) == (owner, target, "ops", "central")
    new_aid = res["assignment_id"]
    assert new_aid == f"{lead_id}:1:m1" and res["previous_assignment_id"] == old_aid
    now = api.clock.now
    assert res["remind_at"] == pytest.approx(now + 10 * 60) and res["deadline_at"] == pytest.approx(now + 15 * 60)
    lead = await api.store.lead_hash(lead_id)
    assert (lead["owner"], lead["stage"], lead["assignment_id"]) == (target, "mql", new_aid)
    entry = (await api.store.lead_history(lead_id))[-1]
    assert entry["action"] == "reassign" and entry["manual"] is True and entry["by"] == "ops"
    assert entry["reason"] == "Jane asked for a German speaker" and entry["from_rep"] == owner
    assert entry["ts"] == pytest.approx(now)
    # The old rep's steps are gone, the new rep's window is scheduled, and their lead counts move.
    remind = await pending(api.store, "central", "remind")
    assert keys.sla_member(lead_id, old_aid) not in remind and keys.sla_member(lead_id, new_aid) in remind
    assert keys.sla_member(lead_id, old_aid) not in await pending(api.store, "central", "reassign")
    assert await api.store.open_leads("central", owner) == 0 and await api.store.open_leads("central", target) == 1
    # The old rep can no longer act on it.
    status, err = await api.call("POST", f"/v1/leads/{lead_id}/accept", who="rep")
    assert status == 403

    # The next tick alerts the new rep (once), with who moved it and why.
    published: list[Alert] = []

    async def publish(key: str, value: bytes) -> None:
        published.append(Alert.from_dict(await open_alert(api.store.redis, value)))

    routing = live(api.config, "routing")
    pipeline = Pipeline(api.store, live(SCORING, "scoring"), routing, publish, clock=api.clock)
    report = await tick(api.store, SCORING, routing, pipeline.sla_alert, clock=api.clock)
    assert [(a.kind, a.rep.rep_id if a.rep else "") for a in report.sla] == [("manual", target)]
    [alert] = published
    assert alert.assignment.rep.rep_id == target and alert.assignment.assignment_id == new_aid
    assert alert.trigger == "reassigned to you by ops: Jane asked for a German speaker"
    # A routing decision: logged with the lead's vector as of now.
    from router.storage.decisions import read_decisions

    [moved] = [r for r in await read_decisions(api.redis) if r.get("rule") == "sla:manual_reassign"]
    assert (moved["kind"], moved["lead_id"], moved["rep_id"]) == ("route", lead_id, target)
    assert moved["features"]["lead_origin"] == "form" and moved["ts"] == api.clock()
    assert sample("leadrouter_sla_reassignments_total", team="central", how="manual") == manual + 1
    assert (await tick(api.store, SCORING, routing, pipeline.sla_alert, clock=api.clock)).sla == []

    # The SLA restarted for the new rep: reminded 10 minutes after the move, never the old one.
    inbox = Inbox()
    api.clock.now = now + 10 * 60
    report = await tick(api.store, SCORING, routing, inbox, clock=api.clock)
    assert inbox.sent == [("remind", new_aid, target)]
    # The new rep accepts: time to accept is counted (from becoming sales-ready) once a worker ticks.
    accepted = sample("leadrouter_sla_time_to_accept_seconds_count", team="central")
    waited = sample("leadrouter_sla_time_to_accept_seconds_sum", team="central")
    await lifecycle.accept(api.store, lead_id, target, now=now + 11 * 60)
    await tick(api.store, SCORING, routing, inbox, clock=api.clock)
    assert sample("leadrouter_sla_time_to_accept_seconds_count", team="central") == accepted + 1
    assert sample("leadrouter_sla_time_to_accept_seconds_sum", team="central") == pytest.approx(
        waited + 13 * 60, abs=1.0)
    api.clock.now = now + 2 * 3600
    assert (await tick(api.store, SCORING, routing, inbox, clock=api.clock)).sla == []
    # An accepted lead can still be moved by ops: back to mql for the new rep.
    other = next(r.rep_id for r in central.reps if r.rep_id not in (owner, target, "moses-frase"))
    status, res = await api.call("POST", f"/v1/leads/{lead_id}/reassign", json={"to": other, "reason": "holiday"})
    assert status == 200 and res["from_stage"] == "sal" and res["assignment_id"] == f"{lead_id}:1:m2"


async def test_a_lead_that_is_not_open_cannot_be_reassigned(api: Api) -> None:
    lead_id, owner = await route_lead(api, "sam@beta.io", at=WEDNESDAY)
    api.clock.now = WEDNESDAY.timestamp() + 60
    await lifecycle.reject(api.store, lead_id, owner, "not-a-fit", policy=api.config.lifecycle,
                           now=api.clock.now)
    other = next(r.rep_id for r in api.config.team("central").reps if r.rep_id not in (owner, "moses-frase"))
    status, err = await api.call("POST", f"/v1/leads/{lead_id}/reassign", json={"to": other, "reason": "x"})
    assert status == 409 and err["error"] == "bad_stage" and "it is nurture" in err["detail"]


def cli(argv: list[str], redis_url: str) -> int:
    from router.cli import leads as cmd_leads

    parser = argparse.ArgumentParser(prog="leadrouter")
    cmd_leads.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    settings = Settings.of(redis_url=redis_url, rules_file=REPO / "rules" / "routing.yaml",
                           scoring_file=REPO / "scoring" / "scoring.yaml")
    return int(args.fn(settings, args))


def test_reassign_from_the_cli(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_rules_file(REPO / "rules" / "routing.yaml")
    central = config.team("central")
    email = "greta@elbe-mb.de"

    async def setup() -> tuple[str, str, str, str]:
        client = redis_from_url(redis_url)
        try:
            await flush(client)
            api: Any = type("A", (), {"store": RedisStore(client), "config": config,
                                      "settings": Settings.of(redis_url=redis_url)})()
            lead_id, owner = await route_lead(api, email, at=datetime.now(NOW.tzinfo))
            away, target = [r.rep_id for r in central.reps if r.rep_id != owner][:2]
            await client.hset(keys.rep_availability(away), mapping={"out_of_office": "1", "until": ""})
            return lead_id, owner, away, target
        finally:
            await client.aclose()

    lead_id, owner, away, target = asyncio.run(setup())
    assert cli(["leads", "reassign", email, "--to", away, "--reason", "r", "--by", "Olga Ops"], redis_url) == 1
    assert "out of office (set through the admin API); pick a rep who is in" in capsys.readouterr().err
    assert cli(["leads", "reassign", email, "--to", target, "--reason", "territory change", "--by", "Olga Ops",
                "--json"], redis_url) == 0
    out = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["from_rep"], out["to_rep"], out["by"], out["reason"]) == (owner, target, "Olga Ops",
                                                                          "territory change")

    async def check() -> None:
        client = redis_from_url(redis_url)
        try:
            store = RedisStore(client)
            lead = await store.lead_hash(lead_id)
            assert lead["owner"] == target and lead["reassigned_by"] == "Olga Ops"
            remind = dict(await store.sla_pending("central", "remind"))
            assert keys.sla_member(lead_id, f"{lead_id}:1:m1") in remind
            assert keys.sla_member(lead_id, f"{lead_id}:1") not in remind
            notify = dict(await store.sla_pending("central", keys.NOTIFY_STEP))
            assert keys.sla_member(lead_id, f"{lead_id}:1:m1") in notify
            [entry] = await audit.for_lead(client, lead_id)  # the refused move left no entry
            assert (entry.action, entry.via, entry.target) == ("lead.reassign", "cli", target)
            assert entry.who.startswith("cli:") and "territory change (by Olga Ops)" in entry.detail
        finally:
            await client.aclose()

    asyncio.run(check())
    assert cli(["leads", "show", email], redis_url) == 0
    shown = capsys.readouterr().out
    assert "reassign" in shown and "by Olga Ops" in shown and "reason: territory change" in shown
