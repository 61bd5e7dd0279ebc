"""The full-path benchmark's statistics, parsing, verdicts and report (bench/report.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.report import (
    AlertRun,
    ConsumeRun,
    HistogramFigure,
    HttpRun,
    LatencySummary,
    RedisMemory,
    Results,
    Target,
    histogram_buckets,
    histogram_label_values,
    histogram_quantile,
    interpolate,
    metric_total,
    parse_proc_stat_cpu,
    parse_proc_status_memory,
    parse_prometheus,
    percentile,
    plot,
    ratio,
    render_section,
    targets,
    write_section,
)

# --------------------------------------------------------------------------- percentiles and ratios


def test_percentile_interpolates_linearly_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 25) == pytest.approx(1.75)
    assert percentile(list(map(float, range(1, 101))), 99) == pytest.approx(99.01)


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


@pytest.mark.parametrize("q", [-1.0, 100.5])
def test_percentile_refuses_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.100"):
        percentile([1.0], q)


def test_latency_summary() -> None:
    s = LatencySummary.of([float(i) for i in range(1, 101)])
    assert (s.n, s.max, s.mean) == (100, 100.0, 50.5)
    assert s.p50 == pytest.approx(50.5)
    assert s.p99 == pytest.approx(99.01)
    empty = LatencySummary.of([])
    assert empty.n == 0 and math.isnan(empty.p99)


def test_ratio() -> None:
    assert ratio(4000.0, 5000.0) == pytest.approx(0.8)
    assert ratio(None, 1.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(math.nan, 1.0) is None


def test_interpolate_between_and_beyond_samples() -> None:
    samples = [(10.0, 1.0), (20.0, 3.0), (30.0, 3.5)]
    assert interpolate(samples, 15.0) == pytest.approx(2.0)
    assert interpolate(samples, 20.0) == pytest.approx(3.0)
    assert interpolate(samples, 5.0) == 1.0  # clamped
    assert interpolate(samples, 99.0) == 3.5
    assert interpolate([(1.0, 2.0), (1.0, 5.0)], 1.0) in (2.0, 5.0)
    with pytest.raises(ValueError):
        interpolate([], 1.0)


# --------------------------------------------------------------------------- Prometheus text

METRICS = """\
# HELP leadrouter_events_total Events processed by type and outcome.
# TYPE leadrouter_events_total counter
leadrouter_events_total{outcome="scored",type="page_view"} 900.0
leadrouter_events_total{outcome="fired",type="form_fill"} 7.0
leadrouter_events_total{outcome="invalid",type="unknown"} 3.0
leadrouter_events_created{outcome="scored",type="page_view"} 1.7e+09
leadrouter_event_to_alert_seconds_bucket{channel="slack_webhook",le="0.1"} 5.0
leadrouter_event_to_alert_seconds_bucket{channel="slack_webhook",le="0.2"} 10.0
leadrouter_event_to_alert_seconds_bucket{channel="slack_webhook",le="+Inf"} 10.0
leadrouter_event_to_alert_seconds_bucket{channel="email",le="0.1"} 0.0
leadrouter_event_to_alert_seconds_bucket{channel="email",le="0.2"} 10.0
leadrouter_event_to_alert_seconds_bucket{channel="email",le="+Inf"} 10.0
leadrouter_event_to_alert_seconds_count{channel="email"} 10.0
weird_total{path="a \\"quoted\\" label"} 2
"""


def test_parse_prometheus_reads_names_labels_values() -> None:
    samples = parse_prometheus(METRICS)
    assert ("leadrouter_events_total", {"outcome": "fired", "type": "form_fill"}, 7.0) in samples
    assert ("weird_total", {"path": 'a "quoted" label'}, 2.0) in samples
    assert all(not name.startswith("#") for name, _, _ in samples)


def test_metric_total_sums_matching_samples_only() -> None:
    assert metric_total(METRICS, "leadrouter_events_total") == 910.0  # not the _created series
    assert metric_total(METRICS, "leadrouter_events_total", outcome="scored") == 900.0
    assert metric_total(METRICS, "missing_total") == 0.0


def test_histogram_buckets_sum_over_other_labels() -> None:
    name = "leadrouter_event_to_alert_seconds"
    assert histogram_buckets(METRICS, name) == [(0.1, 5.0), (0.2, 20.0), (math.inf, 20.0)]
    assert histogram_buckets(METRICS, name, channel="email") == [(0.1, 0.0), (0.2, 10.0), (math.inf, 10.0)]
    assert histogram_label_values(METRICS, name, "channel") == ["slack_webhook", "email"]


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(0.1, 5.0), (0.2, 10.0), (math.inf, 10.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.1)
    assert histogram_quantile(buckets, 0.25) == pytest.approx(0.05)  # lower bound of the first bucket is 0
    assert histogram_quantile(buckets, 0.75) == pytest.approx(0.15)
    assert histogram_quantile(buckets, 1.0) == pytest.approx(0.2)


def test_histogram_quantile_in_the_inf_bucket_and_without_data() -> None:
    assert histogram_quantile([(0.1, 1.0), (0.3, 2.0), (math.inf, 10.0)], 0.99) == 0.3
    assert math.isnan(histogram_quantile([], 0.5))
    assert math.isnan(histogram_quantile([(0.1, 0.0), (math.inf, 0.0)], 0.5))
    with pytest.raises(ValueError):
        histogram_quantile([(0.1, 1.0)], 1.5)


# --------------------------------------------------------------------------- /proc


def test_parse_proc_stat_cpu_survives_spaces_and_parens_in_the_name() -> None:
    # fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    stat = "4242 (python -m (x)) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 123 456 789"
    assert parse_proc_stat_cpu(stat, 100) == pytest.approx(3.0)


def test_parse_proc_status_memory_in_mib() -> None:
    status = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t3\n"
    assert parse_proc_status_memory(status) == (100.0, 200.0)
    rss, hwm = parse_proc_status_memory("Name:\tzombie\n")
    assert math.isnan(rss) and math.isnan(hwm)


# --------------------------------------------------------------------------- runs and targets


def _consume(label: str, processes: int, events: int, seconds: float, cpu_s: float) -> ConsumeRun:
    return ConsumeRun(label=label, processes=processes, events=events, seconds=seconds, cpu_s=cpu_s, join_s=6.0,
                      per_process=[events // processes] * processes, rss_mb=[150.0] * processes,
                      hwm_mb=[160.0] * processes)


def test_consume_run_figures() -> None:
    run = _consume("worker x2", 2, 100_000, 10.0, 16.0)
    assert run.rate == 10_000.0
    assert run.rate_per_process == 5_000.0
    assert run.per_cpu_s == 6_250.0
    assert run.cores == 1.6
    assert math.isnan(_consume("x", 1, 0, 0.0, 0.0).rate)


def test_http_run_figures() -> None:
    run = HttpRun(label="collector", mode="closed", concurrency=64, offered_rate=None, seconds=10.0,
                  requests=50_000, errors=0, latency=LatencySummary.of([1.0, 2.0]), client_cpu_s=2.5,
                  server_cpu_s=9.0)
    assert run.rps == 5_000.0
    assert run.client_cores == 0.25
    assert run.client_us_per_request == pytest.approx(50.0)
    assert run.server_cores == 0.9
    assert run.server_us_per_request == pytest.approx(180.0)


def test_redis_memory_per_100k_leads() -> None:
    assert RedisMemory(leads=20_000, known=2_000, anonymous=18_000, used_bytes=40_000_000).per_100k_bytes == 2e8
    assert math.isnan(RedisMemory(0, 0, 0, 10).per_100k_bytes)


@pytest.mark.parametrize(("target", "verdict"), [
    (Target("t", ">=", 0.8, "x", 0.9), "met"),
    (Target("t", ">=", 0.8, "x", 0.8), "met"),
    (Target("t", ">=", 0.8, "x", 0.6), "missed by 0.20x (25% short of 0.80x)"),
    (Target("t", "<=", 100.0, "ms", 150.0), "missed by 50.0 ms (50% over 100 ms)"),
    (Target("t", "<=", 5.0, "ms", 4.0), "met"),
    (Target("t", ">=", 5000.0, "req/s", 4000.0), "missed by 1,000 req/s (20% short of 5,000 req/s)"),
    (Target("t", ">=", 0.8, "x", None), "not measured"),
    (Target("t", ">=", 0.8, "x", math.nan), "not measured"),
])
def test_target_verdicts(target: Target, verdict: str) -> None:
    assert target.verdict() == verdict


def _results() -> Results:
    r = Results(date="2026-11-23", machine={"nproc": "2", "cpu": "AMD EPYC"}, command="python -m bench.full_path",
                processes=["python -m router.cli.main worker"], settings_note="defaults", phases=["worker", "latency"],
                backlog_events=100_000)
    r.bare = _consume("bare faust", 1, 100_000, 10.0, 9.0)  # 10,000/s
    r.worker1 = _consume("worker x1", 1, 100_000, 20.0, 19.0)  # 5,000/s
    r.worker2 = _consume("worker x2", 2, 100_000, 12.0, 22.0)
    r.redis_step_rate = 40_000.0
    r.redis_memory = RedisMemory(leads=20_000, known=2_000, anonymous=18_000, used_bytes=40_000_000)
    r.alert = AlertRun(offered_rate=1000.0, seconds=60.0, requests=60_000, errors=0, kinds={"page": 48_000},
                       latency=LatencySummary.of([80.0] * 99 + [400.0]),
                       to_topic=LatencySummary.of([50.0] * 100), alerts=50, deliveries=100, unmatched=0,
                       warmup_s=3.0, worker_hist={"all": HistogramFigure(150, 90.0, 280.0)},
                       stages={"leadrouter_event_to_worker_seconds": HistogramFigure(60_000, 42.0, 180.0)})
    return r


def test_targets_use_the_right_ratios() -> None:
    by_name = {t.name: t.value for t in targets(_results())}

    def value(prefix: str) -> float | None:
        [v] = [v for name, v in by_name.items() if name.startswith(prefix)]
        return v

    assert value("worker (full scoring) events/s vs the bare faust agent") == pytest.approx(0.5)  # 5,000 vs 10,000
    assert value("two workers'") == pytest.approx((100_000 / 22.0) / (100_000 / 19.0))
    assert value("event-to-alert p50 at 1,000") == pytest.approx(80.0)
    assert value("event-to-alert p99 at 1,000") == pytest.approx(percentile([80.0] * 99 + [400.0], 99))
    assert value("Redis memory per 100,000 leads") == pytest.approx(200.0)
    assert value("collector pixel requests/s vs the bare") is None  # the collector phase did not run
    assert value("collector pixel p99") is None
    assert value("idle worker") is None  # nor the light phase


def test_render_section_has_verdicts_ratios_and_shortfalls() -> None:
    text = render_section(_results())
    assert text.startswith("## Full path")
    assert "**missed by 0.10x (17% short of 0.60x)**" in text
    assert "| event-to-alert p50 at 1,000 events/s | 80.0 ms | <= 100 ms | met |" in text
    assert "0.50x of bare faust" in text
    assert "0.12x of raw Redis step" in text
    assert "200 MB per 100,000 leads" in text
    assert "not measured" in text  # collector targets
    assert "Missed:" in text
    # Where the event-to-alert time goes: the worker's intake stage, with its count and quantiles.
    assert "(worker histogram `leadrouter_event_to_worker_seconds`) | 60,000 | 42.0 | | 180 | |" in text


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n<!-- scoring step -->\nkeep me\n<!-- /scoring step -->\n")
    write_section(md, "first")
    write_section(md, "second")
    doc = md.read_text()
    assert "keep me" in doc
    assert "first" not in doc
    assert doc.count("<!-- full path -->") == 1
    assert "<!-- full path -->\nsecond\n<!-- /full path -->" in doc


def test_write_section_creates_the_file(tmp_path: Path) -> None:
    md = tmp_path / "NEW.md"
    write_section(md, "text")
    assert md.read_text().startswith("# Benchmarks\n")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "results" / "full_path.png"
    assert plot(_results(), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = Results(date="d", machine={}, command="c", processes=[], settings_note="", phases=[])
    assert not plot(empty, tmp_path / "none.png")


def test_the_worker_split_row_shows_each_role_s_cores_and_their_sum() -> None:
    r = _results()
    assert "worker split" not in render_section(r)  # off by default: no row
    split = _consume("worker split", 2, 100_000, 16.0, 17.6)  # 6,250/s vs one worker's 5,000/s
    split.per_process = [100_000, 0]
    split.roles, split.cpu_per_process = ["scoring", "alerts"], [14.4, 3.2]
    split.alert_sends, split.alert_sends_final, split.alerts_tail_s, split.alerts_tail_cpu_s = 900, 960, 1.5, 0.25
    r.worker_split = split
    text = render_section(r)
    row = next(line for line in text.splitlines() if line.startswith("| worker split"))
    assert "| 2 | 6,250 | 6,250 (scoring) |" in row
    assert "scoring 0.90 + alerts 0.20 = 1.10" in row
    assert "events/s 1.25x of one worker" in row
    assert f"per CPU-s (both processes) {100_000 / 17.6 / (100_000 / 19.0):.2f}x of one worker's" in row
    assert "made 900 alert sends inside the window and 960 in all; it caught up 1.5 s after" in text
    assert "0.25 CPU-s more" in text
    assert "worker split 6.0 s" in text  # its start and group join
