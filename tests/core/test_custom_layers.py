"""Relevance through custom layer classes (Keras 3): the Keras layers and operations a custom
layer's ``call()`` makes are followed as Keras builds a functional model, so that a Transformer
block written as a class (keras.io's tutorial) gets the relevance of the same block written with
the functional API. Where a ``call()`` cannot be followed, the layer stays one stop, with the reason.
"""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
if int(keras.__version__.split(".")[0]) < 3:  # Keras 2 records no nodes inside a layer's call()
    pytest.skip("custom layers are opened on Keras 3 only", allow_module_level=True)

from keras import layers, ops  # noqa: E402
from keras_io import PatchEncoder  # noqa: E402  (tests/keras_io.py: keras.io's ViT layer as written)

from flowcallback.core import layergraph  # noqa: E402
from flowcallback.core.lrp import NativeLRP  # noqa: E402

pytestmark = [pytest.mark.slow]


class TransformerBlock(layers.Layer):
    """keras.io's "Text classification with Transformer", as written there (no get_config, no **kwargs)."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
        super().__init__()
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs):
        attn_output = self.att(inputs, inputs)
        attn_output = self.dropout1(attn_output)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.ffn(out1)
        ffn_output = self.dropout2(ffn_output)
        return self.layernorm2(out1 + ffn_output)


class TokenAndPositionEmbedding(layers.Layer):
    """The tutorial's embedding: the position embedding of ``ops.arange`` is a tensor made outside
    the layer's inputs, held in a variable that follows the weights (``LayerGraph.refresh``)."""

    def __init__(self, maxlen, vocab_size, embed_dim):
        super().__init__()
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        positions = self.pos_emb(ops.arange(start=0, stop=ops.shape(x)[-1], step=1))
        return self.token_emb(x) + positions


MAXLEN, VOCAB, DIM = 10, 40, 8


def _randomise(model, seed=0):
    """Non-zero biases and LayerNormalization parameters, so that every term of the rules counts."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(0.0, 0.4, tuple(v.shape)).astype("float32"))
    return model


def _tutorial(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = layers.Input(shape=(MAXLEN,))
    x = TokenAndPositionEmbedding(MAXLEN, VOCAB, DIM)(inputs)
    x = TransformerBlock(DIM, 2, 16)(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Dense(12, activation="relu")(x)
    outputs = layers.Dense(3, activation="softmax")(x)
    return _randomise(keras.Model(inputs, outputs), seed)


def _same_block_functional(model):
    """The tutorial's model with the block's own sublayers called with the functional API (shared
    weights): what the docs told users to write before custom layers were opened."""
    emb, block = model.layers[1], model.layers[2]
    inputs = layers.Input(shape=(MAXLEN,))
    h = emb(inputs)
    out1 = block.layernorm1(layers.Add()([h, block.dropout1(block.att(h, h))]))
    out = block.layernorm2(layers.Add()([out1, block.dropout2(block.ffn(out1))]))
    for layer in model.layers[3:]:
        out = layer(out)
    return keras.Model(inputs, out), block.layernorm2.name


def _tokens(n=16, seed=1):
    return np.random.default_rng(seed).integers(1, VOCAB, (n, MAXLEN))


@pytest.mark.parametrize("analyzer", ["lrp.epsilon", "lrp.z", "lrp.alpha_2_beta_1"])
def test_a_block_written_as_a_class_gets_the_relevance_of_the_same_block_written_functionally(analyzer):
    model = _tutorial()
    functional, block_out = _same_block_functional(model)
    x = _tokens()
    emb, block, dense = (model.layers[i].name for i in (1, 2, 5))  # default names: Keras numbers them
    opened = NativeLRP(model, [emb, block, dense], analyzer)
    reference = NativeLRP(functional, [emb, block_out, dense], analyzer)
    assert opened.stops == [] and opened.blocked == []
    got, want = opened.relevance(x), reference.relevance(x)
    for name, ref in [(emb, emb), (block, block_out), (dense, dense)]:
        scale = np.abs(want[ref]).max()
        assert scale > 0, name
        np.testing.assert_allclose(got[name], want[ref], rtol=0, atol=1e-5 * scale, err_msg=name)
    # the relevance reached the embedding through the attention and both normalisations
    assert np.abs(got[emb]).sum(axis=(1, 2)).min() > 0


def test_opening_a_custom_layer_leaves_the_model_as_it_was():
    """Following a call() adds nodes to the layer's sublayers; they are taken away again, so the
    user's model summarises, saves and predicts as before."""
    model = _tutorial()
    block = model.layers[2]
    subs = block._flatten_layers(include_self=False, recursive=True)
    before = [(len(s._inbound_nodes), len(s._outbound_nodes)) for s in subs]
    x = _tokens(4)
    expected = model.predict(x, verbose=0)
    graph = layergraph.trace(model, open_custom=True)
    assert [(len(s._inbound_nodes), len(s._outbound_nodes)) for s in subs] == before
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-6)
    # the opened graph runs the model: its output equals the model's own
    np.testing.assert_allclose(np.asarray(graph.run(x)[graph.outputs[0]]), expected, rtol=1e-5, atol=1e-6)
    emb, block = model.layers[1].name, model.layers[2].name
    assert block in graph.aliases and block not in graph.names
    inner = {model.layers[2].att.name, model.layers[2].layernorm1.name, model.layers[2].layernorm2.name}
    assert inner <= set(graph.names)
    assert emb in graph.aliases and graph.closed == {}  # its position embedding is held (see below)
    assert [tuple(v.shape) for held in graph.held for v in held.variables] == [(MAXLEN, DIM)]
    # without open_custom the graph is the model's own layers, as the capture sees them
    assert layergraph.trace(model).names[:2] == [emb, block]


