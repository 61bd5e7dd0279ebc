"""The Taobao UserBehavior clickstream replayed through the full path at 10x and 100x speed.

The synthetic traffic of the other phases has a chosen skew and a steady rate;
real sites have neither.  This phase takes the real clickstream in
``../shared/datasets/taobao_userbehavior_events.csv`` (all events of 659 Taobao
users over nine days; see the datasets README) and sends it, with its real
inter-arrival times divided by the speed-up, to a real collector with a real
worker behind it.  Each shopper becomes a visitor on the demo site:

========  =====================================================================
pv        a page view of the item's product page (``/products/<category>/<item>``)
fav       a page view of ``/pricing`` (the shopper is weighing it up)
cart      a page view of ``/pricing?plan=team``
buy       the user's first buy is a demo request (hand-raiser form post with a
          work email); later buys are content-form posts
========  =====================================================================

The replay window is the data's densest stretch of ``data_seconds`` (picked by a
sliding window over the timestamps), so 10x and 100x both run for a few minutes
and both see the real bursts.  Latency is the same figure as the latency phase:
the collector's ``event_ts`` of the event that made the lead cross, read off the
assignments topic, to the Slack receiver's ``received_at``.

The pure parts (reading, windowing, scheduling, request shapes) are unit-tested
in ``tests/unit/bench/test_taobao.py``; the phase itself runs in ``leadrouter
bench --phases taobao``.
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import functools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

import aiohttp

from bench.report import TaobaoRun
from router.dev.demo import CONTENT_FORMS, HAND_RAISER_FORM
from router.dev.servers import free_port, wait_for_port
from router.storage.kafka import ensure_topics

if TYPE_CHECKING:
    from bench.full_path import Bench
    from bench.report import Results

Behavior = Literal["pv", "fav", "cart", "buy"]
BEHAVIORS: frozenset[str] = frozenset({"pv", "fav", "cart", "buy"})
DATASET = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "taobao_userbehavior_events.csv"
# The data set's documented span, in China time (UTC+8): rows outside it (a known quirk) are dropped.
SPAN_START = datetime(2017, 11, 24, 16, 0, tzinfo=UTC).timestamp()  # 2017-11-25 00:00 +08:00
SPAN_END = datetime(2017, 12, 3, 16, 0, tzinfo=UTC).timestamp()  # 2017-12-04 00:00 +08:00
SITE = "https://www.example-saas.com"
UA = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
      "Version/17.5 Safari/605.1.15")
DOMAINS = ("northwind-traders.com", "contoso-retail.com", "fabrikam-goods.com", "tailspin-market.com",
           "wingtip-shop.com", "adventure-works.com", "litware-store.com", "proseware-mall.com")
DEFAULT_DATA_SECONDS = {10.0: 3600.0, 100.0: 28800.0}  # 1 h of data at 10x (6 min), 8 h at 100x (4.8 min)


class TaobaoDataError(ValueError):
    """The clickstream file is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Click:
    ts: float
    user: str
    item: str
    category: str
    behavior: Behavior


def read_clicks(path: Path = DATASET) -> tuple[list[Click], int]:
    """The rows in the data's span, in time order (stable per user), and how many rows were dropped."""
    if not path.is_file():
        msg = f"the Taobao clickstream {path} is absent; the shared datasets folder must be beside the checkout"
        raise TaobaoDataError(msg)
    clicks: list[Click] = []
    dropped = 0
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        need = {"user_id", "item_id", "category_id", "behavior_type", "timestamp"}
        if not need <= set(reader.fieldnames or ()):
            msg = f"{path}: header {reader.fieldnames} lacks {sorted(need - set(reader.fieldnames or ()))}"
            raise TaobaoDataError(msg)
        for line, row in enumerate(reader, start=2):
            behavior = row["behavior_type"]
            try:
                ts = float(row["timestamp"])
            except ValueError:
                msg = f"{path}:{line}: timestamp {row['timestamp']!r} is not a number"
                raise TaobaoDataError(msg) from None
            if behavior not in BEHAVIORS or not SPAN_START <= ts < SPAN_END:
                dropped += 1
                continue
            clicks.append(Click(ts, row["user_id"], row["item_id"], row["category_id"], behavior))  # type: ignore[arg-type]
    clicks.sort(key=lambda c: c.ts)
    return clicks, dropped


