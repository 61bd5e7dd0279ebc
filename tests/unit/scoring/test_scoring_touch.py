"""Where a visit came from (scoring/touch.py): channels from UTM tags and referrers, the visit step."""

from __future__ import annotations

import pytest

from models import Event, EventType
from scoring.touch import CHANNELS, campaign_key, channel, visit_cfg, visit_step


@pytest.mark.parametrize(("utm", "referrer", "url", "want"), [
    ({}, None, "https://ex.test/", "direct"),
    ({}, "https://ex.test/pricing", "https://ex.test/demo", "direct"),  # the site's own pages
    ({}, "https://www.google.co.uk/", "https://ex.test/", "organic_search"),
    ({}, "https://www.bing.com/search?q=x", None, "organic_search"),
    ({}, "https://duckduckgo.com/", None, "organic_search"),
    ({}, "https://l.facebook.com/l.php", None, "social"),
    ({}, "https://t.co/abc", None, "social"),
    ({}, "https://www.linkedin.com/feed/", None, "social"),
    ({}, "https://mail.google.com/mail/u/0/", None, "email"),
    ({}, "https://blog.example.org/post", None, "referral"),
    ({}, "https://google.evil.example/", None, "referral"),  # a look-alike is no search engine
    ({}, "https://blog.example.org/", "https://ex.test/?gclid=abc", "paid_search"),
    ({}, None, "https://ex.test/?fbclid=abc", "social"),
    ({"utm_source": "google", "utm_medium": "cpc"}, "https://www.google.com/", None, "paid_search"),
    ({"utm_source": "facebook", "utm_medium": "cpc"}, None, None, "paid_social"),
    ({"utm_source": "newsletter", "utm_medium": "email"}, None, None, "email"),
    ({"utm_source": "NC_EDM", "utm_medium": "EDM"}, None, None, "email"),
    ({"utm_source": "friend", "utm_medium": "reference"}, None, None, "reference"),
    ({"utm_source": "welingak", "utm_medium": "partner"}, None, None, "partner"),
    ({"utm_source": "olark", "utm_medium": "chat"}, None, None, "chat"),
    ({"utm_source": "olark"}, None, None, "chat"),
    ({"utm_source": "google"}, None, None, "organic_search"),
    ({"utm_source": "partnerblog.example", "utm_medium": "referral"}, None, None, "referral"),
    ({"utm_campaign": "spring"}, "https://www.google.com/", None, "other"),  # tagged: the tag wins
    ({"utm_source": "x", "utm_medium": "banner"}, None, None, "display"),
    ({}, "not a url at all", None, "direct"),  # no host: no referrer
    ({}, "http://[::1", None, "direct"),  # unparseable: no host
])
def test_channel(utm: dict[str, str], referrer: str | None, url: str | None, want: str) -> None:
    assert want in CHANNELS
    assert channel(utm, referrer, url) == want


def test_campaign_key() -> None:
    assert campaign_key({}) == ""
    assert campaign_key({"utm_source": "Google", "utm_medium": "CPC", "utm_campaign": "Spring "}) == "google|cpc|spring"
    assert campaign_key({"utm_campaign": "x" * 500}) == ("||" + "x" * 500)[:128]


def _ev(kind: EventType, **kw: object) -> Event:
    return Event(event_id="e1", type=kind, ts=1.0, source="pixel", **kw)  # type: ignore[arg-type]


def test_visit_step() -> None:
    pv = _ev(EventType.PAGE_VIEW, url="https://ex.test/?utm_source=google&utm_medium=cpc",
             utm={"utm_source": "google", "utm_medium": "cpc"}, referrer="https://www.google.com/")
    assert visit_step(pv) == {"k": "pv", "s": "paid_search", "c": "google|cpc|"}
    assert visit_step(_ev(EventType.PAGE_PING, url="https://ex.test/")) == {"k": "pp"}
    form = _ev(EventType.FORM_FILL, utm={"utm_medium": "reference"})
    assert visit_step(form) == {"k": "t", "s": "reference", "c": "|reference|"}
    assert visit_step(_ev(EventType.EMAIL_CLICK, url="https://ex.test/")) == {"k": "t", "s": "email", "c": ""}
    assert visit_step(_ev(EventType.EMAIL_OPEN)) is None
    assert visit_step(_ev(EventType.TRACK, name="Trial Started")) is None  # server-side: no page
    chat = _ev(EventType.TRACK, name="chat/conversation", url="https://ex.test/?utm_source=olark&utm_medium=chat",
               utm={"utm_source": "olark", "utm_medium": "chat"})
    assert visit_step(chat) == {"k": "t", "s": "chat", "c": "olark|chat|"}
    assert visit_cfg() == {"wg": 1800.0, "wp": 30.0, "wx": 7200.0}
