"""The shared data shapes: validation of wire events and lossless round trips."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from models import (
    Alert,
    Assignment,
    Event,
    EventType,
    InvalidEventError,
    LeadView,
    ModelError,
    Reason,
    Rep,
    RoutingDecision,
    Stage,
)
from models.events import SCHEMA_VERSION

TS = 1_800_000_000.25


def wire(**kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"event_id": "e1", "type": "page_view", "ts": TS}
    data.update(kw)
    return data


def full_event() -> Event:
    return Event(
        event_id="evt-1", type=EventType.IDENTIFY, ts=TS, source="segment", visitor_id="visitor_123",
        email="jane@acme.com", url="https://acme.io/pricing?x=1", referrer="https://google.com/",
        title="Pricing", utm={"utm_source": "ads", "utm_campaign": "q4"}, form_id="demo-request",
        fields={"company": "Acme", "country": "US"}, campaign="nov-webinar", user_agent="UA/1.0",
        ip="203.0.113.9", user_id="user-42", previous_id="anon-7", name="Trial Started",
        traits={"plan": "pro", "employees": "250"}, group_id="acme-inc", message_id="msg-9",
        machine=0.75, machine_reason="apple mail privacy proxy",
    )


# =========================================================================== Event.from_dict: valid


def test_minimal_event() -> None:
    e = Event.from_dict(wire())
    assert e == Event(event_id="e1", type=EventType.PAGE_VIEW, ts=TS, source="unknown")
    assert e.utm == {} and e.fields == {} and e.traits == {}
    assert e.machine == 0.0
    assert e.v == SCHEMA_VERSION


def test_integer_ts_becomes_float() -> None:
    e = Event.from_dict(wire(ts=1_800_000_000))
    assert e.ts == 1_800_000_000.0 and isinstance(e.ts, float)


def test_empty_strings_and_nulls_read_as_absent() -> None:
    e = Event.from_dict(wire(email="", visitor_id=None, utm=None, fields={}, machine_reason=""))
    assert e.email is None and e.visitor_id is None and e.machine_reason is None
    assert e.utm == {}


def test_unknown_keys_are_ignored() -> None:
    assert Event.from_dict(wire(extra="x", password="hunter2")) == Event.from_dict(wire())


@pytest.mark.parametrize("etype", list(EventType))
def test_every_event_type_is_accepted(etype: EventType) -> None:
    assert Event.from_dict(wire(type=etype.value)).type is etype


@pytest.mark.parametrize("machine", [0, 0.0, 0.5, 1, 1.0])
def test_machine_in_range(machine: float) -> None:
    assert Event.from_dict(wire(machine=machine)).machine == float(machine)


# =========================================================================== Event.from_dict: errors


def error_of(data: Any) -> str:
    with pytest.raises(InvalidEventError) as exc:
        Event.from_dict(data)
    assert isinstance(exc.value, ModelError)
    assert isinstance(exc.value, ValueError)
    return str(exc.value)


@pytest.mark.parametrize("data", [[1, 2], "page_view", None, 42])
def test_not_an_object(data: Any) -> None:
    msg = error_of(data)
    assert "must be a JSON object" in msg
    assert type(data).__name__ in msg
    assert "send one object per message" in msg


@pytest.mark.parametrize("field", ["event_id", "type"])
@pytest.mark.parametrize("value", [None, ""])
def test_required_fields(field: str, value: Any) -> None:
    data = wire()
    data[field] = value
    msg = error_of(data)
    assert f"event field {field!r} is missing" in msg
    assert "every event needs it" in msg
    del data[field]
    assert f"{field!r} is missing" in error_of(data)


def test_unknown_type_lists_the_valid_ones() -> None:
    msg = error_of(wire(type="pageview"))
    assert "'type' has unknown value 'pageview'" in msg
    for t in EventType:
        assert t.value in msg


@pytest.mark.parametrize("ts", [None, "1800000000", 0, -5, True, False, [TS]])
def test_bad_ts(ts: Any) -> None:
    data = wire(ts=ts)
    if ts is None:
        del data["ts"]
    msg = error_of(data)
    assert "event field 'ts' must be positive epoch seconds" in msg
    assert f"got {ts!r}" in msg
    assert "set it when the event is received" in msg


@pytest.mark.parametrize("field", ["event_id", "type", "source", "visitor_id", "email", "url", "user_id",
                                   "previous_id", "name", "group_id", "message_id", "machine_reason"])
@pytest.mark.parametrize("value", [5, ["x"], {"a": "b"}, True])
def test_string_fields_must_be_strings(field: str, value: Any) -> None:
    msg = error_of(wire(**{field: value}))
    assert f"event field {field!r} must be a string" in msg
    assert f"got {type(value).__name__} {value!r}" in msg


@pytest.mark.parametrize("field", ["utm", "fields", "traits"])
@pytest.mark.parametrize("value", ["utm_source=x", ["a"], {"a": 1}, {"a": None}, {1: "a"}, {"a": {"b": "c"}}])
def test_maps_must_be_objects_of_strings(field: str, value: Any) -> None:
    msg = error_of(wire(**{field: value}))
    assert f"event field {field!r} must be an object of strings" in msg
    assert f"got {value!r}" in msg


@pytest.mark.parametrize("machine", [-0.1, 1.01, "0.5", True, None, float("nan")])
def test_machine_must_be_a_fraction(machine: Any) -> None:
    msg = error_of(wire(machine=machine))
    assert "event field 'machine' must be a number from 0 to 1" in msg
    assert f"got {machine!r}" in msg


@pytest.mark.parametrize("ts", [float("inf"), float("nan")])
def test_non_finite_ts_is_refused(ts: float) -> None:
    error_of(wire(ts=ts))


@pytest.mark.parametrize("v", ["two", None, [1], 1.9])
def test_bad_schema_version_is_an_invalid_event(v: Any) -> None:
    assert "'v'" in error_of(wire(v=v))


# =========================================================================== round trips


def test_event_round_trip_with_every_field() -> None:
    e = full_event()
    d = e.to_dict()
    assert d["type"] == "identify"
    assert d["traits"] == {"plan": "pro", "employees": "250"}
    assert d["machine"] == 0.75
    assert d["machine_reason"] == "apple mail privacy proxy"
    assert Event.from_dict(d) == e


def test_event_round_trips_through_json() -> None:
    e = full_event()
    back = Event.from_dict(orjson.loads(orjson.dumps(e.to_dict())))
    assert back == e
    assert back.to_dict() == e.to_dict()
    # The standard library agrees on the shape.
    assert json.loads(json.dumps(e.to_dict())) == e.to_dict()


def test_to_dict_gives_plain_json_types_and_copies() -> None:
    e = full_event()
    d = e.to_dict()
    assert type(d["type"]) is str
    assert type(d["utm"]) is dict and type(d["fields"]) is dict and type(d["traits"]) is dict
    d["utm"]["utm_source"] = "changed"
    d["fields"]["company"] = "changed"
    d["traits"]["plan"] = "changed"
    assert e.utm["utm_source"] == "ads"
    assert e.fields["company"] == "Acme"
    assert e.traits["plan"] == "pro"


def test_to_dict_accepts_any_mapping() -> None:
    from types import MappingProxyType

    e = Event(event_id="e", type=EventType.TRACK, ts=TS, source="s", utm=MappingProxyType({"utm_source": "x"}),
              fields=MappingProxyType({"company": "A"}), traits=MappingProxyType({"plan": "pro"}))
    d = e.to_dict()
    assert d["utm"] == {"utm_source": "x"}
    assert orjson.loads(orjson.dumps(d))["traits"] == {"plan": "pro"}


@pytest.mark.parametrize("etype", list(EventType))
def test_every_type_round_trips(etype: EventType) -> None:
    e = Event(event_id="e", type=etype, ts=TS, source="s", machine=1.0)
    assert Event.from_dict(e.to_dict()) == e


# =========================================================================== partition key


def test_partition_key_order() -> None:
    base = Event(event_id="ev9", type=EventType.PAGE_VIEW, ts=TS, source="s")
    assert base.partition_key() == "x:ev9"
    with_email = Event(event_id="ev9", type=EventType.PAGE_VIEW, ts=TS, source="s", email="jane@acme.com")
    assert with_email.partition_key() == "e:jane@acme.com"
    with_user = Event(event_id="ev9", type=EventType.PAGE_VIEW, ts=TS, source="s", email="jane@acme.com",
                      user_id="user-42")
    assert with_user.partition_key() == "u:user-42"
    with_visitor = Event(event_id="ev9", type=EventType.PAGE_VIEW, ts=TS, source="s", email="jane@acme.com",
                         user_id="user-42", visitor_id="visitor_1")
    assert with_visitor.partition_key() == "v:visitor_1"


def test_a_browser_keeps_one_partition_key_before_and_after_the_form() -> None:
    page = Event(event_id="a", type=EventType.PAGE_VIEW, ts=TS, source="pixel", visitor_id="visitor_1")
    form = Event(event_id="b", type=EventType.FORM_FILL, ts=TS, source="form", visitor_id="visitor_1",
                 email="jane@acme.com", form_id="demo")
    assert page.partition_key() == form.partition_key()


def test_empty_identifiers_fall_through() -> None:
    e = Event(event_id="ev9", type=EventType.PAGE_VIEW, ts=TS, source="s", visitor_id="", user_id="", email="")
    assert e.partition_key() == "x:ev9"


# =========================================================================== leads, assignments, alerts


def reasons() -> tuple[Reason, ...]:
    return (
        Reason(rule="demo-request", points=30.0, event_id="e2", event_type="form_fill", ts=TS + 5,
               detail="filled form demo-request", hand_raiser=True),
        Reason(rule="pricing", points=10.5, event_id="e1", event_type="page_view", ts=TS, detail="viewed /pricing"),
    )


def lead() -> LeadView:
    return LeadView(lead_id="Labc", email="jane@acme.com", score=57.25, stage=Stage.MQL,
                    fields={"first_name": "Jane", "last_name": "Doe", "company": "Acme"}, reasons=reasons())


def assignment(slack: str | None = "U0REP1") -> Assignment:
    return Assignment(
        assignment_id="Labc:1", lead_id="Labc", crossing=1,
        rep=Rep(rep_id="r1", name="Rep One", email="rep1@example.com", team="enterprise", slack_user_id=slack),
        decision=RoutingDecision(team="enterprise", rule="big-companies", rules_version="abc123def456",
                                 path=("country-us", "big-companies")),
        ts=TS + 6,
    )


def test_reason_round_trip() -> None:
    for r in reasons():
        assert Reason.from_dict(r.to_dict()) == r


def test_reason_defaults_when_optional_keys_are_missing() -> None:
    r = Reason.from_dict({"rule": "x", "points": "3", "event_id": "e", "event_type": "page_view", "ts": 1})
    assert r == Reason(rule="x", points=3.0, event_id="e", event_type="page_view", ts=1.0, detail="",
                       hand_raiser=False)


def test_lead_view_round_trip() -> None:
    view = lead()
    d = view.to_dict()
    assert d["stage"] == "mql"
    assert d["reasons"][0]["hand_raiser"] is True
    assert LeadView.from_dict(d) == view
    assert LeadView.from_dict(orjson.loads(orjson.dumps(d))) == view


def test_lead_view_from_minimal_dict() -> None:
    view = LeadView.from_dict({"lead_id": "A1", "score": 0})
    assert view == LeadView(lead_id="A1", email=None, score=0.0, stage=Stage.ANONYMOUS)


def test_lead_view_derived_properties() -> None:
    view = lead()
    assert view.company == "Acme"
    assert view.display_name == "Jane Doe"
    assert view.email_domain == "acme.com"
    anon = LeadView(lead_id="A1", email=None, score=0, stage=Stage.ANONYMOUS)
    assert anon.display_name == "A1"
    assert anon.company is None
    assert anon.email_domain is None


def test_assignment_round_trip() -> None:
    for a in (assignment(), assignment(slack=None)):
        d = a.to_dict()
        assert d["decision"]["path"] == ["country-us", "big-companies"]
        assert Assignment.from_dict(d) == a
        assert Assignment.from_dict(orjson.loads(orjson.dumps(d))) == a


def test_alert_round_trip() -> None:
    alert = Alert(
        assignment=assignment(), lead=lead(), threshold=50.0, trigger="hand-raiser: filled form demo-request",
        recent=({"type": "form_fill", "ts": TS + 5, "event_id": "e2", "form_id": "demo-request"},
                {"type": "page_view", "ts": TS, "event_id": "e1", "url": "https://acme.io/pricing"}),
        event_ts=TS + 5,
    )
    d = alert.to_dict()
    assert Alert.from_dict(d) == alert
    back = Alert.from_dict(orjson.loads(orjson.dumps(d)))
    assert back == alert
    assert back.to_dict() == d


def test_alert_defaults() -> None:
    alert = Alert(assignment=assignment(), lead=lead(), threshold=100, trigger="score 101 crossed")
    back = Alert.from_dict(orjson.loads(orjson.dumps(alert.to_dict())))
    assert back.recent == ()
    assert back.event_ts == 0.0
    d = alert.to_dict()
    del d["recent"], d["event_ts"]
    assert Alert.from_dict(d) == alert
