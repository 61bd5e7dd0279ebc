"""The scoring config: which events earn how many points, and when a lead is sales-ready.

Ops edit ``scoring.yaml``; :func:`load_scoring_config` parses the text it is
handed (it never opens files) and validates it strictly, so a typo fails the
deploy with a message naming the file, line, rule, bad value and fix instead of
silently scoring nothing.

Format::

    threshold: 100          # the engagement score that makes a lead sales-ready (> 0)
    half_life_days: 30      # optional, default 30 (> 0)
    daily_cap: 120          # optional: positive points one lead may earn per UTC day (> 0)
    sales_ready:            # optional, see scoring.ready; default: engagement >= threshold or a hand-raiser
      any:
        - {engagement_at_least: 100, grade_in: [A, B]}
        - {probability_at_least: 0.6}
        - {hand_raiser: true}
      recycle_below: 30     # optional, below every engagement_at_least and the threshold
      reengage:             # optional, see scoring.ready.Reengage; default: only nurture re-fires
        hand_raiser: [nurture, sal, sql, opportunity, won, lost]  # a hand-raiser re-fires from these
        score: [nurture, lost]      # a score crossing re-fires from these ([] for none)...
        score_after_days: 30        # ...this long after the last crossing or outcome (default 0);
                                    # or per stage: score: {nurture: 0, lost: 90} (days)
        cooldown_hours: 24          # no re-fire this soon after the last crossing, unless an outcome since
    rules:
      - name: pricing-page            # unique
        description: Looked at prices # required
        event: page_view              # page_view | email_open | email_click | form_fill
        url: ^/pricing(?:[/?]|$)      # optional regex, searched in the URL's path+query
        form: demo-request            # optional, form_fill only: one form id or a list
        campaign: nov-webinar         # optional, exact campaign name
        points: 10                    # may be negative, must be finite
        hand_raiser: false            # optional, form_fill only: sales-ready at once
        cap_per_day: 30               # optional (> 0, positive points only): max points per lead per UTC day
        once_per_lead: false          # optional: count only the first time it grants points
        repeatable: true              # optional: the default, the opposite of once_per_lead

Every rule an event matches adds its points; there is no first-match.  The
caps are applied by :mod:`scoring.caps` (and the Lua script that mirrors it).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from models.events import EventType
from scoring.account_intent import AccountIntentConfig
from scoring.errors import ScoringConfigError
from scoring.match import PropertyCondition, Value, value_of
from scoring.ready import GRADE_LETTERS, REENGAGE_STAGES, ReadyClause, Reengage, SalesReady, fmt_number
from scoring.yamlread import Entry, YamlReader, did_you_mean, kind, line_of, node_kind

DEFAULT_HALF_LIFE_DAYS = 30.0
SECONDS_PER_DAY = 86_400.0

TOP_KEYS: tuple[str, ...] = (
    "threshold",
    "half_life_days",
    "daily_cap",
    "identify_window_hours",
    "account_intent",
    "sales_ready",
    "rules",
)
RULE_KEYS: tuple[str, ...] = (
    "name",
    "description",
    "event",
    "url",
    "form",
    "campaign",
    "event_name",
    "event_name_regex",
    "properties",
    "category",
    "action",
    "label",
    "schema",
    "points",
    "hand_raiser",
    "cap_per_day",
    "once_per_lead",
    "repeatable",
)
SALES_READY_KEYS: tuple[str, ...] = ("any", "recycle_below", "reengage")
REENGAGE_KEYS: tuple[str, ...] = ("hand_raiser", "score", "score_after_days", "cooldown_hours")
_STAGE_NOTES: dict[str, str] = {
    "mql": "an mql lead has an open, unaccepted assignment and never re-fires (its SLA reminds and reassigns)",
    "known": "a known lead that never crossed is sales-ready by the clauses above, not re-engaged",
    "anonymous": "an anonymous lead is never routed",
}
ACCOUNT_INTENT_KEYS: tuple[str, ...] = ("threshold", "window_days", "per_person", "per_role")
PROPERTY_CONDITION_KEYS: tuple[str, ...] = ("regex", "at_least", "at_most", "exists")
DEFAULT_IDENTIFY_WINDOW_HOURS = 72.0
# Which event types each matching key applies to (a key on another type could never match).
NAMED_EVENTS: frozenset[EventType] = frozenset({EventType.TRACK, EventType.PAGE_VIEW, EventType.FORM_FILL})
KEY_EVENTS: Mapping[str, frozenset[EventType]] = MappingProxyType({
    "form": frozenset({EventType.FORM_FILL}),
    "event_name": NAMED_EVENTS,
    "event_name_regex": NAMED_EVENTS,
    "properties": NAMED_EVENTS,
    "category": frozenset({EventType.TRACK, EventType.PAGE_VIEW}),
    "action": frozenset({EventType.TRACK}),
    "label": frozenset({EventType.TRACK}),
    "schema": frozenset({EventType.TRACK, EventType.FORM_FILL}),
    "hand_raiser": NAMED_EVENTS,
})
CLAUSE_KEYS: tuple[str, ...] = ("engagement_at_least", "grade_in", "probability_at_least", "hand_raiser")
_REQUIRED_TOP: tuple[str, ...] = ("threshold", "rules")
_REQUIRED_RULE: tuple[str, ...] = ("name", "description", "event", "points")

# Kept for code that imported the helpers from here before they moved to scoring.yamlread.
_line = line_of
_did_you_mean = did_you_mean
_kind = kind
_node_kind = node_kind
_Entry = Entry


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoringRule:
    """One line of the points table.

    An event matches when its type is ``event`` and every optional condition
    given holds: ``url`` is found (``re.search``) in the URL's path+query,
    ``form_id`` is one of ``forms``, ``campaign`` equals the event's campaign.

    ``cap_per_day`` (points per lead per UTC day) and ``once_per_lead`` limit
    what the rule grants; see :mod:`scoring.caps`.
    """

    name: str
    description: str
    event: EventType
    url: re.Pattern[str] | None = None
    forms: tuple[str, ...] = ()
    campaign: str | None = None
    event_names: tuple[str, ...] = ()
    event_name_regex: re.Pattern[str] | None = None
    properties: tuple[PropertyCondition, ...] = ()
    categories: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()
    points: float
    hand_raiser: bool = False
    cap_per_day: float | None = None
    once_per_lead: bool = False
    line: int = 0

    def __post_init__(self) -> None:
        if self.cap_per_day is not None and not _positive_finite(self.cap_per_day):
            msg = (
                f"ScoringRule {self.name!r} cap_per_day must be a finite number > 0, got {self.cap_per_day!r}"
            )
            raise ScoringConfigError(msg)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoringConfig:
    """A validated scoring config.

    ``sales_ready`` is the section as written (``None`` when the file has
    none); ``ready`` is the rule in force: that section, or the default
    ``engagement >= threshold`` or hand-raiser.

    ``version`` is derived from the content (never passed in): the first 12 hex
    digits of the sha256 of the config as canonical JSON.  It ignores comments,
    formatting and line numbers, so it changes exactly when scoring changes.
    Options left at their defaults are not hashed, so a file that uses none of
    the newer options keeps the version it always had.
    """

    threshold: float
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS
    daily_cap: float | None = None
    identify_window_hours: float | None = None
    account_intent: AccountIntentConfig | None = None
    sales_ready: SalesReady | None = None
    rules: tuple[ScoringRule, ...]
    version: str = field(init=False)
    intent: AccountIntentConfig = field(init=False, repr=False, compare=False)
    ready: SalesReady = field(init=False, repr=False, compare=False)
    _by_type: Mapping[EventType, tuple[ScoringRule, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _positive_finite(self.threshold):
            msg = f"ScoringConfig threshold must be a finite number > 0, got {self.threshold!r}"
            raise ScoringConfigError(msg)
        if not _positive_finite(self.half_life_days):
            msg = f"ScoringConfig half_life_days must be a finite number > 0, got {self.half_life_days!r}"
            raise ScoringConfigError(msg)
        if self.daily_cap is not None and not _positive_finite(self.daily_cap):
            msg = f"ScoringConfig daily_cap must be a finite number > 0, got {self.daily_cap!r}"
            raise ScoringConfigError(msg)
        if self.identify_window_hours is not None and not (
            math.isfinite(self.identify_window_hours) and self.identify_window_hours >= 0
        ):
            msg = (
                "ScoringConfig identify_window_hours must be a finite number >= 0, "
                f"got {self.identify_window_hours!r}"
            )
            raise ScoringConfigError(msg)
        object.__setattr__(self, "version", _content_hash(self))
        object.__setattr__(self, "intent", self.account_intent or AccountIntentConfig())
        ready = self.sales_ready if self.sales_ready is not None else SalesReady.default(self.threshold)
        object.__setattr__(self, "ready", ready)
        by_type = MappingProxyType({t: tuple(r for r in self.rules if r.event is t) for t in EventType})
        object.__setattr__(self, "_by_type", by_type)

    @property
    def half_life_s(self) -> float:
        """The half-life in seconds, the unit the decay math works in."""
        return self.half_life_days * SECONDS_PER_DAY

    @property
    def identify_window_s(self) -> float:
        """How long an anonymous hand-raise waits for the person to be identified (seconds; 0: never)."""
        hours = DEFAULT_IDENTIFY_WINDOW_HOURS if self.identify_window_hours is None else self.identify_window_hours
        return hours * 3600.0

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
    rules: list[dict[str, Any]] = []
    for r in config.rules:
        rule: dict[str, Any] = {
            "name": r.name,
            "description": r.description,
            "event": r.event.value,
            "url": r.url.pattern if r.url is not None else None,
            "forms": list(r.forms),
            "campaign": r.campaign,
            "points": float(r.points),
            "hand_raiser": r.hand_raiser,
        }
        if r.cap_per_day is not None:
            rule["cap_per_day"] = float(r.cap_per_day)
        if r.once_per_lead:
            rule["once_per_lead"] = True
        # The matching keys for named events are hashed only when used, so older files keep their version.
        for key, value in (
            ("event_names", list(r.event_names)),
            ("event_name_regex", r.event_name_regex.pattern if r.event_name_regex is not None else None),
            ("properties", [c.canonical() for c in r.properties]),
            ("categories", list(r.categories)),
            ("actions", list(r.actions)),
            ("labels", list(r.labels)),
            ("schemas", list(r.schemas)),
        ):
            if value:
                rule[key] = value
        rules.append(rule)
    payload: dict[str, Any] = {
        "threshold": float(config.threshold),
        "half_life_days": float(config.half_life_days),
        "rules": rules,
    }
    if config.daily_cap is not None:
        payload["daily_cap"] = float(config.daily_cap)
    if config.identify_window_hours is not None:
        payload["identify_window_hours"] = float(config.identify_window_hours)
    if config.account_intent is not None:
        ai = config.account_intent
        payload["account_intent"] = {
            "threshold": float(ai.threshold),
            "window_days": float(ai.window_days),
            "per_person": float(ai.per_person),
            "per_role": float(ai.per_role),
        }
    if config.sales_ready is not None:
        payload["sales_ready"] = {
            "any": [
                {
                    "min_score": c.min_score,
                    "grades": list(c.grades),
                    "min_p": c.min_p,
                    "hand_raiser": c.hand_raiser,
                }
                for c in config.sales_ready.clauses
            ],
            "recycle_below": config.sales_ready.recycle_below,
        }
        re = config.sales_ready.reengage
        if re is not None:  # only when declared: files without it keep their version
            payload["sales_ready"]["reengage"] = {
                "hand_raiser": list(re.hand_raiser),
                "score": [[st, float(after)] for st, after in re.score],
                "cooldown_s": float(re.cooldown_s),
            }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


class _Loader(YamlReader):
    """Walks the composed YAML node tree, so every message can name a line."""

    error_class = ScoringConfigError

    # ------------------------------------------------------------------ the file

    def load(self, text: str) -> ScoringConfig:
        root = self.root(text, "scoring config", TOP_KEYS)
        top = self.mapping(root, "top level", TOP_KEYS)
        self.require(top, _REQUIRED_TOP, line_of(root), "top level", "add a top-level '{key}:' key")
        threshold = self.number(top["threshold"], "top level", "threshold", positive=True)
        half_life_days = DEFAULT_HALF_LIFE_DAYS
        if "half_life_days" in top:
            half_life_days = self.number(top["half_life_days"], "top level", "half_life_days", positive=True)
        daily_cap: float | None = None
        if "daily_cap" in top:
            daily_cap = self.number(top["daily_cap"], "top level", "daily_cap", positive=True)
        identify_window: float | None = None
        if "identify_window_hours" in top:
            identify_window = self.number(top["identify_window_hours"], "top level", "identify_window_hours",
                                          at_least=0.0)
        account_intent: AccountIntentConfig | None = None
        if "account_intent" in top:
            account_intent = self.account_intent(top["account_intent"])

        rules_node = top["rules"].node
        if not isinstance(rules_node, SequenceNode) or not rules_node.value:
            got = node_kind(rules_node) if not isinstance(rules_node, SequenceNode) else "an empty list"
            self.fail(
                line_of(rules_node),
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

        sales_ready: SalesReady | None = None
        if "sales_ready" in top:
            sales_ready = self.sales_ready(top["sales_ready"], threshold)
        return ScoringConfig(
            threshold=threshold,
            half_life_days=half_life_days,
            daily_cap=daily_cap,
            identify_window_hours=identify_window,
            account_intent=account_intent,
            sales_ready=sales_ready,
            rules=tuple(rules),
        )

    def account_intent(self, entry: Entry) -> AccountIntentConfig:
        where = "account_intent"
        entries = self.mapping(entry.node, where, ACCOUNT_INTENT_KEYS, what="'account_intent'")
        defaults = AccountIntentConfig()
        values: dict[str, float] = {}
        for key in ACCOUNT_INTENT_KEYS:
            if key in entries:
                positive = key in ("threshold", "window_days")
                values[key] = self.number(entries[key], where, key, positive=positive, at_least=None if positive
                                          else 0.0)
            else:
                values[key] = float(getattr(defaults, key))
        return AccountIntentConfig(**values)

    # ------------------------------------------------------------------ rules

    def rule(self, node: Node, index: int) -> ScoringRule:
        where = f"rule #{index}"
        line = line_of(node)
        if not isinstance(node, MappingNode):
            self.fail(
                line,
                where,
                f"must be a mapping of rule keys, got {node_kind(node)}",
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
                    line_of(entries["url"].node),
                    where,
                    f"'url' is not a valid regular expression {pattern!r}: {exc}",
                    "escape special characters with a backslash (e.g. \\? \\. \\+) or fix the brackets",
                )

        for key in KEY_EVENTS:
            if key in entries and event not in KEY_EVENTS[key]:
                if key == "hand_raiser" and not self.boolean(entries[key], where, key):
                    continue
                shown = key if key != "hand_raiser" else "hand_raiser: true"
                names = sorted(t.value for t in KEY_EVENTS[key])
                fits = f"event {names[0]!r}" if len(names) == 1 else f"events {', '.join(names)}"
                self.fail(
                    entries[key].key_line,
                    where,
                    f"'{shown}' only applies to {fits}, but this rule's event is {event.value!r}",
                    f"set 'event:' to {' or '.join(names)}, or remove '{key}'",
                )

        forms: tuple[str, ...] = ()
        if "form" in entries:
            forms = self.forms(entries["form"], where)

        campaign: str | None = None
        if "campaign" in entries:
            campaign = self.text(entries["campaign"], where, "campaign")

        event_names = self.texts(entries, "event_name", where, "event_name: Whitepaper Downloaded")
        name_regex: re.Pattern[str] | None = None
        if "event_name_regex" in entries:
            name_regex = self.regex(entries["event_name_regex"], where, "event_name_regex")
        conditions: tuple[PropertyCondition, ...] = ()
        if "properties" in entries:
            conditions = self.properties(entries["properties"], where)
        categories = self.texts(entries, "category", where, "category: email")
        actions = self.texts(entries, "action", where, "action: open")
        labels = self.texts(entries, "label", where, "label: newsletter")
        schemas = self.texts(entries, "schema", where, "schema: iglu:com.acme/trial_started")
        for schema in schemas:
            if not schema.startswith("iglu:") or "/" not in schema:
                self.fail(
                    line_of(entries["schema"].node),
                    where,
                    f"'schema' {schema!r} is not an iglu URI",
                    "write it as iglu:<vendor>/<name>[/jsonschema[/1-0-0]], e.g. iglu:com.acme/trial_started",
                )

        hand_raiser = False
        if "hand_raiser" in entries:
            hand_raiser = self.boolean(entries["hand_raiser"], where, "hand_raiser")

        cap_per_day, once = self.limits(entries, where, points)
        return ScoringRule(
            name=name,
            description=description,
            event=event,
            url=url,
            forms=forms,
            campaign=campaign,
            event_names=event_names,
            event_name_regex=name_regex,
            properties=conditions,
            categories=categories,
            actions=actions,
            labels=labels,
            schemas=schemas,
            points=points,
            hand_raiser=hand_raiser,
            cap_per_day=cap_per_day,
            once_per_lead=once,
            line=line,
        )

    def regex(self, entry: Entry, where: str, key: str) -> re.Pattern[str]:
        pattern = self.text(entry, where, key)
        try:
            return re.compile(pattern)
        except re.error as exc:
            self.fail(
                line_of(entry.node),
                where,
                f"{key!r} is not a valid regular expression {pattern!r}: {exc}",
                "escape special characters with a backslash (e.g. \\? \\. \\+) or fix the brackets",
            )

    def texts(self, entries: dict[str, Entry], key: str, where: str, example: str) -> tuple[str, ...]:
        """One text or a list of texts (any one matches); () when the key is absent."""
        if key not in entries:
            return ()
        out: list[str] = []
        for item in self.items(entries[key], where, key, example):
            value = self.scalar(item, where, key)
            if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
                self.fail(line_of(item), where, f"{key!r} entries must be text, got {kind(value)}",
                          f'quote it: {key}: "..."')
            text = str(value).strip()
            if not text:
                self.fail(line_of(item), where, f"{key!r} has an empty entry", f"write {example}")
            if text not in out:
                out.append(text)
        return tuple(out)

    def properties(self, entry: Entry, where: str) -> tuple[PropertyCondition, ...]:
        node = entry.node
        if not isinstance(node, MappingNode) or not node.value:
            self.fail(
                line_of(node),
                where,
                f"'properties' must be a non-empty mapping of property: condition, got {node_kind(node)}",
                "write e.g. properties: {format: pdf, pages: {at_least: 10}, plan: [pro, enterprise]}",
            )
        out: list[PropertyCondition] = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = self.scalar(key_node, where, "properties key")
            if not isinstance(key, (str, int)) or isinstance(key, bool) or not str(key).strip():
                self.fail(line_of(key_node), where, f"a property name must be text, got {kind(key)}",
                          "write the property's name as it is sent, e.g. format or plan.tier for nested ones")
            name = str(key).strip()
            if name.startswith("$"):
                self.fail(line_of(key_node), where, f"property {name!r} starts with '$', which is the collector's own",
                          "use 'schema:' or 'category:' for what the collector records, or the property's real name")
            if name in seen:
                self.fail(line_of(key_node), where, f"property {name!r} appears twice", "delete one of them")
            seen.add(name)
            out.append(self.condition(name, value_node, f"{where} property {name!r}"))
        return tuple(out)

    def condition(self, key: str, node: Node, where: str) -> PropertyCondition:
        if isinstance(node, SequenceNode):
            if not node.value:
                self.fail(line_of(node), where, "is an empty list", "list at least one value, e.g. [pro, enterprise]")
            return PropertyCondition(key=key, kind="in", values=tuple(self.prop_value(i, where) for i in node.value))
        if isinstance(node, ScalarNode):
            return PropertyCondition(key=key, kind="equals", values=(self.prop_value(node, where),))
        entries = self.mapping(node, where, PROPERTY_CONDITION_KEYS, what="a condition")
        if not entries:
            self.fail(line_of(node), where, "is an empty condition",
                      f"give one of: {', '.join(PROPERTY_CONDITION_KEYS)}")
        if "exists" in entries:
            if len(entries) > 1:
                self.fail(entries["exists"].key_line, where, "'exists' cannot be combined with other conditions",
                          "keep 'exists' alone")
            return PropertyCondition(key=key, kind="exists", exists=self.boolean(entries["exists"], where, "exists"))
        if "regex" in entries:
            if len(entries) > 1:
                self.fail(entries["regex"].key_line, where, "'regex' cannot be combined with at_least/at_most",
                          "use either a regex or a number range")
            return PropertyCondition(key=key, kind="regex", regex=self.regex(entries["regex"], where, "regex"))
        lo = self.number(entries["at_least"], where, "at_least") if "at_least" in entries else None
        hi = self.number(entries["at_most"], where, "at_most") if "at_most" in entries else None
        if lo is not None and hi is not None and lo > hi:
            self.fail(entries["at_most"].key_line, where, f"'at_most' {fmt_number(hi)} is below 'at_least' "
                      f"{fmt_number(lo)}", "swap them")
        return PropertyCondition(key=key, kind="range", at_least=lo, at_most=hi)

    def prop_value(self, node: Node, where: str) -> Value:
        if not isinstance(node, ScalarNode):
            self.fail(line_of(node), where, f"a value must be a single value, got {node_kind(node)}",
                      "write plain values, or a mapping with regex / at_least / at_most / exists")
        raw = self.scalar(node, where, "value")
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            self.fail(line_of(node), where, "a value is empty", "use {exists: true} to match any value")
        if isinstance(raw, float) and not math.isfinite(raw):
            self.fail(line_of(node), where, f"value {raw!r} is not finite", "write a plain number")
        if not isinstance(raw, (str, int, float, bool)):
            self.fail(line_of(node), where, f"cannot match {kind(raw)}", 'quote it: "..."')
        return value_of(raw)

    def limits(self, entries: dict[str, Entry], where: str, points: float) -> tuple[float | None, bool]:
        """``cap_per_day`` and ``once_per_lead`` (with ``repeatable``), checked against each other."""
        once = False
        if "once_per_lead" in entries:
            once = self.boolean(entries["once_per_lead"], where, "once_per_lead")
        if "repeatable" in entries:
            repeatable = self.boolean(entries["repeatable"], where, "repeatable")
            line = entries["repeatable"].key_line
            if not repeatable and "once_per_lead" not in entries:
                self.fail(
                    line,
                    where,
                    "'repeatable: false' is spelled 'once_per_lead: true'",
                    "write 'once_per_lead: true' instead",
                )
            if repeatable == once:
                self.fail(
                    line,
                    where,
                    f"'repeatable: {str(repeatable).lower()}' contradicts 'once_per_lead: {str(once).lower()}'",
                    "keep only 'once_per_lead' (repeatable is the default)",
                )
        cap: float | None = None
        if "cap_per_day" in entries:
            entry = entries["cap_per_day"]
            cap = self.number(entry, where, "cap_per_day", positive=True)
            if points <= 0:
                self.fail(
                    entry.key_line,
                    where,
                    f"'cap_per_day' has no effect on a rule with {fmt_number(points)} points (negative points are never capped)",
                    "remove 'cap_per_day'",
                )
            if once:
                self.fail(
                    entry.key_line,
                    where,
                    "'cap_per_day' and 'once_per_lead: true' together make no sense (the rule counts once anyway)",
                    "keep one of them",
                )
        return cap, once

    def event(self, entry: Entry, where: str) -> EventType:
        value = self.scalar(entry.node, where, "event")
        # A page ping is time on site, never scored (apply_event.lua): no rule can name it.
        allowed = tuple(t.value for t in EventType if t is not EventType.PAGE_PING)
        if isinstance(value, str):
            try:
                if value == EventType.PAGE_PING.value:
                    raise ValueError(value)
                return EventType(value)
            except ValueError:
                normalised = value.strip().lower().replace("-", "_").replace(" ", "_")
                suggestion = did_you_mean(normalised, allowed)
                self.fail(
                    line_of(entry.node),
                    where,
                    f"unknown event {value!r}",
                    f"{suggestion}valid events: {', '.join(allowed)}",
                )
        self.fail(
            line_of(entry.node),
            where,
            f"'event' must be text, got {kind(value)}",
            f"use one of: {', '.join(allowed)}",
        )

    def forms(self, entry: Entry, where: str) -> tuple[str, ...]:
        node = entry.node
        items: list[Node] = list(node.value) if isinstance(node, SequenceNode) else [node]
        if not items:
            self.fail(
                line_of(node),
                where,
                "'form' is an empty list",
                "list at least one form id, or remove 'form' to match any form",
            )
        forms: list[str] = []
        for item in items:
            if not isinstance(item, ScalarNode):
                self.fail(
                    line_of(item),
                    where,
                    f"'form' entries must be form ids, got {node_kind(item)}",
                    "write 'form: demo-request' or 'form: [demo-request, contact-sales]'",
                )
            value = self.scalar(item, where, "form")
            if not isinstance(value, str) or not value.strip():
                self.fail(
                    line_of(item),
                    where,
                    f"'form' entries must be non-empty text, got {kind(value)}",
                    'quote the form id: form: "..."',
                )
            form_id = value.strip()
            if form_id not in forms:
                forms.append(form_id)
        return tuple(forms)

    # ------------------------------------------------------------------ sales_ready

    def sales_ready(self, entry: Entry, threshold: float) -> SalesReady:
        where = "sales_ready"
        entries = self.mapping(entry.node, where, SALES_READY_KEYS, what="'sales_ready'")
        self.require(
            entries,
            ("any",),
            line_of(entry.node),
            where,
            "add 'any:' with a list of clauses, e.g. '- {{engagement_at_least: 100}}'",
        )
        items = self.sequence(
            entries["any"], where, "any", "each clause as '- {engagement_at_least: 100, grade_in: [A, B]}'"
        )
        clauses = tuple(self.clause(node, i) for i, node in enumerate(items, start=1))
        recycle: float | None = None
        if "recycle_below" in entries:
            rentry = entries["recycle_below"]
            recycle = self.number(rentry, where, "recycle_below", at_least=0.0)
            limits = [("threshold", threshold)] + [
                (f"clause #{i} engagement_at_least", c.min_score)
                for i, c in enumerate(clauses, start=1)
                if c.min_score is not None
            ]
            for what, level in limits:
                if level is not None and recycle >= level:
                    self.fail(
                        line_of(rentry.node),
                        where,
                        f"'recycle_below' {fmt_number(recycle)} is not below the {what} {fmt_number(level)}",
                        "a lead would be sales-ready and recycled at once; lower 'recycle_below'",
                    )
        reengage: Reengage | None = None
        if "reengage" in entries:
            reengage = self.reengage(entries["reengage"])
        return SalesReady(clauses=clauses, recycle_below=recycle, reengage=reengage)

    def reengage(self, entry: Entry) -> Reengage:
        where = "sales_ready reengage"
        entries = self.mapping(entry.node, where, REENGAGE_KEYS, what="'reengage'")
        if not entries:
            self.fail(
                line_of(entry.node),
                where,
                "is empty",
                "give 'hand_raiser: [nurture, lost, ...]' and/or 'score: [...]', or remove 'reengage'",
            )
        default = Reengage()
        hand = self.stages(entries["hand_raiser"], where, "hand_raiser") if "hand_raiser" in entries else default.hand_raiser
        after_days: float | None = None
        if "score_after_days" in entries:
            after_days = self.number(entries["score_after_days"], where, "score_after_days", at_least=0.0)
        score: tuple[tuple[str, float], ...]
        if "score" not in entries:
            score = tuple((st, (after_days or 0.0) * SECONDS_PER_DAY) for st, _ in default.score)
        elif isinstance(entries["score"].node, MappingNode):
            if after_days is not None:
                self.fail(
                    entries["score_after_days"].key_line,
                    where,
                    "'score_after_days' and days per stage in 'score' together are ambiguous",
                    "keep the days in 'score: {lost: 30, ...}' and remove 'score_after_days'",
                )
            score = self.stage_days(entries["score"], where)
        else:
            stages = self.stages(entries["score"], where, "score")
            if not stages and after_days:
                self.fail(
                    entries["score_after_days"].key_line,
                    where,
                    "'score_after_days' has no effect: 'score' lists no stage",
                    "list the stages a score crossing may re-fire from in 'score', or remove 'score_after_days'",
                )
            score = tuple((st, (after_days or 0.0) * SECONDS_PER_DAY) for st in stages)
        cooldown_hours = 0.0
        if "cooldown_hours" in entries:
            cooldown_hours = self.number(entries["cooldown_hours"], where, "cooldown_hours", at_least=0.0)
        return Reengage(hand_raiser=hand, score=score, cooldown_s=cooldown_hours * 3600.0)

    def stage_days(self, entry: Entry, where: str) -> tuple[tuple[str, float], ...]:
        """``score: {nurture: 0, lost: 90}``: stage -> days after the last crossing or outcome."""
        entries = self.mapping(entry.node, where, REENGAGE_STAGES + tuple(_STAGE_NOTES), what="'score'")
        out: list[tuple[str, float]] = []
        for stage, item in entries.items():
            self.check_stage(stage, item.key_line, where, "score")
            out.append((stage, self.number(item, where, f"score {stage}", at_least=0.0) * SECONDS_PER_DAY))
        return tuple(out)

    def check_stage(self, value: str, line: int, where: str, key: str) -> None:
        if value not in REENGAGE_STAGES:
            note = _STAGE_NOTES.get(value, "not a stage a lead can re-fire from")
            self.fail(
                line,
                where,
                f"{key!r} has stage {value!r}: {note}",
                ("" if value in _STAGE_NOTES else did_you_mean(value, REENGAGE_STAGES))
                + f"use stages from {', '.join(REENGAGE_STAGES)}",
            )

    def stages(self, entry: Entry, where: str, key: str) -> tuple[str, ...]:
        """A list of stages a lead may re-fire from; ``[]`` is allowed (none)."""
        node = entry.node
        if isinstance(node, SequenceNode) and not node.value:
            return ()
        out: list[str] = []
        for item in self.items(entry, where, key, f"{key}: [nurture, lost]"):
            value = self.text_node(item, where, key).lower()
            self.check_stage(value, line_of(item), where, key)
            if value not in out:
                out.append(value)
        return tuple(out)

    def clause(self, node: Node, index: int) -> ReadyClause:
        where = f"sales_ready clause #{index}"
        entries = self.mapping(node, where, CLAUSE_KEYS, what="a clause")
        if not entries:
            self.fail(
                line_of(node),
                where,
                "is empty",
                f"give it at least one condition: {', '.join(CLAUSE_KEYS)}",
            )
        min_score: float | None = None
        if "engagement_at_least" in entries:
            min_score = self.number(entries["engagement_at_least"], where, "engagement_at_least")
        grades: tuple[str, ...] = ()
        if "grade_in" in entries:
            grades = self.grades(entries["grade_in"], where)
        min_p: float | None = None
        if "probability_at_least" in entries:
            min_p = self.number(
                entries["probability_at_least"], where, "probability_at_least", at_least=0.0, at_most=1.0
            )
        hand = False
        if "hand_raiser" in entries:
            hand = self.boolean(entries["hand_raiser"], where, "hand_raiser")
            if not hand:
                self.fail(
                    entries["hand_raiser"].key_line,
                    where,
                    "'hand_raiser: false' is not a condition",
                    "write 'hand_raiser: true' or remove the key",
                )
        return ReadyClause(
            min_score=min_score, grades=grades, min_p=min_p, hand_raiser=hand, line=line_of(node)
        )

    def grades(self, entry: Entry, where: str) -> tuple[str, ...]:
        letters: list[str] = []
        for item in self.items(entry, where, "grade_in", "grade_in: [A, B]"):
            value = self.text_node(item, where, "grade_in")
            letter = value.upper()
            if letter not in GRADE_LETTERS:
                fix = f"use letters from {', '.join(GRADE_LETTERS)}"
                if letter == "?":
                    fix = "an ungraded lead ('?') never qualifies by grade; " + fix
                self.fail(line_of(item), where, f"'grade_in' has unknown grade {value!r}", fix)
            if letter not in letters:
                letters.append(letter)
        return tuple(sorted(letters))
