"""``leadrouter rules ...``: test, publish, roll back, list and simulate routing rules; check accounts.

Exit codes: 0 ok; 1 the check failed (a test case, a rejected publish, an
accounts problem); 2 (from ``router.cli.main``) a file, key or setting could not
be used, with the message saying which and how to fix it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from redis.exceptions import RedisError

from router.backtest.simulate import (
    DATASETS,
    DEFAULT_DATASETS,
    ProgressLine,
    dataset_leads,
    format_report,
    parse_when,
    read_leads,
    replay_form_fills,
    write_chart,
    write_leads,
)
from router.errors import RouterError
from router.settings import PACKAGE_ROOT, Settings
from router.storage.redis import create_redis
from router.storage.rules_store import (
    RulesRejectedError,
    RulesStore,
    cases_path_for,
    check_files,
    check_rules,
    load_rules_path,
    parse_version,
    read_text,
)
from rules import RoutingConfig, RulesError
from rules.accounts import (
    AccountBook,
    accounts_yaml,
    check_owners,
    load_accounts,
    match_account,
    maven_accounts,
    owner_first,
)
from rules.simulation import SimLead, simulate

DEFAULT_ACCOUNTS = PACKAGE_ROOT / "rules" / "accounts.yaml"
T = TypeVar("T")


class RulesCommandError(RouterError):
    """A ``leadrouter rules`` command could not do its work."""


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _with_store(settings: Settings, work: Callable[[RulesStore], Awaitable[T]]) -> T:
    async def main() -> T:
        redis = create_redis(settings.redis, role="cli")
        try:
            return await work(RulesStore(redis))
        except RedisError as exc:
            msg = f"Redis at {settings.redis.url} failed: {exc}; check REDIS_URL and that redis-server is running"
            raise RulesCommandError(msg) from exc
        finally:
            await redis.aclose()

    return asyncio.run(main())


# --- test ----------------------------------------------------------------------------------------


def cmd_test(settings: Settings, args: argparse.Namespace) -> int:
    rules: Path = args.rules or settings.files.rules_file
    try:
        check = check_files(rules, args.cases)
    except RulesRejectedError as exc:
        print(f"FAIL {exc}", file=sys.stderr)
        return 1
    for result in check.results:
        if not result.passed:
            print(f"FAIL {result.message}")
        elif args.verbose:
            print(f"ok   {result.message}")
    failed = len(check.failures)
    summary = (f"{check.cases_source}: {len(check.results)} cases, {len(check.results) - failed} passed, "
               f"{failed} failed ({rules}, version {check.config.version})")
    print(summary, file=sys.stderr if failed else sys.stdout)
    return 1 if failed or not check.results else 0


# --- publish / rollback / history ----------------------------------------------------------------


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    rules: Path = args.rules or settings.files.rules_file
    cases: Path = args.cases or cases_path_for(rules)
    text = read_text(rules, "rules file", "check the --rules path")
    cases_text = read_text(cases, "test cases", f"keep test cases for {rules.name} in {cases.name} beside it, "
                                                "or pass --cases FILE")
    try:
        check = check_rules(text, str(rules), cases_text, str(cases))
    except RulesRejectedError as exc:
        print(f"not published: {exc}", file=sys.stderr)
        return 1

    async def work(store: RulesStore) -> int:
        before = await store.active_number()
        versions = await store.versions()
        doc = await store.publish(check, author=args.author, note=args.note or "")
        was = f"v{before}" if before is not None else f"the rules file {settings.files.rules_file}"
        print(f"published v{doc.number} from {rules} (file version {doc.file_version}, "
              f"{doc.cases_count} test cases passed) by {doc.author}; active now v{doc.number}, was {was}")
        print(f"  decisions record rules_version {doc.tag}; sha256 {doc.sha256[:12]}, "
              f"content hash {doc.content_hash[:12]}")
        same = [v.number for v in versions if v.content_hash == doc.content_hash]
        if same:
            print(f"  note: same compiled content as v{same[-1]}")
        return 0

    return _with_store(settings, work)


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    number = parse_version(args.version)

    async def work(store: RulesStore) -> int:
        entry = await store.rollback(number, author=args.author, note=args.note or "")
        doc = await store.get(number)
        was = f"v{entry.previous}" if entry.previous is not None else "the rules file"
        tag = doc.tag if doc is not None else f"v{number}"
        print(f"rolled back to v{number} ({tag}) by {entry.author}; was {was}. Workers switch on their next check.")
        return 0

    return _with_store(settings, work)


def cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: RulesStore) -> int:
        versions = await store.versions()
        history = await store.history()
        active = await store.active_number()
        if not versions:
            print(f"nothing published yet: workers use the rules file {settings.files.rules_file}")
            return 0
        shown = versions[-args.limit:] if args.limit else versions
        fv = max(len("file version"), *(len(d.file_version) for d in shown)) + 2
        au = max(len("author"), *(len(d.author) for d in shown)) + 2
        print(f"{'version':<9}{'active':<8}{'published (UTC)':<21}{'author':<{au}}{'file version':<{fv}}"
              f"{'sha256':<14}note")
        for doc in reversed(shown):
            mark = "*" if doc.number == active else ""
            print(f"{'v' + str(doc.number):<9}{mark:<8}{_when(doc.ts):<21}{doc.author:<{au}}"
                  f"{doc.file_version:<{fv}}{doc.sha256[:12]:<14}{doc.note}")
        print()
        print("changes of the active version, newest first:")
        for entry in reversed(history[-args.limit:] if args.limit else history):
            was = f"v{entry.previous}" if entry.previous is not None else "file"
            note = f"  {entry.note!r}" if entry.note else ""
            print(f"  {_when(entry.ts)}  {entry.action:<9} {was} -> v{entry.number}  by {entry.author}{note}")
        return 0

    return _with_store(settings, work)


# --- simulate ------------------------------------------------------------------------------------


def _load_rules(path: Path) -> RoutingConfig:
    return load_rules_path(path)


def _current_rules(settings: Settings, which: str) -> tuple[RoutingConfig, str]:
    if which != "published":
        path = Path(which) if which else settings.files.rules_file
        return _load_rules(path), str(path)

    async def work(store: RulesStore) -> tuple[RoutingConfig, str] | None:
        doc = await store.active()
        if doc is None:
            return None
        try:
            return doc.compile(), f"published v{doc.number} by {doc.author}"
        except RulesError as exc:
            msg = f"the active published rules v{doc.number} do not compile: {exc}; roll back or publish a fix"
            raise RulesCommandError(msg) from exc

    found = _with_store(settings, work)
    if found is None:
        print(f"nothing is published, so the current rules are the file {settings.files.rules_file}", file=sys.stderr)
        return _load_rules(settings.files.rules_file), str(settings.files.rules_file)
    return found


def _sim_leads(settings: Settings, args: argparse.Namespace) -> tuple[list[SimLead], str]:
    if (args.from_ or args.to) and not args.replay_kafka:
        msg = "--from and --to only apply to --replay-kafka; add --replay-kafka or drop them"
        raise RulesCommandError(msg)
    if args.replay_kafka:
        logging.getLogger("aiokafka").setLevel(logging.WARNING)  # its per-partition notices drown the report
        if not (args.from_ and args.to):
            msg = "--replay-kafka needs --from and --to, e.g. --from 2026-11-01 --to 2026-11-08"
            raise RulesCommandError(msg)
        start, end = parse_when(args.from_, "--from"), parse_when(args.to, "--to")
        progress = ProgressLine("read events")
        leads, read = asyncio.run(replay_form_fills(settings, start, end, progress=lambda n: progress(n)))
        return leads, (f"form fills on {settings.kafka.topic_events} from {start.isoformat()} to {end.isoformat()} "
                       f"({read:,} events read)")
    if args.dataset:
        folder: Path = args.datasets_dir or DEFAULT_DATASETS
        return dataset_leads(args.dataset, folder), f"data set {args.dataset} ({folder})"
    if args.leads:
        return read_leads(args.leads), str(args.leads)
    msg = "say which leads to simulate: --leads FILE (CSV or JSONL), --dataset maven|olist, or --replay-kafka"
    raise RulesCommandError(msg)


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    new = _load_rules(args.rules)
    current, current_label = _current_rules(settings, args.current)
    leads, origin = _sim_leads(settings, args)
    if args.save_leads:
        write_leads(leads, args.save_leads)
        print(f"wrote {len(leads):,} leads to {args.save_leads}", file=sys.stderr)
    if not leads:
        print(f"no leads in {origin}; nothing to simulate", file=sys.stderr)
        return 1
    book = _load_accounts(args.accounts) if args.accounts else None
    print(f"leads: {origin}")
    report = simulate(leads, current, new, examples=args.examples, accounts=book,
                      progress=ProgressLine("routed leads"), every=args.progress_every)
    for line in format_report(report, current_label, str(args.rules), reps=args.reps):
        print(line)
    if not args.no_chart:
        path = write_chart(report, args.chart, current_label, str(args.rules))
        print(f"chart: {path.resolve()}")
    return 0


# --- accounts ------------------------------------------------------------------------------------


def _load_accounts(path: Path) -> AccountBook:
    text = read_text(path, "accounts file", "check the --accounts path")
    try:
        return load_accounts(text, str(path))
    except RulesError as exc:
        msg = f"accounts file {path} has problems:\n{exc}"
        raise RulesCommandError(msg) from exc


def cmd_accounts(settings: Settings, args: argparse.Namespace) -> int:
    if args.from_maven:
        folder: Path = args.from_maven
        accounts_csv = read_text(folder / "maven_crm_accounts.csv", "Maven accounts", "pass the datasets folder")
        pipeline_csv = read_text(folder / "maven_crm_sales_pipeline.csv", "Maven pipeline", "pass the datasets folder")
        accounts, picks = maven_accounts(accounts_csv, pipeline_csv)
        header = (
            "Customer accounts and their owners, for lead-to-account matching (rules/accounts.py).\n"
            "\n"
            "Built by `leadrouter rules accounts --from-maven <datasets> --out rules/accounts.yaml` from the\n"
            "Maven Analytics CRM data set (maven_crm_accounts.csv; spellings such as `technolgy` and\n"
            "`Philipines` are as in the source).  owner = the sales agent with the most deals for the account\n"
            "in maven_crm_sales_pipeline.csv (ties: more won deals, then more won value, then name order),\n"
            "as a rep id from routing.yaml.  The data has no domains or websites, so they are empty and leads\n"
            "match on the normalised company name; add domains: [acme.com] as you learn them.\n"
            "Fields: name, owner, domains, website, sector, employees, revenue (USD millions), year_established,\n"
            "office_location, subsidiary_of (another account's name)."
        )
        text = accounts_yaml(accounts, "maven-crm-2017-12-31", header, picks)
        load_accounts(text, "<generated>")  # what we write must read back
        if args.out:
            args.out.write_text(text, encoding="utf-8")
            print(f"wrote {len(accounts)} accounts to {args.out}")
        else:
            sys.stdout.write(text)
        return 0
    path: Path = args.accounts or DEFAULT_ACCOUNTS
    book = _load_accounts(path)
    routing = _load_rules(args.rules or settings.files.rules_file)
    problems = check_owners(book, routing)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    owned = sum(1 for a in book.accounts if a.owner)
    print(f"{path}: {len(book)} accounts, {owned} with an owner, "
          f"{sum(1 for a in book.accounts if a.all_domains)} with domains; owners checked against {routing.source}")
    lead: dict[str, Any] = {k: v for k, v in (("company", args.company), ("email", args.email),
                                              ("website", args.website)) if v}
    if lead:
        match = match_account(lead, book)
        route = owner_first(match, routing)
        if match is None:
            print(f"no account matches {lead}")
        else:
            print(f"match: {match.account.name} by {match.by.value} ({match.explanation})")
        print(f"owner first: {route.rep.name + ' [' + route.rep.team + ']' if route.rep else 'no'} - {route.reason}")
    return 1 if problems else 0


# --- parser --------------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add ``leadrouter rules`` and its subcommands to the CLI's subparsers."""
    p = sub.add_parser("rules", help="test, publish, roll back, list and simulate routing rules")
    rsub = p.add_subparsers(dest="rules_command", required=True)

    t = rsub.add_parser("test", help="run the test cases beside the rules; exit 1 when one fails")
    t.add_argument("--rules", type=Path, default=None, help="rules file (default: the configured routing.yaml)")
    t.add_argument("--cases", type=Path, default=None, help="test cases (default: <rules>_test.yaml beside it)")
    t.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    t.set_defaults(fn=cmd_test)

    pub = rsub.add_parser("publish", help="validate the rules and make them the active version in Redis")
    pub.add_argument("--rules", type=Path, default=None, help="rules file (default: the configured routing.yaml)")
    pub.add_argument("--cases", type=Path, default=None, help="test cases (default: <rules>_test.yaml beside it)")
    pub.add_argument("--author", required=True, help="who publishes (recorded in the history)")
    pub.add_argument("--note", default="", help="why (recorded in the history)")
    pub.set_defaults(fn=cmd_publish)

    rb = rsub.add_parser("rollback", help="make an earlier published version active again")
    rb.add_argument("version", help="version number, e.g. 3 or v3 (see `leadrouter rules history`)")
    rb.add_argument("--author", required=True, help="who rolls back (recorded in the history)")
    rb.add_argument("--note", default="", help="why (recorded in the history)")
    rb.set_defaults(fn=cmd_rollback)

    h = rsub.add_parser("history", help="list published versions and every publish and rollback")
    h.add_argument("--limit", type=int, default=0, help="show only the newest N (default: all)")
    h.set_defaults(fn=cmd_history)

    s = rsub.add_parser("simulate", help="compare how leads would be shared out under current and new rules")
    s.add_argument("--rules", type=Path, required=True, help="the new rules file")
    s.add_argument("--current", default="", metavar="FILE|published",
                   help="current rules: a file, or 'published' for the active version in Redis "
                        "(default: the configured routing.yaml)")
    source = s.add_mutually_exclusive_group()
    source.add_argument("--leads", type=Path, default=None, help="CSV or JSONL of leads with catalogue fields")
    source.add_argument("--dataset", choices=DATASETS, default=None,
                        help="built-in converter: maven (CRM pipeline joined with accounts) or olist (MQLs + deals)")
    source.add_argument("--replay-kafka", action="store_true",
                        help="replay the form fills on the events topic between --from and --to")
    s.add_argument("--from", dest="from_", default=None, metavar="ISO", help="replay start (inclusive)")
    s.add_argument("--to", default=None, metavar="ISO", help="replay end (exclusive)")
    s.add_argument("--datasets-dir", type=Path, default=None, help=f"default {DEFAULT_DATASETS}")
    s.add_argument("--accounts", type=Path, default=None,
                   help="accounts file: leads of an account go to its owner first (both rule sets)")
    s.add_argument("--examples", type=int, default=10, help="moved leads to list (default 10)")
    s.add_argument("--reps", type=int, default=None, help="reps to list (default: all)")
    s.add_argument("--chart", type=Path, default=Path("rules-simulation.png"),
                   help="PNG to write (default rules-simulation.png)")
    s.add_argument("--no-chart", action="store_true", help="do not draw the chart")
    s.add_argument("--save-leads", type=Path, default=None, help="also write the leads used as JSONL")
    s.add_argument("--progress-every", type=int, default=5000, help=argparse.SUPPRESS)
    s.set_defaults(fn=cmd_simulate)

    a = rsub.add_parser("accounts", help="check the accounts file (owners in the roster), try a match, or build it")
    a.add_argument("--accounts", type=Path, default=None, help=f"default {DEFAULT_ACCOUNTS}")
    a.add_argument("--rules", type=Path, default=None, help="rules file whose roster owners must be in")
    a.add_argument("--company", default=None, help="try matching a lead with this company name")
    a.add_argument("--email", default=None, help="try matching a lead with this email")
    a.add_argument("--website", default=None, help="try matching a lead with this website")
    a.add_argument("--from-maven", type=Path, default=None, metavar="DIR",
                   help="build the file from the Maven CRM CSVs in DIR instead")
    a.add_argument("--out", type=Path, default=None, help="with --from-maven: write here (default stdout)")
    a.set_defaults(fn=cmd_accounts)


__all__ = ["register"]
