"""Out of office and after-hours policies against a real redis-server, with a frozen clock.

A rep out of office never gets a lead (rules, account owner, SLA reassignment,
after hours); when nobody can take a lead now the team's after-hours policy
decides: next_available (earliest start across time zones and DST),
fallback_team, on_call, and a separate hand-raiser policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from models import Event, EventType, Rep
from router.storage import keys
from router.storage.live_config import LiveFile, load_rules_file, load_scoring_file
from router.storage.store import EventPlan, RedisStore
from router.worker.distribution import Held, Pick, assign_owner, assign_rep
from router.worker.pipeline import Pipeline
from router.worker.sla import run_due
from rules import DateRange, RepProfile, RoutingConfig, SlaPolicy, Strategy, Team, WorkingHours
from rules.availability import DEFAULT_AFTER_HOURS, AfterHours, Policy
from tests.support import open_alert

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WEEKDAYS = frozenset(range(5))
SLA = SlaPolicy(accept_within_minutes=15, remind_after_minutes=10, escalate_to_manager=True, max_reassignments=1)
TUESDAY_10_NY = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
FRIDAY_22_NY = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # Saturday 03:00 UTC
MONDAY_08_NY = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
LEAVE = (DateRange(date(2026, 11, 2), date(2027, 1, 29)),)


def office(rep_id: str, tz: str = "America/New_York", start: str = "08:00", **kw: object) -> RepProfile:
    h, m = (int(x) for x in start.split(":"))
    base: dict[str, object] = {"tz": tz, "hours": WorkingHours(h * 60 + m, 17 * 60 + 30), "days": WEEKDAYS}
    base.update(kw)
    return RepProfile(rep_id, **base)  # type: ignore[arg-type]


def make_team(profiles: Sequence[RepProfile], name: str = "t", strategy: Strategy = Strategy.ROUND_ROBIN,
              after_hours: AfterHours = DEFAULT_AFTER_HOURS, hand_raiser: AfterHours | None = None,
              sla: SlaPolicy | None = SLA) -> Team:
    reps = tuple(Rep(p.rep_id, p.rep_id.title(), f"{p.rep_id}@example.com", name) for p in profiles)
    return Team(name=name, description="test team", manager="Mia Manager", slack_webhook=None, reps=reps,
                managers=("Mia Manager",), strategy=strategy, profiles=tuple(profiles), sla=sla,
                after_hours=after_hours, hand_raiser_policy=hand_raiser)


async def fire(store: RedisStore, email: str, now: datetime, n: int = 1) -> tuple[str, int]:
    lead_id = keys.lead_id_for_email(email)
    ev = Event(event_id=f"ev-{email}-{n}", type=EventType.FORM_FILL, ts=now.timestamp(), source="form", email=email,
               form_id="demo-request")
    [res] = await store.apply([EventPlan(event=ev, lead_id=lead_id, reasons=(), points=200.0, hand_raiser=True)],
                              threshold=100.0, half_life_s=30 * 86400.0, now=now.timestamp())
    assert res.status == "fired"
    return lead_id, res.crossing


async def assign(store: RedisStore, team: Team, email: str, now: datetime, teams: dict[str, Team] | None = None,
                 hand_raiser: bool = False, commit: bool = True) -> tuple[str, Pick | Held]:
    lead_id, crossing = await fire(store, email, now)
    aid = f"{lead_id}:{crossing}"
    got = await assign_rep(store, team, aid, lead_id, crossing, now, teams=teams, hand_raiser=hand_raiser)
    if commit and isinstance(got, Pick):
        await store.commit_assignment(lead_id, crossing, aid, got.rep.rep_id, got.rep.name, got.team, "r", "v",
                                      now.timestamp())
    return lead_id, got


def picked(got: Pick | Held) -> Pick:
    assert isinstance(got, Pick), got
    return got


def picked_of(got: tuple[str, Pick | Held]) -> Pick:
    return picked(got[1])


async def set_away(redis: Redis, rep_id: str, until: str = "") -> None:
    await redis.hset(keys.rep_availability(rep_id), mapping={"out_of_office": "1", "until": until})


# --- out of office: never, by any path ----------------------------------------------------------------


async def test_rep_on_leave_never_gets_a_night_or_weekend_lead(redis: Redis) -> None:
    """The finding: at night the fallback pool included a rep on parental leave (SLA set to her return)."""
    store = RedisStore(redis)
    team = make_team([office("garret", out_of_office=LEAVE), office("violet"), office("rosie")])
    for n, at in enumerate([FRIDAY_22_NY, FRIDAY_22_NY + timedelta(days=1), datetime(2026, 12, 1, 2, 0, tzinfo=UTC)]):
        for i in range(4):
            got = picked_of(await assign(store, team, f"night{n}-{i}@x.io", at))
            assert got.rep.rep_id != "garret"
            assert got.queued and got.reason == "no_rep_available" and got.outcome == "next_available"
            assert got.skipped["garret"] == "out_of_office"
    # Weekend leads start their SLA clock on Monday 08:00 New York, not on her return in January.
    weekend = picked_of(await assign(store, team, "sat@x.io", FRIDAY_22_NY + timedelta(hours=30)))
    assert weekend.available_at == MONDAY_08_NY.timestamp()
    assert weekend.remind_at == (MONDAY_08_NY + timedelta(minutes=10)).timestamp()


async def test_admin_override_wins_over_outside_hours_and_the_whole_team_away_is_held(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team([office("a"), office("b")])
    await set_away(redis, "a")
    got = picked_of(await assign(store, team, "one@x.io", FRIDAY_22_NY))
    assert got.rep.rep_id == "b" and got.skipped["a"] == "out_of_office"
    await set_away(redis, "b", until="2026-12-31")
    lead_id, held = await assign(store, team, "two@x.io", FRIDAY_22_NY)
    assert isinstance(held, Held) and held.reason == "team_out_of_office"
    assert await redis.get(keys.team_pick("t", f"{lead_id}:1")) is None  # nobody was given it
    history = await store.lead_history(lead_id)
    assert [(h["action"], h["reason"]) for h in history] == [("held", "team_out_of_office")]
    # Retried (the lead's next event resumes the open crossing): still held, recorded once; then b is back.
    assert isinstance(await assign_rep(store, team, f"{lead_id}:1", lead_id, 1, FRIDAY_22_NY), Held)
    assert len(await store.lead_history(lead_id)) == 1
    await redis.delete(keys.rep_availability("b"))
    back = picked(await assign_rep(store, team, f"{lead_id}:1", lead_id, 1, MONDAY_08_NY))
    assert back.rep.rep_id == "b" and not back.queued


async def test_whole_team_out_of_office_goes_to_the_declared_team(redis: Redis) -> None:
    store = RedisStore(redis)
    other = make_team([office("x", tz="America/Los_Angeles")], name="o")
    team = make_team([office("a", out_of_office=LEAVE), office("b", out_of_office=LEAVE)],
                     after_hours=AfterHours(Policy.NEXT_AVAILABLE, team="o"))
    teams = {"t": team, "o": other}
    got = picked_of(await assign(store, team, "p@x.io", TUESDAY_10_NY, teams))
    assert (got.team, got.rep.rep_id, got.reason, got.outcome) == ("o", "x", "team_out_of_office", "fallback_team")
    # 15:00 UTC is 07:00 in Los Angeles: x starts at 08:00 there, so it waits an hour for x, not for a or b.
    assert got.queued and got.available_at == datetime(2026, 11, 24, 16, 0, tzinfo=UTC).timestamp()


async def test_out_of_office_account_owner_is_skipped(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team([office("owner", out_of_office=LEAVE), office("other")])
    owner = team.reps[0]
    lead_id, crossing = await fire(store, "o@acme.io", TUESDAY_10_NY)
    assert await assign_owner(store, team, owner, f"{lead_id}:1", lead_id, crossing, TUESDAY_10_NY) is None
    # Set away through the admin API (the roster says nothing): also skipped, inside working hours.
    team2 = make_team([office("owner2"), office("other2")], name="t2")
    await set_away(redis, "owner2", until="2026-11-24")
    lead2, c2 = await fire(store, "o2@acme.io", TUESDAY_10_NY)
    assert await assign_owner(store, team2, team2.reps[0], f"{lead2}:1", lead2, c2, TUESDAY_10_NY) is None
    assert await redis.get(keys.team_pick("t2", f"{lead2}:1")) is None
    # The override ended yesterday (in the rep's zone): the owner gets it.
    lead3, c3 = await fire(store, "o3@acme.io", TUESDAY_10_NY + timedelta(days=1))
    got = await assign_owner(store, team2, team2.reps[0], f"{lead3}:1", lead3, c3, TUESDAY_10_NY + timedelta(days=1))
    assert got is not None and got.rep.rep_id == "owner2"


async def test_sla_reassignment_never_goes_to_a_rep_out_of_office(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team([office("a"), office("b", out_of_office=LEAVE), office("c")])
    routing = RoutingConfig(version="v", source="test", teams={"t": team}, rules=())
    sent: list[tuple[str, str]] = []

    async def notify(kind: str, lead_id: str, assignment_id: str, rep: Rep) -> None:
        sent.append((kind, rep.rep_id))

    _, got = await assign(store, team, "s@x.io", TUESDAY_10_NY)
    assert picked(got).rep.rep_id == "a"
    await run_due(store, routing, TUESDAY_10_NY + timedelta(minutes=15), notify)
    assert [x for x in sent if x[0] == "reassign"] == [("reassign", "c")]  # b is on leave: passed over
    # c is then set away through the admin API; a second lead's reassignment has nobody left: it escalates.
    lead2, got2 = await assign(store, team, "s2@x.io", TUESDAY_10_NY)
    assert picked(got2).rep.rep_id == "a"
    await set_away(redis, "c")
    actions = await run_due(store, routing, TUESDAY_10_NY + timedelta(minutes=15, seconds=1), notify)
    mine = [a for a in actions if a.lead_id == lead2]
    assert [(a.kind, a.rep.rep_id if a.rep else "") for a in mine] == [("remind", "a"), ("escalate", "a")]
    assert (await store.lead_hash(lead2))["owner"] == "a"
    assert all(rep != "b" for _, rep in sent)


# --- next_available: the earliest start across time zones and DST ----------------------------------------


async def test_next_available_picks_the_earliest_start_across_time_zones(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team([
        office("la", tz="America/Los_Angeles", start="07:00"),  # Monday 15:00 UTC
        office("ny", start="08:30"),  # Monday 13:30 UTC
        office("berlin", tz="Europe/Berlin", start="09:00"),  # Monday 08:00 UTC: first
        office("berlin2", tz="Europe/Berlin", start="09:00"),
        office("tokyo", tz="Asia/Tokyo", start="09:00", out_of_office=LEAVE),  # Monday 00:00 UTC, but away
    ])
    got = [picked_of(await assign(store, team, f"w{i}@x.io", FRIDAY_22_NY)) for i in range(4)]
    assert [g.rep.rep_id for g in got] == ["berlin", "berlin2", "berlin", "berlin2"]  # ties take turns
    assert {g.available_at for g in got} == {datetime(2026, 11, 30, 8, 0, tzinfo=UTC).timestamp()}
    # Monday 09:00 UTC: Berlin is open now, so the lead is not queued.
    now = picked_of(await assign(store, team, "m@x.io", datetime(2026, 11, 30, 9, 0, tzinfo=UTC)))
    assert not now.queued and now.rep.rep_id.startswith("berlin")


async def test_next_available_follows_the_dst_switch(redis: Redis) -> None:
    """New York starts 04:30, London 09:00.  Before 8 March 2026 New York (EST) opens at 09:30 UTC, after it
    (EDT) at 08:30 UTC; London stays on GMT (until 29 March) at 09:00 UTC."""
    store = RedisStore(redis)
    team = make_team([office("london", tz="Europe/London", start="09:00"), office("ny", start="04:30")])
    before = picked_of(await assign(store, team, "b@x.io", datetime(2026, 2, 28, 12, 0, tzinfo=UTC)))
    assert (before.rep.rep_id, before.available_at) == ("london", datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp())
    across = picked_of(await assign(store, team, "a@x.io", datetime(2026, 3, 7, 12, 0, tzinfo=UTC)))
    assert (across.rep.rep_id, across.available_at) == ("ny", datetime(2026, 3, 9, 8, 30, tzinfo=UTC).timestamp())
    assert across.deadline_at == datetime(2026, 3, 9, 8, 45, tzinfo=UTC).timestamp()


# --- fallback_team, on_call, hand-raisers -------------------------------------------------------------------


async def test_fallback_team_takes_after_hours_leads_and_a_retry_gets_the_same_rep(redis: Redis) -> None:
    store = RedisStore(redis)
    west = make_team([office("w1", tz="America/Los_Angeles"), office("w2", tz="America/Los_Angeles")], name="west",
                     sla=SlaPolicy(accept_within_minutes=20))
    east = make_team([office("e1"), office("e2", out_of_office=LEAVE)], name="east",
                     after_hours=AfterHours(Policy.FALLBACK_TEAM, team="west"))
    teams = {"east": east, "west": west}
    at = datetime(2026, 11, 24, 23, 0, tzinfo=UTC)  # Tuesday 18:00 New York, 15:00 Los Angeles
    lead_id, got = await assign(store, east, "f@x.io", at, teams, commit=False)
    pick = picked(got)
    assert (pick.team, pick.rep.rep_id, pick.outcome, pick.queued) == ("west", "w1", "fallback_team", False)
    assert pick.deadline_at == (at + timedelta(minutes=20)).timestamp()  # the west team's SLA
    assert [m for m, _ in await store.sla_pending("west", "reassign")] == [keys.sla_member(lead_id, f"{lead_id}:1")]
    # Redelivered an hour later, when east is still closed: the same rep, counted once.
    again = picked(await assign_rep(store, east, f"{lead_id}:1", lead_id, 1, at + timedelta(hours=1), teams=teams))
    assert (again.team, again.rep.rep_id, again.new) == ("west", "w1", False)
    # West is closed too (Tuesday 21:00 Los Angeles): west's next available rep, not east's.
    late = picked((await assign(store, east, "g@x.io", datetime(2026, 11, 25, 5, 0, tzinfo=UTC), teams))[1])
    assert late.team == "west" and late.queued
    assert late.available_at == datetime(2026, 11, 25, 16, 0, tzinfo=UTC).timestamp()


async def test_on_call_rep_takes_night_leads_unless_away(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team([office("a"), office("oncall"), office("b")],
                     after_hours=AfterHours(Policy.ON_CALL, rep="oncall"))
    got = [picked((await assign(store, team, f"n{i}@x.io", FRIDAY_22_NY))[1]) for i in range(3)]
    assert [(g.rep.rep_id, g.outcome, g.queued) for g in got] == [("oncall", "on_call", False)] * 3
    assert got[0].deadline_at == (FRIDAY_22_NY + timedelta(minutes=15)).timestamp()  # the clock starts now
    # In working hours the team's strategy applies as usual.
    day = picked((await assign(store, team, "d@x.io", MONDAY_08_NY))[1])
    assert day.outcome == "available" and not day.queued
    # On-call rep away: next_available, never the on-call rep.
    await set_away(redis, "oncall")
    away = picked((await assign(store, team, "x@x.io", FRIDAY_22_NY + timedelta(days=7)))[1])
    assert away.rep.rep_id in {"a", "b"} and away.outcome == "next_available"


async def test_hand_raiser_policy_applies_to_hand_raisers_only(redis: Redis) -> None:
    store = RedisStore(redis)
    team = make_team([office("a"), office("b"), office("fast")],
                     hand_raiser=AfterHours(Policy.ON_CALL, rep="fast"))
    hot = picked((await assign(store, team, "h@x.io", FRIDAY_22_NY, hand_raiser=True))[1])
    assert (hot.rep.rep_id, hot.outcome, hot.available_at) == ("fast", "on_call", FRIDAY_22_NY.timestamp())
    cold = picked((await assign(store, team, "c@x.io", FRIDAY_22_NY, hand_raiser=False))[1])
    assert cold.outcome == "next_available" and cold.available_at == MONDAY_08_NY.timestamp()


async def test_racing_workers_on_a_fallback_team_agree(redis: Redis) -> None:
    store = RedisStore(redis)
    west = make_team([office(f"w{i}", tz="America/Los_Angeles") for i in range(3)], name="west")
    east = make_team([office("e1")], name="east", after_hours=AfterHours(Policy.FALLBACK_TEAM, team="west"))
    teams = {"east": east, "west": west}
    at = datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    lead_id, crossing = await fire(store, "race@x.io", at)
    got = await asyncio.gather(*(assign_rep(store, east, f"{lead_id}:1", lead_id, crossing, at, teams=teams)
                                 for _ in range(5)))
    assert len({picked(g).rep.rep_id for g in got}) == 1
    assert await store.redis.zcard(keys.team_assigned("west", picked(got[0]).rep.rep_id)) == 1


# --- the shipped roster through the pipeline ------------------------------------------------------------


async def test_shipped_roster_night_leads_skip_the_rep_on_parental_leave(redis: Redis) -> None:
    store = RedisStore(redis)
    routing = LiveFile.open(REPO / "rules" / "routing.yaml", load_rules_file, "routing")
    scoring = LiveFile.open(REPO / "scoring" / "scoring.yaml", load_scoring_file, "scoring")
    saturday_3_berlin = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
    alerts: list[dict[str, object]] = []

    async def publish(key: str, value: bytes) -> None:
        alerts.append(await open_alert(redis, value))

    pipeline = Pipeline(store, scoring, routing, publish, clock=saturday_3_berlin.timestamp)
    owners: list[tuple[str, str, str]] = []
    for i in range(14):
        hand = i % 2 == 0
        email = f"buyer{i}@rhein.de"
        lead_id = keys.lead_id_for_email(email)
        ev = Event(event_id=f"e{i}", type=EventType.FORM_FILL if hand else EventType.PAGE_VIEW,
                   ts=saturday_3_berlin.timestamp(), source="form", email=email,
                   form_id="demo-request" if hand else None, fields={"country": "DE", "company": "Rhein"})
        plan = EventPlan(event=ev, lead_id=lead_id, reasons=(), points=200.0, hand_raiser=hand,
                         fields=dict(ev.fields))
        [result] = await store.apply([plan], threshold=scoring.current.threshold,
                                     half_life_s=scoring.current.half_life_s, now=saturday_3_berlin.timestamp())
        result = replace(result, trigger="hand_raiser" if hand else "score")
        assignment = await pipeline.route(plan, result, scoring.current)
        assert assignment is not None
        owners.append((assignment.rep.rep_id, assignment.decision.team, assignment.placement))
    assert all(rep != "garret-kinder" for rep, _, _ in owners)
    # Hand-raisers go to the West office's late shift now; the rest wait for East's Monday 07:00.
    assert {(team, placement) for _, team, placement in owners[::2]} == {("west", "fallback_team")}
    assert {rep for rep, _, _ in owners[::2]} <= {"markita-hansen", "kary-hendrixson"}
    assert {(team, placement) for _, team, placement in owners[1::2]} == {("east", "next_available")}
    monday_7_ny = datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()
    queued = [a["assignment"] for a in alerts if a["assignment"]["decision"]["team"] == "east"]  # type: ignore[index]
    assert queued and all(a["available_at"] == monday_7_ny for a in queued)  # type: ignore[index]
    west = [a["assignment"] for a in alerts if a["assignment"]["decision"]["team"] == "west"]  # type: ignore[index]
    assert all(a["decision"]["path"][-1] == "after_hours:fallback_team" for a in west)  # type: ignore[index]


async def test_a_held_lead_is_routed_by_the_ticker_when_a_rep_is_back(redis: Redis) -> None:
    store = RedisStore(redis)
    back = (DateRange(date(2026, 12, 1), date(2026, 12, 3)),)
    team = make_team([office("a", out_of_office=back), office("b", out_of_office=back)])
    routing = RoutingConfig(version="v", source="test", teams={"t": team}, rules=())
    sent: list[tuple[str, str, str]] = []

    async def notify(kind: str, lead_id: str, assignment_id: str, rep: Rep) -> None:
        sent.append((kind, assignment_id, rep.rep_id))

    wednesday = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    lead_id, crossing = await fire(store, "held@x.io", wednesday)
    aid = f"{lead_id}:{crossing}"
    held = await assign_rep(store, team, aid, lead_id, crossing, wednesday, rule="emea", rules_version="v7")
    assert isinstance(held, Held)
    [(member, due)] = await store.sla_pending("t", keys.HELD_STEP)
    assert member == keys.sla_member(lead_id, aid) and due == (wednesday + timedelta(hours=1)).timestamp()
    # An hour later both are still away: looked at again later, nothing sent.
    assert await run_due(store, routing, wednesday + timedelta(hours=1), notify) == []
    assert sent == [] and (await store.lead_hash(lead_id)).get("owner") is None
    # Friday 08:00 New York: a is back.  The ticker assigns, commits the crossing and tells the rep.
    friday = datetime(2026, 12, 4, 13, 0, tzinfo=UTC)
    actions = await run_due(store, routing, friday, notify)
    assert [(a.kind, a.rep.rep_id if a.rep else "") for a in actions] == [("assigned", "a")]
    assert sent == [("assigned", aid, "a")]
    lead = await store.lead_hash(lead_id)
    assert (lead["owner"], lead["rule"], lead["rules_version"], lead["assignment_id"]) == ("a", "emea", "v7", aid)
    assert "pending_crossing" not in lead
    assert await store.sla_pending("t", keys.HELD_STEP) == []
    assert [h["action"] for h in await store.lead_history(lead_id)] == ["held", "assigned"]
    later = await run_due(store, routing, friday + timedelta(minutes=10), notify)
    assert [(a.kind, a.rep.rep_id if a.rep else "") for a in later] == [("remind", "a")]  # its SLA runs; once
