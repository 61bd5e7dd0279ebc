"""Opaque tokens for email open pixels and click redirects; signed alert-link tokens.

An email token is ``2.<base64url(nonce + AES-GCM(claims))>``: the claims (recipient,
campaign, expiry, send time; clicks also the one URL the redirect may go to, so the
collector is never an open redirect) are encrypted and authenticated under a key
derived from ``LEADROUTER_TOKEN_SECRET``, so nothing in the URL (an open pixel in a
forwarded email, a proxy's log) is readable.

Tokens minted before version 2 (``<base64url(json claims)>.<hmac>``, the email readable)
are still accepted until they expire (``LEADROUTER_TOKEN_TTL_S`` after they were sent):
they are already in people's inboxes, and refusing them would not take the address back.
The collector never logs a token or its claims.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from router.errors import TokenError

_VERSION = 1

TokenKind = Literal["open", "click"]
_KINDS: dict[str, TokenKind] = {"open": "open", "click": "click"}


@dataclass(frozen=True, slots=True)
class TokenClaims:
    email: str
    campaign: str
    expires: int
    kind: TokenKind = "open"
    url: str | None = None
    sent_at: int = 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())


_OPAQUE = "2."
_OPAQUE_AAD = b"leadrouter email token v2"


def _token_key(secret: str) -> AESGCM:
    return AESGCM(hmac.new(secret.encode(), b"leadrouter/email-token/v2", hashlib.sha256).digest())


def mint_token(secret: str, *, email: str, campaign: str, ttl_s: int, kind: str = "open",
               url: str | None = None, now: float | None = None) -> str:
    if kind not in ("open", "click"):
        msg = f"token kind {kind!r} is not supported; use 'open' or 'click'"
        raise TokenError(msg)
    if kind == "click" and not url:
        msg = "a click token needs the destination url; pass url='https://…'"
        raise TokenError(msg)
    if "@" not in email:
        msg = f"token email {email!r} is not an email address"
        raise TokenError(msg)
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"v": _VERSION, "e": email.strip().lower(), "c": campaign,
                                 "x": issued + int(ttl_s), "k": kind, "s": issued}
    if url:
        claims["u"] = url
    nonce = os.urandom(12)
    return _OPAQUE + _b64(nonce + _token_key(secret).encrypt(nonce, orjson.dumps(claims), _OPAQUE_AAD))


def verify_token(secret: str, token: str, *, now: float | None = None) -> TokenClaims:
    """Return the claims of a genuine, unexpired token or raise TokenError."""
    if token.startswith(_OPAQUE):
        return _verify_opaque(secret, token, now)
    return _verify_signed(secret, token, now)


def _verify_opaque(secret: str, token: str, now: float | None) -> TokenClaims:
    body = token[len(_OPAQUE):]
    if not body or len(token) > 4096 or not token.isascii():
        msg = "token is malformed: expected 2.<sealed claims> of at most 4096 ASCII characters"
        raise TokenError(msg)
    try:
        raw = _unb64(body)
        claims = orjson.loads(_token_key(secret).decrypt(raw[:12], raw[12:], _OPAQUE_AAD))
    except InvalidTag:
        msg = "token does not open: forged, truncated or sealed with another secret"
        raise TokenError(msg) from None
    except (ValueError, orjson.JSONDecodeError) as exc:
        msg = f"token is malformed ({type(exc).__name__}); mint a new token"
        raise TokenError(msg) from None
    return _claims(claims, now)


def _verify_signed(secret: str, token: str, now: float | None) -> TokenClaims:
    """A version-1 token (claims readable, HMAC-signed): accepted until it expires."""
    body, dot, sig = token.partition(".")
    if not dot or not body or not sig or len(token) > 4096:
        msg = "token is malformed: expected <claims>.<signature>"
        raise TokenError(msg)
    if not token.isascii():
        msg = "token is malformed: it has non-ASCII characters"
        raise TokenError(msg)
    if not hmac.compare_digest(_sign(secret, body), sig):
        msg = "token signature does not match: forged, truncated or signed with another secret"
        raise TokenError(msg)
    try:
        claims = orjson.loads(_unb64(body))
    except (ValueError, orjson.JSONDecodeError) as exc:
        msg = f"token claims are unreadable ({type(exc).__name__}); mint a new token"
        raise TokenError(msg) from None
    return _claims(claims, now)


def _claims(claims: object, now: float | None) -> TokenClaims:
    try:
        if not isinstance(claims, dict):
            raise TypeError("claims are not an object")
        email, campaign, expires = str(claims["e"]), str(claims["c"]), int(claims["x"])
        kind = _KINDS[str(claims.get("k", "open"))]
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"token claims are unreadable ({type(exc).__name__}); mint a new token"
        raise TokenError(msg) from None
    current = time.time() if now is None else now
    if current > expires:
        msg = f"token expired at {expires} (now {int(current)}); mint a new token"
        raise TokenError(msg)
    url = claims.get("u")
    return TokenClaims(email=email, campaign=campaign, expires=expires, kind=kind,
                       url=str(url) if url else None, sent_at=int(claims.get("s", 0)))


# --------------------------------------------------------------------------- alert action links
# Version 2 (issue 16.1): a link names the rep, the lead, the assignment and its crossing,
# carries a random one-time id (``jti``) and expires after ``LEADROUTER_ALERT_LINK_TTL_S``.
# The admin app (router/admin/links.py) also checks in Redis that the assignment is still
# the lead's current one, held by that rep, and records the jti when the link acts, so a
# link acts once, for its rep, while the assignment it was sent for stands.
_ACTION_VERSION = 2

ActionLinkProblem = Literal["malformed", "forged", "unreadable", "old_format", "expired"]


class ActionLinkError(TokenError):
    """An alert action link that cannot act; ``problem`` says why (the page shown depends on it)."""

    def __init__(self, problem: ActionLinkProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem: ActionLinkProblem = problem


@dataclass(frozen=True, slots=True)
class ActionClaims:
    """A rep's signed, one-time right to accept or reject one assignment of one lead (alert links)."""

    lead_id: str
    rep_id: str
    assignment_id: str
    expires: int
    crossing: int = 0
    jti: str = ""
    issued: int = 0


