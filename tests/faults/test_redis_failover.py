"""A Redis Cluster primary fails over mid-stream: no event lost, none counted twice, each alert once.

The stack runs on a private Redis Cluster of 3 primaries, each with a replica
(``router.dev.cluster``); the worker, the collector and the alert sender reach
it through ``redis+cluster://``.  While a steady stream of pixels and forms
goes through the collector and the worker, the replica of the primary that
holds the most of the workload's leads takes over (``CLUSTER FAILOVER``: the
replica catches up with its primary, then the slots move to it and the old
primary becomes its replica).  Clients that still talk to the old primary get
``MOVED`` and follow the new slot map; a pipelined batch caught half way is
redone by the worker, which the scripts' event-id de-duplication makes safe.

The end state must be exact: each lead's event count, per-type counts, seen
event ids and score equal what the collector accepted, every hand-raiser is
alerted once per channel (a crossing fires once), and the worker keeps
running.  A second failover back to the first node then shows the new
primary serves scripts it never loaded itself (a replica does not carry the
script cache).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from redis.cluster import key_slot

from router.dev.cluster import ManagedCluster
from router.dev.servers import ManagedProcess
from router.storage import keys
from tests.faults.harness import BROWSER_UA, Stack, Workload

pytestmark = pytest.mark.e2e

FAILOVER_ROUND = 12
BACK_ROUND = 26
# lead index -> round of its demo request: before, just before, around and after each failover.
RAISE_AT = {0: 3, 1: FAILOVER_ROUND - 1, 2: FAILOVER_ROUND, 3: FAILOVER_ROUND + 2, 4: BACK_ROUND, 5: 36}


def _slots_of(cluster: ManagedCluster, node: ManagedProcess) -> set[int]:
    """The hash slots ``node`` serves as a primary (CLUSTER SLOTS lists each range's primary first)."""
    with cluster.client(node) as c:
        rows = c.execute_command("CLUSTER", "SLOTS")
    return {slot for start, end, primary, *_ in rows if int(primary[1]) == node.port
            for slot in range(int(start), int(end) + 1)}


def _replica_of(cluster: ManagedCluster, primary: ManagedProcess) -> ManagedProcess:
    for node in cluster.nodes:
        if node is primary or not node.alive():
            continue
        with cluster.client(node) as c:
            info = c.info("replication")
        if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
            return node
    msg = f"no replica of the primary on port {primary.port}"
    raise AssertionError(msg)


def _fail_over(cluster: ManagedCluster, replica: ManagedProcess, timeout: float = 20.0) -> float:
    """CLUSTER FAILOVER on ``replica``; seconds until it is a primary and the cluster is ok again."""
    started = time.monotonic()
    with cluster.client(replica) as c:
        assert c.execute_command("CLUSTER", "FAILOVER") in (b"OK", "OK", True)
    deadline = started + timeout
    while cluster.role_of(replica) != "master":
        assert time.monotonic() < deadline, f"the replica on {replica.port} was not promoted within {timeout}s"
        time.sleep(0.05)
    cluster.wait_ok(timeout)
    return time.monotonic() - started


async def test_cluster_primary_failover_mid_stream_loses_and_doubles_nothing(stack_of: Callable[..., Any]) -> None:
    st: Stack = await stack_of(redis_mode="cluster", cluster_replicas=True)
    assert st.cluster is not None
    cluster = st.cluster
    work = Workload(st.url, n_leads=8)
    # The primary that holds the most of this workload's leads is the one that fails over.
    lead_slots = [key_slot(keys.lead(lead.lead_id).encode()) for lead in work.leads]
    primary = max(cluster.primaries, key=lambda n: len(_slots_of(cluster, n) & set(lead_slots)))
    on_it = len(_slots_of(cluster, primary) & set(lead_slots))
    assert on_it > 0
    replica = _replica_of(cluster, primary)
    moved: dict[str, float] = {}
    async with aiohttp.ClientSession(headers={"User-Agent": BROWSER_UA}) as s:
        await work.identify(s)

        async def fault(r: int) -> None:
            if r == FAILOVER_ROUND:
                moved["counted"] = await work.processed(st.redis)
                assert moved["counted"] > 0, st.logs()
                moved["first_s"] = await asyncio.to_thread(_fail_over, cluster, replica)
            elif r == BACK_ROUND:
                moved["counted_back"] = await work.processed(st.redis)
                moved["back_s"] = await asyncio.to_thread(_fail_over, cluster, primary)

        # ~10 s of traffic at ~40 hits/s (8 leads, 45 rounds); two failovers in the middle.
        await work.stream(s, rounds=45, rate_per_s=40, raise_at=RAISE_AT, on_round=fault)
    assert moved["counted"] < moved["counted_back"] < work.sent, "the failovers did not happen mid-stream"
    assert work.refused == 0
    await work.wait_processed(st, timeout=60, stall_s=20)
    await work.check_exactly_once(st.redis)
    await work.check_alerts(st)
    assert st.worker.alive(), st.logs()
    assert cluster.role_of(primary) == "master" and cluster.role_of(replica) == "slave"
    print(f"failover: {on_it} of {len(work.leads)} leads on the primary; promoted in {moved['first_s']:.2f}s, "
          f"back in {moved['back_s']:.2f}s")
