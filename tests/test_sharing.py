"""A run directory shared over time and between processes (issue 20 items 3, 4, 5, 18).

One writer at a time (a lock that a killed holder does not leave behind), resuming as users resume
(the same model rebuilt, recompiled, reloaded), another held-out set noticed, and files that
flowcallback did not write left alone.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from flowcallback import FlowCallback, RunInUseError, load_run
from flowcallback import _validation as checks
from flowcallback._plan import fingerprint

pytestmark = [pytest.mark.slow, pytest.mark.both]


def dense_model(units=16, lr=1e-2):
    """Default layer names: Keras numbers them per process, so a rebuild gets other names."""
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(units, activation="relu"),
                                 tf.keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=tf.keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def data(digits):
    (x_tr, y_tr), (x_te, y_te) = digits
    return x_tr[:200], y_tr[:200], x_te[:120], y_te[:120]


def fit(model, data, log_dir, epochs, initial_epoch=0, x_val=None):
    x_tr, y_tr, x_te, y_te = data
    cb = FlowCallback((x_te if x_val is None else x_val, y_te), log_dir=log_dir, lrp=False, k=8, verbose=0,
                      projection=None, budget=None)
    model.fit(x_tr, y_tr, epochs=epochs, initial_epoch=initial_epoch, verbose=0, callbacks=[cb])
    return cb


# -- resuming ----------------------------------------------------------------------------------
def test_the_fingerprint_is_the_architecture_only():
    a = dense_model()
    b = dense_model(lr=0.5)  # rebuilt: other automatic names, another learning rate
    assert [layer.name for layer in a.layers] != [layer.name for layer in b.layers]
    b.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    b.layers[-1].trainable = False  # fine-tuning freezes and unfreezes layers
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(dense_model(units=17))
    c = dense_model()
    c.layers[-2].activation = tf.keras.activations.tanh  # the configuration, not only the shapes
    assert fingerprint(a) != fingerprint(c)


def test_resume_after_a_rebuild_and_recompile_keeps_the_run_and_its_names(tmp_path, data):
    """The notebook pattern: fit, rebuild the model (a cell re-run), load the weights, recompile
    with another learning rate, fit(initial_epoch=n) on the same log_dir."""
    log_dir = tmp_path / "r"
    first = dense_model()
    fit(first, data, log_dir, epochs=2)
    names = load_run(log_dir).epoch(2).column_names
    second = dense_model(lr=1e-3)
    second.set_weights(first.get_weights())
    assert [layer.name for layer in second.layers] != [layer.name for layer in first.layers]
    fit(second, data, log_dir, epochs=4, initial_epoch=2)
    run = load_run(log_dir)
    assert run.epochs == [0, 1, 2, 3, 4]
    assert {run.epoch(e).column_names for e in run.epochs} == {names}  # one set of columns across the run
    assert [layer["name"] for layer in run.info["layers"]] == list(names[:-2])
    assert any("rebuilt with other layer names" in n for n in run.epoch(3).notes)
    assert not any("rebuilt" in n for n in run.epoch(2).notes)
    assert len(run.compare(2, 3).layers) == len(names) - 2  # the layers are matched across the resume
    assert run.errors() == {}


def test_another_architecture_is_still_refused(tmp_path, data):
    log_dir = tmp_path / "r"
    fit(dense_model(), data, log_dir, epochs=1)
    with pytest.raises(ValueError, match="holds a run of a different model"):
        fit(dense_model(units=32), data, log_dir, epochs=1)
    assert load_run(log_dir).epochs == [0, 1]


def test_resume_on_another_held_out_set_is_noticed(tmp_path, data, capsys):
    """Other inputs with the same labels: accepted as a new held-out set, said on the page, and
    comparing across the change is refused with the reason."""
    from flowcallback.cli import main

    x_tr, y_tr, x_te, y_te = data
    log_dir = tmp_path / "r"
    model = dense_model()
    fit(model, data, log_dir, epochs=1)
    other = np.ascontiguousarray(x_te[::-1])  # the same images, in another order: other samples per label
    fit(model, data, log_dir, epochs=2, initial_epoch=1, x_val=other)
    run = load_run(log_dir)
    assert run.epochs == [0, 1, 2]
    assert run.epoch(0).held_out == run.epoch(1).held_out != run.epoch(2).held_out
    assert any("held-out set is not the one" in n for n in run.epoch(2).notes)
    assert run.info["config"]["held_out_digest"] == run.epoch(2).held_out
    assert len(run.compare(0, 1).layers) > 0
    with pytest.raises(ValueError, match="different held-out sets"):
        run.compare(1, 2)
    assert main(["compare", str(log_dir), "1", "2"]) == 2
    capsys.readouterr()
    assert main(["compare", str(log_dir), "1", "7"]) == 2  # a KeyError's message, as text, not as its repr
    assert capsys.readouterr().err.startswith("flowcallback compare: error: epoch 7 is not in this run; its epochs")
    page = (log_dir / "epoch_002.html").read_text()
    assert "held-out set is not the one" in page


# -- files flowcallback did not write ----------------------------------------------------------
@pytest.mark.parametrize("name", ["index.html", "epoch_001.html"])
def test_a_directory_with_foreign_pages_is_refused_and_left_alone(tmp_path, data, name):
    log_dir = tmp_path / "site"
    log_dir.mkdir()
    (log_dir / name).write_text("<p>my own page</p>")
    with pytest.raises(ValueError, match=rf"^log_dir: .* holds {name}, which is not from a flowcallback run"):
        fit(dense_model(), data, log_dir, epochs=1)
    assert sorted(os.listdir(log_dir)) == [name]
    assert (log_dir / name).read_text() == "<p>my own page</p>"


# -- two processes -----------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    import tensorflow as tf
    from flowcallback import FlowCallback
    from flowcallback.demo import load_digits_split

    class Hold(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print("holding", flush=True)
            time.sleep(600)

    (x_tr, y_tr), (x_te, y_te) = load_digits_split()
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(8, activation="relu"),
                                 tf.keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = FlowCallback((x_te[:120], y_te[:120]), log_dir=sys.argv[1], lrp=False, k=8, verbose=0, background=False,
                  budget=None)
    model.fit(x_tr[:100], y_tr[:100], epochs=5, verbose=0, callbacks=[cb, Hold()])
""")


