"""The feature catalogue: one function from the live lead state, the same vector in training and serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from router.cli.model import map_table, mapped_schema
from scoring.features import (
    CATALOGUE,
    FeatureMappingError,
    country_name,
    features_from_lead,
    parse_mapping,
    training_row,
)
from scoring.model import LeadFeatureCleaner, RawTable, feature_matrix, table_matrix

MAPPING_FILE = Path(__file__).resolve().parents[3] / "scoring" / "x_education_mapping.yaml"
MAPPING = parse_mapping(yaml.safe_load(MAPPING_FILE.read_text()), str(MAPPING_FILE))

# One lead, twice: as the worker keeps it in Redis, and as a CRM export row (X Education columns).
LIVE = {
    "email": "ana@example.com", "events": "9", "first_seen": "1700000000", "last_seen": "1700003600",
    "last_type": "email_open", "n:page_view": "6", "n:form_fill": "1", "n:email_open": "2",
    "f:country": "IN", "f:occupation": "Working Professional", "f:consent": "no", "f:company": "Acme",
    "f:specialization": "Finance Management", "f:city": "Mumbai", "f:how_did_you_hear": "Online Search",
    "f:what_matters_most": "Better Career Prospects", "f:free_copy_of_mastering_the_interview": "Yes",
    "w:ss": "3", "w:time": "1531.6", "w:ft": "organic_search", "w:lt": "email",
}
EXPORT = {
    "Prospect ID": "7927b2df-8bba-4d29-b9a2-b6e0beafe620", "Lead Number": "660737", "Converted": "1",
    "Lead Origin": "Landing Page Submission", "Lead Source": "Google", "TotalVisits": "3",
    "Page Views Per Visit": "2", "Total Time Spent on Website": "1532", "Last Activity": "Email Opened",
    "Last Notable Activity": "Modified", "Country": "India", "What is your current occupation": "Working Professional",
    "Do Not Email": "Yes", "Specialization": "Finance Management", "City": "Mumbai",
    "How did you hear about X Education": "Online Search",
    "What matters most to you in choosing a course": "Better Career Prospects",
    "A free copy of Mastering The Interview": "Yes", "Tags": "Will revert after reading the email",
}


def test_the_vector_trained_on_equals_the_vector_served() -> None:
    served = features_from_lead(LIVE, MAPPING.names)
    trained = training_row(MAPPING, EXPORT)
    assert trained == served
    assert served["page_views"] == 6.0 and served["email_opt_out"] == 1.0 and served["country"] == "india"
    # ... and after the model's own first step, through the exact paths `model train` and the worker use.
    columns = tuple(EXPORT)
    table = map_table(RawTable(columns, (tuple(EXPORT[c] for c in columns),)), MAPPING, "Converted", MAPPING_FILE)
    schema = mapped_schema(RawTable(columns, ()), MAPPING, "Converted")
    cleaner = LeadFeatureCleaner(schema.pairs())
    seen_in_training = cleaner.transform(table_matrix(table, schema.names))
    seen_in_serving = cleaner.transform(feature_matrix([served], schema.names))
    assert seen_in_training.shape == seen_in_serving.shape == (1, len(MAPPING.features))
    for a, b in zip(seen_in_training[0], seen_in_serving[0], strict=True):
        assert (a == b) or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b)), (a, b)


def test_a_different_lead_gives_a_different_vector() -> None:
    # The equality above is not vacuous: change one live fact and the vectors differ.
    other = {**LIVE, "last_type": "page_view"}
    assert features_from_lead(other, MAPPING.names) != training_row(MAPPING, EXPORT)


def test_unmapped_and_leaky_columns_are_listed_and_left_out() -> None:
    schema = mapped_schema(RawTable(tuple(EXPORT), ()), MAPPING, "Converted")
    reasons = {e.column: e.reason for e in schema.excluded}
    assert reasons["Last Notable Activity"] == reasons["Prospect ID"] == "unmapped"
    assert reasons["Tags"] == "leaky"
    for used in ("TotalVisits", "Page Views Per Visit", "Lead Source", "Total Time Spent on Website"):
        assert used not in reasons
    assert not {"Last Notable Activity", "Tags"} & set(schema.names)
    assert {"lead_source", "sessions", "time_on_site", "pages_per_session"} <= set(schema.names)


def test_a_mapping_to_a_feature_without_a_live_source_is_refused() -> None:
    with pytest.raises(FeatureMappingError, match=r"'sms_sent' is not a live feature.*must stay unmapped"):
        parse_mapping({"features": {"sms_sent": "Last Notable Activity"}}, "m.yaml")
    with pytest.raises(FeatureMappingError, match=r"features.country.per: only a numeric feature"):
        parse_mapping({"features": {"country": {"column": "Country", "per": "X"}}}, "m.yaml")
    with pytest.raises(FeatureMappingError, match=r"features.country: unknown key\(s\) \['colum'\]"):
        parse_mapping({"features": {"country": {"colum": "Country"}}}, "m.yaml")
    with pytest.raises(FeatureMappingError, match="only a numeric feature"):
        parse_mapping({"features": {"country": {"column": "Country", "times": "X"}}}, "m.yaml")
    with pytest.raises(FeatureMappingError, match="'features:' section"):
        parse_mapping({"target": "Converted"}, "m.yaml")


def test_the_mapping_survives_the_round_trip_through_model_metadata() -> None:
    again = parse_mapping({"file": "x.yaml", **MAPPING.to_json()}, "metadata")
    assert again == MAPPING


def test_an_empty_lead_is_missing_not_zero() -> None:
    got = features_from_lead({})
    assert set(got) == {f.name for f in CATALOGUE}
    assert got["lead_origin"] == "tracking"
    assert all(v is None for k, v in got.items() if k != "lead_origin")
    assert features_from_lead({}, ["form:city", "no_such_feature"]) == {"form:city": None, "no_such_feature": None}


@pytest.mark.parametrize(("last_type", "want"), [
    ("email_open", "email_open"), ("page_view", "page_view"), ("form_fill", "form_fill"),
    ("email_click", "email_click"), ("track", "other"), ("identify", "identify"), ("group", "other"), ("", None),
])
def test_last_activity(last_type: str, want: str | None) -> None:
    assert features_from_lead({"last_type": last_type})["last_activity"] == want


def test_a_chat_conversation_is_its_own_activity() -> None:
    assert features_from_lead({"last_type": "track", "last_name": "Olark Chat Started"})["last_activity"] == "chat"
    assert features_from_lead({"last_type": "track", "last_name": "Trial Started"})["last_activity"] == "other"
    assert features_from_lead({"last_type": "page_view", "last_name": "chat"})["last_activity"] == "page_view"


@pytest.mark.parametrize(("export", "want"), [
    ("Email Opened", "email_open"), ("SMS Sent", "other"), ("Olark Chat Conversation", "chat"),
    ("Converted to Lead", "identify"), ("", None),
])
def test_last_activity_from_the_export(export: str, want: str | None) -> None:
    assert training_row(MAPPING, {"Last Activity": export})["last_activity"] == want


def test_page_views_zero_only_when_known() -> None:
    assert features_from_lead({"events": "2", "n:email_open": "2"})["page_views"] == 0.0
    assert features_from_lead({"events": "4", "n:email_open": "2", "merges": "1"})["page_views"] is None
    assert features_from_lead({"n:page_view": "garbage"})["page_views"] is None
    # Export: visits x pages per visit; either one missing -> missing.
    assert training_row(MAPPING, {"TotalVisits": "4", "Page Views Per Visit": "2.5"})["page_views"] == 10.0
    assert training_row(MAPPING, {"TotalVisits": "4", "Page Views Per Visit": ""})["page_views"] is None


def test_lead_origin() -> None:
    assert features_from_lead({"n:form_fill": "0"})["lead_origin"] == "tracking"
    assert features_from_lead({"n:form_fill": "2"})["lead_origin"] == "form"
    assert training_row(MAPPING, {"Lead Origin": "Lead Add Form"})["lead_origin"] == "form"
    assert training_row(MAPPING, {"Lead Origin": "API"})["lead_origin"] == "tracking"
    assert training_row(MAPPING, {"Lead Origin": "Lead Import"})["lead_origin"] is None


@pytest.mark.parametrize(("raw", "want"), [
    ("IN", "India"), ("in", "India"), ("US", "United States"), ("usa", "United States"), ("GB", "United Kingdom"),
    ("AE", "United Arab Emirates"), ("India", "India"), ("Germany", "Germany"), (" ", None), ("XX", None),
    ("ZZZ", None), (None, None),
])
def test_country(raw: str | None, want: str | None) -> None:
    assert country_name(raw) == want


@pytest.mark.parametrize(("fields", "want"), [
    ({"f:job_title": "CTO"}, "working professional"), ({"f:job_title": "MBA Student"}, "student"),
    ({"f:job_title": ""}, None), ({}, None),
    ({"f:occupation": "Unemployed", "f:job_title": "CTO"}, "unemployed"),
])
def test_occupation(fields: dict[str, str], want: str | None) -> None:
    assert features_from_lead(fields)["occupation"] == want


@pytest.mark.parametrize(("consent", "want"), [("yes", 0.0), ("true", 0.0), ("no", 1.0), ("0", 1.0),
                                               ("whatever", None)])
def test_email_opt_out_from_consent(consent: str, want: float | None) -> None:
    assert features_from_lead({"f:consent": consent})["email_opt_out"] == want


def test_web_features_from_the_lead() -> None:
    lead = {"events": "12", "n:page_view": "7", "w:ss": "3", "w:time": "95.5", "w:ft": "paid_search",
            "w:lt": "email", "w:es": "40", "w:es0": "25", "last_seen": "1700000000", "grade": "B", "fit": "30"}
    got = features_from_lead(lead, now=1700000000 + 2 * 86400)
    assert (got["sessions"], got["time_on_site"], got["pages_per_session"]) == (3.0, 96.0, 2.33)
    assert (got["lead_source"], got["last_touch"]) == ("paid_search", "email")
    assert (got["engagement"], got["engagement_change"], got["recency_days"]) == (40.0, 15.0, 2.0)
    assert (got["fit_grade"], got["fit_points"]) == ("b", 30.0)
    assert features_from_lead(lead)["recency_days"] is None  # no scoring moment given
    assert features_from_lead({**lead, "w:ft": "carrier pigeon"})["lead_source"] == "other"


def test_sessions_zero_only_when_known() -> None:
    # A lead with a form fill and no page view: no sessions, no time on site, no pages.
    got = features_from_lead({"events": "1", "n:form_fill": "1", "w:ft": "reference"})
    assert (got["sessions"], got["time_on_site"], got["pages_per_session"]) == (0.0, 0.0, 0.0)
    # Page views from before sessions were kept: unknown, not zero.
    got = features_from_lead({"events": "3", "n:page_view": "3"})
    assert (got["sessions"], got["time_on_site"], got["pages_per_session"]) == (None, None, None)
    assert features_from_lead({"w:ss": "2", "n:page_view": "5"})["time_on_site"] == 0.0


@pytest.mark.parametrize(("visits", "per_visit", "want"), [
    ("3", "2.67", 2.67), ("4", "2.5", 2.5), ("0", "0", 0.0), ("7", "1.14", 1.14), ("", "2", None), ("2", "", None),
])
def test_pages_per_session_from_the_export_rounds_like_the_live_lead(visits: str, per_visit: str,
                                                                      want: float | None) -> None:
    row = training_row(MAPPING, {"TotalVisits": visits, "Page Views Per Visit": per_visit})
    assert row["pages_per_session"] == want
    if want is not None:
        # the live lead with those whole page views and sessions computes the same value
        live = {"w:ss": visits, "n:page_view": str(int(row["page_views"] or 0)), "events": "1"}
        assert features_from_lead(live)["pages_per_session"] == want


@pytest.mark.parametrize(("source", "want"), [
    ("Google", "organic_search"), ("google", "organic_search"), ("Direct Traffic", "direct"), ("Olark Chat", "chat"),
    ("Reference", "reference"), ("Welingak Website", "partner"), ("Referral Sites", "referral"),
    ("Facebook", "social"), ("Click2call", "other"), ("", None),
])
def test_lead_source_from_the_export(source: str, want: str | None) -> None:
    assert training_row(MAPPING, {"Lead Source": source})["lead_source"] == want
