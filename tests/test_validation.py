"""Bad input gets an error that names the argument and says what was expected."""
from __future__ import annotations

import numpy as np
import pytest

from flowcallback import FlowCallback

pytestmark = [pytest.mark.slow, pytest.mark.both]


@pytest.fixture(scope="module")
def small(digits):
    (x_tr, y_tr), (x_te, y_te) = digits
    return x_tr[:200], y_tr[:200], x_te[:100], y_te[:100]


@pytest.fixture(scope="module")
def model():
    from flowcallback.demo import lenet5_digits

    return lenet5_digits()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=0), "epochs"),
        (dict(epochs=[-1]), "epochs"),
        (dict(epochs="all"), "epochs"),
        (dict(k=0), "k"),
        (dict(k="many"), "k"),
        (dict(inflation=1.0), "inflation"),
        (dict(analyzer="gradient"), "analyzer"),
        (dict(analyzer="lrp.nonexistent"), r"analyzer: expected one of the LRP analyzers \[.*'lrp.epsilon'"),
        (dict(lrp_backend="torch"), r"^lrp_backend: expected 'auto', 'native' or 'innvestigate', got 'torch'"),
        (dict(layers="conv1"), "layers"),
        (dict(on_error="ignore"), "on_error"),
        (dict(verbose=5), "verbose"),
        (dict(batch_size=0), "batch_size"),
        (dict(log_dir=None), "log_dir"),
        (dict(k=100), "k=100"),
        (dict(fit_samples=0), "fit_samples"),
        (dict(fit_samples=2.5), "fit_samples"),
        (dict(nice=-1), "nice"),
        (dict(nice=20), "nice"),
        (dict(nice=True), "nice"),
        (dict(nice=2.5), "nice"),
        (dict(class_names=["cat", "dog", "cat"]), r"^class_names: expected None or a list of distinct names "
                                                  r"\(strings, or integers\), or a 1-D array of them, "
                                                  r"got \['cat', 'dog', 'cat'\]$"),
        (dict(class_names=["1", 1]), r"^class_names: expected None or a list of distinct names"),
        (dict(class_names="abc"), r"^class_names: expected None or a list of distinct names"),
    ],
)
def test_bad_arguments_at_construction(small, kwargs, match, tally):
    tally("bad inputs tried")
    x_tr, y_tr, x_te, y_te = small
    with pytest.raises(ValueError, match=match):
        FlowCallback((x_te, y_te), **kwargs)


def test_a_log_dir_that_is_a_file_is_refused_at_construction(small, tmp_path, tally):
    tally("bad inputs tried")
    x_tr, y_tr, x_te, y_te = small
    (tmp_path / "notes.txt").write_text("mine")
    for log_dir in (tmp_path / "notes.txt", str(tmp_path / "notes.txt")):
        with pytest.raises(ValueError, match=rf"^log_dir: {tmp_path}/notes.txt is a file, not a directory; expected "
                                             r"a new directory or a run's$"):
            FlowCallback((x_te, y_te), log_dir=log_dir)
    with pytest.raises(ValueError, match=r"^log_dir: .*notes.txt is a file"):
        FlowCallback({"a": (x_te, y_te)}, log_dir=tmp_path / "notes.txt")
    # under a file: it could never be created (found by an outside probe: it only warned at fit)
    for log_dir in (tmp_path / "notes.txt" / "run", tmp_path / "notes.txt" / "a" / "b"):
        with pytest.raises(ValueError, match=rf"^log_dir: {log_dir} cannot be created: {tmp_path}/notes.txt is a "
                                             r"file, not a directory$"):
            FlowCallback((x_te, y_te), log_dir=log_dir)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_log_dir_starting_with_a_tilde_is_under_the_home_directory(small, tmp_path, monkeypatch):
    x_tr, y_tr, x_te, y_te = small
    monkeypatch.setenv("HOME", str(tmp_path))
    cb = FlowCallback((x_te, y_te), log_dir="~/flows/run1")
    assert cb.log_dir == str(tmp_path / "flows" / "run1")


