"""Statistics, parsing and reporting for the full-path benchmark (``bench.full_path``).

Everything here is pure (no servers, no processes) so it is unit-tested in
``tests/unit/bench``: percentiles, Prometheus text and histogram quantiles,
``/proc`` parsing, ratios and target verdicts, the BENCHMARKS.md section and
the plot.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

SECTION = "full path"

# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics.

    Same definition as numpy's default (``method="linear"``).  NaN for no values.
    """
    if not 0.0 <= q <= 100.0:
        msg = f"percentile {q} is outside 0..100"
        raise ValueError(msg)
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    frac = pos - lo
    return ordered[lo] + (ordered[hi] - ordered[lo]) * frac


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency percentiles in milliseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> LatencySummary:
        if not values_ms:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(len(values_ms), percentile(values_ms, 50), percentile(values_ms, 90), percentile(values_ms, 99),
                   max(values_ms), sum(values_ms) / len(values_ms))


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline``; None when either is missing, NaN or the baseline is not positive."""
    if value is None or baseline is None or math.isnan(value) or math.isnan(baseline) or baseline <= 0:
        return None
    return value / baseline


def interpolate(samples: Sequence[tuple[float, float]], t: float) -> float:
    """Linear interpolation of ``(time, value)`` samples (sorted by time) at ``t``; clamped at the ends."""
    if not samples:
        msg = "no samples to interpolate"
        raise ValueError(msg)
    times = [s[0] for s in samples]
    i = bisect.bisect_left(times, t)
    if i <= 0:
        return samples[0][1]
    if i >= len(samples):
        return samples[-1][1]
    (t0, v0), (t1, v1) = samples[i - 1], samples[i]
    if t1 == t0:
        return v1
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


# --------------------------------------------------------------------------- Prometheus text

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Sample = tuple[str, dict[str, str], float]


def parse_prometheus(text: str) -> list[Sample]:
    """``(name, labels, value)`` for every sample line of the text exposition format."""
    out: list[Sample] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if m is None:
            continue
        name, raw_labels, raw_value = m.groups()
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL_RE.findall(raw_labels or "")}
        try:
            value = float(raw_value)
        except ValueError:
            continue
        out.append((name, labels, value))
    return out


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in parse_prometheus(text)
               if n == name and all(lab.get(k) == want for k, want in labels.items()))


def histogram_buckets(text: str, name: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` buckets of histogram ``name``, summed over every other label, sorted by ``le``."""
    sums: dict[float, float] = {}
    for n, lab, v in parse_prometheus(text):
        if n != f"{name}_bucket" or "le" not in lab:
            continue
        if not all(lab.get(k) == want for k, want in labels.items()):
            continue
        le = math.inf if lab["le"] in ("+Inf", "Inf", "inf") else float(lab["le"])
        sums[le] = sums.get(le, 0.0) + v
    return sorted(sums.items())


