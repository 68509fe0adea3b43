"""Models beyond the paper: branches and joins, layers iNNvestigate cannot analyse, several inputs or outputs."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import flowcallback
from flowcallback import FlowCallback, load_run, snapshot
from flowcallback.core import capture, layergraph
from flowcallback.core.render import note_is_problem

pytestmark = [pytest.mark.slow, pytest.mark.both]
layers = tf.keras.layers


def conserved(g):
    sums = g.flows.groupby("source_column")["count"].sum()
    return len(sums) == len(g.columns) - 1 and (sums == g.n_samples).all()


def small_resnet():
    """A ResNet block as users write it: no ``name=`` anywhere (Keras's defaults: ``add``, ``conv2d``...)."""
    tf.keras.backend.clear_session()  # default names as in a fresh script: the Add is named exactly "add"
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((8, 8, 1))
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    r = layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    r = layers.Conv2D(8, 3, padding="same")(r)
    h = layers.Add()([h, r])
    h = layers.Activation("relu")(h)
    h = layers.GlobalAveragePooling2D()(h)
    out = layers.Dense(10, activation="softmax")(h)
    return tf.keras.Model(inp, out)


def inception():
    """An Inception block with Keras's default layer names."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(1)
    inp = tf.keras.Input((8, 8, 1))
    a = layers.Conv2D(4, 1, activation="relu")(inp)
    b = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    c = layers.MaxPooling2D(3, strides=1, padding="same")(inp)
    h = layers.Concatenate()([a, b, c])
    h = layers.Flatten()(h)
    out = layers.Dense(10, activation="softmax")(h)
    return tf.keras.Model(inp, out)


#: A line break in the notes under a diagram, as the page's JSON holds it: ``<br>``, between the colour
#: spans of two lines of a red note.
_NOTE_BREAK = re.compile(r'(\\u003c(/|\\u002f)span\\u003e)?\\u003cbr\\u003e'
                         r'(\\u003cspan style=\\"color:#a33\\"\\u003e)?')


def page_text(path) -> str:
    """An epoch page's HTML with the line breaks of its notes read as spaces (and "/" unescaped)."""
    return _NOTE_BREAK.sub(" ", Path(path).read_text("utf-8")).replace("\\u002f", "/")


def run_backend(log_dir) -> str:
    """The LRP engine that lrp_backend="auto" chose for a run: "innvestigate" or "native"."""
    import json

    engine = json.loads((log_dir / "run.json").read_text())["config"]["lrp_engine"]
    return "innvestigate" if engine.startswith("iNNvestigate") else "native"


def fit_with_callback(model, digits, log_dir, **kw):
    (x_tr, y_tr), (x_te, y_te) = digits
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = FlowCallback((x_te[:150], y_te[:150]), log_dir=log_dir, epochs=[1], k=8, verbose=0, **kw)
    model.fit(x_tr[:300], y_tr[:300], epochs=1, verbose=0, callbacks=[cb])
    return load_run(log_dir)


@pytest.mark.parametrize("build, join", [(small_resnet, None), (inception, "concatenate (Concatenate)")])
def test_branching_models_end_to_end(tmp_path, digits, build, join):
    """Columns follow a topological order; where two consecutive columns are parallel branches (the
    Inception block's), a note explains the layout; where every column feeds the next (the ResNet
    block's convolutions, its Add and what follows), there is nothing to explain."""
    model = build()
    run = fit_with_callback(model, digits, tmp_path)
    assert run.epochs == [1] and run.errors() == {}
    assert run.analyses(1) == ["activations", "lrp"]
    g = run.epoch(1)
    layer_columns = [c.name for c in g.columns if c.kind == "layer"]
    # columns follow a topological order of the selected layers
    dag = capture._layer_graph(model)
    pos = {n: i for i, n in enumerate(layer_columns)}
    for u, v in dag.edges:
        if u in pos and v in pos:
            assert pos[u] < pos[v], (u, v)
    assert set(layer_columns) == set(capture.select_layers(model))
    for a in run.analyses(1):
        ga = run.epoch(1, a)
        assert conserved(ga)
        branching = [n for n in ga.notes if n.startswith("Branching model")]
        assert (len(branching) == 1 and join in branching[0]) if join else branching == []
    page = page_text(tmp_path / "epoch_001.html")
    assert ("Branching model" in page and "topological order" in page) == bool(join)


def test_default_named_resnet_has_lrp_flows_at_every_epoch(tmp_path, digits):
    # iNNvestigate adds an Add layer of its own, which Keras also names "add": the worker must not
    # let it clash with the user's default-named layer (every epoch lost its LRP flows before).
    (x_tr, y_tr), (x_te, y_te) = digits
    model = small_resnet()
    assert "add" in [layer.name for layer in model.layers]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = FlowCallback((x_te[:150], y_te[:150]), log_dir=tmp_path, k=8, verbose=0, budget=None)
    model.fit(x_tr[:300], y_tr[:300], epochs=2, verbose=0, callbacks=[cb])
    run = load_run(tmp_path)
    assert run.epochs == [0, 1, 2] and run.errors() == {}
    for epoch in run.epochs:
        assert run.analyses(epoch) == ["activations", "lrp"]
        g = run.epoch(epoch, "lrp")
        assert conserved(g) and "add" in g.column_names
        assert not any("LRP" in n and "skipped" in n for n in g.notes)


def test_parallel_branches_are_marked_on_their_columns(tmp_path, digits):
    run = fit_with_callback(inception(), digits, tmp_path, lrp=False)
    g = run.epoch(1)
    notes = {c.name: c.note for c in g.columns}
    assert notes["conv2d"] == ""
    assert notes["conv2d_1"] == "parallel branch: not fed by conv2d"
    assert notes["max_pooling2d"] == "parallel branch: not fed by conv2d_1"
    assert notes["concatenate"] == ""  # fed by every branch


def test_batch_normalization_gets_activation_and_lrp_flows(tmp_path, digits):
    tf.keras.utils.set_random_seed(2)
    tf.keras.backend.clear_session()
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), layers.Conv2D(6, 3), layers.BatchNormalization(),
                                 layers.Activation("relu"), layers.Flatten(), layers.Dense(10, activation="softmax")])
    run = fit_with_callback(model, digits, tmp_path)
    assert run.analyses(1) == ["activations", "lrp"] and run.errors() == {}
    assert "batch_normalization" in run.epoch(1, "lrp").column_names and conserved(run.epoch(1, "lrp"))


