"""Log and wait: the worker's record of what it knew at each crossing and routing decision (issue 12.2).

At a crossing the worker computes, from the lead state *at that moment* (the
hash the scoring step returned), the catalogue feature vector, the active
model's probability with its exact explanation (:func:`scoring.model.explain`),
and the score with the reasons behind it; it appends that as a ``crossing``
record to ``lr:vectors`` and puts the explanation in the alert.  When the lead
is routed, a ``route`` record adds the decision (team, rule, rep).  Records are
appended again if a crossing is resumed; readers keep the first per
``(lead_id, crossing, kind)`` (:func:`first_records`).

The explanation is computed here, once per crossing, never per event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from models import Reason
from scoring.explain_text import explanation_dict
from scoring.features import features_from_lead
from scoring.model import ExplainableModel, LeadModel, LeadModelError

log = logging.getLogger(__name__)

RECORD_FORMAT = 1


def feature_names(model: LeadModel | None) -> list[str] | None:
    """The catalogue's features plus the model's own (``form:*``), or ``None`` for the catalogue alone."""
    if model is None:
        return None
    base = list(features_from_lead({}).keys())
    return base + [n for n in model.features if n not in base]


def explain_at_crossing(model: LeadModel | None, lead: Mapping[str, str], top: int = 5, *,
                        now: float | None = None) -> dict[str, Any] | None:
    """The active model's probability and top contributions for the lead as it is at ``now``; None without a model."""
    if model is None or not isinstance(model, ExplainableModel):
        return None
    try:
        ex = model.explain(features_from_lead(lead, model.features, now=now))
    except (LeadModelError, ValueError) as exc:
        log.warning("model %s could not explain a crossing: %s", model.version, exc)
        return None
    return explanation_dict(ex, model.version, top)


def reason_points(reasons: Sequence[Reason], at: float, half_life_s: float) -> dict[str, float]:
    """Per scoring rule, its points as they count at ``at`` (half-life decayed), summed over the lead's reasons."""
    out: dict[str, float] = {}
    for r in reasons:
        age = max(0.0, at - r.ts)
        decay = 0.5 ** (age / half_life_s) if half_life_s > 0 else 1.0
        out[r.rule] = out.get(r.rule, 0.0) + r.points * decay
    return out


def crossing_record(lead_id: str, crossing: int, lead: Mapping[str, str], *, ts: float, score: float,
                    threshold: float, trigger: str, versions: str, reasons: Sequence[Reason], half_life_s: float,
                    model: LeadModel | None, explanation: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``crossing`` record: point-in-time features, score and its parts, model version and probability."""
    return {
        "format": RECORD_FORMAT, "kind": "crossing", "lead_id": lead_id, "crossing": crossing, "ts": ts,
        "score": score, "threshold": threshold, "trigger": trigger, "versions": versions,
        "rules": reason_points(reasons, ts, half_life_s),
        "model_version": model.version if model is not None else "",
        "probability": explanation["probability"] if explanation else None,
        "features": features_from_lead(lead, feature_names(model), now=ts),
        "explanation": dict(explanation) if explanation else None,
    }


def route_record(crossing: Mapping[str, Any], *, ts: float, team: str, rule: str, rules_version: str,
                 rep_id: str) -> dict[str, Any]:
    """The ``route`` record: the same vector, plus where the lead went."""
    out = {k: v for k, v in crossing.items() if k != "explanation"}
    out.update({"kind": "route", "ts": ts, "team": team, "rule": rule, "rules_version": rules_version,
                "rep_id": rep_id, "crossing_ts": crossing.get("ts")})
    return out


def first_records(records: Iterable[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The first record of ``kind`` per (lead_id, crossing), oldest first."""
    seen: set[tuple[str, int]] = set()
    out: list[dict[str, Any]] = []
    for r in records:
        if r.get("kind") != kind:
            continue
        key = (str(r.get("lead_id", "")), int(r.get("crossing", 0) or 0))
        if key in seen:
            continue
        seen.add(key)
        out.append(dict(r))
    return out
