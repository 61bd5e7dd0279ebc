"""The one event shape every ingest path normalises into.

Pixels, form posts and email opens all become an :class:`Event` before they are
produced to Kafka; the worker only ever sees this shape.  ``Event.from_dict``
is the single place that validates what comes off the wire.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from models.errors import InvalidEventError

SCHEMA_VERSION = 1


class EventType(StrEnum):
    PAGE_VIEW = "page_view"
    # A heartbeat while a page is open and visible (pixel snippet, Snowplow ``e=pp``): time on
    # site only; never scored, never an activity (router/storage/lua/apply_event.lua).
    PAGE_PING = "page_ping"
    EMAIL_OPEN = "email_open"
    EMAIL_CLICK = "email_click"
    FORM_FILL = "form_fill"
    # From analytics SDKs (Segment, RudderStack, Snowplow):
    TRACK = "track"  # a named custom event (``name``)
    IDENTIFY = "identify"  # who the visitor is (``user_id``, ``email``, ``traits``)
    GROUP = "group"  # which company they belong to (``group_id``, ``traits``)
    ALIAS = "alias"  # ``previous_id`` and ``user_id`` are one person


# Form fields we understand; anything else a form posts is ignored, not stored.
FORM_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "name",
    "company",
    "job_title",
    "country",
    "region",
    "phone",
    "consent",
)


# The fields of an event that say who the person is or what they did where: sealed under the
# person's data key when the event names an email (router/storage/pii.py).
PERSONAL_FIELDS: tuple[str, ...] = (
    "email", "url", "referrer", "title", "utm", "fields", "traits", "user_agent", "ip",
)


@dataclass(frozen=True, slots=True)
class Event:
    """A normalised tracking event.

    ``event_id`` is minted once at ingest and is the idempotency key: Kafka
    delivers at least once, and the worker counts an ``event_id`` only once.
    ``ts`` is epoch seconds (float) when the collector received the event.
    """

    event_id: str
    type: EventType
    ts: float
    source: str
    visitor_id: str | None = None
    email: str | None = None
    url: str | None = None
    referrer: str | None = None
    title: str | None = None
    utm: Mapping[str, str] = field(default_factory=dict)
    form_id: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    campaign: str | None = None
    user_agent: str | None = None
    ip: str | None = None
    # SDK identity: the customer's own user id, and for alias the id it replaces.
    user_id: str | None = None
    previous_id: str | None = None
    name: str | None = None  # track event name, e.g. "Trial Started"
    traits: Mapping[str, str] = field(default_factory=dict)
    group_id: str | None = None
    message_id: str | None = None  # the sender's id, de-duplicated at ingest
    # How likely the hit came from a machine (mail privacy proxy, scanner,
    # crawler), 0..1, and why.  Scoring discounts points by it; nothing is dropped.
    machine: float = 0.0
    machine_reason: str | None = None
    # How far the collector trusts that a person sent this (0..1, 1 = nothing suspicious) and
    # why not (comma-separated, e.g. "http_library,disposable_email").  A hand-raiser below the
    # worker's review level goes to the review queue instead of a rep (router/worker/review.py).
    trust: float = 1.0
    trust_reasons: str | None = None
    # Personal data at rest (issue 16.7): the collector moves an identified event's personal
    # fields (PERSONAL_FIELDS) into ``sealed``, AES-GCM under the person's own data key, and
    # ``subject`` names that key (a keyed hash of the email).  Forgetting the person deletes the
    # key, so every copy in the spool and in Kafka becomes unreadable.  The worker opens it.
    subject: str | None = None
    sealed: str | None = None
    v: int = SCHEMA_VERSION

    def partition_key(self) -> str:
        """One person's events share a key so Kafka keeps them in order.

        The visitor id wins when present: a form fill carries both the cookie
        and the email, so every event of that browser stays on one partition.
        """
        if self.visitor_id:
            return f"v:{self.visitor_id}"
        if self.user_id:
            return f"u:{self.user_id}"
        if self.subject:
            return f"s:{self.subject}"
        if self.email:
            return f"e:{self.email}"
        return f"x:{self.event_id}"

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _event_fields()}
        data["type"] = self.type.value
        data["utm"] = dict(self.utm)
        data["fields"] = dict(self.fields)
        data["traits"] = dict(self.traits)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Validate and build an event; raises :class:`InvalidEventError`."""
        if not isinstance(data, Mapping):
            msg = f"event must be a JSON object, got {type(data).__name__}; send one object per message"
            raise InvalidEventError(msg)
        event_id = _str(data, "event_id", required=True)
        raw_type = _str(data, "type", required=True)
        try:
            etype = EventType(raw_type or "")
        except ValueError:
            allowed = ", ".join(t.value for t in EventType)
            msg = f"event field 'type' has unknown value {raw_type!r}; use one of: {allowed}"
            raise InvalidEventError(msg) from None
        ts = data.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts <= 0:
            msg = f"event field 'ts' must be positive epoch seconds, got {ts!r}; set it when the event is received"
            raise InvalidEventError(msg)
        version = data.get("v", SCHEMA_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            msg = f"event field 'v' must be a positive whole schema version, got {version!r}; send {SCHEMA_VERSION}"
            raise InvalidEventError(msg)
        return cls(
            event_id=event_id or "",
            type=etype,
            ts=float(ts),
            source=_str(data, "source") or "unknown",
            visitor_id=_str(data, "visitor_id"),
            email=_str(data, "email"),
            url=_str(data, "url"),
            referrer=_str(data, "referrer"),
            title=_str(data, "title"),
            utm=_str_map(data, "utm"),
            form_id=_str(data, "form_id"),
            fields=_str_map(data, "fields"),
            campaign=_str(data, "campaign"),
            user_agent=_str(data, "user_agent"),
            ip=_str(data, "ip"),
            user_id=_str(data, "user_id"),
            previous_id=_str(data, "previous_id"),
            name=_str(data, "name"),
            traits=_str_map(data, "traits"),
            group_id=_str(data, "group_id"),
            message_id=_str(data, "message_id"),
            machine=_fraction(data, "machine"),
            machine_reason=_str(data, "machine_reason"),
            trust=_fraction(data, "trust", 1.0),
            trust_reasons=_str(data, "trust_reasons"),
            subject=_str(data, "subject"),
            sealed=_str(data, "sealed"),
            v=version,
        )


def _str(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            msg = f"event field {key!r} is missing; every event needs it"
            raise InvalidEventError(msg)
        return None
    if not isinstance(value, str):
        msg = f"event field {key!r} must be a string, got {type(value).__name__} {value!r}"
        raise InvalidEventError(msg)
    return value


def _str_map(data: Mapping[str, Any], key: str) -> dict[str, str]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        msg = f"event field {key!r} must be an object of strings, got {value!r}"
        raise InvalidEventError(msg)
    return dict(value)


def _fraction(data: Mapping[str, Any], key: str, default: float = 0.0) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        msg = f"event field {key!r} must be a number from 0 to 1, got {value!r}"
        raise InvalidEventError(msg)
    return float(value)


_FIELD_NAMES: list[tuple[str, ...]] = []


def _event_fields() -> tuple[str, ...]:
    """:class:`Event`'s field names, looked up once (``dataclasses.fields`` per call costs more than the copy)."""
    if not _FIELD_NAMES:
        _FIELD_NAMES.append(tuple(f.name for f in fields(Event)))
    return _FIELD_NAMES[0]
