"""``leadrouter admin``: run the admin HTTP API, and manage its bearer tokens.

    leadrouter admin [--host H] [--port P]            serve (LEADROUTER_ADMIN_HOST/_PORT, default 127.0.0.1:8081)
    leadrouter admin token create --role ops|rep|readonly [--rep REP_ID] [--name NAME] [--ttl-days D]
    leadrouter admin token list
    leadrouter admin token rotate HASH_PREFIX [--ttl-days D] [--overlap-minutes M]
    leadrouter admin token revoke HASH_PREFIX

``token create`` prints the token once on stdout (Redis keeps only its sha256);
the name is recorded as the author of rules the token publishes.  Every token
expires (default ``LEADROUTER_ADMIN_TOKEN_TTL_DAYS``, 90 days); ``token rotate``
prints its successor (same role, rep and name) and lets the old one work for
``--overlap-minutes`` (default 60; 0 revokes it at once).  Enabled by
listing ``"router.cli.admin"`` in ``router.cli.main.COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from redis.exceptions import RedisError

from router.admin.auth import DEFAULT_OVERLAP_S, Principal, Role, TokenSpecError, TokenStore
from router.errors import RouterError
from router.settings import Settings
from router.storage import audit
from router.storage.redis import AnyRedis, create_redis
from router.storage.rules_store import RulesStore, load_rules_path
from rules import RoutingConfig, RulesError

T = TypeVar("T")


class AdminCommandError(RouterError):
    """A ``leadrouter admin`` command could not do its work."""


def _with_redis(settings: Settings, work: Callable[[AnyRedis], Awaitable[T]]) -> T:
    async def main() -> T:
        redis = create_redis(settings.redis, role="admin_cli")
        try:
            return await work(redis)
        except RedisError as exc:
            msg = f"Redis at {settings.redis.url} failed: {exc}; check REDIS_URL and that redis-server is running"
            raise AdminCommandError(msg) from exc
        finally:
            await redis.aclose()

    return asyncio.run(main())


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from router.admin.app import serve

    changes: dict[str, Any] = {}
    if args.host:
        changes["admin_host"] = args.host
    if args.port is not None:
        changes["admin_port"] = args.port
    settings = settings.with_(**changes) if changes else settings
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
    return 0


async def _config_in_force(settings: Settings, redis: AnyRedis) -> RoutingConfig:
    """The routing config the workers follow: the published version, else the rules file."""
    doc = await RulesStore(redis).active()
    if doc is not None:
        try:
            return doc.compile()
        except RulesError as exc:
            msg = f"the active published rules v{doc.number} do not compile: {exc}; roll back or publish a fix"
            raise AdminCommandError(msg) from exc
    return load_rules_path(settings.files.rules_file)


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    role = Role(args.role)

    async def work(redis: AnyRedis) -> int:
        rep_id = (args.rep or "").strip()
        if role is Role.REP and not rep_id:
            msg = "a rep token needs --rep REP_ID (the rep's id in routing.yaml), so it can act on their leads only"
            raise AdminCommandError(msg)
        if role is Role.REP:
            config = await _config_in_force(settings, redis)
            ids = [r.rep_id for r in config.reps]
            if rep_id not in ids:
                close = difflib.get_close_matches(rep_id, ids, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else "use a rep id from `GET /v1/reps` or routing.yaml"
                msg = f"no rep {rep_id!r} in the routing config in force ({config.version}); {hint}"
                raise AdminCommandError(msg)
        name = (args.name or "").strip() or (rep_id if role is Role.REP else "")
        if not name:
            msg = f"give --name for the {role.value} token (who holds it; recorded as the author of rules it publishes)"
            raise AdminCommandError(msg)
        try:
            token, principal = await TokenStore(redis).create(role, name=name, rep_id=rep_id, now=time.time(),
                                                              ttl_s=_ttl_s(settings, args))
        except TokenSpecError as exc:
            raise AdminCommandError(str(exc)) from exc
        await _audit(redis, "token.create", principal.token_hash[:12],
                     f"{role.value} token named {principal.name!r}" + (f" for rep {rep_id}" if rep_id else ""))
        print(token)
        rep = f" for rep {principal.rep_id}" if principal.rep_id else ""
        print(f"created {role.value} token{rep} named {principal.name!r} (sha256 {principal.token_hash[:12]}), valid "
              f"until {_when(principal.expires)}; it is shown only this once, so store it now. Send it as "
              "'Authorization: Bearer <token>'.", file=sys.stderr)
        return 0

    return _with_redis(settings, work)


async def _audit(redis: AnyRedis, action: str, target: str, detail: str) -> None:
    """Token changes go on the audit trail (router/storage/audit.py) as made by this machine's user."""
    await audit.record(redis, who=audit.cli_who(), role="", action=action, via="cli", target=target, detail=detail)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _ttl_s(settings: Settings, args: argparse.Namespace) -> float:
    days = args.ttl_days if args.ttl_days is not None else settings.admin.token_ttl_days
    if not 0 < days <= 3660:
        msg = f"--ttl-days {days:g} must be more than 0 and at most 3660"
        raise AdminCommandError(msg)
    return float(days) * 86400


