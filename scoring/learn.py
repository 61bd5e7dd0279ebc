"""Learning from our own outcomes: join logged crossings to how they ended, split by time, train (issue 12.2).

Pure logic over plain records (router/storage/decisions.py reads them):

* a *crossing* record (router/worker/learning.py) holds the feature vector the
  worker computed from the lead's state at that crossing, with its time;
* an *outcome* is ``(lead_id, ts, outcome)`` with outcome ``won``, ``lost`` or
  ``rejected`` (won/lost from ``lr:outcomes``, rejections from the lead's history).

:func:`join_outcomes` labels each crossing by the first outcome of its lead at
or after the crossing and before the lead's next crossing: ``won`` is 1,
``lost`` and ``rejected`` are 0; a crossing with no outcome yet is left out
(still open, not a negative).  :func:`time_split` keeps the newest fraction
for evaluation, so the figures say how a model trained on the past does on
what came after.  :func:`check_enough` is the activation gate: by default
1,000 labelled leads and 120 conversions (Salesforce Einstein's minimum).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from scoring.features import catalogue_feature
from scoring.model import (
    Evaluation,
    Exclusion,
    Feature,
    ModelDataError,
    ModelParams,
    Progress,
    Schema,
    build_calibrated,
    evaluate,
    feature_matrix,
    positive_proba,
)

POSITIVE: Final = frozenset({"won"})
NEGATIVE: Final = frozenset({"lost", "rejected"})
MIN_LEADS: Final = 1000
MIN_CONVERSIONS: Final = 120
TARGET: Final = "won"
SIGMOID: Final = ModelParams(calibration="sigmoid")  # exact explanations need sigmoid calibration


@dataclass(frozen=True, slots=True)
class Example:
    lead_id: str
    crossing: int
    ts: float  # when the lead crossed (the features are as of then)
    features: Mapping[str, object]
    label: int
    outcome: str
    outcome_ts: float


@dataclass(frozen=True, slots=True)
class JoinReport:
    crossings: int  # logged crossings (first record per lead and crossing)
    labelled: int  # with an outcome
    open: int  # no outcome yet: left out
    positives: int
    leads: int  # distinct labelled leads
    lead_conversions: int  # distinct leads with a won crossing


def join_outcomes(crossings: Iterable[Mapping[str, Any]],
                  outcomes: Iterable[tuple[str, float, str]]) -> tuple[list[Example], JoinReport]:
    """Label each crossing record by its lead's first outcome in ``[crossing ts, next crossing ts)``."""
    by_lead: dict[str, list[tuple[float, str]]] = {}
    for lead_id, ts, outcome in outcomes:
        if outcome in POSITIVE or outcome in NEGATIVE:
            by_lead.setdefault(lead_id, []).append((float(ts), outcome))
    for events in by_lead.values():
        events.sort()
    records = sorted(crossings, key=lambda r: (str(r.get("lead_id", "")), float(r.get("ts", 0.0))))
    examples: list[Example] = []
    total = opened = 0
    for i, r in enumerate(records):
        total += 1
        lead_id = str(r.get("lead_id", ""))
        start = float(r.get("ts", 0.0))
        nxt = records[i + 1] if i + 1 < len(records) else None
        end = float(nxt["ts"]) if nxt is not None and str(nxt.get("lead_id", "")) == lead_id else math.inf
        events = by_lead.get(lead_id, [])
        k = bisect.bisect_left(events, (start, ""))
        if k < len(events) and events[k][0] < end:
            ts, outcome = events[k]
            examples.append(Example(lead_id, int(r.get("crossing", 0) or 0), start, dict(r.get("features") or {}),
                                    1 if outcome in POSITIVE else 0, outcome, ts))
        else:
            opened += 1
    examples.sort(key=lambda e: (e.ts, e.lead_id))
    won_leads = {e.lead_id for e in examples if e.label}
    return examples, JoinReport(total, len(examples), opened, sum(e.label for e in examples),
                                len({e.lead_id for e in examples}), len(won_leads))


def time_split(examples: Sequence[Example], holdout: float) -> tuple[list[Example], list[Example]]:
    """Oldest ``1 - holdout`` to train, newest ``holdout`` to evaluate (examples sorted by crossing time)."""
    if not 0.0 < holdout < 1.0:
        raise ModelDataError(f"--holdout must be a fraction between 0 and 1, got {holdout}; try 0.25")
    ordered = sorted(examples, key=lambda e: (e.ts, e.lead_id))
    cut = round(len(ordered) * (1.0 - holdout))
    return ordered[:cut], ordered[cut:]


