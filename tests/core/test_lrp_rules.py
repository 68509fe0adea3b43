"""The native engine's rules for layers iNNvestigate has none for (docs/method.md, "Layers without an
iNNvestigate rule"), checked by their conservation property on random inputs and weights; nested
models; and every layer that ``keras.applications`` builds.

Conservation: with the z rule and no biases, every layer's relevance sums to the analysed logit.
Each model below puts the layer under test between bias-free Dense layers, so that the relevance
entering the layer and the relevance leaving it must both equal the logit (up to the stabiliser).
"""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
layers = tf.keras.layers

from flowcallback.core.lrp import NativeLRP  # noqa: E402

pytestmark = [pytest.mark.both]


def _head(h, n_classes=5):
    h = layers.Flatten(name="flat")(h)
    return layers.Dense(n_classes, use_bias=False, name="out")(h)


def _vector_model(middle, width=6, seq=None):
    """Input -> Dense "pre" (no bias) -> the layer(s) under test -> Flatten -> Dense "out" (no bias)."""
    inp = tf.keras.Input((seq, width) if seq else (width,), name="x")
    pre = layers.Dense(width, use_bias=False, name="pre")(inp)
    return tf.keras.Model(inp, _head(middle(pre)))


def _image_model(middle, size=4, channels=4):
    inp = tf.keras.Input((size, size, channels), name="x")
    pre = layers.Conv2D(channels, 1, use_bias=False, name="pre")(inp)
    return tf.keras.Model(inp, _head(middle(pre)))


def _normalization():
    norm = layers.Normalization(mean=[0.5, -1.0, 2.0, 0.0], variance=[4.0, 0.25, 1.0, 2.0], name="tested")
    return _image_model(norm)


def _multiply_sigmoid_gate():
    def middle(pre):
        gate = layers.Dense(6, activation="sigmoid", use_bias=False, name="gate")(pre)
        return layers.Multiply(name="tested")([pre, gate])

    return _vector_model(middle)


def _multiply_hard_sigmoid_gate():
    """MobileNetV3's squeeze-and-excitation gate: ReLU(6)(x + 3) * (1 / 6), operations on symbolic tensors."""
    def middle(pre):
        squeeze = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(pre)
        g = layers.Conv2D(4, 1, use_bias=False, name="gate")(squeeze)
        g = layers.ReLU(6.0, name="relu6")(g + 3.0) * (1.0 / 6.0)
        return layers.Multiply(name="tested")([pre, g])

    return _image_model(middle)


def _two_branches(merge):
    """Two Dense branches of the same input joined by ``merge`` (a Keras merge layer class)."""
    def middle(pre):
        a = layers.Dense(6, use_bias=False, name="left")(pre)
        b = layers.Dense(6, use_bias=False, name="right")(pre)
        return merge(name="tested")([a, b])

    return _vector_model(middle)


def _multiply_no_gate():
    return _two_branches(layers.Multiply)


def _layer_normalization():
    return _vector_model(lambda pre: layers.LayerNormalization(center=False, name="tested")(pre), seq=3)


def _attention():
    def middle(pre):
        return layers.MultiHeadAttention(num_heads=2, key_dim=3, use_bias=False, name="tested")(pre, pre)

    return _vector_model(middle, seq=4)


def _einsum():
    return _vector_model(lambda pre: layers.EinsumDense("abc,cd->abd", output_shape=(3, 5), name="tested")(pre),
                         seq=3)


def _grouped_conv():
    return _image_model(lambda pre: layers.Conv2D(6, 3, groups=2, padding="same", use_bias=False, name="tested")(pre))


def _average():
    return _two_branches(layers.Average)


def _subtract():
    return _two_branches(layers.Subtract)


def _upsampling():
    return _image_model(lambda pre: layers.UpSampling2D(2, name="tested")(pre))


def _resizing():
    return _image_model(lambda pre: layers.Resizing(6, 6, name="tested")(pre))


def _rescaling():
    return _image_model(lambda pre: layers.Rescaling(1 / 255.0, offset=0.5, name="tested")(pre))


def _augmentation():
    def middle(pre):
        h = layers.RandomFlip(name="flip")(pre)
        h = layers.RandomRotation(0.2, name="rotate")(h)
        return layers.RandomZoom(0.1, name="tested")(h)

    return _image_model(middle)


