"""Publishing rules to a real Redis: versions, history, rollback, and workers following the active pointer."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from router.dev.servers import ManagedProcess
from router.settings import RedisSettings
from router.storage import keys
from router.storage.live_config import RedisRulesSource
from router.storage.rules_store import (
    RulesRejectedError,
    RulesStore,
    RulesVersionError,
    check_files,
    check_rules,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules" / "routing.yaml"
ALT = REPO / "rules" / "examples" / "routing_alt.yaml"
JAPAN = {"country": "JP"}  # west under routing.yaml, central under the example


def rules_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped rules and cases, so tests can edit them."""
    shutil.copy(RULES, tmp_path / "routing.yaml")
    shutil.copy(RULES.with_name("routing_test.yaml"), tmp_path / "routing_test.yaml")
    shutil.copy(ALT, tmp_path / "alt.yaml")
    shutil.copy(ALT.with_name("routing_alt_test.yaml"), tmp_path / "alt_test.yaml")
    return tmp_path


async def test_publish_numbers_versions_and_rollback_moves_the_pointer(redis: Redis, tmp_path: Path) -> None:
    d = rules_dir(tmp_path)
    store = RulesStore(redis)
    assert await store.active() is None and await store.versions() == [] and await store.history() == []

    v1 = await store.publish(check_files(d / "routing.yaml"), author="alice", note="first", now=1000.0)
    v2 = await store.publish(check_files(d / "alt.yaml"), author="bob", note="APAC to central", now=2000.0)
    assert (v1.number, v2.number) == (1, 2)
    assert await store.active_number() == 2
    stored = await store.get(2)
    assert stored is not None
    assert stored.content == (d / "alt.yaml").read_text(encoding="utf-8")
    assert (stored.author, stored.note, stored.ts, stored.file_version) == ("bob", "APAC to central", 2000.0,
                                                                            "2026-11-22.1-apac-central")
    assert stored.tag == "v2:2026-11-22.1-apac-central"
    assert len(stored.sha256) == 64 and stored.content_hash == check_files(d / "alt.yaml").config.content_hash
    assert stored.cases_count == 16 and stored.cases_source == str(d / "alt_test.yaml")

    entry = await store.rollback(1, author="carol", note="west asked for APAC back", now=3000.0)
    assert (entry.action, entry.number, entry.previous, entry.author) == ("rollback", 1, 2, "carol")
    assert await store.active_number() == 1
    history = await store.history()
    assert [(h.action, h.number, h.previous, h.author, h.ts, h.note) for h in history] == [
        ("publish", 1, None, "alice", 1000.0, "first"),
        ("publish", 2, 1, "bob", 2000.0, "APAC to central"),
        ("rollback", 1, 2, "carol", 3000.0, "west asked for APAC back"),
    ]
    assert [v.number for v in await store.versions()] == [1, 2]  # history is kept, nothing deleted

    with pytest.raises(RulesVersionError, match="already the active"):
        await store.rollback(1, author="carol")
    with pytest.raises(RulesVersionError, match=r"no published rules version v9.*v1\.\.v2"):
        await store.rollback(9, author="carol")
    with pytest.raises(RulesVersionError, match="--author is empty"):
        await store.rollback(2, author="  ")
    v3 = await store.publish(check_files(d / "alt.yaml"), author="bob")
    assert v3.number == 3 and await store.active_number() == 3  # numbering continues after a rollback


async def test_a_broken_file_is_never_published_and_the_active_version_keeps_routing(
    redis: Redis, tmp_path: Path
) -> None:
    d = rules_dir(tmp_path)
    store = RulesStore(redis)
    source = RedisRulesSource(d / "routing.yaml", redis)
    await store.publish(check_files(d / "alt.yaml"), author="alice")
    assert await source.poll() is True
    assert source.current.decide(JAPAN).team == "central"
    assert source.current.decide(JAPAN).rules_version == "v1:2026-11-22.1-apac-central"

    broken = d / "broken.yaml"
    broken.write_text((d / "alt.yaml").read_text(encoding="utf-8").replace("field: country", "field: contry", 1),
                      encoding="utf-8")
    shutil.copy(d / "alt_test.yaml", d / "broken_test.yaml")
    with pytest.raises(RulesRejectedError, match="does not compile") as info:
        check_files(broken)
    assert any("unknown field 'contry'; did you mean 'country'?" in p for p in info.value.failures)

    # Compiles, but a test case fails: refused as well.
    cases = (d / "routing_test.yaml").read_text(encoding="utf-8").replace(
        "lead: {country: AU, industry: Mining}\n  expect: {team: west, rule: apac}",
        "lead: {country: AU, industry: Mining}\n  expect: {team: central}")
    with pytest.raises(RulesRejectedError, match="1 of 23 test cases failed") as info2:
        check_rules((d / "routing.yaml").read_text(encoding="utf-8"), "routing.yaml", cases, "cases.yaml")
    assert "expected central, got west via apac" in info2.value.failures[0]
    # The store refuses a check whose cases did not all pass, whoever calls it.
    check = check_files(d / "routing.yaml")
    failed = dataclasses.replace(check, results=(dataclasses.replace(check.results[0], passed=False),))
    with pytest.raises(RulesRejectedError, match="did not all pass"):
        await store.publish(failed, author="mallory")

    assert [v.number for v in await store.versions()] == [1]
    assert await store.active_number() == 1
    assert await source.poll() is False
    assert source.current.decide(JAPAN).rules_version == "v1:2026-11-22.1-apac-central"


