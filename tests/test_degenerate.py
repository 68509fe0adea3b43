"""Degenerate data gets a correct answer or a clear error, never a crash or a silent wrong picture."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from flowcallback import load_run
from flowcallback.core.cluster import cluster_layer, layer_note
from flowcallback.core.embed import Embedder, embed, special_rows


def conserved(g):
    sums = g.flows.groupby("source_column")["count"].sum()
    return len(sums) == len(g.columns) - 1 and (sums == g.n_samples).all()


def blobs(n_per=30, centers=3, dim=12, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, dim)) * 5
    return np.repeat(c, n_per, axis=0) + rng.normal(size=(centers * n_per, dim)) * 0.1


# -- the clustering stage on its own -------------------------------------------------------------------
def test_all_zero_maps_are_one_explicit_cluster_with_a_note(tally):
    tally("bad inputs tried")
    x = np.r_[blobs(), np.zeros((17, 12))]
    v = embed(x)
    lab = cluster_layer(v, 8, 2.0)
    zero = lab[90:]
    assert len(set(zero)) == 1 and zero[0] not in set(lab[:90])  # one cluster, nobody else in it
    for i in range(3):
        assert len(set(lab[30 * i : 30 * (i + 1)])) == 1
    note = layer_note(v, lab, 8)
    assert "17 all-zero map(s)" in note and f"cluster {zero[0]}" in note


def test_non_finite_maps_are_one_explicit_cluster_with_a_note(tally):
    tally("bad inputs tried")
    x = blobs()
    x[[3, 40, 77], 2] = [np.nan, np.inf, -np.inf]
    with pytest.raises(ValueError, match="3 sample"):
        embed(x)  # the default refuses
    v = embed(x, nonfinite="flag")
    zero, bad = special_rows(v)
    assert bad.tolist() == [i in (3, 40, 77) for i in range(90)] and not zero.any()
    lab = cluster_layer(v, 8, 2.0)
    assert len(set(lab[[3, 40, 77]])) == 1
    assert lab[3] not in set(np.delete(lab, [3, 40, 77]))
    assert "3 sample(s) with NaN/infinite values" in layer_note(v, lab, 8)


def test_flags_survive_the_streaming_reduction(tally):
    tally("bad inputs tried")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 500)).astype(np.float32)
    x[5] = 0
    x[7, 3] = np.nan
    e = Embedder("wide", dim=16, fit_samples=20, nonfinite="flag")
    for lo in range(0, 60, 15):
        e.add(x[lo : lo + 15])
    zero, bad = special_rows(e.result())
    assert np.flatnonzero(zero).tolist() == [5] and np.flatnonzero(bad).tolist() == [7]


def test_every_map_non_finite_gives_one_cluster_not_a_crash(tally):
    tally("bad inputs tried")
    v = embed(np.full((20, 4), np.nan), nonfinite="flag")
    lab = cluster_layer(v, 5, 2.0)
    assert set(lab) == {0}
    assert "20 sample(s)" in layer_note(v, lab, 5)


def test_duplicate_samples_share_their_cluster(tally):
    tally("bad inputs tried")
    rng = np.random.default_rng(2)
    base = rng.normal(size=(6, 10))
    x = np.repeat(base, [50, 3, 1, 80, 2, 40], axis=0)
    lab = cluster_layer(embed(x), 5, 2.0)
    bounds = np.cumsum([0, 50, 3, 1, 80, 2, 40])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        assert len(set(lab[lo:hi])) == 1
    # and not because everything is one cluster: the three groups of more samples than k are three
    # clusters, each holding its group and at most the groups of fewer than k samples (6 in all)
    large = [lab[bounds[0]], lab[bounds[3]], lab[bounds[5]]]
    assert len(set(large)) == 3
    for c, size in zip(large, [50, 80, 40]):
        assert size <= int((lab == c).sum()) <= size + 6


def test_fewer_directed_samples_than_k_clips_k_with_a_note(tally):
    tally("bad inputs tried")
    x = np.r_[blobs(n_per=2, centers=2), np.zeros((30, 12))]  # 4 samples with a direction, k=10
    v = embed(x)
    lab = cluster_layer(v, 10, 2.0)
    assert len(set(lab[4:])) == 1
    assert "k clipped from 10 to 3" in layer_note(v, lab, 10)


def test_held_out_set_not_larger_than_k_is_a_clear_error(digits, tally):
    tally("bad inputs tried")
    from flowcallback import FlowCallback

    (_, _), (x_te, y_te) = digits
    with pytest.raises(ValueError, match=r"validation_data: the kNN graph needs more than k=20 samples, got 20"):
        FlowCallback((x_te[:20], y_te[:20]), k=20)


# -- whole snapshots of real models ------------------------------------------------------------------------
def _dense_model(n_in, n_classes, hidden=(16,), seed=0, dead=False):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((n_in,))
    h = inp
    for i, w in enumerate(hidden):
        init = tf.keras.initializers.Constant(-1e3) if dead and i == 0 else "zeros"
        h = tf.keras.layers.Dense(w, activation="relu", bias_initializer=init, name=f"hidden{i}")(h)
    out = tf.keras.layers.Dense(n_classes, activation="softmax", name="out")(h)
    m = tf.keras.Model(inp, out, name="tabular")
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return m


@pytest.mark.slow
def test_nan_inputs_give_a_set_apart_cluster_and_notes_not_a_failed_epoch(tmp_path, digits, tally):
    tally("bad inputs tried")
    from flowcallback import snapshot

    (_, _), (x_te, y_te) = digits
    x = x_te[:120].reshape(120, -1).copy()
    x[:7, 0] = np.nan  # seven samples carry NaN through every layer to the output
    model = _dense_model(64, 10, hidden=(32, 16))
    with pytest.warns(RuntimeWarning, match=r"validation_data: x holds NaN or infinite values in 7 of 120 samples "
                                            r"\(samples 0, 1, 2, 3, 4, \.\.\.\); their maps are non-finite"):
        snapshot(model, (x, y_te[:120]), tmp_path, lrp=False, k=8, verbose=0)
    run = load_run(tmp_path)
    assert run.epochs == [0] and run.errors() == {}
    g = run.epoch(0)
    assert conserved(g)
    for name in ("hidden0", "hidden1", "out"):
        col = g.columns[g.column_index(name)]
        a = g.assignments[:, g.column_index(name)]
        assert "7 sample(s) with NaN/infinite values" in col.note
        assert len(set(a[:7])) == 1 and a[0] not in set(a[7:])
    pred = g.columns[g.column_index("Prediction")]
    assert "7 sample(s) have a NaN/infinite model output" in pred.note
    finite_pred = np.argmax(model.predict(x[7:], verbose=0), axis=1)
    assert g.metrics["accuracy"] == pytest.approx(float(np.sum(finite_pred == y_te[7:120])) / 120)
    page = (tmp_path / "epoch_000.html").read_text()
    assert "have a NaN" in page and "infinite values" in page


@pytest.mark.slow
def test_dead_relu_layer_is_one_explicit_cluster(tmp_path, digits, tally):
    tally("bad inputs tried")
    from flowcallback import snapshot

    (_, _), (x_te, y_te) = digits
    model = _dense_model(64, 10, hidden=(16,), dead=True)
    snapshot(model, (x_te[:100].reshape(100, -1), y_te[:100]), tmp_path, lrp=False, k=8, verbose=0)
    g = load_run(tmp_path).epoch(0)
    j = g.column_index("hidden0")
    assert set(g.assignments[:, j]) == {0} and "100 all-zero map(s)" in g.columns[j].note
    assert conserved(g)


@pytest.mark.slow
def test_vanished_relevance_is_said_to_be_relevance_not_dead_units(tmp_path, digits, tally):
    """An output layer with a zero kernel gives zero logits, so no relevance reaches the hidden
    layer although its units are alive: the LRP column's note says so, and the activation column,
    whose maps are not zero, has no note."""
    tally("bad inputs tried")
    import tensorflow as tf

    from flowcallback import snapshot

    (_, _), (x_te, y_te) = digits
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((64,)), tf.keras.layers.Dense(16, activation="relu"),
                                 tf.keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    snapshot(model, (x_te[:100].reshape(100, -1), y_te[:100]), tmp_path, k=8, verbose=0, lrp_backend="native")
    run = load_run(tmp_path)
    lrp, act = run.epoch(0, "lrp"), run.epoch(0, "activations")
    hidden = model.layers[0].name  # "dense", or "dense_<n>" after other models in the session
    note = lrp.columns[lrp.column_index(hidden)].note
    assert ("100 all-zero relevance map(s) (no relevance reached this layer for these samples: the rules absorbed "
            "it on the way back, as epsilon rules do where activations are near zero (an untrained deep network), "
            "or gave it none" in note)
    assert "dead units" not in note
    assert act.columns[act.column_index(hidden)].note == ""
    assert conserved(lrp) and conserved(act)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["single class", "one sample of a class"])
def test_few_classes_in_the_held_out_set(tmp_path, digits, case, tally):
    tally("bad inputs tried")
    from flowcallback import snapshot

    (_, _), (x_te, y_te) = digits
    x, y = x_te.reshape(len(x_te), -1), y_te
    if case == "single class":
        keep = np.flatnonzero(y == 3)[:40]
    else:
        keep = np.r_[np.flatnonzero(y == 3)[:40], np.flatnonzero(y == 5)[:1], np.flatnonzero(y == 7)[:30]]
    model = _dense_model(64, 10)
    snapshot(model, (x[keep], y[keep]), tmp_path, lrp=False, k=5, verbose=0)
    g = load_run(tmp_path).epoch(0)
    assert conserved(g) and g.n_samples == len(keep)
    assert sorted(set(g.labels.tolist())) == sorted(set(y[keep].tolist()))
    gt = g.class_counts("Ground truth").sum(axis=1)
    assert sorted(gt.tolist()) == sorted(np.bincount(y[keep])[np.unique(y[keep])].tolist())


@pytest.mark.slow
def test_a_very_wide_layer_is_streamed_down(tmp_path, digits, tally):
    tally("bad inputs tried")
    import tensorflow as tf

    from flowcallback import snapshot
    from flowcallback.core import capture

    (_, _), (x_te, y_te) = digits
    tf.keras.utils.set_random_seed(3)
    model = tf.keras.Sequential([tf.keras.Input((64,)), tf.keras.layers.Dense(60_000, activation="relu", name="wide"),
                                 tf.keras.layers.Dense(10, activation="softmax", name="out")])
    x = x_te[:150].reshape(150, -1)
    emb, _ = capture.capture_activations(model, x, ["wide"], embed_options={"dim": 32})
    assert emb["wide"].shape == (150, 33)
    snapshot(model, (x, y_te[:150]), tmp_path, lrp=False, k=8, dim=32, verbose=0)
    g = load_run(tmp_path).epoch(0)
    assert g.column_names[0] == "wide" and conserved(g)


@pytest.mark.slow
def test_text_tokens_through_an_embedding_layer_end_to_end(tmp_path, tally):
    tally("bad inputs tried")
    """Token ids -> Embedding -> pooling -> Dense: activation and LRP flows, trained with the callback."""
    import tensorflow as tf

    from flowcallback import FlowCallback

    rng = np.random.default_rng(4)
    n, length, vocab = 400, 12, 50
    y = rng.integers(0, 3, n)
    x = rng.integers(3, vocab, (n, length))
    x[:, 0] = y  # the class is written in the first token
    tf.keras.utils.set_random_seed(4)
    model = tf.keras.Sequential([
        tf.keras.Input((length,), dtype="int32"),
        tf.keras.layers.Embedding(vocab, 8, name="embed"),
        tf.keras.layers.Flatten(name="flat"),
        tf.keras.layers.Dense(16, activation="relu", name="dense"),
        tf.keras.layers.Dense(3, activation="softmax", name="out"),
    ], name="text")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = FlowCallback((x[300:], y[300:]), log_dir=tmp_path, epochs=[2], k=8, verbose=0)
    model.fit(x[:300], y[:300], epochs=2, verbose=0, callbacks=[cb])
    run = load_run(tmp_path)
    assert run.epochs == [2] and run.errors() == {}
    for a in run.analyses(2):
        g = run.epoch(2, a)
        assert g.column_names[:3] == ("embed", "dense", "out") and conserved(g)
    assert run.analyses(2) == ["activations", "lrp"]  # iNNvestigate's LRP passes Embedding layers


@pytest.mark.slow
def test_tabular_vectors_end_to_end(tmp_path, tally):
    tally("bad inputs tried")
    from flowcallback import FlowCallback

    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 500)
    x = rng.normal(size=(500, 20)).astype(np.float32)
    x[np.arange(500), y] += 5
    model = _dense_model(20, 4, hidden=(24, 12), seed=5)
    cb = FlowCallback((x[400:], y[400:]), log_dir=tmp_path, epochs=[0, 3], k=8, verbose=0)
    model.fit(x[:400], y[:400], epochs=3, verbose=0, callbacks=[cb])
    run = load_run(tmp_path)
    assert run.epochs == [0, 3] and run.analyses(3) == ["activations", "lrp"]
    g = run.epoch(3)
    assert conserved(g)
    pred = np.argmax(model.predict(x[400:], verbose=0), axis=1)
    np.testing.assert_array_equal(g.predictions, pred)
    assert g.metrics["accuracy"] == pytest.approx(float(np.mean(pred == y[400:])))


def test_a_layer_of_one_cluster_says_why(tally):
    """A column drawn as one node says nothing by itself: a layer whose output does not depend on
    the input (a dead or saturated layer) gets a note with how alike its maps are."""
    tally("bad inputs tried")
    rng = np.random.default_rng(3)
    same = np.tile(rng.normal(size=24), (60, 1)) + rng.normal(size=(60, 24)) * 1e-7  # float32 noise only
    v = embed(same)
    lab = cluster_layer(v, 8, 2.0)
    assert len(set(lab)) == 1
    note = layer_note(v, lab, 8)
    # the same map, to float32 noise: no inflation= can split them (an outside probe: keras.io's
    # timeseries Transformer normalises one value, and the note advised a higher inflation)
    assert note.startswith("all 60 samples in one cluster: every one has the same map here (to 0.1%), so this "
                           "layer's output does not depend on the input") and "inflation=" not in note
    # one unit of many values, all positive (a sigmoid output's relevance, a normalised one-feature
    # input: found by an outside probe of a structured-data model): not "the same map", its sign
    one_unit = embed(np.random.default_rng(4).uniform(0.1, 5.0, size=(60, 1)))
    note = layer_note(one_unit, cluster_layer(one_unit, 8, 2.0), 8)
    assert note == ("all 60 samples in one cluster: this layer's map is one value per sample, and cosine "
                    "similarity sees only its sign, the same for every one here")
    close = np.tile(rng.normal(size=24), (60, 1)) + rng.normal(size=(60, 24)) * 1e-2
    v_close = embed(close)
    note = layer_note(v_close, cluster_layer(v_close, 8, 2.0), 8)
    assert note.startswith("all 60 samples in one cluster: their maps point almost the same way (mean cosine "
                           "similarity 1.000)") and "inflation=" in note
    # with all-zero maps beside them, the count is of the samples that have a direction
    v = embed(np.r_[same, np.zeros((5, 24))])
    lab = cluster_layer(v, 8, 2.0)
    assert len(set(lab)) == 2
    assert "all 60 samples with a direction in one cluster" in layer_note(v, lab, 8)
    # separated samples get no such note
    v = embed(blobs())
    assert "one cluster" not in layer_note(v, cluster_layer(v, 8, 2.0), 8)
    # one cluster of samples that do differ: the note does not say they are alike
    v = embed(blobs(centers=1, n_per=60) + rng.normal(size=(60, 12)) * 2)
    one = np.zeros(60, dtype=int)
    assert "MCL found no separate groups" in layer_note(v, one, 8)


def _timeseries_transformer(features: int):
    """keras.io's "Timeseries classification with a Transformer model", scaled down, as written: its
    attention's output has the input's one feature, and LayerNormalization normalises over it."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((50, features))
    x = layers.MultiHeadAttention(key_dim=8, num_heads=2, dropout=0.1)(inputs, inputs)
    x = layers.Dropout(0.1)(x)
    x = layers.LayerNormalization(epsilon=1e-6)(x)
    res = x + inputs
    x = layers.Conv1D(filters=4, kernel_size=1, activation="relu")(res)
    x = layers.Conv1D(filters=features, kernel_size=1)(x)
    x = layers.LayerNormalization(epsilon=1e-6)(x)
    x = x + res
    x = layers.GlobalAveragePooling1D(data_format="channels_first")(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(x))


