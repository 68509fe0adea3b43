"""flowcallback/core/ reads in pipeline order, and no module of the package imports itself back.

Imports inside functions count as much as those at the top of a module: a function-level import is
still a dependency, only a deferred one (``FlowGraph.figure`` importing the renderer once made
``flows -> render -> history -> flows`` a circle that a module-level check did not see).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, Set

import flowcallback
import flowcallback.core

PACKAGE = Path(flowcallback.__file__).parent
CORE = Path(flowcallback.core.__file__).parent
HELPERS = ["_params", "_inputs", "_keras", "_notes", "_priority", "_files", "_npz", "_schemas", "_mcl_kernel", "_accel"]
ORDER = HELPERS + ["layergraph", "embed", "aggregate", "neurons", "capture", "outputs", "lrp", "knn", "cluster",
                   "match", "flows", "metrics", "project", "stages", "history", "compare", "sets", "render",
                   "views_figures", "runpage", "tensorboard", "store"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, *, module_level_only: bool = False) -> Iterator[str]:
    """The flowcallback modules ``path`` imports (``from a import b`` is module ``a.b`` where that is one)."""
    tree = ast.parse(path.read_text("utf-8"))
    nodes = tree.body if module_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "flowcallback")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "flowcallback":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield sub if sub in MODULES else node.module


def _stage(path: Path) -> str:
    return path.relative_to(CORE).with_suffix("").parts[0]


def test_every_core_module_is_listed_in_the_order_and_the_docstring():
    modules = {_stage(p) for p in CORE.rglob("*.py") if p.name != "__init__.py" or p.parent != CORE}
    assert modules == set(ORDER)
    doc = flowcallback.core.__doc__
    positions = [doc.index(f"``{name}``") for name in ORDER[len(HELPERS):]]
    assert positions == sorted(positions), "core/__init__.py lists the stages in another order"


def test_no_core_module_imports_a_later_stage_even_inside_a_function():
    backwards = []
    for path in sorted(CORE.rglob("*.py")):
        stage = _stage(path)
        if stage == "__init__":
            continue
        for module in _imports(path):
            parts = module.split(".")
            if parts[:2] != ["flowcallback", "core"] or len(parts) < 3:
                continue
            target = parts[2]
            if target != stage and ORDER.index(target) > ORDER.index(stage):
                backwards.append(f"{path.relative_to(CORE)} imports {module}")
    assert backwards == []


def _cycle(graph: Dict[str, Set[str]]) -> list:
    """One cycle of ``graph`` as a list of nodes, or [] (depth-first search, colours)."""
    state: Dict[str, int] = {}
    stack: list = []

    def visit(node) -> list:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_module_of_the_package_is_part_of_an_import_circle():
    graph = {name: {m for m in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}
    assert len(graph) > 40
    assert _cycle(graph) == []


def test_the_circle_check_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []
