"""Form spam at the collector, against a real Redis: rate limits shared by collectors (429 + Retry-After,
pixels dropped behind their GIF), failing open when Redis is down, honeypots and the trust signal.

Two collector apps run in-process on loopback HTTP servers (aiohttp's test server), sharing one real
redis-server through their rate limiters; what they accept is captured in memory (Kafka is not what is
tested here: tests/e2e/test_form_flood.py runs the whole path).  ``X-Forwarded-For`` is believed from
127.0.0.1 (LEADROUTER_TRUSTED_PROXIES), so each test picks the client addresses it floods from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from models import Event, EventType
from router.dev.servers import free_port
from router.ingest.app import create_app
from router.ingest.ratelimit import Check, RateLimiter
from router.settings import Settings
from router.storage import keys
from router.storage.redis import RedisCluster, redis_from_url
from scoring import is_hand_raiser, load_scoring_config, score_event

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
SITE = "https://www.example-saas.com"
T0 = 1_800_000_000.0  # a window boundary (divisible by 60)


class Capture:
    """What one collector accepted, and its rate limiter."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.limiter: RateLimiter | None = None

    async def send(self, event: Event) -> None:
        self.events.append(event)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


Start = Callable[..., Awaitable[tuple[str, Capture]]]


@pytest.fixture
async def collectors(redis: Redis, redis_url: str) -> AsyncIterator[Start]:
    servers: list[TestServer] = []
    clients: list[Redis] = []
    limiters: list[RateLimiter] = []

    async def start(clock: Clock, redis_client: Redis | None = None, **overrides: object) -> tuple[str, Capture]:
        settings = Settings.of(redis_url=redis_url, token_secret="spam-secret-0123456789abcdef",
                               trusted_proxies="127.0.0.1/32", cors_origins=SITE, **overrides)
        client = redis_client or redis_from_url(redis_url)
        clients.append(client)
        capture = Capture()
        limiter = RateLimiter(client, 60, clock=clock)
        limiters.append(limiter)
        capture.limiter = limiter
        app = create_app(settings, capture, clock, limiter=limiter)
        server = TestServer(app, host="127.0.0.1", port=free_port())
        await server.start_server()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}", capture

    yield start
    for s in servers:
        await s.close()
    for lim in limiters:
        await lim.close()
    for c in clients:
        await c.aclose()


async def script_calls(redis: Redis) -> int:
    """EVALSHA and EVAL calls the server (every primary of a cluster) has run."""
    if isinstance(redis, RedisCluster):
        per_node = list((await redis.info("commandstats", target_nodes=RedisCluster.PRIMARIES)).values())
    else:
        per_node = [await redis.info("commandstats")]
    return sum(v.get("calls", 0) for stats in per_node for k, v in stats.items()
               if k in ("cmdstat_evalsha", "cmdstat_eval"))


def form(email: str, **extra: str) -> dict[str, str]:
    return {"form_id": "demo-request", "email": email, "first_name": "Ann", "company": "Acme", **extra}


async def test_form_flood_from_one_address_is_refused_with_retry_after_across_collectors(
        collectors: Start, redis: Redis) -> None:
    clock = Clock(T0 + 20)
    a_url, a = await collectors(clock, rate_limit_form_per_ip=5)
    b_url, b = await collectors(clock, rate_limit_form_per_ip=5)
    bot = {"User-Agent": "python-requests/2.32.3", "X-Forwarded-For": "203.0.113.7"}
    statuses: list[int] = []
    retry: list[str] = []
    async with aiohttp.ClientSession(headers=bot) as s:
        for i in range(12):  # alternating collectors: the count is shared through Redis
            url = a_url if i % 2 == 0 else b_url
            async with s.post(f"{url}/t/form", data=form(f"bot{i}@acme-{i}.com")) as r:
                statuses.append(r.status)
                if r.status == 429:
                    body = await r.json()
                    assert body["error"] == "rate_limited"
                    retry.append(r.headers["Retry-After"])
    assert statuses == [202] * 5 + [429] * 7
    assert set(retry) == {"40"}  # the rest of the 60 s window
    assert len(a.events) + len(b.events) == 5
    # Another address is not limited; the flooding address is a rate-limited neighbour for the next window.
    person = {"User-Agent": BROWSER, "Origin": SITE}
    async with aiohttp.ClientSession(headers={**person, "X-Forwarded-For": "198.51.100.20"}) as s, \
            s.post(f"{a_url}/t/form", data=form("jane@northwind.com")) as r:
        assert r.status == 202
    assert a.events[-1].trust == 1.0 and a.events[-1].trust_reasons is None
    clock.t += 60
    async with aiohttp.ClientSession(headers=bot) as s, s.post(f"{a_url}/t/form", data=form("x@acme.com")) as r:
        assert r.status == 202
    assert "rate_limited_ip" in (a.events[-1].trust_reasons or "")


