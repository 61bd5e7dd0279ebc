"""Alert delivery against the real local receivers (aiohttp Slack stand-in, aiosmtpd).

No mocks: the notifiers speak HTTP and SMTP to servers on 127.0.0.1, and the
Slack receiver is checked against requests captured from the real slack_sdk.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from models.lead import Alert, Assignment, LeadView, Reason, Rep, RoutingDecision, Stage
from router.alerts import (
    DeliveryResult,
    Notifier,
    SlackBotNotifier,
    SlackWebhookNotifier,
    SmtpNotifier,
    deliver,
)
from router.receivers import SlackReceiver, SlackRequest, SmtpReceiver

pytestmark = pytest.mark.integration

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
CAPTURES = DATASETS / "sdk_wire_captures.jsonl"

TS = 1795372874.0  # 2026-11-22 18:41:14 UTC
SUBJECT = "Sales-ready lead: Jane Doe (Acme) — score 105"
SENDER = "leadrouter@example.test"


def make_alert(
    *,
    rep_email: str = "rita@example.test",
    slack_user_id: str | None = "U0REP1",
    team: str = "enterprise",
    assignment_id: str = "asg-42",
) -> Alert:
    rep = Rep("r1", "Rita Rep", rep_email, team, slack_user_id)
    decision = RoutingDecision(team, "big-companies", "v7", ("root", "employees>=1000"))
    reasons = (
        Reason("pricing_view", 10, "e1", "page_view", TS - 74, "viewed /pricing"),
        Reason("demo_request", 50, "e2", "form_fill", TS, "filled form demo-request", True),
    )
    return Alert(
        assignment=Assignment(assignment_id, "lead-1", 1, rep, decision, TS),
        lead=LeadView(
            "lead-1", "jane@acme.test", 104.6, Stage.MQL, {"name": "Jane Doe", "company": "Acme"}, reasons
        ),
        threshold=100,
        trigger="hand-raiser form demo-request",
        recent=(
            {
                "type": "page_view",
                "ts": TS - 74,
                "url": "https://www.example.test/pricing",
                "title": "Pricing",
            },
            {"type": "form_fill", "ts": TS, "form_id": "demo-request"},
        ),
    )


class RecordingSleep:
    """An injected sleep: records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def slack() -> AsyncIterator[SlackReceiver]:
    receiver = SlackReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def webhook(
    session: aiohttp.ClientSession, slack: SlackReceiver, timeout_s: float = 5.0
) -> SlackWebhookNotifier:
    return SlackWebhookNotifier(
        session, slack.webhook_url("default"), {"enterprise": slack.webhook_url("enterprise")}, timeout_s
    )


def bot(session: aiohttp.ClientSession, slack: SlackReceiver, token: str = "xoxb-test") -> SlackBotNotifier:
    return SlackBotNotifier(session, slack.api_url, token, 5.0)


def mailer(smtp: SmtpReceiver, port: int | None = None) -> SmtpNotifier:
    return SmtpNotifier(smtp.host, smtp.port if port is None else port, SENDER, False, "", "", 5.0)


async def send(
    alert: Alert,
    notifier: Notifier,
    sleep: RecordingSleep | None = None,
    max_attempts: int = 3,
    backoff_s: float = 0.01,
    seed: int = 0,
) -> DeliveryResult:
    return await deliver(
        alert,
        notifier,
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        rng=random.Random(seed),
        sleep=sleep or RecordingSleep(),
    )


# ------------------------------------------------------------------ happy paths


async def test_webhook_delivers_blocks_to_the_team_hook(
    slack: SlackReceiver, session: aiohttp.ClientSession
) -> None:
    result = await send(make_alert(), webhook(session, slack))
    assert result == DeliveryResult("slack_webhook", True, 1, None, False)

    msg = await slack.wait_for(lambda m: m.endpoint == "webhook", timeout=5)
    assert msg.path == "/services/T000/enterprise/hook"
    assert msg.channel == "enterprise"
    assert msg.headers["Content-Type"].startswith("application/json")
    assert msg.text == f"{SUBJECT} — hand-raiser form demo-request"
    blocks = msg.blocks
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == "Sales-ready lead: Jane Doe (Acme)"
    why = next(b["text"]["text"] for b in blocks if "*Why now*" in b.get("text", {}).get("text", ""))
    assert why.split("\n")[1:] == [
        "• +50 demo_request — filled form demo-request",
        "• +10 pricing_view — viewed /pricing",
    ]
    assert "2026-11-22 18:41:14 UTC" in json.dumps(blocks)


