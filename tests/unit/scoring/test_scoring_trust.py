"""scoring.trust: reasons multiply the trust; a real visitor keeps 1.0, one strong or two weak signals fall below 0.5."""

from __future__ import annotations

from scoring import trust


def test_no_reason_is_full_trust_and_each_reason_counts_once() -> None:
    assert trust.combine([]) == (1.0, ())
    value, reasons = trust.combine([trust.HTTP_LIBRARY, trust.HTTP_LIBRARY, trust.NO_ORIGIN])
    assert reasons == (trust.HTTP_LIBRARY, trust.NO_ORIGIN)
    assert value == round(0.2 * 0.8, 6)


def test_one_strong_or_two_weak_signals_fall_below_the_review_level() -> None:
    assert trust.combine([trust.HONEYPOT])[0] == 0.0
    assert trust.combine([trust.HTTP_LIBRARY])[0] < trust.REVIEW_BELOW
    assert trust.combine([trust.DISPOSABLE_EMAIL])[0] < trust.REVIEW_BELOW
    # A browser-like agent without Origin: still routed; with no page view before either, held.
    assert trust.combine([trust.NO_ORIGIN])[0] >= trust.REVIEW_BELOW
    assert trust.combine([trust.NO_PRIOR_PAGE_VIEW])[0] >= trust.REVIEW_BELOW
    assert trust.combine([trust.NO_ORIGIN, trust.NO_PRIOR_PAGE_VIEW])[0] < trust.REVIEW_BELOW


def test_with_reason_adds_once() -> None:
    value, text = trust.with_reason(0.8, "no_origin", trust.NO_PRIOR_PAGE_VIEW)
    assert text == "no_origin,no_prior_page_view" and value == round(0.8 * 0.6, 6)
    assert trust.with_reason(value, text, trust.NO_PRIOR_PAGE_VIEW) == (value, text)
    assert trust.with_reason(1.0, None, trust.NO_ORIGIN) == (0.8, "no_origin")


def test_disposable_domains_match_subdomains_not_lookalikes() -> None:
    domains = trust.parse_domain_list("# comment\nMailinator.com\n\nyopmail.com  # inline\n")
    assert domains == frozenset({"mailinator.com", "yopmail.com"})
    assert trust.is_disposable("x@mailinator.com", domains)
    assert trust.is_disposable("x@EU.Mailinator.com.", domains)
    assert not trust.is_disposable("x@notmailinator.com", domains)
    assert not trust.is_disposable("x@acme.com", domains)
    assert not trust.is_disposable("x@com", domains)


def test_describe_names_every_reason() -> None:
    text = trust.describe([trust.HTTP_LIBRARY, "something_new"])
    assert "HTTP library" in text and "something_new" in text
