"""Benchmark: churn.  Does Redis memory stay flat while anonymous visitors come and go for weeks?

    python -m bench.churn [--days 84] [--ttl-days 30] [--day-seconds 3] [--visitors-per-day 200]
    leadrouter bench --phases churn [same options, prefixed --churn-]

Drives the worker's scoring step (``router.worker.batch.apply_batch``: identity
resolution, merges, account roll-up, lead Lua) with simulated weeks of traffic
into two private redis-servers at once, one with expiry in force
(``LEADROUTER_ANONYMOUS_TTL_DAYS``) and one with it off (``=0``), and samples
``INFO memory`` ``used_memory`` after each simulated day.

Traffic: every day ``--visitors-per-day`` new anonymous visitors arrive; each
comes back a few times over the following days (1-4 page views a visit); one in
ten is a signed-in app user (identify with a user id, and a group call tying it
to one of the accounts); 3% fill a form on their last visit and become known
leads (their anonymous history merges in), who keep visiting and opening emails.

Time: event timestamps run on the simulated clock (one day of events per
simulated day), but Redis TTLs run on Redis's real clock, so every expiry
setting is scaled by the same factor: one simulated day is ``--day-seconds`` real
seconds (the anonymous TTL, the de-duplication window, the known-link TTL and the
merged-stub TTL), the worker's ``now`` is the real clock, and account members are
trimmed in event time at the simulated TTL.  A day whose events take longer than
``--day-seconds`` to process is reported (the scaling is then off by the lag).

Reports bytes per known lead (with its reasons, timeline, de-dup set, identifiers
and links) and per anonymous visitor (profile, links, account tie), measured
with ``MEMORY USAGE`` over the keys themselves, plus the memory of both servers
over time; rewrites the ``<!-- churn -->`` section of BENCHMARKS.md and writes
bench/results/churn.png.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import platform
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from bench.report import write_section
from models import Event, EventType
from router.cli.bench import add_churn_arguments, output_root
from router.dev.demo import COMPANIES, FIRST, LAST, PAGES, TITLES
from router.dev.servers import ManagedProcess, start_redis
from router.settings import DEFAULT_SCORING
from router.storage import keys
from router.storage.live_config import load_scoring_file
from router.storage.store import RedisStore
from router.worker.batch import apply_batch
from scoring.account_intent import AccountIntentConfig

SECTION = "churn"
DAY = 86400.0
START = 1_790_000_000.0  # simulated day 0 (2026-09-21)
BATCH = 500
APP_SHARE = 0.10  # of new visitors: signed-in app users (user id, group call)
FORM_SHARE = 0.03  # of new visitors: fill a form on their last visit (become known)
KNOWN_RETURN = 0.10  # chance a known lead visits on a given day
KNOWN_OPEN = 0.15  # chance a known lead opens an email on a given day
SAMPLE = 400  # leads measured with MEMORY USAGE per kind


@dataclass
class Visitor:
    vid: str
    uid: str | None
    email: str | None
    title: str
    company: tuple[str, str, str, str]
    visits_left: int
    next_day: int
    first: bool = True


@dataclass
class Traffic:
    """The simulated population, one day of events at a time."""

    seed: int
    visitors_per_day: int
    rng: random.Random = field(init=False)
    paths: list[str] = field(init=False)
    weights: list[float] = field(init=False)
    active: list[Visitor] = field(default_factory=list)
    known: list[Visitor] = field(default_factory=list)
    n: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"visitors": 0, "app_users": 0, "known": 0})

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.paths = [p for p, _, _ in PAGES]
        self.weights = [w for _, _, w in PAGES]

    def _eid(self) -> str:
        self.n += 1
        return f"c{self.n:010d}"

    def _pages(self, v: Visitor, t: float, out: list[Event]) -> float:
        for _ in range(self.rng.randint(1, 4)):
            t += self.rng.uniform(5, 120)
            path = self.rng.choices(self.paths, weights=self.weights, k=1)[0]
            out.append(Event(event_id=self._eid(), type=EventType.PAGE_VIEW, ts=t, source="pixel", visitor_id=v.vid,
                             url=f"https://www.example-saas.com{path}"))
        return t

    def day(self, d: int) -> list[Event]:
        rng = self.rng
        base = START + d * DAY
        out: list[Event] = []
        for _ in range(self.visitors_per_day):
            i = self.counts["visitors"]
            self.counts["visitors"] += 1
            app = rng.random() < APP_SHARE
            self.counts["app_users"] += app
            who = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{i}".lower()
            company = rng.choice(COMPANIES)
            self.active.append(Visitor(
                vid=uuid.UUID(int=rng.getrandbits(128)).hex, uid=f"app-{i}" if app else None,
                email=f"{who}@{company[1]}" if rng.random() < FORM_SHARE else None, title=rng.choice(TITLES),
                company=company, visits_left=1 + int(rng.expovariate(1 / 1.5)), next_day=d))
        still: list[Visitor] = []
        for v in self.active:
            if v.next_day != d:
                still.append(v)
                continue
            t = base + rng.uniform(0, DAY - 3600)
            if v.uid and v.first:
                out.append(Event(event_id=self._eid(), type=EventType.IDENTIFY, ts=t, source="segment",
                                 visitor_id=v.vid, user_id=v.uid, traits={"title": v.title}))
                out.append(Event(event_id=self._eid(), type=EventType.GROUP, ts=t + 1, source="segment",
                                 user_id=v.uid, group_id=v.company[1],
                                 traits={"name": v.company[0], "website": f"https://{v.company[1]}"}))
            v.first = False
            t = self._pages(v, t + 2, out)
            v.visits_left -= 1
            if v.visits_left > 0:
                v.next_day = d + 1 + int(rng.expovariate(1 / 4.0))
                still.append(v)
            elif v.email:
                out.append(Event(event_id=self._eid(), type=EventType.FORM_FILL, ts=t + 30, source="form",
                                 visitor_id=v.vid, email=v.email, form_id="whitepaper-download",
                                 fields={"company": v.company[0], "job_title": v.title, "country": v.company[2]}))
                self.known.append(v)
                self.counts["known"] += 1
        self.active = still
        for v in self.known:
            if v.next_day >= d:
                continue  # identified today
            if rng.random() < KNOWN_RETURN:
                self._pages(v, base + rng.uniform(0, DAY - 3600), out)
            if rng.random() < KNOWN_OPEN:
                out.append(Event(event_id=self._eid(), type=EventType.EMAIL_OPEN, ts=base + rng.uniform(0, DAY),
                                 source="email", email=v.email, campaign="weekly-digest"))
        out.sort(key=lambda e: e.ts)
        return out


@dataclass
class Run:
    label: str
    ttl_days: float
    server: ManagedProcess
    redis: Redis
    store: RedisStore
    memory: list[float] = field(default_factory=list)  # used_memory after each day, bytes
    keys: list[int] = field(default_factory=list)


@dataclass
class Census:
    """Live leads by kind and the bytes their keys take (MEMORY USAGE, a sample of each kind)."""

    known: int = 0
    anonymous: int = 0
    stubs: int = 0
    known_bytes: float = 0.0
    anonymous_bytes: float = 0.0
    links: int = 0
    known_parts: dict[str, float] = field(default_factory=dict)  # key kind -> mean bytes per lead
    anonymous_parts: dict[str, float] = field(default_factory=dict)


async def usage(redis: Redis, names: Sequence[str]) -> list[int]:
    pipe = redis.pipeline(transaction=False)
    for n in names:
        pipe.memory_usage(n, samples=0)
    return [int(x or 0) for x in await pipe.execute()]


PARTS = ("hash", "seen", "reasons", "recent", "ids", "account tie", "history", "links")


async def census(redis: Redis, rng: random.Random) -> Census:
    c = Census()
    known: list[str] = []
    anon: list[str] = []
    async for raw in redis.scan_iter(match="lr:{L:*}:lead", count=2000):
        lead_id = raw.decode()[len("lr:{L:"):-len("}:lead")]
        if keys.is_email_lead(lead_id):
            known.append(lead_id)
        elif await redis.hexists(raw, "merged_into"):
            c.stubs += 1
        else:
            anon.append(lead_id)
    c.known, c.anonymous = len(known), len(anon)
    c.links = len([k async for k in redis.scan_iter(match="lr:id:*", count=2000)])

    async def per_lead(ids: list[str]) -> dict[str, float]:
        parts = dict.fromkeys(PARTS, 0.0)
        if not ids:
            return parts
        picked = rng.sample(ids, min(SAMPLE, len(ids)))
        for lead_id in picked:
            names = [*keys.apply_keys(lead_id), keys.lead_account(lead_id)]
            for m in await redis.smembers(keys.lead_ids(lead_id)):
                kind, _, value = (m.decode() if isinstance(m, bytes) else m).partition(":")
                names.append(keys.visitor(value) if kind == "v" else keys.user(value))
            sizes = await usage(redis, names)
            for part, size in zip(PARTS[:-1], sizes, strict=False):
                parts[part] += size
            parts["links"] += sum(sizes[len(PARTS) - 1:])
        return {k: v / len(picked) for k, v in parts.items()}

    c.known_parts = await per_lead(known)
    c.anonymous_parts = await per_lead(anon)
    c.known_bytes, c.anonymous_bytes = sum(c.known_parts.values()), sum(c.anonymous_parts.values())
    return c


async def run(a: argparse.Namespace) -> dict[str, object]:
    config = load_scoring_file(DEFAULT_SCORING)
    intent = AccountIntentConfig()
    s = a.day_seconds
    runs: list[Run] = []
    try:
        for label, ttl_days in (("expiry", a.ttl_days), ("no expiry", 0.0)):
            server = start_redis()
            redis = Redis.from_url(f"redis://127.0.0.1:{server.port}/0")
            store = RedisStore(redis, seen_window_s=max(1, round(7 * s)),
                               anonymous_ttl_s=round(ttl_days * s), known_link_ttl_s=round(395 * s) if ttl_days else 0,
                               member_horizon_s=ttl_days * DAY, merged_ttl_s=max(1, round(keys.MERGED_TTL_S / DAY * s)))
            runs.append(Run(label, ttl_days, server, redis, store))
            if not a.baseline:
                break
        base_mem = [float((await r.redis.info("memory"))["used_memory"]) for r in runs]
        traffic = Traffic(a.seed, a.visitors_per_day)
        events = 0
        starts: list[float] = []  # when each simulated day began, on the real clock
        t0 = time.monotonic()
        for d in range(a.days):
            # A day lasts at least day_seconds; one whose events take longer stretches (reported).
            if starts and time.monotonic() < starts[-1] + s:
                await asyncio.sleep(starts[-1] + s - time.monotonic())
            starts.append(time.monotonic())
            day = traffic.day(d)
            events += len(day)
            for r in runs:
                for i in range(0, len(day), BATCH):
                    await apply_batch(r.store, config, day[i:i + BATCH], time.time(), intent)
            for r in runs:
                r.memory.append(float((await r.redis.info("memory"))["used_memory"]))
                r.keys.append(int(await r.redis.dbsize()))
            if d % 7 == 6 or d == a.days - 1:
                print(f"  day {d + 1:>4}: {events:>9,} events; " + "; ".join(
                    f"{r.label} {r.memory[-1] / 1e6:6.1f} MB, {r.keys[-1]:,} keys" for r in runs),
                    file=sys.stderr, flush=True)
        end = time.monotonic()
        starts.append(max(end, starts[-1] + s))  # the last day lasts a day too
        rng = random.Random(a.seed)
        censuses = [await census(r.redis, rng) for r in runs]
        return {"runs": runs, "base": base_mem, "censuses": censuses, "events": events, "traffic": traffic,
                "starts": starts, "elapsed": end - t0,
                "redis_version": str((await runs[0].redis.info("server"))["redis_version"])}
    finally:
        for r in runs:
            await r.redis.aclose()
            r.server.stop()


def slope_per_week(series: list[float], last_days: int) -> float:
    """Least-squares growth of the last ``last_days`` samples, per 7 days."""
    ys = series[-last_days:]
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(ys) / n
    num = sum((x - mx) * (y - my) for x, y in enumerate(ys))
    den = sum((x - mx) ** 2 for x in range(n))
    return num / den * 7


def effective_ttl_days(starts: list[float], ttl_s: float) -> float:
    """How many simulated days the last ``ttl_s`` real seconds of the run covered (the TTL as the traffic saw it)."""
    end = starts[-1]
    covered = 0.0
    for d in range(len(starts) - 1, 0, -1):
        length = starts[d] - starts[d - 1]
        if end - starts[d - 1] >= ttl_s:
            return covered + (ttl_s - (end - starts[d])) / length
        covered += 1
    return covered


def render(a: argparse.Namespace, out: dict[str, object], command: str) -> str:
    runs: list[Run] = out["runs"]  # type: ignore[assignment]
    censuses: list[Census] = out["censuses"]  # type: ignore[assignment]
    traffic: Traffic = out["traffic"]  # type: ignore[assignment]
    base: list[float] = out["base"]  # type: ignore[assignment]
    starts: list[float] = out["starts"]  # type: ignore[assignment]
    lengths = [b - x for x, b in itertools.pairwise(starts)]
    long_days = [x for x in lengths if x > a.day_seconds * 1.05]
    eff = effective_ttl_days(starts, a.ttl_days * a.day_seconds)
    tail = max(7, min(28, a.days - int(a.ttl_days) - 14))
    c = censuses[0]
    lines = [
        f"## Churn: memory with anonymous visitors coming and going ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; redis-server {out['redis_version']}; one process driving "
        "the worker's scoring step (`apply_batch`: identity, merges, accounts, lead Lua) into two private "
        "redis-servers on loopback, the same traffic into each.",
        f"Command: `{command}` (took {out['elapsed']:,.0f} s)",
        "",
        f"Traffic: {a.days} simulated days ({a.days / 7:g} weeks), {a.visitors_per_day:,} new anonymous visitors a "
        f"day, each back a few times over the following days (1-4 page views a visit); {APP_SHARE:.0%} signed-in "
        f"app users (user id, group call to an account); {FORM_SHARE:.0%} fill a form and become known leads, who "
        f"keep visiting and opening emails. In all {traffic.counts['visitors']:,} visitors, "
        f"{traffic.counts['known']:,} known leads, {out['events']:,} events.",
        "",
        f"Time: one simulated day = {a.day_seconds:g} s of Redis's clock, and every TTL is scaled by that factor "
        f"(bench/churn.py). {len(long_days)} of {len(lengths)} days took longer to process than that "
        f"(longest {max(lengths, default=0):.1f} s; the machine was shared), so over the last part of the run the "
        f"{a.ttl_days:g}-day TTL covered {eff:.1f} simulated days.",
        "",
        f"| run | Redis memory, day {a.days} | mean of the last {tail} days | growth per week, last {tail} days "
        f"| keys, day {a.days} | live anonymous profiles | known leads |",
        "|---|---|---|---|---|---|---|",
    ]
    for r, cc, b in zip(runs, censuses, base, strict=True):
        ttl = f"LEADROUTER_ANONYMOUS_TTL_DAYS={r.ttl_days:g}"
        mem = [m - b for m in r.memory]
        lines.append(f"| {r.label} (`{ttl}`) | {mem[-1] / 1e6:,.1f} MB | {sum(mem[-tail:]) / tail / 1e6:,.1f} MB | "
                     f"{slope_per_week(mem, tail) / 1e6:+,.2f} MB | {r.keys[-1]:,} | {cc.anonymous:,} | "
                     f"{cc.known:,} |")
    lines += [
        "",
        f"Bytes per lead, `MEMORY USAGE` of every key it owns (a sample of up to {SAMPLE} of each kind, expiry run):",
        "",
        "| lead | total | " + " | ".join(PARTS) + " |",
        "|---|---|" + "---|" * len(PARTS),
        f"| known lead (kept for good) | **{c.known_bytes:,.0f}** | "
        + " | ".join(f"{c.known_parts.get(p, 0):,.0f}" for p in PARTS) + " |",
        f"| anonymous visitor (gone {a.ttl_days:g} days after its last event) | **{c.anonymous_bytes:,.0f}** | "
        + " | ".join(f"{c.anonymous_parts.get(p, 0):,.0f}" for p in PARTS) + " |",
        "",
        f"hash: fields, score, caps, merge markers; seen: counted event ids of the last 7 days; reasons: at most "
        f"{keys.REASONS_KEPT}; recent: the timeline, at most {keys.RECENT_KEPT}; ids: its visitor and user ids; "
        "account tie: `lr:la:<lead>`; history: assignments and transitions (none here: the bench routes nobody); "
        "links: visitor/user id -> lead. A visitor's own `A` profile needs no link.",
        "",
        f"With expiry, memory levels off once the first visitors' TTL has run out: it then holds the anonymous "
        f"visitors of the last TTL (about {a.visitors_per_day:,} a day x the TTL in days x "
        f"{c.anonymous_bytes:,.0f} bytes) and grows only with known leads "
        f"({traffic.counts['known'] / max(1, a.days) * 7:,.0f} a week here x {c.known_bytes:,.0f} bytes). At the "
        f"service's default of 90 days and, say, 10,000 new anonymous visitors a day, that is about "
        f"{10_000 * 90 * c.anonymous_bytes / 1e9:,.1f} GB for anonymous visitors, whatever the age of the "
        "deployment. What growth is left with expiry is known leads: new ones, and their reasons and timeline "
        "filling up to their caps. Without expiry every visitor ever seen stays. Until the first TTL runs out, "
        "expiry costs a little memory (Redis keeps an expiry entry per key with a TTL), and Redis frees expired "
        "keys by sampling, so a few percent of the keys counted may be expired but not yet freed. "
        "Plot: bench/results/churn.png.",
    ]
    return "\n".join(lines)


def plot(a: argparse.Namespace, out: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: list[Run] = out["runs"]  # type: ignore[assignment]
    base: list[float] = out["base"]  # type: ignore[assignment]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for r, b in zip(runs, base, strict=True):
        days = range(1, len(r.memory) + 1)
        top.plot(days, [(m - b) / 1e6 for m in r.memory], label=r.label)
        bottom.plot(days, r.keys, label=r.label)
    for ax in (top, bottom):
        ax.axvline(a.ttl_days, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
        ax.set_ylim(bottom=0)
    top.set_ylabel("Redis used_memory (MB)")
    top.set_title(f"Churn: {a.visitors_per_day:,} new anonymous visitors a day; anonymous TTL {a.ttl_days:g} days "
                  "(dotted line)")
    bottom.set_ylabel("keys")
    bottom.set_xlabel("simulated day")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def options(args: argparse.Namespace, prefix: str = "") -> argparse.Namespace:
    """The churn options out of a namespace whose names carry ``prefix`` (``churn_``)."""
    names = ("days", "ttl_days", "day_seconds", "visitors_per_day", "baseline")
    picked = {n: getattr(args, prefix + n) for n in names}
    return argparse.Namespace(seed=getattr(args, "seed", 1), **picked)


def run_from_args(a: argparse.Namespace, *, command: str, markdown: Path | None, plot_path: Path | None) -> int:
    if a.ttl_days < 7:
        print("bench.churn: --ttl-days must be at least 7 (the de-duplication window)", file=sys.stderr)
        return 2
    print(f"churn: {a.days} simulated days of {a.day_seconds:g} s, {a.visitors_per_day} new visitors a day",
          file=sys.stderr, flush=True)
    out = asyncio.run(run(a))
    text = render(a, out, command)
    print(text)
    if markdown is not None:
        write_section(markdown, text, SECTION)
        print(f"\nwrote the '<!-- {SECTION} -->' section of {markdown}", file=sys.stderr)
    if plot_path is not None:
        plot(a, out, plot_path)
        print(f"wrote {plot_path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m bench.churn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_churn_arguments(p)
    p.add_argument("--seed", type=int, default=1)
    root = output_root()
    p.add_argument("--markdown", type=Path, default=root / "BENCHMARKS.md")
    p.add_argument("--no-markdown", action="store_true")
    p.add_argument("--plot", type=Path, default=root / "bench" / "results" / "churn.png")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    return run_from_args(options(args), command="python -m bench.churn " + " ".join(argv),
                         markdown=None if args.no_markdown else args.markdown,
                         plot_path=None if args.no_plot else args.plot)


if __name__ == "__main__":
    sys.exit(main())