@pytest.mark.parametrize(
    "data, match",
    [
        (lambda x, y: x, "validation_data"),
        (lambda x, y: (x, None), "validation_data"),
        (lambda x, y: (x, y[:-1]), "same number of samples"),
        (lambda x, y: (x, y, y, y), r"^validation_data: expected an \(x, y\) tuple .* got tuple of length 4$"),
        (lambda x, y: (x, y, y[:-1]), r"^validation_data: the sample weights \(its third item\) number"),
        (lambda x, y: (x, y.astype(float) + 0.5), r"^validation_data: y must hold integer class labels \(whole "),
        # text labels: the message says how to map them (found by an outside probe)
        (lambda x, y: (x, np.array(["cat", "dog"])[y % 2]), r"^validation_data: y must hold integer class labels, "
                                                            r"got dtype <U3; .*LabelEncoder.*class_names="),
        (lambda x, y: (x, -y - 1), ">= 0"),
        # -1 and 1 are binary labels; -1, 0 and 1 are not
        (lambda x, y: (x, y % 3 - 1), r"^validation_data: labels must be class indices >= 0 \(or binary labels -1 "
                                     r"and 1\), found -1$"),
        # a multi-input model's inputs (issue found by an outside probe: they were stacked into one array):
        # one row per sample in each, numeric or text
        (lambda x, y: ({"a": x, "b": x[:-1]}, y), r"^validation_data: x holds 2 inputs of shapes \(\d+, 8, 8, 1\), "
                                                  r"\(\d+, 8, 8, 1\); each input needs one row per sample$"),
        (lambda x, y: ([x, x[:-1]], y), r"^validation_data: x must be one array, or one array per input of a "
                                        r"multi-input model"),
        (lambda x, y: ({"a": x, "b": np.array([object()] * len(x))}, y), r"^validation_data: x must be numeric"),
        # more than a run directory holds (issue 20, item 8): refused before any snapshot
        (lambda x, y: (np.zeros((100_001, 8, 8, 1), np.float32), np.zeros(100_001, int)),
         r"^validation_data: 100,001 samples, more than the 100,000 a snapshot takes"),
    ],
)
def test_bad_validation_data_at_construction(small, data, match, tally):
    tally("bad inputs tried")
    x_tr, y_tr, x_te, y_te = small
    with pytest.raises(ValueError, match=match):
        FlowCallback(data(x_te, y_te))


def test_text_is_one_input_in_any_of_its_forms_and_digests_alike():
    """Raw strings for a model that reads them (a TextVectorization layer first, as TensorFlow's text
    tutorials build it): a list, NumPy strings, pandas' object arrays, and tf.data's bytes are one
    held-out set, with the same digest (run.json's check that a resumed run has the same samples)."""
    import tensorflow as tf

    from flowcallback._plan import held_out_digest
    from flowcallback._validation import check_validation_data

    texts = ["a good film", "awful, très mauvais", "", "the plot"]
    y = np.array([1, 0, 0, 1])
    forms = [texts, np.array(texts), np.array(texts, dtype=object),
             np.array([t.encode("utf-8") for t in texts], dtype=object),
             tf.data.Dataset.from_tensor_slices((texts, y)).batch(3)]
    digests = set()
    for form in forms:
        x, labels = check_validation_data(form if hasattr(form, "element_spec") else (form, y))
        assert x.dtype.kind == "U" and x.tolist() == texts
        digests.add(held_out_digest(x, labels))
    assert len(digests) == 1
    with pytest.raises(ValueError, match=r"^validation_data: x must be numeric, or text for a model that reads "):
        check_validation_data((np.array([{"a": 1}] * 4, dtype=object), y))
    # iNNvestigate analyses numeric inputs: asked for by name, it is refused for text; "auto" takes the native engine
    from flowcallback.core.lrp.engines import choose_backend

    with pytest.raises(ValueError, match=r"^lrp_backend: 'innvestigate' analyses numeric inputs, and this model "
                                         r"reads text"):
        choose_backend("innvestigate", None, text=True)
    assert choose_backend("auto", None, text=True) == "native"


