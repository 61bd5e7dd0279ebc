"""Editing one rep's schedule in the routing file's text, for the Team page.

The Team page changes a rep's team, working hours, working days, time zone and
capacity by publishing a NEW routing version (the same check, test cases and
store as a publish on the Rules page).  This module is the pure part: read the
reps out of the text, check what ops typed, and write the change into the text.

The edit is a careful character-level one over the positions PyYAML's composer
reports (ruamel.yaml is not a dependency): only the changed value is rewritten,
a missing key is appended to the rep's own mapping, a key cleared on the form
(back to the team's ``rep_defaults``) is taken out, and a rep moved to another
team has its lines cut from one ``reps:`` list and appended to the other's,
re-indented.  Every comment, blank line and the layout of the rest of the file
stay as they were.  The result is then compiled and tested like any publish, so
a text this module gets wrong can never route.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfoNotFoundError, available_timezones

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from router.errors import RouterError
from rules.roster import WEEKDAYS, parse_hours, zone

EDIT_FIELDS = ("team", "hours", "days", "tz", "capacity_day", "capacity_30d")
SCHEDULE_FIELDS = EDIT_FIELDS[1:]
LABELS = {"team": "team", "hours": "working hours", "days": "working days", "tz": "time zone",
          "capacity_day": "capacity per day", "capacity_30d": "capacity per 30 days"}
MAX_CAPACITY = {"capacity_day": 1000, "capacity_30d": 30_000}
MAX_FIELD = 200  # characters of one form value
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9_/+-]*$")


class TeamEditError(RouterError):
    """The text cannot be edited for this rep (not found, a layout this edit does not handle)."""


@dataclass(frozen=True, slots=True)
class RepEntry:
    """A rep as written in the file: its own schedule values (absent ones come from the team's defaults)."""

    rep_id: str
    name: str
    team: str
    own: Mapping[str, str]  # field -> value as shown on the form ("08:00-17:00", "mon-fri", "12")


def _scalar(node: Node) -> str | None:
    return str(node.value) if isinstance(node, ScalarNode) else None


def _get(node: MappingNode, key: str) -> Node | None:
    for k, v in node.value:
        if _scalar(k) == key:
            found: Node = v
            return found
    return None


def _compose(text: str) -> MappingNode:
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        msg = f"the running routing text is not YAML ({exc}); fix it on the Rules page"
        raise TeamEditError(msg) from None
    if not isinstance(root, MappingNode):
        msg = "the running routing text is not a mapping; fix it on the Rules page"
        raise TeamEditError(msg)
    return root


def _teams(root: MappingNode) -> list[tuple[str, MappingNode, SequenceNode | None]]:
    teams = _get(root, "teams")
    if not isinstance(teams, MappingNode):
        return []
    out = []
    for k, v in teams.value:
        name = _scalar(k)
        if name is None or not isinstance(v, MappingNode):
            continue
        reps = _get(v, "reps")
        out.append((name, v, reps if isinstance(reps, SequenceNode) else None))
    return out


def _form_value(key: str, node: Node) -> str:
    if isinstance(node, SequenceNode):
        return ", ".join(str(_scalar(i) or "") for i in node.value)
    return str(_scalar(node) or "")


def rep_entries(text: str) -> dict[str, RepEntry]:
    """Every rep of the text by id, with the schedule values written on the rep itself."""
    out: dict[str, RepEntry] = {}
    for team, _node, reps in _teams(_compose(text)):
        for item in reps.value if reps is not None else ():
            if not isinstance(item, MappingNode):
                continue
            rep_id = _scalar(_get(item, "id") or ScalarNode("", ""))
            if not rep_id:
                continue
            own = {k: _form_value(k, v) for k in SCHEDULE_FIELDS if (v := _get(item, k)) is not None}
            out[rep_id] = RepEntry(rep_id, _scalar(_get(item, "name") or ScalarNode("", "")) or rep_id, team, own)
    return out


# --- checking what ops typed -------------------------------------------------------------------------


def _days(raw: str) -> list[str] | str:
    """The days as list items (``["mon-fri"]``), or an error message."""
    items = [p.strip().lower() for p in re.split(r"[,\s]+", raw.strip()) if p.strip()]
    if not items:
        return "give at least one day, e.g. mon-fri or mon, tue, wed"
    for item in items:
        parts = [p.strip() for p in item.split("-")]
        bad = [p for p in parts if p not in WEEKDAYS]
        if bad or len(parts) > 2:
            return f"{item!r} is not a weekday or a range; use mon, tue, wed, thu, fri, sat, sun or a range like mon-fri"
        if len(parts) == 2 and WEEKDAYS.index(parts[1]) < WEEKDAYS.index(parts[0]):
            return f"the range {item!r} runs backwards; write it from the earlier day, e.g. {parts[1]}-{parts[0]}"
    return items


def check_form(form: Mapping[str, str], teams: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(wanted values by field, normalised, "" for the team default; errors by field naming value and fix)."""
    wanted: dict[str, str] = {}
    errors: dict[str, str] = {}
    for key in EDIT_FIELDS:
        raw = str(form.get(key, "")).strip()
        if len(raw) > MAX_FIELD:
            errors[key] = f"{LABELS[key]} is longer than {MAX_FIELD} characters; shorten it"
            continue
        if key == "team":
            if raw not in teams:
                errors[key] = f"team {raw!r} is not a team of the routing file; pick one of {', '.join(teams)}"
            wanted[key] = raw
        elif not raw:
            wanted[key] = ""
        elif key == "hours":
            if parse_hours(raw) is None:
                errors[key] = (f"hours {raw!r} is not a local time range HH:MM-HH:MM with the end after the start; "
                               "e.g. 09:00-17:30 (or empty for the team default)")
            else:
                wanted[key] = raw.replace(" ", "")
        elif key == "days":
            days = _days(raw)
            if isinstance(days, str):
                errors[key] = f"days {raw!r}: {days}"
            else:
                wanted[key] = ", ".join(days)
        elif key == "tz":
            try:
                if raw not in available_timezones():
                    raise ZoneInfoNotFoundError(raw)
                zone(raw)
                wanted[key] = raw
            except (ZoneInfoNotFoundError, ValueError):
                errors[key] = (f"time zone {raw!r} is not an IANA time zone name; write it as Area/City, e.g. "
                               "America/Chicago, Europe/Berlin or UTC")
        else:
            top = MAX_CAPACITY[key]
            if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= top:
                errors[key] = (f"{LABELS[key]} {raw!r} must be a whole number from 1 to {top} (or empty for the "
                               "team default; to stop a rep's leads, set them out of office)")
            else:
                wanted[key] = str(int(raw))
    return wanted, errors


def changes_of(entry: RepEntry, wanted: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The fields that change: field -> (old, new) as shown ("" is the team default)."""
    out: dict[str, tuple[str, str]] = {}
    for key in EDIT_FIELDS:
        old = entry.team if key == "team" else entry.own.get(key, "")
        if key == "days" and old:
            old_days = _days(old)
            old = ", ".join(old_days) if isinstance(old_days, list) else old
        new = wanted.get(key, old)
        if new != old:
            out[key] = (old, new)
    return out


def describe(entry: RepEntry, changes: Mapping[str, tuple[str, str]]) -> str:
    """The automatic publish note, e.g. ``Team page: capacity per day of Ana Ruiz 5 → 8``."""
    parts = [f"{LABELS[k]} of {entry.name} {old or 'team default'} → {new or 'team default'}"
             for k, (old, new) in changes.items()]
    return "Team page: " + "; ".join(parts)


# --- writing the change into the text ------------------------------------------------------------------


def _yaml_value(key: str, value: str) -> str:
    if key == "hours":
        return f'"{value}"'
    if key == "days":
        return "[" + ", ".join(value.split(", ")) + "]"
    if key == "tz" and not _PLAIN.match(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _find(root: MappingNode, rep_id: str) -> tuple[str, SequenceNode, int, MappingNode]:
    for team, _node, reps in _teams(root):
        for index, item in enumerate(reps.value if reps is not None else ()):
            if isinstance(item, MappingNode) and _scalar(_get(item, "id") or ScalarNode("", "")) == rep_id:
                assert reps is not None
                return team, reps, index, item
    msg = f"rep {rep_id!r} is not in the running routing version; reload the Team page"
    raise TeamEditError(msg)


def _content_end(node: Node) -> int:
    """Where a node's own text ends: a block collection's end mark is the next token, so descend to its last
    scalar or flow collection, whose end is exact."""
    while isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, MappingNode) else last
    return int(node.end_mark.index)


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """The index just after the newline ending the line holding ``index`` (or the text's end)."""
    nl = text.find("\n", index)
    return len(text) if nl < 0 else nl + 1


def _set_fields(text: str, rep_id: str, values: Mapping[str, str]) -> str:
    """Write ``values`` (field -> value, "" to take the key out) into the rep's own mapping."""
    _team, _reps, _index, item = _find(_compose(text), rep_id)
    edits: list[tuple[int, int, str]] = []
    pairs = item.value
    for key, value in values.items():
        at = next((i for i, (k, _v) in enumerate(pairs) if _scalar(k) == key), None)
        if at is not None:
            k_node, v_node = pairs[at]
            if value:
                edits.append((v_node.start_mark.index, v_node.end_mark.index, _yaml_value(key, value)))
            elif item.flow_style:  # ", key: value" goes (the pair before it ends where the comma starts)
                start = pairs[at - 1][1].end_mark.index if at else k_node.start_mark.index
                end = v_node.end_mark.index if at else pairs[at + 1][0].start_mark.index if len(pairs) > 1 \
                    else v_node.end_mark.index
                edits.append((start, end, ""))
            else:
                if text[_line_start(text, k_node.start_mark.index):k_node.start_mark.index].strip(" "):
                    msg = f"rep {rep_id!r}: {key} shares a line with another key; clear it on the Rules page"
                    raise TeamEditError(msg)
                edits.append((_line_start(text, k_node.start_mark.index),
                               _line_end(text, max(_content_end(v_node) - 1, v_node.start_mark.index)), ""))
        elif value:
            last = pairs[-1][1].end_mark.index
            if item.flow_style:
                edits.append((last, last, f", {key}: {_yaml_value(key, value)}"))
            else:  # a new line after the mapping's last line (its comment stays on it)
                indent = " " * pairs[0][0].start_mark.column
                end = _line_end(text, _content_end(item) - 1)
                line = f"{indent}{key}: {_yaml_value(key, value)}\n"
                edits.append((end, end, line if text[end - 1:end] == "\n" else "\n" + line))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _item_lines(text: str, reps: SequenceNode, item: Node, rep_id: str) -> tuple[int, int, int]:
    """(start, end, column of the dash) of the whole lines a block list item takes."""
    if reps.flow_style:
        msg = f"rep {rep_id!r}: the team's reps are one flow list [...]; move the rep on the Rules page"
        raise TeamEditError(msg)
    start = _line_start(text, item.start_mark.index)
    lead = text[start:item.start_mark.index]
    if lead.strip() != "-":
        msg = f"rep {rep_id!r}: the list item does not start its own line; move the rep on the Rules page"
        raise TeamEditError(msg)
    end_index = _content_end(item)
    end = _line_end(text, max(end_index - 1, item.start_mark.index))
    tail = text[end_index:end].strip()
    if tail and not tail.startswith("#"):
        msg = f"rep {rep_id!r}: the list item shares its last line with other text; move the rep on the Rules page"
        raise TeamEditError(msg)
    return start, end, lead.index("-")


def _move(text: str, rep_id: str, to_team: str) -> str:
    root = _compose(text)
    _team, reps, _index, item = _find(root, rep_id)
    target = next((r for t, _n, r in _teams(root) if t == to_team), None)
    if target is None or not target.value:
        msg = f"team {to_team!r} has no reps: list to append to; move the rep on the Rules page"
        raise TeamEditError(msg)
    start, end, column = _item_lines(text, reps, item, rep_id)
    _t_start, t_end, t_column = _item_lines(text, target, target.value[-1], "the last rep of " + to_team)
    block = text[start:end]
    if not block.endswith("\n"):
        block += "\n"
    shift = t_column - column
    lines = block.splitlines(keepends=True)
    if shift >= 0:
        lines = [" " * shift + ln if ln.strip() else ln for ln in lines]
    else:
        lines = [ln[-shift:] if ln[:-shift].strip() == "" else ln.lstrip(" ") for ln in lines]
    moved = "".join(lines)
    if t_end < start:
        return text[:t_end] + moved + text[t_end:start] + text[end:]
    prefix = text[:t_end] if text[:t_end].endswith("\n") else text[:t_end] + "\n"
    return text[:start] + prefix[end:] + moved + text[t_end:]


def apply_changes(text: str, rep_id: str, changes: Mapping[str, tuple[str, str]]) -> str:
    """The text with the rep's schedule fields changed, then the rep moved when its team changes."""
    fields = {k: new for k, (_old, new) in changes.items() if k != "team"}
    if fields:
        text = _set_fields(text, rep_id, fields)
    if "team" in changes:
        text = _move(text, rep_id, changes["team"][1])
    return text
