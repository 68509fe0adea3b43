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