def _expiry(p: Principal, settings: Settings, now: float) -> str:
    """The expiry column: the date, '(default)' for a token stored without one, 'EXPIRED' once past."""
    at = p.expires_at(settings.admin.token_ttl_days * 86400)
    text = _when(at) + (" (default)" if p.expires is None else "")
    return f"EXPIRED {text}" if at <= now else text


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(redis: AnyRedis) -> int:
        tokens = await TokenStore(redis).tokens()
        if not tokens:
            print("no admin tokens; make one with `leadrouter admin token create --role ops --name NAME`")
            return 0
        now = time.time()
        print(f"{'sha256':<14}{'role':<10}{'rep':<24}{'created (UTC)':<18}{'expires (UTC)':<36}"
              f"{'last used (UTC)':<18}name")
        for p in tokens:
            rotated = f" (rotated to {p.rotated_to[:12]})" if p.rotated_to else ""
            print(f"{p.token_hash[:12]:<14}{p.role.value:<10}{p.rep_id or '-':<24}{_when(p.created):<18}"
                  f"{_expiry(p, settings, now):<36}{_when(p.last_used):<18}{p.name}{rotated}")
        return 0

    return _with_redis(settings, work)


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    async def work(redis: AnyRedis) -> int:
        try:
            gone = await TokenStore(redis).revoke(args.hash_prefix)
        except TokenSpecError as exc:
            raise AdminCommandError(str(exc)) from exc
        await _audit(redis, "token.revoke", gone.token_hash[:12], f"{gone.role.value} token named {gone.name!r}")
        print(f"revoked {gone.role.value} token {gone.token_hash[:12]} named {gone.name!r}; it stops working at once")
        return 0

    return _with_redis(settings, work)


def cmd_token_rotate(settings: Settings, args: argparse.Namespace) -> int:
    if not 0 <= args.overlap_minutes <= 7 * 24 * 60:
        msg = f"--overlap-minutes {args.overlap_minutes:g} must be from 0 (revoke at once) to 10080 (7 days)"
        raise AdminCommandError(msg)

    async def work(redis: AnyRedis) -> int:
        try:
            token, new, old = await TokenStore(redis).rotate(
                args.hash_prefix, now=time.time(), ttl_s=_ttl_s(settings, args),
                overlap_s=args.overlap_minutes * 60, default_ttl_s=settings.admin.token_ttl_days * 86400)
        except TokenSpecError as exc:
            raise AdminCommandError(str(exc)) from exc
        await _audit(redis, "token.rotate", old.token_hash[:12],
                     f"{old.role.value} token named {old.name!r} -> {new.token_hash[:12]}, overlap "
                     f"{args.overlap_minutes:g} min")
        print(token)
        ends = ("was revoked at once" if args.overlap_minutes == 0 else
                f"keeps working until {_when(old.expires)} UTC, then stops")
        print(f"rotated {old.role.value} token {old.token_hash[:12]} named {old.name!r}: its successor "
              f"{new.token_hash[:12]} is valid until {_when(new.expires)} UTC and shown only this once; the old one "
              f"{ends}.", file=sys.stderr)
        return 0

    return _with_redis(settings, work)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``leadrouter admin`` (serve) and ``leadrouter admin token create|list|revoke``."""
    admin = sub.add_parser("admin", help="run the admin HTTP API (roster, rules, leads); manage its tokens")
    admin.add_argument("--host", default=None, help="bind address (default LEADROUTER_ADMIN_HOST, 127.0.0.1)")
    admin.add_argument("--port", type=int, default=None, help="port (default LEADROUTER_ADMIN_PORT, 8081)")
    admin.set_defaults(fn=cmd_serve)
    asub = admin.add_subparsers(dest="admin_command")
    serve = asub.add_parser("serve", help="run the admin HTTP API (the default)")
    serve.add_argument("--host", default=None, help="bind address (default LEADROUTER_ADMIN_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default LEADROUTER_ADMIN_PORT, 8081)")
    serve.set_defaults(fn=cmd_serve)
    token = asub.add_parser("token", help="create, list, rotate or revoke admin API bearer tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="make a token and print it once")
    create.add_argument("--role", required=True, choices=[r.value for r in Role],
                        help="ops: everything; rep: their own leads and availability, read roster and rules; "
                             "readonly: GETs only")
    create.add_argument("--rep", default=None, metavar="REP_ID", help="with --role rep: the rep's id in routing.yaml")
    create.add_argument("--name", default=None,
                        help="who holds it (default for rep tokens: the rep id); the author of rules it publishes")
    create.add_argument("--ttl-days", type=float, default=None, metavar="D",
                        help="days the token works (default LEADROUTER_ADMIN_TOKEN_TTL_DAYS, 90)")
    create.set_defaults(fn=cmd_token_create)
    lst = tsub.add_parser("list", help="list tokens (hash prefix, role, rep, created, expires, last used, name); "
                                       "never the tokens")
    lst.set_defaults(fn=cmd_token_list)
    rotate = tsub.add_parser("rotate", help="print a new token with the same role, rep and name; the old one "
                                            "works a short overlap more")
    rotate.add_argument("hash_prefix", help="at least 8 hex digits of the old token's sha256 (`token list`)")
    rotate.add_argument("--ttl-days", type=float, default=None, metavar="D",
                        help="days the new token works (default LEADROUTER_ADMIN_TOKEN_TTL_DAYS, 90)")
    rotate.add_argument("--overlap-minutes", type=float, default=DEFAULT_OVERLAP_S / 60, metavar="M",
                        help="minutes the old token keeps working (default 60; 0 revokes it at once)")
    rotate.set_defaults(fn=cmd_token_rotate)
    revoke = tsub.add_parser("revoke", help="delete a token by the hash prefix `token list` shows")
    revoke.add_argument("hash_prefix", help="at least 8 hex digits of the token's sha256")
    revoke.set_defaults(fn=cmd_token_revoke)


__all__ = ["AdminCommandError", "register"]
