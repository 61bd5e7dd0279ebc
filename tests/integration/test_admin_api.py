"""The admin HTTP API against a real redis-server: roles, roster, rules, leads and real lifecycle calls."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from models import Event, EventPlan, EventType, Reason
from router.admin.app import create_app
from router.admin.auth import Role, TokenStore, hash_token
from router.cli import admin as cmd_admin
from router.settings import Settings
from router.storage import keys
from router.storage.live_config import load_rules_file, load_scoring_file
from router.storage.redis import sync_redis_from_url
from router.storage.store import RedisStore
from router.worker.distribution import Pick, assign_rep
from rules import RoutingConfig
from scoring import score_at
from tests.support import all_keys, sync_flush

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules" / "routing.yaml"
CASES = REPO / "rules" / "routing_test.yaml"
# Tuesday 09:00 in Chicago: the central office is at work.
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: float = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


@dataclass
class Api:
    client: TestClient[Any, Any]
    redis: Redis
    store: RedisStore
    config: RoutingConfig
    clock: Clock
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str | None) -> dict[str, str]:
        if who is None:
            return {}
        return {"Authorization": f"Bearer {self.tokens.get(who, who)}"}

    async def call(self, method: str, path: str, who: str | None = "ops", **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.auth(who), **kwargs.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, **kwargs) as resp:
            body = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            data = orjson.loads(body) if ctype.startswith("application/json") else body.decode()
            return resp.status, data

    async def token(self, name: str, role: Role, rep_id: str = "") -> str:
        token, _ = await TokenStore(self.redis).create(role, name=name, rep_id=rep_id, now=self.clock())
        self.tokens[name] = token
        return token


async def make_api(redis: Redis, settings: Settings) -> tuple[Api, TestClient[Any, Any]]:
    clock = Clock()
    app = create_app(settings, redis, clock=clock)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    api = Api(client, redis, RedisStore(redis), load_rules_file(settings.files.rules_file), clock, settings)
    await api.token("ops", Role.OPS, "")
    await api.token("viewer", Role.READONLY)
    return api, client


@pytest.fixture
async def api(redis: Redis, redis_url: str) -> AsyncIterator[Api]:
    a, client = await make_api(redis, Settings.of(redis_url=redis_url, admin_simulate_max_leads=50))
    yield a
    await client.close()


async def route_lead(api: Api, email: str, *, team: str = "central", event_id: str = "e1",
                     at: datetime = NOW) -> tuple[str, str]:
    """A demo-request form fill that makes the lead sales-ready, routed as the pipeline does: (lead_id, rep_id)."""
    scoring = load_scoring_file(api.settings.files.scoring_file)
    lead_id = keys.lead_id_for_email(email)
    ts = at.timestamp()
    ev = Event(event_id=event_id, type=EventType.FORM_FILL, ts=ts, source="form", email=email,
               form_id="demo-request", fields={"company": "Acme Corp", "country": "US", "first_name": "Jane"})
    reasons = (Reason(rule="demo-request", points=60.0, event_id=event_id, event_type="form_fill", ts=ts,
                      detail="filled form demo-request", hand_raiser=True),
               Reason(rule="pricing-page", points=15.0, event_id=event_id, event_type="form_fill", ts=ts,
                      detail="looked at pricing"))
    [res] = await api.store.apply([EventPlan(event=ev, lead_id=lead_id, reasons=reasons, points=75.0,
                                             hand_raiser=True, fields=dict(ev.fields))],
                                  threshold=scoring.threshold, half_life_s=scoring.half_life_s, now=ts)
    assert res.status == "fired"
    aid = f"{lead_id}:{res.crossing}"
    config_team = api.config.team(team)
    pick = await assign_rep(api.store, config_team, aid, lead_id, res.crossing, at)
    assert isinstance(pick, Pick), f"team {team} held the lead instead of routing it: {pick}"
    await api.store.commit_assignment(lead_id, res.crossing, aid, pick.rep.rep_id, pick.rep.name, team, "default",
                                      api.config.version, ts)
    return lead_id, pick.rep.rep_id


async def two_leads(api: Api) -> tuple[str, str, str, str]:
    """Two routed leads with different owners, and a rep token for each owner: (lead_a, rep_a, lead_b, rep_b)."""
    lead_a, rep_a = await route_lead(api, "jane@acme.com")
    lead_b, rep_b = await route_lead(api, "sam@beta.io", event_id="e2")
    assert rep_a != rep_b
    await api.token("rep_a", Role.REP, rep_a)
    await api.token("rep_b", Role.REP, rep_b)
    return lead_a, rep_a, lead_b, rep_b


# --- no token, bad tokens ------------------------------------------------------------------------


async def test_health_and_openapi_need_no_token_and_metrics_need_ops_or_readonly(api: Api) -> None:
    status, body = await api.call("GET", "/healthz", who=None)
    assert (status, body) == (200, {"ok": True, "redis": "ok"})
    status, spec = await api.call("GET", "/openapi.json", who=None)
    assert status == 200 and spec["openapi"] == "3.1.0" and "/v1/leads/{lead_id}/explain" in spec["paths"]
    await api.call("GET", "/v1/teams")
    # Issue 16.8: the admin port is where reps' links open, so its metrics need a token.
    status, body = await api.call("GET", "/metrics", who=None)
    assert status == 401 and body["error"] == "missing_token"
    _, rep_id = await route_lead(api, "jane@acme.com")
    await api.token("rep", Role.REP, rep_id)
    assert (await api.call("GET", "/metrics", who="rep"))[0] == 403
    for who in ("ops", "viewer"):
        status, text = await api.call("GET", "/metrics", who=who)
        assert status == 200
        assert 'leadrouter_admin_requests_total{method="GET",route="/v1/teams",status="200"}' in text


@pytest.mark.parametrize(("header", "code", "bearer_error"), [
    (None, "missing_token", None),
    ("Basic dXNlcjpwYXNz", "malformed_token", "invalid_request"),
    ("Bearer ", "malformed_token", "invalid_request"),
    ("Bearer not-a-token", "malformed_token", "invalid_request"),
    ("Bearer lra_" + "x" * 43, "unknown_token", "invalid_token"),
])
async def test_missing_malformed_and_unknown_tokens_are_401_with_www_authenticate(
        api: Api, header: str | None, code: str, bearer_error: str | None) -> None:
    for method, path in (("GET", "/v1/teams"), ("GET", "/v1/leads?email=a@b.co"), ("POST", "/v1/rules/publish"),
                         ("PATCH", "/v1/reps/anna-snelling/availability")):
        headers = {"Authorization": header} if header is not None else {}
        async with api.client.request(method, path, headers=headers) as resp:
            body = await resp.json()
            assert resp.status == 401, (method, path, body)
            assert body["error"] == code and "leadrouter admin token create" in body["detail"]
            www = resp.headers["WWW-Authenticate"]
            assert www.startswith('Bearer realm="leadrouter-admin"')
            assert (f'error="{bearer_error}"' in www) if bearer_error else "error=" not in www


async def test_a_revoked_token_stops_working(api: Api) -> None:
    token = await api.token("temp", Role.READONLY)
    assert (await api.call("GET", "/v1/me", who="temp"))[0] == 200
    gone = await TokenStore(api.redis).revoke(hash_token(token)[:10])
    assert gone.name == "temp"
    status, body = await api.call("GET", "/v1/me", who="temp")
    assert status == 401 and body["error"] == "unknown_token"


async def test_tokens_are_stored_hashed_with_role_rep_name_and_created(api: Api) -> None:
    token = api.tokens["ops"]
    raw: dict[bytes, bytes] = await api.redis.hgetall(keys.admin_token(hash_token(token)))  # type: ignore[assignment]
    stored = {k.decode(): v.decode() for k, v in raw.items()}
    assert stored["role"] == "ops" and stored["name"] == "ops" and stored["rep_id"] == ""
    assert float(stored["created"]) == pytest.approx(NOW.timestamp())
    names: list[bytes] = await all_keys(api.redis)  # type: ignore[assignment]
    dump = b"".join([k + b"=" + (await api.redis.dump(k) or b"") for k in names])
    assert token.encode() not in dump  # only the hash is kept
    status, me = await api.call("GET", "/v1/me")
    assert status == 200 and me["role"] == "ops" and me["token_sha256"] == hash_token(token)


# --- roles ---------------------------------------------------------------------------------------


async def test_role_matrix_for_representative_endpoints(api: Api) -> None:
    lead_a, rep_a, _, rep_b = await two_leads(api)
    await api.token("stranger", Role.REP, "someone-else")
    cases: list[tuple[str, str, dict[str, Any], dict[str, int]]] = [
        ("GET", "/v1/teams", {}, {"ops": 200, "rep_a": 200, "viewer": 200}),
        ("GET", f"/v1/reps/{rep_a}", {}, {"ops": 200, "rep_a": 200, "viewer": 200}),
        ("GET", "/v1/rules/history", {}, {"ops": 200, "rep_a": 200, "viewer": 200}),
        ("GET", "/v1/rules/active", {}, {"ops": 200, "rep_a": 200, "viewer": 200}),
        ("POST", "/v1/rules/validate", {"json": {"rules": RULES.read_text()}},
         {"ops": 200, "rep_a": 403, "viewer": 403}),
        ("POST", "/v1/rules/publish", {"json": {"rules": "x", "cases": "y"}},
         {"ops": 422, "rep_a": 403, "viewer": 403}),
        ("POST", "/v1/rules/rollback/1", {}, {"ops": 404, "rep_a": 403, "viewer": 403}),
        ("GET", f"/v1/leads/{lead_a}", {}, {"ops": 200, "rep_a": 200, "rep_b": 403, "viewer": 200}),
        ("GET", f"/v1/leads/{lead_a}/explain", {}, {"ops": 200, "rep_a": 200, "rep_b": 403, "viewer": 200}),
        ("GET", f"/v1/leads/{lead_a}/timeline", {}, {"ops": 200, "rep_a": 200, "rep_b": 403, "viewer": 200}),
        ("GET", "/v1/leads?email=jane@acme.com", {}, {"ops": 200, "rep_a": 200, "rep_b": 403, "viewer": 200}),
        ("PATCH", f"/v1/reps/{rep_b}/availability", {"json": {"out_of_office": False}},
         {"ops": 200, "rep_a": 403, "rep_b": 200, "viewer": 403}),
        # viewer and rep_b are refused before anything changes; then rep_a accepts its own lead.
        ("POST", f"/v1/leads/{lead_a}/accept", {}, {"viewer": 403, "rep_b": 403, "stranger": 403, "rep_a": 200}),
    ]
    for method, path, kwargs, expected in cases:
        for who, want in expected.items():
            status, body = await api.call(method, path, who=who, **kwargs)
            assert status == want, (method, path, who, body)
            if status >= 400:
                assert set(body) >= {"error", "detail"}
        status, _ = await api.call(method, path, who=None, **kwargs)
        assert status == 401, (method, path)
        status, _ = await api.call(method, path, who="lra_" + "y" * 43, **kwargs)
        assert status == 401, (method, path)


async def test_a_rep_cannot_see_or_act_on_another_reps_lead(api: Api) -> None:
    lead_a, rep_a, lead_b, rep_b = await two_leads(api)
    for path in (f"/v1/leads/{lead_a}", f"/v1/leads/{lead_a}/explain", f"/v1/leads/{lead_a}/timeline",
                 "/v1/leads?email=jane@acme.com", f"/v1/leads?owner={rep_a}"):
        status, body = await api.call("GET", path, who="rep_b")
        assert status == 403, (path, body)
        assert rep_b in body["detail"] and "own leads" in body["detail"]
    for action, body_json in (("accept", {}), ("reject", {"reason": "not-a-fit"}), ("convert", {}),
                              ("won", {}), ("lost", {})):
        status, body = await api.call("POST", f"/v1/leads/{lead_a}/{action}", who="rep_b", json=body_json)
        assert status == 403 and body["error"] == "not_your_lead", (action, body)
    # Acting as someone else through rep_id is refused too.
    status, body = await api.call("POST", f"/v1/leads/{lead_b}/accept", who="rep_b", json={"rep_id": rep_a})
    assert status == 403 and body["error"] == "not_your_rep"
    lead = await api.store.lead_hash(lead_a)
    assert lead["stage"] == "mql" and lead["owner"] == rep_a  # untouched
    assert [h["action"] for h in await api.store.lead_history(lead_a)] == ["assigned"]
    # Their own lead, and their own list, are fine.
    status, mine = await api.call("GET", "/v1/leads", who="rep_b")
    assert status == 200 and [x["lead_id"] for x in mine["leads"]] == [lead_b]
    status, _ = await api.call("GET", f"/v1/leads/{lead_b}", who="rep_b")
    assert status == 200


# --- roster --------------------------------------------------------------------------------------


async def test_roster_comes_from_the_config_in_force(api: Api) -> None:
    status, teams = await api.call("GET", "/v1/teams", who="viewer")
    assert status == 200
    assert teams["rules_version"] == api.config.version and teams["rules_source"].startswith("file ")
    assert [t["name"] for t in teams["teams"]] == list(api.config.teams)
    assert all("slack_webhook" not in t for t in teams["teams"])
    status, reps = await api.call("GET", "/v1/reps", who="viewer")
    assert status == 200 and len(reps["reps"]) == len(api.config.reps)
    status, central = await api.call("GET", "/v1/reps?team=central")
    assert {r["id"] for r in central["reps"]} == {r.rep_id for r in api.config.teams["central"].reps}
    status, rep = await api.call("GET", "/v1/reps/cecily-lampkin")
    assert status == 200
    assert rep["team"] == "central" and rep["email"] == "cecily.lampkin@example.com"
    assert rep["slack_user_id"] == "UE52F5CUP" and rep["tz"] == "America/Chicago"
    assert rep["hours"] == "08:00-17:00" and rep["days"] == ["mon", "tue", "wed", "thu", "fri"]
    assert rep["capacity_day"] == 10 and rep["capacity_30d"] == 150 and rep["weight"] == 1
    assert rep["out_of_office"] == [{"from": "2026-12-24", "to": "2027-01-02"}]
    assert rep["available_now"] is True and rep["override"] is None and rep["open_leads"] == 0
    status, moses = await api.call("GET", "/v1/reps/moses-frase")  # out 2026-11-25..27
    api.clock.now = datetime(2026, 11, 26, 15, 0, tzinfo=UTC).timestamp()
    status, moses = await api.call("GET", "/v1/reps/moses-frase")
    assert moses["available_now"] is False and moses["unavailable_reason"] == "out_of_office"
    assert moses["next_available"] == "2026-11-30T08:00:00-06:00"  # her local time
    status, body = await api.call("GET", "/v1/reps/cecily-lampkn")
    assert status == 404 and body["error"] == "unknown_rep" and "did you mean 'cecily-lampkin'?" in body["detail"]
    status, body = await api.call("GET", "/v1/reps?team=centrl")
    assert status == 404 and "did you mean 'central'?" in body["detail"]


async def test_availability_override_is_stored_shown_and_never_claimed_as_routing(api: Api) -> None:
    await api.token("anna", Role.REP, "anna-snelling")
    status, rep = await api.call("PATCH", "/v1/reps/anna-snelling/availability", who="anna",
                                 json={"out_of_office": True, "until": "2026-11-28", "note": "flu"})
    assert status == 200
    assert rep["override"] == {"out_of_office": True, "until": "2026-11-28", "note": "flu", "set_by": "anna",
                               "set_at": NOW.timestamp(), "active": True, "honoured_by_routing": True}
    stored = await api.redis.hgetall(keys.rep_availability("anna-snelling"))
    assert stored[b"out_of_office"] == b"1" and stored[b"until"] == b"2026-11-28"
    status, again = await api.call("GET", "/v1/reps/anna-snelling", who="viewer")
    assert again["override"]["note"] == "flu"
    assert again["available_now"] is True  # routing follows routing.yaml, which says she is at work
    status, body = await api.call("PATCH", "/v1/reps/marty-freudenburg/availability", who="anna",
                                  json={"out_of_office": True})
    assert status == 403 and body["error"] == "not_your_rep"
    status, body = await api.call("PATCH", "/v1/reps/anna-snelling/availability",
                                  json={"out_of_office": True, "until": "2026-11-01"})
    assert status == 422 and body["error"] == "date_in_past" and "America/Chicago" in body["detail"]
    status, body = await api.call("PATCH", "/v1/reps/anna-snelling/availability",
                                  json={"out_of_office": True, "until": "next week"})
    assert status == 422 and body["error"] == "bad_date" and "YYYY-MM-DD" in body["detail"]
    status, body = await api.call("PATCH", "/v1/reps/anna-snelling/availability", json={"out_of_ofice": True})
    assert status == 400 and "did you mean 'out_of_office'?" in body["detail"]
    status, rep = await api.call("PATCH", "/v1/reps/anna-snelling/availability", json={"out_of_office": False})
    assert status == 200 and rep["override"] is None
    assert await api.redis.exists(keys.rep_availability("anna-snelling")) == 0
    status, body = await api.call("PATCH", "/v1/reps/nobody/availability", json={"out_of_office": True})
    assert status == 404 and await api.redis.exists(keys.rep_availability("nobody")) == 0


# --- rules ---------------------------------------------------------------------------------------


async def test_validate_reports_every_problem_with_line_and_fix(api: Api) -> None:
    good = RULES.read_text()
    status, body = await api.call("POST", "/v1/rules/validate", json={"rules": good})
    assert status == 200 and body["ok"] is True and body["problems"] == []
    assert body["version"] == api.config.version and body["reps"] == len(api.config.reps)
    assert body["content_hash"] == api.config.content_hash
    status, raw = await api.call("POST", "/v1/rules/validate", data=good.encode(),
                                 headers={"Content-Type": "application/yaml"})
    assert (status, raw["ok"]) == (200, True)
    bad = good.replace("field: country", "field: contry", 1)
    status, body = await api.call("POST", "/v1/rules/validate", data=bad, headers={"Content-Type": "text/plain"})
    assert status == 200 and body["ok"] is False
    assert any("unknown field 'contry'" in p and "did you mean 'country'?" in p for p in body["problems"])
    assert all(p.startswith("rules:") for p in body["problems"])
    status, body = await api.call("POST", "/v1/rules/validate", data="teams: [", headers={"Content-Type": "text/plain"})
    assert status == 200 and body["ok"] is False and "YAML syntax error" in body["problems"][0]


async def test_hostile_yaml_is_refused_not_expanded(api: Api) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True))
    status, body = await api.call("POST", "/v1/rules/validate", json={"rules": bomb})
    assert status == 422 and body["error"] == "yaml_too_large"
    deep = "[" * 200 + "]" * 200
    status, body = await api.call("POST", "/v1/rules/validate", json={"rules": deep})
    assert status == 422 and body["error"] == "yaml_too_deep"


async def test_rules_test_runs_cases(api: Api) -> None:
    status, body = await api.call("POST", "/v1/rules/test",
                                  json={"rules": RULES.read_text(), "cases": CASES.read_text()})
    assert status == 200 and body["ok"] is True and body["failed"] == 0 and body["passed"] == len(body["results"]) > 0
    first = body["results"][0]
    assert set(first) >= {"name", "passed", "expected_team", "actual_team", "actual_rule", "path", "message"}
    wrong = CASES.read_text().replace("lead: {country: GB, hand_raiser: true", "lead: {country: US, hand_raiser: true", 1)
    status, body = await api.call("POST", "/v1/rules/test", json={"rules": RULES.read_text(), "cases": wrong})
    assert status == 200 and body["ok"] is False and body["failed"] == 1
    [failed] = [r for r in body["results"] if not r["passed"]]
    assert failed["name"] == "uk-hand-raiser" and failed["actual_team"] == "central"
    assert "expected east via emea, got central" in failed["message"]
    impossible = CASES.read_text().replace("team: central", "team: west", 1)
    status, body = await api.call("POST", "/v1/rules/test", json={"rules": RULES.read_text(), "cases": impossible})
    assert status == 200 and body["ok"] is False and body["results"] == []
    assert "did you mean team: central?" in body["problems"][0]
    status, body = await api.call("POST", "/v1/rules/test", json={"rules": RULES.read_text()})
    assert status == 400 and body["error"] == "missing_key" and "'cases'" in body["detail"]


async def test_simulate_counts_per_team_and_rep_and_lists_moved_leads(api: Api) -> None:
    new = RULES.read_text()
    leads: list[dict[str, Any]] = [{"lead_id": f"l{i}", "country": c, "company": f"Co {i}",
                                    "ts": f"2026-11-{10 + i % 5:02d}T10:00:00Z"}
                                   for i, c in enumerate(["US", "DE", "GB", "BR", "JP", "US", "CA", "FR"])]
    status, same = await api.call("POST", "/v1/rules/simulate", json={"rules": new, "leads": leads})
    assert status == 200, same
    assert same["leads"] == 8 and same["moves"] == 0 and same["moved"] == []
    assert same["current"]["teams"] == same["new"]["teams"] and sum(same["new"]["teams"].values()) == 8
    assert sum(r["new"] for r in same["reps"]) == 8 and same["span"]["working_days"] >= 1
    assert same["current"]["source"].startswith("file ")
    # Send everything to one team: every lead that was elsewhere moves.
    catch_all = _catch_all_rules(new, "west")
    status, moved = await api.call("POST", "/v1/rules/simulate", json={"rules": catch_all, "leads": leads,
                                                                        "examples": 3})
    assert status == 200
    assert moved["new"]["teams"] == {"west": 8}
    assert moved["moves"] == 8 - same["current"]["teams"].get("west", 0) and len(moved["moved"]) == 3
    assert moved["moved"][0]["after"]["team"] == "west" and moved["moved"][0]["before"]["team"] != "west"
    # Input checks: typo'd field, too many leads, bad time, rules that do not compile.
    status, body = await api.call("POST", "/v1/rules/simulate", json={"rules": new, "leads": [{"contry": "US"}]})
    assert status == 400 and "leads[0]: unknown field 'contry'; did you mean 'country'?" in body["detail"]
    status, body = await api.call("POST", "/v1/rules/simulate",
                                  json={"rules": new, "leads": [{"country": "US"}] * 51})
    assert status == 413 and body["error"] == "too_many_leads" and "LEADROUTER_ADMIN_SIMULATE_MAX_LEADS" in body["detail"]
    status, body = await api.call("POST", "/v1/rules/simulate",
                                  json={"rules": new, "leads": [{"country": "US", "ts": "yesterday"}]})
    assert status == 400 and "leads[0].ts 'yesterday' is not a time" in body["detail"]
    status, body = await api.call("POST", "/v1/rules/simulate", json={"rules": "teams: {}", "leads": leads})
    assert status == 422 and body["error"] == "rules_invalid" and body["problems"]


def _catch_all_rules(text: str, team: str) -> str:
    head, _, _ = text.partition("\nrules:")
    return head + f"\nrules:\n  - {{name: everyone, description: Everything, when: always, team: {team}}}\n"


async def test_publish_rollback_history_and_active(api: Api) -> None:
    await api.token("Ana Ops", Role.OPS)
    await api.token("rep", Role.REP, "anna-snelling")
    status, body = await api.call("GET", "/v1/rules/active", who="viewer")
    assert status == 200 and body["source"] == "file" and body["number"] is None
    assert body["version"] == api.config.version and body["in_force"] == api.config.version
    status, body = await api.call("POST", "/v1/rules/publish", who="Ana Ops", json={"note": "from the file"})
    assert status == 201, body
    assert body["number"] == 1 and body["author"] == "Ana Ops" and body["note"] == "from the file"
    assert body["active"] is True and body["previous"] is None and body["cases_count"] > 0
    text = RULES.read_text().replace(f'version: "{api.config.version}"', 'version: "api-2"')
    status, body = await api.call("POST", "/v1/rules/publish", who="Ana Ops",
                                  json={"rules": text, "cases": CASES.read_text()})
    assert status == 201 and body["number"] == 2 and body["tag"] == "v2:api-2" and body["previous"] == 1
    status, teams = await api.call("GET", "/v1/teams")
    assert teams["rules_version"] == "v2:api-2" and teams["rules_source"] == "published v2"
    # Failing cases are refused with every failure listed.
    wrong = CASES.read_text().replace("lead: {country: GB, hand_raiser: true", "lead: {country: US, hand_raiser: true", 1)
    status, body = await api.call("POST", "/v1/rules/publish", json={"rules": text, "cases": wrong})
    assert status == 422 and body["error"] == "rules_rejected" and body["problems"]
    status, body = await api.call("POST", "/v1/rules/publish", json={"rules": text})
    assert status == 400 and "'rules' came without 'cases'" in body["detail"]
    # Rollback.
    status, body = await api.call("POST", "/v1/rules/rollback/v1", who="Ana Ops", json={"note": "oops"})
    assert status == 200 and body == {"action": "rollback", "number": 1, "previous": 2, "author": "Ana Ops",
                                      "ts": NOW.timestamp(), "note": "oops", "tag": f"v1:{api.config.version}"}
    status, body = await api.call("POST", "/v1/rules/rollback/1")
    assert status == 409 and body["error"] == "already_active"
    status, body = await api.call("POST", "/v1/rules/rollback/9")
    assert status == 404 and "published versions are v1..v2" in body["detail"]
    status, body = await api.call("POST", "/v1/rules/rollback/latest")
    assert status == 400 and body["error"] == "bad_version"
    status, body = await api.call("POST", "/v1/rules/rollback/2", who="rep")
    assert status == 403
    status, hist = await api.call("GET", "/v1/rules/history", who="rep")
    assert status == 200 and hist["active"] == 1 and [v["number"] for v in hist["versions"]] == [1, 2]
    assert [(h["action"], h["number"], h["previous"]) for h in hist["history"]] == [
        ("publish", 1, None), ("publish", 2, 1), ("rollback", 1, 2)]
    status, active = await api.call("GET", "/v1/rules/active", who="rep")
    assert active["source"] == "published" and active["number"] == 1 and active["redacted"] is True
    assert active["in_force"] == f"v1:{api.config.version}"


async def test_slack_webhooks_are_redacted_for_everyone_but_ops(api: Api) -> None:
    url = "https://hooks.slack.com/services/T000/B000/secret"
    text = RULES.read_text().replace('slack_webhook: ""', f'slack_webhook: "{url}"', 1)
    status, _ = await api.call("POST", "/v1/rules/publish", json={"rules": text, "cases": CASES.read_text()})
    assert status == 201
    status, ops = await api.call("GET", "/v1/rules/active")
    assert url in ops["content"] and ops["redacted"] is False
    status, viewer = await api.call("GET", "/v1/rules/active", who="viewer")
    assert url not in viewer["content"] and 'slack_webhook: "<redacted>"' in viewer["content"]
    status, teams = await api.call("GET", "/v1/teams", who="viewer")
    assert [t["has_slack_webhook"] for t in teams["teams"]].count(True) == 1
    assert url not in orjson.dumps(teams).decode()


# --- leads ---------------------------------------------------------------------------------------


async def test_find_state_explain_and_timeline(api: Api) -> None:
    lead_a, rep_a, _, _ = await two_leads(api)
    scoring = load_scoring_file(api.settings.files.scoring_file)
    api.clock.now = (NOW + timedelta(days=15)).timestamp()
    status, found = await api.call("GET", "/v1/leads?email=Jane@Acme.com", who="viewer")
    assert status == 200 and [x["lead_id"] for x in found["leads"]] == [lead_a]
    status, none = await api.call("GET", "/v1/leads?email=ghost@example.com")
    assert (status, none) == (200, {"leads": []})
    status, state = await api.call("GET", f"/v1/leads/{lead_a}", who="rep_a")
    assert status == 200
    want = score_at(75.0, NOW.timestamp(), api.clock.now, scoring.half_life_s)
    assert state["score"] == pytest.approx(75.0) and state["score_now"] == pytest.approx(want)
    assert state["stage"] == "mql" and state["owner"] == rep_a and state["ready"] is True
    assert state["assignment"]["assignment_id"] == f"{lead_a}:1" and state["assignment"]["team"] == "central"
    assert state["fields"]["company"] == "Acme Corp" and state["email"] == "jane@acme.com"
    status, listed = await api.call("GET", f"/v1/leads?owner={rep_a}")
    assert [x["lead_id"] for x in listed["leads"]] == [lead_a]
    status, ex = await api.call("GET", f"/v1/leads/{lead_a}/explain", who="rep_a")
    assert status == 200
    assert ex["score_now"] == pytest.approx(want) and ex["threshold"] == scoring.threshold
    assert [p["rule"] for p in ex["parts"]] == ["demo-request", "pricing-page"]
    demo = ex["parts"][0]
    assert demo["events"] == 1 and demo["points_earned"] == 60.0
    assert demo["points_now"] == pytest.approx(score_at(60.0, NOW.timestamp(), api.clock.now, scoring.half_life_s))
    assert ex["explained"] == pytest.approx(want) and ex["residual"] == pytest.approx(0.0, abs=1e-9)
    assert ex["reasons"][0]["rule"] == "demo-request" and ex["reasons"][0]["hand_raiser"] is True
    status, ex1 = await api.call("GET", f"/v1/leads/{lead_a}/explain?limit=1")
    assert len(ex1["reasons"]) == 1
    status, tl = await api.call("GET", f"/v1/leads/{lead_a}/timeline")
    assert status == 200
    kinds = [(e["kind"], e.get("type") or e.get("action")) for e in tl["entries"]]
    assert ("event", "form_fill") in kinds and ("history", "assigned") in kinds


async def test_lifecycle_through_the_api(api: Api) -> None:
    lead_a, rep_a, lead_b, rep_b = await two_leads(api)
    status, body = await api.call("POST", f"/v1/leads/{lead_a}/accept", who="rep_a")
    assert status == 200 and (body["from"], body["to"], body["rep_id"]) == ("mql", "sal", rep_a)
    status, body = await api.call("POST", f"/v1/leads/{lead_a}/accept", who="rep_a")
    assert status == 409 and body["error"] == "bad_stage" and "it is sal" in body["detail"]
    status, body = await api.call("POST", f"/v1/leads/{lead_a}/convert", who="rep_a", json={"to": "sql"})
    assert status == 200 and body["to"] == "sql"
    status, body = await api.call("POST", f"/v1/leads/{lead_a}/won", who="rep_a")
    assert status == 409 and "convert it first" in body["detail"]
    status, body = await api.call("POST", f"/v1/leads/{lead_a}/convert", who="rep_a", json={"to": "opportunity"})
    assert status == 200 and body["to"] == "opportunity"
    status, body = await api.call("POST", f"/v1/leads/{lead_a}/won", who="rep_a", json={"reason": "signed"})
    assert status == 200 and body["to"] == "won" and body["outcome_id"]
    rows: Any = await api.redis.xrange(keys.OUTCOMES)
    assert len(rows) == 1 and orjson.loads(rows[0][1][b"json"])["outcome"] == "won"
    # Ops act as the owner; a bad reason is a 422 naming the configured ones.
    status, body = await api.call("POST", f"/v1/leads/{lead_b}/reject", json={"reason": "not a fit"})
    assert status == 422 and body["error"] == "bad_reason" and "did you mean 'not-a-fit'?" in body["detail"]
    status, body = await api.call("POST", f"/v1/leads/{lead_b}/reject", json={"reason": "not-a-fit"})
    assert status == 200 and body["to"] == "nurture" and body["rep_id"] == rep_b
    assert body["score_after"] == pytest.approx(body["score_before"] / 2)
    # No owner any more: ops get a 409, the rep (no longer the owner) a 403.
    status, body = await api.call("POST", f"/v1/leads/{lead_b}/accept")
    assert status == 409 and body["error"] == "not_owner"
    status, body = await api.call("GET", f"/v1/leads/{lead_b}", who="rep_b")
    assert status == 403
    status, state = await api.call("GET", f"/v1/leads/{lead_b}")
    assert state["rejected_by"] == [rep_b] and state["owner"] is None and state["assignment"] is None
    history = [h["action"] for h in await api.store.lead_history(lead_a)]
    assert history == ["assigned", "accept", "convert", "convert", "won"]
    status, body = await api.call("POST", f"/v1/leads/{lead_a}/convert", json={"to": "won"})
    assert status == 400 and "must be sql or opportunity" in body["detail"]
    status, body = await api.call("POST", f"/v1/leads/{lead_a}/reject")
    assert status == 400 and body["error"] == "missing_body"


# --- bad input never a 5xx -----------------------------------------------------------------------


async def test_bad_input_is_a_json_4xx(redis: Redis, redis_url: str) -> None:
    api, client = await make_api(redis, Settings.of(redis_url=redis_url, admin_max_body_bytes=4096,
                                                 admin_max_rules_bytes=2048))
    try:
        lead = keys.lead_id_for_email("x@y.io")
        cases: list[tuple[str, str, dict[str, Any], int, str]] = [
            ("POST", "/v1/rules/test", {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
             400, "invalid_json"),
            ("POST", "/v1/rules/test", {"json": ["rules"]}, 400, "body_not_object"),
            ("POST", "/v1/rules/test", {"json": {"rulez": "x", "cases": "y"}}, 400, "unknown_key"),
            ("POST", "/v1/rules/test", {"json": {"rules": 3, "cases": "y"}}, 400, "bad_type"),
            ("POST", "/v1/rules/test", {"data": b"rules", "headers": {"Content-Type": "text/csv"}}, 415,
             "unsupported_media_type"),
            ("POST", "/v1/rules/test", {"json": {"rules": "x" * 3000, "cases": "y"}}, 413, "rules_too_large"),
            ("POST", "/v1/rules/simulate", {"json": {"rules": "x", "leads": [{"country": "US"}] * 500}}, 413,
             "body_too_large"),
            ("POST", "/v1/rules/validate", {"data": b"\xff\xfe", "headers": {"Content-Type": "text/plain"}}, 400,
             "not_utf8"),
            ("GET", "/v1/nothing", {}, 404, "not_found"),
            ("DELETE", "/v1/teams", {}, 405, "method_not_allowed"),
            ("GET", "/v1/leads/not-a-lead", {}, 400, "bad_lead_id"),
            ("GET", f"/v1/leads/{lead}", {}, 404, "unknown_lead"),
            ("GET", f"/v1/leads/{lead}/timeline?limit=abc", {}, 400, "bad_parameter"),
            ("GET", f"/v1/leads/{lead}/timeline?limit=0", {}, 400, "bad_parameter"),
            ("GET", "/v1/teams?verbose=1", {}, 400, "unknown_parameter"),
            ("GET", "/v1/leads?email=a@b.co&email=c@d.co", {}, 400, "repeated_parameter"),
            ("GET", "/v1/leads", {}, 400, "missing_parameter"),
            ("GET", "/v1/leads?email=nobody", {}, 400, "bad_parameter"),
            ("PATCH", "/v1/reps/anna-snelling/availability", {"json": {"out_of_office": "yes"}}, 400, "bad_type"),
        ]
        for method, path, kwargs, want, code in cases:
            status, body = await api.call(method, path, **kwargs)
            assert (status, body["error"]) == (want, code), (method, path, body)
            assert body["detail"]
    finally:
        await client.close()


# --- the CLI -------------------------------------------------------------------------------------


def test_token_create_prints_the_token_once_and_stores_its_hash(redis_url: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.of(redis_url=redis_url)
    client = sync_redis_from_url(redis_url)
    sync_flush(client)
    parser = argparse.ArgumentParser(prog="leadrouter")
    cmd_admin.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return int(args.fn(settings, args))

    assert run("admin", "token", "create", "--role", "rep", "--rep", "anna-snelling") == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("lra_") and "shown only this once" in err and token not in err
    stored = client.hgetall(keys.admin_token(hash_token(token)))
    assert stored[b"role"] == b"rep" and stored[b"rep_id"] == b"anna-snelling" and stored[b"name"] == b"anna-snelling"
    with pytest.raises(cmd_admin.AdminCommandError, match="did you mean 'anna-snelling'"):
        run("admin", "token", "create", "--role", "rep", "--rep", "anna-snellin")
    with pytest.raises(cmd_admin.AdminCommandError, match="needs --rep"):
        run("admin", "token", "create", "--role", "rep")
    with pytest.raises(cmd_admin.AdminCommandError, match="--rep only goes with --role rep"):
        run("admin", "token", "create", "--role", "ops", "--rep", "anna-snelling", "--name", "x")
    with pytest.raises(cmd_admin.AdminCommandError, match="give --name"):
        run("admin", "token", "create", "--role", "ops")
    assert run("admin", "token", "create", "--role", "readonly", "--name", "dashboard") == 0
    capsys.readouterr()
    assert run("admin", "token", "list") == 0
    listing = capsys.readouterr().out
    assert "anna-snelling" in listing and "dashboard" in listing and token not in listing
    assert run("admin", "token", "revoke", hash_token(token)[:12]) == 0
    assert client.exists(keys.admin_token(hash_token(token))) == 0
    assert parser.parse_args(["admin"]).fn is cmd_admin.cmd_serve
    assert parser.parse_args(["admin", "serve", "--port", "9"]).port == 9
    client.close()