def test_a_list_of_samples_is_one_input_and_boolean_labels_are_classes_0_and_1(small):
    """A list of per-sample arrays (not one per input) is still read as x; a mask (y > 4) as 0/1 labels."""
    from flowcallback._validation import check_validation_data, labels_from_y

    x_tr, y_tr, x_te, y_te = small
    x, y = check_validation_data(([s for s in x_te[:5]], y_te[:5] > 4))
    assert x.shape == (5,) + x_te.shape[1:] and np.array_equal(x, x_te[:5])
    assert labels_from_y(y).tolist() == (y_te[:5] > 4).astype(int).tolist()
    cb = FlowCallback((x_te, y_te > 4), verbose=0)
    assert sorted(set(cb._snapshotter.held_out[1].tolist())) == [0, 1]


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (lambda x, y: (x[:, :4], y), {}, "per-sample shape"),
        (lambda x, y: (x, y + 5), {}, r"0\.\.9"),
        (lambda x, y: (x, y), dict(layers=["conv1", "nope"]), "layers: unknown layer name"),
        (lambda x, y: (x, y), dict(class_names=["a", "b"]), "class_names: expected 10 names"),
        # names longer than a run directory holds (issue 20, item 8)
        (lambda x, y: (x, y), dict(class_names=[str(i) for i in range(9)] + ["x" * 257]),
         r"^class_names: a class name has 257 characters \('x{20}'…\), more than the 256 a run directory holds"),
    ],
)
def test_bad_input_at_train_begin(tmp_path, small, model, make, kwargs, match, tally):
    tally("bad inputs tried")
    x_tr, y_tr, x_te, y_te = small
    cb = FlowCallback(make(x_te, y_te), log_dir=tmp_path / "r", verbose=0, k=10, **kwargs)
    with pytest.raises(ValueError, match=match):
        model.fit(x_tr, y_tr, epochs=1, verbose=0, callbacks=[cb])
    assert cb.lrp_engine is None or not cb.lrp_engine.alive


def test_non_classifier_is_refused(tmp_path, small, tally):
    tally("bad inputs tried")
    import tensorflow as tf

    x_tr, y_tr, x_te, y_te = small
    reg = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Conv2D(2, 3, name="c")])
    reg.compile(optimizer="sgd", loss="mse")
    cb = FlowCallback((x_te, y_te), log_dir=tmp_path / "r", verbose=0, lrp=False, k=10)
    with pytest.raises(ValueError, match=r"model: expected a classifier"):
        reg.fit(x_tr, np.zeros((len(x_tr), 6, 6, 2)), epochs=1, verbose=0, callbacks=[cb])


