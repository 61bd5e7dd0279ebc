"""The full-path bench's traffic: a Zipf-skewed population of people at accounts, and the hits they make.

:class:`Traffic` renders the same draws as events (the worker phase's backlog, shaped as the collector makes
them) or as HTTP requests (the load generator's pixels, e-mail opens and clicks, forms and demo requests).
Also used by ``bench.redis_memory`` and ``bench.taobao``.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from models import Event, EventType
from router.dev.demo import CAMPAIGNS, COMPANIES, CONTENT_FORMS, FIRST, HAND_RAISER_FORM, LAST, PAGES, TITLES
from router.ingest.segment import utm_from
from router.tokens import mint_token

SITE = "https://www.example-saas.com"
BROWSER_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/124.0.0.0 Safari/537.36")

# --------------------------------------------------------------------------- traffic

# Share of hits by kind: demo requests are the hand-raisers.
MIX: tuple[tuple[str, float], ...] = (
    ("page", 0.80), ("open", 0.11), ("click", 0.04), ("form", 0.046), ("demo", 0.004),
)
PIXEL_ONLY: tuple[tuple[str, float], ...] = (("page", 1.0),)
VISITOR_SKEW = 0.9  # Zipf exponent of visits over visitors
ACCOUNT_SKEW = 0.8  # Zipf exponent of people over accounts
ON_LIST = 0.5  # share of people on the marketing email list (opens and clicks)
HAND_RAISERS = 0.05  # share of people who will ask for a demo, once each
REFERRERS = ("", "", "https://www.google.com/", "https://www.linkedin.com/feed/", "https://www.bing.com/",
             "https://news.ycombinator.com/")
UTMS = ("utm_source=linkedin&utm_medium=paid&utm_campaign=q4-abm",
        "utm_source=google&utm_medium=cpc&utm_campaign=brand",
        "utm_source=newsletter&utm_medium=email&utm_campaign=nov-product-update")
CLICK_PATHS = ("/pricing", "/product", "/case-studies/northwind", "/blog/lead-routing-benchmarks",
               "/product/integrations")
NAME_A = ("Alder", "Beacon", "Cedar", "Delta", "Ember", "Falcon", "Glacier", "Helix", "Indigo", "Jasper",
          "Keystone", "Lattice", "Meridian", "Nimbus", "Onyx", "Pioneer", "Quantum", "Riverside", "Summit",
          "Titan", "Union", "Vertex", "Willow", "Xenon", "Yardley", "Zenith")
NAME_B = ("Analytics", "Bank", "Biotech", "Capital", "Cloud", "Consulting", "Dynamics", "Energy", "Foods",
          "Freight", "Health", "Insurance", "Labs", "Logistics", "Media", "Motors", "Networks", "Pharma",
          "Retail", "Robotics", "Security", "Software", "Systems", "Telecom", "Textiles", "Works")
COUNTRIES: tuple[tuple[str, str, float], ...] = (  # country, TLD, weight
    ("US", ".com", 40), ("GB", ".co.uk", 9), ("DE", ".de", 9), ("FR", ".fr", 6), ("CA", ".ca", 5),
    ("NL", ".nl", 4), ("AU", ".com.au", 4), ("ES", ".es", 3), ("JP", ".jp", 3), ("IN", ".in", 4),
    ("BR", ".com.br", 4), ("SE", ".se", 3), ("MX", ".mx", 3), ("SG", ".sg", 3),
)
US_STATES = ("NY", "CA", "TX", "WA", "MA", "IL", "GA", "CO", "OR", "FL", "NC", "OH")


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    domain: str
    country: str
    region: str


@dataclass(frozen=True, slots=True)
class Visitor:
    vid: str
    first: str
    last: str
    email: str
    title: str
    account: Account
    ip: str
    on_list: bool
    hand_raiser: bool


class Zipf:
    """Draws indices 0..n-1 with weight 1/rank**s, ranks in random order."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        weights = [1.0 / (rank + 1) ** s for rank in range(n)]
        self.top1 = sum(weights[: max(1, n // 100)]) / sum(weights) if n else 0.0
        rng.shuffle(weights)
        self.cum = list(itertools.accumulate(weights))
        self.total = self.cum[-1] if self.cum else 0.0

    def pick(self, rng: random.Random) -> int:
        return min(bisect.bisect_right(self.cum, rng.random() * self.total), len(self.cum) - 1)


def make_accounts(rng: random.Random, n: int) -> list[Account]:
    out = [Account(name, domain, country, region) for name, domain, country, region in COMPANIES[:n]]
    domains = {a.domain for a in out}
    countries = [c for c, _, _ in COUNTRIES]
    tlds = {c: t for c, t, _ in COUNTRIES}
    weights = [w for _, _, w in COUNTRIES]
    while len(out) < n:
        name = f"{rng.choice(NAME_A)} {rng.choice(NAME_B)}"
        country = rng.choices(countries, weights=weights, k=1)[0]
        domain = name.lower().replace(" ", "-") + tlds[country]
        if domain in domains:
            continue
        domains.add(domain)
        out.append(Account(name, domain, country, rng.choice(US_STATES) if country == "US" else ""))
    return out


class Population:
    """People at accounts; who visits how often is skewed (a minority makes most hits)."""

    def __init__(self, seed: int, visitors: int, accounts: int) -> None:
        rng = random.Random(seed)
        self.accounts = make_accounts(rng, accounts)
        by_size = Zipf(len(self.accounts), ACCOUNT_SKEW, rng)
        taken: set[str] = set()
        self.visitors: list[Visitor] = []
        for _ in range(visitors):
            acct = self.accounts[by_size.pick(rng)]
            first, last = rng.choice(FIRST), rng.choice(LAST)
            local = f"{first}.{last}".lower()
            email = f"{local}@{acct.domain}"
            n = 2
            while email in taken:
                email = f"{local}{n}@{acct.domain}"
                n += 1
            taken.add(email)
            self.visitors.append(Visitor(
                vid=uuid.UUID(int=rng.getrandbits(128)).hex, first=first, last=last, email=email,
                title=rng.choice(TITLES), account=acct, ip=f"{rng.choice((198, 203))}.{rng.randrange(1, 255)}."
                f"{rng.randrange(0, 255)}.{rng.randrange(1, 255)}",
                on_list=rng.random() < ON_LIST, hand_raiser=rng.random() < HAND_RAISERS))
        self.activity = Zipf(len(self.visitors), VISITOR_SKEW, rng)
        self.list_members = [v for v in self.visitors if v.on_list]
        self.list_activity = Zipf(len(self.list_members), VISITOR_SKEW, rng)
        self.hand_raisers = [v for v in self.visitors if v.hand_raiser]
        rng.shuffle(self.hand_raisers)

    def describe(self) -> str:
        return (f"{len(self.visitors):,} visitors at {len(self.accounts):,} accounts (company domains); visits "
                f"Zipf-skewed (s={VISITOR_SKEW}: the top 1% of visitors make {self.activity.top1 * 100:.0f}% of "
                f"hits); {ON_LIST * 100:.0f}% of people on the email list; {HAND_RAISERS * 100:.0f}% will ask "
                "for a demo, once each")


class Traffic:
    """Draws hits from a population and renders them as events (backlog) or HTTP requests (load)."""

    def __init__(self, population: Population, *, seed: int, mix: Sequence[tuple[str, float]],
                 token_secret: str = "", host: str = "127.0.0.1") -> None:
        self.pop = population
        self.rng = random.Random(seed)
        self.kinds = [k for k, _ in mix]
        self.cum = list(itertools.accumulate(w for _, w in mix))
        self.secret = token_secret
        self.host = host
        self.raised = 0
        self.seen: set[str] = set()  # visitors whose browser has the collector's cookie
        self._tokens: dict[tuple[str, str, str], str] = {}
        self.page_paths = [p for p, _, _ in PAGES]
        self.page_titles = {p: t for p, t, _ in PAGES}
        self.page_cum = list(itertools.accumulate(w for _, _, w in PAGES))

    def draw(self) -> tuple[str, Visitor]:
        r = self.rng
        kind = self.kinds[min(bisect.bisect_right(self.cum, r.random() * self.cum[-1]), len(self.kinds) - 1)]
        if kind in ("open", "click") and self.pop.list_members:
            return kind, self.pop.list_members[self.pop.list_activity.pick(r)]
        if kind == "demo":
            if self.raised < len(self.pop.hand_raisers):
                self.raised += 1
                return kind, self.pop.hand_raisers[self.raised - 1]
            kind = "form"  # every hand-raiser has asked: a content form instead
        return ("page" if kind in ("open", "click") else kind), self.pop.visitors[self.pop.activity.pick(r)]

    def _page(self) -> tuple[str, str]:
        r = self.rng
        i = min(bisect.bisect_right(self.page_cum, r.random() * self.page_cum[-1]), len(self.page_paths) - 1)
        path = self.page_paths[i]
        url = SITE + path + (f"?{r.choice(UTMS)}" if r.random() < 0.2 else "")
        return url, self.page_titles[path]

    def _click_url(self, campaign: str) -> str:
        return (f"{SITE}{self.rng.choice(CLICK_PATHS)}?utm_source=newsletter&utm_medium=email"
                f"&utm_campaign={campaign}")

    def _form_fields(self, v: Visitor) -> dict[str, str]:
        fields = {"first_name": v.first, "last_name": v.last, "company": v.account.name, "job_title": v.title,
                  "country": v.account.country, "consent": "true"}
        if v.account.region:
            fields["region"] = v.account.region
        return fields

    # --- events for the backlog (shaped as the collector makes them) ------------------
    def event(self, ts: float) -> tuple[str, Event]:
        kind, v = self.draw()
        r = self.rng
        eid = uuid.UUID(int=r.getrandbits(128)).hex
        if kind == "page":
            url, title = self._page()
            ref = r.choice(REFERRERS) or None
            return kind, Event(event_id=eid, type=EventType.PAGE_VIEW, ts=ts, source="pixel", visitor_id=v.vid,
                               url=url, referrer=ref, title=title, utm=utm_from({}, url), user_agent=BROWSER_UA,
                               ip=v.ip)
        if kind == "open":
            return kind, Event(event_id=eid, type=EventType.EMAIL_OPEN, ts=ts, source="email", email=v.email,
                               campaign=r.choice(CAMPAIGNS), user_agent=BROWSER_UA, ip=v.ip)
        if kind == "click":
            campaign = r.choice(CAMPAIGNS)
            target = self._click_url(campaign)
            return kind, Event(event_id=eid, type=EventType.EMAIL_CLICK, ts=ts, source="email", email=v.email,
                               campaign=campaign, url=target, utm=utm_from({}, target), user_agent=BROWSER_UA,
                               ip=v.ip)
        form_id = HAND_RAISER_FORM if kind == "demo" else r.choice(CONTENT_FORMS)
        fields = self._form_fields(v)
        return kind, Event(event_id=eid, type=EventType.FORM_FILL, ts=ts, source="form", visitor_id=v.vid,
                           email=v.email, form_id=form_id, fields=fields, url=f"{SITE}/contact",
                           user_agent=BROWSER_UA, ip=v.ip)

    # --- HTTP requests for the load generator ----------------------------------------
    def _token(self, v: Visitor, campaign: str, kind: str) -> str:
        key = (v.email, campaign, kind)
        token = self._tokens.get(key)
        if token is None:
            # Sent an hour ago: an open right after the send would be flagged as a machine's.
            token = mint_token(self.secret, email=v.email, campaign=campaign, ttl_s=30 * 86400, kind=kind,
                               url=self._click_url(campaign) if kind == "click" else None,
                               now=time.time() - 3600)
            self._tokens[key] = token
        return token

    def _head(self, method: str, target: str, v: Visitor, extra: str = "") -> str:
        cookie = f"Cookie: lr_vid={v.vid}\r\n" if v.vid in self.seen else ""
        return (f"{method} {target} HTTP/1.1\r\nHost: {self.host}\r\nUser-Agent: {BROWSER_UA}\r\n"
                f"X-Forwarded-For: {v.ip}\r\n{cookie}{extra}")

    def request(self) -> tuple[str, bytes]:
        """(kind, raw HTTP/1.1 request) for the next hit."""
        kind, v = self.draw()
        r = self.rng
        if kind == "page":
            url, title = self._page()
            params = {"url": url, "title": title}
            ref = r.choice(REFERRERS)
            if ref:
                params["ref"] = ref
            if v.vid not in self.seen:
                params["vid"] = v.vid
            head = self._head("GET", f"/t/p.gif?{urlencode(params)}", v, "Accept: image/avif,image/*\r\n")
            self.seen.add(v.vid)
            return kind, (head + "\r\n").encode()
        if kind in ("open", "click"):
            campaign = r.choice(CAMPAIGNS)
            token = self._token(v, campaign, kind)
            target = f"/t/o/{token}.gif" if kind == "open" else f"/t/c/{token}"
            return kind, (self._head("GET", target, v) + "\r\n").encode()
        form_id = HAND_RAISER_FORM if kind == "demo" else r.choice(CONTENT_FORMS)
        data = {"form_id": form_id, "email": v.email, **self._form_fields(v), "vid": v.vid,
                "url": f"{SITE}/contact"}
        body = urlencode(data).encode()
        head = self._head("POST", "/t/form", v, "Content-Type: application/x-www-form-urlencoded\r\n"
                                                f"Content-Length: {len(body)}\r\n")
        self.seen.add(v.vid)
        return kind, (head + "\r\n").encode() + body


EXPECTED_STATUS = {"page": 200, "open": 200, "click": 302, "form": 202, "demo": 202}
