"""Tests of flowcallback.core.knn: resolve_k and the symmetric cosine kNN graph (FAISS)."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcallback.core.embed import embed
from flowcallback.core.knn import DEFAULT_K, HNSW_THRESHOLD, knn_graph, resolve_k

FAST = settings(max_examples=50, deadline=None)


def _unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force_graph(x, k):
    """Exact top-k cosine neighbours (self excluded), symmetrised, clipped to [0, 1], zeros dropped."""
    x = np.asarray(x, dtype=np.float64)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    n = len(x)
    dense = np.zeros((n, n))
    rows = np.repeat(np.arange(n), k)
    dense[rows, top.ravel()] = np.clip(s[rows, top.ravel()], 0.0, 1.0)
    dense = np.maximum(dense, dense.T)
    return dense, top, s


def _check_graph_invariants(g, n):
    assert sp.isspmatrix_csr(g)
    assert g.shape == (n, n)
    assert g.dtype == np.float32
    assert (g != g.T).nnz == 0, "graph must be symmetric"
    assert np.all(g.diagonal() == 0), "graph must have a zero diagonal"
    if g.nnz:
        assert g.data.min() > 0.0 and g.data.max() <= 1.0  # zeros are eliminated, weights clipped


# -- resolve_k -----------------------------------------------------------------------------------
def test_resolve_k_paper_rule():
    assert resolve_k("paper", 10_000, 10) == 1000
    assert resolve_k("paper", 101, 10) == 10
    # more classes than samples: at least one neighbour
    assert resolve_k("paper", 5, 10) == 1


@FAST
@given(st.integers(2, 100_000), st.integers(2, 1000))
def test_resolve_k_paper_is_n_over_c(n, c):
    assert resolve_k("paper", n, c) == max(1, n // c)


def test_resolve_k_integer_passthrough():
    assert resolve_k(30, 1000, 10) == 30
    assert resolve_k(DEFAULT_K, 1000, 10) == 50  # "auto": n // (2 c)


@pytest.mark.parametrize("n,c,expected", [(10_000, 10, 500), (2_000, 10, 100), (450, 10, 22), (60, 10, 5),
                                          (6, 2, 5), (3, 2, 2), (100_000, 10, 500)])
def test_auto_k_is_half_a_class_share_clipped(n, c, expected):
    assert resolve_k("auto", n, c) == expected
    k = resolve_k(np.int64(7), 100, 10)
    assert k == 7 and type(k) is int


@pytest.mark.parametrize("k", [0, -3, True, False, 2.0, 2.5, "5", "Paper", None, [3]])
def test_resolve_k_invalid_raises(k):
    with pytest.raises(ValueError, match=r"^k: "):
        resolve_k(k, 100, 10)


@pytest.mark.parametrize("k,n", [(100, 100), (101, 100), (1, 1)])
def test_resolve_k_not_less_than_n_raises(k, n):
    with pytest.raises(ValueError, match=rf"^k: .*k={k}.*{n} samples"):
        resolve_k(k, n, 2)


def test_resolve_k_paper_with_one_class_raises():
    # n // 1 == n neighbours is impossible
    with pytest.raises(ValueError, match=r"^k: "):
        resolve_k("paper", 50, 1)


# -- knn_graph: argument checks ------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, -1, True, False, 10, 11, 2.5, 3.0, np.float64(2.0), "3", None])
def test_knn_graph_invalid_k_raises(k):
    x = _unit(np.random.default_rng(0).normal(size=(10, 4)))
    with pytest.raises(ValueError, match=r"^k: "):
        knn_graph(x, k)


def test_knn_graph_accepts_numpy_integer_k():
    x = _unit(np.random.default_rng(0).normal(size=(10, 4)))
    assert (knn_graph(x, np.int32(3)) != knn_graph(x, 3)).nnz == 0


def test_knn_graph_invalid_index_raises():
    x = _unit(np.random.default_rng(0).normal(size=(10, 4)))
    with pytest.raises(ValueError, match=r"^index: "):
        knn_graph(x, 3, index="ivf")


@pytest.mark.parametrize("shape", [(10,), (5, 2, 2)])
def test_knn_graph_needs_2d_vectors(shape):
    with pytest.raises(ValueError, match=r"^vectors: "):
        knn_graph(np.ones(shape, dtype=np.float32), 1)


# -- knn_graph: structure --------------------------------------------------------------------------
@FAST
@given(
    n=st.integers(2, 60),
    d=st.integers(1, 8),
    k_frac=st.floats(0, 1, exclude_max=True),
    seed=st.integers(0, 2**32 - 1),
)
def test_graph_is_symmetric_zero_diagonal_and_every_node_has_k_neighbours(n, d, k_frac, seed):
    k = 1 + int(k_frac * (n - 1))  # 1 <= k < n
    rng = np.random.default_rng(seed)
    # strictly positive data: every cosine similarity is > 0, so no edge is clipped away
    x = embed(rng.uniform(0.05, 1.0, size=(n, d)))
    g = knn_graph(x, k, index="flat")
    _check_graph_invariants(g, n)
    degrees = np.diff(g.indptr)
    assert degrees.min() >= k
    # every stored weight is the cosine similarity of its two ends
    r, c = g.nonzero()
    sims = np.einsum("ij,ij->i", x[r].astype(np.float64), x[c].astype(np.float64))
    np.testing.assert_allclose(g[r, c].A1, np.clip(sims, 0, 1), atol=1e-5)


@pytest.mark.parametrize("seed,n,d,k", [(0, 300, 16, 1), (1, 300, 16, 5), (2, 250, 8, 15), (5, 150, 32, 40)])
def test_flat_index_equals_brute_force_top_k(seed, n, d, k):
    rng = np.random.default_rng(seed)
    x = _unit(rng.normal(size=(n, d)))
    expected, top, s = _brute_force_graph(x, k)
    # precondition: no near-tie at the k-th neighbour, so the exact answer is unambiguous
    srt = -np.sort(-s, axis=1)
    assert np.min(srt[:, k - 1] - srt[:, k]) > 1e-5

    g = knn_graph(x, k, index="flat")
    _check_graph_invariants(g, n)
    # every sample's exact top-k are its neighbours
    # (those with a non-positive similarity are clipped to 0 and dropped)
    for i in range(n):
        nbr = set(g.indices[g.indptr[i] : g.indptr[i + 1]].tolist())
        assert {int(j) for j in top[i] if s[i, j] > 0} <= nbr
    # and the whole graph (symmetrised, clipped) is exactly the brute-force one
    got = g.toarray().astype(np.float64)
    np.testing.assert_array_equal(got != 0, expected != 0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_negative_similarities_give_no_edges():
    rng = np.random.default_rng(7)
    n = 40
    x = _unit(rng.normal(size=(n, 3)))
    g = knn_graph(x, n - 1, index="flat")  # every pair is a candidate
    _check_graph_invariants(g, n)
    s = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(s, 0)
    np.testing.assert_array_equal(g.toarray() > 0, s > 1e-6)


def test_auto_index_is_flat_below_threshold():
    assert HNSW_THRESHOLD >= 1000
    x = _unit(np.random.default_rng(3).normal(size=(200, 10)))
    a, f = knn_graph(x, 7), knn_graph(x, 7, index="flat")
    assert (a != f).nnz == 0


def test_float64_and_non_contiguous_input_give_the_same_graph():
    x = _unit(np.random.default_rng(4).normal(size=(100, 12)))
    g = knn_graph(x, 5)
    wide = np.zeros((100, 24), dtype=np.float64)
    wide[:, ::2] = x
    assert (knn_graph(wide[:, ::2], 5) != g).nnz == 0


def test_doctest_example():
    g = knn_graph(embed(np.eye(4) + 0.1), k=1)
    _check_graph_invariants(g, 4)
    assert np.diff(g.indptr).min() >= 1


# -- duplicates --------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3])
def test_duplicates_are_neighbours_and_self_is_removed(k):
    rng = np.random.default_rng(5)
    base = _unit(rng.normal(size=(5, 6)))
    reps = 4  # each point appears 4 times: 3 exact duplicates besides itself
    x = np.repeat(base, reps, axis=0)
    group = np.repeat(np.arange(5), reps)
    g = knn_graph(x, k, index="flat")
    _check_graph_invariants(g, len(x))
    for i in range(len(x)):
        nbr = g.indices[g.indptr[i] : g.indptr[i + 1]]
        assert i not in nbr
        assert len(nbr) >= k
        # the k nearest of a sample with 3 duplicates are duplicates (similarity 1)
        assert np.all(group[nbr] == group[i])
        np.testing.assert_allclose(g[i, nbr].toarray().ravel(), 1.0, atol=1e-6)


def test_more_duplicates_than_k_still_drops_self():
    # 12 identical points, k=3: the sample itself may not come first in FAISS' list
    x = np.tile(_unit([[1.0, 2.0, 3.0]]), (12, 1))
    g = knn_graph(x, 3, index="flat")
    _check_graph_invariants(g, 12)
    assert np.diff(g.indptr).min() >= 3
    np.testing.assert_allclose(g.data, 1.0, atol=1e-6)


def test_zero_maps_form_their_own_neighbourhood():
    rng = np.random.default_rng(6)
    maps = rng.uniform(0.1, 1, size=(20, 5))
    maps[:4] = 0.0  # dead units
    g = knn_graph(embed(maps), 3, index="flat")
    _check_graph_invariants(g, 20)
    for i in range(4):
        nbr = g.indices[g.indptr[i] : g.indptr[i + 1]]
        assert set(nbr) == set(range(4)) - {i}
    # no edge between a zero map and a non-zero one (similarity 0 is dropped)
    assert g[:4, 4:].nnz == 0


# -- approximate index ------------------------------------------------------------------------------
def test_hnsw_recall_against_flat_on_clustered_points():
    rng = np.random.default_rng(11)
    n_centers, per, d, k = 20, 100, 32, 10
    centers = rng.normal(size=(n_centers, d))
    x = _unit(np.repeat(centers, per, axis=0) + 0.6 * rng.normal(size=(n_centers * per, d)))
    flat = knn_graph(x, k, index="flat")
    hnsw = knn_graph(x, k, index="hnsw")
    _check_graph_invariants(hnsw, len(x))
    assert np.diff(hnsw.indptr).min() >= 1

    # recall of the exact directed top-k lists
    s = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(s, -np.inf)
    top = np.argpartition(-s, k, axis=1)[:, :k]
    rows = np.repeat(np.arange(len(x)), k)
    recall = np.asarray(hnsw[rows, top.ravel()]).ravel().astype(bool).mean()
    assert recall >= 0.9, recall
    # and of the whole symmetrised edge set
    fr, fc = flat.nonzero()
    edge_recall = np.asarray(hnsw[fr, fc]).ravel().astype(bool).mean()
    assert edge_recall >= 0.9, edge_recall
