"""Benchmark: Redis memory per lead, per key type, on the full-path bench's traffic.

    python -m bench.redis_memory [--events 100000] [--visitors 30000] [--accounts 300] [--json PATH]
                                 [--markdown [PATH]] [--label TEXT]

Drives the worker's scoring step (``router.worker.batch.apply_batch``: identity
resolution, merges, accounts, lead Lua) over the events the full-path bench's
worker phase produces (``bench.traffic.Population`` / ``Traffic(..., mix=MIX)``,
same seeds, one event per millisecond, pseudonymised as the collector hands them
on) into a private redis-server, in batches of the worker's size, closing each
crossing as the worker would (``commit_assignment``).  Then:

* ``INFO memory`` ``used_memory`` growth, per lead and per 100,000 leads (all keys:
  accounts, identity links, de-dup sets, ...), as the full-path bench reports it;
* ``MEMORY USAGE`` (exact, ``SAMPLES 0``) of every key of every lead, summed per key
  type (hash, seen, reasons, recent, ids, fields, ...), per lead and per known and
  anonymous lead, with each type's Redis encodings (a listpack vs a hashtable or
  skiplist is often the whole difference) and its mean entry length.

Takes well under a minute at the defaults.  ``--markdown`` rewrites the
``<!-- redis memory -->`` section of BENCHMARKS.md with a before/after table when
given a ``--before`` JSON file from an earlier run (the hand-written ``<!-- redis memory notes -->`` after
it says what the figures mean and what bounds them).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.report import write_section
from bench.traffic import MIX, Population, Traffic
from models import Event
from router.cli.bench import output_root
from router.dev.servers import start_redis
from router.settings import DEFAULT_ICP, DEFAULT_SCORING
from router.storage import keys
from router.storage.live_config import load_icp_file, load_scoring_file
from router.storage.pii import pseudonym, truncate_ip
from router.storage.store import RedisStore
from router.worker.batch import apply_batch

SECTION = "redis memory"
MASTER = "bench-redis-memory-master-key"  # pseudonyms only; nothing is sealed here

# Per-lead key types, in keys.apply_keys order, then the lead's account tie.
TYPES = ("hash", "seen", "reasons", "recent", "history", "ids", "fields")


def events(n: int, visitors: int, accounts: int, seed: int = 1) -> list[Event]:
    """The full-path bench's worker-phase backlog (same seeds), as the worker sees it past the collector."""
    traffic = Traffic(Population(seed, visitors, accounts), seed=seed + 2, mix=MIX)
    base = 1_790_000_000.0
    out: list[Event] = []
    for i in range(n):
        _, ev = traffic.event(base + i / 1000.0)
        out.append(dataclasses.replace(
            ev, visitor_id=pseudonym(MASTER, ev.visitor_id) if ev.visitor_id else None,
            user_id=pseudonym(MASTER, ev.user_id) if ev.user_id else None, ip=truncate_ip(ev.ip)))
    return out


LEAD_KEY = re.compile(r"^lr:\{L:([^}]+)\}:(\w+)")
ACCOUNT_KEY = re.compile(r"^lr:\{C:[^}]+\}:(\w+)$")
LEAD_KINDS = {"lead": "hash", "seen": "seen", "reasons": "reasons", "recent": "recent", "history": "history",
              "ids": "ids", "fields": "fields"}


def kind_of(name: str) -> tuple[str, str]:
    """(lead id or '', key type) of a key name."""
    m = LEAD_KEY.match(name)
    if m:
        return m.group(1), LEAD_KINDS.get(m.group(2), "lead:" + m.group(2))
    m = ACCOUNT_KEY.match(name)
    if m:
        return "", "account:" + m.group(1)
    if name.startswith("lr:la:"):
        return name[len("lr:la:"):], "account tie"
    if name.startswith("lr:id:"):
        return "", "identity link"
    return "", "other:" + ":".join(name.split(":")[:2])


async def entry_bytes(redis: Redis, name: str, kind: str) -> list[int]:
    """The lengths of one key's entries (list items, zset members, hash field+value, set members)."""
    if kind == "list":
        return [len(x) for x in await redis.lrange(name, 0, -1)]
    if kind == "zset":
        return [len(x) for x in await redis.zrange(name, 0, -1)]
    if kind == "hash":
        return [len(k) + len(v) for k, v in (await redis.hgetall(name)).items()]
    if kind == "set":
        return [len(x) for x in await redis.smembers(name)]
    return []


