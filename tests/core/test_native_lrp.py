"""The native eager LRP engine (flowcallback.core.lrp): its own properties, and equality with iNNvestigate.

The agreement tests run iNNvestigate 2.1.2 in child processes (it needs eager execution disabled,
never in this process), one per model computing every analyzer, and compare each layer's map:
max |native - iNNvestigate| <= 1e-4 * max |iNNvestigate| for that layer and batch. Float32 sums in
another order: on a CPU where TensorFlow uses oneDNN (AVX-512) the worst was under 1e-5, on one
where it does not (AVX2 only) up to 8e-5 (a trained BatchNormalization's linearisation).
"""
from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
layers = tf.keras.layers

from flowcallback.core.lrp import (  # noqa: E402
    ANALYZERS,
    INNVESTIGATE_ANALYZERS,
    NativeLRP,
    UnsupportedLayerError,
    innvestigate_maps,
    relevance,
)

HAS_INNVESTIGATE = importlib.util.find_spec("innvestigate") is not None
RTOL = 1e-5  # the traced pass against the eager one: the same engine
INNVESTIGATE_RTOL = 1e-4  # against iNNvestigate's graph: other kernels, other summation orders

pytestmark = [pytest.mark.slow, pytest.mark.both]


# -- models ------------------------------------------------------------------------------------------
def _randomise(model, seed=0):
    """Non-zero biases and BatchNormalization statistics, so that every term of the rules counts."""
    rng = np.random.default_rng(seed)
    ws = []
    for v in model.weights:
        w = v.numpy()
        name = v.name
        if "moving_variance" in name:
            w = rng.uniform(0.5, 2.0, w.shape)
        elif "moving_mean" in name or "beta" in name or "bias" in name:
            w = rng.normal(0.0, 0.2, w.shape)
        elif "gamma" in name:
            w = rng.uniform(0.5, 1.5, w.shape) * rng.choice([-1, 1], w.shape, p=[0.2, 0.8])
        ws.append(w.astype("float32"))
    for v, w in zip(model.weights, ws):
        v.assign(w)
    return model


def demo_cnn():
    from flowcallback.demo import lenet5_digits

    return _randomise(lenet5_digits())


def scenario1():
    """The paper's scenario-1 model: conv32, conv64, max-pool, dropout, dense128, dense10."""
    tf.keras.utils.set_random_seed(1)
    m = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)),
        layers.Conv2D(32, 3, activation="relu", name="conv32"),
        layers.Conv2D(64, 3, activation="relu", name="conv64"),
        layers.MaxPooling2D(name="pool"),
        layers.Dropout(0.25, name="drop1"),
        layers.Flatten(name="flatten"),
        layers.Dense(128, activation="relu", name="dense128"),
        layers.Dropout(0.5, name="drop2"),
        layers.Dense(10, activation="softmax", name="dense10"),
    ])
    return _randomise(m, 1)


def small_resnet():
    tf.keras.utils.set_random_seed(2)
    inp = tf.keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    r = layers.Conv2D(8, 3, padding="same", use_bias=False, name="res_a")(h)
    r = layers.BatchNormalization(name="bn_a")(r)
    r = layers.Activation("relu", name="relu_a")(r)
    r = layers.Conv2D(8, 3, padding="same", name="res_b")(r)
    r = layers.BatchNormalization(center=False, name="bn_b")(r)
    h = layers.Add(name="merge")([h, r])  # not "add": iNNvestigate names its own fork sums "add"
    h = layers.ReLU(name="relu")(h)
    h = layers.Conv2D(12, 3, strides=2, padding="same", name="down")(h)
    h = layers.BatchNormalization(scale=False, name="bn_c")(h)
    h = layers.LeakyReLU(0.1, name="leaky")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    out = layers.Dense(10, activation="softmax", name="out")(h)
    return _randomise(tf.keras.Model(inp, out, name="small_resnet"), 2)