@dataclass(frozen=True, slots=True)
class Gate:
    ok: bool
    message: str


def check_enough(report: JoinReport, *, min_leads: int = MIN_LEADS, min_conversions: int = MIN_CONVERSIONS) -> Gate:
    """Enough labelled leads and conversions to activate a model trained on them? The message says the counts."""
    counts = (f"{report.leads:,} labelled leads and {report.lead_conversions:,} conversions "
              f"({report.crossings:,} logged crossings, {report.open:,} still without an outcome)")
    if report.leads >= min_leads and report.lead_conversions >= min_conversions:
        return Gate(True, f"{counts}: at least the {min_leads:,} leads and {min_conversions:,} conversions required")
    msg = (f"not activated: {counts}; activating needs at least {min_leads:,} leads and {min_conversions:,} "
           f"conversions. Wait for more outcomes, or for a demo lower the bar with --min-leads "
           f"{report.leads} --min-conversions {report.lead_conversions}")
    return Gate(False, msg)


def schema_for(examples: Sequence[Example]) -> Schema:
    """The catalogue features the examples carry, each with its catalogue kind; ones missing everywhere left out."""
    names: list[str] = []
    for e in examples:
        for name in e.features:
            if name not in names:
                names.append(name)
    features: list[Feature] = []
    excluded: list[Exclusion] = [Exclusion(TARGET, "target", "1 when the crossing ended won, 0 lost or rejected")]
    for name in names:
        entry = catalogue_feature(name)
        if entry is None:
            excluded.append(Exclusion(name, "unmapped", "not a live catalogue feature"))
            continue
        values = {_key(e.features.get(name)) for e in examples}
        if values <= {None}:
            excluded.append(Exclusion(name, "empty", "missing in every logged crossing"))
            continue
        if len(values) == 1:
            excluded.append(Exclusion(name, "constant", f"the same value {next(iter(values))!r} at every crossing"))
            continue
        features.append(Feature(name, entry.kind))
    if not features:
        msg = "no feature varies across the logged crossings; log more crossings before training"
        raise ModelDataError(msg)
    return Schema(TARGET, tuple(features), tuple(excluded))


def _key(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def matrix(examples: Sequence[Example], schema: Schema) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]:
    X = feature_matrix([e.features for e in examples], schema.names)
    y = np.asarray([e.label for e in examples], dtype=np.int64)
    return X, y


@dataclass(frozen=True, slots=True)
class OutcomeTraining:
    schema: Schema
    params: ModelParams
    model: Any
    train_rows: int
    train_positives: int
    test_rows: int
    test_positives: int
    train_until: float  # newest crossing in the training part
    test_from: float  # oldest crossing in the evaluation part
    evaluation: Evaluation


def train_on_outcomes(examples: Sequence[Example], *, holdout: float = 0.25,
                      params: ModelParams = SIGMOID,
                      progress: Progress | None = None) -> OutcomeTraining:
    """Fit the calibrated model on the older examples and evaluate it on the newer ones."""
    train, test = time_split(examples, holdout)
    for part, rows in (("training (older)", train), ("evaluation (newer)", test)):
        pos = sum(e.label for e in rows)
        if pos < 2 or len(rows) - pos < 2:
            msg = (f"the {part} part has {len(rows)} crossings, {pos} won: it needs both outcomes, at least 2 of "
                   "each; wait for more outcomes or change --holdout")
            raise ModelDataError(msg)
    schema = schema_for(train)
    X, y = matrix(train, schema)
    folds = max(2, min(params.calibration_folds, int(y.sum()), int(len(y) - y.sum())))
    params = ModelParams(**{**params.to_dict(), "calibration_folds": folds,
                            "min_samples_leaf": min(params.min_samples_leaf, max(5, len(y) // 20)),
                            "min_frequency": min(params.min_frequency, max(2, len(y) // 100))})
    if progress is not None:
        progress(f"training on the {len(train)} older crossings ({int(y.sum())} won), "
                 f"{len(schema.features)} features: {', '.join(schema.names)}")
    model = build_calibrated(schema, params).fit(X, y)
    Xt, yt = matrix(test, schema)
    p = positive_proba(model, Xt)
    if progress is not None:
        progress(f"evaluating on the {len(test)} newer crossings ({int(yt.sum())} won)")
    return OutcomeTraining(schema, params, model, len(train), int(y.sum()), len(test), int(yt.sum()),
                           train[-1].ts, test[0].ts, evaluate(yt, p))
