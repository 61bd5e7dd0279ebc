"""``leadrouter backtest``: archived events through the worker's own code under current and new files.

The events are archived the way the worker archives them, read back in time
order, and replayed on a real Redis: a threshold change makes engaged, good-fit
leads MQLs; a strategy change moves leads between reps of the team; the clock
is the events' own (a Saturday-night hand-raiser waits for the next rep).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.backtest.replay import Comparison, Side, format_comparison, read_outcomes, replay_side
from router.storage.archive import read_archive, write_events
from router.storage.live_config import load_icp_file, load_rules_file, load_scoring_file
from scoring import load_scoring_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TUESDAY_9_PT = datetime(2026, 12, 1, 17, 0, tzinfo=UTC).timestamp()
SATURDAY_3_BERLIN = datetime(2026, 12, 5, 2, 0, tzinfo=UTC).timestamp()
GOOD_FIT = {"company": "Kestrel", "country": "US", "region": "CA", "industry": "Software", "employees": "1200",
            "job_title": "VP Sales"}


def history() -> list[Event]:
    events: list[Event] = []
    n = 0

    def add(**kw: object) -> None:
        nonlocal n
        n += 1
        events.append(Event(event_id=f"h{n}", source="test", **kw))  # type: ignore[arg-type]

    for i in range(12):  # west-coast demo requests, two minutes apart, in office hours
        add(type=EventType.FORM_FILL, ts=TUESDAY_9_PT + 120 * i, email=f"west{i}@kestrel.example",
            form_id="demo-request", fields={"country": "US", "region": "CA", "company": f"West {i}"})
    for i in range(3):  # engaged good fits: about 76 points, never a hand-raiser
        t = TUESDAY_9_PT + 3000 + 600 * i
        vid = f"engaged-{i}"
        add(type=EventType.FORM_FILL, ts=t, email=f"fit{i}@kestrel.example", visitor_id=vid,
            form_id="whitepaper-download", fields=GOOD_FIT)
        for k in range(3):
            add(type=EventType.PAGE_VIEW, ts=t + 10 + k, visitor_id=vid, url="https://ex.test/pricing")
            add(type=EventType.PAGE_VIEW, ts=t + 20 + k, visitor_id=vid, url="https://ex.test/case-studies/a")
    # A demo request before identify(), identified an hour later.
    add(type=EventType.FORM_FILL, ts=TUESDAY_9_PT + 5000, visitor_id="anon-late", form_id="demo-request",
        name="Demo Requested")
    add(type=EventType.IDENTIFY, ts=TUESDAY_9_PT + 8600, visitor_id="anon-late", email="late@kestrel.example",
        fields={"country": "US", "region": "WA"})
    # A German hand-raiser at 3 a.m. on a Saturday.
    add(type=EventType.FORM_FILL, ts=SATURDAY_3_BERLIN, email="nacht@elbe.example", form_id="demo-request",
        fields={"country": "DE", "company": "Elbe"})
    return events


def side(name: str, scoring_text: str | None = None, rules: Path | None = None) -> Side:
    scoring = (load_scoring_config(scoring_text, f"{name}.yaml") if scoring_text
               else load_scoring_file(REPO / "scoring" / "scoring.yaml"))
    return Side(name, scoring, load_icp_file(REPO / "scoring" / "icp.yaml"),
                load_rules_file(rules or REPO / "rules" / "routing.yaml"))


@pytest.fixture
def archived(tmp_path: Path) -> list[Event]:
    shuffled = history()[::-1]  # written out of order, by two workers, one event twice
    write_events(tmp_path / "archive", shuffled[:10], writer_id="w1")
    write_events(tmp_path / "archive", shuffled[9:], writer_id="w2")
    events = list(read_archive(tmp_path / "archive", datetime(2026, 12, 1, tzinfo=UTC),
                               datetime(2026, 12, 6, tzinfo=UTC)))
    assert [e.event_id for e in events] == [e.event_id for e in sorted(history(), key=lambda e: (e.ts, e.event_id))]
    return events


async def test_a_threshold_change_makes_engaged_good_fits_mqls(redis: Redis, archived: list[Event]) -> None:
    text = (REPO / "scoring" / "scoring.yaml").read_text(encoding="utf-8")
    lower = text.replace("- {engagement_at_least: 100, grade_in: [A, B]}", "- {engagement_at_least: 60, grade_in: [A, B]}")
    assert lower != text
    current = await replay_side(redis, side("current"), archived)
    new = await replay_side(redis, side("new", lower), archived)
    assert current.events == new.events == len(archived)
    emails_current = {c.email for c in current.crossings}
    emails_new = {c.email for c in new.crossings}
    assert emails_new - emails_current == {f"fit{i}@kestrel.example" for i in range(3)}
    assert emails_current <= emails_new
    # The demo request sent before identify() counts once the person is known, in both.
    [late] = [c for c in current.crossings if c.email == "late@kestrel.example"]
    assert late.trigger == "hand_raiser" and late.ts == TUESDAY_9_PT + 8600 and late.team == "west"
    # Saturday 3 a.m.: East is closed; the lead waits for the first rep in (next_available), not "available".
    [night] = [c for c in current.crossings if c.email == "nacht@elbe.example"]
    assert night.placement != "available" and night.team
    cmp = Comparison(current, new, datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 6, tzinfo=UTC))
    text_report = "\n".join(format_comparison(cmp))
    rows = {line.split("  ")[0].strip() if not line.startswith("  ") else line[:34].strip(): line[34:].split()
            for line in text_report.splitlines() if len(line) > 34}
    assert rows["MQLs (crossings)"] == ["14", "17", "+3"]
    assert rows["hand-raisers"] == ["14", "14", "="]
    assert rows["engagement>=60 & grade in A,B"] == ["0", "3", "+3"]
    assert rows["2026-12-05"] == ["1", "1", "="]


async def test_a_strategy_change_moves_leads_between_reps(redis: Redis, archived: list[Event],
                                                          tmp_path: Path) -> None:
    routing = (REPO / "rules" / "routing.yaml").read_text(encoding="utf-8")
    assert routing.count("strategy: weighted") == 1
    rr = tmp_path / "routing_rr.yaml"
    rr.write_text(routing.replace("strategy: weighted", "strategy: round_robin"), encoding="utf-8")
    current = await replay_side(redis, side("current"), archived)
    new = await replay_side(redis, side("new", rules=rr), archived)
    west_a = Counter(c.rep_id for c in current.crossings if c.team == "west")
    west_b = Counter(c.rep_id for c in new.crossings if c.team == "west")
    assert sum(west_a.values()) == sum(west_b.values()) == 14, (west_a, west_b)
    # Weighted (3:2:1): the weight-3 reps get their second turns first; round robin: one turn each, in order.
    heavy = ("rosalina-dieter", "vicki-laflamme", "james-ascencio")
    assert [west_a[r] for r in heavy] == [2, 2, 2]
    assert max(west_b.values()) - min(west_b.values()) <= 1 and sum(west_b[r] for r in heavy) < 6
    cmp = Comparison(current, new, datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 6, tzinfo=UTC),
                     outcomes={"west0@kestrel.example": "won", "west1@kestrel.example": "accepted"})
    moved, only_a, only_b = cmp.moves()
    assert moved and only_a == only_b == 0 and all(a.team == b.team == "west" for a, b in moved)
    assert cmp.conversion(current) == (2 / 14, 1 / 14)
    report = "\n".join(format_comparison(cmp))
    assert f"moved leads: {len(moved)} MQL under both go to another rep (0 to another team)" in report


def test_outcomes_file_keeps_the_furthest_outcome(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.csv"
    path.write_text("email,outcome\nA@x.test,accepted\na@x.test,won\nb@x.test,lost\n", encoding="utf-8")
    assert read_outcomes(path) == {"a@x.test": "won", "b@x.test": "accepted"}


def test_the_cli_reports_side_by_side_with_a_chart(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                   redis_url: str, tmp_path: Path) -> None:
    import os

    from redis import Redis as SyncRedis

    from router.cli import main as cli

    for name in list(os.environ):
        if name.startswith("LEADROUTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LEADROUTER_ARCHIVE_DIR", str(tmp_path / "archive"))
    write_events(tmp_path / "archive", history())
    lower = tmp_path / "lower.yaml"
    lower.write_text((REPO / "scoring" / "scoring.yaml").read_text(encoding="utf-8").replace(
        "- {engagement_at_least: 100, grade_in: [A, B]}", "- {engagement_at_least: 60, grade_in: [A, B]}"))
    with SyncRedis.from_url(redis_url) as client:
        client.flushdb()
        client.set("someone-elses-key", "1")
        argv = ["backtest", "--scoring", str(lower), "--from", "2026-12-01", "--to", "2026-12-06",
                "--redis-url", redis_url, "--chart", str(tmp_path / "bt.png")]
        assert cli.main(argv) == 2 and "is not empty" in capsys.readouterr().err
        assert client.get("someone-elses-key") == b"1"  # never flushed
        client.flushdb()
        assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert "changed: scoring" in out.err and "new: replayed events 36/36" in out.err
    assert "MQLs (crossings)" in out.out and f"chart: {tmp_path / 'bt.png'}" in out.out
    assert (tmp_path / "bt.png").stat().st_size > 10_000
    assert cli.main(["backtest", "--from", "2027-01-01", "--to", "2027-01-02", "--redis-url", redis_url]) == 1
    assert "no archived events" in capsys.readouterr().err
