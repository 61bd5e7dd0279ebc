"""Re-engagement: a lead that crossed before crossed again (scoring.ready.Reengage says when).

apply_event.lua records the crossing and its context on the lead hash (``re_*``
fields, ``last_outcome*`` written by lifecycle) in the same atomic step as the
score; this module reads that context back for routing and the alert:

* :func:`reengagement_of` -- the :class:`~models.Reengagement` of a crossing, or
  None for a first crossing;
* :func:`comeback` -- what brought the lead back (``back on /pricing 3 times
  this week``, ``filled form demo-request``) from its activity timeline;
* :func:`out_of_office` -- whether the owner is away (roster dates or the admin
  API), the one thing that sends a re-engagement past its owner to the rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from models import Reengagement
from router.storage.store import RedisStore
from rules import Team
from rules.roster import Unavailable

WEEK_S = 7 * 86400.0
MAX_BACK = 3


def _num(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def reengagement_of(lead: Mapping[str, str], crossing: int) -> Reengagement | None:
    """The re-engagement this crossing is (from the lead hash apply_event.lua wrote), or None."""
    if not crossing or lead.get("re_crossing") != str(crossing):
        return None
    current = lead.get("re_owner", "")
    return Reengagement(
        from_stage=lead.get("re_from", ""),
        crossing=crossing,
        last_outcome=lead.get("last_outcome", ""),
        last_outcome_ts=_num(lead.get("last_outcome_ts", "0")),
        last_outcome_reason=lead.get("last_outcome_reason", ""),
        owner=current or lead.get("last_outcome_rep", ""),
        owner_name=lead.get("re_owner_name", "") if current else lead.get("last_outcome_rep_name", ""),
        current_owner=bool(current),
        last_crossing_ts=_num(lead.get("re_prev_crossing_ts", "0")),
    )


def _path(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    path = parts.path if parts.scheme or parts.netloc else url.split("?", 1)[0]
    return (path or "/")[:80]


def _times(n: int) -> str:
    return "once" if n == 1 else "twice" if n == 2 else f"{n} times"


def comeback(recent: Sequence[Mapping[str, Any]], now: float, since: float = 0.0) -> tuple[str, ...]:
    """What brought the lead back: its activity in the last 7 days (and after ``since``), most telling first.

    ``recent`` is the lead's timeline (newest first, as stored).  Forms first
    (``filled form demo-request``), then the pages visited most
    (``back on /pricing 3 times this week``), then email clicks and opens; at
    most three phrases.
    """
    start = max(now - WEEK_S, since)
    forms: list[str] = []
    pages: Counter[str] = Counter()
    clicks = opens = 0
    for item in recent:
        ts = _num(item.get("ts", 0))
        if ts < start or ts > now + 60:
            continue
        kind = str(item.get("type") or "")
        if kind == "form_fill":
            form = str(item.get("form_id") or "a form")[:60]
            if form not in forms:
                forms.append(form)
        elif kind == "page_view" and item.get("url"):
            path = _path(str(item["url"]))
            if path:
                pages[path] += 1
        elif kind == "email_click":
            clicks += 1
        elif kind == "email_open":
            opens += 1
    out = [f"filled form {f}" for f in forms]
    out += [f"back on {p} {_times(n)} this week" for p, n in pages.most_common(2)]
    if clicks:
        out.append("clicked an email" if clicks == 1 else f"clicked emails {_times(clicks)}")
    if opens:
        out.append(f"opened email {_times(opens)}")
    return tuple(out[:MAX_BACK])


async def out_of_office(store: RedisStore, team: Team, rep_id: str, now: datetime) -> bool:
    """Whether ``rep_id`` is out of office at ``now``: roster dates, or set through the admin API."""
    profile = team.profile(rep_id)
    if profile.unavailable(now) is Unavailable.OUT_OF_OFFICE:
        return True
    until = (await store.availability_overrides([rep_id])).get(rep_id)
    return until is not None and (until == "" or until >= profile.local(now).date().isoformat())
