"""The layering rule, checked from the source: every module is parsed with ``ast``, nothing is imported.

Every ``import`` / ``from ... import`` node counts, wherever it is: at the top,
inside a function (a lazy import) or under ``if TYPE_CHECKING:``.

* ``models`` imports nothing of ours but itself.
* ``scoring`` and ``rules`` import only ``models`` and themselves (not each other).
* ``router.{settings,errors,metrics,tokens}`` (the flat modules) import only
  ``models``, ``scoring``, ``rules`` and each other.
* ``router.storage`` imports only those and itself.
* ``router.ingest``, ``router.worker`` and ``router.alerts`` never import
  ``router.admin``, ``router.cli``, ``router.backtest`` or ``router.dev``;
  ``router.ingest`` imports neither the worker nor the alerts; ``router.alerts``
  never imports ``router.worker`` or ``router.ingest``; of the worker, only
  ``router.worker.app`` (the faust app, which runs the alert sender) imports
  ``router.alerts``, and the worker never imports ``router.ingest``.
* ``router.admin`` and ``router.backtest`` never import ``router.cli`` or ``router.dev``.
* Only ``router.cli`` and ``router.dev`` import ``router.dev`` (dev-only tooling).
* No import cycles between modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("models", "scoring", "rules", "router")
FLAT = ("router.settings", "router.errors", "router.metrics", "router.tokens")
PURE = ("models", "scoring", "rules")
EDGE_ROOMS = ("router.admin", "router.cli", "router.backtest", "router.dev")


def _root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "router").is_dir():
            return parent
    msg = f"no repository root above {here}"
    raise AssertionError(msg)


@dataclass(frozen=True, slots=True)
class Edge:
    source: str  # importing module
    target: str  # imported module (or package)
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def load_sources(root: Path) -> dict[str, tuple[str, bool]]:
    """Module name -> (source text, is a package ``__init__``), for every module of our packages."""
    out: dict[str, tuple[str, bool]] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            out[module_name(path, root)] = (path.read_text(encoding="utf-8"), path.name == "__init__.py")
    return out


def edges(sources: Mapping[str, tuple[str, bool]]) -> list[Edge]:
    """Every import of one of our modules, from every import node of every module.

    ``from a.b import c`` is an import of ``a.b.c`` when that is a module, else of ``a.b``.
    """
    ours = set(sources)
    out: list[Edge] = []
    for name, (text, is_package) in sources.items():
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(text, filename=name)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.append(sub if sub in ours else module)
            for target in targets:
                if target.split(".")[0] in PACKAGES and target != name:
                    out.append(Edge(name, target, getattr(node, "lineno", 0)))
    return out


def room(module: str) -> str:
    """``models``, ``scoring``, ``rules``, or the router room: ``router.storage``, ``router.settings``..."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "router" else parts[0]


def within(module: str, rooms: Iterable[str]) -> bool:
    return any(module == r or module.startswith(f"{r}.") for r in rooms)


def violations(all_edges: Iterable[Edge]) -> list[str]:
    """Each import that breaks the layering rule (see the module docstring), as text."""
    bad: list[str] = []

    def refuse(edge: Edge, why: str) -> None:
        bad.append(f"{edge}: {why}")

    for e in all_edges:
        src, dst = room(e.source), room(e.target)
        if src == dst:
            continue
        if src == "models":
            refuse(e, "models imports nothing of ours")
        elif src in ("scoring", "rules") and dst != "models":
            refuse(e, f"{src} imports only models")
        elif src in FLAT and not within(e.target, (*PURE, *FLAT)):
            refuse(e, f"{src} imports only models, scoring, rules and router.{{settings,errors,metrics,tokens}}")
        elif src == "router.storage" and not within(e.target, (*PURE, *FLAT)):
            refuse(e, "router.storage imports only models, scoring, rules, the flat router modules and itself")
        elif src in ("router.ingest", "router.worker", "router.alerts") and within(e.target, EDGE_ROOMS):
            refuse(e, f"{src} never imports the admin, cli, backtest or dev rooms")
        elif src == "router.ingest" and within(e.target, ("router.worker", "router.alerts")):
            refuse(e, "the collector imports neither the worker nor the alerts")
        elif src == "router.alerts" and within(e.target, ("router.worker", "router.ingest")):
            refuse(e, "router.alerts never imports the worker or the collector")
        elif src == "router.worker" and within(e.target, ("router.alerts",)) and e.source != "router.worker.app":
            refuse(e, "only router.worker.app (the faust app) imports router.alerts")
        elif src == "router.worker" and within(e.target, ("router.ingest",)):
            refuse(e, "router.worker never imports the collector")
        elif src in ("router.admin", "router.backtest") and within(e.target, ("router.cli", "router.dev")):
            refuse(e, f"{src} never imports router.cli or router.dev")
        if within(e.target, ("router.dev",)) and not within(e.source, ("router.cli", "router.dev")):
            refuse(e, "only router.cli and router.dev import router.dev")
    return sorted(set(bad))


def cycles(all_edges: Iterable[Edge], modules: Iterable[str]) -> list[list[str]]:
    """The import cycles between modules: strongly connected components of more than one module."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in all_edges:
        if e.target in graph:
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is small enough to recurse
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


SOURCES = load_sources(_root())
EDGES = edges(SOURCES)


def test_the_packages_are_found() -> None:
    assert {"models", "scoring", "rules", "router.storage.store", "router.worker.app"} <= set(SOURCES)
    assert any(e.source == "router.worker.pipeline" and e.target == "router.storage.store" for e in EDGES)


def test_no_module_imports_up_a_layer() -> None:
    bad = violations(EDGES)
    assert not bad, "imports that break the layering rule:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    found = cycles(EDGES, SOURCES)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


# --- the checks themselves catch what they are meant to catch -------------------------------------

def _fake(**modules: str) -> dict[str, tuple[str, bool]]:
    return {name.replace("__", "."): (text, False) for name, text in modules.items()}


def test_a_forbidden_import_is_caught_even_when_lazy_or_type_only() -> None:
    sources = _fake(
        router__storage__store="def f():\n    from router.worker.pipeline import apply_batch\n",
        router__worker__pipeline="from router.storage.store import RedisStore\n",
        router__alerts__render="from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import router.worker.app\n",
        router__worker__app="",
        models__lead="from scoring import score_event\n",
        scoring="from rules import load_routing\n",
        rules="",
        router__admin__app="from router.dev import demo\n",
        router__dev__demo="",
        router__dev="",
    )
    bad = violations(edges(sources))
    assert any(b.startswith("router.storage.store:2 imports router.worker.pipeline") for b in bad)
    assert any(b.startswith("router.alerts.render:3 imports router.worker.app") for b in bad)
    assert any(b.startswith("models.lead:1 imports scoring") for b in bad)
    assert any(b.startswith("scoring:1 imports rules") for b in bad)
    assert any(b.startswith("router.admin.app:1 imports router.dev.demo") and "router.dev" in b for b in bad)
    assert not any(b.startswith("router.worker.pipeline") for b in bad)


def test_a_cycle_is_caught() -> None:
    sources = _fake(
        router__alerts__sender="from router.alerts.digest import DigestQueue\n",
        router__alerts__digest="def f():\n    from router.alerts import sender\n",
        router__alerts__render="",
    )
    assert cycles(edges(sources), sources) == [["router.alerts.digest", "router.alerts.sender"]]