def densest_window(clicks: Sequence[Click], seconds: float) -> list[Click]:
    """The ``seconds``-long stretch of time-sorted ``clicks`` holding the most of them (earliest on a tie)."""
    if not clicks:
        return []
    times = [c.ts for c in clicks]
    best_i, best_n = 0, 0
    for i, t in enumerate(times):
        n = bisect.bisect_left(times, t + seconds, lo=i) - i
        if n > best_n:
            best_i, best_n = i, n
    return list(clicks[best_i:best_i + best_n])


def schedule(clicks: Sequence[Click], speed: float) -> list[tuple[float, Click]]:
    """(seconds after the start, click) with the real gaps divided by ``speed``."""
    if speed <= 0:
        msg = f"speed {speed!r} must be above 0 (10 replays ten times faster than real time)"
        raise ValueError(msg)
    if not clicks:
        return []
    t0 = clicks[0].ts
    return [((c.ts - t0) / speed, c) for c in clicks]


def peak_rate(offsets: Iterable[float]) -> int:
    """The most sends in any one-second bucket of the schedule."""
    counts = Counter(math.floor(o) for o in offsets)
    return max(counts.values(), default=0)


@dataclass(frozen=True, slots=True)
class Shopper:
    user: str

    @property
    def vid(self) -> str:
        return f"taobao{int(self.user):014d}"

    @property
    def email(self) -> str:
        return f"shopper{self.user}@{DOMAINS[int(self.user) % len(DOMAINS)]}"

    @property
    def ip(self) -> str:
        n = int(self.user)
        return f"203.0.{(n >> 8) % 256}.{n % 254 + 1}"


@dataclass(frozen=True, slots=True)
class Request:
    kind: Literal["page", "demo", "form"]
    method: Literal["GET", "POST"]
    path: str
    headers: dict[str, str]
    body: bytes = b""


class Shop:
    """Renders clicks as the browser's requests, remembering who has bought and who has the cookie."""

    def __init__(self) -> None:
        self.bought: set[str] = set()
        self.cookied: set[str] = set()

    def request(self, c: Click) -> Request:
        s = Shopper(c.user)
        headers = {"User-Agent": UA, "X-Forwarded-For": s.ip}
        if s.vid in self.cookied:
            headers["Cookie"] = f"lr_vid={s.vid}"
        if c.behavior == "buy":
            hand_raise = c.user not in self.bought
            self.bought.add(c.user)
            form_id = HAND_RAISER_FORM if hand_raise else CONTENT_FORMS[int(c.item) % len(CONTENT_FORMS)]
            company = DOMAINS[int(c.user) % len(DOMAINS)].split(".")[0].replace("-", " ").title()
            data = {"form_id": form_id, "email": s.email, "first_name": "Shopper", "last_name": c.user,
                    "company": company, "job_title": "Head of Purchasing", "country": "CN", "consent": "true",
                    "vid": s.vid, "url": f"{SITE}/contact"}
            self.cookied.add(s.vid)
            return Request("demo" if hand_raise else "form", "POST", "/t/form",
                           {**headers, "Content-Type": "application/x-www-form-urlencoded"},
                           urlencode(data).encode())
        if c.behavior == "pv":
            url, title = f"{SITE}/products/{c.category}/{c.item}", f"Product {c.item}"
        elif c.behavior == "fav":
            url, title = f"{SITE}/pricing", "Pricing"
        else:
            url, title = f"{SITE}/pricing?plan=team", "Pricing: Team"
        params = {"url": url, "title": title}
        if s.vid not in self.cookied:
            params["vid"] = s.vid
            self.cookied.add(s.vid)
        return Request("page", "GET", f"/t/p.gif?{urlencode(params)}", headers)


EXPECTED = {"page": 200, "demo": 202, "form": 202}