def histogram_label_values(text: str, name: str, label: str) -> list[str]:
    """The distinct values of ``label`` on histogram ``name``'s buckets."""
    seen: dict[str, None] = {}
    for n, lab, _ in parse_prometheus(text):
        if n == f"{name}_bucket" and label in lab:
            seen[lab[label]] = None
    return list(seen)


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Prometheus ``histogram_quantile``: ``q`` in 0..1 from cumulative ``(le, count)`` buckets.

    Linear interpolation inside the bucket that holds the rank (the first
    bucket's lower bound is 0); a rank in the ``+Inf`` bucket answers the
    highest finite bound.  NaN when there are no observations.
    """
    if not 0.0 <= q <= 1.0:
        msg = f"quantile {q} is outside 0..1"
        raise ValueError(msg)
    if not buckets:
        return math.nan
    ordered = sorted(buckets)
    total = ordered[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                finite = [b for b, _ in ordered if not math.isinf(b)]
                return finite[-1] if finite else math.nan
            in_bucket = count - prev_count
            if in_bucket <= 0:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / in_bucket
        prev_le, prev_count = le, count
    return ordered[-1][0]


# --------------------------------------------------------------------------- /proc


def parse_proc_stat_cpu(stat: str, clock_ticks: int) -> float:
    """utime + stime, in seconds, from the text of ``/proc/<pid>/stat``."""
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ")".
    rest = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(rest[11]), int(rest[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / clock_ticks


def parse_proc_status_memory(status: str) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB from the text of ``/proc/<pid>/status``."""
    values = {"VmRSS": math.nan, "VmHWM": math.nan}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            values[key] = int(rest.split()[0]) / 1024.0  # kB
    return values["VmRSS"], values["VmHWM"]


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class ConsumeRun:
    """Consumers (faust processes) draining the same pre-filled backlog."""

    label: str
    processes: int
    events: int  # events processed inside the timed window
    seconds: float  # the timed window: first processed event seen .. all processed
    cpu_s: float  # CPU seconds of the consuming processes inside the window
    join_s: float  # from spawning the processes to the first processed event
    per_process: list[int] = field(default_factory=list)  # events per process inside the window
    rss_mb: list[float] = field(default_factory=list)
    hwm_mb: list[float] = field(default_factory=list)
    note: str = ""
    redis_cpu_s: float = math.nan  # redis-server's CPU seconds inside the window (all its work for these events)
    # --worker-split: each process's role and CPU seconds inside the window, and how the alerts
    # side finished: alert sends it made by the end of the window, and after it caught up (seconds
    # after the window, its CPU seconds in them).
    roles: list[str] = field(default_factory=list)
    cpu_per_process: list[float] = field(default_factory=list)
    alert_sends: int = 0
    alert_sends_final: int = 0
    alerts_tail_s: float = 0.0
    alerts_tail_cpu_s: float = 0.0

    @property
    def redis_us_per_event(self) -> float:
        return self.redis_cpu_s / self.events * 1e6 if self.events else math.nan

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan

    @property
    def rate_per_process(self) -> float:
        return self.rate / self.processes if self.processes else math.nan

    @property
    def per_cpu_s(self) -> float:
        return self.events / self.cpu_s if self.cpu_s > 0 else math.nan

    @property
    def cores(self) -> float:
        return self.cpu_s / self.seconds if self.seconds > 0 else math.nan


@dataclass(slots=True)
class HttpRun:
    """One load-generator run against an HTTP server (client-side latency)."""

    label: str
    mode: Literal["closed", "rate"]
    concurrency: int
    offered_rate: float | None
    seconds: float
    requests: int
    errors: int
    latency: LatencySummary
    client_cpu_s: float
    server_cpu_s: float | None = None
    lag: LatencySummary | None = None  # rate mode: how late requests left against their schedule

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else math.nan

    @property
    def client_cores(self) -> float:
        return self.client_cpu_s / self.seconds if self.seconds > 0 else math.nan

    @property
    def client_us_per_request(self) -> float:
        return self.client_cpu_s / self.requests * 1e6 if self.requests else math.nan

    @property
    def server_cores(self) -> float | None:
        return self.server_cpu_s / self.seconds if self.server_cpu_s is not None and self.seconds > 0 else None

    @property
    def server_us_per_request(self) -> float | None:
        return self.server_cpu_s / self.requests * 1e6 if self.server_cpu_s is not None and self.requests else None


@dataclass(slots=True)
class HistogramFigure:
    count: int
    p50_ms: float
    p99_ms: float


# Worker histograms (seconds) that split the event-to-alert time into its stages.
WORKER_STAGES: dict[str, str] = {
    "leadrouter_event_to_worker_seconds": "event `ts` → a worker starts scoring it (spool, forwarder, Kafka, "
                                          "fetch, batch window)",
    "leadrouter_worker_batch_seconds": "one batch: decode, score, Redis, route",
    "leadrouter_routing_seconds": "routing one crossing (rules, turn, record, publish)",
}


@dataclass(slots=True)
class AlertRun:
    """Event-to-alert latency at a steady offered rate of mixed traffic."""

    offered_rate: float
    seconds: float
    requests: int
    errors: int
    kinds: dict[str, int]
    latency: LatencySummary  # collector event_ts -> Slack receiver received_at, per Slack delivery
    to_topic: LatencySummary  # collector event_ts -> the alert seen on the assignments topic, per alert
    alerts: int  # distinct assignments delivered to Slack (after warm-up)
    deliveries: int  # Slack requests measured
    unmatched: int  # Slack deliveries whose assignment's event_ts was not seen
    warmup_s: float
    worker_hist: dict[str, HistogramFigure] = field(default_factory=dict)  # "all" and per channel
    # The worker's own stage histograms (WORKER_STAGES): where the event-to-alert time goes.
    stages: dict[str, HistogramFigure] = field(default_factory=dict)
    collector_cores: float | None = None
    worker_cores: float | None = None
    workers: int = 1

    @property
    def achieved_rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else math.nan


@dataclass(slots=True)
class LightRun:
    """Issue 15.4: a collector and one worker with no traffic at all, then at a light steady rate."""

    idle_seconds: float
    idle_collector_cores: float | None
    idle_worker_cores: float | None
    alert: AlertRun


@dataclass(slots=True)
class TaobaoRun:
    """The real Taobao clickstream's densest stretch replayed at ``speed`` times real time (bench/taobao.py)."""

    speed: float
    data_seconds: float  # how much of the data's own time was replayed
    users: int
    dropped_rows: int  # rows outside the data set's documented span
    peak_rate: int  # most events sent in one second of the replay
    alert: AlertRun
    lag: float  # worst delay (ms) of a send behind its schedule: the replay kept time when small
    unexpected: dict[str, int] = field(default_factory=dict)  # "form 429" -> count: the non-2xx answers


@dataclass(slots=True)
class RedisMemory:
    leads: int
    known: int
    anonymous: int
    used_bytes: int  # used_memory after minus before

    @property
    def per_100k_bytes(self) -> float:
        return self.used_bytes / self.leads * 100_000 if self.leads else math.nan


@dataclass(slots=True)
class Results:
    date: str
    machine: dict[str, str]
    command: str
    processes: list[str]
    settings_note: str
    phases: list[str]
    elapsed_s: float = 0.0
    backlog_events: int = 0
    backlog_produce_rate: float = math.nan
    batch: int = 500
    partitions: int = 4
    traffic_note: str = ""
    redis_step_rate: float | None = None
    bare: ConsumeRun | None = None
    worker1: ConsumeRun | None = None
    worker2: ConsumeRun | None = None
    worker_split: ConsumeRun | None = None  # --worker-split: one scoring-role and one alerts-role process
    redis_memory: RedisMemory | None = None
    http_baseline: HttpRun | None = None
    collector_max: HttpRun | None = None
    collector_fixed: HttpRun | None = None
    collector_memory: tuple[float, float] | None = None  # (RSS, peak) MiB
    alert: AlertRun | None = None
    taobao: list[TaobaoRun] = field(default_factory=list)
    light: LightRun | None = None
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    op: Literal[">=", "<="]
    threshold: float
    unit: str  # "x" for a ratio, "ms", "req/s"
    value: float | None  # None: not measured

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold

    def verdict(self) -> str:
        """``met``, ``not measured`` or ``missed by …`` (how far, absolute and relative)."""
        met = self.met
        if met is None:
            return "not measured"
        if met:
            return "met"
        assert self.value is not None
        gap = abs(self.value - self.threshold)
        pct = gap / self.threshold * 100 if self.threshold else math.inf
        side = "short of" if self.op == ">=" else "over"
        return f"missed by {fmt_value(gap, self.unit)} ({pct:.0f}% {side} {fmt_value(self.threshold, self.unit)})"


def fmt_value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "ms":
        return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"
    if unit == "cores":
        return f"{value:.3f} cores"
    if unit == "µs":
        return f"{value:,.1f} µs"
    return f"{value:,.0f} {unit}".rstrip()


def targets(r: Results) -> list[Target]:
    """The issue's targets, each with its measured value (None when its phase did not run)."""
    w1_vs_bare = ratio(r.worker1.rate, r.bare.rate) if r.worker1 and r.bare else None
    w2_vs_w1 = ratio(r.worker2.per_cpu_s, r.worker1.per_cpu_s) if r.worker2 and r.worker1 else None
    alert_p50 = r.alert.latency.p50 if r.alert and r.alert.latency.n else None
    alert_p99 = r.alert.latency.p99 if r.alert and r.alert.latency.n else None
    col_vs_bare = ratio(r.collector_max.rps, r.http_baseline.rps) if r.collector_max and r.http_baseline else None
    col_p99 = r.collector_fixed.latency.p99 if r.collector_fixed and r.collector_fixed.latency.n else None
    rate = f"{r.alert.offered_rate:,.0f}" if r.alert else "1,000"
    col_rate = (f"{r.collector_fixed.offered_rate:,.0f}" if r.collector_fixed and r.collector_fixed.offered_rate
                else "5,000")
    light = r.light
    light_rate = f"{light.alert.offered_rate:,.0f}" if light else "100"
    light_p99 = light.alert.latency.p99 if light and light.alert.latency.n else None
    return [
        Target("worker (full scoring) events/s vs the bare faust agent, same backlog (stretch 0.8x)", ">=", 0.6,
               "x", w1_vs_bare),
        Target("two workers' events per worker CPU-second vs one worker's", ">=", 0.85, "x", w2_vs_w1),
        Target("Redis CPU per event, one worker (all Lua and commands)", "<=", 40.0, "µs",
               r.worker1.redis_us_per_event if r.worker1 and not math.isnan(r.worker1.redis_us_per_event) else None),
        Target("Redis memory per 100,000 leads with their history (the backlog's mix of known and anonymous)",
               "<=", 100.0, "MB", r.redis_memory.per_100k_bytes / 1e6 if r.redis_memory else None),
        Target(f"event-to-alert p50 at {rate} events/s", "<=", 100.0, "ms", alert_p50),
        Target(f"event-to-alert p99 at {rate} events/s", "<=", 300.0, "ms", alert_p99),
        Target("collector pixel requests/s vs the bare aiohttp handler (both saturated)", ">=", 0.5, "x",
               col_vs_bare),
        Target(f"collector pixel p99 at {col_rate} requests/s offered", "<=", 5.0, "ms", col_p99),
        Target("idle worker (no traffic)", "<=", 0.05, "cores", light.idle_worker_cores if light else None),
        Target("idle collector (no traffic)", "<=", 0.05, "cores", light.idle_collector_cores if light else None),
        Target(f"worker at {light_rate} events/s", "<=", 0.1, "cores", light.alert.worker_cores if light else None),
        Target(f"collector at {light_rate} events/s", "<=", 0.1, "cores",
               light.alert.collector_cores if light else None),
        Target(f"event-to-alert p99 at {light_rate} events/s", "<=", 100.0, "ms", light_p99),
    ]


# --------------------------------------------------------------------------- markdown


def _n(x: float | None, digits: int = 0) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return f"{x:,.{digits}f}"


def _x(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.2f}x"


def _ms(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{x:,.2f}" if x < 10 else f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def _mem(rss: Sequence[float], hwm: Sequence[float]) -> str:
    if not rss:
        return "n/a"
    return ", ".join(f"{a:,.0f} ({b:,.0f})" for a, b in zip(rss, hwm, strict=False))


def _consume_row(run: ConsumeRun, what: str, vs: str) -> str:
    split = ""
    if run.processes > 1 and run.events:
        split = " (split " + "/".join(f"{p / run.events * 100:.0f}%" for p in run.per_process) + ")"
    return (f"| {what}{split} | {run.processes} | {_n(run.rate)} | {_n(run.rate_per_process)} | "
            f"{_n(run.per_cpu_s)} | {_n(run.cores, 2)} | {_n(run.redis_us_per_event, 1)} | {vs} | "
            f"{_mem(run.rss_mb, run.hwm_mb)} |")


def _split_row(run: ConsumeRun, w1: ConsumeRun | None) -> str:
    """``--worker-split``: the events/s of the scoring process, each process's cores and their sum."""
    cores = [c / run.seconds if run.seconds > 0 else math.nan for c in run.cpu_per_process]
    each = " + ".join(f"{role} {_n(c, 2)}" for role, c in zip(run.roles, cores, strict=False))
    parts = [f"events/s {_x(ratio(run.rate, w1.rate if w1 else None))} of one worker",
             f"per CPU-s (both processes) {_x(ratio(run.per_cpu_s, w1.per_cpu_s if w1 else None))} of one worker's"]
    return (f"| worker split: scoring role + alerts role | {run.processes} | {_n(run.rate)} | "
            f"{_n(run.rate)} (scoring) | {_n(run.per_cpu_s)} | {each} = {_n(run.cores, 2)} | "
            f"{_n(run.redis_us_per_event, 1)} | {'; '.join(parts)} | {_mem(run.rss_mb, run.hwm_mb)} |")


def split_note(run: ConsumeRun) -> str:
    """How the alerts-role process kept up in the --worker-split run."""
    tail = (f"it caught up {run.alerts_tail_s:.1f} s after the last event was scored, with "
            f"{run.alerts_tail_cpu_s:.2f} CPU-s more" if run.alert_sends_final > run.alert_sends else
            "it had caught up when the last event was scored")
    return (f"Worker split: the events/s are the scoring process's (one process scores; the other only "
            f"delivers alerts). The alerts process made {run.alert_sends:,} alert sends inside the window and "
            f"{run.alert_sends_final:,} in all; {tail}.")


def _http_row(run: HttpRun, vs: str) -> str:
    lat = run.latency
    server = (f"{_n(run.server_cores, 2)} cores, {_n(run.server_us_per_request)} µs"
              if run.server_cores is not None else "n/a")
    offered = f"{run.offered_rate:,.0f}/s offered" if run.offered_rate else f"closed loop, {run.concurrency} conns"
    return (f"| {run.label} ({offered}) | {_n(run.rps)} | {_ms(lat.p50)} | {_ms(lat.p90)} | {_ms(lat.p99)} | "
            f"{_ms(lat.max)} | {run.errors:,} | {server} | {_n(run.client_cores, 2)} cores, "
            f"{_n(run.client_us_per_request)} µs | {vs} |")


def render_section(r: Results) -> str:
    """The BENCHMARKS.md section text (without the markers)."""
    m = r.machine
    out: list[str] = [
        f"## Full path: collector → Kafka → worker → Redis → alerts ({r.date})",
        "",
        f"Machine: {m.get('nproc', '?')} CPUs ({m.get('cpu', '?')}), {m.get('memory', '?')} RAM, "
        f"{m.get('os', '?')}; {m.get('python', '?')}; faust-streaming {m.get('faust', '?')}, "
        f"aiokafka {m.get('aiokafka', '?')}, redis-py {m.get('redis_py', '?')} (hiredis {m.get('hiredis', '?')}), "
        f"aiohttp {m.get('aiohttp', '?')}; redis-server {m.get('redis_server', '?')}; "
        f"broker {m.get('broker', '?')}. Load average at start: {m.get('load', '?')}.",
        "Everything runs on this one machine and shares its cores: broker, Redis, collector, worker(s), the "
        "load-generator process and the bench process (Slack/SMTP receivers, metrics polling).",
        "",
        f"Command: `{r.command}` (phases: {', '.join(r.phases)}; took {r.elapsed_s:,.0f} s)",
        "",
        "Processes it starts: " + "; ".join(f"`{p}`" for p in r.processes),
        "",
        f"Settings: {r.settings_note}",
        "",
        f"Traffic: {r.traffic_note}",
        "",
        "### Targets",
        "",
        "| target | measured | target | verdict |",
        "|---|---|---|---|",
    ]
    for t in targets(r):
        measured = "n/a" if t.value is None else fmt_value(t.value, t.unit)
        verdict = t.verdict()
        shown = f"**{verdict}**" if t.met is False else verdict
        out.append(f"| {t.name} | {measured} | {t.op} {fmt_value(t.threshold, t.unit)} | {shown} |")
    missed = [t for t in targets(r) if t.met is False]
    if missed:
        out += ["", "Missed: " + "; ".join(f"{t.name}: {t.verdict()}" for t in missed) + "."]
    if r.errors:
        out += ["", "Phases that failed: " + "; ".join(f"{k}: {v}" for k, v in r.errors.items())]
    if r.warnings:
        out += ["", "Warnings: " + " ".join(r.warnings)]

    if r.bare or r.worker1 or r.worker2 or r.redis_step_rate:
        out += [
            "",
            f"### Worker throughput on the same pre-filled backlog ({r.backlog_events:,} events, "
            f"{r.partitions} partitions, produced at {_n(r.backlog_produce_rate)}/s before the consumers start)",
            "",
            "Each consumer is a new consumer group reading the topic from the beginning; Redis is flushed "
            "before each worker run. The window runs from the first processed event (after the group join) to "
            "the last; CPU is utime+stime of the consumer processes in that window.",
            "",
            "| consumer | processes | events/s | events/s per process | events per CPU-s | cores used | "
            "Redis µs CPU/event | ratio | RSS MiB (peak) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        if r.bare:
            out.append(_consume_row(r.bare, f"bare faust agent: counts raw messages, `take({r.batch})`",
                                    "baseline"))
        if r.worker1:
            parts = [f"{_x(ratio(r.worker1.rate, r.bare.rate if r.bare else None))} of bare faust"]
            if r.redis_step_rate:
                parts.append(f"{_x(ratio(r.worker1.rate, r.redis_step_rate))} of raw Redis step")
            out.append(_consume_row(r.worker1, "worker: full scoring, routing, alerts", "; ".join(parts)))
        if r.worker2:
            w1 = r.worker1
            parts = [f"per CPU-s {_x(ratio(r.worker2.per_cpu_s, w1.per_cpu_s if w1 else None))} of one worker's",
                     f"total {_x(ratio(r.worker2.rate, w1.rate if w1 else None))} of one worker"]
            out.append(_consume_row(r.worker2, "worker: full scoring, routing, alerts", "; ".join(parts)))
        if r.worker_split:
            out.append(_split_row(r.worker_split, r.worker1))
        if r.redis_step_rate:
            out.append(f"| raw Redis step: one no-op Lua call per event, pipelined per {r.batch} (bench process) "
                       f"| 1 | {_n(r.redis_step_rate)} | {_n(r.redis_step_rate)} | n/a | n/a | bound | n/a |")
        joins = [(run.label, run.join_s) for run in (r.bare, r.worker1, r.worker2, r.worker_split) if run]
        out += ["", "Start and group join before the first processed event (excluded from the rates): "
                + ", ".join(f"{label} {s:.1f} s" for label, s in joins) + "."]
        notes = [run.note for run in (r.bare, r.worker1, r.worker2, r.worker_split) if run and run.note]
        if r.worker_split:
            notes.append(split_note(r.worker_split))
        if notes:
            out += ["", "Notes: " + " ".join(notes)]

    if r.http_baseline or r.collector_max or r.collector_fixed:
        client = r.collector_max or r.collector_fixed or r.http_baseline
        out += [
            "",
            "### Collector: pixel requests (`GET /t/p.gif`)",
            "",
            f"Load from a separate process (keep-alive HTTP/1.1 over {client.concurrency if client else '?'} "
            "connections, minimal asyncio client), latency measured by the client from writing the request to "
            "reading the whole response. The collector writes every event to its spool (fsync policy in the "
            "settings above) and forwards to Kafka; no worker runs in this phase.",
            "",
            "| run | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | server CPU (per request) | "
            "client CPU (per request) | ratio |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        base = r.http_baseline
        if base:
            out.append(_http_row(base, "baseline"))
        for hrun in (r.collector_max, r.collector_fixed):
            if hrun:
                out.append(_http_row(hrun, f"{_x(ratio(hrun.rps, base.rps if base else None))} of bare aiohttp "
                                           "req/s"))
        fixed = r.collector_fixed
        if fixed and fixed.lag is not None and fixed.offered_rate:
            lag = fixed.lag
            out += ["", f"At {fixed.offered_rate:,.0f}/s offered the client achieved {_n(fixed.rps)}/s; requests "
                    f"left on schedule with a lag p50 {_ms(lag.p50)} ms, p99 {_ms(lag.p99)} ms "
                    "(a large lag means the server or client could not keep up; queued time is not in the "
                    "latency column)."]
        busy = [run for run in (r.http_baseline, r.collector_max) if run and run.client_cores >= 0.9]
        if busy:
            out += ["", "The load generator used ≥ 0.9 of a core in: " + ", ".join(b.label for b in busy)
                    + "; those req/s figures are bounded by the client, not only by the server."]

    if r.alert:
        a = r.alert
        kinds = ", ".join(f"{v:,} {k}" for k, v in sorted(a.kinds.items(), key=lambda kv: -kv[1]))
        out += [
            "",
            f"### Event to alert at {a.offered_rate:,.0f} events/s offered",
            "",
            f"Mixed traffic through the collector for {a.seconds:,.0f} s ({kinds}; achieved "
            f"{_n(a.achieved_rate)}/s, {a.errors:,} errors) with {a.workers} worker process(es). "
            f"{a.alerts:,} alerts ({a.alerts / a.seconds if a.seconds else math.nan:.1f}/s: hand-raisers, score "
            f"and account-intent crossings) reached Slack after a {a.warmup_s:g} s "
            f"warm-up, {a.deliveries:,} Slack deliveries measured (webhook and DM), {a.unmatched:,} unmatched. "
            f"Cores used: collector {_n(a.collector_cores, 2)}, worker(s) {_n(a.worker_cores, 2)}.",
            "",
            "| measure | n | p50 ms | p90 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|",
            f"| bench: event `ts` (collector receive) → Slack receiver `received_at` | {a.latency.n:,} | "
            f"{_ms(a.latency.p50)} | {_ms(a.latency.p90)} | {_ms(a.latency.p99)} | {_ms(a.latency.max)} |",
            f"| … of which: event `ts` → alert on the assignments topic (bench consumer, fetch wait 50 ms) | "
            f"{a.to_topic.n:,} | {_ms(a.to_topic.p50)} | {_ms(a.to_topic.p90)} | {_ms(a.to_topic.p99)} | "
            f"{_ms(a.to_topic.max)} |",
        ]
        for channel, h in sorted(a.worker_hist.items(), key=lambda kv: kv[0] != "all"):
            label = "all channels" if channel == "all" else channel
            out.append(f"| worker histogram `leadrouter_event_to_alert_seconds` ({label}, bucket-interpolated) | "
                       f"{h.count:,} | {_ms(h.p50_ms)} | | {_ms(h.p99_ms)} | |")
        for name, what in WORKER_STAGES.items():
            stage = a.stages.get(name)
            if stage is not None and stage.count:
                out.append(f"| stage: {what} (worker histogram `{name}`) | {stage.count:,} | "
                           f"{_ms(stage.p50_ms)} | | {_ms(stage.p99_ms)} | |")

    if r.light:
        out += light_section(r.light)

    if r.taobao:
        out += taobao_section(r.taobao)

    if r.collector_memory or r.worker1 or r.worker2 or r.redis_memory or (r.alert is not None):
        out += ["", "### Memory", "", "| process | RSS MiB | peak RSS MiB |", "|---|---|---|"]
        if r.collector_memory:
            out.append(f"| collector (after the saturation run) | {_n(r.collector_memory[0])} | "
                       f"{_n(r.collector_memory[1])} |")
        for crun in (r.bare, r.worker1, r.worker2, r.worker_split):
            if crun:
                for i, (a_, b_) in enumerate(zip(crun.rss_mb, crun.hwm_mb, strict=False), 1):
                    out.append(f"| {crun.label} process {i} (after the backlog) | {_n(a_)} | {_n(b_)} |")
        if r.redis_memory:
            rm = r.redis_memory
            out += ["", f"Redis: `used_memory` grew {rm.used_bytes / 1e6:,.1f} MB for {rm.leads:,} leads "
                    f"({rm.known:,} known by email, {rm.anonymous:,} anonymous visitors), with their accounts, "
                    f"identity links, reasons, timelines and de-duplication sets: "
                    f"**{rm.per_100k_bytes / 1e6:,.0f} MB per 100,000 leads** (one worker's backlog run)."]
    return "\n".join(out)


def light_section(light: LightRun) -> list[str]:
    """Markdown lines: idle and light-load cores and latency (``--phases light``)."""
    a = light.alert
    return [
        "",
        f"### Idle, then light load at {a.offered_rate:,.0f} events/s (`--phases light`)",
        "",
        f"One collector and one worker, joined and warmed up, then {light.idle_seconds:g} s with no traffic at "
        f"all, then mixed traffic at {a.offered_rate:,.0f} events/s for {a.seconds:,.0f} s ({a.alerts:,} alerts).",
        "",
        "| measure | collector | worker |",
        "|---|---|---|",
        f"| cores, idle | {_n(light.idle_collector_cores, 3)} | {_n(light.idle_worker_cores, 3)} |",
        f"| cores at {a.offered_rate:,.0f} events/s | {_n(a.collector_cores, 3)} | {_n(a.worker_cores, 3)} |",
        "",
        f"Event `ts` → Slack `received_at` at {a.offered_rate:,.0f} events/s: n {a.latency.n:,}, p50 "
        f"{_ms(a.latency.p50)} ms, p90 {_ms(a.latency.p90)} ms, p99 {_ms(a.latency.p99)} ms, max "
        f"{_ms(a.latency.max)} ms.",
    ]


def _why(unexpected: Mapping[str, int]) -> str:
    return f" ({', '.join(f'{n} {k}' for k, n in sorted(unexpected.items()))})" if unexpected else ""


def taobao_section(runs: Sequence[TaobaoRun]) -> list[str]:
    """Markdown lines: event to alert on the real Taobao clickstream, one row per speed-up."""
    first = runs[0]
    out = [
        "",
        "### Event to alert on the real Taobao clickstream (`--phases taobao`)",
        "",
        f"The densest stretch of the Taobao UserBehavior slice (`../shared/datasets/`, {first.dropped_rows} rows "
        "outside the data's span dropped), with its real inter-arrival times divided by the speed-up: views as "
        "product-page pixels, favourites and carts as pricing pages, a shopper's first buy as a demo request "
        "(later buys: content forms). One collector, one worker. Latency as above: event `ts` → Slack "
        "`received_at`.",
        "",
        "| speed | data replayed | shoppers | events | mean / peak events/s | alerts | p50 ms | p90 ms | p99 ms | "
        "max ms | collector / worker cores | errors | worst send lag ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in runs:
        a = t.alert
        out.append(f"| {t.speed:g}x | {t.data_seconds / 3600:g} h in {a.seconds:,.0f} s | {t.users:,} | "
                   f"{a.requests:,} | {_n(a.achieved_rate, 1)} / {t.peak_rate:,} | {a.alerts:,} | "
                   f"{_ms(a.latency.p50)} | {_ms(a.latency.p90)} | {_ms(a.latency.p99)} | {_ms(a.latency.max)} | "
                   f"{_n(a.collector_cores, 3)} / {_n(a.worker_cores, 3)} | {a.errors:,}{_why(t.unexpected)} | "
                   f"{_ms(t.lag)} |")
    return out


def write_section(path: Path, text: str, section: str = SECTION) -> None:
    """Replace (or append) ``<!-- section -->`` … ``<!-- /section -->`` in ``path``, leaving other sections alone."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    opening, closing = f"<!-- {section} -->", f"<!-- /{section} -->"
    start, end = doc.find(opening), doc.find(closing)
    block = f"{opening}\n{text}\n{closing}"
    if start >= 0 and end > start:
        doc = doc[:start] + block + doc[end + len(closing):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)


# --------------------------------------------------------------------------- plot


def plot(r: Results, path: Path) -> bool:
    """Latency percentiles and throughput bars as a PNG; False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    lat: list[tuple[str, float, float, float | None, float | None]] = []  # label, p50, p99, target p50, p99
    if r.collector_fixed and r.collector_fixed.latency.n:
        lat.append((f"collector pixel\n@{(r.collector_fixed.offered_rate or 0):,.0f}/s",
                    r.collector_fixed.latency.p50, r.collector_fixed.latency.p99, None, 5.0))
    if r.collector_max and r.collector_max.latency.n:
        lat.append(("collector pixel\nsaturated", r.collector_max.latency.p50, r.collector_max.latency.p99,
                    None, None))
    if r.alert and r.alert.latency.n:
        lat.append((f"event→alert\n@{r.alert.offered_rate:,.0f}/s (bench)", r.alert.latency.p50,
                    r.alert.latency.p99, 100.0, 300.0))
        h = r.alert.worker_hist.get("all")
        if h and h.count:
            lat.append(("event→alert\n(worker histogram)", h.p50_ms, h.p99_ms, 100.0, 300.0))
    thr: list[tuple[str, float]] = []
    thr_targets: dict[str, float] = {}  # bar label -> target drawn on that bar
    if r.bare:
        thr.append(("bare faust agent", r.bare.rate))
    if r.worker1:
        thr.append(("worker x1", r.worker1.rate))
        if r.bare and not math.isnan(r.bare.rate):
            thr_targets["worker x1"] = 0.6 * r.bare.rate  # issue 15: >= 0.6x the bare faust agent
    if r.worker2:
        thr.append(("worker x2 (total)", r.worker2.rate))
        thr.append(("worker x2 (per process)", r.worker2.rate_per_process))
    if r.worker_split:
        thr.append(("worker split (scoring + alerts)", r.worker_split.rate))
    if r.redis_step_rate:
        thr.append(("raw Redis step", r.redis_step_rate))
    if r.http_baseline:
        thr.append(("bare aiohttp GIF (req/s)", r.http_baseline.rps))
    if r.collector_max:
        thr.append(("collector (req/s)", r.collector_max.rps))
        if r.http_baseline and not math.isnan(r.http_baseline.rps):
            thr_targets["collector (req/s)"] = 0.5 * r.http_baseline.rps  # >= 0.5x the bare aiohttp handler
    thr = [(k, v) for k, v in thr if not math.isnan(v)]
    if not lat and not thr:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    if lat:
        xs = list(range(len(lat)))
        w = 0.38
        ax1.bar([x - w / 2 for x in xs], [max(v[1], 1e-3) for v in lat], w, label="p50", color="#4c72b0")
        ax1.bar([x + w / 2 for x in xs], [max(v[2], 1e-3) for v in lat], w, label="p99", color="#dd8452")
        for x, (_, p50, p99, t50, t99) in zip(xs, lat, strict=True):
            ax1.annotate(_short(p50), (x - w / 2, max(p50, 1e-3)), ha="center", va="bottom", fontsize=8)
            ax1.annotate(_short(p99), (x + w / 2, max(p99, 1e-3)), ha="center", va="bottom", fontsize=8)
            for target, left, value in ((t50, x - w, p50), (t99, x, p99)):
                if target is not None:  # drawn over the bars, so a bar above its target does not hide it
                    ax1.hlines(target, left, left + w, colors="black", linestyles="dashed", linewidth=1.5,
                               zorder=5)
                    # Below the line when the bar reaches it (its own label is on top), above it otherwise.
                    ax1.annotate(f"target {_short(target)}", (left + w / 2, target), ha="center",
                                 va="top" if value >= target else "bottom", fontsize=7, zorder=6,
                                 xytext=(0, -2 if value >= target else 9), textcoords="offset points")
        ax1.set_xticks(xs, [v[0] for v in lat], fontsize=8)
        ax1.set_yscale("log")
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        ax1.yaxis.set_major_formatter(plain)
        shown = [max(v, 1e-3) for item in lat for v in (item[1], item[2])]
        # Label the minor ticks only when the values span less than a decade (else they crowd).
        ax1.yaxis.set_minor_formatter(plain if max(shown) / min(shown) < 10 else NullFormatter())
        ax1.set_ylabel("milliseconds (log scale); dashed: target")
        ax1.set_title("Latency percentiles")
        ax1.legend()
    else:
        ax1.set_axis_off()
    if thr:
        ys = list(range(len(thr)))
        ax2.barh(ys, [v for _, v in thr], color="#55a868")
        ax2.set_yticks(ys, [k for k, _ in thr], fontsize=8)
        ax2.invert_yaxis()
        for y, (label, v) in zip(ys, thr, strict=True):
            ax2.annotate(f" {v:,.0f}", (v, y), va="center", fontsize=8)
            target = thr_targets.get(label)
            if target is not None:
                ax2.vlines(target, y - 0.4, y + 0.4, colors="black", linestyles="dashed", linewidth=1.5, zorder=5)
                ax2.annotate(f"target {target:,.0f}", (target, y + 0.4), ha="center", va="top", fontsize=7)
        ax2.set_xlabel("events/s (requests/s where marked); dashed: target")
        ax2.set_title("Throughput")
        ax2.margins(x=0.2)
    else:
        ax2.set_axis_off()
    fig.suptitle(f"leadrouter full path, {r.date}, {r.machine.get('nproc', '?')} CPUs "
                 f"({r.machine.get('cpu', '?')})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _short(ms: float) -> str:
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


def kinds_note(kinds: Mapping[str, int]) -> str:
    total = sum(kinds.values()) or 1
    return ", ".join(f"{k} {v / total * 100:.1f}%" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))


def count_by(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out