CASES = {
    "Normalization": _normalization,
    "Rescaling": _rescaling,
    "RandomFlip+RandomRotation+RandomZoom": _augmentation,
    "Multiply with a sigmoid gate": _multiply_sigmoid_gate,
    "Multiply with a hard sigmoid gate": _multiply_hard_sigmoid_gate,
    "Multiply without a gate": _multiply_no_gate,
    "LayerNormalization": _layer_normalization,
    "MultiHeadAttention": _attention,
    "EinsumDense": _einsum,
    "grouped Conv2D": _grouped_conv,
    "Average": _average,
    "Subtract": _subtract,
    "UpSampling2D": _upsampling,
    "Resizing": _resizing,
}


def _inputs(model, n=7, seed=0):
    shape = (n,) + tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _randomise(model, seed=1):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        name = v.name.split("/")[-1]
        if "beta" in name or "bias" in name:
            continue
        w = rng.normal(1.0 if "gamma" in name else 0.0, 0.5, size=tuple(v.shape))
        v.assign(w.astype("float32"))
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_rule_conserves_relevance(case):
    """What enters the layer under test equals what leaves it, and both equal the analysed logit."""
    tf.keras.utils.set_random_seed(5)
    model = _randomise(CASES[case]())
    x = _inputs(model)
    names = ["x", "pre", "tested", "out"]
    engine = NativeLRP(model, names, "lrp.z")
    assert engine.note == "" and engine.stops == []
    maps = engine.relevance(x)
    assert set(maps) == set(names)
    logits = model.predict(x, verbose=0)
    top = logits.max(axis=1)
    assert np.abs(top).min() > 1e-3, "a logit too close to zero for a meaningful test"
    for name in names:
        sums = maps[name].reshape(len(x), -1).sum(axis=1)
        np.testing.assert_allclose(sums, top, rtol=2e-4, atol=1e-5, err_msg=f"{case}: relevance at {name}")


def test_gates_get_no_relevance_and_the_signal_all_of_it():
    for make, gate in ((_multiply_sigmoid_gate, "gate"), (_multiply_hard_sigmoid_gate, "gate")):
        tf.keras.utils.set_random_seed(5)
        model = _randomise(make())
        x = _inputs(model)
        maps = NativeLRP(model, ["pre", gate, "tested"], "lrp.z").relevance(x)
        assert np.abs(maps["tested"]).max() > 0
        np.testing.assert_array_equal(maps[gate], np.zeros_like(maps[gate]))
        # the signal input gets the multiplication's relevance, element by element (it also feeds
        # the gate's branch, which passes on nothing)
        np.testing.assert_allclose(maps["pre"], maps["tested"], rtol=1e-6, atol=1e-7)


def test_a_product_of_two_signals_splits_its_relevance_evenly():
    tf.keras.utils.set_random_seed(5)
    model = _randomise(_multiply_no_gate())
    maps = NativeLRP(model, ["left", "right", "tested"], "lrp.z").relevance(_inputs(model))
    np.testing.assert_allclose(maps["left"], maps["tested"] / 2, rtol=1e-6)
    np.testing.assert_allclose(maps["right"], maps["tested"] / 2, rtol=1e-6)


def test_identities_at_inference_pass_relevance_unchanged():
    tf.keras.utils.set_random_seed(5)
    for make in (_rescaling, _normalization, _augmentation):
        model = _randomise(make())
        maps = NativeLRP(model, ["pre", "tested"], "lrp.epsilon").relevance(_inputs(model))
        np.testing.assert_array_equal(maps["pre"], maps["tested"])


def test_attention_relevance_flows_through_the_values_only():
    """Cross-attention: the query and key inputs get no relevance, the value input all of it."""
    tf.keras.utils.set_random_seed(6)
    inp = tf.keras.Input((4, 6), name="x")
    query = layers.Dense(6, use_bias=False, name="query")(inp)
    value = layers.Dense(6, use_bias=False, name="value")(inp)
    key = layers.Dense(6, use_bias=False, name="key")(inp)
    att = layers.MultiHeadAttention(2, 3, use_bias=False, name="tested")(query, value, key=key)
    model = _randomise(tf.keras.Model(inp, _head(att)))
    maps = NativeLRP(model, ["query", "value", "key", "tested"], "lrp.z").relevance(_inputs(model))
    assert not np.any(maps["query"]) and not np.any(maps["key"])
    np.testing.assert_allclose(maps["value"].sum(axis=(1, 2)), maps["tested"].sum(axis=(1, 2)), rtol=2e-4)


