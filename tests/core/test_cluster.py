"""Tests of flowcallback.core.cluster: canonical labels, partitions and MCL."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score

from flowcallback.core import cluster
from flowcallback.core.cluster import canonical_labels, mcl, partition_labels

FAST = settings(max_examples=50, deadline=None)


def _comembership(labels):
    labels = np.asarray(labels)
    return labels[:, None] == labels[None, :]


def _assert_canonical_partition(labels, n):
    """One label per sample, labels 0..C-1, cluster 0 largest, ties by first member."""
    labels = np.asarray(labels)
    assert labels.shape == (n,)
    assert labels.dtype == np.int32
    if n == 0:
        return
    uniq = np.unique(labels)
    np.testing.assert_array_equal(uniq, np.arange(len(uniq)))
    sizes = np.bincount(labels)
    firsts = np.array([np.flatnonzero(labels == c)[0] for c in uniq])
    for a in range(len(uniq) - 1):
        assert sizes[a] > sizes[a + 1] or (sizes[a] == sizes[a + 1] and firsts[a] < firsts[a + 1])


def _cliques(sizes, weak_edges=(), weak=0.05):
    """Block-diagonal graph of cliques (weight 1), plus weak edges between given node pairs."""
    g = sp.block_diag([np.ones((s, s)) - np.eye(s) for s in sizes]).tolil()
    for i, j in weak_edges:
        g[i, j] = g[j, i] = weak
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return g.tocsr(), truth


# -- canonical_labels ------------------------------------------------------------------------------
def test_canonical_labels_docstring_example():
    out = canonical_labels([5, 5, 2, 7, 7, 7])
    np.testing.assert_array_equal(out, [1, 1, 2, 0, 0, 0])
    assert out.dtype == np.int32


def test_canonical_labels_ties_go_to_the_smallest_first_member():
    np.testing.assert_array_equal(canonical_labels([9, 4, 4, 9, 1]), [0, 1, 1, 0, 2])
    np.testing.assert_array_equal(canonical_labels([3, 2, 1, 0]), [0, 1, 2, 3])


def test_canonical_labels_of_strings_and_empty():
    np.testing.assert_array_equal(canonical_labels(["b", "a", "b"]), [0, 1, 0])
    out = canonical_labels(np.array([], dtype=np.int64))
    assert out.shape == (0,) and out.dtype == np.int32


label_lists = st.lists(st.integers(-5, 1000), min_size=1, max_size=40)


@FAST
@given(label_lists)
def test_canonical_labels_is_the_same_partition(labels):
    out = canonical_labels(labels)
    np.testing.assert_array_equal(_comembership(out), _comembership(labels))
    assert adjusted_rand_score(labels, out) == 1.0


@FAST
@given(label_lists)
def test_canonical_labels_are_contiguous_and_sorted_by_size(labels):
    out = canonical_labels(labels)
    _assert_canonical_partition(out, len(labels))
    sizes = np.bincount(out)
    assert sizes[0] == max(np.unique(labels, return_counts=True)[1])  # label 0 is the largest


@FAST
@given(label_lists, st.randoms(use_true_random=False))
def test_canonical_labels_ignores_the_names_of_clusters(labels, rnd):
    uniq = sorted(set(labels))
    renamed = dict(zip(uniq, rnd.sample(range(10_000), len(uniq))))
    relabelled = [renamed[v] for v in labels]
    out = canonical_labels(labels)
    np.testing.assert_array_equal(canonical_labels(relabelled), out)
    np.testing.assert_array_equal(canonical_labels(out), out)  # idempotent


# -- partition_labels ------------------------------------------------------------------------------
def test_partition_labels_docstring_example():
    out = partition_labels([(0, 1, 2), (2, 3)], 5)
    np.testing.assert_array_equal(out, [0, 0, 0, 1, 2])
    assert out.dtype == np.int32


def test_partition_labels_overlap_goes_to_the_larger_cluster():
    # sample 3 is in a cluster of 2 and one of 4: it joins the cluster of 4; 5 is left alone
    # in the smaller one and 4 is unlisted (two singletons, ordered by their member)
    out = partition_labels([(3, 5), (0, 1, 2, 3)], 6)
    np.testing.assert_array_equal(out, [0, 0, 0, 0, 1, 2])


def test_partition_labels_missing_members_are_singletons():
    out = partition_labels([(1, 2)], 5)
    np.testing.assert_array_equal(out, [1, 0, 0, 2, 3])
    np.testing.assert_array_equal(partition_labels([], 3), [0, 1, 2])


def test_partition_labels_cluster_fully_absorbed_leaves_no_gap():
    # (1, 2) is entirely inside the larger cluster: it disappears, labels stay contiguous
    out = partition_labels([(1, 2), (0, 1, 2, 3), (4, 5)], 7)
    np.testing.assert_array_equal(out, [0, 0, 0, 0, 1, 1, 2])


def test_partition_labels_repeated_clusters():
    out = partition_labels([(0, 1), (0, 1), (2,)], 3)
    np.testing.assert_array_equal(out, [0, 0, 1])


@st.composite
def clusterings(draw):
    n = draw(st.integers(1, 30))
    clusters = draw(
        st.lists(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True).map(tuple), max_size=8)
    )
    return n, clusters


@FAST
@given(clusterings())
def test_partition_labels_is_a_partition_respecting_largest_clusters(case):
    n, clusters = case
    out = partition_labels(clusters, n)
    _assert_canonical_partition(out, n)
    listed = set(s for c in clusters for s in c)
    for s in range(n):
        group = set(np.flatnonzero(out == out[s]).tolist())
        if s not in listed:
            assert group == {s}, "an unlisted sample is a singleton"
            continue
        containing = [set(c) for c in clusters if s in c]
        biggest = max(len(c) for c in containing)
        # the sample's group lies inside one of the largest clusters that list it
        assert any(group <= c for c in containing if len(c) == biggest)


@FAST
@given(st.lists(st.integers(0, 5), min_size=1, max_size=30))
def test_partition_labels_of_a_partition_is_that_partition(labels):
    labels = np.asarray(labels)
    clusters = [tuple(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    np.testing.assert_array_equal(partition_labels(clusters, len(labels)), canonical_labels(labels))


# -- mcl -------------------------------------------------------------------------------------------
@pytest.mark.slow  # up to 30 s on CI's 2 cores (numba compiles the MCL kernel)
def test_mcl_docstring_example():
    block = np.ones((3, 3)) - np.eye(3)
    out = mcl(sp.csr_matrix(sp.block_diag([block, block])))
    np.testing.assert_array_equal(out, [0, 0, 0, 1, 1, 1])
    assert out.dtype == np.int32


@st.composite
def clique_graphs(draw):
    sizes = draw(st.lists(st.integers(4, 10), min_size=3, max_size=6))
    n_weak = draw(st.integers(0, 4))
    starts = np.cumsum([0] + sizes)
    edges = []
    for _ in range(n_weak):
        a, b = draw(st.lists(st.integers(0, len(sizes) - 1), min_size=2, max_size=2, unique=True))
        i = draw(st.integers(starts[a], starts[a + 1] - 1))
        j = draw(st.integers(starts[b], starts[b + 1] - 1))
        edges.append((i, j))
    perm = draw(st.permutations(range(starts[-1])))
    return sizes, edges, np.asarray(perm)


@FAST
@given(clique_graphs())
def test_mcl_recovers_cliques_with_weak_links(case):
    sizes, edges, perm = case
    g, truth = _cliques(sizes, edges)
    # shuffle the node order, so that communities are not contiguous ranges
    g = g[perm][:, perm]
    truth = truth[perm]
    out = mcl(g)
    _assert_canonical_partition(out, len(truth))
    assert adjusted_rand_score(truth, out) == 1.0
    np.testing.assert_array_equal(out, canonical_labels(truth))


def test_mcl_recovers_weighted_communities_from_a_knn_graph():
    # three well separated groups of maps, through the embed and kNN stages
    from flowcallback.core.embed import embed
    from flowcallback.core.knn import knn_graph

    rng = np.random.default_rng(0)
    directions = np.eye(3, 12) * 5
    x = np.repeat(directions, [15, 25, 20], axis=0) + 0.3 * rng.normal(size=(60, 12))
    truth = np.repeat([0, 1, 2], [15, 25, 20])
    out = mcl(knn_graph(embed(x), 10, index="flat"))
    assert adjusted_rand_score(truth, out) == 1.0
    np.testing.assert_array_equal(out, canonical_labels(truth))


@st.composite
def random_graphs(draw):
    n = draw(st.integers(1, 25))
    density = draw(st.floats(0, 0.5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    w = rng.uniform(0, 1, size=(n, n)) * (rng.uniform(size=(n, n)) < density)
    w = np.triu(w, 1)
    return sp.csr_matrix(w + w.T)


@FAST
@given(random_graphs(), st.sampled_from([1.4, 2.0, 3.0]))
def test_mcl_always_returns_a_canonical_partition(g, inflation):
    out = mcl(g, inflation=inflation)
    _assert_canonical_partition(out, g.shape[0])
    # nodes without edges are singletons
    isolated = np.flatnonzero(np.diff(g.indptr) == 0)
    for i in isolated:
        assert np.count_nonzero(out == out[i]) == 1


def test_mcl_graph_without_edges_gives_singletons():
    np.testing.assert_array_equal(mcl(sp.csr_matrix((4, 4))), [0, 1, 2, 3])


def test_mcl_dense_input_equals_sparse_input():
    g, _ = _cliques([4, 5, 6], [(0, 5), (6, 12)])
    np.testing.assert_array_equal(mcl(g.toarray()), mcl(g))
    np.testing.assert_array_equal(mcl(sp.csr_array(g)), mcl(g))


def test_mcl_empty_graph():
    out = mcl(sp.csr_matrix((0, 0)))
    assert out.shape == (0,) and out.dtype == np.int32


def test_mcl_does_not_modify_its_input():
    g, _ = _cliques([4, 5], [(0, 5)])
    before = g.copy()
    mcl(g)
    assert (g != before).nnz == 0 and g.diagonal().sum() == 0


def test_default_inflation_is_the_mcl_programs():
    # mcl's own default, -I 2.0, on a graph whose clusters change with the inflation
    from flowcallback.core.embed import embed
    from flowcallback.core.knn import knn_graph

    g = knn_graph(embed(np.random.default_rng(0).normal(size=(60, 5))), 8)
    default = mcl(g).tolist()
    assert default == mcl(g, inflation=2.0).tolist()
    assert mcl(g, inflation=1.5).tolist() != default != mcl(g, inflation=3.0).tolist()


@pytest.mark.parametrize("inflation", [1, 1.0, 0.5, 0, -2.0, float("nan"), True, "2", None, [2.0]])
def test_mcl_invalid_inflation_raises(inflation):
    g, _ = _cliques([3, 3])
    with pytest.raises(ValueError, match=r"^inflation: "):
        mcl(g, inflation=inflation)


@pytest.mark.parametrize("inflation", [1.5, 2, np.float64(2.5), np.float32(3.0)])
def test_mcl_accepts_numeric_inflation(inflation):
    g, truth = _cliques([4, 4, 5])
    assert adjusted_rand_score(truth, mcl(g, inflation=inflation)) == 1.0


def test_mcl_negative_weights_raise():
    g = _cliques([3, 3])[0].tolil()
    g[0, 4] = g[4, 0] = -0.5
    with pytest.raises(ValueError, match="non-negative"):
        mcl(g.tocsr())


def test_mcl_non_square_raises():
    with pytest.raises(ValueError, match="square"):
        mcl(sp.csr_matrix((3, 4)))


# -- the fast backend against the reference -------------------------------------------------------
def _planted(n_blocks, size, p_in, p_out, seed):
    rng = np.random.default_rng(seed)
    n = n_blocks * size
    truth = np.repeat(np.arange(n_blocks), size)
    same = truth[:, None] == truth[None, :]
    prob = np.where(same, p_in, p_out)
    upper = np.triu(rng.random((n, n)) < prob, 1)
    w = upper * rng.uniform(0.5, 1.0, (n, n))
    w = w + w.T
    return sp.csr_matrix(w), truth


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_blocks,size", [(3, 40), (6, 25), (10, 30)])
def test_fast_backend_recovers_planted_communities_like_the_reference(seed, n_blocks, size):
    g, truth = _planted(n_blocks, size, 0.5, 0.01, seed)
    fast = cluster.mcl(g, backend="fast")
    ref = cluster.mcl(g, backend="reference")
    assert adjusted_rand_score(truth, fast) == 1.0
    assert adjusted_rand_score(ref, fast) == 1.0


def test_fast_backend_matches_reference_on_a_knn_graph():
    from flowcallback.core.embed import embed
    from flowcallback.core.knn import knn_graph

    rng = np.random.default_rng(5)
    centres = rng.normal(size=(8, 32))
    x = np.repeat(centres, 60, axis=0) + 0.25 * rng.normal(size=(480, 32))
    g = knn_graph(embed(x), 15)
    fast = cluster.mcl(g, backend="fast", n_threads=2)
    ref = cluster.mcl(g, backend="reference")
    assert adjusted_rand_score(ref, fast) >= 0.95
    # a partition: every sample labelled, labels contiguous from 0
    assert fast.shape == (480,) and set(np.unique(fast)) == set(range(fast.max() + 1))


def test_fast_backend_threads_do_not_change_the_result():
    g, _ = _planted(12, 200, 0.1, 0.002, 3)
    one = cluster.mcl(g, backend="fast", n_threads=1)
    two = cluster.mcl(g, backend="fast", n_threads=2)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("kwargs, match", [
    (dict(backend="gpu"), "backend"),
    (dict(select=0), "select"),
    (dict(backend="fast", expansion=3), "expansion"),
    (dict(inflation=float("inf")), "inflation"),
    (dict(cutoff=-1e-6), "cutoff"),
    (dict(cutoff=1.0), "cutoff"),
    (dict(cutoff=float("nan")), "cutoff"),
    (dict(cutoff="1e-6"), "cutoff"),
])
def test_fast_backend_bad_arguments(kwargs, match):
    g, _ = _planted(2, 5, 1.0, 0.0, 0)
    with pytest.raises(ValueError, match=match):
        cluster.mcl(g, **kwargs)


def test_nan_weights_are_refused():
    g = sp.csr_matrix(np.array([[0, np.nan], [np.nan, 0]]))
    with pytest.raises(ValueError, match="finite"):
        cluster.mcl(g)


# -- the expansion cutoff --------------------------------------------------------------------------
def _knn_blobs(seed, n_blobs=8, per=60, k=15):
    from flowcallback.core.embed import embed
    from flowcallback.core.knn import knn_graph

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_blobs, 32))
    x = np.repeat(centres, per, axis=0) + 0.3 * rng.normal(size=(n_blobs * per, 32))
    return knn_graph(embed(x), k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutoff_gives_the_clusters_of_the_exact_expansion(seed):
    g = _knn_blobs(seed)
    exact = cluster.mcl(g, cutoff=0.0)
    default = cluster.mcl(g)
    assert adjusted_rand_score(exact, default) == 1.0


@pytest.mark.slow  # up to 30 s on CI's 2 cores (numba compiles the MCL kernel)
def test_a_large_cutoff_changes_the_result():
    # the cutoff is really applied: skipping all but each pair of columns' largest products
    # leaves many more, smaller clusters
    g = _knn_blobs(0)
    coarse = cluster.mcl(g, cutoff=0.9)
    assert coarse.max() + 1 > cluster.mcl(g).max() + 1


@pytest.mark.slow  # up to 30 s on CI's 2 cores (numba compiles the MCL kernel)
def test_cutoff_is_relative_so_dense_graphs_keep_their_cluster():
    # Near-identical samples and k = 500: nodes have 500 to 2,000 neighbours, so every entry of the
    # stochastic matrix is below 1e-3 and every product below 1e-6. A cutoff on absolute products
    # skipped them all and split this one cluster into singletons; a relative one must not.
    from flowcallback.core.embed import embed
    from flowcallback.core.knn import knn_graph

    rng = np.random.default_rng(0)
    g = knn_graph(embed(np.abs(1 + 0.01 * rng.normal(size=(3000, 10)))), 500)
    assert g.getnnz(axis=0).min() >= 500
    labels = cluster.mcl(g)
    assert labels.max() + 1 == cluster.mcl(g, cutoff=0.0).max() + 1 == 1


def test_kernel_keeps_columns_stochastic_and_sorted():
    from flowcallback.core import _mcl_kernel

    g = sp.csc_matrix(_knn_blobs(1), dtype=np.float64)
    g = (g + sp.identity(g.shape[0], format="csc")).tocsc()
    g = (g @ sp.diags(1.0 / np.asarray(g.sum(axis=0)).ravel())).tocsc()
    indptr, indices, data = g.indptr.astype(np.int64), g.indices.astype(np.int32), g.data.astype(np.float32)
    _mcl_kernel.sort_columns(indptr, indices, data)
    for _ in range(3):
        indptr, indices, data, chaos = _mcl_kernel.iterate(indptr, indices, data, g.shape[0], 2.0, 2.5e-4, 50, 1, 3e-4)
        sums = np.add.reduceat(data, indptr[:-1]) if len(data) else np.zeros(0)
        np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
        for j in range(g.shape[0]):
            col = data[indptr[j]:indptr[j + 1]]
            assert 1 <= len(col) <= 50
            assert np.all(np.diff(col) <= 0)
            assert len(np.unique(indices[indptr[j]:indptr[j + 1]])) == len(col)


def _round_reference(m, inflation, threshold, select):
    """One MCL round with SciPy: expansion, inflation, threshold pruning, top-`select`, normalisation."""
    e = (m @ m).tocsc().power(inflation)
    cols = []
    for j in range(e.shape[1]):
        c = e[:, j].toarray().ravel()
        c = c / c.sum()
        c[c < threshold] = 0
        if np.count_nonzero(c) > select:
            c[c < np.sort(c)[-select]] = 0
        cols.append(c / c.sum())
    return np.column_stack(cols)


@pytest.mark.parametrize("cutoff", [0.0, 3e-4])
def test_kernel_round_matches_scipy(cutoff):
    """One round of the compiled kernel equals the same round computed with SciPy's sparse product
    (exactly what is kept; values to float32 precision); with the cutoff, the skipped products are
    too small to change which entries are kept on this graph."""
    from flowcallback.core import _mcl_kernel

    g = sp.csc_matrix(_knn_blobs(1, per=300), dtype=np.float64)  # 2,400 nodes: two threads take part
    g = (g + sp.identity(g.shape[0], format="csc")).tocsc()
    m = (g @ sp.diags(1.0 / np.asarray(g.sum(axis=0)).ravel())).tocsc()
    expected = _round_reference(m, 2.0, 2.5e-4, 40)
    indptr, indices, data = m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32)
    _mcl_kernel.sort_columns(indptr, indices, data)
    for n_threads in (1, 2):
        out = _mcl_kernel.iterate(indptr.copy(), indices.copy(), data.copy(), m.shape[0], 2.0, 2.5e-4, 40, n_threads,
                                  cutoff)
        got = sp.csc_matrix((out[2], out[1], out[0]), shape=m.shape).toarray()
        assert ((got > 0) == (expected > 0)).all()
        np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("loop_value", [1.0, 0.0, 2.5])
def test_stochastic_setup_is_the_permuted_normalised_graph(loop_value):
    """The fast backend's input: self-loops added, columns normalised to 1, rows and columns
    permuted together (so that permuting back gives the graph's own stochastic matrix)."""
    g = sp.random(300, 300, density=0.05, random_state=1, format="csr") * 3
    mask = sp.diags((np.arange(300) != 5).astype(float))  # sample 5 is isolated
    g = (mask @ (g + g.T) @ mask).tocsr()
    g.eliminate_zeros()
    perm, indptr, indices, data = cluster._stochastic_csc(g, loop_value)
    m = sp.csc_matrix((data, indices, indptr), shape=g.shape).toarray()
    back = np.empty_like(m)
    back[np.ix_(perm, perm)] = m
    expected = g.toarray() + loop_value * np.eye(300)
    sums = expected.sum(axis=0)
    expected = expected / np.where(sums == 0, 1.0, sums)
    np.testing.assert_allclose(back, expected, rtol=1e-5, atol=1e-7)
    assert sorted(perm.tolist()) == list(range(300))


@pytest.mark.skipif(__import__("shutil").which("mcl") is None, reason="the mcl program (Debian package mcl) is absent")
def test_fast_backend_agrees_with_the_mcl_program_on_a_digits_graph(tmp_path):
    """The reference C program and the fast backend on the same kNN graph of real data (scikit-learn's
    digits, whose degrees vary): the clusterings agree (ARI >= 0.9; 0.92 to 0.99 at 10,000 MNIST
    images, docs/performance.md)."""
    import subprocess

    from sklearn.datasets import load_digits
    from sklearn.metrics import adjusted_rand_score

    from flowcallback.core.embed import embed
    from flowcallback.core.knn import knn_graph

    x = load_digits().data
    g = knn_graph(embed(x), 40)
    coo = sp.triu(g, 1).tocoo()
    src = tmp_path / "g.abc"
    np.savetxt(src, np.c_[coo.row, coo.col, coo.data], fmt="%d\t%d\t%.6f")
    out = tmp_path / "out"
    subprocess.run(["mcl", str(src), "--abc", "-I", "2.0", "-o", str(out), "-V", "all"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ref = np.arange(g.shape[0])
    for cid, line in enumerate(out.read_text().splitlines()):
        for tok in line.split():
            ref[int(tok)] = g.shape[0] + cid
    ours = cluster.mcl(g)
    assert adjusted_rand_score(ref, ours) >= 0.9
    assert abs(len(np.unique(ref)) - (ours.max() + 1)) <= max(2, len(np.unique(ref)) // 5)


# -- grouped expansion (issue 21): neighbouring columns expanded together ------------------------
def _rounds(g, group, n_threads, rounds=4, select=500):
    """The kernel's first rounds on a graph's stochastic matrix, every round's arrays kept."""
    from flowcallback.core import _mcl_kernel

    _, indptr, indices, data = cluster._stochastic_csc(sp.csc_matrix(g), 1.0)
    out = []
    for _ in range(rounds):
        indptr, indices, data, chaos = _mcl_kernel.iterate(indptr, indices, data, g.shape[0], 2.0, 2.5e-4, select,
                                                           n_threads, 0.0, group)
        out.append((indptr, indices, data, chaos))
    return out


def _assert_same_rounds(a, b):
    for (ip, ix, d, c), (ip2, ix2, d2, c2) in zip(a, b):
        np.testing.assert_array_equal(ip, ip2)
        np.testing.assert_array_equal(ix, ix2)
        np.testing.assert_array_equal(d, d2)  # bitwise: the same products added in the same order
        assert c == c2


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("group", [2, 8])
def test_grouped_expansion_is_bitwise_the_one_column_expansion(group, n_threads):
    """Expanding 2 or 8 neighbouring columns together gives exactly the arrays of the one-column
    kernel, round after round, on a planted-partition kNN graph whose size is neither even nor a
    multiple of 8 (the last columns of a chunk are then expanded in a pair or alone), large enough
    for two threads."""
    g = _knn_blobs(1, n_blobs=7, per=301)
    assert g.shape[0] % 2 == 1 and g.shape[0] >= 2000
    one = _rounds(g, 1, n_threads, select=60)
    assert one[0][1].size > 0 and one[0][3] > 0  # not a trivial graph: the chaos is not yet small
    _assert_same_rounds(_rounds(g, group, n_threads, select=60), one)


@FAST
@given(random_graphs(), st.sampled_from([2, 8]))
def test_grouped_expansion_is_bitwise_the_one_column_expansion_on_random_graphs(g, group):
    _assert_same_rounds(_rounds(g, group, 1, rounds=3, select=8), _rounds(g, 1, 1, rounds=3, select=8))


def test_grouped_expansion_gives_the_same_partition_on_a_digits_graph():
    """On a real graph (scikit-learn's digits, cosine kNN), the default kernel (eight columns at a
    time) finds the very partition of the paired and the one-column kernels, and it follows the
    digit classes."""
    from sklearn.datasets import load_digits
    from sklearn.metrics import normalized_mutual_info_score

    from flowcallback.core.embed import embed
    from flowcallback.core.knn import knn_graph

    digits = load_digits()
    g = knn_graph(embed(digits.data), 30, index="flat").tocsc()
    eight = cluster._fast_mcl(g, 2.0, 1.0, 100, 2.5e-4, 500, 2, 1e-4, 0.0, group=8)
    for group in (1, 2):
        np.testing.assert_array_equal(cluster._fast_mcl(g, 2.0, 1.0, 100, 2.5e-4, 500, 2, 1e-4, 0.0, group=group),
                                      eight)
    np.testing.assert_array_equal(cluster.mcl(g), eight)
    assert normalized_mutual_info_score(digits.target, eight) > 0.8


def test_group_order_is_a_permutation_by_attractor_row_and_changes_no_result():
    """The order in which groups of eight are taken (by the row of each column's largest
    off-diagonal entry) is a permutation of the columns, and the round's arrays are bitwise the
    same in that order and in the matrix's own order."""
    from flowcallback.core import _mcl_kernel

    g = _knn_blobs(2, n_blobs=7, per=301)  # 2,107 nodes: two threads take part
    n = g.shape[0]
    _, ip, ix, d = cluster._stochastic_csc(sp.csc_matrix(g), 1.0)
    ip, ix, d, _ = _mcl_kernel.iterate(ip, ix, d, n, 2.0, 2.5e-4, 60, 1)
    order = _mcl_kernel.group_order(n, ip, ix, d)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    m = sp.csc_matrix((d, ix, ip), shape=(n, n)).toarray()
    np.fill_diagonal(m, -1.0)
    key = m.argmax(axis=0)  # the first row among equal values, as the kernel picks it
    assert np.all(np.diff(key[order]) >= 0)
    for n_threads in (1, 2):
        a = _mcl_kernel.iterate(ip, ix, d, n, 2.0, 2.5e-4, 60, n_threads, 0.0, 8, True)
        b = _mcl_kernel.iterate(ip, ix, d, n, 2.0, 2.5e-4, 60, n_threads, 0.0, 8, False)
        _assert_same_rounds([a], [b])


def test_vector_add_is_the_scalar_float32_arithmetic():
    """The kernel's 8-lane multiply-add (acc[a:a+8] += w[b:b+8] * x) rounds like the scalar
    float32 code, lane by lane, and touches nothing else."""
    import numba as nb

    from flowcallback.core import _mcl_kernel

    @nb.njit
    def axpy(acc, a, w, b, x):
        _mcl_kernel._axpy8(acc, a, w, b, x)

    rng = np.random.default_rng(0)
    acc = rng.random(40).astype(np.float32)
    w = rng.random(24).astype(np.float32)
    x = np.float32(rng.random())
    want = acc.copy()
    want[16:24] = want[16:24] + w[8:16] * x  # numpy's float32 arithmetic, one lane at a time
    axpy(acc, 16, w, 8, x)
    np.testing.assert_array_equal(acc, want)


def test_kernel_group_must_be_1_2_or_8():
    from flowcallback.core import _mcl_kernel

    _, ip, ix, d = cluster._stochastic_csc(sp.csc_matrix(np.ones((3, 3))), 1.0)
    with pytest.raises(ValueError, match="group"):
        _mcl_kernel.iterate(ip, ix, d, 3, 2.0, 2.5e-4, 500, 1, 0.0, 4)
