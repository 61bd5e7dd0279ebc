"""The Team page's per-rep profile edits over a real Redis: each one publishes a NEW routing version (the active
text with just that rep's entry changed, checked and tested like any publish, note and author recorded) that the
worker-facing source follows; bad values and changes that fail the test cases are refused next to their field and
the running version keeps routing; ops only, with the session's CSRF token."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from router.admin.auth import Role
from router.settings import Settings
from router.storage import audit
from router.storage.live_config import RedisRulesSource
from router.storage.rules_store import RulesStore
from tests.integration.test_admin_api import Api, make_api
from tests.integration.test_console import get, post, sign_in

pytestmark = pytest.mark.integration

ANNA = {"team": "central", "hours": "", "days": "", "tz": "", "capacity_day": "12", "capacity_30d": "200"}
MARTY = {"team": "central", "hours": "07:30-16:30", "days": "", "tz": "", "capacity_day": "", "capacity_30d": ""}


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url))
    await a.token("rep", Role.REP, "anna-snelling")
    a.clock.now = datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp()
    yield a
    await client.close()


def base_of(page: str) -> str:
    m = re.search(r'<input type="hidden" name="base" value="([^"]+)">', page)
    assert m, "no profile form"
    return m.group(1)


def field_error(page: str, rep_id: str, key: str) -> str:
    m = re.search(rf'id="err-{re.escape(rep_id)}-{key}" role="alert">(.*?)</', page, re.DOTALL)
    assert m, f"no error next to {key} of {rep_id}"
    return html_lib.unescape(m.group(1))


async def test_ops_change_capacity_publishes_a_new_routing_version_the_worker_follows(api: Api) -> None:
    worker = RedisRulesSource(api.settings.files.rules_file, api.redis)  # what a worker routes with
    await worker.poll()
    assert worker.published is None
    assert worker.current.teams["central"].profile("anna-snelling").capacity_day == 12
    csrf = await sign_in(api, "ops")
    status, page, _ = await get(api, "/console/team")
    assert status == 200 and 'action="/console/team/anna-snelling/profile"' in page and base_of(page) == "file"
    status, _, headers = await post(api, "/console/team/anna-snelling/profile",
                                    {"csrf": csrf, "base": "file", **ANNA, "capacity_day": "15"})
    assert status == 303 and headers["Location"].startswith("/console/team?done=published")
    versions = await RulesStore(api.redis).versions()
    assert [v.number for v in versions] == [1]
    v1 = versions[0]
    assert v1.author == "ops" and v1.note == "Team page: capacity per day of Anna Snelling 12 → 15"
    assert v1.ts == api.clock()
    # Only that rep's entry changed; every comment and the rest of the file are as they were.
    before = api.settings.files.rules_file.read_text(encoding="utf-8").splitlines()
    after = v1.content.splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [("         capacity_day: 12, capacity_30d: 200}", "         capacity_day: 15, capacity_30d: 200}")]
    assert v1.cases  # published with the test cases it passed
    (entry,) = [e for e in await audit.recent(api.redis) if e.action == "rules.publish"]  # the audit trail too
    assert (entry.who, entry.via, entry.target, entry.detail) == ("ops", "console", "v1", v1.note)
    # The worker-facing source takes the new version on its next poll; the admin's own source already did.
    assert await worker.poll() is True and worker.published == 1
    assert worker.current.version.startswith("v1:")
    assert worker.current.teams["central"].profile("anna-snelling").capacity_day == 15
    status, data = await api.call("GET", "/v1/reps/anna-snelling")
    assert status == 200 and data["capacity_day"] == 15
    status, page, _ = await get(api, "/console/team?done=published")
    assert "Published: routing is now published v1:" in page and base_of(page) == "1"
    # Rules history shows the version, its author and the automatic note.
    status, page, _ = await get(api, "/console/rules/routing/history")
    assert 'data-version="1"' in page and "capacity per day of Anna Snelling 12 → 15" in page


async def test_hours_days_tz_and_team_move_then_back_to_the_team_default(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    form = {"csrf": csrf, "base": "file", **ANNA, "hours": "09:00-17:30", "days": "mon, tue-thu", "tz": "America/New_York",
            "team": "east", "capacity_30d": ""}
    status, _, _ = await post(api, "/console/team/anna-snelling/profile", form)
    assert status == 303
    (v1,) = await RulesStore(api.redis).versions()
    assert "working hours of Anna Snelling team default → 09:00-17:30" in v1.note
    assert "team of Anna Snelling central → east" in v1.note and "capacity per 30 days of Anna Snelling 200 → team default" \
        in v1.note
    source = RedisRulesSource(api.settings.files.rules_file, api.redis)
    await source.poll()
    assert "anna-snelling" not in [r.rep_id for r in source.current.teams["central"].reps]
    assert source.current.teams["east"].rep("anna-snelling") is not None
    profile = source.current.teams["east"].profile("anna-snelling")
    assert profile.tz == "America/New_York" and str(profile.hours) == "09:00-17:30"
    assert sorted(profile.days) == [0, 1, 2, 3] and profile.capacity_day == 12
    assert profile.capacity_30d == source.current.teams["east"].profile("violet-mclelland").capacity_30d  # east's default now
    assert "{id: anna-snelling" in v1.content
    # Clearing hours, days and time zone takes them out of her entry: the team's defaults apply again.
    status, _, _ = await post(api, "/console/team/anna-snelling/profile",
                              {"csrf": csrf, "base": "1", **ANNA, "team": "east", "capacity_30d": ""})
    assert status == 303
    v2 = (await RulesStore(api.redis).versions())[-1]
    assert v2.number == 2 and "hours:" not in v2.content.split("id: anna-snelling", 1)[1].split("}", 1)[0]


async def test_bad_values_are_refused_next_to_their_field_and_nothing_is_published(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    path = "/console/team/anna-snelling/profile"
    bad = {"csrf": csrf, "base": "file", **ANNA, "tz": "America/Chicagoo", "hours": "17:00-09:00", "days": "fri-mon",
           "capacity_day": "-3", "capacity_30d": "999999"}
    status, page, _ = await post(api, path, bad)
    assert status == 422 and "file routing.yaml keeps routing" in page
    assert "time zone 'America/Chicagoo' is not an IANA time zone name" in field_error(page, "anna-snelling", "tz")
    assert "HH:MM-HH:MM" in field_error(page, "anna-snelling", "hours")
    assert "runs backwards" in field_error(page, "anna-snelling", "days")
    assert "'-3' must be a whole number from 1 to 1000" in field_error(page, "anna-snelling", "capacity_day")
    assert "from 1 to 30000" in field_error(page, "anna-snelling", "capacity_30d")
    assert 'value="America/Chicagoo"' in page  # what ops typed is shown again
    status, page, _ = await post(api, path, {**bad, **ANNA, "team": "north"})
    assert status == 422 and "pick one of central, east, west" in field_error(page, "anna-snelling", "team")
    status, page, _ = await post(api, path, {"csrf": csrf, "base": "file", **ANNA})
    assert status == 422 and "nothing changed" in field_error(page, "anna-snelling", "form")
    status, page, _ = await post(api, "/console/team/nobody/profile", {"csrf": csrf, "base": "file", **ANNA})
    assert status == 404
    assert await RulesStore(api.redis).versions() == []


async def test_a_change_that_fails_a_test_case_is_refused_and_the_running_version_keeps_routing(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    await post(api, "/console/team/anna-snelling/profile", {"csrf": csrf, "base": "file", **ANNA, "capacity_day": "9"})
    # Marty's 07:30 start is what the us-dst-starts-sunday case expects; 08:00 fails it.
    status, page, _ = await post(api, "/console/team/marty-freudenburg/profile",
                                 {"csrf": csrf, "base": "1", **MARTY, "hours": "08:00-17:00"})
    assert status == 422 and "published v1:2026-11-22.1 keeps routing" in page, re.findall(r"id=\"(?:message|err-[^\"]+)\"[^>]*>([^<]*)", page)
    message = field_error(page, "marty-freudenburg", "hours")
    assert "us-dst-starts-sunday" in message and "not published" in message
    assert [v.number for v in await RulesStore(api.redis).versions()] == [1]
    assert await RulesStore(api.redis).active_number() == 1
    # A page loaded before another publish is refused rather than overwriting it.
    status, page, _ = await post(api, "/console/team/marty-freudenburg/profile",
                                 {"csrf": csrf, "base": "file", **MARTY, "capacity_day": "4"})
    assert status == 422 and "changed since this page was loaded" in field_error(page, "marty-freudenburg", "form")
    assert await RulesStore(api.redis).active_number() == 1


async def test_profile_edits_need_ops_and_the_sessions_csrf(api: Api) -> None:
    path = "/console/team/anna-snelling/profile"
    form = {"base": "file", **ANNA, "capacity_day": "20"}
    csrf = await sign_in(api, "viewer")
    status, page, _ = await get(api, "/console/team")
    assert status == 200 and "/profile" not in page
    status, _, _ = await post(api, path, {"csrf": csrf, **form})
    assert status == 403
    csrf = await sign_in(api, "rep")
    status, _, _ = await post(api, path, {"csrf": csrf, **form})
    assert status == 403
    await sign_in(api, "ops")
    status, _, _ = await post(api, path, {"csrf": "forged", **form})
    assert status == 403
    status, _, _ = await post(api, path, form)
    assert status == 403
    assert await RulesStore(api.redis).versions() == []
