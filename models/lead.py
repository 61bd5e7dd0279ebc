"""Leads, the reasons behind their scores, reps, routing decisions and alerts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    """The funnel a lead moves through."""

    ANONYMOUS = "anonymous"
    KNOWN = "known"
    MQL = "mql"
    SAL = "sal"
    SQL = "sql"
    OPPORTUNITY = "opportunity"
    WON = "won"
    LOST = "lost"
    NURTURE = "nurture"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why points were added: one per scoring rule an event matched."""

    rule: str
    points: float
    event_id: str
    event_type: str
    ts: float
    detail: str = ""
    hand_raiser: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "points": self.points,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "ts": self.ts,
            "detail": self.detail,
            "hand_raiser": self.hand_raiser,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reason:
        return cls(
            rule=str(d["rule"]),
            points=float(d["points"]),
            event_id=str(d["event_id"]),
            event_type=str(d["event_type"]),
            ts=float(d["ts"]),
            detail=str(d.get("detail", "")),
            hand_raiser=bool(d.get("hand_raiser", False)),
        )


@dataclass(frozen=True, slots=True)
class LeadView:
    """A lead as routing and alerts see it: identity, firmographics, score."""

    lead_id: str
    email: str | None
    score: float
    stage: Stage
    fields: Mapping[str, str] = field(default_factory=dict)
    reasons: tuple[Reason, ...] = ()

    @property
    def company(self) -> str | None:
        return self.fields.get("company") or None

    @property
    def display_name(self) -> str:
        f = self.fields
        name = f.get("name") or " ".join(x for x in (f.get("first_name"), f.get("last_name")) if x)
        return name or self.email or self.lead_id

    @property
    def email_domain(self) -> str | None:
        if self.email and "@" in self.email:
            return self.email.rsplit("@", 1)[1].lower()
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "email": self.email,
            "score": self.score,
            "stage": self.stage.value,
            "fields": dict(self.fields),
            "reasons": [r.to_dict() for r in self.reasons],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LeadView:
        return cls(
            lead_id=str(d["lead_id"]),
            email=d.get("email"),
            score=float(d["score"]),
            stage=Stage(d.get("stage", Stage.ANONYMOUS.value)),
            fields={str(k): str(v) for k, v in (d.get("fields") or {}).items()},
            reasons=tuple(Reason.from_dict(r) for r in d.get("reasons") or ()),
        )


def lead_view_from_hash(data: Mapping[str, str], reasons: Sequence[Reason] = (), now: float | None = None,
                        half_life_s: float | None = None) -> LeadView:
    """A LeadView from the lead's Redis hash (``f:<field>`` keys are its fields).

    With ``now`` and ``half_life_s`` the score is decayed to ``now`` (the half-life decay of
    :func:`scoring.score_at`, inline: models imports nothing of ours).
    """
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


