"""The predictive model's pure parts: cleaning, schema inference, metrics, the pipeline."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from scoring.model import (
    LeadFeatureCleaner,
    LeadModel,
    ModelDataError,
    ModelParams,
    PipelineLeadModel,
    RawTable,
    Schema,
    auc,
    build_pipeline,
    calibration_bins,
    clean_boolean,
    clean_categorical,
    clean_numeric,
    clean_value,
    cross_validate,
    expected_calibration_error,
    feature_matrix,
    infer_kind,
    infer_schema,
    is_identifier,
    lift_table,
    prepare,
    row_fingerprints,
    schema_from_json,
    schema_to_json,
    target_vector,
    train,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The trees use OpenMP; on a shared machine one thread is faster and fair."""
    with threadpool_limits(limits=1):
        yield


# ---------------------------------------------------------------- cleaning


@pytest.mark.parametrize("raw", ["", "   ", "Select", "select", " SELECT ", "Unknown", "nan", "NULL", "n/a", "-", None,
                                 math.nan])
def test_no_answer_values_are_missing(raw: object) -> None:
    assert clean_value(raw) is None
    assert clean_categorical(raw) is None
    assert math.isnan(clean_numeric(raw))
    assert math.isnan(clean_boolean(raw))


def test_categories_are_case_and_whitespace_folded() -> None:
    assert clean_categorical("Google") == clean_categorical("google") == clean_categorical("  GOOGLE ") == "google"
    assert clean_categorical("Olark   Chat") == "olark chat"
    assert clean_categorical(3.0) == "3"
    assert clean_categorical("Other") == "other"  # a real answer, not missing


@pytest.mark.parametrize(("raw", "want"), [("Yes", 1.0), ("yes", 1.0), (" YES ", 1.0), ("No", 0.0), ("no", 0.0),
                                           ("true", 1.0), ("False", 0.0), (True, 1.0), (False, 0.0), (1, 1.0),
                                           (0, 0.0)])
def test_yes_no(raw: object, want: float) -> None:
    assert clean_boolean(raw) == want


@pytest.mark.parametrize("raw", ["maybe", "Select", "", 2])
def test_yes_no_anything_else_is_missing(raw: object) -> None:
    assert math.isnan(clean_boolean(raw))


@pytest.mark.parametrize(("raw", "want"), [("3", 3.0), (" 2.5 ", 2.5), ("1,234", 1234.0), (7, 7.0), ("1e3", 1000.0)])
def test_numbers(raw: object, want: float) -> None:
    assert clean_numeric(raw) == want


@pytest.mark.parametrize("raw", ["abc", "1,2", "inf", "Select"])
def test_not_numbers_are_missing(raw: object) -> None:
    assert math.isnan(clean_numeric(raw))


def test_cleaner_transforms_by_kind() -> None:
    cleaner = LeadFeatureCleaner((("src", "categorical"), ("visits", "numeric"), ("dne", "boolean")))
    raw = np.array([["Google", "3", "No"], [" google", "", "Yes"], ["Select", "Select", "Select"], [None, 4, None]],
                   dtype=object)
    out = cleaner.fit(raw).transform(raw)
    assert list(out[:2, 0]) == ["google", "google"]
    assert math.isnan(out[2, 0]) and math.isnan(out[3, 0])
    assert out[0, 1] == 3.0 and math.isnan(out[1, 1]) and math.isnan(out[2, 1]) and out[3, 1] == 4.0
    assert out[0, 2] == 0.0 and out[1, 2] == 1.0 and math.isnan(out[2, 2]) and math.isnan(out[3, 2])


def test_cleaner_rejects_wrong_width() -> None:
    cleaner = LeadFeatureCleaner((("a", "numeric"), ("b", "numeric")))
    with pytest.raises(ModelDataError, match="expects a 2-D table with 2 columns"):
        cleaner.fit(np.array([[1, 2, 3]], dtype=object))


# ---------------------------------------------------------------- schema


def test_identifier_detection() -> None:
    uuids = [f"{i:08x}-4d29-b9a2" for i in range(50)]
    assert is_identifier(uuids)
    assert is_identifier([str(660000 + i) for i in range(50)], "Lead Number")  # ints, same digit count
    assert is_identifier([str(i) for i in range(1, 50)], "Customer ID")  # ints, id-like name
    assert not is_identifier([str(i) for i in range(1, 50)], "Total Time")  # a measure that happens to be distinct
    assert not is_identifier(["1.5", "2.5", "3.5"], "Lead Number")  # fractions are never ids
    assert not is_identifier(["a", "b", "a"])  # repeats
    assert not is_identifier(["a", "b", ""])  # a missing value
    assert not is_identifier(["Google", "google"])  # the same value once folded


def test_kind_inference() -> None:
    assert infer_kind(["Yes", "No", "Select", ""]) == "boolean"
    assert infer_kind(["1", "0", "1"]) == "numeric"
    assert infer_kind(["2", "", "3.5"]) == "numeric"
    assert infer_kind(["Google", "google", "Direct"]) == "categorical"
    assert infer_kind(["Select", "", "  "]) is None


