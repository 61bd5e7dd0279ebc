"""The feature catalogue: every live feature declared once, computed by one function.

A model is trained and served on the *same* vector: :func:`features_from_lead`
turns the lead state the worker keeps in Redis (the lead hash that
``router/storage/lua/apply_event.lua`` maintains) into ``{feature: value}``,
and training rows from a CRM export go through the very same
:func:`canonical` step of each feature after a mapping file
(:func:`parse_mapping`, e.g. ``scoring/x_education_mapping.yaml``) has named
which export column feeds which feature.  A column without a live source is
listed and left out, never silently used.

The lead hash holds:

* ``f:<field>`` form fields (``country``, ``job_title``, ``consent``, any answer) ...,
* ``n:<event_type>`` how many events of each type (``page_view``, ``email_open``,
  ``email_click``, ``form_fill``, ``track`` ...),
* ``events``, ``first_seen``, ``last_seen``, ``last_type``, ``email``, ``merges``.

The catalogue (:data:`CATALOGUE`; ``form:<field>`` stands for any form answer):

================  ===========  =======================================================================
feature           kind         live source
================  ===========  =======================================================================
lead_origin       categorical  ``form`` once a form was filled (``n:form_fill`` > 0), else ``tracking``
page_views        numeric      ``n:page_view``; 0 only when the hash has events, none a page view, and
                               no anonymous history was merged in; otherwise missing
last_activity     categorical  ``last_type``: email_open, email_click, page_view, form_fill, else ``other``
country           categorical  ``f:country``: ISO 3166 code -> English name ("IN" -> "india"); a longer
                               value is taken as a name; unknown codes missing
occupation        categorical  ``f:occupation`` as answered, else from ``f:job_title``: ``student`` when
                               the title says student, else ``working professional``
email_opt_out     boolean      ``f:consent`` inverted: yes/true/1 -> 0, no/false/0 -> 1; else missing
form:<field>      categorical  the answer ``f:<field>`` (whitespace collapsed, case-folded)
================  ===========  =======================================================================

Anything the hash cannot tell is missing (``None``), never a made-up zero.
Not in the catalogue yet, because the lead hash does not keep them: sessions,
time on site (page pings), pages per session, first/last-touch UTM source and
referrer.  A mapping that names them is refused.
"""


from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from scoring.errors import ScoringError
from scoring.touch import CHANNELS

LAST_ACTIVITY: Final[Mapping[str, str]] = {
    "email_open": "Email Opened",
    "page_view": "Page Visited on Website",
    "form_fill": "Form Submitted on Website",
    "email_click": "Email Link Clicked",
    "identify": "Converted to Lead",
    "chat": "Olark Chat Conversation",
}
# A track event whose name says it is a chat conversation (Olark, Intercom, Drift ... widgets).
_CHAT_NAME: Final = re.compile(r"chat|conversation|olark|intercom|drift", re.IGNORECASE)

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




# ---------------------------------------------------------------- the catalogue

FeatureKind = Literal["numeric", "boolean", "categorical"]
LeadState = Mapping[str, str]
Value = str | float | None

FORM_PREFIX: Final = "form:"
_FORM_FIELD = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ACTIVITY_TYPES: Final = frozenset(LAST_ACTIVITY)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = " ".join(str(value).split())
    return text.casefold() if text else None


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    except ValueError:
        return None
    return f if math.isfinite(f) and f >= 0 else None


def _yes_no(value: object) -> float | None:
    key = _text(value)
    if key in _YES:
        return 1.0
    if key in _NO:
        return 0.0
    return None


def _live_activity(lead: LeadState) -> object:
    kind = lead.get("last_type")
    if kind == "track" and _CHAT_NAME.search(lead.get("last_name") or ""):
        return "chat"
    return kind


def _float(lead: LeadState, key: str) -> float | None:
    raw = lead.get(key)
    if raw is None:
        return None
    return _number(raw)


def sessions(lead: LeadState) -> int | None:
    """``w:ss``; 0 when the lead has events and none was a page view; missing for a lead whose page
    views predate session tracking."""
    count = _count(lead, "w:ss")
    if count is not None:
        return count
    if _count(lead, "n:page_view"):
        return None
    return 0 if (_count(lead, "events") or 0) > 0 else None


