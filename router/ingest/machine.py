"""Machine opens and bots: pure heuristics that *flag* hits, never drop them.

Every function here is pure (no I/O, no clock): the collector passes in what it
saw and gets a :class:`Verdict`, whose ``score`` (0..1, how likely a machine made
the hit) and ``reason`` go onto :attr:`models.Event.machine` and
``machine_reason``.  Scoring discounts points by it; the event is still stored.

The heuristics, strongest first:

* **Configured networks** (``LEADROUTER_MACHINE_NETWORKS``, CIDRs): 1.0,
  ``network:<cidr>``.  Use it for security scanners, your own office egress, or
  published proxy ranges (Apple's iCloud Private Relay egress list, Microsoft's
  Exchange Online ranges for Outlook.com's image proxy, which sends no
  distinctive user agent).
* **Too soon after the send** (email opens and clicks; the token carries
  ``sent_at``): an open or click within ``machine_open_delay_s`` (default 2 s)
  of the send is a prefetch or link scanner: 0.9, ``too_soon_after_send``.
* **Apple Mail Privacy Protection** (email opens): Apple's proxy fetches every
  image when the mail is *delivered*, whether or not anyone reads it.  Its
  requests carry the bare user agent ``Mozilla/5.0`` (real clients add
  platform details) and come from Apple-owned addresses (``17.0.0.0/8``).
  Either signal: 0.9; both: 0.97.  Reasons ``apple_mpp:user_agent``,
  ``apple_mpp:ip``.
* **Crawlers and headless browsers** (any hit): a curated list of user-agent
  tokens (``bot`` as a word ending such as Googlebot/bingbot/Slackbot,
  crawler, spider, HeadlessChrome, PhantomJS, Puppeteer, Playwright, Selenium,
  Lighthouse, link-preview and mail-security scanners...): 0.95, ``crawler``.
* **HTTP libraries** (only where a browser is expected: the web pixel and
  click redirects when ``machine_flag_http_clients`` is on, and a visitor
  agent a tracker reports): curl, wget, python-requests, aiohttp,
  Go-http-client, Java, okhttp...: 0.9, ``http_library``.  Never applied to
  SDK calls made server-to-server, whose HTTP client is not the visitor.
* **No user agent** where a browser is expected: 0.6, ``no_user_agent``.
* **Image proxies** (email opens): Gmail's ``GoogleImageProxy`` and Yahoo's
  ``YahooMailProxy`` fetch the image when the recipient opens the mail, so
  they are mostly real opens with hidden device details: 0.2 / 0.3,
  ``image_proxy:google`` / ``image_proxy:yahoo``.

The verdict's score is the highest matching signal's; every matching reason
is kept, strongest first, comma-separated.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from router.settings import parse_networks as parse_networks  # the setting's parser, for callers here
from scoring import trust

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

APPLE_NETWORKS: tuple[Network, ...] = (ipaddress.ip_network("17.0.0.0/8"),)
APPLE_MPP_USER_AGENT = "Mozilla/5.0"

SCORE_NETWORK = 1.0
SCORE_TOO_SOON = 0.9
SCORE_APPLE_ONE = 0.9
SCORE_APPLE_BOTH = 0.97
SCORE_CRAWLER = 0.95
SCORE_HTTP_LIBRARY = 0.9
SCORE_NO_USER_AGENT = 0.6
SCORE_GOOGLE_PROXY = 0.2
SCORE_YAHOO_PROXY = 0.3

# Word-ish "bot" endings (Googlebot/2.1, bingbot, Slackbot-LinkExpanding,
# AhrefsBot, DuckDuckBot) but not the CUBOT phone brand.
_BOT_RE = re.compile(r"(?<!cu)bot(?:[/;:\-_ )+,]|$)", re.IGNORECASE)
_CRAWLER_TOKENS: tuple[str, ...] = (
    "crawler", "crawling", "spider", "slurp", "headlesschrome", "headless", "phantomjs", "puppeteer",
    "playwright", "selenium", "webdriver", "lighthouse", "pagespeed", "facebookexternalhit", "embedly",
    "linkpreview", "bingpreview", "skypeuripreview", "whatsapp", "barracuda", "mimecast", "proofpoint",
    "safelinks", "urldefense", "microsoft office existence discovery", "scanner", "archive.org_bot",
    "ia_archiver", "httrack", "nutch", "scrapy",
)
_HTTP_LIBRARY_TOKENS: tuple[str, ...] = (
    "curl/", "wget/", "python-requests", "python-urllib", "python-httpx", "aiohttp/", "go-http-client",
    "java/", "okhttp", "libwww-perl", "apache-httpclient", "axios/", "node-fetch", "undici", "guzzlehttp",
    "ruby", "postmanruntime", "insomnia", "httpie",
)
_IMAGE_PROXIES: tuple[tuple[str, float, str], ...] = (
    ("googleimageproxy", SCORE_GOOGLE_PROXY, "image_proxy:google"),
    ("ggpht.com", SCORE_GOOGLE_PROXY, "image_proxy:google"),
    ("yahoomailproxy", SCORE_YAHOO_PROXY, "image_proxy:yahoo"),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How likely a machine made a hit (0..1), and why."""

    score: float = 0.0
    reasons: tuple[str, ...] = ()

    @property
    def reason(self) -> str | None:
        return ",".join(self.reasons) or None

    @property
    def kind(self) -> str:
        """The strongest reason without its detail, for a low-cardinality metric label."""
        return self.reasons[0].split(":", 1)[0] if self.reasons else "none"


HUMAN = Verdict()


