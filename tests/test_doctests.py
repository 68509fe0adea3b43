"""The examples in the package's docstrings run and print what they show.

Every module of ``flowcallback`` is imported and its docstring examples run with :mod:`doctest`
(``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``), one test per module. Examples that need a trained model,
a run directory on disk or iNNvestigate are marked ``# doctest: +SKIP`` where they stand; the rest
run on real data (small NumPy arrays, scikit-learn's digits, untrained Keras models).
"""
from __future__ import annotations

import doctest
import functools
import importlib
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flowcallback"
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Modules whose examples fail, each with the reason; they run as strict xfails, so an entry has to go
# once its module is fixed. Every module's examples pass: keep it empty.
KNOWN_FAILING: Dict[str, str] = {}

# Examples that run (not skipped), all modules together; raise it when examples are added.
MIN_EXAMPLES_RUN = 200


def _module_names() -> List[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


MODULES = _module_names()


@functools.cache
def _run_module(name: str) -> Tuple[int, int, int, str]:
    """(failed, run, skipped, report) for the examples of module ``name``."""
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=OPTIONS, verbose=False)
    out: List[str] = []
    run = skipped = 0
    for test in doctest.DocTestFinder().find(module, name):
        n_skip = sum(1 for ex in test.examples if ex.options.get(doctest.SKIP, False))
        skipped += n_skip
        run += len(test.examples) - n_skip
        runner.run(test, out=out.append)
    return runner.failures, run, skipped, "".join(out)


def test_every_module_is_listed():
    assert "flowcallback" in MODULES and "flowcallback.core.lrp.native" in MODULES
    assert set(KNOWN_FAILING) <= set(MODULES)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_FAILING[n], strict=True)) if n in KNOWN_FAILING else n
    for n in MODULES
])
def test_docstring_examples(name):
    failed, _, _, report = _run_module(name)
    assert failed == 0, f"{name}: {failed} docstring example(s) failed\n{report}"


def test_enough_examples_run():
    counts = {name: _run_module(name)[1:3] for name in MODULES}
    total = sum(run for run, _ in counts.values())
    listing = "\n".join(f"  {name}: {run} run, {skipped} skipped" for name, (run, skipped) in counts.items())
    assert total >= MIN_EXAMPLES_RUN, f"{total} examples ran, expected at least {MIN_EXAMPLES_RUN}:\n{listing}"