KERAS3 = hasattr(tf.keras, "ops")  # tf.keras is Keras 3 on TensorFlow >= 2.16


class Scale(layers.Layer):
    """A custom layer: the LRP worker process cannot rebuild it from the model's config, and its
    call() is a TensorFlow function, which Keras 3 cannot follow as a graph of layers either."""

    def call(self, x):
        return tf.multiply(x, 2.0)


def test_a_layer_called_twice_is_one_column_where_it_is_first_called(tmp_path, digits):
    """Weight sharing (one layer called at two places) closes a cycle in the graph of layers; the
    callback stopped training from on_train_begin ("Graph contains a cycle"). The layer is one
    column, at its first call, holding that call's output; the flows conserve the samples."""
    tf.keras.utils.set_random_seed(4)
    inp = tf.keras.Input((8, 8, 1))
    h = layers.Dense(16, activation="relu", name="stem")(layers.Flatten(name="flat")(inp))
    shared = layers.Dense(16, activation="relu", name="shared")
    h = shared(layers.Dense(16, activation="relu", name="mid")(shared(h)))
    model = tf.keras.Model(inp, layers.Dense(10, activation="softmax", name="out")(h))
    assert capture.choose_columns(model).names == ("stem", "shared", "mid", "out")
    run = fit_with_callback(model, digits, tmp_path)
    assert run.epochs == [1] and 1 not in run.errors()
    activations = run.epoch(1)
    assert conserved(activations) and activations.column_names[:4] == ("stem", "shared", "mid", "out")
    # the column says which call it shows (found by an outside probe: a siamese encoder's second call
    # was silently left out)
    notes = {c.name: c.note for c in activations.columns}
    assert "called at 2 places (shared weights): the column shows its first call" in notes["shared"]
    assert not notes["mid"] or "called at" not in notes["mid"]
    first_call = tf.keras.Model(inp, model.get_layer("stem").output)  # the shared layer's first output
    x = digits[1][0][:150]
    values = np.asarray(layergraph.trace(model).run(x, keep=["shared"])["shared"])  # what the capture reads
    np.testing.assert_allclose(values, shared(first_call(x)).numpy(), rtol=1e-5, atol=1e-6)
    assert run.analyses(1) == ["activations", "lrp"] and conserved(run.epoch(1, "lrp"))


