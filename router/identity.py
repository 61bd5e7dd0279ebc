"""Who an event belongs to: the identity graph's decisions, as pure code.

A person is known by several identifiers: the anonymous visitor id of each
browser (cookie, Segment ``anonymousId``, Snowplow ``duid``), the customer's
own ``user_id``, and an email.  Redis maps each visitor id and user id to one
lead id; an email *is* a lead id (``L`` + digest).  Until an identifier is
mapped, its events go to an anonymous profile of its own (``A`` / ``U``).

When an event ties an identifier to a lead (a form fill, an identify or alias
call), the identifier's anonymous profile is merged into that lead, so its
past points count exactly once.  Email is a unique identifier: a profile that
already has a different email is never merged (two colleagues sharing a
browser stay two people); the identifier follows the person who identified
last, and the conflict is recorded.

This module decides; :mod:`router.store` carries the decisions out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from models import Event, EventType
from router import keys

Kind = Literal["v", "u"]


@dataclass(frozen=True, slots=True)
class Link:
    """Map identifier ``kind:value`` to ``lead_id`` from now on."""

    kind: Kind
    value: str
    lead_id: str


@dataclass(frozen=True, slots=True)
class Merge:
    """Fold profile ``source`` into ``target`` (once; idempotent)."""

    source: str
    target: str
    identifier: str
    event_id: str
    ts: float


@dataclass(frozen=True, slots=True)
class Conflict:
    """An identifier met a second known person; recorded, never merged."""

    identifier: str
    previous: str
    current: str
    event_id: str
    ts: float


@dataclass
class Resolution:
    lead_ids: list[str] = field(default_factory=list)
    links: dict[tuple[Kind, str], str] = field(default_factory=dict)
    merges: list[Merge] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


def default_profile(kind: Kind, value: str) -> str:
    return keys.lead_id_for_visitor(value) if kind == "v" else keys.lead_id_for_user(value)


def is_known_person(lead_id: str) -> bool:
    """Lead ids minted from an email belong to a known, unique person."""
    return lead_id.startswith("L")


class IdentityResolver:
    """Resolves a batch in order, seeing the links earlier events made."""

    def __init__(self, visitors: dict[str, str], users: dict[str, str]) -> None:
        self._known: dict[Kind, dict[str, str]] = {"v": dict(visitors), "u": dict(users)}
        self.result = Resolution()

    def current(self, kind: Kind, value: str) -> str | None:
        return self._known[kind].get(value)

    def resolve(self, ev: Event) -> str:
        target = self._target(ev)
        if ev.type is EventType.ALIAS and ev.previous_id:
            prev_kind: Kind = "u" if self.current("u", ev.previous_id) and not self.current(
                "v", ev.previous_id) else "v"
            self._attach(prev_kind, ev.previous_id, target, ev)
        if ev.user_id:
            self._attach("u", ev.user_id, target, ev)
        if ev.visitor_id:
            self._attach("v", ev.visitor_id, target, ev)
        self.result.lead_ids.append(target)
        return target

    def _target(self, ev: Event) -> str:
        """The email's lead; else the first mapped profile, a known person first."""
        if ev.email:
            return keys.lead_id_for_email(ev.email)
        ids: list[tuple[Kind, str | None]] = [("u", ev.user_id), ("v", ev.visitor_id)]
        if ev.type is EventType.ALIAS:
            ids += [("u", ev.previous_id), ("v", ev.previous_id)]
        found = [lead for kind, value in ids if value and (lead := self.current(kind, value))]
        if found:
            return next((lead for lead in found if is_known_person(lead)), found[0])
        if ev.user_id:
            return keys.lead_id_for_user(ev.user_id)
        if ev.visitor_id:
            return keys.lead_id_for_visitor(ev.visitor_id)
        return keys.lead_id_for_visitor(f"event:{ev.event_id}")

    def _attach(self, kind: Kind, value: str, target: str, ev: Event) -> None:
        current = self.current(kind, value)
        if current == target:
            return
        source = current or default_profile(kind, value)
        if current is None and source == target:
            return  # an anonymous profile addressed by its own identifier: nothing to link
        if source != target:
            ident = f"{'visitor' if kind == 'v' else 'user'}:{value}"
            if is_known_person(source) and is_known_person(target):
                self.result.conflicts.append(Conflict(ident, source, target, ev.event_id, ev.ts))
            else:
                self.result.merges.append(Merge(source, target, ident, ev.event_id, ev.ts))
        self._known[kind][value] = target
        self.result.links[(kind, value)] = target


def resolve_batch(events: list[Event], visitors: dict[str, str], users: dict[str, str]) -> Resolution:
    resolver = IdentityResolver(visitors, users)
    for ev in events:
        resolver.resolve(ev)
    return resolver.result
