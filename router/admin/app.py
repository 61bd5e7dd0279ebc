"""The admin HTTP API: roster, routing rules, leads and their lifecycle, for ops staff and reps.

Its own process (``leadrouter admin``, on ``LEADROUTER_ADMIN_HOST``/``_PORT``,
default 127.0.0.1:8081), JSON in and out.  Every route, the roles allowed on
it and its schemas are declared once in :data:`router.admin.openapi.OPERATIONS`;
``GET /openapi.json`` serves the same declaration as OpenAPI 3.1.

Errors are ``{"error": code, "detail": text}`` (plus ``problems`` for rules)
with a 4xx status for anything the caller sent: a bad body, parameter or
token never causes a 5xx.  503 means Redis did not answer.

Roles (bearer tokens, router/admin/auth.py):

=============================================  ====  ==========  ========
endpoint                                        ops   rep         readonly
=============================================  ====  ==========  ========
GET /healthz, /openapi.json, /metrics           no token needed
GET /v1/me, /v1/teams, /v1/reps, /v1/reps/{id}  yes   yes         yes
PATCH /v1/reps/{id}/availability                yes   own only    no
POST /v1/rules/validate, test, simulate         yes   no          no
POST /v1/rules/publish, rollback/{version}      yes   no          no
GET /v1/rules/history, /v1/rules/active         yes   yes [1]     yes [1]
GET /v1/leads, /v1/leads/{id}[/explain|/timeline] yes own leads   yes
POST /v1/leads/{id}/accept|reject|convert|...   yes   own leads   no
=============================================  ====  ==========  ========

[1] Slack webhook URLs in the rules text are blanked for every role but ops.

Reps author rules through ops, so validate/test/simulate (which cost CPU and
exist to prepare a publish) are ops-only.  A rep's lead is one whose ``owner``
is the token's rep; reading or acting on any other lead is a 403 (a rejected
lead leaves its rep's hands, so it is no longer readable with their token).
Ops act on a lead as its owner (the lifecycle only lets the owner act), or as
``rep_id`` from the body.

Out-of-office overrides (PATCH availability) are stored in Redis
(:func:`router.storage.keys.rep_availability`), shown on the rep, and honoured by
routing (router/worker/distribution.py skips the rep until the override's date in
the rep's own time zone), on top of the dates in routing.yaml.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime
from html import escape as html_escape
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.asyncio import Redis
from redis.exceptions import RedisError

from models import Rep
from router import metrics
from router.admin.auth import AuthError, Principal, Role, TokenStore, bearer_token
from router.admin.openapi import (
    LEAD_ID_PATTERN,
    MAX_EMAIL,
    MAX_LIMIT,
    MAX_NOTE,
    MAX_REP_ID,
    OPERATIONS,
    Operation,
    build_spec,
)
from router.backtest.simulate import in_time_order, parse_ts
from router.errors import ConfigFileError, SettingsError, TokenError
from router.settings import Settings
from router.storage import keys
from router.storage.live_config import LiveFile, RedisRulesSource, load_scoring_file
from router.storage.redis import create_redis
from router.storage.rules_store import (
    PublishedRules,
    RulesRejectedError,
    RulesStore,
    RulesVersionError,
    cases_path_for,
    check_rules,
    parse_version,
    read_text,
    run_checks,
)
from router.storage.store import RedisStore, lead_view_from_hash
from router.tokens import ActionClaims, verify_action_token
from router.worker import lifecycle
from rules import FIELDS, RoutingConfig, RulesError, Team, load_routing
from rules.simulation import SimLead, SimulationReport, lead_facts, simulate
from scoring import ScoringConfig, score_at

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000
MAX_TS = 253_402_300_799.0  # 9999-12-31T23:59:59Z
_LEAD_ID = re.compile(LEAD_ID_PATTERN)
_WEBHOOK = re.compile(r"""(slack_webhook\s*:\s*)(["']?)https://[^\s"',}\]]+\2""")
SIM_LEAD_KEYS = ("lead_id", "ts", *FIELDS, "website")


class ApiError(Exception):
    """An answer other than success: status, code and a detail that names the field or value and the fix."""

    def __init__(self, status: int, code: str, detail: str, *, problems: Sequence[str] = (),
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.problems = tuple(problems)
        self.headers = dict(headers or {})


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=dict(headers or {}))


def error_response(status: int, code: str, detail: str, problems: Sequence[str] = (),
                   headers: Mapping[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if problems:
        body["problems"] = list(problems)
    return json_response(body, status, headers)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer by route template, method and status, and time it (outermost middleware)."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        route = _route_name(request)
        metrics.ADMIN_REQUESTS.labels(route, request.method, str(status)).inc()
        metrics.ADMIN_LATENCY.labels(route).observe(time.perf_counter() - start)


def _http_error(request: web.Request, exc: web.HTTPException, max_body: int) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
    if exc.status == 404:
        return error_response(404, "not_found", f"no route {request.method} {request.path[:200]}; see "
                              "GET /openapi.json for the routes", headers=headers)
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed on "
                              f"{request.path[:200]}; use {allowed or 'another method'}", headers=headers)
    if exc.status == 413:
        return error_response(413, "body_too_large", f"the request body is larger than {max_body} bytes "
                              "(LEADROUTER_ADMIN_MAX_BODY_BYTES); send less, e.g. fewer leads per simulate call")
    code = re.sub(r"[^a-z0-9]+", "_", (exc.reason or "error").lower()).strip("_") or "error"
    return error_response(exc.status, code, exc.text or exc.reason or "request refused", headers=headers)


def error_middleware(max_body: int) -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.detail, exc.problems, exc.headers)
        except AuthError as exc:
            metrics.ADMIN_AUTH_FAILURES.labels(exc.code).inc()
            return error_response(401, exc.code, exc.detail, headers={"WWW-Authenticate": exc.www_authenticate})
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _http_error(request, exc, max_body)
        except RedisError as exc:
            log.error("admin %s %s: Redis failed: %r", request.method, request.path, exc)
            return error_response(503, "redis_unavailable", f"Redis did not answer ({type(exc).__name__}); "
                                  "try again, and check REDIS_URL and that redis-server is running",
                                  headers={"Retry-After": "5"})
        except ConfigFileError as exc:
            log.error("admin %s %s: %s", request.method, request.path, exc)
            return error_response(500, "server_config", str(exc))
        except Exception:
            log.exception("admin %s %s failed", request.method, request.path)
            return error_response(500, "internal", "the admin API failed on this request; the log has the "
                                  "traceback")

    return errors


# --- small parsing helpers -----------------------------------------------------------------------


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(choices)}"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _num(value: object, default: float = 0.0) -> float:
    try:
        number = float(str(value))
    except ValueError:
        return default
    return number if math.isfinite(number) else default


def _opt_num(value: str | None) -> float | None:
    return _num(value) if value not in (None, "") else None


def yaml_guard(text: str, what: str) -> None:
    """Refuse YAML whose nesting or alias expansion would make compiling it blow up (422).

    Syntax errors are left to the compiler, which reports them with their line.
    """
    opens = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
             yaml.FlowSequenceStartToken)
    closes = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
    depth = aliases = 0
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, opens):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    msg = (f"{what} nests more than {MAX_YAML_DEPTH} levels deep; a routing file needs a handful, "
                           "so flatten it")
                    raise ApiError(422, "yaml_too_deep", msg)
            elif isinstance(token, closes):
                depth -= 1
            elif isinstance(token, yaml.AliasToken):
                aliases += 1
    except yaml.YAMLError:
        return
    if not aliases:
        return
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # an alias cycle counts once; the compiler reports it
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        sizes[id(node)] = min(total, MAX_YAML_NODES + 1)
        return sizes[id(node)]

    if root is not None and size(root) > MAX_YAML_NODES:
        msg = (f"{what} expands to more than {MAX_YAML_NODES:,} values through YAML aliases (*name); "
               "write the values out instead of nesting aliases")
        raise ApiError(422, "yaml_too_large", msg)


