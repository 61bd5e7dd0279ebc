"""``leadrouter scoring ...`` and ``leadrouter icp ...``: test, publish, roll back and list the scoring and fit files.

The same commands as ``leadrouter rules`` (test / publish / rollback / history),
for the other two files ops tune.  Exit codes: 0 ok; 1 the check failed (a test
case, a file that does not compile, a refused publish); 2 (from
``router.cli.main``) a file, key or setting could not be used.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from redis.exceptions import RedisError

from router.errors import RouterError
from router.settings import Settings
from router.storage.config_store import (
    ICP,
    SCORING,
    ConfigRejectedError,
    ConfigSpec,
    ConfigStore,
    check_config,
    check_files,
    parse_version,
)
from router.storage.redis import create_redis
from router.storage.rules_store import cases_path_for, read_text

T = TypeVar("T")
R = TypeVar("R")
SPECS: dict[str, ConfigSpec[Any]] = {"scoring": SCORING, "icp": ICP}


class ConfigCommandError(RouterError):
    """A ``leadrouter scoring|icp`` command could not do its work."""


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _file(settings: Settings, kind: str, given: Path | None) -> Path:
    if given is not None:
        return given
    return settings.files.scoring_file if kind == "scoring" else settings.files.icp_file


def _with_store(settings: Settings, spec: ConfigSpec[T], work: Callable[[ConfigStore[T]], Awaitable[R]]) -> R:
    async def main() -> R:
        redis = create_redis(settings.redis, role="cli")
        try:
            return await work(ConfigStore(redis, spec))
        except RedisError as exc:
            msg = f"Redis at {settings.redis.url} failed: {exc}; check REDIS_URL and that redis-server is running"
            raise ConfigCommandError(msg) from exc
        finally:
            await redis.aclose()

    return asyncio.run(main())


def cmd_test(settings: Settings, args: argparse.Namespace) -> int:
    spec = SPECS[args.kind]
    path = _file(settings, args.kind, args.file)
    try:
        check = check_files(spec, path, args.cases)
    except ConfigRejectedError as exc:
        print(f"FAIL {exc}", file=sys.stderr)
        return 1
    for result in check.results:
        if not result.passed:
            print(f"FAIL {check.cases_source}: {result.message}")
        elif args.verbose:
            print(f"ok   {check.cases_source}: {result.message}")
    failed = len(check.failures)
    summary = (f"{check.cases_source}: {len(check.results)} cases, {len(check.results) - failed} passed, "
               f"{failed} failed ({path}, version {check.version})")
    print(summary, file=sys.stderr if failed else sys.stdout)
    return 1 if failed or not check.results else 0


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    spec = SPECS[args.kind]
    path = _file(settings, args.kind, args.file)
    cases: Path = args.cases or cases_path_for(path)
    text = read_text(path, spec.what, f"check the --{args.kind} path")
    cases_text = read_text(cases, "test cases", f"keep test cases for {path.name} in {cases.name} beside it, "
                                                "or pass --cases FILE")
    try:
        check = check_config(spec, text, str(path), cases_text, str(cases))
    except ConfigRejectedError as exc:
        print(f"not published: {exc}", file=sys.stderr)
        print(f"the running version keeps {'scoring' if args.kind == 'scoring' else 'grading'}; "
              f"`leadrouter {args.kind} history` shows it", file=sys.stderr)
        return 1

    async def work(store: ConfigStore[Any]) -> int:
        before = await store.active_number()
        versions = await store.versions()
        doc = await store.publish(check, author=args.author, note=args.note or "")
        was = f"v{before}" if before is not None else f"the file {_file(settings, args.kind, None)}"
        print(f"published {args.kind} v{doc.number} from {path} ({doc.cases_count} test cases passed) by "
              f"{doc.author}; active now v{doc.number}, was {was}. Workers switch within 2 s.")
        print(f"  leads record {args.kind}={doc.tag}; sha256 {doc.sha256[:12]}")
        same = [v.number for v in versions if v.content_hash == doc.content_hash]
        if same:
            print(f"  note: same compiled content as v{same[-1]}")
        return 0

    return _with_store(settings, spec, work)


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    spec = SPECS[args.kind]
    number = parse_version(args.version, args.kind)

    async def work(store: ConfigStore[Any]) -> int:
        entry = await store.rollback(number, author=args.author, note=args.note or "")
        doc = await store.get(number)
        was = f"v{entry.previous}" if entry.previous is not None else "the file"
        tag = doc.tag if doc is not None else f"v{number}"
        print(f"rolled {args.kind} back to v{number} ({tag}) by {entry.author}; was {was}. "
              "Workers switch within 2 s.")
        return 0

    return _with_store(settings, spec, work)


def cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    spec = SPECS[args.kind]

    async def work(store: ConfigStore[Any]) -> int:
        versions = await store.versions()
        history = await store.history()
        active = await store.active_number()
        if not versions:
            print(f"nothing published yet: workers use the file {_file(settings, args.kind, None)}")
            return 0
        shown = versions[-args.limit:] if args.limit else versions
        au = max(len("author"), *(len(d.author) for d in shown)) + 2
        print(f"{'version':<9}{'active':<8}{'published (UTC)':<21}{'author':<{au}}{'content':<14}{'sha256':<14}note")
        for doc in reversed(shown):
            mark = "*" if doc.number == active else ""
            print(f"{'v' + str(doc.number):<9}{mark:<8}{_when(doc.ts):<21}{doc.author:<{au}}"
                  f"{doc.content_hash[:12]:<14}{doc.sha256[:12]:<14}{doc.note}")
        print()
        print("changes of the active version, newest first:")
        for entry in reversed(history[-args.limit:] if args.limit else history):
            was = f"v{entry.previous}" if entry.previous is not None else "file"
            note = f"  {entry.note!r}" if entry.note else ""
            print(f"  {_when(entry.ts)}  {entry.action:<9} {was} -> v{entry.number}  by {entry.author}{note}")
        return 0

    return _with_store(settings, spec, work)


def _group(sub: Any, kind: str, what: str) -> None:
    p = sub.add_parser(kind, help=f"test, publish, roll back and list the {what}")
    p.set_defaults(kind=kind)
    gsub = p.add_subparsers(dest=f"{kind}_command", required=True)
    default = "the configured scoring.yaml" if kind == "scoring" else "the configured icp.yaml"

    t = gsub.add_parser("test", help="run the test cases beside the file; exit 1 when one fails")
    t.add_argument("--file", f"--{kind}", dest="file", type=Path, default=None, help=f"default: {default}")
    t.add_argument("--cases", type=Path, default=None, help="test cases (default: <file>_test.yaml beside it)")
    t.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    t.set_defaults(fn=cmd_test, kind=kind)

    pub = gsub.add_parser("publish", help="compile, test and make the file the active version in Redis")
    pub.add_argument("--file", f"--{kind}", dest="file", type=Path, default=None, help=f"default: {default}")
    pub.add_argument("--cases", type=Path, default=None, help="test cases (default: <file>_test.yaml beside it)")
    pub.add_argument("--author", required=True, help="who publishes (recorded in the history)")
    pub.add_argument("--note", default="", help="why (recorded in the history)")
    pub.set_defaults(fn=cmd_publish, kind=kind)

    rb = gsub.add_parser("rollback", help="make an earlier published version active again")
    rb.add_argument("version", help=f"version number, e.g. 3 or v3 (see `leadrouter {kind} history`)")
    rb.add_argument("--author", required=True, help="who rolls back (recorded in the history)")
    rb.add_argument("--note", default="", help="why (recorded in the history)")
    rb.set_defaults(fn=cmd_rollback, kind=kind)

    h = gsub.add_parser("history", help="list published versions and every publish and rollback")
    h.add_argument("--limit", type=int, default=0, help="show only the newest N (default: all)")
    h.set_defaults(fn=cmd_history, kind=kind)
    if kind == "scoring":
        from router.cli.suggest import add_parser as add_suggest

        add_suggest(gsub)


def register(sub: Any) -> None:
    """Add ``leadrouter scoring`` and ``leadrouter icp`` to the CLI's subparsers."""
    _group(sub, "scoring", "scoring file (points, caps, sales-ready rule, account intent)")
    _group(sub, "icp", "ICP file (the fit grade)")


__all__ = ["register"]
