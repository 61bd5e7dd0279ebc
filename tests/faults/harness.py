"""Fault-injection harness: the whole service as real processes, and a known workload.

Used through the ``stack_of`` fixture (conftest.py).  Every test here starts
its own Tansu broker and redis-server (so a frozen broker or a restarted Redis
never leaks into another test), the collector and the
worker as processes of their own (``router.dev.run.spawn_service``), and the
Slack-format and SMTP receivers in the test.  Nothing is mocked.

The workload goes through the collector over HTTP, the way browsers send it.
Its expected end state is computed from the scoring config with
``scoring.score_event`` / ``total_points``.  The config is this folder's own
(written to a temporary file, used through ``LEADROUTER_SCORING_FILE``): no
caps, so every event counts in full; a threshold no stream reaches, so only
hand-raisers fire; and a half-life of a million days, so decay over a test
(~1e-9 relative) does not blur "counted once" versus "counted twice".
E-mail addresses are on a free-mail domain so no account rolls up (account
intent would route leads that raised no hand).

Redis is one ``redis-server`` (``redis_mode="single"``) or a private 3-primary
Redis Cluster (``redis_mode="cluster"``, with a replica per primary when
``cluster_replicas``); the services get its ``redis+cluster://`` URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from models import Event, EventType
from router.dev.cluster import ManagedCluster, start_redis_cluster
from router.dev.receivers import SlackReceiver, SmtpReceiver
from router.dev.run import spawn_service
from router.dev.servers import ManagedProcess, free_port, start_broker, start_redis, wait_for_port
from router.settings import Settings
from router.storage import keys
from router.storage.records import seen_member
from router.storage.redis import AnyRedis as Redis
from router.storage.redis import redis_from_url
from scoring import ScoringConfig, load_scoring_config, score_event, total_points
from tests.support import pid

SECRET = "faults-secret-0123456789abcdef"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

FAULT_SCORING = """\
# Scoring for the fault tests: no caps, a threshold nothing reaches, (almost) no decay.
threshold: 1000000
half_life_days: 1000000
rules:
  - name: page-view
    description: Any page view.
    event: page_view
    points: 1
  - name: pricing-page
    description: Viewed pricing.
    event: page_view
    url: ^/pricing(?:[/?]|$)
    points: 10
  - name: form-fill
    description: Any form.
    event: form_fill
    points: 7
  - name: demo-request
    description: Asked for a demo.
    event: form_fill
    form: demo-request
    points: 50
    hand_raiser: true
"""
SCORING: ScoringConfig = load_scoring_config(FAULT_SCORING, "faults/scoring.yaml")


def points_of(etype: EventType, *, url: str | None = None, form_id: str | None = None) -> float:
    ev = Event(event_id="x", type=etype, ts=1.0, source="test", url=url, form_id=form_id)
    return total_points(score_event(ev, SCORING))


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    settings: Settings
    workdir: Path
    broker: ManagedProcess
    redis_proc: ManagedProcess | None  # one redis-server, or None with ``cluster``
    collector: ManagedProcess
    slack: SlackReceiver
    smtp: SmtpReceiver
    redis: Redis
    workers: list[ManagedProcess] = field(default_factory=list)
    cluster: ManagedCluster | None = None
    mail_log: list[tuple[float, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest.collector_port}"

    @property
    def metrics_url(self) -> str:
        """The collector's private metrics listener."""
        return f"http://127.0.0.1:{self.settings.ingest.collector_metrics_port}/metrics"

    @property
    def worker(self) -> ManagedProcess:
        return self.workers[-1]

    def start_worker(self) -> ManagedProcess:
        w = spawn_service("worker", self.settings, self.workdir)
        self.workers.append(w)
        return w

    def kill_worker(self) -> None:
        """SIGKILL the worker's whole process group: no shutdown, no offset commit."""
        w = self.worker
        w.signal(signal.SIGKILL)
        w.proc.wait(10)

    def logs(self, lines: int = 60) -> str:
        out = [f"--- collector\n{self.collector.log_tail(lines)}"]
        if self.workers:
            out.append(f"--- worker (log of every worker run)\n{self.worker.log_tail(lines)}")
        return "\n".join(out)


