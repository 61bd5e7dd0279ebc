"""The rate limiter's own logic, without Redis (its per-process fallback): fixed windows, Retry-After,
keys already over answered from memory, the rate-limited-neighbour signal.  The Redis-shared path is
tested against a real server in tests/integration/test_form_spam.py."""

from __future__ import annotations

from router.ingest.machine import form_trust
from router.ingest.ratelimit import Check, RateLimiter, checks_for
from router.settings import Settings
from scoring import trust


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def test_fixed_window_limit_with_retry_after_to_the_window_end() -> None:
    clock = Clock(1_000_040.0)  # 20 s into the 60 s window that starts at 1_000_020
    limiter = RateLimiter(None, 60, clock=clock)
    checks = [Check("form:ip", "203.0.113.7", 3)]
    assert [(await limiter.hit(checks, ip="203.0.113.7")).allowed for _ in range(3)] == [True, True, True]
    denied = await limiter.hit(checks, ip="203.0.113.7")
    assert not denied.allowed and denied.over == ("form:ip",)
    assert denied.retry_after_s == 40  # to the window's end
    assert limiter.is_hot("203.0.113.7") and not limiter.is_hot("198.51.100.1")
    # Another address is not affected; the next window starts afresh, the neighbour signal lasts one more.
    assert (await limiter.hit([Check("form:ip", "198.51.100.1", 3)], ip="198.51.100.1")).allowed
    clock.t += 41
    assert (await limiter.hit(checks, ip="203.0.113.7")).allowed
    assert limiter.is_hot("203.0.113.7")
    clock.t += 60
    assert not limiter.is_hot("203.0.113.7")


async def test_zero_limit_is_off_and_empty_identifiers_are_not_counted() -> None:
    limiter = RateLimiter(None, 60, clock=Clock(0.0))
    for _ in range(100):
        assert (await limiter.hit([Check("pixel:ip", "203.0.113.7", 0), Check("pixel:visitor", "", 1)])).allowed


def test_checks_per_endpoint_class() -> None:
    ingest = Settings.of(rate_limit_form_per_ip=7, rate_limit_form_per_visitor=2, rate_limit_sdk_per_ip=9).ingest
    assert checks_for(ingest, "form", "203.0.113.7", "vid12345678") == [
        Check("form:ip", "203.0.113.7", 7), Check("form:visitor", "vid12345678", 2)]
    assert checks_for(ingest, "sdk", "203.0.113.7", "vid12345678") == [
        Check("sdk:ip", "203.0.113.7", 9), Check("sdk:visitor", "vid12345678", 0)]
    assert checks_for(ingest, "pixel", None, None) == []


def test_form_trust_reasons() -> None:
    browser = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15"
    site = "https://www.example.com"
    clean = form_trust(browser, site, "jane@acme.com", cors_origins=frozenset({site}), disposable=frozenset(),
                       honeypot=False, hot_ip=False)
    assert clean == (1.0, ())
    value, reasons = form_trust("python-requests/2.32", None, "bot@mailinator.com", cors_origins=frozenset(),
                                disposable=frozenset({"mailinator.com"}), honeypot=True, hot_ip=True)
    assert value == 0.0
    assert reasons == (trust.HONEYPOT, trust.HTTP_LIBRARY, trust.NO_ORIGIN, trust.DISPOSABLE_EMAIL,
                       trust.RATE_LIMITED_IP)
    assert form_trust("", "https://evil.example", "a@b.com", cors_origins=frozenset({site}), disposable=frozenset(),
                      honeypot=False, hot_ip=False)[1] == (trust.NO_USER_AGENT, trust.FOREIGN_ORIGIN)