def time_on_site(lead: LeadState) -> float | None:
    """``w:time`` seconds, whole; 0 when the lead's sessions are known and no time was counted."""
    spent = _float(lead, "w:time")
    if spent is not None:
        return float(round(spent))
    return 0.0 if sessions(lead) is not None else None


def pages_per_session(lead: LeadState) -> float | None:
    """Page views per session (2 decimals); 0 without sessions."""
    n = sessions(lead)
    if n is None:
        return None
    if n == 0:
        return 0.0
    return (_count(lead, "n:page_view") or 0) / n


def engagement_change(lead: LeadState) -> float | None:
    now, start = _float(lead, "w:es"), _float(lead, "w:es0")
    if now is None:
        return None
    return now - (start or 0.0)


NOW_KEY: Final = "@now"  # features_from_lead(..., now=T) puts T here for the recency feature


def recency_days(lead: LeadState) -> float | None:
    now, last = _float(lead, NOW_KEY), _float(lead, "last_seen")
    if now is None or last is None:
        return None
    return max(0.0, (now - last) / 86400.0)


def _canon_channel(value: object) -> Value:
    key = _text(value)
    if key is None:
        return None
    key = key.replace(" ", "_")
    return key if key in CHANNELS else "other"


def _canon_ratio(value: object) -> Value:
    f = _number(value)
    return None if f is None else round(f, 2)


def _canon_signed(value: object) -> Value:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(str(value))
    except ValueError:
        return None
    return round(f, 3) if math.isfinite(f) else None


def _canon_activity(value: object) -> Value:
    key = _text(value)
    if key is None:
        return None
    return key if key in ACTIVITY_TYPES else "other"


def _canon_country(value: object) -> Value:
    name = country_name(None if value is None else str(value))
    return None if name is None else name.casefold()


def _live_occupation(lead: LeadState) -> object:
    answered = _field(lead, "occupation")
    return answered if answered is not None else occupation(_field(lead, "job_title"))


def _live_opt_out(lead: LeadState) -> object:
    allowed = do_not_email(_field(lead, "consent"))  # "Yes" = do not email
    return None if allowed is None else allowed


@dataclass(frozen=True, slots=True)
class CatalogueFeature:
    """One live feature: its kind, where it comes from, how it is read from the lead, its canonical value."""

    name: str
    kind: FeatureKind
    source: str
    live: Callable[[LeadState], object]
    canonical: Callable[[object], Value]

    def from_lead(self, lead: LeadState) -> Value:
        return self.canonical(self.live(lead))


def _canon_categorical(value: object) -> Value:
    return _text(value)


CATALOGUE: Final[tuple[CatalogueFeature, ...]] = (
    CatalogueFeature("lead_origin", "categorical", "'form' if n:form_fill > 0 else 'tracking'",
                     lambda lead: "form" if (_count(lead, "n:form_fill") or 0) > 0 else "tracking",
                     _canon_categorical),
    CatalogueFeature("page_views", "numeric", "n:page_view (0 only when known to be none)",
                     total_visits, _number),
    CatalogueFeature("last_activity", "categorical",
                     "last_type: email_open, email_click, page_view, form_fill, identify, chat (a track "
                     "named like a chat conversation), else 'other'",
                     _live_activity, _canon_activity),
    CatalogueFeature("lead_source", "categorical", "w:ft, the first touch's channel (scoring/touch.py)",
                     lambda lead: lead.get("w:ft"), _canon_channel),
    CatalogueFeature("last_touch", "categorical", "w:lt, the last non-direct touch's channel",
                     lambda lead: lead.get("w:lt"), _canon_channel),
    CatalogueFeature("sessions", "numeric", "w:ss (30-minute / new-campaign rule); 0 when known none",
                     sessions, _number),
    CatalogueFeature("time_on_site", "numeric", "w:time seconds (page pings, bounded), whole",
                     time_on_site, _number),
    CatalogueFeature("pages_per_session", "numeric", "n:page_view / w:ss, 2 decimals",
                     pages_per_session, _canon_ratio),
    CatalogueFeature("engagement", "numeric", "w:es, the engagement score right after the last event",
                     lambda lead: lead.get("w:es"), _canon_signed),
    CatalogueFeature("engagement_change", "numeric",
                     "w:es - w:es0: what the lead's latest active UTC day changed the score by",
                     engagement_change, _canon_signed),
    CatalogueFeature("recency_days", "numeric", "days from last_seen to the scoring moment (now=)",
                     recency_days, _canon_signed),
    CatalogueFeature("fit_grade", "categorical", "grade, the fit grade (scoring/icp.yaml)",
                     lambda lead: lead.get("grade"), _canon_categorical),
    CatalogueFeature("fit_points", "numeric", "fit, the fit points", lambda lead: lead.get("fit"), _canon_signed),
    CatalogueFeature("country", "categorical", "f:country, ISO code -> English name",
                     lambda lead: _field(lead, "country"), _canon_country),
    CatalogueFeature("occupation", "categorical",
                     "f:occupation, else f:job_title -> 'student' / 'working professional'",
                     _live_occupation, _canon_categorical),
    CatalogueFeature("email_opt_out", "boolean", "f:consent inverted (no -> 1, yes -> 0)",
                     _live_opt_out, _yes_no),
)
_BY_NAME: Final[Mapping[str, CatalogueFeature]] = {f.name: f for f in CATALOGUE}


