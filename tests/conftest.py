"""Shared fixtures: real data (scikit-learn's digits), a real model, a real training run."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest


@pytest.fixture(scope="session")
def digits():
    """(x_train, y_train), (x_test, y_test) from scikit-learn's bundled digits."""
    from flowcallback.demo import load_digits_split

    return load_digits_split()


@pytest.fixture(scope="session")
def fitted_run(tmp_path_factory, digits):
    """A real ``model.fit`` with the callback: 2 epochs, snapshots of epochs 1 and 2 only."""
    import tensorflow as tf

    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    log_dir = tmp_path_factory.mktemp("runs") / "run1"
    model = lenet5_digits()
    eager_before = tf.executing_eagerly()
    cb = FlowCallback((x_te, y_te), log_dir=str(log_dir), epochs=[1, 2], class_names=[f"digit {i}" for i in range(10)],
                      verbose=0)
    history = model.fit(x_tr, y_tr, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
    return {
        "log_dir": log_dir,
        "callback": cb,
        "model": model,
        "history": history,
        "eager_before": eager_before,
        "eager_after": tf.executing_eagerly(),
        "x_test": x_te,
        "y_test": y_te,
    }


def pytest_collection_modifyitems(config, items):
    """Tests marked ``innvestigate`` are skipped, with the reason, where iNNvestigate is not installed."""
    import importlib.util

    if importlib.util.find_spec("innvestigate") is not None:
        return
    skip = pytest.mark.skip(reason="needs iNNvestigate (make test runs it on the .venv-inn stack)")
    for item in items:
        if item.get_closest_marker("innvestigate") is not None:
            item.add_marker(skip)


_LIMITED_LOAD = """
import resource, sys
from flowcallback import load_run
from flowcallback.exceptions import RunFormatError

run = load_run(sys.argv[1])
getattr(run, sys.argv[2])(int(sys.argv[3]))  # imports and caches everything loading needs, before the limit

def address_space():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))

limit = address_space() + 256 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    getattr(run, sys.argv[2])(int(sys.argv[4]))
except RunFormatError as exc:
    print("RunFormatError:", exc)
    sys.exit(0)
except MemoryError:
    print("MemoryError")
    sys.exit(3)
print("loaded")
sys.exit(4)
"""


@pytest.fixture
def load_with_bounded_memory():
    """``load(run_dir, method, good_epoch, bad_epoch)`` loads ``run.<method>(bad_epoch)`` in a child
    process whose address space may grow by 256 MiB only (after ``run.<method>(good_epoch)`` has
    loaded what loading needs); the child exits 0 and prints the error for a RunFormatError, 3 for a
    MemoryError, 4 when the epoch loaded."""
    import subprocess
    import sys
    from pathlib import Path

    import flowcallback

    repo = Path(flowcallback.__file__).resolve().parents[1]  # the flowcallback these tests import

    def load(run_dir, method: str, good_epoch: int, bad_epoch: int):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        return subprocess.run([sys.executable, "-c", _LIMITED_LOAD, str(run_dir), method, str(good_epoch),
                               str(bad_epoch)], cwd=repo, env=env, capture_output=True, text=True, timeout=120)

    return load


# -- reliability counts (docs/reliability.md) --------------------------------------------------------
_TALLY: dict = {}


@pytest.fixture
def tally():
    """``tally("faults injected")`` counts one more for the summary printed at the end of the run."""

    def add(kind: str, n: int = 1) -> None:
        _TALLY[kind] = _TALLY.get(kind, 0) + n

    return add


def pytest_terminal_summary(terminalreporter):
    if _TALLY:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(_TALLY.items()))
        terminalreporter.write_line(f"reliability counts: {parts}")