@pytest.mark.parametrize("odd", ["custom", "lambda", "hidden softmax"])
def test_a_layer_without_an_lrp_rule_stops_relevance_there(tmp_path, digits, odd, tally):
    """The model is not refused: the layers after the stop keep their LRP flows, those before it
    have activation flows only, and the note says which and why (on both stacks: where
    iNNvestigate refuses the model, lrp_backend="auto" uses the native engine)."""
    tally("bad inputs tried")
    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input((8, 8, 1))
    h = layers.Conv2D(6, 3, activation="relu", name="conv")(inp)
    if odd == "custom":
        h = Scale(name="scale")(h)
    elif odd == "lambda":
        h = layers.Lambda(lambda t: 2.0 * t, name="scale")(h)
    else:
        h = layers.Activation("softmax", name="scale")(h)
    h = layers.Flatten()(h)
    out = layers.Dense(10, activation="softmax", name="out")(h)
    model = tf.keras.Model(inp, out)
    with pytest.warns(RuntimeWarning, match="LRP relevance stops at layers without an LRP rule"):
        run = fit_with_callback(model, digits, tmp_path)
    assert run.epochs == [1] and run.analyses(1) == ["activations", "lrp"]
    assert 1 not in run.errors()  # the epoch did not fail
    assert run_backend(tmp_path) == "native"
    activations, lrp = run.epoch(1), run.epoch(1, "lrp")
    assert conserved(activations) and conserved(lrp)
    assert "conv" in activations.column_names and "scale" in activations.column_names
    assert "conv" not in lrp.column_names and "scale" in lrp.column_names and "out" in lrp.column_names
    cls = {"custom": "Scale", "lambda": "Lambda", "hidden softmax": "Activation"}[odd]
    note = [n for n in lrp.notes if n.startswith("LRP relevance stops")]
    assert len(note) == 1 and f"{cls} ×1 (scale: " in note[0] and "no LRP flows: conv" in note[0]
    assert not any(n.startswith("LRP relevance stops") for n in activations.notes)


def test_a_stop_at_the_input_side_loses_no_column_and_is_not_warned_of(tmp_path, digits):
    """A layer without a rule that reads the model's input (a custom scaling, a Discretization, a
    tutorial's token embedding) leaves no selected layer without relevance: the note says so as
    information, and no RuntimeWarning suggests that LRP is degraded."""
    import warnings

    tf.keras.utils.set_random_seed(3)
    inp = tf.keras.Input((8, 8, 1))
    h = Scale(name="scale")(inp)
    h = layers.Conv2D(6, 3, activation="relu", name="conv")(h)
    out = layers.Dense(10, activation="softmax", name="out")(layers.Flatten()(h))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = fit_with_callback(tf.keras.Model(inp, out), digits, tmp_path, lrp_backend="native")
    assert not [w for w in caught if "LRP" in str(w.message)], [str(w.message) for w in caught]
    lrp = run.epoch(1, "lrp")
    assert conserved(lrp) and {"scale", "conv", "out"} <= set(lrp.column_names)
    (note,) = [n for n in lrp.notes if n.startswith("LRP relevance stops")]
    assert "Scale ×1 (scale: a custom layer class" in note
    assert ("gives a symbolic tensor to a TensorFlow function" if KERAS3 else "with the functional API") in note
    assert note.endswith("No layer shown lies before them: every column has its LRP flows") and note.kind == "info"


class TokenAndPositionEmbedding(layers.Layer):
    """keras.io's text-classification Transformer, as the tutorial writes it: arguments in
    ``__init__``, layers inside, no ``get_config`` of its own (Keras 3's config then has no name)."""

    def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        positions = tf.range(start=0, limit=tf.shape(x)[-1], delta=1)
        return self.token_emb(x) + self.pos_emb(positions)


class TransformerBlock(layers.Layer):
    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = tf.keras.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
        self.norm1, self.norm2 = layers.LayerNormalization(epsilon=1e-6), layers.LayerNormalization(epsilon=1e-6)
        self.drop1, self.drop2 = layers.Dropout(rate), layers.Dropout(rate)

    def call(self, inputs, training=None):
        out1 = self.norm1(inputs + self.drop1(self.att(inputs, inputs), training=training))
        return self.norm2(out1 + self.drop2(self.ffn(out1), training=training))


class Projection(layers.Layer):
    def __init__(self, units, **kw):  # not "**kwargs": Keras 3's automatic config then drops the name
        super().__init__(**kw)
        self.dense = layers.Dense(units, activation="relu")

    def call(self, x):
        return self.dense(x)