def _attention_models(seq=6, features=4, width=8):
    """One attention block twice, with the same weights: as ``MultiHeadAttention`` (one head, no
    biases), and written by hand with ``keras.ops`` (Dense q, k, v; ``ops.matmul``; ``ops.softmax``)."""
    keras = pytest.importorskip("keras", minversion="3")  # keras.ops: Keras 3
    from keras import ops

    keras.utils.set_random_seed(0)

    def tail(inp, h, a):
        h = layers.Add(name="res")([h, a])
        return keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(
            layers.GlobalAveragePooling1D(name="gap")(h)))

    inp = keras.Input((seq, features))
    h = layers.Dense(width, name="embed")(inp)
    mha = tail(inp, h, layers.MultiHeadAttention(1, width, use_bias=False, name="mha")(h, h))
    inp = keras.Input((seq, features))
    h = layers.Dense(width, name="embed")(inp)
    q, k, v = (layers.Dense(width, use_bias=False, name=n)(h) for n in "qkv")
    weights = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 2, 1))) / np.float32(np.sqrt(width)), axis=-1)
    weights = layers.Dropout(0.1)(weights)
    by_hand = tail(inp, h, layers.Dense(width, use_bias=False, name="o")(ops.matmul(weights, v)))
    att = mha.get_layer("mha")
    for name in ("embed", "out"):
        by_hand.get_layer(name).set_weights(mha.get_layer(name).get_weights())
    pairs = (("q", att._query_dense), ("k", att._key_dense), ("v", att._value_dense), ("o", att._output_dense))
    for name, dense in pairs:
        by_hand.get_layer(name).set_weights([dense.get_weights()[0].reshape(width, width)])
    return mha, by_hand


def test_attention_written_with_ops_gets_the_multi_head_attention_rule():
    """An outside probe: attention written with ``ops.matmul`` and ``ops.softmax`` stopped relevance
    ("no LRP rule for this operation"), and the block's input lost its LRP column. The product with
    the softmax's weights now holds them constant, as the MultiHeadAttention rule does: the same
    relevance at every layer both models have, none at the queries and keys."""
    mha, by_hand = _attention_models()
    x = np.random.default_rng(1).normal(size=(30, 6, 4)).astype("float32")
    np.testing.assert_allclose(mha.predict(x, verbose=0), by_hand.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    engine = NativeLRP(by_hand, ["embed", "q", "k", "v", "o", "res", "gap"], "lrp.epsilon")
    assert engine.stops == [] and engine.blocked == [] and engine.note == ""
    ours, reference = engine.relevance(x), NativeLRP(mha, ["embed", "res", "gap"], "lrp.epsilon").relevance(x)
    for name in ("embed", "res", "gap"):
        scale = np.abs(reference[name]).max()
        np.testing.assert_allclose(ours[name], reference[name], atol=1e-4 * scale, err_msg=name)  # stabilisers
    assert not np.any(ours["q"]) and not np.any(ours["k"]) and np.abs(ours["v"]).max() > 0


def test_a_product_of_two_signals_written_with_ops_splits_its_relevance_evenly():
    """``ops.matmul(a, b)`` of two tensors, neither attention weights: each gets half (AttnLRP's
    uniform rule), and with the z rule and no biases the two halves sum to what enters the product."""
    keras = pytest.importorskip("keras", minversion="3")
    from keras import ops

    keras.utils.set_random_seed(5)
    inp = keras.Input((4, 6), name="x")
    a = layers.Dense(6, use_bias=False, name="a")(inp)
    b = layers.Dense(6, use_bias=False, name="b")(inp)
    product = layers.Activation("linear", name="tested")(ops.matmul(a, ops.transpose(b, (0, 2, 1))))
    model = _randomise(keras.Model(inp, _head(product)))
    maps = NativeLRP(model, ["a", "b", "tested"], "lrp.z").relevance(_inputs(model))
    entering = maps["tested"].sum(axis=(1, 2))
    np.testing.assert_allclose(maps["a"].sum(axis=(1, 2)), entering / 2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps["b"].sum(axis=(1, 2)), entering / 2, rtol=1e-4, atol=1e-6)


def _ops_model(build, seed=1):
    """Input -> Dense "a" (relu, no bias) -> ``build(a)`` -> Dense "out" (no bias), Keras 3."""
    keras = pytest.importorskip("keras", minversion="3")
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8,), name="x")
    a = layers.Dense(6, activation="relu", use_bias=False, name="a")(inp)
    return keras.Model(inp, layers.Dense(3, use_bias=False, name="out")(build(a)))