def concat_model():
    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input((8, 8, 1), name="image")
    a = layers.Conv2D(4, 1, activation="relu", name="branch_1x1")(inp)
    b = layers.Conv2D(4, 3, padding="same", activation="relu", name="branch_3x3")(inp)
    c = layers.SeparableConv2D(4, 3, padding="same", activation="relu", name="branch_sep")(inp)
    h = layers.Concatenate(name="concat")([a, b, c])
    h = layers.AveragePooling2D(2, name="avgpool")(h)
    h = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu", name="depthwise")(h)
    h = layers.Conv2D(8, 2, dilation_rate=2, padding="same", activation="relu", name="dilated")(h)
    h = layers.GaussianNoise(0.1, name="noise")(h)
    h = layers.Flatten(name="flatten")(h)
    out = layers.Dense(10, name="logits")(h)
    out = layers.Softmax(name="softmax")(out)
    return _randomise(tf.keras.Model(inp, out, name="concat_model"), 3)


def text_conv1d():
    tf.keras.utils.set_random_seed(4)
    inp = tf.keras.Input((20,), dtype="int32", name="tokens")
    h = layers.Embedding(50, 8, name="embed")(inp)
    h = layers.Conv1D(16, 3, activation="relu", name="conv1d")(h)
    h = layers.Conv1D(16, 3, padding="causal", dilation_rate=2, activation="relu", name="causal")(h)
    h = layers.MaxPooling1D(2, name="pool1d")(h)
    h = layers.Conv1D(8, 2, strides=2, padding="same", activation="relu", name="strided")(h)
    h = layers.GlobalMaxPooling1D(name="gmp")(h)
    h = layers.Dense(16, activation="relu", name="dense16")(h)
    out = layers.Dense(4, activation="softmax", name="out")(h)
    return _randomise(tf.keras.Model(inp, out, name="text_conv1d"), 4)


def volume_model():
    """Conv3D and 3D pooling, behind a Reshape of the digits."""
    tf.keras.utils.set_random_seed(5)
    inp = tf.keras.Input((8, 8, 1), name="image")
    h = layers.Reshape((4, 4, 4, 1), name="to3d")(inp)
    h = layers.ZeroPadding3D(1, name="pad3d")(h)
    h = layers.Conv3D(4, 3, activation="relu", name="conv3d")(h)
    h = layers.MaxPooling3D(2, padding="same", name="maxpool3d")(h)
    h = layers.AveragePooling3D(1, name="avgpool3d")(h)
    h = layers.GlobalAveragePooling3D(name="gap3d")(h)
    out = layers.Dense(10, activation="softmax", name="out")(h)
    return _randomise(tf.keras.Model(inp, out, name="volume_model"), 5)


def trained_bn():
    """BatchNormalization with trained statistics (issue 18), in a residual block (conv,
    BatchNormalization, ReLU, Add) and after a Dense layer: trained for two epochs on the digits, so
    that the moving variances are far from 1 (where Pow(v, 2) and Square(v) round apart)."""
    from flowcallback.demo import load_digits_split

    (x, y), _ = load_digits_split()
    tf.keras.utils.set_random_seed(2)
    inp = tf.keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inp)
    r = layers.Conv2D(16, 3, padding="same", use_bias=False, name="res_conv")(h)
    r = layers.BatchNormalization(name="res_bn")(r)
    r = layers.ReLU(name="res_relu")(r)
    h = layers.Add(name="merge")([h, r])
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dense(32, name="dense32")(h)
    h = layers.BatchNormalization(name="dense_bn")(h)
    h = layers.Activation("relu", name="dense_relu")(h)
    model = tf.keras.Model(inp, layers.Dense(10, activation="softmax", name="out")(h), name="trained_bn")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    variances = np.concatenate([model.get_layer(n).moving_variance.numpy() for n in ("res_bn", "dense_bn")])
    assert np.abs(variances - 1).max() > 0.1, "the statistics did not move from their initial values"
    return model


MODELS = {
    "demo_cnn": demo_cnn,
    "scenario1": scenario1,
    "small_resnet": small_resnet,
    "concat": concat_model,
    "text_conv1d": text_conv1d,
    "volume": volume_model,
    "trained_bn": trained_bn,
}

