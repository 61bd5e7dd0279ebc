"""What the end-to-end stacks share: their settings, receivers, waits, and how they read alerts and metrics.

Each test module builds its own ``Stack`` (which processes it starts and how it kills them differ);
these helpers are the parts that were the same in every one of them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from router.dev.receivers import SlackReceiver, SlackRequest, SmtpReceiver
from router.dev.run import spawn_service
from router.dev.servers import ManagedProcess, free_port, wait_for_port
from router.settings import Settings

SECRET = "e2e-secret-0123456789abcdef"


@asynccontextmanager
async def receivers() -> AsyncIterator[tuple[SlackReceiver, SmtpReceiver]]:
    """A Slack-format receiver (webhook and chat.postMessage) and an SMTP server, stopped afterwards."""
    slack, smtp = SlackReceiver(), SmtpReceiver()
    await slack.start()
    await smtp.start()
    try:
        yield slack, smtp
    finally:
        await slack.stop()
        await smtp.stop()


def stack_settings(servers: tuple[ManagedProcess, ManagedProcess], collector_port: int, *,
                   slack: SlackReceiver | None = None, smtp: SmtpReceiver | None = None, **overrides: Any) -> Settings:
    """Settings for a stack on ``servers`` (broker, redis-server) with its collector on ``collector_port``,
    alerting through ``slack`` and ``smtp``; ``overrides`` are further ``Settings.of`` fields."""
    broker, redis_proc = servers
    base: dict[str, Any] = {
        "kafka_url": f"kafka://127.0.0.1:{broker.port}",
        "redis_url": f"redis://127.0.0.1:{redis_proc.port}/0",
        "collector_port": collector_port,
        "public_url": f"http://127.0.0.1:{collector_port}",
        "collector_metrics_port": 0,  # no /metrics listener: 9108 may be taken by another stack
        "token_secret": SECRET,
        "alert_backoff_s": 0.05,
    }
    if slack is not None:
        base.update(slack_webhook_url=slack.webhook_url("sales"), slack_api_url=slack.api_url,
                    slack_bot_token="xoxb-e2e")
    if smtp is not None:
        base.update(smtp_host=smtp.host, smtp_port=smtp.port)
    return Settings.of(**{**base, **overrides})


@dataclass
class Stack:
    """A collector and one worker on the shared servers, alerting to receivers in the test."""

    settings: Settings
    collector: ManagedProcess
    worker: ManagedProcess
    slack: SlackReceiver
    smtp: SmtpReceiver
    redis: Redis

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest.collector_port}"

    def logs(self) -> str:
        return f"--- collector\n{self.collector.log_tail()}\n--- worker\n{self.worker.log_tail(80)}"


@asynccontextmanager
async def one_worker_stack(servers: tuple[ManagedProcess, ManagedProcess], workdir: Path,
                           warm: Callable[[Stack], Awaitable[None]], **overrides: Any) -> AsyncIterator[Stack]:
    """Start a collector and a worker (settings: :func:`stack_settings` with ``overrides``), wait until
    ``warm(stack)`` says the worker consumes, and stop them afterwards (the Redis database is flushed)."""
    port = free_port()
    async with receivers() as (slack, smtp):
        settings = stack_settings(servers, port, slack=slack, smtp=smtp,
                                  **{"worker_web_port": free_port(), **overrides})
        collector = spawn_service("collector", settings, workdir, port=port)
        worker = spawn_service("worker", settings, workdir)
        redis = Redis.from_url(settings.redis.url)
        st = Stack(settings, collector, worker, slack, smtp, redis)
        try:
            await asyncio.to_thread(wait_for_port, port, 30.0, collector.proc)
            await warm(st)
            yield st
        finally:
            collector.stop()
            worker.stop()
            await redis.flushdb()
            await redis.aclose()


async def until(condition: Callable[[], object | Awaitable[object]], what: str, *, timeout: float,
                logs: Callable[[], str], alive: Callable[[], None] = lambda: None, poll_s: float = 0.05) -> None:
    """Wait until ``condition()`` (sync or async) is true; ``alive()`` may assert the processes still run.
    Fails with ``what`` and the processes' ``logs()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        alive()
        await asyncio.sleep(poll_s)
    pytest.fail(f"{what} within {timeout:.0f}s\n{logs()}")


_ASSIGNMENT = re.compile(r"· assignment (\S+)$")


def slack_assignment(m: SlackRequest) -> str | None:
    """The assignment id a Slack alert names in its context line."""
    for block in m.blocks:
        for element in block.get("elements", []) if isinstance(block, dict) else []:
            found = _ASSIGNMENT.search(str(element.get("text", ""))) if isinstance(element, dict) else None
            if found:
                return found.group(1)
    return None


def delivered(slack: SlackReceiver, smtp: SmtpReceiver, aid: str
              ) -> tuple[list[SlackRequest], list[SlackRequest], list[EmailMessage]]:
    """Assignment ``aid``'s alerts as received: team webhook posts, DMs, emails."""
    hooks = [m for m in slack.messages if m.endpoint == "webhook" and slack_assignment(m) == aid]
    dms = [m for m in slack.messages if m.endpoint == "chat.postMessage" and slack_assignment(m) == aid]
    mails = [m for m in smtp.messages if m["X-Leadrouter-Assignment"] == aid]
    return hooks, dms, mails


def counts(slack: SlackReceiver, smtp: SmtpReceiver, aid: str) -> tuple[int, int, int]:
    """How many times assignment ``aid`` arrived on each channel: (webhook, DM, email)."""
    hooks, dms, mails = delivered(slack, smtp, aid)
    return len(hooks), len(dms), len(mails)


async def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a counter's samples with ``labels`` on the worker's /metrics at ``port`` (0 when it is down)."""
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
    except aiohttp.ClientError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
