"""What a re-engagement alert says: the history read off the lead hash, and what brought the lead back."""

from __future__ import annotations

from datetime import UTC, datetime

from models import Alert, Assignment, LeadView, Reengagement, Rep, RoutingDecision, Stage
from router.alerts.render import render_html, render_text
from router.alerts.render_slack import render_slack_blocks, render_slack_fallback
from router.alerts.views import email_subject, reengagement_line
from router.worker.reengage import comeback, reengagement_of

NOW = datetime(2026, 10, 1, 12, 0, tzinfo=UTC).timestamp()
LOST = datetime(2026, 7, 3, 16, 0, tzinfo=UTC).timestamp()
DAY = 86400.0


def page(path: str, days_ago: float) -> dict[str, object]:
    return {"type": "page_view", "ts": NOW - days_ago * DAY, "url": f"https://www.example.com{path}?utm=x"}


def test_comeback_counts_this_weeks_activity_after_the_outcome_most_telling_first() -> None:
    recent = [
        {"type": "form_fill", "ts": NOW - 60, "form_id": "demo-request"},
        page("/pricing", 0.1), page("/pricing", 1), page("/docs", 2), page("/pricing", 3),
        {"type": "email_click", "ts": NOW - 4 * DAY}, {"type": "email_open", "ts": NOW - 4 * DAY},
        page("/pricing", 8),  # more than a week ago
        {"type": "form_fill", "ts": NOW - 9 * DAY, "form_id": "old-form"},
    ]
    assert comeback(recent, NOW) == ("filled form demo-request", "back on /pricing 3 times this week",
                                     "back on /docs once this week")
    assert comeback(recent[1:], NOW, since=NOW - 2.5 * DAY) == ("back on /pricing twice this week",
                                                                "back on /docs once this week")
    assert comeback([{"type": "email_open", "ts": NOW}] * 2, NOW) == ("opened email twice",)
    assert comeback([], NOW) == ()
    assert comeback([{"type": "page_view", "ts": "junk", "url": 5}], NOW) == ()


def test_reengagement_of_reads_the_crossing_that_matches() -> None:
    lead = {"re_crossing": "3", "re_from": "lost", "re_owner": "rosa", "re_owner_name": "Rosa Dieter",
            "last_outcome": "lost", "last_outcome_ts": str(LOST), "last_outcome_reason": "budget",
            "last_outcome_rep": "rosa", "re_prev_crossing_ts": str(LOST - 30 * DAY)}
    assert reengagement_of(lead, 2) is None and reengagement_of({}, 1) is None
    re = reengagement_of(lead, 3)
    assert re is not None
    assert (re.from_stage, re.owner, re.owner_name, re.current_owner, re.last_outcome_reason) == (
        "lost", "rosa", "Rosa Dieter", True, "budget")
    rejected = reengagement_of({**lead, "re_owner": "", "re_from": "nurture", "last_outcome": "rejected",
                                "last_outcome_rep_name": "Rosa Dieter"}, 3)
    assert rejected is not None and rejected.owner == "rosa" and not rejected.current_owner


def alert(re: Reengagement | None) -> Alert:
    rep = Rep("rosa", "Rosa Dieter", "rosa@example.test", "east", "U0ROSA")
    decision = RoutingDecision("east", "reengaged-owner", "v1", ("reengaged-owner:yes",))
    return Alert(assignment=Assignment("L1:2", "L1", 2, rep, decision, NOW),
                 lead=LeadView("L1", "hiro@bluefin.test", 64.0, Stage.MQL, {"name": "Hiro <b>Dubois</b>",
                                                                             "company": "Bluefin"}),
                 threshold=100, trigger="hand-raiser: filled form demo-request", reengagement=re)


LOST_BACK = Reengagement(from_stage="lost", crossing=2, last_outcome="lost", last_outcome_ts=LOST,
                         last_outcome_reason="budget\n<script>", owner="rosa", owner_name="Rosa Dieter",
                         current_owner=True, back=("back on /pricing 3 times this week",), route="owner")


def test_the_alert_says_it_is_a_re_engagement_and_shows_the_history_in_every_format() -> None:
    a = alert(LOST_BACK)
    line = reengagement_line(a)
    assert line == ("closed-lost on 2026-07-03 (budget <script>), owner Rosa Dieter; "
                    "back on /pricing 3 times this week — back to Rosa Dieter")
    assert email_subject(a).startswith("Re-engaged lead: Hiro <b>Dubois</b> (Bluefin)")
    assert f"Re-engaged: {line}\n" in render_text(a)
    html = render_html(a)
    assert "<h2>Re-engaged lead: Hiro &lt;b&gt;Dubois&lt;/b&gt; (Bluefin)</h2>" in html
    assert "closed-lost on 2026-07-03 (budget &lt;script&gt;)" in html and "<script>" not in html
    blocks = render_slack_blocks(a)
    assert blocks["blocks"][0]["text"]["text"].startswith("Re-engaged lead:")
    assert "*Re-engaged:* closed-lost on 2026-07-03 (budget &lt;script&gt;)" in blocks["blocks"][1]["text"]["text"]
    assert "closed-lost on 2026-07-03" in render_slack_fallback(a)
    assert Alert.from_dict(a.to_dict()) == a


def test_a_first_crossing_reads_as_before() -> None:
    a = alert(None)
    assert reengagement_line(a) == "" and "Re-engaged" not in render_text(a) + render_html(a)
    assert email_subject(a).startswith("Sales-ready lead: ")
    assert "reengagement" not in a.to_dict() and Alert.from_dict(a.to_dict()) == a


def test_each_history_reads_as_a_rep_would_say_it() -> None:
    def line(**kw: object) -> str:
        return reengagement_line(alert(Reengagement(**{"from_stage": "lost", "crossing": 2, **kw})))  # type: ignore[arg-type]

    assert line(from_stage="won", last_outcome="won", last_outcome_ts=LOST, owner_name="Rosa Dieter",
                current_owner=True, route="owner_notified") == (
        "closed-won (a customer: expansion signal) on 2026-07-03, owner Rosa Dieter — "
        "still with Rosa Dieter: told, not routed again")
    assert line(from_stage="nurture", last_outcome="rejected", last_outcome_ts=LOST, last_outcome_reason="spam",
                owner="bo") == "rejected on 2026-07-03 (spam) by bo"
    assert line(from_stage="sal", last_outcome="lost", last_outcome_ts=LOST - DAY, owner_name="Rosa Dieter",
                current_owner=True, last_crossing_ts=LOST, route="owner_away") == (
        "sal with Rosa Dieter, last alerted 2026-07-03 — Rosa Dieter is out of office: routed by the rules")
