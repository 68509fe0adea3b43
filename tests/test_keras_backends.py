"""Other Kerases than the default: Keras 3 on JAX (activation flows, LRP skipped with a note), and
Keras 2 as ``tf_keras`` under ``TF_USE_LEGACY_KERAS=1`` (everything, with the native engine)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason="needs JAX (the current stack's test extras)")
needs_tf_keras = pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None,
                                    reason="needs tf_keras (the current stack's test extras)")

SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import keras
    from flowcallback import FlowCallback, load_run
    from flowcallback.demo import load_digits_split

    (x_tr, y_tr), (x_te, y_te) = load_digits_split()
    layers = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(6, 3, activation="relu"), layers.Flatten(),
                              layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x_tr[:300], y_tr[:300], epochs=1, verbose=0,
                  callbacks=[FlowCallback((x_te[:120], y_te[:120]), log_dir=sys.argv[1], k=8, verbose=0)])
    run = load_run(sys.argv[1])
    g = run.epoch(1)
    print(json.dumps({"backend": keras.backend.backend(), "epochs": run.epochs,
                      "analyses": [run.analyses(e) for e in run.epochs], "notes": list(g.notes),
                      "loss": g.metrics["loss"], "n": g.n_samples,
                      "conserved": bool((g.flows.groupby("source_column")["count"].sum() == g.n_samples).all()),
                      "warnings": [str(w.message) for w in caught if "FlowCallback" in str(w.message)]}))
""")


def _run_script_in_child(tmp_path, script, **env):
    # KERAS_BACKEND and TF_USE_LEGACY_KERAS are read at the first import: a child process of its own
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_jax
def test_jax_backend_gives_activation_flows_and_says_why_lrp_is_skipped(tmp_path):
    out = _run_script_in_child(tmp_path, SCRIPT, KERAS_BACKEND="jax")
    assert out["backend"] == "jax"
    assert out["epochs"] == [0, 1] and out["analyses"] == [["activations"], ["activations"]]
    assert out["n"] == 120 and out["conserved"] and out["loss"] > 0
    reason = "Keras runs on the 'jax' backend and both LRP engines run on TensorFlow"
    assert any(reason in n for n in out["notes"]) and any(reason in w for w in out["warnings"])
    # the page shows the note as text (quotes escaped)
    assert reason.replace("'", "&#x27;") in (tmp_path / "run" / "epoch_001.html").read_text()


LEGACY = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    from flowcallback import FlowCallback, load_run
    from flowcallback.demo import load_digits_split

    (x_tr, y_tr), (x_te, y_te) = load_digits_split()
    layers = tf.keras.layers  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1
    inp = layers.Input((8, 8, 1))
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = layers.Add()([h, layers.Conv2D(8, 3, padding="same")(h)])
    model = tf.keras.Model(inp, layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(h)))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_tr[:300], y_tr[:300], epochs=1, verbose=0,
              callbacks=[FlowCallback((x_te[:120], y_te[:120]), log_dir=sys.argv[1], k=8, verbose=0)])
    run = load_run(sys.argv[1])
    g = run.epoch(1, "lrp")
    print(json.dumps({"keras": type(model).__module__.split(".")[0], "epochs": run.epochs,
                      "analyses": [run.analyses(e) for e in run.epochs], "engine": g.metrics["lrp_engine"],
                      "conserved": bool((g.flows.groupby("source_column")["count"].sum() == g.n_samples).all())}))
