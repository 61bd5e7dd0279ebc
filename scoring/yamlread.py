"""Strict YAML reading shared by the scoring loaders (``scoring.yaml``, ``icp.yaml``).

Works on PyYAML's composed node tree rather than plain Python objects, so every
message can name the file and line; unknown keys get a did-you-mean.  Messages
read ``<source>:<line>: <where>: <problem>; <fix>``.  Nothing here opens files.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from scoring.errors import ScoringConfigError


def line_of(node: Node) -> int:
    """The 1-based line a node starts on."""
    return int(node.start_mark.line) + 1


def did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    """``did you mean 'x'? `` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word.strip().lower(), choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def kind(value: object) -> str:
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


def node_kind(node: Node) -> str:
    """``a mapping``, ``a list`` or ``a value``."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a value"


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``key: value`` of a mapping: the key's line and the value's node."""

    key_line: int
    node: Node


class YamlReader:
    """Reads one YAML document; every ``fail`` raises ``error_class`` with file and line."""

    error_class: type[ScoringConfigError] = ScoringConfigError

    def __init__(self, source: str) -> None:
        self.source = source
        self._constructor = SafeConstructor()

    # ------------------------------------------------------------------ failing

    def fail(self, line: int, where: str, problem: str, fix: str) -> NoReturn:
        msg = f"{self.source}:{line}: {where}: {problem}; {fix}"
        raise self.error_class(msg)

    # ------------------------------------------------------------------ the document

    def root(self, text: object, what: str, top_keys: tuple[str, ...]) -> MappingNode:
        """Compose ``text`` and return its root mapping; ``what`` names the file kind in messages."""
        if not isinstance(text, str):
            msg = (
                f"{self.source}: {what} must be handed in as text, got {type(text).__name__}; "
                "read the file and pass its contents"
            )
            raise self.error_class(msg)
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
            self.fail(1, "file", "is empty", f"write the top-level keys ({', '.join(top_keys)})")
        if not isinstance(root, MappingNode):
            self.fail(
                line_of(root),
                "file",
                f"must be a mapping, got {node_kind(root)}",
                f"use top-level keys: {', '.join(top_keys)}",
            )
        return root

    # ------------------------------------------------------------------ values

    def scalar(self, node: Node, where: str, key: str) -> object:
        if not isinstance(node, ScalarNode):
            self.fail(
                line_of(node),
                where,
                f"{key!r} must be a single value, got {node_kind(node)}",
                f"write '{key}: <value>'",
            )
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.fail(
                line_of(node),
                where,
                f"{key!r} value {node.value!r} cannot be read ({exc})",
                "quote it or fix the value",
            )

    def mapping(
        self, node: Node, where: str, allowed: tuple[str, ...], *, what: str | None = None
    ) -> dict[str, Entry]:
        """Keys of a mapping node, rejecting non-text keys, duplicates, merges and unknown keys.

        ``what`` names the value in the message when ``node`` is not a mapping.
        """
        if not isinstance(node, MappingNode):
            self.fail(
                line_of(node),
                where,
                f"{what or 'value'} must be a mapping, got {node_kind(node)}",
                f"use keys: {', '.join(allowed)}",
            )
        entries: dict[str, Entry] = {}
        for key_node, value_node in node.value:
            line = line_of(key_node)
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.fail(
                    line, where, "YAML merge keys ('<<') are not supported", "write the keys out in full"
                )
            key = self.scalar(key_node, where, "key")
            if not isinstance(key, str):
                self.fail(
                    line, where, f"key must be text, got {kind(key)}", f"use one of: {', '.join(allowed)}"
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
                    f"{did_you_mean(key, allowed)}valid keys: {', '.join(allowed)}",
                )
            entries[key] = Entry(line, value_node)
        return entries

    def require(
        self, entries: dict[str, Entry], required: tuple[str, ...], line: int, where: str, hint: str
    ) -> None:
        """Fail on the first key of ``required`` that is absent; ``hint`` may use ``{key}``."""
        for key in required:
            if key not in entries:
                self.fail(line, where, f"missing required key {key!r}", hint.format(key=key))

    def number(
        self,
        entry: Entry,
        where: str,
        key: str,
        *,
        positive: bool = False,
        at_least: float | None = None,
        at_most: float | None = None,
    ) -> float:
        """A finite number; ``positive`` requires > 0, ``at_least``/``at_most`` are inclusive bounds."""
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
            self.fail(line_of(entry.node), where, f"{key!r} must be a number, got {kind(value)}", fix)
        number = float(value)
        if not math.isfinite(number):
            self.fail(
                line_of(entry.node), where, f"{key!r} must be finite, got {value!r}", "write a plain number"
            )
        if positive and number <= 0:
            self.fail(
                line_of(entry.node),
                where,
                f"{key!r} must be greater than 0, got {value!r}",
                "use a positive number",
            )
        if at_least is not None and number < at_least:
            self.fail(
                line_of(entry.node),
                where,
                f"{key!r} must be at least {at_least:g}, got {value!r}",
                f"use a number from {at_least:g}" + (f" to {at_most:g}" if at_most is not None else " up"),
            )
        if at_most is not None and number > at_most:
            self.fail(
                line_of(entry.node),
                where,
                f"{key!r} must be at most {at_most:g}, got {value!r}",
                (
                    f"use a number from {at_least:g} to {at_most:g}"
                    if at_least is not None
                    else f"use at most {at_most:g}"
                ),
            )
        return number

    def integer(self, entry: Entry, where: str, key: str, *, at_least: int = 0) -> int:
        """A whole number ``>= at_least`` (``1000`` or ``1_000``; not ``1,000``)."""
        value = self.scalar(entry.node, where, key)
        if isinstance(value, bool) or not isinstance(value, int):
            fix = "write a whole number such as 200"
            if isinstance(value, str) and "," in value:
                fix = "write it without thousands commas, e.g. 1000 or 1_000"
            self.fail(line_of(entry.node), where, f"{key!r} must be a whole number, got {kind(value)}", fix)
        if value < at_least:
            self.fail(
                line_of(entry.node),
                where,
                f"{key!r} must be at least {at_least}, got {value}",
                f"use a whole number >= {at_least}",
            )
        return value

    def text(self, entry: Entry, where: str, key: str) -> str:
        """Non-empty text, stripped."""
        return self.text_node(entry.node, where, key)

    def text_node(self, node: Node, where: str, key: str) -> str:
        value = self.scalar(node, where, key)
        if not isinstance(value, str):
            self.fail(
                line_of(node),
                where,
                f"{key!r} must be text, got {kind(value)}",
                f'quote it: {key}: "..."',
            )
        value = value.strip()
        if not value:
            self.fail(line_of(node), where, f"{key!r} is empty", f"give {key!r} a value or remove the key")
        return value

    def boolean(self, entry: Entry, where: str, key: str) -> bool:
        value = self.scalar(entry.node, where, key)
        if not isinstance(value, bool):
            self.fail(
                line_of(entry.node),
                where,
                f"{key!r} must be true or false, got {kind(value)}",
                f"write '{key}: true' or '{key}: false'",
            )
        return value

    def items(self, entry: Entry, where: str, key: str, example: str) -> list[Node]:
        """The item nodes of a list value; a single scalar counts as a one-item list."""
        node = entry.node
        items: list[Node] = list(node.value) if isinstance(node, SequenceNode) else [node]
        if isinstance(node, MappingNode):
            self.fail(line_of(node), where, f"{key!r} must be a list, got a mapping", f"write {example}")
        if not items:
            self.fail(line_of(node), where, f"{key!r} is an empty list", f"list at least one: {example}")
        return items

    def sequence(self, entry: Entry, where: str, key: str, example: str) -> list[Node]:
        """The item nodes of a non-empty YAML list (a single value is refused)."""
        node = entry.node
        if not isinstance(node, SequenceNode) or not node.value:
            got = node_kind(node) if not isinstance(node, SequenceNode) else "an empty list"
            self.fail(
                line_of(node), where, f"{key!r} must be a non-empty list, got {got}", f"write {example}"
            )
        return list(node.value)