class TFScale(layers.Layer):
    """A call() made of TensorFlow functions: it does not run on Keras's symbolic tensors."""

    def call(self, x):
        import tensorflow as tf

        return tf.multiply(x, 2.0)


class FreshNoise(layers.Layer):
    """Noise drawn at every call, outside the inputs: held as one constant, the calls, run one by
    one, do not give the layer's own output, which draws other noise."""

    def call(self, x):
        return x + keras.random.normal((x.shape[-1],))


@pytest.mark.parametrize("cls, reason", [(TFScale, "TensorFlow function"),
                                         (FreshNoise, "run one by one")])
def test_a_call_that_cannot_be_followed_stays_one_stop_with_its_reason(cls, reason):
    keras.utils.set_random_seed(2)
    inputs = layers.Input((4, 3))
    h = layers.Dense(5, name="before")(inputs)
    h = cls(name="odd")(h)
    h = layers.Flatten(name="flat")(h)
    model = keras.Model(inputs, layers.Dense(2, name="out")(h))
    engine = NativeLRP(model)
    assert [s[:2] for s in engine.stops] == [("odd", cls.__name__)]
    assert reason in engine.stops[0][2] and reason in engine.note
    assert engine.blocked == ["before"]
    maps = engine.relevance(np.ones((3, 4, 3), "float32"))
    assert set(maps) == {"odd", "flat", "out"}


class Residual(layers.Layer):
    """A custom layer that holds a weight of its own and uses it in an operation: a variable, read
    at every call, so the opened graph follows later weights (no frozen value)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(units)

    def build(self, input_shape):
        self.gain = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gain")

    def call(self, x):
        return x + self.dense(x) * self.gain


def test_an_opened_layer_reads_its_own_weights_at_every_call():
    keras.utils.set_random_seed(4)
    inputs = layers.Input((6,))
    h = Residual(6, name="res")(layers.Dense(6, name="before")(inputs))
    model = keras.Model(inputs, layers.Dense(3, name="out")(h))
    engine = NativeLRP(model, ["before", "res", "out"], "lrp.epsilon")
    assert engine.stops == [] and engine.note == ""
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    first = engine.relevance(x)
    gain = model.get_layer("res").gain
    gain.assign(gain.numpy() * 3.0)
    second = engine.relevance(x)
    assert not np.allclose(first["before"], second["before"])
    graph = engine.graph
    np.testing.assert_allclose(np.asarray(graph.run(x)[graph.outputs[0]]), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_by_default_relevance_is_reported_for_the_models_own_layers():
    """Found by an outside probe: the default keys were the layers inside the opened block and
    made-up operation names (``add_1``), and the block itself was missing."""
    model = _tutorial()
    engine = NativeLRP(model)
    assert engine.layer_names == [layer.name for layer in model.layers[1:]]
    maps = engine.relevance(_tokens(4))
    assert list(maps) == [layer.name for layer in model.layers[1:]]


class MaskedMean(layers.Layer):
    """A mean over the unmasked steps: its ``ops.divide`` has no LRP rule."""

    def call(self, x, mask=None):
        m = ops.cast(mask, x.dtype)[..., None]
        return ops.divide(ops.sum(x * m, axis=1), ops.maximum(ops.sum(m, axis=1), 1.0))


class GainOnTheLeft(layers.Layer):
    """A weight on the left of an operator: Keras's variable hands the symbolic tensor to TensorFlow."""

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gamma")

    def call(self, x):
        return self.gamma * x