def combine(signals: Iterable[tuple[float, str]]) -> Verdict:
    """The strongest score; every distinct reason, strongest first."""
    ranked = sorted(signals, key=lambda s: -s[0])
    if not ranked:
        return HUMAN
    reasons: list[str] = []
    for _, reason in ranked:
        if reason not in reasons:
            reasons.append(reason)
    return Verdict(score=min(1.0, max(0.0, ranked[0][0])), reasons=tuple(reasons))


# Bounded per-process caches of pure answers: a visitor's address and user agent repeat on every
# hit; a flood of distinct values only evicts entries.
CACHE_SIZE = 16_384


@functools.lru_cache(maxsize=CACHE_SIZE)
def parse_ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def network_of(ip: str | None, networks: Sequence[Network]) -> Network | None:
    addr = parse_ip(ip)
    if addr is None:
        return None
    for net in networks:
        if addr.version == net.version and addr in net:
            return net
    return None


def user_agent_signals(user_agent: str | None, *, browser_expected: bool) -> list[tuple[float, str]]:
    return list(_user_agent_signals(user_agent, browser_expected))


@functools.lru_cache(maxsize=CACHE_SIZE)
def _user_agent_signals(user_agent: str | None, browser_expected: bool) -> tuple[tuple[float, str], ...]:
    ua = (user_agent or "").strip()
    if not ua:
        return ((SCORE_NO_USER_AGENT, "no_user_agent"),) if browser_expected else ()
    low = ua.lower()
    found: list[tuple[float, str]] = []
    match = _BOT_RE.search(low)
    if match:
        found.append((SCORE_CRAWLER, "crawler:bot"))
    for token in _CRAWLER_TOKENS:
        if token in low:
            found.append((SCORE_CRAWLER, f"crawler:{token}"))
            break
    if browser_expected:
        for token in _HTTP_LIBRARY_TOKENS:
            if token in low:
                found.append((SCORE_HTTP_LIBRARY, f"http_library:{token.rstrip('/')}"))
                break
    return tuple(found)


def classify_web_hit(user_agent: str | None, ip: str | None, networks: Sequence[Network] = (), *,
                     browser_expected: bool = True) -> Verdict:
    """A page view or other web hit: crawlers, headless browsers, configured networks."""
    signals = _user_agent_signals(user_agent, browser_expected)
    net = network_of(ip, networks) if networks else None
    if net is not None:
        return combine((*signals, (SCORE_NETWORK, f"network:{net}")))
    return combine(signals) if signals else HUMAN


def classify_email_hit(kind: str, user_agent: str | None, ip: str | None, *, sent_at: float, now: float,
                       min_delay_s: float, networks: Sequence[Network] = (), browser_expected: bool = True) -> Verdict:
    """An email open (``kind="open"``) or click (``kind="click"``; ``browser_expected``
    also flags HTTP libraries and a missing agent on clicks)."""
    signals: list[tuple[float, str]] = []
    if sent_at > 0 and min_delay_s > 0 and now - sent_at < min_delay_s:
        signals.append((SCORE_TOO_SOON, "too_soon_after_send"))
    net = network_of(ip, networks)
    if net is not None:
        signals.append((SCORE_NETWORK, f"network:{net}"))
    ua = (user_agent or "").strip()
    if kind == "open":
        apple_ua = ua == APPLE_MPP_USER_AGENT
        apple_ip = network_of(ip, APPLE_NETWORKS) is not None
        if apple_ua and apple_ip:
            signals.append((SCORE_APPLE_BOTH, "apple_mpp:user_agent+ip"))
        elif apple_ua:
            signals.append((SCORE_APPLE_ONE, "apple_mpp:user_agent"))
        elif apple_ip:
            signals.append((SCORE_APPLE_ONE, "apple_mpp:ip"))
        low = ua.lower()
        for token, score, reason in _IMAGE_PROXIES:
            if token in low:
                signals.append((score, reason))
                break
        # Mail clients fetch images with all sorts of non-browser agents.
        signals.extend(user_agent_signals(ua, browser_expected=False))
    else:
        signals.extend(user_agent_signals(ua, browser_expected=browser_expected))
    return combine(signals)


def form_trust(user_agent: str | None, origin: str | None, email: str, *, cors_origins: frozenset[str],
               disposable: frozenset[str], honeypot: bool, hot_ip: bool) -> tuple[float, tuple[str, ...]]:
    """How far a form fill looks like a person's (0..1) and why not (scoring/trust.py).

    A form is meant to be posted by a browser, so HTTP libraries and a missing user agent count
    (whatever ``machine_flag_http_clients`` says: that setting only flags pixels).  ``Origin``: with
    ``LEADROUTER_CORS_ORIGINS`` set, another site's origin is ``foreign_origin``; a post without one
    is ``no_origin`` (browsers send it on every cross-site and fetch POST; scripts often do not).
    """
    reasons: list[str] = []
    if honeypot:
        reasons.append(trust.HONEYPOT)
    for _, reason in user_agent_signals(user_agent, browser_expected=True):
        kind = reason.split(":", 1)[0]
        if kind in (trust.CRAWLER, trust.HTTP_LIBRARY, trust.NO_USER_AGENT):
            reasons.append(kind)
    if not origin or origin == "null":
        reasons.append(trust.NO_ORIGIN)
    elif cors_origins and origin not in cors_origins:
        reasons.append(trust.FOREIGN_ORIGIN)
    if trust.is_disposable(email, disposable):
        reasons.append(trust.DISPOSABLE_EMAIL)
    if hot_ip:
        reasons.append(trust.RATE_LIMITED_IP)
    return trust.combine(reasons)
