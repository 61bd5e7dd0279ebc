"""``leadrouter model``: train, evaluate, list and activate the predictive lead score.

::

    leadrouter model train --data leads.csv --target Converted [--map MAPPING.yaml] [--registry DIR] [--exclude COL ...]
                           [--keep COL ...] [--folds 5] [--calibration sigmoid|isotonic] [--activate]
    leadrouter model train --from-outcomes [--holdout 0.25] [--min-leads 1000] [--min-conversions 120] [--activate]
                           (router/cli/model_outcomes.py)
    leadrouter model evaluate --data leads.csv [--registry DIR] [--version V] [--holdout 0.2] [--out DIR]
    leadrouter model list [--registry DIR]
    leadrouter model activate VERSION [--registry DIR]

``--map`` (e.g. ``scoring/x_education_mapping.yaml``) maps the export's
columns onto the live feature catalogue (:mod:`scoring.features`): the model
is trained on exactly the vector the worker computes from a live lead, the
columns without a live source are listed and left out, and the mapping is
saved with the model so ``evaluate`` applies it too.  Without ``--map`` the
raw columns are used: such a model is for experiments, the worker cannot
fill its features.

Progress goes to stderr as ``[ elapsed] stage`` lines; results go to stdout.

``evaluate`` scores the data with the saved model.  When that data is (or
overlaps) the model's training data it says so: the figures are then
optimistic.  ``--holdout F`` instead keeps back a stratified fraction ``F`` of
the given data, trains a *fresh* model on the rest with the saved version's
features and settings (the saved model is not used, since it has seen every
row), and reports on the held-back rows only.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from router.cli.model_report import Clock, ModelCommandError, _library_versions, print_evaluation, write_plots
from router.errors import RouterError
from router.settings import Settings
from router.storage.model_registry import (
    DEFAULT_REGISTRY,
    LoadedModel,
    activate,
    active_version,
    latest_version,
    list_versions,
    load_model,
    new_version,
    read_fingerprints,
    save_model,
)
from scoring.features import FeatureMapping, FeatureMappingError, cell_text, parse_mapping, training_row
from scoring.model import (
    DEFAULT_LEAKY_COLUMNS,
    Exclusion,
    Feature,
    LeadModelError,
    ModelParams,
    RawTable,
    Schema,
    TrainResult,
    build_calibrated,
    expected_calibration_error,
    holdout_split,
    infer_schema,
    positive_proba,
    resolve_column,
    row_fingerprints,
    schema_to_json,
    target_vector,
    train,
)
from scoring.model import evaluate as evaluate_scores


class ModelDataFileError(RouterError):
    """A training/evaluation CSV is missing, unreadable or unusable; the message names file, column and fix."""


# ---------------------------------------------------------------- helpers


def read_csv_table(path: Path) -> tuple[RawTable, str]:
    """The CSV as a :class:`RawTable` plus the file's sha256 (CRLF/LF, UTF-8 with or without BOM)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelDataFileError(f"data file {path} does not exist; pass --data with a CSV path") from None
    except OSError as exc:
        raise ModelDataFileError(f"cannot read data file {path}: {exc}") from exc
    sha = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelDataFileError(f"{path} is not UTF-8 (byte {exc.start}: {exc.reason}); "
                                 "re-save it as UTF-8 CSV") from None
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise ModelDataFileError(f"{path} is empty or has no header row; the first line must name the columns")
        columns = tuple(h.strip() for h in header)
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:
            raise ModelDataFileError(f"{path} has duplicate column names {dupes}; rename them")
        rows: list[tuple[str, ...]] = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(columns):
                raise ModelDataFileError(
                    f"{path} line {reader.line_num} has {len(row)} fields but the header has {len(columns)}; "
                    "fix the quoting or the separators on that line (the file must be comma-separated)")
            rows.append(tuple(row))
    except csv.Error as exc:
        raise ModelDataFileError(f"{path} line {reader.line_num}: {exc}; fix the CSV quoting") from exc
    if not rows:
        raise ModelDataFileError(f"{path} has a header but no data rows")
    return RawTable(columns, tuple(rows)), sha


def _matrix(table: RawTable, names: Sequence[str]) -> npt.NDArray[np.object_]:
    """The model input from a table; a feature column the table lacks is all-missing."""
    idx = [table.columns.index(n) if n in table.columns else -1 for n in names]
    out = np.empty((len(table.rows), len(names)), dtype=object)
    for i, row in enumerate(table.rows):
        out[i, :] = [row[j] if j >= 0 else None for j in idx]
    return out


