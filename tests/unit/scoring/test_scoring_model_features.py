"""Live lead hash -> X-Education-style training features."""

from __future__ import annotations

import pytest

from scoring.features import FEATURE_SOURCES, country_name, features_from_lead


def test_a_known_lead() -> None:
    lead = {
        "email": "ana@example.com", "events": "9", "first_seen": "1700000000", "last_seen": "1700003600",
        "last_type": "email_open", "n:page_view": "5", "n:form_fill": "1", "n:email_open": "3",
        "f:country": "IN", "f:job_title": "Head of Data", "f:consent": "yes", "f:company": "Acme",
    }
    got = features_from_lead(lead)
    assert got["Lead Origin"] == "Landing Page Submission"
    assert got["TotalVisits"] == 5
    assert got["Last Activity"] == got["Last Notable Activity"] == "Email Opened"
    assert got["Country"] == "India"
    assert got["What is your current occupation"] == "Working Professional"
    assert got["Do Not Email"] == "No"
    assert got["Total Time Spent on Website"] is None
    assert got["Page Views Per Visit"] is None
    assert got["Lead Source"] is None


def test_every_training_feature_is_present_and_unknowns_are_none_not_zero() -> None:
    got = features_from_lead({})
    assert set(got) == set(FEATURE_SOURCES)
    assert got["Lead Origin"] == "API"
    assert all(v is None for k, v in got.items() if k != "Lead Origin")


@pytest.mark.parametrize(("last_type", "want"), [
    ("email_open", "Email Opened"), ("page_view", "Page Visited on Website"),
    ("form_fill", "Form Submitted on Website"), ("email_click", "Email Link Clicked"),
    ("track", None), ("identify", None), ("", None),
])
def test_last_activity(last_type: str, want: str | None) -> None:
    assert features_from_lead({"last_type": last_type})["Last Activity"] == want


def test_visits_zero_only_when_known() -> None:
    # Events counted, none a page view, no anonymous history merged: really zero.
    assert features_from_lead({"events": "2", "n:email_open": "2"})["TotalVisits"] == 0
    # A merge adds to `events` but not to `n:*`: unknown.
    assert features_from_lead({"events": "4", "n:email_open": "2", "merges": "1"})["TotalVisits"] is None
    assert features_from_lead({"n:page_view": "garbage"})["TotalVisits"] is None


def test_lead_origin_from_forms() -> None:
    assert features_from_lead({"n:form_fill": "0"})["Lead Origin"] == "API"
    assert features_from_lead({"n:form_fill": "2"})["Lead Origin"] == "Landing Page Submission"


@pytest.mark.parametrize(("raw", "want"), [
    ("IN", "India"), ("in", "India"), ("US", "United States"), ("usa", "United States"), ("GB", "United Kingdom"),
    ("AE", "United Arab Emirates"), ("India", "India"), ("Germany", "Germany"), (" ", None), ("XX", None),
    ("ZZZ", None), (None, None),
])
def test_country(raw: str | None, want: str | None) -> None:
    assert country_name(raw) == want


@pytest.mark.parametrize(("title", "want"), [
    ("CTO", "Working Professional"), ("MBA Student", "Student"), ("", None), (None, None),
])
def test_occupation(title: str | None, want: str | None) -> None:
    lead = {} if title is None else {"f:job_title": title}
    assert features_from_lead(lead)["What is your current occupation"] == want


@pytest.mark.parametrize(("consent", "want"), [("yes", "No"), ("true", "No"), ("no", "Yes"), ("0", "Yes"),
                                               ("whatever", None)])
def test_do_not_email_from_consent(consent: str, want: str | None) -> None:
    assert features_from_lead({"f:consent": consent})["Do Not Email"] == want