def test_a_second_writer_is_refused_while_the_first_lives_and_not_after(tmp_path, data):
    log_dir = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(log_dir)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while holder.stdout.readline().strip() != "holding":
            assert holder.poll() is None and time.time() < deadline, "the first writer never started"
        written = sorted(p.name for p in (log_dir / "graphs").iterdir())
        for model in (dense_model(), dense_model(units=8)):  # another model, and the same architecture
            with pytest.raises(RunInUseError, match=rf"is being written by process {holder.pid} on "):
                fit(model, data, log_dir, epochs=1)
        assert sorted(p.name for p in (log_dir / "graphs").iterdir()) == written  # nothing replaced
        assert not (log_dir / "errors").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder was killed: its lock went with it, and the run resumes
    cb = fit(dense_model(units=8), data, log_dir, epochs=3, initial_epoch=1)
    assert sorted(cb.pages) == [2, 3]
    assert load_run(log_dir).epochs == [0, 1, 2, 3]


def test_a_fit_that_would_overwrite_an_earlier_trainings_epochs_is_refused_before_it_trains(tmp_path, data):
    """A notebook cell run again with a fresh model, or fit called again without initial_epoch: the
    fit is refused at its first epoch, before it trains, naming the epochs and what to do; the run's
    files stay as they were, and the run's lock is released (the same log_dir resumes at once)."""
    x_tr, y_tr, x_te, y_te = data
    log_dir = tmp_path / "r"
    model = dense_model()
    first = fit(model, data, log_dir, epochs=3)
    before = {p.name: p.stat().st_mtime_ns for p in (log_dir / "graphs").iterdir()}
    run_json = (log_dir / "run.json").read_bytes()
    # a new training; fit again with a new callback (a notebook's cells); the same callback with a new
    # model; from epoch 1 (the same callback fitting the same model again continues: the next test)
    for again, initial, cb in ((dense_model(), 0, None), (model, 0, None), (dense_model(), 0, first),
                               (model, 1, None)):
        weights = [w.copy() for w in again.get_weights()]
        cb = cb or FlowCallback((x_te, y_te), log_dir=log_dir, lrp=False, k=8, verbose=0, projection=None)
        clash = initial + (initial > 0)  # a resumed fit's first snapshot is the epoch after initial_epoch
        with pytest.raises(ValueError, match=rf"^log_dir: {log_dir} holds epochs 0\u20133 of an earlier training, and "
                           rf"this fit \(from initial_epoch={initial}\) would overwrite epoch\(s\) {clash}, "
                           r".*use a new log_dir \(or delete this one\); to continue that training, fit the "
                           r"same model with initial_epoch=3 and epochs > 3\.$"):
            again.fit(x_tr, y_tr, epochs=4, initial_epoch=initial, verbose=0, callbacks=[cb])
        assert all(np.array_equal(a, b) for a, b in zip(weights, again.get_weights()))  # it did not train
        assert {p.name: p.stat().st_mtime_ns for p in (log_dir / "graphs").iterdir()} == before
        assert load_run(log_dir).epochs == [0, 1, 2, 3] and (log_dir / "run.json").read_bytes() == run_json
    # an explicit list of epochs that spares the run's: accepted; continuing: appended
    cb = FlowCallback((x_te, y_te), log_dir=log_dir, lrp=False, k=8, verbose=0, projection=None, epochs=[5])
    model.fit(x_tr, y_tr, epochs=5, initial_epoch=0, verbose=0, callbacks=[cb])
    fit(model, data, log_dir, epochs=6, initial_epoch=5)
    assert load_run(log_dir).epochs == [0, 1, 2, 3, 5, 6]