@dataclass(frozen=True, slots=True)
class Rep:
    rep_id: str
    name: str
    email: str
    team: str
    slack_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Which team a lead goes to and how the rules got there."""

    team: str
    rule: str
    rules_version: str
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Assignment:
    """A lead handed to one rep for one sales-ready crossing."""

    assignment_id: str
    lead_id: str
    crossing: int
    rep: Rep
    decision: RoutingDecision
    ts: float
    # When the SLA clock starts (epoch s): ts, or the rep's next working moment for a lead that
    # arrived after hours; None when not known (an older record).
    available_at: float | None = None
    # How the rep was found: available | next_available | on_call | fallback_team ('' when not known).
    placement: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "assignment_id": self.assignment_id,
            "lead_id": self.lead_id,
            "crossing": self.crossing,
            "rep": {
                "rep_id": self.rep.rep_id,
                "name": self.rep.name,
                "email": self.rep.email,
                "team": self.rep.team,
                "slack_user_id": self.rep.slack_user_id,
            },
            "decision": {
                "team": self.decision.team,
                "rule": self.decision.rule,
                "rules_version": self.decision.rules_version,
                "path": list(self.decision.path),
            },
            "ts": self.ts,
            "available_at": self.available_at,
            "placement": self.placement,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Assignment:
        r, dec = d["rep"], d["decision"]
        return cls(
            assignment_id=str(d["assignment_id"]),
            lead_id=str(d["lead_id"]),
            crossing=int(d["crossing"]),
            rep=Rep(
                rep_id=str(r["rep_id"]),
                name=str(r["name"]),
                email=str(r["email"]),
                team=str(r["team"]),
                slack_user_id=r.get("slack_user_id"),
            ),
            decision=RoutingDecision(
                team=str(dec["team"]),
                rule=str(dec["rule"]),
                rules_version=str(dec["rules_version"]),
                path=tuple(str(p) for p in dec["path"]),
            ),
            ts=float(d["ts"]),
            available_at=float(d["available_at"]) if d.get("available_at") is not None else None,
            placement=str(d.get("placement") or ""),
        )


@dataclass(frozen=True, slots=True)
class Reengagement:
    """A lead that crossed before crossed again: where it was, how it last ended, and what brought it back.

    ``owner`` is the rep who had it (its owner when it crossed again, else the
    rep of the last outcome); ``current_owner`` says whether it still had an
    owner.  ``route`` says where the alert went: ``owner`` (routed to that
    owner), ``owner_notified`` (the owner still holds it: told, not routed
    again), ``owner_away`` (the owner is out of office: the rules routed it) or
    ``rules``.
    """

    from_stage: str
    crossing: int
    last_outcome: str = ""  # rejected | won | lost | recycled | '' (none)
    last_outcome_ts: float = 0.0
    last_outcome_reason: str = ""
    owner: str = ""
    owner_name: str = ""
    current_owner: bool = False
    last_crossing_ts: float = 0.0
    back: tuple[str, ...] = ()  # e.g. "back on /pricing 3 times this week"
    route: str = "rules"

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_stage": self.from_stage, "crossing": self.crossing, "last_outcome": self.last_outcome,
            "last_outcome_ts": self.last_outcome_ts, "last_outcome_reason": self.last_outcome_reason,
            "owner": self.owner, "owner_name": self.owner_name, "current_owner": self.current_owner,
            "last_crossing_ts": self.last_crossing_ts, "back": list(self.back), "route": self.route,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reengagement:
        return cls(
            from_stage=str(d.get("from_stage") or ""),
            crossing=int(d.get("crossing") or 0),
            last_outcome=str(d.get("last_outcome") or ""),
            last_outcome_ts=float(d.get("last_outcome_ts") or 0.0),
            last_outcome_reason=str(d.get("last_outcome_reason") or ""),
            owner=str(d.get("owner") or ""),
            owner_name=str(d.get("owner_name") or ""),
            current_owner=bool(d.get("current_owner")),
            last_crossing_ts=float(d.get("last_crossing_ts") or 0.0),
            back=tuple(str(x) for x in d.get("back") or ()),
            route=str(d.get("route") or "rules"),
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """Everything a rep needs to act now: who, why, and the recent activity."""

    assignment: Assignment
    lead: LeadView
    threshold: float
    trigger: str
    recent: tuple[Mapping[str, Any], ...] = ()
    event_ts: float = 0.0  # when the collector received the event that triggered it
    # The lead's account: name, domain, intent, active_people, and ``members``
    # (other active people: name, title, email, last_active ts), when known.
    account: Mapping[str, Any] = field(default_factory=dict)
    # Where the rep acts: {"accept": url, "reject": url, "lead": url}.
    links: Mapping[str, str] = field(default_factory=dict)
    # Recent changes to the lead's fields, newest first (the lead's field history): field, old, new,
    # source, verified, applied (False: an unverified value kept beside the lead's own), ts.
    field_changes: tuple[Mapping[str, Any], ...] = ()
    # A trusted hand-raiser: its Slack messages take the priority lane of the channel's pacing.
    priority: bool = False
    # Set when the lead crossed before: this alert is a re-engagement.
    reengagement: Reengagement | None = None
    # "lead": a lead for the rep (the default); "escalation": the last SLA step, to a manager
    # (``assignment.rep`` is the manager), with ``escalation`` = {holder_id, holder_name, team,
    # waiting_since, waited_s, sla, reassignments}.
    kind: str = "lead"
    escalation: Mapping[str, Any] = field(default_factory=dict)
    # The predictive model at the crossing, when one is active: version, probability, base_log_odds
    # and its top signed ``contributions`` (feature, label, value, log_odds, text), exact for that model.
    model: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "assignment": self.assignment.to_dict(),
            "lead": self.lead.to_dict(),
            "threshold": self.threshold,
            "trigger": self.trigger,
            "recent": [dict(r) for r in self.recent],
            "event_ts": self.event_ts,
            "account": dict(self.account),
            "links": dict(self.links),
            "field_changes": [dict(c) for c in self.field_changes],
            "priority": self.priority,
        }
        if self.reengagement is not None:
            out["reengagement"] = self.reengagement.to_dict()
        if self.kind != "lead":
            out["kind"] = self.kind
            out["escalation"] = dict(self.escalation)
        if self.model:
            out["model"] = dict(self.model)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Alert:
        return cls(
            assignment=Assignment.from_dict(d["assignment"]),
            lead=LeadView.from_dict(d["lead"]),
            threshold=float(d["threshold"]),
            trigger=str(d["trigger"]),
            recent=tuple(d.get("recent") or ()),
            event_ts=float(d.get("event_ts", 0.0)),
            account=dict(d.get("account") or {}),
            links={str(k): str(v) for k, v in (d.get("links") or {}).items()},
            field_changes=tuple(c for c in d.get("field_changes") or () if isinstance(c, Mapping)),
            priority=bool(d.get("priority", False)),
            reengagement=Reengagement.from_dict(d["reengagement"]) if d.get("reengagement") else None,
            kind=str(d.get("kind") or "lead"),
            escalation=dict(d.get("escalation") or {}),
            model=dict(d.get("model") or {}) if isinstance(d.get("model"), Mapping) else {},
        )


def wait_text(seconds: float) -> str:
    """``47 min``, ``3 h 05 min``, ``2 d 4 h``: a wait as a person reads it (alerts, SLA escalations)."""
    minutes = max(0, round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
