"""Distribution inside a team against a real redis-server: strategies, availability, capacity, races."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta

import pytest
from redis.asyncio import Redis

from models import Rep
from router.storage import keys
from router.storage.redis import redis_from_url
from router.storage.store import RedisStore
from router.worker.distribution import Pick, pick_rep, rep_slots
from rules import DateRange, RepProfile, SlaPolicy, Strategy, Team, WorkingHours

pytestmark = pytest.mark.integration

# Tuesday 2026-11-24 15:00 UTC: 10:00 in New York, 09:00 in Chicago, 16:00 in Berlin.
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
WEEKDAYS = frozenset(range(5))


def make_team(strategy: Strategy, profiles: Sequence[RepProfile], sla: SlaPolicy | None = None,
              name: str = "t") -> Team:
    reps = tuple(Rep(rep_id=p.rep_id, name=p.rep_id.title(), email=f"{p.rep_id}@example.com", team=name)
                 for p in profiles)
    return Team(name=name, description="test team", manager="Mia Manager", slack_webhook=None, reps=reps,
                managers=("Mia Manager",), strategy=strategy, profiles=tuple(profiles), sla=sla)


def office(rep_id: str, **kw: object) -> RepProfile:
    """A rep on New York office hours unless told otherwise."""
    base: dict[str, object] = {"tz": "America/New_York", "hours": WorkingHours(8 * 60, 18 * 60), "days": WEEKDAYS}
    base.update(kw)
    return RepProfile(rep_id, **base)  # type: ignore[arg-type]


async def pick(store: RedisStore, team: Team, n: int, now: datetime = NOW, **kw: object) -> Pick:
    got = await pick_rep(store, team, f"L{n}:1", f"L{n}", now, **kw)  # type: ignore[arg-type]
    assert got is not None
    return got


@pytest.fixture
async def second(redis_url: str, redis: Redis) -> AsyncIterator[Redis]:
    """A second client: another worker process as far as Redis can tell."""
    client = redis_from_url(redis_url)
    yield client
    await client.aclose()


# --- round robin -------------------------------------------------------------------------------------


async def test_round_robin_takes_turns_and_a_repeat_gets_the_same_rep(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team(Strategy.ROUND_ROBIN, [office("a"), office("b"), office("c")])
    got = [(await pick(store, team, i)).rep.rep_id for i in range(7)]
    assert got == ["a", "b", "c", "a", "b", "c", "a"]
    again = await pick(store, team, 1)
    assert again.rep.rep_id == "b" and not again.new and not again.queued
    assert await redis.zcard(keys.team_assigned("t", "b")) == 2  # the repeat did not count twice
    assert await redis.get(keys.team_rr("t")) == b"7"


async def test_round_robin_skips_leave_other_time_zones_hours_and_daily_capacity(redis: Redis) -> None:
    store = RedisStore(redis)
    at = NOW + timedelta(hours=2)  # 17:00 UTC: 12:00 New York, 11:00 Chicago, 18:00 Berlin
    team = make_team(Strategy.ROUND_ROBIN, [
        office("a", out_of_office=(DateRange(date(2026, 11, 24), date(2026, 11, 24)),)),
        office("b", tz="Europe/Berlin", hours=WorkingHours(9 * 60, 17 * 60 + 30)),
        office("c", tz="America/Chicago", capacity_day=1),
        office("d"),
    ])
    first = await pick(store, team, 0, at)
    assert first.rep.rep_id == "c"
    assert first.skipped == {"a": "out_of_office", "b": "outside_hours"}
    second_ = await pick(store, team, 1, at)
    assert second_.rep.rep_id == "d"
    third = await pick(store, team, 2, at)
    assert third.rep.rep_id == "d" and third.skipped["c"] == "capacity_day" and not third.queued
    # Chicago's next day: c's daily cap has reset, a is back from leave, Berlin is still after hours.
    tomorrow = at + timedelta(days=1)
    assert [(await pick(store, team, i, tomorrow)).rep.rep_id for i in (3, 4, 5)] == ["a", "c", "d"]
    # The daily cap counts from the rep's local midnight: 05:59 UTC is still "yesterday" in Chicago.
    late = datetime(2026, 11, 26, 5, 59, tzinfo=UTC)
    slots = {s.rep_id: s for s in rep_slots(team, late)}
    assert slots["c"].day_start == datetime(2026, 11, 25, 6, 0, tzinfo=UTC).timestamp()


async def test_working_hours_in_other_time_zones_follow_their_dst(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team(Strategy.ROUND_ROBIN, [
        office("berlin", tz="Europe/Berlin", hours=WorkingHours(9 * 60, 17 * 60 + 30)),
        office("chicago", tz="America/Chicago", hours=WorkingHours(8 * 60, 17 * 60)),
    ])
    # 07:45 UTC: Berlin 08:45 (CET, closed) on 27 March, 09:45 (CEST, open) on 30 March.
    before = await pick(store, team, 0, datetime(2026, 3, 27, 7, 45, tzinfo=UTC))
    assert before.queued and before.skipped == {"berlin": "outside_hours", "chicago": "outside_hours"}
    after = await pick(store, team, 1, datetime(2026, 3, 30, 7, 45, tzinfo=UTC))
    assert after.rep.rep_id == "berlin" and not after.queued
    # 13:45 UTC: Chicago 07:45 (CST, closed) on 6 March, 08:45 (CDT, open) on 9 March.
    assert (await pick(store, team, 2, datetime(2026, 3, 6, 13, 45, tzinfo=UTC))).rep.rep_id == "berlin"
    assert (await pick(store, team, 3, datetime(2026, 3, 9, 13, 45, tzinfo=UTC))).skipped == {}


# --- weighted ----------------------------------------------------------------------------------------


async def test_weighted_follows_the_smooth_weighted_round_robin_sequence(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team(Strategy.WEIGHTED, [office("a", weight=5), office("b", weight=1), office("c", weight=1)])
    seq = [(await pick(store, team, i)).rep.rep_id for i in range(7)]
    assert seq == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's documented order for 5:1:1: no bursts
    more = Counter([(await pick(store, team, i)).rep.rep_id for i in range(7, 7 + 693)])
    assert more == {"a": 495, "b": 99, "c": 99}


async def test_weighted_skips_unavailable_reps_and_keeps_shares_among_the_rest(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team(Strategy.WEIGHTED, [
        office("a", weight=3),
        office("b", weight=2, out_of_office=(DateRange(date(2026, 11, 24), date(2026, 11, 24)),)),
        office("c", weight=1),
    ])
    today = Counter([(await pick(store, team, i)).rep.rep_id for i in range(40)])
    assert today == {"a": 30, "c": 10}
    tomorrow = Counter([(await pick(store, team, i, NOW + timedelta(days=1))).rep.rep_id for i in range(40, 640)])
    assert tomorrow == {"a": 300, "b": 200, "c": 100}


# --- load balanced -----------------------------------------------------------------------------------


async def test_load_balanced_fills_reps_in_proportion_to_capacity_then_queues(redis: Redis) -> None:
    store = RedisStore(redis)
    caps = {"a": 10, "b": 20, "c": 30}
    team = make_team(Strategy.LOAD_BALANCED, [office(r, capacity_30d=c) for r, c in caps.items()])
    taken: Counter[str] = Counter()
    for i in range(60):
        p = await pick(store, team, i)
        assert not p.queued
        taken[p.rep.rep_id] += 1
        ratios = [taken[r] / c for r, c in caps.items()]
        assert max(ratios) - min(ratios) <= 1 / 10 + 1e-9  # never more than one lead apart, relative to cap
    assert taken == caps
    over = await pick(store, team, 60)
    assert over.queued and over.reason == "no_rep_available"
    assert set(over.skipped.values()) == {"capacity_30d"}
    # 30 days later the window has moved on and everyone has room again.
    later = await pick(store, team, 61, NOW + timedelta(days=30, seconds=1))
    assert not later.queued


async def test_load_balanced_sends_the_next_lead_to_whoever_closed_theirs(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team(Strategy.LOAD_BALANCED, [office(r, capacity_30d=100) for r in "abc"])
    first = [(await pick(store, team, i)).rep.rep_id for i in range(6)]
    assert Counter(first) == {"a": 2, "b": 2, "c": 2}
    for i, rep in enumerate(first):  # b closes both of their leads
        if rep == "b":
            await store.release_open("t", "b", f"L{i}")
    assert [(await pick(store, team, i)).rep.rep_id for i in (6, 7)] == ["b", "b"]
    assert await store.open_leads("t", "b") == 2


# --- nobody available, exclusions --------------------------------------------------------------------


async def test_nobody_available_still_assigns_by_strategy_queued_with_sla_from_next_opening(redis: Redis) -> None:
    store = RedisStore(redis)
    sla = SlaPolicy(accept_within_minutes=15, remind_after_minutes=10)
    team = make_team(Strategy.ROUND_ROBIN, [office("a"), office("b")], sla=sla)
    night = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # Friday 22:00 in New York
    got = [await pick(store, team, i, night) for i in range(3)]
    assert [p.rep.rep_id for p in got] == ["a", "b", "a"]
    assert all(p.queued and p.reason == "no_rep_available" for p in got)
    monday_open = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)  # Monday 08:00 New York
    assert got[0].remind_at == pytest.approx((monday_open + timedelta(minutes=10)).timestamp())
    assert got[0].deadline_at == pytest.approx((monday_open + timedelta(minutes=15)).timestamp())
    pending = dict(await store.sla_pending("t", "reassign"))
    assert pending[keys.sla_member("L0", "L0:1")] == pytest.approx(got[0].deadline_at)


async def test_excluded_reps_are_never_picked_and_all_excluded_is_explicit(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team(Strategy.ROUND_ROBIN, [office("a"), office("b"), office("c")])
    got = [(await pick(store, team, i, exclude={"b"})).rep.rep_id for i in range(4)]
    assert got == ["a", "c", "a", "c"]
    everyone = await pick(store, team, 4, exclude={"a", "b", "c"})
    assert everyone.queued and everyone.reason == "all_reps_excluded"
    assert await pick_rep(store, team, "L5:1", "L5", NOW, exclude={"a", "b", "c"}, allow_excluded=False) is None
    assert await redis.get(keys.team_pick("t", "L5:1")) is None  # nothing recorded


# --- races between workers -------------------------------------------------------------------------


async def gather_bounded(jobs: Sequence[tuple[RedisStore, Team, int]], in_flight: int = 24) -> list[Pick]:
    """All picks at once, at most ``in_flight`` per worker (a client's connection pool is bounded)."""
    gates = {id(s): asyncio.Semaphore(in_flight) for s, _, _ in jobs}

    async def one(store: RedisStore, team: Team, i: int) -> Pick:
        async with gates[id(store)]:
            return await pick(store, team, i)

    return list(await asyncio.gather(*(one(s, t, i) for s, t, i in jobs)))


async def race(stores: Sequence[RedisStore], team: Team, ids: Sequence[int], seed: int,
               duplicate: bool = False) -> dict[int, list[str]]:
    """Every id picked from a random worker (each id from every worker when ``duplicate``), all at once."""
    rng = random.Random(seed)
    jobs: list[tuple[int, RedisStore]] = []
    for i in ids:
        if duplicate:
            jobs += [(i, s) for s in stores]
        else:
            jobs.append((i, rng.choice(stores)))
    rng.shuffle(jobs)
    picks = await gather_bounded([(s, team, i) for i, s in jobs])
    out: dict[int, list[str]] = {}
    for (i, _), p in zip(jobs, picks, strict=True):
        out.setdefault(i, []).append(p.rep.rep_id)
    return out


async def test_two_workers_racing_round_robin_never_share_or_skip_a_turn(redis: Redis, second: Redis) -> None:
    stores = [RedisStore(redis), RedisStore(second)]
    team = make_team(Strategy.ROUND_ROBIN, [office(r) for r in "abc"])
    got = await race(stores, team, range(300), seed=7, duplicate=True)
    assert all(len(set(reps)) == 1 for reps in got.values())  # both workers got the same rep per assignment
    assert Counter(reps[0] for reps in got.values()) == {"a": 100, "b": 100, "c": 100}
    assert await redis.get(keys.team_rr("t")) == b"300"
    for r in "abc":
        assert await redis.zcard(keys.team_assigned("t", r)) == 100


async def test_two_workers_racing_weighted_keep_the_shares(redis: Redis, second: Redis) -> None:
    stores = [RedisStore(redis), RedisStore(second)]
    team = make_team(Strategy.WEIGHTED, [office("a", weight=3), office("b", weight=2), office("c", weight=1)])
    got = await race(stores, team, range(600), seed=11)
    shares = Counter(reps[0] for reps in got.values())
    for rep, want in {"a": 0.5, "b": 1 / 3, "c": 1 / 6}.items():
        assert shares[rep] / 600 == pytest.approx(want, abs=0.01)


async def test_two_workers_racing_load_balanced_never_exceed_capacity(redis: Redis, second: Redis) -> None:
    stores = [RedisStore(redis), RedisStore(second)]
    caps = {"a": 5, "b": 10, "c": 15}
    team = make_team(Strategy.LOAD_BALANCED, [office(r, capacity_30d=c, capacity_day=c) for r, c in caps.items()])
    rng = random.Random(3)
    jobs = [(i, rng.choice(stores)) for i in range(40)]
    picks = await gather_bounded([(s, team, i) for i, s in jobs])
    in_capacity = Counter(p.rep.rep_id for p in picks if not p.queued)
    assert in_capacity == caps
    assert sum(p.queued for p in picks) == 10  # the rest still went to someone, marked queued
    assert all(p.reason == "no_rep_available" for p in picks if p.queued)


async def test_fair_over_time_with_random_leave(redis: Redis) -> None:
    """Four weeks of seeded random days off: each rep's share matches the days they were in."""
    store = RedisStore(redis)
    rng = random.Random(2026)
    reps = "abcde"
    days = [NOW + timedelta(days=d) for d in range(28) if (NOW + timedelta(days=d)).weekday() < 5]
    leave: dict[str, list[DateRange]] = {r: [] for r in reps}
    for day in days:
        off = rng.sample(reps, rng.randint(0, 2))
        for r in off:
            leave[r].append(DateRange(day.date(), day.date()))
    team = make_team(Strategy.ROUND_ROBIN, [office(r, out_of_office=tuple(leave[r])) for r in reps])
    expected: dict[str, float] = dict.fromkeys(reps, 0.0)
    got: Counter[str] = Counter()
    n = 0
    for day in days:
        present = [r for r in reps if not any(x.covers(day.date()) for x in leave[r])]
        for _ in range(30):
            p = await pick(store, team, n, day)
            n += 1
            assert not p.queued and p.rep.rep_id in present
            got[p.rep.rep_id] += 1
        for r in present:
            expected[r] += 30 / len(present)
    for r in reps:
        assert got[r] == pytest.approx(expected[r], abs=len(days))  # at most one lead a day off its fair share


async def test_an_out_of_office_override_from_the_admin_api_is_honoured_until_its_date(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team(Strategy.ROUND_ROBIN, [office("a"), office("b")])
    # Set as PATCH /v1/reps/a/availability does: away through Wednesday (New York).
    await redis.hset(keys.rep_availability("a"), mapping={"out_of_office": "1", "until": "2026-11-25"})
    got = [(await pick(store, team, i)).rep.rep_id for i in range(3)]
    assert got == ["b", "b", "b"]
    skipped = (await pick(store, team, 3)).skipped
    assert skipped.get("a") == "out_of_office"
    # Thursday the override has lapsed and a takes turns again.
    thursday = NOW + timedelta(days=2)
    assert {(await pick(store, team, 10 + i, now=thursday)).rep.rep_id for i in range(2)} == {"a", "b"}
    # Cleared (out_of_office false deletes it): available at once.
    await redis.delete(keys.rep_availability("a"))
    assert "a" not in (await pick(store, team, 20)).skipped
