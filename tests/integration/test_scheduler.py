"""The scheduler against a real redis-server with a driven clock: leads recycled at the exact moment
their engagement decays below recycle_below (by the tick, not on their next event), never an accepted
one, each once whatever the number of tickers, and a worker down over a weekend catching up on Monday."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from models import Event, EventType, Rep
from router import metrics
from router.storage import keys
from router.storage.live_config import load_scoring_file
from router.storage.redis import redis_from_url
from router.storage.store import RedisStore
from router.worker import lifecycle
from router.worker.distribution import assign_rep
from router.worker.pipeline import apply_batch
from router.worker.scheduler import recycle_due, tick
from rules import RepProfile, RoutingConfig, SlaPolicy, Strategy, Team, WorkingHours
from scoring import ScoringConfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCORING: ScoringConfig = load_scoring_file(REPO / "scoring" / "scoring.yaml")
HL = SCORING.half_life_s
RB = SCORING.ready.recycle_below
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 in New York


def make_team(sla: SlaPolicy | None = None, hours: WorkingHours | None = None) -> Team:
    reps = tuple(Rep(rep_id=r, name=f"Rep {r.upper()}", email=f"{r}@example.com", team="t") for r in "ab")
    days = frozenset(range(5)) if hours else frozenset(range(7))
    profiles = tuple(RepProfile(r, tz="America/New_York", hours=hours, days=days) for r in "ab")
    return Team(name="t", description="test", manager="Cara Losch", slack_webhook=None, reps=reps,
                managers=("Cara Losch",), strategy=Strategy.ROUND_ROBIN, profiles=profiles, sla=sla)


def config(team: Team) -> RoutingConfig:
    return RoutingConfig(version="v", source="test", teams={team.name: team}, rules=())


def form(email: str, at: datetime, n: int = 0) -> Event:
    return Event(event_id=f"form-{email}-{n}", type=EventType.FORM_FILL, ts=at.timestamp(), source="form",
                 email=email, form_id="demo-request")


def visit(email: str, at: datetime, path: str = "/pricing") -> Event:
    return Event(event_id=f"visit-{email}-{at.timestamp()}", type=EventType.PAGE_VIEW, ts=at.timestamp(),
                 source="pixel", email=email, url=f"https://acme.example{path}")


async def sales_ready(store: RedisStore, team: Team, email: str, at: datetime) -> str:
    """A hand-raiser routed and committed at ``at`` (the real scoring file, the real Lua)."""
    outcome = await apply_batch(store, SCORING, [form(email, at)], at.timestamp())
    [res] = outcome.results
    assert res.status == "fired"
    lead_id = outcome.plans[0].lead_id
    aid = f"{lead_id}:{res.crossing}"
    pick = await assign_rep(store, team, aid, lead_id, res.crossing, at)
    assert not isinstance(pick, type(None))
    await store.commit_assignment(lead_id, res.crossing, aid, pick.rep.rep_id, pick.rep.name,  # type: ignore[union-attr]
                                  team.name, "r", "v", at.timestamp())
    return lead_id


async def exact_due(store: RedisStore, lead_id: str) -> float:
    """asof + half_life * log2(score / recycle_below), from what the lead holds."""
    lead = await store.lead_hash(lead_id)
    score, asof = float(lead["score"]), float(lead["asof"])
    assert RB is not None and score > RB
    return asof + HL * math.log2(score / RB)


@pytest.fixture
async def second(redis_url: str, redis: Redis) -> AsyncIterator[Redis]:
    client = redis_from_url(redis_url)
    yield client
    await client.aclose()


def recycled_total() -> float:
    return metrics.REGISTRY.get_sample_value("leadrouter_recycled_total") or 0.0


async def test_a_cold_lead_is_recycled_by_the_tick_at_the_exact_moment_and_not_before(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team()
    lead_id = await sales_ready(store, team, "cold@acme.example", T0)
    due = await exact_due(store, lead_id)
    assert due - T0.timestamp() > 20 * 86400  # 60 points decay to 30 in 30 days' half-life: ~22 days
    # The exact moment is on the lead and in its due shard, computed in the same Lua step as the score.
    assert float((await store.lead_hash(lead_id))["recycle_at"]) == pytest.approx(due, abs=1e-3)
    assert (await store.due_pending("recycle"))[lead_id] == pytest.approx(due, abs=1e-3)
    assert await redis.zscore(keys.due("recycle", keys.due_shard(lead_id)), lead_id) is not None

    before = recycled_total()
    assert await recycle_due(store, SCORING, due - 1.0) == []  # one second early: nothing
    # Even an index entry that says "now" is only a hint: the lead's own step refuses one second early.
    await redis.zadd(keys.due("recycle", keys.due_shard(lead_id)), {lead_id: due - 5.0})
    assert await recycle_due(store, SCORING, due - 1.0) == []
    assert (await store.due_pending("recycle"))[lead_id] == pytest.approx(due, abs=1e-3)  # re-armed exactly
    assert (await store.lead_hash(lead_id))["stage"] == "mql"
    assert await store.open_leads("t", "a") == 1
    [done] = await recycle_due(store, SCORING, due + 0.5)  # no event came: the tick does it
    assert done.lead_id == lead_id and done.at == pytest.approx(due, abs=1e-3) and done.owner == "a"
    lead = await store.lead_hash(lead_id)
    assert (lead["stage"], lead["ready"]) == ("nurture", "0")
    assert float(lead["recycled_ts"]) == pytest.approx(due, abs=1e-3) and "recycle_at" not in lead
    # The re-engagement rules see how it ended, and when: at the exact moment, not at the tick.
    assert lead["last_outcome"] == "recycled" and lead["last_outcome_rep"] == "a"
    assert float(lead["last_outcome_ts"]) == pytest.approx(due, abs=1e-3)
    history = await store.lead_history(lead_id)
    assert history[-1]["action"] == "recycled" and history[-1]["at"] == pytest.approx(due, abs=1e-3)
    assert await store.open_leads("t", "a") == 0  # no longer an open lead of the rep
    assert recycled_total() == before + 1
    assert await store.due_pending("recycle") == {}
    assert await recycle_due(store, SCORING, due + 86400) == []  # once
    # Its rule re-armed: a new hand-raise fires a second crossing.
    again = await apply_batch(store, SCORING, [form("cold@acme.example", datetime.fromtimestamp(due + 60, UTC), 1)],
                              due + 60)
    assert again.results[0].status == "fired" and again.results[0].crossing == 2


async def test_more_points_move_the_moment_later_exactly_and_the_early_entry_only_rearms(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team()
    lead_id = await sales_ready(store, team, "warm@acme.example", T0)
    first = await exact_due(store, lead_id)
    later_visit = T0 + timedelta(days=10)
    await apply_batch(store, SCORING, [visit("warm@acme.example", later_visit)], later_visit.timestamp())
    second_due = await exact_due(store, lead_id)
    assert second_due > first + 86400
    assert (await store.due_pending("recycle"))[lead_id] == pytest.approx(second_due, abs=1e-3)
    # A stale (earlier) entry is only a hint: the tick recomputes on the lead and re-arms, never recycles early.
    await redis.zadd(keys.due("recycle", keys.due_shard(lead_id)), {lead_id: first})
    assert await recycle_due(store, SCORING, first + 1) == []
    assert (await store.lead_hash(lead_id))["stage"] == "mql"
    assert (await store.due_pending("recycle"))[lead_id] == pytest.approx(second_due, abs=1e-3)
    [done] = await recycle_due(store, SCORING, second_due + 1)
    assert done.at == pytest.approx(second_due, abs=1e-3)


async def test_an_accepted_lead_is_never_recycled(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team()
    lead_id = await sales_ready(store, team, "taken@acme.example", T0)
    due = await exact_due(store, lead_id)
    await lifecycle.accept(store, lead_id, "a", now=T0 + timedelta(minutes=5))
    assert await recycle_due(store, SCORING, due + 90 * 86400) == []
    lead = await store.lead_hash(lead_id)
    assert lead["stage"] == "sal" and "recycle_at" not in lead
    assert await store.due_pending("recycle") == {}  # the entry was cancelled when it came due
    # Its later events do not re-arm it either (accepted is not sales-ready-and-waiting).
    late = T0 + timedelta(days=40)
    [res] = (await apply_batch(store, SCORING, [visit("taken@acme.example", late)], late.timestamp())).results
    assert res.recycle_at is None and not res.recycled
    assert await store.due_pending("recycle") == {}


async def test_a_lead_sales_ready_below_the_level_is_not_armed(redis: Redis) -> None:
    store = RedisStore(redis)
    # Known, a little engagement, then made sales-ready by its account (not by its own score).
    await apply_batch(store, SCORING, [visit("tiny@acme.example", T0)], T0.timestamp())
    lead_id = keys.lead_id_for_email("tiny@acme.example")
    from models import Reason
    reason = Reason(rule="account_intent", points=0.0, event_id="e", event_type="page_view", ts=T0.timestamp(),
                    detail="account")
    res = await store.force_ready(lead_id, "acct:x:e", "account_intent", reason, T0.timestamp())
    assert res.status == "fired" and res.recycle_at is None
    assert await store.due_pending("recycle") == {}


async def test_two_racing_tickers_recycle_each_lead_exactly_once(redis: Redis, second: Redis) -> None:
    stores = [RedisStore(redis), RedisStore(second)]
    team = make_team()
    leads = [await sales_ready(stores[0], team, f"race{i}@acme.example", T0 + timedelta(hours=i))
             for i in range(30)]
    last = max([await exact_due(stores[0], lead_id) for lead_id in leads])
    done = []
    for _ in range(3):
        ticks = [recycle_due(s, SCORING, last + 1, limit=2) for s in stores for _ in range(3)]
        for batch in await asyncio.gather(*ticks):
            done.extend(batch)
    assert Counter(d.lead_id for d in done) == Counter(leads)  # every lead, each once
    for lead_id in leads:
        history = [h["action"] for h in await stores[1].lead_history(lead_id)]
        assert history.count("recycled") == 1


async def test_a_ticker_that_died_mid_step_gives_the_item_back_after_the_lease(redis: Redis) -> None:
    store = RedisStore(redis)
    lead_id = await sales_ready(store, make_team(), "lease@acme.example", T0)
    due = await exact_due(store, lead_id)
    claimed = await store.due_claim("recycle", due + 1, keys.DUE_LEASE_S, 10)  # claimed, then the worker died
    assert [item for _, item, _ in claimed] == [lead_id]
    assert await recycle_due(store, SCORING, due + 2) == []  # leased: not visible to another ticker
    [done] = await recycle_due(store, SCORING, due + 2 + keys.DUE_LEASE_S)
    assert done.lead_id == lead_id and done.at == pytest.approx(due, abs=1e-3)


async def test_a_worker_down_over_the_weekend_catches_up_on_monday(redis: Redis) -> None:
    store = RedisStore(redis)
    hours = WorkingHours(9 * 60, 17 * 60)
    team = make_team(SlaPolicy(accept_within_minutes=15, remind_after_minutes=10, escalate_to_manager=True,
                               max_reassignments=1), hours=hours)
    routing = config(team)
    # Recycles that fall due on Saturday and Sunday: leads that became sales-ready ~22 days before.
    saturday = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
    cold = []
    for i, when in enumerate((saturday, saturday + timedelta(hours=30))):
        # Back-date the crossing so that its exact recycle moment is `when`.
        lead_id = await sales_ready(store, make_team(), f"weekend{i}@acme.example", T0 - timedelta(days=30))
        due = await exact_due(store, lead_id)
        shift = due - when.timestamp()
        lead = await store.lead_hash(lead_id)
        await redis.hset(keys.lead(lead_id), "asof", repr(float(lead["asof"]) - shift))
        await redis.zadd(keys.due("recycle", keys.due_shard(lead_id)), {lead_id: when.timestamp()})
        cold.append((lead_id, when.timestamp()))
    # And an SLA: a lead assigned Friday at 16:40 New York time; reminder at 16:50, deadline 16:55.
    friday = datetime(2026, 11, 27, 21, 40, tzinfo=UTC)
    hot = await sales_ready(store, team, "friday@acme.example", friday)
    notes: list[tuple[str, str]] = []

    async def notify(kind: str, lead_id: str, assignment_id: str, rep: Rep) -> None:
        notes.append((kind, rep.rep_id))

    # Every worker is down from Friday 16:45 until Monday 09:00 New York time; then one tick.
    monday = datetime(2026, 11, 30, 14, 0, 5, tzinfo=UTC)
    report = await tick(store, SCORING, routing, notify, clock=monday.timestamp)
    assert sorted((r.lead_id, round(r.at)) for r in report.recycled) == sorted(
        (lead_id, round(at)) for lead_id, at in cold)
    for lead_id, at in cold:
        lead = await store.lead_hash(lead_id)
        assert lead["stage"] == "nurture" and float(lead["recycled_ts"]) == pytest.approx(at, abs=1.0)
    # The missed reminder and deadline are taken once each, in order, as of Monday; b's window starts now.
    assert [(a.kind, a.rep.rep_id if a.rep else "") for a in report.sla] == [("remind", "a"), ("reassign", "b")]
    assert notes == [("remind", "a"), ("reassign", "b")]
    again = await tick(store, SCORING, routing, notify, clock=(monday + timedelta(seconds=5)).timestamp)
    assert again.recycled == [] and again.sla == []
    lead = await store.lead_hash(hot)
    assert lead["owner"] == "b" and lead["stage"] == "mql"
    reminded = await tick(store, SCORING, routing, notify, clock=(monday + timedelta(minutes=10)).timestamp)
    assert [(a.kind, a.rep.rep_id if a.rep else "") for a in reminded.sla] == [("remind", "b")]
