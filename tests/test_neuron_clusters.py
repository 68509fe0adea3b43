"""Neuron clusters on real trainings (issue 22, item 3): every layer's units are clustered at every
snapshot, the clusters account for every unit, and on a trained model they mean what they say."""
from __future__ import annotations

import numpy as np
import pytest

from flowcallback import FlowCallback, load_run
from flowcallback.core.neurons import thumbnails


def test_every_layer_of_every_snapshot_has_its_units_clustered(fitted_run):
    run = load_run(fitted_run["log_dir"])
    for epoch in run.epochs:
        views = run.views(epoch)
        means = {layer for a, layer in views.class_means if a == "activations"}
        assert means and {layer for _, layer in views.unit_clusters} == means
        for layer in means:
            table = run.neuron_clusters(epoch, layer)
            units = views.class_means[("activations", layer)].shape[1]
            per_cluster = table.groupby("cluster").first()
            # every unit once: in one cluster, or among the flat ones
            assigned = sorted([u for us in per_cluster["units"] for u in us] + table.attrs["flat_units"])
            assert assigned == list(range(units))
            assert per_cluster["n_units"].tolist() == [len(us) for us in per_cluster["units"]]
            assert len(table) == len(per_cluster) * len(run.class_names)
            assert all(len(t) == 6 and len(set(t)) == 6 for t in per_cluster["top_samples"])
        # every top sample is pictured (the digits are 8 x 8 images), from the held-out inputs
        tops = sorted({s for u in views.unit_clusters.values() for s in u.top_samples.ravel().tolist() if s >= 0})
        assert views.thumbnail_samples.tolist() == tops
        np.testing.assert_array_equal(views.thumbnails, thumbnails(fitted_run["x_test"], tops))


def test_on_the_trained_output_layer_each_cluster_is_excited_by_the_class_it_prefers(fitted_run):
    """The softmax layer's unit c is the probability of class c: a cluster that prefers a class is
    excited most by samples predicted as that class, and mostly of it."""
    run = load_run(fitted_run["log_dir"])
    g = run.epoch(2)
    table = run.neuron_clusters(2, "dense10")
    matrix = table.pivot(index="cluster", columns="class", values="response")
    hits = total = 0
    for c, tops in table.groupby("cluster")["top_samples"].first().items():
        preferred = run.class_names.index(str(matrix.loc[c].idxmax()))
        assert all(g.predictions[s] == preferred for s in tops), (c, preferred, tops)
        hits += sum(g.labels[s] == preferred for s in tops)
        total += len(tops)
    assert hits / total >= 0.9, hits / total


@pytest.mark.slow
@pytest.mark.both
def test_default_named_sequential_model_on_tf_data_with_a_chosen_number_of_clusters(tmp_path, digits):
    import tensorflow as tf
    from tensorflow import keras

    (x_tr, y_tr), (x_te, y_te) = digits
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(12, 3, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(48, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    held_out = tf.data.Dataset.from_tensor_slices((x_te[:200], y_te[:200])).batch(32)
    cb = FlowCallback(held_out, log_dir=tmp_path / "r", epochs=[0, 2], lrp=False, k=8, verbose=0, neuron_clusters=3)
    model.fit(x_tr, y_tr, epochs=2, verbose=0, callbacks=[cb])
    run = load_run(tmp_path / "r")
    for epoch in (0, 2):
        v = run.views(epoch)
        assert v.unit_clusters and all(u.n_clusters <= 3 for u in v.unit_clusters.values())
        for (_, layer), u in v.unit_clusters.items():
            assert len(u.labels) == v.class_means[("activations", layer)].shape[1]
            assert u.top_samples.shape[1] == 6 and u.top_samples.max() < 200
    conv = next(layer for _, layer in run.views(2).unit_clusters if layer.startswith("conv2d"))
    assert len(run.views(2).unit_clusters[("activations", conv)].labels) == 12  # one label per channel
    fig = run.show("neurons", epoch=2, layer=conv)
    assert len(fig.data[0].y) == run.views(2).unit_clusters[("activations", conv)].n_clusters

    # inputs that are not pictures: vectors get clusters and top samples, and no thumbnails
    dense = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    dense.compile("adam", "sparse_categorical_crossentropy")
    vec = FlowCallback((x_te[:150].reshape(150, 64), y_te[:150]), log_dir=tmp_path / "vec", epochs=[1], lrp=False,
                       k=8, verbose=0)
    dense.fit(x_tr.reshape(len(x_tr), 64), y_tr, epochs=1, verbose=0, callbacks=[vec])
    v = load_run(tmp_path / "vec").views(1)
    assert v.unit_clusters and v.thumbnails is None and v.thumbnail_samples is None
    assert all(u.top_samples.shape[1] == 6 for u in v.unit_clusters.values())

    off = FlowCallback((x_te[:120], y_te[:120]), log_dir=tmp_path / "off", epochs=[1], lrp=False, k=8, verbose=0,
                       neuron_clusters=False)
    model.fit(x_tr[:200], y_tr[:200], epochs=1, verbose=0, callbacks=[off])
    plain = load_run(tmp_path / "off")
    assert dict(plain.views(1).unit_clusters) == {} and plain.views(1).class_means
    assert plain.views(1).thumbnails is None
    assert "neurons_seconds" not in off.timings[1]


@pytest.mark.parametrize("bad", [0, 65, -1, 2.5, "auto", None])
def test_neuron_clusters_setting_is_checked_at_the_door(bad, digits):
    (_, _), (x_te, y_te) = digits
    with pytest.raises(ValueError, match=r"^neuron_clusters: expected a bool or a number of clusters in 1\.\.64"):
        FlowCallback((x_te, y_te), neuron_clusters=bad)


def test_layers_too_wide_to_keep_their_responses_get_clusters_without_top_samples(monkeypatch):
    """The per-sample responses kept for the top samples are bounded over all layers: the layers
    beyond the bound get their clusters, and no top samples."""
    from flowcallback.core.aggregate import LayerClassMeans
    from flowcallback.core.neurons import neuron_clusters

    rng = np.random.default_rng(0)
    y = np.arange(50) % 5
    acc = LayerClassMeans(y, 5, keep_responses=50 * 30)
    first, second = rng.normal(size=(50, 4, 4, 20)), rng.normal(size=(50, 16))
    for start in range(0, 50, 16):
        acc.add("a", first[start:start + 16], start)
        acc.add("b", second[start:start + 16], start)
    kept = acc.responses()
    assert list(kept) == ["a"] and kept["a"].shape == (50, 20)
    np.testing.assert_allclose(kept["a"], first.mean(axis=(1, 2)), rtol=1e-6)
    means = acc.result()
    assert neuron_clusters(means["b"], kept.get("b")).top_samples.shape[1] == 0
    assert neuron_clusters(means["a"], kept["a"]).top_samples.shape[1] == 6