def test_the_keras_tutorial_transformer_with_custom_layers_trains_and_gets_its_flows(tmp_path, tally):
    """Custom layers with constructor arguments, named or not (the keras.io tutorial's): the callback
    never stops the training (Keras 3 left a custom layer's name out of its config, the model's
    private copy for LRP had another name, and on_train_begin raised). On Keras 3 relevance follows
    the layers inside the custom layers' call() (tests/core/test_custom_layers.py), so every column
    has its LRP flows; the token embedding, whose call() uses TensorFlow functions, is a stop at the
    input's side, noted without a warning. On Keras 2 relevance stops at the custom layers with a
    warning, and the layers after them keep their LRP flows."""
    tally("bad inputs tried")
    tf.keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    maxlen, vocab = 12, 50
    x = rng.integers(1, vocab, size=(400, maxlen))
    y = (x < 10).any(axis=1).astype(np.int64)  # a low token anywhere: class 1
    inputs = tf.keras.Input(shape=(maxlen,))
    h = TokenAndPositionEmbedding(maxlen, vocab, 16)(inputs)
    h = TransformerBlock(16, 2, 16)(h)
    h = layers.GlobalAveragePooling1D()(h)
    h = layers.Dropout(0.1)(h)
    h = Projection(20, name="head")(h)  # named, as users often do
    outputs = layers.Dense(2, activation="softmax")(h)
    model = tf.keras.Model(inputs, outputs)
    # what made the private copy differ: Keras 3 leaves this layer's name out of its config
    assert "name" not in model.get_layer("head").get_config() or not hasattr(tf.keras, "ops")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    cb = FlowCallback((x[300:], y[300:]), log_dir=tmp_path, epochs=[1], k=8, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x[:300], y[:300], epochs=1, verbose=0, callbacks=[cb])
    lrp_warnings = [str(w.message) for w in caught if "LRP" in str(w.message)]
    assert bool(lrp_warnings) is not KERAS3, lrp_warnings
    assert len(history.history["loss"]) == 1
    run = load_run(tmp_path)
    assert run.epochs == [1] and 1 not in run.errors()
    activations = run.epoch(1)
    assert conserved(activations)
    names, out = activations.column_names, model.layers[-1].name  # "dense_<n>": Keras numbers default names
    embedding, block = model.layers[1].name, model.layers[2].name  # numbered where other tests made these classes
    assert embedding.startswith("token_and_position_embedding") and block.startswith("transformer_block")
    assert embedding in names and block in names and "head" in names
    assert run.analyses(1) == ["activations", "lrp"]
    lrp = run.epoch(1, "lrp")
    (note,) = [n for n in lrp.notes if n.startswith("LRP relevance stops")]
    if KERAS3:
        assert conserved(lrp) and set(lrp.column_names) == set(names), (lrp.column_names, names)
        assert "TokenAndPositionEmbedding ×1" in note and "TransformerBlock" not in note and "Projection" not in note
        assert note.endswith("every column has its LRP flows") and note.kind == "info"
    else:
        assert conserved(lrp) and lrp.column_names[:2] == ("head", out)
        assert "Projection" in note


def test_the_keras_tutorial_bidirectional_lstm_gets_lrp_flows_at_every_layer(tmp_path, tally):
    """The keras.io text classifier (token ids, an Embedding, two Bidirectional LSTMs), trained on
    sequences whose class is a keyword token somewhere in them: relevance runs back through both
    recurrent layers (Arras et al. 2017) to the embedding, with no stop and no warning, also with a
    masked embedding (mask_zero=True) over padded sequences, as TensorFlow's tutorial has it."""
    tally("bad inputs tried")
    tf.keras.utils.set_random_seed(6)
    rng = np.random.default_rng(6)
    n, steps, vocab = 500, 16, 40
    x = rng.integers(4, vocab, size=(n, steps))
    y = rng.integers(0, 3, n)
    x[np.arange(n), rng.integers(0, steps - 5, n)] = 1 + y  # the class's keyword, somewhere
    x[::2, -rng.integers(1, 5):] = 0  # half the sequences padded at the end (0: the padding token)
    for mask_zero in (False, True):
        inputs = tf.keras.Input((steps,), dtype="int32")
        h = layers.Embedding(vocab, 16, mask_zero=mask_zero)(inputs)
        h = layers.Bidirectional(layers.LSTM(16, return_sequences=True))(h)
        h = layers.Bidirectional(layers.LSTM(16))(h)
        model = tf.keras.Model(inputs, layers.Dense(3, activation="softmax")(layers.Dense(16, "relu")(h)))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        log_dir = tmp_path / f"mask_{mask_zero}"
        cb = FlowCallback((x[350:], y[350:]), log_dir=log_dir, epochs=[2], k=8, verbose=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x[:350], y[:350], epochs=2, verbose=0, callbacks=[cb])
        said = [str(w.message) for w in caught if "FlowCallback" in str(w.message)]
        run = load_run(log_dir)
        assert run.analyses(2) == ["activations", "lrp"]
        lrp = run.epoch(2, "lrp")
        assert conserved(lrp)
        embedding, first, second = (layer.name for layer in model.layers[1:4])  # Keras's default names
        assert said == [] and not any("stops" in note for note in lrp.notes), (said, lrp.notes)
        assert {embedding, first, second} <= set(lrp.column_names)
        assert not any(note_is_problem(note) for note in lrp.notes), lrp.notes


