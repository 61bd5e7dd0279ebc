"""Benchmark: the worker's scoring step with a real Redis in the loop.

Measures events/s of ``router.worker.batch.apply_batch`` (identity resolution,
merges, points, lead and account Lua updates: everything a batch does except
Kafka and alert delivery) over realistic traffic, next to two baselines that
bound it: the pure-Python scoring alone, and the bare Redis round trip of one
no-op Lua call per event in the same pipelines.

    python -m bench.scoring_step [--events 100000] [--batch 500]

Prints the figures and rewrites its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import sys
import time
import uuid

from redis.asyncio import Redis

from models import Event, EventType
from router.cli.bench import output_root
from router.dev.demo import COMPANIES, FIRST, LAST, PAGES, TITLES
from router.dev.servers import start_redis
from router.settings import DEFAULT_SCORING
from router.storage.live_config import load_scoring_file
from router.storage.store import RedisStore
from router.worker.batch import apply_batch
from scoring import score_event
from scoring.account_intent import AccountIntentConfig

SECTION = "scoring step"


def traffic(n: int, visitors: int, seed: int = 42, start: float = 1_790_000_000.0) -> list[Event]:
    """Page views from a skewed population of visitors; 3% form fills, 10% opens."""
    rng = random.Random(seed)
    vids = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(visitors)]
    people = [(f"{rng.choice(FIRST)}.{rng.choice(LAST)}{i}".lower(), rng.choice(COMPANIES), rng.choice(TITLES))
              for i in range(visitors)]
    paths = [p for p, _, _ in PAGES]
    weights = [w for _, _, w in PAGES]
    out: list[Event] = []
    t = start
    for i in range(n):
        t += rng.expovariate(1000.0)
        k = int(visitors * rng.random() ** 2.5)  # skewed: a minority of visitors makes most hits
        vid = vids[k]
        who, company, title = people[k]
        roll = rng.random()
        eid = f"b{i:09d}"
        if roll < 0.03:
            out.append(Event(event_id=eid, type=EventType.FORM_FILL, ts=t, source="form", visitor_id=vid,
                             email=f"{who}@{company[1]}", form_id=rng.choice(["whitepaper-download", "newsletter",
                                                                               "demo-request"]),
                             fields={"company": company[0], "job_title": title, "country": company[2]}))
        elif roll < 0.13:
            out.append(Event(event_id=eid, type=EventType.EMAIL_OPEN, ts=t, source="email",
                             email=f"{who}@{company[1]}", campaign="nov-product-update"))
        else:
            path = rng.choices(paths, weights=weights, k=1)[0]
            out.append(Event(event_id=eid, type=EventType.PAGE_VIEW, ts=t, source="pixel", visitor_id=vid,
                             url=f"https://www.example-saas.com{path}"))
    return out


def progress(label: str, done: int, total: int, started: float, step: int) -> None:
    """One line per tenth of the run."""
    tenth = max(1, total // 10)
    if done // tenth != (done - step) // tenth or done >= total:
        rate = done / max(1e-9, time.perf_counter() - started)
        print(f"  {label}: {done:>9,}/{total:,} events  {rate:>9,.0f}/s", file=sys.stderr, flush=True)


async def run(n: int, batch: int, visitors: int) -> dict[str, float]:
    config = load_scoring_file(DEFAULT_SCORING)
    events = traffic(n, visitors)
    server = start_redis()
    redis = Redis.from_url(f"redis://127.0.0.1:{server.port}/0")
    try:
        # Baseline 1: pure scoring, no I/O.
        t0 = time.perf_counter()
        for ev in events:
            score_event(ev, config)
        pure = n / (time.perf_counter() - t0)
        # Baseline 2: one no-op Lua call per event, pipelined per batch.
        noop = redis.register_script("return 1")
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            pipe = redis.pipeline(transaction=False)
            for ev in events[i:i + batch]:
                await noop(keys=[ev.event_id], args=[ev.event_id], client=pipe)
            await pipe.execute()
            progress("bare Redis step", min(i + batch, n), n, t0, batch)
        bare = n / (time.perf_counter() - t0)
        await redis.flushdb()
        # The real step.
        store = RedisStore(redis)
        intent = AccountIntentConfig()
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            chunk = events[i:i + batch]
            out = await apply_batch(store, config, chunk, chunk[-1].ts, intent)
            # The worker routes every crossing and closes it right away; do the
            # closing here too (routing itself is measured by the full-path bench).
            for plan, r in zip(out.plans, out.results, strict=True):
                if r.needs_routing:
                    await store.commit_assignment(plan.lead_id, r.crossing, f"{plan.lead_id}:{r.crossing}",
                                                  "bench-rep", "Bench Rep", "bench", "bench", "bench", plan.event.ts)
            progress("scoring step", min(i + batch, n), n, t0, batch)
        full = n / (time.perf_counter() - t0)
        info = await redis.info("memory")
        leads = len([k async for k in redis.scan_iter(match="lr:{L:*}:lead", count=1000)])
        return {"pure": pure, "bare": bare, "full": full, "leads": float(leads),
                "redis_bytes": float(info["used_memory"])}
    finally:
        await redis.aclose()
        server.stop()


def write_section(text: str) -> None:
    path = output_root() / "BENCHMARKS.md"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    start = doc.find(f"<!-- {SECTION} -->")
    end = doc.find(f"<!-- /{SECTION} -->")
    block = f"<!-- {SECTION} -->\n{text}\n<!-- /{SECTION} -->"
    doc = doc[:start] + block + doc[end + len(f"<!-- /{SECTION} -->"):] if start >= 0 and end >= 0 else \
        doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--visitors", type=int, default=20_000)
    a = p.parse_args()
    r = asyncio.run(run(a.events, a.batch, a.visitors))
    per_100k = r["redis_bytes"] / max(1.0, r["leads"]) * 100_000
    lines = [
        f"## Scoring step with Redis in the loop ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; one process, private redis-server on loopback.",
        f"Command: `python -m bench.scoring_step --events {a.events} --batch {a.batch} --visitors {a.visitors}`",
        "",
        "| step | events/s | ratio |",
        "|---|---|---|",
        f"| pure scoring (`score_event`, no I/O) | {r['pure']:,.0f} | bound |",
        f"| bare Redis: one no-op Lua per event, pipelined per batch | {r['bare']:,.0f} | baseline |",
        f"| full scoring step (`apply_batch`: identity, merges, caps, grade, lead + account Lua; crossings closed) | {r['full']:,.0f} | "
        f"{r['full'] / r['bare']:.2f}x of bare Redis |",
        "",
        f"Leads and profiles stored: {r['leads']:,.0f}; Redis memory {r['redis_bytes'] / 1e6:,.1f} MB "
        f"(about {per_100k / 1e6:,.0f} MB per 100,000 profiles, including accounts and identity keys).",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(text)


if __name__ == "__main__":
    main()