@pytest.mark.parametrize("case", ["a + a", "Add()([a, a])", "maximum(a, a)", "(a + a) - a", "concatenate([a, a])",
                                  "a * np.float64(0.5)", "a / np.sqrt(8.0)", "where(a > 0.1, a, 0)"])
def test_relevance_is_conserved_through_operations_users_write(case):
    """Found by an outside probe: a tensor read twice by one join got its relevance twice (a + a: 2x,
    concatenate: 2x); a NumPy float64 constant (attention's ``/ np.sqrt(d)``) made float64 maps
    and LRP was skipped for the whole model (a dtype error); ``ops.where`` had no rule."""
    pytest.importorskip("keras", minversion="3")
    from keras import ops

    build = {
        "a + a": lambda a: a + a,
        "Add()([a, a])": lambda a: layers.Add()([a, a]),
        "maximum(a, a)": lambda a: ops.maximum(a, a),
        "(a + a) - a": lambda a: (a + a) - a,
        "concatenate([a, a])": lambda a: ops.concatenate([a, a], axis=-1),
        "a * np.float64(0.5)": lambda a: a * np.float64(0.5),
        "a / np.sqrt(8.0)": lambda a: a / np.sqrt(8.0),
        "where(a > 0.1, a, 0)": lambda a: ops.where(a > 0.1, a, 0.0),
    }[case]
    model = _ops_model(build)
    x = np.random.default_rng(0).normal(size=(20, 8)).astype("float32")
    engine = NativeLRP(model, ["a", "out"], "lrp.z")
    assert engine.stops == []
    maps = engine.relevance(x)
    top = model.predict(x, verbose=0).max(axis=1)
    for name in ("a", "out"):
        assert maps[name].dtype == np.float32
        np.testing.assert_allclose(maps[name].sum(axis=1), top, rtol=1e-4, atol=1e-6, err_msg=name)


def test_a_softmax_operation_as_the_output_starts_relevance_at_its_logits():
    """``ops.softmax(logits)`` as the model's output stopped relevance ("no LRP rule for this
    operation"), so no column had LRP flows: it is read as an output activation, as
    ``Dense(..., activation="softmax")`` is."""
    pytest.importorskip("keras", minversion="3")
    from keras import ops

    model = _ops_model(lambda a: a)
    inp = model.input
    logits = model.get_layer("out").output
    with_softmax = type(model)(inp, ops.softmax(logits))
    x = np.random.default_rng(0).normal(size=(20, 8)).astype("float32")
    engine = NativeLRP(with_softmax, ["a", "out"], "lrp.z")
    assert engine.stops == [] and engine.blocked == []
    ours, plain = engine.relevance(x), NativeLRP(model, ["a", "out"], "lrp.z").relevance(x)
    for name in ("a", "out"):
        np.testing.assert_allclose(ours[name], plain[name], rtol=1e-6, atol=1e-7)


def _assert_the_attention_rule(model):
    """An attention block "h" -> Dense "q", "k", "v" -> ... -> "out" (bias-free, inputs (5, 4)):
    no stop, the relevance conserved through the values, none at the queries and keys."""
    x = np.random.default_rng(0).normal(size=(7, 5, 4)).astype("float32")
    engine = NativeLRP(model, ["h", "q", "k", "v", "out"], "lrp.z")
    assert engine.stops == [] and engine.blocked == []
    maps = engine.relevance(x)
    top = model.predict(x, verbose=0).max(axis=1)
    for name in ("h", "v", "out"):
        np.testing.assert_allclose(maps[name].reshape(7, -1).sum(axis=1), top, rtol=1e-4, atol=1e-6, err_msg=name)
    assert not np.any(maps["q"]) and not np.any(maps["k"])


