"""flowcallback/core/ reads in pipeline order: a module imports only the modules before it."""
from __future__ import annotations

import ast
from pathlib import Path

import flowcallback.core

CORE = Path(flowcallback.core.__file__).parent
HELPERS = ["_keras", "_notes", "_priority", "_files", "_mcl_kernel"]
ORDER = HELPERS + ["layergraph", "embed", "aggregate", "capture", "outputs", "lrp", "knn", "cluster", "match", "flows",
                   "metrics", "project", "stages", "history", "compare", "render", "views_figures", "runpage",
                   "tensorboard", "store"]


def _stage(path: Path) -> str:
    rel = path.relative_to(CORE).with_suffix("")
    return rel.parts[0]


def _module_level_imports(path: Path):
    """The flowcallback.core modules that ``path`` imports at module level (not inside functions)."""
    tree = ast.parse(path.read_text("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("flowcallback.core"):
            parts = node.module.split(".")
            if len(parts) > 2:
                yield parts[2]
            else:  # from flowcallback.core import knn, cluster
                yield from (alias.name for alias in node.names)


def test_every_core_module_is_listed_in_the_order_and_the_docstring():
    modules = {_stage(p) for p in CORE.rglob("*.py") if p.name != "__init__.py" or p.parent != CORE}
    assert modules == set(ORDER)
    doc = flowcallback.core.__doc__
    positions = [doc.index(f"``{name}``") for name in ORDER[len(HELPERS):]]
    assert positions == sorted(positions), "core/__init__.py lists the stages in another order"


def test_no_core_module_imports_a_later_stage():
    backwards = []
    for path in sorted(CORE.rglob("*.py")):
        stage = _stage(path)
        if stage == "__init__":
            continue
        for target in _module_level_imports(path):
            if target != stage and ORDER.index(target) > ORDER.index(stage):
                backwards.append(f"{path.relative_to(CORE)} imports {target}")
    assert backwards == []
