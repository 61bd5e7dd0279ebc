"""The one settings object.

The environment is read once, here, into a frozen :class:`Settings`.  Nothing
else in the project reads ``os.environ``: every component gets the settings
(or the few values it needs) passed in.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from router.errors import SettingsError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCORING = PACKAGE_ROOT / "scoring" / "scoring.yaml"
DEFAULT_RULES = PACKAGE_ROOT / "rules" / "routing.yaml"
DEFAULT_ICP = PACKAGE_ROOT / "scoring" / "icp.yaml"
DEFAULT_ACCOUNTS = PACKAGE_ROOT / "rules" / "accounts.yaml"


@dataclass(frozen=True, slots=True)
class Settings:
    # Kafka
    kafka_url: str = "kafka://127.0.0.1:9092"
    app_id: str = "leadrouter"
    topic_events: str = "leadrouter.events"
    topic_assignments: str = "leadrouter.assignments"
    topic_dead_letter: str = "leadrouter.alerts.dlq"
    topic_partitions: int = 4
    # faust hard-codes fetch_max_wait_ms=1500; brokers that wait the full
    # time (Tansu does) turn that into latency, so we set our own.
    # 10 ms: each hop adds at most that much on such a broker; idle, a
    # consumer sends about 100 small fetches a second.
    fetch_max_wait_ms: int = 10
    broker_session_timeout_s: float = 10.0
    worker_batch_size: int = 500
    worker_batch_window_s: float = 0.02
    worker_web_port: int = 6066
    # Redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Collector
    collector_host: str = "127.0.0.1"
    collector_port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    cookie_name: str = "lr_vid"
    cookie_max_age_s: int = 60 * 60 * 24 * 395
    cookie_secure: bool = False
    token_secret: str = ""
    token_ttl_s: int = 60 * 60 * 24 * 90
    # Config files edited by ops
    scoring_file: Path = DEFAULT_SCORING
    rules_file: Path = DEFAULT_RULES
    icp_file: Path = DEFAULT_ICP
    accounts_file: Path = DEFAULT_ACCOUNTS
    model_registry_dir: Path = Path("var/models")
    # Identifiers two different people never share: email, and optionally user_id.
    unique_identifiers: str = "email"
    # Where reps act on a lead (the admin API); alert buttons link here. Empty: no links.
    admin_url: str = ""
    # Alerts
    slack_webhook_url: str = ""
    slack_api_url: str = "https://slack.com/api"
    slack_bot_token: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = "leadrouter@localhost"
    alert_max_attempts: int = 5
    alert_backoff_s: float = 0.5
    alert_timeout_s: float = 10.0
    log_level: str = "INFO"
    # --- SDK ingest (Segment / RudderStack / Snowplow), see router/ingest_*.py
    # Comma-separated write keys the Segment-compatible API accepts; ``KEY=label``
    # sets the event ``source`` (default "segment"), e.g. "wk1,rwk2=rudderstack".
    # Empty switches the API off (every call answers 401 naming this setting).
    segment_write_keys: str = ""
    # Track events that count as a form fill when they carry an email (comma-separated,
    # compared case-, space- and underscore-insensitively).
    segment_form_events: str = "Form Submitted,Signed Up,Demo Requested"
    # How long a (write key, messageId) or Snowplow event id is remembered to drop retries.
    message_dedupe_ttl_s: int = 2 * 24 * 3600
    snowplow_enabled: bool = True
    # Comma-separated Snowplow app ids (``aid``) accepted; empty accepts any.
    snowplow_app_ids: str = ""
    # --- Machine opens and bots (router/ingest/machine.py)
    # An email open or click this soon after the send is a machine's (scanner, prefetch).
    machine_open_delay_s: float = 2.0
    # Comma-separated CIDRs whose hits are always a machine's (scanners, office egress, ...).
    machine_networks: str = ""
    # --- Local durable spool in front of Kafka (router/ingest/spool.py)
    spool_dir: Path = Path("var/spool")
    spool_max_bytes: int = 1024 * 1024 * 1024
    spool_segment_bytes: int = 16 * 1024 * 1024
    # always: a request is answered after its event is fsynced (group commit);
    # interval: fsync every spool_fsync_interval_s; never: leave it to the OS.
    spool_fsync: str = "always"
    spool_fsync_interval_s: float = 0.2
    # Retry-After (seconds) sent with the 503 when the spool is full.
    spool_retry_after_s: int = 30
    # After the broker fails to answer a send, wait this long once it is back before
    # checking which of the unanswered events landed anyway (so none is sent twice).
    spool_recheck_delay_s: float = 1.0
    # How long the forwarder waits for the broker to acknowledge one batch.
    spool_send_timeout_s: float = 10.0
    # --- Admin HTTP API for ops and reps (router/admin/app.py; `leadrouter admin`)
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    # Largest request body the admin API reads (rules YAML, simulate leads), in bytes; more is a 413.
    admin_max_body_bytes: int = 2 * 1024 * 1024
    # Largest rules or test-case YAML text the rules endpoints compile, in bytes; more is a 413.
    admin_max_rules_bytes: int = 256 * 1024
    # Most leads one POST /v1/rules/simulate routes; more is a 413.
    admin_simulate_max_leads: int = 5000
    # --- Alert delivery: retries, Slack pacing, SMTP TLS, digests (router/alerts/notifiers.py, router/alerts/pacing.py, router/alerts/digest.py)
    # The longest single wait between two attempts on a channel (full jitter is capped here;
    # a server's Retry-After still wins when it is longer).
    alert_backoff_max_s: float = 30.0
    # Slack accepts about one message per second per channel: messages per second and burst
    # per webhook / per DM channel.  0 switches pacing off.
    slack_rate_per_s: float = 1.0
    slack_burst: int = 1
    # redis: one token bucket per channel in Redis, shared by every worker (falls back to
    # the process's own pacer while Redis fails); local: this process only.
    slack_pacer: str = "redis"
    # Implicit TLS (SMTPS, usually port 465) instead of plain SMTP (+ optional STARTTLS).
    smtp_ssl: bool = False
    # PEM file of the CA(s) that sign the SMTP server's certificate (a private CA or a
    # self-signed certificate); empty trusts the system's CAs.
    smtp_tls_ca_file: str = ""
    # Comma-separated triggers whose alerts wait for the rep's digest instead of going out
    # at once: threshold, account_intent.  Hand-raisers always go out at once.
    digest_triggers: str = ""
    # A rep gets at most one digest per interval.
    digest_interval_s: float = 3600.0
    # Leads listed in one digest message (the rest are counted).
    digest_max_items: int = 25
    # Flag web-pixel and click hits from HTTP libraries (curl, python-requests, aiohttp...)
    # or without a user agent as machines.  Off by default: load tests, the dev demo and
    # the e2e tests drive the pixel with such clients.  Crawlers are always flagged.
    machine_flag_http_clients: bool = False
    # --- Collector hardening (router/ingest/app.py)
    # Comma-separated CIDRs of the reverse proxies / load balancers in front of the collector whose
    # X-Forwarded-For is believed.  Empty: no proxy is trusted and the peer address is the client's.
    trusted_proxies: str = ""
    # Comma-separated exact origins (e.g. https://www.example.com) answered with the Origin reflected and
    # Access-Control-Allow-Credentials; any other origin gets "Access-Control-Allow-Origin: *" without.
    cors_origins: str = ""
    # Seconds a client has to send a request line and headers, from connecting or from the first byte
    # of a further request on a kept-alive connection; then the connection is closed.
    collector_header_timeout_s: float = 10.0
    # Seconds a handler waits for a whole request body; then 408 and the connection is closed.
    collector_body_timeout_s: float = 10.0
    # Seconds an idle keep-alive connection stays open between requests.
    collector_idle_timeout_s: float = 75.0
    # Names of the fields the environment set (not a setting itself).
    explicit: frozenset[str] = frozenset()

    @property
    def unique_identifier_set(self) -> frozenset[str]:
        return frozenset(x.strip() for x in self.unique_identifiers.split(",") if x.strip())

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port[,host:port]`` from the faust-style URL."""
        return ",".join(
            part.split("://", 1)[-1] for part in self.kafka_url.split(";") if part
        )

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment that makes another process build these settings."""
        env: dict[str, str] = {}
        for f in fields(self):
            if f.name == "explicit":
                continue
            value = getattr(self, f.name)
            env[f"LEADROUTER_{f.name.upper()}"] = (
                ("1" if value else "0") if isinstance(value, bool) else str(value)
            )
        env["KAFKA_URL"] = self.kafka_url
        env["REDIS_URL"] = self.redis_url
        return env


def _parse_bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    msg = f"setting {name}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off"
    raise SettingsError(msg)


def _parse_number(name: str, raw: str, kind: Callable[[str], Any]) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        msg = f"setting {name}={raw!r} is not a valid {kind.__name__}; set a number such as 10"
        raise SettingsError(msg) from None
    if not math.isfinite(value):
        msg = f"setting {name}={raw!r} must be a finite number; set a number such as 10"
        raise SettingsError(msg)
    if value < 0:
        msg = f"setting {name}={raw!r} must not be negative"
        raise SettingsError(msg)
    return value


# Well-known names that deployments already use, mapped to our fields.
_ALIASES: Mapping[str, str] = {
    "KAFKA_URL": "kafka_url",
    "REDIS_URL": "redis_url",
    "SLACK_WEBHOOK_URL": "slack_webhook_url",
    "SLACK_BOT_TOKEN": "slack_bot_token",
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the environment once into typed, frozen settings.

    ``LEADROUTER_<FIELD>`` sets any field; ``KAFKA_URL``, ``REDIS_URL``,
    ``SLACK_WEBHOOK_URL`` and ``SLACK_BOT_TOKEN`` are honoured as well and lose
    to the prefixed name when both are set.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, tuple[str, str]] = {}
    for alias, fname in _ALIASES.items():
        if env.get(alias):
            raw[fname] = (alias, env[alias])
    known = {f.name: f for f in fields(Settings)}
    for key, value in env.items():
        if key.startswith("LEADROUTER_"):
            fname = key[len("LEADROUTER_") :].lower()
            if fname not in known or fname == "explicit":
                names = [n for n in known if n != "explicit"]
                close = difflib.get_close_matches(fname, names, n=1, cutoff=0.6)
                hint = f"; did you mean LEADROUTER_{close[0].upper()}?" if close else ""
                msg = f"unknown setting {key}{hint}"
                raise SettingsError(msg)
            raw[fname] = (key, value)
    values: dict[str, Any] = {}
    defaults = Settings()
    for fname, (name, value) in raw.items():
        default = getattr(defaults, fname)
        if isinstance(default, bool):
            values[fname] = _parse_bool(name, value)
        elif isinstance(default, int):
            values[fname] = _parse_number(name, value, int)
        elif isinstance(default, float):
            values[fname] = _parse_number(name, value, float)
        elif isinstance(default, Path):
            values[fname] = Path(value)
        else:
            values[fname] = value
    settings = Settings(**values, explicit=frozenset(values))
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    if not s.kafka_url.startswith(("kafka://", "aiokafka://")):
        msg = f"setting KAFKA_URL={s.kafka_url!r} must start with kafka://, e.g. kafka://127.0.0.1:9092"
        raise SettingsError(msg)
    if not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        msg = f"setting REDIS_URL={s.redis_url!r} must start with redis://, e.g. redis://127.0.0.1:6379/0"
        raise SettingsError(msg)
    if s.topic_partitions < 1:
        msg = f"setting LEADROUTER_TOPIC_PARTITIONS={s.topic_partitions} must be at least 1"
        raise SettingsError(msg)
    unique = {x.strip() for x in s.unique_identifiers.split(",") if x.strip()}
    if not unique or not unique <= {"email", "user_id"}:
        msg = (f"setting LEADROUTER_UNIQUE_IDENTIFIERS={s.unique_identifiers!r} must list email and/or user_id, "
               "e.g. email or email,user_id")
        raise SettingsError(msg)
    if s.alert_max_attempts < 1:
        msg = f"setting LEADROUTER_ALERT_MAX_ATTEMPTS={s.alert_max_attempts} must be at least 1"
        raise SettingsError(msg)


def require_token_secret(s: Settings) -> str:
    if len(s.token_secret) < 16:
        msg = (
            "setting LEADROUTER_TOKEN_SECRET is missing or shorter than 16 characters; "
            "set it to a long random value, e.g. `python -c 'import secrets;print(secrets.token_urlsafe(32))'`"
        )
        raise SettingsError(msg)
    return s.token_secret
