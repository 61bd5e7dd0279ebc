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

from redis.exceptions import RedisError

from router import metrics
from router.errors import ConfigFileError, RouterError
from router.settings import RedisSettings
from router.storage import keys
from router.storage.config_store import ConfigSpec, PublishedConfig
from router.storage.redis import AnyRedis, create_sync_redis
from router.storage.rules_store import PublishedRules, PublishedRulesError
from rules import RoutingConfig, RulesError, load_routing
from rules.accounts import AccountBook, load_accounts
from scoring import IcpConfig, ScoringConfig, ScoringError, load_icp_config, load_scoring_config

log = logging.getLogger(__name__)
T = TypeVar("T")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror}; check the path in the settings"
        raise ConfigFileError(msg) from None


def _load(path: Path, parse: Callable[[str, str], T]) -> T:
    """Read and validate an ops-edited file; any problem is one ConfigFileError naming file and line."""
    try:
        return parse(_read(path), str(path))
    except (ScoringError, RulesError) as exc:
        raise ConfigFileError(str(exc)) from exc


def load_scoring_file(path: Path) -> ScoringConfig:
    return _load(path, load_scoring_config)


def load_accounts_file(path: Path) -> AccountBook:
    return _load(path, load_accounts)


def load_icp_file(path: Path) -> IcpConfig:
    return _load(path, load_icp_config)


def load_rules_file(path: Path) -> RoutingConfig:
    return _load(path, load_routing)


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

    @property
    def tag(self) -> str:
        """The version in force as decisions record it: the content version, ``v<n>:`` first when published."""
        return str(getattr(self.current, "version", ""))

    def _publish(self) -> None:
        version = str(getattr(self.current, "version", ""))
        if self._published is not None and self._published != version:
            metrics.CONFIG_VERSION.remove(self.label, self._published)
        metrics.CONFIG_VERSION.labels(self.label, version).set(1)
        self._published = version

    def maybe_reload(self) -> bool:
        """Reload when the file changed; returns True when a new version took over."""
        value = self._load_if_changed()
        if value is None:
            return False
        self.current = value
        metrics.CONFIG_RELOADS.labels(self.label, "loaded").inc()
        self._publish()
        log.info("%s config reloaded from %s (version %s)", self.label, self.path,
                 getattr(value, "version", "?"))
        return True

    def _load_if_changed(self) -> T | None:
        """The file's new content when it changed and loads; None when unchanged or rejected (logged)."""
        stamp = _stat(self.path)
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            return self.loader(self.path)
        except ConfigFileError as exc:
            metrics.CONFIG_RELOADS.labels(self.label, "rejected").inc()
            log.error("kept the running %s config; the edited file was rejected:\n%s", self.label, exc)
            return None


