"""Demo traffic for `leadrouter dev`; a rate of 0 means none at all (the user sends their own)."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.cli.main import build_parser
from router.dev.demo import DemoTraffic

NOWHERE = "http://127.0.0.1:9"  # nothing is sent at rate 0, so nothing needs to listen


async def test_rate_zero_sends_nothing_and_lasts_the_duration() -> None:
    demo = DemoTraffic(NOWHERE, "secret", rate_per_s=0, seed=1)
    start = time.monotonic()
    stats = await demo.run(asyncio.Event(), duration_s=0.3)
    assert 0.25 <= time.monotonic() - start < 5
    assert sum(stats.sent.values()) == 0


async def test_rate_zero_stops_when_asked() -> None:
    demo = DemoTraffic(NOWHERE, "secret", rate_per_s=0, seed=1)
    stop = asyncio.Event()
    task = asyncio.create_task(demo.run(stop))  # no duration: until stopped
    await asyncio.sleep(0.05)
    assert not task.done()
    stop.set()
    stats = await asyncio.wait_for(task, 5)
    assert sum(stats.sent.values()) == 0


def test_dev_accepts_rate_zero_and_refuses_negative_rates(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["dev", "--rate", "0"]).rate == 0.0
    for bad in ("-1", "nan", "x"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["dev", "--rate", bad])
        assert "--rate" in capsys.readouterr().err
