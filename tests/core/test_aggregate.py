"""Class means (issue 14, item 3): equal to NumPy's on crafted data, batch by batch, in the capture
and the native LRP engine; the class order and the difference of two classes on planted data."""
from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest

from flowcallback.core import aggregate
from flowcallback.core.aggregate import ClassMeans, LayerClassMeans, class_difference, class_means, class_order


def numpy_means(maps, y, n_classes):
    """The reference: every axis but the batch and the last averaged, then the class's samples."""
    x = np.asarray(maps, dtype=np.float64)
    x = x.reshape(len(x), -1, x.shape[-1]).mean(axis=1)
    return np.array([x[y == c].mean(axis=0) if np.any(y == c) else np.full(x.shape[1], np.nan)
                     for c in range(n_classes)])


@pytest.mark.parametrize("shape", [(200, 7), (200, 5, 6, 3), (200, 9, 4), (200,)])
def test_means_equal_numpys_whatever_the_batches(shape):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32) * 10 + 3
    y = rng.integers(0, 4, shape[0])
    acc = ClassMeans(4)
    for a, b in ((0, 1), (1, 64), (64, 150), (150, 200)):  # uneven batches, one of a single sample
        acc.add(x[a:b], y[a:b])
    got = acc.result()
    want = numpy_means(x if x.ndim > 1 else x[:, None], y, 4)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(acc.counts, np.bincount(y, minlength=4))


def test_a_class_without_samples_is_a_nan_row():
    x = np.arange(12.0).reshape(4, 3)
    got = class_means(x, [0, 0, 2, 2], 4)
    assert np.isnan(got[[1, 3]]).all()
    np.testing.assert_array_equal(got[[0, 2]], [[1.5, 2.5, 3.5], [7.5, 8.5, 9.5]])


def test_non_finite_maps_are_left_out_and_counted():
    x = np.ones((5, 2, 2))
    x[1, 0, 0] = np.nan
    x[3, 1, 1] = np.inf
    x[4] = 3.0
    acc = ClassMeans(2)
    acc.add(x, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(acc.result(), [[1.0, 1.0], [2.0, 2.0]])
    assert acc.n_nonfinite == 2 and acc.counts.tolist() == [1, 2]


def test_channel_first_axis():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 3, 4, 5))  # (batch, channels, h, w)
    y = rng.integers(0, 2, 30)
    got = class_means(x, y, 2, axis=1)
    np.testing.assert_allclose(got, numpy_means(np.moveaxis(x, 1, -1), y, 2), rtol=1e-6)


def test_layer_class_means_takes_each_batchs_labels_by_offset():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(50, 2, 2, 3))
    y = rng.integers(0, 3, 50)
    acc = LayerClassMeans(y, 3)
    for start in range(0, 50, 16):
        acc.add("a", a[start:start + 16], start)
        acc.add("b", b[start:start + 16], start)
    got = acc.result()
    assert list(got) == ["a", "b"]
    np.testing.assert_allclose(got["a"], numpy_means(a, y, 3), rtol=1e-6)
    np.testing.assert_allclose(got["b"], numpy_means(b, y, 3), rtol=1e-6)


