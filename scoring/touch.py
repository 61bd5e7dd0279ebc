"""Where a visit came from: one channel per touch, from its UTM tags and referrer.  Pure functions.

The worker classifies every page view, form fill and email click with
:func:`channel`; ``router/storage/lua/apply_event.lua`` keeps the first touch
(``w:ft``, never replaced) and the last non-direct touch (``w:lt``: a direct
visit does not overwrite a known source, the usual attribution rule) on the
lead, and :func:`campaign_key` decides when a new UTM campaign starts a new
session.

Channels (:data:`CHANNELS`), first rule that matches:

1. ``utm_medium`` (case-folded): cpc/ppc/paid/paidsearch/sem... -> ``paid_search``
   (``paid_social`` when the source is a social network); email/newsletter/edm
   -> ``email``; social... -> ``social``; organic -> ``organic_search``;
   reference/referral_program/refer_a_friend -> ``reference`` (a person
   referred them); partner/affiliate -> ``partner``; chat (or an ``olark``,
   ``livechat``, ``intercom``, ``drift`` source) -> ``chat``; referral ->
   ``referral``; display/banner -> ``display``.
2. Any other UTM: the source judged like a referrer host (``utm_source=google``
   with no medium is search), else ``other``.
3. No UTM: a ``gclid``/``msclkid``/``fbclid`` click id in the landing URL ->
   ``paid_search`` (``social`` for fbclid); no referrer (or the site's own host)
   -> ``direct``; a search engine -> ``organic_search``; a social network ->
   ``social``; a webmail host -> ``email``; any other site -> ``referral``.

The X Education "Lead Source" categories map onto these in
``scoring/x_education_mapping.yaml`` (Google, Organic Search, bing ->
organic_search; Direct Traffic -> direct; Olark Chat, Live Chat -> chat;
Reference -> reference; Welingak Website -> partner; Referral Sites -> referral;
Facebook, Social Media -> social ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from models.events import Event, EventType

CHANNELS: Final[tuple[str, ...]] = (
    "direct", "organic_search", "paid_search", "paid_social", "social", "email", "referral", "reference",
    "partner", "chat", "display", "other",
)

_PAID: Final = frozenset({"cpc", "ppc", "paid", "paidsearch", "paid_search", "paid-search", "sem", "cpm", "cpv",
                          "cpa", "adwords", "ads"})
_EMAIL: Final = frozenset({"email", "e-mail", "e_mail", "mail", "newsletter", "edm", "nc_edm"})
_SOCIAL: Final = frozenset({"social", "social-network", "social_network", "social-media", "social_media", "sm",
                            "paid_social", "paid-social", "paidsocial"})
_REFERENCE: Final = frozenset({"reference", "referral_program", "referral-program", "refer_a_friend",
                               "refer-a-friend", "friend", "word_of_mouth"})
_PARTNER: Final = frozenset({"partner", "affiliate", "affiliates"})
_CHAT: Final = frozenset({"chat", "live_chat", "livechat", "olark", "intercom", "drift"})
_DISPLAY: Final = frozenset({"display", "banner", "programmatic"})

_SEARCH_HOSTS: Final = ("google", "bing", "yahoo", "duckduckgo", "baidu", "yandex", "ecosia", "ask", "naver",
                        "seznam", "startpage", "qwant")
_SOCIAL_HOSTS: Final = ("facebook", "fb", "instagram", "twitter", "x", "t", "linkedin", "lnkd", "youtube",
                        "reddit", "pinterest", "tiktok", "quora", "whatsapp")
_MAIL_HOSTS: Final = ("mail.google.com", "outlook.live.com", "outlook.office.com", "mail.yahoo.com",
                      "mail.proton.me")
_SECOND_LEVEL: Final = frozenset({"co", "com", "org", "net", "ac", "gov", "edu", "ne", "or"})
_CHAT_SOURCES: Final = ("olark", "livechat", "live_chat", "intercom", "drift", "zendesk_chat")
MAX_KEY: Final = 128


def _host(url: str | None) -> str:
    if not url:
        return ""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.casefold().removeprefix("www.").removeprefix("m.")


def _labels(host: str) -> list[str]:
    return [p for p in host.split(".") if p]


def host_channel(host: str) -> str | None:
    """A referring host's channel, or ``None`` when it is just some other site."""
    if not host:
        return None
    if host in _MAIL_HOSTS or host.startswith(("mail.", "webmail.")):
        return "email"
    labels = _labels(host)
    # the registrable name: the label before the public suffix (google.co.uk, t.co, l.facebook.com);
    # google.evil.example is "evil", no search engine
    name = labels[0] if len(labels) < 2 else labels[-2]
    if len(labels) > 2 and name in _SECOND_LEVEL:
        name = labels[-3]
    if name in _SEARCH_HOSTS:
        return "organic_search"
    if name in _SOCIAL_HOSTS:
        return "social"
    if any(c in host for c in _CHAT_SOURCES):
        return "chat"
    return None


