"""Accounts against a real redis-server: membership, intent, breadth, crossing."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.storage import keys
from router.storage.store import RedisStore
from router.worker.accounts import AccountRef, account_for
from router.worker.batch import apply_batch
from scoring import add_points, load_scoring_config, score_at
from scoring.account_intent import AccountIntentConfig
from tests.support import T0

pytestmark = pytest.mark.integration

CONFIG = load_scoring_config(
    """
threshold: 1000
rules:
  - {name: page, description: any page, event: page_view, points: 1}
  - {name: pricing, description: pricing page, event: page_view, url: /pricing, points: 10}
  - {name: form, description: any form, event: form_fill, points: 10}
""",
    "accounts.yaml",
)
INTENT = AccountIntentConfig(threshold=170, window_days=14, per_person=10, per_role=15)
DAY = 86400.0


def form(eid: str, email: str, title: str, ts: float = T0, vid: str | None = None, **fields: str) -> Event:
    return Event(event_id=eid, type=EventType.FORM_FILL, ts=ts, source="form", email=email, visitor_id=vid,
                 form_id="whitepaper", fields={"job_title": title, **fields})


def page(eid: str, vid: str, ts: float = T0, path: str = "/pricing") -> Event:
    return Event(event_id=eid, type=EventType.PAGE_VIEW, ts=ts, source="pixel", visitor_id=vid,
                 url=f"https://x.io{path}")


def test_account_refs_never_come_from_free_mail() -> None:
    def ref(**kw: object) -> AccountRef | None:
        return account_for(Event(event_id="e", type=EventType.FORM_FILL, ts=T0, source="t", **kw))  # type: ignore[arg-type]

    work = ref(email="ann@Acme.com", fields={"company": "Acme Inc."})
    assert work is not None and work.account_id == "d:acme.com" and work.name == "Acme Inc."
    assert ref(email="ann@gmail.com") is None
    by_name = ref(email="ann@gmail.com", fields={"company": "Acme, Inc."})
    assert by_name is not None and by_name.account_id == "n:acme"
    grp = account_for(Event(event_id="g", type=EventType.GROUP, ts=T0, source="segment", group_id="org-7",
                            traits={"name": "Acme", "website": "https://www.acme.com/about"}))
    assert grp is not None and grp.account_id == "d:acme.com"
    grp2 = account_for(Event(event_id="g", type=EventType.GROUP, ts=T0, source="segment", group_id="org-7",
                             traits={"name": "Acme"}))
    assert grp2 is not None and grp2.account_id == "g:org-7"


async def test_a_buying_committee_rolls_up_and_its_most_engaged_lead_is_named(redis: Redis) -> None:
    store = RedisStore(redis)
    people = [("cfo@acme.com", "CFO"), ("vp.sales@acme.com", "VP Sales"), ("it@acme.com", "IT Director"),
              ("ops@acme.com", "Head of RevOps")]
    events = [form(f"f{i}", email, title, vid=f"vid-acme-{i}") for i, (email, title) in enumerate(people)]
    out = await apply_batch(store, CONFIG, events, T0, INTENT)
    kid = AccountRef("d:acme.com", "", "acme.com", "email_domain").key_id
    acct = await store.account_hash(kid)
    assert float(acct["score"]) == pytest.approx(40)
    assert acct["active_people"] == "4"
    assert acct["active_roles"] == "4"  # finance, sales, it, revenue_ops
    assert acct["domain"] == "acme.com"
    # 40 points + 4 people x 10 + 4 roles x 15 = 140: not yet over 170.
    assert float(acct["intent"]) == pytest.approx(140)
    assert {a.status for a in out.accounts} == {"scored"}
    # The VP keeps reading pricing pages: most engaged, and the account crosses.
    reads = [page(f"p{i}", "vid-acme-1", ts=T0 + 3600 + i) for i in range(4)]
    out = await apply_batch(store, CONFIG, reads, T0 + 7200, INTENT)
    fired = [a for a in out.accounts if a.status == "fired"]
    assert len(fired) == 1
    assert fired[0].top == keys.lead_id_for_email("vp.sales@acme.com")
    assert fired[0].intent >= INTENT.threshold
    # Fires once: more activity while ready fires nothing.
    more = await apply_batch(store, CONFIG, [page("p9", "vid-acme-2", ts=T0 + 7300)], T0 + 7300, INTENT)
    assert [a.status for a in more.accounts] == ["scored"]
    members = await store.account_members(kid)
    assert members[0][0] == keys.lead_id_for_email("vp.sales@acme.com")
    assert {m for m, _ in members} == {keys.lead_id_for_email(e) for e, _ in people}


async def test_account_intent_decays_exactly_and_breadth_has_a_window(redis: Redis) -> None:
    store = RedisStore(redis)
    h = CONFIG.half_life_s
    await apply_batch(store, CONFIG, [form("a1", "one@globex.io", "CTO", ts=T0)], T0, INTENT)
    await apply_batch(store, CONFIG, [form("a2", "two@globex.io", "Data Engineer", ts=T0 + 30 * DAY)],
                      T0 + 30 * DAY, INTENT)
    kid = AccountRef("d:globex.io", "", "", "").key_id
    acct = await store.account_hash(kid)
    value, asof = add_points(0.0, 0.0, 10.0, T0, h)
    value, asof = add_points(value, asof, 10.0, T0 + 30 * DAY, h)
    assert score_at(float(acct["score"]), float(acct["asof"]), T0 + 30 * DAY, h) == pytest.approx(15.0)
    assert score_at(value, asof, T0 + 30 * DAY, h) == pytest.approx(15.0)
    assert acct["active_people"] == "1"  # the first person's activity is outside the 14-day window
    # Redelivery changes nothing.
    again = await apply_batch(store, CONFIG, [form("a2", "two@globex.io", "Data Engineer", ts=T0 + 30 * DAY)],
                              T0 + 30 * DAY, INTENT)
    assert [a.status for a in again.accounts] == ["duplicate"]
    assert (await store.account_hash(kid))["score"] == acct["score"]


async def test_anonymous_visits_of_a_known_lead_count_for_its_account(redis: Redis) -> None:
    store = RedisStore(redis)
    await apply_batch(store, CONFIG, [form("k1", "kim@initech.com", "VP Marketing", vid="vid-kim-01")], T0, INTENT)
    await apply_batch(store, CONFIG, [page("k2", "vid-kim-01")], T0 + 60, INTENT)
    kid = AccountRef("d:initech.com", "", "", "").key_id
    assert float((await store.account_hash(kid))["score"]) == pytest.approx(21, rel=1e-6)


async def test_an_account_crossing_makes_its_top_lead_sales_ready_once(redis: Redis) -> None:
    from models import Reason

    store = RedisStore(redis)
    await apply_batch(store, CONFIG, [form("t1", "boss@umbrella.io", "CEO", vid="vid-umb-001")], T0, INTENT)
    lead = keys.lead_id_for_email("boss@umbrella.io")
    why = Reason(rule="account_intent", points=0.0, event_id="t1", event_type="form_fill", ts=T0,
                 detail="account intent 180 reached 170")
    first = await store.force_ready(lead, "acct:k:t1", "account_intent", why, T0 + 5)
    assert first.status == "fired" and first.trigger == "account_intent" and first.crossing == 1
    assert first.lead["email"] == "boss@umbrella.io"
    again = await store.force_ready(lead, "acct:k:t1", "account_intent", why, T0 + 6)
    assert again.status == "resume" and again.crossing == 1  # routing did not finish: same crossing
    await store.commit_assignment(lead, 1, f"{lead}:1", "rep", "Rep", "east", "account-intent", "v", T0 + 7)
    later = await store.force_ready(lead, "acct:k:t9", "account_intent", why, T0 + 8)
    assert later.status == "scored"  # already sales-ready: nothing fires twice
    assert (await store.lead_reasons(lead, limit=1))[0].rule == "account_intent"
    anon = await store.force_ready(keys.lead_id_for_visitor("vid-nobody-01"), "acct:k:x", "account_intent", why, T0)
    assert anon.status == "scored"  # no email: cannot be routed
