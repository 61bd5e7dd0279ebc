"""Compiled conditions: how a rule's ``when`` matches facts, and when one condition implies another.

Matching never raises.  A value condition (``equals``, ``in``, ``range``,
``regex``) on a field that is absent, None, blank or of the wrong type does not
match; ``exists: false`` is the one leaf that matches a missing field.
String comparison (``equals``, ``in``) ignores case, like ``regex``.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from rules.catalogue import FieldType

Facts = Mapping[str, object]


def _norm(ftype: FieldType, value: object) -> object:
    """A literal or fact in the form equality uses: casefolded strings, float numbers."""
    if ftype is FieldType.STRING and isinstance(value, str):
        return value.casefold()
    if ftype is FieldType.NUMBER and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def present(facts: Facts, field: str) -> bool:
    value = facts.get(field)
    if value is None:
        return False
    return not (isinstance(value, str) and not value.strip())


def typed_fact(facts: Facts, field: str, ftype: FieldType) -> str | float | bool | None:
    """The fact for ``field`` if present and of ``ftype``; None otherwise."""
    if not present(facts, field):
        return None
    value = facts[field]
    if ftype is FieldType.STRING:
        return value if isinstance(value, str) else None
    if ftype is FieldType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)
    return value if isinstance(value, bool) else None


class Condition(ABC):
    """One node of a rule's ``when``."""

    @abstractmethod
    def matches(self, facts: Facts) -> bool: ...

    @abstractmethod
    def key(self) -> Hashable:
        """Canonical structure: equal keys mean the conditions match exactly the same leads."""

    @abstractmethod
    def to_json(self) -> object:
        """A JSON-able form, used for the config's content hash."""


@dataclass(frozen=True, slots=True)
class Always(Condition):
    def matches(self, facts: Facts) -> bool:
        return True

    def key(self) -> Hashable:
        return ("always",)

    def to_json(self) -> object:
        return "always"


@dataclass(frozen=True, slots=True)
class Equals(Condition):
    field: str
    ftype: FieldType
    value: str | float | bool

    def matches(self, facts: Facts) -> bool:
        fact = typed_fact(facts, self.field, self.ftype)
        return fact is not None and _norm(self.ftype, fact) == _norm(self.ftype, self.value)

    def values(self) -> frozenset[object]:
        return frozenset({_norm(self.ftype, self.value)})

    def key(self) -> Hashable:
        return ("in", self.field, self.values())

    def to_json(self) -> object:
        return {"field": self.field, "equals": self.value}


@dataclass(frozen=True, slots=True)
class In(Condition):
    field: str
    ftype: FieldType
    options: tuple[str | float | bool, ...]

    def matches(self, facts: Facts) -> bool:
        fact = typed_fact(facts, self.field, self.ftype)
        return fact is not None and _norm(self.ftype, fact) in self.values()

    def values(self) -> frozenset[object]:
        return frozenset(_norm(self.ftype, v) for v in self.options)

    def key(self) -> Hashable:
        return ("in", self.field, self.values())

    def to_json(self) -> object:
        return {"field": self.field, "in": list(self.options)}


@dataclass(frozen=True, slots=True)
class Range(Condition):
    """Inclusive bounds; a missing bound is unbounded."""

    field: str
    min: float | None
    max: float | None

    def matches(self, facts: Facts) -> bool:
        fact = typed_fact(facts, self.field, FieldType.NUMBER)
        if not isinstance(fact, float):
            return False
        return (self.min is None or fact >= self.min) and (self.max is None or fact <= self.max)

    def contains(self, number: float) -> bool:
        return (self.min is None or number >= self.min) and (self.max is None or number <= self.max)

    def key(self) -> Hashable:
        return ("range", self.field, self.min, self.max)

    def to_json(self) -> object:
        return {"field": self.field, "range": {"min": self.min, "max": self.max}}