async def test_webhook_falls_back_to_the_default_hook(
    slack: SlackReceiver, session: aiohttp.ClientSession
) -> None:
    result = await send(make_alert(team="smb"), webhook(session, slack))
    assert result.ok
    msg = await slack.wait_for(timeout=5)
    assert msg.path == "/services/T000/default/hook"


async def test_webhook_without_url_is_permanent_and_names_the_setting(session: aiohttp.ClientSession) -> None:
    sleep = RecordingSleep()
    result = await send(make_alert(), SlackWebhookNotifier(session, "", {}, 5.0), sleep)
    assert (result.ok, result.permanent, result.attempts) == (False, True, 1)
    assert result.error is not None and "LEADROUTER_SLACK_WEBHOOK_URL" in result.error
    assert sleep.waits == []


async def test_bot_dms_the_rep(slack: SlackReceiver, session: aiohttp.ClientSession) -> None:
    result = await send(make_alert(), bot(session, slack))
    assert result == DeliveryResult("slack_bot", True, 1, None, False)
    msg = await slack.wait_for(lambda m: m.endpoint == "chat.postMessage", timeout=5)
    assert msg.path == "/api/chat.postMessage"
    assert msg.channel == "U0REP1"
    assert msg.headers["Authorization"] == "Bearer xoxb-test"
    assert msg.payload is not None and set(msg.payload) == {"channel", "text", "blocks"}
    assert msg.blocks[0]["type"] == "header"
    assert msg.ts is not None


async def test_bot_skips_a_rep_without_slack_id(slack: SlackReceiver, session: aiohttp.ClientSession) -> None:
    result = await send(make_alert(slack_user_id=None), bot(session, slack))
    assert result.ok and result.attempts == 1
    assert slack.requests == []


async def test_bot_without_token_is_permanent_and_names_the_setting(
    slack: SlackReceiver, session: aiohttp.ClientSession
) -> None:
    result = await send(make_alert(), bot(session, slack, token=""))
    assert (result.ok, result.permanent, result.attempts) == (False, True, 1)
    assert result.error is not None and "LEADROUTER_SLACK_BOT_TOKEN" in result.error
    assert slack.requests == []


async def test_receiver_wants_a_token_and_checks_it_when_configured(session: aiohttp.ClientSession) -> None:
    async with SlackReceiver(bot_token="xoxb-right") as slack:
        async with session.post(
            f"{slack.api_url}/chat.postMessage", json={"channel": "C1", "text": "hi"}
        ) as resp:
            assert resp.status == 200
            assert await resp.json() == {"ok": False, "error": "not_authed"}
        result = await send(make_alert(), bot(session, slack, token="xoxb-wrong"))
        assert (result.ok, result.permanent, result.attempts) == (False, True, 1)
        assert result.error is not None and "invalid_auth" in result.error
        assert [r.error for r in slack.requests] == ["not_authed", "invalid_auth"]
        assert slack.messages == []


async def test_receiver_accepts_form_encoded_post_message(
    slack: SlackReceiver, session: aiohttp.ClientSession
) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    form = {"channel": "C9", "text": "hello", "blocks": json.dumps(blocks)}
    async with session.post(
        f"{slack.api_url}/chat.postMessage", data=form, headers={"Authorization": "Bearer xoxb-test"}
    ) as resp:
        answer = await resp.json()
    assert answer["ok"] is True and answer["channel"] == "C9"
    msg = await slack.wait_for(timeout=5)
    assert msg.blocks == blocks and msg.text == "hello"


async def test_email_delivered_and_parsed(smtp: SmtpReceiver) -> None:
    result = await send(make_alert(), mailer(smtp))
    assert result == DeliveryResult("email", True, 1, None, False)

    msg = await smtp.wait_for(lambda m: m["To"] == "rita@example.test", timeout=5)
    assert msg["Subject"] == SUBJECT
    assert msg["From"] == SENDER
    assert msg["Message-ID"] == "<leadrouter.alert.asg-42@example.test>"
    assert msg.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content() for p in msg.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert "Trigger: hand-raiser form demo-request" in parts["text/plain"]
    assert "+50 demo_request — filled form demo-request" in parts["text/plain"]
    assert "2026-11-22 18:41:14 UTC" in parts["text/plain"]
    assert "<h3>Why now</h3>" in parts["text/html"]
    assert "employees&gt;=1000" in parts["text/html"]
    assert smtp.envelopes[-1].mail_from == SENDER
    assert smtp.envelopes[-1].rcpt_tos == ("rita@example.test",)


