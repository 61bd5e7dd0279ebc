"""Alert links (issue 16.1): a link acts once, for its rep, while the assignment it names stands.

Real admin app on a real redis-server; the pipeline test routes through the real
Pipeline and delivers through the real notifiers to the local Slack and SMTP receivers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from models import Alert, Event, EventPlan, EventType
from router.alerts.sender import build_sender
from router.dev.receivers import SlackReceiver, SmtpReceiver
from router.settings import Settings
from router.storage import keys
from router.storage.live_config import LiveFile, load_rules_file, load_scoring_file
from router.storage.store import RedisStore
from router.tokens import mint_action_token
from router.worker.pipeline import Pipeline
from tests.integration.test_admin_api import NOW, RULES, Api, make_api, route_lead
from tests.support import open_alert

pytestmark = pytest.mark.integration

SECRET = "links-secret-0123456789abcdef"
SECURITY = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url, token_secret=SECRET))
    yield a
    await client.close()


def link(lead_id: str, rep_id: str, *, secret: str = SECRET, ttl_s: int = 3600, crossing: int = 1,
         assignment_id: str | None = None, now: float | None = None) -> str:
    return "/a/" + mint_action_token(secret, lead_id=lead_id, rep_id=rep_id, crossing=crossing,
                                     assignment_id=assignment_id or f"{lead_id}:{crossing}", ttl_s=ttl_s,
                                     now=NOW.timestamp() if now is None else now)


async def raw(api: Api, method: str, path: str, **kwargs: Any) -> tuple[int, str, dict[str, str]]:
    """One request with no Authorization header, as anyone holding the link would send it."""
    async with api.client.request(method, path, **kwargs) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def lead_state(api: Api, lead_id: str) -> tuple[str, str, str, str]:
    data = await api.store.lead_hash(lead_id)
    return data.get("stage", ""), data.get("owner", ""), data.get("score", ""), data.get("rejections", "0")


def assert_secure(headers: dict[str, str]) -> None:
    for name, value in SECURITY.items():
        assert headers.get(name) == value, (name, headers.get(name))
    csp = headers["Content-Security-Policy"]
    for part in ("default-src 'none'", "form-action 'self'", "frame-ancestors 'none'"):
        assert part in csp, csp


async def test_get_shows_the_lead_without_email_never_writes_and_sends_security_headers(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "jane@acme.com")
    page = link(lead_id, rep_id)
    before = await lead_state(api, lead_id)
    keys_before = sorted([k async for k in api.redis.scan_iter(match="*")])
    for query in ("", "?do=accept", "?do=reject"):  # a mail scanner fetches every link in the message
        status, html, headers = await raw(api, "GET", page + query)
        assert status == 200 and "Jane" in html and "Acme Corp" in html
        assert "jane@acme.com" not in html  # the email is for the rep, after accepting
        assert 'name="action" value="accept"' in html and 'name="action" value="reject"' in html
        assert_secure(headers)
        assert re.search(r"style-src 'sha256-[A-Za-z0-9+/=]+'", headers["Content-Security-Policy"])
    assert await lead_state(api, lead_id) == before
    assert sorted([k async for k in api.redis.scan_iter(match="*")]) == keys_before  # not even a used-marker
    # The JSON API answers carry the same headers.
    _, _, headers = await raw(api, "GET", "/healthz")
    assert_secure(headers)


async def test_accept_acts_once_and_a_replay_changes_nothing(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "jane@acme.com")
    page = link(lead_id, rep_id)
    status, html, headers = await raw(api, "POST", page, data={"action": "accept"})
    assert status == 200 and "Lead accepted" in html and "Stage now sal." in html and "jane@acme.com" in html
    assert_secure(headers)
    assert (await lead_state(api, lead_id))[:2] == ("sal", rep_id)
    after = await lead_state(api, lead_id)
    # Replays: the same action, the other action, and the page itself.
    for form in ({"action": "accept"}, {"action": "reject", "reason": api.config.lifecycle.reject_reasons[0]}):
        status, html, _ = await raw(api, "POST", page, data=form)
        assert status == 410 and "already used" in html and "to accept" in html, html
    status, html, _ = await raw(api, "GET", page)
    assert status == 410 and "already used" in html and "jane@acme.com" not in html
    assert await lead_state(api, lead_id) == after


async def test_the_issue_replay_reject_with_spam_acts_once_only(api: Api) -> None:
    """The issue's probe: ``curl -X POST -d 'action=reject&reason=spam' ADMIN/a/<token>`` without Authorization."""
    lead_id, rep_id = await route_lead(api, "sam@beta.io")
    page = link(lead_id, rep_id)
    reason = api.config.lifecycle.reject_reasons[0]
    status, _, _ = await raw(api, "POST", page, data={"action": "reject", "reason": "not a reason"})
    assert status == 422  # refused before the link is used: the rep can still choose a real reason
    status, html, _ = await raw(api, "POST", page, data={"action": "reject", "reason": reason})
    assert status == 200 and "Lead rejected" in html and "Stage now nurture." in html and "sam@beta.io" not in html
    after = await lead_state(api, lead_id)
    assert after[0] == "nurture" and after[3] == "1"
    for _ in range(3):
        status, html, _ = await raw(api, "POST", page, data={"action": "reject", "reason": reason})
        assert status == 410 and "already used" in html
    assert await lead_state(api, lead_id) == after  # the score was cut once, one rejection


