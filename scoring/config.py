"""The scoring config: which events earn how many points, and when a lead is sales-ready.

Ops edit ``scoring.yaml``; :func:`load_scoring_config` parses the text it is
handed (it never opens files) and validates it strictly, so a typo fails the
deploy with a message naming the file, line, rule, bad value and fix instead of
silently scoring nothing.

Format::

    threshold: 100          # sales-ready at this decayed score (> 0)
    half_life_days: 30      # optional, default 30 (> 0)
    rules:
      - name: pricing-page            # unique
        description: Looked at prices # required
        event: page_view              # page_view | email_open | email_click | form_fill
        url: ^/pricing(?:[/?]|$)      # optional regex, searched in the URL's path+query
        form: demo-request            # optional, form_fill only: one form id or a list
        campaign: nov-webinar         # optional, exact campaign name
        points: 10                    # may be negative, must be finite
        hand_raiser: false            # optional, form_fill only: sales-ready at once

Every rule an event matches adds its points; there is no first-match.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from models.events import EventType
from scoring.errors import ScoringConfigError

DEFAULT_HALF_LIFE_DAYS = 30.0
SECONDS_PER_DAY = 86_400.0

TOP_KEYS: tuple[str, ...] = ("threshold", "half_life_days", "rules")
RULE_KEYS: tuple[str, ...] = (
    "name",
    "description",
    "event",
    "url",
    "form",
    "campaign",
    "points",
    "hand_raiser",
)
_REQUIRED_TOP: tuple[str, ...] = ("threshold", "rules")
_REQUIRED_RULE: tuple[str, ...] = ("name", "description", "event", "points")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoringRule:
    """One line of the points table.

    An event matches when its type is ``event`` and every optional condition
    given holds: ``url`` is found (``re.search``) in the URL's path+query,
    ``form_id`` is one of ``forms``, ``campaign`` equals the event's campaign.
    """

    name: str
    description: str
    event: EventType
    url: re.Pattern[str] | None = None
    forms: tuple[str, ...] = ()
    campaign: str | None = None
    points: float
    hand_raiser: bool = False
    line: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoringConfig:
    """A validated scoring config.

    ``version`` is derived from the content (never passed in): the first 12 hex
    digits of the sha256 of the config as canonical JSON.  It ignores comments,
    formatting and line numbers, so it changes exactly when scoring changes.
    """

    threshold: float
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS
    rules: tuple[ScoringRule, ...]
    version: str = field(init=False)
    _by_type: Mapping[EventType, tuple[ScoringRule, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _positive_finite(self.threshold):
            msg = f"ScoringConfig threshold must be a finite number > 0, got {self.threshold!r}"
            raise ScoringConfigError(msg)
        if not _positive_finite(self.half_life_days):
            msg = f"ScoringConfig half_life_days must be a finite number > 0, got {self.half_life_days!r}"
            raise ScoringConfigError(msg)
        object.__setattr__(self, "version", _content_hash(self))
        by_type = MappingProxyType({t: tuple(r for r in self.rules if r.event is t) for t in EventType})
        object.__setattr__(self, "_by_type", by_type)

    @property
    def half_life_s(self) -> float:
        """The half-life in seconds, the unit the decay math works in."""
        return self.half_life_days * SECONDS_PER_DAY

    def rules_for(self, event_type: EventType) -> tuple[ScoringRule, ...]:
        """The rules that can match an event of this type, in file order."""
        return self._by_type[event_type]


def load_scoring_config(text: str, source: str = "<string>") -> ScoringConfig:
    """Parse and strictly validate scoring YAML; raises :class:`ScoringConfigError`.

    ``source`` is only used in error messages (pass the file path).
    """
    return _Loader(source).load(text)


# --------------------------------------------------------------------------- internals


def _positive_finite(x: float) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _content_hash(config: ScoringConfig) -> str:
    payload = {
        "threshold": float(config.threshold),
        "half_life_days": float(config.half_life_days),
        "rules": [
            {
                "name": r.name,
                "description": r.description,
                "event": r.event.value,
                "url": r.url.pattern if r.url is not None else None,
                "forms": list(r.forms),
                "campaign": r.campaign,
                "points": float(r.points),
                "hand_raiser": r.hand_raiser,
            }
            for r in config.rules
        ],
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    """`` did you mean 'x'?`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word.strip().lower(), choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _kind(value: object) -> str:
    """How a YAML value reads to a human, for 'got ...' in messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {value!r}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"text {value!r}"
    return f"{type(value).__name__} {value!r}"


def _node_kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a value"


@dataclass(frozen=True, slots=True)
class _Entry:
    key_line: int
    node: Node


class _Loader:
    """Walks the composed YAML node tree, so every message can name a line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._constructor = SafeConstructor()

    # ------------------------------------------------------------------ helpers

    def fail(self, line: int, where: str, problem: str, fix: str) -> NoReturn:
        msg = f"{self.source}:{line}: {where}: {problem}; {fix}"
        raise ScoringConfigError(msg)

    def scalar(self, node: Node, where: str, key: str) -> object:
        if not isinstance(node, ScalarNode):
            self.fail(
                _line(node),
                where,
                f"{key!r} must be a single value, got {_node_kind(node)}",
                f"write '{key}: <value>'",
            )
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.fail(
                _line(node),
                where,
                f"{key!r} value {node.value!r} cannot be read ({exc})",
                "quote it or fix the value",
            )

    def mapping(self, node: Node, where: str, allowed: tuple[str, ...]) -> dict[str, _Entry]:
        """Keys of a mapping node, rejecting non-text keys, duplicates, merges and unknown keys."""
        assert isinstance(node, MappingNode)
        entries: dict[str, _Entry] = {}
        for key_node, value_node in node.value:
            line = _line(key_node)
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.fail(
                    line, where, "YAML merge keys ('<<') are not supported", "write the keys out in full"
                )
            key = self.scalar(key_node, where, "key")
            if not isinstance(key, str):
                self.fail(
                    line, where, f"key must be text, got {_kind(key)}", f"use one of: {', '.join(allowed)}"
                )
            if key in entries:
                self.fail(
                    line,
                    where,
                    f"key {key!r} appears twice (first at line {entries[key].key_line})",
                    "delete one of them",
                )
            if key not in allowed:
                self.fail(
                    line,
                    where,
                    f"unknown key {key!r}",
                    f"{_did_you_mean(key, allowed)}valid keys: {', '.join(allowed)}",
                )
            entries[key] = _Entry(line, value_node)
        return entries

    def require(
        self, entries: dict[str, _Entry], required: tuple[str, ...], line: int, where: str, hint: str
    ) -> None:
        for key in required:
            if key not in entries:
                self.fail(line, where, f"missing required key {key!r}", hint.format(key=key))

    def number(self, entry: _Entry, where: str, key: str, *, positive: bool) -> float:
        value = self.scalar(entry.node, where, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fix = "write a plain number such as 10 or -2.5"
            if isinstance(value, str):
                try:
                    float(value)
                except ValueError:
                    pass
                else:
                    fix = f"YAML reads {value!r} as text; write it with a decimal point (e.g. 1.0e+2) or as a plain number"
            self.fail(_line(entry.node), where, f"{key!r} must be a number, got {_kind(value)}", fix)
        number = float(value)
        if not math.isfinite(number):
            self.fail(
                _line(entry.node), where, f"{key!r} must be finite, got {value!r}", "write a plain number"
            )
        if positive and number <= 0:
            self.fail(
                _line(entry.node),
                where,
                f"{key!r} must be greater than 0, got {value!r}",
                "use a positive number",
            )
        return number

    def text(self, entry: _Entry, where: str, key: str) -> str:
        value = self.scalar(entry.node, where, key)
        if not isinstance(value, str):
            self.fail(
                _line(entry.node),
                where,
                f"{key!r} must be text, got {_kind(value)}",
                f'quote it: {key}: "..."',
            )
        value = value.strip()
        if not value:
            self.fail(
                _line(entry.node), where, f"{key!r} is empty", f"give {key!r} a value or remove the key"
            )
        return value

    # ------------------------------------------------------------------ the file

    def load(self, text: str) -> ScoringConfig:
        if not isinstance(text, str):
            msg = f"{self.source}: scoring config must be handed in as text, got {type(text).__name__}; read the file and pass its contents"
            raise ScoringConfigError(msg)
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = int(mark.line) + 1 if mark is not None else 1
            problem = exc.problem or exc.context or "invalid YAML"
            self.fail(
                line,
                "YAML syntax",
                f"{problem}",
                "fix the YAML syntax (check indentation, colons and quotes)",
            )
        except yaml.YAMLError as exc:
            self.fail(1, "YAML syntax", str(exc), "fix the YAML syntax")
        if root is None:
            self.fail(1, "file", "is empty", f"write at least: threshold, rules ({', '.join(TOP_KEYS)})")
        if not isinstance(root, MappingNode):
            self.fail(
                _line(root),
                "file",
                f"must be a mapping, got {_node_kind(root)}",
                f"use top-level keys: {', '.join(TOP_KEYS)}",
            )

        top = self.mapping(root, "top level", TOP_KEYS)
        self.require(top, _REQUIRED_TOP, _line(root), "top level", "add a top-level '{key}:' key")
        threshold = self.number(top["threshold"], "top level", "threshold", positive=True)
        half_life_days = DEFAULT_HALF_LIFE_DAYS
        if "half_life_days" in top:
            half_life_days = self.number(top["half_life_days"], "top level", "half_life_days", positive=True)

        rules_node = top["rules"].node
        if not isinstance(rules_node, SequenceNode) or not rules_node.value:
            got = _node_kind(rules_node) if not isinstance(rules_node, SequenceNode) else "an empty list"
            self.fail(
                _line(rules_node),
                "top level",
                f"'rules' must be a non-empty list of rules, got {got}",
                "write each rule as '- name: ...' with description, event and points",
            )
        rules: list[ScoringRule] = []
        seen: dict[str, int] = {}
        for index, rule_node in enumerate(rules_node.value, start=1):
            rule = self.rule(rule_node, index)
            if rule.name in seen:
                self.fail(
                    rule.line,
                    f"rule {rule.name!r}",
                    f"duplicate rule name (also used by the rule at line {seen[rule.name]})",
                    "rename one of them; rule names must be unique",
                )
            seen[rule.name] = rule.line
            rules.append(rule)
        return ScoringConfig(threshold=threshold, half_life_days=half_life_days, rules=tuple(rules))

    def rule(self, node: Node, index: int) -> ScoringRule:
        where = f"rule #{index}"
        line = _line(node)
        if not isinstance(node, MappingNode):
            self.fail(
                line,
                where,
                f"must be a mapping of rule keys, got {_node_kind(node)}",
                "write it as '- name: ...' with description, event and points",
            )
        # Read the name before anything else, so later messages can name the rule.
        for key_node, value_node in node.value:
            if (
                isinstance(key_node, ScalarNode)
                and key_node.value == "name"
                and isinstance(value_node, ScalarNode)
            ):
                name_value = self.scalar(value_node, where, "name")
                if isinstance(name_value, str) and name_value.strip():
                    where = f"rule {name_value.strip()!r}"
        entries = self.mapping(node, where, RULE_KEYS)
        self.require(entries, _REQUIRED_RULE, line, where, "add '{key}:' to the rule")

        name = self.text(entries["name"], where, "name")
        description = self.text(entries["description"], where, "description")
        event = self.event(entries["event"], where)
        points = self.number(entries["points"], where, "points", positive=False)

        url: re.Pattern[str] | None = None
        if "url" in entries:
            pattern = self.text(entries["url"], where, "url")
            try:
                url = re.compile(pattern)
            except re.error as exc:
                self.fail(
                    _line(entries["url"].node),
                    where,
                    f"'url' is not a valid regular expression {pattern!r}: {exc}",
                    "escape special characters with a backslash (e.g. \\? \\. \\+) or fix the brackets",
                )

        forms: tuple[str, ...] = ()
        if "form" in entries:
            if event is not EventType.FORM_FILL:
                self.fail(
                    entries["form"].key_line,
                    where,
                    f"'form' only applies to event 'form_fill', but this rule's event is {event.value!r}",
                    "set 'event: form_fill' or remove 'form'",
                )
            forms = self.forms(entries["form"], where)

        campaign: str | None = None
        if "campaign" in entries:
            campaign = self.text(entries["campaign"], where, "campaign")

        hand_raiser = False
        if "hand_raiser" in entries:
            value = self.scalar(entries["hand_raiser"].node, where, "hand_raiser")
            if not isinstance(value, bool):
                self.fail(
                    _line(entries["hand_raiser"].node),
                    where,
                    f"'hand_raiser' must be true or false, got {_kind(value)}",
                    "write 'hand_raiser: true' or 'hand_raiser: false'",
                )
            if value and event is not EventType.FORM_FILL:
                self.fail(
                    entries["hand_raiser"].key_line,
                    where,
                    f"'hand_raiser: true' only applies to event 'form_fill', but this rule's event is {event.value!r}",
                    "set 'event: form_fill' with the hand-raiser form ids, or remove 'hand_raiser'",
                )
            hand_raiser = value

        return ScoringRule(
            name=name,
            description=description,
            event=event,
            url=url,
            forms=forms,
            campaign=campaign,
            points=points,
            hand_raiser=hand_raiser,
            line=line,
        )

    def event(self, entry: _Entry, where: str) -> EventType:
        value = self.scalar(entry.node, where, "event")
        allowed = tuple(t.value for t in EventType)
        if isinstance(value, str):
            try:
                return EventType(value)
            except ValueError:
                normalised = value.strip().lower().replace("-", "_").replace(" ", "_")
                suggestion = _did_you_mean(normalised, allowed)
                self.fail(
                    _line(entry.node),
                    where,
                    f"unknown event {value!r}",
                    f"{suggestion}valid events: {', '.join(allowed)}",
                )
        self.fail(
            _line(entry.node),
            where,
            f"'event' must be text, got {_kind(value)}",
            f"use one of: {', '.join(allowed)}",
        )

    def forms(self, entry: _Entry, where: str) -> tuple[str, ...]:
        node = entry.node
        items: list[Node] = list(node.value) if isinstance(node, SequenceNode) else [node]
        if not items:
            self.fail(
                _line(node),
                where,
                "'form' is an empty list",
                "list at least one form id, or remove 'form' to match any form",
            )
        forms: list[str] = []
        for item in items:
            if not isinstance(item, ScalarNode):
                self.fail(
                    _line(item),
                    where,
                    f"'form' entries must be form ids, got {_node_kind(item)}",
                    "write 'form: demo-request' or 'form: [demo-request, contact-sales]'",
                )
            value = self.scalar(item, where, "form")
            if not isinstance(value, str) or not value.strip():
                self.fail(
                    _line(item),
                    where,
                    f"'form' entries must be non-empty text, got {_kind(value)}",
                    'quote the form id: form: "..."',
                )
            form_id = value.strip()
            if form_id not in forms:
                forms.append(form_id)
        return tuple(forms)