async def test_pixel_flood_is_dropped_behind_its_gif_and_costs_redis_nothing_once_over(
        collectors: Start, redis: Redis) -> None:
    clock = Clock(T0 + 5)
    url, cap = await collectors(clock, rate_limit_pixel_per_ip=10)
    before = await script_calls(redis)
    async with aiohttp.ClientSession(headers={"User-Agent": BROWSER, "X-Forwarded-For": "203.0.113.9"}) as s:
        for i in range(60):
            async with s.get(f"{url}/t/p.gif", params={"url": f"{SITE}/p{i}"}) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "image/gif"
                assert len(await r.read()) == 43
    assert len(cap.events) == 10  # the rest dropped, not spooled
    assert cap.limiter is not None
    await cap.limiter.flush()
    after = await script_calls(redis)
    # Pixels never wait for Redis: their counts are shared in batches (one call per hash tag per flush), and
    # an address over its limit costs nothing more; 60 pixels cost a handful of calls, not 60.
    assert after - before <= 6
    [key] = [k async for k in redis.scan_iter("lr:rl:{R:*}:pixel:ip:*")]
    assert int(await redis.get(key) or 0) == 11  # the shared count: 10 accepted and the first refused
    assert 0 < await redis.pttl(key) <= (55 + 5) * 1000


async def test_pixel_counts_are_shared_by_collectors_in_batches(collectors: Start) -> None:
    clock = Clock(T0 + 5)
    a_url, a = await collectors(clock, rate_limit_pixel_per_ip=10)
    b_url, b = await collectors(clock, rate_limit_pixel_per_ip=10)
    assert a.limiter is not None and b.limiter is not None
    async with aiohttp.ClientSession(headers={"User-Agent": BROWSER, "X-Forwarded-For": "203.0.113.10"}) as s:
        for url in (a_url, b_url):
            for _ in range(6):
                async with s.get(f"{url}/t/p.gif") as r:
                    assert r.status == 200
        await a.limiter.flush()  # shared total 6
        await b.limiter.flush()  # shared total 12: b refuses the address from now on
        for url in (a_url, b_url, a_url):
            async with s.get(f"{url}/t/p.gif") as r:
                assert r.status == 200
            await a.limiter.flush()  # a learns the total with its next request's flush
    # a let one more through before it learned b's six: the "one flush interval past the limit" of the docs.
    assert (len(a.events), len(b.events)) == (7, 6)


async def test_redis_down_fails_open_to_this_collectors_own_counts(collectors: Start) -> None:
    clock = Clock(T0 + 1)
    dead = Redis(host="127.0.0.1", port=free_port(), socket_timeout=0.2, socket_connect_timeout=0.2)
    url, cap = await collectors(clock, dead, rate_limit_form_per_ip=3,
                                rate_limit_pixel_per_ip=3)
    headers = {"User-Agent": BROWSER, "Origin": SITE, "X-Forwarded-For": "203.0.113.11"}
    statuses = []
    async with aiohttp.ClientSession(headers=headers) as s:
        for i in range(5):
            async with s.post(f"{url}/t/form", data=form(f"p{i}@acme.com")) as r:
                statuses.append(r.status)
        for _ in range(5):
            async with s.get(f"{url}/t/p.gif") as r:
                assert r.status == 200 and len(await r.read()) == 43
    assert statuses == [202, 202, 202, 429, 429]  # never refused because Redis is down; still limited here
    assert sum(e.type is EventType.PAGE_VIEW for e in cap.events) == 3