def test_failure_inside_a_snapshot_warns_and_training_goes_on(tmp_path, small, monkeypatch):
    """An exception in a stage is recorded; the other epochs are written; fit completes."""
    from flowcallback import load_run
    from flowcallback.core import render
    from flowcallback.demo import lenet5_digits

    x_tr, y_tr, x_te, y_te = small
    real = render.write_epoch_page
    calls = {"n": 0}

    def flaky(path, graphs, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the snapshot of epoch 1 fails while rendering
            raise OSError("disk full (injected)")
        return real(path, graphs, **kw)

    monkeypatch.setattr(render, "write_epoch_page", flaky)
    model = lenet5_digits(seed=3)
    cb = FlowCallback((x_te, y_te), log_dir=tmp_path / "r", lrp=False, k=10, verbose=0, budget=None)
    with pytest.warns(RuntimeWarning, match="epoch 1: the snapshot failed"):
        hist = model.fit(x_tr, y_tr, epochs=2, verbose=0, callbacks=[cb])
    assert len(hist.history["loss"]) == 2
    assert sorted(cb.pages) == [0, 2]
    err = (tmp_path / "r" / "errors" / "epoch_001.txt").read_text()
    assert "disk full (injected)" in err and "Traceback" in err
    run = load_run(tmp_path / "r")
    assert run.epoch(0).n_samples == 100 and run.epoch(2).n_samples == 100


def test_functional_model(tmp_path, small):
    import tensorflow as tf

    from flowcallback import load_run

    x_tr, y_tr, x_te, y_te = small
    inp = tf.keras.Input((8, 8, 1))
    h = tf.keras.layers.Conv2D(4, 3, activation="relu", name="c")(inp)
    h = tf.keras.layers.Flatten(name="f")(h)
    h = tf.keras.layers.Dense(16, activation="relu", name="d")(h)
    out = tf.keras.layers.Dense(10, activation="softmax", name="out")(h)
    m = tf.keras.Model(inp, out, name="functional_small")
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = FlowCallback((x_te, y_te), log_dir=tmp_path / "r", epochs=[1], k=10, verbose=0)
    m.fit(x_tr, y_tr, epochs=1, verbose=0, callbacks=[cb])
    run = load_run(tmp_path / "r")
    assert run.analyses(1) == ["activations", "lrp"]
    assert run.epoch(1, "lrp").column_names == ("c", "d", "out", "Prediction", "Ground truth")


def test_unwritable_log_dir_warns_and_training_goes_on(tmp_path, small, monkeypatch):
    from flowcallback.core import store
    from flowcallback.demo import lenet5_digits

    x_tr, y_tr, x_te, y_te = small

    def refuse(*a, **k):
        raise PermissionError("read-only file system (injected)")

    monkeypatch.setattr(store, "write_run_info", refuse)
    model = lenet5_digits(seed=8)
    cb = FlowCallback((x_te, y_te), log_dir=tmp_path / "r", k=10, verbose=0)
    with pytest.warns(RuntimeWarning, match="log_dir: cannot write"):
        hist = model.fit(x_tr, y_tr, epochs=2, verbose=0, callbacks=[cb])
    assert len(hist.history["loss"]) == 2 and cb.pages == {}
    assert cb.lrp_engine is None
    # several held-out sets: every set is off, and the folders the fit made are gone (no half run)
    sets = FlowCallback({"a": (x_te, y_te), "b": (x_te, y_te)}, log_dir=tmp_path / "s", k=10, verbose=0)
    with pytest.warns(RuntimeWarning, match="log_dir: cannot write"):
        hist = model.fit(x_tr, y_tr, epochs=1, verbose=0, callbacks=[sets])
    assert len(hist.history["loss"]) == 1 and sets.pages == {}
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [".flowcallback.lock"]
    # the log_dir writable again: the next fit with the same callbacks takes its snapshots
    monkeypatch.undo()
    model.fit(x_tr, y_tr, epochs=1, verbose=0, callbacks=[cb, sets])
    assert sorted(cb.pages) == [0, 1] and sorted(sets.pages) == [0, 1]


# -- tf.data held-out sets -----------------------------------------------------------------------
def _construct_in_thread(data, seconds: float = 120.0):
    """Run the constructor in a daemon thread: a regression that reads forever fails instead of hanging."""
    import threading

    result = {}

    def target():
        try:
            result["callback"] = FlowCallback(data, k=5)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"FlowCallback(dataset) did not return within {seconds} s"
    return result


def test_endless_generator_dataset_is_refused_not_read_forever(small, tally):
    import tensorflow as tf

    tally("bad inputs tried")
    x_tr, y_tr, x_te, y_te = small

    def endless():
        while True:
            yield x_te[:32], y_te[:32]

    ds = tf.data.Dataset.from_generator(endless, output_signature=(
        tf.TensorSpec((None, 8, 8, 1), tf.float32), tf.TensorSpec((None,), tf.int64)))
    assert int(ds.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    result = _construct_in_thread(ds)
    assert isinstance(result.get("error"), ValueError), result
    assert "unknown length" in str(result["error"]) and "take(" in str(result["error"])


def test_unknown_length_dataset_within_the_bound_is_read_whole(small):
    import tensorflow as tf

    x_tr, y_tr, x_te, y_te = small
    ds = tf.data.Dataset.from_tensor_slices((x_te, y_te)).filter(lambda x, y: True).batch(16)
    assert int(ds.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    cb = _construct_in_thread(ds)["callback"]
    np.testing.assert_array_equal(cb.held_out[0], x_te)
    np.testing.assert_array_equal(cb.held_out[1], y_te)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda tf, x, y: tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat(), "infinite"),
        (lambda tf, x, y: tf.data.Dataset.from_tensor_slices((x, y)), r"not batched; call \.batch\(n\)"),
        (lambda tf, x, y: tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, 10))),
         r"is the dataset batched\? call \.batch\(n\)"),
        (lambda tf, x, y: tf.data.Dataset.from_tensor_slices(x).batch(16), r"expected elements \(x, y\)"),
    ],
    ids=["infinite", "unbatched", "unbatched one-hot", "x only"],
)
def test_unclear_tf_data_cases_get_clear_errors(small, make, match, tally):
    import tensorflow as tf

    tally("bad inputs tried")
    x_tr, y_tr, x_te, y_te = small
    result = _construct_in_thread(make(tf, x_te, y_te))
    assert isinstance(result.get("error"), ValueError), result
    assert str(result["error"]).startswith("validation_data: ")
    assert __import__("re").search(match, str(result["error"])), str(result["error"])