def test_a_causal_mask_written_with_where_keeps_the_attention_rule():
    keras = pytest.importorskip("keras", minversion="3")
    from keras import ops

    keras.utils.set_random_seed(0)
    inp = keras.Input((5, 4))
    h = layers.Dense(8, use_bias=False, name="h")(inp)
    q, k, v = (layers.Dense(8, use_bias=False, name=n)(h) for n in "qkv")
    scores = ops.where(ops.tril(ops.ones((5, 5))) > 0, ops.matmul(q, ops.transpose(k, (0, 2, 1))), -1e9)
    o = layers.Dense(8, use_bias=False, name="o")(ops.matmul(ops.softmax(scores, axis=-1), v))
    model = keras.Model(inp, layers.Dense(3, use_bias=False, name="out")(layers.Flatten()(o)))
    _assert_the_attention_rule(model)


def test_attention_written_with_tf_ops_in_keras_2_gets_the_attention_rule():
    """Keras 2 wraps ``tf.matmul`` and ``tf.nn.softmax`` on symbolic tensors in TFOpLambda layers:
    the same rule as with keras.ops (the values get the relevance, conserved; queries and keys none)."""
    import keras

    if not keras.__version__.startswith("2"):
        pytest.skip("TensorFlow functions on symbolic tensors are Keras 2's (Keras 3 takes keras.ops)")
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((5, 4))
    h = layers.Dense(8, use_bias=False, name="h")(inp)
    q, k, v = (layers.Dense(8, use_bias=False, name=n)(h) for n in "qkv")
    weights = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / np.sqrt(8.0), axis=-1)
    o = layers.Dense(8, use_bias=False, name="o")(tf.matmul(weights, v))
    model = tf.keras.Model(inp, layers.Dense(3, use_bias=False, name="out")(layers.Flatten()(o)))
    _assert_the_attention_rule(model)


def _augment_block():
    return tf.keras.Sequential([layers.RandomFlip("horizontal", name="flip"), layers.Rescaling(1 / 16, name="scale")],
                               name="augment")


