"""Alert delivery against the real local receivers (aiohttp Slack stand-in, aiosmtpd).

No mocks: the notifiers speak HTTP and SMTP to servers on 127.0.0.1, and the
Slack receiver is checked against requests captured from the real slack_sdk.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import ipaddress
import json
import random
import shutil
import socket
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from models.lead import Alert, Assignment, LeadView, Reason, Rep, RoutingDecision, Stage
from router import metrics
from router.alerts.delivery import DeliveryResult, deliver
from router.alerts.notifiers import (
    Notifier,
    SlackBotNotifier,
    SlackWebhookNotifier,
    SmtpNotifier,
)
from router.alerts.sender import DeadLetter, build_sender, flush_due
from router.cli.alerts import cmd_replay, register, run_replay
from router.dev.receivers import SlackReceiver, SlackRequest, SmtpReceiver
from router.dev.servers import ManagedProcess
from router.settings import Settings
from router.storage import keys
from router.storage.kafka import ensure_topics
from router.storage.store import RedisStore

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
    trigger: str = "hand-raiser form demo-request",
    account: dict[str, Any] | None = None,
    links: dict[str, str] | None = None,
    rep_id: str = "r1",
    name: str = "Jane Doe",
    ts: float = TS,
) -> Alert:
    rep = Rep(rep_id, "Rita Rep", rep_email, team, slack_user_id)
    decision = RoutingDecision(team, "big-companies", "v7", ("root", "employees>=1000"))
    reasons = (
        Reason("pricing_view", 10, "e1", "page_view", TS - 74, "viewed /pricing"),
        Reason("demo_request", 50, "e2", "form_fill", TS, "filled form demo-request", True),
    )
    return Alert(
        assignment=Assignment(assignment_id, "lead-1", 1, rep, decision, ts),
        lead=LeadView(
            "lead-1", "jane@acme.test", 104.6, Stage.MQL, {"name": name, "company": "Acme"}, reasons
        ),
        threshold=100,
        trigger=trigger,
        account=account or {},
        links=links or {},
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


# ------------------------------------------------------------------ SMTP over TLS (self-signed certificate)


def _cert_with_cryptography(cert: Path, key: Path) -> None:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        pytest.skip("the cryptography package is not installed")
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _cert_with_openssl(cert: Path, key: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


@pytest.fixture(params=["cryptography", "openssl"])
def tls_cert(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1 made now, and a server context holding it."""
    cert, key = tmp_path / "smtp-cert.pem", tmp_path / "smtp-key.pem"
    (_cert_with_cryptography if request.param == "cryptography" else _cert_with_openssl)(cert, key)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return cert, server


def tls_mailer(smtp: SmtpReceiver, cert: Path | None, *, starttls: bool = True, implicit: bool = False,
               user: str = "leadrouter", password: str = "s3cret") -> SmtpNotifier:
    return SmtpNotifier(smtp.host, smtp.port, SENDER, starttls, user, password, 5.0, implicit_tls=implicit,
                        ca_file=str(cert) if cert else "")


RICH_ACCOUNT: dict[str, Any] = {
    "name": "Acme", "domain": "acme.test", "intent": 72, "active_people": 3,
    "members": [{"name": "Bob Stone", "title": "CFO", "email": "bob@acme.test", "last_active": TS - 3600}],
}
RICH_LINKS = {
    "accept": "https://admin.example.test/v1/leads/lead-1/accept",
    "reject": "https://admin.example.test/v1/leads/lead-1/reject",
    "lead": "https://admin.example.test/v1/leads/lead-1",
}


