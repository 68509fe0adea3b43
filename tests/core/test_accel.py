"""kNN and MCL with keras.ops (issue 23): on the CPU, through Keras 3's TensorFlow backend, the same
kNN graph as FAISS's exact search and the same clusters as the numba kernel."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from flowcallback.core import _accel, cluster, knn
from flowcallback.core._keras import is_keras3
from flowcallback.core.embed import embed

keras3 = pytest.mark.skipif(not __import__("importlib").util.find_spec("keras")
                            or int(__import__("keras").__version__.split(".")[0]) < 3,
                            reason="keras.ops needs Keras 3")


def _digits(n=None):
    from sklearn.datasets import load_digits

    return np.ascontiguousarray(embed(load_digits().data[:n]), dtype=np.float32)


def _layer_vectors(model, x, layer_index):
    import keras

    sub = keras.Model(model.inputs, model.layers[layer_index].output)
    maps = sub.predict(x, verbose=0)
    return np.ascontiguousarray(embed(maps.reshape(len(maps), -1)), dtype=np.float32)


@keras3
def test_keras_search_finds_faiss_exact_neighbours_up_to_ties():
    import faiss

    x = _digits()
    ix = faiss.IndexFlatIP(x.shape[1])
    ix.add(x)
    want_s, want_i = ix.search(x, 31)
    got_s, got_i = _accel.search(x, 31, block=500)
    np.testing.assert_allclose(got_s, want_s, atol=1e-5)
    differ = np.flatnonzero((got_i != want_i).any(axis=1))
    assert len(differ) < 0.01 * len(x)
    for row in differ:  # only the order of equal similarities differs
        pos = np.flatnonzero(got_i[row] != want_i[row])
        assert np.all(np.abs(want_s[row, pos][:, None] - want_s[row][None, :]).min(axis=1) < 1e-5)
        assert set(got_i[row, :-1]) | {want_i[row, -1]} >= set(want_i[row, :-1]) - {got_i[row, -1]}
    a = knn.knn_graph(x, 30, backend="keras")
    b = knn.knn_graph(x, 30, index="flat")
    assert abs(a.nnz - b.nnz) <= 2 * len(differ)
    np.testing.assert_allclose(a.multiply(b > 0).sum(), b.multiply(a > 0).sum(), rtol=1e-5)


@keras3
@pytest.mark.parametrize("k", [10, 50, 150])
def test_keras_mcl_gives_the_numba_kernels_clusters_on_the_digits(k):
    g = knn.knn_graph(_digits(), k)
    fast = cluster.mcl(g)
    dense = cluster.mcl(g, backend="keras")
    assert adjusted_rand_score(fast, dense) >= 0.99
    assert len(set(fast)) > 3


@keras3
def test_keras_mcl_gives_the_numba_kernels_clusters_on_a_trained_models_layers(fitted_run):
    """Every layer of the suite's trained LeNet5 on its 360 held-out digits, and on 2,000 samples."""
    model, x = fitted_run["model"], fitted_run["x_test"]
    x2000 = np.concatenate([x] * 6)[:2000] + np.random.default_rng(0).normal(0, 0.05, (2000, *x.shape[1:]))
    checked = 0
    for index in range(len(model.layers)):
        if not model.layers[index].weights:
            continue
        for held_out, k in ((x, 18), (x2000.astype("float32"), 100)):
            g = knn.knn_graph(_layer_vectors(model, held_out, index), k)
            fast, dense = cluster.mcl(g), cluster.mcl(g, backend="keras")
            assert adjusted_rand_score(fast, dense) >= 0.99, (model.layers[index].name, len(held_out))
            checked += 1
    assert checked >= 6


@keras3
def test_a_graph_too_large_for_the_device_runs_on_the_cpu_with_a_warning(monkeypatch):
    g = knn.knn_graph(_digits(400), 10)
    monkeypatch.setattr(_accel, "max_nodes", lambda dev, **kw: 100)
    with pytest.warns(RuntimeWarning, match=r"MCL of a graph of 400 nodes does not fit the memory of .* on the CPU"):
        labels = cluster.mcl(g, backend="keras")
    np.testing.assert_array_equal(labels, cluster.mcl(g))


def test_non_finite_or_negative_weights_are_refused_as_on_the_cpu():
    import scipy.sparse as sp

    bad = sp.csr_matrix(np.array([[0, np.nan], [np.nan, 0]]))
    for backend in ("fast", "keras"):
        with pytest.raises(ValueError, match="graph: edge weights must be finite"):
            cluster.mcl(bad, backend=backend)
        with pytest.raises(ValueError, match="non-negative"):
            cluster.mcl(sp.csr_matrix(np.array([[0, -1.0], [-1.0, 0]])), backend=backend)


