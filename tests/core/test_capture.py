"""Capture: layer selection, activations, and the LRP worker's life cycle."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.both]


@pytest.mark.innvestigate
def test_worker_dies_with_a_killed_parent(tmp_path):
    """SIGKILL the training process: its LRP worker exits by itself within seconds."""
    script = textwrap.dedent(
        f"""
        import os, sys, time
        import numpy as np, tensorflow as tf
        from flowcallback.core.lrp.worker import LRPWorker
        m = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3, activation="softmax", name="out")])
        w = LRPWorker()
        w.start(m, ["out"], np.random.rand(20, 4).astype("float32"))
        open({str(tmp_path / "pid")!r}, "w").write(str(w.pid))
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    pid_file = tmp_path / "pid"
    for _ in range(120):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.5)
    worker = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(40):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.25)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the LRP worker outlived its killed parent")


def test_select_layers_default_and_errors():
    import tensorflow as tf

    from flowcallback.core.capture import select_layers

    m = tf.keras.Sequential([
        tf.keras.Input((6, 6, 1)), tf.keras.layers.Conv2D(2, 3, name="c"), tf.keras.layers.Dropout(0.5, name="drop"),
        tf.keras.layers.Flatten(name="f"), tf.keras.layers.Dense(3, activation="softmax", name="out"),
    ])
    assert select_layers(m) == ["c", "out"]
    assert select_layers(m, ["out", "c"]) == ["c", "out"]  # model order, whatever the order given
    with pytest.raises(ValueError, match="layers: unknown layer name"):
        select_layers(m, ["nope"])
    with pytest.raises(ValueError, match="once"):
        select_layers(m, ["c", "c"])


def test_naming_a_nested_model_says_which_of_its_layers_is_its_output():
    """A transfer-learning base is a nested model: its layers are columns by their own names (found by
    an outside probe: layers=["backbone"] was an unknown name, the list of layers not saying why)."""
    import tensorflow as tf

    from flowcallback.core.capture import select_layers

    base = tf.keras.Sequential([tf.keras.Input((6, 6, 1)), tf.keras.layers.Conv2D(2, 3),
                                tf.keras.layers.MaxPooling2D()], name="backbone")
    inputs = tf.keras.Input((6, 6, 1))
    h = tf.keras.layers.GlobalAveragePooling2D()(base(inputs))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax", name="head")(h))
    pool = base.layers[-1].name
    with pytest.raises(ValueError, match=rf"^layers: unknown layer name\(s\) \['backbone'\]; 'backbone' is a nested "
                                         rf"model .* its output is its layer '{pool}'; the model's layers are"):
        select_layers(model, ["backbone", "head"])
    assert select_layers(model, [pool, "head"]) == [pool, "head"]  # what the message says works


def test_activations_are_the_layer_outputs_embedded():
    import tensorflow as tf

    from flowcallback.core.capture import capture_activations
    from flowcallback.core.embed import embed

    rng = np.random.default_rng(0)
    x = rng.random((50, 5)).astype("float32")
    m = tf.keras.Sequential([tf.keras.Input((5,)), tf.keras.layers.Dense(4, activation="relu", name="h"),
                             tf.keras.layers.Dense(3, activation="softmax", name="out")])
    emb, out = capture_activations(m, x, ["h", "out"], batch_size=16)
    h = tf.keras.Model(m.inputs, m.get_layer("h").output)(x).numpy()
    np.testing.assert_allclose(emb["h"], embed(h), atol=1e-6)
    np.testing.assert_allclose(out, m(x).numpy(), atol=1e-6)


def test_a_model_just_above_the_cap_keeps_its_blocks_and_fills_the_columns():
    """keras.io's "Image classification from scratch" network has 36 eligible layers but 8 block
    outputs: an outside probe found its default page showing 7 columns. Other layers, spread over
    the depth, fill the columns up to the cap; every block output stays."""
    import tensorflow as tf

    from flowcallback.core import layergraph
    from flowcallback.core.capture import MAX_COLUMNS, block_outputs, choose_columns

    layers = tf.keras.layers
    inputs = tf.keras.Input((32, 32, 3))
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same")(x)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    previous = x
    for size in [16, 32, 48]:
        x = layers.Activation("relu")(x)
        x = layers.BatchNormalization()(layers.SeparableConv2D(size, 3, padding="same")(x))
        x = layers.Activation("relu")(x)
        x = layers.BatchNormalization()(layers.SeparableConv2D(size, 3, padding="same")(x))
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.add([x, layers.Conv2D(size, 1, strides=2, padding="same")(previous)])
        previous = x
    x = layers.Activation("relu")(layers.BatchNormalization()(layers.SeparableConv2D(64, 3, padding="same")(x)))
    x = layers.Dropout(0.25)(layers.GlobalAveragePooling2D()(x))
    model = tf.keras.Model(inputs, layers.Dense(1)(x))
    choice = choose_columns(model)
    assert choice.eligible == 36 and choice.rule == "block outputs" and len(choice.names) == MAX_COLUMNS
    all_layers = list(choose_columns(model, "all").names)
    blocks = block_outputs(layergraph.trace(model), all_layers)
    assert len(blocks) == 8 and set(blocks) <= set(choice.names)
    assert list(choice.names) == [n for n in all_layers if n in choice.names]  # in model order
    assert choice.description.startswith("24 of 36 layers: the 8 block outputs")