async def test_email_resend_keeps_the_message_id(smtp: SmtpReceiver) -> None:
    for _ in range(2):
        assert (await send(make_alert(), mailer(smtp))).ok
    await smtp.wait_for(lambda m: len(smtp.messages) >= 2, timeout=5)
    ids = {m["Message-ID"] for m in smtp.messages}
    assert len(smtp.messages) == 2 and len(ids) == 1


async def test_receiver_on_message_callbacks(session: aiohttp.ClientSession) -> None:
    seen: list[object] = []
    async with SlackReceiver(on_message=seen.append) as slack, SmtpReceiver(on_message=seen.append) as smtp:
        assert (await send(make_alert(), webhook(session, slack))).ok
        assert (await send(make_alert(), mailer(smtp))).ok
        await smtp.wait_for(timeout=5)
    assert isinstance(seen[0], SlackRequest)
    assert seen[1]["Subject"] == SUBJECT  # type: ignore[index]


async def test_wait_for_times_out(slack: SlackReceiver) -> None:
    with pytest.raises(TimeoutError, match="no matching Slack message"):
        await slack.wait_for(timeout=0.05)


# ------------------------------------------------------------------ slack_sdk wire captures


def _slack_captures() -> list[Any]:
    if not DATASETS.is_dir():
        reason = f"{DATASETS} is absent: the slack_sdk wire captures live in the shared datasets checkout"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-datasets")]
    out = []
    for line in CAPTURES.read_text(encoding="utf-8").splitlines():
        if line.strip():
            capture = json.loads(line)
            if "slack" in capture["client"].lower():
                out.append(pytest.param(capture, id=capture["client"]))
    return out


SLACK_CAPTURES = _slack_captures()
_HOP_BY_HOP = {"host", "content-length", "connection", "transfer-encoding"}


def test_captures_cover_both_slack_endpoints() -> None:
    captures = [p.values[0] for p in SLACK_CAPTURES]
    if captures == [None]:
        pytest.skip(f"{DATASETS} is absent")
    paths = {c["path"].split("?")[0] for c in captures}
    assert "/api/chat.postMessage" in paths
    assert any(p.startswith("/services/") for p in paths)


@pytest.mark.parametrize("capture", SLACK_CAPTURES)
async def test_receiver_accepts_slack_sdk_requests(
    capture: dict[str, Any], slack: SlackReceiver, session: aiohttp.ClientSession
) -> None:
    headers = {k: v for k, v in capture["headers"].items() if k.lower() not in _HOP_BY_HOP}
    body = capture["body"].encode("utf-8")
    async with session.request(
        capture["method"], slack.url + capture["path"], headers=headers, data=body
    ) as resp:
        status, text = resp.status, await resp.text()
    assert status == 200, text
    sent = json.loads(capture["body"])
    if capture["path"].startswith("/services/"):
        assert text == "ok"
    else:
        answer = json.loads(text)
        assert answer["ok"] is True, answer
        assert answer["channel"] == sent["channel"]
        assert answer["ts"]
    msg = await slack.wait_for(timeout=5)
    assert msg.path == capture["path"]
    assert msg.payload == sent
    assert msg.text == sent["text"]
    assert msg.headers["User-Agent"] == capture["headers"]["User-Agent"]


# ------------------------------------------------------------------ retries and failures


@pytest.mark.parametrize("channel", ["webhook", "bot"])
async def test_429_retry_after_is_honoured_then_delivered(
    channel: str, slack: SlackReceiver, session: aiohttp.ClientSession
) -> None:
    slack.fail_next(1, status=429, retry_after=7)
    sleep = RecordingSleep()
    notifier = webhook(session, slack) if channel == "webhook" else bot(session, slack)
    result = await send(make_alert(), notifier, sleep, max_attempts=3, backoff_s=0.01)
    assert result.ok and result.attempts == 2
    assert sleep.waits == [7.0]  # jitter was at most 0.01s; Retry-After wins
    assert [r.status for r in slack.requests] == [429, 200]
    assert len(slack.messages) == 1


