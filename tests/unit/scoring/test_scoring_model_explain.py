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
        assert total == pytest.approx(math.log(prob / (1 - prob)), abs=1e-6), row
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


def _shapley_by_enumeration(fitted: object, row: dict[str, object]) -> list[float]:
    """Shapley values of the path-dependent game ``E[f(x) | x_S]`` by enumerating every subset (small n only)."""
    from itertools import combinations

    from scoring.model import _goes_left, _trees_of
    from scoring.treeshap import conditional_expectation

    pipe = fitted.calibrated_classifiers_[0].estimator  # type: ignore[attr-defined]
    cleaned = pipe.named_steps["clean"].transform(feature_matrix([row], SCHEMA.names))
    encoded = np.asarray(pipe.named_steps["encode"].transform(cleaned), dtype=np.float64)[0]
    cat = [i for i, f in enumerate(SCHEMA.features) if f.kind == "categorical"]
    num = [i for i, f in enumerate(SCHEMA.features) if f.kind != "categorical"]
    imputer = pipe.named_steps["encode"].named_transformers_["numeric"]
    source = cat + num + [num[int(j)] for j in imputer.indicator_.features_]
    trees, predictors, _ = _trees_of(pipe.named_steps["model"], source)
    n = len(SCHEMA.features)

    def value(known: frozenset[int]) -> float:
        total = 0.0
        for tree, pred in zip(trees, predictors, strict=True):
            def left(i: int, nodes: object = pred.nodes, bits: object = pred.raw_left_cat_bitsets) -> bool:
                node = nodes[i]  # type: ignore[index]
                return _goes_left(node, float(encoded[int(node["feature_idx"])]), bits)
            total += conditional_expectation(tree, left, known)
        return total

    out = []
    for j in range(n):
        others = [k for k in range(n) if k != j]
        phi = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in combinations(others, size):
                s = frozenset(subset)
                phi += weight * (value(s | {j}) - value(s))
        out.append(phi)
    return out


def test_contributions_are_the_shapley_values_of_the_trees(fitted: object) -> None:
    """TreeSHAP, not a path attribution: equal to Shapley values enumerated over all 2^5 subsets."""
    a = float(fitted.calibrated_classifiers_[0].calibrators[0].a_)  # type: ignore[attr-defined]
    rows, _ = _rows(6, 7)
    rows.append({"page_views": None, "lead_origin": "form"})
    for row in rows:
        ex = explain(fitted, SCHEMA, row)
        got = {c.feature: c.log_odds for c in ex.contributions}
        want = _shapley_by_enumeration(fitted, row)
        for f, phi in zip(SCHEMA.features, want, strict=True):
            assert got.get(f.name, 0.0) == pytest.approx(-a * phi, abs=1e-9), (row, f.name)


def test_a_fold_averaged_model_is_refused() -> None:
    from sklearn.calibration import CalibratedClassifierCV

    from scoring.model import build_pipeline

    rows, y = _rows(300, 4)
    model = CalibratedClassifierCV(build_pipeline(SCHEMA, ModelParams(max_iter=5)), method="sigmoid", cv=2,
                                   ensemble=True).fit(feature_matrix(rows, SCHEMA.names), y)
    with pytest.raises(LeadModelError, match="ensemble=False"):
        explain(model, SCHEMA, rows[0])


def test_every_catalogue_feature_has_a_human_label() -> None:
    from scoring.explain_text import LABELS, contribution_text, feature_label
    from scoring.features import features_from_lead
    from scoring.model import Contribution

    assert set(features_from_lead({})) <= set(LABELS)
    assert feature_label("form:what_matters_most") == "form answer what matters most"
    assert contribution_text(Contribution("page_views", 12.0, 0.2149)) == "+0.21 page views: 12"
    assert contribution_text(Contribution("recency_days", 40.0, -0.08)) == "\N{MINUS SIGN}0.08 days since last activity: 40"
    assert contribution_text(Contribution("country", None, 0.0)) == "+0.00 country: missing"