#: analyzer, kwargs: the epsilon, z, z+, alpha-beta, flat and w² rules, the bounded input rule, the presets
RULE_CASES = [
    ("lrp.epsilon", {}),
    ("lrp.z", {}),
    ("lrp.z_plus", {}),
    ("lrp.alpha_1_beta_0", {}),
    ("lrp.alpha_2_beta_1", {}),
    ("lrp.flat", {}),
    ("lrp.w_square", {}),
    ("lrp.epsilon", {"input_layer_rule": [0.0, 1.0]}),
    ("lrp.sequential_preset_a", {}),
    ("lrp.sequential_preset_b", {}),
]
EXTRA_CASES = {
    "demo_cnn": [("lrp.epsilon", {"epsilon": 0.25})],
    "small_resnet": [("lrp.epsilon", {"epsilon": 0.25}), ("lrp.epsilon", {"bn_layer_fuse_mode": "two_linear"})],
    "trained_bn": [("lrp.z", {"bn_layer_fuse_mode": "two_linear"}),
                   ("lrp.alpha_1_beta_0", {"bn_layer_fuse_mode": "two_linear"})],
}


def _inputs(name, n=48):
    if name == "text_conv1d":
        return np.random.default_rng(0).integers(0, 50, size=(n, 20)).astype("int32")
    from flowcallback.demo import load_digits_split

    (_, _), (x, _) = load_digits_split()
    return x[:n]


def _layer_names(model):
    names = [t._keras_history[0].name for t in model.inputs]
    return names + [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]


# -- agreement with iNNvestigate ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def references():
    """iNNvestigate's maps for every model and case, two child processes at a time."""
    if not HAS_INNVESTIGATE:
        pytest.skip("iNNvestigate is not installed")
    built = {name: (make(), _inputs(name)) for name, make in MODELS.items()}
    cases = {name: RULE_CASES + EXTRA_CASES.get(name, []) for name in MODELS}
    # iNNvestigate 2.1.2 turns its model warnings into NotImplementedError (a ReLU or LeakyReLU layer
    # triggers one); the checks are switched off so that it analyses these models at all
    pool = ThreadPoolExecutor(2)
    futures = {name: pool.submit(innvestigate_maps, m, x, cases[name], _layer_names(m), 600, True)
               for name, (m, x) in built.items()}
    yield built, cases, futures
    pool.shutdown(wait=True)


def _all_cases():
    return [(m, i) for m in MODELS for i in range(len(RULE_CASES) + len(EXTRA_CASES.get(m, [])))]


def _case_id(m, i):
    analyzer, kw = (RULE_CASES + EXTRA_CASES.get(m, []))[i]
    return f"{m}-{analyzer}" + "".join(f"-{k}={v}" for k, v in kw.items()).replace(" ", "")


@pytest.mark.slow
@pytest.mark.innvestigate
@pytest.mark.parametrize("model_name,case", _all_cases(), ids=[_case_id(m, i) for m, i in _all_cases()])
def test_equal_to_innvestigate(references, model_name, case):
    built, cases, refs = references
    model, x = built[model_name]
    analyzer, kwargs = cases[model_name][case]
    ref = refs[model_name].result()[case]  # a model iNNvestigate fails on fails its own tests only
    engine = NativeLRP(model, _layer_names(model), analyzer, kwargs)
    assert engine.note == ""
    ours = engine.relevance(x, batch_size=20)  # batches: the same numbers as one pass
    expected = set(ref)
    if model_name == "text_conv1d":
        expected.discard("tokens")  # iNNvestigate sums the embedding relevance per token; ours stops at the embedding
    assert expected <= set(ours), f"layers without native relevance: {sorted(expected - set(ours))}"
    assert len(expected) >= len(model.layers) - 1
    worst = {}
    for layer in sorted(expected):
        a, b = ours[layer], ref[layer]
        assert a.shape == b.shape, layer
        scale = float(np.abs(b).max())
        assert np.isfinite(b).all() and np.isfinite(a).all(), layer
        assert scale > 0, f"{layer}: iNNvestigate's map is all zeros"
        worst[layer] = float(np.abs(a - b).max()) / scale
    bad = {k: v for k, v in worst.items() if v > INNVESTIGATE_RTOL}
    assert not bad, f"{analyzer} {kwargs}: relative differences above {INNVESTIGATE_RTOL}: {bad}"