def _grouped_pair(rank, groups, channels=4, filters=8):
    """A model with a grouped convolution, and the same model with a dense kernel that is zero
    across groups: the same linear map, so every rule must give both the same relevance."""
    conv = {1: layers.Conv1D, 2: layers.Conv2D}[rank]
    shape = (6,) * rank + (channels,)

    def build(grouped):
        inp = tf.keras.Input(shape)
        h = conv(channels, 1, use_bias=False)(inp)
        h = conv(filters, 3, padding="same", groups=groups if grouped else 1, activation="relu")(h)
        return tf.keras.Model(inp, layers.Dense(5)(layers.Flatten()(h)))

    tf.keras.utils.set_random_seed(0)
    grouped, dense = build(True), build(False)
    kernel = grouped.layers[2].get_weights()[0]  # (..., channels / groups, filters)
    full = np.zeros(kernel.shape[:-2] + (channels, filters), "float32")
    per_in, per_out = channels // groups, filters // groups
    for g in range(groups):
        outs = slice(g * per_out, (g + 1) * per_out)
        full[..., g * per_in:(g + 1) * per_in, outs] = kernel[..., outs]
    dense.layers[1].set_weights(grouped.layers[1].get_weights())
    dense.layers[2].set_weights([full, grouped.layers[2].get_weights()[1]])
    dense.layers[-1].set_weights(grouped.layers[-1].get_weights())
    x = np.random.default_rng(1).normal(size=(3,) + shape).astype("float32")
    np.testing.assert_allclose(grouped.predict(x, verbose=0), dense.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    return grouped, dense, x


@pytest.mark.parametrize("rank, groups", [(2, 4), (2, 2), (1, 2)])
@pytest.mark.parametrize("analyzer", ["lrp.epsilon", "lrp.alpha_2_beta_1", "lrp.z"])
def test_grouped_convolutions_get_the_relevance_of_their_dense_kernel(rank, groups, analyzer):
    """Conv2D(groups=channels) (ConvNeXt's depthwise convolutions) and grouped Conv1D/Conv2D: their
    relevance equals that of the same map written as one dense kernel, on any CPU (TensorFlow has no
    gradient for a grouped convolution on CPUs without oneDNN)."""
    grouped, dense, x = _grouped_pair(rank, groups)
    names = [grouped.layers[1].name, grouped.layers[2].name]
    got = NativeLRP(grouped, names, analyzer).relevance(x)
    want = NativeLRP(dense, [dense.layers[1].name, dense.layers[2].name], analyzer).relevance(x)
    for a, b in zip(names, [dense.layers[1].name, dense.layers[2].name]):
        assert np.abs(want[b]).max() > 0
        np.testing.assert_allclose(got[a], want[b], rtol=1e-4, atol=1e-5 * np.abs(want[b]).max())


def test_nested_blocks_are_descended_into():
    """A Sequential block inside a functional model, and a functional block inside a Sequential."""
    from flowcallback.core import capture
    from flowcallback.core.embed import embed

    tf.keras.utils.set_random_seed(7)
    inner_in = tf.keras.Input((6, 6, 4))
    inner = tf.keras.Model(inner_in, layers.Conv2D(4, 3, padding="same", name="block_conv")(inner_in), name="block")
    inp = tf.keras.Input((8, 8, 1), name="image")
    h = _augment_block()(inp)
    h = layers.Conv2D(4, 3, name="conv")(h)
    h = inner(h)
    model = tf.keras.Model(inp, _head(h, 10))
    names = capture.select_layers(model)
    assert names == ["scale", "conv", "block_conv", "out"]  # augmentation layers are not columns by default
    assert capture.select_layers(model, "all") == names
    assert capture.select_layers(model, ["out", "flip"]) == ["flip", "out"]
    x = np.random.default_rng(0).integers(0, 16, size=(9, 8, 8, 1)).astype("float32")
    emb, outputs = capture.capture_activations(model, x, names, embed_options={"reduce": None})
    expected = model.get_layer("block").get_layer("block_conv")(model.get_layer("conv")(x / 16))
    np.testing.assert_allclose(emb["block_conv"], embed(np.asarray(expected)), atol=1e-6)
    np.testing.assert_allclose(outputs, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    engine = NativeLRP(model, ["flip"] + names, "lrp.z")
    assert engine.note == ""
    maps = engine.relevance(x)
    assert set(maps) == {"flip", *names}
    np.testing.assert_array_equal(maps["flip"], maps["scale"])  # identities pass relevance on unchanged


#: keras.applications networks, built with weights=None at a small input size (the smallest each accepts).
APPLICATIONS = {
    "ResNet50": 32, "ResNet50V2": 32, "VGG16": 32, "MobileNet": 32, "MobileNetV2": 32, "MobileNetV3Small": 32,
    "EfficientNetB0": 32, "EfficientNetV2B0": 32, "DenseNet121": 32, "InceptionV3": 75, "InceptionResNetV2": 75,
    "Xception": 71, "ConvNeXtTiny": 32,
}


def _application(name):
    tf.keras.backend.clear_session()
    size = APPLICATIONS[name]
    builder = getattr(tf.keras.applications, name, None)
    if builder is None:
        pytest.skip(f"{name} is not in this Keras")
    return builder(weights=None, input_shape=(size, size, 3), classes=10)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_every_layer_of_keras_applications_has_a_rule(name):
    model = _application(name)
    engine = NativeLRP(model)
    assert engine.unsupported == [] and engine.stops == [], engine.note
    no_rule = {n: r for n, r in engine.rules().items() if r.startswith("none")}
    assert no_rule == {}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ResNet50", "MobileNetV3Small", "EfficientNetB0", "DenseNet121", "ConvNeXtTiny"])
def test_keras_applications_relevance_reaches_the_input(name):
    """Relevance reaches every default column, finite, and starts from the top logit."""
    from flowcallback.core import capture

    model = _application(name)
    columns = capture.select_layers(model)
    x = np.random.default_rng(0).uniform(0, 255, size=(2,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    maps = NativeLRP(model, columns, "lrp.epsilon").relevance(x)
    assert set(maps) == set(columns)
    assert all(np.isfinite(m).all() for m in maps.values())
    assert all(np.abs(m).max() > 0 for m in maps.values())
    logits = maps[columns[-1]]
    assert (np.count_nonzero(logits, axis=1) == 1).all()