def printable_problem(text: str, source: str) -> str | None:
    """The YAML reader's refusal of a control character, as a rules problem line; None when the text is printable.

    (PyYAML raises it while the loader is being built, before rules/_yaml.py's own error handling.)
    """
    try:
        yaml.reader.Reader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        return (f"{source}:{line}: YAML syntax error: character #x{exc.character:04x} is not allowed ({exc.reason}); "
                "remove it: only printable text is allowed")
    return None


def redact_webhooks(text: str) -> str:
    """Blank Slack webhook URLs (credentials) in rules text."""
    return _WEBHOOK.sub(lambda m: f'{m.group(1)}"<redacted>"', text)


def _version_meta(doc: PublishedRules) -> dict[str, Any]:
    return {"number": doc.number, "tag": doc.tag, "author": doc.author, "ts": doc.ts, "note": doc.note,
            "source": doc.source, "sha256": doc.sha256, "content_hash": doc.content_hash,
            "file_version": doc.file_version, "cases_count": doc.cases_count}


def _team_out(team: Team) -> dict[str, Any]:
    return {"name": team.name, "description": team.description, "managers": list(team.managers or (team.manager,)),
            "strategy": team.strategy.value, "sla": team.sla.to_json() if team.sla else None,
            "has_slack_webhook": bool(team.slack_webhook), "reps": [r.rep_id for r in team.reps]}


def _override_out(raw: Mapping[str, str], today: date) -> dict[str, Any] | None:
    if not raw:
        return None
    until = raw.get("until") or None
    ooo = raw.get("out_of_office") == "1"
    active = ooo
    if ooo and until:
        try:
            active = today <= date.fromisoformat(until)
        except ValueError:
            active = True
    return {"out_of_office": ooo, "until": until, "note": raw.get("note", ""), "set_by": raw.get("set_by", ""),
            "set_at": _num(raw.get("set_at")), "active": active, "honoured_by_routing": True}


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


@dataclass(frozen=True, slots=True)
class Body:
    """A parsed JSON request body with typed, checked getters (each failure is a 400 naming the key)."""

    data: Mapping[str, Any]

    def _get(self, key: str) -> Any:
        return self.data.get(key)

    def text(self, key: str, *, max_len: int, required: bool = False, min_len: int = 0) -> str | None:
        if key not in self.data:
            if required:
                raise ApiError(400, "missing_key", f"the body needs {key!r}")
            return None
        value = self._get(key)
        if not isinstance(value, str):
            raise ApiError(400, "bad_type", f"{key!r} must be a string, got {_kind(value)}")
        if len(value) > max_len:
            raise ApiError(400, "too_long", f"{key!r} is {len(value)} characters; the most is {max_len}")
        if len(value.strip()) < min_len:
            raise ApiError(400, "empty_value", f"{key!r} is empty; give a value")
        return value

    def flag(self, key: str, *, required: bool = False) -> bool | None:
        if key not in self.data:
            if required:
                raise ApiError(400, "missing_key", f"the body needs {key!r}: true or false")
            return None
        value = self._get(key)
        if not isinstance(value, bool):
            raise ApiError(400, "bad_type", f"{key!r} must be true or false, got {_kind(value)}")
        return value

    def integer(self, key: str, *, lo: int, hi: int, default: int) -> int:
        if key not in self.data:
            return default
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ApiError(400, "bad_value", f"{key!r} must be a whole number from {lo} to {hi}, got {value!r}"[:300])
        return value


# The authenticated caller of the request being handled (set around each guarded handler).
_PRINCIPAL: ContextVar[Principal] = ContextVar("leadrouter_admin_principal")