def test_one_input_dict_and_sample_weights_are_accepted(small):
    import tensorflow as tf

    x_tr, y_tr, x_te, y_te = small
    ds = tf.data.Dataset.from_tensor_slices(({"image": x_te}, y_te, np.ones(len(y_te)))).batch(32)
    with pytest.warns(UserWarning, match=r"yields \(x, y, sample_weight\); the weights are not used: .* unweighted"):
        cb = FlowCallback(ds, k=5)
    np.testing.assert_array_equal(cb.held_out[0], x_te)
    np.testing.assert_array_equal(cb.held_out[1], y_te)
    # Keras's own (x, y, sample_weight) tuple, the same (found by an outside probe: it was refused)
    with pytest.warns(UserWarning, match=r"is an \(x, y, sample_weight\) tuple; the weights are not used"):
        cb = FlowCallback((x_te, y_te, np.ones(len(y_te))), k=5)
    np.testing.assert_array_equal(cb.held_out[0], x_te)
    np.testing.assert_array_equal(cb.held_out[1], y_te)


# -- what the callback infers silently must be said -----------------------------------------------
def _binary(small, activation, loss, tmp_path, signed=False):
    import tensorflow as tf

    from flowcallback import load_run

    x_tr, y_tr, x_te, y_te = small
    tf.keras.utils.set_random_seed(5)
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(8, activation="relu"),
                                 tf.keras.layers.Dense(1, activation=activation)])
    model.compile(optimizer="adam", loss=loss)
    y_tr, y_te = (2 * (y_tr % 2) - 1, 2 * (y_te % 2) - 1) if signed else (y_tr % 2, y_te % 2)
    cb = FlowCallback((x_te, y_te), log_dir=tmp_path, epochs=[1], lrp=False, k=5, verbose=0)
    model.fit(x_tr, y_tr, epochs=1, verbose=0, callbacks=[cb])
    out = model.predict(x_te, verbose=0)[:, 0]
    g = load_run(tmp_path).epoch(1)
    np.testing.assert_allclose(g.metrics["loss"], model.evaluate(x_te, y_te, verbose=0), rtol=1e-4)
    return g, out


def test_one_linear_unit_is_taken_as_binary_with_a_note(small, tmp_path):
    g, out = _binary(small, None, "mse", tmp_path)
    np.testing.assert_array_equal(g.predictions, (out > 0.5).astype(int))
    assert any("one unit with a linear activation" in n and "> 0.5" in n for n in g.notes)
    assert "taken as a binary" in (tmp_path / "epoch_001.html").read_text()


