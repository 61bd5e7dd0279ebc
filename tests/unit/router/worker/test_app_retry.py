"""An agent step is retried while Redis or Kafka is away, never dropped."""

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from router.storage.pii import PiiKeysUnavailable
from router.worker.app import until_done


async def test_a_step_is_retried_with_growing_capped_waits_until_it_succeeds() -> None:
    calls: list[int] = []
    waits: list[float] = []

    async def step() -> None:
        calls.append(1)
        if len(calls) < 8:
            raise RedisConnectionError("redis is restarting")

    async def sleep(s: float) -> None:
        waits.append(s)

    await until_done("batch", step, sleep=sleep)
    assert len(calls) == 8
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0]


async def test_a_programming_error_is_not_swallowed() -> None:
    async def step() -> None:
        raise KeyError("bug")

    async def sleep(s: float) -> None:
        raise AssertionError("must not retry a bug")

    with pytest.raises(KeyError):
        await until_done("batch", step, sleep=sleep)


async def test_an_unreachable_data_key_store_is_retried_not_dropped() -> None:
    """Opening a sealed event or alert while Redis restarts raises PiiKeysUnavailable (wrapping the
    RedisError): the step is retried, else faust restarts the agent and its records are lost."""
    calls: list[int] = []
    waits: list[float] = []

    async def step() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise PiiKeysUnavailable("the data-key store (Redis) did not answer")

    async def sleep(s: float) -> None:
        waits.append(s)

    await until_done("alert delivery", step, sleep=sleep)
    assert len(calls) == 3
    assert waits == [0.1, 0.2]