@pytest.mark.parametrize("held_out", ["dataset", "arrays"])
def test_the_tensorflow_rnn_tutorial_reads_raw_text_and_gets_lrp_flows(tmp_path, held_out, tally):
    """TensorFlow's "Text classification with an RNN" model, as the tutorial builds it: raw strings
    in a tf.data pipeline, a TextVectorization adapted to them, Embedding(mask_zero=True), a
    Bidirectional LSTM, a logit. The held-out text was refused ("x must be numeric"), and the
    model's private copy for LRP had an empty vocabulary ("Table not initialized"): LRP was skipped."""
    tally("bad inputs tried")
    tf.keras.utils.set_random_seed(8)
    rng = np.random.default_rng(8)
    filler = ["the", "a", "movie", "plot", "was", "actor", "scene", "and"]
    y = rng.integers(0, 2, 360)
    text = []
    for label in y:
        words = list(rng.choice(filler, size=rng.integers(3, 12)))
        words.insert(int(rng.integers(0, len(words) + 1)), "great" if label else "awful")
        text.append(" ".join(words))
    text = np.array(text)
    encoder = layers.TextVectorization(max_tokens=50)
    encoder.adapt(text[:260])
    model = tf.keras.Sequential([
        encoder,
        layers.Embedding(len(encoder.get_vocabulary()), 16, mask_zero=True),
        layers.Bidirectional(layers.LSTM(16)),
        layers.Dense(16, activation="relu"),
        layers.Dense(1),
    ])
    model.compile(loss=tf.keras.losses.BinaryCrossentropy(from_logits=True), optimizer="adam", metrics=["accuracy"])
    train = tf.data.Dataset.from_tensor_slices((text[:260], y[:260])).batch(32)
    val = (tf.data.Dataset.from_tensor_slices((text[260:], y[260:])).batch(32) if held_out == "dataset"
           else (list(text[260:]), y[260:]))
    # batches of 24 texts: the vectorizer pads each to its own longest text, unless the callback
    # makes every batch as long as the longest of the set (found by an outside probe: every
    # snapshot of a held-out set larger than one batch failed, "batches have 320 features, earlier ones 224")
    cb = FlowCallback(val, log_dir=tmp_path / "run", epochs=[2], k=8, verbose=0, batch_size=24)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(train, epochs=2, verbose=0, callbacks=[cb])
    assert [str(w.message) for w in caught if "FlowCallback" in str(w.message)] == []
    run = load_run(tmp_path / "run")
    assert run.analyses(2) == ["activations", "lrp"] and run.errors() == {}
    names = [layer.name for layer in model.layers]  # Keras's default names
    for analysis in ("activations", "lrp"):
        g = run.epoch(2, analysis)
        assert conserved(g) and g.n_samples == 100
        # the token ids are no column; the embedding, the LSTM and the head are
        assert list(g.column_names[:-2]) == names[1:], g.column_names
        assert not any(note_is_problem(note) for note in g.notes), g.notes
    # the scripting entry point: text in batches gives the relevance of the whole set in one batch
    texts = list(text[260:])
    whole = flowcallback.relevance(model, texts, batch_size=None, backend="native")
    batched = flowcallback.relevance(model, texts, batch_size=24, backend="native")
    assert whole.keys() == batched.keys() and names[1] in whole
    for name in whole:
        np.testing.assert_allclose(batched[name], whole[name], rtol=1e-4, atol=1e-6 * np.abs(whole[name]).max())


