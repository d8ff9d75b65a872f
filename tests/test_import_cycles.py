"""No import cycles among tritonstack's modules, type-only (``if TYPE_CHECKING:``) imports included.

The graph is read from the source with ``ast``, not by importing: every import a module runs when it is
imported -- at module level, inside ``if``/``try``/``with`` blocks (``if TYPE_CHECKING:`` among them) and in
class bodies -- is an edge. Imports inside functions are left out: they run when the function is called, after
every module involved has loaded, and are how a module deliberately defers a heavy or upward dependency.
The implicit import of a package's ``__init__`` by ``import a.b.c`` is left out too (every module would then
close a circle through ``tritonstack/__init__.py``); an explicit ``from a.b import c`` of a name in
``a/b/__init__.py`` is an edge to ``a.b``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import tritonstack

SOURCE = Path(tritonstack.__file__).parent
_NESTED_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _module_name(path: Path, source: Path) -> str:
    parts = path.relative_to(source.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_time_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``node`` that run when the module is imported: not the bodies of functions."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _NESTED_SCOPES):
            continue
        yield child
        yield from _import_time_nodes(child)


def _base_of(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    """Module -> the tritonstack modules it imports when it is imported."""
    paths = {_module_name(path, source): path for path in sorted(source.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        edges = graph.setdefault(module, set())
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _import_time_nodes(tree):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in paths)
            elif isinstance(node, ast.ImportFrom):
                base = _base_of(module, path.name == "__init__.py", node)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    if submodule in paths:
                        edges.add(submodule)
                    elif base in paths:
                        edges.add(base)
        edges.discard(module)
    return graph


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest circle through the first module of ``component``, as the modules it passes, start repeated."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per group of modules that import each other, directly or not."""
    return [_shortest_cycle(graph, component) for component in _strongly_connected(graph)]


def test_the_import_graph_has_no_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_a_type_only_cycle_is_found(tmp_path: Path) -> None:
    package = tmp_path / "tritonstack"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from tritonstack.sub.b import B\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\nclass B: ...\n"
    )
    (package / "sub" / "c.py").write_text("def late():\n    from tritonstack.sub import a\n")
    (package / "sub" / "d.py").write_text("from tritonstack.sub import c\n")
    graph = import_graph(package)
    assert graph["tritonstack.sub.d"] == {"tritonstack.sub.c"}
    assert graph["tritonstack.sub.c"] == set()  # a function-level import is no edge
    assert cycles(graph) == [["tritonstack.sub.a", "tritonstack.sub.b", "tritonstack.sub.a"]]
