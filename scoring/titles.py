"""Seniority and department from a free-text job title, by keyword tables.

``classify_title("VP Sales") == ("vp", "sales")``.  Pure and deterministic:
accents are folded (``Geschäftsführer`` -> ``geschaftsfuhrer``; a few common
French, German and Spanish words are in the tables), the title is
lower-cased, ``&`` read as ``and``, punctuation turned into
spaces, and a few spellings joined (``V.P.`` -> ``vp``, ``Co-Founder`` ->
``cofounder``, ``R&D`` -> ``rnd``, ``Sr.`` -> ``senior``); then each table is tried
in order and the **first** pattern that matches (whole words) wins.

Seniority (first match):

1. assistant/staff roles -- ``executive assistant``, ``assistant to``,
   ``account manager|executive``, ``product owner`` -- are ``individual``
   (so "Assistant to the CEO" is not a C-level);
2. ``vp``: vp, svp, evp, avp, vice president;
3. ``c_level``: chief ... officer, ceo/cfo/cto/cio/cmo/coo/cro/ciso/chro/...,
   founder, owner, president, managing director/partner, chairman;
4. ``director``: director, head (of), chief (of staff, architect);
5. ``manager``: manager, mgr, team lead(er), supervisor;
6. ``individual``: a recognised job noun (engineer, analyst, specialist,
   representative, consultant, ...) or any title with a known department.

Otherwise ``None``: the title says nothing we can read ("n/a", "-").

Department (first match): a C-suite acronym or title first (cto ->
engineering, cio/ciso -> it, cmo -> marketing, cro -> sales, cfo -> finance,
coo -> operations, chro/chief people officer -> hr; a CEO, founder or
owner has no department), then keyword tables in this order, so the more
specific wins: revenue_ops (revops, sales/marketing operations), hr,
sales (incl. sales engineer, business development), marketing, finance, it,
engineering, operations, other (legal, product, design, customer success,
support, research, ...).  ``None`` when nothing matches.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final, Literal

Seniority = Literal["c_level", "vp", "director", "manager", "individual"]
Department = Literal[
    "sales", "marketing", "revenue_ops", "it", "engineering", "finance", "hr", "operations", "other"
]

SENIORITIES: Final[tuple[Seniority, ...]] = ("c_level", "vp", "director", "manager", "individual")
DEPARTMENTS: Final[tuple[Department, ...]] = (
    "sales",
    "marketing",
    "revenue_ops",
    "it",
    "engineering",
    "finance",
    "hr",
    "operations",
    "other",
)


def _words(*alternatives: str) -> re.Pattern[str]:
    """A pattern matching any of ``alternatives`` as whole words of a normalised title."""
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")


_C_ACRONYMS = "ceo|cfo|cto|cio|cmo|coo|cro|cso|ciso|chro|cpo|cdo|cco|cao|cbo|cgo|cxo|caio|cdao"

_SENIORITY: Final[tuple[tuple[Seniority, re.Pattern[str]], ...]] = (
    (
        "individual",
        _words(
            r"executive assistant",
            r"personal assistant",
            r"administrative assistant",
            r"assistant to",
            r"ea to",
            r"account manager",
            r"account executive",
            r"key account manager",
            r"product owner",
        ),
    ),
    ("vp", _words(r"vp", r"svp", r"evp", r"avp", r"vice president", r"vicepresident")),
    (
        "c_level",
        _words(
            r"chief (?:\w+ ){0,4}officer",
            r"chief executive",
            _C_ACRONYMS,
            r"founder",
            r"cofounder",
            r"owner",
            r"president",
            r"managing director",
            r"geschaftsfuhrer",
            r"geschaeftsfuehrer",
            r"directeur general",
            r"managing partner",
            r"general partner",
            r"founding partner",
            r"chairman",
            r"chairwoman",
            r"chairperson",
            r"chair of the board",
        ),
    ),
    (
        "director",
        _words(r"director", r"directors", r"dir", r"head", r"chief", r"directeur", r"direktor", r"leiter"),
    ),
    (
        "manager",
        _words(
            r"manager",
            r"managers",
            r"mgr",
            r"team lead",
            r"team leader",
            r"supervisor",
            r"foreman",
            r"gerente",
        ),
    ),
    (
        "individual",
        _words(
            r"engineer",
            r"developer",
            r"programmer",
            r"analyst",
            r"specialist",
            r"associate",
            r"representative",
            r"rep",
            r"consultant",
            r"coordinator",
            r"administrator",
            r"admin",
            r"designer",
            r"accountant",
            r"bookkeeper",
            r"recruiter",
            r"scientist",
            r"architect",
            r"executive",
            r"intern",
            r"assistant",
            r"officer",
            r"agent",
            r"advisor",
            r"adviser",
            r"strategist",
            r"writer",
            r"editor",
            r"researcher",
            r"technician",
            r"sdr",
            r"bdr",
            r"ae",
            r"staff",
            r"contributor",
            r"generalist",
            r"operator",
            r"lead",
            r"student",
            r"trainee",
            r"apprentice",
            r"buyer",
            r"planner",
            r"marketer",
            r"clerk",
            r"partner",
            r"controller",
            r"teacher",
            r"professor",
            r"nurse",
            r"physician",
            r"attorney",
            r"lawyer",
            r"counsel",
            r"paralegal",
            r"principal",
            r"member",
            r"professional",
            r"expert",
            r"evangelist",
            r"advocate",
        ),
    ),
)

# C-suite titles whose department is clear; checked before the keyword tables.
_C_SUITE: Final[tuple[tuple[Department, re.Pattern[str]], ...]] = (
    ("engineering", _words(r"cto", r"chief technology officer", r"chief technical officer")),
    (
        "it",
        _words(
            r"cio",
            r"ciso",
            r"chief information officer",
            r"chief information security officer",
            r"chief security officer",
        ),
    ),
    ("marketing", _words(r"cmo", r"chief marketing officer", r"chief growth officer", r"cgo")),
    ("sales", _words(r"cro", r"chief revenue officer", r"chief sales officer", r"chief commercial officer")),
    ("finance", _words(r"cfo", r"chief financial officer", r"chief finance officer")),
    ("operations", _words(r"coo", r"chief operating officer", r"chief operations officer")),
    (
        "hr",
        _words(
            r"chro",
            r"chief people officer",
            r"chief human resources officer",
            r"chief hr officer",
            r"chief talent officer",
        ),
    ),
)

_DEPARTMENT: Final[tuple[tuple[Department, re.Pattern[str]], ...]] = (
    (
        "revenue_ops",
        _words(
            r"revops",
            r"rev ops",
            r"revenue operations?",
            r"revenue ops",
            r"sales operations?",
            r"sales ops",
            r"salesops",
            r"marketing operations?",
            r"marketing ops",
            r"mops",
            r"gtm operations?",
            r"go to market operations?",
            r"gtm ops",
            r"commercial operations?",
            r"salesforce admin\w*",
            r"salesforce administrator",
            r"crm (?:admin\w*|manager|specialist|analyst|lead)",
            r"revenue systems",
            r"sales systems",
        ),
    ),
    (
        "hr",
        _words(
            r"hr",
            r"hrbp",
            r"human resources?",
            r"people",
            r"talent",
            r"recruit\w*",
            r"payroll",
            r"compensation",
            r"learning and development",
            r"l and d",
            r"workforce",
        ),
    ),
    (
        "sales",
        _words(
            r"sales",
            r"ventas",
            r"ventes",
            r"vertrieb",
            r"account executive",
            r"account manager",
            r"account management",
            r"key accounts?",
            r"business development",
            r"biz dev",
            r"bizdev",
            r"bdr",
            r"sdr",
            r"ae",
            r"revenue(?! account\w*| recognition)",
            r"inside sales",
            r"presales",
            r"pre sales",
            r"solutions? consultant",
            r"solutions? engineer",
            r"channel",
            r"partnerships?",
            r"alliances",
            r"commercial",
        ),
    ),
    (
        "marketing",
        _words(
            r"marketing",
            r"marketer",
            r"mktg",
            r"demand gen\w*",
            r"growth",
            r"brand",
            r"content",
            r"seo",
            r"sem",
            r"ppc",
            r"communications?",
            r"comms",
            r"pr",
            r"public relations",
            r"social media",
            r"events?",
            r"campaigns?",
            r"abm",
            r"lifecycle",
            r"copywriter",
        ),
    ),
    (
        "finance",
        _words(
            r"finance",
            r"financial",
            r"accountant",
            r"accounting",
            r"accounts payable",
            r"accounts receivable",
            r"controller",
            r"comptroller",
            r"treasury",
            r"treasurer",
            r"fpa",
            r"fp and a",
            r"audit\w*",
            r"tax",
            r"procurement",
            r"purchasing",
            r"billing",
            r"bookkeep\w*",
            r"investor relations",
        ),
    ),
    (
        "it",
        _words(
            r"it",
            r"information technology",
            r"information systems",
            r"information security",
            r"infosec",
            r"security",
            r"cyber\w*",
            r"sysadmin",
            r"systems? administrator",
            r"network\w*",
            r"helpdesk",
            r"help desk",
            r"service desk",
            r"desktop support",
            r"secops",
            r"technology",
            r"erp",
        ),
    ),
    (
        "engineering",
        _words(
            r"engineer\w*",
            r"developer",
            r"development",
            r"dev",
            r"software",
            r"devops",
            r"devsecops",
            r"sre",
            r"site reliability",
            r"programmer",
            r"architect",
            r"rnd",
            r"research and development",
            r"data scien\w*",
            r"data",
            r"machine learning",
            r"ml",
            r"ai",
            r"qa",
            r"quality assurance",
            r"frontend",
            r"front end",
            r"backend",
            r"back end",
            r"full ?stack",
            r"platform",
            r"mobile",
            r"ios",
            r"android",
            r"technical",
            r"tech",
        ),
    ),
    (
        "operations",
        _words(
            r"operations",
            r"operating",
            r"ops",
            r"bizops",
            r"supply chain",
            r"logistics",
            r"facilities",
            r"general manager",
            r"office manager",
            r"administration",
            r"strategy",
            r"business operations",
        ),
    ),
    (
        "other",
        _words(
            r"legal",
            r"counsel",
            r"attorney",
            r"lawyer",
            r"paralegal",
            r"compliance",
            r"product",
            r"design\w*",
            r"ux",
            r"ui",
            r"customer success",
            r"customer support",
            r"support",
            r"customer service",
            r"customer experience",
            r"cx",
            r"research\w*",
            r"teacher",
            r"professor",
            r"student",
            r"education",
            r"consultant",
            r"consulting",
            r"doctor",
            r"nurse",
            r"physician",
            r"clinical",
            r"medical",
            r"editor",
            r"writer",
            r"journalist",
            r"analyst",
            r"project",
            r"program",
        ),
    ),
)

_JOINS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"\bv p\b"), "vp"),
    (re.compile(r"\bco founder\b"), "cofounder"),
    (re.compile(r"\br and d\b"), "rnd"),
    (re.compile(r"\bsr\b"), "senior"),
    (re.compile(r"\bjr\b"), "junior"),
    (re.compile(r"\bmgmt\b"), "management"),
    (re.compile(r"\bdept\b"), "department"),
    (re.compile(r"\bi t\b"), "it"),
)


def normalise_title(title: str) -> str:
    """The title as the tables see it: accents folded, lower case, words separated by single spaces.

    ``"Sr. Data Engineer"`` -> ``"senior data engineer"``, ``"R&D Lead"`` -> ``"rnd lead"``,
    ``"V.P., Sales"`` -> ``"vp sales"``.
    """
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    text = folded.lower().replace("&", " and ").replace("+", " ")
    text = re.sub(r"[^a-z0-9]+", " ", text).strip()
    for pattern, replacement in _JOINS:
        text = pattern.sub(replacement, text)
    return re.sub(r"\s+", " ", text).strip()


def classify_title(title: str | None) -> tuple[Seniority | None, Department | None]:
    """``(seniority, department)`` for a free-text job title; either is ``None`` when unreadable.

    >>> classify_title("VP Sales")
    ('vp', 'sales')
    >>> classify_title("Head of RevOps")
    ('director', 'revenue_ops')
    >>> classify_title("CTO")
    ('c_level', 'engineering')
    """
    if not title:
        return None, None
    text = normalise_title(title)
    if not text:
        return None, None
    department = _department(text)
    seniority = _seniority(text)
    if seniority is None and department is not None:
        seniority = "individual"
    return seniority, department


def _seniority(text: str) -> Seniority | None:
    for level, pattern in _SENIORITY:
        if pattern.search(text):
            return level
    return None


def _department(text: str) -> Department | None:
    for department, pattern in _C_SUITE:
        if pattern.search(text):
            return department
    for department, pattern in _DEPARTMENT:
        if pattern.search(text):
            return department
    return None