class PublishedSource(LiveFile[T]):
    """A config a worker follows: the published version Redis points at, else the file.

    A drop-in for ``LiveFile[T]`` (``.current``, ``.maybe_reload()``, ``.tag``)
    that also follows ``publish`` / ``rollback``: :meth:`poll` costs one GET of
    the active pointer per call and only fetches and compiles a version when
    the pointer moved.  A stored version that does not compile is rejected
    (log + metric) and the running one keeps working; it is not retried until
    the pointer moves again.  While nothing is published the file is used and
    reloaded when it changes, exactly like :class:`LiveFile`.

    Subclasses say which keys to follow and how a stored document compiles.
    """

    active_key: str
    versions_key: str

    def __init__(self, path: Path, redis: AnyRedis, label: str, *, loader: Callable[[Path], T],
                 startup: RedisSettings | None = None) -> None:
        """Load the file (a bad file is fatal, as with :meth:`LiveFile.open`).

        With ``startup`` (the redis settings) the active published version is read
        right away over a short-lived blocking connection, so the first event is handled by it; a
        Redis error there is logged and the first :meth:`poll` catches up.
        """
        file_config = loader(path)
        super().__init__(path, loader, label, file_config, _stat(path))
        self.redis = redis
        self.file_config = file_config
        self.published: int | None = None
        self._rejected: int | None = None
        self._redis_failing = False
        if startup is not None:
            self._startup(startup)
        self._publish()

    def compile_published(self, number: int, raw: bytes | str) -> T:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def tag(self) -> str:
        version = str(getattr(self.current, "version", ""))
        if self.published is None or version.startswith(f"v{self.published}:"):
            return version
        return f"v{self.published}:{version}"

    def _startup(self, section: RedisSettings) -> None:
        client = create_sync_redis(section, role="startup")
        try:
            raw = client.get(self.active_key)
            if raw:
                number = int(raw)
                self._adopt(number, client.hget(self.versions_key, str(number)))
        except (RedisError, ValueError) as exc:
            log.warning("could not read the published %s config at start-up (%r); using %s until Redis answers",
                        self.label, exc, self.path)
        finally:
            client.close()

    async def poll(self) -> bool:
        """Follow the active pointer (one GET), else the file; True when another version took over."""
        try:
            raw = await self.redis.get(self.active_key)
            number = int(raw) if raw else None
            if number is not None and number not in (self.published, self._rejected):
                doc = await self.redis.hget(self.versions_key, str(number))
                return self._adopt(number, doc)
        except (RedisError, ValueError) as exc:
            if not self._redis_failing:
                log.error("cannot read the published %s config from Redis (%r); keeping version %s",
                          self.label, exc, self.tag)
            self._redis_failing = True
            return False
        self._redis_failing = False
        if number is None and self.published is not None:
            log.warning("the published %s pointer %s is gone; back to the file %s",
                        self.label, self.active_key, self.path)
            self.published = None
            self._take(self.file_config, f"file {self.path}")
            return True
        return self.maybe_reload()

    def maybe_reload(self) -> bool:
        """Reload the file when it changed; it takes over only while nothing is published."""
        value = self._load_if_changed()
        if value is None:
            return False
        self.file_config = value
        if self.published is not None:
            log.info("%s file %s changed (version %s); published v%d stays in force until the next publish",
                     self.label, self.path, getattr(value, "version", "?"), self.published)
            return False
        self._take(value, f"file {self.path}")
        return True

    def _adopt(self, number: int, raw: bytes | str | None) -> bool:
        try:
            if not raw:
                msg = (f"Redis key {self.active_key} points at v{number}, which is not in "
                       f"{self.versions_key}; roll back to an existing version")
                raise PublishedRulesError(msg)
            config = self.compile_published(number, raw)
        except (RouterError, RulesError, ScoringError) as exc:
            self._rejected = number
            metrics.CONFIG_RELOADS.labels(self.label, "rejected").inc()
            log.error("kept the running %s config (version %s); published v%d was rejected:\n%s",
                      self.label, self.tag, number, exc)
            return False
        self.published = number
        self._rejected = None
        self._take(config, f"published v{number}")
        return True

    def _take(self, config: T, origin: str) -> None:
        self.current = config
        metrics.CONFIG_RELOADS.labels(self.label, "loaded").inc()
        self._publish()
        log.info("%s config now %s (version %s)", self.label, origin, self.tag)


class RedisRulesSource(PublishedSource[RoutingConfig]):
    """The routing rules a worker follows: the published version Redis points at, else the rules file.

    Published configs carry ``version`` ``v<number>:<file version>`` (e.g.
    ``v3:2026-11-22.1``), so every routing decision records the published version.
    """

    active_key = keys.rules_active()
    versions_key = keys.rules_versions()

    def __init__(self, path: Path, redis: AnyRedis, label: str = "routing", *,
                 loader: Callable[[Path], RoutingConfig] = load_rules_file,
                 startup: RedisSettings | None = None) -> None:
        super().__init__(path, redis, label, loader=loader, startup=startup)

    def compile_published(self, number: int, raw: bytes | str) -> RoutingConfig:
        return PublishedRules.from_json(number, raw).compile()


class RedisConfigSource(PublishedSource[T]):
    """The scoring or ICP file a worker follows: the published version (``leadrouter scoring|icp publish``),
    else the file.  Leads record :attr:`tag`: ``v<number>:<content hash>`` when published."""

    def __init__(self, spec: ConfigSpec[T], path: Path, redis: AnyRedis, label: str | None = None, *,
                 loader: Callable[[Path], T] | None = None, startup: RedisSettings | None = None) -> None:
        self.spec = spec
        self.active_key = keys.config_active(spec.kind)
        self.versions_key = keys.config_versions(spec.kind)

        def from_file(p: Path) -> T:
            return _load(p, spec.parse)

        super().__init__(path, redis, label or spec.kind, loader=loader or from_file, startup=startup)

    def compile_published(self, number: int, raw: bytes | str) -> T:
        return PublishedConfig.from_json(self.spec.kind, number, raw).compile(self.spec)


def _stat(path: Path) -> tuple[float, int]:
    try:
        st = path.stat()
    except OSError:
        return (0.0, 0)
    return (st.st_mtime, st.st_size)