def test_the_same_callback_fitting_the_same_model_again_continues_the_run(tmp_path, data, capsys):
    """keras.io's fine-tuning recipe: train the head, unfreeze the base, recompile, and call fit
    again without initial_epoch. With the same callback it was refused ("would overwrite epoch(s)
    0, 1, 2"), which stopped the fine-tuning; the second fit now continues the run: its epochs are
    the run's next ones, its untrained state (the first fit's last epoch) is not taken twice."""
    x_tr, y_tr, x_te, y_te = data
    log_dir = tmp_path / "r"
    model = dense_model()
    cb = FlowCallback((x_te, y_te), log_dir=log_dir, lrp=False, k=8, verbose=1, projection=None, budget=None)
    model.fit(x_tr, y_tr, epochs=2, verbose=0, callbacks=[cb])
    def graph_files():
        return {q.relative_to(log_dir): q.read_bytes() for q in (log_dir / "graphs").rglob("*") if q.is_file()}

    first_epochs = graph_files()
    assert len(first_epochs) > 3
    model.layers[0].trainable = False  # a change of what trains, and a recompile, as the recipe has
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    model.fit(x_tr, y_tr, epochs=3, verbose=0, callbacks=[cb])
    run = load_run(log_dir)
    assert run.epochs == [0, 1, 2, 3, 4, 5] and run.errors() == {}
    assert {k: v for k, v in graph_files().items() if k in first_epochs} == first_epochs  # untouched
    for epoch in run.epochs:
        assert run.epoch(epoch).n_samples == len(x_te)
    assert "this fit continues the run of this callback's previous fit of the model (epochs to 2): its epochs " \
           "are the run's epochs 3 on" in capsys.readouterr().out
    # a third fit from an explicit initial_epoch is Keras's own numbering: the run's epochs as they are
    model.fit(x_tr, y_tr, epochs=6, initial_epoch=5, verbose=0, callbacks=[cb])
    assert load_run(log_dir).epochs == [0, 1, 2, 3, 4, 5, 6]


def test_a_run_with_the_former_fingerprint_resumes_with_its_model(tmp_path, data):
    """Runs written before the architecture-only fingerprint keep resuming with their model."""
    import json

    from flowcallback._plan import former_fingerprint

    log_dir = tmp_path / "r"
    model = dense_model()
    fit(model, data, log_dir, epochs=1)
    doc = json.loads((log_dir / "run.json").read_text())
    doc["model"]["fingerprint"] = former_fingerprint(model)
    assert doc["model"]["fingerprint"] != fingerprint(model)
    (log_dir / "run.json").write_text(json.dumps(doc))
    fit(model, data, log_dir, epochs=2, initial_epoch=1)
    run = load_run(log_dir)
    assert run.epochs == [0, 1, 2] and run.info["model"]["fingerprint"] == fingerprint(model)
    with pytest.raises(ValueError, match="holds a run of a different model"):
        fit(dense_model(units=5), data, log_dir, epochs=3, initial_epoch=2)