class Admin:
    """The request handlers, over one Redis connection pool and the config sources."""

    def __init__(self, settings: Settings, redis: Redis, *, routing: RedisRulesSource,
                 scoring: LiveFile[ScoringConfig], clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.redis = redis
        self.store = RedisStore(redis)
        self.rules = RulesStore(redis)
        self.tokens = TokenStore(redis)
        self.routing = routing
        self.scoring = scoring
        self.clock = clock
        self.spec = build_spec(settings)
        self._ops = {op.op_id: op for op in OPERATIONS}

    # --- plumbing ---------------------------------------------------------------------------------

    def handler_for(self, op: Operation) -> Handler:
        """The guarded handler of one operation: authenticate, check the role, then run."""
        inner: Handler
        if op.op_id.endswith("_lead") and op.method == "POST":
            action = op.op_id.removesuffix("_lead")

            async def act(request: web.Request) -> web.StreamResponse:
                return await self.transition(request, op, action)

            inner = act
        else:
            inner = getattr(self, op.op_id)
        if op.roles is None:
            return inner
        roles = op.roles

        async def guarded(request: web.Request) -> web.StreamResponse:
            principal = await self.authenticate(request)
            if principal.role not in roles:
                metrics.ADMIN_AUTH_FAILURES.labels("forbidden").inc()
                allowed = ", ".join(r.value for r in Role if r in roles)
                raise ApiError(403, "forbidden", f"a {principal.role.value} token may not {op.method} {op.path}; "
                                                 f"this needs a token with role {allowed}")
            reset = _PRINCIPAL.set(principal)
            try:
                return await inner(request)
            finally:
                _PRINCIPAL.reset(reset)

        return guarded

    async def authenticate(self, request: web.Request) -> Principal:
        token = bearer_token(request.headers.get("Authorization"))
        principal = await self.tokens.lookup(token)
        if principal is None:
            msg = ("the bearer token is not known (revoked, mistyped, or made for another deployment); ask ops for "
                   "one: `leadrouter admin token create`")
            raise AuthError("unknown_token", msg, "invalid_token")
        return principal

    @staticmethod
    def principal(request: web.Request) -> Principal:
        """The caller of the request being handled (set by the role guard)."""
        return _PRINCIPAL.get()

    def query(self, request: web.Request, allowed: Sequence[str]) -> dict[str, str]:
        """The query parameters, each given once and all known (else 400)."""
        out: dict[str, str] = {}
        for key in request.query:
            if key not in allowed:
                hint = _suggest(key, allowed) if allowed else "this endpoint takes no query parameters"
                raise ApiError(400, "unknown_parameter", f"unknown query parameter {key[:100]!r}; {hint}")
            values = request.query.getall(key)
            if len(values) > 1:
                raise ApiError(400, "repeated_parameter", f"query parameter {key!r} is given {len(values)} times; "
                                                          "give it once")
            out[key] = values[0]
        return out

    @staticmethod
    def limit(query: Mapping[str, str], default: int) -> int:
        raw = query.get("limit")
        if raw is None:
            return default
        if not re.fullmatch(r"[0-9]{1,6}", raw.strip()) or not 1 <= int(raw) <= MAX_LIMIT:
            raise ApiError(400, "bad_parameter", f"limit={raw[:50]!r} must be a whole number from 1 to {MAX_LIMIT}")
        return int(raw)

    async def body(self, request: web.Request, op: Operation, allowed: Sequence[str]) -> Body:
        """The JSON object body (empty when none was sent and the operation allows that)."""
        raw = await request.read()
        if not raw.strip():
            if op.body_required:
                raise ApiError(400, "missing_body", f"{op.method} {op.path} needs a JSON object body with "
                                                    f"{', '.join(allowed)}")
            return Body({})
        if "Content-Type" in request.headers and request.content_type not in JSON_TYPES:
            raise ApiError(415, "unsupported_media_type", f"Content-Type {request.content_type[:100]!r} is not "
                                                          "supported here; send application/json")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON ({exc}); send a JSON object") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body_not_object", f"the body must be a JSON object, got {_kind(data)}; e.g. "
                                                   f"{{{', '.join(repr(k) + ': ...' for k in allowed[:2])}}}")
        for key in data:
            if key not in allowed:
                raise ApiError(400, "unknown_key", f"unknown key {key[:100]!r} in the body; {_suggest(key, allowed)}")
        return Body(data)

    def rules_text(self, body: Body, key: str, *, required: bool) -> str | None:
        if key in body.data and isinstance(body.data[key], str):
            size = len(body.data[key].encode("utf-8"))
            if size > self.settings.admin.max_rules_bytes:
                raise ApiError(413, "rules_too_large", f"{key!r} is {size} bytes; the most is "
                                                       f"{self.settings.admin.max_rules_bytes} "
                                                       "(LEADROUTER_ADMIN_MAX_RULES_BYTES)")
        return body.text(key, max_len=self.settings.admin.max_rules_bytes, required=required)

    async def config(self) -> RoutingConfig:
        """The routing config in force: the published version Redis points at, else the rules file."""
        await self.routing.poll()
        return self.routing.current

    def config_source(self) -> str:
        published = self.routing.published
        return f"published v{published}" if published is not None else f"file {self.routing.path}"

    async def lead(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """The lead named in the path, with its hash; 400 for a malformed id, 404 for an unknown lead,
        403 when a rep token asks for someone else's lead."""
        lead_id = request.match_info["lead_id"]
        if not _LEAD_ID.match(lead_id):
            raise ApiError(400, "bad_lead_id", f"{lead_id[:100]!r} is not a lead id: L, A or U followed by 24 hex "
                                               "digits; find it with GET /v1/leads?email=ADDRESS")
        data = await self.store.lead_hash(lead_id)
        if not data:
            raise ApiError(404, "unknown_lead", f"no lead {lead_id}; a lead exists once a tracked event names it "
                                                "(find it with GET /v1/leads?email=ADDRESS)")
        self.check_owner(self.principal(request), lead_id, data)
        return lead_id, data

    @staticmethod
    def check_owner(principal: Principal, lead_id: str, data: Mapping[str, str]) -> None:
        if principal.role is Role.REP and data.get("owner", "") != principal.rep_id:
            metrics.ADMIN_AUTH_FAILURES.labels("forbidden").inc()
            raise ApiError(403, "not_your_lead", f"lead {lead_id} is not assigned to rep {principal.rep_id!r}; a "
                                                 "rep token reads and acts on its own leads only")

    def lead_state(self, lead_id: str, data: Mapping[str, str], rejected: set[str], now: float,
                   scoring: ScoringConfig) -> dict[str, Any]:
        stored, asof = _num(data.get("score")), _num(data.get("asof"))
        score_now = score_at(stored, asof, now, scoring.half_life_s) if asof > 0 else stored
        assignment = None
        if data.get("assignment_id"):
            assignment = {"assignment_id": data["assignment_id"], "team": data.get("team", ""),
                          "rule": data.get("rule", ""), "rules_version": data.get("rules_version", ""),
                          "assigned_ts": _opt_num(data.get("assigned_ts")),
                          "accepted_by": data.get("accepted_by") or None}
        return {
            "lead_id": lead_id, "email": data.get("email") or None, "stage": data.get("stage", "anonymous"),
            "score_now": score_now, "score": stored, "score_asof": asof, "threshold": scoring.threshold,
            "ready": data.get("ready") == "1", "owner": data.get("owner") or None,
            "owner_name": data.get("owner_name") or None, "team": data.get("team") or None,
            "assignment": assignment, "rejected_by": sorted(rejected),
            "fields": {k[2:]: v for k, v in data.items() if k.startswith("f:")},
            "events": int(_num(data.get("events"))), "first_seen": _opt_num(data.get("first_seen")),
            "last_seen": _opt_num(data.get("last_seen")), "escalated": data.get("escalated") == "1",
        }

    async def lead_states(self, lead_ids: Sequence[str], owner: str | None = None) -> list[dict[str, Any]]:
        """States of several leads in one round trip; with ``owner`` only the leads that rep owns now."""
        if not lead_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for lid in lead_ids:
            pipe.hgetall(keys.lead(lid))
            pipe.smembers(keys.rejected(lid))
        raw = await pipe.execute()
        self.scoring.maybe_reload()
        scoring, now = self.scoring.current, self.clock()
        out: list[dict[str, Any]] = []
        for i, lid in enumerate(lead_ids):
            data = {_s(k): _s(v) for k, v in raw[2 * i].items()}
            if not data or (owner is not None and data.get("owner", "") != owner):
                continue
            out.append(self.lead_state(lid, data, {_s(x) for x in raw[2 * i + 1]}, now, scoring))
        return out

    # --- service ----------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        try:
            await asyncio.wait_for(self.redis.ping(), 2.0)
        except (RedisError, TimeoutError) as exc:
            raise ApiError(503, "redis_unavailable", f"Redis did not answer a PING ({type(exc).__name__}); check "
                                                     "REDIS_URL and redis-server") from None
        return json_response({"ok": True, "redis": "ok"})

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        return json_response(self.spec)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        resp = web.Response(body=generate_latest(metrics.REGISTRY))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def whoami(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        return json_response(self.principal(request).to_dict())

    # --- roster -----------------------------------------------------------------------------------

    async def list_teams(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        config = await self.config()
        return json_response({"rules_version": config.version, "rules_source": self.config_source(),
                              "teams": [_team_out(t) for t in config.teams.values()]})

    async def _reps_out(self, members: Sequence[tuple[Team, Rep]]) -> list[dict[str, Any]]:
        pipe = self.redis.pipeline(transaction=False)
        for _, rep in members:
            pipe.zcard(keys.rep_leads(rep.rep_id))
            pipe.hgetall(keys.rep_availability(rep.rep_id))
        raw = await pipe.execute()
        now = datetime.fromtimestamp(self.clock(), UTC)
        out: list[dict[str, Any]] = []
        for i, (team, rep) in enumerate(members):
            profile = team.profile(rep.rep_id)
            why = profile.unavailable(now)
            override = {_s(k): _s(v) for k, v in raw[2 * i + 1].items()}
            doc = profile.to_json()
            out.append({
                "id": rep.rep_id, "name": rep.name, "email": rep.email, "slack_user_id": rep.slack_user_id,
                "team": team.name, "weight": doc["weight"], "capacity_day": doc["capacity_day"],
                "capacity_30d": doc["capacity_30d"], "tz": doc["tz"], "hours": doc["hours"], "days": doc["days"],
                "out_of_office": doc["out_of_office"], "available_now": why is None,
                "unavailable_reason": why.value if why is not None else None,
                "next_available": (profile.local(profile.next_available(now)).isoformat()
                                   if why is not None else None),
                "open_leads": int(raw[2 * i]),
                "override": _override_out(override, profile.local(now).date()),
            })
        return out

    def find_rep(self, config: RoutingConfig, rep_id: str) -> tuple[Team, Rep]:
        for team in config.teams.values():
            rep = team.rep(rep_id)
            if rep is not None:
                return team, rep
        ids = [r.rep_id for r in config.reps]
        close = difflib.get_close_matches(rep_id, ids, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "see GET /v1/reps for the rep ids"
        raise ApiError(404, "unknown_rep", f"no rep {rep_id[:100]!r} in the routing config in force "
                                           f"({config.version}); {hint}")

    async def list_reps(self, request: web.Request) -> web.StreamResponse:
        query = self.query(request, ("team",))
        config = await self.config()
        teams = list(config.teams.values())
        if "team" in query:
            name = query["team"]
            if name not in config.teams:
                raise ApiError(404, "unknown_team", f"no team {name[:100]!r}; {_suggest(name, list(config.teams))}")
            teams = [config.teams[name]]
        members = [(t, r) for t in teams for r in t.reps]
        return json_response({"rules_version": config.version, "rules_source": self.config_source(),
                              "reps": await self._reps_out(members)})

    async def get_rep(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        config = await self.config()
        [rep] = await self._reps_out([self.find_rep(config, request.match_info["rep_id"])])
        return json_response(rep)

    async def set_availability(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        principal = self.principal(request)
        rep_id = request.match_info["rep_id"]
        if principal.role is Role.REP and rep_id != principal.rep_id:
            metrics.ADMIN_AUTH_FAILURES.labels("forbidden").inc()
            raise ApiError(403, "not_your_rep", f"a rep token sets only its own availability "
                                                f"(PATCH /v1/reps/{principal.rep_id}/availability)")
        config = await self.config()
        team, rep = self.find_rep(config, rep_id)
        body = await self.body(request, self._ops["set_availability"], ("out_of_office", "until", "note"))
        out_of_office = body.flag("out_of_office", required=True)
        note = body.text("note", max_len=MAX_NOTE) or ""
        until_raw = body.data.get("until")
        key = keys.rep_availability(rep.rep_id)
        if not out_of_office:
            if until_raw is not None:
                raise ApiError(400, "bad_value", "'until' only goes with out_of_office: true; drop it to clear the "
                                                 "override")
            await self.redis.delete(key)
        else:
            until = ""
            if until_raw is not None:
                if not isinstance(until_raw, str):
                    raise ApiError(400, "bad_type", f"'until' must be a date string YYYY-MM-DD or null, got "
                                                    f"{_kind(until_raw)}")
                try:
                    day = date.fromisoformat(until_raw.strip())
                except ValueError:
                    raise ApiError(422, "bad_date", f"'until' {until_raw[:40]!r} is not a date; write YYYY-MM-DD, "
                                                    "e.g. 2026-12-31") from None
                profile = team.profile(rep.rep_id)
                today = profile.local(datetime.fromtimestamp(self.clock(), UTC)).date()
                if day < today:
                    raise ApiError(422, "date_in_past", f"'until' {day.isoformat()} is before today "
                                                        f"({today.isoformat()} in {profile.tz}); give today or later, "
                                                        "or out_of_office: false to clear")
                until = day.isoformat()
            await self.redis.hset(key, mapping={"out_of_office": "1", "until": until, "note": note,
                                                "set_by": principal.name, "set_at": repr(self.clock())})
        [out] = await self._reps_out([(team, rep)])
        return json_response(out)

    # --- rules ------------------------------------------------------------------------------------

    async def _read_yaml_body(self, request: web.Request, op: Operation) -> str:
        """validate: raw YAML (text/plain, application/yaml, ...) or JSON {"rules": "..."}."""
        if request.content_type in YAML_TYPES and "Content-Type" in request.headers:
            raw = await request.read()
            if len(raw) > self.settings.admin.max_rules_bytes:
                raise ApiError(413, "rules_too_large", f"the rules are {len(raw)} bytes; the most is "
                                                       f"{self.settings.admin.max_rules_bytes} "
                                                       "(LEADROUTER_ADMIN_MAX_RULES_BYTES)")
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(400, "not_utf8", f"the rules are not UTF-8 text (byte {exc.start}); save them as "
                                                "UTF-8") from None
        body = await self.body(request, op, ("rules",))
        text = self.rules_text(body, "rules", required=True)
        assert text is not None
        return text

    async def validate_rules(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        text = await self._read_yaml_body(request, self._ops["validate_rules"])

        def work() -> dict[str, Any]:
            yaml_guard(text, "the rules")
            problem = printable_problem(text, "rules")
            try:
                if problem is not None:
                    raise RulesError(problem)
                config = load_routing(text, "rules")
            except RulesError as exc:
                return {"ok": False, "problems": list(exc.problems), "version": None, "content_hash": None,
                        "teams": 0, "reps": 0, "rules": 0}
            return {"ok": True, "problems": [], "version": config.version, "content_hash": config.content_hash,
                    "teams": len(config.teams), "reps": len(config.reps), "rules": len(config.rules)}

        return json_response(await asyncio.to_thread(work))

    async def test_rules(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        body = await self.body(request, self._ops["test_rules"], ("rules", "cases"))
        text = self.rules_text(body, "rules", required=True)
        cases = self.rules_text(body, "cases", required=True)
        assert text is not None and cases is not None

        def work() -> dict[str, Any]:
            yaml_guard(text, "the rules")
            yaml_guard(cases, "the test cases")
            unreadable = [p for p in (printable_problem(text, "rules"), printable_problem(cases, "cases")) if p]
            if unreadable:
                return {"ok": False, "problems": unreadable, "version": None, "passed": 0, "failed": 0, "results": []}
            try:
                check = run_checks(text, "rules", cases, "cases")
            except RulesRejectedError as exc:
                return {"ok": False, "problems": list(exc.failures) or [str(exc)], "version": None, "passed": 0,
                        "failed": 0, "results": []}
            results = [{"name": r.case.name, "passed": r.passed, "expected_team": r.expected_team,
                        "expected_rule": r.expected_rule, "actual_team": r.actual_team,
                        "actual_rule": r.actual_rule, "path": list(r.path), "message": r.message}
                       for r in check.results]
            failed = len(check.failures)
            problems = [] if check.results else ["cases: no test cases; add at least one"]
            return {"ok": check.passed, "problems": problems, "version": check.config.version,
                    "passed": len(check.results) - failed, "failed": failed, "results": results}

        return json_response(await asyncio.to_thread(work))

    def sim_leads(self, raw: object) -> list[SimLead]:
        if not isinstance(raw, list) or not raw:
            raise ApiError(400, "bad_type", f"'leads' must be a non-empty list of lead objects, got {_kind(raw)}")
        cap = self.settings.admin.simulate_max_leads
        if len(raw) > cap:
            raise ApiError(413, "too_many_leads", f"'leads' has {len(raw)} leads; one call routes at most {cap} "
                                                  "(LEADROUTER_ADMIN_SIMULATE_MAX_LEADS): split them, or use "
                                                  "`leadrouter rules simulate --leads FILE`")
        leads: list[SimLead] = []
        for i, row in enumerate(raw):
            where = f"leads[{i}]"
            if not isinstance(row, dict):
                raise ApiError(400, "bad_type", f"{where} must be an object of lead fields, got {_kind(row)}")
            for key, value in row.items():
                if key not in SIM_LEAD_KEYS:
                    raise ApiError(400, "unknown_key", f"{where}: unknown field {key[:100]!r}; "
                                                       f"{_suggest(key, SIM_LEAD_KEYS)}")
                if isinstance(value, (list, dict)):
                    raise ApiError(400, "bad_type", f"{where}.{key} must be a string, number or boolean, got "
                                                    f"{_kind(value)}")
            lead_id = row.get("lead_id")
            if lead_id is not None and not isinstance(lead_id, str):
                raise ApiError(400, "bad_type", f"{where}.lead_id must be a string, got {_kind(lead_id)}")
            ts: float | None = None
            if row.get("ts") not in (None, ""):
                try:
                    ts = parse_ts(row["ts"])
                except (ValueError, OverflowError, TypeError):
                    ts = None
                    bad = True
                else:
                    bad = ts is not None and not 0 < ts <= MAX_TS
                if bad:
                    raise ApiError(400, "bad_value", f"{where}.ts {str(row['ts'])[:60]!r} is not a time; use epoch "
                                                     "seconds or ISO 8601 such as 2026-11-24T09:30:00Z (up to the "
                                                     "year 9999)")
            facts_raw = {k: v for k, v in row.items() if k in FIELDS or k == "website"}
            if isinstance(facts_raw.get("website"), (bool, int, float)):
                facts_raw["website"] = str(facts_raw["website"])
            leads.append(SimLead(lead_id=lead_id or f"lead-{i + 1}", facts=lead_facts(facts_raw), ts=ts))
        return in_time_order(leads)

    async def simulate_rules(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        body = await self.body(request, self._ops["simulate_rules"], ("rules", "current", "leads", "examples"))
        text = self.rules_text(body, "rules", required=True)
        current_text = self.rules_text(body, "current", required=False)
        assert text is not None
        if "leads" not in body.data:
            raise ApiError(400, "missing_key", "the body needs 'leads': a list of lead objects with catalogue fields")
        leads = self.sim_leads(body.data["leads"])
        examples = body.integer("examples", lo=0, hi=100, default=10)
        in_force = await self.config()
        current_label = self.config_source()

        def compile_or_422(yaml_text: str, what: str) -> RoutingConfig:
            yaml_guard(yaml_text, what)
            problem = printable_problem(yaml_text, what)
            try:
                if problem is not None:
                    raise RulesError(problem)
                return load_routing(yaml_text, what)
            except RulesError as exc:
                raise ApiError(422, "rules_invalid", f"{what} do not compile; fix them (POST /v1/rules/validate "
                                                     "lists every problem)", problems=exc.problems) from None

        def work() -> SimulationReport:
            new = compile_or_422(text, "the new rules")
            current = compile_or_422(current_text, "the current rules") if current_text is not None else in_force
            return simulate(leads, current, new, examples=examples)

        report = await asyncio.to_thread(work)
        if current_text is not None:
            current_label = "request body 'current'"
        return json_response(_report_out(report, current_label))

    async def publish_rules(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        principal = self.principal(request)
        body = await self.body(request, self._ops["publish_rules"], ("rules", "cases", "note"))
        text = self.rules_text(body, "rules", required=False)
        cases = self.rules_text(body, "cases", required=False)
        note = body.text("note", max_len=MAX_NOTE) or ""
        if text is None and cases is not None:
            raise ApiError(400, "missing_key", "'cases' came without 'rules'; send both, or neither to publish the "
                                               "configured rules file and its cases")
        if text is not None and cases is None:
            raise ApiError(400, "missing_key", "'rules' came without 'cases'; publish runs the test cases, so send "
                                               "the cases (routing_test.yaml) too")
        if text is None or cases is None:
            path: Path = self.settings.files.rules_file
            cases_path = cases_path_for(path)
            text = read_text(path, "rules file", "check LEADROUTER_RULES_FILE")
            cases = read_text(cases_path, "test cases", f"keep the test cases in {cases_path.name} beside "
                                                        f"{path.name}")
            source, cases_source = str(path), str(cases_path)
        else:
            source, cases_source = f"admin API upload by {principal.name}", "admin API upload (cases)"
        rules_yaml, cases_yaml = text, cases

        def work() -> Any:
            yaml_guard(rules_yaml, "the rules")
            yaml_guard(cases_yaml, "the test cases")
            unreadable = [p for p in (printable_problem(rules_yaml, source),
                                      printable_problem(cases_yaml, cases_source)) if p]
            if unreadable:
                raise ApiError(422, "rules_rejected", "not published: the text is not valid YAML", problems=unreadable)
            try:
                return check_rules(rules_yaml, source, cases_yaml, cases_source)
            except RulesRejectedError as exc:
                raise ApiError(422, "rules_rejected", f"not published: {str(exc).splitlines()[0]}",
                               problems=exc.failures or (str(exc),)) from None

        check = await asyncio.to_thread(work)
        before = await self.rules.active_number()
        doc = await self.rules.publish(check, author=principal.name, note=note, now=self.clock())
        await self.routing.poll()
        log.info("rules v%d published through the admin API by %s", doc.number, principal.name)
        return json_response({**_version_meta(doc), "active": True, "previous": before}, status=201)

    async def rollback_rules(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        principal = self.principal(request)
        raw = request.match_info["version"]
        try:
            number = parse_version(raw[:40])
        except RulesVersionError as exc:
            raise ApiError(400, "bad_version", str(exc)) from None
        if number > 2**31:
            raise ApiError(404, "unknown_version", f"no published rules version v{number}")
        body = await self.body(request, self._ops["rollback_rules"], ("note",))
        note = body.text("note", max_len=MAX_NOTE) or ""
        if await self.rules.get(number) is None:
            known = await self.rules.numbers()
            have = f"published versions are v{known[0]}..v{known[-1]}" if known else "nothing is published yet"
            raise ApiError(404, "unknown_version", f"no published rules version v{number}; {have} "
                                                   "(GET /v1/rules/history)")
        if await self.rules.active_number() == number:
            raise ApiError(409, "already_active", f"v{number} is already the active rules version; nothing changed")
        try:
            entry = await self.rules.rollback(number, author=principal.name, note=note, now=self.clock())
        except RulesVersionError as exc:
            raise ApiError(409, "rollback_refused", str(exc)) from None
        doc = await self.rules.get(number)
        await self.routing.poll()
        return json_response({"action": entry.action, "number": entry.number, "previous": entry.previous,
                              "author": entry.author, "ts": entry.ts, "note": entry.note,
                              "tag": doc.tag if doc is not None else f"v{number}"})

    async def rules_history(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        versions = await self.rules.versions()
        history = await self.rules.history()
        return json_response({
            "active": await self.rules.active_number(),
            "versions": [_version_meta(d) for d in versions],
            "history": [{"action": h.action, "number": h.number, "previous": h.previous, "author": h.author,
                         "ts": h.ts, "note": h.note} for h in history],
        })

    async def rules_active(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        redact = self.principal(request).role is not Role.OPS
        doc = await self.rules.active()
        in_force = (await self.config()).version
        if doc is not None:
            out: dict[str, Any] = {
                "source": "published", "number": doc.number, "version": doc.tag, "author": doc.author, "ts": doc.ts,
                "note": doc.note, "sha256": doc.sha256, "content_hash": doc.content_hash, "content": doc.content,
            }
        else:
            path = self.settings.files.rules_file
            text = read_text(path, "rules file", "check LEADROUTER_RULES_FILE")
            file_config = self.routing.file_config
            out = {"source": "file", "number": None, "version": file_config.version, "author": None, "ts": None,
                   "note": str(path), "sha256": _sha256(text), "content_hash": file_config.content_hash,
                   "content": text}
        if redact:
            out["content"] = redact_webhooks(out["content"])
        out["redacted"] = redact
        out["in_force"] = in_force
        return json_response(out)

    # --- leads ------------------------------------------------------------------------------------

    async def find_leads(self, request: web.Request) -> web.StreamResponse:
        query = self.query(request, ("email", "owner", "limit"))
        principal = self.principal(request)
        limit = self.limit(query, 50)
        email, owner = query.get("email"), query.get("owner")
        if email is not None and owner is not None:
            raise ApiError(400, "bad_parameter", "give email= or owner=, not both")
        if email is not None:
            email = email.strip()
            if "@" not in email or len(email) > MAX_EMAIL or len(email) < 3:
                raise ApiError(400, "bad_parameter", f"email={email[:100]!r} is not an email address; write it as "
                                                     "name@example.com")
            lead_id = keys.lead_id_for_email(email)
            data = await self.store.lead_hash(lead_id)
            if not data:
                return json_response({"leads": []})
            self.check_owner(principal, lead_id, data)
            return json_response({"leads": await self.lead_states([lead_id])})
        if owner is None:
            if principal.role is not Role.REP:
                raise ApiError(400, "missing_parameter", "give email=ADDRESS to find a lead, or owner=REP_ID for a "
                                                         "rep's open leads")
            owner = principal.rep_id
        if len(owner) > MAX_REP_ID or not owner.strip():
            raise ApiError(400, "bad_parameter", f"owner must be a rep id of 1 to {MAX_REP_ID} characters")
        if principal.role is Role.REP and owner != principal.rep_id:
            metrics.ADMIN_AUTH_FAILURES.labels("forbidden").inc()
            raise ApiError(403, "not_your_leads", f"a rep token lists only its own leads (owner={principal.rep_id})")
        raw: list[Any] = await self.redis.zrevrange(keys.rep_leads(owner), 0, limit - 1)
        ids = [_s(x) for x in raw if isinstance(x, (bytes, str)) and _LEAD_ID.match(_s(x))]
        return json_response({"leads": await self.lead_states(ids, owner=owner)})

    async def get_lead(self, request: web.Request) -> web.StreamResponse:
        self.query(request, ())
        lead_id, _ = await self.lead(request)
        states = await self.lead_states([lead_id])
        if not states:
            raise ApiError(404, "unknown_lead", f"lead {lead_id} disappeared while being read; try again")
        return json_response(states[0])

    async def explain_lead(self, request: web.Request) -> web.StreamResponse:
        limit = self.limit(self.query(request, ("limit",)), 10)
        lead_id, data = await self.lead(request)
        reasons = await self.store.lead_reasons(lead_id)
        self.scoring.maybe_reload()
        scoring, now = self.scoring.current, self.clock()
        hl = scoring.half_life_s
        stored, asof = _num(data.get("score")), _num(data.get("asof"))
        score_now = score_at(stored, asof, now, hl) if asof > 0 else stored
        parts: dict[str, dict[str, Any]] = {}
        items: list[dict[str, Any]] = []
        for r in reasons:
            worth = score_at(r.points, r.ts, now, hl) if r.ts > 0 else r.points
            part = parts.setdefault(r.rule, {"rule": r.rule, "events": 0, "points_earned": 0.0, "points_now": 0.0})
            part["events"] += 1
            part["points_earned"] += r.points
            part["points_now"] += worth
            items.append({"rule": r.rule, "detail": r.detail, "event_type": r.event_type, "event_id": r.event_id,
                          "ts": r.ts, "points": r.points, "points_now": worth, "hand_raiser": r.hand_raiser})
        explained = sum(p["points_now"] for p in parts.values())
        items.sort(key=lambda x: (-abs(x["points_now"]), -x["ts"]))
        return json_response({
            "lead_id": lead_id, "now": now, "score_now": score_now, "score": stored, "score_asof": asof,
            "threshold": scoring.threshold, "half_life_days": scoring.half_life_days,
            "ready": data.get("ready") == "1",
            "parts": sorted(parts.values(), key=lambda p: (-abs(p["points_now"]), p["rule"])),
            "explained": explained, "residual": score_now - explained, "reasons": items[:limit],
        })

    async def lead_timeline(self, request: web.Request) -> web.StreamResponse:
        limit = self.limit(self.query(request, ("limit",)), 100)
        lead_id, _ = await self.lead(request)
        events = await self.store.lead_recent(lead_id, limit)
        history = await self.store.lead_history(lead_id, limit)
        entries = [{**e, "kind": "event", "ts": _num(e.get("ts"))} for e in events]
        entries += [{**h, "kind": "history", "ts": _num(h.get("ts"))} for h in history]
        entries.sort(key=lambda e: -e["ts"])
        return json_response({"lead_id": lead_id, "entries": entries[:limit]})

    # --- lifecycle --------------------------------------------------------------------------------

    # --- signed alert links ------------------------------------------------------------------------

    def _claims(self, request: web.Request) -> ActionClaims:
        try:
            return verify_action_token(self.settings.tokens.secret, request.match_info["token"], now=self.clock())
        except TokenError as exc:
            raise ApiError(400, "bad_link", str(exc)) from None

    async def action_page(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request)
        data = await self.store.lead_hash(claims.lead_id)
        if not data or data.get("forgotten") == "1":
            raise ApiError(404, "unknown_lead", "this lead no longer exists")
        view = lead_view_from_hash(data)
        policy = (await self.config()).lifecycle
        reasons = "".join(f'<option value="{_h(r)}">{_h(r)}</option>' for r in policy.reject_reasons)
        state = (f"stage {_h(view.stage.value)}; owner {_h(data.get('owner_name', '-'))}"
                 f"{'' if data.get('owner') == claims.rep_id else ' (no longer you)'}")
        chosen = request.query.get("do", "")
        html = f"""<!doctype html><html><head><meta charset="utf-8"><title>Lead {_h(view.display_name)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"></head><body style="font-family:sans-serif">
<h1>{_h(view.display_name)}{' &middot; ' + _h(view.company) if view.company else ''}</h1>
<p>{_h(view.email or '')} &middot; score {view.score:.0f} &middot; {state}</p>
<form method="post"><input type="hidden" name="action" value="accept">
<button type="submit"{' autofocus' if chosen == 'accept' else ''}>Accept this lead</button></form>
<form method="post"><input type="hidden" name="action" value="reject">
<label>Reason <select name="reason">{reasons}</select></label>
<button type="submit"{' autofocus' if chosen == 'reject' else ''}>Reject</button></form>
</body></html>"""
        return web.Response(text=html, content_type="text/html")

    async def action_submit(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request)
        form = await request.post()
        action, reason = str(form.get("action", "")), str(form.get("reason", "")).strip()[:100]
        if action not in ("accept", "reject"):
            raise ApiError(400, "bad_value", f"action {action[:20]!r} must be accept or reject")
        policy = (await self.config()).lifecycle
        try:
            result = await lifecycle.apply(self.store, action, claims.lead_id, claims.rep_id, policy=policy,
                                           reason=reason, now=self.clock())
        except lifecycle.UnknownLeadError as exc:
            raise ApiError(404, exc.code, str(exc)) from None
        except lifecycle.InvalidReasonError as exc:
            raise ApiError(422, exc.code, str(exc)) from None
        except lifecycle.LifecycleError as exc:
            raise ApiError(409, exc.code, str(exc)) from None
        log.info("lead %s %s by %s through an alert link", claims.lead_id, action, claims.rep_id)
        done = "accepted: it is yours" if action == "accept" else f"rejected ({_h(reason)}): back to marketing"
        return web.Response(text=f"<!doctype html><html><body style='font-family:sans-serif'><p>Lead {done}. "
                                 f"Stage now {_h(str(result.to_dict().get('stage', '')))}.</p></body></html>",
                            content_type="text/html")

    async def transition(self, request: web.Request, op: Operation, action: str) -> web.StreamResponse:
        self.query(request, ())
        principal = self.principal(request)
        lead_id, data = await self.lead(request)
        allowed = {"accept": ("rep_id",), "reject": ("reason", "rep_id"), "convert": ("to", "rep_id"),
                   "won": ("reason", "rep_id"), "lost": ("reason", "rep_id")}[action]
        body = await self.body(request, op, allowed)
        rep_id = body.text("rep_id", max_len=MAX_REP_ID, min_len=1)
        reason = ""
        to: str | None = None
        if action == "reject":
            reason = (body.text("reason", max_len=100, required=True, min_len=1) or "").strip()
        elif action in ("won", "lost"):
            reason = (body.text("reason", max_len=MAX_NOTE) or "").strip()
        elif action == "convert":
            to = body.text("to", max_len=20)
            if to is not None and to not in ("sql", "opportunity"):
                raise ApiError(400, "bad_value", f"'to' {to[:20]!r} must be sql or opportunity (or left out for the "
                                                 "next stage)")
        if principal.role is Role.REP:
            if rep_id is not None and rep_id != principal.rep_id:
                metrics.ADMIN_AUTH_FAILURES.labels("forbidden").inc()
                raise ApiError(403, "not_your_rep", f"a rep token acts as its own rep ({principal.rep_id!r}); drop "
                                                    "rep_id")
            acting = principal.rep_id
        else:
            acting = rep_id if rep_id is not None else data.get("owner", "")
        policy = (await self.config()).lifecycle
        try:
            result = await lifecycle.apply(self.store, action, lead_id, acting, policy=policy, reason=reason, to=to,
                                           now=self.clock())
        except lifecycle.UnknownLeadError as exc:
            raise ApiError(404, exc.code, str(exc)) from None
        except lifecycle.InvalidReasonError as exc:
            raise ApiError(422, exc.code, str(exc)) from None
        except lifecycle.LifecycleError as exc:  # not_owner, bad_stage, ...
            raise ApiError(409, exc.code, str(exc)) from None
        log.info("lead %s %s by %s (token %s, %s)", lead_id, action, acting, principal.name, principal.role.value)
        return json_response(result.to_dict())


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _report_out(report: SimulationReport, current_label: str) -> dict[str, Any]:
    def side(result: Any, label: str) -> dict[str, Any]:
        return {"version": result.version, "source": label, "teams": dict(result.team_counts),
                "reps": dict(result.rep_counts), "rules": dict(result.rule_counts)}

    span = report.span
    return {
        "leads": report.leads, "moves": report.moves, "rule_changes": report.rule_changes,
        "current": side(report.current, current_label), "new": side(report.new, "request body 'rules'"),
        "span": {"first": span.first, "last": span.last, "working_days": span.working_days} if span else None,
        "teams": [{"team": r.team, "current": r.current, "new": r.new, "delta": r.delta,
                   "reps_current": r.reps_current, "reps_new": r.reps_new,
                   "current_per_rep_day": r.current_per_rep_day, "new_per_rep_day": r.new_per_rep_day}
                  for r in report.team_rows()],
        "reps": [{"rep_id": r.rep_id, "name": r.name, "team_current": r.team_current, "team_new": r.team_new,
                  "current": r.current, "new": r.new, "delta": r.delta, "current_per_day": r.current_per_day,
                  "new_per_day": r.new_per_day} for r in report.rep_rows()],
        "moved": [{"lead_id": m.lead.lead_id, "label": m.lead.label,
                   "before": {"team": m.before.team, "rule": m.before.rule, "rep_id": m.before.rep_id},
                   "after": {"team": m.after.team, "rule": m.after.rule, "rep_id": m.after.rep_id}}
                  for m in report.examples],
    }


ADMIN_KEY = web.AppKey("admin", Admin)


def create_app(settings: Settings, redis: Redis, *, clock: Callable[[], float] = time.time,
               routing: RedisRulesSource | None = None, scoring: LiveFile[ScoringConfig] | None = None,
               ) -> web.Application:
    """The admin app over ``redis``; loads the rules and scoring files unless sources are given.

    A rules or scoring file that does not load is fatal here (:class:`ConfigFileError`), as in the worker.
    """
    routing = routing or RedisRulesSource(settings.files.rules_file, redis, label="routing")
    scoring = scoring or LiveFile.open(settings.files.scoring_file, load_scoring_file, "scoring")
    admin = Admin(settings, redis, routing=routing, scoring=scoring, clock=clock)
    app = web.Application(middlewares=[observe, error_middleware(settings.admin.max_body_bytes)],
                          client_max_size=settings.admin.max_body_bytes)
    for op in OPERATIONS:
        app.router.add_route(op.method, op.path, admin.handler_for(op))
    app[ADMIN_KEY] = admin
    return app


def check_settings(settings: Settings) -> None:
    """Admin settings that load but cannot work."""
    problems = []
    if not 0 <= settings.admin.port <= 65535:
        problems.append(f"LEADROUTER_ADMIN_PORT={settings.admin.port} is not a TCP port; use 1-65535, e.g. 8081")
    if settings.admin.simulate_max_leads < 1:
        problems.append("LEADROUTER_ADMIN_SIMULATE_MAX_LEADS must be at least 1")
    if settings.admin.max_body_bytes < 1024 or settings.admin.max_rules_bytes < 1024:
        problems.append("LEADROUTER_ADMIN_MAX_BODY_BYTES and _MAX_RULES_BYTES must be at least 1024")
    if problems:
        raise SettingsError("; ".join(problems))


class AdminService:
    """The admin app on a TCP port with its own Redis pool; ``leadrouter admin`` runs one, tests start one."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        check_settings(settings)
        self.settings = settings
        self.clock = clock
        self._redis: Redis | None = None
        self._runner: web.AppRunner | None = None
        self.port = settings.admin.port

    async def start(self) -> None:
        self._redis = create_redis(self.settings.redis, role="admin")
        try:
            app = create_app(self.settings, self._redis, clock=self.clock)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.settings.admin.host, self.settings.admin.port)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        log.info("admin API listening on http://%s:%d (OpenAPI at /openapi.json)", self.settings.admin.host,
                 self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the admin API until ``stop`` is set (or forever)."""
    service = AdminService(settings)
    await service.start()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await service.stop()


__all__ = [
    "ADMIN_KEY",
    "Admin",
    "AdminService",
    "ApiError",
    "create_app",
    "printable_problem",
    "redact_webhooks",
    "serve",
    "yaml_guard",
]


def _h(text: str) -> str:
    return html_escape(text, quote=True)
