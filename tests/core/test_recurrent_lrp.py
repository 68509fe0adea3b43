"""LRP through LSTM, GRU, SimpleRNN and Bidirectional (Arras et al. 2017), on both Keras stacks.

The LSTM rule is checked against a NumPy transcription of the authors' reference code
(github.com/ArrasL/LRP_for_LSTM, ``LSTM_bidi.lrp`` and ``lrp_linear`` with ``bias_factor=0``); all
of them by relevance conservation where no bias absorbs any (``use_bias=False``), and by the
forward pass the rules read, which must be the layer's own.
"""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
layers = tf.keras.layers

from flowcallback.core.lrp import NativeLRP, recurrent  # noqa: E402

pytestmark = pytest.mark.both

CONFIGS = [dict(), dict(return_sequences=True), dict(go_backwards=True),
           dict(go_backwards=True, return_sequences=True)]
KINDS = [(layers.LSTM, "lstm", {}), (layers.GRU, "gru", {}), (layers.GRU, "gru", dict(reset_after=False)),
         (layers.SimpleRNN, "rnn", {})]


def _x(seed=0, shape=(6, 9, 3)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _randomise(layer, seed=1):
    """Weights of a trained layer's size, not the initialiser's (biases are zeros at first)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(scale=0.6, size=w.shape).astype("float32") for w in layer.get_weights()])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(c) or "default")
@pytest.mark.parametrize("cls, kind, extra", KINDS, ids=["lstm", "gru", "gru-reset-before", "rnn"])
def test_the_rules_read_the_layers_own_forward_pass(cls, kind, extra, config):
    """The gates and states the rules use are those Keras computes (gate order, biases, reversal)."""
    x = _x()
    layer = cls(5, **extra, **config)
    layer(x)
    _randomise(layer)
    mine = recurrent.recurrent_output(kind, layer, tf.constant(x)).numpy()
    np.testing.assert_allclose(mine, layer(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(c) or "default")
@pytest.mark.parametrize("cls, kind, extra", KINDS, ids=["lstm", "gru", "gru-reset-before", "rnn"])
def test_without_biases_the_input_sequence_gets_all_the_relevance(cls, kind, extra, config):
    x = _x(2)
    layer = cls(5, use_bias=False, **extra, **config)
    y = layer(x)
    _randomise(layer, seed=3)
    r = tf.constant(np.random.default_rng(4).normal(size=y.shape).astype("float32"))
    r_x = recurrent.recurrent_relevance(kind, layer, tf.constant(x), r, 1e-9).numpy()
    assert r_x.shape == x.shape
    assert r_x.sum() == pytest.approx(float(tf.reduce_sum(r)), rel=1e-4)
    # relevance runs back through time: the first step gets some of the last step's relevance
    assert np.abs(r_x[:, 0 if not config.get("go_backwards") else -1]).sum() > 0


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave"])
@pytest.mark.parametrize("sequences", [False, True])
def test_bidirectional_shares_the_relevance_between_the_directions(merge_mode, sequences):
    x = _x(5)
    layer = layers.Bidirectional(layers.LSTM(4, return_sequences=sequences, use_bias=False), merge_mode=merge_mode)
    y = layer(x)
    r = tf.constant(np.random.default_rng(6).normal(size=y.shape).astype("float32"))
    r_x = recurrent.bidirectional_relevance(layer, tf.constant(x), r, 1e-9).numpy()
    assert r_x.sum() == pytest.approx(float(tf.reduce_sum(r)), rel=1e-3)
    # concat: each direction alone gets exactly its half of the output's relevance
    if merge_mode == "concat":
        r_f, r_b = np.split(r.numpy(), 2, axis=-1)
        only_f = recurrent.bidirectional_relevance(layer, tf.constant(x), tf.concat([r_f, 0 * r_b], -1), 1e-9)
        assert float(tf.reduce_sum(only_f)) == pytest.approx(r_f.sum(), rel=1e-3)


# -- the reference: Arras et al.'s code, transcribed to NumPy (float64) with Keras's gate order --------------
def _lrp_linear(hin, w, b, hout, r_out, eps):
    """``lrp_linear`` of the reference code with ``bias_factor=0``: ``hin`` (D,), ``w`` (D, M)."""
    sign = np.where(hout >= 0, 1.0, -1.0)
    return ((w * hin[:, None]) / (hout + eps * sign)[None, :] * r_out[None, :]).sum(axis=1)


def _reference_lstm_lrp(x, kernel, recurrent_kernel, bias, r_last, eps):
    """``LSTM_bidi.lrp`` for one direction and one sample: ``x`` (T, e), relevance ``r_last`` of h[T-1]."""
    n_steps, d = len(x), recurrent_kernel.shape[0]
    i_, f_, g_, o_ = (np.arange(k * d, (k + 1) * d) for k in range(4))  # Keras's order: i, f, c, o
    h, c = np.zeros((n_steps + 1, d)), np.zeros((n_steps + 1, d))  # index -1 is the zero initial state
    gates, pre = np.zeros((n_steps, 4 * d)), np.zeros((n_steps, 4 * d))
    for t in range(n_steps):
        pre[t] = x[t] @ kernel + h[t - 1] @ recurrent_kernel + bias
        gates[t] = 1 / (1 + np.exp(-pre[t]))
        gates[t, g_] = np.tanh(pre[t, g_])
        c[t] = gates[t, f_] * c[t - 1] + gates[t, i_] * gates[t, g_]
        h[t] = gates[t, o_] * np.tanh(c[t])
    r_x = np.zeros_like(x)
    r_h, r_c = np.zeros((n_steps + 1, d)), np.zeros((n_steps + 1, d))
    r_h[n_steps - 1] = r_last
    eye, zero = np.identity(d), np.zeros(d)
    for t in reversed(range(n_steps)):
        r_c[t] += r_h[t]
        r_c[t - 1] = _lrp_linear(gates[t, f_] * c[t - 1], eye, zero, c[t], r_c[t], eps)
        r_g = _lrp_linear(gates[t, i_] * gates[t, g_], eye, zero, c[t], r_c[t], eps)
        r_x[t] = _lrp_linear(x[t], kernel[:, g_], bias[g_], pre[t, g_], r_g, eps)
        r_h[t - 1] = _lrp_linear(h[t - 1], recurrent_kernel[:, g_], bias[g_], pre[t, g_], r_g, eps)
    return r_x


def test_the_lstm_rule_equals_the_authors_reference_code():
    x = _x(7, (4, 8, 3)).astype("float64")
    layer = layers.LSTM(5, dtype="float64")
    y = layer(x)
    _randomise(layer, seed=8)
    kernel, recurrent_kernel, bias = (w.astype("float64") for w in layer.get_weights())
    r = np.random.default_rng(9).normal(size=y.shape)
    eps = 1e-3  # the reference code's default
    mine = recurrent.recurrent_relevance("lstm", layer, tf.constant(x), tf.constant(r), eps).numpy()
    for n in range(len(x)):
        ref = _reference_lstm_lrp(x[n], kernel, recurrent_kernel, bias, r[n], eps)
        np.testing.assert_allclose(mine[n], ref, rtol=1e-7, atol=1e-12)


# -- in the engine ---------------------------------------------------------------------------------------
def _text_model(mask_zero=False, vocabulary=50, steps=12):
    """A Keras-tutorial text classifier: token ids, an embedding, two bidirectional LSTMs."""
    inputs = tf.keras.Input((steps,), dtype="int32")
    h = layers.Embedding(vocabulary, 8, mask_zero=mask_zero)(inputs)
    h = layers.Bidirectional(layers.LSTM(6, return_sequences=True))(h)
    h = layers.Bidirectional(layers.GRU(5))(h)
    h = layers.Dense(8, activation="relu")(h)
    return tf.keras.Model(inputs, layers.Dense(3, activation="softmax")(h))


def test_a_text_classifier_gets_relevance_at_every_recurrent_layer_traced_as_eager():
    model = _text_model()
    ids = np.random.default_rng(10).integers(1, 50, size=(16, 12)).astype("int32")
    engine = NativeLRP(model)
    assert engine.stops == [] and engine.note == ""
    names = [layer.name for layer in model.layers]  # the default names Keras gave
    maps = engine.relevance(ids)
    assert maps[names[2]].shape == (16, 12, 12) and maps[names[3]].shape == (16, 10)
    assert maps[names[1]].shape == (16, 12, 8)  # the embedding's output: relevance per token and feature
    assert np.abs(maps[names[1]]).sum() > 0
    assert engine.compiled(16).verify(ids)  # the traced pass gives the eager relevance


def test_a_masked_input_gets_relevance_only_at_its_unmasked_steps():
    """Embedding(mask_zero=True), as TensorFlow's text-classification tutorial has it: padded
    steps keep the states (Keras's masking), get no relevance, and pass what reaches them on."""
    model = _text_model(mask_zero=True)
    ids = np.random.default_rng(11).integers(1, 50, size=(16, 12)).astype("int32")
    ids[:8, 7:] = 0  # post-padding
    ids[8:, :5] = 0  # pre-padding
    engine = NativeLRP(model)
    assert engine.stops == [] and engine.note == ""
    maps = engine.relevance(ids)
    embedding = maps[model.layers[1].name]
    assert np.all(embedding[ids == 0] == 0) and np.abs(embedding[ids != 0]).sum() > 0
    assert engine.compiled(16).verify(ids)


@pytest.mark.parametrize("cls, kind, extra", KINDS, ids=["lstm", "gru", "gru-reset-before", "rnn"])
@pytest.mark.parametrize("config", [dict(), dict(return_sequences=True, go_backwards=True)],
                         ids=["default", "sequences-backwards"])
def test_masked_steps_keep_the_state_and_pass_their_relevance_on(cls, kind, extra, config):
    x = _x(12)
    mask = np.ones(x.shape[:2], bool)
    mask[:3, 6:] = False
    mask[3:, :2] = False
    layer = cls(5, use_bias=False, **extra, **config)
    layer(x, mask=tf.constant(mask))
    _randomise(layer, seed=13)
    y = layer(x, mask=tf.constant(mask))
    mine = recurrent.recurrent_output(kind, layer, tf.constant(x), tf.constant(mask)).numpy()
    np.testing.assert_allclose(mine, y.numpy(), rtol=1e-5, atol=1e-6)
    r = tf.constant(np.random.default_rng(14).normal(size=y.shape).astype("float32"))
    r_x = recurrent.recurrent_relevance(kind, layer, tf.constant(x), r, 1e-9, tf.constant(mask), output=y).numpy()
    assert np.all(r_x[~mask] == 0)
    if not config:  # conserved: every step's relevance ends at the unmasked inputs (float32 sums)
        assert abs(r_x.sum() - float(tf.reduce_sum(r))) <= 1e-3 * float(tf.reduce_sum(tf.abs(r)))


def test_an_output_the_rules_do_not_reproduce_is_an_error_not_a_wrong_map():
    x = _x(15)
    layer = layers.LSTM(4)
    y = layer(x)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not the layer's own"):
        recurrent.recurrent_relevance("lstm", layer, tf.constant(x), tf.ones_like(y), 1e-7, output=y + 1.0)


def test_a_recurrent_layer_computing_in_float16_gets_the_float32_relevance():
    """Under a mixed-precision policy the LSTM computes in float16 and the rules in float32: the
    check of the forward pass allows float16's precision, and the relevance is that of float32."""
    ids = np.random.default_rng(16).integers(1, 50, size=(8, 10)).astype("int32")

    def build(dtype):
        tf.keras.utils.set_random_seed(17)
        inputs = tf.keras.Input((10,), dtype="int32")
        h = layers.Embedding(50, 8)(inputs)
        h = layers.LSTM(6, dtype=dtype)(h)
        return tf.keras.Model(inputs, layers.Dense(3, activation="softmax", dtype="float32")(h))

    full = build("float32")
    half = build(tf.keras.mixed_precision.Policy("mixed_float16"))
    half.set_weights(full.get_weights())
    assert half.layers[2].compute_dtype == "float16"
    a = NativeLRP(full).relevance(ids)[full.layers[1].name]
    b = NativeLRP(half).relevance(ids)[half.layers[1].name]
    np.testing.assert_allclose(b, a, rtol=0.05, atol=0.05 * np.abs(a).max())


def test_a_stateful_layer_leaves_the_model_without_lrp_and_says_why():
    """Found by an outside probe: the engine's first pass (one sample) raised Keras's batch-size
    error from on_train_begin, which stopped training; LRP is now skipped with the reason."""
    from flowcallback.core.lrp.engines import NativeEngine

    inputs = tf.keras.Input((10, 3), batch_size=4)
    model = tf.keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.LSTM(5, stateful=True)(inputs)))
    engine = NativeLRP(model)
    (name, cls, reason), = engine.unsupported
    assert cls == "LSTM" and reason.startswith("a stateful recurrent layer")
    with pytest.raises(RuntimeError, match="stateful"):
        NativeEngine().start(model, [model.layers[1].name], _x(18, (8, 10, 3)), batch_size=4)


