"""How a team hands out its leads, when each rep can take one, and what a rep may do with a lead.

Pure logic over ``models`` and the standard library: the roster part of the
routing file (distribution strategy, per-rep weight, capacity, time zone,
working hours, working days and out-of-office dates), the team's SLA, and the
lead-lifecycle policy (reject reasons, how much a rejection costs the score).

Everything is parsed and checked when the routing file loads, with the same
``file:line: team 'x' rep 'y': problem; suggestion`` style as the rules, and
availability is a pure function of a rep's profile and a clock reading handed
in by the caller, so tests can freeze time.

Schema (all keys optional; a rep's own value wins over the team's ``rep_defaults``)::

    teams:
      east:
        strategy: round_robin            # round_robin | weighted | load_balanced
        sla: {accept_within_minutes: 15, remind_after_minutes: 10, escalate_to_manager: true,
              max_reassignments: 1}
        rep_defaults: {tz: America/New_York, hours: "08:30-17:30", days: [mon-fri],
                       weight: 1, capacity_day: 12, capacity_30d: 180}
        reps:
          - {id: ..., name: ..., email: ..., weight: 2, capacity_day: 15, capacity_30d: 220,
             tz: Europe/Berlin, hours: "09:00-17:30", days: [mon, tue, wed, thu],
             out_of_office: [{from: 2026-12-21, to: 2027-01-01}]}
    lifecycle:
      reject_reasons: [not-a-fit, no-budget, ...]
      reject_score_factor: 0.5
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from rules._problems import ProblemLog, suggest
from rules._yaml import YList, YMap
from rules.errors import RuleSyntaxError

# Keys a rep (or a team's rep_defaults) may set on top of id, name, email and slack_user_id.
SCHEDULE_KEYS = ("weight", "capacity_day", "capacity_30d", "tz", "hours", "days")
REP_ROSTER_KEYS = (*SCHEDULE_KEYS, "out_of_office")
TEAM_ROSTER_KEYS = ("strategy", "rep_defaults", "sla")
SLA_KEYS = ("accept_within_minutes", "remind_after_minutes", "escalate_to_manager", "max_reassignments")
SLA_REQUIRED = ("accept_within_minutes",)
OOO_KEYS = ("from", "to")
LIFECYCLE_KEYS = ("reject_reasons", "reject_score_factor")

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS: frozenset[int] = frozenset(range(7))
DEFAULT_TZ = "UTC"
MAX_WEIGHT = 1000
DEFAULT_REJECT_REASONS = (
    "not-a-fit",
    "no-budget",
    "no-authority",
    "bad-timing",
    "wrong-contact",
    "existing-customer",
    "competitor",
    "duplicate",
    "student-or-job-seeker",
    "spam",
)
DEFAULT_REJECT_SCORE_FACTOR = 0.5

_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_REASON = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class Strategy(StrEnum):
    """How a team picks the rep for its next lead."""

    ROUND_ROBIN = "round_robin"  # every available rep in roster order, one turn each
    WEIGHTED = "weighted"  # smooth weighted round robin (nginx): turns in proportion to weight
    LOAD_BALANCED = "load_balanced"  # fewest open leads relative to capacity_30d


class Unavailable(StrEnum):
    """Why a rep cannot take a lead right now (checked in this order)."""

    OUT_OF_OFFICE = "out_of_office"
    DAY_OFF = "day_off"
    OUTSIDE_HOURS = "outside_hours"


@dataclass(frozen=True, slots=True)
class DateRange:
    """An out-of-office period: both days included, in the rep's own time zone."""

    start: date
    end: date

    def covers(self, day: date) -> bool:
        return self.start <= day <= self.end

    def to_json(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat()}


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """Local working hours as minutes after midnight, start included, end excluded (end may be 24:00)."""

    start_min: int
    end_min: int

    def contains(self, local: time) -> bool:
        minute = local.hour * 60 + local.minute
        return self.start_min <= minute < self.end_min

    def __str__(self) -> str:
        return f"{self.start_min // 60:02d}:{self.start_min % 60:02d}-{self.end_min // 60:02d}:{self.end_min % 60:02d}"


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (cached; ZoneInfo itself caches too)."""
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class RepProfile:
    """When and how much one rep can take.  Defaults: weight 1, no caps, UTC, any hour, every day."""

    rep_id: str
    weight: int = 1
    capacity_day: int | None = None
    capacity_30d: int | None = None
    tz: str = DEFAULT_TZ
    hours: WorkingHours | None = None
    days: frozenset[int] = ALL_DAYS  # date.weekday(): 0 is Monday
    out_of_office: tuple[DateRange, ...] = ()

    def local(self, now: datetime) -> datetime:
        """``now`` (timezone-aware) on the rep's wall clock."""
        if now.tzinfo is None:
            msg = "now must be timezone-aware (e.g. datetime.now(UTC)); a naive clock reading is ambiguous"
            raise ValueError(msg)
        return now.astimezone(zone(self.tz))

    def unavailable(self, now: datetime) -> Unavailable | None:
        """None when the rep can take a lead at ``now``, else why not (out of office, day off, outside hours)."""
        local = self.local(now)
        today = local.date()
        if any(r.covers(today) for r in self.out_of_office):
            return Unavailable.OUT_OF_OFFICE
        if local.weekday() not in self.days:
            return Unavailable.DAY_OFF
        if self.hours is not None and not self.hours.contains(local.time()):
            return Unavailable.OUTSIDE_HOURS
        return None

    def next_available(self, now: datetime, horizon_days: int = 366) -> datetime:
        """The first moment from ``now`` on when the rep can take a lead (``now`` itself when available).

        Walks the rep's local calendar (out of office, working days, hours);
        returns ``now`` when nothing opens within ``horizon_days``, so a caller
        waiting on it is never held back for ever.
        """
        if self.unavailable(now) is None:
            return now
        local = self.local(now)
        tz = zone(self.tz)
        start_min = self.hours.start_min if self.hours else 0
        end_min = self.hours.end_min if self.hours else 24 * 60
        for offset in range(horizon_days + 1):
            day = local.date() + timedelta(days=offset)
            if day.weekday() not in self.days or any(r.covers(day) for r in self.out_of_office):
                continue
            opens = datetime.combine(day, time(start_min // 60, start_min % 60), tzinfo=tz)
            if offset == 0:
                minute = local.hour * 60 + local.minute
                if minute >= end_min:
                    continue
                if opens <= local:  # within hours today but blocked above: cannot happen, be safe
                    continue
            return opens.astimezone(now.tzinfo)
        return now

    def day_start(self, now: datetime) -> datetime:
        """Midnight of the rep's current local day (DST-aware), as an aware datetime."""
        local = self.local(now)
        return datetime.combine(local.date(), time(0), tzinfo=zone(self.tz))

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.rep_id,
            "weight": self.weight,
            "capacity_day": self.capacity_day,
            "capacity_30d": self.capacity_30d,
            "tz": self.tz,
            "hours": str(self.hours) if self.hours else None,
            "days": [WEEKDAYS[d] for d in sorted(self.days)],
            "out_of_office": [r.to_json() for r in self.out_of_office],
        }


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """How fast a team must accept a lead, and what happens when it does not.

    At ``remind_after_minutes`` the holder is reminded; at ``accept_within_minutes``
    the lead goes to the next rep (up to ``max_reassignments`` times), and when a
    reassigned lead also misses the deadline it is escalated to the managers
    (``escalate_to_manager``).  Each new holder gets the full window again.
    """

    accept_within_minutes: float
    remind_after_minutes: float | None = None
    escalate_to_manager: bool = True
    max_reassignments: int = 1

    @property
    def accept_within(self) -> timedelta:
        return timedelta(minutes=self.accept_within_minutes)

    @property
    def remind_after(self) -> timedelta | None:
        return None if self.remind_after_minutes is None else timedelta(minutes=self.remind_after_minutes)

    def to_json(self) -> dict[str, object]:
        return {
            "accept_within_minutes": self.accept_within_minutes,
            "remind_after_minutes": self.remind_after_minutes,
            "escalate_to_manager": self.escalate_to_manager,
            "max_reassignments": self.max_reassignments,
        }


MANAGER_KEYS = ("name", "email", "slack_user_id", "tz")
_MANAGER_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MANAGER_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


@dataclass(frozen=True, slots=True)
class Manager:
    """A team's manager: who the last SLA step (escalation) reaches directly, by Slack DM and email.

    A plain name (``manager: Cara Losch``, older files) has no contact: an escalation
    then reaches nobody directly (it is logged and shows in the team channel).
    """

    name: str
    email: str | None = None
    slack_user_id: str | None = None
    tz: str | None = None

    @property
    def manager_id(self) -> str:
        """``manager:cara-losch``: never a rep id (rep ids have no colon)."""
        return "manager:" + (re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "manager")

    @property
    def reachable(self) -> bool:
        return bool(self.email or self.slack_user_id)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "email": self.email, "slack_user_id": self.slack_user_id, "tz": self.tz}


