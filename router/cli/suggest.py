"""``leadrouter scoring suggest``: a new threshold and rule points from the logged crossings and their outcomes.

::

    leadrouter scoring suggest [--file scoring.yaml] [--out scoring.candidate.yaml] [--max-missed 0.05]
                               [--min-support 20]

Reads the crossings the worker logged (``lr:vectors``), where each was routed,
and the leads' lifecycle steps (accepted, rejected, won, lost), proposes a
raised threshold and halved points for rules whose crossings rarely win
(:mod:`scoring.suggest`, which says what such a backtest can measure), prints a
backtest of each change (MQLs per day, accepted and won per MQL, won deals
missed, load per team), and writes the combined candidate as a scoring file:
the same text with only the changed numbers, so ``diff`` shows them.  The
candidate is compiled and run against the scoring test cases before it is
written; ops then test and publish it like any scoring file
(``leadrouter scoring test --file ...``, ``leadrouter scoring publish --file ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from router.errors import RouterError
from router.settings import Settings
from router.storage.config_store import SCORING, ConfigRejectedError, run_checks
from router.storage.decisions import lifecycle_events, read_decisions, read_outcomes
from router.storage.live_config import load_scoring_file
from router.storage.redis import create_redis
from router.storage.rules_store import cases_path_for, read_text
from router.worker.learning import first_records
from scoring.suggest import Backtest, LoggedCrossing, SuggestFileError, edit_scoring_text, suggest


class SuggestError(RouterError):
    """``leadrouter scoring suggest`` could not produce a candidate."""


async def logged_crossings(settings: Settings) -> list[LoggedCrossing]:
    redis = create_redis(settings.redis, role="cli")
    try:
        records = await read_decisions(redis)
        crossings = first_records(records, "crossing")
        routes = {(r["lead_id"], int(r.get("crossing", 0) or 0)): r for r in first_records(records, "route")}
        events = await lifecycle_events(redis, [str(c.get("lead_id", "")) for c in crossings],
                                        await read_outcomes(redis))
    except RedisError as exc:
        msg = (f"Redis at {settings.redis.url} failed ({type(exc).__name__}: {exc}); check REDIS_URL and that "
               "redis-server is running")
        raise SuggestError(msg) from exc
    finally:
        await redis.aclose()
    by_lead: dict[str, list[tuple[float, str]]] = {}
    for lead_id, ts, what in events:
        by_lead.setdefault(lead_id, []).append((ts, what))
    ordered = sorted(crossings, key=lambda r: (str(r.get("lead_id", "")), float(r.get("ts", 0.0))))
    out: list[LoggedCrossing] = []
    for i, r in enumerate(ordered):
        lead_id, start = str(r.get("lead_id", "")), float(r.get("ts", 0.0))
        nxt = ordered[i + 1] if i + 1 < len(ordered) else None
        end = float(nxt["ts"]) if nxt is not None and nxt.get("lead_id") == lead_id else float("inf")
        steps = {what for ts, what in by_lead.get(lead_id, ()) if start <= ts < end}
        route = routes.get((lead_id, int(r.get("crossing", 0) or 0)), {})
        rules = {str(k): float(v) for k, v in (r.get("rules") or {}).items()}
        out.append(LoggedCrossing(lead_id, start, float(r.get("score", 0.0) or 0.0), str(r.get("trigger", "")),
                                  rules, str(route.get("team", "")), "accepted" in steps, "won" in steps,
                                  bool(steps & {"won", "lost", "rejected"})))
    return out


def _row(label: str, bt: Backtest) -> str:
    load = ", ".join(f"{team} {n}" for team, n in bt.load.items()) or "-"
    return (f"  {label}\n    MQLs {bt.mqls} ({bt.mqls_per_day:.1f}/day)  accepted/MQL {bt.accepted_per_mql:.1%}  "
            f"won/MQL {bt.won_per_mql:.1%}  won deals missed {bt.won_missed} of {bt.won_total}\n"
            f"    load per team: {load}")


def cmd_suggest(settings: Settings, args: argparse.Namespace) -> int:
    path: Path = args.file or settings.files.scoring_file
    config = load_scoring_file(path)
    crossings = asyncio.run(logged_crossings(settings))
    if not crossings:
        raise SuggestError("no logged crossings in lr:vectors yet: the worker logs one per crossing; run it with "
                           "traffic (./scripts/dev) and record outcomes first")
    closed = sum(c.closed for c in crossings)
    print(f"logged crossings {len(crossings)}, with an outcome {closed}, won {sum(c.won for c in crossings)}, "
          f"accepted {sum(c.accepted for c in crossings)}")
    points = {r.name: r.points for r in config.rules}
    s = suggest(crossings, threshold=config.threshold, points=points, max_missed=args.max_missed,
                min_support=args.min_support)
    print(f"\nbacktests over the logged crossings ({path}, threshold {config.threshold:g}):")
    for label, bt in s.results.items():
        print(_row(label, bt))
    print("\nrules:")
    for f in s.rules:
        change = f" -> {f.proposal:g}" if f.proposal is not None else ""
        print(f"  {f.rule} ({f.points:g}{change}): {f.crossings} closed crossings; {f.note}")
    text = read_text(path, "scoring file", "check the --file path")
    try:
        candidate_text = edit_scoring_text(text, s.combined, config.threshold)
    except SuggestFileError as exc:
        raise SuggestError(f"{path}: {exc}; the candidate was not written") from exc
    cases: Path = args.cases or cases_path_for(path)
    try:
        check = run_checks(SCORING, candidate_text, str(args.out), read_text(cases, "test cases", "pass --cases"),
                           str(cases))
    except ConfigRejectedError as exc:
        raise SuggestError(f"the candidate does not validate, so it was not written: {exc}") from exc
    _write(args.out, candidate_text)
    failed = len(check.failures)
    print(f"\ncandidate {args.out}: {s.combined.label(config.threshold)}")
    print(f"  compiles; {len(check.results) - failed} of {len(check.results)} cases in {cases} pass"
          + (" (the failing ones pin the old numbers: update them if the change is wanted)" if failed else ""))
    for failure in check.failures[:10]:
        print(f"  FAIL {failure.message}")
    print(f"  next: diff {path} {args.out}; leadrouter scoring test --file {args.out} --cases {cases}; "
          f"leadrouter scoring publish --file {args.out} --cases {cases} --author NAME")
    return 0


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise SuggestError(f"cannot write {path}: {exc}; pass a writable --out FILE") from exc


def add_parser(gsub: Any) -> None:
    s = gsub.add_parser("suggest", help="propose a threshold and rule points from logged crossings and outcomes, "
                                        "each backtested; write a candidate scoring file")
    s.add_argument("--file", "--scoring", dest="file", type=Path, default=None,
                   help="the scoring file to start from (default: the configured scoring.yaml)")
    s.add_argument("--cases", type=Path, default=None, help="test cases (default: <file>_test.yaml beside it)")
    s.add_argument("--out", type=Path, default=Path("scoring.candidate.yaml"),
                   help="where to write the candidate (default ./scoring.candidate.yaml)")
    s.add_argument("--max-missed", type=float, default=0.05,
                   help="share of the logged won deals a raised threshold may miss (default 0.05)")
    s.add_argument("--min-support", type=int, default=20,
                   help="closed crossings a rule needs before its points are judged (default 20)")
    s.set_defaults(fn=cmd_suggest)


__all__ = ["add_parser", "cmd_suggest", "logged_crossings"]
