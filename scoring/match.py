"""What a scoring rule can ask of an event beyond its type: name, properties, category, schema.

Every analytics SDK describes intent as named events: Segment and RudderStack
``track("Whitepaper Downloaded", {format: "pdf"})``, ``page``/``screen`` with a
name and category, Snowplow structured events (category/action/label) and
self-describing events (an iglu schema and its data).  The collector keeps all
of it on :class:`models.Event` (``name``; properties, structured fields and
self-describing data flattened into ``traits``; collector metadata under
``$`` keys such as ``$schema`` and ``$category``), and this module reads it
back for the rules of ``scoring.yaml``:

* ``event_name`` (exact, one or a list) and ``event_name_regex`` against ``Event.name``;
* ``properties``: ``{key: condition}`` against the event's properties (``traits``
  without ``$`` keys; nested keys are dotted, ``plan.tier``).  A condition is a
  value (``pdf``, ``10``, ``true``), a list of values (any one), or a mapping of
  ``regex``, ``at_least``/``at_most`` (numbers) or ``exists: true|false``;
* ``category``: the page's or screen's category, a structured event's category,
  else a track's ``category`` property; ``action`` and ``label`` likewise;
* ``schema``: a self-describing event's iglu URI, whole or without the
  trailing parts (``iglu:com.acme/trial_started`` matches every version).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from models.events import Event

ConditionKind = Literal["equals", "in", "regex", "range", "exists"]


@dataclass(frozen=True, slots=True)
class Value:
    """One expected property value: its text as the collector stores it, and its number when it is one."""

    text: str
    number: float | None = None

    def matches(self, actual: str) -> bool:
        if actual == self.text:
            return True
        if self.number is None:
            return False
        found = as_number(actual)
        return found is not None and found == self.number


@dataclass(frozen=True, slots=True, kw_only=True)
class PropertyCondition:
    """One ``properties:`` entry of a scoring rule."""

    key: str
    kind: ConditionKind
    values: tuple[Value, ...] = ()
    regex: re.Pattern[str] | None = None
    at_least: float | None = None
    at_most: float | None = None
    exists: bool = True

    def matches(self, props: Mapping[str, str]) -> bool:
        actual = props.get(self.key)
        if self.kind == "exists":
            return (actual is not None) is self.exists
        if actual is None:
            return False
        if self.kind in ("equals", "in"):
            return any(v.matches(actual) for v in self.values)
        if self.kind == "regex":
            assert self.regex is not None
            return self.regex.search(actual) is not None
        number = as_number(actual)
        if number is None:
            return False
        if self.at_least is not None and number < self.at_least:
            return False
        return self.at_most is None or number <= self.at_most

    def canonical(self) -> dict[str, object]:
        """What the content hash of the scoring config sees."""
        out: dict[str, object] = {"key": self.key, "kind": self.kind}
        if self.values:
            out["values"] = [v.text for v in self.values]
        if self.regex is not None:
            out["regex"] = self.regex.pattern
        if self.at_least is not None:
            out["at_least"] = self.at_least
        if self.at_most is not None:
            out["at_most"] = self.at_most
        if self.kind == "exists":
            out["exists"] = self.exists
        return out


def as_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def value_of(raw: object) -> Value:
    """A YAML scalar as the collector would store it (``flatten`` in router/ingest/segment.py)."""
    if isinstance(raw, bool):
        return Value("true" if raw else "false")
    if isinstance(raw, int):
        return Value(str(raw), float(raw))
    if isinstance(raw, float):
        return Value(repr(raw), raw)
    text = str(raw)
    return Value(text, as_number(text))


def properties(event: Event) -> dict[str, str]:
    """The event's own properties: ``traits`` without the collector's ``$`` metadata."""
    return {k: v for k, v in event.traits.items() if not k.startswith("$")}


def category_of(event: Event) -> str | None:
    """A page's/screen's category (``$category``), else a structured event's or track's ``category``."""
    return event.traits.get("$category") or event.traits.get("category")


def schema_of(event: Event) -> str | None:
    """A self-describing event's iglu URI."""
    return event.traits.get("$schema")


def schema_matches(wanted: str, actual: str | None) -> bool:
    """``wanted`` is the whole URI or its leading parts: vendor/name, vendor/name/format, ..."""
    if actual is None:
        return False
    return actual == wanted or actual.startswith(wanted.rstrip("/") + "/")
