"""``leadrouter review ...``: the queue of hand-raisers held for review instead of a rep.

    leadrouter review list [--limit N] [--json]
    leadrouter review release EMAIL_OR_LEAD_ID [--by NAME]
    leadrouter review dismiss EMAIL_OR_LEAD_ID [--by NAME]

A released lead is routed normally by a worker within seconds; a dismissed one is
closed as spam (nurture, not ready) and nobody is alerted.  See router/worker/review.py.
Exit status: 0 done, 1 the lead is unknown or not held.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
import time
from datetime import UTC, datetime

import orjson

from router.settings import Settings
from router.storage import audit
from router.storage.redis import create_redis

_LEAD_ID = re.compile(r"^[LAU][0-9a-f]{24}$")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    review = sub.add_parser("review", help="hand-raisers held for review (suspected spam): list, release, dismiss")
    rsub = review.add_subparsers(dest="review_command", required=True)
    ls = rsub.add_parser("list", help="leads held for review, oldest first, with why")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true", help="print as JSON lines")
    ls.set_defaults(fn=cmd_list)
    for op, text in (("release", "route a held lead normally (a worker picks it up within seconds)"),
                     ("dismiss", "close a held lead as spam: nurture, not ready, nobody alerted")):
        p = rsub.add_parser(op, help=text)
        p.add_argument("lead", help="the lead's email or lead id")
        p.add_argument("--by", default="", help="who decides (recorded in the lead's history; default: $USER)")
        p.set_defaults(fn=cmd_act, review_op=op)


def _lead_id(text: str) -> str:
    from router.storage import keys

    return text if _LEAD_ID.match(text) else keys.lead_id_for_email(text)


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    from router.storage.store import RedisStore
    from router.worker import review

    async def main() -> int:
        redis = create_redis(settings.redis, role="cli")
        try:
            held = await review.list_held(RedisStore(redis), max(1, args.limit))
        finally:
            await redis.aclose()
        for entry in held:
            if args.json:
                print(orjson.dumps(entry).decode())
                continue
            when = datetime.fromtimestamp(entry["held_ts"], UTC).strftime("%Y-%m-%d %H:%M:%S")
            trust = entry["trust"]
            print(f"{when}Z  {entry['email'] or entry['lead_id']}  trust {trust if trust is not None else '?'}  "
                  f"{entry['trigger']}  ({entry['why'] or ', '.join(entry['reasons'])})  lead {entry['lead_id']}")
        if not args.json:
            print(f"{len(held)} held for review", file=sys.stderr)
        return 0

    return asyncio.run(main())


def cmd_act(settings: Settings, args: argparse.Namespace) -> int:
    from router.storage.store import RedisStore
    from router.worker import review

    async def main() -> int:
        redis = create_redis(settings.redis, role="cli")
        who = f"cli:{args.by or getpass.getuser()}"
        try:
            store = RedisStore(redis)
            act = review.release if args.review_op == "release" else review.dismiss
            lead_id = _lead_id(args.lead)
            entry = await act(store, lead_id, who, time.time())
            await audit.record(redis, who=audit.cli_who(), role="", action=f"review.{args.review_op}", via="cli",
                               lead_id=lead_id, detail=f"by {who}")
        except review.ReviewError as exc:
            print(f"leadrouter review {args.review_op}: {exc}", file=sys.stderr)
            return 1
        finally:
            await redis.aclose()
        done = "released: a worker routes it within seconds" if args.review_op == "release" else \
            "dismissed as spam: nurture, nobody alerted"
        print(f"{entry['email'] or entry['lead_id']}: {done}")
        return 0

    return asyncio.run(main())
