"""Published routing rules in Redis: versions, history and the active pointer.

``leadrouter rules publish`` compiles a rules file and runs its test cases;
only a file that passes is stored, as the next version number (1, 2, 3, ...)
with its author, time, note and hashes, and the active pointer moves to it in
the same Lua call.  ``rollback`` moves the pointer to an older version (again
one Lua call) and records who did it.  Nothing is ever deleted, so the history
is complete.  Workers follow the pointer through
:class:`router.storage.live_config.RedisRulesSource`.

Keys (router/storage/keys.py): ``rules_seq`` counter, ``rules_versions`` hash of JSON
documents, ``rules_active`` string, ``rules_history`` list of JSON entries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from redis.commands.core import AsyncScript

from router.errors import ConfigFileError, RouterError
from router.storage import audit, keys
from router.storage.audit import Via
from router.storage.redis import AnyRedis
from router.storage.scripts import register
from rules import RoutingConfig, RulesError, RuleTestResult, load_routing, load_rule_tests, run_rule_tests


class RulesRejectedError(ConfigFileError):
    """A rules file (or its test cases) failed validation, so it was not published."""

    def __init__(self, msg: str, failures: Sequence[str] = ()) -> None:
        super().__init__(msg)
        self.failures = tuple(failures)


class RulesVersionError(RouterError):
    """A published version that does not exist, is already active, or no longer compiles."""


class PublishedRulesError(RouterError):
    """A stored version document could not be read back."""


def cases_path_for(rules_path: Path) -> Path:
    """The test cases kept beside a rules file: ``routing.yaml`` -> ``routing_test.yaml``."""
    return rules_path.with_name(f"{rules_path.stem}_test{rules_path.suffix or '.yaml'}")


def read_text(path: Path, what: str, fix: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read {what} {path}: {exc.strerror}; {fix}"
        raise ConfigFileError(msg) from None


def load_rules_path(path: Path) -> RoutingConfig:
    """A rules file, compiled (like ``router.storage.live_config.load_rules_file``, without importing the scoring package)."""
    text = read_text(path, "rules file", "check the --rules path")
    try:
        return load_routing(text, str(path))
    except RulesError as exc:
        raise ConfigFileError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """A compiled rules file and the outcome of its test cases."""

    config: RoutingConfig
    text: str
    source: str
    cases_text: str
    cases_source: str
    results: tuple[RuleTestResult, ...]

    @property
    def failures(self) -> tuple[RuleTestResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def passed(self) -> bool:
        return bool(self.results) and not self.failures


def run_checks(text: str, source: str, cases_text: str, cases_source: str) -> RuleCheck:
    """Compile the rules and run their test cases; raise :class:`RulesRejectedError` if either file does not load.

    Failing cases do not raise: they are in the result (see :attr:`RuleCheck.failures`).
    """
    try:
        config = load_routing(text, source)
    except RulesError as exc:
        msg = f"{source} does not compile:\n{exc}"
        raise RulesRejectedError(msg, exc.problems) from exc
    try:
        cases = load_rule_tests(cases_text, cases_source, config)
    except RulesError as exc:
        msg = f"test cases {cases_source} do not load:\n{exc}"
        raise RulesRejectedError(msg, exc.problems) from exc
    results = tuple(run_rule_tests(config, cases))
    return RuleCheck(config, text, source, cases_text, cases_source, results)


def check_rules(text: str, source: str, cases_text: str, cases_source: str) -> RuleCheck:
    """Like :func:`run_checks`, but a failing test case is an error too: what publish and rollback require."""
    check = run_checks(text, source, cases_text, cases_source)
    if not check.passed:
        lines = [r.message for r in check.failures] or [f"{cases_source}: no test cases; add at least one"]
        msg = (f"{source}: {len(check.failures)} of {len(check.results)} test cases failed, so it was not "
               "accepted; fix the rules or the cases:\n" + "\n".join(lines))
        raise RulesRejectedError(msg, lines)
    return check


def check_files(rules: Path, cases: Path | None = None) -> RuleCheck:
    """:func:`run_checks` over files; ``cases`` defaults to the ``*_test.yaml`` beside the rules."""
    cases = cases or cases_path_for(rules)
    text = read_text(rules, "rules file", "check the --rules path")
    cases_text = read_text(cases, "test cases", f"keep test cases for {rules.name} in {cases.name} beside it, "
                                                "or pass --cases FILE")
    return run_checks(text, str(rules), cases_text, str(cases))


@dataclass(frozen=True, slots=True)
class PublishedRules:
    """One stored version of the rules."""

    number: int
    content: str
    source: str
    author: str
    ts: float
    note: str
    sha256: str  # of the file's text, byte for byte
    content_hash: str  # RoutingConfig.content_hash: the compiled content, comments and layout aside
    file_version: str  # the file's own `version:`
    cases: str = ""
    cases_source: str = ""
    cases_count: int = 0

    @property
    def tag(self) -> str:
        """What decisions record as ``rules_version``: ``v3:<file version>``."""
        return version_tag(self.number, self.file_version)

    def to_json(self) -> bytes:
        doc = dataclasses.asdict(self)
        doc.pop("number")
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, number: int, raw: bytes | str) -> PublishedRules:
        try:
            doc: Any = orjson.loads(raw)
            return cls(number=number, content=str(doc["content"]), source=str(doc["source"]),
                       author=str(doc["author"]), ts=float(doc["ts"]), note=str(doc.get("note", "")),
                       sha256=str(doc["sha256"]), content_hash=str(doc["content_hash"]),
                       file_version=str(doc["file_version"]), cases=str(doc.get("cases", "")),
                       cases_source=str(doc.get("cases_source", "")), cases_count=int(doc.get("cases_count", 0)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            msg = (f"published rules v{number} in Redis key {keys.rules_versions()} field {number} is not a valid "
                   f"version document ({exc!r}); publish a new version to replace it")
            raise PublishedRulesError(msg) from exc

    def compile(self) -> RoutingConfig:
        """The routing config this version holds, its ``version`` set to :attr:`tag`."""
        config = load_routing(self.content, f"published rules v{self.number} (from {self.source})")
        return dataclasses.replace(config, version=self.tag)


def version_tag(number: int, file_version: str) -> str:
    return f"v{number}:{file_version}" if file_version else f"v{number}"


HistoryAction = Literal["publish", "rollback"]
_ACTIONS: dict[str, HistoryAction] = {"publish": "publish", "rollback": "rollback"}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change of the active pointer."""

    action: HistoryAction
    number: int  # the version made active
    previous: int | None  # the version active before, None when it was the file
    author: str
    ts: float
    note: str

    @classmethod
    def from_json(cls, raw: bytes | str) -> HistoryEntry:
        doc: Any = orjson.loads(raw)
        prev = str(doc.get("previous") or "")
        return cls(action=_ACTIONS[str(doc["action"])], number=int(doc["version"]), previous=int(prev) if prev else None,
                   author=str(doc["author"]), ts=float(doc["ts"]), note=str(doc.get("note", "")))





