"""Helpers shared by the integration tests."""

from __future__ import annotations

from models import ApplyResult, Event
from router.storage.store import RedisStore
from router.worker.pipeline import apply_batch
from scoring import ScoringConfig

T0 = 1_790_000_000.0


async def run_batch(store: RedisStore, config: ScoringConfig, events: list[Event], now: float = T0
                    ) -> list[ApplyResult]:
    """The worker's batch path minus routing."""
    return (await apply_batch(store, config, events, now)).results
