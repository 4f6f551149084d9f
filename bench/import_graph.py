"""The import graph of the apps, read from the code: which module imports which, and which app which.

    .venv/bin/python bench/import_graph.py            # the app-level graph as mermaid (docs/ARCHITECTURE.md)
    .venv/bin/python bench/import_graph.py --modules  # every module-level import edge between app modules

tests/core/test_import_graph.py asserts on the same graph: no circle among app modules, no app importing
aicp, the directions of DESIGN §7. Imports under ``if TYPE_CHECKING:`` are left out (they never run);
imports inside functions are kept apart (``deferred``), since they are the ones that can hide a circle.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APPS = ("core", "users", "ledger", "agents", "tasks", "duke")
PROJECT = ("aicp",)


@dataclass(frozen=True)
class Edge:
    source: str  # module
    target: str  # module (or package) imported
    line: int
    deferred: bool  # inside a function: runs on call, not on import


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _edges_of(path: Path, known: set[str]) -> list[Edge]:
    source = _module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    edges: list[Edge] = []

    def target_of(name: str) -> str | None:
        # The longest known module the name starts with: `from tasks.services import lifecycle` names a
        # module; `from tasks.models import Task` names a module's attribute.
        while name:
            if name in known:
                return name
            name = name.rpartition(".")[0]
        return None

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            inner = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if (target := target_of(alias.name)) is not None:
                        edges.append(Edge(source, target, child.lineno, deferred))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    target = target_of(f"{base}.{alias.name}") or target_of(base)
                    if target is not None and target != source:
                        edges.append(Edge(source, target, child.lineno, deferred))
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return edges


def _files() -> list[Path]:
    files = []
    for top in (*APPS, *PROJECT):
        for path in sorted((REPO / top).rglob("*.py")):
            if "migrations" not in path.parts:
                files.append(path)
    return files


def edges() -> list[Edge]:
    files = _files()
    known = {_module_name(path) for path in files}
    return [edge for path in files for edge in _edges_of(path, known)]


def app_of(module: str) -> str:
    # The LLM simulator is a tool inside agents (tests, demo, benchmarks), not the app's production code:
    # its own node, so its use of Duke's encoder reads as what it is.
    if module == "agents.simulator" or module.startswith(("agents.simulator.", "agents.management.")):
        return "simulator"
    return module.split(".")[0]


def app_graph(all_edges: list[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in all_edges:
        source, target = app_of(edge.source), app_of(edge.target)
        if source != target and source in (*APPS, "simulator"):
            graph[source].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one node (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted({*graph, *(t for targets in graph.values() for t in targets)}):
        if node not in index:
            connect(node)
    return found


def module_graph(all_edges: list[Edge], *, with_deferred: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in all_edges:
        if app_of(edge.source) in APPS and (with_deferred or not edge.deferred):
            graph[edge.source].add(edge.target)
    return graph


def mermaid(graph: dict[str, set[str]]) -> str:
    lines = ["flowchart TD"]
    for source in (*APPS, "simulator"):
        for target in sorted(graph.get(source, ())):
            lines.append(f"    {source} --> {target}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", action="store_true", help="module-level edges instead of apps")
    args = parser.parse_args()
    all_edges = edges()
    if args.modules:
        for edge in sorted(all_edges, key=lambda e: (e.source, e.target)):
            if app_of(edge.source) in APPS:
                print(f"{edge.source} -> {edge.target}{' (deferred)' if edge.deferred else ''}")
        return 0
    print(mermaid(app_graph(all_edges)))
    for found in cycles(module_graph(all_edges, with_deferred=True)):
        print("circle (counting imports inside functions):", " <-> ".join(found), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
