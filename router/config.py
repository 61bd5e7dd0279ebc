"""Loading the ops-edited scoring and routing files, and reloading them live.

A file is parsed and fully validated before it replaces the one in force; a
bad file is reported (log + metric) and the running version keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from router import metrics
from router.errors import ConfigFileError
from rules import RoutingConfig, RulesError, load_routing
from scoring import ScoringConfig, ScoringError, load_scoring_config

log = logging.getLogger(__name__)
T = TypeVar("T")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror}; check the path in the settings"
        raise ConfigFileError(msg) from None


def load_scoring_file(path: Path) -> ScoringConfig:
    try:
        return load_scoring_config(_read(path), str(path))
    except ScoringError as exc:
        raise ConfigFileError(str(exc)) from exc


def load_rules_file(path: Path) -> RoutingConfig:
    try:
        return load_routing(_read(path), str(path))
    except RulesError as exc:
        raise ConfigFileError(str(exc)) from exc


@dataclass
class LiveFile(Generic[T]):
    """A config file and the last good version loaded from it."""

    path: Path
    loader: Callable[[Path], T]
    label: str
    current: T
    _stamp: tuple[float, int] = (0.0, 0)
    _published: str | None = None

    @classmethod
    def open(cls, path: Path, loader: Callable[[Path], T], label: str) -> LiveFile[T]:
        """Load at start-up; a bad file here is fatal (there is nothing to keep)."""
        value = loader(path)
        live = cls(path, loader, label, value, _stat(path))
        live._publish()
        return live

    def _publish(self) -> None:
        version = str(getattr(self.current, "version", ""))
        if self._published is not None and self._published != version:
            metrics.CONFIG_VERSION.remove(self.label, self._published)
        metrics.CONFIG_VERSION.labels(self.label, version).set(1)
        self._published = version

    def maybe_reload(self) -> bool:
        """Reload when the file changed; returns True when a new version took over."""
        stamp = _stat(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            value = self.loader(self.path)
        except ConfigFileError as exc:
            metrics.CONFIG_RELOADS.labels(self.label, "rejected").inc()
            log.error("kept the running %s config; the edited file was rejected:\n%s", self.label, exc)
            return False
        self.current = value
        metrics.CONFIG_RELOADS.labels(self.label, "loaded").inc()
        self._publish()
        log.info("%s config reloaded from %s (version %s)", self.label, self.path,
                 getattr(value, "version", "?"))
        return True


def _stat(path: Path) -> tuple[float, int]:
    try:
        st = path.stat()
    except OSError:
        return (0.0, 0)
    return (st.st_mtime, st.st_size)