async def test_honeypot_is_accepted_quietly_but_never_raises_a_hand(collectors: Start) -> None:
    url, cap = await collectors(Clock(T0))
    headers = {"User-Agent": BROWSER, "Origin": SITE, "X-Forwarded-For": "198.51.100.30"}
    async with aiohttp.ClientSession(headers=headers) as s, \
            s.post(f"{url}/t/form", data=form("ann@acme.com", company_website="http://spam.example")) as r:
        assert r.status == 202
        assert (await r.json())["accepted"] is True  # the bot is not told
    [ev] = cap.events
    assert ev.trust == 0.0 and ev.trust_reasons == "honeypot"
    assert ev.machine == 1.0 and (ev.machine_reason or "").startswith("honeypot")
    assert "company_website" not in ev.fields
    config = load_scoring_config((REPO / "scoring" / "scoring.yaml").read_text(), "scoring.yaml")
    reasons = score_event(ev, config)
    assert reasons and not is_hand_raiser(reasons)
    assert sum(r.points for r in reasons) == 0.0


async def test_trust_reasons_for_scripted_disposable_and_foreign_posts(collectors: Start) -> None:
    url, cap = await collectors(Clock(T0))
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/t/form", data=form("x@mailinator.com"),
                          headers={"User-Agent": "curl/8.5.0", "X-Forwarded-For": "198.51.100.40"}) as r:
            assert r.status == 202
        async with s.post(f"{url}/t/form", data=form("y@acme.com"),
                          headers={"User-Agent": BROWSER, "Origin": "https://evil.example",
                                   "X-Forwarded-For": "198.51.100.41"}) as r:
            assert r.status == 202
        async with s.post(f"{url}/t/form", data=form("z@acme.com"),
                          headers={"User-Agent": BROWSER, "Origin": SITE, "X-Forwarded-For": "198.51.100.42"}) as r:
            assert r.status == 202
    scripted, foreign, person = cap.events
    assert scripted.trust_reasons == "http_library,no_origin,disposable_email" and scripted.trust < 0.5
    assert foreign.trust_reasons == "foreign_origin" and foreign.trust < 0.5
    assert person.trust == 1.0 and person.trust_reasons is None


async def test_per_visitor_limits_hold_across_addresses(collectors: Start) -> None:
    clock = Clock(T0 + 3)
    url, cap = await collectors(clock, rate_limit_pixel_per_visitor=5, rate_limit_form_per_visitor=2)
    statuses = []
    async with aiohttp.ClientSession(headers={"User-Agent": BROWSER, "Origin": SITE}) as s:
        for i in range(10):  # one visitor id, a new address each time
            async with s.get(f"{url}/t/p.gif", params={"vid": "visitor0000000001"},
                             headers={"X-Forwarded-For": f"198.51.100.{i + 1}"}) as r:
                assert r.status == 200
        for i in range(4):  # one visitor cookie, a new address each time
            async with s.post(f"{url}/t/form", data=form(f"v{i}@acme.com"),
                              headers={"X-Forwarded-For": f"192.0.2.{i + 1}",
                                       "Cookie": "lr_vid=visitor0000000002"}) as r:
                statuses.append(r.status)
    assert sum(e.type is EventType.PAGE_VIEW for e in cap.events) == 5
    assert statuses == [202, 202, 429, 429]


async def test_a_flush_of_many_keys_costs_one_lua_call_per_hash_tag(redis: Redis) -> None:
    limiter = RateLimiter(redis, 60, clock=Clock(T0 + 5))
    ips = [f"198.51.{i // 250}.{i % 250}" for i in range(600)]
    for ip in ips:
        for _ in range(1 + ips.index(ip) % 3):
            assert (await limiter.hit([Check("pixel:ip", ip, 100)], ip=ip, batched=True)).allowed
    before = await script_calls(redis)
    await limiter.flush()
    after = await script_calls(redis)
    assert after - before <= keys.RATE_LIMIT_TAGS  # 600 keys, at most 64 calls
    window = int((T0 + 5) // 60)
    for i, ip in enumerate(ips):
        key = keys.rate_limit("pixel:ip", ip, window)
        assert int(await redis.get(key) or 0) == 1 + i % 3
        assert 0 < await redis.pttl(key) <= 60_000
    await limiter.close()