async def replay(http: aiohttp.ClientSession, base_url: str, plan: Sequence[tuple[float, Click]],
                 *, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Send the plan on time; the load generator's result shape (wall_start/end, requests, errors, kinds, lag)."""
    shop = Shop()
    kinds: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()  # "form 429": what the non-2xx answers were
    errors = 0
    lags: list[float] = []
    sem = asyncio.Semaphore(64)
    pending: set[asyncio.Task[None]] = set()

    async def send(req: Request) -> None:
        nonlocal errors
        async with sem:
            try:
                async with http.request(req.method, base_url + req.path, headers=req.headers, data=req.body or None,
                                        allow_redirects=False,
                                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    await resp.read()
                    if resp.status != EXPECTED[req.kind]:
                        errors += 1
                        unexpected[f"{req.kind} {resp.status}"] += 1
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                errors += 1
                unexpected[f"{req.kind} {type(exc).__name__}"] += 1

    wall_start = time.time()
    start = time.monotonic()
    last_report = start
    for i, (offset, click) in enumerate(plan):
        delay = start + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, -delay) * 1000.0)
        req = shop.request(click)
        kinds[req.kind] += 1
        task = asyncio.create_task(send(req))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if say is not None and time.monotonic() - last_report >= 15.0:
            last_report = time.monotonic()
            say(f"{i + 1:,}/{len(plan):,} sent ({(i + 1) / len(plan):.0%}), {errors} errors")
    if pending:
        await asyncio.gather(*pending)
    wall_end = time.time()
    return {"wall_start": wall_start, "wall_end": wall_end, "seconds": wall_end - wall_start,
            "requests": sum(kinds.values()), "errors": errors, "kinds": dict(kinds), "lags_ms": lags,
            "unexpected": dict(unexpected)}


async def phase_taobao(bench: Bench, r: Results) -> None:
    """Replay the clickstream at each speed in ``bench.opts.taobao_speeds`` and record a TaobaoRun per speed."""
    clicks, dropped = await asyncio.to_thread(read_clicks, bench.opts.taobao_path)
    for speed in bench.opts.taobao_speeds:
        data_s = bench.opts.taobao_data_seconds or DEFAULT_DATA_SECONDS.get(speed, 180.0 * speed)
        window = densest_window(clicks, data_s)
        plan = schedule(window, speed)
        tag = f"taobao{speed:g}x"
        assert bench.redis is not None and bench.http is not None
        await bench.flush_redis()
        port = free_port()
        s = bench.settings_for(tag.replace(".", "_"), collector_port=port, public_url=f"http://127.0.0.1:{port}")
        await ensure_topics(s.kafka)
        async with bench.observe_assignments(s) as observed:
            collector = bench._spawn_service("collector", s, tag, port)
            wport = free_port()
            worker = bench._spawn_service("worker", s.with_(worker_web_port=wport), tag, wport)
            try:
                await asyncio.to_thread(wait_for_port, port, 30.0, collector.proc)
                await bench.wait_consuming(s, [collector, worker])
                users = len({c.user for c in window})
                bench.console.say(tag, f"replaying {len(plan):,} events of {users} shoppers "
                                       f"({data_s / 3600:g} h of data from "
                                       f"{datetime.fromtimestamp(window[0].ts, UTC):%Y-%m-%d %H:%M} UTC) at "
                                       f"{speed:g}x: {plan[-1][0] if plan else 0:,.0f} s, peak "
                                       f"{peak_rate(o for o, _ in plan)} events/s")
                first_msg = len(bench.slack.messages)
                cpu0 = {p.pid: bench.cpu_of(p.pid) for p in (collector, worker)}
                out = await replay(bench.http, f"http://127.0.0.1:{port}", plan,
                                   say=functools.partial(bench.console.say, tag))
                cpu1 = {p.pid: bench.cpu_of(p.pid) for p in (collector, worker)}
                await bench.wait_slack_quiet()
                seconds = float(out["seconds"])
                figures = bench.alert_figures(out, bench.slack.messages[first_msg:], observed,
                                              offered_rate=len(plan) / seconds if seconds else math.nan,
                                              warmup_s=0.0, workers=1)
                run = TaobaoRun(speed=speed, data_seconds=data_s, users=users, dropped_rows=dropped,
                                peak_rate=peak_rate(o for o, _ in plan), alert=figures,
                                lag=max(out["lags_ms"], default=0.0), unexpected=out["unexpected"])
                figures.collector_cores = (cpu1[collector.pid] - cpu0[collector.pid]) / seconds if seconds else None
                figures.worker_cores = (cpu1[worker.pid] - cpu0[worker.pid]) / seconds if seconds else None
                r.taobao.append(run)
                lat = figures.latency
                bench.console.say(tag, f"{figures.alerts:,} alerts: event→alert p50 {lat.p50:,.1f} ms, "
                                       f"p99 {lat.p99:,.1f} ms; {figures.errors} request errors")
            finally:
                await bench.stop(collector, worker)

