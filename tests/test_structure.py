"""The package's shape: no import cycles in ``app/``, and every module says what it owns.

The import graph is read from the source (``ast``), so it counts every import: those at
module level, those inside functions and those under ``if TYPE_CHECKING:``; a cycle
through any of them still ties the modules into one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
MAX_LINES = 500
EXEMPT = ("app.simulators", "app.static")  # test doubles and browser assets


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(APP.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> Iterator[str]:
    """Every ``app`` module ``name`` imports, wherever the import statement is."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub  # a submodule: ``from app.x import y`` loads app.x.y
                elif target in MODULES:
                    yield target


GRAPH: dict[str, set[str]] = {m: set(_imports(m)) - {m} for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_in(graph, c) for c in components]


def _path_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start]
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return sorted(component)


def test_the_graph_sees_the_imports() -> None:
    """The walk finds imports in functions and under TYPE_CHECKING (guards the guard)."""
    assert "app.supervisor" in GRAPH["app.service"]
    assert "app.workers" in GRAPH["app.cli"]  # imported inside run_service
    assert "app.upstream" in GRAPH["app.services"]  # under TYPE_CHECKING


def test_market_price_sources_are_the_venues() -> None:
    """:class:`~app.prices.model.PriceSource` spells the venues' names out (no import)."""
    from app.domain import Venue
    from app.prices.model import MARKET_SOURCES

    assert {str(s) for s in MARKET_SOURCES} == {str(v) for v in Venue}


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycles_in_app() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles in app/:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _checked() -> list[str]:
    return [m for m in MODULES if not m.startswith(EXEMPT)]


def test_every_module_has_a_docstring() -> None:
    missing = [m for m in _checked() if not ast.get_docstring(ast.parse(MODULES[m].read_text()))]
    assert not missing, f"modules without a docstring: {missing}"


def test_no_module_is_over_the_line_limit() -> None:
    sizes = {m: len(MODULES[m].read_text().splitlines()) for m in _checked()}
    over = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
