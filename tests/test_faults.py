"""Training survives the analysis: faults injected into each stage of real snapshots.

Each fault hits one named stage (:class:`flowcallback.core.stages.StageClock`) of the snapshot of
epoch 1 of a real ``fit`` (3 epochs, snapshots 0, 1, 2), and for the per-layer stages one named
layer. Training must finish, a warning must name the epoch (and the layer, for per-layer stages), the traceback
must be in ``errors/epoch_001.txt``, the run page must show epoch 1 as failed (or partly failed),
and epochs 0 and 2 must load back complete.
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import threading
import time

import pytest
import tensorflow as tf

from flowcallback import FlowCallback, SnapshotError, load_run
from flowcallback.core import stages
from flowcallback.demo import lenet5_digits

pytestmark = pytest.mark.slow

LAYERS = 7  # lenet5_digits' selected layers


def run_page_data(log_dir):
    text = (log_dir / "index.html").read_text()
    m = re.search(r'<script id="run-data" type="application/json">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


def fail_at_stage(monkeypatch, stage, exc, *, epoch=1, layer=None):
    """Make the named stage of the snapshot of ``epoch`` raise ``exc`` as it starts (for a per-layer
    stage, only for ``layer``'s activations)."""

    class FailingClock(stages.StageClock):
        def enter(self, name, analysis, where):
            if (self.epoch == epoch and name == stage
                    and (layer is None or (where == layer and analysis == "activations"))):
                raise exc

    monkeypatch.setattr(stages, "StageClock", FailingClock)


# (stage, layer, what is lost: "epoch", "layer", "lrp" or "page", exception, lrp_backend)
FAULTS = {
    "capture": ("capture", None, "epoch", RuntimeError("capture failed (injected)"), "auto"),
    "faiss": ("knn", "conv2", "layer", RuntimeError("FAISS failed (injected)"), "auto"),
    "mcl": ("mcl", "dense84", "layer", MemoryError("MCL ran out of memory (injected)"), "auto"),
    "render": ("render", None, "page", OSError("render failed (injected)"), "auto"),
    "projection": ("projection", None, "projection", MemoryError("UMAP ran out of memory (injected)"), "auto"),
    "disk full": ("store", None, "epoch", OSError(errno.ENOSPC, "No space left on device (injected)"), "auto"),
    "innvestigate": ("lrp", None, "lrp", RuntimeError("iNNvestigate failed in the LRP worker (injected)"),
                     "innvestigate"),
    "native lrp": ("lrp", None, "lrp", RuntimeError("native LRP failed (injected)"), "native"),
}


@pytest.mark.parametrize("fault", [pytest.param(f, marks=[pytest.mark.innvestigate]) if f == "innvestigate" else f
                                   for f in FAULTS])
def test_a_fault_in_a_stage_costs_at_most_that_epoch(tmp_path, digits, monkeypatch, tally, fault):
    stage, layer, lost, exc, backend = FAULTS[fault]
    fail_at_stage(monkeypatch, stage, exc, layer=layer)
    (x_tr, y_tr), (x_te, y_te) = digits
    log_dir = tmp_path / "r"
    cb = FlowCallback((x_te[:120], y_te[:120]), log_dir=log_dir, epochs=[0, 1, 2], k=8, verbose=0, lrp=lost == "lrp",
                      lrp_backend=backend)
    with pytest.warns(RuntimeWarning) as warned:
        hist = lenet5_digits(seed=30).fit(x_tr[:200], y_tr[:200], epochs=2, verbose=0, callbacks=[cb])
    tally("faults injected")
    assert len(hist.history["loss"]) == 2  # training went on
    message = " | ".join(str(w.message) for w in warned)
    assert "epoch 1" in message and "injected" in message
    err = (log_dir / "errors" / "epoch_001.txt").read_text()
    assert "injected" in err and "Traceback" in err
    run = load_run(log_dir)
    for e in (0, 2):  # the other epochs are complete
        g = run.epoch(e)
        assert len(g.columns) == LAYERS + 2 and g.notes == ()
        tally("epochs loaded back after a fault")
    data = run_page_data(log_dir)
    if lost == "epoch":
        assert run.epochs == [0, 2] and "1" in data["failed"] and "injected" in data["failed"]["1"]
        return
    assert run.epochs == [0, 1, 2] and "1" in data["partial"]
    g = run.epoch(1)
    if lost == "projection":  # the flows stand; the projection is missing from epoch 1 only, and said so
        assert len(g.columns) == LAYERS + 2 and any(s.startswith("projection left out") for s in g.notes)
        assert run.views(1).projections == {} and len(run.views(2).projections) == LAYERS
        assert run.views(1).class_means  # the class means were captured before the failure
        return
    if lost == "page":  # the graph was saved before the page failed: the data of epoch 1 is complete
        assert len(g.columns) == LAYERS + 2 and not (log_dir / "epoch_001.html").exists()
    elif lost == "layer":
        assert len(g.columns) == LAYERS + 1  # one layer left out of epoch 1, named in the notes and the warning
        assert set(run.epoch(0).column_names) - set(g.column_names) == {layer}
        assert any(f"layer {layer} left out" in s for s in g.notes) and f"layer {layer}" in message
    else:
        assert run.analyses(1) == ["activations"] and run.analyses(2) == ["activations", "lrp"]
        assert any(s.startswith("LRP failed for this epoch") for s in g.notes)


@pytest.mark.innvestigate
def test_the_lrp_worker_killed_mid_run_is_restarted(tmp_path, digits, tally):
    (x_tr, y_tr), (x_te, y_te) = digits
    log_dir = tmp_path / "r"

    class KillWorker(tf.keras.callbacks.Callback):
        def __init__(self, cb):
            super().__init__()
            self.cb = cb

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:  # after snapshot 1 was handed to the background thread
                self.cb.flush()
                engine = self.cb.lrp_engine
                os.kill(engine.pid, signal.SIGKILL)
                deadline = time.time() + 10
                while engine.alive and time.time() < deadline:
                    time.sleep(0.05)
                assert not engine.alive

    cb = FlowCallback((x_te[:120], y_te[:120]), log_dir=log_dir, epochs=[0, 1, 2, 3], k=8, verbose=0,
                      lrp_backend="innvestigate")
    hist = lenet5_digits(seed=31).fit(x_tr[:200], y_tr[:200], epochs=3, verbose=0, callbacks=[cb, KillWorker(cb)])
    tally("faults injected")
    assert len(hist.history["loss"]) == 3
    run = load_run(log_dir)
    assert run.epochs == [0, 1, 2, 3]
    # epoch 1 was analysed before the kill; the worker is found dead at epoch 2 and started again
    assert all(run.analyses(e) == ["activations", "lrp"] for e in run.epochs)


def test_on_error_raise_stops_training_and_leaves_nothing(tmp_path, digits, monkeypatch, tally):
    fail_at_stage(monkeypatch, "capture", RuntimeError("capture failed (injected)"))
    (x_tr, y_tr), (x_te, y_te) = digits
    cb = FlowCallback((x_te[:120], y_te[:120]), log_dir=tmp_path / "r", k=8, verbose=0, on_error="raise", budget=None)
    with pytest.raises(SnapshotError, match="snapshot of epoch 1 failed: capture failed"):
        lenet5_digits(seed=32).fit(x_tr[:200], y_tr[:200], epochs=3, verbose=0, callbacks=[cb])
    tally("faults injected")
    import time

    deadline = time.time() + 30
    def busy():
        threads = any(t.name.startswith("flowcallback") for t in threading.enumerate())
        return cb.lrp_engine is not None or threads

    while busy() and time.time() < deadline:
        time.sleep(0.05)
    assert cb.lrp_engine is None
    assert load_run(tmp_path / "r").epochs == [0]
    assert "capture failed" in (tmp_path / "r" / "errors" / "epoch_001.txt").read_text()


def test_on_error_raise_stops_training_at_the_batch_after_a_background_failure(tmp_path, digits, monkeypatch,
                                                                               tally):
    # Snapshot 1 fails in the background while epoch 2 trains. No snapshot follows (epochs=[0, 1]),
    # so an error raised only at the next snapshot would come after all 4 epochs, at the end of fit.
    fail_at_stage(monkeypatch, "store", OSError(errno.ENOSPC, "No space left on device (injected)"))
    (x_tr, y_tr), (x_te, y_te) = digits
    log_dir = tmp_path / "r"
    ended = []

    class WaitForTheFailure(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # snapshot 1 is in the background: wait until it has failed
                deadline = time.time() + 60
                while not (log_dir / "errors" / "epoch_001.txt").exists() and time.time() < deadline:
                    time.sleep(0.02)
                time.sleep(0.3)

        def on_epoch_end(self, epoch, logs=None):
            ended.append(epoch)

    cb = FlowCallback((x_te[:120], y_te[:120]), log_dir=log_dir, epochs=[0, 1], k=8, verbose=0, on_error="raise")
    assert cb.settings.background
    with pytest.raises(SnapshotError, match="snapshot of epoch 1 failed: .*No space left"):
        lenet5_digits(seed=33).fit(x_tr[:200], y_tr[:200], epochs=4, batch_size=32, verbose=0,
                                   callbacks=[WaitForTheFailure(), cb])
    tally("faults injected")
    assert ended == [0]  # stopped in the first batch of epoch 2, before it ended
    assert load_run(log_dir).epochs == [0]