async def start_stack(tmp_path: Path, *, redis_appendonly: bool = False, worker: bool = True,
                      redis_mode: str = "single", cluster_replicas: bool = False, **overrides: Any) -> Stack:
    tmp_path.mkdir(parents=True, exist_ok=True)
    scoring_file = tmp_path / "scoring.yaml"
    scoring_file.write_text(FAULT_SCORING)
    broker = start_broker(workdir=tmp_path / "broker")
    redis_proc: ManagedProcess | None = None
    cluster: ManagedCluster | None = None
    if redis_mode == "cluster":
        cluster = await asyncio.to_thread(start_redis_cluster, 3, replicas=cluster_replicas,
                                          workdir=tmp_path / "redis-cluster")
        redis_url = cluster.url
    else:
        redis_proc = start_redis(workdir=tmp_path / "redis", appendonly=redis_appendonly)
        redis_url = f"redis://127.0.0.1:{redis_proc.port}/0"
    slack = SlackReceiver()
    smtp = SmtpReceiver()
    await slack.start()
    await smtp.start()
    port = free_port()
    values: dict[str, Any] = {
        "kafka_url": f"kafka://127.0.0.1:{broker.port}",
        "redis_url": redis_url,
        "collector_port": port,
        "public_url": f"http://127.0.0.1:{port}",
        "worker_web_port": free_port(),
        "collector_metrics_port": free_port(),  # /metrics is never on the public collector port
        "token_secret": SECRET,
        "scoring_file": scoring_file,
        "slack_webhook_url": slack.webhook_url("sales"),
        "slack_api_url": slack.api_url,
        "slack_bot_token": "xoxb-faults",
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "alert_backoff_s": 0.05,
        # Tansu holds a JoinGroup for about half the session timeout: 3 s instead of 5 s per worker start.
        "broker_session_timeout_s": 6.0,
        # Slack pacing (1 message/s per channel by default) is not under test here, except where a test
        # sets it back; the hand-raisers of a test share one webhook channel.
        "slack_rate_per_s": 20.0,
        # The traffic of these tests comes from one loopback address at load-test rates, from scripted
        # clients: rate limits and the review queue (tests/e2e/test_form_flood.py) are not under test here.
        "rate_limit_form_per_ip": 0, "rate_limit_form_per_visitor": 0, "rate_limit_pixel_per_ip": 0,
        "worker_review_trust_below": 0.0,
        "spool_send_timeout_s": 2.0,
        "spool_recheck_delay_s": 0.5,
        "log_level": "INFO",
    }
    values.update(overrides)
    settings = Settings.of(**values)
    workdir = tmp_path / "svc"
    workdir.mkdir()
    collector = spawn_service("collector", settings, workdir, port=port)
    st = Stack(settings, workdir, broker, redis_proc, collector, slack, smtp, redis_from_url(settings.redis.url),
               cluster=cluster)
    smtp.on_message = lambda m: st.mail_log.append((time.time(), m))
    try:
        await asyncio.to_thread(wait_for_port, port, 30.0, collector.proc)
        if worker:
            st.start_worker()
            await wait_until_consuming(st)
    except BaseException:
        await stop_stack(st)
        raise
    return st


async def stop_stack(st: Stack) -> None:
    # SIGKILL: a graceful faust shutdown can take 10 s, and nothing here needs one.
    for p in (*st.workers, st.collector):
        p.signal(signal.SIGKILL)
        with contextlib.suppress(Exception):
            p.proc.wait(5)
        p.stop()
    with contextlib.suppress(Exception):
        await st.redis.aclose()
    if st.redis_proc is not None:
        st.redis_proc.stop()
    if st.cluster is not None:
        st.cluster.stop()
    st.broker.stop()
    await st.slack.stop()
    await st.smtp.stop()


async def wait_until_consuming(st: Stack, timeout: float = 60.0) -> None:
    """Send a warm-up hit until the worker has joined its group and processed it."""
    vid = "warmup" + uuid.uuid4().hex[:12]
    lead_key = keys.lead(keys.lead_id_for_visitor(pid(vid)))
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(headers={"User-Agent": BROWSER_UA}) as s:
        async with s.get(f"{st.url}/t/p.gif", params={"vid": vid, "url": "https://warm.example/"}) as r:
            assert r.status == 200
        while time.monotonic() < deadline:
            if await st.redis.exists(lead_key):
                return
            assert st.worker.alive(), st.logs()
            await asyncio.sleep(0.2)
    pytest.fail(f"worker did not consume within {timeout}s\n{st.logs()}")


# --------------------------------------------------------------------------- metrics


_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        labels = frozenset(_LABEL.findall(m["labels"] or ""))
        out[(m["name"], labels)] = float(m["value"])
    return out


def metric_family(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
                  *label_names: str) -> dict[tuple[str, ...], float]:
    """``{(label values...): value}`` for one metric name."""
    out: dict[tuple[str, ...], float] = {}
    for (n, labels), value in metrics.items():
        if n == name:
            d = dict(labels)
            out[tuple(d.get(k, "") for k in label_names)] = value
    return out


async def fetch_metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        return parse_metrics(await r.text())


# --------------------------------------------------------------------------- the workload


class NotAllCounted(AssertionError):
    """Accepted events that never showed up in Redis (lost, or a worker that stopped working)."""


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