def test_a_long_reason_for_skipping_lrp_is_cut_at_a_word_and_kept_whole_in_the_errors(tmp_path, digits, monkeypatch):
    """The LRP engine refuses the model at set-up with a reason naming forty layers (injected, so that
    the test does not depend on which layers the engine accepts): the note and the warning give its
    first 400 characters, cut between words, and say where the whole of it is; ``run.errors()["setup"]``
    and the run page have it."""
    import json

    from flowcallback.core.lrp import engines

    names = [f"scale_{i:03d}" for i in range(40)]
    reason = "the native LRP engine cannot analyse layer(s) " + "; ".join(
        f"{n} (Lambda: no LRP rule for this layer class)" for n in names)

    def refuse(self, *args, **kwargs):
        raise RuntimeError(reason)

    monkeypatch.setattr(engines.NativeEngine, "start", refuse)
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(5)
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), layers.Flatten(name="flat"),
                                 layers.Dense(16, activation="relu", name="hidden"),
                                 layers.Dense(10, activation="softmax", name="out")])
    with pytest.warns(RuntimeWarning, match="LRP skipped for the whole model") as caught:
        run = fit_with_callback(model, digits, tmp_path, lrp_backend="native")
    setup = run.errors()["setup"]
    assert list(run.errors()) == ["setup"] and f"RuntimeError: {reason}" in setup  # the whole reason
    (note,) = [n for n in run.epoch(1).notes if n.startswith("LRP skipped for the whole model")]
    head, pointer = note.split("…")
    assert pointer == " (the whole message: errors/setup.txt)" and len(head) < 460
    kept = head.split("activation flows only: ", 1)[1]
    assert reason.startswith(kept) and reason[len(kept)] in " ,;:"  # cut between two words
    assert any(note in str(w.message) for w in caught)  # the warning says the same
    assert "the whole message: errors/setup.txt" in page_text(tmp_path / "epoch_001.html")
    data = json.loads(re.search(r'<script id="run-data" type="application/json">(.*?)</script>',
                                (tmp_path / "index.html").read_text("utf-8"), re.S).group(1))
    assert data["setup_error"].startswith("RuntimeError: the native LRP engine cannot analyse layer(s) scale_000")


