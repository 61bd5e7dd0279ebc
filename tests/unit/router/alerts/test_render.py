"""Alert rendering: what a rep reads in text, HTML and Slack Block Kit."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from models.lead import Alert, Assignment, LeadView, Reason, Rep, RoutingDecision, Stage
from router.alerts.render import Digest, message_id, new_email, render_email, render_html, render_text
from router.alerts.render_digest import digest_subject, render_digest_email, render_digest_text
from router.alerts.render_slack import render_digest_blocks, render_slack_blocks
from router.alerts.views import MAX_REASONS, email_subject, slack_escape, top_reasons, utc_time

TS = 1795372874.0  # 2026-11-22 18:41:14 UTC
TS_TEXT = "2026-11-22 18:41:14 UTC"


def make_alert(
    *,
    name: str = "Jane Doe",
    company: str = "Acme",
    trigger: str = "hand-raiser form demo-request",
    reasons: tuple[Reason, ...] | None = None,
    recent: tuple[dict[str, Any], ...] = (),
    slack_user_id: str | None = "U0REP1",
) -> Alert:
    if reasons is None:
        reasons = (Reason("demo_request", 50, "e1", "form_fill", TS, "filled form demo-request", True),)
    rep = Rep("r1", "Rita Rep", "rita@example.test", "enterprise", slack_user_id)
    decision = RoutingDecision("enterprise", "big-companies", "v7", ("root", "employees>=1000"))
    return Alert(
        assignment=Assignment("asg-42", "lead-1", 1, rep, decision, TS),
        lead=LeadView(
            "lead-1", "jane@acme.test", 104.6, Stage.MQL, {"name": name, "company": company}, reasons
        ),
        threshold=100,
        trigger=trigger,
        recent=recent,
    )


# Seven reasons in scrambled order; the top five by points are 50, 25, 20, 15, 10.
REASONS = (
    Reason("pricing_view", 10, "e1", "page_view", TS - 600, "viewed /pricing"),
    Reason("email_open", 2, "e2", "email_open", TS - 500, "opened q3-nurture"),
    Reason("demo_request", 50, "e3", "form_fill", TS, "filled form demo-request", True),
    Reason("case_study", 15, "e4", "page_view", TS - 400, "viewed /customers"),
    Reason("email_click", 5, "e5", "email_click", TS - 300, "clicked q3-nurture"),
    Reason("webinar", 20, "e6", "form_fill", TS - 200, "registered webinar"),
    Reason("docs_deep", 25, "e7", "page_view", TS - 100, "read 6 docs pages"),
)
TOP = [
    "+50 demo_request — filled form demo-request",
    "+25 docs_deep — read 6 docs pages",
    "+20 webinar — registered webinar",
    "+15 case_study — viewed /customers",
    "+10 pricing_view — viewed /pricing",
]
DROPPED = ["email_click", "email_open"]

RECENT = (
    {"type": "page_view", "ts": TS - 74, "url": "https://www.example.test/pricing", "title": "Pricing"},
    {"type": "email_open", "ts": TS - 30, "campaign": "q3-nurture"},
    {"type": "form_fill", "ts": TS, "form_id": "demo-request", "detail": "plan=enterprise"},
)


def slack_text(payload: dict[str, Any]) -> str:
    """Every string Slack will render, joined."""
    out: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(payload)
    return "\n".join(out)


@pytest.fixture
def other_local_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with a local timezone far from UTC, so local-time rendering would show."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_reasons_sorted_by_points_and_capped_in_every_format() -> None:
    alert = make_alert(reasons=REASONS)
    assert [r.points for r in top_reasons(REASONS)] == [50, 25, 20, 15, 10]
    assert len(top_reasons(REASONS)) == MAX_REASONS

    text = render_text(alert)
    positions = [text.index(line) for line in TOP]
    assert positions == sorted(positions)
    for rule in DROPPED:
        assert rule not in text

    html = render_html(alert)
    assert [html.index(line) for line in TOP] == sorted(html.index(line) for line in TOP)
    for rule in DROPPED:
        assert rule not in html

    blocks = render_slack_blocks(alert)["blocks"]
    why = next(
        b for b in blocks if b["type"] == "section" and "*Why now*" in b.get("text", {}).get("text", "")
    )
    lines = why["text"]["text"].split("\n")[1:]
    assert lines == [f"• {line}" for line in TOP]


def test_fractional_and_negative_points() -> None:
    reasons = (
        Reason("decay_adjust", -5, "e1", "page_view", TS, "went quiet"),
        Reason("half", 12.5, "e2", "page_view", TS, ""),
    )
    text = render_text(make_alert(reasons=reasons))
    assert "  +12.5 half\n" in text
    assert "  -5 decay_adjust — went quiet" in text
    assert text.index("+12.5 half") < text.index("-5 decay_adjust")


@pytest.mark.parametrize("trigger", ["hand-raiser form demo-request", "score crossed 100"])
def test_trigger_appears_everywhere(trigger: str) -> None:
    alert = make_alert(trigger=trigger)
    assert trigger in render_text(alert)
    assert trigger in render_html(alert)
    payload = render_slack_blocks(alert)
    assert trigger in payload["text"]
    assert any(trigger in b.get("text", {}).get("text", "") for b in payload["blocks"])


def test_no_reasons_still_renders() -> None:
    alert = make_alert(reasons=())
    assert "no scoring reasons recorded" in render_text(alert)
    assert "no scoring reasons recorded" in render_html(alert)
    assert "no scoring reasons recorded" in json.dumps(render_slack_blocks(alert))


def test_html_escapes_user_supplied_values() -> None:
    alert = make_alert(
        name="<script>alert(1)</script>",
        company='Evil "Co" & <b>sons</b>',
        reasons=(Reason("form", 50, "e1", "form_fill", TS, "<img src=x onerror=alert(2)>"),),
        recent=({"type": "page_view", "ts": TS, "url": 'javascript:alert(3)"', "title": "<i>t</i>"},),
    )
    html = render_html(alert)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>" not in html and "<img" not in html and "<i>" not in html
    assert "&quot;Co&quot; &amp; &lt;b&gt;" in html
    # Only http(s) URLs become links.
    assert 'href="javascript' not in html


def test_html_links_http_urls_escaped() -> None:
    alert = make_alert(recent=({"type": "page_view", "ts": TS, "url": "https://x.test/?a=1&b=<2>"},))
    html = render_html(alert)
    assert '<a href="https://x.test/?a=1&amp;b=&lt;2&gt;">' in html


def test_slack_text_escapes_mentions_and_links() -> None:
    alert = make_alert(
        name="<@U123> <!channel>",
        company="A&B <https://evil.test|click>",
        trigger="form <!here>",
        reasons=(Reason("form", 50, "e1", "form_fill", TS, "ping <@U999|boss>"),),
        recent=({"type": "page_view", "ts": TS, "url": "https://x.test/<!everyone>"},),
        slack_user_id=None,
    )
    payload = render_slack_blocks(alert)
    rendered = slack_text(payload)
    for injected in (
        "<@U123>",
        "<!channel>",
        "<!here>",
        "<!everyone>",
        "<@U999|boss>",
        "<https://evil.test|click>",
    ):
        assert injected not in rendered
    assert "<" not in rendered and ">" not in rendered
    assert "&lt;@U123&gt; &lt;!channel&gt;" in payload["text"]
    assert "A&amp;B" in payload["text"]
    assert slack_escape("a&b<c>") == "a&amp;b&lt;c&gt;"


def test_slack_mentions_only_a_valid_rep_user_id() -> None:
    fields = render_slack_blocks(make_alert(slack_user_id="U0REP1"))["blocks"][2]["fields"]
    assert "<@U0REP1> (Rita Rep), team enterprise" in fields[3]["text"]
    fields = render_slack_blocks(make_alert(slack_user_id="U1> <!channel"))["blocks"][2]["fields"]
    assert "<" not in fields[3]["text"]


def test_slack_block_structure() -> None:
    payload = render_slack_blocks(make_alert(reasons=REASONS, recent=RECENT))
    assert set(payload) == {"text", "blocks"}
    blocks = payload["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Sales-ready lead: Jane Doe (Acme)"},
    }
    fields = next(b["fields"] for b in blocks if "fields" in b)
    assert [f["text"].split("\n")[0] for f in fields] == ["*Score*", "*Threshold*", "*Stage*", "*Routed to*"]
    assert [f["text"].split("\n")[1] for f in fields[:3]] == ["105", "100", "mql"]
    assert "team enterprise" in fields[3]["text"]
    contexts = [b for b in blocks if b["type"] == "context"]
    activity = contexts[0]["elements"][0]["text"]
    assert activity.startswith("*Recent activity (UTC)*\n")
    assert "https://www.example.test/pricing" in activity
    assert "campaign q3-nurture" in activity
    assert "form demo-request · plan=enterprise" in activity
    routing = contexts[-1]["elements"][0]["text"]
    assert "rule big-companies" in routing and "rules v7" in routing
    assert "employees&gt;=1000" in routing
    assert payload["text"] == "Sales-ready lead: Jane Doe (Acme) — score 105 — hand-raiser form demo-request"
    json.dumps(payload)  # serialisable as is


def test_slack_limits_respected() -> None:
    alert = make_alert(name="N" * 500, company="C" * 500, trigger="t" * 5000)
    blocks = render_slack_blocks(alert)["blocks"]
    assert len(blocks[0]["text"]["text"]) <= 150
    assert blocks[0]["text"]["text"].endswith("…")
    for b in blocks:
        if b["type"] == "section" and "text" in b:
            assert len(b["text"]["text"]) <= 3000
    assert len(render_slack_blocks(alert)["text"]) <= 3000


def test_no_recent_activity_omits_the_context() -> None:
    blocks = render_slack_blocks(make_alert(recent=()))["blocks"]
    assert not any("Recent activity" in json.dumps(b) for b in blocks)
    assert "Recent activity" not in render_text(make_alert(recent=()))


@pytest.mark.usefixtures("other_local_tz")
def test_times_are_utc_whatever_the_local_zone() -> None:
    alert = make_alert(recent=RECENT)
    text = render_text(alert)
    assert TS_TEXT in text
    assert "2026-11-22 18:40:00 UTC" in text  # TS - 74
    assert TS_TEXT in render_html(alert)
    assert TS_TEXT in json.dumps(render_slack_blocks(alert))
    # The local zone is really different: a naive local rendering would be the next day.
    assert datetime.fromtimestamp(TS).day == 23


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TS, TS_TEXT),
        (int(TS), TS_TEXT),
        (TS * 1000, TS_TEXT),  # epoch milliseconds
        (str(TS), TS_TEXT),
        ("2026-11-22T18:41:14Z", TS_TEXT),
        ("2026-11-22T20:41:14+02:00", TS_TEXT),
        (datetime(2026, 11, 22, 18, 41, 14, tzinfo=UTC), TS_TEXT),
        ("yesterday", "yesterday"),
        (None, ""),
    ],
)
def test_utc_time(value: object, expected: str) -> None:
    assert utc_time(value) == expected


def test_single_line_fields_cannot_forge_lines() -> None:
    alert = make_alert(name="Jane\nBcc: x@evil.test", trigger="form\r\nX-Evil: 1")
    text = render_text(alert)
    assert "\nBcc:" not in text and "\nX-Evil" not in text
    assert "\n" not in email_subject(alert)


def test_email_subject_and_message() -> None:
    alert = make_alert(reasons=REASONS, recent=RECENT)
    assert email_subject(alert) == "Sales-ready lead: Jane Doe (Acme) — score 105"
    assert email_subject(make_alert(company="")) == "Sales-ready lead: Jane Doe — score 105"
    msg = render_email(alert, "LeadRouter <leadrouter@example.test>")
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["To"] == "rita@example.test"
    assert msg["Message-ID"] == "<leadrouter.alert.asg-42@example.test>"
    parts = {p.get_content_type(): p.get_content() for p in msg.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert TOP[0] in parts["text/plain"]
    assert "<h3>Why now</h3>" in parts["text/html"]


def test_email_headers_cannot_be_forged() -> None:
    """Lead and rep data reach the headers on one line each; a raw CR/LF in a header value is refused."""
    hostile = make_alert(name="Jane\r\nBcc: x@evil.test", company="Acme\nX-Evil: 1", trigger="form\r\nX-Evil: 2")
    asg = hostile.assignment
    rep = replace(asg.rep, email="rita@example.test\r\nBcc: y@evil.test")
    alert = replace(hostile, assignment=replace(asg, rep=rep, assignment_id="asg-1\r\nX-Evil: 3",
                                                 lead_id="lead-1\nX-Evil: 4"))
    for _ in range(2):  # the second time from the parsed-header cache
        msg = render_email(alert, "LeadRouter <leadrouter@example.test>\r\nBcc: z@evil.test")
        head = msg.as_bytes().split(b"\n\n", 1)[0].decode()
        names = [line.split(":", 1)[0] for line in head.splitlines() if not line.startswith((" ", "\t"))]
        assert names == ["Subject", "From", "To", "Date", "Message-ID", "X-Leadrouter-Assignment",
                         "X-Leadrouter-Lead", "MIME-Version", "Content-Type"]
        assert all(not line.startswith(("Bcc", "X-Evil")) for line in head.splitlines())
    for name, value in (("Subject", "hi\r\nBcc: x@evil.test"), ("To", "rita@example.test\nBcc: x@evil.test"),
                        ("To", "rita@example.test\rBcc: x@evil.test"), ("Content-Type", "text/plain\r\nX: 1")):
        msg = new_email("ok", "leadrouter@example.test", "rita@example.test", "<m@example.test>")
        del msg[name]
        msg[name] = value.splitlines()[0]  # the same value on one line is parsed (and cached) first
        del msg[name]
        with pytest.raises(ValueError, match="linefeed or carriage return"):
            msg[name] = value
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        new_email("hi\r\nBcc: x@evil.test", "leadrouter@example.test", "rita@example.test", "<m@example.test>")


def test_message_id_is_stable_and_safe() -> None:
    assert message_id("asg-1", "a@example.test") == message_id("asg-1", "a@example.test")
    odd = message_id("asg 1<>@x", "nobody")
    assert odd.startswith("<leadrouter.alert.asg_1___x.") and odd.endswith("@leadrouter.local>")
    assert message_id("asg 1<>@x", "nobody") != message_id("asg_1___x", "nobody")


# ------------------------------------------------------------------ account, links, grade, routing path

ACCOUNT = {
    "name": "Acme",
    "domain": "acme.test",
    "intent": 72.4,
    "active_people": 4,
    "members": [
        {"name": "Bob Stone", "title": "CFO", "email": "bob@acme.test", "last_active": TS - 3600},
        {"name": "Jane Doe", "title": "Head of Ops", "email": "JANE@acme.test", "last_active": TS},  # the lead
        {"name": "", "title": "Engineer", "email": "eve@acme.test", "last_active": "2026-11-22T10:00:00Z"},
        "not-a-member",
        {"name": "<@U1> <!channel>", "title": "<b>VP</b>", "email": "", "last_active": 0},
    ],
}
LINKS = {
    "accept": "https://admin.example.test/v1/leads/lead-1/accept",
    "reject": "https://admin.example.test/v1/leads/lead-1/reject",
    "lead": "https://admin.example.test/v1/leads/lead-1",
}


def rich_alert(**changes: Any) -> Alert:
    base = make_alert(reasons=REASONS, recent=RECENT)
    lead = LeadView(
        "lead-1", "jane@acme.test", 104.6, Stage.MQL,
        {"name": "Jane Doe", "company": "Acme", "job_title": "Head of Ops", "grade": "A"}, REASONS,
    )
    values: dict[str, Any] = {"lead": lead, "account": ACCOUNT, "links": LINKS, **changes}
    return Alert(
        assignment=base.assignment, lead=values["lead"], threshold=base.threshold, trigger=base.trigger,
        recent=base.recent, account=values["account"], links=values["links"],
    )


def test_slack_blocks_show_who_grade_account_routing_and_buttons() -> None:
    payload = render_slack_blocks(rich_alert())
    blocks = payload["blocks"]
    assert blocks[1]["text"]["text"].startswith(
        "*Who:* Jane Doe, Head of Ops at Acme · jane@acme.test\n*Trigger:* hand-raiser form demo-request"
    )
    fields = blocks[2]["fields"]
    assert [f["text"].split("\n")[0] for f in fields] == [
        "*Score*", "*Grade*", "*Threshold*", "*Stage*", "*Routed to*"
    ]
    assert fields[1]["text"] == "*Grade*\nA"
    account = next(b["text"]["text"] for b in blocks if "Also active at" in b.get("text", {}).get("text", ""))
    lines = account.split("\n")
    assert lines[0] == "*Also active at Acme* · acme.test · intent 72 · 4 people active"
    assert lines[1] == "• *Bob Stone* — CFO · last active 2026-11-22 17:41:14 UTC"
    assert lines[2] == "• *eve@acme.test* — Engineer · last active 2026-11-22 10:00:00 UTC"
    assert lines[3] == "• *&lt;@U1&gt; &lt;!channel&gt;* — &lt;b&gt;VP&lt;/b&gt;"  # escaped; never active
    assert len(lines) == 4  # the lead herself and the junk entry are left out
    routing = [b for b in blocks if b["type"] == "context"][-1]["elements"][0]["text"]
    assert routing.startswith("Routing: team enterprise · rule big-companies (rules v7); path root → ")
    actions = blocks[-1]
    assert actions["type"] == "actions"
    buttons = actions["elements"]
    assert [(b["text"]["text"], b["url"], b.get("style")) for b in buttons] == [
        ("Accept", LINKS["accept"], "primary"),
        ("Reject", LINKS["reject"], "danger"),
        ("Open lead", LINKS["lead"], None),
    ]
    assert len({b["action_id"] for b in buttons}) == 3
    assert all(b["value"] == "asg-42" for b in buttons)
    assert len(blocks) <= 50
    json.dumps(payload)


def test_without_grade_account_or_links_those_parts_are_omitted() -> None:
    payload = render_slack_blocks(make_alert())
    text = json.dumps(payload)
    assert "Grade" not in text and "Also active" not in text and '"actions"' not in text
    assert "Grade" not in render_text(make_alert()) and "Act on it" not in render_text(make_alert())


def test_unsafe_links_never_become_buttons() -> None:
    links = {"accept": "javascript:alert(1)", "reject": "https://x.test/a b", "lead": "https://ok.test/l?a=1&b=2"}
    blocks = render_slack_blocks(rich_alert(links=links))["blocks"]
    assert [b["url"] for b in blocks[-1]["elements"]] == ["https://ok.test/l?a=1&b=2"]
    html = render_html(rich_alert(links=links))
    assert "javascript:" not in html and 'href="https://ok.test/l?a=1&amp;b=2"' in html
    blocks = render_slack_blocks(rich_alert(links={"accept": "ftp://x.test/"}))["blocks"]
    assert blocks[-1]["type"] != "actions"


def test_account_without_members_still_names_it() -> None:
    alert = rich_alert(account={"name": "Acme", "domain": "acme.test", "intent": 12, "active_people": 1})
    text = render_text(alert)
    assert "Account: Acme (acme.test · intent 12 · 1 person active):" in text
    assert render_slack_blocks(rich_alert(account={}))["blocks"][4]["type"] == "context"


def test_many_members_are_capped_with_a_count() -> None:
    members = [{"name": f"P{i}", "title": "", "email": f"p{i}@acme.test", "last_active": TS} for i in range(9)]
    alert = rich_alert(account={"name": "Acme", "members": members})
    text = render_text(alert)
    assert "P4 · last active" in text and "P5" not in text and "…and 4 more" in text


def test_email_has_the_same_content_as_slack() -> None:
    alert = rich_alert()
    msg = render_email(alert, "leadrouter@example.test")
    parts = {p.get_content_type(): p.get_content() for p in msg.iter_parts()}
    plain, html = parts["text/plain"], parts["text/html"]
    for text in (plain, html):
        assert "Head of Ops at Acme" in text
        assert "Bob Stone — CFO · last active 2026-11-22 17:41:14 UTC" in text
        assert "eve@acme.test — Engineer" in text
        assert "team enterprise · rule big-companies (rules v7)" in text
        assert "2026-11-22 18:41:14 UTC" in text  # activity timeline
        assert "+50 demo_request — filled form demo-request" in text
    assert "Grade:      A" in plain and "<td>A</td>" in html
    assert "Also active at Acme (acme.test · intent 72 · 4 people active):" in plain
    assert f"Accept: {LINKS['accept']}" in plain and f"Open lead: {LINKS['lead']}" in plain
    assert f'<a href="{LINKS["accept"]}"' in html and ">Reject</a>" in html
    assert "&lt;b&gt;VP&lt;/b&gt;" in html and "<b>VP" not in html


# ------------------------------------------------------------------ digests


def test_digest_renders_every_lead_best_first_with_links() -> None:
    low = make_alert(name="Low Lead", company="Lowco", trigger="score 61 crossed the sales-ready threshold 50")
    low = replace(low, lead=replace(low.lead, score=61.0))
    high = rich_alert()
    rep = high.assignment.rep
    digest = Digest("digest:r1:3", rep, (low, high), TS - 3600, TS)
    assert digest_subject(digest) == "Lead digest for Rita Rep: 2 sales-ready leads"
    assert digest.team == "enterprise"
    text = render_digest_text(digest)
    assert text.index("Jane Doe (Acme)") < text.index("Low Lead (Lowco)")
    assert "score 105 · grade A — hand-raiser form demo-request — routed 2026-11-22 18:41:14 UTC" in text
    assert f"Accept: {LINKS['accept']}" in text
    assert "Alerts queued from 2026-11-22 17:41:14 UTC to 2026-11-22 18:41:14 UTC" in text
    payload = render_digest_blocks(digest)
    sections = [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section"]
    assert len(sections) == 2 and sections[0].startswith("*Jane Doe (Acme)*")
    assert f"<{LINKS['accept']}|Accept>" in sections[0]
    assert "Also active at Acme: Bob Stone; eve@acme.test" in sections[0]
    assert render_digest_text(digest, limit=1).endswith("…and 1 more\n")
    msg = render_digest_email(digest, "leadrouter@example.test")
    assert msg["Message-ID"].startswith("<leadrouter.alert.digest_r1_3.")
    assert msg["Subject"] == digest_subject(digest)
    assert Digest.from_dict(json.loads(json.dumps(digest.to_dict()))) == digest


def test_the_team_channel_copy_carries_no_action_link() -> None:
    """Issue 16.1: accept/reject links act for the assigned rep only, so the channel copy has none."""
    alert = rich_alert()
    assert alert.links
    dm = json.dumps(render_slack_blocks(alert))
    assert LINKS["accept"] in dm and LINKS["reject"] in dm and '"type": "actions"' in dm
    channel = render_slack_blocks(alert, team_channel=True)
    text = json.dumps(channel)
    assert not any(url in text for url in LINKS.values()) and '"type": "actions"' not in text
    assert "accepts or rejects it from their direct message or email" in text
    digest = Digest("digest:r1:4", alert.assignment.rep, (alert,), TS - 3600, TS)
    assert LINKS["accept"] in json.dumps(render_digest_blocks(digest))
    assert not any(url in json.dumps(render_digest_blocks(digest, team_channel=True)) for url in LINKS.values())
