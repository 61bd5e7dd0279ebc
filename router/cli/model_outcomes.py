"""``leadrouter model train --from-outcomes``: train on our own logged crossings and their outcomes.

::

    leadrouter model train --from-outcomes [--holdout 0.25] [--min-leads 1000] [--min-conversions 120]
                           [--activate] [--out DIR] [--registry DIR]

Reads the crossings the worker logged (``lr:vectors``: the feature vector of
each lead at the moment it crossed) and the leads' outcomes (won/lost rows on
``lr:outcomes``, rejections from the leads' histories), labels each crossing
(won 1, lost or rejected 0, no outcome yet: left out; :mod:`scoring.learn`),
trains the calibrated model on the older crossings and evaluates it on the
newer ones: AUC, log loss, calibration error (ECE) and lift by decile, with
``calibration.png`` and ``lift.png``.  The version is saved either way;
``--activate`` makes it the served one only when there are at least
``--min-leads`` labelled leads and ``--min-conversions`` conversions
(default 1,000 and 120), and otherwise refuses with the counts (exit 3).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import RedisError
from threadpoolctl import threadpool_limits

from router.cli.model_report import Clock, ModelCommandError, _library_versions, print_evaluation, write_plots
from router.settings import Settings
from router.storage.decisions import lifecycle_events, read_decisions, read_outcomes
from router.storage.model_registry import activate, new_version, save_model
from router.storage.redis import create_redis
from router.worker.learning import first_records
from scoring.learn import (
    MIN_CONVERSIONS,
    MIN_LEADS,
    Example,
    JoinReport,
    OutcomeTraining,
    check_enough,
    join_outcomes,
    train_on_outcomes,
)
from scoring.model import LeadModelError, ModelParams, schema_to_json

EXIT_NOT_ACTIVATED = 3


async def load_examples(settings: Settings, clock: Clock) -> tuple[list[Example], JoinReport]:
    """The labelled crossings, read from Redis."""
    redis = create_redis(settings.redis, role="cli")
    try:
        records = await read_decisions(redis)
        crossings = first_records(records, "crossing")
        clock(f"read {len(records)} logged decisions: {len(crossings)} crossings")
        rows = await read_outcomes(redis)
        events = await lifecycle_events(redis, [str(c.get("lead_id", "")) for c in crossings], rows)
        clock(f"read {len(rows)} won/lost rows and {len(events)} lifecycle steps of the crossed leads")
    except RedisError as exc:
        msg = (f"Redis at {settings.redis.url} failed ({type(exc).__name__}: {exc}); check REDIS_URL and that "
               "redis-server is running")
        raise ModelCommandError(msg) from exc
    finally:
        await redis.aclose()
    return join_outcomes(crossings, events)


def _metadata(result: OutcomeTraining, report: JoinReport, examples: list[Example], *, created: datetime,
              holdout: float, gate_ok: bool, gate_message: str) -> dict[str, Any]:
    ev = result.evaluation
    return {
        "created": created.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        **schema_to_json(result.schema),
        "data": {"file": "lr:vectors + lr:outcomes", "source": "outcomes", "rows": report.labelled,
                 "positives": report.positives, "leads": report.leads, "conversions": report.lead_conversions,
                 "open_crossings": report.open},
        "model": {"estimator": "CalibratedClassifierCV(ensemble=False, Pipeline(LeadFeatureCleaner, ColumnTransformer("
                               "OrdinalEncoder, SimpleImputer), HistGradientBoostingClassifier))",
                  "params": result.params.to_dict()},
        "cv": {"what": "time split: trained on the older crossings, evaluated on the newer ones",
               "auc_mean": round(ev.auc, 6), "auc_std": 0.0, "log_loss_mean": round(ev.log_loss, 6),
               "ece": round(ev.ece, 6)},
        "time_split": {"holdout": holdout, "train_rows": result.train_rows, "train_positives": result.train_positives,
                       "test_rows": result.test_rows, "test_positives": result.test_positives,
                       "train_until": result.train_until, "test_from": result.test_from},
        "activation": {"allowed": gate_ok, "detail": gate_message},
        "libraries": _library_versions(),
        "examples": len(examples),
    }


def cmd_train_from_outcomes(settings: Settings, args: argparse.Namespace) -> int:
    clock = Clock()
    if args.min_leads < 1 or args.min_conversions < 1:
        raise ModelCommandError("--min-leads and --min-conversions must be at least 1")
    examples, report = asyncio.run(load_examples(settings, clock))
    clock(f"labelled {report.labelled} crossings of {report.leads} leads: {report.positives} won, "
          f"{report.labelled - report.positives} lost or rejected; {report.open} still open (left out)")
    gate = check_enough(report, min_leads=args.min_leads, min_conversions=args.min_conversions)
    if report.labelled < 10:
        raise ModelCommandError(f"cannot train: {gate.message.removeprefix('not activated: ')}")
    created = datetime.now(UTC)
    try:
        with threadpool_limits(limits=args.threads):
            result = train_on_outcomes(examples, holdout=args.holdout,
                                       params=ModelParams(calibration="sigmoid"), progress=clock)
    except LeadModelError as exc:
        raise ModelCommandError(f"cannot train on the logged outcomes: {exc}") from exc
    digest = hashlib.sha256(orjson.dumps([(e.lead_id, e.crossing, e.label) for e in examples])).hexdigest()
    meta = _metadata(result, report, examples, created=created, holdout=args.holdout, gate_ok=gate.ok,
                     gate_message=gate.message)
    version, path = save_model(args.registry, new_version(digest, created), result.model, meta)
    clock(f"saved {path}")
    out_dir = args.out or path
    cal, lift = write_plots(result.evaluation, out_dir, title=f"{version} (newer {args.holdout:.0%} of crossings)")
    clock(f"plots: {cal} and {lift}")
    print(f"version   {version}")
    print(f"split     trained on {result.train_rows} older crossings ({result.train_positives} won), evaluated on "
          f"{result.test_rows} newer ones ({result.test_positives} won)")
    print_evaluation(result.evaluation, version=version, data=path, notes=(), cv_auc=None)
    print(f"plots     {cal} {lift}")
    print(f"gate      {gate.message}")
    if not args.activate:
        print(f"activate  leadrouter model activate {version} --registry {args.registry}"
              + ("" if gate.ok else " (refused by 'model train --from-outcomes' until the counts are reached)"))
        return 0
    if not gate.ok:
        print(f"refused   {gate.message}", file=sys.stderr)
        return EXIT_NOT_ACTIVATED
    activate(args.registry, version)
    print(f"activated {version}")
    return 0


def add_arguments(t: argparse.ArgumentParser) -> None:
    """The ``--from-outcomes`` options of ``model train``."""
    t.add_argument("--from-outcomes", action="store_true",
                   help="train on the crossings the worker logged and their outcomes (won vs lost or rejected), "
                        "split by time")
    t.add_argument("--holdout", type=float, default=0.25,
                   help="--from-outcomes: the newest fraction of crossings kept for evaluation (default 0.25)")
    t.add_argument("--min-leads", type=int, default=MIN_LEADS,
                   help=f"--from-outcomes: labelled leads needed to activate (default {MIN_LEADS})")
    t.add_argument("--min-conversions", type=int, default=MIN_CONVERSIONS,
                   help=f"--from-outcomes: conversions needed to activate (default {MIN_CONVERSIONS})")
    t.add_argument("--out", type=Path, default=None,
                   help="--from-outcomes: folder for the plots (default: the model's folder)")
