"""What both receivers share: the accepted messages, ``wait_for`` waiters and the ``on_message`` callback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Recorder(Generic[T]):
    """Accepted messages, async waiters and the ``on_message`` callback (owning loop only)."""

    def __init__(self, on_message: Callable[[T], None] | None) -> None:
        self.messages: list[T] = []
        self.on_message = on_message
        self._waiters: list[tuple[Callable[[T], bool], asyncio.Future[T]]] = []

    def add(self, item: T) -> None:
        self.messages.append(item)
        for predicate, fut in list(self._waiters):
            if fut.done():
                continue
            try:
                matched = predicate(item)
            except Exception as exc:
                fut.set_exception(exc)
                continue
            if matched:
                fut.set_result(item)
        if self.on_message is not None:
            try:
                self.on_message(item)
            except Exception:
                log.exception("on_message callback failed")

    async def wait_for(self, predicate: Callable[[T], bool] | None, timeout: float, what: str) -> T:
        pred: Callable[[T], bool] = predicate if predicate is not None else (lambda _m: True)
        for item in self.messages:
            if pred(item):
                return item
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        entry = (pred, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            msg = f"no matching {what} within {timeout}s ({len(self.messages)} received)"
            raise TimeoutError(msg) from None
        finally:
            self._waiters.remove(entry)
