"""How fast ``leadrouter backtest`` replays archived history: events per second through the real pipeline.

Synthesises a busy B2B site's month (anonymous browsing in office hours, email
opens, content downloads that identify people, demo requests, SDK track
events) into an archive folder, then replays it once under the shipped
scoring, ICP and routing files on a private redis-server, as the backtest
does for each side.  Prints the figures for BENCHMARKS.md.

    python -m bench.backtest_replay --events 200000 --days 30
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis

from models import Event, EventType
from router.backtest.replay import Side, replay_side
from router.dev.servers import start_redis
from router.settings import PACKAGE_ROOT
from router.storage.archive import ArchiveWriter, ReadStats, read_archive
from router.storage.live_config import load_accounts_file, load_icp_file, load_rules_file, load_scoring_file

PAGES = ("/", "/pricing", "/product", "/features", "/blog/routing-101", "/case-studies/acme", "/docs/api",
         "/integrations/salesforce", "/careers", "/blog/speed-to-lead")
COUNTRIES = ("US", "US", "US", "GB", "DE", "FR", "NL", "AU", "JP", "BR", "IN", "CA")
INDUSTRIES = ("Software", "Banking", "Healthcare", "Manufacturing", "Retail", "Logistics", "Education")
TITLES = ("VP Sales", "Head of Revenue Operations", "Marketing Manager", "CTO", "IT Director", "Analyst",
          "Director of Sales", "Founder")


def synthesise(events: int, days: int, start: float, seed: int = 13) -> Iterator[Event]:
    """About ``events`` events over ``days`` days: office-hours weighted, people returning over weeks."""
    rng = random.Random(seed)
    n = 0
    person = 0
    while n < events:
        person += 1
        vid = f"v{person:07d}"
        company = f"company-{rng.randrange(events // 40 + 1)}"
        domain = f"{company}.example"
        email = f"p{person}@{domain}"
        day0 = rng.randrange(days)
        visits = rng.choice((1, 1, 1, 2, 2, 3, 5))
        known = False
        for v in range(visits):
            day = min(days - 1, day0 + v * rng.randrange(1, 6))
            hour = rng.choice((8, 9, 10, 11, 13, 14, 15, 16, 17, 20, 2))
            t = start + day * 86400 + hour * 3600 + rng.randrange(3600)
            for _ in range(rng.choice((1, 2, 3, 4, 6))):
                t += rng.randrange(10, 120)
                n += 1
                yield Event(event_id=f"e{n}", type=EventType.PAGE_VIEW, ts=t, source="pixel", visitor_id=vid,
                            email=email if known else None, url=f"https://www.example.com{rng.choice(PAGES)}")
            roll = rng.random()
            if roll < 0.10:
                n += 1
                yield Event(event_id=f"e{n}", type=EventType.EMAIL_OPEN, ts=t + 5, source="email", email=email,
                            campaign="nurture")
            elif roll < 0.16:
                n += 1
                known = True
                yield Event(event_id=f"e{n}", type=EventType.FORM_FILL, ts=t + 30, source="form", visitor_id=vid,
                            email=email, form_id="whitepaper-download",
                            fields={"company": company, "country": rng.choice(COUNTRIES),
                                    "job_title": rng.choice(TITLES), "industry": rng.choice(INDUSTRIES),
                                    "employees": str(rng.choice((20, 120, 600, 2500, 12000)))})
            elif roll < 0.18:
                n += 1
                yield Event(event_id=f"e{n}", type=EventType.FORM_FILL, ts=t + 40, source="segment",
                            visitor_id=vid, email=email if rng.random() < 0.7 else None, form_id="demo-request",
                            name="Demo Requested", fields={"country": rng.choice(COUNTRIES), "company": company})
                if rng.random() < 0.5:
                    n += 1
                    known = True
                    yield Event(event_id=f"e{n}", type=EventType.IDENTIFY, ts=t + 3600, source="segment",
                                visitor_id=vid, email=email)
            elif roll < 0.25:
                n += 1
                yield Event(event_id=f"e{n}", type=EventType.TRACK, ts=t + 20, source="rudderstack", visitor_id=vid,
                            name="Whitepaper Downloaded", traits={"format": "pdf"})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=500)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    start = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
    root = Path(tempfile.mkdtemp(prefix="leadrouter-bench-archive-"))
    writer = ArchiveWriter(root, writer_id="bench")
    began = time.perf_counter()
    chunk: list[bytes] = []
    import orjson

    for ev in synthesise(args.events, args.days, start):
        chunk.append(orjson.dumps(ev.to_dict()))
        if len(chunk) >= 5000:
            writer.append(chunk)
            chunk.clear()
    if chunk:
        writer.append(chunk)
    wrote_s = time.perf_counter() - began
    size = sum(f.stat().st_size for f in root.rglob("*.jsonl.gz"))
    began = time.perf_counter()
    stats = ReadStats()
    events = list(read_archive(root, datetime.fromtimestamp(start, UTC),
                               datetime.fromtimestamp(start + args.days * 86400 + 86400 * 7, UTC), stats))
    read_s = time.perf_counter() - began
    files = PACKAGE_ROOT
    side = Side("current", load_scoring_file(files / "scoring" / "scoring.yaml"),
                load_icp_file(files / "scoring" / "icp.yaml"), load_rules_file(files / "rules" / "routing.yaml"),
                load_accounts_file(files / "rules" / "accounts.yaml"))
    proc = start_redis()

    async def run() -> None:
        redis = Redis.from_url(f"redis://127.0.0.1:{proc.port}/0")
        try:
            result = await replay_side(redis, side, events, batch_size=args.batch_size)
        finally:
            await redis.aclose()
        print(f"archive: {len(events):,} events over {args.days} days in {stats.files} day files, "
              f"{size / 1e6:.1f} MB gzip ({size / max(1, len(events)):.0f} B/event); written in {wrote_s:.1f} s, "
              f"read and sorted in {read_s:.1f} s ({len(events) / read_s:,.0f} events/s)")
        print(f"replay (one side): {result.events:,} events in {result.seconds:.1f} s = "
              f"{result.events_per_s:,.0f} events/s; {len(result.crossings):,} MQLs, "
              f"{sum(c.trigger == 'hand_raiser' for c in result.crossings):,} hand-raisers, "
              f"{sum(c.held for c in result.crossings):,} held")

    try:
        asyncio.run(run())
    finally:
        proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
