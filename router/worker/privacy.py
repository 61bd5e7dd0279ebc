"""Erasure on request: ``leadrouter forget EMAIL``.

Deletes everything Redis holds about a person (the lead, its reasons and
timeline, counted event ids, identifiers, history, account membership, open
assignments and pending SLA steps) and leaves a tombstone without personal
data, so events that still arrive for that email are dropped (counted as
``forgotten``), not stored again.  The lead id is a digest of the email.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from router.storage import keys
from router.storage.store import RedisStore
from rules import RoutingConfig


@dataclass
class ForgetReport:
    lead_id: str
    existed: bool
    keys_deleted: int = 0
    identifiers: list[str] = field(default_factory=list)
    account: str | None = None


async def forget(store: RedisStore, routing: RoutingConfig, email: str, now: float | None = None) -> ForgetReport:
    redis: Redis = store.redis
    lead_id = keys.lead_id_for_email(email)
    lead = await store.lead_hash(lead_id)
    report = ForgetReport(lead_id=lead_id, existed=bool(lead) and lead.get("forgotten") != "1")
    # Identifier mappings that still point at this person.
    members = [_text(m) for m in await redis.smembers(keys.lead_ids(lead_id))]
    for member in members:
        kind, _, value = member.partition(":")
        key = keys.visitor(value) if kind == "v" else keys.user(value)
        current = await redis.get(key)
        if current is not None and _text(current) == lead_id:
            report.keys_deleted += await redis.delete(key)
        report.identifiers.append(kind)
    # Account membership.
    account = await redis.get(keys.lead_account(lead_id))
    if account is not None:
        kid = _text(account)
        acct = keys.account_keys(kid)
        pipe = redis.pipeline(transaction=True)
        pipe.zrem(acct[2], lead_id)
        pipe.zrem(acct[3], lead_id)
        pipe.hdel(acct[4], lead_id)
        await pipe.execute()
        report.account = kid
    # Assignments, SLA steps and lifecycle records.
    owner, team = lead.get("owner"), lead.get("team")
    doomed = [keys.lead_account(lead_id), keys.history(lead_id), keys.rejected(lead_id), keys.lead_ids(lead_id),
              keys.field_history(lead_id)]
    await redis.zrem(keys.REVIEW_QUEUE, lead_id)
    await redis.zrem(keys.REVIEW_RELEASED, lead_id)
    doomed += [keys.holders(lead_id, n) for n in range(1, int(lead.get("crossing", 0) or 0) + 1)]
    if owner:
        await redis.zrem(keys.rep_leads(owner), lead_id)
        if team:
            await redis.zrem(keys.team_open(team, owner), lead_id)
    for name in routing.teams:
        for step in ("remind", "reassign", "escalate"):
            zkey = keys.team_sla(name, step)
            async for member, _ in redis.zscan_iter(zkey, match=f"{lead_id} *"):
                await redis.zrem(zkey, member)
    report.keys_deleted += await redis.delete(*doomed, *keys.lead_keys(lead_id))
    await redis.hset(keys.lead(lead_id), mapping={"forgotten": "1", "forgotten_at": repr(now or time.time())})
    await store.log_identity("forget", lead_id=lead_id, ts=now or time.time())
    return report


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
