"""The native LRP engine against iNNvestigate's own reference relevances, on any stack.

The references are iNNvestigate's layer tests (albermax/innvestigate v2.1.2,
``tests/references/layer/*.hdf5``, BSD licence), converted once to plain ``.npz`` files in
``tests/data/innvestigate_references/`` (see the README there). Each file holds, for one analyzer,
six one-layer models ``Input(10, 10, 3) -> layer -> Flatten`` with their stored weights and outputs,
and the attribution iNNvestigate's ``analyze(x)`` gave on 8 stored inputs: the relevance that reaches
the input, which the native engine reports for the input layer when that layer is named.

Weights and inputs are stored, so the models are the same under tf.keras 2 and Keras 3 and the
test runs on both stacks, without iNNvestigate. Tolerance, per model and batch of 8:
max |native - reference| <= 1e-5 * max |reference| (measured: <= 4.1e-7 on TF 2.14 and TF 2.21,
the same as iNNvestigate 2.1.2 itself against these files).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
layers = tf.keras.layers

from flowcallback.core.lrp.native import NativeLRP  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.both]

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "innvestigate_references")
RTOL = 1e-5

# upstream reference file (its analyzer name in tests/analyzer/test_reference_layer.py) -> native analyzer
ANALYZERS = {
    "LRPZ": ("lrp.z", {}),
    "LRPZ_Flat_input_layer_rule": ("lrp.z", {"input_layer_rule": "Flat"}),
    "LRPZ_boxed_input_layer_rule": ("lrp.z", {"input_layer_rule": (-10, 10)}),
    "LRPZPlus": ("lrp.z_plus", {}),
    "LRPZPlusFast": ("lrp.z_plus_fast", {}),
    "LRPAlpha1Beta0": ("lrp.alpha_1_beta_0", {}),
    "LRPAlpha1Beta0IgnoreBias": ("lrp.alpha_1_beta_0_IB", {}),
    "LRPAlpha2Beta1": ("lrp.alpha_2_beta_1", {}),
    "LRPAlpha2Beta1IgnoreBias": ("lrp.alpha_2_beta_1_IB", {}),
    "LRPEpsilon": ("lrp.epsilon", {}),
    "LRPEpsilonIgnoreBias": ("lrp.epsilon", {"bias": False}),
    "LRPFlat": ("lrp.flat", {}),
    "LRPWSquare": ("lrp.w_square", {}),
    "LRPSequentialPresetA": ("lrp.sequential_preset_a", {}),
    "LRPSequentialPresetB": ("lrp.sequential_preset_b", {}),
    "LRPSequentialPresetAFlat": ("lrp.sequential_preset_a_flat", {}),
    "LRPSequentialPresetBFlat": ("lrp.sequential_preset_b_flat", {}),
}

INPUT_SHAPE = (10, 10, 3)
# the upstream test's layers_2d
LAYERS = {
    "Dense": lambda: layers.Dense(5),
    "Dense_relu": lambda: layers.Dense(5, activation="relu"),
    "Conv2D": lambda: layers.Conv2D(5, (3, 3)),
    "Conv2D_relu": lambda: layers.Conv2D(5, (3, 3), activation="relu"),
    "AveragePooling2D": lambda: layers.AveragePooling2D((2, 2)),
    "MaxPooling2D": lambda: layers.MaxPooling2D((2, 2)),
}


def _load(name):
    with np.load(os.path.join(DATA, name + ".npz"), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def x():
    # stored as float64; the models compute in float32 (the upstream test's model.predict casts too)
    return _load("input")["x"].astype("float32")


def _model(layer_name, ref):
    inp = tf.keras.Input(shape=INPUT_SHAPE, name="ref_input")
    out = layers.Flatten(name="ref_flatten")(LAYERS[layer_name]()(inp))
    model = tf.keras.Model(inp, out, name=layer_name)
    n = sum(1 for k in ref if k.startswith(layer_name + ".w"))
    model.set_weights([ref[f"{layer_name}.w{i}"] for i in range(n)])
    return model


def _rel(a, ref):
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def test_reference_files():
    """Every reference file is there, numeric, and holds the six models."""
    assert set(ANALYZERS) | {"input"} <= {f[:-4] for f in os.listdir(DATA) if f.endswith(".npz")}
    for name in ANALYZERS:
        ref = _load(name)
        for layer_name in LAYERS:
            assert ref[f"{layer_name}.attribution"].shape == (8,) + INPUT_SHAPE
            assert np.isfinite(ref[f"{layer_name}.attribution"]).all()
            assert np.abs(ref[f"{layer_name}.attribution"]).max() > 0


@pytest.mark.parametrize("name", list(ANALYZERS))
def test_native_equals_innvestigate_reference(name, x):
    analyzer, kwargs = ANALYZERS[name]
    ref = _load(name)
    errors = []
    for layer_name in LAYERS:
        model = _model(layer_name, ref)
        # the same model as upstream: its output equals the stored one
        y = np.asarray(model(x))
        assert _rel(y, ref[f"{layer_name}.output"]) <= RTOL, (name, layer_name, "output")
        engine = NativeLRP(model, ["ref_input"], analyzer=analyzer, analyzer_kwargs=kwargs)
        assert engine.note == ""
        r = engine.relevance(x)["ref_input"]
        a_ref = ref[f"{layer_name}.attribution"]
        assert r.shape == a_ref.shape
        d = _rel(r, a_ref)
        if not d <= RTOL:
            errors.append(f"{layer_name}: max|diff|/max|ref| = {d:.2e}")
    assert not errors, f"{name} ({analyzer}, {kwargs}): " + "; ".join(errors)