def test_a_layer_returning_its_states_is_a_stop_with_its_reason():
    """Found by an outside probe: an LSTM whose output and cell state both feed the head was no
    stop (only some of its outputs are read), so relevance vanished there without a word."""
    inputs = tf.keras.Input((10, 3))
    h = layers.Dense(4, name="before")(inputs)
    out, _, cell = layers.LSTM(5, return_state=True, name="recurrent")(h)
    model = tf.keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.Concatenate()([out, cell])))
    engine = NativeLRP(model)
    assert [s[:2] for s in engine.stops] == [("recurrent", "LSTM")]
    assert "returns its states" in engine.stops[0][2] and engine.blocked == ["before"]
    assert "recurrent" in engine.relevance(_x(19, (4, 10, 3)))


def test_a_multi_hot_text_vectorization_feeds_relevance_to_the_dense_layers():
    """Found by an outside probe: the integer counts reached the epsilon rule uncast ("Cannot
    convert 1e-07 to EagerTensor of dtype int64") and LRP was skipped for the whole model."""
    texts = np.array(["a b c", "b b d", "a d", "c c c a"])
    for mode in ("multi_hot", "count"):
        encoder = layers.TextVectorization(output_mode=mode)
        encoder.adapt(texts)
        model = tf.keras.Sequential([encoder, layers.Dense(6, activation="relu"),
                                     layers.Dense(2, activation="softmax")])
        model(texts)
        maps = NativeLRP(model).relevance(texts)
        dense = model.layers[1].name
        assert maps[dense].shape == (4, 6) and np.isfinite(maps[dense]).all() and np.abs(maps[dense]).sum() > 0


def test_a_masked_embedding_computing_in_float16_keeps_its_mask_for_the_recurrent_layer():
    """tf.keras 2 keeps the mask on the embedding's output tensor: the engine's cast of a float16
    output to float32 dropped it, and the padded steps got relevance."""
    policy = tf.keras.mixed_precision.Policy("mixed_float16")
    inputs = tf.keras.Input((12,), dtype="int32")
    h = layers.Embedding(50, 8, mask_zero=True, dtype=policy)(inputs)
    h = layers.LSTM(6, dtype=policy)(h)
    model = tf.keras.Model(inputs, layers.Dense(3, activation="softmax", dtype="float32")(h))
    ids = np.random.default_rng(20).integers(1, 50, (8, 12)).astype("int32")
    ids[:, 8:] = 0
    maps = NativeLRP(model).relevance(ids)[model.layers[1].name]
    assert np.all(maps[ids == 0] == 0) and np.abs(maps[ids != 0]).sum() > 0