def test_a_resume_with_other_layers_keeps_the_earlier_epochs_readable(tmp_path, data):
    x_tr, y_tr, x_te, y_te = data
    log_dir = tmp_path / "r"
    model = dense_model()
    fit(model, data, log_dir, epochs=1)
    first = load_run(log_dir).epoch(1).column_names
    cb = FlowCallback((x_te, y_te), log_dir=log_dir, lrp=False, k=8, verbose=0, projection=None,
                      layers=[model.layers[-1].name], budget=None)
    model.fit(x_tr, y_tr, epochs=2, initial_epoch=1, verbose=0, callbacks=[cb])
    run = load_run(log_dir)
    assert run.epochs == [0, 1, 2] and run.skipped == {}
    assert run.epoch(1).column_names == first and len(run.epoch(2).column_names) == 3
    assert {layer["name"] for layer in run.info["layers"]} == set(first[:-2])


def test_a_held_out_dataset_that_shuffles_at_each_pass_resumes_as_the_same_set(tmp_path, data):
    """image_dataset_from_directory shuffles by default, anew at each pass: a resumed run read the
    same images in another order, took them for another set (cluster ids started afresh) and
    refused to compare its epochs with the earlier ones (found by an outside probe). Such a set is
    put in an order of its own contents, the same at every reading."""
    x_tr, y_tr, x_te, y_te = data
    val_ds = tf.data.Dataset.from_tensor_slices((x_te, y_te)).shuffle(len(x_te), seed=1).batch(32)
    log_dir = tmp_path / "r"
    model = dense_model()
    settings = dict(log_dir=log_dir, lrp=False, k=8, verbose=0, projection=None, budget=None)
    model.fit(x_tr, y_tr, epochs=1, verbose=0, callbacks=[FlowCallback(val_ds, **settings)])
    model.fit(x_tr, y_tr, epochs=2, initial_epoch=1, verbose=0, callbacks=[FlowCallback(val_ds, **settings)])
    run = load_run(log_dir)
    assert run.epochs == [0, 1, 2]
    later = run.epoch(2)
    assert not any("not the one of this run's earlier epochs" in n for n in later.notes)
    assert any("shuffles at each pass" in n for n in later.notes)
    assert run.compare(1, 2) is not None  # the same samples: epochs compare across the resume
    # the set is the same images with their labels, in an order of their own
    x1, y1 = checks.check_validation_data(val_ds)
    x2, y2 = checks.check_validation_data(val_ds)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    pairs = sorted(zip(map(bytes, x1.reshape(len(x1), -1)), y1.tolist()))
    assert pairs == sorted(zip(map(bytes, x_te.reshape(len(x_te), -1)), y_te.tolist()))


def test_a_fit_interrupted_and_caught_can_be_resumed_at_once(tmp_path, data):
    """A script that catches a KeyboardInterrupt (raised here from another callback, as Ctrl-C is)
    and at once resumes into the same log_dir with a new callback got RunInUseError: the
    interrupted fit's run was still being let go (found by an outside probe). The run held by this
    very process is waited for a few seconds."""
    x_tr, y_tr, x_te, y_te = data

    class Interrupt(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    log_dir = tmp_path / "r"
    model = dense_model()
    settings = dict(log_dir=log_dir, lrp=False, k=8, verbose=0, projection=None, budget=None)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x_tr, y_tr, epochs=4, verbose=0, callbacks=[FlowCallback((x_te, y_te), **settings), Interrupt()])
    model.fit(x_tr, y_tr, epochs=4, initial_epoch=2, verbose=0, callbacks=[FlowCallback((x_te, y_te), **settings)])
    assert load_run(log_dir).epochs[-2:] == [3, 4]
