"""The run's threads and the fit guard: what stops them, also when nobody calls ``shutdown``."""
from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from flowcallback._fit_guard import FitGuard
from flowcallback._threads import SnapshotThreads


def _new_threads(before):
    return [t for t in threading.enumerate() if t not in before and t.name.startswith("flowcallback")]


def _sum_in_the_pool(threads):
    return threads.layer_pool().submit(sum, [1, 2]).result()


@pytest.mark.parametrize("background", [True, False])
def test_threads_nobody_shut_down_go_with_their_owner(background):
    """An owner dropped without ``shutdown`` (a callback collected in the middle of a snapshot's
    life, a test that forgot it) must not leave its idle threads for the life of the process."""
    before = set(threading.enumerate())
    threads = SnapshotThreads(background=background, nice=3)
    assert threads.coordinator().submit(_sum_in_the_pool, threads).result() == 3
    made = _new_threads(before)
    assert sorted(t.name for t in made) == ["flowcallback-layer_0", "flowcallback_0"]
    del threads
    gc.collect()
    for t in made:
        t.join(timeout=10)
    assert [t.name for t in made if t.is_alive()] == []


def _fit_that_fails(digits, guard, on_end, *, fail: bool):
    import tensorflow as tf

    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), _ = digits

    class Boom(Exception):
        pass

    class Guarded(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            assert guard.start(on_end)  # the fit is found on the stack

        def on_epoch_end(self, epoch, logs=None):
            if fail:
                raise Boom()

        def on_train_end(self, logs=None):
            guard.stop()

    if fail:
        with pytest.raises(Boom):
            lenet5_digits(seed=5).fit(x_tr[:64], y_tr[:64], epochs=2, verbose=0, callbacks=[Guarded()])
    else:
        lenet5_digits(seed=5).fit(x_tr[:64], y_tr[:64], epochs=2, verbose=0, callbacks=[Guarded()])


def test_the_guard_is_silent_when_fit_ends_normally(digits):
    calls = []
    guard = FitGuard(period=0.01)
    _fit_that_fails(digits, guard, lambda: calls.append(1), fail=False)
    guard.stop()
    assert calls == []


def test_the_guard_cleans_up_once_after_a_fit_that_raised(digits):
    calls = []
    guard = FitGuard(period=0.01)
    _fit_that_fails(digits, guard, lambda: calls.append(threading.current_thread().name), fail=True)
    guard._thread.join(timeout=10)  # it notices within moments
    assert calls == ["flowcallback-fit-guard"]
    guard.stop()  # the next fit's begin, say: the clean-up is not run twice
    assert calls == ["flowcallback-fit-guard"]


def test_stopping_the_guard_before_it_noticed_a_raised_fit_runs_the_clean_up(digits):
    """A script that calls fit again at once after a failed one (``try: fit except: fit``): the
    next fit's ``on_train_begin`` stops the guard before it has looked (it looks every ``period``
    seconds). The failed fit's clean-up must run then, not be skipped."""
    calls = []
    guard = FitGuard(period=3600)  # never looks by itself within this test
    _fit_that_fails(digits, guard, lambda: calls.append(threading.current_thread().name), fail=True)
    assert calls == []
    guard.stop()
    assert calls == [threading.current_thread().name]
    guard.stop()
    assert calls == [threading.current_thread().name]


def test_a_callback_collected_in_its_own_snapshot_thread_does_not_wait_for_itself(tmp_path, digits, monkeypatch):
    """The garbage collector runs ``__del__`` in whichever thread allocates: here the thread
    running the callback's own background snapshot. Waiting there for the run's snapshots would
    wait for itself forever."""
    from flowcallback import FlowCallback, load_run
    from flowcallback.demo import lenet5_digits
    from flowcallback.pipeline import Snapshotter

    (x_tr, y_tr), (x_te, y_te) = digits
    cb = FlowCallback((x_te[:90], y_te[:90]), log_dir=tmp_path / "r", epochs=[0, 1], k=8, lrp=False, verbose=0)
    assert cb.settings.background
    real = Snapshotter._analyse_and_write
    collected_in = []

    def collected_meanwhile(self, captured, **kwargs):
        collected_in.append(threading.current_thread().name)
        cb.__del__()  # as the collector would, in this thread
        return real(self, captured, **kwargs)

    monkeypatch.setattr(Snapshotter, "_analyse_and_write", collected_meanwhile)
    fit = threading.Thread(target=lambda: lenet5_digits(seed=7).fit(x_tr[:64], y_tr[:64], epochs=1, verbose=0,
                                                                     callbacks=[cb]), daemon=True)
    fit.start()
    fit.join(timeout=300)
    assert not fit.is_alive(), "the snapshot thread waits for itself"
    assert collected_in == ["flowcallback_0", "flowcallback_0"]
    assert load_run(tmp_path / "r").epochs == [0, 1]



def test_the_callback_collected_at_interpreter_exit_is_quiet(tmp_path, monkeypatch, capsys):
    """At interpreter exit the collector may run ``__del__`` after the module's globals were set to
    None (seen with a callback kept alive by a reference cycle): it must not raise, which Python
    prints as "Exception ignored in ... __del__" on the user's terminal."""
    import sys

    import flowcallback.callback as callback_module
    from flowcallback import FlowCallback

    cb = FlowCallback((np.zeros((4, 3), "float32"), np.array([0, 1, 0, 1])), log_dir=tmp_path / "run")
    monkeypatch.setattr(callback_module, "threading", None)
    hook_calls = []
    monkeypatch.setattr(sys, "unraisablehook", hook_calls.append)
    cb.__del__()  # raises on its own if it fails; the hook catches what the collector would print
    del cb
    gc.collect()
    assert hook_calls == []
