"""Shared fixtures: real servers on free loopback ports, started and stopped here.

Nothing in ``tests/integration`` or ``tests/e2e`` mocks Kafka or Redis.  A
missing server binary is an error, not a skip.

Redis Cluster (issue 16 finding 9).  ``redis_url`` / ``redis`` come in two
modes: ``single`` (one ``redis-server``) and ``cluster`` (a session-wide
3-primary Redis Cluster of real ``redis-server`` processes, started by
``router.dev.cluster``; its URL is ``redis+cluster://...``, so everything the
test starts from that URL, the worker, the collector, the admin API, the CLI,
talks to the cluster through ``router.storage.redis``).  The modules in
``CLUSTER_MODULES`` run every test that uses ``redis_url`` in both modes
(ids ``[single]`` / ``[cluster]``); the rest run on the single server.  The
fault tests (tests/faults) run their Redis-state tests in both modes too
(their own private servers; see tests/faults/conftest.py), and the failover
test runs on a cluster with replicas.

Which modules, and why: the ones whose tests write and read Redis state
through the multi-key steps a cluster can refuse (Lua scripts, pipelines,
MGET, scans, FLUSHDB): the lead store and merges (store, identity), scoring
and its published rules (scoring_rules, rules_publish), accounts, the
distribution and lifecycle/SLA scripts (distribution, lifecycle, lifecycle_sla:
racing tickers, reassign, reengage, scheduler), erasure (erasure, forget: deletes across many slots), expiry,
the admin API and its tokens (admin_api, admin_tokens: the token set and
records are two slots), form spam (rate-limit counters pipelined with
scripts) and the review queue.  Tests that only exercise HTTP edges, alert
rendering, the data-set simulations or the browser stay single-server: a
second run of them would add minutes and no Redis coverage.  Every other
module passes on the cluster too (``TEST_REDIS_CLUSTER_ALL=1 pytest -k
cluster tests/integration`` surveys them; their own clients are made with
``router.storage.redis.redis_from_url``, so they follow the mode).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from router.dev.cluster import ManagedCluster, start_redis_cluster
from router.dev.servers import ManagedProcess, start_broker, start_redis
from router.storage.redis import AnyRedis, flush, redis_from_url

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"

REDIS_MODES = ("single", "cluster")
CLUSTER_MODULES = frozenset({
    "tests/integration/test_store.py",
    "tests/integration/test_store_batched.py",
    "tests/integration/test_identity.py",
    "tests/integration/test_scoring_rules.py",
    "tests/integration/test_rules_publish.py",
    "tests/integration/test_accounts.py",
    "tests/integration/test_distribution.py",
    "tests/integration/test_lifecycle.py",
    "tests/integration/test_reengage.py",
    "tests/integration/test_scheduler.py",
    "tests/integration/test_lifecycle_sla.py",
    "tests/integration/test_reassign.py",
    "tests/integration/test_erasure.py",
    "tests/integration/test_forget.py",
    "tests/integration/test_expiry.py",
    "tests/integration/test_admin_api.py",
    "tests/integration/test_admin_tokens.py",
    "tests/integration/test_form_spam.py",
    "tests/integration/test_review_and_provenance.py",
    "tests/integration/test_cluster_slots.py",
    # Fault tests (their own private stacks): the worker's exactly-once under a kill, a broker outage and
    # redelivered alerts, on a cluster too.  The Redis restart (one server's AOF) and the collector-only
    # malformed bursts stay single; tests/faults/test_redis_failover.py is the cluster's own fault.
    "tests/faults/test_worker_kill.py",
    "tests/faults/test_broker_outage.py",
    "tests/faults/test_alert_redelivery.py",
})


def datasets_or_skip() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"the shared datasets folder {DATASETS} is absent on this machine")
    return DATASETS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = Path(metafunc.definition.path).resolve().relative_to(REPO).as_posix()
    uses_redis = "redis_url" in metafunc.fixturenames or "stack_of" in metafunc.fixturenames
    # TEST_REDIS_CLUSTER_ALL=1: every module that uses Redis in both modes (a survey, not CI; not a
    # LEADROUTER_ name, which the CLI subprocesses would refuse as an unknown setting).
    if uses_redis and (module in CLUSTER_MODULES or os.environ.get("TEST_REDIS_CLUSTER_ALL") == "1"):
        metafunc.parametrize("redis_mode", REDIS_MODES, indirect=True, scope="function")


@pytest.fixture
def redis_mode(request: pytest.FixtureRequest) -> str:
    """``single`` or ``cluster`` (parametrised for CLUSTER_MODULES; ``single`` elsewhere)."""
    return str(getattr(request, "param", "single"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ManagedProcess]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ManagedCluster]:
    """A 3-primary Redis Cluster (no replicas) for the whole session, started on first use."""
    cluster = start_redis_cluster(3)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def broker_server() -> Iterator[ManagedProcess]:
    server = start_broker()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_mode: str, request: pytest.FixtureRequest) -> str:
    if redis_mode == "cluster":
        cluster: ManagedCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    server: ManagedProcess = request.getfixturevalue("redis_server")
    return f"redis://127.0.0.1:{server.port}/0"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[AnyRedis]:
    client = redis_from_url(redis_url)
    await flush(client)
    yield client
    await client.aclose()


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ManagedProcess]]:
    """Start extra private servers (``kind`` is 'redis' or 'broker'); all stopped at teardown."""
    started: list[ManagedProcess] = []

    def make(kind: str, **kwargs: object) -> ManagedProcess:
        proc = start_redis(**kwargs) if kind == "redis" else start_broker(**kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield make
    for p in started:
        p.stop()
