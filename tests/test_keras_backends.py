"""Keras 3 on another backend than TensorFlow: activation flows, and LRP skipped with a note."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX (the current stack's test extras)"),
]

SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import keras
    from flowcallback import FlowCallback, load_run
    from flowcallback.demo import load_digits_split

    (x_tr, y_tr), (x_te, y_te) = load_digits_split()
    L = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(6, 3, activation="relu"), L.Flatten(),
                              L.Dense(10, activation="softmax")])
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


def test_jax_backend_gives_activation_flows_and_says_why_lrp_is_skipped(tmp_path):
    # KERAS_BACKEND is read when keras is first imported: a child process of its own
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "run")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    assert out["epochs"] == [0, 1] and out["analyses"] == [["activations"], ["activations"]]
    assert out["n"] == 120 and out["conserved"] and out["loss"] > 0
    reason = "Keras runs on the 'jax' backend and both LRP engines run on TensorFlow"
    assert any(reason in n for n in out["notes"]) and any(reason in w for w in out["warnings"])
    # the page shows the note as text (quotes escaped)
    assert reason.replace("'", "&#x27;") in (tmp_path / "run" / "epoch_001.html").read_text()
