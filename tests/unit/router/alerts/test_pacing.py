"""Slack pacing (token bucket, fake clock), capped jittered backoff, digest trigger settings."""

from __future__ import annotations

import random

import pytest

from models.lead import Alert, Assignment, LeadView, Rep, RoutingDecision, Stage
from router.alerts.delivery import backoff_delay
from router.alerts.digest import trigger_kind
from router.alerts.pacing import LocalPacer, bucket_step, pace_key
from router.errors import SettingsError
from router.settings import parse_triggers


class FakeClock:
    """A clock that only moves when a (fake) sleep moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def test_bucket_spaces_a_queue_one_interval_apart() -> None:
    tokens, ts = None, None
    waits = []
    for _ in range(5):
        tokens, ts, wait = bucket_step(tokens, ts, 10.0, rate=1.0, burst=1)
        waits.append(wait)
    assert waits == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_bucket_refills_at_the_rate_and_caps_at_burst() -> None:
    tokens, ts, wait = bucket_step(None, None, 0.0, rate=2.0, burst=3)
    assert (tokens, wait) == (2.0, 0.0)
    tokens, ts, wait = bucket_step(tokens, ts, 100.0, rate=2.0, burst=3)  # long idle: back to burst, minus one
    assert (tokens, ts, wait) == (2.0, 100.0, 0.0)
    for _ in range(2):
        tokens, ts, wait = bucket_step(tokens, ts, 100.0, rate=2.0, burst=3)
    assert wait == 0.0 and tokens == 0.0
    tokens, ts, wait = bucket_step(tokens, ts, 100.0, rate=2.0, burst=3)
    assert wait == pytest.approx(0.5)


def test_hold_pushes_the_next_slot_out() -> None:
    tokens, ts, _ = bucket_step(None, None, 0.0, rate=1.0, burst=1)
    tokens, ts, _ = bucket_step(tokens, ts, 5.0, rate=1.0, burst=1, hold_s=7.0)
    _, _, wait = bucket_step(tokens, ts, 5.0, rate=1.0, burst=1)
    assert wait == pytest.approx(7.0)


async def test_local_pacer_n_messages_take_n_minus_one_seconds_at_one_per_second() -> None:
    clock = FakeClock()
    pacer = LocalPacer(1.0, 1, clock=clock, sleep=clock.sleep)
    waits = [await pacer.acquire("webhook:abc") for _ in range(6)]
    assert waits == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # the 6th goes out 5 s after the 1st
    assert clock.sleeps == [1.0, 2.0, 3.0, 4.0, 5.0]
    # Another channel has its own budget.
    assert await pacer.acquire("dm:U0REP1") == 0.0


async def test_local_pacer_refills_with_time_and_honours_a_hold() -> None:
    clock = FakeClock()
    pacer = LocalPacer(1.0, 1, clock=clock, sleep=clock.sleep)
    assert await pacer.acquire("k") == 0.0
    clock.now += 1.0
    assert await pacer.acquire("k") == 0.0
    await pacer.hold("k", 30.0)
    assert await pacer.acquire("k") == pytest.approx(30.0)


def test_pace_keys_hide_webhook_urls() -> None:
    key = pace_key("webhook", "https://hooks.slack.test/services/T/B/secret")
    assert key.startswith("webhook:") and "secret" not in key
    assert pace_key("dm", "U0REP1") == "dm:U0REP1"


def test_backoff_is_full_jitter_capped_and_never_below_retry_after() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.5, rng, None, max_s=2.0) for n in range(1, 200)]
    assert all(0.0 <= d <= 2.0 for d in delays)
    assert max(delays[10:]) > 1.0  # the cap, not the exponent, bounds late attempts
    assert backoff_delay(1000, 0.05, random.Random(1), None, max_s=0.2) <= 0.2  # no float overflow
    assert backoff_delay(1, 0.5, random.Random(1), 9.0, max_s=2.0) == 9.0
    expected = random.Random(3).uniform(0, 0.5 * 2**3)
    assert backoff_delay(4, 0.5, random.Random(3), None) == expected  # uncapped as before


def _alert(trigger: str) -> Alert:
    rep = Rep("r1", "Rita Rep", "rita@example.test", "smb")
    asg = Assignment("a1", "l1", 1, rep, RoutingDecision("smb", "r", "v1", ()), 0.0)
    return Alert(asg, LeadView("l1", None, 50.0, Stage.MQL), 40.0, trigger)


@pytest.mark.parametrize(
    ("trigger", "kind"),
    [
        ("hand-raiser: filled form demo-request", "hand_raiser"),
        ("hand-raiser", "hand_raiser"),
        ("account intent: the buying committee is active", "account_intent"),
        ("score 52 crossed the sales-ready threshold 50", "threshold"),
        ("reminder: this lead is waiting for you to accept it", "other"),
        ("reassigned to you: the previous rep did not accept it in time", "other"),
    ],
)
def test_trigger_kind(trigger: str, kind: str) -> None:
    assert trigger_kind(_alert(trigger)) == kind


def test_digest_trigger_setting() -> None:
    assert parse_triggers("threshold, account-intent") == {"threshold", "account_intent"}
    assert parse_triggers("") == frozenset()
    with pytest.raises(SettingsError, match="hand-raisers always go out at once"):
        parse_triggers("threshold,hand_raiser")
    with pytest.raises(SettingsError, match=r"LEADROUTER_DIGEST_TRIGGERS.*bogus"):
        parse_triggers("bogus")


def test_alert_settings_are_checked_when_loaded() -> None:
    from router.settings import Settings, load_settings

    for bad, name in (({"slack_pacer": "cluster"}, "LEADROUTER_SLACK_PACER"),
                      ({"slack_burst": 0}, "LEADROUTER_SLACK_BURST"),
                      ({"digest_triggers": "hand_raiser"}, "LEADROUTER_DIGEST_TRIGGERS")):
        with pytest.raises(SettingsError, match=name):
            Settings().with_(**bad)
        with pytest.raises(SettingsError, match=name):
            load_settings({f"LEADROUTER_{k.upper()}": str(v) for k, v in bad.items()})
    s = load_settings({"LEADROUTER_DIGEST_TRIGGERS": "threshold,account_intent", "LEADROUTER_DIGEST_INTERVAL_S": "900",
                       "LEADROUTER_SMTP_TLS_CA_FILE": "/etc/ssl/private-ca.pem", "LEADROUTER_SMTP_SSL": "1",
                       "LEADROUTER_SLACK_RATE_PER_S": "0.5", "LEADROUTER_ALERT_BACKOFF_MAX_S": "10"})
    assert (s.alerts.digest_triggers, s.alerts.digest_interval_s, s.alerts.smtp_tls_ca_file, s.alerts.smtp_ssl) == (
        {"threshold", "account_intent"}, 900.0, "/etc/ssl/private-ca.pem", True)
    assert (s.alerts.slack_rate_per_s, s.alerts.backoff_max_s) == (0.5, 10.0)