async def census(redis: Redis) -> dict[str, Any]:
    """Every key by type: MEMORY USAGE (exact), encodings, entries; leads split known / anonymous / merged stub."""
    names = [k.decode() async for k in redis.scan_iter(count=5000)]
    sizes: list[int] = []
    encs: list[str] = []
    types: list[str] = []
    for start in range(0, len(names), 2000):
        pipe = redis.pipeline(transaction=False)
        for n in names[start:start + 2000]:
            pipe.memory_usage(n, samples=0)
            pipe.object("encoding", n)
            pipe.type(n)
        raw = await pipe.execute()
        sizes += [int(x or 0) for x in raw[0::3]]
        encs += [(x.decode() if isinstance(x, bytes) else str(x or "")) for x in raw[1::3]]
        types += [(x.decode() if isinstance(x, bytes) else str(x)) for x in raw[2::3]]
    hashes = [n for n in names if n.endswith(":lead") and n.startswith("lr:{L:")]
    pipe = redis.pipeline(transaction=False)
    for n in hashes:
        pipe.hexists(n, "merged_into")
    stub_ids = {kind_of(n)[0] for n, merged in zip(hashes, await pipe.execute(), strict=True) if merged}
    leads = {kind_of(n)[0] for n in hashes} - stub_ids
    counted = {"all": len(leads), "known": sum(keys.is_email_lead(x) for x in leads)}
    counted["anonymous"] = counted["all"] - counted["known"]
    per: dict[str, dict[str, float]] = {g: defaultdict(float) for g in ("all", "known", "anonymous", "elsewhere")}
    encodings: dict[str, Counter[str]] = defaultdict(Counter)
    enc_bytes: dict[str, Counter[str]] = defaultdict(Counter)
    sample: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, size, enc, typ in zip(names, sizes, encs, types, strict=True):
        lead_id, kind = kind_of(name)
        encodings[kind][enc] += 1
        enc_bytes[kind][enc] += size
        if lead_id in leads:
            group = "known" if keys.is_email_lead(lead_id) else "anonymous"
            for g in ("all", group):
                per[g][kind] += size
                per[g][kind + ":keys"] += 1
            if len(sample[kind]) < 2000:
                sample[kind].append((name, typ))
        else:
            kind = "merged stub" if lead_id in stub_ids else kind
            per["elsewhere"][kind] += size
            per["elsewhere"][kind + ":keys"] += 1
    entries: dict[str, dict[str, float]] = {}
    for kind, picked in sample.items():
        lens: list[int] = []
        for name, typ in picked:
            lens += await entry_bytes(redis, name, typ)
        entries[kind] = {"mean": sum(lens) / len(lens) if lens else 0.0, "max": max(lens, default=0),
                         "per_key": len(lens) / max(1, len(picked)), "over_64": sum(x > 64 for x in lens),
                         "sampled": len(lens)}
    out: dict[str, Any] = {"leads": counted, "stubs": len(stub_ids), "keys": len(names), "per_lead": {},
                           "entries": entries, "encodings": {k: dict(v) for k, v in encodings.items()},
                           "encoding_bytes": {k: dict(v) for k, v in enc_bytes.items()},
                           "total_usage": sum(sizes)}
    for g, totals in per.items():
        n = max(1, counted["all" if g == "elsewhere" else g])
        out["per_lead"][g] = {k: v / n for k, v in totals.items()}
    return out


async def run(a: argparse.Namespace) -> dict[str, Any]:
    config = load_scoring_file(DEFAULT_SCORING)
    icp = load_icp_file(DEFAULT_ICP)
    evs = events(a.events, a.visitors, a.accounts)
    server = start_redis()
    redis = Redis.from_url(f"redis://127.0.0.1:{server.port}/0")
    try:
        cfg = await redis.config_get("*max-listpack*")
        store = RedisStore(redis)
        versions = f"scoring={config.version};icp={icp.version}"
        before = int((await redis.info("memory"))["used_memory"])
        t0 = time.perf_counter()
        for i in range(0, len(evs), a.batch):
            chunk = evs[i:i + a.batch]
            out = await apply_batch(store, config, chunk, chunk[-1].ts, icp=icp, versions=versions)
            for plan, r in zip(out.plans, out.results, strict=True):
                if r.needs_routing:
                    await store.commit_assignment(plan.lead_id, r.crossing, f"{plan.lead_id}:{r.crossing}",
                                                  "bench-rep", "Bench Rep", "bench", "bench", "bench", plan.event.ts)
        took = time.perf_counter() - t0
        used = int((await redis.info("memory"))["used_memory"]) - before
        c = await census(redis)
        c["used_bytes"] = used
        c["per_100k_mb"] = used / max(1, c["leads"]["all"]) * 100_000 / 1e6
        c["events"] = a.events
        c["apply_s"] = took
        c["redis_version"] = (await redis.info("server"))["redis_version"]
        c["listpack_config"] = {str(k): str(v) for k, v in cfg.items()}
        return c
    finally:
        await redis.aclose()
        server.stop()


def _parts(per: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in per.items() if not k.endswith(":keys")}