def _table() -> RawTable:
    rng = random.Random(1)
    cols = ("Prospect ID", "Lead Number", "Lead Source", "TotalVisits", "Do Not Email", "Tags", "Magazine",
            "City", "Notes", "Converted")
    rows = []
    for i in range(60):
        rows.append((f"id-{i:04d}", str(660000 + i), rng.choice(["Google", "google", "Direct", "Select"]),
                     rng.choice(["1", "2", "", "5"]), rng.choice(["Yes", "No"]), rng.choice(["Ringing", ""]), "No",
                     "Select", rng.choice(["a", "b"]), str(i % 2)))
    return RawTable(cols, tuple(rows))


def test_schema_drops_ids_leaky_constant_empty_and_user_columns() -> None:
    schema = infer_schema(_table(), "converted", exclude=["notes"])
    assert schema.target == "Converted"
    reasons = {e.column: e.reason for e in schema.excluded}
    assert reasons == {"Converted": "target", "Prospect ID": "identifier", "Lead Number": "identifier",
                       "Tags": "leaky", "Magazine": "constant", "City": "empty", "Notes": "user"}
    assert [(f.name, f.kind) for f in schema.features] == [
        ("Lead Source", "categorical"), ("TotalVisits", "numeric"), ("Do Not Email", "boolean")]


def test_schema_keeps_a_leaky_column_on_request() -> None:
    schema = infer_schema(_table(), "Converted", keep=["Tags"])
    assert ("Tags", "categorical") in schema.pairs()


def test_unknown_target_names_the_columns_with_did_you_mean() -> None:
    with pytest.raises(ModelDataError) as err:
        infer_schema(_table(), "Convertd")
    msg = str(err.value)
    assert "target column 'Convertd' is not in the data" in msg
    assert "Did you mean 'Converted'?" in msg
    assert "'Lead Source'" in msg


def test_unknown_exclude_column_is_an_error() -> None:
    with pytest.raises(ModelDataError, match="--exclude column 'Nope' is not in the data"):
        infer_schema(_table(), "Converted", exclude=["Nope"])


def test_schema_round_trips_through_json() -> None:
    schema = infer_schema(_table(), "Converted")
    assert schema_from_json(schema_to_json(schema)) == schema


def test_target_vector() -> None:
    y, keep = target_vector(["Yes", "no", "", "1", "0"] * 20, "Won")
    assert list(y[:5]) == [1, 0, 0, 1, 0]
    assert list(keep[:5]) == [True, True, False, True, True]
    with pytest.raises(ModelDataError, match=r"'Stage' must hold 0/1.*'maybe' \(20x\)"):
        target_vector(["1", "0", "maybe"] * 20, "Stage")
    with pytest.raises(ModelDataError, match="needs at least 20 of each"):
        target_vector(["1", "0", "0"], "Converted")


def test_fingerprints_ignore_case_and_column_order() -> None:
    a = RawTable(("x", "y"), (("Google", "1"), ("Direct", "2")))
    b = RawTable(("y", "x"), (("1", "google "), ("3", "Direct")))
    fa, fb = row_fingerprints(a, ["x", "y"]), row_fingerprints(b, ["x", "y"])
    assert fa[0] == fb[0]
    assert fa[1] != fb[1]


# ---------------------------------------------------------------- metrics


