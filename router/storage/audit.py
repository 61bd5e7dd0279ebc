"""The audit trail: who changed what, and when, through the ops console, the admin API or the CLI.

Every entry goes on one bounded Redis stream (:data:`router.storage.keys.AUDIT`, trimmed to about
``AUDIT_MAXLEN``); an entry about a lead is also kept on the lead (:func:`keys.lead_audit`, newest
first, the last ``LEAD_AUDIT_KEPT``), so its page reads them in one call.  Erasure
(router/worker/privacy.py) deletes the lead's list and the stream entries that name the lead.

Recording an entry (any page, handler or command that changes something)::

    from router.storage import audit

    await audit.record(redis, who=principal.name, role=principal.role.value, via="console",
                       action="lead.reassign", lead_id=lead_id, target=to_rep, detail=reason, now=clock())

``who`` is the admin token's name (or ``cli:<user>``), ``via`` one of :data:`VIAS`, ``action`` a
dotted name (the ones used are listed in :data:`ACTIONS`; others are accepted), ``target`` what was
changed (a rep, a version, a token hash prefix, a channel) and ``detail`` free text (a reason or
note), cut to ``MAX_DETAIL`` characters.  Never put a lead's name or email in ``target`` or
``detail``: the lead id is what names it.  The admin side calls it through
:func:`router.admin.audit.audit`, which fills in the signed-in caller.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from router.errors import RouterError
from router.storage import keys
from router.storage.redis import AnyRedis

Via = Literal["console", "api", "cli", "link"]
VIAS: tuple[Via, ...] = ("console", "api", "cli", "link")
ACTIONS = (
    "lead.accept", "lead.reject", "lead.convert", "lead.won", "lead.lost", "lead.reassign",
    "review.release", "review.dismiss", "rep.availability", "rules.publish", "rules.rollback",
    "scoring.publish", "scoring.rollback", "alert.replay", "token.create", "token.rotate", "token.revoke",
)
MAX_DETAIL = 500
MAX_FIELD = 200


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded change."""

    entry_id: str  # the stream id ("<ms>-<n>"); '' until stored
    ts: float
    who: str
    role: str
    via: str
    action: str
    lead_id: str = ""
    target: str = ""
    detail: str = ""

    def fields(self) -> dict[str, str]:
        return {"ts": repr(self.ts), "who": self.who, "role": self.role, "via": self.via, "action": self.action,
                "lead": self.lead_id, "target": self.target, "detail": self.detail}

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.entry_id, "ts": self.ts, "who": self.who, "role": self.role, "via": self.via,
                "action": self.action, "lead_id": self.lead_id, "target": self.target, "detail": self.detail}

    @classmethod
    def from_fields(cls, entry_id: str, raw: Mapping[Any, Any]) -> AuditEntry:
        f = {_s(k): _s(v) for k, v in raw.items()}
        try:
            ts = float(f.get("ts") or 0.0)
        except ValueError:
            ts = 0.0
        return cls(entry_id, ts, f.get("who", ""), f.get("role", ""), f.get("via", ""), f.get("action", ""),
                   f.get("lead", ""), f.get("target", ""), f.get("detail", ""))


def cli_who() -> str:
    """Who made a change from the command line: ``cli:<this machine's user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}"


class AuditError(RouterError):
    """An entry that cannot be recorded (no action, no author, an unknown channel)."""


async def record(redis: AnyRedis, *, who: str, role: str, action: str, via: Via, lead_id: str = "",
                 target: str = "", detail: str = "", now: float | None = None) -> AuditEntry:
    """Record one change: on the audit stream, and on the lead's own list when it is about a lead."""
    if not action.strip():
        raise AuditError("an audit entry needs an action, e.g. 'lead.accept'")
    if not who.strip():
        raise AuditError(f"an audit entry for {action!r} needs who made it (the token's name, or cli:<user>)")
    if via not in VIAS:
        raise AuditError(f"audit via={via!r} is not one of {', '.join(VIAS)}")
    entry = AuditEntry("", time.time() if now is None else now, who.strip()[:MAX_FIELD], role[:MAX_FIELD], via,
                       action.strip()[:MAX_FIELD], lead_id[:MAX_FIELD], target[:MAX_FIELD], detail[:MAX_DETAIL])
    pipe = redis.pipeline(transaction=False)  # two slots (the stream, the lead): two independent appends
    pipe.xadd(keys.AUDIT, entry.fields(), maxlen=keys.AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
    if lead_id:
        pipe.lpush(keys.lead_audit(lead_id), orjson.dumps(entry.fields()))
        pipe.ltrim(keys.lead_audit(lead_id), 0, keys.LEAD_AUDIT_KEPT - 1)
    out = await pipe.execute()
    return AuditEntry(_s(out[0]), entry.ts, entry.who, entry.role, entry.via, entry.action, entry.lead_id,
                      entry.target, entry.detail)


async def recent(redis: AnyRedis, limit: int = 100, *, before: str | None = None,
                 action: str = "") -> list[AuditEntry]:
    """The newest entries (older than stream id ``before`` when given), newest first; ``action`` filters by
    prefix ("lead." for every lead action).  Reads at most ``limit * 5`` entries to fill ``limit``."""
    top = f"({before}" if before else "+"
    raw: Any = await redis.xrevrange(keys.AUDIT, max=top, min="-", count=limit * (5 if action else 1))
    out = [AuditEntry.from_fields(_s(i), f) for i, f in raw]
    if action:
        out = [e for e in out if e.action.startswith(action)]
    return out[:limit]


async def for_lead(redis: AnyRedis, lead_id: str, limit: int = keys.LEAD_AUDIT_KEPT) -> list[AuditEntry]:
    """The entries about one lead, newest first."""
    raw = await redis.lrange(keys.lead_audit(lead_id), 0, limit - 1)
    out: list[AuditEntry] = []
    for item in raw:
        try:
            out.append(AuditEntry.from_fields("", orjson.loads(item)))
        except (orjson.JSONDecodeError, AttributeError):
            continue
    return out


async def forget_lead(redis: AnyRedis, lead_id: str, page: int = 1000) -> int:
    """Erasure: delete the lead's list and every stream entry naming it; returns how many stream entries went."""
    await redis.delete(keys.lead_audit(lead_id))
    deleted, start = 0, "-"
    while True:
        rows: Any = await redis.xrange(keys.AUDIT, min=start, max="+", count=page)
        if not rows:
            return deleted
        hits = [_s(i) for i, f in rows if _s(f.get(b"lead", f.get("lead", b""))) == lead_id]
        if hits:
            deleted += await redis.xdel(keys.AUDIT, *hits)
        if len(rows) < page:
            return deleted
        start = "(" + _s(rows[-1][0])
