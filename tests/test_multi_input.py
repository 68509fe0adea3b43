"""Models with several inputs, as people build them: an image with a table of metadata (Keras's
functional guide), and a Transformer that takes token ids and a padding mask (as keras_hub's
backbones do). The held-out x is one array per input: a dict keyed by the inputs' names, a list in
``model.inputs`` order, or a tf.data.Dataset of dicts.
"""
from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = tf.keras
layers = keras.layers

import flowcallback  # noqa: E402
from flowcallback import FlowCallback, load_run, snapshot  # noqa: E402
from flowcallback.core._inputs import Inputs  # noqa: E402

pytestmark = [pytest.mark.both]


def _meta(x, y):
    """Two metadata features per image: its mean brightness and a noisy parity of its label."""
    rng = np.random.default_rng(0)
    return np.c_[x.reshape(len(x), -1).mean(axis=1), (y % 2) ^ (rng.random(len(y)) < 0.2)].astype("float32")


def image_and_metadata_model():
    """Default layer names; the image branch and the metadata branch join at a Concatenate."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    image, meta = keras.Input((8, 8, 1), name="image"), keras.Input((2,), name="meta")
    h = layers.Flatten()(layers.Conv2D(8, 3, activation="relu")(image))
    m = layers.Dense(8, activation="relu")(meta)
    h = layers.Dense(32, activation="relu")(layers.Concatenate()([h, m]))
    model = keras.Model([image, meta], layers.Dense(10, activation="softmax")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def trained(digits):
    (x_tr, y_tr), (x_te, y_te) = digits
    model = image_and_metadata_model()
    model.fit({"image": x_tr, "meta": _meta(x_tr, y_tr)}, y_tr, epochs=3, verbose=0)
    return model, (x_te[:150], _meta(x_te[:150], y_te[:150]), y_te[:150])


def conserved(g):
    sums = g.flows.groupby("source_column")["count"].sum()
    return len(sums) == len(g.columns) - 1 and (sums == g.n_samples).all()


def test_a_dict_a_list_and_tf_data_of_several_inputs_give_the_same_snapshot(tmp_path, trained):
    model, (x, meta, y) = trained
    forms = {
        "dict": ({"meta": meta, "image": x}, y),  # keys in another order than the model's inputs
        "list": ([x, meta], y),
        "tf.data": tf.data.Dataset.from_tensor_slices(({"image": x, "meta": meta}, y)).batch(32),
    }
    graphs = {}
    for name, data in forms.items():
        snapshot(model, data, tmp_path / name, epoch=1, k=10, verbose=0)
        run = load_run(tmp_path / name)
        assert run.epochs == [1] and run.errors() == {}
        assert run.analyses(1) == ["activations", "lrp"]
        graphs[name] = {a: run.epoch(1, a) for a in run.analyses(1)}
    first = graphs["dict"]
    for analysis, g in first.items():
        assert conserved(g)
        assert len(g.column_names) - 2 == 5  # conv2d, dense (metadata), concatenate, dense_1, dense_2
        np.testing.assert_array_equal(g.predictions, model.predict([x, meta], verbose=0).argmax(axis=1))
        for other in ("list", "tf.data"):
            np.testing.assert_array_equal(graphs[other][analysis].assignments, g.assignments)
    note = " ".join(str(n) for n in first["activations"].notes)
    assert "branches start at its 2 inputs; join at concatenate (Concatenate)" in note
    views = load_run(tmp_path / "dict").views(1)
    assert views.thumbnails is not None and views.thumbnails.shape[1:] == (8, 8, 1)  # the image input's pictures


def test_relevance_takes_a_dict_of_inputs_as_the_list_in_model_order(trained):
    model, (x, meta, _) = trained
    by_list = flowcallback.relevance(model, [x, meta], backend="native")
    by_dict = flowcallback.relevance(model, {"meta": meta, "image": x}, backend="native")
    assert set(by_list) == set(by_dict) and "concatenate" in by_list
    for name in by_list:
        np.testing.assert_array_equal(by_dict[name], by_list[name])
    # the metadata branch gets relevance too: the join hands each input its own share
    assert np.abs(by_list["dense"]).sum() > 0 and np.abs(by_list["conv2d"]).sum() > 0


def test_several_inputs_held_out_in_any_key_order_are_one_held_out_set(trained):
    from flowcallback._plan import held_out_digest
    from flowcallback._validation import check_validation_data

    model, (x, meta, y) = trained
    a, _ = check_validation_data(({"image": x, "meta": meta}, y))
    b, _ = check_validation_data(({"meta": meta, "image": x}, y))
    assert isinstance(a, Inputs) and a.names == ("image", "meta") and b.names == ("meta", "image")
    ordered_a, ordered_b = a.for_model(model), b.for_model(model)
    for u, v in zip(ordered_a.arrays, ordered_b.arrays):
        np.testing.assert_array_equal(u, v)
    # the run records one digest for the set (a resume compares it), whatever the dict's key order,
    # and the same for the list of the same arrays
    assert held_out_digest(ordered_a, y) == held_out_digest(ordered_b, y) == held_out_digest(Inputs([x, meta]), y)
    assert held_out_digest(ordered_a, y) != held_out_digest(Inputs([x, meta + 1]), y)


def transformer_with_padding_mask(length=16, vocabulary=50):
    """As keras_hub's backbones: inputs named token_ids and padding_mask, the mask turned into the
    attention mask with keras.ops (operations, not layers), residual joins written ``h + a``."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    ids = keras.Input((length,), dtype="int32", name="token_ids")
    mask = keras.Input((length,), dtype="int32", name="padding_mask")
    h = layers.Embedding(vocabulary, 16)(ids)
    attention_mask = keras.ops.cast(mask[:, None, :], "bool")
    a = layers.MultiHeadAttention(num_heads=2, key_dim=8)(h, h, attention_mask=attention_mask)
    h = layers.LayerNormalization()(h + a)
    f = layers.Dense(16)(layers.Dense(32, activation="gelu")(h))
    h = layers.LayerNormalization()(h + f)
    h = layers.GlobalAveragePooling1D()(h)
    model = keras.Model({"token_ids": ids, "padding_mask": mask}, layers.Dense(2, activation="softmax")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.slow
def test_a_transformer_with_a_padding_mask_gets_lrp_flows_at_every_column(tmp_path):
    if not hasattr(keras, "ops"):
        pytest.skip("keras.ops is Keras 3")
    rng = np.random.default_rng(0)
    n, length = 500, 16
    mask = (np.arange(length)[None] < rng.integers(4, length + 1, n)[:, None]).astype("int32")
    ids = rng.integers(2, 50, (n, length)) * mask
    y = (ids[:, 0] > 25).astype("int32")
    model = transformer_with_padding_mask()
    held_out = ({"token_ids": ids[400:], "padding_mask": mask[400:]}, y[400:])
    cb = FlowCallback(held_out, log_dir=tmp_path, epochs=[0, 2], k=10, verbose=0)
    model.fit({"token_ids": ids[:400], "padding_mask": mask[:400]}, y[:400], epochs=2, verbose=0, callbacks=[cb])
    run = load_run(tmp_path)
    assert run.epochs == [0, 2] and run.errors() == {}
    act, lrp = run.epoch(2, "activations"), run.epoch(2, "lrp")
    assert lrp.column_names == act.column_names  # LRP reached every column
    assert {"multi_head_attention", "add", "add_1", "global_average_pooling1d"} <= set(act.column_names)
    assert conserved(act) and conserved(lrp)
    assert run.views(2).thumbnails is None  # no input is an image


def test_several_inputs_that_do_not_match_the_model_are_refused_before_training(tmp_path, digits, tally):
    (x_tr, y_tr), (x_te, y_te) = digits
    x, meta, y = x_te[:60], _meta(x_te[:60], y_te[:60]), y_te[:60]
    train = {"image": x_tr[:40], "meta": _meta(x_tr[:40], y_tr[:40])}
    cases = [
        ((x, y), r"^validation_data: x is one array of shape \(60, 8, 8, 1\), but the model has 2 inputs; pass one "
                 r"array per input"),
        (({"image": x, "metadata": meta}, y), r"^validation_data: x is a dict with keys \['image', 'metadata'\], "
                                              r"the model's inputs are keyed \['image', 'meta'\]"),
        (([x, meta, meta], y), r"^validation_data: x holds 3 arrays, the model has 2 input\(s\)"),
        (([meta, x], y), r"^validation_data: x's array 0 \(for input 0\) has per-sample shape \(2,\), but the model "
                         r"expects \(8, 8, 1\)"),
    ]
    for i, (data, match) in enumerate(cases):
        tally("bad inputs tried")
        model = image_and_metadata_model()
        cb = FlowCallback(data, log_dir=tmp_path / str(i), k=5, verbose=0)
        with pytest.raises(ValueError, match=match):
            model.fit(train, y_tr[:40], epochs=1, verbose=0, callbacks=[cb])
        assert not (tmp_path / str(i) / "run.json").exists()
    # the other way round: several arrays for a single-input model
    tally("bad inputs tried")
    single = keras.Sequential([keras.Input((2,)), layers.Dense(10, activation="softmax")])
    single.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = FlowCallback(([meta, meta], y), log_dir=tmp_path / "single", k=5, verbose=0)
    with pytest.raises(ValueError, match=r"^validation_data: x holds 2 arrays .* but the model has one input"):
        single.fit(meta, y, epochs=1, verbose=0, callbacks=[cb])


def test_explicit_innvestigate_backend_is_refused_for_several_inputs(tmp_path, trained):
    pytest.importorskip("innvestigate")
    model, (x, meta, y) = trained
    with pytest.raises(ValueError, match="^lrp_backend: 'innvestigate' runs here on single-input models"):
        snapshot(model, ([x, meta], y), tmp_path, lrp_backend="innvestigate", k=5, verbose=0)
    assert not (tmp_path / "run.json").exists()


def test_a_run_resumed_with_the_dict_in_another_key_order_or_a_list_continues(tmp_path, trained):
    model, (x, meta, y) = trained
    snapshot(model, ({"image": x, "meta": meta}, y), tmp_path, epoch=1, k=10, verbose=0)
    snapshot(model, ({"meta": meta, "image": x}, y), tmp_path, epoch=2, k=10, verbose=0)
    snapshot(model, ([x, meta], y), tmp_path, epoch=3, k=10, verbose=0)  # found by an outside probe
    run = load_run(tmp_path)
    assert run.epochs == [1, 2, 3] and run.errors() == {}
    for later in (2, 3):
        cmp = run.compare(1, later)  # the same held-out set: comparable, and the same weights change nothing
        assert (cmp.layers["changed_samples"] == 0).all()


@pytest.mark.slow
def test_a_structured_data_model_with_string_features_from_tf_data(tmp_path):
    """keras.io's structured-data tutorial's way: one Input per feature (a number, an integer code, a
    string category), preprocessing layers in the model, the data as a tf.data dataset of dicts."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = 500
    age = rng.normal(50, 10, (n, 1)).astype("float32")
    thal = rng.choice(["normal", "fixed", "reversible"], (n, 1))
    sex = rng.integers(0, 2, (n, 1))
    y = ((age[:, 0] > 50) ^ (thal[:, 0] == "fixed")).astype("int32")
    inputs = {"age": keras.Input((1,), name="age"), "thal": keras.Input((1,), name="thal", dtype="string"),
              "sex": keras.Input((1,), name="sex", dtype="int64")}
    norm = layers.Normalization()
    norm.adapt(age)
    lookup = layers.StringLookup(output_mode="one_hot")
    lookup.adapt(thal)
    codes = layers.IntegerLookup(output_mode="one_hot")
    codes.adapt(sex)
    h = layers.concatenate([norm(inputs["age"]), lookup(inputs["thal"]), codes(inputs["sex"])])
    h = layers.Dropout(0.2)(layers.Dense(16, activation="relu")(h))
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid")(h))
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    data = {"age": age, "thal": thal, "sex": sex}

    def dataset(part):
        return tf.data.Dataset.from_tensor_slices(({k: v[part] for k, v in data.items()}, y[part])).batch(32)

    cb = FlowCallback(dataset(slice(400, None)), log_dir=tmp_path, epochs=[0, 2], k=10, verbose=0)
    model.fit(dataset(slice(0, 400)), epochs=2, verbose=0, callbacks=[cb])
    run = load_run(tmp_path)
    assert run.epochs == [0, 2] and run.errors() == {}
    act, lrp = run.epoch(2, "activations"), run.epoch(2, "lrp")
    assert {"normalization", "concatenate", "dense"} <= set(act.column_names)
    assert lrp.column_names == act.column_names and conserved(act) and conserved(lrp)
    expected = (model.predict(dataset(slice(400, None)), verbose=0)[:, 0] > 0.5).astype(int)
    np.testing.assert_array_equal(act.predictions, expected)
    # relevance stops at the lookups (no rule), before every column: said once, no column lost
    assert any("StringLookup" in str(note) and "every column has its LRP flows" in str(note) for note in lrp.notes)


def test_the_callback_gives_back_the_held_out_inputs_as_a_dict(digits):
    (_, _), (x_te, y_te) = digits
    meta = _meta(x_te[:40], y_te[:40])
    x, labels = FlowCallback(({"meta": meta, "image": x_te[:40]}, y_te[:40]), log_dir="unused", verbose=0).held_out
    assert sorted(x) == ["image", "meta"]
    np.testing.assert_array_equal(x["image"], x_te[:40])
    np.testing.assert_array_equal(x["meta"], meta)
    np.testing.assert_array_equal(labels, y_te[:40])


# Found by an outside probe of several inputs (each was a crash, a failed snapshot or a refusal of
# what Keras takes).

def test_several_held_out_sets_of_several_inputs(tmp_path, digits, trained):
    model, (x, meta, y) = trained
    sets = {"first": ({"image": x[:70], "meta": meta[:70]}, y[:70]),
            "second": ({"meta": meta[70:], "image": x[70:]}, y[70:])}
    cb = FlowCallback(sets, log_dir=tmp_path, epochs=[0], k=5, verbose=0)
    (x_tr, y_tr), _ = digits
    model.fit({"image": x_tr[:64], "meta": _meta(x_tr[:64], y_tr[:64])}, y_tr[:64], epochs=1, verbose=0, callbacks=[cb])
    for name, (_, labels) in sets.items():
        run = load_run(tmp_path / name)
        assert run.epochs == [0] and run.errors() == {} and run.analyses(0) == ["activations", "lrp"]
        np.testing.assert_array_equal(run.epoch(0).labels, labels)


def test_a_subclassed_model_whose_call_reads_a_dict(tmp_path, digits):
    class TwoInputs(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv, self.flat = layers.Conv2D(4, 3, activation="relu"), layers.Flatten()
            self.meta, self.out = layers.Dense(4, activation="relu"), layers.Dense(10, activation="softmax")

        def call(self, inputs):
            h = layers.concatenate([self.flat(self.conv(inputs["image"])), self.meta(inputs["meta"])])
            return self.out(h)

    (x_tr, y_tr), (x_te, y_te) = digits
    keras.utils.set_random_seed(0)
    model = TwoInputs()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    held_out = {"image": x_te[:80], "meta": _meta(x_te[:80], y_te[:80])}
    cb = FlowCallback((held_out, y_te[:80]), log_dir=tmp_path, epochs=[1], k=5, verbose=0)
    model.fit({"image": x_tr[:100], "meta": _meta(x_tr[:100], y_tr[:100])}, y_tr[:100], epochs=1, verbose=0,
              callbacks=[cb])
    g = load_run(tmp_path).epoch(1)
    assert conserved(g)
    np.testing.assert_array_equal(g.predictions, model.predict(held_out, verbose=0).argmax(axis=1))


def test_what_keras_takes_for_several_inputs_is_taken(tmp_path):
    """A column of one value per sample (n,) for Input((1,)) and (n, 1) for Input(()), as pandas gives
    them; a float64 input into a Dense; a variable-length TextVectorization among the inputs, in
    several batches."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = 120
    words = np.array(["a", "b c", "d e f", "b", "c a b d e"])
    text = words[rng.integers(0, len(words), n)]
    age = rng.normal(size=n).astype("float32")
    flag = rng.normal(size=(n, 1)).astype("float32")
    dose = rng.normal(size=(n, 1))  # float64
    y = (age > 0).astype("int32")
    vectorize = layers.TextVectorization(max_tokens=20)
    vectorize.adapt(text)
    inputs = {"text": keras.Input((), dtype="string", name="text"), "age": keras.Input((1,), name="age"),
              "flag": keras.Input((), name="flag"), "dose": keras.Input((1,), dtype="float64", name="dose")}
    h = layers.GlobalAveragePooling1D()(layers.Embedding(20, 4)(vectorize(inputs["text"])))
    h = layers.concatenate([h, layers.Dense(4)(inputs["age"]), layers.Reshape((1,))(inputs["flag"]),
                            layers.Dense(2)(inputs["dose"])])
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.Dense(8, activation="relu")(h)))
    held_out = ({"text": text, "age": age, "flag": flag, "dose": dose}, y)
    snapshot(model, held_out, tmp_path, epoch=0, k=5, batch_size=32, verbose=0)
    run = load_run(tmp_path)
    assert run.epochs == [0] and run.errors() == {}, run.errors()
    act, lrp = run.epoch(0, "activations"), run.epoch(0, "lrp")
    assert conserved(act) and conserved(lrp)
    assert lrp.column_names == act.column_names  # LRP everywhere, through the float64 input's Dense too
    whole = model({"text": tf.constant(text), "age": tf.constant(age[:, None]), "flag": tf.constant(flag[:, 0]),
                   "dose": tf.constant(dose)}).numpy()
    np.testing.assert_array_equal(act.predictions, whole.argmax(axis=1))  # batches padded as the whole set


def test_relevance_names_its_own_argument(trained):
    model, (x, meta, _) = trained
    with pytest.raises(ValueError, match=r"^x: a dict with keys \['image', 'metadata'\]"):
        flowcallback.relevance(model, {"image": x, "metadata": meta}, backend="native")
