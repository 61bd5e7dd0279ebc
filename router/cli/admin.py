"""``leadrouter admin``: run the admin HTTP API, and manage its bearer tokens.

    leadrouter admin [--host H] [--port P]            serve (LEADROUTER_ADMIN_HOST/_PORT, default 127.0.0.1:8081)
    leadrouter admin token create --role ops|rep|readonly [--rep REP_ID] [--name NAME]
    leadrouter admin token list
    leadrouter admin token revoke HASH_PREFIX

``token create`` prints the token once on stdout (Redis keeps only its sha256);
the name is recorded as the author of rules the token publishes.  Enabled by
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

from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.admin.auth import Role, TokenSpecError, TokenStore
from router.errors import RouterError
from router.settings import Settings
from router.storage.redis import create_redis
from router.storage.rules_store import RulesStore, load_rules_path
from rules import RoutingConfig, RulesError

T = TypeVar("T")


class AdminCommandError(RouterError):
    """A ``leadrouter admin`` command could not do its work."""


def _with_redis(settings: Settings, work: Callable[[Redis], Awaitable[T]]) -> T:
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


async def _config_in_force(settings: Settings, redis: Redis) -> RoutingConfig:
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

    async def work(redis: Redis) -> int:
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
            token, principal = await TokenStore(redis).create(role, name=name, rep_id=rep_id, now=time.time())
        except TokenSpecError as exc:
            raise AdminCommandError(str(exc)) from exc
        print(token)
        rep = f" for rep {principal.rep_id}" if principal.rep_id else ""
        print(f"created {role.value} token{rep} named {principal.name!r} (sha256 {principal.token_hash[:12]}); it is "
              "shown only this once, so store it now. Send it as 'Authorization: Bearer <token>'.", file=sys.stderr)
        return 0

    return _with_redis(settings, work)


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(redis: Redis) -> int:
        tokens = await TokenStore(redis).tokens()
        if not tokens:
            print("no admin tokens; make one with `leadrouter admin token create --role ops --name NAME`")
            return 0
        print(f"{'sha256':<14}{'role':<10}{'rep':<24}{'created (UTC)':<21}name")
        for p in tokens:
            when = datetime.fromtimestamp(p.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
            print(f"{p.token_hash[:12]:<14}{p.role.value:<10}{p.rep_id or '-':<24}{when:<21}{p.name}")
        return 0

    return _with_redis(settings, work)


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    async def work(redis: Redis) -> int:
        try:
            gone = await TokenStore(redis).revoke(args.hash_prefix)
        except TokenSpecError as exc:
            raise AdminCommandError(str(exc)) from exc
        print(f"revoked {gone.role.value} token {gone.token_hash[:12]} named {gone.name!r}; it stops working at once")
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
    token = asub.add_parser("token", help="create, list or revoke admin API bearer tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="make a token and print it once")
    create.add_argument("--role", required=True, choices=[r.value for r in Role],
                        help="ops: everything; rep: their own leads and availability, read roster and rules; "
                             "readonly: GETs only")
    create.add_argument("--rep", default=None, metavar="REP_ID", help="with --role rep: the rep's id in routing.yaml")
    create.add_argument("--name", default=None,
                        help="who holds it (default for rep tokens: the rep id); the author of rules it publishes")
    create.set_defaults(fn=cmd_token_create)
    lst = tsub.add_parser("list", help="list tokens (hash prefix, role, rep, created, name); never the tokens")
    lst.set_defaults(fn=cmd_token_list)
    revoke = tsub.add_parser("revoke", help="delete a token by the hash prefix `token list` shows")
    revoke.add_argument("hash_prefix", help="at least 8 hex digits of the token's sha256")
    revoke.set_defaults(fn=cmd_token_revoke)


__all__ = ["AdminCommandError", "register"]
