"""Demo traffic: realistic B2B buying committees browsing, opening email, filling forms.

Used by ``leadrouter dev`` (and the benchmarks) to drive the collector over
real HTTP.  Most visitors browse anonymously; some identify themselves with a
content form; a few raise their hand on the demo form.  Opens come through
signed email tokens, exactly as a mail client would fetch them.

:class:`ReengageDemo` plays the reps' side for a few of those hand-raisers:
through the admin API it accepts them, converts them and marks them lost, and
later brings some back (pricing visits, then another demo request), so the
console shows re-engagement alerts within a minute or so.

:class:`OutcomeDemo` closes the learning loop: every demo person has a hidden
propensity to buy (:attr:`Person.propensity`); alerted leads are marked won or
lost from it after a delay through the signed CRM webhook, so
``leadrouter model train --from-outcomes`` can be run on real logged crossings
and shown to recover the propensities.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import aiohttp

from router.storage.keys import lead_id_for_email
from router.tokens import mint_token

# Fictional companies with their domain, country and (for the US) state.
COMPANIES: tuple[tuple[str, str, str, str], ...] = (
    ("Acme Analytics", "acme-analytics.com", "US", "NY"),
    ("Bluefin Logistics", "bluefin-logistics.com", "US", "WA"),
    ("Cobalt Health", "cobalthealth.io", "US", "TX"),
    ("Dunmore Retail", "dunmore.co.uk", "GB", ""),
    ("Elbe Maschinenbau", "elbe-mb.de", "DE", ""),
    ("Fjord Energy", "fjordenergy.no", "NO", ""),
    ("Granite Insurance", "graniteins.com", "US", "MA"),
    ("Harbor Freight Tech", "harborft.com", "US", "CA"),
    ("Iberia Telecom", "iberiatel.es", "ES", ""),
    ("Juniper Foods", "juniperfoods.com", "US", "IL"),
    ("Kestrel Software", "kestrelsoft.com.au", "AU", ""),
    ("Lumen Pharma", "lumenpharma.fr", "FR", ""),
    ("Mosaic Media", "mosaicmedia.com", "US", "CO"),
    ("Nordlicht Bank", "nordlicht.de", "DE", ""),
    ("Orion Robotics", "orionrobotics.jp", "JP", ""),
    ("Pampas Agro", "pampasagro.com.ar", "AR", ""),
    ("Quarry Construction", "quarryco.com", "US", "GA"),
    ("Redwood Security", "redwoodsec.com", "US", "OR"),
    ("Saffron Hotels", "saffronhotels.in", "IN", ""),
    ("Tidewater Shipping", "tidewater.nl", "NL", ""),
)
FIRST = ("Ava", "Ben", "Chloe", "Daniel", "Elena", "Farid", "Grace", "Hiro", "Isla", "Jonas", "Kira", "Liam",
         "Maya", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Victor", "Wen", "Yusuf")
LAST = ("Anders", "Brooks", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen",
        "Kowalski", "Lopez", "Moreau", "Novak", "Okafor", "Patel", "Rossi", "Schmidt", "Tanaka", "Weber")
TITLES = ("VP Sales", "Head of RevOps", "Marketing Manager", "CTO", "IT Director", "Procurement Lead",
          "Data Engineer", "CFO", "Sales Operations Analyst", "Chief Revenue Officer")
PAGES: tuple[tuple[str, str, float], ...] = (
    ("/", "Home", 10),
    ("/product", "Product overview", 8),
    ("/product/integrations", "Integrations", 4),
    ("/pricing", "Pricing", 5),
    ("/case-studies/northwind", "Case study: Northwind", 3),
    ("/blog/lead-routing-benchmarks", "Blog: lead routing benchmarks", 6),
    ("/docs/getting-started", "Docs: getting started", 3),
    ("/careers", "Careers", 1),
)
CONTENT_FORMS = ("whitepaper-download", "webinar-registration", "newsletter")
HAND_RAISER_FORM = "demo-request"
# The demo's people browse from this many loopback addresses (rate limits are per address), with a
# browser's user agent and the site's Origin, as real visitors do (scripted-looking form fills are held
# for review instead of alerting a rep).
DEMO_ADDRESSES = 32
FORM_GAP_S = 20.0  # a person's forms are at least this far apart
DEMO_HEADERS = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 (leadrouter demo)",
                "Origin": "https://www.example-saas.com"}
CAMPAIGNS = ("nov-product-update", "webinar-invite", "pricing-change")
# How much a company's country raises its people's hidden propensity to buy (log-odds; others -0.5).
COUNTRY_LIFT: dict[str, float] = {"US": 1.8, "GB": 0.9, "DE": 0.9}


@dataclass
class Person:
    visitor_id: str
    first: str
    last: str
    company: tuple[str, str, str, str]
    title: str
    known: bool = False
    engaged: float = 1.0  # how keen: scales their activity
    last_form: float = float("-inf")  # monotonic time of their last form: people do not post one every second

    @property
    def email(self) -> str:
        return f"{self.first}.{self.last}@{self.company[1]}".lower()

    @property
    def propensity(self) -> float:
        """The hidden chance this person's deal is won (never sent): their country and how keen they are.

        :class:`OutcomeDemo` draws won/lost from it; a model trained on the logged crossings
        (``leadrouter model train --from-outcomes``) can only recover it from what the worker saw:
        the country and the page views that keenness brings.
        """
        z = -1.7 + COUNTRY_LIFT.get(self.company[2], -0.5) + 1.2 * math.log(self.engaged)
        return 1.0 / (1.0 + math.exp(-z))


@dataclass
class DemoStats:
    sent: dict[str, int] = field(default_factory=lambda: {"page": 0, "form": 0, "open": 0, "error": 0})


class DemoTraffic:
    """Sends a steady stream of realistic hits to a collector."""

    def __init__(self, collector_url: str, token_secret: str, *, rate_per_s: float = 20.0, people: int = 120,
                 seed: int | None = None, clock: Callable[[], float] = time.time) -> None:
        self.raised: list[tuple[float, Person]] = []  # (monotonic time, person) of each accepted demo request
        self.url = collector_url.rstrip("/")
        self.secret = token_secret
        self.rate = rate_per_s
        self.rng = random.Random(seed)
        self.clock = clock
        self.stats = DemoStats()
        self.people = [self._person(i) for i in range(people)]

    def _person(self, i: int) -> Person:
        r = self.rng
        return Person(visitor_id=f"demo{i:04d}{r.getrandbits(40):010x}", first=r.choice(FIRST), last=r.choice(LAST),
                      company=r.choice(COMPANIES), title=r.choice(TITLES), engaged=r.paretovariate(1.5))

    def _pick(self) -> Person:
        weights = [p.engaged for p in self.people]
        return self.rng.choices(self.people, weights=weights, k=1)[0]

    async def _page(self, s: aiohttp.ClientSession, p: Person) -> None:
        paths, titles, weights = zip(*PAGES, strict=True)
        i = self.rng.choices(range(len(paths)), weights=weights, k=1)[0]
        params = {"vid": p.visitor_id, "url": f"https://www.example-saas.com{paths[i]}", "title": titles[i]}
        if self.rng.random() < 0.2:
            params["url"] += "?utm_source=linkedin&utm_medium=paid&utm_campaign=q4-abm"
        async with s.get(f"{self.url}/t/p.gif?{urlencode(params)}") as resp:
            await resp.read()
            self._count("page", resp.status == 200)

    async def _form(self, s: aiohttp.ClientSession, p: Person, form_id: str) -> None:
        data = {"form_id": form_id, "email": p.email, "first_name": p.first, "last_name": p.last,
                "company": p.company[0], "job_title": p.title, "country": p.company[2], "consent": "true",
                "vid": p.visitor_id, "url": "https://www.example-saas.com/contact"}
        if p.company[3]:
            data["region"] = p.company[3]
        async with s.post(f"{self.url}/t/form", data=data) as resp:
            await resp.read()
            self._count("form", resp.status == 202)
        p.known = True
        p.last_form = time.monotonic()
        if form_id == HAND_RAISER_FORM and resp.status == 202:
            self.raised.append((time.monotonic(), p))

    async def demo_request(self, s: aiohttp.ClientSession, p: Person) -> None:
        """``p`` fills the demo-request (hand-raiser) form."""
        await self._form(s, p, HAND_RAISER_FORM)

    async def visit(self, s: aiohttp.ClientSession, p: Person, path: str, title: str) -> None:
        """One page view of ``path`` by ``p``."""
        params = {"vid": p.visitor_id, "url": f"https://www.example-saas.com{path}", "title": title}
        async with s.get(f"{self.url}/t/p.gif?{urlencode(params)}") as resp:
            await resp.read()
            self._count("page", resp.status == 200)

    async def _open(self, s: aiohttp.ClientSession, p: Person) -> None:
        token = mint_token(self.secret, email=p.email, campaign=self.rng.choice(CAMPAIGNS), ttl_s=86400,
                           now=self.clock())
        async with s.get(f"{self.url}/t/o/{token}.gif") as resp:
            await resp.read()
            self._count("open", resp.status == 200)

    def _count(self, kind: str, ok: bool) -> None:
        self.stats.sent[kind if ok else "error"] += 1

    def _addresses(self) -> int:
        """Browsers on a loopback collector come from DEMO_ADDRESSES addresses of 127.0.0.0/8 (one each
        for a share of the people), as real visitors come from many: the per-address rate limits hold."""
        host = urlsplit(self.url).hostname or ""
        return DEMO_ADDRESSES if host.startswith("127.") else 1

    def _session(self, i: int) -> aiohttp.ClientSession:
        """A browser-like client (user agent, Origin), from the i-th demo source address."""
        n = self._addresses()
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.{i // 250}.{i % 250 + 2}", 0)) if n > 1 else None
        return aiohttp.ClientSession(connector=connector, headers=DEMO_HEADERS)

    def browser(self, p: Person) -> aiohttp.ClientSession:
        """A new browser-like session for ``p``, from the source address their traffic comes from."""
        return self._session(self.people.index(p) % self._addresses())

    async def step(self, sessions: Sequence[aiohttp.ClientSession] | aiohttp.ClientSession) -> None:
        p = self._pick()
        if isinstance(sessions, aiohttp.ClientSession):
            s = sessions
        else:
            s = sessions[self.people.index(p) % len(sessions)]
        roll = self.rng.random()
        if p.known and roll < 0.25:
            await self._open(s, p)
        elif time.monotonic() - p.last_form < FORM_GAP_S:
            await self._page(s, p)  # within the per-visitor form limit (LEADROUTER_RATE_LIMIT_FORM_PER_VISITOR)
        elif roll < 0.04 * p.engaged:
            await self._form(s, p, HAND_RAISER_FORM)
        elif not p.known and roll < 0.12:
            await self._form(s, p, self.rng.choice(CONTENT_FORMS))
        else:
            await self._page(s, p)

    async def run(self, stop: asyncio.Event, duration_s: float | None = None) -> DemoStats:
        """Send ``rate`` hits a second until ``stop`` is set or ``duration_s`` has passed.

        A rate of 0 sends nothing (the user brings their own traffic) and only waits."""
        if self.rate <= 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), None if duration_s is None else max(duration_s, 0.0))
            return self.stats
        interval = 1.0 / self.rate
        deadline = None if duration_s is None else time.monotonic() + duration_s
        async with contextlib.AsyncExitStack() as exits:
            sessions = [await exits.enter_async_context(self._session(i)) for i in range(self._addresses())]
            next_at = time.monotonic()
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                try:
                    await self.step(sessions)
                except (TimeoutError, aiohttp.ClientError):
                    self.stats.sent["error"] += 1
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except TimeoutError:
                        pass
        return self.stats


LOST_REASONS = ("budget", "timing", "went with a competitor")


@dataclass
class _Closed:
    person: Person
    lead_id: str
    at: float
    reason: str
    back: bool = False


class ReengageDemo:
    """Marks a few alerted hand-raisers closed-lost through the admin API, then brings some back.

    Every ``tick_s``: each hand-raiser whose request is ``lose_after_s`` old and
    whose lead is assigned (mql, with an owner) is accepted, converted to an
    opportunity and marked lost by its owner (an ops token acts as the owner),
    up to ``lose`` leads; each lost lead ``back_after_s`` later, up to
    ``bring_back`` of them, visits /pricing three times and asks for a demo
    again, which the worker routes as a re-engagement.
    """

    def __init__(self, traffic: DemoTraffic, admin_url: str, token: str, say: Callable[[str], None], *,
                 lose: int = 4, bring_back: int = 2, lose_after_s: float = 4.0, back_after_s: float = 6.0,
                 tick_s: float = 2.0) -> None:
        self.traffic = traffic
        self.admin = admin_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.say = say
        self.lose, self.bring_back = lose, bring_back
        self.lose_after_s, self.back_after_s, self.tick_s = lose_after_s, back_after_s, tick_s
        self.closed: list[_Closed] = []
        self.tried: set[str] = set()

    async def _lead(self, s: aiohttp.ClientSession, lead_id: str) -> dict[str, object] | None:
        async with s.get(f"{self.admin}/v1/leads/{lead_id}", headers=self.headers) as resp:
            return dict(await resp.json()) if resp.status == 200 else None

    async def _act(self, s: aiohttp.ClientSession, lead_id: str, action: str, body: dict[str, str]) -> bool:
        async with s.post(f"{self.admin}/v1/leads/{lead_id}/{action}", json=body, headers=self.headers) as resp:
            await resp.read()
            return resp.status == 200

    async def _close_one(self, s: aiohttp.ClientSession, p: Person) -> None:
        lead_id = lead_id_for_email(p.email)
        self.tried.add(p.email)
        lead = await self._lead(s, lead_id)
        if not lead or lead.get("stage") != "mql" or not lead.get("owner"):
            return  # not assigned (held, or routed elsewhere since): leave it
        reason = LOST_REASONS[len(self.closed) % len(LOST_REASONS)]
        steps: tuple[tuple[str, dict[str, str]], ...] = (
            ("accept", {}), ("convert", {"to": "opportunity"}), ("lost", {"reason": reason}))
        for action, body in steps:
            if not await self._act(s, lead_id, action, body):
                return
        self.closed.append(_Closed(p, lead_id, time.monotonic(), reason))
        self.say(f"demo     {p.first} {p.last} ({p.company[0]}) marked closed-lost ({reason}) by "
                 f"{lead.get('owner_name') or lead.get('owner')}")

    async def _bring_back(self, c: _Closed) -> None:
        c.back = True
        p = c.person
        # From the person's own browser (user agent, Origin, address), as their first request came:
        # an HTTP library's request would lower the form's trust and be held for review.
        async with self.traffic.browser(p) as b:
            for _ in range(3):
                await self.traffic.visit(b, p, "/pricing", "Pricing")
            await self.traffic.demo_request(b, p)
        self.say(f"demo     {p.first} {p.last} ({p.company[0]}) is back: /pricing 3 times, then a demo request")

    async def step(self, s: aiohttp.ClientSession) -> None:
        now = time.monotonic()
        if len(self.closed) < self.lose:
            for at, p in list(self.traffic.raised):
                if len(self.closed) >= self.lose:
                    break
                if now - at >= self.lose_after_s and p.email not in self.tried:
                    await self._close_one(s, p)
        for c in self.closed:
            if sum(x.back for x in self.closed) >= self.bring_back:
                break
            if not c.back and now - c.at >= self.back_after_s:
                await self._bring_back(c)

    async def run(self, stop: asyncio.Event) -> None:
        """Play the reps' side until ``stop`` is set; a failed request is tried again next tick."""
        async with aiohttp.ClientSession() as s:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError, aiohttp.ClientError, ValueError):
                    await self.step(s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.tick_s)