@pytest.mark.parametrize("cls, reason", [
    (MaskedMean, "Divide inside its call(): no LRP rule"),
    (GainOnTheLeft, "an operator with a weight on its left"),
])
def test_a_stop_inside_a_custom_layer_is_named_by_the_users_layer(cls, reason):
    keras.utils.set_random_seed(3)
    inputs = layers.Input((6,), dtype="int32")
    h = layers.Embedding(20, 4, mask_zero=True, name="emb")(inputs)
    h = layers.Dense(4, name="mid")(h)
    if cls is MaskedMean:
        h = cls(name="pool")(h)
    else:
        h = layers.GlobalAveragePooling1D(name="pool")(cls(name="gain")(h))
    model = keras.Model(inputs, layers.Dense(2, name="out")(h))
    engine = NativeLRP(model)
    name = "pool" if cls is MaskedMean else "gain"
    assert [s[:2] for s in engine.stops] == [(name, cls.__name__)]
    assert reason in engine.stops[0][2] and f"{cls.__name__} ×1 ({name}: " in engine.note
    assert "divide" not in engine.note.lower().replace("divide inside", "")


def test_a_model_that_cannot_be_copied_is_analysed_in_place_with_its_own_weights_only():
    from flowcallback.core.lrp.engines import NativeEngine

    keras.utils.set_random_seed(6)
    inputs = layers.Input((4, 6))
    h = PatchEncoder(4, 8)(inputs)
    h = layers.LayerNormalization()(h)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling1D()(h)))
    x = np.random.default_rng(0).normal(size=(20, 4, 6)).astype("float32")
    names = [layer.name for layer in model.layers[1:]]
    engine = NativeEngine("lrp.epsilon")
    engine.start(model, names, x)
    assert "get_config() leaves out the __init__ argument(s) projection_dim" in engine.in_place
    before = [w.copy() for w in model.get_weights()]
    result = engine.analyze(model.get_weights())
    assert sorted(result.embeddings) == sorted(names) and result.missing == []
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # the model was read, not written
    other = [w + 1.0 for w in model.get_weights()]
    with pytest.raises(RuntimeError, match="weights have changed"):
        engine.analyze(other)  # it cannot analyse other weights than the model's own
    engine.close()


def test_a_constant_made_inside_a_custom_layer_follows_the_weights():
    """The tutorial's position embedding of ``ops.arange`` is computed outside the layer's inputs:
    traced once, its value would stay that of the weights at the trace. It is held in a variable
    and made again when the weights change, so that an engine built before training gives, after
    it, the relevance of an engine built afterwards (eager and traced passes alike)."""
    model = _tutorial(seed=4)
    x = _tokens()
    engine = NativeLRP(model)
    compiled = engine.compiled(len(x))
    assert compiled.verify(x)
    before = engine.relevance(x)
    _randomise(model, seed=9)  # training moved every weight, the position embedding's too
    fresh = NativeLRP(model).relevance(x)
    graph = engine.graph
    np.testing.assert_allclose(np.asarray(graph.run(x)[graph.outputs[0]]), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    for got in (engine.relevance(x), compiled.relevance(x)):
        assert set(got) == set(fresh)
        for name, want in fresh.items():
            scale = np.abs(want).max()
            np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-5 * scale, err_msg=name)
    emb = model.layers[1].name
    assert not np.allclose(before[emb], fresh[emb])  # the weights did change the relevance