def test_a_model_with_very_many_branch_points_is_read_back(tmp_path):
    """150 residual joins (a DenseNet121 has 58, a ResNet152 50): the branch note names the first
    layers and counts the others, so the run loads (the note of every fork and join did not)."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(6)
    inp = tf.keras.Input((8,))
    h = layers.Dense(8, activation="tanh", name="stem")(inp)
    for i in range(150):  # two parallel branches per block, so that two columns can be parallel
        left = layers.Dense(8, activation="tanh", name=f"left_{i:03d}")(h)
        h = layers.Add(name=f"join_{i:03d}")([left, layers.Dense(8, activation="tanh", name=f"branch_{i:03d}")(h)])
    model = tf.keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(6)
    x = rng.normal(size=(240, 8)).astype("float32")
    y = np.argmax(x[:, :3], axis=1)
    cb = FlowCallback((x[120:], y[120:]), log_dir=tmp_path, epochs=[1], k=5, lrp=False, verbose=0,
                      layers=["stem", "left_074", "branch_074", "join_149", "out"])
    model.fit(x[:120], y[:120], epochs=1, batch_size=60, verbose=0, callbacks=[cb])
    run = load_run(tmp_path)
    assert run.epochs == [1] and run.errors() == {}
    g = run.epoch(1)
    assert g.column_names == ("stem", "left_074", "branch_074", "join_149", "out", "Prediction", "Ground truth")
    assert conserved(g) and g.columns[2].note == "parallel branch: not fed by left_074"
    (note,) = [n for n in g.notes if n.startswith("Branching model")]
    assert note.startswith("Branching model (branches split at stem, join_000, join_001, join_002, join_003 and 145 "
                           "more; join at join_000 (Add), join_001 (Add), join_002 (Add), join_003 (Add), join_004 "
                           "(Add) and 145 more). Columns follow one topological order")
    assert len(note) < 500
    assert "and 145 more" in page_text(tmp_path / "epoch_001.html")


def test_multi_input_model_with_one_array_is_refused_at_train_begin(tmp_path, digits, tally):
    """Several inputs are supported (tests/test_multi_input.py); one array for them is refused by name."""
    tally("bad inputs tried")
    (x_tr, y_tr), (x_te, y_te) = digits
    a, b = tf.keras.Input((8, 8, 1)), tf.keras.Input((8, 8, 1))
    h = layers.Concatenate()([layers.Flatten()(a), layers.Flatten()(b)])
    model = tf.keras.Model([a, b], layers.Dense(10, activation="softmax")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = FlowCallback((x_te[:60], y_te[:60]), log_dir=tmp_path, k=5, verbose=0)
    with pytest.raises(ValueError, match=r"^validation_data: x is one array of shape \(60, 8, 8, 1\), but the model "
                                         r"has 2 inputs; pass one array per input"):
        model.fit([x_tr[:50], x_tr[:50]], y_tr[:50], epochs=1, verbose=0, callbacks=[cb])
    assert not (tmp_path / "run.json").exists()


def test_multi_output_model_is_refused_at_train_begin(tmp_path, digits, tally):
    tally("bad inputs tried")
    (x_tr, y_tr), (x_te, y_te) = digits
    inp = tf.keras.Input((8, 8, 1))
    h = layers.Flatten()(inp)
    model = tf.keras.Model(inp, [layers.Dense(10, activation="softmax")(h), layers.Dense(2, activation="softmax")(h)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = FlowCallback((x_te[:60], y_te[:60]), log_dir=tmp_path, k=5, verbose=0)
    with pytest.raises(ValueError,
                       match="model: FlowCallback supports single-output classifiers; this model has 2 outputs"):
        model.fit(x_tr[:50], [y_tr[:50], y_tr[:50] % 2], epochs=1, verbose=0, callbacks=[cb])
    assert not (tmp_path / "run.json").exists()


class SkipNet(tf.keras.Model):
    """A subclassed model whose call() is not a chain of its layers (a skip connection)."""

    def __init__(self):
        super().__init__()
        self.c1 = layers.Conv2D(8, 3, padding="same", activation="relu")
        self.c2 = layers.Conv2D(8, 3, padding="same")
        self.gap = layers.GlobalAveragePooling2D()
        self.head = layers.Dense(10, activation="softmax")

    def call(self, x, training=False):
        h = self.c1(x)
        h = h + self.c2(h)
        return self.head(self.gap(h))


def test_subclassed_model_gets_activation_flows_of_its_own_data_path(tmp_path, digits):
    from flowcallback.core.embed import embed

    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(4)
    (x_tr, y_tr), (x_te, y_te) = digits
    model = SkipNet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.warns(RuntimeWarning, match="LRP skipped for the whole model"):
        run = fit_with_callback(model, digits, tmp_path)
    assert run.epochs == [1] and run.analyses(1) == ["activations"] and list(run.errors()) == ["setup"]
    # run.json and the run page offer no LRP view that has nothing to show (found by an outside probe)
    assert run.info["analyses"] == ["activations"] and run.info["config"]["lrp_engine"] is None
    page = (run.path / "index.html").read_text("utf-8")
    assert '"analyses":["activations"]' in page.replace(" ", "")
    g = run.epoch(1)
    assert g.column_names[:4] == ("conv2d", "conv2d_1", "global_average_pooling2d", "dense") and conserved(g)
    note = [n for n in g.notes if n.startswith("LRP skipped")]
    assert len(note) == 1 and ("SkipNet" in note[0])  # says which model and why
    np.testing.assert_array_equal(g.predictions, np.argmax(model.predict(x_te[:150], verbose=0), axis=1))
    # the recorded maps are the outputs on the model's own path (c2 is fed c1's output), and the
    # layers' call methods are the classes' own again afterwards
    names = ["conv2d", "conv2d_1", "global_average_pooling2d"]
    emb, _ = capture.capture_activations(model, x_te[:40], names, embed_options={"reduce": None})
    h1 = model.c1(x_te[:40])
    np.testing.assert_allclose(emb["conv2d"], embed(np.asarray(h1)), atol=1e-6)
    np.testing.assert_allclose(emb["conv2d_1"], embed(np.asarray(model.c2(h1))), atol=1e-6)
    assert all("call" not in vars(layer) for layer in model.layers)


def test_model_loaded_from_a_keras_file_gets_both_analyses(tmp_path, digits):
    model = small_resnet()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    run = fit_with_callback(loaded, digits, tmp_path / "run")
    assert run.epochs == [1] and run.analyses(1) == ["activations", "lrp"] and run.errors() == {}
    assert conserved(run.epoch(1, "lrp")) and "add" in run.epoch(1, "lrp").column_names


def test_all_layers_of_a_four_hundred_layer_model(tmp_path, tally):
    """layers="all" on a 400-layer model works; the set-up warning gives the column count and the
    estimated cost; by default the same model shows at most 24 block outputs."""
    tally("bad inputs tried")
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(8)
    inp = tf.keras.Input((6,))
    h = inp
    for i in range(399):
        h = layers.Dense(4, activation="tanh", name=f"d{i:03d}")(h)
    model = tf.keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(8)
    x = rng.normal(size=(120, 6)).astype("float32")
    y = np.argmax(x[:, :3], axis=1)
    assert len(capture.select_layers(model)) == 24
    # snapshot() takes the callback's snapshot without training (tracing fit for 400 layers takes a minute)
    with pytest.warns(RuntimeWarning, match=r"layers='all': 400 columns .* about \d+ s on 2 cores for 60 samples"):
        snapshot(model, (x[60:], y[60:]), tmp_path, epoch=1, k=5, lrp=False, projection=None, class_means=False,
                 layers="all", verbose=0)
    run = load_run(tmp_path)
    g = run.epoch(1)
    assert len([c for c in g.columns if c.kind == "layer"]) == 400 and conserved(g)
    assert run.info["columns"]["rule"] == "all" and run.info["columns"]["eligible_layers"] == 400


def test_the_text_example_finds_the_word_that_decides_each_review(tmp_path, capsys):
    """examples/text_rnn.py end to end: TensorFlow's RNN tutorial model on generated reviews, each
    decided by one cue word at a random place. Trained, the model's LRP relevance at the embedding
    (back through the masked Bidirectional LSTM) points at that word in nearly every held-out review:
    what LRP through recurrent layers is for, checked on its outcome."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "text_rnn", Path(__file__).resolve().parent.parent / "examples" / "text_rnn.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(["--samples", "900", "--held-out", "200", "--epochs", "3", "--log-dir", str(tmp_path / "t")])
    assert result["epochs"] == [0, 1, 2, 3] and result["analyses"] == ["activations", "lrp"]
    assert result["cue_share"] >= 0.9, result
    printed = capsys.readouterr().out
    assert "The relevance points at the review's cue word in" in printed
    run = load_run(tmp_path / "t")
    assert conserved(run.epoch(3, "lrp")) and run.epoch(3, "lrp").class_names == ("negative", "positive")