def parse_managers(tnode: YMap, context: str, log: ProblemLog) -> tuple[Manager, ...]:
    """A team's ``manager:``: a name, a ``{name, email, slack_user_id, tz}`` row, or a list of either."""
    if "manager" not in tnode:
        return ()
    value = tnode["manager"]
    example = ("e.g. manager: [{name: Cara Losch, email: cara.losch@example.com, slack_user_id: U0CARALOS, "
               "tz: America/New_York}]")
    if isinstance(value, str) and value.strip():
        return (Manager(name=value.strip()),)
    if isinstance(value, YMap):
        single = _manager_row(value, context, log)
        return (single,) if single is not None else ()
    if not isinstance(value, YList) or not value:
        log.add(RuleSyntaxError, tnode.line_of("manager"), context,
                f"manager must be a name, a row or a list of them, got {value!r}; {example}")
        return ()
    out: list[Manager] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        line = value.line_of(index)
        row: Manager | None = None
        if isinstance(item, str) and item.strip():
            row = Manager(name=item.strip())
        elif isinstance(item, YMap):
            row = _manager_row(item, context, log)
        else:
            log.add(RuleSyntaxError, line, context, f"manager #{index + 1} must be a name or a row, got {item!r}; "
                                                    f"{example}")
        if row is None:
            continue
        if row.name.casefold() in seen:
            log.add(RuleSyntaxError, line, context, f"manager {row.name!r} is listed twice; delete one")
            continue
        seen.add(row.name.casefold())
        out.append(row)
    return tuple(out)


