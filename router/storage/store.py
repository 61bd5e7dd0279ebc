"""Lead state in Redis: batched, atomic updates through Lua scripts.

Every multi-key change is one Lua call; a batch of events costs two round
trips (resolve visitor ids, then apply), whatever its size.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

import orjson
from redis.commands.core import AsyncScript

from models import Reason
from models.identity import Kind, Merge, MergeStatus
from models.pipeline import (
    AccountPlan,
    AccountResult,
    AccountStatus,
    ApplyResult,
    ApplyStatus,
    EventPlan,
    RepSlot,
    summarise,
)
from router.storage import keys
from router.storage.records import (
    decode_field_change,
    decode_reasons,
    decode_summary,
    encode_reason,
    encode_summary,
    field_change_head,
    reason_parts,
)
from router.storage.redis import AnyRedis, mget
from router.storage.scripts import AnyPipeline, execute, lua, queue
from scoring import SalesReady, ScoringConfig, day_bucket, ready_clauses_json, reengage_json
from scoring.account_intent import AccountIntentConfig
from scoring.touch import MAX_NAME, visit_cfg, visit_step


def _lua(name: str) -> str:
    return lua(name)


@dataclass(frozen=True, slots=True)
class LeadRules:
    """What the lead script needs from the scoring config, encoded once per batch."""

    half_life_s: float
    clauses_json: str
    daily_cap: float | None = None
    recycle_below: float | None = None
    identify_window_s: float = 0.0
    versions: str = ""  # e.g. "scoring=v3:0381…;icp=5a2…": recorded on the lead and its crossings
    reengage_json: str = ""  # the re-engagement rules (scoring.reengage_json); '' for the default

    @classmethod
    def from_config(cls, config: ScoringConfig, versions: str = "") -> LeadRules:
        return cls(config.half_life_s, ready_clauses_json(config), config.daily_cap, config.ready.recycle_below,
                   config.identify_window_s, versions, reengage_json(config))

    @classmethod
    def threshold_only(cls, threshold: float, half_life_s: float) -> LeadRules:
        return cls(half_life_s, ready_clauses_json(SalesReady.default(threshold)))


class RedisStore:
    """The only code that talks to Redis about leads, teams and alerts."""

    def __init__(self, redis: AnyRedis, *, seen_window_s: int = keys.SEEN_WINDOW_S,
                 anonymous_ttl_s: int = keys.ANONYMOUS_TTL_S, known_link_ttl_s: int = keys.KNOWN_LINK_TTL_S,
                 member_horizon_s: float | None = None, merged_ttl_s: int = keys.MERGED_TTL_S) -> None:
        """``anonymous_ttl_s``: anonymous profiles, their links and account ties expire this long after
        their last event (0: never); it should not be shorter than ``seen_window_s``, or a redelivered
        event of an expired profile counts again.  ``known_link_ttl_s``: a visitor or user id linked to
        a known lead, after its last use (0: never).  ``member_horizon_s``: account members inactive
        this long in event time leave the account (default ``anonymous_ttl_s``; 0: never).
        ``merged_ttl_s``: how long a merged profile's forwarding stub is kept."""
        self.redis = redis
        self.seen_window_s = seen_window_s
        self.anonymous_ttl_s = max(0, int(anonymous_ttl_s))
        self.known_link_ttl_s = max(0, int(known_link_ttl_s))
        self.member_horizon_s = float(self.anonymous_ttl_s if member_horizon_s is None else member_horizon_s)
        self.merged_ttl_s = max(1, int(merged_ttl_s))
        self._apply: AsyncScript = redis.register_script(_lua("apply_event.lua"))
        self._commit: AsyncScript = redis.register_script(_lua("commit_assignment.lua"))
        self._freeze: AsyncScript = redis.register_script(_lua("merge_freeze.lua"))
        self._absorb: AsyncScript = redis.register_script(_lua("merge_absorb.lua"))
        self._cleanup: AsyncScript = redis.register_script(_lua("merge_cleanup.lua"))
        self._account: AsyncScript = redis.register_script(_lua("account_event.lua"))
        self._claim: AsyncScript = redis.register_script(_lua("claim.lua"))

    async def resolve_identities(self, visitor_ids: Sequence[str], user_ids: Sequence[str]
                                 ) -> tuple[dict[str, str], dict[str, str]]:
        """(visitor id -> lead id, user id -> lead id) for identifiers already mapped; one round trip."""
        vids = list(dict.fromkeys(visitor_ids))
        uids = list(dict.fromkeys(user_ids))
        if not vids and not uids:
            return {}, {}
        values = await mget(self.redis, [keys.visitor(v) for v in vids] + [keys.user(u) for u in uids])
        pairs = list(zip(vids + uids, values, strict=True))
        visitors = {k: _s(x) for k, x in pairs[: len(vids)] if x}
        users = {k: _s(x) for k, x in pairs[len(vids):] if x}
        return visitors, users

    def link_ttl(self, lead_id: str) -> int | None:
        """Seconds an identity link to ``lead_id`` lives after its last use (None: for good)."""
        ttl = self.known_link_ttl_s if keys.is_email_lead(lead_id) else self.anonymous_ttl_s
        return ttl or None

    async def write_links(self, links: Mapping[tuple[Kind, str], str],
                          used: Mapping[tuple[Kind, str], str] | None = None) -> None:
        """Write new identity links, and refresh the TTL of the links a batch ``used`` (identifier -> lead).

        One pipelined round trip; a link's TTL follows its lead (:meth:`link_ttl`).
        """
        if not links and not used:
            return
        pipe = self.redis.pipeline(transaction=False)
        self._queue_links(pipe, links, used or {})
        await execute(pipe)

    def _queue_links(self, pipe: AnyPipeline, links: Mapping[tuple[Kind, str], str],
                     used: Mapping[tuple[Kind, str], str]) -> None:
        for (kind, value), lead_id in links.items():
            ttl = self.link_ttl(lead_id)
            pipe.set(keys.visitor(value) if kind == "v" else keys.user(value), lead_id, ex=ttl)
            pipe.sadd(keys.lead_ids(lead_id), f"{kind}:{value}")
            if ttl is not None and not keys.is_email_lead(lead_id):
                pipe.expire(keys.lead_ids(lead_id), ttl)
        for (kind, value), lead_id in used.items():
            if (kind, value) in links:
                continue
            ttl = self.link_ttl(lead_id)
            key = keys.visitor(value) if kind == "v" else keys.user(value)
            if ttl is None:
                pipe.persist(key)
            else:
                pipe.expire(key, ttl)

    async def merge(self, m: Merge, *, half_life_s: float, now: float) -> MergeStatus:
        """Fold profile ``m.source`` into ``m.target``; safe to repeat after a crash."""
        return (await self.merge_many([m], half_life_s=half_life_s, now=now))[0]

    async def merge_many(self, merges: Sequence[Merge], *, half_life_s: float, now: float) -> list[MergeStatus]:
        """Fold each source into its target; safe to repeat after a crash.

        Three single-slot steps, each pipelined over the whole list: freeze the
        sources (later events to them are 'moved'), let the targets absorb them
        (once, by marker), clean the sources and log every merge.  Merges that
        depend on each other (a source that is another merge's target) run in
        later waves, in order.  The statuses come in the order of ``merges``.
        """
        by_merge: dict[int, MergeStatus] = {}
        for wave in _waves(merges):
            pipe = self.redis.pipeline(transaction=False)
            for m in wave:
                await queue(pipe, self._freeze, keys=keys.lead_keys(m.source), args=[m.target, self.merged_ttl_s])
            frozen = [orjson.loads(r) for r in await execute(pipe)]
            pipe = self.redis.pipeline(transaction=False)
            for m, f in zip(wave, frozen, strict=True):
                if f["status"] == "frozen":
                    ttl = 0 if keys.is_email_lead(m.target) else self.anonymous_ttl_s
                    await queue(pipe, self._absorb, keys=keys.lead_keys(m.target),
                                args=[*_absorb_args(m, f, half_life_s, now, self.seen_window_s), ttl,
                                      orjson.dumps(web_state(f.get("hash") or {}))])
            await execute(pipe)
            pipe = self.redis.pipeline(transaction=False)
            for m, f in zip(wave, frozen, strict=True):
                status = _status(f["status"], _MERGE_STATUSES)
                if status == "frozen":
                    await queue(pipe, self._cleanup, keys=keys.lead_keys(m.source), args=[m.target, self.merged_ttl_s])
                kind = "merge" if status in ("frozen", "done") else f"merge_{status}"
                pipe.xadd(keys.IDENTITY_LOG, {"kind": kind, "source": m.source, "target": m.target,
                                              "identifier": m.identifier, "event_id": m.event_id, "ts": str(m.ts)},
                          maxlen=keys.IDENTITY_LOG_MAXLEN, approximate=True)
                by_merge[id(m)] = status
            await execute(pipe)
        return [by_merge[id(m)] for m in merges]

    async def log_identity(self, kind: str, **fields: object) -> None:
        entry: dict[Any, Any] = {"kind": kind, **{k: str(v) for k, v in fields.items()}}
        await self.redis.xadd(keys.IDENTITY_LOG, entry, maxlen=keys.IDENTITY_LOG_MAXLEN, approximate=True)

    async def apply(self, plans: Sequence[EventPlan], *, threshold: float, half_life_s: float,
                    now: float | None = None, rules: LeadRules | None = None) -> list[ApplyResult]:
        """Apply a batch of plans in one pipelined round trip, in order.

        ``rules`` carries the sales-ready clauses, caps and recycle level; without
        it the lead is sales-ready at ``threshold`` or on a hand-raiser.
        """
        results, _ = await self.apply_with_accounts(plans, (), threshold=threshold, half_life_s=half_life_s,
                                                    now=now, rules=rules)
        return results

    def _lead_cfg(self, rules: LeadRules, now: float) -> bytes:
        cfg: dict[str, Any] = {"hl": rules.half_life_s, "now": now, "sw": self.seen_window_s,
                               "rk": keys.REASONS_KEPT, "ck": keys.RECENT_KEPT, "at": self.anonymous_ttl_s,
                               "rc": orjson.Fragment(rules.clauses_json), "hk": keys.HISTORY_KEPT,
                               "fk": keys.FIELD_HISTORY_KEPT, **visit_cfg()}
        if rules.reengage_json:
            cfg["re"] = orjson.Fragment(rules.reengage_json)
        if rules.daily_cap is not None:
            cfg["dc"] = rules.daily_cap
        if rules.recycle_below is not None:
            cfg["rb"] = rules.recycle_below
        if rules.identify_window_s > 0:
            cfg["iw"] = rules.identify_window_s
        if rules.versions:
            cfg["vs"] = rules.versions
        return orjson.dumps(cfg)

    async def apply_with_accounts(self, plans: Sequence[EventPlan], accounts: Sequence[AccountPlan], *,
                                  threshold: float, half_life_s: float, now: float | None = None,
                                  intent: AccountIntentConfig | None = None, rules: LeadRules | None = None,
                                  links: Mapping[tuple[Kind, str], str] | None = None,
                                  used_links: Mapping[tuple[Kind, str], str] | None = None,
                                  lead_accounts: Mapping[str, str] | None = None,
                                  ) -> tuple[list[ApplyResult], list[AccountResult]]:
        """Leads and their accounts in one pipelined round trip; each script one hash slot.

        ``links``, ``used_links`` (see :meth:`write_links`) and ``lead_accounts`` (see
        :meth:`set_lead_accounts`) are the batch's identity links and account ties,
        written in the same round trip ahead of the scripts.
        """
        if not plans and not accounts:
            await self.write_links(links or {}, used_links)
            await self.set_lead_accounts(lead_accounts or {})
            return [], []
        now = time.time() if now is None else now
        intent = intent or AccountIntentConfig()
        rules = rules or LeadRules.threshold_only(threshold, half_life_s)
        pipe = self.redis.pipeline(transaction=False)
        self._queue_links(pipe, links or {}, used_links or {})
        self._queue_lead_accounts(pipe, lead_accounts or {})
        ahead = len(pipe)
        lead_cfg = self._lead_cfg(rules, now)
        # One call per lead and one per account, each with its events in batch order: a
        # Zipf-skewed batch has far fewer of either than events, and each call stays in one slot.
        by_lead: dict[str, list[int]] = {}
        for i, plan in enumerate(plans):
            by_lead.setdefault(plan.lead_id, []).append(i)
        for lead_id, idx in by_lead.items():
            payloads = [_lead_payload(plans[i]) for i in idx]
            await queue(pipe, self._apply, keys=keys.apply_keys(lead_id), args=[orjson.dumps(payloads), lead_cfg])
        acct_cfg = orjson.dumps({"now": now, "sw": self.seen_window_s, "hl": half_life_s, "w": intent.window_s,
                                 "th": intent.threshold, "pp": intent.per_person, "pr": intent.per_role,
                                 "ep": keys.DECAY_EPOCH, "mh": self.member_horizon_s})
        by_account: dict[str, list[int]] = {}
        for i, a in enumerate(accounts):
            by_account.setdefault(a.key_id, []).append(i)
        for key_id, idx in by_account.items():
            items = [{"e": a.event_id, "t": a.ts, "p": a.points, "i": a.lead_id, "r": a.role, "n": a.name,
                      "d": a.domain, "k": a.known} for a in (accounts[i] for i in idx)]
            await queue(pipe, self._account, keys=keys.account_keys(key_id), args=[orjson.dumps(items), acct_cfg])
        raw = (await execute(pipe))[ahead:]
        leads: list[ApplyResult | None] = [None] * len(plans)
        for idx, replies in zip(by_lead.values(), raw[: len(by_lead)], strict=True):
            for i, r in zip(idx, replies, strict=True):
                leads[i] = _parse_apply(r)
        accts: list[AccountResult | None] = [None] * len(accounts)
        for idx, replies in zip(by_account.values(), raw[len(by_lead):], strict=True):
            for i, r in zip(idx, replies, strict=True):
                accts[i] = _parse_account(accounts[i].key_id, accounts[i].event_id, r)
        done_leads = [r for r in leads if r is not None]
        done_accts = [a for a in accts if a is not None]
        await self.index_recycles(zip((p.lead_id for p in plans), done_leads, strict=True))
        return done_leads, done_accts

    async def index_recycles(self, results: Iterable[tuple[str, ApplyResult]]) -> None:
        """Put each armed lead's exact recycle moment in its due shard (one round trip; none when nothing is armed).

        The moment was computed in the lead's own Lua step; this index only tells the
        scheduler when to look (router/worker/scheduler.py recomputes it on the lead).
        A crash in between is repaired by the redelivered event, which returns it again.
        """
        due = {lead_id: r.recycle_at for lead_id, r in results if r.recycle_at is not None}
        if not due:
            return
        pipe = self.redis.pipeline(transaction=False)
        for lead_id, at in due.items():
            pipe.zadd(keys.due("recycle", keys.due_shard(lead_id)), {lead_id: at})
        await execute(pipe)

    async def due_claim(self, kind: str, now: float, lease_s: float, limit: int) -> list[tuple[int, str, str]]:
        """Lease up to ``limit`` items due by ``now`` in every shard of ``kind``: [(shard, item, lease)], one round trip."""
        lease = repr(now + lease_s)
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(keys.DUE_SHARDS):
            await queue(pipe, self._script("sla_claim.lua"), keys=[keys.due(kind, shard)], args=[repr(now), lease, limit])
        raw = await execute(pipe)
        return [(shard, _s(m), lease) for shard, items in enumerate(raw) for m in items]

    async def due_settle(self, kind: str, settled: Sequence[tuple[int, str, str, float | None]]) -> None:
        """Remove (next None) or re-arm each claimed (shard, item, lease, next) unless re-armed meanwhile."""
        if not settled:
            return
        pipe = self.redis.pipeline(transaction=False)
        for shard, item, lease, nxt in settled:
            await queue(pipe, self._script("due_settle.lua"), keys=[keys.due(kind, shard)],
                                                 args=[item, lease, "" if nxt is None else repr(nxt)])
        await execute(pipe)

    async def due_pending(self, kind: str) -> dict[str, float]:
        """Every item of ``kind`` with its due time (tests and ``leads show``; reads every shard)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(keys.DUE_SHARDS):
            pipe.zrange(keys.due(kind, shard), 0, -1, withscores=True)
        out: dict[str, float] = {}
        for items in await execute(pipe):
            out.update({_s(m): float(t) for m, t in items})
        return out

    async def push_figure(self, record: Mapping[str, Any]) -> None:
        """Hand one SLA figure (an accept, a manual reassignment) to the workers' metrics (capped list)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(keys.SLA_FIGURES, orjson.dumps(dict(record)))
        pipe.ltrim(keys.SLA_FIGURES, -keys.SLA_FIGURES_MAX, -1)
        await execute(pipe)

    async def pop_figures(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` SLA figures, oldest first; each is popped by exactly one worker."""
        raw: Any = await self.redis.lpop(keys.SLA_FIGURES, limit)
        out: list[dict[str, Any]] = []
        for item in raw or ():
            try:
                rec = orjson.loads(item)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    async def recycle_leads(self, lead_ids: Sequence[str], now: float, half_life_s: float,
                            recycle_below: float) -> list[dict[str, Any]]:
        """The lead-side step of each due recycle (router/storage/lua/lead_recycle.lua), pipelined."""
        if not lead_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for lead_id in lead_ids:
            await queue(pipe, self._script("lead_recycle.lua"), keys=[keys.lead(lead_id), keys.history(lead_id)],
                        args=[repr(now), repr(half_life_s), repr(recycle_below), keys.HISTORY_KEPT])
        return [orjson.loads(r) for r in await execute(pipe)]

    async def set_probabilities(self, probs: Mapping[str, float], rules: LeadRules, now: float,
                                batch_id: str) -> dict[str, ApplyResult]:
        """Store the model's probability per lead and re-check the sales-ready rule, atomically each."""
        if not probs:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        cfg = self._lead_cfg(rules, now)
        for lead_id, p in probs.items():
            payload = [{"mode": "p", "i": lead_id, "e": f"p:{batch_id}:{lead_id}", "pr": p}]
            await queue(pipe, self._apply, keys=keys.apply_keys(lead_id), args=[orjson.dumps(payload), cfg])
        raw = await execute(pipe)
        out = {lead_id: _parse_apply(r[0]) for lead_id, r in zip(probs, raw, strict=True)}
        await self.index_recycles(out.items())
        return out

    async def lead_hashes(self, lead_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Several leads' hashes in one round trip."""
        unique = list(dict.fromkeys(lead_ids))
        if not unique:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for lid in unique:
            pipe.hgetall(keys.lead(lid))
        raw = await execute(pipe)
        return {lid: {_s(k): _s(v) for k, v in h.items()} for lid, h in zip(unique, raw, strict=True)}

    async def availability_overrides(self, rep_ids: Sequence[str]) -> dict[str, str]:
        """Rep id -> 'until' date ('' for open-ended) of out-of-office overrides set through the admin API."""
        if not rep_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for rep_id in rep_ids:
            pipe.hmget(keys.rep_availability(rep_id), "out_of_office", "until")
        raw = await execute(pipe)
        return {rep_id: _s(v[1] or b"") for rep_id, v in zip(rep_ids, raw, strict=True) if v[0] and _s(v[0]) == "1"}

    async def lead_accounts(self, lead_ids: Sequence[str]) -> dict[str, str]:
        """Lead id -> account key id, for the leads already tied to an account."""
        unique = list(dict.fromkeys(lead_ids))
        if not unique:
            return {}
        values = await mget(self.redis, [keys.lead_account(x) for x in unique])
        return {lid: _s(v) for lid, v in zip(unique, values, strict=True) if v}

    async def set_lead_accounts(self, mapping: Mapping[str, str]) -> None:
        if not mapping:
            return
        pipe = self.redis.pipeline(transaction=False)
        self._queue_lead_accounts(pipe, mapping)
        await execute(pipe)

    def _queue_lead_accounts(self, pipe: AnyPipeline, mapping: Mapping[str, str]) -> None:
        for lead_id, key_id in mapping.items():
            # An anonymous profile's tie expires with it (re-written, so refreshed, by each of its events).
            ttl = None if keys.is_email_lead(lead_id) else self.anonymous_ttl_s or None
            pipe.set(keys.lead_account(lead_id), key_id, ex=ttl)

    async def force_ready(self, lead_id: str, trigger_id: str, trigger: str, reason: Reason,
                          now: float) -> ApplyResult:
        """Make a lead sales-ready for another reason than its own score (its account's intent), once."""
        payload = [{"mode": "f", "i": lead_id, "e": trigger_id, "trigger": trigger,
                    "reason": encode_reason(reason)}]
        cfg = orjson.dumps({"now": now, "rc": [], "hk": keys.HISTORY_KEPT})
        replies = await self._apply(keys=keys.apply_keys(lead_id), args=[orjson.dumps(payload), cfg])
        return _parse_apply(replies[0])

    async def account_done(self, key_id: str, event_id: str) -> None:
        """Close an account crossing once its lead has been routed."""
        acct = keys.account_keys(key_id)[0]
        pending = await self.redis.hget(acct, "pending_event")
        if pending is not None and _s(pending) == event_id:
            await self.redis.hdel(acct, "pending_event", "pending_lead")

    async def account_hash(self, key_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(keys.account_keys(key_id)[0])
        return {_s(k): _s(v) for k, v in raw.items()}

    async def account_members(self, key_id: str, limit: int = 15) -> list[tuple[str, float]]:
        """Known members, most engaged first (forward-decayed points)."""
        raw: list[Any] = await self.redis.zrevrange(keys.account_keys(key_id)[3], 0, limit - 1, withscores=True)
        return [(_s(pair[0]), float(pair[1])) for pair in raw]

    async def commit_assignment(self, lead_id: str, crossing: int, assignment_id: str, rep_id: str,
                                rep_name: str, team: str, rule: str, rules_version: str, ts: float) -> bool:
        done = await self._commit(
            keys=[keys.lead(lead_id)],
            args=[crossing, assignment_id, rep_id, rep_name, team, rule, rules_version, repr(ts)],
        )
        await self.redis.zadd(keys.rep_leads(rep_id), {lead_id: ts})
        return bool(done)

    async def reengage_notified(self, lead_id: str, crossing: int, alert_id: str, rep_id: str, rep_name: str,
                                ts: float) -> bool:
        """Close a re-engagement its owner was told about (router/storage/lua/reengage_notify.lua); once."""
        done = await self._script("reengage_notify.lua")(
            keys=[keys.lead(lead_id), keys.history(lead_id)],
            args=[crossing, alert_id, rep_id, rep_name, repr(ts), keys.HISTORY_KEPT],
        )
        return bool(done)

    async def sent_channels(self, assignment_id: str) -> set[str]:
        raw = await self.redis.hkeys(keys.alert_sent(assignment_id))
        return {x.decode() if isinstance(x, bytes) else x for x in raw}

    async def claim_send(self, assignment_id: str, channel: str, holder: str, op: str = "take",
                         ttl_ms: int = 15_000) -> bool:
        """take / renew / drop the lease on delivering one channel of one assignment."""
        got = await self._claim(keys=[keys.alert_claim(assignment_id, channel)], args=[op, holder, ttl_ms])
        return bool(got)

    async def mark_sent(self, assignment_id: str, channel: str, ts: float) -> None:
        key = keys.alert_sent(assignment_id)
        await self._script("hset_expire.lua")(keys=[key], args=[keys.SENT_TTL_S, channel, repr(ts)])

    async def lead_hash(self, lead_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(keys.lead(lead_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def lead_reasons(self, lead_id: str, limit: int = keys.REASONS_KEPT) -> list[Reason]:
        raw = await self.redis.lrange(keys.reasons(lead_id), 0, limit - 1)
        return decode_reasons(raw)

    async def lead_recent(self, lead_id: str, limit: int = keys.RECENT_KEPT) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(keys.recent(lead_id), 0, limit - 1)
        return [decode_summary(r) for r in raw]

    # --- distribution, lead lifecycle and SLA (issue 5 items 4-6; appended) -------------------------

    def _script(self, name: str) -> AsyncScript:
        """A script of router/lua, registered on first use and cached on this store."""
        cache: dict[str, AsyncScript] = self.__dict__.setdefault("_lr_scripts", {})
        if name not in cache:
            cache[name] = self.redis.register_script(_lua(name))
        return cache[name]

    async def distribute(self, team: str, strategy: str, assignment_id: str, lead_id: str, now: float,
                         reps: Sequence[RepSlot], *, remind_after_s: float | None = None,
                         deadline_after_s: float | None = None, deadline_step: str = "reassign",
                         allow_excluded: bool = True, fallback: str = "earliest",
                         outcome: str = "") -> dict[str, Any]:
        """Pick (or recall) the rep for ``assignment_id`` in one atomic step on the team's slot.

        See router/storage/lua/distribute.lua.  Returns the pick record: rep (False when
        nothing was recorded: every rep excluded with ``allow_excluded`` off, the whole
        team out of office, or nobody available with ``fallback`` 'none'), queued,
        reason, status (new | existing | none), skipped {rep: why}, load and SLA times.
        """
        kk = [keys.team_rr(team), keys.team_swrr(team), keys.team_pick(team, assignment_id),
              keys.team_sla(team, "remind"), keys.team_sla(team, deadline_step)]
        argv: list[Any] = [
            strategy, assignment_id, lead_id, repr(now), keys.PICK_TTL_S, keys.CAPACITY_WINDOW_S,
            keys.OPEN_WINDOW_S, "" if remind_after_s is None else repr(remind_after_s),
            "" if deadline_after_s is None else repr(deadline_after_s), keys.sla_member(lead_id, assignment_id),
            "1" if allow_excluded else "0", deadline_step, len(reps), fallback, outcome,
        ]
        for r in reps:
            kk += [keys.team_assigned(team, r.rep_id), keys.team_open(team, r.rep_id)]
            argv += [r.rep_id, r.weight, r.capacity_day or 0, r.capacity_30d or 0, repr(r.day_start),
                     r.unavailable, "1" if r.excluded else "0", repr(r.sla_base)]
        raw = await self._script("distribute.lua")(keys=kk, args=argv)
        out: dict[str, Any] = orjson.loads(raw)
        return out

    async def lead_sla(self, op: str, lead_id: str, assignment_id: str, crossing: int, now: float, *,
                       rep_id: str = "", rep_name: str = "", new_assignment_id: str = "",
                       extra: Mapping[str, Any] | None = None, team: str = "") -> dict[str, Any]:
        """The lead-side step of an assignment or SLA action (router/storage/lua/lead_sla.lua)."""
        kk = [keys.lead(lead_id), keys.history(lead_id), keys.holders(lead_id, crossing), keys.rejected(lead_id)]
        argv: list[Any] = [op, assignment_id, repr(now), keys.HISTORY_KEPT, keys.HOLDERS_TTL_S, str(crossing),
                           rep_id, rep_name, new_assignment_id, orjson.dumps(dict(extra or {})), team]
        raw = await self._script("lead_sla.lua")(keys=kk, args=argv)
        out: dict[str, Any] = orjson.loads(raw)
        return out

    async def lead_transition(self, action: str, lead_id: str, rep_id: str, now: float, *, target: str = "",
                              reason: str = "", score_factor: float = 1.0) -> dict[str, Any]:
        """One lifecycle transition (router/storage/lua/lead_transition.lua); ``ok`` false carries an error code."""
        kk = [keys.lead(lead_id), keys.history(lead_id), keys.rejected(lead_id)]
        argv: list[Any] = [action, rep_id, repr(now), target, reason, repr(score_factor), keys.HISTORY_KEPT,
                           keys.REJECTED_TTL_S]
        raw = await self._script("lead_transition.lua")(keys=kk, args=argv)
        out: dict[str, Any] = orjson.loads(raw)
        return out

    async def rejected_reps(self, lead_id: str) -> set[str]:
        raw = await self.redis.smembers(keys.rejected(lead_id))
        return {_s(x) for x in raw}

    async def lead_history(self, lead_id: str, limit: int = keys.HISTORY_KEPT) -> list[dict[str, Any]]:
        """The lead's history entries, oldest first (the last ``limit``)."""
        raw = await self.redis.lrange(keys.history(lead_id), -limit, -1)
        return [orjson.loads(r) for r in raw]

    async def release_open(self, team: str, rep_id: str, lead_id: str) -> None:
        """The lead no longer counts toward the rep's open leads (idempotent; two single-key steps)."""
        await self.redis.zrem(keys.team_open(team, rep_id), lead_id)
        await self.redis.zrem(keys.rep_leads(rep_id), lead_id)

    async def note_rep_lead(self, rep_id: str, lead_id: str, ts: float) -> None:
        """Keep :func:`keys.rep_leads` in step when the SLA hands a lead to another rep."""
        await self.redis.zadd(keys.rep_leads(rep_id), {lead_id: ts})

    async def open_leads(self, team: str, rep_id: str) -> int:
        return int(await self.redis.zcard(keys.team_open(team, rep_id)))

    async def sla_claim(self, team: str, step: str, now: float, lease_s: float, limit: int) -> list[str]:
        """Lease up to ``limit`` SLA items due by ``now`` (router/storage/lua/sla_claim.lua); members are "lead assignment"."""
        raw = await self._script("sla_claim.lua")(keys=[keys.team_sla(team, step)],
                                                  args=[repr(now), repr(now + lease_s), limit])
        return [_s(x) for x in raw]

    async def sla_done(self, team: str, step: str, member: str) -> None:
        await self.redis.zrem(keys.team_sla(team, step), member)

    async def sla_retry(self, team: str, step: str, member: str, at: float) -> None:
        await self.redis.zadd(keys.team_sla(team, step), {member: at}, xx=True)

    async def sla_pending(self, team: str, step: str) -> list[tuple[str, float]]:
        raw: list[Any] = await self.redis.zrange(keys.team_sla(team, step), 0, -1, withscores=True)
        return [(_s(pair[0]), float(pair[1])) for pair in raw]

    async def record_outcome(self, lead_id: str, line: bytes) -> str:
        """Append a training row to the outcomes stream, then clear the lead's ``outcome_pending``.

        Two slots, so two steps: a crash in between leaves ``outcome_pending`` set
        and repeating the won/lost call replays the row.
        """
        entry_id = await self.redis.xadd(keys.OUTCOMES, {"json": line}, maxlen=keys.OUTCOMES_MAXLEN,
                                         approximate=True)
        await self.redis.hdel(keys.lead(lead_id), "outcome_pending")
        return _s(entry_id)

    # --- abuse: the review queue and field provenance (issue 16.2, 16.3; appended) -------------------

    async def review_step(self, op: str, lead_id: str, now: float, *, crossing: int | None = None,
                          info: Mapping[str, Any] | None = None, who: str = "") -> dict[str, Any]:
        """hold / release / dismiss one lead's crossing (router/storage/lua/review.lua), then the queue indexes.

        Two slots, so two steps: the lead-side step is atomic and decides; the queue indexes
        (``keys.REVIEW_QUEUE``, ``keys.REVIEW_RELEASED``) follow it and are safe to repeat.
        """
        raw = await self._script("review.lua")(
            keys=[keys.lead(lead_id), keys.history(lead_id)],
            args=[op, "" if crossing is None else str(crossing), repr(now), orjson.dumps(dict(info or {})),
                  keys.HISTORY_KEPT, who])
        out: dict[str, Any] = orjson.loads(raw)
        status = out.get("status")
        pipe = self.redis.pipeline(transaction=False)
        if status in ("held", "already_held") and out.get("state") == "held":
            pipe.zadd(keys.REVIEW_QUEUE, {lead_id: now}, nx=True)
            pipe.zremrangebyrank(keys.REVIEW_QUEUE, 0, -keys.REVIEW_KEPT - 1)
        elif status == "released":
            pipe.zadd(keys.REVIEW_RELEASED, {lead_id: now})
            pipe.zrem(keys.REVIEW_QUEUE, lead_id)
        elif status in ("dismissed", "not_held", "stale"):
            pipe.zrem(keys.REVIEW_QUEUE, lead_id)
        await execute(pipe)
        return out

    async def review_queue(self, limit: int = 100) -> list[str]:
        """Lead ids held for review, oldest first."""
        raw = await self.redis.zrange(keys.REVIEW_QUEUE, 0, limit - 1)
        return [_s(x) for x in raw]

    async def review_released(self, limit: int = 100) -> list[str]:
        """Lead ids ops released and not routed yet, oldest first."""
        raw = await self.redis.zrange(keys.REVIEW_RELEASED, 0, limit - 1)
        return [_s(x) for x in raw]

    async def review_routed(self, lead_id: str) -> None:
        await self.redis.zrem(keys.REVIEW_RELEASED, lead_id)

    async def field_history(self, lead_id: str, limit: int = keys.FIELD_HISTORY_KEPT) -> list[dict[str, Any]]:
        """The lead's field changes and proposals, newest first."""
        raw = await self.redis.lrange(keys.field_history(lead_id), 0, limit - 1)
        return [decode_field_change(r) for r in raw]


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


_APPLY_STATUSES: frozenset[ApplyStatus] = frozenset(get_args(ApplyStatus))
_ACCOUNT_STATUSES: frozenset[AccountStatus] = frozenset(get_args(AccountStatus))
_MERGE_STATUSES: frozenset[MergeStatus] = frozenset(get_args(MergeStatus))


_S = TypeVar("_S", bound=str)


def _status(raw: Any, known: frozenset[_S]) -> _S:
    """A script's ``status``, checked against the ones it can return (a mismatch is a bug)."""
    for s in known:
        if s == raw:
            return s
    msg = f"a Lua script returned status {raw!r}, not one of {sorted(known)}"
    raise ValueError(msg)


def _waves(merges: Sequence[Merge]) -> list[list[Merge]]:
    """Split merges so that no wave holds a merge whose source or target another merge of it touches."""
    waves: list[list[Merge]] = []
    for m in merges:
        for wave in waves:
            busy = {x.source for x in wave} | {x.target for x in wave}
            if m.source not in busy and m.target not in {x.source for x in wave}:
                wave.append(m)
                break
        else:
            waves.append([m])
    return waves


def _absorb_args(m: Merge, frozen: Mapping[str, Any], half_life_s: float, now: float, seen_window_s: int
                 ) -> list[Any]:
    h: Mapping[str, str] = frozen.get("hash") or {}
    if isinstance(h, list):
        h = {}
    fields = {k[2:]: v for k, v in h.items() if k.startswith("f:")}
    counts = {k[2:]: v for k, v in h.items() if k.startswith("n:")}
    caps = {"capday": h.get("capday", ""), "cd": float(h.get("cd", 0) or 0),
            "c": {k[2:]: float(v) for k, v in h.items() if k.startswith("c:")},
            "o": [k[2:] for k in h if k.startswith("o:")]}
    return [
        m.source, h.get("score", "0"), h.get("asof", "0"), repr(half_life_s), seen_window_s,
        keys.REASONS_KEPT, keys.RECENT_KEPT, h.get("events", "0"), h.get("first_seen", ""), repr(now),
        orjson.dumps(frozen.get("seen") or []), orjson.dumps(frozen.get("reasons") or []),
        orjson.dumps(frozen.get("recent") or []), orjson.dumps(fields), orjson.dumps(counts), orjson.dumps(caps),
        h.get("hr_ts", ""), h.get("hr_event", ""),
    ]


def web_state(h: Mapping[str, str]) -> dict[str, str]:
    """A frozen profile's visits (apply_event.lua's ``w:*`` fields) for merge_absorb.lua's ARGV[20]."""
    return {k[2:]: v for k, v in h.items() if k.startswith("w:") and k[2:] in _WEB_KEYS}


_WEB_KEYS: frozenset[str] = frozenset({"ss", "time", "st", "last", "camp", "ft", "ft_ts", "lt", "lt_ts", "es", "es0",
                                       "esd"})


def _hits(plan: EventPlan) -> list[dict[str, Any]]:
    """The plan's hits as apply_event.lua reads them: cap step inputs and the compact reason around its points."""
    hits = plan.applied_hits()
    out = []
    for h, (head, tail) in zip(hits, reason_parts([h.reason for h in hits]), strict=True):
        obj = h.to_json_obj()
        obj["rh"], obj["rt"] = head, tail
        if h.reason.hand_raiser:
            obj["x"] = True
        out.append(obj)
    return out


def _lead_payload(plan: EventPlan) -> dict[str, Any]:
    """One event as apply_event.lua reads it (see its header)."""
    ev = plan.event
    source = plan.field_source or ev.source
    payload: dict[str, Any] = {
        "e": ev.event_id, "t": ev.ts, "y": ev.type.value, "d": day_bucket(ev.ts),
        "s": encode_summary(summarise(ev)), "h": plan.hand_raiser, "f": dict(plan.fields),
        "i": plan.lead_id, "r": _hits(plan), "fv": plan.verified, "fs": source,
    }
    if plan.fields:
        payload["fh"] = {k: field_change_head(k, v, source, ev.ts, ev.event_id) for k, v in plan.fields.items()}
    if ev.email:
        payload["m"] = keys.normalise_email(ev.email)
    if ev.user_id:
        payload["u"] = ev.user_id
    if plan.grade is not None:
        payload["g"] = plan.grade.letter
        payload["gp"] = plan.grade.points
    if ev.name:
        payload["n"] = ev.name[:MAX_NAME]
    visit = visit_step(ev)
    if visit is not None:
        payload["w"] = visit
    return payload


def _parse_account(key_id: str, event_id: str, raw: Any) -> AccountResult:
    data = orjson.loads(raw)
    return AccountResult(
        key_id=key_id, status=_status(data["status"], _ACCOUNT_STATUSES), intent=float(data.get("intent", 0.0)),
        people=int(data.get("people", 0)), roles=int(data.get("roles", 0)), top=str(data.get("top") or ""),
        crossing=int(data.get("crossing", 0) or 0), event_id=event_id,
    )


def _parse_apply(raw: Any) -> ApplyResult:
    data = orjson.loads(raw)
    lead = data.get("lead") or {}
    if isinstance(lead, list):  # cjson encodes an empty table as []
        lead = {}
    return ApplyResult(
        status=_status(data["status"], _APPLY_STATUSES),
        before=float(data.get("before", 0.0)),
        after=float(data.get("after", 0.0)),
        crossing=int(data.get("crossing", 0) or 0),
        trigger=str(data.get("trigger") or ""),
        moved_to=str(data.get("to") or ""),
        points=float(data.get("points", 0.0)),
        recycled=bool(data.get("recycled", False)),
        lead={str(k): str(v) for k, v in lead.items()},
        reasons=tuple(decode_reasons(data.get("reasons") or ())),
        recent=tuple(decode_summary(r) for r in data.get("recent") or ()),
        recycle_at=float(data["ra"]) if isinstance(data.get("ra"), (int, float)) else None,
    )
