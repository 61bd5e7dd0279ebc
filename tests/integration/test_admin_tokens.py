"""Admin bearer tokens expire and rotate (issue 16.8), against the real admin app and redis-server."""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from router.admin import core as admin_core
from router.admin.auth import Role, TokenStore, hash_token
from router.cli import admin as cmd_admin
from router.settings import Settings
from router.storage import keys
from router.storage.redis import sync_redis_from_url
from tests.integration.test_admin_api import NOW, Api, make_api
from tests.support import sync_flush

pytestmark = pytest.mark.integration

DAY = 86400.0


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url, admin_token_ttl_days=30))
    yield a
    await client.close()


async def test_a_token_works_until_it_expires_then_gets_a_clear_401(api: Api) -> None:
    token, p = await TokenStore(api.redis).create(Role.OPS, name="short", now=api.clock(), ttl_s=2 * DAY)
    assert p.expires == NOW.timestamp() + 2 * DAY
    assert (await api.call("GET", "/v1/teams", who=token))[0] == 200
    api.clock.now = NOW.timestamp() + 2 * DAY - 1
    assert (await api.call("GET", "/v1/me", who=token))[0] == 200
    api.clock.now = NOW.timestamp() + 2 * DAY
    async with api.client.get("/v1/teams", headers={"Authorization": f"Bearer {token}"}) as resp:
        body = await resp.json()
        assert resp.status == 401 and body["error"] == "expired_token"
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="leadrouter-admin", error="invalid_token"'
    assert "expired at 2026-11-26 15:00:00 UTC" in body["detail"]
    assert f"leadrouter admin token rotate {p.token_hash[:12]}" in body["detail"]
    # The record stays (for this message and `token list`) and Redis drops it 30 days after expiry.
    ttl = await api.redis.ttl(keys.admin_token(p.token_hash))
    assert abs(ttl - (2 * DAY + 30 * DAY)) <= 2


async def test_a_token_stored_before_expiry_existed_expires_after_the_default_days(
        api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_core, "_LEGACY_WARNED", set())  # warned once per process; this test runs twice

    async def legacy(name: str, created: float) -> str:
        token = "lra_" + name * 40
        await api.redis.hset(keys.admin_token(hash_token(token)),
                             mapping={"role": "ops", "name": name, "rep_id": "", "created": repr(created)})
        await api.redis.sadd(keys.ADMIN_TOKENS, hash_token(token))
        return token

    young = await legacy("y", NOW.timestamp() - 10 * DAY)
    old = await legacy("o", NOW.timestamp() - 31 * DAY)  # LEADROUTER_ADMIN_TOKEN_TTL_DAYS=30 here
    with caplog.at_level(logging.WARNING, logger="router.admin.core"):
        assert (await api.call("GET", "/v1/teams", who=young))[0] == 200
        assert (await api.call("GET", "/v1/teams", who=young))[0] == 200
    warnings = [r.getMessage() for r in caplog.records if "no stored expiry" in r.getMessage()]
    assert len(warnings) == 1 and "expires 30 days after it was created" in warnings[0]
    status, body = await api.call("GET", "/v1/teams", who=old)
    assert (status, body["error"]) == (401, "expired_token")
    api.clock.now = NOW.timestamp() + 20 * DAY
    assert (await api.call("GET", "/v1/teams", who=young))[0] == 401


async def test_last_use_is_recorded_at_most_once_a_minute(api: Api) -> None:
    token, p = await TokenStore(api.redis).create(Role.READONLY, name="grafana", now=api.clock())
    key = keys.admin_token(p.token_hash)
    assert await api.redis.hget(key, "last_used") is None
    await api.call("GET", "/v1/teams", who=token)
    assert float(await api.redis.hget(key, "last_used")) == NOW.timestamp()
    api.clock.now += 30
    await api.call("GET", "/v1/teams", who=token)
    assert float(await api.redis.hget(key, "last_used")) == NOW.timestamp()
    api.clock.now += 31
    await api.call("GET", "/v1/teams", who=token)
    assert float(await api.redis.hget(key, "last_used")) == NOW.timestamp() + 61


async def test_rotation_keeps_role_rep_and_name_and_the_old_token_stops_after_the_overlap(api: Api) -> None:
    store = TokenStore(api.redis)
    old_token, old = await store.create(Role.REP, name="anna", rep_id="anna-snelling", now=api.clock())
    new_token, new, before = await store.rotate(old.token_hash[:10], now=api.clock(), ttl_s=90 * DAY,
                                                overlap_s=3600)
    assert (new.role, new.rep_id, new.name) == (Role.REP, "anna-snelling", "anna") and new_token != old_token
    assert before.expires == NOW.timestamp() + 3600 and before.rotated_to == new.token_hash
    for token in (old_token, new_token):
        status, me = await api.call("GET", "/v1/me", who=token)
        assert status == 200 and me["rep_id"] == "anna-snelling"
    api.clock.now = NOW.timestamp() + 3600
    assert (await api.call("GET", "/v1/me", who=old_token))[1]["error"] == "expired_token"
    assert (await api.call("GET", "/v1/me", who=new_token))[0] == 200
    # Overlap 0: the old one is revoked at once.
    newer_token, _, _ = await store.rotate(new.token_hash[:10], now=api.clock(), ttl_s=90 * DAY, overlap_s=0)
    assert (await api.call("GET", "/v1/me", who=new_token))[1]["error"] == "unknown_token"
    assert (await api.call("GET", "/v1/me", who=newer_token))[0] == 200


def test_cli_create_list_rotate_with_expiry(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.of(redis_url=redis_url)
    client = sync_redis_from_url(redis_url)
    sync_flush(client)
    parser = argparse.ArgumentParser(prog="leadrouter")
    cmd_admin.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> tuple[int, str, str]:
        args = parser.parse_args(list(argv))
        code = int(args.fn(settings, args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("admin", "token", "create", "--role", "ops", "--name", "ci", "--ttl-days", "7")
    token = out.strip()
    assert code == 0 and "valid until" in err
    stored = client.hgetall(keys.admin_token(hash_token(token)))
    assert float(stored[b"expires"]) - float(stored[b"created"]) == 7 * DAY
    with pytest.raises(cmd_admin.AdminCommandError, match="--ttl-days 0 must be more than 0"):
        run("admin", "token", "create", "--role", "ops", "--name", "x", "--ttl-days", "0")
    code, out, err = run("admin", "token", "rotate", hash_token(token)[:12], "--overlap-minutes", "0")
    successor = out.strip()
    assert code == 0 and successor.startswith("lra_") and "revoked at once" in err and successor not in err
    assert client.exists(keys.admin_token(hash_token(token))) == 0
    code, _, err = run("admin", "token", "rotate", hash_token(successor)[:12])
    assert code == 0 and "keeps working until" in err
    code, out, _ = run("admin", "token", "list")
    assert "expires (UTC)" in out and "last used (UTC)" in out and "rotated to " in out
    assert successor not in out
    client.close()