class Patches(layers.Layer):
    """keras.io's "Image classification with Vision Transformer", as written there: the batch size
    read with ``ops.shape`` (None on symbolic tensors) in a reshape."""

    def __init__(self, patch_size):
        super().__init__()
        self.patch_size = patch_size

    def call(self, images):
        input_shape = ops.shape(images)
        batch_size, height, width, channels = input_shape[0], input_shape[1], input_shape[2], input_shape[3]
        num_patches_h = height // self.patch_size
        num_patches_w = width // self.patch_size
        patches = keras.ops.image.extract_patches(images, size=self.patch_size)
        return ops.reshape(patches, (batch_size, num_patches_h * num_patches_w,
                                     self.patch_size * self.patch_size * channels))


def _vit_front(seed=0, size=16, patch=4, dim=8):
    """keras.io's ViT up to its first normalisation, augmentation included, and a small head."""
    keras.utils.set_random_seed(seed)
    augment = keras.Sequential([layers.Normalization(), layers.Resizing(size, size), layers.RandomFlip("horizontal"),
                                layers.RandomRotation(0.02), layers.RandomZoom(0.2, 0.2)], name="data_augmentation")
    augment.layers[0].adapt(np.random.default_rng(seed).random((40, 12, 12, 3)).astype("float32"))
    inputs = layers.Input((12, 12, 3))
    n = (size // patch) ** 2
    h = PatchEncoder(n, dim)(Patches(patch)(augment(inputs)))
    h = layers.LayerNormalization(epsilon=1e-6)(h)
    h = layers.Dense(6, activation="gelu")(layers.Flatten()(h))
    model = keras.Model(inputs, layers.Dense(4)(h))
    return _randomise(model, seed), augment, (size, patch, n)


def _vit_front_functional(model, augment, size, patch, n):
    """The same model with the two custom layers' calls written in the functional API (shared layers)."""
    patches, encoder = model.layers[2], model.layers[3]
    inputs = layers.Input((12, 12, 3))
    p = ops.reshape(keras.ops.image.extract_patches(augment(inputs), size=patch), (-1, n, patch * patch * 3))
    h = encoder.projection(p) + encoder.position_embedding(ops.expand_dims(ops.arange(0, n), 0))
    for layer in model.layers[4:]:
        h = layer(h)
    return keras.Model(inputs, h), patches.name, encoder.name


@pytest.mark.parametrize("analyzer", ["lrp.epsilon", "lrp.z", "lrp.alpha_2_beta_1"])
def test_keras_ios_vision_transformer_gets_relevance_back_to_its_augmentation(analyzer):
    """keras.io's ViT as written: Patches reshapes to the batch size read symbolically (inferred
    instead) and PatchEncoder adds a position embedding of ``ops.arange`` (held): both are opened,
    so relevance reaches the augmentation layers and the input, as through the same calls written
    functionally."""
    model, augment, dims = _vit_front()
    functional, patches, encoder = _vit_front_functional(model, augment, *dims)
    x = np.random.default_rng(3).random((6, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(functional.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    names = [layer.name for layer in augment.layers] + [patches, encoder, model.layers[-1].name]
    opened = NativeLRP(model, names, analyzer)
    assert opened.stops == [] and opened.blocked == [] and opened.note == ""
    reference = NativeLRP(functional, [n for n in names if n not in (patches, encoder)], analyzer)
    got, want = opened.relevance(x), reference.relevance(x)
    for name in want:
        scale = np.abs(want[name]).max()
        assert scale > 0, name
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5 * scale, err_msg=name)
    # the patches' relevance is the augmented image's, cut into patches
    assert got[patches].shape == (6, dims[2], dims[1] * dims[1] * 3)
    np.testing.assert_allclose(got[patches].sum(axis=(1, 2)), got[augment.layers[-1].name].sum(axis=(1, 2, 3)),
                               rtol=1e-4, atol=1e-6)


class ResidualDense(layers.Layer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(units)

    def call(self, x):
        return x + self.dense(x)


def test_a_custom_layer_ending_a_block_called_twice_is_opened_once_per_call():
    """A custom layer that makes a nested model's output, the model called twice (a siamese encoder):
    the two calls' insides were given the same tensors (found by an outside probe: the first
    branch read the second's values and relevance, 20 times off, without a note). Each call now
    has its own, and the relevance is that of the same computation written functionally."""
    keras.utils.set_random_seed(0)
    enc_in = layers.Input((6, 5))
    encoder = keras.Model(enc_in, ResidualDense(8, name="block")(layers.Dense(8, name="proj")(enc_in)), name="encoder")
    inputs = layers.Input((6, 5))
    h = layers.Concatenate(axis=1, name="cat")([encoder(inputs), encoder(layers.Dense(5, name="other")(inputs))])
    model = _randomise(keras.Model(inputs, layers.Dense(3, activation="softmax", name="out")(layers.Flatten()(h))))
    proj, block = encoder.get_layer("proj"), encoder.get_layer("block")

    def written_out(t):
        p = proj(t)
        return layers.Add()([p, block.dense(p)])

    twin_in = layers.Input((6, 5))
    h2 = layers.Concatenate(axis=1, name="cat2")([written_out(twin_in), written_out(model.get_layer("other")(twin_in))])
    twin = keras.Model(twin_in, model.get_layer("out")(model.layers[-2](h2)))
    x = np.random.default_rng(0).normal(size=(5, 6, 5)).astype("float32")
    np.testing.assert_allclose(twin.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    graph = layergraph.trace(model, open_custom=True)
    assert graph.closed == {}
    keys = [k for c in graph.calls for k in c.outputs]
    assert len(keys) == len(set(keys))  # no tensor made by two calls
    got = NativeLRP(model, ["other", "cat"]).relevance(x)
    want = NativeLRP(twin, ["other", "cat2"]).relevance(x)
    for a, b in (("other", "other"), ("cat", "cat2")):
        np.testing.assert_allclose(got[a], want[b], rtol=0, atol=1e-5 * np.abs(want[b]).max(), err_msg=a)


class MaskedDense(layers.Layer):
    """Zeroes the padded steps by multiplying with Keras's mask (a 0/1 cast of ``NotEqual``)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(8)
        self.supports_masking = True

    def call(self, x, mask=None):
        h = self.dense(x)
        return h if mask is None else h * ops.expand_dims(ops.cast(mask, h.dtype), -1)


class ClassToken(layers.Layer):
    """A ViT class token written from the input (``ops.zeros_like``), as the note advises."""

    def build(self, input_shape):
        self.cls = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="random_normal", name="cls")

    def call(self, x):
        return ops.concatenate([ops.zeros_like(x[:, :1, :]) + self.cls, x], axis=1)


class BroadcastClassToken(ClassToken):
    """The same with the batch size read by ``ops.shape`` (None on symbolic tensors)."""

    def call(self, x):
        return ops.concatenate([ops.broadcast_to(self.cls, (ops.shape(x)[0], 1, ops.shape(x)[-1])), x], axis=1)


def test_masks_means_and_tensors_made_from_the_input_pass_relevance_as_their_maths_does():
    """Found by an outside probe (an explainability researcher): ``ops.mean`` of one tensor stopped
    relevance (no rule: the z rule was for two tensors); a product with Keras's mask took half the
    relevance (the 0/1 mask was no gate), and the mask's ``NotEqual`` had "no LRP rule"; a class
    token made with ``ops.zeros_like`` stopped at ZerosLike. A comparison, a mask and
    ``ops.zeros_like`` do not follow their input: none of its relevance goes there."""
    keras.utils.set_random_seed(0)
    ids = layers.Input((6,), dtype="int32")
    emb = layers.Embedding(20, 8, mask_zero=True, name="emb")(ids)
    masked = keras.Model(ids, layers.Dense(3, name="out")(layers.Flatten()(MaskedDense(name="block")(emb))))
    unmasked = keras.Model(ids, masked.get_layer("out")(layers.Flatten()(masked.get_layer("block").dense(emb))))
    x = np.random.default_rng(0).integers(1, 20, (4, 6))  # no padding: the mask is all ones
    engine = NativeLRP(masked, ["emb", "block"])
    assert engine.stops == [] and engine.note == ""
    got, want = engine.relevance(x)["emb"], NativeLRP(unmasked, ["emb"]).relevance(x)["emb"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())  # the signal takes all

    inputs = layers.Input((5, 4))
    h = layers.Dense(6, name="proj")(inputs)
    by_op = keras.Model(inputs, layers.Dense(3, name="out")(ops.mean(h, axis=1)))
    by_layer = keras.Model(inputs, by_op.get_layer("out")(layers.GlobalAveragePooling1D()(h)))
    xs = np.random.default_rng(1).normal(size=(4, 5, 4)).astype("float32")
    op_engine = NativeLRP(by_op, ["proj"])
    assert op_engine.stops == [] and op_engine.blocked == []
    np.testing.assert_allclose(op_engine.relevance(xs)["proj"], NativeLRP(by_layer, ["proj"]).relevance(xs)["proj"],
                               rtol=1e-5, atol=1e-7)

    for cls, opened in ((ClassToken, True), (BroadcastClassToken, False)):
        h = cls(name="class_token")(layers.Dense(8, name="patch_proj")(inputs))
        head = layers.Dense(3, activation="softmax", name="head")(layers.MultiHeadAttention(2, 4)(h, h)[:, 0])
        engine = NativeLRP(keras.Model(inputs, head))
        if opened:
            assert engine.stops == [] and engine.blocked == []
            maps = engine.relevance(xs)
            assert np.abs(maps["patch_proj"]).sum() > 0 and np.isfinite(maps["patch_proj"]).all()
        else:
            assert engine.blocked == ["patch_proj"]
            assert "unknown (None) on symbolic tensors" in engine.note and "ops.zeros_like(x[:, :1, :])" in engine.note
            assert "\x1b[" not in engine.note


class HandDense(layers.Layer):
    """A dense layer written by hand: ``ops.matmul(x, self.w)`` (``+ self.b`` with ``use_bias``,
    as Keras's guide "Making new layers and models via subclassing" writes its ``Linear``)."""

    def __init__(self, units, use_bias=False, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.use_bias = use_bias

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="w")
        if self.use_bias:
            self.b = self.add_weight(shape=(self.units,), initializer="zeros", name="b")

    def call(self, x):
        return ops.matmul(x, self.w) + self.b if self.use_bias else ops.matmul(x, self.w)


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("analyzer", ["lrp.epsilon", "lrp.z", "lrp.alpha_2_beta_1"])
def test_a_dense_layer_written_with_ops_matmul_gets_the_dense_rule(analyzer, use_bias):
    """``ops.matmul(x, self.w)`` in a custom layer (found by an outside probe: kept whole, "no LRP
    rule") is a Dense layer: the same relevance as ``Dense`` with that kernel, at the layer and
    before it; with ``+ self.b`` after it, the bias is the Dense rule's (it absorbed nothing before:
    the addition passed relevance through)."""
    keras.utils.set_random_seed(4)
    inputs = layers.Input((5, 6))
    h = layers.Dense(7, activation="relu", name="before")(inputs)
    hand = keras.Model(inputs, layers.Dense(3, name="out")(layers.Flatten()(HandDense(4, use_bias, name="mine")(h))))
    _randomise(hand, 4)
    plain = layers.Dense(4, use_bias=use_bias, name="mine")
    ref_h = hand.get_layer("before")(inputs)
    ref = keras.Model(inputs, hand.get_layer("out")(layers.Flatten()(plain(ref_h))))
    plain.kernel.assign(hand.get_layer("mine").w)
    if use_bias:
        hand.get_layer("mine").b.assign(np.random.default_rng(5).normal(0, 0.5, 4).astype("float32"))
        plain.bias.assign(hand.get_layer("mine").b)
    x = np.random.default_rng(2).normal(size=(6, 5, 6)).astype("float32")
    np.testing.assert_allclose(ref.predict(x, verbose=0), hand.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    engine = NativeLRP(hand, ["before", "mine"], analyzer)
    assert engine.stops == [] and engine.blocked == []
    got, want = engine.relevance(x), NativeLRP(ref, ["before", "mine"], analyzer).relevance(x)
    for name in ("before", "mine"):
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5 * np.abs(want[name]).max(), err_msg=name)
