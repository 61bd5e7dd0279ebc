"""The vector a model saw in training equals the one the worker computes for the same lead.

30 X Education rows (tests/xedu_stream.py) are expanded into event streams and applied through
the worker's batch path (identity, merges, apply_event.lua) on a real Redis; the worker's
vector (``features_from_lead`` of the lead hash, as ``_score_with_model`` computes it) must
equal the mapped training row of ``model train --map`` -- as values, and after the model's
own first step (:class:`~scoring.model.LeadFeatureCleaner`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from redis.asyncio import Redis

from models import Event, EventType
from router.cli.model import map_table, mapped_schema
from router.ingest.segment import utm_from
from router.storage import keys
from router.storage.store import RedisStore
from scoring import load_scoring_config
from scoring.features import features_from_lead, training_row
from scoring.model import LeadFeatureCleaner, RawTable, feature_matrix, table_matrix
from tests.support import run_batch
from tests.xedu_stream import CSV_PATH, MAPPING_PATH, Step, expand, mapping, sample

pytestmark = pytest.mark.integration

CONFIG = load_scoring_config(
    """
threshold: 100000
half_life_days: 30
rules:
  - {name: page, description: any page, event: page_view, points: 1}
  - {name: form, description: any form, event: form_fill, points: 10}
""",
    "test.yaml",
)
T0 = 1_790_000_000.0


def to_events(steps: list[Step], n: int, vid: str, email: str, start: float) -> list[Event]:
    out: list[Event] = []
    for i, s in enumerate(steps):
        base = {"event_id": f"r{n}-{i}", "ts": start + s.at}
        if s.kind == "pv":
            out.append(Event(type=EventType.PAGE_VIEW, source="pixel", visitor_id=vid, url=s.url,
                             referrer=s.referrer, utm=utm_from({}, s.url), **base))  # type: ignore[arg-type]
        elif s.kind == "pp":
            out.append(Event(type=EventType.PAGE_PING, source="pixel", visitor_id=vid, url=s.url,
                             **base))  # type: ignore[arg-type]
        elif s.kind == "form":
            out.append(Event(type=EventType.FORM_FILL, source="form", visitor_id=vid, email=email, form_id="apply",
                             fields={**s.fields, **s.answers}, url=s.url, referrer=s.referrer,
                             utm=utm_from({}, s.url), **base))  # type: ignore[arg-type]
        elif s.kind == "identify":
            out.append(Event(type=EventType.IDENTIFY, source="segment", visitor_id=vid, email=email,
                             traits=dict(s.fields), **base))  # type: ignore[arg-type]
        elif s.kind == "open":
            out.append(Event(type=EventType.EMAIL_OPEN, source="email", email=email, **base))  # type: ignore[arg-type]
        elif s.kind == "click":
            out.append(Event(type=EventType.EMAIL_CLICK, source="email", email=email, url=s.url,
                             **base))  # type: ignore[arg-type]
        elif s.kind in ("chat", "other"):
            name, url = ("chat/conversation", s.url) if s.kind == "chat" else ("crm/sms_sent", None)
            out.append(Event(type=EventType.TRACK, source="snowplow", visitor_id=vid, name=name, url=url,
                             **base))  # type: ignore[arg-type]
    return out


def model_view(m: object, vectors: list[Mapping[str, object]], rows: list[dict[str, str]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Both sides through the exact paths `model train` and the worker use, up to the cleaner."""
    mp = mapping()
    columns = tuple(rows[0])
    table = map_table(RawTable(columns, tuple(tuple(r[c] for c in columns) for r in rows)), mp, "Converted",
                      MAPPING_PATH)
    schema = mapped_schema(RawTable(columns, ()), mp, "Converted")
    cleaner = LeadFeatureCleaner(schema.pairs())
    return (cleaner.transform(table_matrix(table, schema.names)),
            cleaner.transform(feature_matrix(list(vectors), schema.names)))


async def test_the_worker_computes_the_vector_the_model_was_trained_on(redis: Redis) -> None:
    store = RedisStore(redis)
    m = mapping()
    picked = sample(30)
    served: list[dict[str, object]] = []
    for n, (index, row) in enumerate(picked):
        vid, email = f"xedu-visitor-{index:05d}", f"lead{index}@xedu.example"
        events = to_events(expand(row, m), n, vid, email, T0 + n * 30 * 86400)
        for at in range(0, len(events), 50):  # the worker's batches
            await run_batch(store, CONFIG, events[at:at + 50], now=T0)
        lead = await store.lead_hash(keys.lead_id_for_email(email))
        got = features_from_lead(lead, m.names)
        want = training_row(m, row)
        assert got == want, (CSV_PATH.name, index, {k: (got[k], want[k]) for k in want if got[k] != want[k]})
        served.append(got)
    trained, serving = model_view(m, served, [r for _, r in picked])
    assert trained.shape == serving.shape == (30, len(m.features))
    for a_row, b_row in zip(trained, serving, strict=True):
        for a, b in zip(a_row, b_row, strict=True):
            assert (a == b) or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))
    # Not vacuous: the sample covers visits, time, several sources and activities.
    assert len({v["lead_source"] for v in served}) >= 3 and len({v["last_activity"] for v in served}) >= 3
    assert any((v["sessions"] or 0) >= 2 for v in served) and any((v["time_on_site"] or 0) > 100 for v in served)