async def test_the_live_source_keeps_its_config_when_the_stored_version_does_not_compile(
    redis: Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = rules_dir(tmp_path)
    store = RulesStore(redis)
    source = RedisRulesSource(d / "routing.yaml", redis)
    await store.publish(check_files(d / "alt.yaml"), author="alice")
    assert await source.poll() is True

    # A version that no longer compiles (e.g. written by a newer leadrouter, or by hand).
    good = await store.get(1)
    assert good is not None
    bad = dataclasses.replace(good, number=2, content=good.content.replace("team: central", "team: nowhere"))
    await redis.hset(keys.rules_versions(), "2", bad.to_json())
    await redis.set(keys.rules_active(), "2")
    with caplog.at_level(logging.ERROR, logger="router.storage.live_config"):
        assert await source.poll() is False
    assert "published v2 was rejected" in caplog.text and "unknown team 'nowhere'" in caplog.text
    assert source.current.version == "v1:2026-11-22.1-apac-central"
    assert source.current.decide(JAPAN).team == "central"
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="router.storage.live_config"):
        assert await source.poll() is False  # not retried (nor logged) until the pointer moves
    assert caplog.text == ""

    # The pointer at a version that is missing altogether.
    await redis.set(keys.rules_active(), "7")
    assert await source.poll() is False
    assert source.current.version == "v1:2026-11-22.1-apac-central"

    # Rolling back to the bad version is refused: it no longer compiles.
    await redis.set(keys.rules_active(), "1")
    with pytest.raises(RulesVersionError, match="no longer passes"):
        await store.rollback(2, author="bob")

    # The next good publish takes over.
    v3 = await store.publish(check_files(d / "routing.yaml"), author="bob")
    assert await source.poll() is True
    assert source.current.version == v3.tag and source.current.decide(JAPAN).team == "west"


async def test_the_live_source_follows_publish_and_rollback_and_falls_back_to_the_file(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    d = rules_dir(tmp_path)
    store = RulesStore(redis)
    source = RedisRulesSource(d / "routing.yaml", redis, startup=RedisSettings(url=redis_url))
    file_version = source.current.version
    assert file_version == source.file_config.version and source.published is None
    assert await source.poll() is False
    assert source.current.decide(JAPAN).team == "west"

    v1 = await store.publish(check_files(d / "alt.yaml"), author="alice")
    assert await source.poll() is True and source.published == 1
    assert source.current.version == v1.tag and source.current.decide(JAPAN).team == "central"
    assert await source.poll() is False  # unchanged pointer: nothing fetched

    # Editing the file does not override a published version.
    text = (d / "routing.yaml").read_text(encoding="utf-8").replace('version: "2026-11-22.1"', 'version: "edited"')
    (d / "routing.yaml").write_text(text, encoding="utf-8")
    os.utime(d / "routing.yaml", (1, 1))
    assert await source.poll() is False and source.current.version == v1.tag
    assert source.file_config.version == "edited"

    v2 = await store.publish(check_files(d / "routing.yaml"), author="bob")
    assert await source.poll() is True and source.current.version == v2.tag == "v2:edited"
    await store.rollback(1, author="carol")
    assert await source.poll() is True and source.current.version == v1.tag

    # A worker starting now reads the active version before routing its first lead.
    fresh = RedisRulesSource(d / "routing.yaml", redis, startup=RedisSettings(url=redis_url))
    assert fresh.current.version == v1.tag and fresh.published == 1

    # Nobody deletes the pointer in normal use, but if it goes the file applies again.
    await redis.delete(keys.rules_active())
    assert await source.poll() is True and source.current.version == "edited"


async def test_the_live_source_survives_redis_going_away(
    tmp_path: Path, server_factory: Callable[..., ManagedProcess]
) -> None:
    d = rules_dir(tmp_path)
    server = server_factory("redis")
    client = Redis.from_url(f"redis://127.0.0.1:{server.port}/0")
    try:
        store = RulesStore(client)
        source = RedisRulesSource(d / "routing.yaml", client)
        v1 = await store.publish(check_files(d / "alt.yaml"), author="alice")
        assert await source.poll() is True
        server.stop()
        assert await source.poll() is False
        assert source.current.version == v1.tag
        unreachable = RedisRulesSource(d / "routing.yaml", client,
                                       startup=RedisSettings(url=f"redis://127.0.0.1:{server.port}/0"))
        assert unreachable.current.version == "2026-11-22.1"  # starts on the file, catches up on a later poll
    finally:
        await client.aclose()


async def test_with_nothing_published_the_file_reloads_like_a_live_file(redis: Redis, tmp_path: Path) -> None:
    d = rules_dir(tmp_path)
    path = d / "routing.yaml"
    source = RedisRulesSource(path, redis)
    good = path.read_text(encoding="utf-8")
    path.write_text(good.replace("team: west", "team: wset", 1), encoding="utf-8")
    os.utime(path, (1, 1))
    assert await source.poll() is False and source.current.version == "2026-11-22.1"  # broken edit rejected
    path.write_text(good.replace('version: "2026-11-22.1"', 'version: "2026-11-22.2"'), encoding="utf-8")
    os.utime(path, (2, 2))
    assert await source.poll() is True and source.current.version == "2026-11-22.2"
    assert source.maybe_reload() is False  # the synchronous LiveFile check still works