def form_feature(name: str) -> CatalogueFeature:
    """``form:<field>``: the lead's answer to form field ``<field>`` (a category)."""
    field_name = name.removeprefix(FORM_PREFIX)
    return CatalogueFeature(name, "categorical", f"f:{field_name} as answered",
                            lambda lead: _field(lead, field_name), _canon_categorical)


def catalogue_feature(name: str) -> CatalogueFeature | None:
    """The catalogue entry called ``name`` (``form:<field>`` for any form answer), else ``None``."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith(FORM_PREFIX) and _FORM_FIELD.match(name.removeprefix(FORM_PREFIX)):
        return form_feature(name)
    return None


def features_from_lead(lead: LeadState, names: Sequence[str] | None = None, *,
                       now: float | None = None) -> dict[str, Value]:
    """The feature vector of one live lead (``HGETALL`` of the lead key, decoded).

    ``names`` are the features to compute (a model's features); by default the
    fixed catalogue.  A name outside the catalogue is missing (``None``).
    ``now``: the scoring moment, for ``recency_days`` (missing without it).
    """
    if now is not None:
        lead = {**lead, NOW_KEY: repr(float(now))}
    out: dict[str, Value] = {}
    for name in (names if names is not None else _BY_NAME):
        feature = catalogue_feature(name)
        out[name] = feature.from_lead(lead) if feature is not None else None
    return out


# ---------------------------------------------------------------- mapping a CRM export


class FeatureMappingError(ScoringError, ValueError):
    """A mapping file is malformed or names something outside the catalogue; the message says where."""


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """How one catalogue feature is read from an export row."""

    feature: str
    column: str
    values: Mapping[str, str] | None = None  # case-folded export value -> live value; unlisted -> default
    default: str | None = None
    times: str | None = None  # numeric: multiply by this column (e.g. visits x pages per visit), whole
    per: str | None = None  # numeric: then divide by this column (0 when it is 0)

    def columns(self) -> tuple[str, ...]:
        return tuple(c for c in (self.column, self.times, self.per) if c)


@dataclass(frozen=True, slots=True)
class FeatureMapping:
    target: str | None
    features: tuple[ColumnMapping, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.feature for m in self.features)

    def used_columns(self) -> frozenset[str]:
        return frozenset(c for m in self.features for c in m.columns())

    def kinds(self) -> tuple[tuple[str, FeatureKind], ...]:
        out: list[tuple[str, FeatureKind]] = []
        for m in self.features:
            feature = catalogue_feature(m.feature)
            assert feature is not None  # checked by parse_mapping
            out.append((m.feature, feature.kind))
        return tuple(out)

    def to_json(self) -> dict[str, object]:
        return {"target": self.target, "features": {
            m.feature: {k: v for k, v in (("column", m.column), ("values", dict(m.values) if m.values else None),
                                          ("default", m.default), ("times", m.times), ("per", m.per))
                             if v is not None}
            for m in self.features}}


def _need_str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        msg = f"{where} must be a non-empty text, got {value!r}"
        raise FeatureMappingError(msg)
    return value.strip()


def parse_mapping(data: object, source: str = "mapping") -> FeatureMapping:
    """A mapping document (``yaml.safe_load`` of the file, or :meth:`FeatureMapping.to_json`) -> mapping.

    Shape: ``{target: COLUMN, features: {FEATURE: {column: COL, values: {EXPORT: LIVE}, default: LIVE,
    times: COL, per: COL}}}``.  Every feature must be in the catalogue.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("features"), Mapping) or not data["features"]:
        msg = f"{source}: expected a 'features:' section mapping catalogue features to export columns"
        raise FeatureMappingError(msg)
    unknown_top = set(data) - {"target", "features", "description", "file"}
    if unknown_top:
        msg = f"{source}: unknown key(s) {sorted(map(str, unknown_top))}; the keys are target, features, description"
        raise FeatureMappingError(msg)
    target = _need_str(data["target"], f"{source}: target") if data.get("target") is not None else None
    out: list[ColumnMapping] = []
    known = [*_BY_NAME, f"{FORM_PREFIX}<field>"]
    for name, spec in data["features"].items():
        where = f"{source}: features.{name}"
        feature = catalogue_feature(str(name))
        if feature is None:
            close = difflib.get_close_matches(str(name), list(_BY_NAME), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            msg = (f"{where}: {name!r} is not a live feature.{hint} The catalogue is: {', '.join(known)}; "
                   "an export column without a live source must stay unmapped")
            raise FeatureMappingError(msg)
        if isinstance(spec, str):
            spec = {"column": spec}
        if not isinstance(spec, Mapping):
            msg = f"{where}: expected a column name or {{column: ..., values: ...}}, got {spec!r}"
            raise FeatureMappingError(msg)
        extra = set(spec) - {"column", "values", "default", "times", "per"}
        if extra:
            msg = f"{where}: unknown key(s) {sorted(map(str, extra))}; use column, values, default, times, per"
            raise FeatureMappingError(msg)
        values = spec.get("values")
        if values is not None and not isinstance(values, Mapping):
            msg = f"{where}.values: expected export value: live value pairs, got {values!r}"
            raise FeatureMappingError(msg)
        times, per = spec.get("times"), spec.get("per")
        if (times is not None or per is not None) and feature.kind != "numeric":
            key = "times" if times is not None else "per"
            msg = (f"{where}.{key}: only a numeric feature can be a product or ratio of columns "
                   f"({name} is {feature.kind})")
            raise FeatureMappingError(msg)
        out.append(ColumnMapping(
            feature.name, _need_str(spec.get("column"), f"{where}.column"),
            None if values is None else {str(k).casefold().strip(): str(v) for k, v in values.items()},
            None if spec.get("default") is None else str(spec["default"]),
            None if times is None else _need_str(times, f"{where}.times"),
            None if per is None else _need_str(per, f"{where}.per")))
    return FeatureMapping(target, tuple(out))


def mapped_value(m: ColumnMapping, row: Mapping[str, str]) -> Value:
    """The canonical value of ``m.feature`` for one export row (the same :meth:`canonical` serving uses)."""
    feature = catalogue_feature(m.feature)
    assert feature is not None
    raw: object = row.get(m.column)
    if _text(raw) in (None, "select", "nan", "null", "n/a", "na", "-", "unknown"):
        return None
    if m.values is not None:
        raw = m.values.get(str(raw).strip().casefold(), m.default)
    if m.times is not None:
        a, b = _number(raw), _number(row.get(m.times))
        raw = None if a is None or b is None else round(a * b)
    if m.per is not None and raw is not None:
        d = _number(row.get(m.per))
        raw = None if d is None else (0.0 if d == 0 else float(str(raw)) / d)
    return feature.canonical(raw)


def training_row(mapping: FeatureMapping, row: Mapping[str, str]) -> dict[str, Value]:
    """One export row as the feature vector a model trains on."""
    return {m.feature: mapped_value(m, row) for m in mapping.features}


def cell_text(value: Value) -> str:
    """A canonical value as a CSV cell (``""`` for missing) for the mapped training table."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return value