def test_ece_known_answers() -> None:
    assert expected_calibration_error([0, 0, 1, 1], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(0.1)
    assert expected_calibration_error([1, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]) == pytest.approx(0.0)
    # bin 0: |1 - 0.05| = 0.95, bin 1: |0 - 0.15| = 0.15, half the rows each
    assert expected_calibration_error([1, 0], [0.05, 0.15]) == pytest.approx(0.55)
    # 1.0 falls in the last bin, 0.0 in the first
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == pytest.approx(0.0)


def test_calibration_bins() -> None:
    bins = calibration_bins([0, 1, 1, 0], [0.05, 0.95, 1.0, 0.45])
    assert len(bins) == 10
    assert [b.count for b in bins] == [1, 0, 0, 0, 1, 0, 0, 0, 0, 2]
    assert bins[9].mean_predicted == pytest.approx(0.975)
    assert bins[9].observed_rate == 1.0
    assert math.isnan(bins[1].mean_predicted)


def test_lift_table_known_answer() -> None:
    # 20 leads, 5 conversions (25 %): the top two are both conversions, then one per 2nd..4th decile.
    p = [1 - i / 20 for i in range(20)]
    y = [1, 1, 1, 0, 0, 1, 1, 0] + [0] * 12
    rows = lift_table(y, p)
    assert [r.decile for r in rows] == list(range(1, 11))
    assert [r.leads for r in rows] == [2] * 10
    assert [r.conversions for r in rows] == [2, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert rows[0].rate == 1.0 and rows[0].lift == pytest.approx(4.0)
    assert rows[1].rate == 0.5 and rows[1].lift == pytest.approx(2.0)
    assert rows[4].lift == 0.0
    assert rows[0].cumulative_capture == pytest.approx(0.4)
    assert rows[3].cumulative_capture == pytest.approx(1.0)
    assert rows[0].max_score == 1.0


def test_lift_table_uneven_sizes_and_shuffled_input() -> None:
    rng = random.Random(3)
    pairs = [(i / 25, int(i >= 20)) for i in range(25)]
    rng.shuffle(pairs)
    rows = lift_table([y for _, y in pairs], [p for p, _ in pairs])
    assert sum(r.leads for r in rows) == 25
    assert [r.leads for r in rows] == [3] * 5 + [2] * 5
    assert rows[0].conversions == 3 and rows[1].conversions == 2


def test_metric_input_errors() -> None:
    with pytest.raises(ModelDataError, match="2 labels but 3 probabilities"):
        expected_calibration_error([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ModelDataError, match="within"):
        expected_calibration_error([0, 1], [0.1, 1.2])
    with pytest.raises(ModelDataError, match="AUC needs both outcomes"):
        auc([1, 1], [0.2, 0.3])
    with pytest.raises(ModelDataError, match="needs at least 10 rows"):
        lift_table([0, 1], [0.1, 0.9])
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


# ---------------------------------------------------------------- pipeline


def _synthetic(n: int = 400, seed: int = 7) -> RawTable:
    """Converts mostly via Google (either case) and many visits; 'Lead Source' has a rare value."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        src = rng.choice(["Google", "google", "Direct Traffic", "Olark Chat", "Select"])
        if i % 100 == 0:
            src = "Bing"  # rare
        visits = rng.choice(["0", "1", "2", "5", "8", ""])
        dne = rng.choice(["Yes", "No", "No"])
        score = (0.45 if src.lower() == "google" else 0.0) + (0.05 * float(visits or 2)) - (0.2 if dne == "Yes" else 0)
        conv = int(rng.random() < 0.2 + score)
        rows.append((f"p-{i}", src, visits, dne, str(conv)))
    return RawTable(("Prospect ID", "Lead Source", "TotalVisits", "Do Not Email", "Converted"), tuple(rows))


def _small_params() -> ModelParams:
    return ModelParams(max_iter=30, min_samples_leaf=10, min_frequency=5, calibration_folds=3)


def test_pipeline_groups_case_variants_and_rare_categories() -> None:
    table = _synthetic()
    schema = infer_schema(table, "Converted")
    X, y, dropped = prepare(table, schema)
    assert dropped == 0
    pipe = build_pipeline(schema, _small_params()).fit(X, y)
    enc = pipe.named_steps["encode"].named_transformers_["categorical"]
    cats = [c for c in enc.categories_[0] if isinstance(c, str)]
    assert "google" in cats and "Google" not in cats and "select" not in cats
    assert list(enc.infrequent_categories_[0]) == ["bing"]


def test_trained_model_predicts_probabilities_for_sparse_rows() -> None:
    table = _synthetic()
    schema = infer_schema(table, "Converted")
    result = train(table, schema, _small_params(), folds=3)
    assert len(result.cv.folds) == 3
    assert result.cv.auc_mean > 0.6
    assert result.cv.oof.shape == (400,)
    model: LeadModel = PipelineLeadModel("v-test", schema.names, result.model)
    assert isinstance(model, LeadModel)
    rows: list[dict[str, object]] = [
        {"Lead Source": "GOOGLE", "TotalVisits": 8, "Do Not Email": "No"},
        {"Lead Source": "Direct Traffic", "TotalVisits": 0, "Do Not Email": "Yes"},
        {},  # every feature missing
        {"Lead Source": "never seen before", "TotalVisits": None},
        {"Lead Source": None, "unrelated key": 1},
    ]
    probs = model.predict_proba(rows)
    assert len(probs) == 5
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probs)
    assert probs[0] > probs[1]
    assert model.predict_proba([]) == []


def test_cross_validate_reports_each_fold() -> None:
    table = _synthetic()
    schema = infer_schema(table, "Converted")
    X, y, _ = prepare(table, schema)
    lines: list[str] = []
    cv = cross_validate(X, y, schema, _small_params(), folds=2, progress=lines.append)
    assert [f.fold for f in cv.folds] == [1, 2]
    assert lines[0].startswith("fold 1/2 AUC ")
    with pytest.raises(ModelDataError, match="at least 2 folds"):
        cross_validate(X, y, schema, _small_params(), folds=1)


def test_feature_matrix_fills_missing_keys_with_none() -> None:
    m = feature_matrix([{"a": 1}, {"b": "x"}], ["a", "b"])
    assert m.tolist() == [[1, None], [None, "x"]]


def test_schema_names() -> None:
    schema = Schema("t", (), ())
    assert schema.names == ()