async def test_two_concurrent_posts_of_one_link_act_once(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "kim@gamma.io")
    page = link(lead_id, rep_id)
    reason = api.config.lifecycle.reject_reasons[0]
    forms = [{"action": "accept"}, {"action": "reject", "reason": reason}] * 4
    answers = await asyncio.gather(*(raw(api, "POST", page, data=f) for f in forms))
    statuses = sorted(s for s, _, _ in answers)
    assert statuses.count(200) == 1 and all(s in (200, 409, 410) for s in statuses), statuses
    history = await api.store.lead_history(lead_id)
    assert len([h for h in history if h["action"] in ("accept", "reject")]) == 1


async def test_forged_expired_old_format_and_unknown_links_do_nothing(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "kim@gamma.io")
    before = await lead_state(api, lead_id)
    forged = link(lead_id, rep_id, secret="another-secret-0123456789")
    status, html, headers = await raw(api, "POST", forged, data={"action": "accept"})
    assert status == 400 and "not valid" in html
    assert_secure(headers)
    tampered = link(lead_id, rep_id)[:-3] + "AAA"
    assert (await raw(api, "GET", tampered))[0] == 400
    api.clock.now = NOW.timestamp() + 7200
    expired = link(lead_id, rep_id, ttl_s=3600)
    for method in ("GET", "POST"):
        status, html, _ = await raw(api, method, expired, data={"action": "accept"})
        assert status == 410 and "expired" in html
    api.clock.now = NOW.timestamp()
    # A version-1 link (what alerts carried before: no one-time id, 14 days) no longer acts.
    body = base64.urlsafe_b64encode(orjson.dumps({"v": 1, "k": "act", "l": lead_id, "r": rep_id,
                                                  "a": f"{lead_id}:1", "x": int(NOW.timestamp()) + 86400}))
    body_s = body.rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(hmac.new(SECRET.encode(), body_s.encode(), hashlib.sha256).digest())
    old = f"/a/{body_s}.{sig.rstrip(b'=').decode()}"
    status, html, _ = await raw(api, "POST", old, data={"action": "reject", "reason": "spam"})
    assert status == 410 and "older alert" in html
    unknown = link("L" + "0" * 24, rep_id, assignment_id="L" + "0" * 24 + ":1")
    assert (await raw(api, "GET", unknown))[0] == 404
    assert await lead_state(api, lead_id) == before


async def test_only_the_assigned_rep_and_the_current_assignment(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "kim@gamma.io")
    before = await lead_state(api, lead_id)
    other = next(r.rep_id for r in api.config.reps if r.rep_id != rep_id)
    for page in (link(lead_id, other),                                  # another rep
                 link(lead_id, rep_id, assignment_id=f"{lead_id}:7"),  # an assignment the lead never had
                 link(lead_id, rep_id, assignment_id="L" + "1" * 24 + ":1")):  # another lead's assignment
        status, html, _ = await raw(api, "POST", page, data={"action": "accept"})
        assert status == 409 and "reassigned" in html, html
    assert await lead_state(api, lead_id) == before


async def test_a_reassigned_lead_expires_the_old_link_and_the_new_one_works(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "kim@gamma.io")
    old = link(lead_id, rep_id)
    other = next(r for r in api.config.reps if r.rep_id != rep_id and r.team == "central")
    # The SLA's compare-and-set reassignment (router/storage/lua/lead_sla.lua), as sla.py runs it.
    new_aid = f"{lead_id}:1:r1"
    res = await api.store.lead_sla("reassign", lead_id, f"{lead_id}:1", 1, NOW.timestamp() + 900,
                                   rep_id=other.rep_id, rep_name=other.name, new_assignment_id=new_aid,
                                   team="central")
    assert res.get("ok", True) and (await api.store.lead_hash(lead_id))["owner"] == other.rep_id
    for method in ("GET", "POST"):
        status, html, _ = await raw(api, method, old, data={"action": "reject", "reason": "spam"})
        assert status == 409 and "reassigned" in html
    assert (await api.store.lead_hash(lead_id))["owner"] == other.rep_id
    fresh = link(lead_id, other.rep_id, assignment_id=new_aid)
    status, html, _ = await raw(api, "POST", fresh, data={"action": "accept"})
    assert status == 200 and "Stage now sal." in html
    # Accepted: every other link of that assignment (a reminder's, say) says it was handled.
    reminder = link(lead_id, other.rep_id, assignment_id=new_aid)
    status, html, _ = await raw(api, "GET", reminder)
    assert status == 409 and "already handled" in html