@dataclass
class LeadPlan:
    """One known person: a browser (visitor id) and an e-mail address, and what was accepted for them."""

    index: int
    vid: str
    email: str
    first_name: str
    last_name: str
    events: int = 0
    points: float = 0.0
    by_type: dict[str, int] = field(default_factory=dict)
    form_event_ids: list[str] = field(default_factory=list)
    raised: bool = False

    @property
    def lead_id(self) -> str:
        return keys.lead_id_for_email(self.email)

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    def add(self, etype: EventType, pts: float) -> None:
        self.events += 1
        self.points += pts
        self.by_type[etype.value] = self.by_type.get(etype.value, 0) + 1


class Workload:
    """A steady stream of pixel hits and form posts for a fixed set of known leads.

    Only what the collector *accepted* (GIF for a pixel, ``202`` for a form) is
    expected in the end state; a form answered ``503`` (spool full) is the
    client's to retry and is not expected.
    """

    def __init__(self, url: str, n_leads: int, tag: str = "") -> None:
        self.url = url
        tag = tag or uuid.uuid4().hex[:6]
        self.leads = [
            LeadPlan(index=i, vid=f"fv{tag}{i:04d}xxxxxxxx", email=f"fault.{tag}.{i}@mailinator.com",
                     first_name=f"Faultlead{tag}{i}", last_name="Tester")
            for i in range(n_leads)
        ]
        self.sent = 0
        self.refused = 0
        self.slowest_form_s = 0.0
        self.pixel_urls = ("https://www.example-saas.com/pricing", "https://www.example-saas.com/blog/x",
                           "https://www.example-saas.com/")

    async def identify(self, s: aiohttp.ClientSession) -> None:
        """A first (non hand-raiser) form per lead joins the browser to the person."""
        for lead in self.leads:
            await self.form(s, lead, "newsletter")

    async def pixel(self, s: aiohttp.ClientSession, lead: LeadPlan, n: int) -> None:
        url = self.pixel_urls[n % len(self.pixel_urls)]
        async with s.get(f"{self.url}/t/p.gif", params={"vid": lead.vid, "url": url, "title": f"hit {n}"}) as r:
            body = await r.read()
            assert r.status == 200 and len(body) == 43, (r.status, body[:200])
        # A pixel always answers its GIF; whether the event was stored shows in
        # the collector's request counter, which the tests compare at the end.
        lead.add(EventType.PAGE_VIEW, points_of(EventType.PAGE_VIEW, url=url))
        self.sent += 1

    async def form(self, s: aiohttp.ClientSession, lead: LeadPlan, form_id: str) -> bool:
        started = time.monotonic()
        async with s.post(f"{self.url}/t/form", json={
                "form_id": form_id, "email": lead.email, "vid": lead.vid, "first_name": lead.first_name,
                "last_name": lead.last_name, "country": "DE"}) as r:
            body = await r.json()
            self.slowest_form_s = max(self.slowest_form_s, time.monotonic() - started)
            if r.status == 503:
                self.refused += 1
                return False
            assert r.status == 202, body
        lead.add(EventType.FORM_FILL, points_of(EventType.FORM_FILL, form_id=form_id))
        lead.form_event_ids.append(body["event_id"])
        self.sent += 1
        return True

    async def stream(self, s: aiohttp.ClientSession, rounds: int, *, rate_per_s: float,
                     raise_at: dict[int, int] | None = None, on_round: Callable[[int], Any] | None = None) -> None:
        """``rounds`` rounds of one hit per lead (every 5th a form), at about ``rate_per_s`` hits/s.

        ``raise_at``: lead index -> the round in which that lead posts a demo request.
        """
        raise_at = raise_at or {}
        gap = 1.0 / rate_per_s
        started = time.monotonic()
        n = 0
        for r in range(rounds):
            if on_round is not None:
                res = on_round(r)
                if asyncio.iscoroutine(res):
                    await res
            for lead in self.leads:
                if raise_at.get(lead.index) == r and not lead.raised:
                    lead.raised = await self.form(s, lead, "demo-request")
                elif (r + lead.index) % 5 == 0:
                    await self.form(s, lead, "contact-us")
                else:
                    await self.pixel(s, lead, r)
                n += 1
                delay = started + n * gap - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def processed(self, redis: Redis) -> int:
        """Events counted so far over all leads (the lead hashes' ``events``)."""
        pipe = redis.pipeline(transaction=False)
        for lead in self.leads:
            pipe.hget(keys.lead(lead.lead_id), "events")
        return sum(int(v or 0) for v in await pipe.execute())

    async def wait_processed(self, st: Stack, timeout: float, settle_s: float = 2.0,
                             stall_s: float | None = None) -> None:
        """Until every accepted event is counted (then ``settle_s`` longer, to catch double counting).

        Fails after ``timeout``, or once the count has not moved for ``stall_s``.
        """
        want = sum(lead.events for lead in self.leads)
        started = last_move = time.monotonic()
        got = last = -1
        while True:
            got = await self.processed(st.redis)
            now = time.monotonic()
            if got >= want:
                break
            if got != last:
                last, last_move = got, now
            if now - started > timeout or (stall_s is not None and now - last_move > stall_s):
                why = f"within {timeout:.0f}s" if now - started > timeout else f"(no progress for {stall_s:.0f}s)"
                raise NotAllCounted(f"only {got} of {want} accepted events were counted {why}\n{st.logs()}")
            await asyncio.sleep(0.25)
        await asyncio.sleep(settle_s)

    async def check_exactly_once(self, redis: Redis) -> None:
        """Every lead holds exactly the accepted events, each counted once, and the exact score."""
        problems: list[str] = []
        for lead in self.leads:
            h = {_s(k): _s(v) for k, v in (await redis.hgetall(keys.lead(lead.lead_id))).items()}
            # members are the compact ids (router/storage/records.py): compare in that form
            seen = {bytes(m) for m in await redis.zrange(keys.seen(lead.lead_id), 0, -1)}
            counts = {t: int(h.get(f"n:{t}", 0)) for t in lead.by_type}
            if int(h.get("events", 0)) != lead.events:
                problems.append(f"{lead.email}: events {h.get('events')} != {lead.events} accepted")
            if counts != lead.by_type:
                problems.append(f"{lead.email}: per type {counts} != {lead.by_type}")
            if len(seen) != lead.events:
                problems.append(f"{lead.email}: {len(seen)} distinct event ids seen != {lead.events}")
            missing = [e for e in lead.form_event_ids if seen_member(e) not in seen]
            if missing:
                problems.append(f"{lead.email}: form events never counted: {missing}")
            score = float(h.get("score", 0))
            if abs(score - lead.points) > 1e-6 * max(1.0, lead.points):
                problems.append(f"{lead.email}: score {score!r} != {lead.points!r} expected")
            anon = keys.lead(keys.lead_id_for_visitor(pid(lead.vid)))
            if await redis.exists(anon) and not (await redis.hget(anon, "merged_into")):
                problems.append(f"{lead.email}: events left on the anonymous profile of {lead.vid}")
        assert not problems, "\n".join(problems)

    def deliveries(self, st: Stack) -> dict[tuple[str, str], list[float]]:
        """``(lead email, channel) -> [arrival times]`` at the Slack and SMTP receivers."""
        out: dict[tuple[str, str], list[float]] = {}
        for lead in self.leads:
            for m in st.slack.messages:
                if lead.name in (m.text or ""):
                    out.setdefault((lead.email, m.endpoint), []).append(m.received_at)
            for t, mail in st.mail_log:
                if lead.name in str(mail["Subject"]):
                    out.setdefault((lead.email, "email"), []).append(t)
        return out

    async def check_alerts(self, st: Stack, timeout: float = 30.0,
                           crash_at: float | None = None, crash_window_s: float = 1.0) -> list[str]:
        """Each hand-raiser alerted exactly once per channel (webhook, DM, e-mail); nobody else alerted.

        With ``crash_at`` (epoch seconds of a SIGKILL) one exception is made: a
        second copy of a message whose first copy arrived within
        ``crash_window_s`` before the kill (or after it, still in flight).  A
        process killed after a channel accepted the message but before it
        recorded the delivery in Redis cannot know it was delivered; that
        at-least-once window is inherent to channels without idempotency keys.
        Returns the duplicates excused that way.
        """
        raisers = [lead for lead in self.leads if lead.raised]
        channels = ("webhook", "chat.postMessage", "email")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.deliveries(st)
            if all(got.get((lead.email, ch)) for lead in raisers for ch in channels):
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(2.0)  # a duplicate alert has time to show up
        got = self.deliveries(st)
        problems: list[str] = []
        excused: list[str] = []
        for lead in self.leads:
            for ch in channels:
                times = sorted(got.get((lead.email, ch), []))
                want = 1 if lead.raised else 0
                if len(times) == want:
                    continue
                if (want == 1 and crash_at is not None and len(times) == 2
                        and crash_at - crash_window_s <= times[0] <= crash_at + 0.5):
                    excused.append(f"{lead.email} {ch}: first copy {times[0] - crash_at:+.3f}s from the kill")
                    continue
                rel = [round(t - (crash_at or times[0]), 3) for t in times]
                problems.append(f"{lead.email} {ch}: {len(times)} deliveries (want {want}) at {rel}")
        assert not problems, "alerts lost or duplicated:\n" + "\n".join(problems) + "\n" + st.logs()
        return excused
