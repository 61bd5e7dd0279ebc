"""``leadrouter leads ...``: move a lead through its lifecycle from the command line.

    leadrouter leads accept  EMAIL --rep REP_ID
    leadrouter leads reject  EMAIL --rep REP_ID --reason REASON
    leadrouter leads convert EMAIL --rep REP_ID [--to sql|opportunity]
    leadrouter leads won     EMAIL --rep REP_ID [--reason TEXT]
    leadrouter leads lost    EMAIL --rep REP_ID [--reason TEXT]
    leadrouter leads show    EMAIL [--limit N] [--json]
    leadrouter leads reassign EMAIL --to REP_ID --reason TEXT --by NAME   (ops)

Enabled by listing ``"router.cli.leads"`` in ``router.cli.main.COMMAND_MODULES``.
Exit status: 0 done, 1 the transition is not allowed (the message says why).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from router.settings import Settings
from router.storage import audit
from router.storage.redis import create_redis

ACTION_HELP = {
    "accept": "take a lead routed to you (mql -> sal)",
    "reject": "turn a lead down with a reason (back to nurture, score cut, never sent to you again)",
    "convert": "qualify it further (sal -> sql -> opportunity)",
    "won": "the opportunity is won (recorded as training data)",
    "lost": "the deal is lost (recorded as training data)",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``leads`` and its subcommands; each parser sets ``fn(settings, args) -> int``."""
    leads = sub.add_parser("leads", help="accept, reject, convert, win or lose a lead; show its history")
    lsub = leads.add_subparsers(dest="leads_command", required=True)
    for action, text in ACTION_HELP.items():
        p = lsub.add_parser(action, help=text)
        p.add_argument("email", help="the lead's email (or its lead id)")
        p.add_argument("--rep", required=True, help="your rep id, as in routing.yaml (e.g. violet-mclelland)")
        if action == "reject":
            p.add_argument("--reason", required=True,
                           help="one of lifecycle.reject_reasons in routing.yaml (e.g. not-a-fit)")
        elif action in ("won", "lost"):
            p.add_argument("--reason", default="", help="optional note kept with the outcome")
        elif action == "convert":
            p.add_argument("--to", choices=("sql", "opportunity"), default=None,
                           help="target stage (default: the next one)")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.set_defaults(fn=cmd_transition, leads_action=action)
    move = lsub.add_parser("reassign", help="ops: move an open lead to another rep, with a reason (the SLA "
                                            "restarts and the new rep is alerted)")
    move.add_argument("email", help="the lead's email (or its lead id)")
    move.add_argument("--to", required=True, dest="to_rep", help="the new rep's id, as in routing.yaml")
    move.add_argument("--reason", required=True, help="why (kept in the lead's history)")
    move.add_argument("--by", required=True, help="who is doing it (kept in the lead's history)")
    move.add_argument("--json", action="store_true", help="print the result as JSON")
    move.set_defaults(fn=cmd_reassign)
    show = lsub.add_parser("show", help="a lead's stage, owner, score and history")
    show.add_argument("email", help="the lead's email (or its lead id)")
    show.add_argument("--limit", type=int, default=50, help="history entries to show (newest last)")
    show.add_argument("--json", action="store_true", help="print as JSON")
    show.set_defaults(fn=cmd_show)


def cmd_transition(settings: Settings, args: argparse.Namespace) -> int:

    from router.storage.live_config import load_rules_file
    from router.storage.store import RedisStore
    from router.worker import lifecycle

    policy = load_rules_file(settings.files.rules_file).lifecycle

    async def main() -> int:
        redis = create_redis(settings.redis, role="cli")
        try:
            store = RedisStore(redis)
            reason = getattr(args, "reason", "") or ""
            try:
                result = await lifecycle.apply(store, args.leads_action, args.email, args.rep, policy=policy,
                                               reason=reason, to=getattr(args, "to", None), now=datetime.now(UTC))
            except lifecycle.LifecycleError as exc:
                print(f"leadrouter leads {args.leads_action}: {exc}", file=sys.stderr)
                return 1
            # As the admin API records it (router/admin/lifecycle.py), made by this machine's user.
            detail = f"{result.from_stage} -> {result.to_stage}" + (f": {reason}" if reason else "")
            await audit.record(redis, who=audit.cli_who(), role="", action=f"lead.{args.leads_action}", via="cli",
                               lead_id=result.lead_id, target=args.rep, detail=detail)
            if args.json:
                print(orjson.dumps(result.to_dict()).decode())
            else:
                print(_describe(result.to_dict(), args.email))
            return 0
        finally:
            await redis.aclose()

    return asyncio.run(main())


