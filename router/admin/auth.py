"""Bearer tokens for the admin HTTP API: roles, hashing, storage in Redis and the Authorization header.

A token is ``lra_`` followed by 43 URL-safe characters (256 random bits).  It is
shown once, when ``leadrouter admin token create`` makes it; Redis keeps only
its sha256 (hex) with the role, rep id, name and creation time
(:func:`router.storage.keys.admin_token`), plus the hash in the set
:data:`router.storage.keys.ADMIN_TOKENS` so tokens can be listed and revoked.  A request
is authenticated by hashing the presented token and reading that one key, so
no comparison of secrets happens in Python and none needs to be constant-time.

Roles (what each may do is decided per endpoint in :mod:`router.admin.openapi`):

``ops``       everything.
``rep``       read the roster and the rules; read and act on only the leads they own; set their own
              out-of-office.  Bound to one ``rep_id``.
``readonly``  every GET, nothing else.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from router.errors import RouterError
from router.storage import keys

TOKEN_PREFIX = "lra_"
_TOKEN_RE = re.compile(r"^lra_[A-Za-z0-9_-]{32,128}$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
REALM = "leadrouter-admin"


class Role(StrEnum):
    OPS = "ops"
    REP = "rep"
    READONLY = "readonly"


ALL_ROLES: frozenset[Role] = frozenset(Role)


class AuthError(RouterError):
    """A request without a usable token: answered 401 with ``WWW-Authenticate``.

    ``code`` is the JSON error code and metric label; ``bearer_error`` the RFC 6750
    ``error`` attribute (empty when no token was sent at all).
    """

    def __init__(self, code: str, detail: str, bearer_error: str = "") -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.bearer_error = bearer_error

    @property
    def www_authenticate(self) -> str:
        value = f'Bearer realm="{REALM}"'
        if self.bearer_error:
            value += f', error="{self.bearer_error}"'
        return value


class TokenSpecError(RouterError):
    """``token create`` was asked for an impossible token (rep role without a rep, a rep on another role, ...)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the stored facts of one token."""

    token_hash: str
    role: Role
    name: str
    rep_id: str = ""
    created: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"token_sha256": self.token_hash, "role": self.role.value, "name": self.name,
                "rep_id": self.rep_id or None, "created": self.created}


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """sha256 hex of the token: what Redis stores and looks up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(header: str | None) -> str:
    """The token in an ``Authorization: Bearer <token>`` header; :class:`AuthError` when missing or malformed."""
    if header is None or not header.strip():
        msg = ("missing Authorization header; send 'Authorization: Bearer <token>' with a token from "
               "`leadrouter admin token create`")
        raise AuthError("missing_token", msg)
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        shown = scheme[:20]
        msg = (f"Authorization scheme {shown!r} is not supported; send 'Authorization: Bearer <token>' "
               "(tokens come from `leadrouter admin token create`)")
        raise AuthError("malformed_token", msg, "invalid_request")
    token = value.strip()
    if not _TOKEN_RE.match(token):
        msg = ("the bearer token is malformed: admin tokens start with 'lra_' followed by at least 32 letters, "
               "digits, '-' or '_'; copy the whole token printed by `leadrouter admin token create`")
        raise AuthError("malformed_token", msg, "invalid_request")
    return token


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def _principal(token_hash: str, raw: Mapping[bytes | str, bytes | str]) -> Principal | None:
    data = {_s(k): _s(v) for k, v in raw.items()}
    try:
        role = Role(data.get("role", ""))
        created = float(data.get("created") or 0.0)
    except ValueError:
        return None
    rep_id = data.get("rep_id", "")
    if role is Role.REP and not rep_id:
        return None
    return Principal(token_hash=token_hash, role=role, name=data.get("name", ""), rep_id=rep_id, created=created)


class TokenStore:
    """The only code that reads and writes admin API tokens in Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(self, role: Role, *, name: str, rep_id: str = "", now: float) -> tuple[str, Principal]:
        """Make and store a new token; returns (the token, shown once, and its principal)."""
        rep_id = rep_id.strip()
        name = name.strip()
        if role is Role.REP and not rep_id:
            msg = "a rep token needs --rep REP_ID (the rep's id in routing.yaml), so it can act on their leads only"
            raise TokenSpecError(msg)
        if role is not Role.REP and rep_id:
            msg = f"--rep only goes with --role rep; an {role.value} token is not tied to one rep, so drop --rep"
            raise TokenSpecError(msg)
        if not name:
            msg = "the token name is empty; give --name (it is recorded as the author of rules it publishes)"
            raise TokenSpecError(msg)
        token = new_token()
        token_hash = hash_token(token)
        principal = Principal(token_hash=token_hash, role=role, name=name, rep_id=rep_id, created=now)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.admin_token(token_hash),
                  mapping={"role": role.value, "name": name, "rep_id": rep_id, "created": repr(now)})
        pipe.sadd(keys.ADMIN_TOKENS, token_hash)
        await pipe.execute()
        return token, principal

    async def lookup(self, token: str) -> Principal | None:
        """The principal of a presented token; None when it is unknown (or revoked)."""
        token_hash = hash_token(token)
        raw = await self.redis.hgetall(keys.admin_token(token_hash))
        return _principal(token_hash, raw) if raw else None

    async def tokens(self) -> list[Principal]:
        """Every stored token, oldest first."""
        hashes = sorted(_s(h) for h in await self.redis.smembers(keys.ADMIN_TOKENS))
        if not hashes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for h in hashes:
            pipe.hgetall(keys.admin_token(h))
        rows = await pipe.execute()
        out = [p for h, raw in zip(hashes, rows, strict=True) if raw and (p := _principal(h, raw)) is not None]
        return sorted(out, key=lambda p: (p.created, p.token_hash))

    async def revoke(self, prefix: str) -> Principal:
        """Delete the one token whose hash starts with ``prefix`` (at least 8 hex digits, from ``token list``)."""
        prefix = prefix.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{8,64}", prefix):
            msg = (f"{prefix!r} is not a token hash prefix; give at least 8 hex digits of the sha256 that "
                   "`leadrouter admin token list` shows")
            raise TokenSpecError(msg)
        matches = [p for p in await self.tokens() if p.token_hash.startswith(prefix)]
        if not matches:
            msg = f"no admin token hash starts with {prefix!r}; see `leadrouter admin token list`"
            raise TokenSpecError(msg)
        if len(matches) > 1:
            msg = f"{len(matches)} token hashes start with {prefix!r}; give more digits"
            raise TokenSpecError(msg)
        victim = matches[0]
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.admin_token(victim.token_hash))
        pipe.srem(keys.ADMIN_TOKENS, victim.token_hash)
        await pipe.execute()
        return victim


def is_token_hash(text: str) -> bool:
    return bool(_HASH_RE.match(text))


__all__ = [
    "ALL_ROLES",
    "REALM",
    "TOKEN_PREFIX",
    "AuthError",
    "Principal",
    "Role",
    "TokenSpecError",
    "TokenStore",
    "bearer_token",
    "hash_token",
    "is_token_hash",
    "new_token",
]
