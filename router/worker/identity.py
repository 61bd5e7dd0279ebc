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

This module decides (the decisions' shapes are in :mod:`models.identity`);
:mod:`router.storage.store` carries them out.
"""

from __future__ import annotations

from models import Event, EventType
from models.identity import Conflict, Kind, Merge, Resolution
from router.storage import keys


def default_profile(kind: Kind, value: str) -> str:
    return keys.lead_id_for_visitor(value) if kind == "v" else keys.lead_id_for_user(value)


def is_known_person(lead_id: str) -> bool:
    """Lead ids minted from an email belong to a known, unique person (kept for good; others expire)."""
    return keys.is_email_lead(lead_id)


UNIQUE_IDENTIFIERS = frozenset({"email", "user_id"})


class IdentityResolver:
    """Resolves a batch in order, seeing the links earlier events made.

    ``unique`` names the identifiers two different people can never share
    (``email`` by default; add ``user_id`` when the customer's user ids are
    per person).  A profile holding one value of a unique identifier is never
    merged with a profile holding another value of it.
    """

    def __init__(self, visitors: dict[str, str], users: dict[str, str],
                 unique: frozenset[str] = frozenset({"email"})) -> None:
        self._known: dict[Kind, dict[str, str]] = {"v": dict(visitors), "u": dict(users)}
        self.unique = unique
        # The user ids known to belong to each profile (from the mappings seen).
        self._owners: dict[str, set[str]] = {}
        for uid, lead in users.items():
            self._owners.setdefault(lead, set()).add(uid)
        self.result = Resolution()

    def _user_ids(self, lead_id: str) -> set[str]:
        owners = set(self._owners.get(lead_id, ()))
        if not owners and lead_id.startswith("U"):
            owners.add(f"?{lead_id}")  # made for a user id we have not seen in this batch
        return owners

    def _apart(self, source: str, target: str) -> bool:
        """Whether a unique identifier keeps these two profiles apart."""
        if "email" in self.unique and is_known_person(source) and is_known_person(target):
            return True
        if "user_id" in self.unique:
            a, b = self._user_ids(source), self._user_ids(target)
            return bool(a) and bool(b) and a.isdisjoint(b)
        return False

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
        if ev.user_id and not self.current("u", ev.user_id):
            # A new user id never takes over a profile that belongs to another one.
            own = keys.lead_id_for_user(ev.user_id)
            found = [lead for lead in found if not self._apart(lead, own)]
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
            if self._apart(source, target):
                self.result.conflicts.append(Conflict(ident, source, target, ev.event_id, ev.ts))
            else:
                self.result.merges.append(Merge(source, target, ident, ev.event_id, ev.ts))
                self._owners.setdefault(target, set()).update(self._owners.get(source, ()))
        self._known[kind][value] = target
        self.result.links[(kind, value)] = target
        if kind == "u":
            self._owners.setdefault(target, set()).add(value)


def used_links(visitors: dict[str, str], users: dict[str, str]) -> dict[tuple[Kind, str], str]:
    """The identity links a batch read (identifier -> lead), whose TTL the batch refreshes."""
    used: dict[tuple[Kind, str], str] = {("v", v): lead for v, lead in visitors.items()}
    used.update({("u", u): lead for u, lead in users.items()})
    return used


def resolve_batch(events: list[Event], visitors: dict[str, str], users: dict[str, str],
                  unique: frozenset[str] = frozenset({"email"})) -> Resolution:
    resolver = IdentityResolver(visitors, users, unique)
    for ev in events:
        resolver.resolve(ev)
    return resolver.result
