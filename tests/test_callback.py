"""Integration: a real model.fit with FlowCallback, a real LRP engine (iNNvestigate or native), real files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flowcallback import load_run

pytestmark = pytest.mark.slow

# lenet5_digits's layers in FlowCallback's default selection (no Flatten)
LAYERS = ("conv1", "pool1", "conv2", "pool2", "dense120", "dense84", "dense10")


def test_pages_and_graphs_exist_for_exactly_the_chosen_epochs(fitted_run):
    log_dir = fitted_run["log_dir"]
    pages = sorted(p.name for p in log_dir.glob("epoch_*.html"))
    assert pages == ["epoch_001.html", "epoch_002.html"]
    run = load_run(log_dir)
    assert run.epochs == [1, 2]
    for e in (1, 2):
        assert run.analyses(e) == ["activations", "lrp"]
    assert (log_dir / "plotly.min.js").stat().st_size > 1_000_000
    assert not (log_dir / "errors").exists()


def test_eager_execution_is_untouched(fitted_run):
    assert fitted_run["eager_before"] is True
    assert fitted_run["eager_after"] is True


def test_graphs_are_consistent_with_the_model(fitted_run):
    run = load_run(fitted_run["log_dir"])
    model = fitted_run["model"]
    x, y = fitted_run["x_test"], fitted_run["y_test"]
    g = run.epoch(2)
    # columns: the default layer selection (no Flatten), then Prediction and Ground truth
    assert g.column_names == LAYERS + ("Prediction", "Ground truth")
    assert [c.layer_type for c in g.columns[:4]] == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D"]
    np.testing.assert_array_equal(g.labels, y)
    # the last snapshot (epoch 2) is the trained model's state at the end of fit
    np.testing.assert_array_equal(g.predictions, np.argmax(model.predict(x, verbose=0), axis=1))
    assert g.metrics["accuracy"] == pytest.approx(float(np.mean(g.predictions == y)))
    assert g.metrics["loss"] > 0
    # flows conserve the sample count between every pair of consecutive columns
    sums = g.flows.groupby("source_column")["count"].sum()
    assert (sums == len(y)).all() and len(sums) == len(g.columns) - 1
    assert g.class_names == tuple(f"digit {i}" for i in range(10))


@pytest.mark.both
def test_lrp_graph_comes_from_the_engine_auto_chooses(fitted_run):
    import importlib.util

    run = load_run(fitted_run["log_dir"])
    lrp = run.epoch(2, "lrp")
    act = run.epoch(2, "activations")
    info = json.loads((fitted_run["log_dir"] / "run.json").read_text())
    # lrp_backend="auto": iNNvestigate where it is installed (the Keras 2 stack), native elsewhere
    if importlib.util.find_spec("innvestigate") is not None:
        assert lrp.metrics["lrp_analyzer"] == "innvestigate.analyzer.relevance_based.relevance_analyzer.LRPEpsilon"
        assert lrp.metrics["lrp_engine"] == info["config"]["lrp_engine"] == "iNNvestigate 2.1.2"
    else:
        assert lrp.metrics["lrp_analyzer"] == "flowcallback.core.lrp.native.NativeLRP(lrp.epsilon)"
        assert lrp.metrics["lrp_engine"].startswith("flowcallback native LRP")
        assert info["config"]["lrp_engine"] == lrp.metrics["lrp_engine"]
    # the page says which engine made the LRP flows, and for which class
    page = (fitted_run["log_dir"] / "epoch_002.html").read_text()
    assert f"computed by {lrp.metrics['lrp_engine']} for each sample&#x27;s predicted class" in page
    assert any("LRP flows sort by prediction from the first layer" in n for n in lrp.notes)
    assert not any("LRP" in n for n in act.notes)  # the activation graph's notes are about activations
    # LRP with max-activation neuron selection puts all output relevance on the predicted class,
    # so at the output layer samples cluster exactly by their prediction.
    from sklearn.metrics import adjusted_rand_score

    out = lrp.assignments[:, lrp.column_index("dense10")]
    assert adjusted_rand_score(out, lrp.predictions) == pytest.approx(1.0)
    # and relevance is not a copy of the activations: some layer clusters differently
    diffs = [adjusted_rand_score(lrp.assignments[:, j], act.assignments[:, j]) for j in range(len(act.columns) - 2)]
    assert min(diffs) < 0.999


def test_run_json_describes_the_run(fitted_run):
    info = json.loads((fitted_run["log_dir"] / "run.json").read_text())
    assert info["format"] == "flowcallback/run" and info["version"] == 1
    assert tuple(layer["name"] for layer in info["layers"]) == LAYERS
    assert info["config"]["k"] == 22 and info["config"]["k_rule"] == "auto"
    assert info["config"]["analyzer"] == "lrp.epsilon"


def test_callback_records_pages(fitted_run):
    cb = fitted_run["callback"]
    assert sorted(cb.pages) == [1, 2]
    assert cb.lrp_engine is None and cb.lrp_backend in ("native", "innvestigate")  # stopped at the end of fit


def test_run_page_drawn_incrementally_equals_a_fresh_one(fitted_run):
    """The callback draws each epoch's part of index.html once; the page is the one drawn from disk."""
    from flowcallback import load_run
    from flowcallback.core import runpage

    page = (fitted_run["log_dir"] / "index.html").read_text("utf-8")
    assert page == runpage.run_page_html_for(load_run(fitted_run["log_dir"]))


