"""Machine opens and bots: the pure heuristics in router/ingest/machine.py."""

from __future__ import annotations

import pytest

from router.errors import SettingsError
from router.ingest.machine import (
    SCORE_APPLE_BOTH,
    SCORE_APPLE_ONE,
    SCORE_CRAWLER,
    SCORE_GOOGLE_PROXY,
    SCORE_HTTP_LIBRARY,
    SCORE_NETWORK,
    SCORE_NO_USER_AGENT,
    SCORE_TOO_SOON,
    SCORE_YAHOO_PROXY,
    Verdict,
    classify_email_hit,
    classify_web_hit,
    combine,
    parse_networks,
)

NOW = 1_800_000_000.0
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/130.0.0.0 Safari/537.36")
IPHONE_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Mobile/15E148")
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO_PROXY = ("Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/42.0.2311.135 Safari/537.36 Edge/12.10136 YahooMailProxy; "
               "https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html")


def open_hit(ua: str | None, ip: str | None = "198.51.100.7", sent_at: float = NOW - 3600, **kw: object) -> Verdict:
    return classify_email_hit("open", ua, ip, sent_at=sent_at, now=NOW, min_delay_s=2.0, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- web hits


@pytest.mark.parametrize("ua", [
    CHROME,
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0",
])
def test_real_browsers_are_people(ua: str) -> None:
    v = classify_web_hit(ua, "198.51.100.7")
    assert v == Verdict() and v.score == 0.0 and v.reason is None and v.kind == "none"


@pytest.mark.parametrize(("ua", "reason"), [
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "crawler:bot"),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "crawler:bot"),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "crawler:bot"),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "crawler:bot"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36",
     "crawler:headlesschrome"),
    ("Mozilla/5.0 (compatible; SemrushCrawler)", "crawler:crawler"),
    ("Baiduspider-render/2.0", "crawler:spider"),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "crawler:facebookexternalhit"),
])
def test_crawlers_are_flagged(ua: str, reason: str) -> None:
    v = classify_web_hit(ua, None)
    assert v.score == SCORE_CRAWLER
    assert reason in v.reasons
    assert v.kind == "crawler"


@pytest.mark.parametrize(("ua", "token"), [
    ("curl/8.5.0", "curl"), ("Wget/1.21.4", "wget"), ("python-requests/2.32.3", "python-requests"),
    ("Go-http-client/1.1", "go-http-client"), ("Java/17.0.2", "java"), ("okhttp/4.12.0", "okhttp"),
])
def test_http_libraries_are_machines_only_where_a_browser_is_expected(ua: str, token: str) -> None:
    v = classify_web_hit(ua, None, browser_expected=True)
    assert v.score == SCORE_HTTP_LIBRARY and v.reasons == (f"http_library:{token}",)
    # A server-side SDK's own HTTP client is not the visitor.
    assert classify_web_hit(ua, None, browser_expected=False) == Verdict()


def test_missing_user_agent() -> None:
    assert classify_web_hit(None, None).reasons == ("no_user_agent",)
    assert classify_web_hit("  ", None).score == SCORE_NO_USER_AGENT
    assert classify_web_hit("", None, browser_expected=False) == Verdict()


def test_configured_networks_win_and_every_reason_is_kept() -> None:
    nets = parse_networks("192.0.2.0/24, 2001:db8::/32")
    v = classify_web_hit("curl/8.5.0", "192.0.2.55", nets)
    assert v.score == SCORE_NETWORK
    assert v.reasons == ("network:192.0.2.0/24", "http_library:curl")
    assert v.reason == "network:192.0.2.0/24,http_library:curl"
    assert classify_web_hit(CHROME, "2001:db8::1", nets).reasons == ("network:2001:db8::/32",)
    assert classify_web_hit(CHROME, "::ffff:192.0.2.9", nets).score == SCORE_NETWORK  # IPv4-mapped
    assert classify_web_hit(CHROME, "198.51.100.1", nets) == Verdict()
    assert classify_web_hit(CHROME, "not-an-ip", nets) == Verdict()