def _residual_with_plus():
    """A residual block as Keras 3 tutorials write it: ``x + residual`` is an operation, not a layer."""
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3"):
        pytest.skip("Keras 2 makes a TFOpLambda layer of '+': a layer column already")
    inputs = keras.Input((5,))
    h = keras.layers.Dense(4, activation="relu")(inputs)
    r = keras.layers.Dense(4, activation="relu")(h)
    joined = h + r
    scaled = joined * 2.0  # an operation with one tensor: not a column by default
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(scaled)), joined


def test_a_join_written_with_plus_is_a_column_in_model_order():
    """Found on ConvNeXt (Keras 3): its 18 residual blocks end in ``inputs + x``, an ``Add``
    operation, and no block output was a column; ``layers=`` naming one dropped it silently."""
    from flowcallback.core.capture import capture_activations, choose_columns, operation_notes
    from flowcallback.core.embed import embed

    model, joined = _residual_with_plus()
    dense, dense_1, dense_2 = (layer.name for layer in model.layers[1:])
    add = joined._keras_history[0].name
    choice = choose_columns(model)
    assert choice.names == (dense, dense_1, add, dense_2) and choice.eligible == 4
    assert choose_columns(model, [dense_2, add]).names == (add, dense_2)  # kept, in model order
    mul = [op.name for op in model.operations if type(op).__name__ == "Multiply"][0]
    assert choose_columns(model, "all").names == (dense, dense_1, add, dense_2)
    assert choose_columns(model, [mul]).names == (mul,)  # any operation, when named
    assert operation_notes(model, choice.names) == {add: f"Keras operation Add (no layer) of {dense}, {dense_1}"}

    x = np.random.default_rng(0).random((40, 5)).astype("float32")
    emb, _ = capture_activations(model, x, [add], batch_size=16)
    import keras

    np.testing.assert_allclose(emb[add], embed(keras.Model(model.inputs[0], joined)(x).numpy()), atol=1e-6)


def test_a_join_column_gets_lrp_flows_and_its_note(tmp_path):
    from flowcallback import load_run, snapshot

    model, joined = _residual_with_plus()
    add = joined._keras_history[0].name
    rng = np.random.default_rng(1)
    x, y = rng.random((60, 5)).astype("float32"), rng.integers(0, 3, 60)
    snapshot(model, (x, y), tmp_path / "run", verbose=0, k=5)
    import flowcallback

    maps = flowcallback.relevance(model, x)  # the default layers: the callback's columns, joins included
    assert list(maps) == [c.name for c in load_run(tmp_path / "run").epoch(0, "lrp").columns if c.kind == "layer"]
    run = load_run(tmp_path / "run")
    for analysis in ("activations", "lrp"):
        g = run.epoch(0, analysis)
        column = [c for c in g.columns if c.name == add]
        assert column and column[0].layer_type == "Add" and column[0].note.startswith("Keras operation Add")
        sums = g.flows.groupby("source_column")["count"].sum()
        assert (sums == 60).all() and len(sums) == len(g.columns) - 1


@pytest.mark.innvestigate
@pytest.mark.parametrize("analyzer", ["lrp.epsilon", "lrp.alpha_1_beta_0"])
def test_worker_reuses_its_analyzer_with_each_snapshots_weights(analyzer):
    # The worker builds iNNvestigate's analyzer once and only loads new weights at each snapshot.
    # Its relevance for new weights must equal that of an analyzer built for those weights.
    import tensorflow as tf

    from flowcallback.core.lrp.worker import LRPWorker

    rng = np.random.default_rng(0)
    x = rng.random((40, 6)).astype("float32")
    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([tf.keras.Input((6,)), tf.keras.layers.Dense(8, activation="relu", name="h"),
                             tf.keras.layers.Dense(3, activation="softmax", name="out")])
    first = m.get_weights()
    second = [w + rng.normal(scale=0.5, size=w.shape).astype(w.dtype) for w in first]
    opts = {"reduce": None}
    reused, fresh = LRPWorker(analyzer), LRPWorker(analyzer)
    try:
        reused.start(m, ["h", "out"], x, batch_size=16, embed_options=opts)
        a = reused.analyze(first).embeddings
        b = reused.analyze(second).embeddings
        m.set_weights(second)
        fresh.start(m, ["h", "out"], x, batch_size=16, embed_options=opts)
        c = fresh.analyze(second).embeddings
    finally:
        reused.close()
        fresh.close()
    for name in ("h", "out"):
        np.testing.assert_allclose(b[name], c[name], atol=1e-5)
        assert not np.allclose(a[name], b[name], atol=1e-3)  # the weights really changed the relevance