def test_initial_snapshot_and_every_n(tmp_path, digits):
    """epochs=2 means every 2nd epoch counting from 0: the untrained model, then epoch 2."""
    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    model = lenet5_digits(seed=1)
    cb = FlowCallback((x_te[:120], y_te[:120]), log_dir=tmp_path / "r", epochs=2, lrp=False, k=10, verbose=0)
    model.fit(x_tr[:300], y_tr[:300], epochs=3, verbose=0, callbacks=[cb])
    run = load_run(tmp_path / "r")
    assert run.epochs == [0, 2]
    assert run.analyses(0) == ["activations"]
    g0 = run.epoch(0)
    assert g0.n_samples == 120 and g0.metrics["k"] == 10


def test_epochs_outside_the_fit_are_said_before_it_trains(tmp_path, digits, recwarn):
    import warnings

    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    model = lenet5_digits(seed=1)
    cb = FlowCallback((x_te[:60], y_te[:60]), log_dir=tmp_path / "r", epochs=[5, 7], lrp=False, k=5, verbose=0)
    with pytest.warns(UserWarning, match=r"^FlowCallback: epochs=\[5, 7\] takes no snapshot in this fit, which can "
                                         r"take epochs 0–2 \(0: the untrained model\); no snapshot will be written"):
        model.fit(x_tr[:100], y_tr[:100], epochs=2, verbose=0, callbacks=[cb])
    assert cb.pages == {}
    # resumed up to epoch 5: it is taken, and epoch 7, beyond this fit, is said to be left (found by
    # an outside probe: epochs=[0, 5] with fit(epochs=3) left 5 without a word)
    with pytest.warns(UserWarning, match=r"^FlowCallback: epochs 7 of epochs= lie beyond this fit's last epoch \(5\): "
                                         r"they are taken only if a later fit"):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="FlowCallback: epochs=")
            model.fit(x_tr[:100], y_tr[:100], epochs=5, initial_epoch=2, verbose=0, callbacks=[cb])
    assert load_run(tmp_path / "r").epochs == [5]


def test_tf_data_and_one_hot_labels(tmp_path, digits):
    import tensorflow as tf

    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    y_hot = tf.keras.utils.to_categorical(y_te[:100], 10)
    ds = tf.data.Dataset.from_tensor_slices((x_te[:100], y_hot)).batch(32)
    model = lenet5_digits(seed=2)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    cb = FlowCallback(ds, log_dir=tmp_path / "r", epochs=[1], lrp=False, k=5, verbose=0)
    model.fit(x_tr[:200], tf.keras.utils.to_categorical(y_tr[:200], 10), epochs=1, verbose=0, callbacks=[cb])
    g = load_run(tmp_path / "r").epoch(1)
    np.testing.assert_array_equal(g.labels, y_te[:100])
    assert g.metrics["loss"] > 0


def test_training_results_are_unaffected(tmp_path, digits):
    """Same seed, same data: the weights after fit are identical with and without the callback."""
    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits

    def train(callbacks):
        model = lenet5_digits(seed=7)
        hist = model.fit(x_tr[:400], y_tr[:400], epochs=2, batch_size=50, shuffle=True, verbose=0, callbacks=callbacks)
        return model.get_weights(), hist.history["loss"]

    w_plain, loss_plain = train([])
    cb = FlowCallback((x_te[:80], y_te[:80]), log_dir=tmp_path / "r", k=8, verbose=0, budget=None)
    w_cb, loss_cb = train([cb])
    assert sorted(cb.pages) == [0, 1, 2]
    assert loss_cb == loss_plain
    for a, b in zip(w_plain, w_cb):
        np.testing.assert_array_equal(a, b)


