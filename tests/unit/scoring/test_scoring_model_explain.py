"""Exact explanations: the contributions add up to the model's own log-odds, for every lead."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from scoring.model import (
    Feature,
    LeadModelError,
    ModelParams,
    Schema,
    build_calibrated,
    explain,
    feature_matrix,
    positive_proba,
)

SCHEMA = Schema("converted", (
    Feature("lead_origin", "categorical"), Feature("page_views", "numeric"), Feature("email_opt_out", "boolean"),
    Feature("form:city", "categorical"), Feature("noise", "numeric"),
), ())


def _rows(n: int, seed: int) -> tuple[list[dict[str, object]], np.ndarray]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    y = []
    for _ in range(n):
        origin = rng.choice(["form", "tracking", None])
        views = None if rng.random() < 0.2 else float(rng.randint(0, 30))
        opt_out = rng.choice([0.0, 1.0, None])
        city = rng.choice(["mumbai", "pune", "delhi", "other", None])
        logit = (1.2 if origin == "form" else -0.5) + 0.08 * (views if views is not None else -5.0) \
            - (1.5 if opt_out == 1.0 else 0.0) + (0.4 if city == "mumbai" else 0.0) - 1.0
        y.append(int(rng.random() < 1.0 / (1.0 + math.exp(-logit))))
        rows.append({"lead_origin": origin, "page_views": views, "email_opt_out": opt_out, "form:city": city,
                     "noise": rng.random()})
    return rows, np.asarray(y, dtype=np.int64)


@pytest.fixture(scope="module")
def fitted() -> object:
    rows, y = _rows(800, 1)
    params = ModelParams(calibration="sigmoid", max_iter=30, min_frequency=5, calibration_folds=2)
    return build_calibrated(SCHEMA, params).fit(feature_matrix(rows, SCHEMA.names), y)


def test_contributions_add_up_to_the_model_log_odds_exactly(fitted: object) -> None:
    rows, _ = _rows(200, 2)
    rows.append({})  # everything missing
    rows.append({"lead_origin": "never-seen", "form:city": "atlantis", "page_views": 1e9})
    p = positive_proba(fitted, feature_matrix(rows, SCHEMA.names))
    for row, prob in zip(rows, p, strict=True):
        ex = explain(fitted, SCHEMA, row)
        total = ex.base_log_odds + sum(c.log_odds for c in ex.contributions)
        assert total == pytest.approx(math.log(prob / (1 - prob)), abs=1e-9), row
        assert ex.probability == pytest.approx(prob, abs=1e-12)


def test_the_signs_follow_the_data(fitted: object) -> None:
    hot = explain(fitted, SCHEMA, {"lead_origin": "form", "page_views": 25.0, "email_opt_out": 0.0})
    cold = explain(fitted, SCHEMA, {"lead_origin": "tracking", "page_views": 0.0, "email_opt_out": 1.0})
    by_hot = {c.feature: c for c in hot.contributions}
    by_cold = {c.feature: c for c in cold.contributions}
    assert by_hot["lead_origin"].log_odds > 0 > by_cold["lead_origin"].log_odds
    assert by_hot["page_views"].log_odds > 0 > by_cold["page_views"].log_odds
    assert by_cold["email_opt_out"].log_odds < 0
    assert by_hot["lead_origin"].value == "form" and by_cold["page_views"].value == 0.0
    assert [abs(c.log_odds) for c in hot.contributions] == sorted((abs(c.log_odds) for c in hot.contributions),
                                                                  reverse=True)
    assert hot.probability > 0.5 > cold.probability


def test_an_isotonic_model_is_refused() -> None:
    rows, y = _rows(300, 3)
    model = build_calibrated(SCHEMA, ModelParams(calibration="isotonic", max_iter=5, calibration_folds=2)).fit(
        feature_matrix(rows, SCHEMA.names), y)
    with pytest.raises(LeadModelError, match="sigmoid"):
        explain(model, SCHEMA, rows[0])
