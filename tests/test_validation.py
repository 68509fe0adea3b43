"""Bad input gets an error that names the argument and says what was expected."""
from __future__ import annotations

import numpy as np
import pytest

from flowcallback import FlowCallback

pytestmark = pytest.mark.slow


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
    ],
)
def test_bad_arguments_at_construction(small, kwargs, match, tally):
    tally("bad inputs tried")
    x_tr, y_tr, x_te, y_te = small
    with pytest.raises(ValueError, match=match):
        FlowCallback((x_te, y_te), **kwargs)


@pytest.mark.parametrize(
    "data, match",
    [
        (lambda x, y: x, "validation_data"),
        (lambda x, y: (x, None), "validation_data"),
        (lambda x, y: (x, y[:-1]), "same number of samples"),
        (lambda x, y: (x, y, y), "validation_data"),
        (lambda x, y: (x, y.astype(float) + 0.5), "integer"),
        (lambda x, y: (x, -y - 1), ">= 0"),
    ],
)
def test_bad_validation_data_at_construction(small, data, match, tally):
    tally("bad inputs tried")
    x_tr, y_tr, x_te, y_te = small
    with pytest.raises(ValueError, match=match):
        FlowCallback(data(x_te, y_te))


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (lambda x, y: (x[:, :4], y), {}, "per-sample shape"),
        (lambda x, y: (x, y + 5), {}, r"0\.\.9"),
        (lambda x, y: (x, y), dict(layers=["conv1", "nope"]), "layers: unknown layer name"),
        (lambda x, y: (x, y), dict(class_names=["a", "b"]), "class_names: expected 10 names"),
        (lambda x, y: (x, y), dict(analyzer="lrp.nonexistent"), "analyzer"),
    ],
)
def test_bad_input_at_train_begin(tmp_path, small, model, make, kwargs, match, tally):
    tally("bad inputs tried")
    x_tr, y_tr, x_te, y_te = small
    cb = FlowCallback(make(x_te, y_te), log_dir=tmp_path / "r", verbose=0, k=10, **kwargs)
    with pytest.raises(ValueError, match=match):
        model.fit(x_tr, y_tr, epochs=1, verbose=0, callbacks=[cb])
    assert cb._snapshotter.worker is None or not cb._snapshotter.worker.alive


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
    from flowcallback.core import render
    from flowcallback.demo import lenet5_digits
    from flowcallback import load_run

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
    cb = FlowCallback((x_te, y_te), log_dir=tmp_path / "r", lrp=False, k=10, verbose=0)
    with pytest.warns(RuntimeWarning, match="epoch 1 failed"):
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
    assert cb._snapshotter.worker is None