@dataclass(frozen=True, slots=True)
class Regex(Condition):
    """Case-insensitive ``re.search`` over a string field."""

    field: str
    pattern: re.Pattern[str]

    def matches(self, facts: Facts) -> bool:
        fact = typed_fact(facts, self.field, FieldType.STRING)
        return isinstance(fact, str) and self.pattern.search(fact) is not None

    def key(self) -> Hashable:
        return ("regex", self.field, self.pattern.pattern)

    def to_json(self) -> object:
        return {"field": self.field, "regex": self.pattern.pattern}


@dataclass(frozen=True, slots=True)
class Exists(Condition):
    field: str
    expected: bool

    def matches(self, facts: Facts) -> bool:
        return present(facts, self.field) is self.expected

    def key(self) -> Hashable:
        return ("exists", self.field, self.expected)

    def to_json(self) -> object:
        return {"field": self.field, "exists": self.expected}


@dataclass(frozen=True, slots=True)
class AllOf(Condition):
    children: tuple[Condition, ...]

    def matches(self, facts: Facts) -> bool:
        return all(c.matches(facts) for c in self.children)

    def key(self) -> Hashable:
        if len(self.children) == 1:
            return self.children[0].key()
        return ("all", frozenset(c.key() for c in self.children))

    def to_json(self) -> object:
        return {"all": [c.to_json() for c in self.children]}


@dataclass(frozen=True, slots=True)
class AnyOf(Condition):
    children: tuple[Condition, ...]

    def matches(self, facts: Facts) -> bool:
        return any(c.matches(facts) for c in self.children)

    def key(self) -> Hashable:
        if len(self.children) == 1:
            return self.children[0].key()
        return ("any", frozenset(c.key() for c in self.children))

    def to_json(self) -> object:
        return {"any": [c.to_json() for c in self.children]}


@dataclass(frozen=True, slots=True)
class Not(Condition):
    child: Condition

    def matches(self, facts: Facts) -> bool:
        return not self.child.matches(facts)

    def key(self) -> Hashable:
        if isinstance(self.child, Not):
            return self.child.child.key()
        return ("not", self.child.key())

    def to_json(self) -> object:
        return {"not": self.child.to_json()}


def implies(later: Condition, earlier: Condition) -> bool:
    """True only if every facts ``later`` matches, ``earlier`` matches too.

    Conservative: False means "could not prove it", so a rule is reported as
    shadowed only when it really can never be reached.
    """
    if isinstance(earlier, Always):
        return True
    if later.key() == earlier.key():
        return True
    if isinstance(later, Always):
        return False
    if isinstance(later, AnyOf):
        return all(implies(c, earlier) for c in later.children)
    if isinstance(earlier, AllOf):
        return all(implies(later, c) for c in earlier.children)
    if isinstance(later, AllOf) and any(implies(c, earlier) for c in later.children):
        return True
    if isinstance(earlier, AnyOf) and any(implies(later, c) for c in earlier.children):
        return True
    if isinstance(later, Not) and isinstance(earlier, Not):
        return implies(earlier.child, later.child)
    return _leaf_implies(later, earlier)


_VALUE_LEAVES = (Equals, In, Range, Regex)


def _field(cond: Condition) -> str | None:
    if isinstance(cond, (Equals, In, Range, Regex, Exists)):
        return cond.field
    return None


def _leaf_implies(later: Condition, earlier: Condition) -> bool:
    field = _field(later)
    if field is None or field != _field(earlier):
        return False
    if isinstance(earlier, Exists):
        if earlier.expected:
            return isinstance(later, _VALUE_LEAVES) or (isinstance(later, Exists) and later.expected)
        return isinstance(later, Exists) and not later.expected
    if isinstance(earlier, (Equals, In)) and isinstance(later, (Equals, In)):
        return later.values() <= earlier.values()
    if isinstance(earlier, Range):
        if isinstance(later, Range):
            low_ok = earlier.min is None or (later.min is not None and later.min >= earlier.min)
            high_ok = earlier.max is None or (later.max is not None and later.max <= earlier.max)
            return low_ok and high_ok
        if isinstance(later, (Equals, In)):
            nums = later.values()
            return all(isinstance(n, float) and earlier.contains(n) for n in nums)
    return False
