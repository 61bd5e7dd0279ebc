"""The pure re-scoring behind the console's scoring and fit Simulate: caps, decay, hand-raisers, fit clauses,
identity over the window, and the per-team comparison of two sides."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import Event, EventType
from router.backtest.rescore import compare, lead_keys, rescore
from router.storage.config_store import ICP, SCORING
from rules import load_routing

REPO = Path(__file__).resolve().parents[4]
SCORING_TEXT = (REPO / "scoring" / "scoring.yaml").read_text(encoding="utf-8")
ICP_TEXT = (REPO / "scoring" / "icp.yaml").read_text(encoding="utf-8")
T0 = 1_795_000_000.0
DAY = 86400.0
GOOD = {"company": "Acme", "industry": "Software", "employees": "500", "country": "US", "job_title": "VP Sales"}


def view(eid: str, vid: str, ts: float, path: str = "/pricing") -> Event:
    return Event(event_id=eid, type=EventType.PAGE_VIEW, ts=ts, source="pixel", visitor_id=vid,
                 url=f"https://www.example.com{path}")


def test_caps_and_decay_are_applied_per_day_and_identity_spans_the_window() -> None:
    scoring, icp = SCORING.compile(SCORING_TEXT, "s"), ICP.compile(ICP_TEXT, "i")
    # 10 pricing views on day 0 (capped at 30 + 10 page points), then identify on day 1 with a good fit.
    events = [view(f"v{k}", "vis", T0 + k) for k in range(10)]
    events.append(Event(event_id="id", type=EventType.IDENTIFY, ts=T0 + DAY, source="segment", email="G@Acme.com",
                        visitor_id="vis", traits=GOOD))
    keys = lead_keys(events)
    assert set(keys) == {"g@acme.com"}  # the anonymous views count for the identified person
    assert rescore(events, keys, scoring, icp) == {}  # 40 points: not sales-ready
    # Two more days of the same: 40 + 40 + 40 points, decayed with the 30-day half-life, crosses 100 with fit A.
    for day in (1, 2):
        events += [view(f"d{day}-{k}", "vis", T0 + day * DAY + 10 + k) for k in range(10)]
    events.sort(key=lambda e: e.ts)
    keys = lead_keys(events)
    (crossing,) = rescore(events, keys, scoring, icp).values()
    assert crossing.grade == "A" and crossing.clause.startswith("engagement>=100")
    decay = 0.5 ** (1 / 30)
    # Crossed on day 2's third pricing view (10 + 1 page point each), the earlier days decayed by 1 and 2 days.
    assert crossing.score == pytest.approx(40 * decay ** 2 + 40 * decay + 33, rel=1e-3)


def test_a_hand_raiser_crosses_at_once_and_compare_counts_per_team() -> None:
    scoring, icp = SCORING.compile(SCORING_TEXT, "s"), ICP.compile(ICP_TEXT, "i")
    routing = load_routing((REPO / "rules" / "routing.yaml").read_text(encoding="utf-8"), "routing.yaml")
    demo = Event(event_id="h", type=EventType.FORM_FILL, ts=T0, source="form", email="h@x.example",
                 form_id="demo-request", fields={"country": "DE", "company": "Hands"})
    views = [view(f"v{k}", "anon", T0 + k) for k in range(3)]
    edited = SCORING.compile(SCORING_TEXT.replace("- {hand_raiser: true}", "- {engagement_at_least: 1000}"), "s")
    report = compare([demo, *views], (scoring, icp), (edited, icp), routing)
    assert report.events == 4 and report.leads == 2
    assert (len(report.running), len(report.edited)) == (1, 0)
    assert report.team_rows() == [("east", 1, 0)]  # Germany routes to East
    assert report.no_longer_count == 1 and report.no_longer[0].label == "h@x.example (Hands, DE)"
    assert report.rep_rows()[0][2:] == (1, 0)