""")


@needs_tf_keras
def test_tf_keras_under_legacy_switch_gets_both_analyses_from_the_native_engine(tmp_path):
    out = _run_script_in_child(tmp_path, LEGACY, TF_USE_LEGACY_KERAS="1")
    assert out["keras"] == "tf_keras"
    assert out["epochs"] == [0, 1] and out["analyses"] == [["activations", "lrp"]] * 2
    assert out["engine"].startswith("flowcallback native LRP") and out["conserved"]


MIXED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from flowcallback.core.lrp.native import NativeLRP

    keras = tf.keras
    layers = keras.layers

    def cnn():
        return keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(6, 3, activation="relu"),
                                 layers.BatchNormalization(), layers.Flatten(), layers.Dense(16, activation="relu"),
                                 layers.Dense(10),
                                 layers.Activation("softmax", dtype="float32")])

    def transformer():  # attention, a residual Add, LayerNormalization, pooling over the tokens
        inputs = keras.Input((10,))
        h = layers.Embedding(50, 16)(inputs)
        h = layers.LayerNormalization()(layers.Add()([h, layers.MultiHeadAttention(2, 8)(h, h)]))
        h = layers.GlobalAveragePooling1D()(h)
        return keras.Model(inputs, layers.Dense(10, activation="softmax", dtype="float32")(layers.Dense(16)(h)))

    rng = np.random.default_rng(0)
    xs = {"cnn": rng.random((32, 8, 8, 1)).astype("float32"), "transformer": rng.integers(0, 50, (32, 10))}
    out = {}
    for build in (cnn, transformer):
        keras.mixed_precision.set_global_policy("float32")
        keras.utils.set_random_seed(0)  # the same weights at every run: unseeded, one run in a few went above 0.1
        reference = build()
        keras.mixed_precision.set_global_policy("mixed_float16")  # this child process only
        mixed = build()
        mixed.set_weights(reference.get_weights())
        x = xs[build.__name__]
        for name, model in (("float32", reference), ("mixed", mixed)):
            names = [model.layers[1].name, model.layers[-2].name]  # the first layer after the input, the logits
            # epsilon 0.01: float16 rounding of pre-activations near zero is not magnified without bound
            maps = NativeLRP(model, names, "lrp.epsilon", {"epsilon": 0.01}).relevance(x)
            out[build.__name__ + " " + name] = [maps[n].astype("float64").tolist() for n in names]
            out[build.__name__ + " " + name + " predictions"] = np.argmax(np.asarray(model(x)), axis=1).tolist()
        out[build.__name__ + " dtype"] = str(mixed.layers[1].compute_dtype)
    print(json.dumps(out))
""")


@pytest.mark.both
@pytest.mark.parametrize("model", ["cnn", "transformer"])
def test_native_lrp_under_a_mixed_precision_policy_matches_float32(tmp_path, model):
    # GPU users train with mixed_float16: layers compute in float16 while the weights stay float32.
    # The rules that recompute a layer (pooling, Add, attention) met float16 outputs with float32
    # relevance and LRP was skipped for the whole model ("x and y must have the same dtype").
    out = _run_script_in_child(tmp_path, MIXED)
    assert out[model + " dtype"] == "float16"
    # relevance is that of the predicted class: compare the samples whose float16 forward pass
    # predicts the same class as the float32 one
    same = np.equal(out[model + " float32 predictions"], out[model + " mixed predictions"])
    assert same.mean() >= 0.8
    for i, (ref, got) in enumerate(zip(out[model + " float32"], out[model + " mixed"])):
        ref, got = np.asarray(ref)[same], np.asarray(got)[same]
        assert got.shape == ref.shape and np.isfinite(got).all()
        # float16 forward values, and epsilon's divisions by small pre-activations magnify their
        # rounding: agreement as a whole (relative L2 error), not entry by entry
        error = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert error <= 0.1, (i, error)


ACCEL = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    from sklearn.datasets import load_digits
    from sklearn.metrics import adjusted_rand_score
    from flowcallback.core import _accel, cluster, knn
    from flowcallback.core.embed import embed

    x = np.ascontiguousarray(embed(load_digits().data), dtype=np.float32)
    aris = []
    for k in (10, 60):
        g = knn.knn_graph(x, k)
        aris.append(adjusted_rand_score(cluster.mcl(g), cluster.mcl(g, backend="keras")))
    a, b = knn.knn_graph(x, 30, backend="keras"), knn.knn_graph(x, 30)
    d = _accel.device()
    print(json.dumps({"backend": keras.backend.backend(), "device": d.name, "usable": d.usable, "aris": aris,
                      "same_edges": float(((a > 0).multiply(b > 0)).nnz / b.nnz),
                      "engines": cluster.choose_engines().note}))
""")


@needs_jax
def test_the_keras_ops_kernels_on_the_jax_backend_give_the_cpu_paths_graph_and_clusters(tmp_path):
    out = _run_script_in_child(tmp_path, ACCEL, KERAS_BACKEND="jax")
    assert out["backend"] == "jax" and out["device"] == "jax on the CPU" and not out["usable"]
    assert min(out["aris"]) >= 0.99 and out["same_edges"] > 0.999
    assert out["engines"] == "kNN graphs: FAISS on the CPU; MCL: the numba kernel on the CPU."
