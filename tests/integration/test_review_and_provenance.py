"""The worker against a real Redis: suspicious hand-raisers go to review (not a rep), ops release or
dismiss them; later unverified submissions never silently replace what a lead said, and alerts show the
change with markup escaped.  Events go through Pipeline.process as the worker's agent hands them over
(JSON off the topic); alerts are captured where the worker would publish them; the admin API runs
in-process on a loopback test server.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from models import Alert, Event, EventType
from router.admin.app import create_app as create_admin
from router.admin.auth import Role, TokenStore
from router.alerts.render import render_html, render_text
from router.alerts.render_slack import render_slack_blocks
from router.cli import review as cmd_review
from router.ingest.machine import form_trust
from router.settings import DEV_PII_KEY, Settings
from router.storage import audit, keys
from router.storage.live_config import LiveFile, load_rules_file, load_scoring_file
from router.storage.pii import Vault
from router.storage.redis import flush, redis_from_url
from router.storage.store import RedisStore
from router.worker import review
from router.worker.pipeline import Pipeline
from tests.support import open_alert, pid

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TUESDAY_10_NY = datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp()
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SITE = "https://www.example-saas.com"


class World:
    def __init__(self, redis: Redis) -> None:
        self.store = RedisStore(redis)
        self.now = TUESDAY_10_NY
        self.published: list[dict[str, Any]] = []
        self.n = 0
        routing = LiveFile.open(REPO / "rules" / "routing.yaml", load_rules_file, "routing")
        self.scoring = LiveFile.open(REPO / "scoring" / "scoring.yaml", load_scoring_file, "scoring")

        async def publish(key: str, value: bytes) -> None:
            self.published.append(await open_alert(redis, value))

        self.pipeline = Pipeline(self.store, self.scoring, routing, publish, clock=lambda: self.now)

    def event(self, etype: EventType, **kw: Any) -> bytes:
        self.n += 1
        self.now += 1
        ev = Event(event_id=f"ev{self.n:04d}", type=etype, ts=self.now, **kw)
        return orjson.dumps(ev.to_dict())

    def form(self, email: str, vid: str | None, form_id: str = "demo-request", *, ua: str = BROWSER,
             origin: str | None = SITE, **fields: str) -> bytes:
        value, reasons = form_trust(ua, origin, email, cors_origins=frozenset({SITE}), disposable=frozenset(),
                                    honeypot=False, hot_ip=False)
        return self.event(EventType.FORM_FILL, source="form", email=email, visitor_id=vid, form_id=form_id,
                          fields=fields, user_agent=ua, ip="198.51.100.7", trust=value,
                          trust_reasons=",".join(reasons) or None)

    def page(self, vid: str, path: str = "/pricing") -> bytes:
        return self.event(EventType.PAGE_VIEW, source="pixel", visitor_id=vid, url=f"{SITE}{path}",
                          user_agent=BROWSER)

    async def process(self, *raw: bytes) -> None:
        await self.pipeline.process(list(raw))

    def alerts_for(self, email: str) -> list[Alert]:
        return [Alert.from_dict(a) for a in self.published if a["lead"].get("email") == email]


@pytest.fixture
async def world(redis: Redis) -> World:
    return World(redis)


async def _assigned_total(redis: Redis) -> int:
    return sum([await redis.zcard(k) async for k in redis.scan_iter("lr:{T:*}:assigned:*")])


async def test_a_scripted_hand_raiser_is_held_for_review_until_ops_release_it(world: World, redis: Redis) -> None:
    email = "ops-bot@acme-logistics.com"
    lead_id = keys.lead_id_for_email(email)
    # A script posts the demo form: HTTP library, no Origin, no page view before.
    await world.process(world.form(email, "botvisitor0001", ua="python-requests/2.32.3", origin=None,
                                   first_name="Bo", company="Acme Logistics"))
    assert world.published == []  # no rep alerted
    assert await _assigned_total(redis) == 0  # nobody's capacity used
    [held] = await review.list_held(world.store)
    assert held["lead_id"] == lead_id and held["email"] == email and held["state"] == "held"
    assert held["reasons"] == ["http_library", "no_origin", "no_prior_page_view"]
    assert held["trust"] < 0.5 and "HTTP library" in held["why"]
    assert held["event"]["form_id"] == "demo-request"
    lead = await world.store.lead_hash(lead_id)
    assert lead["review"] == "held" and lead["pending_crossing"] == "1" and "owner" not in lead
    # The lead's next events resume the crossing and find it held: still no alert.
    await world.process(world.page("botvisitor0001"), world.form(email, "botvisitor0001", "newsletter"))
    assert world.published == []
    assert await world.pipeline.review_tick() == 0  # nothing released yet
    # Ops release it: the next tick routes it normally, once.
    entry = await review.release(world.store, lead_id, "cli:ops", world.now)
    assert entry["state"] == "released" and await world.store.review_queue() == []
    assert await world.pipeline.review_tick() == 1
    assert await world.pipeline.review_tick() == 0
    [alert] = world.alerts_for(email)
    assert alert.trigger == "hand-raiser: filled form demo-request"
    lead = await world.store.lead_hash(lead_id)
    assert lead["owner"] == alert.assignment.rep.rep_id and "pending_crossing" not in lead
    actions = [h["action"] for h in await world.store.lead_history(lead_id)]
    assert actions[:2] == ["review_held", "review_released"] and "assigned" in actions
    with pytest.raises(review.ReviewError, match="not held"):
        await review.release(world.store, lead_id, "cli:ops", world.now)


async def test_dismissed_spam_is_closed_and_nobody_is_alerted(world: World, redis: Redis) -> None:
    email = "throwaway@mailinator.com"
    lead_id = keys.lead_id_for_email(email)
    raw = world.event(EventType.FORM_FILL, source="form", email=email, form_id="demo-request", trust=0.24,
                      trust_reasons="disposable_email,no_origin", user_agent=BROWSER)
    await world.process(raw)
    assert [e["lead_id"] for e in await review.list_held(world.store)] == [lead_id]
    await review.dismiss(world.store, lead_id, "admin:ops", world.now)
    assert await review.list_held(world.store) == []
    lead = await world.store.lead_hash(lead_id)
    assert lead["review"] == "dismissed" and lead["ready"] == "0" and lead["stage"] == "nurture"
    assert "pending_crossing" not in lead
    await world.process(raw)  # a redelivery changes nothing
    assert await world.pipeline.review_tick() == 0 and world.published == []


async def test_a_real_hand_raiser_goes_straight_to_a_rep_in_the_priority_lane(world: World, redis: Redis) -> None:
    email = "greta.lindqvist@elbe-mb.de"
    await world.process(world.page("gretabrowser01"), world.page("gretabrowser01", "/product"))
    await world.process(world.form(email, "gretabrowser01", first_name="Greta", company="Elbe Maschinenbau",
                                   country="DE"))
    [alert] = world.alerts_for(email)
    assert alert.priority and alert.trigger == "hand-raiser: filled form demo-request"
    assert await review.list_held(world.store) == []


async def test_an_unverified_form_never_silently_replaces_what_the_lead_said(world: World, redis: Redis) -> None:
    email = "maria.rossi@northwind-traders.it"
    lead_id = keys.lead_id_for_email(email)
    own = "mariabrowser01"
    # Maria browses and signs up for the newsletter: her first values.
    await world.process(world.page(own), world.form(email, own, "newsletter", first_name="Maria",
                                                     last_name="Rossi", job_title="VP Finance",
                                                     company="Northwind Traders", country="IT"))
    # From her own browser again (the cookie is hers now): a verified change.
    await world.process(world.form(email, own, "newsletter", job_title="CFO"))
    # Someone else posts a form with her email from another browser: a proposal, not applied.
    markup = "<https://evil.example/login|Northwind Traders> & <b>co</b>"
    await world.process(world.form(email, "strangervisit1", "newsletter", job_title="Intern", company=markup,
                                   country="US"))
    lead = await world.store.lead_hash(lead_id)
    assert (lead["f:job_title"], lead["f:company"], lead["f:country"]) == ("CFO", "Northwind Traders", "IT")
    assert (lead["fp:job_title"], lead["fp:company"], lead["fp:country"]) == ("Intern", markup, "US")
    history = await world.store.field_history(lead_id)
    by_field = {(h["field"], h["new"]): h for h in history}
    title = by_field[("job_title", "Intern")]
    assert title["old"] == "CFO" and title["applied"] is False and title["verified"] is False
    assert title["source"] == "form newsletter (unverified)" and title["ts"] > 0
    cfo = by_field[("job_title", "CFO")]
    assert cfo["old"] == "VP Finance" and cfo["applied"] is True and cfo["verified"] is True
    assert by_field[("job_title", "VP Finance")]["applied"] is True and "old" not in by_field[("job_title", "VP Finance")]
    # The customer's own system (an SDK call with a write key) may change it.
    await world.process(world.event(EventType.IDENTIFY, source="segment", email=email, user_id="u-maria",
                                    traits={"company": "Northwind Traders S.p.A."}))
    lead = await world.store.lead_hash(lead_id)
    assert lead["f:company"] == "Northwind Traders S.p.A." and "fp:company" not in lead
    # Maria raises her hand from her own browser: the alert shows what changed and what was kept.
    await world.process(world.form(email, own))
    [alert] = world.alerts_for(email)
    assert alert.lead.fields["job_title"] == "CFO" and alert.lead.fields["country"] == "IT"
    text = render_text(alert)
    assert "job title: 'Intern' from form newsletter (unverified)" in text and "the lead said 'CFO'" in text
    assert "job title changed from 'VP Finance' to 'CFO' via form newsletter (verified)" in text
    assert "company changed from 'Northwind Traders' to 'Northwind Traders S.p.A.' via segment identify" in text
    # Markup from the stranger never reaches the alert unescaped.
    blocks = orjson.dumps(render_slack_blocks(alert)).decode()
    assert "<https://evil.example" not in blocks and "&lt;https://evil.example/login|Northwind Traders&gt;" in blocks
    html = render_html(alert)
    assert "<b>co</b>" not in html and "&lt;b&gt;co&lt;/b&gt;" in html


async def test_the_admin_api_shows_field_history_and_runs_the_review_queue(world: World, redis: Redis,
                                                                          redis_url: str) -> None:
    email = "ops-bot2@acme-logistics.com"
    lead_id = keys.lead_id_for_email(email)
    await world.process(world.form(email, "botvisitor0002", ua="curl/8.5.0", origin=None, job_title="CEO"))
    await world.process(world.form(email, "botvisitor0003", "newsletter", job_title="<!channel> CTO"))
    settings = Settings.of(redis_url=redis_url)
    client: TestClient[Any, Any] = TestClient(TestServer(create_admin(settings, redis, clock=lambda: world.now)))
    await client.start_server()
    try:
        token, _ = await TokenStore(redis).create(Role.OPS, name="ops", now=world.now)
        viewer, _ = await TokenStore(redis).create(Role.READONLY, name="viewer", now=world.now)
        auth = {"Authorization": f"Bearer {token}"}
        async with client.get("/v1/review", headers=auth) as r:
            assert r.status == 200
            [entry] = (await r.json())["leads"]
            assert entry["lead_id"] == lead_id and "http_library" in entry["reasons"]
        async with client.get("/v1/review", headers={"Authorization": f"Bearer {viewer}"}) as r:
            assert r.status == 403
        async with client.get(f"/v1/leads/{lead_id}/explain", headers=auth) as r:
            body = await r.json()
            [change] = [h for h in body["field_history"] if h["new"] == "<!channel> CTO"]
            assert change["old"] == "CEO" and change["applied"] is False
        async with client.get(f"/v1/leads/{lead_id}", headers=auth) as r:
            state = await r.json()
            assert state["fields"]["job_title"] == "CEO" and state["proposed_fields"] == {"job_title": "<!channel> CTO"}
            assert state["review"] == "held"
        async with client.post(f"/v1/review/{lead_id}/release", headers=auth) as r:
            assert r.status == 200 and (await r.json())["state"] == "released"
        async with client.post(f"/v1/review/{lead_id}/dismiss", headers=auth) as r:
            assert r.status == 409 and (await r.json())["error"] == "not_held"
    finally:
        await client.close()
    assert await world.pipeline.review_tick() == 1
    [alert] = world.alerts_for(email)
    assert "<!channel>" not in orjson.dumps(render_slack_blocks(alert)).decode()


async def test_provenance_holds_for_events_as_the_collector_stores_them(world: World, redis: Redis) -> None:
    """Past the collector, visitor ids are pseudonyms and personal fields are sealed (issue 16.7): a form
    from the lead's own browser (its pseudonym already linked) is still verified, a stranger's is not."""
    vault = Vault(redis, DEV_PII_KEY)
    email = "jonas.berg@fjord-freight.no"
    lead_id = keys.lead_id_for_email(email)

    async def sealed(*raw: bytes) -> list[bytes]:
        kept, dropped = await vault.protect([Event.from_dict(orjson.loads(r)) for r in raw])
        assert dropped == []
        return [orjson.dumps(e.to_dict()) for e in kept]

    own, stranger = "jonasbrowser001", "strangerbrows01"
    first = await sealed(world.page(own), world.form(email, own, "newsletter", job_title="Head of Ops"))
    assert orjson.loads(first[1])["sealed"] and orjson.loads(first[1])["visitor_id"] == pid(own)
    await world.pipeline.process(first)
    await world.pipeline.process(await sealed(world.form(email, own, "newsletter", job_title="COO")))
    await world.pipeline.process(await sealed(world.form(email, stranger, "newsletter", job_title="Intern")))
    lead = await world.store.lead_hash(lead_id)
    assert lead["f:job_title"] == "COO" and lead["fp:job_title"] == "Intern"
    by_new = {h["new"]: h for h in await world.store.field_history(lead_id) if h["field"] == "job_title"}
    assert by_new["COO"]["verified"] is True and by_new["COO"]["applied"] is True
    assert by_new["Intern"]["verified"] is False and by_new["Intern"]["applied"] is False


def test_cli_release_and_dismiss_are_on_the_audit_trail(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`leadrouter review release|dismiss` records who did it, as the console and the API do."""
    def cli(argv: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="leadrouter")
        cmd_review.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        return int(args.fn(Settings.of(redis_url=redis_url), args))

    spam, real = "throwaway@mailinator.com", "ops-bot@acme-logistics.com"

    async def hold() -> None:
        client = redis_from_url(redis_url)
        try:
            await flush(client)
            world = World(client)
            for email in (spam, real):
                await world.process(world.event(EventType.FORM_FILL, source="form", email=email,
                                                form_id="demo-request", trust=0.24, trust_reasons="no_origin",
                                                user_agent=BROWSER))
        finally:
            await client.aclose()

    async def trail(email: str) -> list[tuple[str, str, str]]:
        client = redis_from_url(redis_url)
        try:
            return [(e.action, e.via, e.detail) for e in await audit.for_lead(client, keys.lead_id_for_email(email))]
        finally:
            await client.aclose()

    asyncio.run(hold())
    assert cli(["review", "dismiss", spam, "--by", "olga"]) == 0
    assert cli(["review", "release", real, "--by", "olga"]) == 0
    assert cli(["review", "release", real, "--by", "olga"]) == 1  # not held any more: refused, not recorded
    capsys.readouterr()
    assert asyncio.run(trail(spam)) == [("review.dismiss", "cli", "by cli:olga")]
    assert asyncio.run(trail(real)) == [("review.release", "cli", "by cli:olga")]
