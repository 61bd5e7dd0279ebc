"""``leadrouter rules test|publish|rollback|history`` through the real CLI entry point and a real Redis."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from router.cli import main as cli
from router.storage import keys
from router.storage.redis import sync_redis_from_url
from tests.support import sync_flush

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str, tmp_path: Path
           ) -> Invoke:
    """Run ``leadrouter ARGS`` in-process with the rules commands wired in; (exit code, stdout, stderr)."""
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
    shutil.copy(REPO / "rules" / "examples" / "routing_alt.yaml", tmp_path / "alt.yaml")
    shutil.copy(REPO / "rules" / "examples" / "routing_alt_test.yaml", tmp_path / "alt_test.yaml")

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_rules_test_passes_and_fails_with_expected_actual_and_path(invoke: Invoke, tmp_path: Path) -> None:
    code, out, err = invoke("rules", "test")
    assert code == 0 and "23 cases, 23 passed, 0 failed" in out

    cases = (tmp_path / "routing_test.yaml").read_text(encoding="utf-8").replace(
        "lead: {country: JP}\n  expect: {team: west, rule: apac}", "lead: {country: JP}\n  expect: {team: east}")
    (tmp_path / "wrong_test.yaml").write_text(cases, encoding="utf-8")
    code, out, err = invoke("rules", "test", "--cases", str(tmp_path / "wrong_test.yaml"))
    assert code == 1
    assert f"FAIL {tmp_path / 'wrong_test.yaml'}:" in out
    assert "case 'japan': expected east, got west via apac (path: emea:no, north-america-east:no, " \
           "north-america-west:no, north-america-central:no, apac:yes)" in out
    assert "23 cases, 22 passed, 1 failed" in err

    code, out, err = invoke("rules", "test", "--rules", str(tmp_path / "alt.yaml"))
    assert code == 0 and "alt_test.yaml: 16 cases, 16 passed" in out

    (tmp_path / "lonely.yaml").write_text((tmp_path / "alt.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    code, out, err = invoke("rules", "test", "--rules", str(tmp_path / "lonely.yaml"))
    assert code == 2 and "lonely_test.yaml" in err and "or pass --cases FILE" in err


def test_publish_history_rollback(invoke: Invoke, tmp_path: Path, redis_url: str) -> None:
    code, out, _ = invoke("rules", "history")
    assert code == 0 and "nothing published yet" in out

    code, out, _ = invoke("rules", "publish", "--author", "alice", "--note", "baseline")
    assert code == 0
    assert "published v1 from" in out and "23 test cases passed) by alice; active now v1, was the rules file" in out
    assert "decisions record rules_version v1:2026-11-22.1" in out

    broken = tmp_path / "broken.yaml"
    broken.write_text((tmp_path / "alt.yaml").read_text(encoding="utf-8").replace("team: central", "team: centrall"),
                      encoding="utf-8")
    shutil.copy(tmp_path / "alt_test.yaml", tmp_path / "broken_test.yaml")
    code, out, err = invoke("rules", "publish", "--rules", str(broken), "--author", "mallory")
    assert code == 1 and "not published" in err and "unknown team 'centrall'; did you mean 'central'?" in err

    code, out, _ = invoke("rules", "publish", "--rules", str(tmp_path / "alt.yaml"),
                          "--author", "bob", "--note", "APAC to central")
    assert code == 0 and "published v2" in out and "was v1" in out

    code, out, _ = invoke("rules", "rollback", "v1", "--author", "carol", "--note", "undo")
    assert code == 0 and "rolled back to v1 (v1:2026-11-22.1) by carol; was v2" in out
    code, out, err = invoke("rules", "rollback", "1", "--author", "carol")
    assert code == 2 and "already the active rules version" in err
    code, out, err = invoke("rules", "rollback", "three", "--author", "carol")
    assert code == 2 and "is not a version number" in err

    code, out, _ = invoke("rules", "history")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].startswith("v2 ") and "bob" in lines[1] and "APAC to central" in lines[1]
    assert lines[2].startswith("v1 ") and " * " in lines[2] and "alice" in lines[2]
    assert "rollback  v2 -> v1  by carol  'undo'" in out
    assert "publish   file -> v1  by alice  'baseline'" in out

    redis = sync_redis_from_url(redis_url)
    try:
        assert redis.get(keys.rules_active()) == b"1"
        assert redis.hlen(keys.rules_versions()) == 2
        assert redis.llen(keys.rules_history()) == 3
    finally:
        redis.close()
