"""The worker's pure steps: decode, plan a batch (who each event belongs to, what it is worth), trigger text."""

from __future__ import annotations

import orjson
import pytest

from models import ApplyResult, Event, EventPlan, EventType, InvalidEventError, Resolution
from router.storage import keys
from router.worker.batch import decode, plan_batch
from router.worker.identity import resolve_batch
from router.worker.pipeline import trigger_text
from scoring import ScoringConfig, load_scoring_config

SCORING = load_scoring_config("""
threshold: 50
half_life_days: 10
rules:
  - name: page-view
    description: any page
    event: page_view
    points: 1
  - name: pricing
    description: pricing page
    event: page_view
    url: ^/pricing
    points: 10
  - name: any-form
    description: any form
    event: form_fill
    points: 5
  - name: demo-request
    description: asked for a demo
    event: form_fill
    form: demo-request
    points: 30
    hand_raiser: true
  - name: webinar-open
    description: opened the webinar email
    event: email_open
    campaign: nov-webinar
    points: 2.5
  - name: unsubscribe-page
    description: looked at unsubscribing
    event: page_view
    url: ^/unsubscribe
    points: -4
""")

TS = 1_800_000_000.0
_counter = iter(range(1_000_000))


def ev(etype: EventType, **kw: object) -> Event:
    n = next(_counter)
    return Event(event_id=f"e{n}", type=etype, ts=TS + n, source="test", **kw)  # type: ignore[arg-type]


def page(visitor: str | None, url: str = "https://acme.io/blog") -> Event:
    return ev(EventType.PAGE_VIEW, visitor_id=visitor, url=url)


def form(email: str, visitor: str | None = None, form_id: str = "contact", **fields: str) -> Event:
    return ev(EventType.FORM_FILL, visitor_id=visitor, email=email, form_id=form_id, fields=fields)


def email_open(email: str, campaign: str = "nov-webinar") -> Event:
    return ev(EventType.EMAIL_OPEN, email=email, campaign=campaign)


# =========================================================================== decode


def test_decode_bytes_str_and_dict() -> None:
    e = form("jane@acme.com", "visitor_1234", company="Acme")
    raw = orjson.dumps(e.to_dict())
    assert decode(raw) == e
    assert decode(raw.decode()) == e
    assert decode(e.to_dict()) == e


def test_decode_rejects_invalid_events_naming_the_field() -> None:
    with pytest.raises(InvalidEventError, match="'ts'"):
        decode(b'{"event_id": "x", "type": "page_view", "ts": "yesterday"}')
    with pytest.raises(InvalidEventError, match="JSON object"):
        decode(b"[1, 2]")


def test_decode_rejects_bad_json() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        decode(b"{not json")


def test_decode_bad_schema_version_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEventError, match="'v'"):
        decode(b'{"event_id": "x", "type": "page_view", "ts": 1, "v": "two"}')


# =========================================================================== plan_batch
#
# Who an event belongs to is decided by ``router.worker.identity.resolve_batch`` (pure);
# ``plan_batch`` takes its lead ids and adds what each event is worth.


def plan(events: list[Event], visitors: dict[str, str] | None = None, users: dict[str, str] | None = None,
         config: ScoringConfig = SCORING) -> tuple[list[EventPlan], Resolution]:
    resolution = resolve_batch(events, dict(visitors or {}), dict(users or {}))
    return plan_batch(events, resolution.lead_ids, config), resolution


def test_page_view_of_an_unknown_visitor_goes_to_its_anonymous_lead() -> None:
    e = page("visitor_aaaa", "https://acme.io/pricing?plan=pro")
    [p], res = plan([e])
    assert p.event is e
    assert p.lead_id == keys.lead_id_for_visitor("visitor_aaaa")
    assert p.lead_id.startswith("A")
    assert [r.rule for r in p.reasons] == ["page-view", "pricing"]
    assert p.points == 11
    assert p.hand_raiser is False
    assert res.links == {} and res.merges == [] and res.conflicts == []


def test_email_events_go_to_the_email_lead() -> None:
    e = email_open("Jane@Acme.com ")
    [p], res = plan([e])
    assert p.lead_id == keys.lead_id_for_email("jane@acme.com")
    assert p.lead_id.startswith("L")
    assert p.points == 2.5
    assert [r.rule for r in p.reasons] == ["webinar-open"]
    assert res.links == {}


def test_email_open_of_another_campaign_earns_nothing() -> None:
    [p], _ = plan([email_open("jane@acme.com", campaign="other")])
    assert p.reasons == ()
    assert p.points == 0
    assert p.lead_id == keys.lead_id_for_email("jane@acme.com")


def test_form_with_a_visitor_links_the_visitor() -> None:
    e = form("jane@acme.com", "visitor_aaaa", company="Acme", country="US")
    [p], res = plan([e])
    lead = keys.lead_id_for_email("jane@acme.com")
    assert p.lead_id == lead
    assert res.links == {("v", "visitor_aaaa"): lead}
    # The visitor's anonymous profile is folded into the lead, once.
    [merge] = res.merges
    assert (merge.source, merge.target) == (keys.lead_id_for_visitor("visitor_aaaa"), lead)
    assert merge.event_id == e.event_id
    assert p.fields == {"company": "Acme", "country": "US"}


