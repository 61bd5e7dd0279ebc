"""Collecting every problem of one file, then raising one error that lists them all."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from rules.errors import RulesError


def suggest(word: str, choices: Iterable[str]) -> str:
    """``did you mean 'x'?`` when a choice is close to ``word``, else the list of choices."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        folded = {o.casefold(): o for o in options}
        if word.casefold() in folded:
            close = [folded[word.casefold()]]
    if close:
        return f"did you mean {close[0]!r}?"
    if not options:
        return "nothing is declared to choose from"
    return "expected one of: " + ", ".join(options)


@dataclass(frozen=True, slots=True)
class Problem:
    kind: type[RulesError]
    line: int
    text: str


class ProblemLog:
    """Problems of one file, in file order; ``raise_if_any`` raises them as one error."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._problems: list[Problem] = []

    def add(self, kind: type[RulesError], line: int, context: str | None, message: str) -> None:
        where = f"{self.source}:{line}"
        text = f"{where}: {context}: {message}" if context else f"{where}: {message}"
        self._problems.append(Problem(kind, line, text))

    def __bool__(self) -> bool:
        return bool(self._problems)

    def __len__(self) -> int:
        return len(self._problems)

    def raise_if_any(self) -> None:
        if not self._problems:
            return
        ordered = sorted(self._problems, key=lambda p: p.line)  # stable: same line keeps discovery order
        lines = tuple(p.text for p in ordered)
        kind = _common_kind([p.kind for p in ordered])
        msg = "\n".join(lines)
        raise kind(msg, lines)


def _common_kind(kinds: list[type[RulesError]]) -> type[RulesError]:
    """The most specific class every problem kind is a subclass of."""
    for candidate in kinds[0].__mro__:
        if isinstance(candidate, type) and issubclass(candidate, RulesError):
            if all(issubclass(k, candidate) for k in kinds):
                return candidate
    return RulesError
