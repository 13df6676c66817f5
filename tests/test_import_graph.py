"""The package's rooms (top-level modules and subpackages of lightning_phase) import each other without a
circle: dependencies go one way (e.g. sweep → analysis → storage), so each room can be read, tested and
imported on its own. Every import counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import lightning_phase

ROOT = Path(lightning_phase.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """Absolute names of the lightning_phase modules (or module attributes) that ``path`` imports."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return {n for n in out if n.startswith("lightning_phase.")}


def room_graph() -> dict[str, dict[str, set[str]]]:
    """room → {imported room: files of the room that import it}; a room is ``lightning_phase.<room>``."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in ROOT.rglob("*.py"):
        room = path.relative_to(ROOT).with_suffix("").parts[0]
        for name in _imported(path):
            target = name.split(".")[1]
            if target != room and ((ROOT / target).is_dir() or (ROOT / f"{target}.py").is_file()):
                graph.setdefault(room, {}).setdefault(target, set()).add(str(path.relative_to(ROOT)))
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one room (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(graph) | {w for targets in graph.values() for w in targets}):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_sees_a_circle():
    """The check itself: a two-room circle and a three-room one are found, a chain is not."""
    assert cycles({"a": {"b": set()}, "b": {"a": set()}}) == [["a", "b"]]
    assert cycles({"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}, "d": {"a": set()}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b": set()}, "b": {"c": set()}}) == []


def test_graph_sees_lazy_imports():
    """Imports inside functions count; the graph of the real package has the known one-way edges."""
    graph = room_graph()
    assert "storage" in graph["analysis"], graph.get("analysis")   # analysis/tables.py opens stored studies
    assert "storage" in graph["sweep"]
    assert "analysis" in graph["sweep"]                              # threshold prints the jamming line
    assert "run" in graph["sweep"]                                   # runner.run_fit, imported lazily


def test_package_rooms_import_without_a_circle():
    graph = room_graph()
    found = cycles(graph)
    detail = "; ".join(
        " ↔ ".join(c) + " (" + ", ".join(f"{a}→{b}: {sorted(graph[a][b])}" for a in c for b in c
                                          if b in graph.get(a, {})) + ")" for c in found)
    assert not found, f"import circles between rooms: {detail}"
