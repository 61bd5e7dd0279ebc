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
GET /healthz, /openapi.json                     no token needed
GET /a/{token}, POST /a/{token}                 the one-time alert link itself (router/admin/links.py)
GET /metrics                                    yes   no          yes
GET /v1/me, /v1/teams, /v1/reps, /v1/reps/{id}  yes   yes         yes
PATCH /v1/reps/{id}/availability                yes   own only    no
POST /v1/rules/validate, test, simulate         yes   no          no
POST /v1/rules/publish, rollback/{version}      yes   no          no
GET /v1/rules/history, /v1/rules/active         yes   yes [1]     yes [1]
GET /v1/leads, /v1/leads/{id}[/explain|/timeline] yes own leads   yes
POST /v1/leads/{id}/accept|reject|convert|...   yes   own leads   no
POST /v1/webhooks/crm                           signed by the CRM (HMAC-SHA256; router/admin/webhook.py)
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

Layout: this module builds the app (middleware, routes, :class:`AdminService`, :func:`serve`);
core.py holds what every handler uses, http.py the error type and JSON helpers, and
roster.py, rules.py, leads.py, lifecycle.py and links.py the handlers of each area.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from router import metrics
from router.admin.auth import AuthError, Role
from router.admin.console import add_console_routes
from router.admin.console.ops import add_ops_routes
from router.admin.core import PRINCIPAL
from router.admin.http import ApiError, Handler, error_response, json_response
from router.admin.leads import LeadHandlers
from router.admin.lifecycle import LifecycleHandlers
from router.admin.links import SECURITY_HEADERS, LinkHandlers
from router.admin.openapi import OPERATIONS, Operation
from router.admin.roster import RosterHandlers
from router.admin.rules import RulesHandlers
from router.admin.webhook import WebhookHandlers
from router.errors import ConfigFileError, SettingsError
from router.settings import Settings
from router.storage.config_store import SCORING
from router.storage.live_config import LiveFile, RedisConfigSource, RedisRulesSource
from router.storage.redis import AnyRedis, create_redis
from scoring import ScoringConfig

log = logging.getLogger(__name__)


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


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer: no sniffing, no framing, no referrer, no caching, a strict CSP (handlers may set their own)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


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


class Admin(RosterHandlers, RulesHandlers, LeadHandlers, LifecycleHandlers, LinkHandlers, WebhookHandlers):
    """The request handlers, over one Redis connection pool and the config sources.

    Each area's handlers live in their own module (a mixin over :class:`router.admin.core.AdminCore`);
    an operation's ``op_id`` names its handler method.
    """

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
            reset = PRINCIPAL.set(principal)
            try:
                return await inner(request)
            finally:
                PRINCIPAL.reset(reset)

        return guarded

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


ADMIN_KEY = web.AppKey("admin", Admin)


def create_app(settings: Settings, redis: AnyRedis, *, clock: Callable[[], float] = time.time,
               routing: RedisRulesSource | None = None, scoring: LiveFile[ScoringConfig] | None = None,
               ) -> web.Application:
    """The admin app over ``redis``; follows the published routing and scoring unless sources are given.

    Like the worker, it uses the active published versions in Redis (``leadrouter rules|scoring publish`` or the
    console) and the files only while nothing is published.  A rules or scoring file that does not load is fatal
    here (:class:`ConfigFileError`), as in the worker.
    """
    routing = routing or RedisRulesSource(settings.files.rules_file, redis, label="routing")
    scoring = scoring or RedisConfigSource(SCORING, settings.files.scoring_file, redis, "scoring")
    admin = Admin(settings, redis, routing=routing, scoring=scoring, clock=clock)
    app = web.Application(middlewares=[observe, error_middleware(settings.admin.max_body_bytes)],
                          client_max_size=settings.admin.max_body_bytes)
    for op in OPERATIONS:
        app.router.add_route(op.method, op.path, admin.handler_for(op))
    app.on_response_prepare.append(security_headers)
    add_ops_routes(app, add_console_routes(app, admin), admin)
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
        self._redis: AnyRedis | None = None
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
    "check_settings",
    "create_app",
    "serve",
]
