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
from router.storage.redis import sync_redis_from_url
from scoring import load_scoring_config
from tests.support import all_keys, sync_flush

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


async def test_the_same_files_twice_move_no_lead(redis: Redis, archived: list[Event]) -> None:
    """A replay is deterministic: crossings are routed one by one in event order, so comparing a side
    with itself shows no moved lead (concurrent routing used to swap reps between runs)."""
    a = await replay_side(redis, side("current"), archived)
    b = await replay_side(redis, side("new"), archived)
    cmp = Comparison(a, b, datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 6, tzinfo=UTC))
    moved, only_a, only_b = cmp.moves()
    assert (moved, only_a, only_b) == ([], 0, 0)
    assert [(c.lead_id, c.rep_id) for c in a.crossings] == [(c.lead_id, c.rep_id) for c in b.crossings]


def test_outcomes_file_keeps_the_furthest_outcome(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.csv"
    path.write_text("email,outcome\nA@x.test,accepted\na@x.test,won\nb@x.test,lost\n", encoding="utf-8")
    assert read_outcomes(path) == {"a@x.test": "won", "b@x.test": "accepted"}


def test_the_cli_reports_side_by_side_with_a_chart(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                   redis_url: str, tmp_path: Path) -> None:
    import os

    from router.cli import main as cli

    for name in list(os.environ):
        if name.startswith("LEADROUTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LEADROUTER_ARCHIVE_DIR", str(tmp_path / "archive"))
    write_events(tmp_path / "archive", history())
    lower = tmp_path / "lower.yaml"
    lower.write_text((REPO / "scoring" / "scoring.yaml").read_text(encoding="utf-8").replace(
        "- {engagement_at_least: 100, grade_in: [A, B]}", "- {engagement_at_least: 60, grade_in: [A, B]}"))
    with sync_redis_from_url(redis_url) as client:
        sync_flush(client)
        client.set("someone-elses-key", "1")
        argv = ["backtest", "--scoring", str(lower), "--from", "2026-12-01", "--to", "2026-12-06",
                "--redis-url", redis_url, "--chart", str(tmp_path / "bt.png")]
        assert cli.main(argv) == 2 and "is not empty" in capsys.readouterr().err
        assert client.get("someone-elses-key") == b"1"  # never flushed
        sync_flush(client)
        assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert "changed: scoring" in out.err and "new: replayed events 36/36" in out.err
    assert "MQLs (crossings)" in out.out and f"chart: {tmp_path / 'bt.png'}" in out.out
    assert (tmp_path / "bt.png").stat().st_size > 10_000
    assert cli.main(["backtest", "--from", "2027-01-01", "--to", "2027-01-02", "--redis-url", redis_url]) == 1
    assert "no archived events" in capsys.readouterr().err


def _cli_env(monkeypatch: pytest.MonkeyPatch, archive: Path, redis_url: str) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("LEADROUTER_") or name in ("REDIS_URL", "KAFKA_URL"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LEADROUTER_ARCHIVE_DIR", str(archive))
    monkeypatch.setenv("REDIS_URL", redis_url)


def _report(out: str) -> dict[str, list[str]]:
    return {line[:34].strip(): line[34:].split() for line in out.splitlines() if len(line) > 34}


async def test_a_sealed_archive_is_opened_with_the_live_keys_and_forgotten_people_are_left_out(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis: Redis, redis_url: str,
        tmp_path: Path) -> None:
    """Issue 16.7 x 13: the workers archive what they consume, and the collector sealed every identified
    event's personal fields under the person's data key; the backtest opens them with the key store."""
    import asyncio
    import gzip

    import orjson

    from router.cli import main as cli
    from router.settings import DEV_PII_KEY
    from router.storage.archive import ArchiveWriter
    from router.storage.pii import Vault

    # The collector's side: protect() pseudonymises and seals with keys made in the live Redis; the
    # worker archives the raw Kafka values (Event JSON) of its batches, as worker/app.py archive_batch.
    stored, dropped = await Vault(redis, DEV_PII_KEY).protect(history())
    assert not dropped and sum(1 for e in stored if e.sealed) == 17 and all(e.email is None for e in stored)
    ArchiveWriter(tmp_path / "sealed", writer_id="w1").append([orjson.dumps(e.to_dict()) for e in stored[::-1]])
    raw = gzip.decompress(b"".join(p.read_bytes() for p in sorted((tmp_path / "sealed").rglob("*.jsonl.gz"))))
    assert raw.count(b'"sealed":"s1.') == 17 and b"kestrel.example" not in raw and b"elbe.example" not in raw
    # The same history in the clear, without the person about to be forgotten: what the report must match.
    write_events(tmp_path / "plain", [e for e in history() if e.email != "nacht@elbe.example"])

    # The real `leadrouter forget` (the German Saturday hand-raiser), against the live Redis.
    _cli_env(monkeypatch, tmp_path / "sealed", redis_url)
    assert await asyncio.to_thread(cli.main, ["forget", "nacht@elbe.example"]) == 0
    assert "data key shredded" in capsys.readouterr().out
    keys_before = sorted(await all_keys(redis))

    # Outcomes keyed by email: they only count if the archived emails were opened.
    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text("email,outcome\nwest0@kestrel.example,won\nlate@kestrel.example,accepted\n"
                        "nacht@elbe.example,won\n", encoding="utf-8")
    argv = ["backtest", "--from", "2026-12-01", "--to", "2026-12-06", "--no-chart", "--outcomes", str(outcomes)]
    assert await asyncio.to_thread(cli.main, argv) == 0
    sealed_run = capsys.readouterr()
    assert "1 archived events of forgotten people (or unreadable) left out" in sealed_run.err
    assert "current: replayed events 35/35" in sealed_run.err
    assert sorted(await all_keys(redis)) == keys_before  # the live Redis is only read, never replayed on
    rows = _report(sealed_run.out)
    assert rows["MQLs (crossings)"] == ["13", "13", "="]  # the 12 west demo requests and the late identify
    assert rows["hand-raisers"] == ["13", "13", "="]
    assert rows["west"] == ["13", "13", "="]
    assert rows["accepted per MQL"] == ["0.15", "0.15"]  # 2 of 13: the emails were opened
    assert rows["won per MQL"] == ["0.08", "0.08"]
    assert "2026-12-05" not in rows  # the forgotten Saturday hand-raiser was not replayed
    assert "nacht" not in sealed_run.out + sealed_run.err

    # Identified leads are scored and routed as the same events in the clear.  (Which rep of the team
    # gets a lead is not compared: reps picked for leads of one batch vary from run to run.)
    assert await asyncio.to_thread(cli.main, [*argv, "--archive", str(tmp_path / "plain")]) == 0
    plain_run = capsys.readouterr()
    assert "left out" not in plain_run.err and "current: replayed events 35/35" in plain_run.err

    def totals(out: str) -> list[str]:
        lines = out.split("per rep:")[0].splitlines()
        return [line for line in lines if not line.startswith(("current:", "new:"))]

    assert totals(sealed_run.out) == totals(plain_run.out)
    assert {r: v[:2] for r, v in _report(plain_run.out).items() if "per MQL" in r} == {
        "accepted per MQL": ["0.15", "0.15"], "won per MQL": ["0.08", "0.08"]}


@pytest.mark.parametrize("server", ["refuses", "never_answers"])
async def test_a_sealed_archive_without_a_key_store_fails_naming_redis_url(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis: Redis, tmp_path: Path,
        server: str) -> None:
    import asyncio
    import socket

    import orjson

    from router.cli import main as cli
    from router.settings import DEV_PII_KEY
    from router.storage.archive import ArchiveWriter
    from router.storage.pii import Vault

    stored, _ = await Vault(redis, DEV_PII_KEY).protect(history())
    ArchiveWriter(tmp_path / "sealed", writer_id="w1").append([orjson.dumps(e.to_dict()) for e in stored])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        if server == "never_answers":
            sock.listen(8)  # accepts connections (the kernel does), never replies: a hung or partitioned Redis
        else:
            sock.close()  # nothing listens on the port
        _cli_env(monkeypatch, tmp_path / "sealed", f"redis://127.0.0.1:{port}/0")
        monkeypatch.setenv("LEADROUTER_REDIS_ADMIN_CLI_TIMEOUT_S", "1")
        code = await asyncio.wait_for(asyncio.to_thread(
            cli.main, ["backtest", "--from", "2026-12-01", "--to", "2026-12-06", "--no-chart"]), timeout=30)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"the key store at redis://127.0.0.1:{port}/0 did not answer" in err and "point REDIS_URL at" in err
    assert "Traceback" not in err


async def test_a_sealed_archive_with_another_pii_key_fails_naming_the_key(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis: Redis, redis_url: str,
        tmp_path: Path) -> None:
    import asyncio

    import orjson

    from router.cli import main as cli
    from router.settings import DEV_PII_KEY
    from router.storage.archive import ArchiveWriter
    from router.storage.pii import Vault

    stored, _ = await Vault(redis, DEV_PII_KEY).protect(history())
    ArchiveWriter(tmp_path / "sealed", writer_id="w1").append([orjson.dumps(e.to_dict()) for e in stored])
    _cli_env(monkeypatch, tmp_path / "sealed", redis_url)
    monkeypatch.setenv("LEADROUTER_PII_KEY", "another-long-random-master-key-than-the-collectors")
    code = await asyncio.to_thread(cli.main, ["backtest", "--from", "2026-12-01", "--to", "2026-12-06", "--no-chart"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "data keys at" in err and "do not open" in err and "same LEADROUTER_PII_KEY" in err
    assert "Traceback" not in err and "MQLs" not in capsys.readouterr().out
