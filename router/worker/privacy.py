"""Erasure on request: ``leadrouter forget EMAIL``.

Redis is edited in place; everything kept outside it is made unreadable:

* **Shredded**: the person's data key (:mod:`router.storage.pii`) is deleted, so every
  sealed copy of their events (the collector's spool, the events topic) and of their
  alerts (the assignments and dead-letter topics), in backups too, can no longer be
  opened.  A keyed tombstone (an HMAC of the email, not a plain digest) makes the
  collector and the worker drop their later events.
* **Scrubbed from Redis**: the lead, its reasons, timeline, counted event ids,
  identifiers and the anonymous profiles merged into it, history, rejections and
  holders, account membership and committee role, open assignments, SLA and held
  items, the routing picks and sent-marks of its alerts, its id in reps' capacity
  counts (replaced by an anonymous entry, so the counts stay), its alerts waiting in rep
  digests (and its entry in other leads' queued alerts as an account colleague), its
  training rows on ``lr:outcomes``, its logged crossings and routing decisions on
  ``lr:vectors`` (feature vectors, scores, explanations), every ``lr:identity:log`` entry
  about it, and the ops console's live-feed, dead-letter and audit entries naming it
  (router/storage/live.py, audit.py).
* A marker on the lead (``forgotten``, expiring after ``keys.FORGET_GRACE_S``) stops
  events that were already being processed from writing the lead again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from router.storage import audit, keys, live
from router.storage.pii import Vault
from router.storage.redis import AnyRedis
from router.storage.scripts import register
from router.storage.store import RedisStore
from rules import RoutingConfig

STREAM_PAGE = 1000


@dataclass
class ForgetReport:
    lead_id: str
    existed: bool
    keys_deleted: int = 0
    identifiers: list[str] = field(default_factory=list)
    account: str | None = None
    key_shredded: bool = False
    outcomes_deleted: int = 0
    decisions_deleted: int = 0
    identity_log_deleted: int = 0
    digest_entries: int = 0
    console_entries_deleted: int = 0


async def forget(store: RedisStore, routing: RoutingConfig, email: str, now: float | None = None, *,
                 vault: Vault) -> ForgetReport:
    now = time.time() if now is None else now
    redis: AnyRedis = store.redis
    lead_id = keys.lead_id_for_email(email)
    normal = keys.normalise_email(email)
    lead = await store.lead_hash(lead_id)
    report = ForgetReport(lead_id=lead_id, existed=bool(lead) and lead.get("forgotten") != "1")
    doomed: list[str] = []
    # Identifier mappings that still point at this person, and the anonymous profiles merged into it.
    members = [_text(m) for m in await redis.smembers(keys.lead_ids(lead_id))]
    related = {lead_id}
    for member in members:
        kind, _, value = member.partition(":")
        key = keys.visitor(value) if kind == "v" else keys.user(value)
        current = await redis.get(key)
        if current is not None and _text(current) == lead_id:
            report.keys_deleted += await redis.delete(key)
        source = keys.lead_id_for_visitor(value) if kind == "v" else keys.lead_id_for_user(value)
        related.add(source)
        doomed += [*keys.lead_keys(source), keys.lead_ids(source), keys.history(source), keys.field_history(source)]
        report.identifiers.append(kind)
    # Account membership.
    account = await redis.get(keys.lead_account(lead_id))
    if account is not None:
        kid = _text(account)
        acct = keys.account_keys(kid)
        await register(redis, "account_forget.lua")(keys=[acct[2], acct[3], acct[4]], args=[lead_id])
        report.account = kid
    # Assignments, SLA steps, picks, sent-marks and lifecycle records.
    owner, team = lead.get("owner"), lead.get("team")
    crossings = range(1, int(lead.get("crossing", 0) or 0) + 1)
    doomed += [keys.lead_account(lead_id), keys.history(lead_id), keys.rejected(lead_id), keys.lead_ids(lead_id),
              keys.field_history(lead_id)]
    doomed += [keys.holders(lead_id, n) for n in crossings]
    for n in crossings:
        aid = f"{lead_id}:{n}"
        doomed += [keys.alert_sent(aid), *(keys.alert_sent(f"{aid}:{k}") for k in keys.SLA_STEPS)]
        doomed += [keys.team_pick(name, aid) for name in routing.teams]
    await redis.zrem(keys.REVIEW_QUEUE, lead_id)
    await redis.zrem(keys.REVIEW_RELEASED, lead_id)
    if owner:
        await redis.zrem(keys.rep_leads(owner), lead_id)
        if team:
            await redis.zrem(keys.team_open(team, owner), lead_id)
    for name in routing.teams:
        for step in (*keys.SLA_STEPS, keys.HELD_STEP):
            zkey = keys.team_sla(name, step)
            async for member, _ in redis.zscan_iter(zkey, match=f"{lead_id} *"):
                await redis.zrem(zkey, member)
            if step == keys.HELD_STEP:
                await redis.zrem(zkey, lead_id)
    for kind in keys.DUE_KINDS:  # the scheduler's due times (a recycle) name the lead
        await redis.zrem(keys.due(kind, keys.due_shard(lead_id)), lead_id)
    # A rep's capacity counts keep the assignment, but no longer say whose it was.
    for name, team_cfg in routing.teams.items():
        for rep in team_cfg.reps:
            zkey = keys.team_assigned(name, rep.rep_id)
            rename = register(redis, "zset_rename.lua")
            async for member, _ in redis.zscan_iter(zkey, match=f"{lead_id}:*"):
                await rename(keys=[zkey], args=[member, f"forgotten:{uuid.uuid4().hex}"])
    report.digest_entries = await _scrub_digests(redis, routing, lead_id, normal)
    report.keys_deleted += await redis.delete(*doomed, *keys.lead_keys(lead_id))
    # What a batch already in flight might still write is refused for a while (the marker expires).
    await register(redis, "hset_expire.lua")(keys=[keys.lead(lead_id)], args=[keys.FORGET_GRACE_S, "forgotten", "1"])
    # Streams: training rows and identity audit entries about the person.
    report.outcomes_deleted = await _scrub_stream(
        redis, keys.OUTCOMES, lambda f: _outcome_lead(f) in related)
    # The decision log: the feature vectors, scores and explanations logged at its crossings.
    report.decisions_deleted = await _scrub_stream(
        redis, keys.VECTORS, lambda f: _outcome_lead(f) in related)
    ids = {m for m in members} | {m.partition(":")[2] for m in members}
    report.identity_log_deleted = await _scrub_stream(
        redis, keys.IDENTITY_LOG, lambda f: bool((related | ids) & set(f.values())))
    # The console's live feed, dead letters and audit trail name the lead by id: gone too.
    report.console_entries_deleted = await live.forget_lead(redis, lead_id) + await audit.forget_lead(redis, lead_id)
    # Shred: every sealed copy outside Redis becomes unreadable; later events are dropped.
    subject = vault.subject(email)
    report.key_shredded = await vault.shred(subject, now)
    await store.log_identity("forget", subject=subject, ts=now)
    return report


async def _scrub_digests(redis: AnyRedis, routing: RoutingConfig, lead_id: str, email: str) -> int:
    """Drop the lead's queued digest alerts, and the person from colleagues' queued alerts."""
    changed = 0
    for rep in routing.reps:
        for key in (keys.digest_queue(rep.rep_id), keys.digest_batch(rep.rep_id)):
            async for field_name, body in redis.hscan_iter(key):
                aid = _text(field_name)
                if aid.startswith(f"{lead_id}:"):
                    changed += await redis.hdel(key, aid)
                    continue
                if email.encode() not in (body if isinstance(body, bytes) else str(body).encode()):
                    continue
                data = orjson.loads(body)
                account = data.get("account") or {}
                account["members"] = [m for m in account.get("members") or []
                                      if keys.normalise_email(str(m.get("email", ""))) != email]
                data["account"] = account
                await redis.hset(key, aid, orjson.dumps(data))
                changed += 1
    return changed


async def _scrub_stream(redis: AnyRedis, stream: str, doomed: Callable[[dict[str, str]], bool]) -> int:
    """XDEL every entry of ``stream`` that ``doomed`` picks; read in pages (forget is rare)."""
    deleted = 0
    start = "-"
    while True:
        page: Any = await redis.xrange(stream, min=start, max="+", count=STREAM_PAGE)
        if not page:
            return deleted
        hits = [entry_id for entry_id, fields in page
                if doomed({_text(k): _text(v) for k, v in fields.items()})]
        if hits:
            deleted += await redis.xdel(stream, *hits)
        if len(page) < STREAM_PAGE:
            return deleted
        start = "(" + _text(page[-1][0])


def _outcome_lead(fields: dict[str, str]) -> str:
    try:
        return str(orjson.loads(fields.get("json", "{}")).get("lead_id", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
