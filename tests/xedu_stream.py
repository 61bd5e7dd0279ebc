"""X Education export rows expanded into the event streams a live visitor would produce.

One row becomes: its visits (``TotalVisits`` sessions an hour apart, the row's page views
spread over them, the first landing with the row's ``Lead Source`` as UTM tags or referrer),
page pings every 15 s (plus one shorter) adding up to ``Total Time Spent on Website``, a form
with the person's answers, then what the export says was their last activity (an e-mail
opened or clicked, a page, an identify call, a chat conversation, any other tracked event).

Only rows the live path can produce are expanded (:func:`producible`): rows with a form
(``Lead Origin`` API/Lead Import leads give their answers through no live channel), known
visits with at least one page per visit, and a known last activity.  The tests compare the
worker's vector with the mapping's for these rows: every mapped feature, none skipped.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import yaml

from scoring.features import FeatureMapping, parse_mapping, training_row

ROOT: Final = Path(__file__).resolve().parents[1]
CSV_PATH: Final = ROOT.parent / "shared" / "datasets" / "x_education_leads.csv"
MAPPING_PATH: Final = ROOT / "scoring" / "x_education_mapping.yaml"
SESSION_APART_S: Final = 3600.0
PING_EVERY_S: Final = 15

# The landing of the first visit, per live channel: (UTM query, referrer).
LANDING: Final[Mapping[str, tuple[str, str | None]]] = {
    "organic_search": ("", "https://www.google.com/"),
    "paid_search": ("utm_source=google&utm_medium=cpc&utm_campaign=brand", "https://www.google.com/"),
    "direct": ("", None),
    "chat": ("utm_source=olark&utm_medium=chat", None),
    "reference": ("utm_source=friend&utm_medium=reference", None),
    "partner": ("utm_source=welingak&utm_medium=partner", None),
    "referral": ("", "https://learning-blog.example.org/top-courses"),
    "social": ("", "https://www.facebook.com/"),
    "email": ("utm_source=newsletter&utm_medium=email&utm_campaign=march", None),
    "other": ("utm_source=click2call&utm_medium=phone", None),
}
ANSWERS: Final[Mapping[str, str]] = {  # form answer name -> export column
    "occupation": "What is your current occupation",
    "specialization": "Specialization",
    "city": "City",
    "how_did_you_hear": "How did you hear about X Education",
    "what_matters_most": "What matters most to you in choosing a course",
    "free_copy_of_mastering_the_interview": "A free copy of Mastering The Interview",
}
_MISSING: Final = frozenset({"", "select", "nan"})


def mapping() -> FeatureMapping:
    return parse_mapping(yaml.safe_load(MAPPING_PATH.read_text()), str(MAPPING_PATH))


def rows() -> list[dict[str, str]]:
    with CSV_PATH.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def producible(row: Mapping[str, str], m: FeatureMapping) -> bool:
    want = training_row(m, row)
    if want["lead_origin"] != "form" or want["sessions"] is None or want["last_activity"] is None:
        return False
    if want["lead_source"] is None or want["time_on_site"] is None:
        return False
    visits, pages = int(float(str(want["sessions"]))), int(float(str(want["page_views"])))
    if pages < visits or (visits == 0 and pages > 0) or visits > 30:
        return False
    if want["last_activity"] == "page_view" and visits == 0:
        return False
    return float(str(want["time_on_site"])) <= visits * 7000  # within the per-session cap


def sample(n: int, seed: int = 12) -> list[tuple[int, dict[str, str]]]:
    """``n`` producible rows (index, row), drawn with a fixed seed: first one of every last activity,
    lead source and visit count up to 3 the producible rows have, then at random."""
    m = mapping()
    pool = [(i, r) for i, r in enumerate(rows()) if producible(r, m)]
    rng = random.Random(seed)
    rng.shuffle(pool)
    picked: dict[int, dict[str, str]] = {}
    for feature in ("last_activity", "lead_source", "sessions"):
        covered: set[object] = set()
        for i, r in pool:
            value = training_row(m, r)[feature]
            if value not in covered and (feature != "sessions" or float(str(value)) <= 3):
                covered.add(value)
                picked.setdefault(i, r)
    for i, r in pool:
        if len(picked) >= n:
            break
        picked.setdefault(i, r)
    return list(picked.items())[:n]


@dataclass(frozen=True)
class Step:
    """One thing the visitor does at ``at`` seconds after the row's start."""

    kind: str  # pv, pp, form, open, click, identify, chat, other
    at: float
    url: str = "https://xeducation.example/"
    referrer: str | None = None
    answers: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def expand(row: Mapping[str, str], m: FeatureMapping) -> list[Step]:
    """The row's stream (see the module text); times relative to the row's start."""
    want = training_row(m, row)
    visits, pages = int(float(str(want["sessions"]))), int(float(str(want["page_views"])))
    seconds = int(float(str(want["time_on_site"])))
    query, referrer = LANDING[str(want["lead_source"])]
    landing = "https://xeducation.example/courses" + (f"?{query}" if query else "")
    steps: list[Step] = []
    t = 0.0
    per_session = _split(pages, visits)[::-1] if visits else []  # the later sessions get the extra pages
    time_per = _split(seconds, visits) if visits else []
    last_page_held = want["last_activity"] == "page_view"
    # The last activity is a page view: the form comes before the last page -- before the last
    # session's only page when it has one (then from that session's landing, same time).
    form_first = last_page_held and per_session[-1] == 1
    form_done = False
    answers = {k: row[c].strip() for k, c in ANSWERS.items() if row.get(c, "").strip().casefold() not in _MISSING}
    fields: dict[str, str] = {}
    if row.get("Country", "").strip().casefold() not in _MISSING:
        fields["country"] = row["Country"].strip()
    opt_out = row.get("Do Not Email", "").strip().casefold()
    if opt_out == "no":
        fields["consent"] = "true"
    for s in range(visits):
        t = t + SESSION_APART_S if s else 0.0  # an hour after the previous session's last hit
        first = Step("pv", t, landing, referrer) if s == 0 else Step("pv", t, "https://xeducation.example/")
        if form_first and s == visits - 1:
            steps.append(Step("form", t, first.url, first.referrer, answers, fields))
            if opt_out == "yes":
                steps.append(Step("identify", t, fields={"consent": "false"}))
            steps.append(first)  # the last activity; the session's pings follow (no activity)
            form_done = True
            continue_pings = True
        else:
            steps.append(first)
            continue_pings = False
        # the session's other pages at the same moment (no time between them), one kept for the end
        if not continue_pings:
            extra = per_session[s] - 1 - (1 if last_page_held and s == visits - 1 else 0)
            steps += [Step("pv", t, "https://xeducation.example/page") for _ in range(max(0, extra))]
        left = time_per[s]
        while left > 0:
            step = min(PING_EVERY_S, left)
            t += step
            left -= step
            steps.append(Step("pp", t))
    if form_done:
        return steps
    # The form in the last visit, at its last hit (so it adds no time), or alone on a landing page
    # reached from the row's source.  Opting out is said later (a form saying consent=false is
    # kept apart from the browser's history, by design).
    if visits:
        steps.append(Step("form", t, "https://xeducation.example/apply", None, answers, fields))
    else:
        steps.append(Step("form", t, landing, referrer, answers, fields))
    if opt_out == "yes":
        steps.append(Step("identify", t, fields={"consent": "false"}))
    last = str(want["last_activity"])
    if last != "page_view":
        t += 1
    tail = {"email_open": "open", "email_click": "click", "identify": "identify", "chat": "chat",
            "other": "other", "page_view": "pv"}
    if last in tail:
        steps.append(Step(tail[last], t, "https://xeducation.example/page"))
    return steps
