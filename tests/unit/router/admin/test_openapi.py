"""The admin API's OpenAPI document matches the aiohttp app's routes exactly, and is a loadable OpenAPI 3.1 spec."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import schemathesis
from aiohttp import web
from redis.asyncio import Redis
from schemathesis.core.result import Ok

from router.admin.app import create_app
from router.admin.auth import Role
from router.admin.openapi import OPERATIONS, build_spec
from router.settings import Settings

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def app() -> Iterator[web.Application]:
    # A client object only: nothing here connects to Redis.
    redis = Redis.from_url("redis://127.0.0.1:1/0")
    yield create_app(Settings(), redis)


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        out.add((route.method.upper(), resource.canonical))
    return out


def spec_routes(spec: dict[str, object]) -> set[tuple[str, str]]:
    paths = spec["paths"]
    assert isinstance(paths, dict)
    return {(method.upper(), path) for path, item in paths.items() for method in item if method in HTTP_METHODS}


def test_spec_paths_and_methods_equal_the_apps_routes(app: web.Application) -> None:
    spec = build_spec(Settings())
    # The ops console's HTML pages (router/admin/console) are not part of the JSON API.
    routes = {r for r in app_routes(app) if not r[1].startswith("/console")}
    assert any(r[1].startswith("/console") for r in app_routes(app))
    assert "HEAD" not in {m for m, _ in routes}  # no implicit HEAD routes the spec would not list
    assert spec_routes(spec) == routes
    assert len(routes) == len(OPERATIONS)


def test_the_served_document_is_the_one_built_from_the_settings(app: web.Application) -> None:
    settings = Settings.of(admin_simulate_max_leads=7, admin_max_rules_bytes=4096)
    spec = build_spec(settings)
    schemas = spec["components"]["schemas"]
    assert schemas["SimulateRequest"]["properties"]["leads"]["maxItems"] == 7
    assert schemas["RulesText"]["properties"]["rules"]["maxLength"] == 4096


def test_every_path_parameter_is_declared_and_security_matches_the_roles() -> None:
    spec = build_spec(Settings())
    assert spec["openapi"] == "3.1.0"
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "an admin token: lra_..."}
    assert spec["security"] == [{"bearerAuth": []}]
    ids = [op.op_id for op in OPERATIONS]
    assert len(ids) == len(set(ids))
    for op in OPERATIONS:
        entry = spec["paths"][op.path][op.method.lower()]
        declared = {p["name"] for p in entry.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", op.path)), op.path
        if op.roles is None:
            # No bearer token; the CRM webhook authenticates by its signature instead (a 401 when it fails).
            assert entry["security"] == []
            assert ("401" in entry["responses"]) == (op.op_id == "crm_webhook")
        else:
            assert "security" not in entry and "401" in entry["responses"]
            assert entry["x-roles"] == sorted(r.value for r in op.roles)
        assert str(op.ok_status) in entry["responses"]
        for status, response in entry["responses"].items():
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_roles_per_endpoint_are_as_documented() -> None:
    roles = {(op.method, op.path): op.roles for op in OPERATIONS}
    everyone = frozenset(Role)
    assert roles[("GET", "/healthz")] is None
    assert roles[("GET", "/metrics")] == frozenset({Role.OPS, Role.READONLY})  # issue 16.8
    assert roles[("GET", "/openapi.json")] is None
    for path in ("/v1/teams", "/v1/reps", "/v1/reps/{rep_id}", "/v1/rules/history", "/v1/rules/active",
                 "/v1/leads", "/v1/leads/{lead_id}", "/v1/leads/{lead_id}/explain", "/v1/leads/{lead_id}/timeline"):
        assert roles[("GET", path)] == everyone, path
    for path in ("/v1/rules/validate", "/v1/rules/test", "/v1/rules/simulate", "/v1/rules/publish",
                 "/v1/rules/rollback/{version}"):
        assert roles[("POST", path)] == frozenset({Role.OPS}), path
    for action in ("accept", "reject", "convert", "won", "lost"):
        assert roles[("POST", f"/v1/leads/{{lead_id}}/{action}")] == frozenset({Role.OPS, Role.REP})
    assert roles[("PATCH", "/v1/reps/{rep_id}/availability")] == frozenset({Role.OPS, Role.REP})
    # readonly is GET-only everywhere
    assert all(Role.READONLY not in (r or ()) for (m, _), r in roles.items() if m != "GET")


def test_schemathesis_loads_every_operation() -> None:
    schema = schemathesis.openapi.from_dict(build_spec(Settings()))
    results = list(schema.get_all_operations())
    assert [r.err() for r in results if not isinstance(r, Ok)] == []
    assert len(results) == len(OPERATIONS)