def test_one_logit_unit_trained_from_logits_is_thresholded_at_zero(small, tmp_path):
    import tensorflow as tf

    g, out = _binary(small, None, tf.keras.losses.BinaryCrossentropy(from_logits=True), tmp_path)
    np.testing.assert_array_equal(g.predictions, (out > 0).astype(int))
    assert any("loss takes logits" in n and "> 0" in n for n in g.notes)


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge", "hinge-instance"])
@pytest.mark.parametrize("signed", [True, False], ids=["labels -1 and 1", "labels 0 and 1"])
def test_a_hinge_loss_model_is_decided_by_its_sign(small, tmp_path, loss, signed):
    # a teacher's SVM-like classifier: tanh output, hinge loss, labels -1 and 1 as Keras's docs say
    # (or 0 and 1, which Keras turns into -1 and 1)
    import tensorflow as tf

    from flowcallback import load_run

    g, out = _binary(small, "tanh", tf.keras.losses.Hinge() if loss == "hinge-instance" else loss, tmp_path, signed)
    np.testing.assert_array_equal(g.predictions, (out > 0).astype(int))
    assert g.metrics["accuracy"] == pytest.approx(np.mean((out > 0) == (small[3] % 2)))
    assert any("tanh activation and" in n and "prediction = 1 where the output is > 0" in n for n in g.notes)
    assert load_run(tmp_path).class_names == (["-1", "1"] if signed else ["0", "1"])


def test_labels_minus_one_and_one_with_a_linear_output_are_decided_by_its_sign(small, tmp_path):
    g, out = _binary(small, None, "mse", tmp_path, signed=True)
    np.testing.assert_array_equal(g.predictions, (out > 0).astype(int))
    assert any("linear activation and labels -1 and 1" in n for n in g.notes)


def test_several_sigmoid_units_are_read_by_argmax_with_a_note(small, tmp_path):
    import tensorflow as tf

    from flowcallback import load_run

    x_tr, y_tr, x_te, y_te = small
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(10, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    y_hot = np.eye(10, dtype="float32")[y_te]
    cb = FlowCallback((x_te, y_te), log_dir=tmp_path, epochs=[1], lrp=False, k=5, verbose=0)
    model.fit(x_tr, np.eye(10, dtype="float32")[y_tr], epochs=1, verbose=0, callbacks=[cb])
    g = load_run(tmp_path).epoch(1)
    np.testing.assert_array_equal(g.predictions, np.argmax(model.predict(x_te, verbose=0), axis=1))
    assert any(n.startswith("The output is 10 sigmoid units, each its own yes/no (multi-label)") for n in g.notes)
    assert g.metrics["loss"] == pytest.approx(model.evaluate(x_te, y_hot, verbose=0), rel=1e-4)


def test_one_sigmoid_unit_gets_no_note(small, tmp_path):
    g, out = _binary(small, "sigmoid", "binary_crossentropy", tmp_path)
    np.testing.assert_array_equal(g.predictions, (out > 0.5).astype(int))
    assert not any("taken as a binary" in n for n in g.notes)
    assert g.metrics["loss"] is not None and g.metrics["loss"] > 0


@pytest.mark.parametrize("loss, hot", [("sparse_categorical_crossentropy", True),
                                       ("categorical_crossentropy", False)])
def test_held_out_labels_in_the_other_form_than_the_loss_still_give_the_loss(small, tmp_path, loss, hot):
    """One-hot held-out labels for a model compiled with integer labels, or the other way round: the
    loss is the model's own (as evaluate gives it with labels of the loss's form), not a gap."""
    from flowcallback import load_run
    from flowcallback.demo import lenet5_digits

    x_tr, y_tr, x_te, y_te = small
    model = lenet5_digits(seed=3)
    model.compile(optimizer="adam", loss=loss)
    y_hot = np.eye(10, dtype="float32")[y_te]
    cb = FlowCallback((x_te, y_hot if hot else y_te), log_dir=tmp_path, epochs=[1], lrp=False, k=5, verbose=0)
    model.fit(x_tr, y_tr if hot else np.eye(10, dtype="float32")[y_tr], epochs=1, verbose=0, callbacks=[cb])
    g = load_run(tmp_path).epoch(1)
    expected = model.evaluate(x_te, y_te if hot else y_hot, verbose=0)
    expected = expected[0] if isinstance(expected, list) else expected  # [loss] or loss, by Keras version
    assert g.metrics["loss"] == pytest.approx(expected, rel=1e-4)
    assert not [n for n in g.notes if n.startswith("loss not shown")], g.notes


@pytest.mark.parametrize("output, loss, hot", [("softmax", "sparse_categorical_crossentropy", False),
                                               ("softmax", "categorical_crossentropy", False),
                                               ("sigmoid", "binary_crossentropy", False)])
def test_a_confidently_wrong_model_gets_the_loss_evaluate_gives(small, tmp_path, output, loss, hot):
    """Keras computes a softmax or sigmoid model's cross-entropy from the logits behind the output;
    from the clipped probabilities a confidently wrong sample would cost at most about 16, and the
    page would show a fraction of the loss that fit and evaluate print (here: tens to hundreds)."""
    import tensorflow as tf

    from flowcallback import load_run, snapshot

    _, _, x_te, y_te = small
    units = 10 if output == "softmax" else 1
    y = y_te if output == "softmax" else (y_te % 2)
    tf.keras.utils.set_random_seed(4)
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(16, activation="relu"),
                                 tf.keras.layers.Dense(units, activation=output)])
    model.compile(optimizer="adam", loss=loss)
    model.set_weights([w * 40 for w in model.get_weights()])  # saturated: many outputs at 0 or 1 in float32
    held = np.eye(10, dtype="float32")[y] if loss == "categorical_crossentropy" else y
    snapshot(model, (x_te, held), tmp_path, lrp=False, k=5, verbose=0)
    expected = model.evaluate(x_te, held, verbose=0)
    expected = expected[0] if isinstance(expected, list) else expected
    assert expected > 20  # the case this test is about: beyond what clipped probabilities can give
    assert load_run(tmp_path).epoch(0).metrics["loss"] == pytest.approx(expected, rel=1e-4)