def test_bad_input_is_refused_with_a_named_message():
    with pytest.raises(ValueError, match="class indices must lie in 0..2"):
        class_means(np.ones((2, 3)), [0, 3], 3)
    with pytest.raises(ValueError, match="2 maps for 3 labels"):
        class_means(np.ones((2, 3)), [0, 1, 1], 3)
    acc = ClassMeans(2, name="conv1")
    acc.add(np.ones((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="conv1: batches have 4 units, earlier ones 3"):
        acc.add(np.ones((2, 4)), [0, 1])
    with pytest.raises(ValueError, match="no batch"):
        ClassMeans(2).result()
    with pytest.raises(ValueError, match="outside the 3 labelled samples"):
        LayerClassMeans([0, 1, 1], 2).add("l", np.ones((2, 1)), start=2)
    with pytest.raises(ValueError, match="values a layer's class means may hold"):
        ClassMeans(aggregate.MAX_VALUES // 4 + 1).add(np.zeros((1, 4)), [0])


def test_class_order_puts_planted_groups_together_and_missing_classes_last():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(3, 40)) * 5
    group = np.array([0, 1, 2, 0, 1, 2, 0, 1])  # classes 0, 3, 6 alike; 1, 4, 7; 2, 5
    means = centres[group] + 0.1 * rng.normal(size=(8, 40))
    means = np.vstack([means, np.full((1, 40), np.nan)])  # class 8: no sample
    order = class_order(means).tolist()
    assert sorted(order) == list(range(9)) and order[-1] == 8
    runs = [group[c] for c in order[:-1]]
    assert sum(a != b for a, b in zip(runs, runs[1:])) == 2  # each group in one block
    assert class_order(means).tolist() == order  # deterministic
    assert sorted(class_order(np.ones((4, 3))).tolist()) == [0, 1, 2, 3]  # all alike: still every class once


def test_class_order_of_square_class_means_warns_nothing_and_groups_alike_classes():
    # 4 classes x 4 units: SciPy took such rows for a distance matrix and warned (ClusterWarning)
    means = np.array([[0.0, 0.0, 1.0, 0.0], [9.0, 9.0, 0.0, 1.0], [0.1, 0.0, 1.0, 0.1], [9.0, 8.9, 0.1, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        order = class_order(means).tolist()
    assert sorted(order) == [0, 1, 2, 3]
    assert abs(order.index(0) - order.index(2)) == 1 and abs(order.index(1) - order.index(3)) == 1
    with warnings.catch_warnings():  # every unit constant (a dead layer): standardised to zeros
        warnings.simplefilter("error")
        assert sorted(class_order(np.ones((4, 4))).tolist()) == [0, 1, 2, 3]


def test_class_difference_finds_the_planted_units():
    rng = np.random.default_rng(5)
    means = rng.normal(size=(5, 100)) * 0.1
    means[2, [17, 42, 73]] += [3.0, -4.0, 2.5]
    d = class_difference(means, 2, 4, top=3)
    assert sorted(d.units.tolist()) == [17, 42, 73]
    assert d.units[0] == 42 and d.values[0] == pytest.approx(means[2, 42] - means[4, 42])
    assert np.all(np.diff(d.scores) <= 0)
    # normalize: a unit of small range that separates the two classes clearly wins over a wide noisy one
    m = np.zeros((4, 3))
    m[:, 0] = [10.0, -10.0, 10.0, -10.0]  # wide, differs by 20 between 0 and 1
    m[:, 1] = [0.5, -0.5, 0.0, 0.0]        # narrow, differs by 1
    assert class_difference(m, 0, 1, top=1).units.tolist() == [0]
    assert class_difference(m, 0, 1, top=1, normalize=True).units.tolist() == [1]
    assert len(class_difference(m, 0, 1, top=None).units) == 3


def test_class_difference_refuses_a_class_without_mean():
    m = np.array([[1.0, 2.0], [np.nan, np.nan]])
    with pytest.raises(ValueError, match="without samples"):
        class_difference(m, 0, 1)
    with pytest.raises(ValueError, match="b: expected a class index"):
        class_difference(m, 0, 5)


def test_doctests():
    assert doctest.testmod(aggregate, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


# -- snapshot-time hooks ------------------------------------------------------------------------------
def _conv_model():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)),
        tf.keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        tf.keras.layers.Flatten(name="flat"),
        tf.keras.layers.Dense(6, activation="relu", name="hidden"),
        tf.keras.layers.Dense(3, activation="softmax", name="out"),
    ])


def test_capture_activations_also_gives_the_raw_class_means():
    import tensorflow as tf

    from flowcallback.core.capture import capture_activations

    rng = np.random.default_rng(6)
    x = rng.random((70, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 70)
    m = _conv_model()
    names = ["conv", "hidden", "out"]
    plain_emb, plain_out = capture_activations(m, x, names, batch_size=16)
    acc = LayerClassMeans(y, 3)
    emb, out = capture_activations(m, x, names, batch_size=16, class_means=acc)
    np.testing.assert_array_equal(out, plain_out)  # nothing else changes
    assert all(np.array_equal(emb[n], plain_emb[n]) for n in names)
    got = acc.result()
    for n in names:
        raw = tf.keras.Model(m.inputs[0], m.get_layer(n).output)(x).numpy()
        np.testing.assert_allclose(got[n], numpy_means(raw, y, 3), rtol=1e-5, atol=1e-6)
    assert got["conv"].shape == (3, 4) and got["hidden"].shape == (3, 6)


def test_native_engine_also_gives_the_relevance_class_means():
    import flowcallback
    from flowcallback.core.lrp.engines import NativeEngine

    rng = np.random.default_rng(7)
    x = rng.random((40, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 40)
    m = _conv_model()
    names = ["conv", "hidden"]
    engine = NativeEngine("lrp.epsilon")
    engine.start(m, names, x, batch_size=16)
    acc = LayerClassMeans(y, 3)
    result = engine.analyze(m.get_weights(), class_means=acc)
    assert set(result.embeddings) == set(names)
    maps = flowcallback.relevance(m, x, names, analyzer="lrp.epsilon", backend="native")
    got = acc.result()
    for n in names:
        np.testing.assert_allclose(got[n], numpy_means(maps[n], y, 3), rtol=1e-4, atol=1e-7)
    engine.close()
