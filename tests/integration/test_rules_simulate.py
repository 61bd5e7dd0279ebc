"""``leadrouter rules simulate`` over the real Maven and Olist data, lead files, and a Kafka replay."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from models import Event, EventType
from router.backtest.simulate import LeadFileError, read_leads, replay_form_fills
from router.cli import main as cli
from router.dev.servers import ManagedProcess
from router.settings import Settings
from router.storage import keys
from router.storage.kafka import encode_event, ensure_topics
from router.storage.redis import sync_redis_from_url
from tests.support import sync_flush

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
ALT = REPO / "rules" / "examples" / "routing_alt.yaml"
Invoke = Callable[..., tuple[int, str, str]]


def datasets() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"the shared datasets folder {DATASETS} is absent on this machine")
    return DATASETS


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str, tmp_path: Path
           ) -> Invoke:
    for name in list(os.environ):
        if name.startswith("LEADROUTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LEADROUTER_RULES_FILE", str(tmp_path / "routing.yaml"))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("router.cli.rules",))
    with sync_redis_from_url(redis_url) as client:
        sync_flush(client)
    shutil.copy(REPO / "rules" / "routing.yaml", tmp_path / "routing.yaml")
    shutil.copy(REPO / "rules" / "routing_test.yaml", tmp_path / "routing_test.yaml")

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def rep_counts(out: str) -> dict[str, tuple[int, int]]:
    """rep id -> (current, new) from the printed rep table."""
    found: dict[str, tuple[int, int]] = {}
    for m in re.finditer(r"^([a-z][a-z-]+)\s+\S+(?: -> \S+)?\s+([\d,]+)\s+([\d,]+)\s+[+-][\d,]+", out, re.M):
        found[m.group(1)] = (int(m.group(2).replace(",", "")), int(m.group(3).replace(",", "")))
    return found


def test_simulate_the_maven_pipeline_against_the_published_rules(invoke: Invoke, tmp_path: Path) -> None:
    folder = datasets()
    code, out, _ = invoke("rules", "publish", "--author", "alice")
    assert code == 0
    chart = tmp_path / "out" / "maven.png"
    code, out, err = invoke("rules", "simulate", "--rules", str(ALT), "--current", "published", "--dataset", "maven",
                            "--datasets-dir", str(folder), "--chart", str(chart), "--examples", "3")
    assert code == 0, err
    assert "current: published v1 by alice (version v1:2026-11-22.1)" in out
    assert "new:     " in out and "(version 2026-11-22.1-apac-central)" in out
    assert "8,800 leads from 2016-10-20 to 2017-12-27 (310 working days, Mon-Fri)" in out
    # Maven accounts in China, Japan, Korea and the Philippines are the only APAC ones.
    moved = re.search(r"moved: ([\d,]+) leads change team", out)
    assert moved is not None
    n = int(moved.group(1).replace(",", ""))
    assert n > 0
    assert re.search(rf"^west\s+{n:,}\s+0\s+-{n:,}", out, re.M)
    assert len(re.findall(r"west/apac -> central/apac", out)) == 3
    counts = rep_counts(out)
    assert len(counts) == 35
    assert all(new == 0 for rep, (_, new) in counts.items() if rep in {"vicki-laflamme", "carl-lin", "zane-levy"})
    assert sum(c for c, _ in counts.values()) == sum(nw for _, nw in counts.values()) == 8800
    west_before = sum(c for rep, (c, _) in counts.items() if rep in _west_reps())
    assert west_before == n
    assert f"chart: {chart.resolve()}" in out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "routed leads 8,800/8,800" in err


def _west_reps() -> set[str]:
    from rules import load_routing

    config = load_routing((REPO / "rules" / "routing.yaml").read_text(encoding="utf-8"))
    return {r.rep_id for r in config.team("west").reps}


def test_simulate_olist_with_accounts_and_saved_leads(invoke: Invoke, tmp_path: Path) -> None:
    folder = datasets()
    saved = tmp_path / "olist.jsonl"
    code, out, err = invoke("rules", "simulate", "--rules", str(ALT), "--dataset", "olist", "--datasets-dir",
                            str(folder), "--no-chart", "--save-leads", str(saved), "--reps", "2")
    assert code == 0, err
    assert "nothing is published" not in err
    assert "8,000 leads from 2017-06-14 to 2018-05-31" in out
    assert re.search(r"^central\s+8,000\s+8,000\s+\+0", out, re.M)  # Brazil is latam -> central either way
    assert "moved: 0 leads change team" in out
    assert "... 33 more reps" in out
    leads = read_leads(saved)
    assert len(leads) == 8000 and leads[0].facts["country"] == "BR"
    assert {lead.facts.get("source") for lead in leads} >= {"organic_search", "paid_search", "social"}

    code, out, err = invoke("rules", "simulate", "--rules", str(ALT), "--current", "published", "--leads",
                            str(saved), "--no-chart", "--reps", "0")
    assert code == 0 and "nothing is published, so the current rules are the file" in err


def test_simulate_the_maven_pipeline_with_owners_first(invoke: Invoke) -> None:
    folder = datasets()
    code, out, err = invoke("rules", "simulate", "--rules", str(ALT), "--dataset", "maven", "--datasets-dir",
                            str(folder), "--accounts", str(REPO / "rules" / "accounts.yaml"), "--no-chart")
    assert code == 0, err
    # 7,375 opportunities name an account; every account's owner is a rep in both rule sets.
    assert "to account owners first: 7,375 now, 7,375 new" in out
    counts = rep_counts(out)
    assert counts["darcel-schlecht"][0] > counts["anna-snelling"][0]


def test_lead_files_csv_and_jsonl(tmp_path: Path, invoke: Invoke) -> None:
    csv_file = tmp_path / "leads.csv"
    csv_file.write_text("lead_id,country,region,company,employees,ts\n"
                        "a,JP,,Hottechi,1200,2026-11-02T09:00:00Z\n"
                        "b,US,NY,Hudson Freight,,2026-11-03\n"
                        "c,gb,,,,1793692800\n", encoding="utf-8")
    leads = read_leads(csv_file)
    assert [lead.lead_id for lead in leads] == ["a", "b", "c"]
    assert leads[0].facts == {"country": "JP", "company": "Hottechi", "employees": 1200.0}
    assert leads[2].facts == {"country": "GB"}
    jsonl = tmp_path / "leads.jsonl"
    jsonl.write_bytes(b'{"id": "x", "fields": {"country": "AU"}, "created_at": "2026-11-02"}\n\n'
                      b'{"email": "pat@acme.com", "country": "DE"}\n')
    leads = read_leads(jsonl)
    assert [lead.lead_id for lead in leads] == ["x", "pat@acme.com"]
    assert leads[1].facts["email_domain"] == "acme.com" and leads[1].ts is None

    bad = tmp_path / "bad.csv"
    bad.write_text("lead_id,country,ts\na,GB,2026-13-45\n", encoding="utf-8")
    with pytest.raises(LeadFileError, match=r"bad.csv:2: ts '2026-13-45' is not a time; use ISO 8601"):
        read_leads(bad)
    nothing = tmp_path / "nothing.csv"
    nothing.write_text("colour,size\nred,1\n", encoding="utf-8")
    with pytest.raises(LeadFileError, match="no lead fields found"):
        read_leads(nothing)

    code, out, err = invoke("rules", "simulate", "--rules", str(ALT), "--leads", str(csv_file), "--no-chart")
    assert code == 0
    assert "moved: 1 leads change team (33.3%)" in out
    assert "a                                  Hottechi, JP" in out
    code, out, err = invoke("rules", "simulate", "--rules", str(ALT), "--leads", str(bad), "--no-chart")
    assert code == 2 and "bad.csv:2" in err


async def test_replay_form_fills_from_the_events_topic(broker_server: ManagedProcess) -> None:
    settings = Settings.of(kafka_url=f"kafka://127.0.0.1:{broker_server.port}",
                        topic_events=f"replay-{os.getpid()}-{id(object())}", topic_partitions=2)
    await ensure_topics(settings.kafka)
    t0 = datetime(2026, 11, 2, 9, tzinfo=UTC).timestamp()

    def form(eid: str, email: str, ts: float, **fields: str) -> Event:
        return Event(event_id=eid, type=EventType.FORM_FILL, ts=ts, source="form", email=email,
                     form_id="demo-request", fields=fields)

    events = [
        form("e0", "early@acme.com", t0 - 3600, country="JP"),  # before the window
        form("e1", "jane@acme.com", t0 + 60, country="JP", company="Hottechi"),
        Event(event_id="e2", type=EventType.PAGE_VIEW, ts=t0 + 120, source="pixel", visitor_id="v1",
              url="https://example.com/pricing"),
        form("e3", "Jane@Acme.com", t0 + 180, region="Kanto"),  # same lead, fields merged
        form("e4", "bob@example.de", t0 + 240, country="DE"),
        form("e5", "late@acme.com", t0 + 7200, country="US"),  # after the window
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for ev in events:
            key, value = encode_event(ev)
            await producer.send_and_wait(settings.kafka.topic_events, value, key=key, timestamp_ms=int(ev.ts * 1000))
        await producer.send_and_wait(settings.kafka.topic_events, b"not json", key=b"x", timestamp_ms=int(t0 * 1000) + 1)
    finally:
        await producer.stop()

    seen: list[int] = []
    leads, read = await asyncio.wait_for(
        replay_form_fills(settings, datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t0 + 3600, UTC),
                          progress=seen.append), 60)
    assert read == 5  # e1..e4 and the garbage message, nothing outside the window
    assert seen and seen[-1] == 5
    by_email = {str(lead.facts["email"]): lead for lead in leads}
    assert set(by_email) == {"jane@acme.com", "bob@example.de"}
    jane = by_email["jane@acme.com"]
    assert jane.lead_id == keys.lead_id_for_email("jane@acme.com") and jane.ts == t0 + 60
    assert jane.facts == {"form_id": "demo-request", "source": "form", "country": "JP", "company": "Hottechi",
                          "region": "Kanto", "email": "jane@acme.com", "email_domain": "acme.com"}
    assert orjson.dumps(sorted(by_email))  # plain data
