"""The pure parts of distribution, SLA and lifecycle: eligibility slots, deadline steps, SLA members, training rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from models import Alert, Assignment, LeadView, Rep, RoutingDecision, Stage
from router.alerts.render import render_text
from router.storage import keys
from router.worker.distribution import deadline_step, rep_slots
from router.worker.lifecycle import lead_id_of, outcome_row
from router.worker.sla import parse_member, reassigned_id
from rules import DateRange, RepProfile, SlaPolicy, Strategy, Team, WorkingHours

NOW = datetime(2026, 11, 27, 21, 30, tzinfo=UTC)  # Friday 16:30 New York, 15:30 Chicago, 22:30 Berlin


def team() -> Team:
    profiles = (
        RepProfile("ny", weight=2, capacity_day=5, capacity_30d=60, tz="America/New_York",
                   hours=WorkingHours(9 * 60, 17 * 60), days=frozenset(range(5))),
        RepProfile("berlin", tz="Europe/Berlin", hours=WorkingHours(9 * 60, 17 * 60), days=frozenset(range(5))),
        RepProfile("leave", tz="America/Chicago", out_of_office=(DateRange(date(2026, 11, 26), date(2026, 11, 27)),)),
    )
    reps = tuple(Rep(p.rep_id, p.rep_id, f"{p.rep_id}@example.com", "t") for p in profiles)
    return Team("t", "d", "M", None, reps, ("M",), Strategy.WEIGHTED, profiles, None)


def test_rep_slots_carry_weights_caps_local_midnight_and_why_not() -> None:
    slots = {s.rep_id: s for s in rep_slots(team(), NOW, exclude={"leave"})}
    ny = slots["ny"]
    assert (ny.weight, ny.capacity_day, ny.capacity_30d, ny.unavailable, ny.excluded) == (2, 5, 60, "", False)
    assert ny.day_start == datetime(2026, 11, 27, 5, 0, tzinfo=UTC).timestamp()  # midnight EST
    assert ny.sla_base == NOW.timestamp()
    berlin = slots["berlin"]
    assert berlin.unavailable == "outside_hours"
    assert berlin.day_start == datetime(2026, 11, 26, 23, 0, tzinfo=UTC).timestamp()  # midnight CET
    # Its SLA clock would start on Monday 09:00 Berlin time.
    assert berlin.sla_base == datetime(2026, 11, 30, 8, 0, tzinfo=UTC).timestamp()
    leave = slots["leave"]
    assert leave.unavailable == "out_of_office" and leave.excluded
    assert leave.sla_base == datetime(2026, 11, 28, 6, 0, tzinfo=UTC).timestamp()  # back Saturday 00:00 Chicago


def test_a_rep_without_a_profile_is_always_available() -> None:
    bare = Team("t", "d", "M", None, (Rep("x", "X", "x@example.com", "t"),))
    [slot] = rep_slots(bare, NOW)
    assert (slot.weight, slot.capacity_day, slot.capacity_30d, slot.unavailable) == (1, None, None, "")


@pytest.mark.parametrize(("sla", "reassigns", "expected"), [
    (None, 0, None),
    (SlaPolicy(15, 10, True, 1), 0, "reassign"),
    (SlaPolicy(15, 10, True, 1), 1, "escalate"),
    (SlaPolicy(15, 10, True, 2), 1, "reassign"),
    (SlaPolicy(15, 10, False, 1), 1, None),
    (SlaPolicy(15, None, True, 0), 0, "escalate"),
])
def test_deadline_step(sla: SlaPolicy | None, reassigns: int, expected: str | None) -> None:
    assert deadline_step(sla, reassigns) == expected


def test_sla_members_round_trip() -> None:
    lead = keys.lead_id_for_email("a@b.co")
    item = parse_member(keys.sla_member(lead, f"{lead}:3"))
    assert item is not None and (item.crossing, item.reassigns) == (3, 0)
    assert reassigned_id(item) == f"{lead}:3:r1"
    again = parse_member(keys.sla_member(lead, reassigned_id(item)))
    assert again is not None and (again.crossing, again.reassigns) == (3, 1)
    assert parse_member("garbage") is None
    assert parse_member(f"{lead} other:1") is None


def test_outcome_row_has_features_and_no_email_address() -> None:
    t = NOW.timestamp()
    lead = {
        "email": "jo@Acme.com", "f:company": "Acme", "f:employees": "250", "n:page_view": "12", "n:form_fill": "2",
        "events": "14", "score": "87.5", "asof": str(t), "crossing": "2", "rejections": "1", "team": "east",
        "rule": "emea", "owner": "violet-mclelland", "first_seen": str(t - 10 * 86400), "mql_ts": str(t - 86400),
        "sal_ts": str(t - 86400 + 1800), "closed_ts": str(t),
    }
    row = outcome_row("L1", "won", lead, t, "annual")
    f = row["features"]
    assert (row["lead_id"], row["outcome"], row["reason"]) == ("L1", "won", "annual")
    assert f["company"] == "Acme" and f["email_domain"] == "acme.com" and "email" not in f
    assert f["count_page_view"] == 12 and f["events"] == 14 and f["score"] == 87.5 and f["rejections"] == 1
    assert f["hours_first_seen_to_mql"] == 216 and f["hours_mql_to_sal"] == 0.5 and f["hours_sal_to_close"] == 23.5
    assert f["escalated"] is False and f["sla_reassigns"] == 0


def test_lead_id_of_accepts_an_email_or_an_id() -> None:
    assert lead_id_of(" Jo@Acme.com") == keys.lead_id_for_email("jo@acme.com")
    assert lead_id_of("L0123") == "L0123"


def test_rep_slots_need_an_aware_clock() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        rep_slots(team(), datetime(2026, 11, 27, 12, 0))
    assert rep_slots(team(), NOW + timedelta(0))  # aware is fine


def test_an_after_hours_alert_says_how_the_rep_was_found_and_when_the_clock_starts() -> None:
    rep = Rep("r", "R", "r@example.com", "east")
    decision = RoutingDecision("east", "emea", "v1", ("emea:yes",))
    monday = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()
    queued = Assignment("L:1", "L", 1, rep, decision, NOW.timestamp(), available_at=monday,
                        placement="next_available")
    lead = LeadView("L", "l@example.com", 80.0, Stage.MQL)
    text = render_text(Alert(queued, lead, 50.0, "hand-raiser"))
    assert "after hours: next available, SLA clock starts 2026-11-30 12:00:00 UTC" in text
    assert Assignment.from_dict(queued.to_dict()) == queued
    now = Assignment("L:1", "L", 1, rep, decision, NOW.timestamp(), available_at=NOW.timestamp(), placement="available")
    assert "after hours" not in render_text(Alert(now, lead, 50.0, "hand-raiser"))
    old = {k: v for k, v in queued.to_dict().items() if k not in ("available_at", "placement")}
    assert (Assignment.from_dict(old).available_at, Assignment.from_dict(old).placement) == (None, "")
