"""Servers the end-to-end tests share within one test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from router.dev.servers import ManagedProcess, start_broker, start_redis


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ManagedProcess, ManagedProcess]]:
    """A fresh broker and redis-server per test module (topics and offsets start empty)."""
    broker, redis = start_broker(), start_redis()
    yield broker, redis
    broker.stop()
    redis.stop()
