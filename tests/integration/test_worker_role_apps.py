"""Which agents and timers each worker role runs (LEADROUTER_WORKER_ROLE, issue 15).

The app is built against a real redis-server (the live config reads the published versions at
startup); nothing is started.  The end-to-end split is tests/e2e/test_worker_roles.py.
"""

from __future__ import annotations

import pytest

from router.settings import Settings
from router.worker.app import create_app

BOTH = {"consumer_lag", "fetch_wait"}
SCORING = {"reload_config", "scheduler_tick", "review_timer"}
ALERTS = {"flush_digests"}


@pytest.mark.parametrize(("role", "agents", "timers"), [
    ("all", {"process_events", "send_alerts"}, BOTH | SCORING | ALERTS),
    ("scoring", {"process_events"}, BOTH | SCORING),
    # The alerts side reloads only the rules (the teams' own webhooks).
    ("alerts", {"send_alerts"}, BOTH | ALERTS | {"reload_rules"}),
])
def test_each_role_runs_its_agents_and_timers(role: str, agents: set[str], timers: set[str],
                                              redis_url: str) -> None:
    app = create_app(Settings.of(redis_url=redis_url, worker_role=role))
    assert {name.rsplit(".", 1)[-1] for name in app.agents} == agents
    assert {task.__name__ for task in app._app_tasks} == timers  # faust keeps the app's timers there
    # Only the agents' topics are subscribed, so a member of the shared group gets only their partitions.
    kafka = Settings().kafka
    topics = {"process_events": kafka.topic_events, "send_alerts": kafka.topic_assignments}
    subscribed = {topic for agent in app.agents.values() for topic in agent.channel.topics}
    assert subscribed == {topics[name] for name in agents}