def read_mapping(path: Path) -> FeatureMapping:
    """The ``--map`` file, parsed and checked against the feature catalogue."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelDataFileError(f"cannot read mapping file {path}: {exc}; pass --map with a YAML path") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelDataFileError(f"{path} is not valid YAML: {exc}; fix the file") from exc
    try:
        return parse_mapping(data, str(path))
    except FeatureMappingError as exc:
        raise ModelDataFileError(str(exc)) from exc


def map_table(table: RawTable, mapping: FeatureMapping, target: str, source: Path) -> RawTable:
    """The export as catalogue features (+ the target column): the table the model is trained on."""
    for m in mapping.features:
        for col in m.columns():
            try:
                resolved = resolve_column(table.columns, col, role=f"mapped ({m.feature})")
            except LeadModelError as exc:
                raise ModelDataFileError(f"{source}: {exc}") from exc
            if resolved != col:
                msg = (f"{source}: the mapping names column {col!r} for {m.feature}, the data has {resolved!r}; "
                       "spell it as in the header")
                raise ModelDataFileError(msg)
    target_idx = table.index(target)
    rows = []
    for raw in table.rows:
        row = dict(zip(table.columns, raw, strict=True))
        vec = training_row(mapping, row)
        rows.append((*(cell_text(vec[n]) for n in mapping.names), raw[target_idx]))
    return RawTable((*mapping.names, target), tuple(rows))


def mapped_schema(table: RawTable, mapping: FeatureMapping, target: str) -> Schema:
    """Catalogue features in mapping order; every other export column excluded as 'unmapped' (or 'leaky')."""
    used = mapping.used_columns()
    leaky = {k.casefold(): v for k, v in DEFAULT_LEAKY_COLUMNS.items()}
    excluded = [Exclusion(target, "target", "the column the model predicts")]
    for col in table.columns:
        if col == target or col in used:
            continue
        if col.casefold() in leaky:
            excluded.append(Exclusion(col, "leaky", leaky[col.casefold()]))
        else:
            excluded.append(Exclusion(col, "unmapped", "no live source: not in the mapping, left out"))
    return Schema(target, tuple(Feature(n, k) for n, k in mapping.kinds()), tuple(excluded))


def build_metadata(result: TrainResult, *, data_path: Path, data_sha256: str, columns: int,
                   folds: int, created: datetime, seconds: float, y: npt.NDArray[np.int64]) -> dict[str, Any]:
    cv = result.cv
    return {
        "created": created.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        **schema_to_json(result.schema),
        "data": {
            "file": data_path.name,
            "path": str(data_path.resolve()),
            "sha256": data_sha256,
            "rows": result.rows,
            "rows_without_target": result.dropped_no_target,
            "columns": columns,
            "positives": result.positives,
            "positive_rate": round(result.positive_rate, 6),
        },
        "model": {
            "estimator": "CalibratedClassifierCV(ensemble=False, Pipeline(LeadFeatureCleaner, ColumnTransformer("
                         "OrdinalEncoder, SimpleImputer), HistGradientBoostingClassifier))",
            "params": result.params.to_dict(),
        },
        "cv": {
            "folds": folds,
            "stratified": True,
            "what": "the calibrated model, calibration refit inside every fold",
            "auc_mean": round(cv.auc_mean, 6),
            "auc_std": round(cv.auc_std, 6),
            "log_loss_mean": round(cv.log_loss_mean, 6),
            "ece_out_of_fold": round(expected_calibration_error(y, cv.oof), 6),
            "per_fold": [{"fold": f.fold, "rows": f.rows, "auc": round(f.auc, 6), "log_loss": round(f.log_loss, 6)}
                         for f in cv.folds],
        },
        "libraries": _library_versions(),
        "training_seconds": round(seconds, 2),
    }


def _check_threads(threads: int) -> None:
    if threads < 1:
        raise ModelCommandError(f"--threads must be at least 1, got {threads}; the default is 1")


def _wrap(path: Path, exc: LeadModelError | FeatureMappingError) -> ModelDataFileError:
    return ModelDataFileError(f"{path}: {exc}")


# ---------------------------------------------------------------- train


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    if getattr(args, "from_outcomes", False):
        if args.data is not None or args.map is not None or args.target is not None:
            raise ModelCommandError("--from-outcomes trains on the logged crossings: leave out --data, --map and "
                                    "--target")
        from router.cli.model_outcomes import cmd_train_from_outcomes

        return cmd_train_from_outcomes(settings, args)
    if args.data is None or args.target is None:
        raise ModelCommandError("model train needs --data CSV and --target COLUMN (or --from-outcomes to train on "
                                "the logged crossings and their outcomes)")
    clock = Clock()
    if not 2 <= args.folds <= 20:
        raise ModelCommandError(f"--folds must be between 2 and 20, got {args.folds}; the default is 5")
    _check_threads(args.threads)
    data_path: Path = args.data
    table, sha = read_csv_table(data_path)
    clock(f"read {data_path}: {len(table.rows)} rows, {len(table.columns)} columns, sha256 {sha[:12]}")
    mapping = read_mapping(args.map) if args.map is not None else None
    columns = len(table.columns)
    try:
        if mapping is not None:
            if args.exclude or args.keep:
                raise ModelCommandError("--exclude/--keep do not apply with --map: the mapping names the columns used")
            target = resolve_column(table.columns, args.target, role="target")
            schema = mapped_schema(table, mapping, target)
            table = map_table(table, mapping, target, data_path)
            clock(f"mapped onto {len(mapping.features)} live catalogue features with {args.map}")
        else:
            schema = infer_schema(table, args.target, exclude=args.exclude, keep=args.keep)
        y_all, keep = target_vector(table.column(schema.target), schema.target)
    except LeadModelError as exc:
        raise _wrap(data_path, exc) from exc
    unmapped = [e.column for e in schema.excluded if e.reason == "unmapped"]
    if unmapped:
        clock(f"left out {len(unmapped)} column(s) without a live source: {', '.join(unmapped)}")
    for ex in schema.excluded:
        if ex.reason == "unmapped":
            continue
        if ex.reason != "target":
            clock(f"excluded {ex.column!r}: {ex.reason} ({ex.detail})")
    leaky = [e.column for e in schema.excluded if e.reason == "leaky"]
    if leaky:
        clock(f"left out {len(leaky)} leaky column(s) filled in after sales contact: {', '.join(leaky)}")
    clock(f"{len(schema.features)} features: {schema.count('numeric')} numeric, {schema.count('boolean')} yes/no, "
          f"{schema.count('categorical')} categorical")
    params = ModelParams(calibration=args.calibration)
    created = datetime.now(UTC)
    n_pos = int(y_all[keep].sum())
    clock(f"target {schema.target!r}: {n_pos} of {int(keep.sum())} positive ({n_pos / keep.sum():.1%})"
          + (f"; {int((~keep).sum())} rows without a target skipped" if (~keep).any() else ""))
    clock(f"{args.folds}-fold stratified cross-validation of the {params.calibration}-calibrated model")
    try:
        with threadpool_limits(limits=args.threads):
            result = train(table, schema, params, folds=args.folds, progress=clock)
    except LeadModelError as exc:
        raise _wrap(data_path, exc) from exc
    seconds = time.perf_counter() - clock.t0
    y = y_all[keep]
    meta = build_metadata(result, data_path=data_path, data_sha256=sha, columns=columns,
                          folds=args.folds, created=created, seconds=seconds, y=y)
    if mapping is not None:
        meta["mapping"] = {"file": str(args.map), **mapping.to_json()}
    fingerprints = row_fingerprints(table, [*schema.names, schema.target])[keep]
    version, path = save_model(args.registry, new_version(sha, created), result.model, meta, fingerprints)
    clock(f"saved {path}")
    if args.activate:
        activate(args.registry, version)
        clock(f"activated {version} ({args.registry / 'ACTIVE'})")
    cv = meta["cv"]
    print(f"version   {version}")
    print(f"artifact  {path}")
    print(f"CV AUC    {cv['auc_mean']:.4f} ± {cv['auc_std']:.4f} ({args.folds}-fold stratified; per fold "
          + ", ".join(f"{f['auc']:.3f}" for f in cv["per_fold"]) + ")")
    print(f"log loss  {cv['log_loss_mean']:.4f}   ECE (out-of-fold, 10 bins) {cv['ece_out_of_fold']:.4f}")
    print(f"rows      {result.rows} ({result.positive_rate:.1%} positive), features {len(schema.features)}")
    if not args.activate:
        print(f"activate  leadrouter model activate {version} --registry {args.registry}")
    return 0


# ---------------------------------------------------------------- evaluate


def _pick_version(registry: Path, requested: str | None) -> tuple[str, str]:
    if requested:
        return requested, "as requested"
    active = active_version(registry)
    if active:
        return active, "the active version"
    latest = latest_version(registry)
    if latest:
        return latest, "the newest version (none is active)"
    raise ModelCommandError(f"no model in {registry}; train one with 'leadrouter model train --data CSV "
                            "--target COLUMN' or pass --registry")


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    clock = Clock()
    _check_threads(args.threads)
    registry: Path = args.registry
    version, why = _pick_version(registry, args.version)
    loaded = load_model(registry, version)
    clock(f"loaded model {version} ({why}) from {loaded.path}")
    data_path: Path = args.data
    table, sha = read_csv_table(data_path)
    clock(f"read {data_path}: {len(table.rows)} rows, sha256 {sha[:12]}")
    schema = loaded.schema
    if loaded.metadata.get("mapping"):
        try:
            mapping = parse_mapping(loaded.metadata["mapping"], f"{version} metadata.json mapping")
            target = resolve_column(table.columns, schema.target, role="target")
        except (FeatureMappingError, LeadModelError) as exc:
            raise _wrap(data_path, exc) from exc
        table = map_table(table, mapping, target, data_path)
        clock(f"mapped onto {len(mapping.features)} live catalogue features (the mapping saved with {version})")
    try:
        target = resolve_column(table.columns, schema.target, role="target")
        y_all, keep = target_vector(table.column(target), target)
    except LeadModelError as exc:
        raise _wrap(data_path, exc) from exc
    absent = [n for n in schema.names if n not in table.columns]
    if absent:
        clock(f"WARNING: {len(absent)} feature column(s) missing from {data_path.name}, scored as missing: "
              + ", ".join(absent))
    sub = table.subset(np.flatnonzero(keep))
    y = y_all[keep]
    X = _matrix(sub, schema.names)
    notes: list[str] = []
    if args.holdout is not None:
        try:
            tr, te = holdout_split(y, args.holdout, loaded.params.random_state)
        except LeadModelError as exc:
            raise ModelCommandError(str(exc)) from exc
        clock(f"holdout: training a fresh model on {len(tr)} rows with {version}'s features and settings; "
              f"keeping {len(te)} rows ({args.holdout:.0%}, stratified) unseen")
        with threadpool_limits(limits=args.threads):
            model = build_calibrated(schema, loaded.params).fit(X[tr], y[tr])
            p = positive_proba(model, X[te])
        y_eval = y[te]
        label = f"holdout {args.holdout:.0%} ({len(te)} unseen rows)"
        notes.append(f"Holdout evaluation: {len(te)} rows ({args.holdout:.0%}, stratified) were held back and scored "
                     f"by a fresh model trained on the other {len(tr)} rows with {version}'s features and "
                     "settings; the saved model was not used for these figures.")
    else:
        with threadpool_limits(limits=args.threads):
            p = positive_proba(loaded.estimator, X)
        y_eval = y
        label = data_path.name
        notes.extend(_overlap_notes(loaded, registry, sub, sha))
        if any(n.startswith("NOTE") for n in notes):
            label += " (training data)"
    clock(f"scored {len(y_eval)} rows")
    try:
        ev = evaluate_scores(y_eval, p)
    except LeadModelError as exc:
        raise _wrap(data_path, exc) from exc
    out_dir: Path = args.out or loaded.path
    paths = write_plots(ev, out_dir, title=f"{version} on {label}")
    clock(f"wrote {paths[0]} and {paths[1]}")
    print_evaluation(ev, version=version, data=data_path, notes=notes, cv_auc=_cv_auc(loaded))
    for path in paths:
        print(f"plot      {path}")
    return 0


def _cv_auc(loaded: LoadedModel) -> float | None:
    value = (loaded.metadata.get("cv") or {}).get("auc_mean")
    return float(value) if isinstance(value, (int, float)) else None


def _overlap_notes(loaded: LoadedModel, registry: Path, table: RawTable, sha: str) -> list[str]:
    data = loaded.metadata.get("data") or {}
    cv_auc = _cv_auc(loaded)
    honest = f" (cross-validated AUC at training: {cv_auc:.4f})" if cv_auc is not None else ""
    fix = f"use --holdout 0.2 or the cross-validated figures{honest}"
    if data.get("sha256") == sha:
        return [f"NOTE: this is the training data of {loaded.version} (same sha256): the model has seen every row, "
                f"so these figures are optimistic; {fix}."]
    prints = read_fingerprints(registry, loaded.version)
    if prints is None:
        return ["Could not check for overlap with the training data (no train_rows.npy)."]
    names = [*loaded.schema.names, loaded.schema.target]
    if not all(n in table.columns for n in names):
        return ["Could not check for overlap with the training data (feature columns differ)."]
    seen = np.isin(row_fingerprints(table, names), prints)
    n = int(seen.sum())
    if n == 0:
        return [f"None of these rows was in the training data of {loaded.version}."]
    return [f"NOTE: {n} of {len(seen)} rows ({n / len(seen):.0%}) were in the training data of {loaded.version}: "
            f"these figures are optimistic; {fix}."]


# ---------------------------------------------------------------- list / activate


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    registry: Path = args.registry
    versions = list_versions(registry)
    if not versions:
        print(f"no models in {registry}; train one with 'leadrouter model train --data CSV --target COLUMN'")
        return 0
    print(f"  {'version':<28} {'created (UTC)':<21} {'rows':>6} {'CV AUC':>7} {'log loss':>8}  target / data")
    for v in versions:
        mark = "*" if v.active else " "
        meta = v.metadata or {}
        cv = meta.get("cv") or {}
        data = meta.get("data") or {}
        auc = f"{v.cv_auc:.4f}" if v.cv_auc is not None else "-"
        ll = cv.get("log_loss_mean")
        ll_s = f"{ll:.4f}" if isinstance(ll, (int, float)) else "-"
        tail = f"{meta.get('target', '?')} / {data.get('file', '?')}"
        if v.problem:
            tail += f"  BROKEN: {v.problem}"
        print(f"{mark} {v.version:<28} {meta.get('created', '?')!s:<21} {data.get('rows', '-')!s:>6} {auc:>7} "
              f"{ll_s:>8}  {tail}")
    active = active_version(registry)
    if active is None:
        print("(no version is active; run 'leadrouter model activate VERSION')")
    elif not any(v.active for v in versions):
        print(f"WARNING: {registry / 'ACTIVE'} names {active!r}, which is not in the registry")
    else:
        print("* = active")
    return 0


def cmd_activate(settings: Settings, args: argparse.Namespace) -> int:
    activate(args.registry, args.version)
    print(f"activated {args.version} ({args.registry / 'ACTIVE'})")
    return 0


# ---------------------------------------------------------------- parser


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; try 0.2") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1; try 0.2")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``model`` and its subcommands to the ``leadrouter`` parser."""
    m = sub.add_parser("model", help="train, evaluate, list and activate the predictive lead score")
    msub = m.add_subparsers(dest="model_command", required=True)

    def registry_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY,
                       help=f"model registry folder (default ./{DEFAULT_REGISTRY})")

    t = msub.add_parser("train", help="cross-validate, fit a calibrated model and save a new version")
    t.add_argument("--data", type=Path, default=None, help="training CSV (header row, comma-separated)")
    t.add_argument("--target", default=None, help="the 0/1 (or yes/no) column to predict, e.g. Converted")
    t.add_argument("--map", type=Path, default=None, metavar="MAPPING.yaml",
                   help="map the export's columns onto the live feature catalogue (e.g. "
                        "scoring/x_education_mapping.yaml); unmapped columns are listed and left out")
    registry_arg(t)
    t.add_argument("--exclude", nargs="+", action="extend", default=[], metavar="COL",
                   help="columns to leave out (quote names with spaces)")
    t.add_argument("--keep", nargs="+", action="extend", default=[], metavar="COL",
                   help="use a column that is left out by default as leaky: "
                        + ", ".join(DEFAULT_LEAKY_COLUMNS))
    t.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    t.add_argument("--calibration", choices=("sigmoid", "isotonic"), default="sigmoid",
                   help="probability calibration (default sigmoid: never outputs exactly 0 or 1)")
    t.add_argument("--threads", type=int, default=1, help="CPU threads for training (default 1)")
    t.add_argument("--activate", action="store_true", help="make the new version the active one")
    from router.cli.model_outcomes import add_arguments as outcome_arguments

    outcome_arguments(t)
    t.set_defaults(fn=cmd_train)

    e = msub.add_parser("evaluate", help="AUC, log loss, calibration and lift of a model on a CSV")
    e.add_argument("--data", type=Path, required=True)
    registry_arg(e)
    e.add_argument("--version", default=None, help="model version (default: the active, else the newest)")
    e.add_argument("--holdout", type=_fraction, default=None, metavar="FRACTION",
                   help="evaluate on a stratified FRACTION of --data that a fresh model did not see")
    e.add_argument("--out", type=Path, default=None, help="folder for the plots (default: the model's folder)")
    e.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    e.set_defaults(fn=cmd_evaluate)

    ls = msub.add_parser("list", help="model versions with their CV AUC; * marks the active one")
    registry_arg(ls)
    ls.set_defaults(fn=cmd_list)

    a = msub.add_parser("activate", help="make VERSION the model the worker serves")
    a.add_argument("version", metavar="VERSION")
    registry_arg(a)
    a.set_defaults(fn=cmd_activate)