@pytest.mark.skipif(not KERAS3, reason="the layer is written with keras.ops (Keras 3)")
def test_a_model_that_cannot_be_copied_gets_lrp_while_training_waits(tmp_path, digits):
    """keras.io's Vision Transformer as written there: its PatchEncoder's get_config() leaves out an
    __init__ argument, so no private copy of the model can be made and LRP was skipped for the
    whole model. The engine now reads the model itself: each snapshot runs while training waits
    (in the background the weights would have moved on), and the pages say why."""
    from keras_io import PatchEncoder  # keras.io's ViT layer as written there (tests/keras_io.py)

    tf.keras.utils.set_random_seed(8)
    inp = tf.keras.Input((8, 8, 1))
    h = layers.Dense(8, name="pixels")(layers.Reshape((8, 8), name="rows")(inp))  # each image row a patch
    h = PatchEncoder(8, 16)(h)
    h = layers.LayerNormalization(name="norm")(h)
    h = layers.Dense(16, activation="relu", name="mlp")(layers.GlobalAveragePooling1D(name="pool")(h))
    model = tf.keras.Model(inp, layers.Dense(10, activation="softmax", name="out")(h))
    (x_tr, y_tr), (x_te, y_te) = digits
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = FlowCallback((x_te[:150], y_te[:150]), log_dir=tmp_path, epochs=[1, 2], k=8, verbose=0)
    with pytest.warns(RuntimeWarning, match="LRP reads the model itself, as it cannot be copied .*projection_dim"):
        model.fit(x_tr[:300], y_tr[:300], epochs=3, verbose=0, callbacks=[cb])
    run = load_run(tmp_path)
    assert run.epochs == [1, 2] and run.errors() == {}
    for epoch in (1, 2):  # epoch 1's LRP ran before epoch 2 trained: in the background it would have failed
        lrp = run.epoch(epoch, "lrp")
        # PatchEncoder's call() is followed (its position embedding held, made again from each epoch's
        # weights), so relevance reaches the patches' projection before it
        assert conserved(lrp) and {"pixels", "patch_encoder", "norm", "pool", "mlp", "out"} <= set(lrp.column_names)
        assert not any("stops" in n for n in lrp.notes), lrp.notes
        assert any(n.startswith("LRP reads the model itself") and "while training waits" in n for n in lrp.notes)
