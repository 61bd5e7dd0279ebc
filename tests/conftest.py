"""Shared fixtures: real servers on free loopback ports, started and stopped here.

Nothing in ``tests/integration`` or ``tests/e2e`` mocks Kafka or Redis.  A
missing server binary is an error, not a skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from router.dev.servers import ManagedProcess, start_broker, start_redis

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"


def datasets_or_skip() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"the shared datasets folder {DATASETS} is absent on this machine")
    return DATASETS


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ManagedProcess]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def broker_server() -> Iterator[ManagedProcess]:
    server = start_broker()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: ManagedProcess) -> str:
    return f"redis://127.0.0.1:{redis_server.port}/0"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
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
