"""No import cycles among lth's modules outside ``lth.cli``.

The graph has one node per module under ``src/lth`` (a package's ``__init__.py`` is the package
itself) and an edge M -> T for every import statement in M that names an lth module T:

* every ``import`` and ``from ... import`` anywhere in M counts: at module level, and inside
  functions, methods and class bodies (a lazy import is still a dependency, only a later one);
* imports under ``if TYPE_CHECKING:`` do not count (they never run); its ``else:`` branch does;
* ``import lth.a.b`` and ``from lth.a.b import x`` depend on ``lth.a.b``; ``from lth.a import b``
  depends on ``lth.a`` and also on ``lth.a.b`` when that is a module; relative imports are
  resolved against M's package;
* parent packages: importing ``lth.a.b`` first runs ``lth/a/__init__.py``, so a dependency on
  ``lth.a.b`` also is one on each enclosing package (``lth.a``) that does not enclose M as well.
  M's own enclosing packages are already imported (or being imported) when M runs, so imports
  between modules of one package never re-enter its ``__init__``; the root package ``lth``
  encloses every module and never counts.

``lth.cli`` (the command line, the top layer) is left out: the assertion is about the cycles
among the other modules. Nothing here imports lth: the sources are only parsed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
EXCLUDED = "lth.cli"

Graph = dict[str, dict[str, tuple[Path, int]]]  # module -> {dependency: (file, line of the import)}


def module_names(src: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file} of every module of ``package`` under ``src``."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """(dotted name, line) of what every import statement that runs may import: modules, and the
    ``module.name`` of each name a ``from`` import takes (which may be a submodule)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from imported_names(ast.Module(body=[child], type_ignores=[]), module, is_package)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno
        yield from imported_names(node, module, is_package)


def build_graph(src: Path, package: str) -> Graph:
    """The dependency graph of ``package``'s modules (the rules of this file's docstring)."""
    modules = module_names(src, package)
    graph: Graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        parts = name.split(".")
        enclosing = {".".join(parts[:i]) for i in range(1, len(parts) + is_package)}
        edges: dict[str, tuple[Path, int]] = {}
        for target, line in imported_names(ast.parse(path.read_text(), str(path)), name, is_package):
            pieces = target.split(".")
            for i in range(1, len(pieces) + 1):  # the target and every package it runs first
                dependency = ".".join(pieces[:i])
                if dependency in modules and dependency != name and dependency not in enclosing:
                    edges.setdefault(dependency, (path, line))
        graph[name] = edges
    return graph


def without(graph: Graph, prefix: str) -> Graph:
    """``graph`` without the package ``prefix`` and its modules."""

    def kept(name: str) -> bool:
        return name != prefix and not name.startswith(prefix + ".")

    return {m: {d: where for d, where in deps.items() if kept(d)} for m, deps in graph.items() if kept(m)}


def tangles(graph: Mapping[str, Mapping[str, object]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted: the modules that
    all reach one another (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return components


def cycles(graph: Mapping[str, Mapping[str, object]]) -> list[list[str]]:
    """One cycle (its modules in order, the first repeated at the end) per tangle."""
    return [_cycle_in(graph, set(component)) for component in tangles(graph)]


def _cycle_in(graph: Mapping[str, Mapping[str, object]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in component:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in its component")  # pragma: no cover


def describe(graph: Graph, cycle: list[str], src: Path) -> str:
    """``a -> b (a's file:line) -> ...``: each step with the import that makes it."""
    steps = [cycle[0]]
    for a, b in zip(cycle, cycle[1:]):
        path, line = graph[a][b]
        steps.append(f"{b}  [{path.relative_to(src.parent)}:{line}]")
    return "\n      -> ".join(steps)


# ------------------------------------------------------------------ the rules, on a small package


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_lazy_import_closes_a_cycle_and_a_type_checking_one_does_not(tmp_path):
    src = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import f\n",
            "pkg/b.py": "def f():\n    from pkg import a\n    return a\n",
            "pkg/c.py": "import pkg.a\n",
            "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\nelse:\n    pass\n",
            "pkg/e.py": "import typing\nfrom pkg import d\nif typing.TYPE_CHECKING:\n    import pkg.e2\n",
            "pkg/e2.py": "from . import e\n",
        },
    )
    graph = build_graph(src, "pkg")
    assert graph["pkg.a"] == {"pkg.b": (src / "pkg/a.py", 1)}
    assert set(graph["pkg.b"]) == {"pkg.a"}  # `from pkg import a`: the module a (pkg encloses b)
    assert set(graph["pkg.c"]) == {"pkg.a"}
    assert graph["pkg.d"] == {} and set(graph["pkg.e"]) == {"pkg.d"} and set(graph["pkg.e2"]) == {"pkg.e"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_importing_a_submodule_depends_on_its_package_init(tmp_path):
    src = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low.py": "from pkg.sub.leaf import x\n",
            "pkg/sub/__init__.py": "from pkg.sub.leaf import x\n\ndef later():\n    import pkg.low\n",
            "pkg/sub/leaf.py": "from pkg.sub import other\nx = 1\n",  # a sibling: no edge to pkg.sub
            "pkg/sub/other.py": "",
        },
    )
    graph = build_graph(src, "pkg")
    assert set(graph["pkg.low"]) == {"pkg.sub", "pkg.sub.leaf"}
    assert set(graph["pkg.sub.leaf"]) == {"pkg.sub.other"}
    assert cycles(graph) == [["pkg.low", "pkg.sub", "pkg.low"]]
    assert cycles(without(graph, "pkg.sub")) == []


# ------------------------------------------------------------------ lth itself


def test_lth_has_no_import_cycle_outside_the_cli():
    graph = build_graph(SRC, "lth")
    assert len(graph) > 100 and "lth.experiments.lottery_model" in graph
    assert "lth.experiments.lottery_model_store" in graph["lth.experiments.lottery_model"]
    assert "lth.experiments" in graph["lth.supermasks.evaluate"]  # `from lth.experiments import ...`
    assert "lth.plots" in graph["lth.experiments.study"]  # an import inside a function
    outside = without(graph, EXCLUDED)
    found = tangles(outside)
    assert not found, f"{len(found)} import cycle(s) outside {EXCLUDED}:\n" + "\n".join(
        f"  {len(component)} modules reach one another: {', '.join(component)}; for example\n    "
        + describe(graph, _cycle_in(outside, set(component)), SRC)
        for component in found
    )