# -- properties that need no iNNvestigate -------------------------------------------------------------
def _relu_mlp(bias_zero=True):
    tf.keras.utils.set_random_seed(7)
    m = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu", name="c"),
                             layers.Flatten(name="f"), layers.Dense(16, activation="relu", name="d"),
                             layers.Dense(10, activation="softmax", name="o")])
    if bias_zero:
        for layer in m.layers:
            if getattr(layer, "bias", None) is not None:
                layer.bias.assign(tf.zeros_like(layer.bias))
    return m


def test_z_rule_conserves_relevance_without_biases(digits):
    """With zero biases on a ReLU net without pooling, every layer's relevance sums to the start logit."""
    model = _relu_mlp()
    x = digits[1][0][:32]
    input_name = model.inputs[0]._keras_history[0].name
    maps = NativeLRP(model, [input_name, "c", "f", "d", "o"], "lrp.z").relevance(x)
    assert set(maps) == {input_name, "c", "f", "d", "o"}
    hidden = tf.keras.Model(model.inputs, model.get_layer("d").output)(x).numpy()
    logits = hidden @ model.get_layer("o").kernel.numpy()
    top = logits.max(axis=1)
    assert (top > 0).all()
    for name, m in maps.items():
        sums = m.reshape(len(x), -1).sum(axis=1)
        np.testing.assert_allclose(sums, top, rtol=1e-4, err_msg=name)
    # the output layer's relevance is the top logit at the predicted class, zero elsewhere
    out = maps["o"]
    assert (np.count_nonzero(out, axis=1) == 1).all()
    np.testing.assert_array_equal(out.argmax(axis=1), model.predict(x, verbose=0).argmax(axis=1))