def _source_channel(source: str) -> str | None:
    key = source.casefold().strip()
    if not key:
        return None
    if key in _CHAT or any(c in key for c in _CHAT_SOURCES):
        return "chat"
    if key in _SEARCH_HOSTS:
        return "organic_search"
    if key in _SOCIAL_HOSTS or key in {"facebook", "linkedin", "twitter", "youtube", "instagram"}:
        return "social"
    return host_channel(key if "." in key else f"{key}.com")


def channel(utm: Mapping[str, str], referrer: str | None, url: str | None = None) -> str:
    """The channel of one touch (see the module text for the rules)."""
    medium = (utm.get("utm_medium") or "").casefold().strip()
    source = (utm.get("utm_source") or "").casefold().strip()
    by_source = _source_channel(source)
    if medium:
        if medium in _PAID:
            return "paid_social" if by_source == "social" else "paid_search"
        if medium in _EMAIL:
            return "email"
        if medium in _SOCIAL:
            return "paid_social" if medium.startswith("paid") else "social"
        if medium == "organic":
            return "organic_search"
        if medium in _REFERENCE:
            return "reference"
        if medium in _PARTNER:
            return "partner"
        if medium in _CHAT or by_source == "chat":
            return "chat"
        if medium == "referral":
            return "referral"
        if medium in _DISPLAY:
            return "display"
    if source or utm.get("utm_campaign"):
        return by_source or "other"
    query: dict[str, str] = {}
    if url:
        try:
            query = dict(parse_qsl(urlsplit(url).query))
        except ValueError:
            query = {}
    if query.get("gclid") or query.get("msclkid") or query.get("dclid"):
        return "paid_search"
    if query.get("fbclid"):
        return "social"
    ref = _host(referrer)
    if not ref or (url and ref == _host(url)):
        return "direct"
    return host_channel(ref) or "referral"


def campaign_key(utm: Mapping[str, str]) -> str:
    """What identifies a campaign for the session rule: source/medium/campaign ("" without UTM tags)."""
    parts = [(utm.get(k) or "").casefold().strip() for k in ("utm_source", "utm_medium", "utm_campaign")]
    if not any(parts):
        return ""
    return "|".join(parts)[:MAX_KEY]


# ---------------------------------------------------------------- the visit step apply_event.lua takes

SESSION_GAP_S: Final = 1800.0  # a page view after more than 30 minutes without a hit opens a new session
PING_CAP_S: Final = 30.0  # one ping (or page view) adds at most this much time: the snippet pings every 15 s
SESSION_TIME_CAP_S: Final = 7200.0  # one session counts at most two hours on site
MAX_NAME: Final = 64

_TOUCHES: Final = frozenset({EventType.FORM_FILL, EventType.EMAIL_CLICK})


def visit_step(event: Event) -> dict[str, str] | None:
    """The ``w`` part of apply_event.lua's event: page view (``pv``), ping (``pp``) or a touch (``t``).

    ``None`` for events that are no visit (an email open, an identify, a server-side track without a page).
    """
    if event.type is EventType.PAGE_VIEW:
        kind = "pv"
    elif event.type is EventType.PAGE_PING:
        return {"k": "pp"}
    elif event.type in _TOUCHES or (event.type is EventType.TRACK and (event.url or event.utm)):
        kind = "t"  # a form, an e-mail click, an event on a page (a chat widget's conversation)
    else:
        return None
    utm = dict(event.utm)
    if event.type is EventType.EMAIL_CLICK and not utm.get("utm_medium"):
        return {"k": kind, "s": "email", "c": ""}
    return {"k": kind, "s": channel(utm, event.referrer, event.url), "c": campaign_key(utm)}


def visit_cfg() -> dict[str, float]:
    """The session settings apply_event.lua reads from its batch settings."""
    return {"wg": SESSION_GAP_S, "wp": PING_CAP_S, "wx": SESSION_TIME_CAP_S}
