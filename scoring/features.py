"""Map the live lead state kept in Redis onto the X-Education-style training features.

The model is trained on a CRM export (one row per lead, columns like
``TotalVisits`` and ``Last Activity``); the worker only has the lead hash that
``router/storage/lua/apply_event.lua`` maintains:

* ``f:<field>`` form fields (``country``, ``company``, ``job_title``, ``consent`` ...),
* ``n:<event_type>`` how many events of each type (``page_view``, ``email_open``,
  ``email_click``, ``form_fill``, ``track`` ...),
* ``events``, ``first_seen``, ``last_seen``, ``last_type``, ``email``, ``merges``.

:func:`features_from_lead` translates one into the other.  Anything the hash
cannot tell is ``None`` (missing, imputed by the model the way it learned to),
never a made-up zero.  The mapping (also in :data:`FEATURE_SOURCES`):

=============================================  ==================================================
training feature                               live source
=============================================  ==================================================
Lead Origin                                    "Landing Page Submission" once a form was filled
                                               (``n:form_fill`` > 0), else "API"
TotalVisits                                    ``n:page_view`` (page views stand in for visits:
                                               sessions are not tracked).  0 only when the hash
                                               has events, none a page view, and no anonymous
                                               history was merged in; otherwise missing
Last Activity, Last Notable Activity           ``last_type``: email_open -> "Email Opened",
                                               page_view -> "Page Visited on Website",
                                               form_fill -> "Form Submitted on Website",
                                               email_click -> "Email Link Clicked"; other types
                                               missing
Country                                        ``f:country``: ISO 3166 alpha-2/alpha-3 code ->
                                               the data set's English name ("IN" -> "India");
                                               a longer value is taken as a name; unknown codes
                                               missing
What is your current occupation                ``f:job_title``: "Student" when the title says
                                               student, else "Working Professional"; missing
                                               without a job title
Do Not Email                                   ``f:consent``: yes/true/1 -> "No", no/false/0 ->
                                               "Yes"; missing otherwise
Total Time Spent on Website,                   missing: dwell time and sessions are not tracked
Page Views Per Visit
Lead Source                                    missing: the lead hash keeps no UTM/referrer
Specialization, City, How did you hear about   missing: no such form fields
X Education, What matters most to you in
choosing a course, Search, Newspaper Article,
X Education Forums, Newspaper, Digital
Advertisement, Through Recommendations,
A free copy of Mastering The Interview,
Do Not Call
=============================================  ==================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

LAST_ACTIVITY: Final[Mapping[str, str]] = {
    "email_open": "Email Opened",
    "page_view": "Page Visited on Website",
    "form_fill": "Form Submitted on Website",
    "email_click": "Email Link Clicked",
}

# ISO 3166 codes of the countries in the X Education data set (and a few
# common ones), spelled the way the data set spells them.
COUNTRY_NAMES: Final[Mapping[str, str]] = {
    "IN": "India", "IND": "India",
    "US": "United States", "USA": "United States",
    "AE": "United Arab Emirates", "ARE": "United Arab Emirates",
    "SA": "Saudi Arabia", "SAU": "Saudi Arabia",
    "SG": "Singapore", "SGP": "Singapore",
    "GB": "United Kingdom", "UK": "United Kingdom", "GBR": "United Kingdom",
    "AU": "Australia", "AUS": "Australia",
    "BH": "Bahrain", "BHR": "Bahrain",
    "QA": "Qatar", "QAT": "Qatar",
    "OM": "Oman", "OMN": "Oman",
    "KW": "Kuwait", "KWT": "Kuwait",
    "FR": "France", "FRA": "France",
    "CA": "Canada", "CAN": "Canada",
    "DE": "Germany", "DEU": "Germany",
    "NG": "Nigeria", "NGA": "Nigeria",
    "HK": "Hong Kong", "HKG": "Hong Kong",
    "GH": "Ghana", "GHA": "Ghana",
    "BE": "Belgium", "BEL": "Belgium",
    "NL": "Netherlands", "NLD": "Netherlands",
    "SE": "Sweden", "SWE": "Sweden",
    "IT": "Italy", "ITA": "Italy",
    "PH": "Philippines", "PHL": "Philippines",
    "BD": "Bangladesh", "BGD": "Bangladesh",
    "RU": "Russia", "RUS": "Russia",
    "LK": "Sri Lanka", "LKA": "Sri Lanka",
    "CN": "China", "CHN": "China",
    "KE": "Kenya", "KEN": "Kenya",
    "ZA": "South Africa", "ZAF": "South Africa",
    "TZ": "Tanzania", "TZA": "Tanzania",
    "MY": "Malaysia", "MYS": "Malaysia",
    "LR": "Liberia", "LBR": "Liberia",
    "CH": "Switzerland", "CHE": "Switzerland",
    "DK": "Denmark", "DNK": "Denmark",
    "VN": "Vietnam", "VNM": "Vietnam",
    "ID": "Indonesia", "IDN": "Indonesia",
    "ES": "Spain", "ESP": "Spain",
    "IE": "Ireland", "IRL": "Ireland",
    "NZ": "New Zealand", "NZL": "New Zealand",
    "JP": "Japan", "JPN": "Japan",
    "BR": "Brazil", "BRA": "Brazil",
    "PK": "Pakistan", "PAK": "Pakistan",
    "NP": "Nepal", "NPL": "Nepal",
}

FEATURE_SOURCES: Final[Mapping[str, str]] = {
    "Lead Origin": "'Landing Page Submission' if n:form_fill > 0 else 'API'",
    "TotalVisits": "n:page_view (0 only when known to be none)",
    "Last Activity": "last_type via LAST_ACTIVITY",
    "Last Notable Activity": "last_type via LAST_ACTIVITY",
    "Country": "f:country, ISO code -> name via COUNTRY_NAMES",
    "What is your current occupation": "f:job_title present -> 'Working Professional' (or 'Student')",
    "Do Not Email": "f:consent, inverted",
    "Total Time Spent on Website": "not tracked",
    "Page Views Per Visit": "not tracked (no sessions)",
    "Lead Source": "not kept in the lead hash",
    "Specialization": "no such field",
    "City": "no such field",
    "How did you hear about X Education": "no such field",
    "What matters most to you in choosing a course": "no such field",
    "Search": "no such field",
    "Newspaper Article": "no such field",
    "X Education Forums": "no such field",
    "Newspaper": "no such field",
    "Digital Advertisement": "no such field",
    "Through Recommendations": "no such field",
    "A free copy of Mastering The Interview": "no such field",
    "Do Not Call": "no such field",
}

_YES: Final = frozenset({"yes", "y", "true", "1", "on", "granted", "opt-in", "opted in"})
_NO: Final = frozenset({"no", "n", "false", "0", "off", "denied", "opt-out", "opted out"})


def _count(lead: Mapping[str, str], key: str) -> int | None:
    raw = lead.get(key)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(float(raw))
    except ValueError:
        return None


def _field(lead: Mapping[str, str], name: str) -> str | None:
    raw = lead.get(f"f:{name}")
    if raw is None:
        return None
    text = " ".join(raw.split())
    return text or None


def country_name(value: str | None) -> str | None:
    """``"IN"`` -> ``"India"``; a longer value is taken as a name already; unknown codes -> ``None``."""
    if value is None:
        return None
    text = " ".join(value.split())
    if not text:
        return None
    code = text.upper()
    if code in COUNTRY_NAMES:
        return COUNTRY_NAMES[code]
    if len(text) <= 3:
        return None
    return text


def occupation(job_title: str | None) -> str | None:
    if job_title is None:
        return None
    return "Student" if "student" in job_title.casefold() else "Working Professional"


def do_not_email(consent: str | None) -> str | None:
    if consent is None:
        return None
    key = consent.casefold()
    if key in _YES:
        return "No"
    if key in _NO:
        return "Yes"
    return None


def total_visits(lead: Mapping[str, str]) -> int | None:
    views = _count(lead, "n:page_view")
    if views is not None:
        return views
    events = _count(lead, "events")
    # Merging an anonymous profile adds to ``events`` but not to ``n:*``, so
    # after a merge a missing ``n:page_view`` does not mean no page views.
    if events and events > 0 and not _count(lead, "merges"):
        return 0
    return None


def features_from_lead(lead: Mapping[str, str]) -> dict[str, object]:
    """The training-feature row for one live lead hash (``HGETALL`` of the lead key, decoded)."""
    last = LAST_ACTIVITY.get(lead.get("last_type", ""))
    forms = _count(lead, "n:form_fill") or 0
    out: dict[str, object] = dict.fromkeys(FEATURE_SOURCES)
    out.update({
        "Lead Origin": "Landing Page Submission" if forms > 0 else "API",
        "TotalVisits": total_visits(lead),
        "Last Activity": last,
        "Last Notable Activity": last,
        "Country": country_name(_field(lead, "country")),
        "What is your current occupation": occupation(_field(lead, "job_title")),
        "Do Not Email": do_not_email(_field(lead, "consent")),
    })
    return out