async def test_5xx_backs_off_with_full_jitter_then_gives_up(
    slack: SlackReceiver, session: aiohttp.ClientSession
) -> None:
    slack.fail_always(503, "upstream down")
    sleep = RecordingSleep()
    result = await send(make_alert(), webhook(session, slack), sleep, max_attempts=4, backoff_s=0.5, seed=42)
    assert (result.ok, result.permanent, result.attempts) == (False, False, 4)
    assert result.error is not None and "503" in result.error
    assert len(slack.requests) == 4
    rng = random.Random(42)
    assert sleep.waits == [rng.uniform(0, 0.5 * 2**n) for n in range(3)]
    assert all(0 <= w <= 0.5 * 2**n for n, w in enumerate(sleep.waits))


@pytest.mark.parametrize(
    ("channel", "status"),
    [("webhook", 404), ("webhook", 410), ("bot", 200)],
)
async def test_channel_not_found_is_not_retried(
    channel: str, status: int, slack: SlackReceiver, session: aiohttp.ClientSession
) -> None:
    slack.fail_always(status, "channel_not_found")
    sleep = RecordingSleep()
    notifier = webhook(session, slack) if channel == "webhook" else bot(session, slack)
    result = await send(make_alert(), notifier, sleep, max_attempts=5)
    assert (result.ok, result.permanent, result.attempts) == (False, True, 1)
    assert result.error is not None and "channel_not_found" in result.error
    assert sleep.waits == []
    assert len(slack.requests) == 1


@pytest.mark.parametrize("error", ["ratelimited", "internal_error", "service_unavailable"])
async def test_bot_transient_errors_are_retried(
    error: str, slack: SlackReceiver, session: aiohttp.ClientSession
) -> None:
    slack.fail_next(2, status=200, retry_after=None, error_body=error)
    result = await send(make_alert(), bot(session, slack), max_attempts=3)
    assert result.ok and result.attempts == 3


async def test_webhook_timeout_is_transient(slack: SlackReceiver, session: aiohttp.ClientSession) -> None:
    slack.fail_next(1, status=200, retry_after=None, error_body="ok", delay_s=0.5)
    result = await send(make_alert(), webhook(session, slack, timeout_s=0.1), max_attempts=1)
    assert (result.ok, result.permanent, result.attempts) == (False, False, 1)
    assert result.error is not None and "timed out" in result.error


async def test_unreachable_slack_is_transient(session: aiohttp.ClientSession) -> None:
    port = _closed_port()
    notifier = SlackWebhookNotifier(session, f"http://127.0.0.1:{port}/services/T/B/C", {}, 2.0)
    result = await send(make_alert(), notifier, max_attempts=2)
    assert (result.ok, result.permanent, result.attempts) == (False, False, 2)
    assert result.error is not None and "http://" not in result.error  # the webhook URL is a secret


async def test_smtp_refused_recipient_is_permanent(smtp: SmtpReceiver) -> None:
    smtp.refuse("gone@example.test")
    sleep = RecordingSleep()
    result = await send(make_alert(rep_email="gone@example.test"), mailer(smtp), sleep, max_attempts=5)
    assert (result.ok, result.permanent, result.attempts) == (False, True, 1)
    assert result.error is not None and "550" in result.error
    assert sleep.waits == []
    assert smtp.messages == []
    await _until(lambda: smtp.refused == ["gone@example.test"])


async def test_smtp_temporary_refusal_is_retried(smtp: SmtpReceiver) -> None:
    smtp.refuse("busy@example.test", "450 4.2.1 Mailbox busy, try later")
    sleep = RecordingSleep()
    result = await send(make_alert(rep_email="busy@example.test"), mailer(smtp), sleep, max_attempts=3)
    assert (result.ok, result.permanent, result.attempts) == (False, False, 3)
    assert result.error is not None and "450" in result.error
    assert len(sleep.waits) == 2


async def test_smtp_connection_refused_is_transient(smtp: SmtpReceiver) -> None:
    result = await send(make_alert(), mailer(smtp, port=_closed_port()), max_attempts=2)
    assert (result.ok, result.permanent, result.attempts) == (False, False, 2)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
