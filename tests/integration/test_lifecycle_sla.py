"""Accept-within SLAs against a real redis-server: remind -> reassign -> escalate, frozen clock, racing tickers."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from models import Event, EventPlan, EventType, Rep
from router.storage import keys
from router.storage.live_config import LiveFile
from router.storage.redis import redis_from_url
from router.storage.store import RedisStore
from router.worker import lifecycle
from router.worker.distribution import Pick, assign_rep
from router.worker.sla import SlaAction, run_due, sla_tick
from rules import LifecyclePolicy, RepProfile, RoutingConfig, SlaPolicy, Strategy, Team, WorkingHours

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 in New York
SLA = SlaPolicy(accept_within_minutes=15, remind_after_minutes=10, escalate_to_manager=True, max_reassignments=1)
POLICY = LifecyclePolicy()


def make_team(rep_ids: str = "abc", sla: SlaPolicy | None = SLA, hours: WorkingHours | None = None) -> Team:
    reps = tuple(Rep(rep_id=r, name=f"Rep {r.upper()}", email=f"{r}@example.com", team="t") for r in rep_ids)
    profiles = tuple(RepProfile(r, tz="America/New_York", hours=hours, days=frozenset(range(5)) if hours else
                                frozenset(range(7))) for r in rep_ids)
    return Team(name="t", description="test", manager="Cara Losch, Rocco Neubert", slack_webhook=None, reps=reps,
                managers=("Cara Losch", "Rocco Neubert"), strategy=Strategy.ROUND_ROBIN, profiles=profiles, sla=sla)


def config(team: Team) -> RoutingConfig:
    return RoutingConfig(version="v", source="test", teams={team.name: team}, rules=())


class Inbox:
    """The ``notify`` callback: records every notification."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, str]] = []

    async def __call__(self, kind: str, lead_id: str, assignment_id: str, rep: Rep) -> None:
        await asyncio.sleep(0)  # let racing tickers interleave
        self.sent.append((kind, lead_id, assignment_id, rep.rep_id))


async def route(store: RedisStore, team: Team, email: str, now: datetime, commit: bool = True
                ) -> tuple[str, Pick]:
    lead_id = keys.lead_id_for_email(email)
    ev = Event(event_id=f"ev-{email}", type=EventType.FORM_FILL, ts=now.timestamp(), source="form", email=email,
               form_id="demo-request")
    [res] = await store.apply([EventPlan(event=ev, lead_id=lead_id, reasons=(), points=50.0, hand_raiser=True)],
                              threshold=100.0, half_life_s=30 * 86400.0, now=now.timestamp())
    assert res.status == "fired"
    aid = f"{lead_id}:{res.crossing}"
    pick = await assign_rep(store, team, aid, lead_id, res.crossing, now)
    if commit:
        await store.commit_assignment(lead_id, res.crossing, aid, pick.rep.rep_id, pick.rep.name, team.name, "r",
                                      "v", now.timestamp())
    return lead_id, pick


def kinds(actions: list[SlaAction]) -> list[tuple[str, str]]:
    return [(a.kind, a.rep.rep_id if a.rep else "") for a in actions]


@pytest.fixture
async def second(redis_url: str, redis: Redis) -> AsyncIterator[Redis]:
    client = redis_from_url(redis_url)
    yield client
    await client.aclose()


