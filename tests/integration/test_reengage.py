"""Re-engagement (issue 11.2) against a real redis-server with a driven clock.

Events go through the worker's real pipeline (decode, identity, the Lua step,
routing, publish) with the shipped routing.yaml; reps act through the real
lifecycle functions.  A lead that was lost, won, rejected or is held by its rep
crosses again only under the ``sales_ready.reengage`` rules, once per genuine
return, and the alert says it is a re-engagement and shows the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from models import Alert, Event, EventType
from router.alerts.render import render_html, render_text
from router.alerts.render_slack import render_slack_blocks
from router.storage import keys
from router.storage.live_config import LiveFile, load_rules_file, load_scoring_file
from router.storage.store import RedisStore
from router.worker import lifecycle
from router.worker.pipeline import Pipeline, apply_batch
from tests.support import open_alert

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 in New York, 16:00 in Berlin
REENGAGE = """
  reengage:
    hand_raiser: [nurture, sal, sql, opportunity, won, lost]
    score: {nurture: 0, lost: 30}
    cooldown_hours: 24
"""


@dataclass
class Clock:
    t: float = T0.timestamp()

    def __call__(self) -> float:
        return self.t

    def at(self, when: datetime) -> datetime:
        self.t = when.timestamp()
        return when


@dataclass
class World:
    store: RedisStore
    pipeline: Pipeline
    clock: Clock
    alerts: list[Alert] = field(default_factory=list)
    n: int = 0

    def event(self, email: str, when: datetime, kind: EventType = EventType.FORM_FILL, *, form: str = "demo-request",
              url: str = "", event_id: str = "") -> bytes:
        self.n += 1
        fields = {"company": "Elbe Maschinenbau", "country": "DE", "first_name": "Jana", "last_name": "Keller"}
        ev = Event(event_id=event_id or f"ev{self.n}", type=kind, ts=when.timestamp(), source="test",
                   email=email, visitor_id=f"vid-{email}",
                   form_id=form if kind is EventType.FORM_FILL else None,
                   url=url or None, fields=fields if kind is EventType.FORM_FILL else {})
        return orjson.dumps(ev.to_dict())

    async def send(self, raws: Sequence[bytes], when: datetime) -> list[Alert]:
        self.clock.at(when)
        before = len(self.alerts)
        await self.pipeline.process(list(raws))
        return self.alerts[before:]

    async def demo_request(self, email: str, when: datetime) -> list[Alert]:
        return await self.send([self.event(email, when)], when)

    async def pricing(self, email: str, when: datetime, times: int) -> list[Alert]:
        raws = [self.event(email, when + timedelta(minutes=i), EventType.PAGE_VIEW,
                           url="https://www.example-saas.com/pricing") for i in range(times)]
        return await self.send(raws, when + timedelta(minutes=times))

    async def burst(self, email: str, when: datetime) -> list[Alert]:
        """The 120-point daily cap in one day: a very engaged day, no hand raised."""
        pages = (["/pricing"] * 3 + ["/product"] * 4 + ["/case-studies/x"] * 3 + ["/docs/a"] * 3
                 + [f"/blog/{i}" for i in range(6)])
        raws = [self.event(email, when + timedelta(minutes=i), EventType.PAGE_VIEW,
                           url=f"https://www.example-saas.com{p}") for i, p in enumerate(pages)]
        raws.append(self.event(email, when + timedelta(minutes=30), form="webinar-registration"))
        raws.append(self.event(email, when + timedelta(minutes=31), form="content-download"))
        return await self.send(raws, when + timedelta(minutes=32))


def scoring_file(tmp_path: Path, block: str = REENGAGE) -> Path:
    text = (REPO / "scoring" / "scoring.yaml").read_text()
    start = text.index("  # Re-engagement:")
    end = text.index("\nrules:")
    path = tmp_path / "scoring.yaml"
    path.write_text(text[:start] + block.strip("\n") + "\n" + text[end:] if block else text[:start] + text[end:])
    return path


@pytest.fixture
def world_factory(redis: Redis, tmp_path: Path) -> Any:
    def make(block: str = REENGAGE) -> World:
        store = RedisStore(redis)
        clock = Clock()
        scoring = LiveFile.open(scoring_file(tmp_path, block), load_scoring_file, "scoring")
        routing = LiveFile.open(REPO / "rules" / "routing.yaml", load_rules_file, "routing")
        world: World

        async def publish(key: str, value: bytes) -> None:
            world.alerts.append(Alert.from_dict(await open_alert(redis, value)))

        world = World(store, Pipeline(store, scoring, routing, publish, clock=clock), clock)
        return world

    return make


async def first_alert(w: World, email: str) -> Alert:
    [alert] = await w.demo_request(email, T0)
    assert alert.reengagement is None and alert.assignment.crossing == 1
    assert "Sales-ready lead" in render_text(alert)
    return alert


async def close(w: World, email: str, rep: str, outcome: str, when: datetime, reason: str) -> None:
    await lifecycle.accept(w.store, email, rep, now=when)
    await lifecycle.convert(w.store, email, rep, to="opportunity", now=when + timedelta(days=1))
    fn = lifecycle.lost if outcome == "lost" else lifecycle.won
    await fn(w.store, email, rep, reason=reason, now=when + timedelta(days=2))


async def test_a_lost_lead_asking_for_a_demo_months_later_goes_back_to_its_owner_with_the_history(
        world_factory: Any) -> None:
    w = world_factory()
    email = "jana.keller@elbe-mb.de"
    lead_id = keys.lead_id_for_email(email)
    first = await first_alert(w, email)
    owner = first.assignment.rep
    await close(w, email, owner.rep_id, "lost", T0 + timedelta(days=5), "budget")  # closed-lost on 2026-12-01
    assert (await w.store.lead_hash(lead_id))["last_outcome"] == "lost"

    back = T0 + timedelta(days=91)  # Tuesday 2027-02-23
    assert await w.pricing(email, back - timedelta(days=2), 3) == []  # browsing alone is no crossing
    [alert] = await w.demo_request(email, back)
    re = alert.reengagement
    assert re is not None and alert.assignment.crossing == 2
    assert alert.assignment.rep == owner and alert.assignment.decision.rule == "reengaged-owner"
    assert (re.from_stage, re.last_outcome, re.last_outcome_reason, re.route) == ("lost", "lost", "budget", "owner")
    assert re.owner == owner.rep_id and re.owner_name == owner.name
    assert re.back == ("filled form demo-request", "back on /pricing 3 times this week")
    text = render_text(alert)
    assert text.startswith("Re-engaged lead: Jana Keller (Elbe Maschinenbau)")
    assert (f"Re-engaged: closed-lost on 2026-12-01 (budget), owner {owner.name}; filled form demo-request, "
            f"back on /pricing 3 times this week — back to {owner.name}") in text
    assert "closed-lost on 2026-12-01 (budget)" in render_html(alert)
    blocks = render_slack_blocks(alert)
    assert blocks["text"].startswith("Re-engaged lead: ") and "closed-lost on 2026-12-01 (budget)" in blocks["text"]
    assert blocks["blocks"][0]["text"]["text"].startswith("Re-engaged lead:")

    lead = await w.store.lead_hash(lead_id)
    assert (lead["stage"], lead["owner"], lead["assignment_id"], lead["crossing"]) == (
        "mql", owner.rep_id, f"{lead_id}:2", "2")
    assert "pending_event" not in lead and lead["reengagements"] == "1"
    history = await w.store.lead_history(lead_id)
    actions = [h["action"] for h in history]
    assert actions == ["assigned", "accept", "convert", "lost", "reengaged", "assigned"]
    reengaged = history[4]
    assert (reengaged["from"], reengaged["last_outcome"], reengaged["last_outcome_reason"], reengaged["crossing"]) == (
        "lost", "lost", "budget", 2)
    assert history[5]["rep"] == owner.rep_id and history[5]["strategy"] == "reengaged_owner"
    # An SLA reminder of this assignment says it is a re-engagement too.
    await w.pipeline.sla_alert("remind", lead_id, f"{lead_id}:2", owner)
    reminder = w.alerts[-1]
    assert reminder.assignment.assignment_id == f"{lead_id}:2:remind"
    assert reminder.reengagement is not None and reminder.reengagement.last_outcome_reason == "budget"
    # The owner works it again through the normal lifecycle.
    assert (await lifecycle.accept(w.store, email, owner.rep_id, now=back)).to_stage.value == "sal"


async def test_a_redelivered_return_fires_once_and_a_crash_before_routing_resumes_it(world_factory: Any) -> None:
    w = world_factory()
    email = "tom.berger@elbe-mb.de"
    lead_id = keys.lead_id_for_email(email)
    owner = (await first_alert(w, email)).assignment.rep
    await close(w, email, owner.rep_id, "lost", T0 + timedelta(days=1), "timing")
    back = T0 + timedelta(days=60)
    raw = w.event(email, back, event_id="return-1")
    # The worker dies after the Lua step recorded the crossing, before routing it...
    w.clock.at(back)
    config = w.pipeline.scoring.current
    outcome = await apply_batch(w.store, config, [Event.from_dict(orjson.loads(raw))], back.timestamp())
    assert [r.status for r in outcome.results] == ["fired"] and outcome.results[0].crossing == 2
    assert w.alerts[1:] == []
    # ...so Kafka redelivers the event: the same crossing is resumed and routed once.
    [alert] = await w.send([raw], back + timedelta(seconds=5))
    assert alert.assignment.assignment_id == f"{lead_id}:2" and alert.reengagement is not None
    # Delivered again after routing: nothing fires, the counter stays.
    assert await w.send([raw, raw], back + timedelta(seconds=9)) == []
    lead = await w.store.lead_hash(lead_id)
    assert lead["crossing"] == "2" and lead["reengagements"] == "1"
    assert [h["action"] for h in await w.store.lead_history(lead_id)].count("reengaged") == 1


async def test_a_won_customer_asking_again_is_an_expansion_signal_but_browsing_is_not(world_factory: Any) -> None:
    w = world_factory()
    email = "eva.roth@elbe-mb.de"
    owner = (await first_alert(w, email)).assignment.rep
    await close(w, email, owner.rep_id, "won", T0 + timedelta(days=3), "annual plan")
    # A very engaged customer crosses the score clause (>= 150), but won re-fires only on a hand-raiser.
    assert await w.burst(email, T0 + timedelta(days=40)) == []
    assert await w.burst(email, T0 + timedelta(days=41)) == []
    [alert] = await w.demo_request(email, T0 + timedelta(days=70))
    re = alert.reengagement
    assert re is not None and (re.from_stage, re.last_outcome, re.route) == ("won", "won", "owner")
    assert alert.assignment.rep == owner
    assert "closed-won (a customer: expansion signal) on 2026-11-29 (annual plan)" in render_text(alert)


async def test_a_rejected_lead_in_nurture_goes_to_another_rep_and_names_who_rejected_it(world_factory: Any) -> None:
    w = world_factory()
    email = "max.vogel@elbe-mb.de"
    lead_id = keys.lead_id_for_email(email)
    first = await first_alert(w, email)
    rejecter = first.assignment.rep
    policy = w.pipeline.routing.current.lifecycle
    reason = policy.reject_reasons[0]
    await lifecycle.reject(w.store, email, rejecter.rep_id, reason, policy=policy, now=T0 + timedelta(hours=1))
    [alert] = await w.demo_request(email, T0 + timedelta(days=1))
    re = alert.reengagement
    assert re is not None and (re.from_stage, re.last_outcome, re.route, re.current_owner) == (
        "nurture", "rejected", "rules", False)
    assert alert.assignment.rep.rep_id != rejecter.rep_id
    assert f"rejected on 2026-11-24 ({reason}) by {rejecter.name}" in render_text(alert)
    lead = await w.store.lead_hash(lead_id)
    assert lead["stage"] == "mql" and lead["owner"] == alert.assignment.rep.rep_id


async def test_a_lead_its_rep_holds_notifies_that_rep_once_per_cooldown_and_is_not_routed_again(
        world_factory: Any, redis: Redis) -> None:
    w = world_factory()
    email = "lea.hahn@elbe-mb.de"
    lead_id = keys.lead_id_for_email(email)
    owner = (await first_alert(w, email)).assignment.rep
    # An open, unaccepted assignment (mql) never fires again, whatever the lead does.
    assert await w.demo_request(email, T0 + timedelta(hours=2)) == []
    await lifecycle.accept(w.store, email, owner.rep_id, now=T0 + timedelta(hours=3))
    remind_before = await w.store.sla_pending("east", "remind")

    [alert] = await w.demo_request(email, T0 + timedelta(days=2))
    re = alert.reengagement
    assert re is not None and (re.from_stage, re.route) == ("sal", "owner_notified")
    assert alert.assignment.rep == owner and alert.assignment.assignment_id == f"{lead_id}:2"
    assert set(alert.links) <= {"lead"}  # already accepted: nothing to accept or reject
    assert f"still with {owner.name}: told, not routed again" in render_text(alert)
    lead = await w.store.lead_hash(lead_id)
    assert (lead["stage"], lead["owner"], lead["assignment_id"], lead["accepted_by"]) == (
        "sal", owner.rep_id, f"{lead_id}:1", owner.rep_id)
    assert "pending_event" not in lead
    assert await w.store.sla_pending("east", "remind") == remind_before  # no SLA, no second assignment
    assert not await redis.exists(keys.team_pick("east", f"{lead_id}:2"))
    history = [h["action"] for h in await w.store.lead_history(lead_id)]
    assert history == ["assigned", "accept", "reengaged", "reengage_notified"]
    # Both crossings and both decisions (routed, then its owner told) are in the decision log.
    from router.storage.decisions import read_decisions

    logged = [(r["kind"], r["crossing"], r.get("rule")) for r in await read_decisions(redis)
              if r["lead_id"] == lead_id]
    assert logged[-2:] == [("crossing", 2, None), ("route", 2, "reengaged-owner")]
    assert logged[0][:2] == ("crossing", 1) and ("route", 1) in [x[:2] for x in logged]

    # Within the cool-down another request tells nobody; after it, the owner hears again.
    assert await w.demo_request(email, T0 + timedelta(days=2, hours=5)) == []
    [again] = await w.demo_request(email, T0 + timedelta(days=3, hours=1))
    assert again.assignment.crossing == 3 and again.assignment.rep == owner
    # The rep still works the lead as before.
    assert (await lifecycle.convert(w.store, email, owner.rep_id, now=T0 + timedelta(days=4))).to_stage.value == "sql"


async def test_a_score_crossing_re_fires_a_lost_lead_only_n_days_after_the_outcome(world_factory: Any) -> None:
    w = world_factory()
    email = "ida.frank@elbe-mb.de"
    owner = (await first_alert(w, email)).assignment.rep
    lost_at = T0 + timedelta(days=2)
    await close(w, email, owner.rep_id, "lost", T0, "went with a competitor")
    # 10 days after the outcome: engagement crosses 150, but lost waits 30 days.
    assert await w.burst(email, lost_at + timedelta(days=10)) == []
    # 30+ days after: the next crossing (engagement was below 150 again) fires.
    [alert] = await w.burst(email, lost_at + timedelta(days=45))
    re = alert.reengagement
    assert re is not None and re.from_stage == "lost" and alert.trigger.startswith("sales-ready: engagement>=150")
    assert re.back[:2] == ("filled form content-download", "filled form webinar-registration")
    assert float((await w.store.lead_hash(keys.lead_id_for_email(email)))["score"]) > 150

    # A lost lead whose engagement never fell below 150 has not crossed: nothing fires, however long after.
    hot = "ben.hoff@elbe-mb.de"
    hot_owner = (await first_alert(w, hot)).assignment.rep
    for day in range(1, 6):
        assert await w.burst(hot, T0 + timedelta(days=day)) == []  # mql with its rep: no re-fire
    await close(w, hot, hot_owner.rep_id, "lost", T0 + timedelta(days=6), "budget")
    assert await w.pricing(hot, T0 + timedelta(days=45), 1) == []
    hot_lead = await w.store.lead_hash(keys.lead_id_for_email(hot))
    assert hot_lead["stage"] == "lost" and hot_lead["crossing"] == "1"


async def test_the_owner_out_of_office_sends_the_return_through_the_rules(world_factory: Any, redis: Redis) -> None:
    w = world_factory()
    lost_email, held_email = "ole.wolf@elbe-mb.de", "uta.sauer@elbe-mb.de"
    owner = (await first_alert(w, lost_email)).assignment.rep
    await close(w, lost_email, owner.rep_id, "lost", T0, "budget")
    # The same rep holds another lead (accepted): it counts as one of their open leads.
    [held_first] = await w.demo_request(held_email, T0 + timedelta(minutes=1))
    held_owner = held_first.assignment.rep
    await lifecycle.accept(w.store, held_email, held_owner.rep_id, now=T0 + timedelta(minutes=2))
    for rep_id in {owner.rep_id, held_owner.rep_id}:
        await redis.hset(keys.rep_availability(rep_id), mapping={"out_of_office": "1", "until": ""})

    [alert] = await w.demo_request(lost_email, T0 + timedelta(days=20))
    re = alert.reengagement
    assert re is not None and re.route == "owner_away" and alert.assignment.rep.rep_id != owner.rep_id
    assert alert.assignment.decision.rule != "reengaged-owner"
    assert f"{owner.name} is out of office: routed by the rules" in render_text(alert)

    # A lead an away rep holds is routed again as a normal crossing: a new owner, back to mql.
    held_id = keys.lead_id_for_email(held_email)
    assert await w.store.open_leads("east", held_owner.rep_id) >= 1
    [moved] = await w.demo_request(held_email, T0 + timedelta(days=3))
    assert moved.reengagement is not None and moved.reengagement.route == "owner_away"
    new_rep = moved.assignment.rep.rep_id
    assert new_rep != held_owner.rep_id
    lead = await w.store.lead_hash(held_id)
    assert (lead["stage"], lead["owner"], lead["assignment_id"]) == ("mql", new_rep, f"{held_id}:2")
    assert "accepted_by" not in lead
    assert held_id not in {m for m, _ in await redis.zrange(keys.team_open("east", held_owner.rep_id), 0, -1,
                                                                   withscores=True)}
    await lifecycle.accept(w.store, held_email, new_rep, now=T0 + timedelta(days=3, hours=1))


async def test_without_the_block_only_nurture_re_fires_as_before(world_factory: Any) -> None:
    w = world_factory(block="")
    lost_email, rejected_email = "kai.lenz@elbe-mb.de", "pia.brandt@elbe-mb.de"
    owner = (await first_alert(w, lost_email)).assignment.rep
    await close(w, lost_email, owner.rep_id, "lost", T0, "budget")
    assert await w.demo_request(lost_email, T0 + timedelta(days=90)) == []
    [first] = await w.demo_request(rejected_email, T0 + timedelta(minutes=1))
    policy = w.pipeline.routing.current.lifecycle
    await lifecycle.reject(w.store, rejected_email, first.assignment.rep.rep_id, policy.reject_reasons[0],
                           policy=policy, now=T0 + timedelta(minutes=5))
    [again] = await w.demo_request(rejected_email, T0 + timedelta(minutes=10))  # no cool-down by default
    assert again.reengagement is not None and again.reengagement.from_stage == "nurture"
