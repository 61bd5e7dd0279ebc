"""``leadrouter scoring suggest`` against a real redis-server: proposals from logged crossings and outcomes,
each backtested, and a candidate scoring file that compiles and differs only in the proposed numbers."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import io
import random
import re
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from router.cli import main as cli
from router.storage import keys
from router.storage.decisions import log_decision
from router.storage.live_config import load_scoring_file
from scoring.suggest import Candidate, LoggedCrossing, backtest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCORING = REPO / "scoring" / "scoring.yaml"
DAY = 86400.0
T0 = 1_790_000_000.0


@pytest.fixture(autouse=True)
def _env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LEADROUTER_REDIS_URL", redis_url)


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def seed(redis: Redis, n: int = 400) -> None:
    """Crossings over 40 days: low scores and email-open-driven ones rarely win; hand-raisers often do."""
    rng = random.Random(7)
    for i in range(n):
        lead_id = f"L{i:04d}"
        ts = T0 + 40 * DAY * i / n
        kind = rng.random()
        if kind < 0.2:
            trigger, score, rules = "hand_raiser", 60.0, {"hand-raiser": 50.0, "form-fill": 10.0}
            p_won = 0.5
        else:
            score = rng.uniform(100, 150) if rng.random() < 0.7 else rng.uniform(175, 200)
            opens = rng.random() < 0.4
            rules = {"pricing-page": score * (0.3 if opens else 0.7), "page-view": 10.0}
            if opens:
                rules["email-open"] = score * 0.5
            trigger = "engagement>=100 & grade in A,B" if score < 150 else "engagement>=150"
            p_won = (0.05 if opens else 0.35) * (0.05 if score < 115 else 1.0)
        await log_decision(redis, {"kind": "crossing", "lead_id": lead_id, "crossing": 1, "ts": ts,
                                   "score": score, "threshold": 100.0, "trigger": trigger, "rules": rules,
                                   "features": {}})
        team = "east" if i % 3 else "central"
        await log_decision(redis, {"kind": "route", "lead_id": lead_id, "crossing": 1, "ts": ts, "team": team,
                                   "rep_id": "r", "features": {}})
        won = rng.random() < p_won
        steps = [{"ts": ts + 3600, "action": "accept"}] if won or rng.random() < 0.6 else []
        if won:
            await redis.xadd(keys.OUTCOMES, {"json": orjson.dumps({"lead_id": lead_id, "outcome": "won",
                                                                   "ts": ts + 10 * DAY})})
        elif steps:
            steps.append({"ts": ts + 5 * DAY, "action": "lost"})
        else:
            steps.append({"ts": ts + 7200, "action": "reject", "reason": "not-a-fit"})
        for s in steps:
            await redis.rpush(keys.history(lead_id), orjson.dumps(s))


def test_backtest_keeps_hand_raisers_and_rescored_crossings() -> None:
    a = LoggedCrossing("a", 0.0, 120.0, "engagement>=100 & grade in A,B", {"email-open": 40.0}, "east", True, True,
                       True)
    b = LoggedCrossing("b", DAY, 155.0, "engagement>=150", {"email-open": 20.0}, "west", False, False, True)
    h = LoggedCrossing("h", 2 * DAY, 50.0, "hand_raiser", {}, "east", True, True, True)
    base = backtest([a, b, h], Candidate(100.0), 100.0)
    assert (base.mqls, base.won, base.won_missed, base.load) == (3, 2, 0, {"east": 2, "west": 1})
    # Halving email-open takes 20 off a (100 still reached) and 10 off b (145: the 150 bar is missed).
    halved = backtest([a, b, h], Candidate(100.0, {"email-open": (2.0, 1.0)}), 100.0)
    assert (halved.mqls, halved.load) == (2, {"east": 2})
    # A bar raised to 110 scales the 150 clause to 165: b is missed, a (120) is kept.
    raised = backtest([a, b, h], Candidate(110.0), 100.0)
    assert raised.mqls == 2 and raised.won == 2 and raised.mqls_per_day == pytest.approx(1.0)


async def test_suggest_writes_a_valid_candidate_with_backtests(redis: Redis, tmp_path: Path) -> None:
    await seed(redis)
    out_file = tmp_path / "scoring.candidate.yaml"
    code, out, err = await asyncio.to_thread(_run, "scoring", "suggest", "--file", str(SCORING), "--out",
                                             str(out_file), "--max-missed", "0.1")
    assert code == 0, err + out
    assert re.search(r"logged crossings 400, with an outcome 400", out)
    # Every proposal has its backtest: MQLs per day, accepted and won per MQL, won deals missed, load per team.
    blocks = re.findall(r"MQLs (\d+) \((\d+\.\d)/day\)  accepted/MQL (\d+\.\d)%  won/MQL (\d+\.\d)%  "
                        r"won deals missed (\d+) of (\d+)\n    load per team: (.+)", out)
    assert len(blocks) >= 3, out
    assert blocks[0][0] == "400" and blocks[0][4] == "0"
    assert "central" in blocks[0][6] and "east" in blocks[0][6]
    assert "threshold 100 -> " in out and "email-open points 2 -> 1" in out
    assert re.search(r"email-open \(2 -> 1\): \d+ closed crossings; its crossings won", out)
    won_per_mql = [float(b[3]) for b in blocks]
    assert won_per_mql[-1] > won_per_mql[0]  # the combined candidate routes fewer, better leads
    # The candidate compiles (the same loader the service uses), and only the numbers changed.
    candidate = load_scoring_file(out_file)
    current = load_scoring_file(SCORING)
    assert candidate.threshold > current.threshold
    assert {r.name: r.points for r in candidate.rules}["email-open"] == 1
    diff = [line for line in difflib.unified_diff(SCORING.read_text().splitlines(), out_file.read_text().splitlines(),
                                                  lineterm="", n=0) if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert diff and all(re.search(r"(threshold|engagement_at_least|points):", line) for line in diff), diff
    assert "compiles;" in out and "cases in" in out
    # Ops can run the scoring cases against it.
    code, _, _ = await asyncio.to_thread(_run, "scoring", "test", "--file", str(out_file), "--cases",
                                         str(REPO / "scoring" / "scoring_test.yaml"))
    assert code in (0, 1)


async def test_without_logged_crossings_suggest_says_what_to_do(redis: Redis, tmp_path: Path) -> None:
    code, _, err = await asyncio.to_thread(_run, "scoring", "suggest", "--file", str(SCORING), "--out",
                                           str(tmp_path / "c.yaml"))
    assert code == 2 and "no logged crossings" in err and not (tmp_path / "c.yaml").exists()


async def test_redis_down_is_a_clear_error_for_suggest_and_training(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    from router.dev.servers import free_port

    down = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("REDIS_URL", down)
    monkeypatch.setenv("LEADROUTER_REDIS_URL", down)
    for argv in (("scoring", "suggest", "--file", str(SCORING), "--out", str(tmp_path / "c.yaml")),
                 ("model", "train", "--from-outcomes", "--registry", str(tmp_path / "reg"))):
        code, _, err = await asyncio.to_thread(_run, *argv)
        assert code == 2 and f"Redis at {down} failed" in err and "REDIS_URL" in err, err
