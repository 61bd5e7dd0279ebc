"""The lead fields routing rules may test, each with its type.

Rules are type-checked against this catalogue when they load, and
:func:`facts_from_lead` builds the facts a :class:`~rules.engine.RoutingConfig`
decides on, coercing each value to its catalogue type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from types import MappingProxyType

from models import LeadView


class FieldType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType
    description: str


FIELDS: Mapping[str, FieldSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            FieldSpec("country", FieldType.STRING, "ISO-3166 alpha-2 country code, upper-case (GB, DE, US)"),
            FieldSpec("region", FieldType.STRING, "state or province code within the country (NY, CA, ON)"),
            FieldSpec("company", FieldType.STRING, "company name"),
            FieldSpec("email", FieldType.STRING, "the lead's email address"),
            FieldSpec("email_domain", FieldType.STRING, "the part of the email after '@', lower-case"),
            FieldSpec("job_title", FieldType.STRING, "job title as typed into a form"),
            FieldSpec("form_id", FieldType.STRING, "id of the form the lead filled"),
            FieldSpec("source", FieldType.STRING, "where the lead came from (utm source, import, ...)"),
            FieldSpec("score", FieldType.NUMBER, "the lead's current intent score"),
            FieldSpec("hand_raiser", FieldType.BOOLEAN, "the lead asked for contact (demo, pricing, contact-sales)"),
            FieldSpec("employees", FieldType.NUMBER, "company head-count"),
            FieldSpec("industry", FieldType.STRING, "the company's industry"),
        )
    }
)

# ISO 3166-1 alpha-2: the 249 officially assigned codes.
ISO_COUNTRY_CODES: frozenset[str] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT
    BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH
    ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT
    HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS
    LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI
    NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG
    SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG
    UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()
)

# Codes people type that ISO does not assign, and what they meant.
_COUNTRY_ALIASES: Mapping[str, str] = MappingProxyType({"UK": "GB", "EL": "GR", "EN": "GB", "USA": "US"})

_TRUE = frozenset({"true", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "no", "n", "0", "off"})


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "empty"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def value_problem(spec: FieldSpec, value: object) -> str | None:
    """Why ``value`` cannot be a literal for ``spec`` in a rule or test case, with the fix; None if it can."""
    if spec.type is FieldType.STRING:
        if isinstance(value, str):
            if not value.strip():
                return f"empty string for field {spec.name!r}; use exists: false to test for a missing value"
            if spec.name == "country":
                return country_problem(value)
            return None
        if isinstance(value, (bool, int, float, date)):
            text = str(value).lower() if isinstance(value, bool) else str(value)
            return f"value {value!r} is {_kind(value)} but field {spec.name!r} is a string; quote it: '{text}'"
        return f"value {value!r} is {_kind(value)} but field {spec.name!r} is a string; write a single string"
    if spec.type is FieldType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = "remove the quotes" if isinstance(value, str) and _as_number(value) is not None else "write a number such as 50"
            return f"value {value!r} is {_kind(value)} but field {spec.name!r} is a number; {hint}"
        if not math.isfinite(value):
            return f"value {value!r} for field {spec.name!r} is not a finite number; write a number such as 50"
        return None
    if not isinstance(value, bool):
        return f"value {value!r} is {_kind(value)} but field {spec.name!r} is a boolean; write true or false without quotes"
    return None


def country_problem(code: str) -> str | None:
    """Why ``code`` is not an upper-case ISO-3166 alpha-2 code, with the likely intended code; None if it is."""
    if code in ISO_COUNTRY_CODES:
        return None
    upper = code.strip().upper()
    if upper in ISO_COUNTRY_CODES:
        return f"country {code!r} must be an upper-case ISO-3166 alpha-2 code; did you mean {upper!r}?"
    if upper in _COUNTRY_ALIASES:
        return f"country {code!r} is not an ISO-3166 alpha-2 code; did you mean {_COUNTRY_ALIASES[upper]!r}?"
    return f"country {code!r} is not an ISO-3166 alpha-2 code; use two upper-case letters such as 'GB', 'DE' or 'US'"


def _as_number(text: str) -> float | None:
    try:
        number = float(text.strip().replace(",", "").replace("_", ""))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def coerce_fact(name: str, value: object) -> object | None:
    """``value`` as the catalogue type of field ``name``; None when it is missing or cannot be read.

    Never raises: a lead with a malformed field simply lacks that fact.
    Fields outside the catalogue are returned unchanged.
    """
    spec = FIELDS.get(name)
    if spec is None or value is None:
        return value
    if spec.type is FieldType.STRING:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, str):
            return None
        text = value.strip()
        if not text:
            return None
        if name == "country":
            return text.upper()
        if name == "email_domain":
            return text.lower()
        return text
    if spec.type is FieldType.NUMBER:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, str):
            return _as_number(value)
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        folded = value.strip().lower()
        if folded in _TRUE:
            return True
        if folded in _FALSE:
            return False
    return None


_DOMAIN = re.compile(r"@([^@\s]+)$")


def domain_of(email: str) -> str | None:
    """The lower-cased domain of ``email``, or None when it has none."""
    match = _DOMAIN.search(email.strip())
    return match.group(1).lower() if match else None


def facts_from_lead(lead: LeadView, extra: Mapping[str, object] | None = None) -> dict[str, object]:
    """The facts routing rules see for ``lead``.

    Catalogue fields come from ``lead.fields`` (strings, coerced to their type;
    unreadable or empty values are left out), ``email``/``email_domain`` from
    the lead's email, ``score`` from ``lead.score``, and ``hand_raiser`` is true
    when any scoring reason was a hand-raise or the fields say so.  ``country``
    is upper-cased.  ``extra`` (e.g. enrichment) is coerced the same way and
    wins over everything; an ``extra`` value of None removes that fact.
    """
    facts: dict[str, object] = {}
    for name, raw in lead.fields.items():
        if name in FIELDS:
            value = coerce_fact(name, raw)
            if value is not None:
                facts[name] = value
    email = coerce_fact("email", lead.email) if lead.email else None
    if email is not None:
        facts["email"] = email
    if isinstance(facts.get("email"), str) and "email_domain" not in facts:
        domain = domain_of(str(facts["email"]))
        if domain:
            facts["email_domain"] = domain
    facts["score"] = float(lead.score)
    facts["hand_raiser"] = any(r.hand_raiser for r in lead.reasons) or facts.get("hand_raiser") is True
    for key, given in (extra or {}).items():
        coerced = coerce_fact(key, given)
        if coerced is None:
            facts.pop(key, None)
        else:
            facts[key] = coerced
    return facts