def test_labels_the_loss_cannot_take_give_a_note_not_a_silent_gap(small, tmp_path):
    from flowcallback import load_run
    from flowcallback.demo import lenet5_digits

    def weighted_only(y_true, y_pred):  # a loss that takes no labels of either form
        raise ValueError("this loss needs labels of shape (n, 20)")

    from flowcallback import snapshot

    x_tr, y_tr, x_te, y_te = small
    model = lenet5_digits(seed=3)
    model.compile(optimizer="adam", loss=weighted_only)
    y_hot = np.eye(10, dtype="float32")[y_te]
    snapshot(model, (x_te, y_hot), tmp_path, lrp=False, k=5, verbose=0)
    g = load_run(tmp_path).epoch(0)
    assert g.metrics["loss"] is None
    note = [n for n in g.notes if n.startswith("loss not shown")]
    assert len(note) == 1 and "weighted_only" in note[0] and "(100, 10)" in note[0] and "(n, 20)" in note[0], g.notes


@pytest.mark.parametrize("reserved", ["Prediction", "Ground truth"])
def test_a_layer_named_like_a_final_column_is_refused_before_training(tmp_path, small, reserved, tally):
    """Issue 20 item 19: every snapshot failed after its capture, and the run ended with no epoch."""
    tally("bad inputs tried")
    import tensorflow as tf

    x_tr, y_tr, x_te, y_te = small
    try:
        model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                     tf.keras.layers.Dense(16, activation="relu"),
                                     tf.keras.layers.Dense(10, activation="softmax", name=reserved)])
    except ValueError as exc:  # Keras 2 refuses a space in a layer name itself
        pytest.skip(f"this Keras refuses the name: {exc}")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    cb = FlowCallback((x_te, y_te), log_dir=tmp_path / "r", verbose=0, lrp=False, k=10)
    with pytest.raises(ValueError, match=rf"^model: the layer '{reserved}' takes the name .*rename the layer"):
        model.fit(x_tr, y_tr, epochs=1, verbose=0, callbacks=[cb])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "training started"
    assert not (tmp_path / "r" / "run.json").exists()


