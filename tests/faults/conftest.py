"""The ``stack_of`` fixture: private real-process stacks for the fault tests (see harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Stack, start_stack, stop_stack


@pytest.fixture
async def stack_of(tmp_path: Path, redis_mode: str) -> AsyncIterator[Callable[..., Any]]:
    """``await stack_of(**options)`` starts a private stack; everything is stopped at teardown.

    Its Redis is of the test's ``redis_mode`` (tests/conftest.py) unless the test names one.
    """
    made: list[Stack] = []

    async def make(**kwargs: Any) -> Stack:
        kwargs.setdefault("redis_mode", redis_mode)
        st = await start_stack(tmp_path / f"stack{len(made)}", **kwargs)
        made.append(st)
        return st

    yield make
    for st in made:
        await stop_stack(st)
