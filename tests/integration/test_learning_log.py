"""Log and wait against a real redis-server: the worker records the vector it used at a crossing and a
routing decision (point in time), puts the exact explanation in the alert, and forget removes the records."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from redis.asyncio import Redis

from models import Alert, Event, EventPlan, EventType
from router.alerts.render import render_html, render_text
from router.alerts.render_slack import render_slack_blocks
from router.storage import keys
from router.storage.decisions import read_decisions
from router.storage.live_config import LiveFile, load_rules_file, load_scoring_file
from router.storage.store import RedisStore
from router.worker.learning import first_records
from router.worker.pipeline import Pipeline
from scoring.features import catalogue_feature, features_from_lead
from scoring.model import Feature, ModelParams, PipelineLeadModel, Schema, build_calibrated, feature_matrix
from tests.support import open_alert

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TUESDAY_10_NY = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
NAMES = ("lead_origin", "page_views", "country", "occupation", "email_opt_out")


def small_model() -> PipelineLeadModel:
    """A sigmoid-calibrated model on catalogue features, trained on synthetic leads."""
    schema = Schema("won", tuple(Feature(n, catalogue_feature(n).kind) for n in NAMES), ())  # type: ignore[union-attr]
    rng = random.Random(5)
    rows: list[dict[str, object]] = []
    y: list[int] = []
    for _ in range(600):
        row: dict[str, object] = {
            "lead_origin": rng.choice(["form", "tracking"]), "page_views": float(rng.randint(0, 20)),
            "country": rng.choice(["india", "united states", "germany", None]),
            "occupation": rng.choice(["working professional", "student", None]),
            "email_opt_out": rng.choice([0.0, 1.0])}
        logit = -1.0 + (1.0 if row["lead_origin"] == "form" else 0.0) + 0.1 * float(row["page_views"])  # type: ignore[arg-type]
        logit += 0.8 if row["occupation"] == "working professional" else 0.0
        rows.append(row)
        y.append(int(rng.random() < 1 / (1 + math.exp(-logit))))
    est = build_calibrated(schema, ModelParams(calibration="sigmoid", max_iter=25, calibration_folds=3,
                                               min_frequency=5)).fit(feature_matrix(rows, schema.names),
                                                                     np.asarray(y))
    return PipelineLeadModel("test-model-1", schema.names, est, schema)


async def test_a_crossing_logs_its_vector_and_the_alert_explains_the_probability(redis: Redis) -> None:
    store = RedisStore(redis)
    routing = LiveFile.open(REPO / "rules" / "routing.yaml", load_rules_file, "routing")
    scoring = LiveFile.open(REPO / "scoring" / "scoring.yaml", load_scoring_file, "scoring")
    published: list[dict[str, Any]] = []

    async def publish(key: str, value: bytes) -> None:
        published.append(await open_alert(redis, value))

    model = small_model()
    now = TUESDAY_10_NY.timestamp()
    pipeline = Pipeline(store, scoring, routing, publish, clock=lambda: now, model=lambda: model)
    email = "buyer@elbe-mb.de"
    lead_id = keys.lead_id_for_email(email)
    ev = Event(event_id="e1", type=EventType.FORM_FILL, ts=now, source="form", email=email,
               form_id="demo-request", fields={"country": "DE", "company": "Elbe", "job_title": "VP Sales"})
    plan = EventPlan(event=ev, lead_id=lead_id, reasons=(), points=60.0, hand_raiser=True, fields=dict(ev.fields))
    [result] = await store.apply([plan], threshold=scoring.current.threshold,
                                 half_life_s=scoring.current.half_life_s, now=now)
    at_crossing = dict(result.lead)
    assignment = await pipeline.route(plan, result, scoring.current)
    assert assignment is not None

    records = await read_decisions(redis)
    assert [r["kind"] for r in records] == ["crossing", "route"]
    crossing, route = records
    want = features_from_lead(at_crossing, [*features_from_lead({}), *model.features], now=now)
    assert crossing["features"] == want and crossing["features"]["recency_days"] == 0.0  # as of the crossing
    assert crossing["features"]["country"] == "germany" and crossing["features"]["lead_origin"] == "form"
    assert crossing["features"]["occupation"] == "working professional"
    assert (crossing["lead_id"], crossing["crossing"], crossing["model_version"]) == (lead_id, 1, "test-model-1")
    assert crossing["score"] == pytest.approx(result.after) and crossing["threshold"] == scoring.current.threshold
    [p] = model.predict_proba([features_from_lead(at_crossing, model.features)])
    assert crossing["probability"] == pytest.approx(p, abs=1e-12)
    ex = crossing["explanation"]
    assert ex["log_odds"] == pytest.approx(math.log(p / (1 - p)), abs=1e-6)
    assert (route["team"], route["rep_id"]) == (assignment.decision.team, assignment.rep.rep_id)
    assert route["features"] == crossing["features"] and route["crossing_ts"] == crossing["ts"]

    # Point in time: the lead changes afterwards (another country, page views), the logged vector does not,
    # and a replayed route (a crash before commit) appends records the readers skip.
    later = Event(event_id="e2", type=EventType.PAGE_VIEW, ts=now + 60, source="web", email=email,
                  url="https://x.io/pricing", fields={"country": "IN"})
    await store.apply([EventPlan(event=later, lead_id=lead_id, reasons=(), points=1.0, hand_raiser=False,
                                 fields={"country": "IN"})],
                      threshold=scoring.current.threshold, half_life_s=scoring.current.half_life_s, now=now + 60)
    assert (await store.lead_hash(lead_id))["f:country"] == "IN"
    await pipeline.route(plan, result, scoring.current)
    firsts = first_records(await read_decisions(redis), "crossing")
    assert len(firsts) == 1 and firsts[0]["features"]["country"] == "germany"

    # The alert carries the explanation, and every rendering shows it with human labels.
    alert = Alert.from_dict(published[0])
    assert alert.model["version"] == "test-model-1" and alert.model["probability"] == pytest.approx(p)
    top = alert.model["contributions"]
    assert top and all(set(c) >= {"feature", "label", "value", "log_odds", "text"} for c in top)
    assert [abs(c["log_odds"]) for c in top] == sorted((abs(c["log_odds"]) for c in top), reverse=True)
    text = render_text(alert)
    assert f"Model: probability {p:.2f} (model test-model-1)" in text
    first = top[0]
    sign = "+" if first["log_odds"] >= 0 else "\N{MINUS SIGN}"
    line = f"{sign}{abs(first['log_odds']):.2f} {first['label']}: {first['value']}"
    assert line in text and line in render_html(alert)
    slack = orjson.dumps(render_slack_blocks(alert)).decode()
    assert "Model: probability" in slack and first["label"] in slack
    assert any(c["label"] == "page views" or c["label"] == "lead origin" for c in top)


async def test_without_a_model_the_crossing_is_logged_and_the_alert_has_no_model_part(redis: Redis) -> None:
    store = RedisStore(redis)
    routing = LiveFile.open(REPO / "rules" / "routing.yaml", load_rules_file, "routing")
    scoring = LiveFile.open(REPO / "scoring" / "scoring.yaml", load_scoring_file, "scoring")
    published: list[dict[str, Any]] = []

    async def publish(key: str, value: bytes) -> None:
        published.append(await open_alert(redis, value))

    now = TUESDAY_10_NY.timestamp()
    pipeline = Pipeline(store, scoring, routing, publish, clock=lambda: now)
    email = "ann@elbe-mb.de"
    ev = Event(event_id="e1", type=EventType.FORM_FILL, ts=now, source="form", email=email,
               form_id="demo-request", fields={"country": "DE"})
    plan = EventPlan(event=ev, lead_id=keys.lead_id_for_email(email), reasons=(), points=60.0, hand_raiser=True,
                     fields=dict(ev.fields))
    [result] = await store.apply([plan], threshold=scoring.current.threshold,
                                 half_life_s=scoring.current.half_life_s, now=now)
    await pipeline.route(plan, result, scoring.current)
    [crossing, _] = await read_decisions(redis)
    assert crossing["model_version"] == "" and crossing["probability"] is None and crossing["explanation"] is None
    assert crossing["features"]["country"] == "germany"
    alert = Alert.from_dict(published[0])
    assert alert.model == {} and "Model:" not in render_text(alert)


async def test_the_admin_explain_endpoint_and_lead_explain_show_the_models_contributions(
        redis: Redis, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main as cli
    from router.settings import Settings
    from router.storage.model_registry import activate, save_model
    from scoring.model import schema_to_json
    from tests.integration.test_admin_api import make_api, route_lead

    model = small_model()
    assert model.schema is not None
    meta = {**schema_to_json(model.schema), "model": {"params": ModelParams(calibration="sigmoid").to_dict()}}
    version, _ = save_model(tmp_path, "20261124T150000Z-test", model.estimator, meta)
    activate(tmp_path, version)
    settings = Settings.of(redis_url=redis_url, model_registry_dir=tmp_path)
    api, client = await make_api(redis, settings)
    try:
        lead_id, _ = await route_lead(api, "jane@acme.com")
        status, body = await api.call("GET", f"/v1/leads/{lead_id}/explain")
        assert status == 200, body
        m = body["model"]
        assert m["version"] == version and 0 < m["probability"] < 1
        [p] = model.predict_proba([features_from_lead(await api.store.lead_hash(lead_id), model.features)])
        assert m["probability"] == pytest.approx(p, abs=1e-12)
        assert m["log_odds"] == pytest.approx(math.log(p / (1 - p)), abs=1e-6)
        assert m["contributions"] and {c["label"] for c in m["contributions"]} <= {
            "lead origin", "page views", "country", "occupation", "opted out of email"}
        # The console's lead page shows the same probability and contributions (issue 14).
        from tests.integration.test_console import get, sign_in
        await sign_in(api, "ops")
        status, html, _ = await get(api, f"/console/leads/{lead_id}")
        assert status == 200 and 'id="model"' in html
        assert f"Probability <b>{p:.2f}</b>" in html and version in html
        first = m["contributions"][0]
        assert f'{first["log_odds"]:+.2f}' in html and first["label"] in html
    finally:
        await client.close()
    # The model line of 'leadrouter lead explain'.
    cli._print_model_explanation(settings, await api.store.lead_hash(lead_id))
    out = capsys.readouterr().out
    assert f"model {version} now: probability {p:.2f}" in out
    assert "exact Shapley values in calibrated log-odds" in out and ("lead origin: form" in out or "country:" in out)