async def test_smtp_starttls_and_login_with_a_self_signed_cert(tls_cert: tuple[Path, ssl.SSLContext]) -> None:
    cert, server_ctx = tls_cert
    async with SmtpReceiver(tls_context=server_ctx, require_starttls=True, users={"leadrouter": "s3cret"},
                            auth_required=True) as smtp:
        alert = make_alert(account=RICH_ACCOUNT, links=RICH_LINKS)
        result = await send(alert, tls_mailer(smtp, cert))
        assert result == DeliveryResult("email", True, 1, None, False)
        msg = await smtp.wait_for(timeout=5)
    assert smtp.envelopes[-1].tls is True and smtp.envelopes[-1].auth_user == "leadrouter"
    parts = {p.get_content_type(): p.get_content() for p in msg.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    for text in parts.values():  # the same content as Slack: who else is active, and the links
        assert "Bob Stone — CFO · last active 2026-11-22 17:41:14 UTC" in text
        assert RICH_LINKS["accept"] in text and RICH_LINKS["reject"] in text
        assert "team enterprise · rule big-companies (rules v7)" in text


async def test_smtp_implicit_tls_with_login(tls_cert: tuple[Path, ssl.SSLContext]) -> None:
    cert, server_ctx = tls_cert
    async with SmtpReceiver(tls_context=server_ctx, implicit_tls=True, users={"leadrouter": "s3cret"},
                            auth_required=True) as smtp:
        result = await send(make_alert(), tls_mailer(smtp, cert, starttls=False, implicit=True))
        assert result.ok, result.error
        await smtp.wait_for(timeout=5)
    assert smtp.envelopes[-1].tls is True and smtp.envelopes[-1].auth_user == "leadrouter"


async def test_smtp_untrusted_certificate_is_permanent_and_names_the_setting(
    tls_cert: tuple[Path, ssl.SSLContext],
) -> None:
    _, server_ctx = tls_cert
    sleep = RecordingSleep()
    async with SmtpReceiver(tls_context=server_ctx, require_starttls=True) as smtp:
        result = await send(make_alert(), tls_mailer(smtp, None, user=""), sleep, max_attempts=4)
        assert smtp.messages == []
    assert (result.ok, result.permanent, result.attempts) == (False, True, 1)
    assert result.error is not None and "LEADROUTER_SMTP_TLS_CA_FILE" in result.error
    assert sleep.waits == []


async def test_smtp_without_starttls_is_refused_where_required(tls_cert: tuple[Path, ssl.SSLContext]) -> None:
    _, server_ctx = tls_cert
    async with SmtpReceiver(tls_context=server_ctx, require_starttls=True) as smtp:
        result = await send(make_alert(), tls_mailer(smtp, None, starttls=False, user=""), max_attempts=3)
        assert smtp.messages == []
    assert (result.ok, result.permanent, result.attempts) == (False, True, 1)
    assert result.error is not None and "530" in result.error


async def test_smtp_wrong_password_is_permanent(tls_cert: tuple[Path, ssl.SSLContext]) -> None:
    cert, server_ctx = tls_cert
    async with SmtpReceiver(tls_context=server_ctx, require_starttls=True, users={"leadrouter": "s3cret"},
                            auth_required=True) as smtp:
        result = await send(make_alert(), tls_mailer(smtp, cert, password="wrong"), max_attempts=3)
        assert smtp.messages == []
    assert (result.ok, result.permanent, result.attempts) == (False, True, 1)
    assert result.error is not None and "LEADROUTER_SMTP_PASSWORD" in result.error


async def test_smtp_missing_ca_file_is_permanent_and_names_the_setting(smtp: SmtpReceiver, tmp_path: Path) -> None:
    notifier = SmtpNotifier(smtp.host, smtp.port, SENDER, True, "", "", 5.0, ca_file=str(tmp_path / "nope.pem"))
    result = await send(make_alert(), notifier, max_attempts=3)
    assert (result.ok, result.permanent) == (False, True)
    assert result.error is not None and "LEADROUTER_SMTP_TLS_CA_FILE" in result.error


async def test_smtp_receiver_transient_failures_until_cleared(smtp: SmtpReceiver) -> None:
    smtp.fail_always("451 4.3.0 Try again later")
    result = await send(make_alert(), mailer(smtp), max_attempts=2)
    assert (result.ok, result.permanent, result.attempts) == (False, False, 2)
    assert result.error is not None and "451" in result.error
    smtp.clear_failures()
    assert (await send(make_alert(), mailer(smtp))).ok
    await smtp.wait_for(timeout=5)
    assert len(smtp.messages) == 1 and len(smtp.failed) == 2


# ------------------------------------------------------------------ Block Kit on the wire


async def test_block_kit_on_the_wire_has_account_links_and_routing(
    slack: SlackReceiver, session: aiohttp.ClientSession
) -> None:
    alert = make_alert(account=RICH_ACCOUNT, links=RICH_LINKS)
    assert (await send(alert, webhook(session, slack))).ok
    assert (await send(alert, bot(session, slack))).ok
    for endpoint in ("webhook", "chat.postMessage"):
        msg = await slack.wait_for(lambda m, e=endpoint: m.endpoint == e, timeout=5)  # type: ignore[misc]
        rendered = json.dumps(msg.blocks, ensure_ascii=False)
        assert "*Also active at Acme* · acme.test · intent 72 · 3 people active" in rendered
        assert "• *Bob Stone* — CFO · last active 2026-11-22 17:41:14 UTC" in rendered
        assert "Routing: team enterprise · rule big-companies (rules v7)" in rendered
        actions = msg.blocks[-1]
        if endpoint == "webhook":  # the team channel: no action links, they act for the assigned rep only
            assert actions["type"] == "context" and not any(url in rendered for url in RICH_LINKS.values())
        else:
            assert actions["type"] == "actions"
            assert [b["url"] for b in actions["elements"]] == [RICH_LINKS[k] for k in ("accept", "reject", "lead")]


# ------------------------------------------------------------------ dead letters and replay (real broker)


@pytest.fixture
async def stack_settings(
    broker_server: ManagedProcess, redis_url: str, slack: SlackReceiver, smtp: SmtpReceiver
) -> Settings:
    """Settings for a sender on the local receivers, with a dead-letter topic of this test's own."""
    settings = Settings.of(
        kafka_url=f"kafka://127.0.0.1:{broker_server.port}",
        redis_url=redis_url,
        topic_dead_letter=f"test.alerts.dlq.{uuid.uuid4().hex[:10]}",
        slack_webhook_url=slack.webhook_url("sales"),
        slack_api_url=slack.api_url,
        slack_bot_token="xoxb-test",
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_from=SENDER,
        alert_max_attempts=2,
        alert_backoff_s=0.01,
        slack_rate_per_s=50.0,
    )
    await ensure_topics(settings.kafka)
    return settings


@pytest.fixture
async def dlq_writer(stack_settings: Settings) -> AsyncIterator[DeadLetter]:
    producer = AIOKafkaProducer(bootstrap_servers=stack_settings.kafka.bootstrap, acks="all",
                                enable_idempotence=False)
    await producer.start()

    async def write(key: str, value: bytes) -> None:
        await producer.send_and_wait(stack_settings.kafka.topic_dead_letter, value, key=key.encode())

    try:
        yield write
    finally:
        await producer.stop()


async def read_dead_letters(settings: Settings, quiet_s: float = 1.0) -> list[dict[str, Any]]:
    """Every record on the dead-letter topic, from the beginning (no group, nothing committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(settings.kafka.topic_dead_letter, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(out) < end and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=int(quiet_s * 1000))
            out += [json.loads(m.value) for records in batch.values() for m in records if m.value]
        return out
    finally:
        await consumer.stop()


def _sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_permanent_error_is_not_retried_and_is_dead_lettered(
    stack_settings: Settings, redis: Redis, slack: SlackReceiver, session: aiohttp.ClientSession,
    dlq_writer: DeadLetter,
) -> None:
    slack.fail_always(404, "channel_not_found", endpoint="webhook")
    sender = build_sender(stack_settings.with_(alert_max_attempts=5).alerts, RedisStore(redis), session, dlq_writer)
    before = _sample("leadrouter_alert_dead_letters_total", channel="slack_webhook", kind="permanent")
    outcome = await sender.send_alert(make_alert())
    by_channel = {r.channel: r for r in outcome.results}
    assert (by_channel["slack_webhook"].ok, by_channel["slack_webhook"].permanent) == (False, True)
    assert by_channel["slack_webhook"].attempts == 1
    assert by_channel["slack_bot"].ok and by_channel["email"].ok
    assert len([r for r in slack.requests if r.endpoint == "webhook"]) == 1  # not retried
    records = await read_dead_letters(stack_settings)
    assert len(records) == 1
    rec = records[0]
    assert (rec["channel"], rec["permanent"], rec["kind"], rec["attempts"]) == ("slack_webhook", True,
                                                                                "permanent", 1)
    assert "channel_not_found" in rec["error"]
    assert rec["alert"]["assignment"]["assignment_id"] == "asg-42"
    assert _sample("leadrouter_alert_dead_letters_total", channel="slack_webhook", kind="permanent") == before + 1
    assert await RedisStore(redis).sent_channels("asg-42") == {"slack_bot", "email"}


async def test_undecodable_alert_is_dead_lettered_not_raised(
    stack_settings: Settings, redis: Redis, session: aiohttp.ClientSession, dlq_writer: DeadLetter,
) -> None:
    sender = build_sender(stack_settings.alerts, RedisStore(redis), session, dlq_writer)
    assert await sender.handle(b"{not json") == []
    records = await read_dead_letters(stack_settings)
    assert [r["kind"] for r in records] == ["invalid"]


async def test_replay_sends_each_dead_letter_once_and_a_second_replay_sends_nothing(
    stack_settings: Settings, redis: Redis, slack: SlackReceiver, smtp: SmtpReceiver,
    session: aiohttp.ClientSession, dlq_writer: DeadLetter,
) -> None:
    group = f"replay-{uuid.uuid4().hex[:8]}"
    # The worker's send: the team webhook is gone (permanent), the mail server is busy (transient).
    slack.fail_always(404, "channel_not_found", endpoint="webhook")
    smtp.fail_always("451 4.3.0 Try again later")
    sender = build_sender(stack_settings.alerts, RedisStore(redis), session, dlq_writer)
    outcome = await sender.send_alert(make_alert())
    assert sorted(r.channel for r in outcome.results if not r.ok) == ["email", "slack_webhook"]
    assert [r["channel"] for r in await read_dead_letters(stack_settings)] == ["slack_webhook", "email"]
    slack.clear_failures()
    smtp.clear_failures()

    out = io.StringIO()
    dry = await run_replay(stack_settings, limit=None, channel=None, dry_run=True, group=group, stream=out)
    assert [line.outcome for line in dry.lines] == ["would send", "would send"]
    assert dry.committed == {}
    assert len(slack.messages) == 1 and smtp.messages == []  # only the DM the worker got through

    only_mail = await run_replay(stack_settings, limit=None, channel="email", dry_run=False, group=group,
                                 stream=out)
    assert [(line.channel, line.outcome) for line in only_mail.lines] == [
        ("slack_webhook", "skipped: other channel"), ("email", "sent")
    ]
    assert only_mail.committed == {}  # the skipped webhook record stays in the group's backlog
    await smtp.wait_for(timeout=5)

    full = await run_replay(stack_settings, limit=None, channel=None, dry_run=False, group=group, stream=out)
    assert [(line.channel, line.outcome) for line in full.lines] == [
        ("slack_webhook", "sent"), ("email", "already sent")
    ]
    assert full.committed == {0: 2} and full.ok
    again = await run_replay(stack_settings, limit=None, channel=None, dry_run=False, group=group, stream=out)
    assert again.lines == [] and again.committed == {}

    await asyncio.sleep(0.2)
    assert len([m for m in slack.messages if m.endpoint == "webhook"]) == 1
    assert len([m for m in slack.messages if m.endpoint == "chat.postMessage"]) == 1
    assert len(smtp.messages) == 1
    assert await RedisStore(redis).sent_channels("asg-42") == {"slack_webhook", "slack_bot", "email"}
    report = out.getvalue()
    assert "asg-42  slack_webhook  sent" in report and "asg-42  email  already sent" in report
    # Each resend is on the audit trail (a dry run records nothing).
    trail = [(f[b"action"], f[b"via"], f[b"target"], f[b"detail"]) for _, f in await redis.xrange(keys.AUDIT)]
    assert trail == [(b"alert.replay", b"cli", b"email", b"asg-42: sent"),
                     (b"alert.replay", b"cli", b"slack_webhook", b"asg-42: sent"),
                     (b"alert.replay", b"cli", b"email", b"asg-42: already sent")]


async def test_replay_that_fails_again_dead_letters_again_and_respects_limit(
    stack_settings: Settings, redis: Redis, slack: SlackReceiver, session: aiohttp.ClientSession,
    dlq_writer: DeadLetter,
) -> None:
    group = f"replay-{uuid.uuid4().hex[:8]}"
    slack.fail_always(503, endpoint="webhook")
    sender = build_sender(stack_settings.alerts, RedisStore(redis), session, dlq_writer)
    for n in range(3):
        await sender.send_alert(make_alert(assignment_id=f"asg-{n}"), channels={"slack_webhook"})
    assert len(await read_dead_letters(stack_settings)) == 3
    first = await run_replay(stack_settings, limit=2, channel=None, dry_run=False, group=group,
                             stream=io.StringIO())
    assert [line.outcome for line in first.lines] == ["failed again", "failed again"]
    assert first.committed == {0: 2} and not first.ok
    assert len(await read_dead_letters(stack_settings)) == 5  # dead-lettered again, for a later replay
    slack.clear_failures()
    second = await run_replay(stack_settings, limit=None, channel=None, dry_run=False, group=group,
                              stream=io.StringIO())
    assert [(line.key, line.outcome) for line in second.lines] == [
        ("asg-2", "sent"), ("asg-0", "sent"), ("asg-1", "sent")
    ]
    assert second.committed == {0: 5}


def test_cli_has_the_replay_command() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["alerts", "replay", "--limit", "3", "--channel", "email", "--dry-run"])
    assert (args.limit, args.channel, args.dry_run, args.group) == (3, "email", True, "leadrouter-alerts-replay")
    assert args.fn is cmd_replay


# ------------------------------------------------------------------ digests


def low(n: int, *, rep_id: str = "r1", score_text: str = "score 61 crossed the sales-ready threshold 50",
        ts: float = TS) -> Alert:
    return make_alert(assignment_id=f"asg-low-{n}", trigger=score_text, rep_id=rep_id, name=f"Lead {n}",
                      links={"lead": f"https://admin.example.test/v1/leads/l{n}"}, ts=ts + n)


async def test_digest_batches_low_priority_alerts_into_one_message_per_rep_per_interval(
    stack_settings: Settings, redis: Redis, slack: SlackReceiver, smtp: SmtpReceiver,
    session: aiohttp.ClientSession, dlq_writer: DeadLetter,
) -> None:
    settings = stack_settings.with_(digest_triggers="threshold,account_intent", digest_interval_s=3600.0)
    clock = [TS]
    sender = build_sender(settings.alerts, RedisStore(redis), session, dlq_writer)
    sender.clock = lambda: clock[0]
    assert sender.digest is not None
    # Three low-priority alerts and an account-intent one are queued; a hand-raiser goes out at once.
    for n in range(3):
        assert (await sender.send_alert(low(n))).queued
    assert (await sender.send_alert(low(3, score_text="account intent: the buying committee is active"))).queued
    hand = await sender.send_alert(make_alert(assignment_id="asg-hand"))
    assert not hand.queued and all(r.ok for r in hand.results)
    assert (await sender.send_alert(low(0))).already_sent  # a redelivery of a queued alert: nothing
    await smtp.wait_for(timeout=5)
    assert len(slack.messages) == 2 and len(smtp.messages) == 1  # just the hand-raiser

    assert await flush_due(sender, now=TS + 3599) == []  # not due yet
    reports = await flush_due(sender, now=TS + 3600)
    assert [(r.rep_id, r.digest_id, r.alerts, r.ok) for r in reports] == [("r1", "digest:r1:1", 4, True)]
    await _until(lambda: len(smtp.messages) == 2)
    digests = [m for m in slack.messages if "Lead digest" in (m.text or "")]
    assert sorted(m.endpoint for m in digests) == ["chat.postMessage", "webhook"]
    for msg in digests:
        rendered = json.dumps(msg.blocks, ensure_ascii=False)
        for n in range(4):
            assert f"Lead {n} (Acme)" in rendered
            # Action links go to the rep's DM only, never to the team channel (issue 16.1).
            link_shown = f"https://admin.example.test/v1/leads/l{n}" in rendered
            assert link_shown == (msg.endpoint == "chat.postMessage"), (msg.endpoint, n)
    mail = smtp.messages[-1]
    assert mail["Subject"] == "Lead digest for Rita Rep: 4 sales-ready leads"
    assert mail["X-Leadrouter-Digest"] == "digest:r1:1"

    # Nothing more is due; a redelivered digested alert is not sent again; nothing twice.
    assert await flush_due(sender, now=TS + 7200) == []
    assert (await sender.send_alert(low(1))).already_sent
    # A new alert after the digest waits a whole interval.
    clock[0] = TS + 3700
    assert (await sender.send_alert(low(9))).queued
    assert await flush_due(sender, now=TS + 3700 + 3599) == []
    reports = await flush_due(sender, now=TS + 3700 + 3600)
    assert [(r.digest_id, r.alerts) for r in reports] == [("digest:r1:2", 1)]
    await _until(lambda: len(smtp.messages) == 3)
    assert len([m for m in slack.messages if "Lead digest" in (m.text or "")]) == 4
    assert _sample("leadrouter_alert_digest_total", outcome="sent") >= 2


async def test_digest_is_sent_once_by_concurrent_workers_and_resumed_after_a_crash(
    stack_settings: Settings, redis: Redis, slack: SlackReceiver, smtp: SmtpReceiver,
    session: aiohttp.ClientSession, dlq_writer: DeadLetter,
) -> None:
    settings = stack_settings.with_(digest_triggers="threshold", digest_interval_s=60.0)
    store = RedisStore(redis)
    workers = [build_sender(settings.alerts, store, session, dlq_writer) for _ in range(3)]
    for w in workers:
        w.clock = lambda: TS
    for n in range(2):
        assert (await workers[0].send_alert(low(n, ts=TS))).queued
    for n in range(2):
        assert (await workers[1].send_alert(low(10 + n, rep_id="r2", ts=TS))).queued
    # A worker claims r1's digest and dies before sending it.
    queue = workers[0].digest
    assert queue is not None
    dead = await queue.claim("r1", TS + 60, "dead-worker")
    assert dead.status == "ok" and len(dead.alerts) == 2
    # Three workers flush at once: r2 goes out once; r1 waits for the dead worker's lease.
    results = await asyncio.gather(*(flush_due(w, now=TS + 61) for w in workers))
    assert sorted(r.rep_id for rs in results for r in rs) == ["r2"]
    # After the lease, r1's digest (the same batch, the same id) goes out once.
    later = TS + 61 + queue.lease_s
    results = await asyncio.gather(*(flush_due(w, now=later) for w in workers))
    assert [r.digest_id for rs in results for r in rs] == ["digest:r1:1"]
    await _until(lambda: len(smtp.messages) == 2)
    await asyncio.sleep(0.2)
    assert len(smtp.messages) == 2
    assert len([m for m in slack.messages if "Lead digest" in (m.text or "")]) == 4  # 2 reps x (hook + DM)
    assert await redis.zcard(keys.DIGEST_DUE) == 0


def test_replay_command_on_an_empty_dead_letter_topic(
    broker_server: ManagedProcess, redis_server: ManagedProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.of(kafka_url=f"kafka://127.0.0.1:{broker_server.port}",
                        redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
                        topic_dead_letter=f"test.alerts.dlq.{uuid.uuid4().hex[:10]}",
                        slack_webhook_url="http://127.0.0.1:9/services/T/B/C")
    asyncio.run(ensure_topics(settings.kafka))
    args = argparse.Namespace(limit=None, channel=None, dry_run=False, group=f"replay-{uuid.uuid4().hex[:8]}")
    assert cmd_replay(settings, args) == 0
    assert "replayed 0 dead letter(s): 0 sent, 0 already sent, 0 failed again" in capsys.readouterr().out
    assert cmd_replay(settings, argparse.Namespace(**{**vars(args), "dry_run": True})) == 0
    assert "dry run: 0 would be sent" in capsys.readouterr().out
