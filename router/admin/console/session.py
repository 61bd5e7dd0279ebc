"""Ops console sessions: a sign-in with an admin token makes a server-side session in Redis.

The browser holds only a random session id in an HttpOnly, SameSite=Strict cookie
(Secure on HTTPS); Redis holds the session under the sha256 of that id
(:func:`router.storage.keys.console_session`), with the admin token's hash, the
role, the name, the rep and the session's CSRF token, and expires it after
``LEADROUTER_ADMIN_CONSOLE_SESSION_TTL_S``.  Every request re-reads the admin token
the session was made with, so revoking the token signs its sessions out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from router.admin.auth import Principal, TokenStore
from router.admin.auth import _principal as principal_of  # the one reading of a stored token record
from router.storage import keys
from router.storage.redis import AnyRedis

COOKIE = "lr_console"
# Before sign-in there is no session: the sign-in form is protected by a double-submit cookie.
PRE_COOKIE = "lr_console_pre"


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time equality of two non-empty strings."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    principal: Principal
    csrf: str
    created: float


class SessionStore:
    """The only code that reads and writes console sessions in Redis."""

    def __init__(self, redis: AnyRedis, tokens: TokenStore, ttl_s: float, *, token_ttl_s: float = 90 * 86400.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.tokens = tokens
        self.ttl_s = ttl_s
        self.token_ttl_s = token_ttl_s  # for tokens stored before expiry existed (Principal.expires_at)
        self.clock = clock

    def _live(self, principal: Principal, now: float) -> bool:
        """An expired admin token neither signs in nor keeps its sessions (as the API's bearer check)."""
        return now < principal.expires_at(self.token_ttl_s)

    async def sign_in(self, token: str, *, now: float) -> Session | None:
        """A new session for a valid admin token; None when the token is unknown (or revoked)."""
        principal = await self.tokens.lookup(token)
        if principal is None or not self._live(principal, now):
            return None
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        key = keys.console_session(session_hash(session_id))
        pipe = self.redis.pipeline(transaction=False)  # one key; no MULTI (Redis Cluster clients)
        pipe.hset(key, mapping={"token_hash": principal.token_hash, "csrf": csrf, "created": repr(now)})
        pipe.expire(key, max(1, int(self.ttl_s)))
        await pipe.execute()
        return Session(session_id, principal, csrf, now)

    async def get(self, session_id: str) -> Session | None:
        """The live session of a cookie value; None when it is unknown, expired, or its token was revoked."""
        if not session_id or len(session_id) > 100:
            return None
        raw: Mapping[bytes | str, bytes | str] = await self.redis.hgetall(keys.console_session(session_hash(session_id)))
        data = {_s(k): _s(v) for k, v in raw.items()}
        token_hash = data.get("token_hash", "")
        if not token_hash or not data.get("csrf"):
            return None
        token_raw = await self.redis.hgetall(keys.admin_token(token_hash))
        principal = principal_of(token_hash, token_raw) if token_raw else None
        if principal is None or not self._live(principal, self.clock()):
            await self.sign_out(session_id)
            return None
        try:
            created = float(data.get("created") or 0.0)
        except ValueError:
            created = 0.0
        return Session(session_id, principal, data["csrf"], created)

    async def sign_out(self, session_id: str) -> None:
        if session_id and len(session_id) <= 100:
            await self.redis.delete(keys.console_session(session_hash(session_id)))
