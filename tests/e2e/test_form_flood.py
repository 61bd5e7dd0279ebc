"""A scripted demo-request flood does not become sales alerts, and a real lead's alert is not queued behind it.

Issue 16 finding 2: 200 scripted ``demo-request`` posts in 40 s gave 600 alerts, pushed reps past their
daily capacity and delayed a real lead's alert by 103 s.  Here the same kind of flood (and worse: all
in a few seconds) goes through real processes: broker (Tansu), redis-server, the collector and the
worker as processes of their own, the Slack-format and SMTP receivers in the test.  The collector
believes ``X-Forwarded-For`` from 127.0.0.1 (a trusted proxy), so the flood can come "from" one address
or from 200 (the header names TEST-NET/benchmark addresses; every packet goes to 127.0.0.1).

Expected: one address is cut off by its rate limit (429 + Retry-After); 200 addresses (a botnet, each
under its limit) get through the collector but every one of their hand-raisers is held for review with
its reasons, so no rep is alerted or assigned; a real lead (a browser with the site's Origin, who viewed
pages first, with a business address) sent right after the flood is alerted within seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from router.dev.servers import ManagedProcess
from router.storage import keys
from router.worker import review
from tests.e2e.stack import Stack, one_worker_stack
from tests.support import pid

pytestmark = pytest.mark.e2e

SECRET = "e2e-flood-secret-0123456789abcdef"
SITE = "https://www.example-saas.com"
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
SCRIPT = "python-requests/2.32.3"
FLOOD = 200
REAL_ALERT_DEADLINE_S = 10.0
FORM_LIMIT_PER_IP = 20


@pytest.fixture
async def stack(servers: tuple[ManagedProcess, ManagedProcess], tmp_path: Path) -> AsyncIterator[Stack]:
    async def warm(st: Stack) -> None:
        await _wait_until(st, _consuming(st), 60.0, "the worker did not consume")

    async with one_worker_stack(servers, tmp_path, warm, token_secret=SECRET, trusted_proxies="127.0.0.1/32",
                                cors_origins=SITE, rate_limit_form_per_ip=FORM_LIMIT_PER_IP) as st:
        yield st


def _consuming(st: Stack) -> Callable[[], Awaitable[bool]]:
    sent = False
    vid = "warmupflood00001"

    async def check() -> bool:
        nonlocal sent
        if not sent:
            async with aiohttp.ClientSession() as s, s.get(f"{st.url}/t/p.gif", params={"vid": vid}) as r:
                assert r.status == 200
            sent = True
        return bool(await st.redis.exists(keys.lead(keys.lead_id_for_visitor(pid(vid)))))  # ids are pseudonymised

    return check


async def _wait_until(st: Stack, check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        assert st.worker.alive() and st.collector.alive(), st.logs()
        await asyncio.sleep(0.2)
    pytest.fail(f"{what} within {timeout}s\n{st.logs()}")


async def _flood(st: Stack, addresses: list[str], tag: str) -> list[tuple[int, str | None]]:
    """One scripted demo-request per address (20 in flight at once); (status, Retry-After) of each."""
    gate = asyncio.Semaphore(20)
    out: list[tuple[int, str | None]] = []

    async def one(s: aiohttp.ClientSession, i: int, ip: str) -> None:
        data = {"form_id": "demo-request", "email": f"buyer{i}@{tag}-{i}-industries.com", "first_name": "Bot",
                "last_name": f"{tag.title()}{i}", "company": f"{tag.title()} {i} Industries", "country": "US",
                "job_title": "CEO"}
        async with gate, s.post(f"{st.url}/t/form", data=data, headers={"X-Forwarded-For": ip}) as r:
            await r.read()
            out.append((r.status, r.headers.get("Retry-After")))

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers={"User-Agent": SCRIPT}, timeout=timeout) as s:
        await asyncio.gather(*(one(s, i, ip) for i, ip in enumerate(addresses)))
    return out


async def test_a_demo_request_flood_is_held_for_review_and_a_real_lead_is_alerted_at_once(stack: Stack) -> None:
    st = stack
    # 1. From one address: its rate limit cuts it off (429 + Retry-After), the first 20 get through.
    one_address = await _flood(st, ["203.0.113.50"] * 100, "solo")
    assert sorted(s for s, _ in one_address).count(202) == FORM_LIMIT_PER_IP, st.logs()
    refused = [r for s, r in one_address if s == 429]
    assert len(refused) == 100 - FORM_LIMIT_PER_IP
    assert all(r is not None and 1 <= int(r) <= 60 for r in refused)

    # 2. From 200 addresses (a botnet, each under its limit): all accepted, as the collector cannot tell yet.
    started = time.monotonic()
    botnet = await _flood(st, [f"198.18.{i // 200}.{i % 200 + 1}" for i in range(FLOOD)], "botnet")
    flood_s = time.monotonic() - started
    assert [s for s, _ in botnet] == [202] * FLOOD, st.logs()

    # 3. A real lead right behind the flood: a browser with the site's Origin, pages viewed first.
    email = "greta.lindqvist@elbe-mb.de"
    person = {"User-Agent": BROWSER, "Origin": SITE, "X-Forwarded-For": "192.0.2.10"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers=person) as s:
        for path in ("/pricing", "/product"):
            async with s.get(f"{st.url}/t/p.gif", params={"url": f"{SITE}{path}"}) as r:
                assert r.status == 200
        sent_at = time.monotonic()
        async with s.post(f"{st.url}/t/form", data={
                "form_id": "demo-request", "email": email, "first_name": "Greta", "last_name": "Lindqvist",
                "company": "Elbe Maschinenbau", "job_title": "Head of Procurement", "country": "DE"}) as r:
            assert r.status == 202, await r.text()
    webhook = await st.slack.wait_for(lambda m: m.endpoint == "webhook" and "Greta" in (m.text or ""),
                                      timeout=REAL_ALERT_DEADLINE_S)
    dm = await st.slack.wait_for(lambda m: m.endpoint == "chat.postMessage" and "Greta" in (m.text or ""),
                                 timeout=REAL_ALERT_DEADLINE_S)
    took = time.monotonic() - sent_at
    assert webhook and dm and took < REAL_ALERT_DEADLINE_S, st.logs()

    # 4. Every accepted scripted hand-raiser is held for review, with why; none reached a rep.
    accepted = FORM_LIMIT_PER_IP + FLOOD

    async def all_held() -> bool:
        return int(await st.redis.zcard(keys.REVIEW_QUEUE)) >= accepted

    await _wait_until(st, all_held, 60.0, f"{accepted} flood leads were not all held for review")
    from router.storage.store import RedisStore

    held = await review.list_held(RedisStore(st.redis), limit=500)
    assert len(held) == accepted
    assert all(h["trust"] < 0.5 and "http_library" in h["reasons"] and "no_origin" in h["reasons"] for h in held)
    await asyncio.sleep(1.0)  # give a wrongly sent flood alert time to arrive
    assert [m for m in st.slack.messages if "Bot " in (m.text or "")] == []
    assert len([m for m in st.slack.messages if "Greta" in (m.text or "")]) == 2  # team channel + DM, once
    assert [m["To"] for m in st.smtp.messages] == [dm_rep_email(st, dm.channel)]
    # Nobody's capacity went to the flood: the only assignment anywhere is Greta's.
    assigned = [k async for k in st.redis.scan_iter("lr:{T:*}:assigned:*")]
    assert sum([int(await st.redis.zcard(k)) for k in assigned]) == 1
    print(f"flood of {FLOOD} in {flood_s:.1f}s; real lead alerted {took:.2f}s after its form; {accepted} held")


def dm_rep_email(st: Stack, slack_user_id: str | None) -> str:
    from rules import load_routing

    routing = load_routing(Path(st.settings.files.rules_file).read_text(), "routing.yaml")
    return next(r.email for t in routing.teams.values() for r in t.reps if r.slack_user_id == slack_user_id)
