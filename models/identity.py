"""The identity graph's decisions as data: links, merges and conflicts.

:mod:`router.worker.identity` decides them; :mod:`router.storage.store` carries
them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["v", "u"]
"""An identifier's kind: ``v`` an anonymous visitor id, ``u`` the customer's user id."""


MergeStatus = Literal["frozen", "done", "elsewhere", "known", "empty"]
"""What folding a source profile found (router/storage/lua/merge_freeze.lua): ``frozen`` (merged
now), ``done`` (merged before), ``elsewhere`` (already merged into another profile), ``known``
(the source is a known person: never merged), ``empty`` (nothing there yet; what
arrives later follows to the target)."""


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
    """What resolving a batch decided: each event's lead, and the links, merges and conflicts to record."""

    lead_ids: list[str] = field(default_factory=list)
    links: dict[tuple[Kind, str], str] = field(default_factory=dict)
    merges: list[Merge] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
