"""Every Prometheus metric, declared together with explicit units and buckets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_FAST_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_E2E_S = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

# Collector
COLLECTOR_REQUESTS = Counter(
    "leadrouter_collector_requests_total", "HTTP requests by endpoint and outcome.",
    ["endpoint", "outcome"], registry=REGISTRY,
)
COLLECTOR_INVALID = Counter(
    "leadrouter_collector_invalid_total", "Rejected or ignored input by endpoint and field.",
    ["endpoint", "field"], registry=REGISTRY,
)
COLLECTOR_LATENCY = Histogram(
    "leadrouter_collector_request_seconds", "Collector request handling time in seconds.",
    ["endpoint"], buckets=_FAST_S, registry=REGISTRY,
)
PRODUCE_FAILURES = Counter(
    "leadrouter_produce_failures_total", "Events that could not be produced to Kafka.",
    ["topic"], registry=REGISTRY,
)

# Worker
EVENTS = Counter(
    "leadrouter_events_total", "Events processed by type and outcome (scored, fired, duplicate, invalid).",
    ["type", "outcome"], registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "leadrouter_worker_batch_seconds", "Time to score and store one batch of events, in seconds.",
    buckets=_FAST_S, registry=REGISTRY,
)
EVENT_TO_WORKER_SECONDS = Histogram(
    "leadrouter_event_to_worker_seconds",
    "From the collector receiving an event to a worker starting to score it (spool, Kafka, fetch and batching).",
    buckets=(0.005, 0.01, *_E2E_S), registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "leadrouter_worker_batch_events", "Events per processed batch.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000), registry=REGISTRY,
)
CROSSINGS = Counter(
    "leadrouter_crossings_total", "Sales-ready crossings by trigger.", ["trigger"], registry=REGISTRY,
)
REENGAGEMENTS = Counter(
    "leadrouter_reengagements_total",
    "Leads that crossed again, by the stage they came back from and where the alert went "
    "(owner, owner_notified, owner_away, rules).",
    ["from_stage", "route"], registry=REGISTRY,
)
ASSIGNMENTS = Counter(
    "leadrouter_assignments_total", "Leads assigned by team and rep.", ["team", "rep"], registry=REGISTRY,
)
ROUTING_SECONDS = Histogram(
    "leadrouter_routing_seconds", "Time to route one crossing (rules, turn, record, publish), in seconds.",
    buckets=_FAST_S, registry=REGISTRY,
)
EVENT_TO_ALERT_SECONDS = Histogram(
    "leadrouter_event_to_alert_seconds", "From the collector receiving the event to the alert being delivered.",
    ["channel"], buckets=_E2E_S, registry=REGISTRY,
)
ALERT_SENDS = Counter(
    "leadrouter_alert_sends_total", "Alert deliveries by channel and outcome (sent, failed, skipped).",
    ["channel", "outcome"], registry=REGISTRY,
)
ARCHIVED = Counter(
    "leadrouter_archived_events_total", "Events the workers archived (written) or could not archive (failed).",
    ["outcome"], registry=REGISTRY,
)
CONFIG_RELOADS = Counter(
    "leadrouter_config_reloads_total", "Config file reloads by file and outcome (loaded, rejected).",
    ["file", "outcome"], registry=REGISTRY,
)
CONFIG_VERSION = Gauge(
    "leadrouter_config_info", "The config version in force (value 1).", ["file", "version"], registry=REGISTRY,
)

# SDK ingest, machine detection, privacy and the spool (collector side)
SDK_MESSAGES = Counter(
    "leadrouter_sdk_messages_total",
    "SDK messages by API (segment, snowplow), message type and outcome "
    "(accepted, duplicate, invalid, ignored, refused).",
    ["api", "type", "outcome"], registry=REGISTRY,
)
DEDUPE_UNAVAILABLE = Counter(
    "leadrouter_collector_dedupe_unavailable_total",
    "Message-id de-duplication skipped because Redis did not answer (messages were accepted).",
    registry=REGISTRY,
)
MACHINE_FLAGGED = Counter(
    "leadrouter_collector_machine_flagged_total",
    "Events flagged as (probably) a machine's by event type and first reason.",
    ["type", "reason"], registry=REGISTRY,
)
FORGOTTEN_DROPPED = Counter(
    "leadrouter_forgotten_dropped_total",
    "Events of a forgotten person dropped before they were stored, by where (collector endpoint, worker, alerts).",
    ["where"], registry=REGISTRY,
)
PII_ESCROWED = Counter(
    "leadrouter_pii_escrowed_total",
    "Events with personal data sealed under the escrow key because the data-key store (Redis) did not "
    "answer (not shreddable by forget), by endpoint.",
    ["endpoint"], registry=REGISTRY,
)
PRIVACY_SKIPPED = Counter(
    "leadrouter_collector_privacy_total",
    "Hits honoured for privacy by endpoint and signal (dnt, gpc, consent_false): no cookie, and for "
    "anonymous pixels no event.",
    ["endpoint", "signal"], registry=REGISTRY,
)
SPOOL_BYTES = Gauge(
    "leadrouter_spool_bytes", "Bytes of spool segment files on disk.", registry=REGISTRY,
)
SPOOL_EVENTS = Gauge(
    "leadrouter_spool_pending_events", "Spooled events not yet acknowledged by Kafka.", registry=REGISTRY,
)
SPOOL_REFUSED = Counter(
    "leadrouter_spool_refused_total", "Events refused because the spool was full, by endpoint.",
    ["endpoint"], registry=REGISTRY,
)
SPOOL_FORWARDED = Counter(
    "leadrouter_spool_forwarded_total", "Spooled events acknowledged by Kafka (or found already there).",
    ["outcome"], registry=REGISTRY,
)
SPOOL_SEND_FAILURES = Counter(
    "leadrouter_spool_send_failures_total", "Batches the broker did not acknowledge (they are retried).",
    registry=REGISTRY,
)
SPOOL_CORRUPT = Counter(
    "leadrouter_spool_corrupt_lines_total", "Unreadable spool lines skipped or truncated during recovery.",
    registry=REGISTRY,
)
SPOOL_FSYNC_SECONDS = Histogram(
    "leadrouter_spool_fsync_seconds", "Time of one spool group-commit fsync, in seconds.",
    buckets=_FAST_S, registry=REGISTRY,
)

# Admin HTTP API (router/admin/app.py)
ADMIN_REQUESTS = Counter(
    "leadrouter_admin_requests_total", "Admin API requests by route template, method and status code.",
    ["route", "method", "status"], registry=REGISTRY,
)
ADMIN_LATENCY = Histogram(
    "leadrouter_admin_request_seconds", "Admin API request handling time in seconds, by route template.",
    ["route"], buckets=_FAST_S, registry=REGISTRY,
)
ADMIN_AUTH_FAILURES = Counter(
    "leadrouter_admin_auth_failures_total",
    "Admin API requests refused by reason (missing_token, malformed_token, unknown_token, expired_token, forbidden).",
    ["reason"], registry=REGISTRY,
)
ADMIN_ACTION_LINKS = Counter(
    "leadrouter_admin_action_links_total",
    "Alert action link requests by method and outcome (shown, accepted, rejected, used, expired, reassigned, "
    "handled, gone, invalid, cross_site, bad_input).",
    ["method", "outcome"], registry=REGISTRY,
)


# Alert delivery: dead letters, Slack pacing, digests and DLQ replays (issue 6)
ALERT_DEAD_LETTERS = Counter(
    "leadrouter_alert_dead_letters_total",
    "Alerts sent to the dead-letter topic by channel and kind (permanent, exhausted, invalid).",
    ["channel", "kind"], registry=REGISTRY,
)
ALERT_RATE_LIMITED = Counter(
    "leadrouter_alert_rate_limited_total", "HTTP 429 / ratelimited answers from Slack by channel.",
    ["channel"], registry=REGISTRY,
)
ALERT_PACING_SECONDS = Histogram(
    "leadrouter_alert_pacing_seconds", "Time a Slack message waited for its channel's pace, in seconds.",
    ["channel"], buckets=(0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0), registry=REGISTRY,
)
ALERT_PACER_FALLBACKS = Counter(
    "leadrouter_alert_pacer_fallbacks_total",
    "Slack messages paced by the process alone because the shared Redis bucket failed.",
    registry=REGISTRY,
)
ALERT_DIGEST = Counter(
    "leadrouter_alert_digest_total",
    "Digest activity by outcome (queued, already_queued, sent, failed, alerts_sent).",
    ["outcome"], registry=REGISTRY,
)
ALERT_SMTP_CONNECTIONS = Counter(
    "leadrouter_alert_smtp_connections_total",
    "SMTP connections for alert email: opened, reused (a pooled one sent), replaced (a pooled one the server had "
    "closed; the message went on a new one) and closed_idle (idle past LEADROUTER_SMTP_POOL_IDLE_S).",
    ["event"], registry=REGISTRY,
)
ALERT_REPLAYS = Counter(
    "leadrouter_alert_replays_total", "Dead-lettered alerts replayed by outcome.", ["outcome"],
    registry=REGISTRY,
)

RECYCLED = Counter(
    "leadrouter_recycled_total", "Sales-ready leads never accepted whose engagement decayed below the recycle level.",
    registry=REGISTRY,
)

CONSUMER_LAG = Gauge(
    "leadrouter_consumer_lag_messages",
    "Messages behind the partition's end, per consumed topic and partition (sampled every 5 s by the worker).",
    ["topic", "partition"], registry=REGISTRY,
)

BATCH_RETRIES = Counter(
    "leadrouter_worker_batch_retries_total",
    "Agent steps (event batches, alert deliveries) retried because Redis or Kafka did not answer, by error type.",
    ["error"], registry=REGISTRY,
)

# Abuse: rate limits, trust and review, field provenance (issue 16.2, 16.3)
RATE_LIMITED = Counter(
    "leadrouter_collector_rate_limited_total",
    "Requests refused (forms, SDK: 429) or dropped (pixels: the GIF still answered) by the rate limit that "
    "was over, e.g. form:ip, pixel:visitor.",
    ["scope"], registry=REGISTRY,
)
RATE_LIMIT_FALLBACKS = Counter(
    "leadrouter_collector_rate_limit_fallbacks_total",
    "Times Redis failed and the collector counted rate limits alone (for a few seconds each).",
    registry=REGISTRY,
)
FORM_SUSPICIOUS = Counter(
    "leadrouter_collector_form_suspicious_total",
    "Form fills accepted with a lowered trust, by reason (honeypot, http_library, disposable_email, ...).",
    ["reason"], registry=REGISTRY,
)
REVIEW = Counter(
    "leadrouter_review_total",
    "Hand-raisers held for review instead of going to a rep, and what ops did with them "
    "(held, released, dismissed, routed).",
    ["outcome"], registry=REGISTRY,
)
FIELD_CHANGES = Counter(
    "leadrouter_lead_field_changes_total",
    "Lead fields a later event changed (applied: a verified source) or only proposed (kept: an unverified "
    "source's value differs from what the lead said before).",
    ["outcome"], registry=REGISTRY,
)

# SLA and the scheduler (router/worker/scheduler.py, router/worker/sla.py; issue 11.6).  Counted by the
# worker whose tick took the step; accepts and manual reassignments made by the admin API or the CLI
# reach the workers through Redis (keys.SLA_FIGURES), so each is counted once, in one place.
_WAIT_S = (60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 2 * 3600.0, 4 * 3600.0, 8 * 3600.0, 86400.0,
           2 * 86400.0, 3 * 86400.0, 7 * 86400.0, 14 * 86400.0, 30 * 86400.0)
SLA_TIME_TO_ACCEPT = Histogram(
    "leadrouter_sla_time_to_accept_seconds",
    "From a lead becoming sales-ready to its rep accepting it, in seconds, per team.",
    ["team"], buckets=_WAIT_S, registry=REGISTRY,
)
SLA_REMINDERS = Counter(
    "leadrouter_sla_reminders_total", "SLA reminders sent to the rep holding a lead, per team.", ["team"],
    registry=REGISTRY,
)
SLA_REASSIGNMENTS = Counter(
    "leadrouter_sla_reassignments_total",
    "Leads moved to another rep, per team: auto (the SLA deadline passed) or manual (ops, with a reason).",
    ["team", "how"], registry=REGISTRY,
)
SLA_ESCALATIONS = Counter(
    "leadrouter_sla_escalations_total", "Leads escalated to the team's managers (not accepted in time), per team.",
    ["team"], registry=REGISTRY,
)
SCHEDULER_ITEMS = Counter(
    "leadrouter_scheduler_items_total",
    "Due items a scheduler tick claimed, by kind and outcome (ok, later, cancel, retry, gone).",
    ["kind", "outcome"], registry=REGISTRY,
)
SCHEDULER_LATENESS = Histogram(
    "leadrouter_scheduler_lateness_seconds",
    "How long after its exact due time a step was taken, in seconds (a missed tick shows here), by kind.",
    ["kind"], buckets=(1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 3 * 86400.0),
    registry=REGISTRY,
)