def _manager_row(node: YMap, team_context: str, log: ProblemLog) -> Manager | None:
    name = node.get("name")
    context = f"{team_context} manager {str(name).strip()!r}" if isinstance(name, str) and name.strip() \
        else f"{team_context} manager"
    before = len(log)
    _check_keys(node, MANAGER_KEYS, context, log)
    if not isinstance(name, str) or not name.strip():
        log.add(RuleSyntaxError, node.line_of("name") if "name" in node else node.line, context,
                "a manager row needs a name, e.g. {name: Cara Losch, email: cara.losch@example.com}")
        return None
    email = _optional_text(node, "email", context, log)
    if email is not None and not _MANAGER_EMAIL.match(email):
        log.add(RuleSyntaxError, node.line_of("email"), context,
                f"email {email!r} is not an email address; write it as name@example.com")
    slack = _optional_text(node, "slack_user_id", context, log)
    if slack is not None and not _MANAGER_SLACK_ID.match(slack):
        log.add(RuleSyntaxError, node.line_of("slack_user_id"), context,
                f"slack_user_id {slack!r} is not a Slack member id; copy it from the profile "
                "(U or W then upper-case letters and digits)")
    tz = _tz(node, context, log) if node.get("tz") not in (None, "") else None
    if email is None and slack is None:
        log.add(RuleSyntaxError, node.line, context,
                "a manager row needs an email or a slack_user_id (or both), so an escalation reaches them; "
                "e.g. email: cara.losch@example.com")
    if len(log) != before:
        return None
    return Manager(name=name.strip(), email=email, slack_user_id=slack, tz=tz)


def _optional_text(node: YMap, key: str, context: str, log: ProblemLog) -> str | None:
    value = node.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip():
        return value.strip()
    log.add(RuleSyntaxError, node.line_of(key), context, f"{key} must be text, got {value!r}")
    return None


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """What a rep may do with a lead: the reasons a rejection must give, and what it costs the score."""

    reject_reasons: tuple[str, ...] = DEFAULT_REJECT_REASONS
    reject_score_factor: float = DEFAULT_REJECT_SCORE_FACTOR

    def to_json(self) -> dict[str, object]:
        return {"reject_reasons": list(self.reject_reasons), "reject_score_factor": self.reject_score_factor}