class OutcomeDemo:
    """Closes the loop: alerted leads are marked won or lost from their person's hidden propensity.

    Every ``tick_s`` it looks up the known people's leads (admin API); a lead
    assigned to a rep (mql, with an owner) for ``delay_s`` is decided, won with
    probability :attr:`Person.propensity`, and reported through the signed CRM
    webhook (``opportunity.won`` / ``opportunity.lost``), as a CRM would.  The
    crossings the worker logged and these outcomes are what
    ``leadrouter model train --from-outcomes`` learns from.  ``skip(email)``
    leaves a person to another part of the demo (the re-engagement story).
    """

    def __init__(self, traffic: DemoTraffic, admin_url: str, token: str, webhook_secret: str,
                 say: Callable[[str], None], *, delay_s: float = 20.0, tick_s: float = 2.0, seed: int | None = None,
                 skip: Callable[[str], bool] = lambda email: False, clock: Callable[[], float] = time.time) -> None:
        self.traffic = traffic
        self.admin = admin_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.secret = webhook_secret
        self.say = say
        self.delay_s, self.tick_s = delay_s, tick_s
        self.rng = random.Random(seed)
        self.skip = skip
        self.clock = clock
        self.assigned_at: dict[str, float] = {}  # email -> monotonic time first seen assigned
        self.decided: dict[str, bool] = {}  # email -> won

    def _signed(self, body: bytes) -> dict[str, str]:
        stamp = str(int(self.clock()))
        mac = hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return {"X-LeadRouter-Timestamp": stamp, "X-LeadRouter-Signature": f"sha256={mac}",
                "Content-Type": "application/json"}

    async def _decide(self, s: aiohttp.ClientSession, p: Person) -> None:
        won = self.rng.random() < p.propensity
        event = "opportunity.won" if won else "opportunity.lost"
        body = json.dumps({"event": event, "lead": p.email, "id": f"demo-{len(self.decided)}"}).encode()
        async with s.post(f"{self.admin}/v1/webhooks/crm", data=body, headers=self._signed(body)) as resp:
            await resp.read()
            if resp.status != 200:
                return  # moved on meanwhile (another rep, review): looked at again next tick
        self.decided[p.email] = won
        self.say(f"crm      {p.first} {p.last} ({p.company[0]}) {'won' if won else 'lost'} "
                 f"(hidden propensity {p.propensity:.2f}) via the signed CRM webhook")

    async def step(self, s: aiohttp.ClientSession) -> None:
        now = time.monotonic()
        for p in self.traffic.people:
            if not p.known or p.email in self.decided or self.skip(p.email):
                continue
            since = self.assigned_at.get(p.email)
            if since is None:
                async with s.get(f"{self.admin}/v1/leads/{lead_id_for_email(p.email)}", headers=self.headers) as r:
                    lead = dict(await r.json()) if r.status == 200 else {}
                if lead.get("stage") == "mql" and lead.get("owner"):
                    self.assigned_at[p.email] = now
            elif now - since >= self.delay_s:
                await self._decide(s, p)

    async def run(self, stop: asyncio.Event) -> None:
        """Decide leads until ``stop`` is set; a failed request is tried again next tick."""
        async with aiohttp.ClientSession() as s:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError, aiohttp.ClientError, ValueError):
                    await self.step(s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.tick_s)