async def test_remind_then_reassign_then_escalate_each_once(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team()
    routing = config(team)
    inbox = Inbox()
    lead_id, pick = await route(store, team, "jo@acme.com", T0)
    assert pick.rep.rep_id == "a"

    async def at(minutes: float) -> list[SlaAction]:
        return await run_due(store, routing, T0 + timedelta(minutes=minutes), inbox)

    assert await at(9.9) == []
    assert kinds(await at(10)) == [("remind", "a")]
    assert await at(10) == [] and await at(14) == []  # once
    moved = await at(15)
    assert kinds(moved) == [("reassign", "b")]
    assert moved[0].previous_rep is not None and moved[0].previous_rep.rep_id == "a"
    assert moved[0].new_assignment_id == f"{lead_id}:1:r1"
    lead = await store.lead_hash(lead_id)
    assert (lead["owner"], lead["assignment_id"], lead["stage"]) == ("b", f"{lead_id}:1:r1", "mql")
    assert await store.open_leads("t", "a") == 0 and await store.open_leads("t", "b") == 1
    # a can no longer accept it; b gets a fresh window, and its deadline escalates (max_reassignments: 1).
    with pytest.raises(lifecycle.NotOwnerError, match=r"assigned to Rep B \(b\)"):
        await lifecycle.accept(store, lead_id, "a", now=T0 + timedelta(minutes=16))
    assert kinds(await at(24.9)) == []
    assert kinds(await at(25)) == [("remind", "b")]
    escalated = await at(30)
    assert kinds(escalated) == [("escalate", "b")]
    assert escalated[0].managers == ("Cara Losch", "Rocco Neubert")
    assert await at(60) == []
    assert inbox.sent == [("remind", lead_id, f"{lead_id}:1", "a"), ("reassign", lead_id, f"{lead_id}:1:r1", "b"),
                          ("remind", lead_id, f"{lead_id}:1:r1", "b"), ("escalate", lead_id, f"{lead_id}:1:r1", "b")]
    history = await store.lead_history(lead_id)
    assert [(h["action"], h["rep"]) for h in history] == [
        ("assigned", "a"), ("sla_remind", "a"), ("sla_reassign", "b"), ("sla_remind", "b"), ("sla_escalate", "b")]
    assert history[2]["from_rep"] == "a" and history[2]["previous_assignment_id"] == f"{lead_id}:1"
    assert (await store.lead_hash(lead_id))["escalated"] == "1"
    for step in keys.SLA_STEPS:
        assert await store.sla_pending("t", step) == []
    # b can still take it after the escalation.
    assert (await lifecycle.accept(store, lead_id, "b", now=T0 + timedelta(minutes=31))).to_stage.value == "sal"


async def test_accepting_in_time_lets_every_step_lapse(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team()
    inbox = Inbox()
    lead_id, _ = await route(store, team, "in-time@acme.com", T0)
    await lifecycle.accept(store, lead_id, "a", now=T0 + timedelta(minutes=4))
    assert await run_due(store, config(team), T0 + timedelta(hours=1), inbox) == []
    assert inbox.sent == []
    assert [h["action"] for h in await store.lead_history(lead_id)] == ["assigned", "accept"]
    for step in keys.SLA_STEPS:
        assert await store.sla_pending("t", step) == []


async def test_rejecting_lapses_the_sla_too(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team()
    lead_id, _ = await route(store, team, "nah@acme.com", T0)
    await lifecycle.reject(store, lead_id, "a", "spam", policy=POLICY, now=T0 + timedelta(minutes=1))
    assert await run_due(store, config(team), T0 + timedelta(hours=1), Inbox()) == []


async def test_reassignment_skips_previous_holders_and_rejecters_then_escalates(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team("abc", sla=SlaPolicy(15, 10, True, max_reassignments=5))
    inbox = Inbox()
    lead_id, _ = await route(store, team, "x@acme.com", T0)
    await redis.sadd(keys.rejected(lead_id), "c")  # c turned this lead down on an earlier crossing
    first = await run_due(store, config(team), T0 + timedelta(minutes=15), inbox)
    assert kinds(first) == [("remind", "a"), ("reassign", "b")]  # a ticker that was down catches up in order
    # Nobody left (a and b held it, c rejected it): escalate at once instead of bouncing back.
    second_ = await run_due(store, config(team), T0 + timedelta(minutes=30), inbox)
    assert kinds(second_) == [("remind", "b"), ("escalate", "b")]
    assert [h["action"] for h in await store.lead_history(lead_id)][-1] == "sla_escalate"


async def test_without_escalation_the_lead_stays_with_the_last_holder(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team("ab", sla=SlaPolicy(15, None, escalate_to_manager=False, max_reassignments=1))
    lead_id, _ = await route(store, team, "y@acme.com", T0)
    assert kinds(await run_due(store, config(team), T0 + timedelta(minutes=15), Inbox())) == [("reassign", "b")]
    assert await run_due(store, config(team), T0 + timedelta(days=1), Inbox()) == []
    assert (await store.lead_hash(lead_id))["owner"] == "b"
    for step in keys.SLA_STEPS:
        assert await store.sla_pending("t", step) == []


async def test_a_queued_lead_starts_its_sla_clock_at_the_reps_next_working_hours(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team("ab", hours=WorkingHours(9 * 60, 17 * 60))
    night = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # Friday 22:00 in New York
    lead_id, pick = await route(store, team, "late@acme.com", night)
    assert pick.queued and pick.reason == "no_rep_available"
    monday = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)  # Monday 09:00 in New York
    assert await run_due(store, config(team), monday - timedelta(minutes=1), Inbox()) == []
    assert kinds(await run_due(store, config(team), monday + timedelta(minutes=10), Inbox())) == [("remind", "a")]
    history = await store.lead_history(lead_id)
    assert history[0]["queued"] is True and history[0]["reason"] == "no_rep_available"


async def test_a_step_due_before_the_routing_committed_is_retried_not_dropped(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team()
    inbox = Inbox()
    lead_id, pick = await route(store, team, "slow@acme.com", T0, commit=False)
    late = T0 + timedelta(minutes=16)
    assert await run_due(store, config(team), late, inbox) == []  # picked, alert not yet committed
    pending = dict(await store.sla_pending("t", "reassign"))
    assert pending[keys.sla_member(lead_id, pick.assignment_id)] > late.timestamp()  # still scheduled
    await store.commit_assignment(lead_id, 1, pick.assignment_id, "a", "Rep A", "t", "r", "v", T0.timestamp())
    done = await run_due(store, config(team), late + timedelta(minutes=1), inbox)
    assert kinds(done) == [("remind", "a"), ("reassign", "b")]


async def test_two_racing_tickers_take_every_step_exactly_once(redis: Redis, second: Redis) -> None:
    stores = [RedisStore(redis), RedisStore(second)]
    team = make_team("abcd")
    routing = config(team)
    inbox = Inbox()
    leads = [(await route(stores[0], team, f"lead{i}@race.io", T0))[0] for i in range(24)]
    rng = random.Random(5)
    actions: list[SlaAction] = []
    for minute in (10, 15, 25, 30, 45):
        now = T0 + timedelta(minutes=minute)
        for _ in range(4):  # several rounds of three tickers per worker, so the small limits drain it all
            ticks = [run_due(s, routing, now, inbox, limit=rng.randint(3, 9)) for s in stores for _ in range(3)]
            for batch in await asyncio.gather(*ticks):
                actions.extend(batch)
    per_lead = Counter((a.lead_id, a.kind) for a in actions)
    for lead_id in leads:
        assert per_lead[(lead_id, "remind")] == 2  # first holder, then the second
        assert per_lead[(lead_id, "reassign")] == 1
        assert per_lead[(lead_id, "escalate")] == 1
    assert len(actions) == 4 * len(leads) == len(inbox.sent)
    assert len(set(inbox.sent)) == len(inbox.sent)  # no notification twice
    for lead_id in leads:
        history = [h["action"] for h in await stores[1].lead_history(lead_id)]
        assert history == ["assigned", "sla_remind", "sla_reassign", "sla_remind", "sla_escalate"]
    # The reassignment went to the next rep by strategy, never back to the first holder.
    for a in actions:
        if a.kind == "reassign":
            assert a.previous_rep is not None and a.rep is not None and a.rep.rep_id != a.previous_rep.rep_id


async def test_sla_tick_reads_the_live_routing_and_the_clock(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team()
    live = LiveFile(path=Path("/nonexistent/routing.yaml"), loader=lambda _p: config(team), label="routing",
                    current=config(team))
    lead_id, _ = await route(store, team, "tick@acme.com", T0)
    inbox = Inbox()
    done = await sla_tick(store, live, inbox, clock=lambda: (T0 + timedelta(minutes=10)).timestamp())
    assert kinds(done) == [("remind", "a")] and inbox.sent[0][:2] == ("remind", lead_id)


async def test_a_failing_notification_is_reported_and_the_step_stays_done(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team()
    await route(store, team, "boom@acme.com", T0)

    async def broken(kind: str, lead_id: str, assignment_id: str, rep: Rep) -> None:
        raise ConnectionError("slack is down")

    done = await run_due(store, config(team), T0 + timedelta(minutes=10), broken)
    assert kinds(done) == [("remind", "a")] and not done[0].notified
    assert await run_due(store, config(team), T0 + timedelta(minutes=11), broken) == []


class StallingStore(RedisStore):
    """A worker that stalls between its pick and its commit while another ticker runs (real Redis)."""

    def __init__(self, redis: Redis, meanwhile: Callable[[], Awaitable[object]]) -> None:
        super().__init__(redis)
        self.meanwhile: Callable[[], Awaitable[object]] | None = meanwhile

    async def lead_sla(self, op: str, *args: Any, **kw: Any) -> dict[str, Any]:
        if op == "reassign" and self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            await run()
        return await super().lead_sla(op, *args, **kw)


async def test_a_ticker_that_outlived_its_lease_does_not_repeat_or_undo_a_reassignment(
        redis: Redis, second: Redis) -> None:
    team = make_team()
    lead_id, _ = await route(RedisStore(redis), team, "lease@acme.com", T0)
    due = T0 + timedelta(minutes=15)
    other: list[SlaAction] = []

    async def other_ticker() -> None:  # runs once ticker 1's 1-second lease has run out
        other.extend(await run_due(RedisStore(second), config(team), due + timedelta(seconds=2), Inbox()))

    slow = StallingStore(redis, other_ticker)
    mine = await run_due(slow, config(team), due, Inbox(), lease_s=1.0)
    assert kinds(other) == [("reassign", "b")]
    assert kinds(mine) == [("remind", "a")]  # its own reassignment lapsed: the other ticker did it
    store = RedisStore(redis)
    assert await store.open_leads("t", "b") == 1 and await store.open_leads("t", "a") == 0
    assert [h["action"] for h in await store.lead_history(lead_id)].count("sla_reassign") == 1