def cmd_reassign(settings: Settings, args: argparse.Namespace) -> int:

    from router.storage.live_config import RedisRulesSource
    from router.storage.store import RedisStore
    from router.worker import lifecycle
    from router.worker.reassign import reassign

    async def main() -> int:
        redis = create_redis(settings.redis, role="cli")
        try:
            routing = RedisRulesSource(settings.files.rules_file, redis, label="routing")
            await routing.poll()  # the published rules win over the file
            try:
                result = await reassign(RedisStore(redis), routing.current, args.email, args.to_rep,
                                        reason=args.reason, by=args.by, now=datetime.now(UTC))
            except lifecycle.LifecycleError as exc:
                print(f"leadrouter leads reassign: {exc}", file=sys.stderr)
                return 1
            await audit.record(redis, who=audit.cli_who(), role="", action="lead.reassign", via="cli",
                               lead_id=result.lead_id, target=args.to_rep,
                               detail=f"{result.from_rep} -> {result.to_rep}: {args.reason} (by {args.by})")
        finally:
            await redis.aclose()
        if args.json:
            print(orjson.dumps(result.to_dict()).decode())
            return 0
        text = (f"{args.email}: reassigned from {result.from_rep} to {result.to_rep_name} ({result.to_rep}) "
                f"[{result.team}] by {result.by}: {result.reason}; assignment {result.assignment_id}")
        if result.queued and result.sla_starts:
            starts = datetime.fromtimestamp(result.sla_starts, UTC).strftime("%Y-%m-%d %H:%M")
            text += f"; outside their hours: the SLA clock starts {starts}Z"
        print(text + "; the new rep is alerted by the next worker tick")
        return 0

    return asyncio.run(main())


def _describe(r: dict[str, Any], email: str) -> str:
    text = f"{email}: {r['from']} -> {r['to']} by {r['rep_id']}"
    if r.get("reason"):
        text += f" ({r['reason']})"
    if r.get("score_before") is not None:
        text += f"; score {r['score_before']:.1f} -> {r['score_after']:.1f}"
    if r.get("outcome_id"):
        text += f"; outcome recorded ({r['outcome_id']}{', replayed' if r.get('replayed') else ''})"
    return text


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:

    from router.storage.live_config import load_scoring_file
    from router.storage.store import RedisStore
    from router.worker import lifecycle

    scoring = load_scoring_file(settings.files.scoring_file)

    async def main() -> int:
        redis = create_redis(settings.redis, role="cli")
        try:
            try:
                status = await lifecycle.show(RedisStore(redis), args.email, history_limit=args.limit)
            except lifecycle.LifecycleError as exc:
                print(f"leadrouter leads show: {exc}", file=sys.stderr)
                return 1
        finally:
            await redis.aclose()
        now = time.time()
        score = status.score
        if status.score_asof > 0 and now > status.score_asof:
            score *= 2 ** (-(now - status.score_asof) / scoring.half_life_s)
        if args.json:
            out = status.to_dict()
            out["score_now"] = score
            print(orjson.dumps(out).decode())
            return 0
        name = " ".join(x for x in (status.fields.get("first_name"), status.fields.get("last_name")) if x)
        print(f"{name or status.email or status.lead_id} <{status.email or '-'}>  {status.fields.get('company', '')}")
        print(f"stage {status.stage}  score now {score:.1f} (threshold {scoring.threshold:.0f})  lead {status.lead_id}")
        if status.owner:
            print(f"owner {status.owner_name or status.owner} ({status.owner}) [{status.team}]  "
                  f"assignment {status.assignment_id}")
        if status.raw.get("escalated") == "1":
            print("escalated to the team's managers (not accepted in time)")
        if status.rejected_by:
            print(f"rejected by {', '.join(status.rejected_by)} (never sent to them again)")
        print("history (oldest first):")
        for entry in status.history:
            print("  " + _history_line(entry))
        return 0

    return asyncio.run(main())


def _history_line(e: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(float(e.get("ts", 0)), UTC).strftime("%Y-%m-%d %H:%M:%S")
    action = str(e.get("action", "?"))
    rep = e.get("rep_name") or e.get("rep") or ""
    text = f"{when}Z  {action:<13} {rep}"
    if e.get("from") and e.get("to"):
        text += f"  {e['from']} -> {e['to']}"
    if e.get("from_rep"):
        text += f"  (from {e['from_rep']})"
    if e.get("by"):
        text += f"  by {e['by']}"
    if e.get("manual"):
        text += f"  reason: {e.get('reason') or '-'}" + ("  (outside their hours: queued)" if e.get("queued") else "")
    elif e.get("queued"):
        text += f"  queued: {e.get('reason') or 'yes'}"
    elif e.get("reason"):
        text += f"  reason: {e['reason']}"
    if e.get("assignment_id"):
        text += f"  [{e['assignment_id']}]"
    return text
