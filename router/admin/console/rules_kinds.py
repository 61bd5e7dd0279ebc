"""The three files ops edit in the console (routing, scoring, fit), behind one shape.

Each kind knows its file and test cases, compiles a text with the same
validators and guards as the admin API and the CLI (rules/, scoring/, the YAML
guards of router/admin/rules.py), runs its test cases, and publishes or rolls
back through its versioned store in Redis (router/storage/rules_store.py,
config_store.py), where every version and every change of the active pointer
records who and when.  A text that does not compile or whose cases fail is never
stored: what routes keeps routing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from router.admin.core import AdminCore
from router.admin.http import ApiError
from router.admin.rules import printable_problem, yaml_guard
from router.errors import RouterError
from router.storage import config_store, rules_store
from router.storage.config_store import ConfigRejectedError, ConfigStore, ConfigVersionError
from router.storage.rules_store import (
    HistoryEntry,
    RulesRejectedError,
    RulesStore,
    RulesVersionError,
    cases_path_for,
)
from rules import RulesError, load_routing

KindName = Literal["routing", "scoring", "icp"]
KINDS: tuple[KindName, ...] = ("routing", "scoring", "icp")
TITLES: dict[KindName, str] = {"routing": "Routing rules", "scoring": "Scoring", "icp": "Fit (ICP)"}


class RulesEditError(RouterError):
    """A console rules action refused: ``problems`` are validator lines (``source:line: message; fix``)."""

    def __init__(self, msg: str, problems: Sequence[str] = ()) -> None:
        super().__init__(msg)
        self.problems = tuple(problems) or (msg,)


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    name: str
    passed: bool
    message: str


@dataclass(frozen=True, slots=True)
class Version:
    """One published version, whatever the kind."""

    number: int
    tag: str
    author: str
    ts: float
    note: str
    source: str
    content: str
    cases: str


@dataclass(frozen=True, slots=True)
class Current:
    """What an edit starts from: the active published version, else the file on disk."""

    text: str
    cases: str
    number: int | None
    label: str


def _guard(text: str, cases: str | None, source: str, cases_source: str) -> list[str]:
    """The YAML guards of the admin API as problem lines (a guard's 422 becomes a line-1 problem)."""
    out: list[str] = []
    for what, body, src in (("the text", text, source), ("the test cases", cases, cases_source)):
        if body is None:
            continue
        try:
            yaml_guard(body, what)
        except ApiError as exc:
            out.append(f"{src}:1: {exc.detail}")
            continue
        problem = printable_problem(body, src)
        if problem is not None:
            out.append(problem)
    return out


class RulesKind:
    """One editable file: its paths, text in force, validation, cases, publish and rollback."""

    def __init__(self, admin: AdminCore, name: KindName) -> None:
        self.admin = admin
        self.name = name
        self.title = TITLES[name]
        files = admin.settings.files
        self.path: Path = {"routing": files.rules_file, "scoring": files.scoring_file, "icp": files.icp_file}[name]
        self.cases_path = cases_path_for(self.path)
        self.source = self.path.name
        self.cases_source = self.cases_path.name
        self._rules = RulesStore(admin.redis) if name == "routing" else None
        spec = config_store.SCORING if name == "scoring" else config_store.ICP
        self._spec: config_store.ConfigSpec[Any] = spec
        self._config = ConfigStore[Any](admin.redis, spec) if name != "routing" else None

    # --- reading ---------------------------------------------------------------------------------

    def _file(self, path: Path) -> str:
        return rules_store.read_text(path, f"{self.name} file", f"check the {self.name} file setting")

    async def current(self) -> Current:
        active = await self.active_number()
        doc = await self.get(active) if active is not None else None
        if doc is not None:
            cases = doc.cases or await asyncio.to_thread(self._file, self.cases_path)
            return Current(doc.content, cases, doc.number, f"published {doc.tag}")
        text, cases = await asyncio.to_thread(lambda: (self._file(self.path), self._file(self.cases_path)))
        return Current(text, cases, None, f"file {self.path.name}")

    async def active_number(self) -> int | None:
        if self._rules is not None:
            return await self._rules.active_number()
        assert self._config is not None
        return await self._config.active_number()

    async def get(self, number: int) -> Version | None:
        if self._rules is not None:
            r = await self._rules.get(number)
            return None if r is None else Version(r.number, r.tag, r.author, r.ts, r.note, r.source, r.content,
                                                  r.cases)
        assert self._config is not None
        c = await self._config.get(number)
        return None if c is None else Version(c.number, c.tag, c.author, c.ts, c.note, c.source, c.content, c.cases)

    async def versions(self) -> list[Version]:
        if self._rules is not None:
            return [Version(r.number, r.tag, r.author, r.ts, r.note, r.source, r.content, r.cases)
                    for r in await self._rules.versions()]
        assert self._config is not None
        return [Version(c.number, c.tag, c.author, c.ts, c.note, c.source, c.content, c.cases)
                for c in await self._config.versions()]

    async def history(self) -> list[HistoryEntry]:
        if self._rules is not None:
            return await self._rules.history()
        assert self._config is not None
        return await self._config.history()

    # --- checking ----------------------------------------------------------------------------------

    def validate(self, text: str) -> list[str]:
        """Every problem of the text, one line each (empty when it compiles); CPU-bound, run it in a thread."""
        guarded = _guard(text, None, self.source, self.cases_source)
        if guarded:
            return guarded
        if self.name == "routing":
            try:
                load_routing(text, self.source)
            except RulesError as exc:
                return list(exc.problems)
            return []
        try:
            self._spec.compile(text, self.source)
        except ConfigRejectedError as exc:
            return [line for f in exc.failures for line in str(f).splitlines() if line.strip()]
        return []

    def compile(self, text: str) -> Any:
        """A scoring or fit text compiled (:class:`ConfigRejectedError` if not); CPU-bound."""
        return self._spec.compile(text, self.source)

    def run_cases(self, text: str, cases: str) -> tuple[list[str], list[CaseOutcome]]:
        """(problems that stop the cases from running, each case's outcome); CPU-bound."""
        guarded = _guard(text, cases, self.source, self.cases_source)
        if guarded:
            return guarded, []
        if self.name == "routing":
            try:
                check = rules_store.run_checks(text, self.source, cases, self.cases_source)
            except RulesRejectedError as exc:
                return list(exc.failures) or [str(exc)], []
            return [], [CaseOutcome(r.case.name, r.passed, r.message) for r in check.results]
        try:
            cfg = config_store.run_checks(self._spec, text, self.source, cases, self.cases_source)
        except ConfigRejectedError as exc:
            return [line for f in exc.failures for line in str(f).splitlines() if line.strip()], []
        return [], [CaseOutcome(r.name, r.passed, r.message) for r in cfg.results]

    # --- changing ----------------------------------------------------------------------------------

    async def publish(self, text: str, cases: str, *, author: str, note: str) -> Version:
        """Compile, run every case, store as the next version and make it active; :class:`RulesEditError` if not."""
        source = self.source

        def check() -> Any:
            guarded = _guard(text, cases, source, self.cases_source)
            if guarded:
                raise RulesEditError("the text is not valid YAML", guarded)
            try:
                if self.name == "routing":
                    return rules_store.check_rules(text, source, cases, self.cases_source)
                return config_store.check_config(self._spec, text, source, cases, self.cases_source)
            except RulesRejectedError as exc:
                raise RulesEditError(str(exc).splitlines()[0].rstrip(":"), exc.failures) from None
            except ConfigRejectedError as exc:
                raise RulesEditError(str(exc).splitlines()[0].rstrip(":"),
                                     [ln for f in exc.failures for ln in str(f).splitlines() if ln.strip()]) from None

        checked = await asyncio.to_thread(check)
        now = self.admin.clock()
        if self._rules is not None:
            doc = await self._rules.publish(checked, author=author, note=note, now=now, via="console")
            await self.admin.routing.poll()
            number = doc.number
        else:
            assert self._config is not None
            number = (await self._config.publish(checked, author=author, note=note, now=now, via="console")).number
        version = await self.get(number)
        assert version is not None
        return version

    async def rollback(self, number: int, *, author: str, note: str) -> HistoryEntry:
        """Make an earlier version active again; :class:`RulesEditError` when it cannot be."""
        now = self.admin.clock()
        if await self.get(number) is None:
            raise RulesEditError(f"there is no published {self.name} version v{number}; pick one from the history")
        if await self.active_number() == number:
            raise RulesEditError(f"v{number} is already the active {self.name} version; nothing changed")
        try:
            if self._rules is not None:
                entry = await self._rules.rollback(number, author=author, note=note, now=now, via="console")
                await self.admin.routing.poll()
                return entry
            assert self._config is not None
            return await self._config.rollback(number, author=author, note=note, now=now, via="console")
        except (RulesVersionError, ConfigVersionError) as exc:
            raise RulesEditError(str(exc).splitlines()[0], str(exc).splitlines()) from None