@pytest.mark.slow
@pytest.mark.parametrize("features", [1, 3])
def test_a_layer_normalisation_over_one_value_is_named_with_what_it_cuts_off(tmp_path, features, tally):
    """An outside probe: with one feature, keras.io's timeseries Transformer normalises one value, so
    its attention and feed-forward layers change no prediction; the notes said "a higher inflation=
    looks for finer clusters" and "an untrained deep network"."""
    pytest.importorskip("keras", minversion="3")
    from flowcallback import snapshot

    tally("bad inputs tried")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    t = np.linspace(0, 1, 50)
    x = np.stack([np.sin(2 * np.pi * (2 + 3 * c) * t + rng.uniform(0, 6)) for c in y])[..., None]
    x = np.concatenate([x + 0.1 * rng.standard_normal(x.shape) for _ in range(features)], -1).astype("float32")
    model = _timeseries_transformer(features)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        snapshot(model, (x, y), tmp_path, verbose=0, k=8)
    said = [str(w.message) for w in caught if "same output" in str(w.message)]
    g = load_run(tmp_path).epoch(0)
    notes = {c.name: c.note for c in g.columns}
    norms = [n for n in notes if n.startswith("layer_normalization")]
    if features > 1:
        assert not said and not any("same for every input" in n for n in notes.values())
        return
    assert len(said) == 1 and said[0].startswith(f"FlowCallback: {norms[0]}, {norms[1]} give every input the same "
                                                 "output") and "multi_head_attention" in said[0]
    assert any(n.startswith(f"{norms[0]}, {norms[1]} give every input the same output") for n in g.notes)
    for name in norms:
        assert notes[name].startswith("its output is its offset (beta) for every input")
        assert "inflation=" not in notes[name]  # (its rounding errors, times 1 / sqrt(epsilon), may make clusters)
    assert notes["multi_head_attention"].startswith(f"reaches the output only through {norms[0]},")
    assert notes["conv1d"].startswith(f"reaches the output only through {norms[1]},")
    assert conserved(g)
