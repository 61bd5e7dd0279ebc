"""Published scoring and ICP files in Redis: versions, history and the active pointer.

The routing rules' pattern (:mod:`router.storage.rules_store`), for the other
two files ops tune: ``leadrouter scoring publish`` (or ``icp publish``)
compiles the file and runs the test cases beside it (``scoring_test.yaml``,
``icp_test.yaml``); only a file that passes is stored, as the next version
with its author, time, note and hashes, and the active pointer moves to it in
the same Lua call.  ``rollback`` moves the pointer back (an old version must
still compile and pass its stored cases).  Nothing is deleted.  Workers follow
the pointer through :class:`router.storage.live_config.RedisConfigSource`.

Keys (router/storage/keys.py): ``config_seq|versions|active|history(kind)``,
one hash tag per kind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
from redis.commands.core import AsyncScript

from router.errors import ConfigFileError, RouterError
from router.storage import audit, keys
from router.storage.audit import Via
from router.storage.redis import AnyRedis
from router.storage.rules_store import HistoryEntry, cases_path_for, read_text
from router.storage.scripts import register
from scoring import IcpConfig, ScoringConfig, ScoringError, load_icp_config, load_scoring_config
from scoring.cases import (
    CaseResult,
    load_icp_cases,
    load_scoring_cases,
    run_icp_cases,
    run_scoring_cases,
)

T = TypeVar("T")


class ConfigRejectedError(ConfigFileError):
    """A scoring or ICP file (or its test cases) failed validation, so it was not published."""

    def __init__(self, msg: str, failures: Sequence[str] = ()) -> None:
        super().__init__(msg)
        self.failures = tuple(failures)


class ConfigVersionError(RouterError):
    """A published scoring/ICP version that does not exist, is already active, or no longer passes."""


class PublishedConfigError(RouterError):
    """A stored scoring/ICP version document could not be read back."""


@dataclass(frozen=True, slots=True)
class ConfigSpec(Generic[T]):
    """What the versioned store needs to know about one kind of file."""

    kind: str  # "scoring" | "icp": the CLI group and the Redis hash tag
    what: str  # "scoring file": for messages
    parse: Callable[[str, str], T]
    cases: Callable[[str, str, T], Sequence[Any]]
    run: Callable[[T, Sequence[Any]], list[CaseResult]]

    def compile(self, text: str, source: str) -> T:
        """The file compiled, or :class:`ConfigRejectedError` naming file, line and fix."""
        try:
            return self.parse(text, source)
        except ScoringError as exc:
            msg = f"{source} does not compile:\n{exc}"
            raise ConfigRejectedError(msg, [str(exc)]) from exc


def _scoring_cases(text: str, source: str, config: ScoringConfig) -> Sequence[Any]:
    return load_scoring_cases(text, source, config)


def _icp_cases(text: str, source: str, config: IcpConfig) -> Sequence[Any]:
    return load_icp_cases(text, source)


SCORING: ConfigSpec[ScoringConfig] = ConfigSpec("scoring", "scoring file", load_scoring_config, _scoring_cases,
                                                run_scoring_cases)
ICP: ConfigSpec[IcpConfig] = ConfigSpec("icp", "ICP file", load_icp_config, _icp_cases, run_icp_cases)


@dataclass(frozen=True, slots=True)
class ConfigCheck(Generic[T]):
    """A compiled file and the outcome of its test cases."""

    spec: ConfigSpec[T]
    config: T
    text: str
    source: str
    cases_text: str
    cases_source: str
    results: tuple[CaseResult, ...]

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def passed(self) -> bool:
        return bool(self.results) and not self.failures

    @property
    def version(self) -> str:
        return str(getattr(self.config, "version", ""))


def run_checks(spec: ConfigSpec[T], text: str, source: str, cases_text: str, cases_source: str) -> ConfigCheck[T]:
    """Compile and run the cases; a file or case file that does not load raises :class:`ConfigRejectedError`."""
    config = spec.compile(text, source)
    try:
        cases = spec.cases(cases_text, cases_source, config)
    except ScoringError as exc:
        msg = f"test cases {cases_source} do not load:\n{exc}"
        raise ConfigRejectedError(msg, [str(exc)]) from exc
    return ConfigCheck(spec, config, text, source, cases_text, cases_source, tuple(spec.run(config, cases)))


def check_config(spec: ConfigSpec[T], text: str, source: str, cases_text: str, cases_source: str
                 ) -> ConfigCheck[T]:
    """Like :func:`run_checks`, but a failing case is an error too: what publish and rollback require."""
    check = run_checks(spec, text, source, cases_text, cases_source)
    if not check.passed:
        lines = [r.message for r in check.failures] or [f"{cases_source}: no test cases; add at least one"]
        msg = (f"{source}: {len(check.failures)} of {len(check.results)} test cases failed, so it was not "
               f"accepted; fix the {spec.what} or the cases:\n" + "\n".join(f"{cases_source}: {m}" for m in lines))
        raise ConfigRejectedError(msg, lines)
    return check


def check_files(spec: ConfigSpec[T], path: Path, cases: Path | None = None) -> ConfigCheck[T]:
    """:func:`run_checks` over files; ``cases`` defaults to ``<name>_test.yaml`` beside the file."""
    cases = cases or cases_path_for(path)
    text = read_text(path, spec.what, f"check the --{spec.kind} path")
    cases_text = read_text(cases, "test cases", f"keep test cases for {path.name} in {cases.name} beside it, "
                                                "or pass --cases FILE")
    return run_checks(spec, text, str(path), cases_text, str(cases))


@dataclass(frozen=True, slots=True)
class PublishedConfig:
    """One stored version of a scoring or ICP file."""

    kind: str
    number: int
    content: str
    source: str
    author: str
    ts: float
    note: str
    sha256: str  # of the file's text, byte for byte
    content_hash: str  # the compiled config's version: its content, comments and layout aside
    cases: str = ""
    cases_source: str = ""
    cases_count: int = 0

    @property
    def tag(self) -> str:
        """What leads record: ``v3:<content hash>``."""
        return f"v{self.number}:{self.content_hash}"

    def to_json(self) -> bytes:
        doc = dataclasses.asdict(self)
        doc.pop("number")
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, kind: str, number: int, raw: bytes | str) -> PublishedConfig:
        try:
            doc: Any = orjson.loads(raw)
            return cls(kind=kind, number=number, content=str(doc["content"]), source=str(doc["source"]),
                       author=str(doc["author"]), ts=float(doc["ts"]), note=str(doc.get("note", "")),
                       sha256=str(doc["sha256"]), content_hash=str(doc["content_hash"]),
                       cases=str(doc.get("cases", "")), cases_source=str(doc.get("cases_source", "")),
                       cases_count=int(doc.get("cases_count", 0)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            msg = (f"published {kind} v{number} in Redis key {keys.config_versions(kind)} field {number} is not a "
                   f"valid version document ({exc!r}); publish a new version to replace it")
            raise PublishedConfigError(msg) from exc

    def compile(self, spec: ConfigSpec[T]) -> T:
        return spec.compile(self.content, f"published {self.kind} v{self.number} (from {self.source})")


def parse_version(text: str, kind: str) -> int:
    """``"3"``, ``"v3"`` or ``"v3:0381…"`` -> 3."""
    raw = text.strip().lower().removeprefix("v").split(":", 1)[0]
    if not raw.isdigit() or int(raw) < 1:
        msg = f"version {text!r} is not a version number; give one from `leadrouter {kind} history`, e.g. 3 or v3"
        raise ConfigVersionError(msg)
    return int(raw)


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


class ConfigStore(Generic[T]):
    """The only code that reads and writes published scoring or ICP files in Redis."""

    def __init__(self, redis: AnyRedis, spec: ConfigSpec[T]) -> None:
        self.redis = redis
        self.spec = spec
        self.kind = spec.kind
        # The routing rules' scripts: they only touch the four keys they are given.
        self._publish: AsyncScript = register(redis, "rules_publish.lua")
        self._rollback: AsyncScript = register(redis, "rules_rollback.lua")

    def _author(self, author: str) -> str:
        name = author.strip()
        if not name:
            msg = f"--author is empty; give your name so the history says who changed the {self.spec.what}"
            raise ConfigVersionError(msg)
        return name

    async def publish(self, check: ConfigCheck[T], *, author: str, note: str = "",
                      now: float | None = None, via: Via = "cli") -> PublishedConfig:
        """Store a checked file as the next version and make it active, atomically (every case must pass)."""
        if not check.passed:
            msg = (f"{check.source}: its test cases did not all pass; run `leadrouter {self.kind} test` "
                   "and fix them first")
            raise ConfigRejectedError(msg, [r.message for r in check.failures])
        name = self._author(author)
        ts = time.time() if now is None else now
        doc = PublishedConfig(
            kind=self.kind, number=0, content=check.text, source=check.source, author=name, ts=ts,
            note=note.strip(), sha256=hashlib.sha256(check.text.encode("utf-8")).hexdigest(),
            content_hash=check.version, cases=check.cases_text, cases_source=check.cases_source,
            cases_count=len(check.results),
        )
        number = int(await self._publish(
            keys=[keys.config_seq(self.kind), keys.config_versions(self.kind), keys.config_active(self.kind),
                  keys.config_history(self.kind)],
            args=[doc.to_json(), name, repr(ts), doc.note],
        ))
        await audit.record(self.redis, who=name, role="", action=f"{self.kind}.publish", via=via,
                           target=f"v{number}", detail=doc.note, now=ts)
        return dataclasses.replace(doc, number=number)

    async def rollback(self, number: int, *, author: str, note: str = "", now: float | None = None,
                       via: Via = "cli") -> HistoryEntry:
        """Make an earlier version active again (it must still compile and pass its stored cases)."""
        name = self._author(author)
        target = await self.get(number)
        if target is None:
            known = await self.numbers()
            have = f"published versions are v{known[0]}..v{known[-1]}" if known else "nothing is published yet"
            msg = f"no published {self.kind} version v{number} in Redis key {keys.config_versions(self.kind)}; {have}"
            raise ConfigVersionError(msg)
        try:
            source = f"published {self.kind} v{number}"
            if target.cases:
                check_config(self.spec, target.content, source, target.cases, target.cases_source)
            else:
                target.compile(self.spec)
        except ConfigRejectedError as exc:
            msg = (f"published {self.kind} v{number} no longer passes with this version of leadrouter, so it was "
                   f"not made active; publish a fixed file instead:\n{exc}")
            raise ConfigVersionError(msg) from exc
        ts = time.time() if now is None else now
        code, prev = await self._rollback(
            keys=[keys.config_versions(self.kind), keys.config_active(self.kind), keys.config_history(self.kind)],
            args=[str(number), name, repr(ts), note.strip()],
        )
        previous = int(_s(prev)) if _s(prev) else None
        if int(code) == 0:
            msg = f"published {self.kind} v{number} disappeared from Redis during the rollback; publish it again"
            raise ConfigVersionError(msg)
        if int(code) == -1:
            msg = f"v{number} is already the active {self.kind} version; nothing changed"
            raise ConfigVersionError(msg)
        await audit.record(self.redis, who=name, role="", action=f"{self.kind}.rollback", via=via,
                           target=f"v{number}", detail=note.strip(), now=ts)
        return HistoryEntry("rollback", number, previous, name, ts, note.strip())

    async def active_number(self) -> int | None:
        raw = await self.redis.get(keys.config_active(self.kind))
        return int(_s(raw)) if raw else None

    async def get(self, number: int) -> PublishedConfig | None:
        raw = await self.redis.hget(keys.config_versions(self.kind), str(number))
        return PublishedConfig.from_json(self.kind, number, raw) if raw else None

    async def active(self) -> PublishedConfig | None:
        number = await self.active_number()
        return await self.get(number) if number is not None else None

    async def numbers(self) -> list[int]:
        raw = await self.redis.hkeys(keys.config_versions(self.kind))
        return sorted(int(_s(k)) for k in raw)

    async def versions(self) -> list[PublishedConfig]:
        """Every published version, oldest first."""
        raw: Mapping[bytes | str, bytes | str] = await self.redis.hgetall(keys.config_versions(self.kind))
        return sorted((PublishedConfig.from_json(self.kind, int(_s(k)), v) for k, v in raw.items()),
                      key=lambda d: d.number)

    async def history(self) -> list[HistoryEntry]:
        """Every publish and rollback, oldest first."""
        return [HistoryEntry.from_json(r) for r in await self.redis.lrange(keys.config_history(self.kind), 0, -1)]
