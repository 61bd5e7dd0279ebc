"""The churn bench's traffic model and options (the run itself needs redis-server: `python -m bench.churn`)."""

from __future__ import annotations

import argparse

from bench import churn
from models import EventType
from router.cli import bench as bench_cli


def test_traffic_brings_new_visitors_returns_and_known_leads_each_day() -> None:
    t = churn.Traffic(seed=3, visitors_per_day=200)
    days = [t.day(d) for d in range(30)]
    ids = [e.event_id for day in days for e in day]
    assert len(ids) == len(set(ids))
    for d, day in enumerate(days):
        assert [e.ts for e in day] == sorted(e.ts for e in day)
        assert all(churn.START + d * churn.DAY <= e.ts < churn.START + (d + 1) * churn.DAY + 3600 for e in day)
    types = {e.type for day in days for e in day}
    assert {EventType.PAGE_VIEW, EventType.IDENTIFY, EventType.GROUP, EventType.FORM_FILL,
            EventType.EMAIL_OPEN} <= types
    assert t.counts["visitors"] == 6000 and 0 < t.counts["known"] < 6000 * 0.1
    # Visitors come back on later days: a day holds more visitors than arrived that day.
    late = {e.visitor_id for e in days[20] if e.visitor_id}
    assert len(late) > 200
    assert churn.Traffic(seed=3, visitors_per_day=200).day(0) == days[0]  # same seed, same traffic


def test_churn_is_a_phase_of_leadrouter_bench_but_not_a_default_one() -> None:
    p = argparse.ArgumentParser()
    bench_cli.add_arguments(p)
    assert "churn" not in p.parse_args([]).phases
    args = p.parse_args(["--phases", "churn", "--churn-days", "10", "--churn-no-baseline"])
    assert args.phases == ["churn"]
    opts = churn.options(args, "churn_")
    assert (opts.days, opts.ttl_days, opts.baseline, opts.seed) == (10, 30.0, False, 1)


def test_slope_per_week() -> None:
    assert churn.slope_per_week([1.0, 2.0, 3.0, 4.0], 4) == 7.0
    assert churn.slope_per_week([5.0] * 10, 7) == 0.0
