"""``leadrouter model train --from-outcomes`` against a real redis-server: logged crossings joined to outcomes,
split by time, trained, evaluated, and activated only with enough leads and conversions."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import random
import re
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from router.cli import main as cli
from router.storage import keys
from router.storage.decisions import log_decision
from router.storage.model_registry import ACTIVE_FILE, load_model
from scoring.learn import join_outcomes

pytestmark = pytest.mark.integration

DAY = 86400.0
T0 = 1_790_000_000.0


def hidden_logit(f: dict[str, object]) -> float:
    z = -2.6 + (1.2 if f["lead_origin"] == "form" else 0.0) + 0.12 * float(f["page_views"] or 0)  # type: ignore[arg-type]
    z += 0.9 if f["occupation"] == "working professional" else -0.3
    z -= 1.0 if f["email_opt_out"] == 1.0 else 0.0
    return z


async def seed(redis: Redis, n: int, seed: int = 3) -> tuple[int, int]:
    """``n`` crossed leads over 90 days with outcomes drawn from a hidden logistic model; (leads, won)."""
    rng = random.Random(seed)
    won = 0
    for i in range(n):
        lead_id = f"L{i:05d}"
        ts = T0 + 90 * DAY * i / n
        f: dict[str, object] = {
            "lead_origin": rng.choice(["form", "tracking"]), "page_views": float(rng.randint(0, 25)),
            "last_activity": rng.choice(["email opened", "page visited on website", None]),
            "country": rng.choice(["india", "united states", None]),
            "occupation": rng.choice(["working professional", "student", None]),
            "email_opt_out": rng.choice([0.0, 1.0, None])}
        await log_decision(redis, {"kind": "crossing", "lead_id": lead_id, "crossing": 1, "ts": ts, "features": f,
                                   "score": 70.0, "threshold": 60.0, "rules": {}})
        y = rng.random() < 1 / (1 + math.exp(-hidden_logit(f)))
        won += y
        closed = ts + rng.uniform(1, 20) * DAY
        if y or rng.random() < 0.5:
            await redis.xadd(keys.OUTCOMES, {"json": orjson.dumps(
                {"lead_id": lead_id, "outcome": "won" if y else "lost", "ts": closed, "features": {}})})
        else:
            await redis.rpush(keys.history(lead_id), orjson.dumps({"ts": closed, "action": "reject", "rep": "r"}))
    # Still open, and an outcome from before the crossing: both left out.
    await log_decision(redis, {"kind": "crossing", "lead_id": "OPEN", "crossing": 1, "ts": T0, "features": {}})
    await log_decision(redis, {"kind": "crossing", "lead_id": "EARLY", "crossing": 2, "ts": T0 + DAY, "features": {}})
    await redis.xadd(keys.OUTCOMES, {"json": orjson.dumps({"lead_id": "EARLY", "outcome": "won", "ts": T0})})
    return n, won


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def run(*argv: str) -> tuple[int, str, str]:
    """``leadrouter ARGV`` through the real parser, in a thread (the CLI runs its own event loop)."""
    return await asyncio.to_thread(_run, *argv)


@pytest.fixture(autouse=True)
def _env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LEADROUTER_REDIS_URL", redis_url)


def test_labels_follow_the_first_outcome_inside_the_crossing() -> None:
    crossings = [{"lead_id": "a", "crossing": 1, "ts": 10.0, "features": {"x": 1}},
                 {"lead_id": "a", "crossing": 2, "ts": 50.0, "features": {"x": 2}},
                 {"lead_id": "b", "crossing": 1, "ts": 10.0, "features": {}}]
    events = [("a", 20.0, "rejected"), ("a", 60.0, "won"), ("a", 70.0, "lost"), ("b", 5.0, "won"),
              ("b", 30.0, "accepted")]
    examples, report = join_outcomes(crossings, events)
    assert [(e.lead_id, e.crossing, e.label, e.outcome) for e in examples] == [("a", 1, 0, "rejected"),
                                                                              ("a", 2, 1, "won")]
    assert (report.crossings, report.labelled, report.open, report.leads, report.lead_conversions) == (3, 2, 1, 1, 1)


async def test_too_few_outcomes_are_refused_with_the_counts_and_the_flag(redis: Redis, tmp_path: Path) -> None:
    leads, won = await seed(redis, 300)
    code, out, err = await run("model", "train", "--from-outcomes", "--registry", str(tmp_path), "--activate")
    assert code == 3, err
    refusal = err.splitlines()[-1]
    assert f"{leads} labelled leads and {won} conversions" in refusal
    assert "at least 1,000 leads and 120 conversions" in refusal
    assert f"--min-leads {leads} --min-conversions {won}" in refusal
    assert not (tmp_path / ACTIVE_FILE).exists()
    assert "AUC" in out  # trained and evaluated, only not activated
    # Nor can it be activated by hand afterwards.
    small = re.search(r"^version\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    code, _, err = await run("model", "activate", small, "--registry", str(tmp_path))
    assert code == 2 and f"model {small} is not activated: {leads} labelled leads" in err and "--min-leads" in err
    assert not (tmp_path / ACTIVE_FILE).exists()
    # The demo override: the bar named in the refusal.
    code, out, err = await run("model", "train", "--from-outcomes", "--registry", str(tmp_path), "--activate",
                         "--min-leads", str(leads), "--min-conversions", str(won))
    assert code == 0, err
    version = re.search(r"^activated (\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    assert (tmp_path / ACTIVE_FILE).read_text().strip() == version


async def test_enough_outcomes_train_on_the_past_evaluate_on_the_future_and_activate(
        redis: Redis, tmp_path: Path) -> None:
    leads, won = await seed(redis, 1600, seed=11)
    assert won >= 120
    code, out, err = await run("model", "train", "--from-outcomes", "--registry", str(tmp_path), "--activate")
    assert code == 0, err
    # Progress on stderr, figures on stdout.
    assert "logged decisions" in err and "training on the 1200 older crossings" in err
    assert "2 still open (left out)" in err  # OPEN, and EARLY whose outcome predates its crossing
    assert "split     trained on 1200 older crossings" in out and "evaluated on 400 newer ones" in out
    auc = float(re.search(r"^AUC\s+(\d\.\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    assert auc >= 0.72, out
    assert re.search(r"^log loss\s+0\.\d+", out, re.M) and re.search(r"^ECE\s+0\.\d+", out, re.M)
    assert re.search(r"^\s+1\s+40\s+\d+", out, re.M)  # the lift table's top decile
    version = re.search(r"^activated (\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    folder = tmp_path / version
    for png in ("calibration.png", "lift.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((folder / "metadata.json").read_text())
    split = meta["time_split"]
    assert split["train_until"] <= split["test_from"] and split["test_rows"] == 400
    assert meta["activation"]["allowed"] and meta["data"]["leads"] == leads
    loaded = load_model(tmp_path, version)
    assert set(loaded.schema.names) <= {"lead_origin", "page_views", "last_activity", "country", "occupation",
                                        "email_opt_out"}
    hot = {"lead_origin": "form", "page_views": 20.0, "occupation": "working professional", "email_opt_out": 0.0}
    cold = {"lead_origin": "tracking", "page_views": 0.0, "occupation": "student", "email_opt_out": 1.0}
    p_hot, p_cold = loaded.model.predict_proba([hot, cold])
    assert p_hot > 0.5 > 0.1 > p_cold
