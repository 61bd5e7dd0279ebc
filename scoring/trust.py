"""Trust: how far we believe a person (not a script) sent an event, 0..1, with the reasons.

Pure.  The collector scores a form fill from what the request shows
(:func:`form_trust`); the worker adds what only the lead's history shows (no
page view before the form: :data:`NO_PRIOR_PAGE_VIEW`) with :func:`with_reason`.
A hand-raiser whose trust is below the worker's review level
(``LEADROUTER_WORKER_REVIEW_TRUST_BELOW``, 0.5) goes to the review queue
instead of a rep; nothing is dropped.

Each reason multiplies the trust by its factor (:data:`FACTORS`), so one strong
signal (a filled honeypot, a crawler) or two weaker ones (a browser-like agent
with no Origin and no page view before) fall below 0.5, while a real visitor
who browsed the site first, from a browser, with a business address, keeps 1.0.
"""

from __future__ import annotations

from collections.abc import Iterable

HONEYPOT = "honeypot"
CRAWLER = "crawler"
HTTP_LIBRARY = "http_library"
NO_USER_AGENT = "no_user_agent"
DISPOSABLE_EMAIL = "disposable_email"
RATE_LIMITED_IP = "rate_limited_ip"
FOREIGN_ORIGIN = "foreign_origin"
NO_ORIGIN = "no_origin"
NO_PRIOR_PAGE_VIEW = "no_prior_page_view"

FACTORS: dict[str, float] = {
    HONEYPOT: 0.0,  # a hidden field no person sees was filled
    CRAWLER: 0.1,  # a crawler or headless-browser user agent
    HTTP_LIBRARY: 0.2,  # curl, python-requests, Go-http-client... posting a form meant for a browser
    NO_USER_AGENT: 0.3,
    DISPOSABLE_EMAIL: 0.3,  # a throw-away address (router/ingest/disposable_domains.txt)
    RATE_LIMITED_IP: 0.4,  # the address was over its rate limit in this window or the one before
    FOREIGN_ORIGIN: 0.4,  # Origin is not one of LEADROUTER_CORS_ORIGINS (when that is set)
    NO_ORIGIN: 0.8,  # a browser posting a form sends Origin; scripts often do not
    NO_PRIOR_PAGE_VIEW: 0.6,  # the person never viewed a page of the site before raising a hand
}

REVIEW_BELOW = 0.5


def combine(reasons: Iterable[str]) -> tuple[float, tuple[str, ...]]:
    """(trust, distinct reasons in order) for a set of reasons; unknown reasons count 0.5."""
    seen: list[str] = []
    trust = 1.0
    for reason in reasons:
        if not reason or reason in seen:
            continue
        seen.append(reason)
        trust *= FACTORS.get(reason, 0.5)
    return round(trust, 6), tuple(seen)


def split_reasons(text: str | None) -> tuple[str, ...]:
    """``"a,b"`` as ``("a", "b")``; ``None`` or ``""`` as ``()``."""
    return tuple(r for r in (text or "").split(",") if r)


def with_reason(trust: float, reasons: str | None, extra: str) -> tuple[float, str]:
    """``trust`` and ``reasons`` with one more reason (a reason already there is not counted twice)."""
    have = split_reasons(reasons)
    if extra in have:
        return trust, ",".join(have)
    return round(trust * FACTORS.get(extra, 0.5), 6), ",".join((*have, extra))


def email_domain(email: str) -> str:
    return email.rpartition("@")[2].strip().lower().rstrip(".")


def is_disposable(email: str, domains: frozenset[str]) -> bool:
    """The address's domain, or a parent domain of it, is in ``domains``."""
    domain = email_domain(email)
    parts = domain.split(".")
    return any(".".join(parts[i:]) in domains for i in range(len(parts) - 1))


def parse_domain_list(text: str) -> frozenset[str]:
    """One domain a line; blank lines and ``#`` comments ignored; lower-cased."""
    out = set()
    for line in text.splitlines():
        word = line.split("#", 1)[0].strip().lower().rstrip(".")
        if word:
            out.add(word)
    return frozenset(out)


def describe(reasons: Iterable[str]) -> str:
    """The reasons as words for an alert or the review queue."""
    words = {
        HONEYPOT: "filled the hidden honeypot field",
        CRAWLER: "crawler or headless-browser user agent",
        HTTP_LIBRARY: "sent by an HTTP library, not a browser",
        NO_USER_AGENT: "no user agent",
        DISPOSABLE_EMAIL: "disposable email domain",
        RATE_LIMITED_IP: "address over its rate limit",
        FOREIGN_ORIGIN: "posted from another site",
        NO_ORIGIN: "no Origin header",
        NO_PRIOR_PAGE_VIEW: "no page view before the form",
    }
    return "; ".join(words.get(r, r) for r in reasons)
