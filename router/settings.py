"""The one settings object.

The environment is read once, here, into a frozen :class:`Settings` made of
typed, frozen sections (``settings.kafka``, ``settings.redis``, ...).  Nothing
else in the project reads ``os.environ``: every component gets the section(s)
it needs passed in.

Every variable keeps its flat name, ``LEADROUTER_<FLAT NAME>``; :data:`FIELDS`
maps each flat name to its (section, field).  Comma-separated values are parsed
here into typed tuples, so no component splits strings.  All problems are
collected and reported in one :class:`SettingsError`.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, cast

from router.errors import SettingsError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCORING = PACKAGE_ROOT / "scoring" / "scoring.yaml"
DEFAULT_RULES = PACKAGE_ROOT / "rules" / "routing.yaml"
DEFAULT_ICP = PACKAGE_ROOT / "scoring" / "icp.yaml"
DEFAULT_ACCOUNTS = PACKAGE_ROOT / "rules" / "accounts.yaml"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UniqueIdentifier = Literal["email", "user_id"]
DigestTrigger = Literal["threshold", "account_intent"]
FsyncPolicy = Literal["always", "interval", "never"]
PacerKind = Literal["redis", "local"]
# What one `leadrouter worker` process runs (router/worker/app.py): everything, or one side of the split.
WorkerRole = Literal["all", "scoring", "alerts"]

UNIQUE_IDENTIFIERS: tuple[UniqueIdentifier, ...] = ("email", "user_id")
DIGEST_TRIGGERS: tuple[DigestTrigger, ...] = ("threshold", "account_intent")
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "interval", "never")
PACER_KINDS: tuple[PacerKind, ...] = ("redis", "local")
WORKER_ROLES: tuple[WorkerRole, ...] = ("all", "scoring", "alerts")
# How long a counted event id is remembered (router.storage.keys.SEEN_WINDOW_S, in days):
# nothing anonymous may expire sooner, or a redelivered event could count twice.
DEDUPE_WINDOW_DAYS = 7.0


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    url: str = "kafka://127.0.0.1:9092"
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
    # After fetch_idle_after_s with no message, the worker's consumer waits this
    # long per fetch instead (idle: ~10 fetches a second instead of ~100, which
    # is most of an idle worker's and broker's CPU); the first message switches it
    # back.  0 keeps fetch_max_wait_ms always.  Brokers that answer a fetch as
    # soon as data arrives (Kafka) add no latency either way.
    fetch_idle_wait_ms: int = 100
    fetch_idle_after_s: float = 1.0
    broker_session_timeout_s: float = 10.0

    @property
    def bootstrap(self) -> str:
        """``host:port[,host:port]`` from the faust-style URL."""
        return ",".join(part.split("://", 1)[-1] for part in self.url.split(";") if part)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    # redis://host:port/db for one server; redis+cluster://host:port[,host:port...] for a Redis Cluster
    # (its nodes as seeds, database 0; router/storage/redis.py makes the cluster client).
    url: str = "redis://127.0.0.1:6379/0"
    # Socket and connect timeouts of the worker's, the CLI's and the dev stack's
    # clients; 0 waits as long as it takes.
    socket_timeout_s: float = 0.0
    connect_timeout_s: float = 0.0
    # The collector answers pixels and SDK calls: its (dedupe) Redis calls give up soon.
    collector_timeout_s: float = 0.5
    # The admin API, and the one-off reads at startup (published rules).
    admin_timeout_s: float = 5.0
    # `leadrouter admin token ...` commands and the backtest's data-key reads (socket; they connect
    # within admin_timeout_s).
    admin_cli_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    # all: scoring and alert delivery in one process (the default); scoring: the events topic, routing and
    # the timers that publish alerts (scheduler/SLA, review, config reload); alerts: the assignments topic
    # (Slack, email) and the digest timer.  Every role joins the same consumer group (kafka.app_id): faust's
    # assignor hands each member only partitions of topics it subscribes to, so a split deployment keeps the
    # offsets the single process committed (LEADROUTER_WORKER_ROLE; `leadrouter worker --role`).
    role: WorkerRole = "all"
    batch_size: int = 500
    batch_window_s: float = 0.02
    web_port: int = 6066
    # How often each worker runs the scheduler's tick (due recycles, SLA steps, SLA figures).
    scheduler_tick_s: float = 5.0
    # Identifiers two different people never share: email, and optionally user_id.
    unique_identifiers: frozenset[UniqueIdentifier] = frozenset({"email"})
    # A hand-raiser whose trust (scoring/trust.py) is below this goes to the review queue, not a rep
    # (0 turns review off).
    review_trust_below: float = 0.5
    # Archive every accepted event to files.archive_dir (LEADROUTER_WORKER_ARCHIVE).
    archive: bool = True
    # Anonymous profiles (no email: ``A``/``U`` leads), their identity links, account ties
    # and account-member entries expire this long after their last event (each event
    # refreshes it); 0 keeps them forever.  At least the de-duplication window (7 days).
    anonymous_ttl_days: float = 90.0
    # A visitor id or user id linked to a known lead is kept this long after it was last
    # used (default: the collector's cookie lifetime, 395 days); 0 keeps it forever.
    known_link_ttl_days: float = 395.0

    @property
    def anonymous_ttl_s(self) -> int:
        return round(self.anonymous_ttl_days * 86400)

    @property
    def known_link_ttl_s(self) -> int:
        return round(self.known_link_ttl_days * 86400)


@dataclass(frozen=True, slots=True)
class IngestSettings:
    collector_host: str = "127.0.0.1"
    collector_port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    cookie_name: str = "lr_vid"
    cookie_max_age_s: int = 60 * 60 * 24 * 395
    cookie_secure: bool = False
    # Write keys the Segment-compatible API accepts, each with the event ``source``
    # (``KEY=label`` in the variable, default "segment").  Empty switches the API off.
    segment_write_keys: tuple[tuple[str, str], ...] = ()
    # Track events that count as a form fill when they carry an email (compared case-,
    # space- and underscore-insensitively).
    segment_form_events: tuple[str, ...] = ("Form Submitted", "Signed Up", "Demo Requested")
    # How long a (write key, messageId) or Snowplow event id is remembered to drop retries.
    message_dedupe_ttl_s: int = 2 * 24 * 3600
    snowplow_enabled: bool = True
    # Snowplow app ids (``aid``) accepted; empty accepts any.
    snowplow_app_ids: tuple[str, ...] = ()
    # An email open or click this soon after the send is a machine's (scanner, prefetch).
    machine_open_delay_s: float = 2.0
    # Address ranges whose hits are always a machine's (scanners, office egress, ...).
    machine_networks: tuple[Network, ...] = ()
    # Flag web-pixel and click hits from HTTP libraries (curl, python-requests, aiohttp...)
    # or without a user agent as machines.  Off by default: load tests, the dev demo and
    # the e2e tests drive the pixel with such clients.  Crawlers are always flagged.
    machine_flag_http_clients: bool = False
    # Reverse proxies / load balancers in front of the collector whose X-Forwarded-For is
    # believed.  Empty: no proxy is trusted and the peer address is the client's.
    trusted_proxies: tuple[Network, ...] = ()
    # Exact origins (e.g. https://www.example.com) answered with the Origin reflected and
    # Access-Control-Allow-Credentials; any other origin gets "Access-Control-Allow-Origin: *" without.
    cors_origins: tuple[str, ...] = ()
    # Seconds a client has to send a request line and headers, from connecting or from the first byte
    # of a further request on a kept-alive connection; then the connection is closed (0: no limit).
    collector_header_timeout_s: float = 10.0
    # Seconds a handler waits for a whole request body; then 408 and the connection is closed (0: no limit).
    collector_body_timeout_s: float = 10.0
    # Seconds an idle keep-alive connection stays open between requests.
    collector_idle_timeout_s: float = 75.0
    # Rate limits (router/ingest/ratelimit.py): requests per client address and per visitor id in each
    # fixed window of rate_limit_window_s, counted in Redis so every collector shares them; 0 turns one off.
    rate_limit_window_s: int = 60
    rate_limit_form_per_ip: int = 20
    rate_limit_form_per_visitor: int = 5
    rate_limit_pixel_per_ip: int = 3000
    rate_limit_pixel_per_visitor: int = 300
    rate_limit_sdk_per_ip: int = 6000
    # Hidden form fields no person fills (honeypots): a form with one filled is accepted (202) but
    # flagged as spam (trust 0, machine 1.0), earns no points and never raises a hand.
    form_honeypot_fields: tuple[str, ...] = ("company_website",)
    # One domain a line: disposable email domains that lower a form's trust ("" = the shipped list,
    # router/ingest/disposable_domains.txt).
    disposable_domains_file: str = ""
    # /metrics is served on its own listener, never on the public collector port (issue 16.8):
    # loopback by default; a container sets the host to 0.0.0.0 on its private network.  Port 0: none.
    collector_metrics_host: str = "127.0.0.1"
    collector_metrics_port: int = 9108


@dataclass(frozen=True, slots=True)
class SpoolSettings:
    """The local durable spool in front of Kafka (router/ingest/spool.py)."""

    dir: Path = Path("var/spool")
    max_bytes: int = 1024 * 1024 * 1024
    segment_bytes: int = 16 * 1024 * 1024
    # always: a form/API request is answered after its event is fsynced (group commit); a beacon
    # (pixel, open, click) once written, fsynced within fsync_interval_s;
    # interval: fsync every fsync_interval_s; never: leave it to the OS.
    fsync: FsyncPolicy = "always"
    fsync_interval_s: float = 0.2
    # Retry-After (seconds) sent with the 503 when the spool is full.
    retry_after_s: int = 30
    # After the broker fails to answer a send, wait this long once it is back before
    # checking which of the unanswered events landed anyway (so none is sent twice).
    recheck_delay_s: float = 1.0
    # How long the forwarder waits for the broker to acknowledge one batch.
    send_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class FilesSettings:
    """Config files edited by ops, and the model registry."""

    scoring_file: Path = DEFAULT_SCORING
    rules_file: Path = DEFAULT_RULES
    icp_file: Path = DEFAULT_ICP
    accounts_file: Path = DEFAULT_ACCOUNTS
    model_registry_dir: Path = Path("var/models")
    # Accepted events, archived by the workers as day-partitioned gzip JSON lines for backtests and
    # model training (router/storage/archive.py); LEADROUTER_WORKER_ARCHIVE=0 turns it off.
    archive_dir: Path = Path("var/archive")
    # Day folders older than this are deleted by the workers (0: keep everything).
    archive_retention_days: int = 400


# Used when LEADROUTER_PII_KEY is unset (tests, `leadrouter dev` without one): erasure then
# protects nothing against anyone who has read this file.
DEV_PII_KEY = "leadrouter-development-pii-key-not-for-production"


@dataclass(frozen=True, slots=True)
class TokenSettings:
    secret: str = ""
    ttl_s: int = 60 * 60 * 24 * 90
    # The master key for personal data (LEADROUTER_PII_KEY): keyed hashes of emails (person
    # subjects, tombstones), pseudonymous visitor and user ids, and the wrapping of the per-person
    # data keys that seal personal fields in the spool and Kafka.  Required in production (16+
    # characters); empty uses a built-in development key, with a warning.  Never change it on a
    # running system: every pseudonym and wrapped key depends on it.
    pii_key: str = ""

    def pii_master(self) -> tuple[str, bool]:
        """(the personal-data master key, whether it is the built-in development key)."""
        if self.pii_key:
            return self.pii_key, False
        return DEV_PII_KEY, True

    def require_secret(self) -> str:
        if len(self.secret) < 16:
            msg = (
                "setting LEADROUTER_TOKEN_SECRET is missing or shorter than 16 characters; "
                "set it to a long random value, e.g. `python -c 'import secrets;print(secrets.token_urlsafe(32))'`"
            )
            raise SettingsError(msg)
        return self.secret


@dataclass(frozen=True, slots=True)
class AlertSettings:
    # Where reps act on a lead (the admin API); alert buttons link here. Empty: no links.
    admin_url: str = ""
    # How long an alert's one-time accept/reject link works (it also stops when the lead is
    # reassigned or handled).  72 h covers a Friday-evening alert until Monday morning; a rep
    # can always act later from the admin API or `leadrouter leads`.
    link_ttl_s: int = 72 * 3600
    slack_webhook_url: str = ""
    slack_api_url: str = "https://slack.com/api"
    slack_bot_token: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_from: str = "leadrouter@localhost"
    # Implicit TLS (SMTPS, usually port 465) instead of plain SMTP (+ optional STARTTLS).
    smtp_ssl: bool = False
    # PEM file of the CA(s) that sign the SMTP server's certificate; empty trusts the system's CAs.
    smtp_tls_ca_file: str = ""
    # Open (and logged-in) SMTP connections are kept for the next alerts, at most one per concurrent
    # send (4); one idle this long is closed (QUIT).  0 opens a connection per message.  Keep it below
    # the server's own idle timeout (Postfix: 300 s) to spare reconnects after it hangs up.
    smtp_pool_idle_s: float = 30.0
    max_attempts: int = 5
    backoff_s: float = 0.5
    # The longest single wait between two attempts on a channel (full jitter is capped here;
    # a server's Retry-After still wins when it is longer).
    backoff_max_s: float = 30.0
    timeout_s: float = 10.0
    # Slack accepts about one message per second per channel: messages per second and burst
    # per webhook / per DM channel.  0 switches pacing off.
    slack_rate_per_s: float = 1.0
    slack_burst: int = 1
    # redis: one token bucket per channel in Redis, shared by every worker (falls back to
    # the process's own pacer while Redis fails); local: this process only.
    slack_pacer: PacerKind = "redis"
    # Triggers whose alerts wait for the rep's digest instead of going out at once.
    # Hand-raisers always go out at once.
    digest_triggers: frozenset[DigestTrigger] = frozenset()
    # A rep gets at most one digest per interval.
    digest_interval_s: float = 3600.0
    # Leads listed in one digest message (the rest are counted).
    digest_max_items: int = 25


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin HTTP API for ops and reps (router/admin; `leadrouter admin`)."""

    host: str = "127.0.0.1"
    port: int = 8081
    # Largest request body the admin API reads (rules YAML, simulate leads), in bytes; more is a 413.
    max_body_bytes: int = 2 * 1024 * 1024
    # Largest rules or test-case YAML text the rules endpoints compile, in bytes; more is a 413.
    max_rules_bytes: int = 256 * 1024
    # Most leads one POST /v1/rules/simulate routes; more is a 413.
    simulate_max_leads: int = 5000
    # Days a new admin bearer token works (`token create --ttl-days` overrides); a token stored
    # without an expiry (made before expiry existed) expires this long after it was created.
    token_ttl_days: float = 90.0
    # How long an ops console sign-in lasts (seconds of inactivity are not counted: it is
    # an absolute lifetime); the session is also ended when its admin token is revoked.
    console_session_ttl_s: float = 12 * 3600.0
    # The CRM outcome webhook (POST /v1/webhooks/crm, router/admin/webhook.py): the shared HMAC-SHA256
    # secret (empty: the endpoint refuses every call), how far a delivery's timestamp may be from now
    # (and how long a delivery is remembered against replays), and the largest body it reads.
    crm_webhook_secret: str = field(default="", repr=False)
    crm_webhook_window_s: float = 300.0
    crm_webhook_max_bytes: int = 16 * 1024
    # The console's Live page (Server-Sent Events): a comment line this often keeps proxies from closing
    # an idle stream and finds browsers that went away, so their stream is closed and freed.
    console_live_heartbeat_s: float = 15.0
    # Most Live streams one console session may hold open (a browser's tabs), and all sessions together:
    # each holds a connection and a queue, so one signed-in user cannot take the admin's memory or sockets.
    console_live_streams_per_session: int = 4
    console_live_streams_max: int = 200
    # The Prometheus endpoints of the collectors and workers (comma-separated URLs such as
    # http://10.0.0.5:9108/metrics,http://10.0.0.6:6066/metrics) the console's Health page reads and sums.
    metrics_urls: tuple[str, ...] = ()
    # Seconds between the health samples kept in Redis for the Health page's sparklines.
    health_sample_s: float = 30.0


_SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaSettings,
    "redis": RedisSettings,
    "worker": WorkerSettings,
    "ingest": IngestSettings,
    "spool": SpoolSettings,
    "files": FilesSettings,
    "tokens": TokenSettings,
    "alerts": AlertSettings,
    "admin": AdminSettings,
}


def _section_fields(section: str, renames: Mapping[str, str] | None = None,
                    prefix: str = "") -> dict[str, tuple[str, str]]:
    """Flat name -> (section, field) for one section: ``prefix + field`` unless renamed."""
    renamed = dict(renames or {})
    out: dict[str, tuple[str, str]] = {}
    for f in fields(_SECTIONS[section]):
        flat = next((k for k, v in renamed.items() if v == f.name), prefix + f.name)
        out[flat] = (section, f.name)
    return out


# Flat name (the variable is LEADROUTER_<FLAT NAME>) -> (section, field); "" is Settings itself.
FIELDS: Mapping[str, tuple[str, str]] = {
    **_section_fields("kafka", {"kafka_url": "url"}),
    **_section_fields("redis", prefix="redis_"),
    **_section_fields("worker", {"unique_identifiers": "unique_identifiers", "anonymous_ttl_days": "anonymous_ttl_days",
                                 "known_link_ttl_days": "known_link_ttl_days"}, prefix="worker_"),
    **_section_fields("ingest"),
    **_section_fields("spool", prefix="spool_"),
    **_section_fields("files"),
    **_section_fields("tokens", {"pii_key": "pii_key"}, prefix="token_"),
    **_section_fields("alerts", {"alert_max_attempts": "max_attempts", "alert_backoff_s": "backoff_s",
                                 "alert_backoff_max_s": "backoff_max_s", "alert_timeout_s": "timeout_s",
                                 "alert_link_ttl_s": "link_ttl_s"}),
    **_section_fields("admin", prefix="admin_"),
    "log_level": ("", "log_level"),
}

