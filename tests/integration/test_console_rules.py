"""The console's Rules and scoring pages over a real Redis: roles, CSRF, errors at the line, test cases, simulate,
publish (refused for a broken file while routing goes on), history with diffs, rollback."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from router.admin.auth import Role
from router.backtest.simulate import DEFAULT_DATASETS
from router.settings import Settings
from router.storage import config_store
from router.storage.config_store import ConfigStore
from router.storage.rules_store import RulesStore
from tests.integration.test_admin_api import Api, make_api, route_lead
from tests.integration.test_console import get, post, sign_in

pytestmark = pytest.mark.integration

RULES = Path(Settings().files.rules_file)
CASES = RULES.with_name("routing_test.yaml")
SCORING = Path(Settings().files.scoring_file)
SCORING_CASES = SCORING.with_name("scoring_test.yaml")


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url))
    await a.token("rep", Role.REP, a.config.reps[0].rep_id)
    yield a
    await client.close()


def broken_rules() -> tuple[str, int]:
    """The shipped rules with one condition's field misspelt: (text, the 1-based line of the mistake)."""
    lines = RULES.read_text().split("\n")
    n = next(i for i, line in enumerate(lines) if "{field: country, in: [US, CA]}" in line and "when:" in line)
    lines[n] = lines[n].replace("field: country", "field: contry")
    return "\n".join(lines), n + 1


def form(csrf: str, action: str, text: str | None = None, cases: str | None = None, note: str = "",
         **extra: str) -> dict[str, str]:
    return {"csrf": csrf, "action": action, "text": RULES.read_text() if text is None else text,
            "cases": CASES.read_text() if cases is None else cases, "note": note, **extra}


async def test_reps_are_refused_readonly_sees_without_buttons_and_cannot_post(api: Api) -> None:
    status, _, headers = await get(api, "/console/rules/routing")
    assert status == 303 and headers["Location"] == "/console/sign-in"
    csrf = await sign_in(api, "rep")
    for path in ("/console/rules/routing", "/console/rules/scoring/history", "/console/team", "/console/health"):
        status, html, _ = await get(api, path)
        assert status == 403 and "may not do this" in html, path
    status, _, _ = await post(api, "/console/rules/routing", form(csrf, "publish", note="x"))
    assert status == 403
    csrf = await sign_in(api, "viewer")
    status, html, _ = await get(api, "/console/rules/routing")
    assert status == 200 and 'id="text"' in html and " readonly>" in html
    assert 'id="publish"' not in html and 'id="validate"' not in html
    assert 'href="/console/rules"' in html and 'href="/console/team"' in html  # the nav
    status, _, _ = await post(api, "/console/rules/routing", form(csrf, "publish", note="sneaky"))
    assert status == 403
    status, _, _ = await post(api, "/console/rules/routing/rollback", {"csrf": csrf, "version": "1", "note": "x"})
    assert status == 403
    assert await RulesStore(api.redis).active_number() is None
    status, _, _ = await get(api, "/console/rules/nonsense")
    assert status == 404


async def test_a_forged_form_publishes_nothing(api: Api) -> None:
    await sign_in(api, "ops")
    status, html, _ = await post(api, "/console/rules/routing", form("forged", "publish", note="hi"))
    assert status == 403 and "stale" in html
    csrf = await sign_in(api, "ops")
    status, _, _ = await post(api, "/console/rules/routing", form(csrf, "publish", note="hi"),
                              headers={"Origin": "https://evil.example"})
    assert status == 403
    assert await RulesStore(api.redis).active_number() is None