def test_a_model_name_longer_than_a_run_directory_holds_is_refused(tmp_path, small, tally):
    """Issue 20, item 8: the writer had no limit on the model's name (a 20 MB name gave 340 MB of pages)."""
    import tensorflow as tf

    tally("bad inputs tried")
    x_tr, y_tr, x_te, y_te = small
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(10, activation="softmax")], name="m" * 300)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    cb = FlowCallback((x_te, y_te), log_dir=tmp_path / "r", verbose=0, k=10, lrp=False)
    with pytest.raises(ValueError, match=r"^model: its name has 300 characters"):
        model.fit(x_tr, y_tr, epochs=1, verbose=0, callbacks=[cb])
    assert not (tmp_path / "r" / "run.json").exists()


def test_snapshot_does_not_overwrite_an_epoch_the_run_holds(small, tmp_path, tally):
    # found by an outside probe: fit refuses to overwrite a run's epochs, snapshot() replaced them
    import tensorflow as tf

    from flowcallback import load_run, snapshot

    tally("bad inputs tried")
    x_tr, y_tr, x_te, y_te = small
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(10, activation="softmax")])
    snapshot(model, (x_te, y_te), tmp_path, epoch=6, lrp=False, k=5, verbose=0)
    before = (tmp_path / "run.json").read_bytes(), load_run(tmp_path).epoch(6)
    model.set_weights([w + 1 for w in model.get_weights()])
    with pytest.raises(ValueError, match=rf"^epoch: {tmp_path} already holds epoch 6 \(its epochs: 6\); snapshot\(\) "
                                         r"does not overwrite it\. Give another epoch=, or a new log_dir\.$"):
        snapshot(model, (x_te, y_te), tmp_path, epoch=6, lrp=False, k=5, verbose=0)
    run = load_run(tmp_path)
    assert (tmp_path / "run.json").read_bytes() == before[0] and run.epoch(6).equals(before[1])
    snapshot(model, (x_te, y_te), tmp_path, epoch=7, lrp=False, k=5, verbose=0)  # another epoch is added
    assert load_run(tmp_path).epochs == [6, 7]


def test_a_keras_py_dataset_is_read_whole_and_a_generator_gets_a_hint(small, tally):
    """An outside probe: Keras's fit takes a ``keras.utils.PyDataset`` (or, on Keras 2, a
    ``Sequence``) as validation_data, and FlowCallback refused it; a generator was refused without
    saying why (each snapshot reads the held-out set again) or what to pass instead."""
    import tensorflow as tf

    tally("bad inputs tried")
    _, _, x_te, y_te = small
    base = getattr(tf.keras.utils, "PyDataset", None) or tf.keras.utils.Sequence

    class Batches(base):
        def __init__(self, x, y, batch_size, weights=False):
            super().__init__()
            self.x, self.y, self.batch_size, self.weights = x, y, batch_size, weights

        def __len__(self):
            return -(-len(self.x) // self.batch_size)

        def __getitem__(self, i):
            part = slice(i * self.batch_size, (i + 1) * self.batch_size)
            return (self.x[part], self.y[part]) + ((np.ones(len(self.x[part])),) if self.weights else ())

    cb = FlowCallback(Batches(x_te, y_te, 32), log_dir="unused", verbose=0)
    np.testing.assert_array_equal(cb.held_out[0], x_te)  # 100 samples over 4 batches, the last of 4
    np.testing.assert_array_equal(cb.held_out[1], y_te)
    with pytest.warns(UserWarning, match="sample_weight"):
        FlowCallback(Batches(x_te, y_te, 32, weights=True), log_dir="unused", verbose=0)

    def batches():
        yield x_te[:50], y_te[:50]

    with pytest.raises(ValueError, match=r"^validation_data: expected .* got generator; a generator can be read only "
                                         r"once.*np\.concatenate.*from_generator"):
        FlowCallback(batches(), log_dir="unused", verbose=0)
