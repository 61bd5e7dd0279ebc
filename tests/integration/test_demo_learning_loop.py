"""The demo closes the loop, on a compressed timeline against real servers (redis-server, the admin HTTP API):
demo people with hidden propensities cross and are routed by the worker's pipeline (which logs each crossing),
the demo CRM marks the alerted leads won or lost from those propensities through the signed webhook, and
``leadrouter model train --from-outcomes`` recovers the propensities (AUC printed)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from redis.asyncio import Redis
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from models import Event, EventPlan, EventType
from router.cli import main as cli
from router.dev.demo import DemoTraffic, OutcomeDemo
from router.settings import Settings
from router.storage import keys
from router.storage.decisions import read_decisions
from router.storage.live_config import LiveFile, load_rules_file, load_scoring_file
from router.storage.model_registry import load_model
from router.worker.learning import first_records
from router.worker.pipeline import Pipeline
from tests.integration.test_admin_api import NOW, make_api

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRET = "demo-crm-secret-0123456789abcdef"
PEOPLE = 360


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def test_demo_outcomes_train_a_model_that_recovers_the_hidden_propensities(
        redis: Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LEADROUTER_REDIS_URL", redis_url)
    settings = Settings.of(redis_url=redis_url, admin_crm_webhook_secret=SECRET)
    api, client = await make_api(redis, settings)
    try:
        demo = DemoTraffic("http://127.0.0.1:9", "secret", rate_per_s=0, people=PEOPLE, seed=21)
        routing = LiveFile.open(REPO / "rules" / "routing.yaml", load_rules_file, "routing")
        scoring = LiveFile.open(REPO / "scoring" / "scoring.yaml", load_scoring_file, "scoring")
        cfg = scoring.current

        async def publish(key: str, value: bytes) -> None:
            return None

        t = {"now": NOW.timestamp()}
        pipeline = Pipeline(api.store, scoring, routing, publish, clock=lambda: t["now"])
        # Each person browses (keener people more) and then asks for a demo: one crossing each, 20 s apart.
        # (Two demo people may share a name and company, so an address: each address crosses once.)
        first: dict[str, object] = {}
        unique = [p for p in demo.people if first.setdefault(p.email, p) is p]
        for i, p in enumerate(unique):
            t["now"] = NOW.timestamp() + 20 * i
            lead_id = keys.lead_id_for_email(p.email)
            views = [EventPlan(event=Event(event_id=f"v{i}-{k}", type=EventType.PAGE_VIEW, ts=t["now"] - 5 + k * 0.01,
                                           source="pixel", email=p.email, url="https://x.io/product"),
                               lead_id=lead_id, reasons=(), points=0.0, hand_raiser=False, fields={})
                     for k in range(min(30, int(2 * p.engaged)))]
            form = Event(event_id=f"f{i}", type=EventType.FORM_FILL, ts=t["now"], source="form", email=p.email,
                         form_id="demo-request", fields={"country": p.company[2], "company": p.company[0],
                                                         "job_title": p.title, "consent": "true"})
            plan = EventPlan(event=form, lead_id=lead_id, reasons=(), points=60.0, hand_raiser=True,
                             fields=dict(form.fields))
            results = await api.store.apply([*views, plan], threshold=cfg.threshold, half_life_s=cfg.half_life_s,
                                            now=t["now"])
            assert results[-1].status == "fired"
            await pipeline.route(plan, results[-1], cfg)
            p.known = True
        crossings = first_records(await read_decisions(redis), "crossing")
        assert len(crossings) == len(unique) >= 0.9 * PEOPLE

        # The demo CRM, compressed: no delay, outcomes stamped after every crossing.
        api.clock.now = t["now"] + 3600
        said: list[str] = []
        crm = OutcomeDemo(demo, str(client.make_url("")), api.tokens["ops"], SECRET, said.append, delay_s=0.0,
                          seed=5, clock=api.clock)
        async with aiohttp.ClientSession() as s:
            await crm.step(s)  # sees the assigned leads
            await crm.step(s)  # decides them
        decided = len(crm.decided)
        won = sum(crm.decided.values())
        assert decided >= 0.8 * len(unique), (decided, said[:3])
        assert re.match(r"crm      \S+ \S+ \(.+\) (won|lost) \(hidden propensity 0\.\d\d\) via the signed CRM webhook",
                        said[0])

        code, out, err = await asyncio.to_thread(
            _run, "model", "train", "--from-outcomes", "--registry", str(tmp_path), "--activate",
            "--min-leads", "100", "--min-conversions", "20", "--holdout", "0.3")
        assert code == 0, err + out
        assert f"labelled {decided} crossings of {decided} leads: {won} won" in err
        auc = float(re.search(r"^AUC\s+(\d\.\d+)", out, re.M).group(1))  # type: ignore[union-attr]
        version = re.search(r"^activated (\S+)", out, re.M).group(1)  # type: ignore[union-attr]
        print(f"\ndemo loop: {decided} decided, {won} won; time-split AUC {auc:.3f}")
        assert auc >= 0.65, out

        # Recovered: the model's probabilities rank the people as their hidden propensities do.
        model = load_model(tmp_path, version).model
        by_lead = {c["lead_id"]: c["features"] for c in crossings}
        by_ts = {c["lead_id"]: c["ts"] for c in crossings}
        people = [p for p in unique if p.email in crm.decided]
        probs = model.predict_proba([by_lead[keys.lead_id_for_email(p.email)] for p in people])
        rho = float(spearmanr(probs, [p.propensity for p in people]).statistic)
        print(f"demo loop: Spearman rho(model probability, hidden propensity) = {rho:.3f}")
        # The ceiling: the hidden propensities themselves, scored on the same newer crossings.
        newest = sorted(people, key=lambda p: by_ts[keys.lead_id_for_email(p.email)])[-round(0.3 * len(people)):]
        oracle = roc_auc_score([crm.decided[p.email] for p in newest], [p.propensity for p in newest])
        print(f"demo loop: AUC of the hidden propensities themselves on the evaluated crossings = {oracle:.3f}")
        assert auc >= oracle - 0.1
        assert rho >= 0.5 and np.isfinite(rho)
    finally:
        await client.close()