async def test_validate_shows_each_problem_at_its_line_with_the_suggestion(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    text, line = broken_rules()
    status, html, _ = await post(api, "/console/rules/routing", form(csrf, "validate", text))
    assert status == 422
    row = re.search(rf'<tr id="text-L{line}" class="bad"><td class="ln">{line}</td><td><code>([^<]*)</code>', html)
    assert row and "contry" in row.group(1)
    assert f'href="#text-L{line}">line {line}</a>' in html
    assert "unknown field &#x27;contry&#x27;" in html and "did you mean &#x27;country&#x27;?" in html
    # Only lines near the problem are listed; the edited text is kept in the textarea.
    assert f'id="text-L{line + 10}"' not in html and "field: contry" in html.split('id="text"')[1]
    status, html, _ = await post(api, "/console/rules/routing", form(csrf, "validate"))
    assert status == 200 and "Valid" in html and 'class="bad"' not in html


async def test_markup_in_the_text_is_shown_as_text(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    evil = RULES.read_text() + '\n</textarea><script>alert(1)</script>: [\n'
    status, html, _ = await post(api, "/console/rules/routing", form(csrf, "validate", evil))
    assert status == 422 and "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("</textarea>") == 2  # the two editors' own, nothing from the text


async def test_test_cases_pass_and_fail_per_case(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    status, html, _ = await post(api, "/console/rules/routing", form(csrf, "test"))
    assert status == 200 and 'data-case="uk-hand-raiser"' in html and "FAIL" not in html
    total = html.count('class="pass"')
    assert total >= 5 and f"{total} of {total} test cases pass" in html
    cases = CASES.read_text().replace("lead: {country: GB, hand_raiser", "lead: {country: US, hand_raiser", 1)
    status, html, _ = await post(api, "/console/rules/routing", form(csrf, "test", cases=cases))
    assert status == 200
    failed = re.search(r'<tr class="fail" data-case="([^"]+)">', html)
    assert failed and failed.group(1) == "uk-hand-raiser" and html.count('class="fail"') == 1


@pytest.mark.skipif(not DEFAULT_DATASETS.is_dir(), reason="the shared datasets are not linked (../shared)")
async def test_simulate_charts_the_per_team_and_per_rep_difference(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    # The edited version sends North America to the west team.
    text = RULES.read_text()
    assert "when: {field: country, in: [US, CA]}" in text
    status, html, _ = await post(api, "/console/rules/routing",
                                 form(csrf, "simulate", text, dataset="maven"))
    assert status == 200 and 'id="simulation"' in html and 'id="chart-teams"' in html
    moves = int(re.search(r'id="moves">([\d,]+)<', html).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert moves == 0  # the same rules move nothing
    lines = text.split("\n")
    n = next(i for i, line in enumerate(lines) if "when: {field: country, in: [US, CA]}" in line)
    team_line = next(i for i in range(n, n + 6) if "team:" in lines[i])
    current_team = lines[team_line].split("team:")[1].strip()
    other = "east" if current_team != "east" else "central"
    lines[team_line] = lines[team_line].replace(f"team: {current_team}", f"team: {other}")
    status, html, _ = await post(api, "/console/rules/routing", form(csrf, "simulate", "\n".join(lines)))
    assert status == 200
    moves = int(re.search(r'id="moves">([\d,]+)<', html).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert moves > 0
    bars = {m[0]: (int(m[1]), int(m[2]))
            for m in re.findall(r'<g data-label="([^"]+)" data-current="(\d+)" data-new="(\d+)">', html)}
    assert bars[other][1] > bars[other][0] and bars[current_team][1] < bars[current_team][0]
    assert 'id="chart-reps"' in html and "<rect" in html
    # Simulating publishes nothing.
    assert await RulesStore(api.redis).active_number() is None


async def test_publish_refuses_a_broken_file_at_its_line_and_routing_goes_on(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    # A good publish first: v1 runs.
    status, _, headers = await post(api, "/console/rules/routing", form(csrf, "publish", note="baseline"))
    assert status == 303 and headers["Location"] == "/console/rules/routing?done=published"
    rules = RulesStore(api.redis)
    assert await rules.active_number() == 1
    v1 = await rules.get(1)
    assert v1 is not None and v1.author == "ops" and v1.note == "baseline" and v1.ts == api.clock()
    text, line = broken_rules()
    status, html, _ = await post(api, "/console/rules/routing", form(csrf, "publish", text, note="typo"))
    assert status == 422 and "Not published" in html and "published v1" in html and "keeps running" in html
    assert f'<tr id="text-L{line}" class="bad">' in html
    assert await rules.active_number() == 1 and await rules.numbers() == [1]
    # The running version still routes leads.
    lead_id, rep_id = await route_lead(api, "jane@acme.com")
    assert (await api.store.lead_hash(lead_id))["owner"] == rep_id
    status, html, _ = await get(api, "/console/rules/routing")
    assert 'id="running">published v1' in html
    # A publish needs a note; failing test cases are refused at the case's line.
    status, html, _ = await post(api, "/console/rules/routing", form(csrf, "publish", note=""))
    assert status == 422 and "note" in html
    cases = CASES.read_text().replace("lead: {country: GB, hand_raiser", "lead: {country: US, hand_raiser", 1)
    status, html, _ = await post(api, "/console/rules/routing", form(csrf, "publish", cases=cases, note="bad case"))
    assert status == 422 and 'id="cases-L' in html and 'class="bad"' in html
    assert await rules.numbers() == [1]


async def test_history_diffs_versions_and_rolls_back_with_who_and_when(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    original = RULES.read_text()
    await post(api, "/console/rules/routing", form(csrf, "publish", note="first"))
    changed = original.replace("description:", "description: <b>edited</b>", 1)
    status, _, _ = await post(api, "/console/rules/routing", form(csrf, "publish", changed, note="second"))
    assert status == 303
    api.clock.now += 60
    status, html, _ = await get(api, "/console/rules/routing/history?a=1&b=2")
    assert status == 200
    assert '<tr class="add"><td><code>+' in html and "&lt;b&gt;edited&lt;/b&gt;" in html and "<b>edited" not in html
    assert '<form method="get" class="inline" id="compare">' in html
    assert '<tr class="del">' in html and 'id="rollback-1"' in html and 'id="rollback-2"' not in html
    status, _, _ = await post(api, "/console/rules/routing/rollback", {"csrf": csrf, "version": "1", "note": ""})
    assert status == 422
    status, _, headers = await post(api, "/console/rules/routing/rollback",
                                    {"csrf": csrf, "version": "1", "note": "second broke EMEA"})
    assert status == 303
    rules = RulesStore(api.redis)
    assert await rules.active_number() == 1
    last = (await rules.history())[-1]
    assert (last.action, last.number, last.previous, last.author, last.note, last.ts) == (
        "rollback", 1, 2, "ops", "second broke EMEA", api.clock())
    status, html, _ = await get(api, headers["Location"])
    assert "Rolled back" in html and "second broke EMEA" in html and "rollback" in html.split('id="changes"')[1]
    status, _, _ = await post(api, "/console/rules/routing/rollback", {"csrf": csrf, "version": "1", "note": "x"})
    assert status == 409
    status, _, _ = await get(api, "/console/rules/routing/history?a=1&b=9")
    assert status == 404


async def test_scoring_is_validated_at_the_line_and_published_with_its_cases(api: Api) -> None:
    csrf = await sign_in(api, "ops")
    text = SCORING.read_text()
    lines = text.split("\n")
    n = next(i for i, line in enumerate(lines) if re.match(r"^threshold:\s*\d", line))
    lines[n] = "threshold: lots"
    data = {"csrf": csrf, "action": "validate", "text": "\n".join(lines), "cases": SCORING_CASES.read_text(),
            "note": ""}
    status, html, _ = await post(api, "/console/rules/scoring", data)
    assert status == 422 and f'<tr id="text-L{n + 1}" class="bad">' in html
    data.update(action="publish", note="broken")
    status, html, _ = await post(api, "/console/rules/scoring", data)
    assert status == 422 and "Not published" in html
    store = ConfigStore(api.redis, config_store.SCORING)
    assert await store.active_number() is None
    data.update(text=text, note="tuned nothing")
    status, _, _ = await post(api, "/console/rules/scoring", data)
    assert status == 303 and await store.active_number() == 1
    doc = await store.get(1)
    assert doc is not None and doc.author == "ops" and doc.note == "tuned nothing"
    status, html, _ = await get(api, "/console/rules/icp")
    assert status == 200 and 'id="text"' in html and 'id="simulate"' in html  # fit re-scores the archive
    assert '<option value="30" selected>last 30 days</option>' in html


async def test_readonly_never_sees_slack_webhook_urls(api: Api) -> None:
    hook = "https://hooks.slack.com/services/T000/B000/secretsecret"
    text = RULES.read_text().replace('slack_webhook: ""', f'slack_webhook: "{hook}"', 1)
    assert hook in text
    csrf = await sign_in(api, "ops")
    status, _, _ = await post(api, "/console/rules/routing", form(csrf, "publish", note="hook"))
    assert status == 303
    status, _, _ = await post(api, "/console/rules/routing", form(csrf, "publish", text, note="hook"))
    assert status == 303
    status, html, _ = await get(api, "/console/rules/routing")
    assert hook in html  # ops edit it
    await sign_in(api, "viewer")
    for path in ("/console/rules/routing", "/console/rules/routing/history?a=1&b=2"):
        status, html, _ = await get(api, path)
        assert status == 200 and "secretsecret" not in html and "&lt;redacted&gt;" in html, path