def table(now: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    """Markdown rows: bytes per lead by key type (the lead's own keys, then everything else spread over leads)."""
    head = "| key type | " + ("before, B/lead | after, B/lead |" if before else "B/lead |") + " encodings (after) | " \
        "entries/key | mean entry, B |"
    lines = [head, "|---|" + ("---|---|" if before else "---|") + "---|---|---|"]
    rows: list[tuple[str, str, str]] = [(k, "all", k) for k in (*TYPES, "account tie")]
    others = set(_parts(now["per_lead"]["elsewhere"])) | (set(_parts(before["per_lead"]["elsewhere"])) if before else set())
    rows += [(k, "elsewhere", f"{k} (per lead)") for k in sorted(others)]
    for kind, group, label in rows:
        v = now["per_lead"][group].get(kind, 0.0)
        b = before["per_lead"][group].get(kind, 0.0) if before else 0.0
        if not v and not b:
            continue
        enc = ", ".join(f"{e} {n:,}" for e, n in sorted(now["encodings"].get(kind, {}).items(), key=lambda x: -x[1]))
        e = now["entries"].get(kind, {})
        row = f"| {label} | " + (f"{b:,.0f} | " if before else "") + f"{v:,.0f} | {enc} | "
        row += f"{e.get('per_key', 0.0):,.1f} | {e.get('mean', 0.0):,.0f} |" if e else " | |"
        lines.append(row)
    total = sum(_parts(now["per_lead"]["all"]).values())
    row = "| **lead's own keys** | "
    if before:
        row += f"**{sum(_parts(before['per_lead']['all']).values()):,.0f}** | "
    lines.append(row + f"**{total:,.0f}** | | | |")
    for g in ("known", "anonymous"):
        row = f"| per {g} lead, own keys | "
        if before:
            row += f"{sum(_parts(before['per_lead'][g]).values()):,.0f} | "
        lines.append(row + f"{sum(_parts(now['per_lead'][g]).values()):,.0f} | | | |")
    return lines


def report(c: dict[str, Any]) -> str:
    n = c["leads"]
    lines = [f"{c['events']:,} events in {c['apply_s']:.1f} s -> {n['all']:,} leads ({n['known']:,} known, "
             f"{n['anonymous']:,} anonymous), {c['stubs']:,} merged stubs, {c['keys']:,} keys; Redis {c['redis_version']}",
             f"used_memory grew {c['used_bytes'] / 1e6:,.1f} MB: {c['used_bytes'] / max(1, n['all']):,.0f} B per lead, "
             f"{c['per_100k_mb']:,.1f} MB per 100,000 leads "
             f"({c['used_bytes'] / max(1, n['all'] + c['stubs']) * 1e5 / 1e6:,.1f} MB counting merged stubs as leads, "
             "as the full-path bench does); MEMORY USAGE of all keys "
             f"{c['total_usage'] / max(1, n['all']):,.0f} B per lead", ""]
    for g in ("all", "known", "anonymous", "elsewhere"):
        per = _parts(c["per_lead"][g])
        parts = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(per.items(), key=lambda x: -x[1]))
        label = "other keys, per lead" if g == "elsewhere" else f"{g} lead's own keys"
        lines.append(f"{label}: {sum(per.values()):,.0f} B ({parts})")
    lines.append("")
    for k, e in sorted(c["entries"].items()):
        by_enc = ", ".join(f"{enc} {n:,} keys {c['encoding_bytes'][k][enc] / 1e6:,.2f} MB"
                           for enc, n in c["encodings"].get(k, {}).items())
        lines.append(f"{k:12} {by_enc}; entries/key {e['per_key']:,.1f}, entry mean "
                     f"{e['mean']:,.1f} B, max {e['max']:.0f} B, >64 B: {e['over_64']:.0f} of {e['sampled']:.0f} sampled")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--visitors", type=int, default=30_000)
    p.add_argument("--accounts", type=int, default=300)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--before", type=Path, default=None, help="JSON of an earlier run, for --markdown's table")
    p.add_argument("--markdown", nargs="?", type=Path, const=output_root() / "BENCHMARKS.md", default=None,
                   help="rewrite the <!-- redis memory --> section of this file (default BENCHMARKS.md)")
    a = p.parse_args()
    c = asyncio.run(run(a))
    print(report(c))
    if a.json:
        a.json.write_text(json.dumps(c, indent=1))
    if a.markdown:
        before = json.loads(a.before.read_text()) if a.before else None
        cmd = f"python -m bench.redis_memory --events {a.events} --visitors {a.visitors} --accounts {a.accounts}"
        text = "\n".join([
            f"## Redis memory per lead ({time.strftime('%Y-%m-%d')})",
            "",
            f"Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}; "
            f"redis-server {c['redis_version']} (default listpack limits).",
            f"Command: `{cmd}`: the worker's scoring step (`apply_batch`) over the full-path bench's backlog "
            "traffic, `MEMORY USAGE` of every key of every lead.",
            "",
            *table(c, before),
            "",
            f"{c['leads']['all']:,} leads ({c['leads']['known']:,} known, {c['leads']['anonymous']:,} anonymous): "
            + (f"`used_memory` {before['per_100k_mb']:,.0f} MB -> " if before else "`used_memory` ")
            + f"**{c['per_100k_mb']:,.0f} MB per 100,000 leads** (accounts, identity links and ties included).",
        ])
        write_section(a.markdown, text, SECTION)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
