"""Redis restarts mid-stream (append-only file on, same port and directory): no update is lost.

While Redis is down the worker's batches fail.  Whatever the worker does about
it (retry the batch, or crash the agent and let Kafka redeliver from the last
committed offset), the end state must be exact: each lead holds every accepted
event once, with the exact score.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from router.dev.servers import start_redis
from tests.faults.harness import BROWSER_UA, Stack, Workload

pytestmark = pytest.mark.e2e

STOP_ROUND = 10
START_ROUND = 20


async def test_redis_restart_mid_stream_loses_no_update(stack_of: Callable[..., Any]) -> None:
    st: Stack = await stack_of(redis_appendonly=True)
    work = Workload(st.url, n_leads=8)
    down: dict[str, float] = {}
    async with aiohttp.ClientSession(headers={"User-Agent": BROWSER_UA}) as s:
        await work.identify(s)

        async def fault(r: int) -> None:
            if r == STOP_ROUND:
                down["counted"] = await work.processed(st.redis)
                assert down["counted"] > 0, st.logs()
                # SIGTERM: Redis writes and fsyncs the append-only file before it exits.
                assert st.redis_proc is not None
                await asyncio.to_thread(st.redis_proc.stop)
                down["at"] = time.monotonic()
            elif r == START_ROUND:
                assert st.redis_proc is not None and st.redis_proc.workdir is not None
                st.redis_proc = await asyncio.to_thread(
                    start_redis, port=st.redis_proc.port, workdir=st.redis_proc.workdir, appendonly=True)
                down["for"] = time.monotonic() - down["at"]
                # The test's own client: its pooled connections died with the server.
                await st.redis.aclose()
                st.redis = Redis.from_url(st.settings.redis.url)

        # ~8 s of traffic at ~40 hits/s; Redis is away for ~2 s in the middle.
        await work.stream(s, rounds=40, rate_per_s=40, raise_at={0: 3, 1: 15, 2: 30}, on_round=fault)
    assert down["counted"] < work.sent and down["for"] > 1.0
    assert work.refused == 0
    # A worker that copes needs seconds once Redis is back; a stalled one never moves again.
    await work.wait_processed(st, timeout=45, stall_s=10)
    await work.check_exactly_once(st.redis)
    await work.check_alerts(st)
    assert st.worker.alive(), st.logs()
