"""Bearer tokens for the admin HTTP API: roles, hashing, storage in Redis and the Authorization header.

A token is ``lra_`` followed by 43 URL-safe characters (256 random bits).  It is
shown once, when ``leadrouter admin token create`` makes it; Redis keeps only
its sha256 (hex) with the role, rep id, name, creation time, expiry and last use
(:func:`router.storage.keys.admin_token`), plus the hash in the set
:data:`router.storage.keys.ADMIN_TOKENS` so tokens can be listed and revoked.  A request
is authenticated by hashing the presented token and reading that one key, so
no comparison of secrets happens in Python and none needs to be constant-time.

Expiry and rotation (issue 16.8).  Every token expires: ``token create --ttl-days``
(default ``LEADROUTER_ADMIN_TOKEN_TTL_DAYS``, 90).  An expired token gets a 401
``expired_token`` that says when it expired and how to rotate it.  A token stored
before expiry existed (no ``expires`` field) expires that many days after it was
created, and each admin process logs a warning the first time it sees one.
``token rotate HASH_PREFIX`` makes a new token with the same role, rep and name
and lets the old one work for a short overlap (``--overlap-minutes``, default 60;
0 revokes it at once) so a deployment can swap without downtime.  The record of an
expired token is kept 30 days (for the clear 401 and ``token list``), then Redis
drops it.  ``last_used`` is written at most once a minute per token.

Roles (what each may do is decided per endpoint in :mod:`router.admin.openapi`):

``ops``       everything.
``rep``       read the roster and the rules; read and act on only the leads they own; set their own
              out-of-office.  Bound to one ``rep_id``.
``readonly``  every GET, nothing else.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from router.errors import RouterError
from router.storage import keys
from router.storage.redis import AnyRedis
from router.storage.scripts import register

log = logging.getLogger(__name__)

TOKEN_PREFIX = "lra_"
EXPIRED_KEPT_S = 30 * 86400  # an expired token's record stays this long (clear 401s, `token list`)
LAST_USED_EVERY_S = 60.0  # last_used is rewritten at most this often per token
DEFAULT_OVERLAP_S = 3600.0  # `token rotate`: the old token keeps working this long
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
    expires: float | None = None  # None: stored before expiry existed (see :meth:`expires_at`)
    last_used: float = 0.0
    rotated_to: str = ""  # hash of the token that replaced this one (`token rotate`)

    def expires_at(self, default_ttl_s: float) -> float:
        """When the token stops working; a token stored without expiry: ``default_ttl_s`` after it was created."""
        return self.expires if self.expires is not None else self.created + default_ttl_s

    def to_dict(self) -> dict[str, object]:
        return {"token_sha256": self.token_hash, "role": self.role.value, "name": self.name,
                "rep_id": self.rep_id or None, "created": self.created, "expires": self.expires,
                "last_used": self.last_used or None}


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
        expires = float(data["expires"]) if data.get("expires") else None
        last_used = float(data.get("last_used") or 0.0)
    except ValueError:
        return None
    rep_id = data.get("rep_id", "")
    if role is Role.REP and not rep_id:
        return None
    return Principal(token_hash=token_hash, role=role, name=data.get("name", ""), rep_id=rep_id, created=created,
                     expires=expires, last_used=last_used, rotated_to=data.get("rotated_to", ""))


class TokenStore:
    """The only code that reads and writes admin API tokens in Redis."""

    def __init__(self, redis: AnyRedis) -> None:
        self.redis = redis
        self._hset_expire = register(redis, "hset_expire.lua")

    async def create(self, role: Role, *, name: str, rep_id: str = "", now: float,
                     ttl_s: float = 90 * 86400.0) -> tuple[str, Principal]:
        """Make and store a new token that works for ``ttl_s``; returns (the token, shown once, and its principal)."""
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
        if not 60 <= ttl_s <= 3660 * 86400:
            msg = f"a token's lifetime must be from 1 minute to 3660 days, not {ttl_s / 86400:g} days; give --ttl-days"
            raise TokenSpecError(msg)
        token = new_token()
        token_hash = hash_token(token)
        principal = Principal(token_hash=token_hash, role=role, name=name, rep_id=rep_id, created=now,
                              expires=now + ttl_s)
        await self._store(principal, now)
        return token, principal

    # The token's record and the set listing every token hash are two hash slots (no transaction spans
    # them on a Redis Cluster), so the steps are ordered to be safe if a crash stops them half way: a
    # record is written before its hash is listed (a token is shown only once both are done, so an
    # unlisted record is one nobody holds, and ``tokens()``, which drops listed hashes without a record,
    # never races a token being made), and a record is deleted before its hash is unlisted (the token
    # stops working first; a listed hash left without a record is dropped by the next ``tokens()``).

    async def _store(self, p: Principal, now: float, extra: Mapping[str, str] | None = None) -> None:
        assert p.expires is not None
        # Relative to the caller's clock (the admin app's may be driven in tests), not Redis's.
        await self._set_record(p.token_hash, max(1, int(p.expires + EXPIRED_KEPT_S - now)),
                               {"role": p.role.value, "name": p.name, "rep_id": p.rep_id,
                                "created": repr(p.created), "expires": repr(p.expires), **(extra or {})})
        await self.redis.sadd(keys.ADMIN_TOKENS, p.token_hash)

    async def _set_record(self, token_hash: str, ttl_s: int, fields: Mapping[str, str]) -> None:
        """Fields of a token's record and its time to live, in one step."""
        flat = [x for kv in fields.items() for x in kv]
        await self._hset_expire(keys=[keys.admin_token(token_hash)], args=[ttl_s, *flat])

    async def touch(self, principal: Principal, now: float) -> None:
        """Record the token's use (at most once a minute, so a busy client costs one write a minute)."""
        if now - principal.last_used >= LAST_USED_EVERY_S:
            await self.redis.hset(keys.admin_token(principal.token_hash), "last_used", repr(now))

    async def find(self, prefix: str) -> Principal:
        """The one token whose hash starts with ``prefix`` (at least 8 hex digits, from ``token list``)."""
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
        return matches[0]

    async def rotate(self, prefix: str, *, now: float, ttl_s: float, overlap_s: float = DEFAULT_OVERLAP_S,
                     default_ttl_s: float = 90 * 86400.0) -> tuple[str, Principal, Principal]:
        """A new token with the old one's role, rep and name; the old one works ``overlap_s`` more (0: revoked now).

        Returns (the new token, shown once, its principal, the old principal as it is now).
        """
        old = await self.find(prefix)
        if not 0 <= overlap_s <= 7 * 86400:
            msg = f"the overlap must be from 0 to 7 days, not {overlap_s / 60:g} minutes; give --overlap-minutes"
            raise TokenSpecError(msg)
        if not 60 <= ttl_s <= 3660 * 86400:
            msg = f"a token's lifetime must be from 1 minute to 3660 days, not {ttl_s / 86400:g} days; give --ttl-days"
            raise TokenSpecError(msg)
        token = new_token()
        new = Principal(token_hash=hash_token(token), role=old.role, name=old.name, rep_id=old.rep_id, created=now,
                        expires=now + ttl_s)
        # The new token first: a crash before the old one is changed leaves the old working as it did
        # (and a new token nobody was shown, which expires).
        await self._store(new, now, {"rotated_from": old.token_hash})
        if overlap_s <= 0:
            await self.redis.delete(keys.admin_token(old.token_hash))
            await self.redis.srem(keys.ADMIN_TOKENS, old.token_hash)
            ended = now
        else:
            ended = min(old.expires_at(default_ttl_s), now + overlap_s)
            await self._set_record(old.token_hash, max(1, int(ended + EXPIRED_KEPT_S - now)),
                                   {"expires": repr(ended), "rotated_to": new.token_hash})
        return token, new, replace(old, expires=ended, rotated_to=new.token_hash)

    async def lookup(self, token: str) -> Principal | None:
        """The principal of a presented token; None when it is unknown (or revoked).  Expiry is the caller's."""
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
        gone = [h for h, raw in zip(hashes, rows, strict=True) if not raw]
        if gone:  # records Redis dropped 30 days after they expired
            await self.redis.srem(keys.ADMIN_TOKENS, *gone)
        out = [p for h, raw in zip(hashes, rows, strict=True) if raw and (p := _principal(h, raw)) is not None]
        return sorted(out, key=lambda p: (p.created, p.token_hash))

    async def revoke(self, prefix: str) -> Principal:
        """Delete the one token whose hash starts with ``prefix`` (at least 8 hex digits, from ``token list``)."""
        victim = await self.find(prefix)
        await self.redis.delete(keys.admin_token(victim.token_hash))  # the token stops working here
        await self.redis.srem(keys.ADMIN_TOKENS, victim.token_hash)
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
