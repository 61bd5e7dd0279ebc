"""The ``leadrouter`` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from router.errors import RouterError
from router.settings import WORKER_ROLES, Settings, load_settings, require_token_secret
from router.storage.redis import create_redis


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_collector(settings: Settings, args: argparse.Namespace) -> int:
    from router.ingest.app import serve

    require_token_secret(settings)
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from router.worker.app import run_worker

    if args.role is not None:  # the flag wins over LEADROUTER_WORKER_ROLE
        settings = settings.with_(worker_role=args.role)
    run_worker(settings)
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from router.cli.local import require_local_extra

    require_local_extra("dev")
    from router.dev.run import run_dev  # dev-only code: imported only when `leadrouter dev` runs

    return asyncio.run(run_dev(settings, rate=args.rate, duration_s=args.duration, seed=args.seed,
                               outcome_delay_s=args.outcome_delay))


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from router.tokens import mint_token

    secret = require_token_secret(settings)
    kind = "click" if args.click_url else "open"
    token = mint_token(secret, email=args.email, campaign=args.campaign, ttl_s=int(args.ttl_days * 86400),
                       kind=kind, url=args.click_url)
    base = settings.ingest.public_url.rstrip("/")
    print(token)
    if kind == "open":
        print(f'<img src="{base}/t/o/{token}.gif" width="1" height="1" alt="">', file=sys.stderr)
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from router.storage.live_config import (
        load_accounts_file,
        load_icp_file,
        load_rules_file,
        load_scoring_file,
    )

    ok = True
    files: tuple[tuple[str, Path, Callable[[Path], object]], ...] = (
        ("scoring", args.scoring or settings.files.scoring_file, load_scoring_file),
        ("icp", settings.files.icp_file, load_icp_file),
        ("routing", args.rules or settings.files.rules_file, load_rules_file),
        ("accounts", settings.files.accounts_file, load_accounts_file),
    )
    for label, path, loader in files:
        try:
            cfg = loader(path)
        except RouterError as exc:
            ok = False
            print(f"FAIL {label}: {exc}", file=sys.stderr)
        else:
            print(f"ok   {label}: {path} (version {getattr(cfg, 'version', '?')})")
    ok = _check_cases(settings, args) and ok
    return 0 if ok else 1


def _check_cases(settings: Settings, args: argparse.Namespace) -> bool:
    """The scoring and ICP test cases beside their files, when there are any."""
    from typing import Any

    from router.storage.config_store import ICP, SCORING, ConfigSpec, check_files
    from router.storage.rules_store import cases_path_for

    ok = True
    specs: tuple[tuple[ConfigSpec[Any], Path], ...] = (
        (SCORING, args.scoring or settings.files.scoring_file), (ICP, settings.files.icp_file))
    for spec, path in specs:
        cases = cases_path_for(path)
        if not cases.exists():
            continue
        try:
            check = check_files(spec, path, cases)
        except RouterError as exc:
            print(f"FAIL {spec.kind} cases: {exc}", file=sys.stderr)
            ok = False
            continue
        for failure in check.failures:
            print(f"FAIL {spec.kind} cases: {cases}: {failure.message}", file=sys.stderr)
        ok = ok and not check.failures
        print(f"{'ok  ' if not check.failures else 'FAIL'} {spec.kind} cases: {cases} "
              f"({len(check.results) - len(check.failures)} of {len(check.results)} passed)")
    return ok


def _print_model_explanation(settings: Settings, lead: dict[str, str]) -> None:
    """The active model's probability for the lead's state now, with its top signed contributions."""
    from router.storage.model_registry import explain_lead, load_active
    from scoring.explain_text import contribution_text
    from scoring.model import LeadModelError

    try:
        loaded = load_active(settings.files.model_registry_dir)
        if loaded is None:
            return
        ex = explain_lead(loaded, lead, now=time.time())
    except (RouterError, LeadModelError) as exc:
        print(f"model: cannot explain ({exc})")
        return
    top = ", ".join(contribution_text(c) for c in ex.top(5)) or "no feature moved it"
    print(f"model {loaded.version} now: probability {ex.probability:.2f} = base {ex.base_log_odds:+.2f} log-odds "
          f"{top}" + (" ..." if len(ex.contributions) > 5 else "")
          + " (exact Shapley values in calibrated log-odds)")


def cmd_lead(settings: Settings, args: argparse.Namespace) -> int:

    from models import lead_view_from_hash
    from router.storage import keys
    from router.storage.live_config import load_scoring_file
    from router.storage.store import RedisStore

    config = load_scoring_file(settings.files.scoring_file)

    async def main() -> int:
        redis = create_redis(settings.redis, role="cli")
        try:
            store = RedisStore(redis)
            lead_id = keys.lead_id_for_email(args.email)
            data = await store.lead_hash(lead_id)
            if not data:
                print(f"no lead with email {args.email!r}", file=sys.stderr)
                return 1
            reasons = await store.lead_reasons(lead_id)
            now = time.time()
            view = lead_view_from_hash(data, reasons, now=now, half_life_s=config.half_life_s)
            print(f"{view.display_name} <{view.email}>  {view.company or ''}")
            print(f"score now {view.score:.1f} (half-life {config.half_life_days:g} days)  "
                  f"stage {view.stage.value}  events {data.get('events', 0)}")
            grade = data.get("grade", "not graded yet")
            fit = f" (fit {float(data['fit']):.0f}/100)" if data.get("fit") else ""
            prob = f"{float(data['p']):.2f}" if data.get("p") else "no model score"
            print(f"parts: engagement {view.score:.1f}; fit grade {grade}{fit}; conversion probability {prob}")
            _print_model_explanation(settings, data)
            labels = ", ".join(c.label for c in config.ready.clauses)
            print(f"sales-ready when any of: {labels}")
            if data.get("last_trigger"):
                print(f"last crossing #{data.get('crossing')}: {data['last_trigger']}")
            if data.get("owner_name"):
                print(f"owner {data['owner_name']} [{data.get('team')}] via rule {data.get('rule')} "
                      f"(rules {data.get('rules_version')})")
            if data.get("review"):
                print(f"review: crossing #{data.get('review_crossing')} {data['review']} "
                      "(leadrouter review list | release | dismiss)")
            changes = await store.field_history(lead_id, args.limit)
            if changes:
                print("field history (newest first; unverified values are kept beside the lead's own):")
            for c in changes:
                when = datetime.fromtimestamp(float(c.get("ts", 0)), UTC).strftime("%Y-%m-%d %H:%M:%S")
                what = (f"{c.get('old')!r} -> {c.get('new')!r}" if "old" in c else f"set {c.get('new')!r}")
                status = "applied" if c.get("applied") else "NOT applied (unverified), kept " + repr(c.get("old"))
                print(f"  {when}Z  {c.get('field')}: {what}  via {c.get('source')}  [{status}]")
            print("reasons (newest first; points as earned, then as worth now):")
            for r in reasons[: args.limit]:
                worth = r.points * 2 ** (-(now - r.ts) / config.half_life_s)
                when = datetime.fromtimestamp(r.ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
                print(f"  {when}Z  {r.points:+6.1f} -> {worth:+6.1f}  {r.rule}: {r.detail}")
            return 0
        finally:
            await redis.aclose()

    return asyncio.run(main())


# Feature modules that add their own subcommands: each has
# ``register(sub: argparse._SubParsersAction) -> None`` and sets ``fn`` on its
# parsers as ``fn(settings, args) -> int``.
COMMAND_MODULES: tuple[str, ...] = (
    "router.cli.rules", "router.cli.scoring", "router.cli.leads", "router.cli.model", "router.cli.admin",
    "router.cli.alerts", "router.cli.backtest",
    "router.cli.bench", "router.cli.review",
)


def cmd_forget(settings: Settings, args: argparse.Namespace) -> int:

    from router.storage.live_config import RedisRulesSource
    from router.storage.pii import Vault
    from router.storage.store import RedisStore
    from router.worker.privacy import forget

    if settings.tokens.pii_master()[1]:
        print("warning: LEADROUTER_PII_KEY is not set; using the development key (give the CLI the same "
              "LEADROUTER_PII_KEY as the collector and the worker)", file=sys.stderr)

    async def main() -> int:
        redis = create_redis(settings.redis, role="cli")
        try:
            routing = RedisRulesSource(settings.files.rules_file, redis)
            await routing.poll()  # the published rules' teams and reps, as the workers use
            report = await forget(RedisStore(redis), routing.current, args.email,
                                  vault=Vault.from_settings(redis, settings.tokens))
        finally:
            await redis.aclose()
        what = "erased" if report.existed else "no stored lead"
        print(f"forgotten: {what} (lead {report.lead_id}, {report.keys_deleted} keys, "
              f"{len(report.identifiers)} identifiers{', left its account' if report.account else ''}, "
              f"{report.outcomes_deleted} outcome rows, {report.decisions_deleted} logged decisions, "
              f"{report.identity_log_deleted} identity-log entries, "
              f"{report.digest_entries} digest entries); data key "
              f"{'shredded' if report.key_shredded else 'absent'}: sealed copies in the spool and Kafka are "
              "unreadable, and later events for this email are dropped")
        return 0

    return asyncio.run(main())


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # also refuses nan
        msg = f"{text!r} is not a number >= 0"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leadrouter", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    d = sub.add_parser("dev", help="run everything locally with demo traffic (Ctrl-C stops it all)")
    d.add_argument("--rate", type=_non_negative, default=20.0,
                   help="demo hits per second (default 20; 0: no demo traffic, only your own)")
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    d.add_argument("--seed", type=int, default=None, help="seed the demo traffic")
    d.add_argument("--outcome-delay", type=_non_negative, default=20.0,
                   help="seconds after routing before the demo CRM marks an alerted lead won or lost (default 20)")
    d.set_defaults(fn=cmd_dev)
    sub.add_parser("collector", help="run the HTTP collector").set_defaults(fn=cmd_collector)
    w = sub.add_parser("worker", help="run a stream-processing worker")
    w.add_argument("--role", choices=WORKER_ROLES, default=None,
                   help="all: scoring and alert delivery in one process (default, or LEADROUTER_WORKER_ROLE); "
                        "scoring: events, routing, SLA and review timers, publishing alerts; alerts: deliver the "
                        "published alerts (Slack, email) and digests.  Run scoring and alerts processes side by "
                        "side to keep alert delivery off the scoring processes' CPU")
    w.set_defaults(fn=cmd_worker)
    t = sub.add_parser("token", help="mint a signed email open (or click) token")
    t.add_argument("--email", required=True)
    t.add_argument("--campaign", required=True)
    t.add_argument("--ttl-days", type=float, default=90.0)
    t.add_argument("--click-url", default=None, help="make a click token that redirects to this URL")
    t.set_defaults(fn=cmd_token)
    c = sub.add_parser("check", help="validate the scoring and routing files")
    c.add_argument("--scoring", type=Path, default=None)
    c.add_argument("--rules", type=Path, default=None)
    c.set_defaults(fn=cmd_check)
    fg = sub.add_parser("forget", help="erase a person from Redis and from further processing")
    fg.add_argument("email")
    fg.set_defaults(fn=cmd_forget)
    lead = sub.add_parser("lead", help="look at a lead")
    lsub = lead.add_subparsers(dest="lead_command", required=True)
    ex = lsub.add_parser("explain", help="the score now, and the reasons behind it")
    ex.add_argument("email")
    ex.add_argument("--limit", type=int, default=20)
    ex.set_defaults(fn=cmd_lead)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        _setup_logging(settings)
        return int(args.fn(settings, args))
    except RouterError as exc:
        print(f"leadrouter: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
