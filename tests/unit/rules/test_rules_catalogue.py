"""The field catalogue and the facts built from a lead."""

from __future__ import annotations

from models import LeadView, Reason, Stage
from rules import FIELDS, ISO_COUNTRY_CODES, FieldType, coerce_fact, facts_from_lead


def lead(**overrides: object) -> LeadView:
    base: dict[str, object] = {
        "lead_id": "lead-1",
        "email": "Priya.Shah@HarbourLine.co.uk",
        "score": 72.5,
        "stage": Stage.MQL,
        "fields": {},
        "reasons": (),
    }
    base.update(overrides)
    return LeadView(**base)  # type: ignore[arg-type]


def reason(hand_raiser: bool) -> Reason:
    return Reason(rule="demo-request", points=40, event_id="e1", event_type="form_fill", ts=1.0,
                  hand_raiser=hand_raiser)


def test_catalogue_fields_and_types() -> None:
    assert {name: spec.type for name, spec in FIELDS.items()} == {
        "country": FieldType.STRING,
        "region": FieldType.STRING,
        "company": FieldType.STRING,
        "email": FieldType.STRING,
        "email_domain": FieldType.STRING,
        "job_title": FieldType.STRING,
        "form_id": FieldType.STRING,
        "source": FieldType.STRING,
        "score": FieldType.NUMBER,
        "hand_raiser": FieldType.BOOLEAN,
        "employees": FieldType.NUMBER,
        "industry": FieldType.STRING,
    }
    assert len(ISO_COUNTRY_CODES) == 249
    assert {"GB", "NO", "US", "ZA"} <= ISO_COUNTRY_CODES
    assert "UK" not in ISO_COUNTRY_CODES


def test_facts_from_lead() -> None:
    view = lead(
        fields={
            "country": " de ",
            "region": "BY",
            "company": "Fjordkraft Data",
            "job_title": "VP Sales",
            "employees": "1,200",
            "industry": "Energy",
            "phone": "+49 30 1234",  # not in the catalogue
            "first_name": "Priya",
            "source": "",  # blank means missing
        },
        reasons=(reason(False), reason(True)),
    )
    assert facts_from_lead(view) == {
        "country": "DE",
        "region": "BY",
        "company": "Fjordkraft Data",
        "job_title": "VP Sales",
        "employees": 1200.0,
        "industry": "Energy",
        "email": "Priya.Shah@HarbourLine.co.uk",
        "email_domain": "harbourline.co.uk",
        "score": 72.5,
        "hand_raiser": True,
    }


def test_facts_without_email_or_hand_raise() -> None:
    facts = facts_from_lead(lead(email=None, score=3, fields={"employees": "lots"}, reasons=(reason(False),)))
    assert facts == {"score": 3.0, "hand_raiser": False}


def test_hand_raiser_field_counts_too() -> None:
    assert facts_from_lead(lead(fields={"hand_raiser": "yes"}))["hand_raiser"] is True
    assert facts_from_lead(lead(fields={"hand_raiser": "no"}))["hand_raiser"] is False


def test_extra_facts_are_coerced_and_win() -> None:
    view = lead(fields={"country": "US", "region": "TX"})
    facts = facts_from_lead(view, {"country": "ca", "region": None, "employees": 50, "crm_owner": "x"})
    assert facts["country"] == "CA"
    assert "region" not in facts
    assert facts["employees"] == 50.0
    assert facts["crm_owner"] == "x"  # outside the catalogue: passed through, no rule can name it


def test_coerce_fact_never_raises() -> None:
    assert coerce_fact("score", "12.5") == 12.5
    assert coerce_fact("score", "n/a") is None
    assert coerce_fact("score", float("inf")) is None
    assert coerce_fact("score", True) is None
    assert coerce_fact("hand_raiser", "maybe") is None
    assert coerce_fact("hand_raiser", 1) is True
    assert coerce_fact("form_id", 123) == "123"
    assert coerce_fact("company", ["a"]) is None
    assert coerce_fact("email_domain", "Example.COM ") == "example.com"
