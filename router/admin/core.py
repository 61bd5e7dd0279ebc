"""The admin handlers' shared plumbing: authentication, query and body parsing, the config in force, the lead in the path.

:class:`AdminCore` holds the Redis pool and config sources; the handlers of each area
(roster.py, rules.py, leads.py, lifecycle.py, links.py) are mixins over it, and
router/admin/app.py combines them into :class:`router.admin.app.Admin`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson
from aiohttp import web

from router import metrics
from router.admin.auth import AuthError, Principal, Role, TokenStore, bearer_token
from router.admin.http import JSON_TYPES, ApiError, Body, kind, suggest
from router.admin.openapi import LEAD_ID_PATTERN, MAX_LIMIT, OPERATIONS, Operation, build_spec
from router.settings import Settings
from router.storage.live_config import LiveFile, PublishedSource, RedisRulesSource
from router.storage.redis import AnyRedis
from router.storage.rules_store import RulesStore
from router.storage.store import RedisStore
from rules import RoutingConfig
from scoring import ScoringConfig

LEAD_ID = re.compile(LEAD_ID_PATTERN)
log = logging.getLogger(__name__)
_LEGACY_WARNED: set[str] = set()  # tokens without a stored expiry already warned about by this process


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

# The authenticated caller of the request being handled (set around each guarded handler).
PRINCIPAL: ContextVar[Principal] = ContextVar("leadrouter_admin_principal")


class AdminCore:
    """What every handler uses, over one Redis connection pool and the config sources."""

    def __init__(self, settings: Settings, redis: AnyRedis, *, routing: RedisRulesSource,
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

    async def scoring_now(self) -> ScoringConfig:
        """The scoring in force: the published active version in Redis (one GET of the pointer per call, as the
        worker follows it), else the scoring file, reloaded when it changes."""
        if isinstance(self.scoring, PublishedSource):
            await self.scoring.poll()
        else:
            self.scoring.maybe_reload()
        return self.scoring.current

    async def authenticate(self, request: web.Request) -> Principal:
        token = bearer_token(request.headers.get("Authorization"))
        principal = await self.tokens.lookup(token)
        if principal is None:
            msg = ("the bearer token is not known (revoked, mistyped, or made for another deployment); ask ops for "
                   "one: `leadrouter admin token create`")
            raise AuthError("unknown_token", msg, "invalid_token")
        now = self.clock()
        default_ttl_s = self.settings.admin.token_ttl_days * 86400
        expires = principal.expires_at(default_ttl_s)
        if principal.expires is None and principal.token_hash not in _LEGACY_WARNED:
            _LEGACY_WARNED.add(principal.token_hash)
            log.warning("admin token %s (%s, %r) has no stored expiry: it was made before tokens expired, so it "
                        "expires %d days after it was created, at %s; rotate it with `leadrouter admin token rotate "
                        "%s`", principal.token_hash[:12], principal.role.value, principal.name,
                        self.settings.admin.token_ttl_days, _utc(expires), principal.token_hash[:12])
        if now >= expires:
            msg = (f"the bearer token expired at {_utc(expires)}; ask ops for its successor: `leadrouter admin token "
                   f"rotate {principal.token_hash[:12]}` (or `token create`)")
            raise AuthError("expired_token", msg, "invalid_token")
        await self.tokens.touch(principal, now)
        return principal

    @staticmethod
    def principal(request: web.Request) -> Principal:
        """The caller of the request being handled (set by the role guard)."""
        return PRINCIPAL.get()

    def query(self, request: web.Request, allowed: Sequence[str]) -> dict[str, str]:
        """The query parameters, each given once and all known (else 400)."""
        out: dict[str, str] = {}
        for key in request.query:
            if key not in allowed:
                hint = suggest(key, allowed) if allowed else "this endpoint takes no query parameters"
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
            raise ApiError(400, "body_not_object", f"the body must be a JSON object, got {kind(data)}; e.g. "
                                                   f"{{{', '.join(repr(k) + ': ...' for k in allowed[:2])}}}")
        for key in data:
            if key not in allowed:
                raise ApiError(400, "unknown_key", f"unknown key {key[:100]!r} in the body; {suggest(key, allowed)}")
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
        if not LEAD_ID.match(lead_id):
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
