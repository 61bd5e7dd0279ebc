"""What a rep does with a lead after it was routed to them.

Plain async functions over a :class:`~router.storage.store.RedisStore`, each returning
a result dataclass or raising a :class:`LifecycleError` whose message says what
is wrong and what would work; the CLI (router/cli/leads.py) and the HTTP API
sit on top of these.

=========  ==============================  ==========================================
action     from -> to                       effect
=========  ==============================  ==========================================
accept     mql -> sal                       the rep takes it; SLA steps become no-ops
reject     mql | sal -> nurture             reason from ``lifecycle.reject_reasons``;
                                            score x ``reject_score_factor``; ``ready``
                                            cleared (a later crossing fires again); the
                                            rep is never picked for this lead again
convert    sal -> sql | opportunity,
           sql -> opportunity               (``to`` defaults to the next stage)
won        opportunity -> won               training row on the ``lr:outcomes`` stream
lost       sql | opportunity -> lost        training row on the ``lr:outcomes`` stream
=========  ==============================  ==========================================

reject, won and lost also record the lead's last outcome (``last_outcome``:
rejected | won | lost, ``last_outcome_ts``, ``last_outcome_reason``,
``last_outcome_rep``): the re-engagement rules (``sales_ready.reengage``) count
time from it, and a re-engagement alert shows it.  A lead that comes back
crosses again from any stage those rules list (router/worker/reengage.py).

Only the lead's owner (the rep it is assigned to) may act on it.  Every
transition is one Lua call on the lead's hash slot (router/storage/lua/lead_transition.lua)
and appends one entry to the lead's history list.  Releasing the lead from the
rep's open-lead count (load_balanced) and writing the training row touch other
slots, so they follow as separate idempotent steps; a won/lost whose row was
not written (crash in between) is completed by repeating the same call.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from models import Stage
from router.errors import RouterError
from router.storage import keys
from router.storage.store import RedisStore
from rules import LifecyclePolicy

ACTIONS = ("accept", "reject", "convert", "won", "lost")
_NEEDS = {
    "accept": "mql (assigned and not yet accepted)",
    "reject": "mql or sal",
    "convert": "sal (to sql or opportunity) or sql (to opportunity)",
    "won": "opportunity; convert it first (leadrouter leads convert EMAIL --rep REP --to opportunity)",
    "lost": "sql or opportunity",
}


class LifecycleError(RouterError):
    """A transition that is not allowed; ``code`` is machine-readable (HTTP can map it to a status)."""

    code = "invalid"


class UnknownLeadError(LifecycleError):
    code = "unknown_lead"


class NotOwnerError(LifecycleError):
    code = "not_owner"


class InvalidTransitionError(LifecycleError):
    code = "bad_stage"


class InvalidReasonError(LifecycleError):
    code = "bad_reason"


@dataclass(frozen=True, slots=True)
class TransitionResult:
    lead_id: str
    action: str
    rep_id: str
    from_stage: Stage
    to_stage: Stage
    ts: float
    assignment_id: str = ""
    team: str = ""
    reason: str = ""
    score_before: float | None = None  # reject: the stored score before and after the cut
    score_after: float | None = None
    outcome_id: str | None = None  # won/lost: the lr:outcomes stream entry id
    replayed: bool = False  # won/lost repeated to finish writing its training row

    def to_dict(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id, "action": self.action, "rep_id": self.rep_id,
            "from": self.from_stage.value, "to": self.to_stage.value, "ts": self.ts,
            "assignment_id": self.assignment_id, "team": self.team, "reason": self.reason,
            "score_before": self.score_before, "score_after": self.score_after,
            "outcome_id": self.outcome_id, "replayed": self.replayed,
        }


@dataclass(frozen=True, slots=True)
class LeadStatus:
    """A lead as ``leads show`` prints it."""

    lead_id: str
    email: str | None
    stage: str
    owner: str
    owner_name: str
    team: str
    assignment_id: str
    score: float  # as stored, as of ``score_asof`` (decay it with the scoring half-life)
    score_asof: float
    rejected_by: tuple[str, ...]
    history: tuple[dict[str, Any], ...]
    fields: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id, "email": self.email, "stage": self.stage, "owner": self.owner,
            "owner_name": self.owner_name, "team": self.team, "assignment_id": self.assignment_id,
            "score": self.score, "score_asof": self.score_asof, "rejected_by": list(self.rejected_by),
            "history": list(self.history), "fields": dict(self.fields),
        }


def lead_id_of(lead: str) -> str:
    """An email (normalised, hashed) or a lead id as given."""
    return keys.lead_id_for_email(lead) if "@" in lead else lead.strip()


def _ts(now: datetime | float | None) -> float:
    if now is None:
        return datetime.now(UTC).timestamp()
    return now.timestamp() if isinstance(now, datetime) else float(now)


_VERB = {"accept": "accept", "reject": "reject", "convert": "convert", "won": "mark as won", "lost": "mark as lost"}


def _error(raw: dict[str, Any], act: str, lead: str, rep_id: str, target: str = "") -> LifecycleError:
    code = raw.get("error", "")
    action = _VERB.get(act, act)
    stage = raw.get("stage") or "unknown"
    owner, owner_name = raw.get("owner") or "", raw.get("owner_name") or ""
    if code == "unknown_lead":
        return UnknownLeadError(f"no lead {lead!r}; check the email (a lead exists once a tracked event names it)")
    if code == "no_owner":
        return NotOwnerError(f"cannot {action} lead {lead!r}: it is {stage} and assigned to nobody; "
                             "only the rep it is routed to can act on it")
    if code == "not_owner":
        who = f"{owner_name} ({owner})" if owner_name else owner
        return NotOwnerError(f"cannot {action} lead {lead!r}: it is assigned to {who}, not {rep_id!r}; "
                             "only the owner can act on it (or ask a manager to reassign it)")
    if code == "bad_stage":
        if act == "convert" and target:
            needs = "sal (to sql or opportunity) or sql (to opportunity)"
            return InvalidTransitionError(f"cannot convert lead {lead!r} to {target}: it is {stage}; "
                                          f"convert works from {needs}")
        return InvalidTransitionError(f"cannot {action} lead {lead!r}: it is {stage}; {act} needs {_NEEDS[act]}")
    return LifecycleError(f"cannot {action} lead {lead!r}: {code or 'unexpected reply'}")


async def _transition(store: RedisStore, action: str, lead: str, rep_id: str, now: datetime | float | None, *,
                      target: str = "", reason: str = "", score_factor: float = 1.0) -> tuple[TransitionResult, dict[str, Any]]:
    lead_id = lead_id_of(lead)
    ts = _ts(now)
    raw = await store.lead_transition(action, lead_id, rep_id, ts, target=target, reason=reason,
                                      score_factor=score_factor)
    if not raw.get("ok"):
        raise _error(raw, action, lead, rep_id, target)
    snapshot = raw.get("lead") or {}
    if isinstance(snapshot, list):  # cjson encodes an empty table as []
        snapshot = {}
    result = TransitionResult(
        lead_id=lead_id, action=action, rep_id=rep_id, from_stage=Stage(raw["from"]), to_stage=Stage(raw["to"]),
        ts=ts, assignment_id=str(raw.get("assignment_id") or snapshot.get("assignment_id") or ""),
        team=str(raw.get("team") or snapshot.get("team") or ""), reason=reason,
        score_before=_float(raw.get("score_before")), score_after=_float(raw.get("score_after")),
        replayed=bool(raw.get("replay")),
    )
    return result, {str(k): str(v) for k, v in snapshot.items()}


async def accept(store: RedisStore, lead: str, rep_id: str, *, now: datetime | float | None = None
                 ) -> TransitionResult:
    """The owner takes the lead (mql -> sal); pending SLA reminders and reassignments lapse.

    How long it waited (from becoming sales-ready) goes to the workers' time-to-accept metric.
    """
    result, snapshot = await _transition(store, "accept", lead, rep_id, now)
    became_ready = _num(snapshot.get("mql_ts", "0"))
    if became_ready > 0:
        await store.push_figure({"kind": "accept", "team": result.team, "waited_s": max(0.0, result.ts - became_ready),
                                 "ts": result.ts})
    return result


async def reject(store: RedisStore, lead: str, rep_id: str, reason: str, *, policy: LifecyclePolicy,
                 now: datetime | float | None = None) -> TransitionResult:
    """The owner turns the lead down with a configured reason; it is recycled to nurture."""
    reason = reason.strip()
    if reason not in policy.reject_reasons:
        close = difflib.get_close_matches(reason, policy.reject_reasons, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        msg = (f"reject reason {reason!r} is not one of the configured reasons; {hint}"
               f"use one of: {', '.join(policy.reject_reasons)}")
        raise InvalidReasonError(msg)
    result, _ = await _transition(store, "reject", lead, rep_id, now, reason=reason,
                                  score_factor=policy.reject_score_factor)
    if result.team:
        await store.release_open(result.team, rep_id, result.lead_id)
    return result


async def convert(store: RedisStore, lead: str, rep_id: str, *, to: Stage | str | None = None,
                  now: datetime | float | None = None) -> TransitionResult:
    """sal -> sql, sql -> opportunity (default: the next one), or sal -> opportunity with ``to``."""
    target = str(to.value if isinstance(to, Stage) else to or "").strip().lower()
    if target and target not in (Stage.SQL.value, Stage.OPPORTUNITY.value):
        msg = f"convert goes to sql or opportunity, not {target!r}; use accept, won or lost for the other stages"
        raise InvalidTransitionError(msg)
    result, _ = await _transition(store, "convert", lead, rep_id, now, target=target)
    return result


async def won(store: RedisStore, lead: str, rep_id: str, *, reason: str = "",
              now: datetime | float | None = None) -> TransitionResult:
    """The opportunity is won; its features and outcome become a training row."""
    return await _close(store, "won", lead, rep_id, reason, now)


async def lost(store: RedisStore, lead: str, rep_id: str, *, reason: str = "",
               now: datetime | float | None = None) -> TransitionResult:
    """The deal is lost; its features and outcome become a training row."""
    return await _close(store, "lost", lead, rep_id, reason, now)


async def _close(store: RedisStore, action: str, lead: str, rep_id: str, reason: str,
                 now: datetime | float | None) -> TransitionResult:
    result, snapshot = await _transition(store, action, lead, rep_id, now, reason=reason.strip())
    if result.replayed:
        reason = snapshot.get("outcome_reason", "")
        ts = float(snapshot.get("closed_ts") or result.ts)
    else:
        ts = result.ts
    row = outcome_row(result.lead_id, action, snapshot, ts, reason.strip())
    entry_id = await store.record_outcome(result.lead_id, orjson.dumps(row))
    if result.team:
        await store.release_open(result.team, rep_id, result.lead_id)
    return TransitionResult(
        lead_id=result.lead_id, action=action, rep_id=rep_id, from_stage=result.from_stage,
        to_stage=result.to_stage, ts=ts, assignment_id=result.assignment_id, team=result.team,
        reason=reason.strip(), outcome_id=entry_id, replayed=result.replayed,
    )


_TIMES = ("first_seen", "last_seen", "mql_ts", "sal_ts", "sql_ts", "opportunity_ts", "closed_ts")


# Lead fields that name or reach the person: never in a training row (it outlives the lead).
DIRECT_IDENTIFIERS = frozenset({"first_name", "last_name", "name", "phone", "email"})


def outcome_row(lead_id: str, outcome: str, lead: dict[str, str], ts: float, reason: str = "") -> dict[str, Any]:
    """One training example: what we knew about the lead, and how it ended.

    ``features`` has the lead's firmographic fields (``f:*`` but never a name or a
    phone number, the email domain, never the address), activity counters (``events``, ``n:<type>``), the stored
    score as of its ``asof`` (decay it with the scoring half-life), routing
    (team, rule, rules version, owner), lifecycle counts (crossings, re-engagements,
    rejections, SLA reassignments, escalation) and the stage timestamps with the durations
    between them in hours.
    """
    features: dict[str, Any] = {}
    for key, value in lead.items():
        if key.startswith("f:") and key[2:] not in DIRECT_IDENTIFIERS:
            features[key[2:]] = value
        elif key.startswith("n:"):
            features[f"count_{key[2:]}"] = _num(value)
    email = lead.get("email") or ""
    if "@" in email:
        features["email_domain"] = email.rsplit("@", 1)[1].lower()
    for key in ("events", "crossing", "reengagements", "rejections", "sla_reassigns", "merges"):
        features[key] = _num(lead.get(key, "0"))
    features["score"] = _num(lead.get("score", "0"))
    features["score_asof"] = _num(lead.get("asof", "0"))
    features["escalated"] = lead.get("escalated") == "1"
    for key in ("team", "rule", "rules_version", "owner", "last_trigger"):
        features[key] = lead.get(key, "")
    times = {k: _num(lead[k]) for k in _TIMES if lead.get(k)}
    features.update(times)

    def hours(a: str, b: str) -> float | None:
        return round((times[b] - times[a]) / 3600.0, 3) if a in times and b in times else None

    features["hours_first_seen_to_mql"] = hours("first_seen", "mql_ts")
    features["hours_mql_to_sal"] = hours("mql_ts", "sal_ts")
    features["hours_sal_to_close"] = hours("sal_ts", "closed_ts")
    return {"lead_id": lead_id, "outcome": outcome, "ts": ts, "reason": reason, "features": features}


async def show(store: RedisStore, lead: str, *, history_limit: int = 50) -> LeadStatus:
    """Everything ``leads show`` prints: stage, owner, score, who rejected it, and its history."""
    lead_id = lead_id_of(lead)
    data = await store.lead_hash(lead_id)
    if not data:
        raise UnknownLeadError(f"no lead {lead!r}; check the email (a lead exists once a tracked event names it)")
    rejected = await store.rejected_reps(lead_id)
    hist = await store.lead_history(lead_id, history_limit)
    return LeadStatus(
        lead_id=lead_id, email=data.get("email") or None, stage=data.get("stage", ""),
        owner=data.get("owner", ""), owner_name=data.get("owner_name", ""), team=data.get("team", ""),
        assignment_id=data.get("assignment_id", ""), score=_num(data.get("score", "0")),
        score_asof=_num(data.get("asof", "0")), rejected_by=tuple(sorted(rejected)), history=tuple(hist),
        fields={k[2:]: v for k, v in data.items() if k.startswith("f:")}, raw=data,
    )


async def apply(store: RedisStore, action: str, lead: str, rep_id: str, *, policy: LifecyclePolicy,
                reason: str = "", to: str | None = None, now: datetime | float | None = None) -> TransitionResult:
    """Dispatch by action name (accept, reject, convert, won, lost): what the CLI and HTTP call."""
    if action == "accept":
        return await accept(store, lead, rep_id, now=now)
    if action == "reject":
        return await reject(store, lead, rep_id, reason, policy=policy, now=now)
    if action == "convert":
        return await convert(store, lead, rep_id, to=to, now=now)
    if action == "won":
        return await won(store, lead, rep_id, reason=reason, now=now)
    if action == "lost":
        return await lost(store, lead, rep_id, reason=reason, now=now)
    msg = f"unknown action {action!r}; use one of: {', '.join(ACTIONS)}"
    raise LifecycleError(msg)


def _num(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


__all__ = [
    "ACTIONS",
    "InvalidReasonError",
    "InvalidTransitionError",
    "LeadStatus",
    "LifecycleError",
    "NotOwnerError",
    "TransitionResult",
    "UnknownLeadError",
    "accept",
    "apply",
    "convert",
    "lead_id_of",
    "lost",
    "outcome_row",
    "reject",
    "show",
    "won",
]
