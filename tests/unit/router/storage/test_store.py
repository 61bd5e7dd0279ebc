"""The store's pure helpers: timeline summaries and lead views built from a Redis hash."""

from __future__ import annotations

import math

import pytest

from models import Event, EventType, LeadView, Reason, Stage, lead_view_from_hash, summarise

TS = 1_800_000_000.0
DAY = 86_400.0


# =========================================================================== summarise


def test_summarise_keeps_the_fields_alerts_show() -> None:
    e = Event(event_id="e1", type=EventType.PAGE_VIEW, ts=TS, source="pixel", visitor_id="visitor_1",
              url="https://acme.io/pricing", title="Pricing", referrer="https://google.com/",
              user_agent="UA", ip="203.0.113.1", utm={"utm_source": "x"})
    assert summarise(e) == {"type": "page_view", "ts": TS, "event_id": "e1",
                            "url": "https://acme.io/pricing", "title": "Pricing"}


def test_summarise_form_and_email_events() -> None:
    f = Event(event_id="e2", type=EventType.FORM_FILL, ts=TS, source="form", email="jane@acme.com",
              form_id="demo-request", fields={"company": "Acme"})
    assert summarise(f) == {"type": "form_fill", "ts": TS, "event_id": "e2", "form_id": "demo-request"}
    o = Event(event_id="e3", type=EventType.EMAIL_OPEN, ts=TS, source="email", email="jane@acme.com",
              campaign="nov-webinar")
    assert summarise(o) == {"type": "email_open", "ts": TS, "event_id": "e3", "campaign": "nov-webinar"}


def test_summarise_leaves_out_empty_values() -> None:
    e = Event(event_id="e4", type=EventType.PAGE_VIEW, ts=TS, source="pixel", url="", title=None)
    out = summarise(e)
    assert out == {"type": "page_view", "ts": TS, "event_id": "e4"}
    assert isinstance(out["type"], str) and not isinstance(out["type"], EventType)


# =========================================================================== lead_view_from_hash


def test_lead_view_from_a_full_hash() -> None:
    reasons = (Reason(rule="pricing", points=10, event_id="e1", event_type="page_view", ts=TS),)
    data = {
        "lead_id": "L123", "email": "jane@acme.com", "score": "42.5", "asof": str(TS), "stage": "mql",
        "f:company": "Acme", "f:first_name": "Jane", "f:country": "US",
        "events": "7", "owner_name": "Rep One", "crossing": "1",
    }
    view = lead_view_from_hash(data, reasons)
    assert view == LeadView(lead_id="L123", email="jane@acme.com", score=42.5, stage=Stage.MQL,
                            fields={"company": "Acme", "first_name": "Jane", "country": "US"}, reasons=reasons)
    assert view.company == "Acme"
    assert view.display_name == "Jane"


def test_fields_come_only_from_f_keys() -> None:
    view = lead_view_from_hash({"f:": "empty-name", "f:f:odd": "x", "fx": "no", "company": "no", "f:phone": "1"})
    assert view.fields == {"": "empty-name", "f:odd": "x", "phone": "1"}


def test_empty_hash_gives_an_anonymous_zero_lead() -> None:
    view = lead_view_from_hash({})
    assert view == LeadView(lead_id="", email=None, score=0.0, stage=Stage.ANONYMOUS, fields={}, reasons=())


def test_empty_email_and_score_are_none_and_zero() -> None:
    view = lead_view_from_hash({"lead_id": "A1", "email": "", "score": ""})
    assert view.email is None
    assert view.score == 0.0


@pytest.mark.parametrize("stage", ["", "hot", "MQL", "merged"])
def test_unknown_stage_reads_as_anonymous(stage: str) -> None:
    assert lead_view_from_hash({"stage": stage}).stage is Stage.ANONYMOUS


@pytest.mark.parametrize("stage", list(Stage))
def test_every_known_stage_is_read(stage: Stage) -> None:
    assert lead_view_from_hash({"stage": stage.value}).stage is stage


# --------------------------------------------------------------------------- decay


def test_score_is_not_decayed_without_now() -> None:
    view = lead_view_from_hash({"score": "80", "asof": str(TS)}, half_life_s=DAY)
    assert view.score == 80.0


def test_score_is_decayed_to_now() -> None:
    data = {"score": "80", "asof": str(TS)}
    assert lead_view_from_hash(data, now=TS + DAY, half_life_s=DAY).score == pytest.approx(40.0)
    assert lead_view_from_hash(data, now=TS + 3 * DAY, half_life_s=DAY).score == pytest.approx(10.0)
    assert lead_view_from_hash(data, now=TS + 0.5 * DAY, half_life_s=DAY).score == pytest.approx(80 / math.sqrt(2))


def test_negative_scores_decay_towards_zero() -> None:
    view = lead_view_from_hash({"score": "-8", "asof": str(TS)}, now=TS + 2 * DAY, half_life_s=DAY)
    assert view.score == pytest.approx(-2.0)


@pytest.mark.parametrize(("asof", "now", "half_life"), [
    (TS, TS, DAY),  # no time passed
    (TS, TS - DAY, DAY),  # a clock behind the last update: never grow the score
    ("0", TS, DAY),  # never scored
    ("", TS, DAY),
    (TS, TS + DAY, None),  # no half-life given
    (TS, TS + DAY, 0.0),
])
def test_score_is_kept_when_there_is_nothing_to_decay(asof: object, now: float, half_life: float | None) -> None:
    data = {"score": "80", "asof": str(asof)}
    assert lead_view_from_hash(data, now=now, half_life_s=half_life).score == 80.0


def test_missing_asof_is_not_decayed() -> None:
    assert lead_view_from_hash({"score": "80"}, now=TS, half_life_s=DAY).score == 80.0


def test_reasons_are_kept_in_order_as_a_tuple() -> None:
    rs = [Reason(rule=f"r{i}", points=i, event_id=f"e{i}", event_type="page_view", ts=TS + i) for i in range(3)]
    view = lead_view_from_hash({"lead_id": "L1"}, rs)
    assert view.reasons == tuple(rs)
