"""``leadrouter dev``: the whole service on one machine, with live demo traffic.

Starts (unless ``KAFKA_URL`` / ``REDIS_URL`` point elsewhere) the embedded
Kafka-compatible broker and a private Redis on free ports, then the collector
and the worker as processes of their own, a local Slack-format receiver and an
SMTP receiver that print what reps would get, and demo traffic.  Ctrl-C (or
SIGTERM) stops everything it started; no process is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TextIO

from router.dev.demo import DemoTraffic, OutcomeDemo, ReengageDemo
from router.dev.receivers import SlackReceiver, SlackRequest, SmtpReceiver
from router.dev.servers import ManagedProcess, free_port, spawn, start_broker, start_redis, wait_for_port
from router.settings import Settings


def spawn_service(kind: str, settings: Settings, workdir: Path, extra_env: Mapping[str, str] | None = None,
                  port: int | None = None) -> ManagedProcess:
    """Start ``leadrouter collector`` or ``leadrouter worker`` as a child process."""
    env = {**os.environ, **settings.to_env(), **(extra_env or {})}
    return spawn(kind, [sys.executable, "-m", "router.cli.main", kind], port or 0, workdir, env=env, check_port=False)


_SLACK_CONTROL = re.compile(r"<([^<>]*)>")


def _slack_control(match: re.Match[str]) -> str:
    target, _, label = match.group(1).partition("|")
    if target.startswith("@"):  # <@U123> a user mention
        return label or target
    if target.startswith("#"):  # <#C123|general> a channel
        return f"#{label}" if label else target
    if target.startswith("!"):  # <!here>, <!date^...|fallback>
        return label or f"@{target[1:]}"
    return f"{label} ({target})" if label and label != target else target


def slack_plain(text: str) -> str:
    """Slack mrkdwn as a person reads it: ``<url|label>`` as ``label (url)``, mentions as ``@U123``,
    and Slack's three escapes (``&amp;``, ``&lt;``, ``&gt;``) undone."""
    text = _SLACK_CONTROL.sub(_slack_control, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _slack_line(msg: SlackRequest) -> str:
    text = slack_plain(msg.text or "").replace("\n", " ")
    where = f"#{msg.channel}" if msg.endpoint == "webhook" else f"DM {msg.channel}"
    return f"[slack {where}] {text[:200]}"


def _email_line(msg: EmailMessage) -> str:
    return f"[email to {msg['To']}] {msg['Subject']}"


async def _ops_token(settings: Settings) -> str:
    """An ops token for the demo's admin API (stored hashed, like any other)."""
    from router.admin.auth import Role, TokenStore
    from router.storage.redis import create_redis

    redis = create_redis(settings.redis, role="dev")
    try:
        token, _ = await TokenStore(redis).create(Role.OPS, name="dev", now=time.time())
    finally:
        await redis.aclose()
    return token


class DevConsole:
    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.started = time.monotonic()
        self.closed = False

    def say(self, line: str) -> None:
        """Print a line; a closed console (``| head``, a gone terminal) never stops the run or its cleanup."""
        if self.closed:
            return
        stamp = time.monotonic() - self.started
        try:
            print(f"{stamp:7.1f}s  {line}", file=self.out, flush=True)
        except (BrokenPipeError, OSError):
            self.closed = True


async def run_dev(settings: Settings, *, rate: float = 20.0, duration_s: float | None = None,
                  seed: int | None = None, out: TextIO = sys.stdout, outcome_delay_s: float = 20.0) -> int:
    console = DevConsole(out)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every connection
    workdir = Path(tempfile.mkdtemp(prefix="leadrouter-dev-"))
    started: list[ManagedProcess] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    slack = SlackReceiver(on_message=lambda m: console.say(_slack_line(m)))
    smtp = SmtpReceiver(on_message=lambda m: console.say(_email_line(m)))
    alerts = {"slack": 0, "email": 0}

    def counting(kind: str, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        def inner(m: Any) -> None:
            alerts[kind] += 1
            fn(m)
        return inner

    slack.on_message = counting("slack", slack.on_message)  # type: ignore[arg-type]
    smtp.on_message = counting("email", smtp.on_message)  # type: ignore[arg-type]
    try:
        if "kafka_url" not in settings.explicit:
            broker = start_broker(workdir=workdir / "broker")
            started.append(broker)
            settings = settings.with_(kafka_url=f"kafka://127.0.0.1:{broker.port}")
            console.say(f"broker   Tansu (Kafka-compatible) on 127.0.0.1:{broker.port}")
        if "redis_url" not in settings.explicit:
            redis = start_redis(workdir=workdir / "redis")
            started.append(redis)
            settings = settings.with_(redis_url=f"redis://127.0.0.1:{redis.port}/0")
            console.say(f"redis    redis-server on 127.0.0.1:{redis.port}")
        await slack.start()
        await smtp.start()
        console.say(f"slack    local Slack-format receiver on {slack.url}")
        console.say(f"smtp     local SMTP receiver on 127.0.0.1:{smtp.port}")
        collector_port = free_port() if "collector_port" not in settings.explicit else settings.ingest.collector_port
        metrics_port = (settings.ingest.collector_metrics_port if "collector_metrics_port" in settings.explicit
                        else free_port())
        settings = settings.with_(
            collector_port=collector_port,
            collector_metrics_port=metrics_port,
            public_url=f"http://127.0.0.1:{collector_port}",
            worker_web_port=free_port(),
            token_secret=settings.tokens.secret or secrets.token_urlsafe(32),
            slack_webhook_url=settings.alerts.slack_webhook_url or slack.webhook_url("sales"),
            slack_api_url=slack.url + "/api",
            slack_bot_token=settings.alerts.slack_bot_token or "xoxb-leadrouter-dev",
            smtp_host="127.0.0.1", smtp_port=smtp.port,
            # The worker runs in the temporary folder; the archive stays where `leadrouter backtest` looks.
            archive_dir=settings.files.archive_dir.resolve(),
        )
        admin_port = free_port()
        settings = settings.with_(admin_port=admin_port, admin_url=f"http://127.0.0.1:{admin_port}",
                                  admin_crm_webhook_secret=(settings.admin.crm_webhook_secret
                                                            or secrets.token_urlsafe(32)))
        if "admin_metrics_urls" not in settings.explicit:  # the console's Health page reads both processes
            settings = settings.with_(admin_metrics_urls=[
                *([f"http://127.0.0.1:{metrics_port}/metrics"] if metrics_port else []),
                f"http://127.0.0.1:{settings.worker.web_port}/metrics"])
        collector = spawn_service("collector", settings, workdir, port=collector_port)
        started.append(collector)
        worker = spawn_service("worker", settings, workdir)
        started.append(worker)
        admin = spawn_service("admin", settings, workdir, port=admin_port)
        started.append(admin)
        await asyncio.to_thread(wait_for_port, collector_port, 30.0, collector.proc)
        console.say(f"collector http://127.0.0.1:{collector_port}  (pixel /t/p.gif, form /t/form, open /t/o/<token>.gif)"
                    + (f"; metrics on http://127.0.0.1:{metrics_port}/metrics" if metrics_port else ""))
        console.say(f"worker   faust app {settings.kafka.app_id!r}; logs in {workdir}")
        if settings.worker.archive:
            console.say(f"archive  accepted events to {settings.files.archive_dir}/events (for leadrouter backtest)")
        await asyncio.to_thread(wait_for_port, admin_port, 30.0, admin.proc)
        token = await _ops_token(settings)
        console.say(f"admin    {settings.alerts.admin_url}/openapi.json  (ops token: {token}); alert links open here")
        console.say(f"console  {settings.alerts.admin_url}/console/  sign in as ops (one click): "
                    f"{settings.alerts.admin_url}/console/sign-in?token={token}")
        if rate > 0:
            console.say(f"demo     sending ~{rate:.0f} hits/s of visits, opens and form fills; Ctrl-C stops everything")
        else:
            console.say("demo     off (--rate 0): send your own traffic to the collector; Ctrl-C stops everything")
        demo = DemoTraffic(settings.ingest.public_url, settings.tokens.secret, rate_per_s=rate, seed=seed)
        demo_task = asyncio.create_task(demo.run(stop, duration_s))
        reps_task: asyncio.Task[None] | None = None
        crm_task: asyncio.Task[None] | None = None
        if rate > 0:  # the reps' side: a few alerted leads lost, some of them back later (re-engagements)
            reps = ReengageDemo(demo, settings.alerts.admin_url, token, console.say)
            reps_task = asyncio.create_task(reps.run(stop))
            # The CRM's side: every other alerted lead won or lost from its person's hidden propensity.
            crm = OutcomeDemo(demo, settings.alerts.admin_url, token, settings.admin.crm_webhook_secret, console.say,
                              delay_s=outcome_delay_s, seed=seed, skip=lambda email: email in reps.tried)
            crm_task = asyncio.create_task(crm.run(stop))
            console.say(f"learn    alerted leads are marked won or lost ~{outcome_delay_s:.0f} s after routing, from "
                        "hidden propensities, through the signed CRM webhook; while this runs, train on them:")
            console.say(f"         REDIS_URL={settings.redis.url} leadrouter model train --from-outcomes "
                        "--min-leads 30 --min-conversions 8")
        last = time.monotonic()
        while not stop.is_set() and not demo_task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            for p in (collector, worker, admin):
                if not p.alive():
                    console.say(f"{p.name} exited with code {p.proc.returncode}; last log lines:\n{p.log_tail()}")
                    stop.set()
            if console.closed:
                stop.set()  # nobody is watching the console any more
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                s = demo.stats.sent
                console.say(f"traffic  {s['page']} pages, {s['form']} forms, {s['open']} opens, {s['error']} errors; "
                            f"alerts {alerts['slack']} slack, {alerts['email']} email")
        stop.set()
        await demo_task
        if reps_task is not None:
            await reps_task
        if crm_task is not None:
            await crm_task
        return 0
    finally:
        console.say("stopping…")
        for p in reversed(started):
            p.stop()  # each stop is independent: one failing never leaves the others running
        await slack.stop()
        await smtp.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        console.say("stopped; nothing left running")