@dataclass(frozen=True, slots=True)
class Roster:
    """The roster part of one team, as parsed; :class:`rules.engine.Team` carries these fields."""

    strategy: Strategy = Strategy.ROUND_ROBIN
    profiles: tuple[RepProfile, ...] = ()
    sla: SlaPolicy | None = None


# --- parsing -------------------------------------------------------------------------------------


def _check_keys(node: YMap, allowed: tuple[str, ...], context: str, log: ProblemLog) -> None:
    for key in node:
        if key not in allowed:
            log.add(RuleSyntaxError, node.line_of(key), context, f"unknown key {key!r}; {suggest(key, allowed)}")


def _positive_int(node: YMap, key: str, context: str, log: ProblemLog, example: int,
                  maximum: int | None = None) -> int | None:
    value = node[key]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 and (maximum is None or value <= maximum):
        return value
    limit = f" up to {maximum}" if maximum is not None else ""
    log.add(RuleSyntaxError, node.line_of(key), context,
            f"{key} must be a whole number from 1{limit}, got {value!r}; e.g. {key}: {example}")
    return None


def _minutes(node: YMap, key: str, context: str, log: ProblemLog, example: int) -> float | None:
    value = node[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    log.add(RuleSyntaxError, node.line_of(key), context,
            f"{key} must be a positive number of minutes, got {value!r}; e.g. {key}: {example}")
    return None


def _tz(node: YMap, context: str, log: ProblemLog) -> str | None:
    value = node["tz"]
    if isinstance(value, str) and value.strip():
        name = value.strip()
        try:
            zone(name)
        except (ZoneInfoNotFoundError, ValueError):
            log.add(RuleSyntaxError, node.line_of("tz"), context,
                    f"tz {name!r} is not an IANA time zone; {suggest(name, available_timezones())} "
                    "(e.g. America/Chicago, America/New_York, America/Los_Angeles, Europe/Berlin)")
            return None
        return name
    log.add(RuleSyntaxError, node.line_of("tz"), context,
            f"tz must be an IANA time zone name, got {value!r}; e.g. tz: America/Chicago")
    return None


def parse_hours(text: str) -> WorkingHours | None:
    """``"09:00-17:30"`` as :class:`WorkingHours`; None when malformed, empty or crossing midnight."""
    m = _HOURS.match(text)
    if not m:
        return None
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        return None
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end <= start:
        return None
    return WorkingHours(start, end)


def _hours(node: YMap, context: str, log: ProblemLog) -> WorkingHours | None:
    value = node["hours"]
    line = node.line_of("hours")
    if not isinstance(value, str):
        log.add(RuleSyntaxError, line, context,
                f"hours must be a quoted local time range, got {value!r}; e.g. hours: \"09:00-17:30\"")
        return None
    hours = parse_hours(value)
    if hours is None:
        m = _HOURS.match(value)
        hint = ""
        if m and (int(m.group(3)) * 60 + int(m.group(4))) <= (int(m.group(1)) * 60 + int(m.group(2))):
            hint = " (the end is not after the start; shifts across midnight are not supported, use \"HH:MM-24:00\")"
        log.add(RuleSyntaxError, line, context,
                f"hours {value!r} is not a local time range HH:MM-HH:MM{hint}; e.g. hours: \"09:00-17:30\"")
    return hours


def _days(node: YMap, context: str, log: ProblemLog) -> frozenset[int] | None:
    value = node["days"]
    line = node.line_of("days")
    if not isinstance(value, YList) or not value:
        log.add(RuleSyntaxError, line, context,
                f"days must be a non-empty list of weekdays, got {value!r}; e.g. days: [mon, tue, wed, thu, fri] "
                "or days: [mon-fri]")
        return None
    out: set[int] = set()
    ok = True
    for index, item in enumerate(value):
        item_line = value.line_of(index)
        if not isinstance(item, str):
            log.add(RuleSyntaxError, item_line, context, f"day {item!r} is not a weekday; use mon, tue, ... sun")
            ok = False
            continue
        parts = [_day_word(p) for p in item.split("-")]
        bad = [p for p in parts if p not in WEEKDAYS]
        if bad or len(parts) > 2:
            word = bad[0] if bad else item
            log.add(RuleSyntaxError, item_line, context,
                    f"day {item!r} is not a weekday or a range like mon-fri; {suggest(word, WEEKDAYS)}")
            ok = False
            continue
        first, last = WEEKDAYS.index(parts[0]), WEEKDAYS.index(parts[-1])
        if last < first:
            log.add(RuleSyntaxError, item_line, context,
                    f"day range {item!r} runs backwards; write it from the earlier day, e.g. {parts[-1]}-{parts[0]}")
            ok = False
            continue
        out.update(range(first, last + 1))
    return frozenset(out) if ok else None


_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day_word(text: str) -> str:
    word = text.strip().lower()
    return word[:3] if word in _FULL_DAYS else word


def _as_date(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def _out_of_office(node: YMap, context: str, log: ProblemLog) -> tuple[DateRange, ...] | None:
    value = node["out_of_office"]
    line = node.line_of("out_of_office")
    if value is None or (isinstance(value, YList) and not value):
        return ()
    if not isinstance(value, YList):
        log.add(RuleSyntaxError, line, context,
                f"out_of_office must be a list of {{from, to}} date ranges, got {value!r}; "
                "e.g. out_of_office: [{from: 2026-12-21, to: 2027-01-01}]")
        return None
    ranges: list[DateRange] = []
    ok = True
    for index, item in enumerate(value):
        item_line = value.line_of(index)
        if not isinstance(item, YMap):
            log.add(RuleSyntaxError, item_line, context,
                    f"out_of_office #{index + 1} must be {{from: YYYY-MM-DD, to: YYYY-MM-DD}}, got {item!r}")
            ok = False
            continue
        _check_keys(item, OOO_KEYS, context, log)
        bounds: dict[str, date | None] = {}
        for key in OOO_KEYS:
            if key not in item:
                log.add(RuleSyntaxError, item_line, context,
                        f"out_of_office #{index + 1} is missing {key!r}; give both days, e.g. "
                        "{from: 2026-12-21, to: 2027-01-01} (a single day: from and to the same)")
                bounds[key] = None
                ok = False
                continue
            parsed = _as_date(item[key])
            if parsed is None:
                log.add(RuleSyntaxError, item.line_of(key), context,
                        f"out_of_office {key} {item[key]!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-12-21")
                ok = False
            bounds[key] = parsed
        start, end = bounds.get("from"), bounds.get("to")
        if start is not None and end is not None:
            if end < start:
                log.add(RuleSyntaxError, item_line, context,
                        f"out_of_office from {start} is after to {end}; did you mean {{from: {end}, to: {start}}}?")
                ok = False
            else:
                ranges.append(DateRange(start, end))
    return tuple(sorted(ranges, key=lambda r: r.start)) if ok else None


class _Schedule(TypedDict, total=False):
    weight: int
    capacity_day: int
    capacity_30d: int
    tz: str
    hours: WorkingHours
    days: frozenset[int]


def _schedule(node: YMap, context: str, log: ProblemLog) -> _Schedule:
    """The schedule keys ``node`` sets, parsed; keys with a problem are logged and left out."""
    out: _Schedule = {}
    if "weight" in node:
        weight = _positive_int(node, "weight", context, log, 2, MAX_WEIGHT)
        if weight is not None:
            out["weight"] = weight
    if node.get("capacity_day") is not None:
        cap = _positive_int(node, "capacity_day", context, log, 12)
        if cap is not None:
            out["capacity_day"] = cap
    if node.get("capacity_30d") is not None:
        cap = _positive_int(node, "capacity_30d", context, log, 180)
        if cap is not None:
            out["capacity_30d"] = cap
    if "tz" in node:
        tz = _tz(node, context, log)
        if tz is not None:
            out["tz"] = tz
    if "hours" in node and node["hours"] is not None:
        hours = _hours(node, context, log)
        if hours is not None:
            out["hours"] = hours
    if "days" in node:
        days = _days(node, context, log)
        if days is not None:
            out["days"] = days
    return out


def parse_team_roster(tnode: YMap, team: str, context: str, log: ProblemLog,
                      rep_nodes: Mapping[str, tuple[YMap, str]]) -> Roster:
    """The strategy, SLA and per-rep profiles of one team.

    ``rep_nodes`` maps each valid rep id to its YAML mapping and its context
    (``team 'east' rep 'boris-faz'``), in roster order.
    """
    strategy = Strategy.ROUND_ROBIN
    if "strategy" in tnode:
        value = tnode["strategy"]
        choices = [s.value for s in Strategy]
        if isinstance(value, str) and value.strip() in choices:
            strategy = Strategy(value.strip())
        else:
            word = value if isinstance(value, str) else str(value)
            log.add(RuleSyntaxError, tnode.line_of("strategy"), context,
                    f"unknown strategy {value!r}; {suggest(word, choices)}")

    defaults: _Schedule = {}
    if "rep_defaults" in tnode:
        dnode = tnode["rep_defaults"]
        if isinstance(dnode, YMap):
            _check_keys(dnode, SCHEDULE_KEYS, f"{context} rep_defaults", log)
            defaults = _schedule(dnode, f"{context} rep_defaults", log)
        else:
            log.add(RuleSyntaxError, tnode.line_of("rep_defaults"), context,
                    "rep_defaults must be a mapping, e.g. rep_defaults: {tz: America/Chicago, hours: \"08:00-17:00\", "
                    "days: [mon-fri]}")

    profiles: list[RepProfile] = []
    for rep_id, (rnode, rep_context) in rep_nodes.items():
        values = defaults.copy()
        values.update(_schedule(rnode, rep_context, log))
        ooo: tuple[DateRange, ...] = ()
        if "out_of_office" in rnode:
            parsed = _out_of_office(rnode, rep_context, log)
            ooo = parsed if parsed is not None else ()
        cap_day, cap_30d = values.get("capacity_day"), values.get("capacity_30d")
        if cap_day is not None and cap_30d is not None and cap_day > cap_30d:
            key = "capacity_day" if "capacity_day" in rnode else "capacity_30d"
            log.add(RuleSyntaxError, rnode.line_of(key) if key in rnode else rnode.line, rep_context,
                    f"capacity_day {cap_day} is above capacity_30d {cap_30d}, so the daily cap can never be reached; "
                    "lower capacity_day or raise capacity_30d")
        if strategy is Strategy.LOAD_BALANCED and cap_30d is None:
            log.add(RuleSyntaxError, rnode.line, rep_context,
                    "strategy load_balanced compares open leads with capacity_30d, but this rep has none; "
                    "add capacity_30d (e.g. capacity_30d: 180) to the rep or to the team's rep_defaults")
        profiles.append(RepProfile(
            rep_id=rep_id,
            weight=values.get("weight", 1),
            capacity_day=cap_day,
            capacity_30d=cap_30d,
            tz=values.get("tz", DEFAULT_TZ),
            hours=values.get("hours"),
            days=values.get("days", ALL_DAYS),
            out_of_office=ooo,
        ))

    sla: SlaPolicy | None = None
    if "sla" in tnode and tnode["sla"] is not None:
        sla = _sla(tnode, context, log)
    return Roster(strategy=strategy, profiles=tuple(profiles), sla=sla)


def _sla(tnode: YMap, context: str, log: ProblemLog) -> SlaPolicy | None:
    node = tnode["sla"]
    sla_context = f"{context} sla"
    if not isinstance(node, YMap):
        log.add(RuleSyntaxError, tnode.line_of("sla"), context,
                "sla must be a mapping, e.g. sla: {accept_within_minutes: 15, remind_after_minutes: 10, "
                "escalate_to_manager: true}")
        return None
    _check_keys(node, SLA_KEYS, sla_context, log)
    before = len(log)
    accept: float | None = None
    if "accept_within_minutes" not in node:
        log.add(RuleSyntaxError, node.line, sla_context,
                "missing required key 'accept_within_minutes'; add e.g. accept_within_minutes: 15")
    else:
        accept = _minutes(node, "accept_within_minutes", sla_context, log, 15)
    remind: float | None = None
    if node.get("remind_after_minutes") is not None:
        remind = _minutes(node, "remind_after_minutes", sla_context, log, 10)
        if remind is not None and accept is not None and remind >= accept:
            log.add(RuleSyntaxError, node.line_of("remind_after_minutes"), sla_context,
                    f"remind_after_minutes {remind:g} is not before accept_within_minutes {accept:g}, so the reminder "
                    f"would come after the lead is reassigned; use less than {accept:g}")
    escalate = True
    if "escalate_to_manager" in node:
        value = node["escalate_to_manager"]
        if isinstance(value, bool):
            escalate = value
        else:
            log.add(RuleSyntaxError, node.line_of("escalate_to_manager"), sla_context,
                    f"escalate_to_manager must be true or false, got {value!r}")
    max_reassign = 1
    if "max_reassignments" in node:
        value = node["max_reassignments"]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 20:
            max_reassign = value
        else:
            log.add(RuleSyntaxError, node.line_of("max_reassignments"), sla_context,
                    f"max_reassignments must be a whole number from 0 to 20, got {value!r}; e.g. max_reassignments: 1")
    if accept is None or len(log) != before:
        return None
    return SlaPolicy(accept_within_minutes=accept, remind_after_minutes=remind, escalate_to_manager=escalate,
                     max_reassignments=max_reassign)


def parse_lifecycle(doc: YMap, log: ProblemLog) -> LifecyclePolicy:
    """The optional top-level ``lifecycle:`` section; defaults when it is absent."""
    if "lifecycle" not in doc or doc["lifecycle"] is None:
        return LifecyclePolicy()
    node = doc["lifecycle"]
    context = "lifecycle"
    if not isinstance(node, YMap):
        log.add(RuleSyntaxError, doc.line_of("lifecycle"), None,
                "lifecycle must be a mapping, e.g. lifecycle: {reject_reasons: [not-a-fit, no-budget], "
                "reject_score_factor: 0.5}")
        return LifecyclePolicy()
    _check_keys(node, LIFECYCLE_KEYS, context, log)
    reasons: tuple[str, ...] = DEFAULT_REJECT_REASONS
    if "reject_reasons" in node:
        value = node["reject_reasons"]
        if not isinstance(value, YList) or not value:
            log.add(RuleSyntaxError, node.line_of("reject_reasons"), context,
                    f"reject_reasons must be a non-empty list of reason codes, got {value!r}; "
                    "e.g. reject_reasons: [not-a-fit, no-budget, wrong-contact]")
        else:
            found: list[str] = []
            for index, item in enumerate(value):
                if not isinstance(item, str) or not _REASON.match(item):
                    slug = re.sub(r"[^a-z0-9]+", "-", str(item).lower()).strip("-") or "reason"
                    log.add(RuleSyntaxError, value.line_of(index), context,
                            f"reject reason {item!r} must be a lower-case code of letters, digits, '-' and '_'; "
                            f"did you mean {slug!r}?")
                elif item in found:
                    log.add(RuleSyntaxError, value.line_of(index), context,
                            f"reject reason {item!r} is listed twice; delete one")
                else:
                    found.append(item)
            if found:
                reasons = tuple(found)
    factor = DEFAULT_REJECT_SCORE_FACTOR
    if "reject_score_factor" in node:
        value = node["reject_score_factor"]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
            factor = float(value)
        else:
            log.add(RuleSyntaxError, node.line_of("reject_score_factor"), context,
                    f"reject_score_factor multiplies the score of a rejected lead and must be from 0 to 1, "
                    f"got {value!r}; e.g. reject_score_factor: 0.5")
    return LifecyclePolicy(reject_reasons=reasons, reject_score_factor=factor)


__all__ = [
    "ALL_DAYS",
    "DEFAULT_REJECT_REASONS",
    "REP_ROSTER_KEYS",
    "TEAM_ROSTER_KEYS",
    "WEEKDAYS",
    "DateRange",
    "LifecyclePolicy",
    "Manager",
    "RepProfile",
    "Roster",
    "SlaPolicy",
    "Strategy",
    "Unavailable",
    "WorkingHours",
    "parse_hours",
    "parse_lifecycle",
    "parse_managers",
    "parse_team_roster",
    "zone",
]
