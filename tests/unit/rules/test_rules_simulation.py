"""The in-memory what-if simulation: round robin, moves, daily load, owner first."""

from __future__ import annotations

import textwrap
from datetime import UTC, date, datetime

import pytest

from rules import RoutingConfig, load_routing
from rules.accounts import OWNER_RULE, load_accounts
from rules.simulation import RoundRobin, SimLead, lead_facts, simulate, span_of, working_days


def routing(apac_team: str, version: str) -> RoutingConfig:
    return load_routing(textwrap.dedent(f"""\
        version: "{version}"
        teams:
          east:
            description: East office
            manager: Cara Losch
            reps:
              - {{id: e1, name: East One, email: e1@example.com}}
              - {{id: e2, name: East Two, email: e2@example.com}}
          west:
            description: West office
            manager: Celia Rouche
            reps:
              - {{id: w1, name: West One, email: w1@example.com}}
          central:
            description: Central office
            manager: Dustin Brinkmann
            reps:
              - {{id: c1, name: Central One, email: c1@example.com}}
              - {{id: c2, name: Central Two, email: c2@example.com}}
              - {{id: c3, name: Central Three, email: c3@example.com}}
        rules:
          - {{name: emea, description: d, when: {{field: country, in: [GB, DE]}}, team: east}}
          - {{name: apac, description: d, when: {{field: country, in: [JP, AU]}}, team: {apac_team}}}
          - {{name: big, description: d, when: {{field: employees, range: {{min: 1000}}}}, team: central}}
          - {{name: default, description: d, when: always, team: central}}
    """), f"{version}.yaml")


CURRENT = routing("west", "cur")
NEW = routing("central", "new")
MON = datetime(2026, 11, 2, 9, tzinfo=UTC).timestamp()  # a Monday
DAY = 86400.0


def lead(lead_id: str, ts: float | None = None, **facts: object) -> SimLead:
    return SimLead(lead_id, lead_facts(facts), ts)


def test_round_robin_goes_round_the_roster_per_team() -> None:
    rr = RoundRobin()
    east, central = CURRENT.team("east"), CURRENT.team("central")
    picks = [rr.pick(east).rep_id for _ in range(3)] + [rr.pick(central).rep_id for _ in range(4)]
    assert picks == ["e1", "e2", "e1", "c1", "c2", "c3", "c1"]


def test_counts_moves_and_examples() -> None:
    leads = [
        lead("gb", MON, country="GB"),
        lead("jp1", MON + DAY, country="JP", company="Hottechi"),
        lead("jp2", MON + 2 * DAY, country="jp"),  # coerced to JP
        lead("de", MON + 3 * DAY, country="DE"),
        lead("au", MON + 4 * DAY, country="AU"),
        lead("none", None),
    ]
    report = simulate(leads, CURRENT, NEW, examples=2)
    assert report.leads == 6
    assert report.current.team_counts == {"east": 2, "west": 3, "central": 1}
    assert report.new.team_counts == {"east": 2, "central": 4}
    assert report.current.rep_counts == {"e1": 1, "e2": 1, "w1": 3, "c1": 1}
    assert report.new.rep_counts == {"e1": 1, "e2": 1, "c1": 2, "c2": 1, "c3": 1}
    assert report.moves == 3 and report.rule_changes == 0
    assert [m.lead.lead_id for m in report.examples] == ["jp1", "jp2"]
    first = report.examples[0]
    assert (first.before.team, first.before.rule, first.before.rep_id) == ("west", "apac", "w1")
    assert (first.after.team, first.after.rule, first.after.rep_id) == ("central", "apac", "c1")
    assert first.lead.label == "Hottechi, JP"
    # Monday to Friday of one week: five working days.
    assert report.span is not None and report.span.working_days == 5
    rows = {r.rep_id: r for r in report.rep_rows()}
    assert rows["w1"].current == 3 and rows["w1"].new == 0 and rows["w1"].delta == -3
    assert rows["w1"].current_per_day == pytest.approx(3 / 5)
    assert rows["w1"].team_new == "west"  # still on the roster, just gets nothing
    teams = {t.team: t for t in report.team_rows()}
    assert teams["central"].new_per_rep_day == pytest.approx(4 / 5 / 3)
    assert teams["west"].delta == -3


def test_rule_only_changes_are_counted_apart_from_moves() -> None:
    new = load_routing(textwrap.dedent("""\
        version: "n"
        teams:
          central:
            description: Central office
            manager: Dustin Brinkmann
            reps: [{id: c1, name: Central One, email: c1@example.com}]
        rules:
          - {name: everyone, description: d, when: always, team: central}
    """), "n.yaml")
    report = simulate([lead("big", employees=5000), lead("west", country="JP")], CURRENT, new)
    assert report.moves == 1 and report.rule_changes == 1
    assert report.span is None and report.rep_rows()[0].current_per_day is None


def test_deterministic() -> None:
    leads = [lead(str(i), MON + i * 3600, country=c) for i, c in enumerate(["JP", "GB", "US", "AU"] * 25)]
    a, b = simulate(leads, CURRENT, NEW), simulate(leads, CURRENT, NEW)
    assert a.new.placements == b.new.placements and a.current.placements == b.current.placements


def test_progress_is_reported_in_steps_and_at_the_end() -> None:
    calls: list[tuple[int, int]] = []
    simulate([lead(str(i)) for i in range(7)], CURRENT, NEW, progress=lambda d, t: calls.append((d, t)), every=3)
    assert calls == [(3, 7), (6, 7), (7, 7)]


def test_owner_first_in_the_simulation() -> None:
    book = load_accounts('accounts: [{name: "Hottechi Inc", owner: e2}, {name: Gone, owner: nobody}]', "a.yaml")
    report = simulate([lead("jp", country="JP", company="HOTTECHI"), lead("x", country="JP", company="Gone")],
                      CURRENT, NEW, accounts=book)
    assert report.current.placements[0].rep_id == "e2" and report.current.placements[0].rule == OWNER_RULE
    assert report.current.owner_routed == 1 and report.new.owner_routed == 1
    assert report.current.placements[1].team == "west" and report.new.placements[1].team == "central"
    assert report.moves == 1


@pytest.mark.parametrize(
    ("first", "last", "days"),
    [
        (date(2026, 11, 2), date(2026, 11, 6), 5),  # Mon..Fri
        (date(2026, 11, 2), date(2026, 11, 8), 5),  # Mon..Sun
        (date(2026, 11, 7), date(2026, 11, 8), 1),  # a weekend only: at least one day
        (date(2026, 11, 6), date(2026, 11, 9), 2),  # Fri..Mon
        (date(2026, 11, 2), date(2026, 11, 30), 21),
        (date(2026, 11, 6), date(2026, 11, 2), 5),  # order does not matter
    ],
)
def test_working_days(first: date, last: date, days: int) -> None:
    assert working_days(first, last) == days


def test_lead_facts_coerce_and_derive_the_email_domain() -> None:
    facts = lead_facts({"country": " gb ", "employees": "1,200", "hand_raiser": "yes", "email": "Pat@Acme.COM",
                        "company": "  ", "website": " acme.com ", "score": None})
    assert facts == {"country": "GB", "employees": 1200.0, "hand_raiser": True, "email": "Pat@Acme.COM",
                     "email_domain": "acme.com", "website": "acme.com"}


def test_span_ignores_leads_without_a_time() -> None:
    span = span_of([lead("a", MON), lead("b"), lead("c", MON + 7 * DAY)])
    assert span is not None and span.first_day == date(2026, 11, 2) and span.working_days == 6
