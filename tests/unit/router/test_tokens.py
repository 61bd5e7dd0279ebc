"""Opaque email tokens (and version-1 signed ones): what verifies, and every way a token must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from router.errors import TokenError
from router.tokens import (
    ActionLinkError,
    TokenClaims,
    mint_action_token,
    mint_token,
    verify_action_token,
    verify_token,
)

SECRET = "token-secret-0123456789abcdef"
NOW = 1_800_000_000.0
TTL = 3600


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(**kw: object) -> str:
    args: dict[str, object] = {"email": "Jane@Acme.com", "campaign": "nov-webinar", "ttl_s": TTL, "now": NOW}
    args.update(kw)
    return mint_token(SECRET, **args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- round trip


def test_open_token_round_trips_its_claims() -> None:
    claims = verify_token(SECRET, mint(), now=NOW + 10)
    assert claims == TokenClaims(email="jane@acme.com", campaign="nov-webinar", expires=int(NOW) + TTL,
                                 kind="open", url=None, sent_at=int(NOW))


def test_email_is_normalised_in_the_token() -> None:
    assert verify_token(SECRET, mint(email="  JANE@ACME.COM "), now=NOW).email == "jane@acme.com"


def test_click_token_carries_its_url() -> None:
    url = "https://acme.io/pricing?plan=pro"
    claims = verify_token(SECRET, mint(kind="click", url=url), now=NOW)
    assert claims.kind == "click"
    assert claims.url == url


def test_token_is_url_safe_and_versioned() -> None:
    token = mint(campaign="a/b+c?d=é")
    assert token.startswith("2.")
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert set(token) <= allowed
    assert verify_token(SECRET, token, now=NOW).campaign == "a/b+c?d=é"


def test_token_is_opaque_nothing_of_the_claims_is_readable() -> None:
    """Issue 16.7: the email (nor the campaign, nor the click URL) can be read from the URL, in any encoding."""
    email, url = "jane.doe@acme.com", "https://acme.io/pricing"
    token = mint(email=email, campaign="nov-webinar", kind="click", url=url)
    bodies = [unb64(token[2 + k:][:len(token[2 + k:]) // 4 * 4]) for k in range(4)]  # every base64 alignment
    for secret_text in (email, "jane.doe", "acme.com", "nov-webinar", "pricing"):
        assert secret_text not in token
        assert all(secret_text.encode() not in body for body in bodies)
    assert mint(email=email) != mint(email=email)  # random nonce: two sends are not linkable


def test_verify_uses_the_clock_when_now_is_not_given() -> None:
    fresh = mint_token(SECRET, email="a@b.co", campaign="c", ttl_s=TTL)
    assert verify_token(SECRET, fresh).email == "a@b.co"
    stale = mint_token(SECRET, email="a@b.co", campaign="c", ttl_s=TTL, now=1_000_000.0)
    with pytest.raises(TokenError, match="expired"):
        verify_token(SECRET, stale)


# --------------------------------------------------------------------------- expiry


def test_token_is_valid_up_to_and_including_its_expiry() -> None:
    token = mint()
    assert verify_token(SECRET, token, now=NOW + TTL).email == "jane@acme.com"


def test_expired_token_is_refused_naming_the_expiry() -> None:
    token = mint()
    with pytest.raises(TokenError, match=rf"expired at {int(NOW) + TTL} \(now {int(NOW) + TTL + 1}\)"):
        verify_token(SECRET, token, now=NOW + TTL + 1)


def test_zero_ttl_expires_immediately_after_minting() -> None:
    token = mint(ttl_s=0)
    verify_token(SECRET, token, now=NOW)
    with pytest.raises(TokenError, match="expired"):
        verify_token(SECRET, token, now=NOW + 0.5)


# --------------------------------------------------------------------------- forgery


def test_another_secret_is_refused() -> None:
    with pytest.raises(TokenError, match="does not open"):
        verify_token("another-secret-0123456789", mint(), now=NOW)


@pytest.mark.parametrize("at", [3, 10, 20, -1])
def test_a_flipped_character_is_refused(at: int) -> None:
    token = mint()
    flipped = token[:at] + ("A" if token[at] != "A" else "B") + (token[at + 1:] if at != -1 else "")
    with pytest.raises(TokenError, match=r"does not open|malformed"):
        verify_token(SECRET, flipped, now=NOW)


def test_truncated_token_is_refused() -> None:
    token = mint()
    for cut in (1, 3, 16):
        with pytest.raises(TokenError, match=r"does not open|malformed"):
            verify_token(SECRET, token[:-cut], now=NOW)


def test_claims_sealed_with_the_secret_but_unreadable_are_refused() -> None:
    import hashlib
    import hmac
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = AESGCM(hmac.new(SECRET.encode(), b"leadrouter/email-token/v2", hashlib.sha256).digest())
    for payload in (b"not json", b"[1, 2]", b'{"c": "x", "x": 1}', b'{"e": "a@b.co", "c": "x", "x": "soon"}'):
        nonce = os.urandom(12)
        token = "2." + b64(nonce + key.encrypt(nonce, payload, b"leadrouter email token v2"))
        with pytest.raises(TokenError, match=r"unreadable|malformed"):
            verify_token(SECRET, token, now=NOW)


# --------------------------------------------------------------------------- version 1 (readable claims)
# Tokens minted before issue 16.7 are in emails already sent: accepted until they expire, forgeries refused.


def legacy(**kw: object) -> str:
    import hashlib
    import hmac

    claims: dict[str, object] = {"v": 1, "e": "jane@acme.com", "c": "nov-webinar", "x": int(NOW) + TTL, "k": "open",
                                 "s": int(NOW)}
    claims.update(kw)
    body = b64(json.dumps(claims).encode())
    return f"{body}.{b64(hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).digest())}"


def test_a_version_1_token_is_accepted_until_it_expires() -> None:
    assert verify_token(SECRET, legacy(), now=NOW + 10).email == "jane@acme.com"
    with pytest.raises(TokenError, match="expired"):
        verify_token(SECRET, legacy(), now=NOW + TTL + 1)


def test_a_version_1_token_under_another_secret_is_refused() -> None:
    with pytest.raises(TokenError, match="signature does not match"):
        verify_token("another-secret-0123456789", legacy(), now=NOW)


def test_forged_signature_is_refused() -> None:
    body, _, sig = legacy().partition(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(TokenError, match="signature does not match"):
        verify_token(SECRET, f"{body}.{flipped}", now=NOW)


def test_truncated_signature_is_refused() -> None:
    with pytest.raises(TokenError, match="signature does not match"):
        verify_token(SECRET, legacy()[:-3], now=NOW)


@pytest.mark.parametrize(("claim", "value"), [
    ("e", "ceo@acme.com"),  # someone else's opens
    ("x", int(NOW) + 10 * 365 * 86400),  # extend the expiry
    ("k", "click"),
    ("c", "other-campaign"),
])
def test_tampered_claims_keep_the_old_signature_and_are_refused(claim: str, value: object) -> None:
    body, _, sig = legacy().partition(".")
    claims = json.loads(unb64(body))
    claims[claim] = value
    forged = f"{b64(json.dumps(claims).encode())}.{sig}"
    with pytest.raises(TokenError, match="signature does not match"):
        verify_token(SECRET, forged, now=NOW)


def test_claims_signed_with_the_secret_but_unreadable_are_refused() -> None:
    """A body that is signed but is not the claims we mint is refused, not crashed on."""
    import hashlib
    import hmac

    for payload in (b"not json", b"[1, 2]", b'{"c": "x", "x": 1}', b'{"e": "a@b.co", "c": "x", "x": "soon"}'):
        body = b64(payload)
        sig = b64(hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).digest())
        with pytest.raises(TokenError, match="unreadable"):
            verify_token(SECRET, f"{body}.{sig}", now=NOW)


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize("token", ["", ".", "abc", "abc.", ".abc", "x" * 5000 + ".sig"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(TokenError, match="malformed"):
        verify_token(SECRET, token, now=NOW)


def test_oversized_token_is_refused_even_if_signed() -> None:
    token = mint(campaign="c" * 4000)
    assert len(token) > 4096
    with pytest.raises(TokenError, match="malformed"):
        verify_token(SECRET, token, now=NOW)


def test_non_ascii_signature_is_a_token_error() -> None:
    body, _, _ = legacy().partition(".")
    with pytest.raises(TokenError):
        verify_token(SECRET, f"{body}.sïg", now=NOW)


# --------------------------------------------------------------------------- minting errors


def test_click_token_needs_a_url() -> None:
    with pytest.raises(TokenError, match="click token needs the destination url"):
        mint(kind="click")
    with pytest.raises(TokenError, match="click token needs the destination url"):
        mint(kind="click", url="")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(TokenError, match="'unsubscribe' is not supported"):
        mint(kind="unsubscribe")


def test_email_must_be_an_address() -> None:
    with pytest.raises(TokenError, match=r"'jane\.acme\.com' is not an email address"):
        mint(email="jane.acme.com")


# ------------------------------------------------------------------ alert action links (issue 16.1)


def test_action_links_carry_the_assignment_crossing_and_a_fresh_one_time_id() -> None:
    a = mint_action_token(SECRET, lead_id="L1", rep_id="r1", assignment_id="L1:3", crossing=3, ttl_s=TTL, now=NOW)
    b = mint_action_token(SECRET, lead_id="L1", rep_id="r1", assignment_id="L1:3", crossing=3, ttl_s=TTL, now=NOW)
    ca, cb = verify_action_token(SECRET, a, now=NOW), verify_action_token(SECRET, b, now=NOW)
    assert (ca.lead_id, ca.rep_id, ca.assignment_id, ca.crossing, ca.issued, ca.expires) == \
        ("L1", "r1", "L1:3", 3, int(NOW), int(NOW) + TTL)
    assert ca.jti and cb.jti and ca.jti != cb.jti  # two alerts, two one-time ids
    with pytest.raises(ActionLinkError) as exc:
        verify_action_token(SECRET, a, now=NOW + TTL + 1)
    assert exc.value.problem == "expired"
    with pytest.raises(ActionLinkError) as exc:
        verify_action_token("another-secret-0123456789", a, now=NOW)
    assert exc.value.problem == "forged"
    body = b64(json.dumps({"v": 1, "k": "act", "l": "L1", "r": "r1", "a": "L1:3", "x": int(NOW) + TTL}).encode())
    old = f"{body}.{b64(hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).digest())}"
    with pytest.raises(ActionLinkError) as exc:
        verify_action_token(SECRET, old, now=NOW)
    assert exc.value.problem == "old_format"
    with pytest.raises(TokenError):
        mint_action_token(SECRET, lead_id="L1", rep_id="", assignment_id="L1:3", ttl_s=TTL, now=NOW)