# Well-known names that deployments already use, mapped to our flat names.
_ALIASES: Mapping[str, str] = {
    "KAFKA_URL": "kafka_url",
    "REDIS_URL": "redis_url",
    "SLACK_WEBHOOK_URL": "slack_webhook_url",
    "SLACK_BOT_TOKEN": "slack_bot_token",
}


def env_name(flat: str) -> str:
    return f"LEADROUTER_{flat.upper()}"


# --------------------------------------------------------------------------- the settings


@dataclass(frozen=True, slots=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    files: FilesSettings = field(default_factory=FilesSettings)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    log_level: str = "INFO"
    # Flat names of the settings the environment set (not a setting itself).
    explicit: frozenset[str] = frozenset()

    @classmethod
    def of(cls, **flat: Any) -> Settings:
        """The defaults changed by flat names (typed values or strings as in the environment)."""
        return cls().with_(**flat)

    def with_(self, **flat: Any) -> Settings:
        """A validated copy with flat-named settings changed (typed values or strings)."""
        problems: list[str] = []
        values: dict[str, Any] = {}
        for name, value in flat.items():
            if name not in FIELDS:
                problems.append(_unknown(name, env=False))
                continue
            try:
                values[name] = _coerce(name, value)
            except SettingsError as exc:
                problems.append(str(exc))
        out = self._replaced(values)
        _raise(problems + [p for n, p in _check(out) if n in values or n not in flat])
        return out

    def value(self, flat: str) -> Any:
        """The value of one setting by its flat name (``settings.value("collector_port")``)."""
        section, name = FIELDS[flat]
        return getattr(getattr(self, section) if section else self, name)

    def to_env(self) -> dict[str, str]:
        """The environment that makes another process build these settings."""
        env = {env_name(flat): _format(self.value(flat)) for flat in FIELDS}
        env["KAFKA_URL"] = self.kafka.url
        env["REDIS_URL"] = self.redis.url
        return env

    def _replaced(self, values: Mapping[str, Any]) -> Settings:
        by_section: dict[str, dict[str, Any]] = {}
        for flat, value in values.items():
            section, name = FIELDS[flat]
            by_section.setdefault(section, {})[name] = value
        top = by_section.pop("", {})
        sections = {s: replace(getattr(self, s), **changes) for s, changes in by_section.items()}
        return replace(self, **sections, **top)


# --------------------------------------------------------------------------- parsing


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


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def parse_write_keys(raw: str) -> tuple[tuple[str, str], ...]:
    """``"wk1,wk2=rudderstack"`` -> ((write key, event source), ...)."""
    out: dict[str, str] = {}
    for part in _split(raw):
        key, _, label = part.partition("=")
        out[key.strip()] = (label.strip() or "segment")[:32]
    return tuple(out.items())


def parse_networks(raw: str, setting: str = "LEADROUTER_MACHINE_NETWORKS") -> tuple[Network, ...]:
    """Comma- or space-separated CIDRs (a bare address is a /32 or /128)."""
    out: list[Network] = []
    for part in re.split(r"[,\s]+", raw.strip()):
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            msg = f"setting {setting} has {part!r}, which is not an address range; use CIDRs like 192.0.2.0/24"
            raise SettingsError(msg) from None
    return tuple(out)


def parse_origins(raw: str | Iterable[str]) -> tuple[str, ...]:
    """``LEADROUTER_CORS_ORIGINS``: comma- or space-separated exact origins (scheme://host[:port])."""
    parts = re.split(r"[,\s]+", raw.strip()) if isinstance(raw, str) else [str(p).strip() for p in raw]
    out: list[str] = []
    for part in parts:
        if not part:
            continue
        if not re.fullmatch(r"https?://[^/?#\s]+", part):
            msg = (f"setting LEADROUTER_CORS_ORIGINS has {part!r}, which is not an origin; list exact origins "
                   "like https://www.example.com (scheme and host, no path or trailing slash)")
            raise SettingsError(msg)
        if part not in out:
            out.append(part)
    return tuple(out)


def parse_triggers(raw: str | Iterable[str]) -> frozenset[DigestTrigger]:
    """The comma-separated ``LEADROUTER_DIGEST_TRIGGERS``; raises SettingsError naming the setting."""
    parts = _split(raw) if isinstance(raw, str) else [p.strip() for p in raw if p.strip()]
    names = {part.lower().replace("-", "_") for part in parts}
    if "hand_raiser" in names:
        msg = ("setting LEADROUTER_DIGEST_TRIGGERS names hand_raiser: hand-raisers always go out at once; "
               "use threshold and/or account_intent")
        raise SettingsError(msg)
    unknown = sorted(names - set(DIGEST_TRIGGERS))
    if unknown:
        msg = (f"setting LEADROUTER_DIGEST_TRIGGERS has unknown trigger(s) {', '.join(unknown)}; "
               f"use threshold and/or account_intent")
        raise SettingsError(msg)
    return frozenset(cast("set[DigestTrigger]", names))


def parse_unique_identifiers(raw: str | Iterable[str]) -> frozenset[UniqueIdentifier]:
    parts = _split(raw) if isinstance(raw, str) else [p.strip() for p in raw if p.strip()]
    names = set(parts)
    if not names or not names <= set(UNIQUE_IDENTIFIERS):
        shown = raw if isinstance(raw, str) else ",".join(parts)
        msg = (f"setting LEADROUTER_UNIQUE_IDENTIFIERS={shown!r} must list email and/or user_id, "
               "e.g. email or email,user_id")
        raise SettingsError(msg)
    return frozenset(cast("set[UniqueIdentifier]", names))


def _parse_choice(name: str, raw: str, choices: tuple[str, ...], *, fold: bool) -> str:
    value = raw.strip().lower() if fold else raw
    if value not in choices:
        msg = (f"setting {name}={raw!r} is not one of: {', '.join(choices)}" if fold else
               f"setting {name}={raw!r} is not a policy; use one of {', '.join(choices)}")
        raise SettingsError(msg)
    return value


def _parse_text_list(raw: str | Iterable[str]) -> tuple[str, ...]:
    return tuple(_split(raw) if isinstance(raw, str) else (p.strip() for p in raw if p.strip()))


_DEFAULTS: dict[str, Any] = {}


def _default(flat: str) -> Any:
    if not _DEFAULTS:
        base = Settings()
        _DEFAULTS.update({name: base.value(name) for name in FIELDS})
    return _DEFAULTS[flat]


def _parse(flat: str, raw: str) -> Any:
    """One variable's text as its typed value; raises SettingsError naming the variable."""
    name = env_name(flat)
    special: dict[str, Callable[[str], Any]] = {
        "segment_write_keys": parse_write_keys,
        "segment_form_events": _parse_text_list,
        "snowplow_app_ids": _parse_text_list,
        "form_honeypot_fields": _parse_text_list,
        "admin_metrics_urls": _parse_text_list,
        "machine_networks": parse_networks,
        "trusted_proxies": lambda r: parse_networks(r, "LEADROUTER_TRUSTED_PROXIES"),
        "cors_origins": parse_origins,
        "digest_triggers": parse_triggers,
        "unique_identifiers": parse_unique_identifiers,
        "spool_fsync": lambda r: _parse_choice(name, r, FSYNC_POLICIES, fold=False),
        "slack_pacer": lambda r: _parse_choice(name, r, PACER_KINDS, fold=True),
        "worker_role": lambda r: _parse_choice(name, r, WORKER_ROLES, fold=True),
    }
    if flat in special:
        return special[flat](raw)
    default = _default(flat)
    if isinstance(default, bool):
        return _parse_bool(name, raw)
    if isinstance(default, int):
        return _parse_number(name, raw, int)
    if isinstance(default, float):
        return _parse_number(name, raw, float)
    if isinstance(default, Path):
        return Path(raw)
    return raw


def _coerce(flat: str, value: Any) -> Any:
    """A value given in code: strings are parsed like the environment, typed values normalised."""
    if isinstance(value, str):
        return _parse(flat, value)
    default = _default(flat)
    if flat == "segment_write_keys":
        items = value.items() if isinstance(value, Mapping) else value
        return tuple((str(k), str(v)) for k, v in items)
    if flat in ("machine_networks", "trusted_proxies"):
        return tuple(ipaddress.ip_network(n, strict=False) if isinstance(n, str) else n for n in value)
    if flat == "cors_origins":
        return parse_origins(value)
    if flat == "digest_triggers":
        return parse_triggers(value)
    if flat == "unique_identifiers":
        return parse_unique_identifiers(value)
    if isinstance(default, tuple):
        return _parse_text_list(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, Path):
        return Path(value)
    return value


def _format(value: Any) -> str:
    """A typed value as the text :func:`_parse` reads back."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, frozenset):
        return ",".join(sorted(str(v) for v in value))
    if isinstance(value, tuple):
        return ",".join("=".join(v) if isinstance(v, tuple) else str(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------- loading and validation


def _unknown(name: str, *, env: bool = True) -> str:
    flat = name[len("LEADROUTER_"):].lower() if env else name
    close = difflib.get_close_matches(flat, list(FIELDS), n=1, cutoff=0.6)
    if env:
        hint = f"; did you mean {env_name(close[0])}?" if close else ""
        return f"unknown setting {name}{hint}"
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown setting {name!r}{hint}"


def _raise(problems: list[str]) -> None:
    if not problems:
        return
    if len(problems) == 1:
        raise SettingsError(problems[0])
    listed = "\n".join(f"  - {p}" for p in problems)
    msg = f"{len(problems)} settings problems:\n{listed}"
    raise SettingsError(msg)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the environment once into typed, frozen settings.

    ``LEADROUTER_<FLAT NAME>`` sets any setting; ``KAFKA_URL``, ``REDIS_URL``,
    ``SLACK_WEBHOOK_URL`` and ``SLACK_BOT_TOKEN`` are honoured as well and lose
    to the prefixed name when both are set.  Every problem (unknown names, bad
    values, values that cannot work together) is reported in one SettingsError.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, tuple[str, str]] = {}
    for alias, flat in _ALIASES.items():
        if env.get(alias):
            raw[flat] = (alias, env[alias])
    problems: list[str] = []
    for key, value in sorted(env.items()):
        if key.startswith("LEADROUTER_"):
            flat = key[len("LEADROUTER_"):].lower()
            if flat not in FIELDS:
                problems.append(_unknown(key))
                continue
            raw[flat] = (key, value)
    values: dict[str, Any] = {}
    bad: set[str] = set()
    for flat, (_, value) in raw.items():
        try:
            values[flat] = _parse(flat, value)
        except SettingsError as exc:
            problems.append(str(exc))
            bad.add(flat)
    settings = replace(Settings()._replaced(values), explicit=frozenset(raw))
    problems += [p for flat, p in _check(settings) if flat not in bad]
    _raise(problems)
    return settings


def _check(s: Settings) -> list[tuple[str, str]]:
    """Values that parse but cannot work: (flat name, problem)."""
    out: list[tuple[str, str]] = []
    for url in s.admin.metrics_urls:
        if not url.startswith(("http://", "https://")) or len(url) > 500:
            out.append(("admin_metrics_urls", f"setting LEADROUTER_ADMIN_METRICS_URLS has {url[:80]!r}, which is "
                                              "not an http(s) URL; list the collectors' and workers' metrics "
                                              "endpoints, e.g. http://10.0.0.5:9108/metrics"))
    if not s.admin.health_sample_s >= 1:
        out.append(("admin_health_sample_s", f"setting LEADROUTER_ADMIN_HEALTH_SAMPLE_S={s.admin.health_sample_s} "
                                             "must be at least 1 (seconds), e.g. 30"))
    if not 0 <= s.kafka.fetch_idle_wait_ms <= 5000:
        out.append(("fetch_idle_wait_ms", f"setting LEADROUTER_FETCH_IDLE_WAIT_MS={s.kafka.fetch_idle_wait_ms} "
                                          "must be 0 (off) to 5000 milliseconds, e.g. 100"))
    if not s.kafka.fetch_idle_after_s > 0:
        out.append(("fetch_idle_after_s", f"setting LEADROUTER_FETCH_IDLE_AFTER_S={s.kafka.fetch_idle_after_s} "
                                          "must be above 0 seconds, e.g. 1.0"))
    if not s.kafka.url.startswith(("kafka://", "aiokafka://")):
        out.append(("kafka_url", f"setting KAFKA_URL={s.kafka.url!r} must start with kafka://, "
                                 "e.g. kafka://127.0.0.1:9092"))
    if not s.redis.url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
        out.append(("redis_url", f"setting REDIS_URL={s.redis.url!r} must start with redis:// (or redis+cluster:// "
                                 "for a Redis Cluster), e.g. redis://127.0.0.1:6379/0"))
    for flat, value in (("topic_partitions", s.kafka.topic_partitions),
                        ("alert_max_attempts", s.alerts.max_attempts),
                        ("slack_burst", s.alerts.slack_burst)):
        if value < 1:
            out.append((flat, f"setting {env_name(flat)}={value} must be at least 1"))
    if not 0.1 <= s.worker.scheduler_tick_s <= 3600:
        out.append(("worker_scheduler_tick_s", f"setting LEADROUTER_WORKER_SCHEDULER_TICK_S="
                                               f"{s.worker.scheduler_tick_s} must be from 0.1 to 3600 seconds, e.g. 5"))
    if s.spool.max_bytes < 1024 or s.spool.segment_bytes < 1024:
        out.append(("spool_max_bytes", "settings LEADROUTER_SPOOL_MAX_BYTES and LEADROUTER_SPOOL_SEGMENT_BYTES "
                                       "must be at least 1024"))
    if s.tokens.pii_key and len(s.tokens.pii_key) < 16:
        out.append(("pii_key", "setting LEADROUTER_PII_KEY is shorter than 16 characters; set it to a long random "
                               "value, e.g. `python -c 'import secrets;print(secrets.token_urlsafe(32))'`"))
    if not 0 <= s.admin.port <= 65535:
        out.append(("admin_port", f"setting LEADROUTER_ADMIN_PORT={s.admin.port} is not a TCP port; "
                                  "use 1-65535, e.g. 8081"))
    if s.admin.simulate_max_leads < 1:
        out.append(("admin_simulate_max_leads", "setting LEADROUTER_ADMIN_SIMULATE_MAX_LEADS must be at least 1"))
    for flat, value in (("admin_console_live_streams_per_session", s.admin.console_live_streams_per_session),
                        ("admin_console_live_streams_max", s.admin.console_live_streams_max)):
        if value < 1:
            out.append((flat, f"setting {env_name(flat)}={value} must be at least 1, e.g. 4 per session, 200 in all"))
    for flat, days in (("anonymous_ttl_days", s.worker.anonymous_ttl_days),
                       ("known_link_ttl_days", s.worker.known_link_ttl_days)):
        if days != 0 and not DEDUPE_WINDOW_DAYS <= days < 100 * 365:
            out.append((flat, f"setting {env_name(flat)}={days:g} must be 0 (never expire) or from "
                              f"{DEDUPE_WINDOW_DAYS:g} days (the event de-duplication window, so a redelivered event "
                              f"is never counted twice) to a century; e.g. 90"))
    if s.admin.max_body_bytes < 1024 or s.admin.max_rules_bytes < 1024:
        out.append(("admin_max_body_bytes", "settings LEADROUTER_ADMIN_MAX_BODY_BYTES and _MAX_RULES_BYTES "
                                            "must be at least 1024"))
    if not 1 <= s.admin.token_ttl_days <= 3660:
        out.append(("admin_token_ttl_days", f"setting LEADROUTER_ADMIN_TOKEN_TTL_DAYS={s.admin.token_ttl_days:g} "
                                            "must be from 1 to 3660 days, e.g. 90"))
    if not 0 <= s.alerts.smtp_pool_idle_s <= 3600:
        out.append(("smtp_pool_idle_s", f"setting LEADROUTER_SMTP_POOL_IDLE_S={s.alerts.smtp_pool_idle_s:g} must be "
                                        "0 (a connection per message) to 3600 seconds, e.g. 30"))
    if not 300 <= s.alerts.link_ttl_s <= 14 * 86400:
        out.append(("alert_link_ttl_s", f"setting LEADROUTER_ALERT_LINK_TTL_S={s.alerts.link_ttl_s} must be from "
                                        "300 (5 minutes) to 1209600 (14 days), e.g. 259200 (72 h)"))
    if not 0 <= s.ingest.collector_metrics_port <= 65535:
        out.append(("collector_metrics_port", f"setting LEADROUTER_COLLECTOR_METRICS_PORT="
                                              f"{s.ingest.collector_metrics_port} is not a TCP port; use 1-65535 "
                                              "(e.g. 9108), or 0 to serve no metrics"))
    elif (s.ingest.collector_metrics_port == s.ingest.collector_port
          and s.ingest.collector_metrics_port != 0):
        out.append(("collector_metrics_port", f"setting LEADROUTER_COLLECTOR_METRICS_PORT="
                                              f"{s.ingest.collector_metrics_port} is the public collector port; "
                                              "metrics need their own port, e.g. 9108"))
    return out


def require_token_secret(s: Settings) -> str:
    return s.tokens.require_secret()