def test_batches_and_eager_state_unchanged(digits):
    model = _relu_mlp(bias_zero=False)
    x = digits[1][0][:40]
    assert tf.executing_eagerly()
    engine = NativeLRP(model, None, "lrp.alpha_2_beta_1")
    whole = engine.relevance(x)
    parts = engine.relevance(x, batch_size=16)
    assert tf.executing_eagerly()
    assert set(whole) == {"c", "f", "d", "o"}
    for k in whole:
        np.testing.assert_allclose(parts[k], whole[k], rtol=1e-6, atol=1e-7)
    # the model still predicts with its softmax: nothing was changed on it
    p = model.predict(x[:4], verbose=0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_weights_read_at_each_call(digits):
    model = _relu_mlp(bias_zero=False)
    x = digits[1][0][:8]
    engine = NativeLRP(model, ["d"], "lrp.epsilon")
    before = engine.relevance(x)["d"]
    k = model.get_layer("d").kernel
    k.assign(k * 2.0)
    after = engine.relevance(x)["d"]
    assert not np.allclose(before, after)


@pytest.mark.parametrize("odd", ["lambda", "rnn", "hidden_softmax"])
def test_layer_without_a_rule_stops_relevance_there(odd):
    """The model is not refused: the layers after the stop keep their relevance, which reaches the
    stop conserved (z rule, no biases); the layers before it have none, and the note names both."""
    tf.keras.utils.set_random_seed(11)
    inp = tf.keras.Input((8, 8))
    h = layers.Dense(6, activation="relu", use_bias=False, name="before")(inp)
    if odd == "lambda":
        h = layers.Lambda(lambda t: t * 2.0, name="times_two")(h)
        name, cls = "times_two", "Lambda"
    elif odd == "rnn":  # the generic RNN wrapper of a cell (LSTM, GRU and SimpleRNN have rules)
        h = layers.RNN(layers.LSTMCell(4), return_sequences=True, name="recurrent")(h)
        name, cls = "recurrent", "RNN"
    else:
        h = layers.Dense(6, activation="softmax", use_bias=False, name="hidden_softmax")(h)
        name, cls = "hidden_softmax", "Dense"
    h = layers.Flatten(name="flat")(h)
    h = layers.Dense(5, use_bias=False, name="after")(h)
    model = tf.keras.Model(inp, layers.Dense(3, activation="softmax", use_bias=False, name="out")(h))
    engine = NativeLRP(model, analyzer="lrp.z")
    assert engine.unsupported == [] and engine.note.startswith("LRP relevance stops")
    assert [s[:2] for s in engine.stops] == [(name, cls)]
    assert engine.blocked == ["before"]
    assert f"{cls} ×1 ({name}" in engine.note and "before" in engine.note
    x = np.random.default_rng(0).random((6, 8, 8)).astype("float32")
    maps = engine.relevance(x)
    assert set(maps) == {name, "flat", "after", "out"}
    top = model.predict(x, verbose=0)  # the softmax is monotone: the analysed logit is the top one
    logits = tf.keras.Model(model.inputs, model.get_layer("after").output)(x).numpy() @ model.get_layer("out").kernel
    np.testing.assert_array_equal(np.abs(maps["out"]).argmax(axis=1), top.argmax(axis=1))
    np.testing.assert_allclose(maps[name].reshape(len(x), -1).sum(axis=1), np.max(logits, axis=1), rtol=1e-4)
    # the public entry point gives the same partial maps instead of refusing, and says what it left out
    with pytest.warns(RuntimeWarning, match=rf"relevance stops at .*{cls} ×1 \({name}.* no LRP flows: before"):
        partial = relevance(model, x, backend="native", analyzer="lrp.z")
    assert set(partial) == set(maps)


def test_a_model_without_a_graph_is_refused_as_a_whole():
    class Net(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.d = layers.Dense(3)

        def call(self, x):
            return self.d(x)

    model = Net()
    model(np.zeros((1, 4), "float32"))
    engine = NativeLRP(model)
    assert engine.unsupported and "graph" in engine.note
    with pytest.raises(UnsupportedLayerError, match="graph"):
        engine.relevance(np.zeros((2, 4), "float32"))


def test_unknown_analyzer_lists_the_names():
    model = _relu_mlp()
    with pytest.raises(ValueError) as e:
        NativeLRP(model, analyzer="lrp.nonsense")
    message = str(e.value)
    assert "lrp.nonsense" in message and "lrp.epsilon" in message and "lrp.sequential_preset_b" in message
    with pytest.raises(ValueError) as e:
        relevance(model, np.zeros((1, 8, 8, 1), "float32"), analyzer="deconvnet")
    for name in INNVESTIGATE_ANALYZERS:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="backend"):
        relevance(model, np.zeros((1, 8, 8, 1), "float32"), backend="torch")


def test_bad_analyzer_kwargs():
    model = _relu_mlp()
    with pytest.raises(ValueError, match="epsilon"):
        NativeLRP(model, analyzer="lrp.epsilon", analyzer_kwargs={"epsilon": 0})
    with pytest.raises(ValueError, match="alpha"):
        NativeLRP(model, analyzer="lrp.alpha_beta", analyzer_kwargs={"alpha": 3, "beta": 1})
    with pytest.raises(ValueError, match="colour"):
        NativeLRP(model, analyzer="lrp.z", analyzer_kwargs={"colour": "red"})
    with pytest.raises(ValueError, match="input_layer_rule"):
        NativeLRP(model, analyzer="lrp.z", analyzer_kwargs={"input_layer_rule": "Sideways"})
    with pytest.raises(ValueError, match="not in the model"):
        NativeLRP(model, ["nope"])


def test_nan_weights_propagate_without_error(digits):
    model = _relu_mlp(bias_zero=False)
    k = model.get_layer("d").kernel
    k.assign(tf.tensor_scatter_nd_update(k, [[0, 0]], [np.nan]))
    maps = NativeLRP(model, None, "lrp.epsilon").relevance(digits[1][0][:4])
    assert set(maps) == {"c", "f", "d", "o"}
    assert not np.isfinite(maps["d"]).all() or not np.isfinite(maps["o"]).all()
    assert not np.isfinite(maps["c"]).all()


def test_public_entry_point(digits):
    import flowcallback

    model = _relu_mlp(bias_zero=False)
    x = digits[1][0][:10]
    maps = flowcallback.relevance(model, x, ["c", "o"], analyzer="lrp.z", backend="native")
    assert set(maps) == {"c", "o"} and maps["c"].shape == (10, 6, 6, 4)
    auto = flowcallback.relevance(model, x, ["c", "o"], analyzer="lrp.z")
    np.testing.assert_array_equal(auto["c"], maps["c"])
    assert set(ANALYZERS) <= set(INNVESTIGATE_ANALYZERS)


@pytest.mark.slow
@pytest.mark.innvestigate
@pytest.mark.skipif(not HAS_INNVESTIGATE, reason="iNNvestigate is not installed")
def test_public_entry_point_innvestigate_backend(digits):
    import flowcallback

    model = _relu_mlp(bias_zero=False)
    x = digits[1][0][:10]
    inn = flowcallback.relevance(model, x, ["c", "o"], analyzer="lrp.epsilon", backend="innvestigate")
    nat = flowcallback.relevance(model, x, ["c", "o"], analyzer="lrp.epsilon", backend="native")
    for k in ("c", "o"):
        assert np.abs(inn[k] - nat[k]).max() <= INNVESTIGATE_RTOL * np.abs(inn[k]).max()


@pytest.mark.parametrize("make", [small_resnet, concat_model, text_conv1d])
def test_the_compiled_pass_equals_the_eager_one(make):
    model = make()
    x = _inputs(make.__name__ if make is text_conv1d else "digits", n=20)
    engine = NativeLRP(model, _layer_names(model), "lrp.epsilon")
    compiled = engine.compiled(batch_size=8)
    assert compiled.verify(x) and compiled.difference <= RTOL
    eager = engine.relevance(x, batch_size=8)
    traced = compiled.relevance(x)  # three batches, the last one padded
    assert set(traced) == set(eager)
    for k in eager:
        scale = np.abs(eager[k]).max()
        assert np.abs(traced[k] - eager[k]).max() <= RTOL * scale, k


def test_the_compiled_pass_is_not_used_where_weights_are_not_finite(digits):
    """A diverged model: the eager operations are the reference for NaN, the traced graph is not used."""
    model = _relu_mlp(bias_zero=False)
    x = digits[1][0][:6]
    engine = NativeLRP(model, None, "lrp.epsilon")
    compiled = engine.compiled(batch_size=4)
    assert compiled.verify(x)
    k = model.get_layer("d").kernel
    k.assign(tf.tensor_scatter_nd_update(k, [[0, 0]], [np.nan]))
    eager = engine.relevance(x, batch_size=4)
    traced = compiled.relevance(x)  # reads the weights: not finite, so eager
    for name in eager:
        np.testing.assert_array_equal(np.isnan(traced[name]), np.isnan(eager[name]))
        np.testing.assert_array_equal(traced[name][~np.isnan(eager[name])], eager[name][~np.isnan(eager[name])])
    assert not np.isfinite(traced["c"]).all()


def test_the_traced_pass_is_quiet_in_a_notebook_that_fits_again_and_again():
    # found by an outside probe: with DeprecationWarnings shown (pytest, -W default, some notebooks),
    # autograph's conversion of the pass printed hundreds of '___pyct_anno' warnings on Python 3.13,
    # and after four fits in one process TensorFlow logged "triggered tf.function retracing"
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import warnings
        import numpy as np
        import tensorflow as tf
        from flowcallback.core.lrp import NativeLRP
        x = np.random.default_rng(0).random((20, 6)).astype("float32")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for fit in range(7):  # a new model and engine per fit, as a notebook cell run again
                model = tf.keras.Sequential([tf.keras.Input((6,)), tf.keras.layers.Dense(5, activation="relu"),
                                             tf.keras.layers.Dense(3)])
                names = [layer.name for layer in model.layers]
                compiled = NativeLRP(model, names, "lrp.epsilon").compiled(batch_size=8)
                assert compiled.verify(x[:8]) and len(compiled.relevance(x)[names[0]]) == 20
        print("WARNINGS", sum("pyct" in str(w.message) or "autograph" in str(w.message).lower() for w in caught))
    """)
    r = subprocess.run([sys.executable, "-W", "default", "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "WARNINGS 0" in r.stdout
    assert "retracing" not in r.stderr, r.stderr[-2000:]