def test_later_events_of_a_linked_visitor_in_the_same_batch_go_to_the_lead() -> None:
    batch = [
        page("visitor_aaaa"),  # before the form: still anonymous
        form("jane@acme.com", "visitor_aaaa"),
        page("visitor_aaaa", "https://acme.io/pricing"),
        page("visitor_bbbb"),  # someone else
        form("jane@acme.com", "visitor_aaaa"),  # the same link again: nothing more to merge
    ]
    plans, res = plan(batch)
    lead = keys.lead_id_for_email("jane@acme.com")
    assert [p.lead_id for p in plans] == [
        keys.lead_id_for_visitor("visitor_aaaa"), lead, lead, keys.lead_id_for_visitor("visitor_bbbb"), lead,
    ]
    assert res.links == {("v", "visitor_aaaa"): lead}
    assert len(res.merges) == 1
    assert plans[2].points == 11


def test_a_known_visitor_maps_to_its_lead() -> None:
    lead = keys.lead_id_for_email("jane@acme.com")
    plans, res = plan([page("visitor_aaaa"), form("jane@acme.com", "visitor_aaaa")], visitors={"visitor_aaaa": lead})
    assert [p.lead_id for p in plans] == [lead, lead]
    # Already linked to this lead: nothing to link or merge.
    assert res.links == {} and res.merges == []


def test_a_known_visitor_filling_a_form_as_someone_else_is_not_merged() -> None:
    jane = keys.lead_id_for_email("jane@acme.com")
    bob = keys.lead_id_for_email("bob@acme.com")
    plans, res = plan([form("bob@acme.com", "visitor_aaaa"), page("visitor_aaaa")], visitors={"visitor_aaaa": jane})
    assert [p.lead_id for p in plans] == [bob, bob]
    assert res.merges == []
    [conflict] = res.conflicts
    assert (conflict.previous, conflict.current) == (jane, bob)
    assert res.links == {("v", "visitor_aaaa"): bob}


def test_form_without_a_visitor_links_nothing() -> None:
    [p], res = plan([form("jane@acme.com")])
    assert p.lead_id == keys.lead_id_for_email("jane@acme.com")
    assert res.links == {} and res.merges == []


def test_event_without_person_gets_a_lead_of_its_own() -> None:
    a, b = page(None), page(None)
    plans, _ = plan([a, b])
    assert plans[0].lead_id == keys.lead_id_for_visitor(f"event:{a.event_id}")
    assert plans[1].lead_id == keys.lead_id_for_visitor(f"event:{b.event_id}")
    assert plans[0].lead_id != plans[1].lead_id


def test_plan_batch_uses_the_lead_ids_it_is_given() -> None:
    events = [page("visitor_aaaa"), email_open("jane@acme.com")]
    plans = plan_batch(events, ["Lx", "Ly"], SCORING)
    assert [p.lead_id for p in plans] == ["Lx", "Ly"]
    with pytest.raises(ValueError):
        plan_batch(events, ["Lx"], SCORING)


def test_hand_raiser_and_points_come_from_the_scoring_config() -> None:
    demo = form("jane@acme.com", form_id="demo-request")
    contact = form("jane@acme.com", form_id="contact")
    unsub = page("visitor_aaaa", "https://acme.io/unsubscribe")
    (p_demo, p_contact, p_unsub), _ = plan([demo, contact, unsub])
    assert p_demo.hand_raiser is True
    assert p_demo.points == 35
    assert [(r.rule, r.points, r.hand_raiser) for r in p_demo.reasons] == [
        ("any-form", 5, False), ("demo-request", 30, True)]
    assert all(r.event_id == demo.event_id and r.ts == demo.ts for r in p_demo.reasons)
    assert p_contact.hand_raiser is False
    assert p_contact.points == 5
    assert p_unsub.points == -3  # page-view +1, unsubscribe -4


def test_another_config_changes_the_points() -> None:
    cfg = load_scoring_config("""
threshold: 10
rules:
  - name: contact-is-hot
    description: contact form is a hand-raiser here
    event: form_fill
    form: [contact]
    points: 7
    hand_raiser: true
""")
    [p], _ = plan([form("jane@acme.com", form_id="contact")], config=cfg)
    assert p.points == 7
    assert p.hand_raiser is True
    [other], _ = plan([page("visitor_aaaa", "https://acme.io/pricing")], config=cfg)
    assert other.points == 0 and other.reasons == ()


def test_identify_traits_become_lead_fields() -> None:
    e = ev(EventType.IDENTIFY, user_id="user-42", email="jane@acme.com",
           traits={"company": "Acme", "industry": "SaaS", "favourite_colour": "green"},
           fields={"country": "US"})
    [p], _ = plan([e])
    assert p.fields == {"country": "US", "company": "Acme", "industry": "SaaS"}


def test_plans_keep_batch_order_and_length() -> None:
    batch = [page(f"visitor_{i:04d}") for i in range(20)]
    plans, _ = plan(batch)
    assert [p.event for p in plans] == batch
    assert plan_batch([], [], SCORING) == []


# =========================================================================== trigger_text


def test_trigger_text_hand_raiser_names_the_form() -> None:
    e = form("jane@acme.com", form_id="demo-request")
    r = ApplyResult(status="fired", before=10, after=45, crossing=1, trigger="hand_raiser")
    assert trigger_text(r, e, 50) == "hand-raiser: filled form demo-request"


def test_trigger_text_hand_raiser_without_form() -> None:
    r = ApplyResult(status="fired", trigger="hand_raiser")
    assert trigger_text(r, page("visitor_aaaa"), 50) == "hand-raiser"


def test_trigger_text_threshold_rounds_the_scores() -> None:
    r = ApplyResult(status="fired", before=98.2, after=104.6, crossing=2, trigger="threshold")
    assert trigger_text(r, page("visitor_aaaa"), 100.0) == "score 105 crossed the sales-ready threshold 100"
