"""Package imports run one way: no cycle between medrl's packages.

A unit is a package (medrl.rollout) or a top-level module (medrl.train); an edge is any import
of another unit, at module level or inside a function (a lazy import is still a dependency),
except under `if TYPE_CHECKING:`. A cycle fails with the imports that close it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import medrl

ROOT = Path(medrl.__file__).parent


def unit_of(module: str) -> str:
    """medrl.rollout.engine -> medrl.rollout; medrl.train -> medrl.train."""
    return ".".join(module.split(".")[:2])


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every medrl import outside TYPE_CHECKING blocks."""
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "medrl":
                found += [(node.lineno, f"medrl.{alias.name}") for alias in node.names]
            elif node.module.startswith("medrl."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("medrl.")]
    return found


def unit_graph(root: Path) -> dict[str, dict[str, list[str]]]:
    """unit -> {imported unit: ["module:line", ...]}."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        for line, target in imported_modules(ast.parse(path.read_text())):
            if unit_of(target) != unit_of(name):
                graph[unit_of(name)][unit_of(target)].append(f"{name}:{line} imports {target}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        for target in graph.get(unit, {}):
            if target not in index:
                visit(target)
                low[unit] = min(low[unit], low[target])
            elif target in stack:
                low[unit] = min(low[unit], index[target])
        if low[unit] == index[unit]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == unit:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for unit in list(graph):
        if unit not in index:
            visit(unit)
    return found


def test_the_checker_finds_a_cycle_and_its_imports(tmp_path):
    package = tmp_path / "medrl"
    for sub, body in {
        "a": "from medrl.b.x import f\n",
        "b": "def g():\n    from medrl.a import h\n",  # lazy: still an edge
        "c": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from medrl.a import h\n",
    }.items():
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text(body)
    graph = unit_graph(package)
    assert cycles(graph) == [["medrl.a", "medrl.b"]]
    assert graph["medrl.b"]["medrl.a"] == ["medrl.b:2 imports medrl.a"]
    assert "medrl.c" not in graph  # a TYPE_CHECKING import is not a dependency


def test_no_import_cycle_between_medrl_packages():
    graph = unit_graph(ROOT)
    found = cycles(graph)
    lines = [
        f"{' <-> '.join(cycle)}: "
        + "; ".join(edge for a in cycle for b in cycle for edge in graph[a].get(b, [])[:2])
        for cycle in found
    ]
    assert not found, "import cycles between packages:\n" + "\n".join(lines)