def test_tensorboard_scalars(tmp_path, digits):
    """tensorboard=True writes the layer metrics as scalars that TensorBoard reads back."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    model = lenet5_digits(seed=5)
    cb = FlowCallback((x_te[:100], y_te[:100]), log_dir=tmp_path / "r", epochs=[0, 1], lrp=False, k=8,
                      tensorboard=True, verbose=0)
    model.fit(x_tr[:200], y_tr[:200], epochs=1, verbose=0, callbacks=[cb])
    acc = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    acc.Reload()
    tag = "flowcallback/activations/dense10/nmi_classes"
    events = acc.Scalars(tag)
    assert [e.step for e in events] == [0, 1]
    table = load_run(tmp_path / "r").layer_metrics().set_index(["epoch", "column"])
    expected = table.loc[(1, "dense10"), "nmi_classes"]
    assert events[1].value == pytest.approx(expected, rel=1e-6)


def test_resuming_appends_and_another_model_is_refused(tmp_path, digits):
    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    data = (x_te[:90], y_te[:90])
    model = lenet5_digits(seed=4)
    model.fit(x_tr[:200], y_tr[:200], epochs=2, verbose=0,
              callbacks=[FlowCallback(data, log_dir=tmp_path / "r", lrp=False, k=8, verbose=0, budget=None)])
    first = load_run(tmp_path / "r").epoch(2)
    # continued training with initial_epoch: epochs 3 and 4 are appended, 0..2 untouched
    model.fit(x_tr[:200], y_tr[:200], epochs=4, initial_epoch=2, verbose=0,
              callbacks=[FlowCallback(data, log_dir=tmp_path / "r", lrp=False, k=8, verbose=0, budget=None)])
    run = load_run(tmp_path / "r")
    assert run.epochs == [0, 1, 2, 3, 4]
    assert run.epoch(2).equals(first)
    # another architecture in the same log_dir is refused with a clear message
    import tensorflow as tf

    other = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(10, activation="softmax")])
    other.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="log_dir: .* holds a run of a different model"):
        other.fit(x_tr[:50], y_tr[:50], epochs=1, verbose=0,
                  callbacks=[FlowCallback(data, log_dir=tmp_path / "r", lrp=False, k=8, verbose=0, budget=None)])
    assert load_run(tmp_path / "r").epochs == [0, 1, 2, 3, 4]


def test_no_worker_outlives_a_failing_fit(tmp_path, digits):
    """fit raising inside training (Keras then skips on_train_end) leaves no LRP worker behind."""
    import threading

    from flowcallback import FlowCallback
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits

    class Boom(Exception):
        pass

    class Fail(tf_callback_base()):
        def on_epoch_end(self, epoch, logs=None):
            raise Boom()

    model = lenet5_digits(seed=6)
    cb = FlowCallback((x_te[:60], y_te[:60]), log_dir=tmp_path / "r", epochs=[0], k=5, verbose=0)
    with pytest.raises(Boom):
        model.fit(x_tr[:100], y_tr[:100], epochs=2, verbose=0, callbacks=[cb, Fail()])
    # fit did not call on_train_end; the fit guard noticed and stopped the worker, although the
    # callback is still referenced (no reliance on garbage collection)
    import time

    deadline = time.time() + 30
    while cb.lrp_engine is not None and time.time() < deadline:
        time.sleep(0.05)
    assert cb.lrp_engine is None
    assert not [t for t in threading.enumerate() if t.name.startswith("flowcallback")]


def tf_callback_base():
    import tensorflow as tf

    return tf.keras.callbacks.Callback


@pytest.mark.both
@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="per-thread niceness is Linux's")
@pytest.mark.parametrize("nice", [7, 0])
def test_background_work_runs_at_lower_priority_than_training(tmp_path, digits, nice):
    """The snapshot's threads and its LRP worker get `nice` more than the training thread; the
    training thread and the process keep theirs."""
    import threading

    import psutil
    import tensorflow as tf

    from flowcallback import FlowCallback
    from flowcallback.core._priority import thread_nice
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    base = thread_nice()
    seen = {}

    class Probe(tf.keras.callbacks.Callback):
        def __init__(self, fc):
            super().__init__()
            self.fc = fc

        def on_train_end(self, logs=None):  # runs before FlowCallback's, which closes everything
            self.fc.flush()
            seen["threads"] = {t.name: thread_nice(t.native_id) for t in threading.enumerate()
                               if t.name.startswith("flowcallback") and t.name != "flowcallback-fit-guard"}
            pid = getattr(self.fc.lrp_engine, "pid", None)  # iNNvestigate's worker process
            seen["worker"] = psutil.Process(pid).nice() if pid is not None else None
            seen["main"] = thread_nice()

    fc = FlowCallback((x_te[:150], y_te[:150]), log_dir=tmp_path / "run", epochs=[1], nice=nice, verbose=0)
    model = lenet5_digits()
    model.fit(x_tr[:300], y_tr[:300], epochs=1, batch_size=64, verbose=0, callbacks=[Probe(fc), fc])
    assert any(n.startswith("flowcallback-layer") for n in seen["threads"])  # the pool did run
    assert any(not n.startswith("flowcallback-layer") for n in seen["threads"])  # and the coordinator
    assert set(seen["threads"].values()) == {min(19, base + nice)}
    # the native engine runs in the coordinator thread (checked above); iNNvestigate's in a process
    assert seen["worker"] in ((None,) if fc.lrp_backend == "native" else (min(19, base + nice),))
    assert seen["main"] == base == thread_nice()
