"""``leadrouter scoring|icp test|publish|rollback|history`` and the worker following the published version.

A broken scoring or ICP file is refused on publish with file:line while the
running version keeps scoring; a good one takes over at the worker's next
poll, and every lead scored records the versions that scored it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.cli import main as cli
from router.storage import keys
from router.storage.config_store import ICP, SCORING, ConfigStore, check_files
from router.storage.live_config import LiveFile, RedisConfigSource, load_rules_file
from router.storage.redis import sync_redis_from_url
from router.storage.store import RedisStore
from router.worker.pipeline import Pipeline
from scoring import IcpConfig, ScoringConfig
from tests.support import sync_flush

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000.0
Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name in ("scoring.yaml", "scoring_test.yaml", "icp.yaml", "icp_test.yaml"):
        shutil.copy(REPO / "scoring" / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str, files: Path
           ) -> Invoke:
    for name in list(os.environ):
        if name.startswith("LEADROUTER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LEADROUTER_SCORING_FILE", str(files / "scoring.yaml"))
    monkeypatch.setenv("LEADROUTER_ICP_FILE", str(files / "icp.yaml"))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("router.cli.scoring",))
    with sync_redis_from_url(redis_url) as client:
        sync_flush(client)

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def pricing(eid: str, email: str, ts: float = T0) -> bytes:
    return orjson.dumps(Event(event_id=eid, type=EventType.PAGE_VIEW, ts=ts, source="pixel", email=email,
                              url="https://www.example.com/pricing").to_dict())


def edit(path: Path, old: str, new: str, target: Path | None = None) -> Path:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    out = target or path
    out.write_text(text.replace(old, new), encoding="utf-8")
    return out


PRICING_10 = "    url: ^/pricing(?:[/?]|$)\n    points: 10\n"
PRICING_20 = "    url: ^/pricing(?:[/?]|$)\n    points: 20\n"


async def test_published_scoring_takes_over_and_leads_record_the_versions(redis: Redis, files: Path,
                                                                         invoke: Invoke) -> None:
    scoring: RedisConfigSource[ScoringConfig] = RedisConfigSource(SCORING, files / "scoring.yaml", redis,
                                                                  label="scoring-pub")
    icp: RedisConfigSource[IcpConfig] = RedisConfigSource(ICP, files / "icp.yaml", redis, label="icp-pub")
    routing = LiveFile.open(REPO / "rules" / "routing.yaml", load_rules_file, "routing-pub")

    async def publish_alert(key: str, value: bytes) -> None:
        pass

    store = RedisStore(redis)
    pipeline = Pipeline(store, scoring, routing, publish_alert, icp=icp, clock=lambda: T0)
    await pipeline.process([pricing("e1", "a@ex.test")])
    file_hash = scoring.current.version
    lead = await store.lead_hash(keys.lead_id_for_email("a@ex.test"))
    assert float(lead["score"]) == 11 and lead["versions"] == f"scoring={file_hash};icp={icp.current.version}"

    # A file that does not compile is refused with file and line; nothing is published.
    broken = edit(files / "scoring.yaml", "    cap_per_day: 30      # three", "    cap_per_dya: 30      # three",
                  files / "broken.yaml")
    shutil.copy(files / "scoring_test.yaml", files / "broken_test.yaml")
    code, out, err = await asyncio.to_thread(invoke, "scoring", "publish", "--file", str(broken), "--author", "ops")
    line = next(i for i, text in enumerate(broken.read_text().splitlines(), 1) if "cap_per_dya" in text)
    assert code == 1 and f"{broken}:{line}: rule 'pricing-page': unknown key 'cap_per_dya'" in err
    assert "did you mean 'cap_per_day'?" in err and "the running version keeps scoring" in err
    assert await redis.get(keys.config_active("scoring")) is None
    assert await scoring.poll() is False and scoring.current.version == file_hash

    # A file whose cases fail is refused with the case.
    doubled = edit(files / "scoring.yaml", PRICING_10, PRICING_20, files / "doubled.yaml")
    shutil.copy(files / "scoring_test.yaml", files / "doubled_test.yaml")
    code, out, err = await asyncio.to_thread(invoke, "scoring", "publish", "--scoring", str(doubled), "--author", "ops")
    assert code == 1 and "'a pricing view earns the page point and the pricing points': expected points 11" in err

    # With the cases updated it publishes; the worker switches at its next poll.
    edit(files / "doubled_test.yaml", "expect: {points: 11,", "expect: {points: 21,")
    code, out, err = await asyncio.to_thread(invoke, "scoring", "publish", "--file", str(doubled), "--author", "maria", "--note", "pricing x2")
    assert code == 0, err
    assert "published scoring v1" in out and "active now v1, was the file" in out
    assert await scoring.poll() is True
    v1 = scoring.tag
    assert v1.startswith("v1:") and v1 != f"v1:{file_hash}"
    await pipeline.process([pricing("e2", "b@ex.test")])
    lead = await store.lead_hash(keys.lead_id_for_email("b@ex.test"))
    assert float(lead["score"]) == 21 and lead["versions"].startswith(f"scoring={v1};icp=")

    # Publish the original again (v2), then roll back to v1; history has all of it.
    code, out, err = await asyncio.to_thread(invoke, "scoring", "publish", "--author", "ops", "--note", "back to 10")
    assert code == 0 and "published scoring v2" in out
    assert await scoring.poll() is True and scoring.tag == f"v2:{file_hash}"
    code, out, err = await asyncio.to_thread(invoke, "scoring", "rollback", "v1", "--author", "maria", "--note", "again")
    assert code == 0 and "rolled scoring back to v1" in out and "was v2" in out
    assert await scoring.poll() is True and scoring.tag == v1
    code, out, err = await asyncio.to_thread(invoke, "scoring", "history")
    assert code == 0
    assert "rollback  v2 -> v1  by maria  'again'" in out and "publish   file -> v1  by maria  'pricing x2'" in out
    code, out, err = await asyncio.to_thread(invoke, "scoring", "rollback", "v1", "--author", "maria")
    assert code == 2 and "v1 is already the active scoring version" in err

    # A stored version this worker cannot compile is rejected; the running one keeps scoring.
    await redis.hset(keys.config_versions("scoring"), "9", orjson.dumps({"content": "threshold: [", "source": "x",
                                                                         "author": "x", "ts": 1, "sha256": "x",
                                                                         "content_hash": "x"}))
    await redis.set(keys.config_active("scoring"), "9")
    assert await scoring.poll() is False and scoring.tag == v1
    await pipeline.process([pricing("e3", "c@ex.test")])
    assert float((await store.lead_hash(keys.lead_id_for_email("c@ex.test")))["score"]) == 21


async def test_icp_publish_refuses_a_broken_file_and_follows_a_good_one(redis: Redis, files: Path,
                                                                       invoke: Invoke) -> None:
    icp: RedisConfigSource[IcpConfig] = RedisConfigSource(ICP, files / "icp.yaml", redis, label="icp-pub2")
    before = icp.current.version
    broken = edit(files / "icp.yaml", "  A: 70\n", "  A: 170\n", files / "bad.yaml")
    shutil.copy(files / "icp_test.yaml", files / "bad_test.yaml")
    code, out, err = await asyncio.to_thread(invoke, "icp", "publish", "--icp", str(broken), "--author", "ops")
    assert code == 1 and f"{broken}:" in err and "grades" in err
    assert await icp.poll() is False and icp.current.version == before

    code, out, err = await asyncio.to_thread(invoke, "icp", "test")
    assert code == 0 and "4 cases, 4 passed, 0 failed" in out
    stricter = edit(files / "icp.yaml", "  A: 70\n", "  A: 75\n", files / "strict.yaml")
    shutil.copy(files / "icp_test.yaml", files / "strict_test.yaml")
    code, out, err = await asyncio.to_thread(invoke, "icp", "publish", "--icp", str(stricter), "--author", "ops")
    assert code == 0, err
    assert await icp.poll() is True and icp.tag.startswith("v1:") and icp.current.grades["A"] == 75
    published = await ConfigStore(redis, ICP).active()
    assert published is not None and published.cases_count == 4 and published.author == "ops"


def test_check_files_reports_failures_without_raising(files: Path) -> None:
    edit(files / "scoring_test.yaml", "expect: {points: 2, reasons: [snowplow-email-open]}",
         "expect: {points: 3, reasons: [snowplow-email-open]}")
    check = check_files(SCORING, files / "scoring.yaml")
    [failure] = check.failures
    assert "expected points 3, got 2 points from [snowplow-email-open]" in failure.message
