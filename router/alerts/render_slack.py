"""Slack Block Kit rendering of alerts and digests (webhook or chat.postMessage payloads).

Every value from a lead goes through :func:`~router.alerts.render.slack_escape`,
and every text is cut to Block Kit's limits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from models.lead import Alert
from router.alerts.render import (
    AccountView,
    Digest,
    account_view,
    action_links,
    activity_line,
    alert_kind,
    alert_title,
    email_subject,
    escalation_line,
    field_change_lines,
    lead_grade,
    model_heading,
    model_lines,
    one_line,
    reason_line,
    recent_activity,
    reengagement_line,
    routing_line,
    score_text,
    slack_escape,
    top_reasons,
    truncate,
    who_line,
)
from router.alerts.render_digest import digest_detail, digest_items, digest_period, digest_subject

# Block Kit limits (characters).
_HEADER_MAX = 150
_FIELD_MAX = 2000
_SECTION_MAX = 3000
_CONTEXT_MAX = 3000
_FALLBACK_MAX = 3000
_BUTTON_TEXT_MAX = 75
_BUTTON_VALUE_MAX = 2000
_BLOCKS_MAX = 50

_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


def render_slack_fallback(alert: Alert) -> str:
    """The notification text Slack shows where blocks cannot be (escaped mrkdwn)."""
    text = f"{email_subject(alert)} — {one_line(alert.trigger)}"
    if alert.reengagement is not None:
        text += f" — {reengagement_line(alert)}"
    return truncate(slack_escape(text), _FALLBACK_MAX)


def _slack_buttons(links: Sequence[tuple[str, str, str]], value: str) -> dict[str, Any]:
    """An actions block of link buttons (Slack opens the URL; no interactivity needed)."""
    elements: list[dict[str, Any]] = []
    for key, label, url in links:
        button: dict[str, Any] = {
            "type": "button",
            "action_id": f"leadrouter_{key}",
            "text": {"type": "plain_text", "text": truncate(label, _BUTTON_TEXT_MAX)},
            "url": url,
            "value": truncate(value, _BUTTON_VALUE_MAX),
        }
        if key == "accept":
            button["style"] = "primary"
        elif key == "reject":
            button["style"] = "danger"
        elements.append(button)
    return {"type": "actions", "block_id": "leadrouter_actions", "elements": elements}


def _slack_account(acct: AccountView) -> dict[str, Any]:
    e = slack_escape
    facts = acct.facts()
    head = f"*{e(acct.heading())}*" + (f" · {e(facts)}" if facts else "")
    lines = [head]
    for m in acct.members:
        line = f"• *{e(m.name)}*"
        if m.title:
            line += f" — {e(m.title)}"
        if m.last_active:
            line += f" · last active {e(m.last_active)}"
        lines.append(line)
    if acct.hidden:
        lines.append(f"…and {acct.hidden} more")
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate("\n".join(lines), _SECTION_MAX)}}


def render_slack_blocks(alert: Alert, *, team_channel: bool = False) -> dict[str, Any]:
    """``{"text": fallback, "blocks": [...]}`` ready for a webhook or chat.postMessage.

    Blocks: header; who + trigger; score (grade), threshold, stage, routed-to
    fields; why now; recent activity (UTC); the account and who else there is
    active; the routing path; accept / reject / open-lead buttons when the
    alert has links.

    ``team_channel``: the copy for the team's channel, which everyone in it reads.
    It carries no link at all: the alert links are one-time capabilities for the
    assigned rep alone (their DM and email), so the channel only says who holds it.
    """
    lead, asg = alert.lead, alert.assignment
    rep = asg.rep
    e = slack_escape
    rep_text = e(one_line(rep.name))
    if rep.slack_user_id and _SLACK_USER_ID.match(rep.slack_user_id):
        rep_text = f"<@{rep.slack_user_id}> ({rep_text})"
    fields = [("Score", score_text(lead.score))]
    grade = lead_grade(alert)
    if grade:
        fields.append(("Grade", e(grade)))
    fields += [
        ("Threshold", score_text(alert.threshold)),
        ("Stage", e(one_line(lead.stage))),
        ("Routed to", f"{rep_text}, team {e(one_line(asg.decision.team))}") if alert.kind != "escalation"
        else ("Escalation", e(escalation_line(alert))),
    ]
    intro = f"*Who:* {e(who_line(alert))}\n*Trigger:* {e(one_line(alert.trigger))}"
    if alert.reengagement is not None:
        intro += f"\n*Re-engaged:* {e(reengagement_line(alert))}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate(e(f"{alert_kind(alert)}: {alert_title(alert)}"), _HEADER_MAX),
            },
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate(intro, _SECTION_MAX)}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": truncate(f"*{k}*\n{v}", _FIELD_MAX)} for k, v in fields],
        },
    ]
    reasons = top_reasons(lead.reasons)
    why = "\n".join(f"• {e(reason_line(r))}" for r in reasons) or "_no scoring reasons recorded_"
    blocks.append(
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate(f"*Why now*\n{why}", _SECTION_MAX)}}
    )
    heading = model_heading(alert)
    if heading:
        text = "\n".join(f"• {e(c)}" for c in model_lines(alert)) or "_no feature moved it_"
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": truncate(f"*Model: {e(heading)}*\n{text}", _SECTION_MAX)}})
    changes = field_change_lines(alert)
    if changes:
        text = "\n".join(f"• {e(c)}" for c in changes)
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": truncate(f"*Field changes*\n{text}", _SECTION_MAX)}})
    activity = recent_activity(alert)
    if activity:
        lines = "\n".join(e(activity_line(a)) for a in activity)
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": truncate(f"*Recent activity (UTC)*\n{lines}", _CONTEXT_MAX)}
                ],
            }
        )
    acct = account_view(alert)
    if acct is not None:
        blocks.append(_slack_account(acct))
    routing = f"Routing: {e(routing_line(alert))} · assignment {e(one_line(asg.assignment_id))}"
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(routing, _CONTEXT_MAX)}]}
    )
    links = action_links(alert.links)
    if links and team_channel:
        note = f"{rep_text} accepts or rejects it from their direct message or email."
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(note, _CONTEXT_MAX)}]})
    elif links:
        blocks.append(_slack_buttons(links, asg.assignment_id))
    return {"text": render_slack_fallback(alert), "blocks": blocks}


def render_digest_blocks(digest: Digest, limit: int = 25, *, team_channel: bool = False) -> dict[str, Any]:
    """One Slack message for the whole digest: a section per lead with its links (none in the team channel)."""
    e = slack_escape
    shown, hidden = digest_items(digest, min(limit, _BLOCKS_MAX - 4))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(e(digest_subject(digest)), _HEADER_MAX)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": e(f"Alerts queued from {digest_period(digest)}")}]},
    ]
    for alert in shown:
        text = f"*{e(alert_title(alert))}* — {e(digest_detail(alert))}"
        acct = account_view(alert, limit=3)
        if acct is not None and acct.members:
            text += f"\n{e(acct.heading())}: {e('; '.join(m.name for m in acct.members))}"
        links = [] if team_channel else action_links(alert.links)
        if links:
            text += "\n" + " · ".join(f"<{e(url)}|{e(label)}>" for _, label, url in links)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, _SECTION_MAX)}})
    if hidden:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"…and {hidden} more"}]})
    fallback = truncate(e(digest_subject(digest)), _FALLBACK_MAX)
    return {"text": fallback, "blocks": blocks}
