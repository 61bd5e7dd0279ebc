"""YAML parsing that keeps line numbers and refuses YAML 1.1 surprises.

Only ``true``/``false`` are booleans here: with plain ``SafeLoader`` the country
``NO`` (Norway) and the province ``ON`` (Ontario) silently become booleans.
Repeated keys, which PyYAML silently collapses to the last one, are problems.
"""

from __future__ import annotations

import re

import yaml

from rules._problems import ProblemLog
from rules.errors import RuleSyntaxError

_BOOL_TAG = "tag:yaml.org,2002:bool"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader whose only booleans are true and false."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


class YMap(dict[str, object]):
    """A YAML mapping that knows its own line and the line of each key (1-based)."""

    __slots__ = ("line", "lines")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[str, int] = {}

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)


class YList(list[object]):
    """A YAML sequence that knows its own line and the line of each item (1-based)."""

    __slots__ = ("line", "lines")

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.lines[index] if 0 <= index < len(self.lines) else self.line


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def parse(text: str, log: ProblemLog) -> tuple[bool, object]:
    """Parse one YAML document; ``(False, None)`` when it does not parse (the problem is logged)."""
    try:
        # The reader checks the characters as it is built: a control character
        # raises here, and must be a problem like any other, not a crash.
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        log.add(RuleSyntaxError, 1, None, f"YAML syntax error: {exc}; remove control characters from the file")
        return False, None
    try:
        node = loader.get_single_node()
        if node is None:
            return True, None
        return True, _convert(loader, node, log, set())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        what = exc.problem or exc.context or "not valid YAML"
        log.add(RuleSyntaxError, line, None, f"YAML syntax error: {what}; check the indentation and quoting here")
        return False, None
    except yaml.YAMLError as exc:
        log.add(RuleSyntaxError, 1, None, f"YAML syntax error: {exc}; check the file is valid YAML")
        return False, None
    finally:
        loader.dispose()


def _convert(loader: _Loader, node: yaml.Node, log: ProblemLog, active: set[int]) -> object:
    line = _line(node)
    if id(node) in active:
        log.add(RuleSyntaxError, line, None, "a YAML alias refers to itself; write the value out instead")
        return None
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP_TAG:
            log.add(RuleSyntaxError, line, None, f"unsupported YAML tag {node.tag!r}; remove the tag")
        result = YMap(line)
        active.add(id(node))
        for key_node, value_node in node.value:
            key_line = _line(key_node)
            if key_node.tag == _MERGE_TAG:
                log.add(RuleSyntaxError, key_line, None, "YAML merge keys (<<) are not supported; write the keys out")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                log.add(RuleSyntaxError, key_line, None, "a mapping key must be a plain name; use a string key")
                continue
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                log.add(RuleSyntaxError, key_line, None, f"key {key!r} must be a string; quote it: '{key}'")
                continue
            if key in result:
                log.add(
                    RuleSyntaxError,
                    key_line,
                    None,
                    f"key {key!r} appears twice in one mapping (first at line {result.lines[key]}); "
                    "YAML would silently keep only the last one, so delete one",
                )
                continue
            result[key] = _convert(loader, value_node, log, active)
            result.lines[key] = key_line
        active.discard(id(node))
        return result
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ_TAG:
            log.add(RuleSyntaxError, line, None, f"unsupported YAML tag {node.tag!r}; remove the tag")
        items = YList(line)
        active.add(id(node))
        for item in node.value:
            items.append(_convert(loader, item, log, active))
            items.lines.append(_line(item))
        active.discard(id(node))
        return items
    try:
        return loader.construct_object(node, deep=True)
    except ValueError:
        # A scalar that looks like a date but is not one (2026-13-01): keep the text,
        # so the key's own check reports it with file:line instead of a crash.
        return node.value