def test_auto_picks_the_accelerator_only_on_a_gpu_in_full_float32():
    cpu = _accel.Device("tensorflow", False, "tensorflow on the CPU", True, None, "it sees no GPU")
    gpu = _accel.Device("jax", True, "jax on cuda:0", True, 80 * 2**30, "")
    tf32 = _accel.Device("tensorflow", True, "tensorflow on GPU:0", False, None, "TF32 is on")
    none = _accel.Device("", False, "no Keras 3", True, None, "keras.ops needs Keras 3")
    assert (cluster.choose_engines(dev=cpu).knn, cluster.choose_engines(dev=cpu).mcl) == ("faiss", "fast")
    assert (cluster.choose_engines(dev=gpu).knn, cluster.choose_engines(dev=gpu).mcl) == ("keras", "keras")
    assert cluster.choose_engines(dev=tf32).mcl == "fast" and cluster.choose_engines(dev=tf32).off == "TF32 is on"
    assert "keras.ops (jax on cuda:0)" in cluster.choose_engines(dev=gpu).note
    assert cluster.choose_engines("fast", "faiss", gpu).note == ("kNN graphs: FAISS on the CPU; MCL: the numba "
                                                                 "kernel on the CPU.")
    with pytest.raises(ValueError, match=r"^mcl_backend: 'keras' runs on keras.ops, which needs Keras 3"):
        cluster.choose_engines("keras", "auto", none)
    with pytest.raises(ValueError, match=r"^knn_backend: 'keras' runs on keras.ops"):
        cluster.choose_engines("auto", "keras", none)
    with pytest.raises(ValueError, match=r"^knn_backend: expected 'auto', 'faiss' or 'keras', got 'cuda'"):
        cluster.choose_engines("auto", "cuda", gpu)
    # this machine has no GPU: the CPU path, whatever the Keras version
    here = _accel.device()
    assert not here.accelerator and not here.usable and here.reason


@pytest.mark.both
def test_the_callback_on_the_keras_backends_writes_the_same_flows_and_says_so(tmp_path, digits):
    import json

    from flowcallback import FlowCallback, load_run
    from flowcallback.demo import lenet5_digits

    (x_tr, y_tr), (x_te, y_te) = digits
    model = lenet5_digits()
    if not is_keras3(model):  # Keras 2 keeps the CPU path; asking for keras.ops is refused before training
        cb = FlowCallback((x_te, y_te), log_dir=tmp_path / "k", mcl_backend="keras", lrp=False, verbose=0)
        with pytest.raises(ValueError, match=r"^mcl_backend: 'keras' runs on keras.ops, which needs Keras 3"):
            model.fit(x_tr[:64], y_tr[:64], epochs=1, verbose=0, callbacks=[cb])
        return
    from flowcallback import snapshot

    # the callback's snapshot of epoch 1 is taken at the end of fit: the weights snapshot() then sees
    cb = FlowCallback((x_te, y_te), log_dir=tmp_path / "cpu", epochs=[1], lrp=False, verbose=0)
    model.fit(x_tr, y_tr, epochs=1, batch_size=64, verbose=0, callbacks=[cb])
    snapshot(model, (x_te, y_te), tmp_path / "keras", epoch=1, lrp=False, verbose=0, mcl_backend="keras",
             knn_backend="keras")
    runs = {name: load_run(tmp_path / name) for name in ("cpu", "keras")}
    cpu, dev = runs["cpu"].epoch(1), runs["keras"].epoch(1)
    for j, column in enumerate(cpu.columns[:-2]):
        assert adjusted_rand_score(cpu.assignments[:, j], dev.assignments[:, j]) >= 0.99, column.name
    config = json.loads((tmp_path / "keras" / "run.json").read_text())["config"]
    assert config["mcl_backend"] == "keras" and config["knn_backend"] == "keras"
    assert json.loads((tmp_path / "cpu" / "run.json").read_text())["config"]["mcl_backend"] == "fast"
    assert config["engines_note"] == ("kNN graphs: keras.ops (tensorflow on the CPU); MCL: keras.ops (tensorflow on "
                                      "the CPU).")
    page = (tmp_path / "cpu" / "index.html").read_text()
    assert '"engines":"kNN graphs: FAISS on the CPU; MCL: the numba kernel on the CPU."' in page