def test_parse_networks() -> None:
    assert parse_networks("") == ()
    assert [str(n) for n in parse_networks("10.0.0.0/8 192.0.2.7,\n2001:db8::/32")] == [
        "10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    assert str(parse_networks("192.0.2.9/24")[0]) == "192.0.2.0/24"  # host bits are tolerated
    with pytest.raises(SettingsError) as exc:
        parse_networks("10.0.0.0/8,office")
    assert "LEADROUTER_MACHINE_NETWORKS" in str(exc.value) and "'office'" in str(exc.value)


def test_combine() -> None:
    assert combine([]) == Verdict()
    v = combine([(0.2, "b"), (0.9, "a"), (0.2, "b")])
    assert v.score == 0.9 and v.reasons == ("a", "b")
    assert combine([(1.5, "x")]).score == 1.0


# --------------------------------------------------------------------------- email opens


def test_a_normal_open_is_a_person() -> None:
    assert open_hit(IPHONE_MAIL) == Verdict()
    assert open_hit("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)") == Verdict()
    assert open_hit("Outlook") == Verdict()


def test_apple_mail_privacy_protection() -> None:
    assert open_hit("Mozilla/5.0").reasons == ("apple_mpp:user_agent",)
    assert open_hit("Mozilla/5.0").score == SCORE_APPLE_ONE
    assert open_hit(IPHONE_MAIL, ip="17.58.101.12").reasons == ("apple_mpp:ip",)
    both = open_hit("Mozilla/5.0", ip="17.58.101.12")
    assert both.score == SCORE_APPLE_BOTH and both.kind == "apple_mpp"
    # A bare agent on a click or web hit is not MPP.
    assert classify_web_hit("Mozilla/5.0", "17.58.101.12") == Verdict()


def test_image_proxies_are_flagged_lightly() -> None:
    g = open_hit(GMAIL_PROXY, ip="66.249.84.1")
    assert g.score == SCORE_GOOGLE_PROXY and g.reasons == ("image_proxy:google",)
    y = open_hit(YAHOO_PROXY)
    assert y.score == SCORE_YAHOO_PROXY and y.reasons == ("image_proxy:yahoo",)


def test_opens_right_after_the_send_are_machines() -> None:
    v = open_hit(IPHONE_MAIL, sent_at=NOW - 1.5)
    assert v.score == SCORE_TOO_SOON and v.reasons == ("too_soon_after_send",)
    assert open_hit(IPHONE_MAIL, sent_at=NOW - 2.0) == Verdict()
    assert open_hit(IPHONE_MAIL, sent_at=0) == Verdict()  # tokens without sent_at
    assert classify_email_hit("open", IPHONE_MAIL, None, sent_at=NOW - 1, now=NOW, min_delay_s=0) == Verdict()
    assert open_hit("Mozilla/5.0", sent_at=NOW - 1).reasons == ("too_soon_after_send", "apple_mpp:user_agent")


def test_mail_clients_are_not_http_libraries_but_scanners_are_crawlers() -> None:
    assert open_hit(None) == Verdict()  # some mail clients send no agent
    assert open_hit("Barracuda Sentinel (EE)").kind == "crawler"


def test_clicks() -> None:
    def click(ua: str | None, sent_at: float = NOW - 600, ip: str | None = None) -> Verdict:
        return classify_email_hit("click", ua, ip, sent_at=sent_at, now=NOW, min_delay_s=2.0,
                                  networks=parse_networks("203.0.113.0/24"))

    assert click(CHROME) == Verdict()
    assert click(CHROME, sent_at=NOW - 0.5).reasons == ("too_soon_after_send",)  # link scanner at delivery
    assert click("python-requests/2.32").kind == "http_library"
    assert click(None).kind == "no_user_agent"
    assert click("Mozilla/5.0") == Verdict()  # MPP is about images only
    assert click(CHROME, ip="203.0.113.40").score == SCORE_NETWORK