async def test_cross_site_posts_are_refused(api: Api) -> None:
    lead_id, rep_id = await route_lead(api, "kim@gamma.io")
    page = link(lead_id, rep_id)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        status, html, _ = await raw(api, "POST", page, data={"action": "accept"}, headers=headers)
        assert status == 403 and "another site" in html, headers
    assert (await lead_state(api, lead_id))[0] == "mql"
    # The link's own page posting back: same origin.
    origin = str(api.client.make_url("/")).rstrip("/")
    status, _, _ = await raw(api, "POST", page, data={"action": "accept"},
                             headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})
    assert status == 200 and (await lead_state(api, lead_id))[0] == "sal"


# ---------------------------------------------------------------- the real pipeline and notifiers


def _email_text(msg: EmailMessage) -> str:
    parts = [p.get_payload(decode=True) for p in msg.walk() if p.get_content_maintype() == "text"]
    return "".join(p.decode() if isinstance(p, bytes) else "" for p in parts)


async def test_pipeline_links_reach_only_the_rep_and_act_on_the_current_assignment(
        api: Api, redis: Redis) -> None:
    admin_url = str(api.client.make_url("/")).rstrip("/")
    store = RedisStore(redis)
    routing = LiveFile.open(RULES, load_rules_file, "routing")
    scoring = LiveFile.open(api.settings.files.scoring_file, load_scoring_file, "scoring")
    published: list[dict[str, Any]] = []

    async def publish(key: str, value: bytes) -> None:
        published.append(await open_alert(redis, value))

    pipeline = Pipeline(store, scoring, routing, publish, clock=lambda: NOW.timestamp(), admin_url=admin_url,
                        link_secret=SECRET, link_ttl_s=72 * 3600)
    email = "ines@acme.com"
    lead_id = keys.lead_id_for_email(email)
    ev = Event(event_id="p1", type=EventType.FORM_FILL, ts=NOW.timestamp(), source="form", email=email,
               form_id="demo-request", fields={"company": "Acme Corp", "country": "US", "first_name": "Ines"})
    plan = EventPlan(event=ev, lead_id=lead_id, reasons=(), points=60.0, hand_raiser=True, fields=dict(ev.fields))
    [result] = await store.apply([plan], threshold=scoring.current.threshold,
                                 half_life_s=scoring.current.half_life_s, now=NOW.timestamp())
    assignment = await pipeline.route(plan, result, scoring.current)
    assert assignment is not None
    rep = assignment.rep
    alert = Alert.from_dict(published[-1])
    assert set(alert.links) == {"lead", "accept", "reject"}
    # An SLA reminder for the same assignment carries its own link, bound to the same assignment.
    await pipeline.sla_alert("remind", lead_id, assignment.assignment_id, rep)
    reminder = Alert.from_dict(published[-1])
    assert reminder.links["lead"] != alert.links["lead"]

    async with SlackReceiver() as slack, SmtpReceiver() as smtp, aiohttp.ClientSession() as session:
        settings = Settings.of(slack_webhook_url=slack.webhook_url("sales"), slack_api_url=slack.api_url,
                               slack_bot_token="xoxb-links", smtp_host=smtp.host, smtp_port=smtp.port,
                               slack_rate_per_s=0)

        async def dead_letter(key: str, value: bytes) -> None:
            raise AssertionError(f"dead-lettered {key}: {value!r}")

        sender = build_sender(settings.alerts, store, session, dead_letter)
        outcome = await sender.send_alert(alert)
        assert outcome.ok, outcome
        mail = await smtp.wait_for(timeout=5)
    webhook = [m for m in slack.messages if m.endpoint == "webhook"]
    dm = [m for m in slack.messages if m.endpoint != "webhook"]
    assert len(webhook) == 1 and len(dm) == 1
    channel_json = orjson.dumps(webhook[0].payload).decode()
    assert "/a/" not in channel_json and '"type":"actions"' not in channel_json  # no action in the team channel
    assert "accepts or rejects it from their direct message or email" in channel_json
    buttons = [b for blk in dm[0].blocks if blk.get("type") == "actions" for b in blk["elements"]]
    assert {b["action_id"] for b in buttons} == {"leadrouter_accept", "leadrouter_reject", "leadrouter_lead"}
    assert alert.links["accept"] in _email_text(mail)

    accept = urlsplit(next(b["url"] for b in buttons if b["action_id"] == "leadrouter_accept")).path
    status, html, _ = await raw(api, "GET", accept)
    assert status == 200 and "Ines" in html and email not in html
    status, html, _ = await raw(api, "POST", accept, data={"action": "accept"})
    assert status == 200 and "Stage now sal." in html
    assert (await store.lead_hash(lead_id))["accepted_by"] == rep.rep_id
    assert (await raw(api, "POST", accept, data={"action": "accept"}))[0] == 410
    status, html, _ = await raw(api, "POST", urlsplit(reminder.links["lead"]).path,
                                data={"action": "reject", "reason": "spam"})
    assert status == 409 and "already handled" in html
    assert (await store.lead_hash(lead_id))["stage"] == "sal"