def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def parse_version(text: str) -> int:
    """``"3"`` or ``"v3"`` -> 3."""
    raw = text.strip().lower().removeprefix("v").split(":", 1)[0]
    if not raw.isdigit() or int(raw) < 1:
        msg = f"version {text!r} is not a version number; give one from `leadrouter rules history`, e.g. 3 or v3"
        raise RulesVersionError(msg)
    return int(raw)


def _author(author: str) -> str:
    name = author.strip()
    if not name:
        msg = "--author is empty; give your name so the history says who changed the rules"
        raise RulesVersionError(msg)
    return name


class RulesStore:
    """The only code that reads and writes published rules in Redis."""

    def __init__(self, redis: AnyRedis) -> None:
        self.redis = redis
        self._publish: AsyncScript = register(redis, "rules_publish.lua")
        self._rollback: AsyncScript = register(redis, "rules_rollback.lua")

    async def publish(self, check: RuleCheck, *, author: str, note: str = "", now: float | None = None,
                      via: Via = "cli") -> PublishedRules:
        """Store a checked rules file as the next version and make it active, atomically.

        ``check`` must come from :func:`check_rules` (every test case passed); anything else is refused.
        """
        if not check.passed:
            msg = f"{check.source}: its test cases did not all pass; run `leadrouter rules test` and fix them first"
            raise RulesRejectedError(msg, [r.message for r in check.failures])
        name = _author(author)
        ts = time.time() if now is None else now
        doc = PublishedRules(
            number=0, content=check.text, source=check.source, author=name, ts=ts, note=note.strip(),
            sha256=hashlib.sha256(check.text.encode("utf-8")).hexdigest(),
            content_hash=check.config.content_hash, file_version=check.config.version,
            cases=check.cases_text, cases_source=check.cases_source, cases_count=len(check.results),
        )
        number = int(await self._publish(
            keys=[keys.rules_seq(), keys.rules_versions(), keys.rules_active(), keys.rules_history()],
            args=[doc.to_json(), name, repr(ts), doc.note],
        ))
        await audit.record(self.redis, who=name, role="", action="rules.publish", via=via,
                           target=f"v{number}", detail=doc.note, now=ts)
        return dataclasses.replace(doc, number=number)

    async def rollback(self, number: int, *, author: str, note: str = "", now: float | None = None,
                       via: Via = "cli") -> HistoryEntry:
        """Make an earlier version active again (it must still compile and pass its stored cases)."""
        name = _author(author)
        target = await self.get(number)
        if target is None:
            known = await self.numbers()
            have = f"published versions are v{known[0]}..v{known[-1]}" if known else "nothing is published yet"
            msg = f"no published rules version v{number} in Redis key {keys.rules_versions()}; {have}"
            raise RulesVersionError(msg)
        try:
            if target.cases:
                check_rules(target.content, f"published rules v{number}", target.cases, target.cases_source)
            else:
                target.compile()
        except (RulesRejectedError, RulesError) as exc:
            msg = (f"published rules v{number} no longer passes with this version of leadrouter, so it was not made "
                   f"active; publish a fixed file instead:\n{exc}")
            raise RulesVersionError(msg) from exc
        ts = time.time() if now is None else now
        code, prev = await self._rollback(
            keys=[keys.rules_versions(), keys.rules_active(), keys.rules_history()],
            args=[str(number), name, repr(ts), note.strip()],
        )
        previous = int(_s(prev)) if _s(prev) else None
        if int(code) == 0:
            msg = f"published rules v{number} disappeared from Redis key {keys.rules_versions()} during the rollback"
            raise RulesVersionError(msg)
        if int(code) == -1:
            msg = f"v{number} is already the active rules version; nothing changed"
            raise RulesVersionError(msg)
        await audit.record(self.redis, who=name, role="", action="rules.rollback", via=via,
                           target=f"v{number}", detail=note.strip(), now=ts)
        return HistoryEntry("rollback", number, previous, name, ts, note.strip())

    async def active_number(self) -> int | None:
        raw = await self.redis.get(keys.rules_active())
        return int(_s(raw)) if raw else None

    async def get(self, number: int) -> PublishedRules | None:
        raw = await self.redis.hget(keys.rules_versions(), str(number))
        return PublishedRules.from_json(number, raw) if raw else None

    async def active(self) -> PublishedRules | None:
        number = await self.active_number()
        return await self.get(number) if number is not None else None

    async def numbers(self) -> list[int]:
        raw = await self.redis.hkeys(keys.rules_versions())
        return sorted(int(_s(k)) for k in raw)

    async def versions(self) -> list[PublishedRules]:
        """Every published version, oldest first."""
        raw: Mapping[bytes | str, bytes | str] = await self.redis.hgetall(keys.rules_versions())
        docs = [PublishedRules.from_json(int(_s(k)), v) for k, v in raw.items()]
        return sorted(docs, key=lambda d: d.number)

    async def history(self) -> list[HistoryEntry]:
        """Every publish and rollback, oldest first."""
        raw = await self.redis.lrange(keys.rules_history(), 0, -1)
        return [HistoryEntry.from_json(r) for r in raw]