def mint_action_token(secret: str, *, lead_id: str, rep_id: str, assignment_id: str, ttl_s: int,
                      crossing: int = 0, now: float | None = None, jti: str | None = None) -> str:
    """A signed link token for one rep and one assignment; ``jti`` is random unless given (tests)."""
    if not lead_id or not rep_id or not assignment_id:
        msg = (f"an action link needs the lead, the rep and the assignment (got lead={lead_id!r}, rep={rep_id!r}, "
               f"assignment={assignment_id!r})")
        raise TokenError(msg)
    issued = int(time.time() if now is None else now)
    claims = {"v": _ACTION_VERSION, "k": "act", "l": lead_id, "r": rep_id, "a": assignment_id, "c": int(crossing),
              "j": jti or _b64(secrets.token_bytes(16)), "i": issued, "x": issued + int(ttl_s)}
    body = _b64(orjson.dumps(claims))
    return f"{body}.{_sign(secret, body)}"


def verify_action_token(secret: str, token: str, *, now: float | None = None) -> ActionClaims:
    """The claims of a genuine, current-format, unexpired action link, or :class:`ActionLinkError`.

    This checks the signature and the clock only; whether the assignment still stands
    and whether the link was used already is checked in Redis by the admin app.
    """
    body, dot, sig = token.partition(".")
    if not dot or not body or not sig or len(token) > 2048 or not token.isascii():
        msg = "action link is malformed; open the link from the alert again"
        raise ActionLinkError("malformed", msg)
    if not hmac.compare_digest(_sign(secret, body), sig):
        msg = "action link signature does not match: it was altered or signed with another secret"
        raise ActionLinkError("forged", msg)
    try:
        claims = orjson.loads(_unb64(body))
        if claims.get("k") != "act":
            raise ValueError("not an action link")
        version = int(claims.get("v", 0))
    except (ValueError, KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
        msg = f"action link claims are unreadable ({exc})"
        raise ActionLinkError("unreadable", msg) from None
    if version != _ACTION_VERSION:
        msg = ("this link comes from an older alert and no longer acts (links are now one-time and bound to the "
               "current assignment); accept or reject the lead with `leadrouter leads accept|reject` or the admin API")
        raise ActionLinkError("old_format", msg)
    try:
        out = ActionClaims(lead_id=str(claims["l"]), rep_id=str(claims["r"]), assignment_id=str(claims["a"]),
                           expires=int(claims["x"]), crossing=int(claims["c"]), jti=str(claims["j"]),
                           issued=int(claims["i"]))
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"action link claims are unreadable ({exc})"
        raise ActionLinkError("unreadable", msg) from None
    if not out.jti or not out.lead_id or not out.rep_id or not out.assignment_id:
        msg = "action link claims are incomplete"
        raise ActionLinkError("unreadable", msg)
    if (time.time() if now is None else now) > out.expires:
        msg = ("this action link has expired; accept or reject the lead from the admin API or "
               "`leadrouter leads accept|reject`")
        raise ActionLinkError("expired", msg)
    return out
