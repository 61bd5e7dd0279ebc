"""The one-time state of alert action links in Redis (router/storage/lua/action_link.lua).

The admin app's ``/a/<token>`` page (router/admin/links.py) asks here whether a
verified link may still act on the lead it names, and records its one-time id
when it does; both in one atomic step on the lead's hash slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast, get_args

import orjson

from router.storage import keys
from router.storage.redis import AnyRedis
from router.storage.scripts import register

LinkState = Literal["ok", "used", "gone", "reassigned", "handled"]
_STATES: frozenset[str] = frozenset(get_args(LinkState))


@dataclass(frozen=True, slots=True)
class LinkCheck:
    """Whether a link may act: ``state``, the lead's stage and owner, and for a used link when and how."""

    state: LinkState
    stage: str = ""
    owner_name: str = ""
    used_action: str = ""
    used_ts: float = 0.0


class ActionLinkStore:
    """Checks and records alert action links against the lead's current assignment."""

    def __init__(self, redis: AnyRedis) -> None:
        self.redis = redis
        self._script = register(redis, "action_link.lua")

    async def _call(self, op: str, lead_id: str, jti: str, assignment_id: str, rep_id: str, *, now: float,
                    ttl_s: float = 1.0, action: str = "") -> LinkCheck:
        raw = await self._script(keys=[keys.lead(lead_id), keys.action_link_used(lead_id, jti)],
                                 args=[op, assignment_id, rep_id, repr(now), repr(max(1.0, ttl_s)), action])
        data = orjson.loads(raw)
        used_action, used_ts = "", 0.0
        if data.get("used"):
            used = orjson.loads(data["used"])
            used_action, used_ts = str(used.get("action", "")), float(used.get("ts", 0.0))
        state = str(data.get("state"))
        return LinkCheck(state=cast(LinkState, state) if state in _STATES else "gone", stage=str(data.get("stage", "")),
                         owner_name=str(data.get("owner_name", "")), used_action=used_action, used_ts=used_ts)

    async def check(self, lead_id: str, jti: str, assignment_id: str, rep_id: str, *, now: float) -> LinkCheck:
        """What the link would do now; writes nothing (safe for GETs and link scanners)."""
        return await self._call("check", lead_id, jti, assignment_id, rep_id, now=now)

    async def use(self, lead_id: str, jti: str, assignment_id: str, rep_id: str, *, action: str, now: float,
                  expires: float) -> LinkCheck:
        """Record the link as used if it may act (state ``ok``); the marker lives until the link's expiry."""
        return await self._call("use", lead_id, jti, assignment_id, rep_id, now=now, ttl_s=expires - now + 60,
                                action=action)

    async def release(self, lead_id: str, jti: str) -> None:
        """Forget a recorded use whose action changed nothing (so the rep can try the link again)."""
        await self._call("release", lead_id, jti, "", "", now=0.0)


__all__ = ["ActionLinkStore", "LinkCheck", "LinkState"]
