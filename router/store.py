"""Lead state in Redis: batched, atomic updates through Lua scripts.

Every multi-key change is one Lua call; a batch of events costs two round
trips (resolve visitor ids, then apply), whatever its size.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from models import Event, LeadView, Reason, Stage
from router import keys
from router.identity import Kind, Merge


def _lua(name: str) -> str:
    return resources.files("router").joinpath("lua", name).read_text()


@dataclass(frozen=True, slots=True)
class EventPlan:
    """What one event does to one lead, decided before touching Redis."""

    event: Event
    lead_id: str
    reasons: tuple[Reason, ...]
    points: float
    hand_raiser: bool
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    status: str  # scored | fired | resume | duplicate | moved
    before: float = 0.0
    after: float = 0.0
    crossing: int = 0
    trigger: str = ""
    moved_to: str = ""
    lead: Mapping[str, str] = field(default_factory=dict)
    reasons: tuple[Reason, ...] = ()
    recent: tuple[Mapping[str, Any], ...] = ()

    @property
    def needs_routing(self) -> bool:
        return self.status in ("fired", "resume")


def summarise(event: Event) -> dict[str, Any]:
    """The timeline entry kept for an event (what alerts show as activity)."""
    out: dict[str, Any] = {"type": event.type.value, "ts": event.ts, "event_id": event.event_id}
    for name in ("url", "title", "form_id", "campaign"):
        value = getattr(event, name)
        if value:
            out[name] = value
    return out


def lead_view_from_hash(data: Mapping[str, str], reasons: Sequence[Reason] = (), now: float | None = None,
                        half_life_s: float | None = None) -> LeadView:
    """Build a LeadView; with ``now`` and ``half_life_s`` the score is decayed to ``now``."""
    score = float(data.get("score", 0) or 0)
    asof = float(data.get("asof", 0) or 0)
    if now is not None and half_life_s and asof > 0 and now > asof:
        score = score * 2 ** (-(now - asof) / half_life_s)
    fields = {k[2:]: v for k, v in data.items() if k.startswith("f:")}
    stage_raw = data.get("stage", Stage.ANONYMOUS.value)
    try:
        stage = Stage(stage_raw)
    except ValueError:
        stage = Stage.ANONYMOUS
    return LeadView(
        lead_id=data.get("lead_id", ""),
        email=data.get("email") or None,
        score=score,
        stage=stage,
        fields=fields,
        reasons=tuple(reasons),
    )


class RedisStore:
    """The only code that talks to Redis about leads, teams and alerts."""

    def __init__(self, redis: Redis, *, seen_window_s: int = keys.SEEN_WINDOW_S) -> None:
        self.redis = redis
        self.seen_window_s = seen_window_s
        self._apply: AsyncScript = redis.register_script(_lua("apply_event.lua"))
        self._turn: AsyncScript = redis.register_script(_lua("assign_turn.lua"))
        self._commit: AsyncScript = redis.register_script(_lua("commit_assignment.lua"))
        self._freeze: AsyncScript = redis.register_script(_lua("merge_freeze.lua"))
        self._absorb: AsyncScript = redis.register_script(_lua("merge_absorb.lua"))
        self._cleanup: AsyncScript = redis.register_script(_lua("merge_cleanup.lua"))

    async def resolve_identities(self, visitor_ids: Sequence[str], user_ids: Sequence[str]
                                 ) -> tuple[dict[str, str], dict[str, str]]:
        """(visitor id -> lead id, user id -> lead id) for identifiers already mapped; one round trip."""
        vids = list(dict.fromkeys(visitor_ids))
        uids = list(dict.fromkeys(user_ids))
        if not vids and not uids:
            return {}, {}
        values = await self.redis.mget([keys.visitor(v) for v in vids] + [keys.user(u) for u in uids])
        pairs = list(zip(vids + uids, values, strict=True))
        visitors = {k: _s(x) for k, x in pairs[: len(vids)] if x}
        users = {k: _s(x) for k, x in pairs[len(vids):] if x}
        return visitors, users

    async def write_links(self, links: Mapping[tuple[Kind, str], str]) -> None:
        if not links:
            return
        pipe = self.redis.pipeline(transaction=False)
        for (kind, value), lead_id in links.items():
            pipe.set(keys.visitor(value) if kind == "v" else keys.user(value), lead_id)
        await pipe.execute()

    async def merge(self, m: Merge, *, half_life_s: float, now: float) -> str:
        """Fold profile ``m.source`` into ``m.target``; safe to repeat after a crash.

        Three single-slot steps: freeze the source (later events to it are
        'moved'), let the target absorb it (once, by marker), clean the source.
        """
        frozen = orjson.loads(await self._freeze(keys=keys.lead_keys(m.source), args=[m.target, keys.MERGED_TTL_S]))
        status = str(frozen["status"])
        if status == "frozen":
            h: dict[str, str] = frozen.get("hash") or {}
            if isinstance(h, list):
                h = {}
            fields = {k[2:]: v for k, v in h.items() if k.startswith("f:")}
            counts = {k[2:]: v for k, v in h.items() if k.startswith("n:")}
            await self._absorb(keys=keys.lead_keys(m.target), args=[
                m.source, h.get("score", "0"), h.get("asof", "0"), repr(half_life_s), self.seen_window_s,
                keys.REASONS_KEPT, keys.RECENT_KEPT, h.get("events", "0"), h.get("first_seen", ""), repr(now),
                orjson.dumps(frozen.get("seen") or []), orjson.dumps(frozen.get("reasons") or []),
                orjson.dumps(frozen.get("recent") or []), orjson.dumps(fields), orjson.dumps(counts),
            ])
            await self._cleanup(keys=keys.lead_keys(m.source), args=[m.target, keys.MERGED_TTL_S])
        await self.log_identity("merge" if status in ("frozen", "done") else f"merge_{status}",
                                source=m.source, target=m.target, identifier=m.identifier, event_id=m.event_id,
                                ts=m.ts)
        return status

    async def log_identity(self, kind: str, **fields: object) -> None:
        entry: dict[Any, Any] = {"kind": kind, **{k: str(v) for k, v in fields.items()}}
        await self.redis.xadd(keys.IDENTITY_LOG, entry, maxlen=keys.IDENTITY_LOG_MAXLEN, approximate=True)

    async def apply(self, plans: Sequence[EventPlan], *, threshold: float, half_life_s: float,
                    now: float | None = None) -> list[ApplyResult]:
        """Apply a batch of plans in one pipelined round trip, in order."""
        if not plans:
            return []
        now = time.time() if now is None else now
        pipe = self.redis.pipeline(transaction=False)
        for plan in plans:
            ev = plan.event
            kk = keys.lead_keys(plan.lead_id)
            argv: list[Any] = [
                ev.event_id,
                repr(ev.ts),
                repr(plan.points),
                ev.type.value,
                orjson.dumps(summarise(ev)),
                repr(threshold),
                repr(half_life_s),
                "1" if plan.hand_raiser else "0",
                orjson.dumps(dict(plan.fields)),
                keys.normalise_email(ev.email) if ev.email else "",
                plan.lead_id,
                repr(now),
                self.seen_window_s,
                ev.user_id or "",
                keys.REASONS_KEPT,
                keys.RECENT_KEPT,
                *(orjson.dumps(r.to_dict()) for r in plan.reasons),
            ]
            await self._apply(keys=kk, args=argv, client=pipe)
        raw = await pipe.execute()
        return [_parse_apply(r) for r in raw]

    async def assign_turn(self, team: str, assignment_id: str, rep_ids: Sequence[str]) -> str:
        rep = await self._turn(
            keys=[keys.team_rr(team), keys.team_turn(team, assignment_id)],
            args=[keys.TURN_TTL_S, *rep_ids],
        )
        return rep.decode() if isinstance(rep, bytes) else str(rep)

    async def commit_assignment(self, lead_id: str, crossing: int, assignment_id: str, rep_id: str,
                                rep_name: str, team: str, rule: str, rules_version: str, ts: float) -> bool:
        done = await self._commit(
            keys=[keys.lead(lead_id)],
            args=[crossing, assignment_id, rep_id, rep_name, team, rule, rules_version, repr(ts)],
        )
        await self.redis.zadd(keys.rep_leads(rep_id), {lead_id: ts})
        return bool(done)

    async def sent_channels(self, assignment_id: str) -> set[str]:
        raw = await self.redis.hkeys(keys.alert_sent(assignment_id))
        return {x.decode() if isinstance(x, bytes) else x for x in raw}

    async def mark_sent(self, assignment_id: str, channel: str, ts: float) -> None:
        key = keys.alert_sent(assignment_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, channel, repr(ts))
        pipe.expire(key, keys.SENT_TTL_S)
        await pipe.execute()

    async def lead_hash(self, lead_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(keys.lead(lead_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def lead_reasons(self, lead_id: str, limit: int = keys.REASONS_KEPT) -> list[Reason]:
        raw = await self.redis.lrange(keys.reasons(lead_id), 0, limit - 1)
        return [Reason.from_dict(orjson.loads(r)) for r in raw]

    async def lead_recent(self, lead_id: str, limit: int = keys.RECENT_KEPT) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(keys.recent(lead_id), 0, limit - 1)
        return [orjson.loads(r) for r in raw]


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _parse_apply(raw: Any) -> ApplyResult:
    data = orjson.loads(raw)
    lead = data.get("lead") or {}
    if isinstance(lead, list):  # cjson encodes an empty table as []
        lead = {}
    return ApplyResult(
        status=data["status"],
        before=float(data.get("before", 0.0)),
        after=float(data.get("after", 0.0)),
        crossing=int(data.get("crossing", 0) or 0),
        trigger=str(data.get("trigger") or ""),
        moved_to=str(data.get("to") or ""),
        lead={str(k): str(v) for k, v in lead.items()},
        reasons=tuple(Reason.from_dict(orjson.loads(r)) for r in data.get("reasons") or ()),
        recent=tuple(orjson.loads(r) for r in data.get("recent") or ()),
    )
