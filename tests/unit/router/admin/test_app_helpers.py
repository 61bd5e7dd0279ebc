"""Pure parts of the admin API: bearer header parsing, token hashing, YAML guards, webhook redaction."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from router.admin.auth import AuthError, bearer_token, hash_token, is_token_hash, new_token
from router.admin.http import ApiError
from router.admin.rules import redact_webhooks, yaml_guard

REPO = Path(__file__).resolve().parents[4]


def test_new_tokens_are_random_prefixed_and_hash_to_sha256_hex() -> None:
    a, b = new_token(), new_token()
    assert a != b and a.startswith("lra_") and len(a) == 4 + 43
    assert hash_token(a) == hashlib.sha256(a.encode()).hexdigest() and is_token_hash(hash_token(a))
    assert bearer_token(f"Bearer {a}") == a
    assert bearer_token(f"bearer   {a}  ") == a


@pytest.mark.parametrize(("header", "code", "error"), [
    (None, "missing_token", ""),
    ("   ", "missing_token", ""),
    ("Basic abc", "malformed_token", "invalid_request"),
    ("Bearer", "malformed_token", "invalid_request"),
    ("Bearer lra_short", "malformed_token", "invalid_request"),
    ("Bearer lra_" + "a" * 40 + " extra", "malformed_token", "invalid_request"),
    ("Bearer xyz_" + "a" * 40, "malformed_token", "invalid_request"),
    ("Bearer lra_" + "é" * 40, "malformed_token", "invalid_request"),
])
def test_bad_authorization_headers(header: str | None, code: str, error: str) -> None:
    with pytest.raises(AuthError) as info:
        bearer_token(header)
    assert info.value.code == code and info.value.bearer_error == error
    assert info.value.www_authenticate == 'Bearer realm="leadrouter-admin"' + (f', error="{error}"' if error else "")


def test_yaml_guard_passes_the_shipped_rules_and_refuses_bombs() -> None:
    yaml_guard((REPO / "rules" / "routing.yaml").read_text(), "rules")
    yaml_guard("a: &x [1, 2]\nb: *x\nc: *x\n", "rules")  # a few aliases are fine
    yaml_guard("teams: [unclosed", "rules")  # syntax errors are the compiler's to report
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True))
    with pytest.raises(ApiError) as info:
        yaml_guard(laughs, "the rules")
    assert (info.value.status, info.value.code) == (422, "yaml_too_large")
    with pytest.raises(ApiError) as info:
        yaml_guard("x:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)), "the rules")
    assert (info.value.status, info.value.code) == (422, "yaml_too_deep")
    with pytest.raises(ApiError):
        yaml_guard("{" * 100 + "}" * 100, "the rules")


def test_webhooks_are_blanked_whatever_the_quoting() -> None:
    text = ('slack_webhook: "https://hooks.slack.com/services/A/B/c"\n'
            "    slack_webhook: 'https://hooks.slack.com/x'\n"
            "  east: {slack_webhook: https://hooks.slack.com/y, manager: Z}\n"
            'slack_webhook: ""\n')
    out = redact_webhooks(text)
    assert "hooks.slack.com" not in out
    assert out.count('slack_webhook: "<redacted>"') == 3 and 'slack_webhook: ""' in out
    assert ", manager: Z}" in out
