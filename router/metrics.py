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
BATCH_SIZE = Histogram(
    "leadrouter_worker_batch_events", "Events per processed batch.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000), registry=REGISTRY,
)
CROSSINGS = Counter(
    "leadrouter_crossings_total", "Sales-ready crossings by trigger.", ["trigger"], registry=REGISTRY,
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
CONFIG_RELOADS = Counter(
    "leadrouter_config_reloads_total", "Config file reloads by file and outcome (loaded, rejected).",
    ["file", "outcome"], registry=REGISTRY,
)
CONFIG_VERSION = Gauge(
    "leadrouter_config_info", "The config version in force (value 1).", ["file", "version"], registry=REGISTRY,
)
