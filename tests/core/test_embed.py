"""Tests of flowcallback.core.embed: unit rows whose inner products are cosine similarities."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flowcallback.core.embed import Embedder, embed

FAST = settings(max_examples=50, deadline=None)
TINY = np.finfo(np.float32).tiny

# Any finite float32 value, subnormals included: the norm must neither overflow nor underflow.
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
maps_2d = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 12), st.integers(1, 8)),
    elements=finite32,
)


def _reference_similarity(x):
    """Expected inner products of embeddings, computed in float64 from the raw rows."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    norms = np.linalg.norm(x, axis=1)
    zero = norms <= TINY
    unit = x / np.where(zero, 1.0, norms)[:, None]
    sim = unit @ unit.T
    # all-zero maps: similarity 1 to each other, 0 to everything else
    sim[zero, :] = 0.0
    sim[:, zero] = 0.0
    sim[np.ix_(zero, zero)] = 1.0
    return sim, zero


# -- shape, dtype, norm --------------------------------------------------------------------------
def test_docstring_example():
    v = embed(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert v.dtype == np.float32
    np.testing.assert_array_equal(v, np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32))


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3), (3, 2, 2, 2), (6, 1)])
def test_flattens_any_trailing_shape(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    v = embed(x)
    d = int(np.prod(shape[1:]))
    assert v.shape == (shape[0], d + 1)
    assert v.dtype == np.float32
    flat = x.reshape(shape[0], -1)
    expected = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    np.testing.assert_allclose(v[:, :-1], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(v[:, -1], 0.0)


def test_one_dimensional_input_is_one_scalar_per_sample():
    v = embed(np.array([2.5, -0.1, 0.0]))
    np.testing.assert_array_equal(v, np.array([[1, 0], [-1, 0], [0, 1]], dtype=np.float32))


def test_integer_and_bool_input():
    np.testing.assert_allclose(embed(np.array([[0, 5], [3, 4]])), [[0, 1, 0], [0.6, 0.8, 0]], atol=1e-7)
    np.testing.assert_array_equal(embed(np.array([[True, False], [False, False]])), [[1, 0, 0], [0, 0, 1]])


def test_input_is_not_modified():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    before = x.copy()
    embed(x)
    np.testing.assert_array_equal(x, before)


@FAST
@given(maps_2d)
def test_rows_are_unit_norm(x):
    v = embed(x)
    assert v.shape == (x.shape[0], x.shape[1] + 1)
    norms = np.linalg.norm(v.astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e37])
def test_unit_norm_for_extreme_magnitudes(scale):
    # Squaring in float32 overflows / underflows at these scales; the norm must not.
    x = (np.array([[1.0, 2.0, -2.0], [4.0, 0.0, 3.0]]) * scale).astype(np.float32)
    v = embed(x)
    np.testing.assert_allclose(v[:, :-1], [[1 / 3, 2 / 3, -2 / 3], [0.8, 0.0, 0.6]], rtol=1e-6)
    np.testing.assert_array_equal(v[:, -1], 0.0)


@FAST
@given(maps_2d)
def test_inner_products_are_cosine_similarities(x):
    v = embed(x).astype(np.float64)
    expected, _ = _reference_similarity(x)
    np.testing.assert_allclose(v @ v.T, expected, rtol=0, atol=1e-5)


@FAST
@given(maps_2d, st.floats(1e-3, 1e3))
def test_positive_scaling_of_a_map_does_not_change_its_embedding(x, c):
    x = x.astype(np.float64)
    # stay far from the all-zero threshold and from float32 overflow after scaling
    x = x[(np.linalg.norm(x, axis=1) > 1e-30) & (np.abs(x).max(axis=1) < 1e34)]
    if len(x) == 0:
        return
    np.testing.assert_allclose(embed(x * c), embed(x), rtol=0, atol=1e-6)


# -- all-zero maps ---------------------------------------------------------------------------------
def test_zero_rows_get_indicator_and_are_identical_and_orthogonal_to_the_rest():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 4, 2))
    zero_rows = [0, 3, 6]
    x[zero_rows] = 0.0
    v = embed(x).astype(np.float64)
    others = [1, 2, 4, 5]
    np.testing.assert_array_equal(v[zero_rows, -1], 1.0)
    np.testing.assert_array_equal(v[zero_rows, :-1], 0.0)
    np.testing.assert_array_equal(v[others, -1], 0.0)
    # identical to each other (similarity 1), orthogonal to every non-zero map
    np.testing.assert_array_equal(v[zero_rows[0]], v[zero_rows[1]])
    np.testing.assert_array_equal(v[zero_rows[0]], v[zero_rows[2]])
    sim = v @ v.T
    np.testing.assert_allclose(sim[np.ix_(zero_rows, zero_rows)], 1.0, atol=1e-7)
    np.testing.assert_array_equal(sim[np.ix_(zero_rows, others)], 0.0)


@FAST
@given(maps_2d, st.data())
def test_indicator_is_one_exactly_for_zero_maps(x, data):
    x = x.copy()
    mask = data.draw(hnp.arrays(np.bool_, x.shape[0]))
    x[mask] = 0.0
    v = embed(x)
    _, zero = _reference_similarity(x)
    np.testing.assert_array_equal(v[:, -1], zero.astype(np.float32))
    assert set(np.flatnonzero(mask)) <= set(np.flatnonzero(zero))


def test_all_samples_zero():
    v = embed(np.zeros((3, 5)))
    np.testing.assert_array_equal(v, np.tile([0, 0, 0, 0, 0, 1], (3, 1)).astype(np.float32))


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise_and_name_the_maps(bad):
    x = np.ones((4, 3))
    x[1, 2] = bad
    x[3, 0] = bad
    with pytest.raises(ValueError, match=r"conv2d_7: 2 sample\(s\) have NaN or infinite"):
        embed(x, name="conv2d_7")


def test_default_name_in_error():
    with pytest.raises(ValueError, match="^maps: "):
        embed(np.array([[np.nan]]))


@pytest.mark.parametrize("bad", [np.float64(3.0), np.zeros((0, 3)), np.zeros(0)])
def test_no_sample_axis_raises(bad):
    with pytest.raises(ValueError, match=r"dense_1: expected an array of shape \(n_samples"):
        embed(bad, name="dense_1")


# -- Embedder ----------------------------------------------------------------------------------------
@FAST
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 20), st.integers(1, 3), st.integers(1, 3)), elements=finite32),
    st.data(),
)
def test_embedder_over_batches_equals_embed_of_the_whole(x, data):
    n = x.shape[0]
    cuts = sorted(data.draw(st.lists(st.integers(1, n), max_size=4, unique=True)))
    bounds = [0] + [c for c in cuts if c < n] + [n]
    e = Embedder("block")
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        e.add(x[lo:hi])
    out = e.result()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, embed(x))


def test_embedder_docstring_example():
    e = Embedder("dense")
    e.add(np.ones((2, 3)))
    e.add(np.zeros((1, 3)))
    r = e.result()
    assert r.shape == (3, 4)
    np.testing.assert_allclose(r[:2, :3], 1 / np.sqrt(3), rtol=1e-6)
    np.testing.assert_array_equal(r[2], [0, 0, 0, 1])


def test_embedder_without_batches_raises_with_its_name():
    with pytest.raises(ValueError, match="^dense_3: no batch was added"):
        Embedder("dense_3").result()


def test_embedder_add_names_the_layer_on_bad_values():
    e = Embedder("conv_a")
    e.add(np.ones((2, 2)))
    with pytest.raises(ValueError, match="^conv_a: 1 sample"):
        e.add(np.array([[1.0, np.inf]]))
    # the bad batch was not kept
    assert e.result().shape == (2, 3)


def test_embedder_rejects_batches_of_different_feature_size():
    e = Embedder("x")
    e.add(np.ones((2, 3)))
    with pytest.raises(ValueError, match="x: batches have 4 features"):
        e.add(np.ones((2, 4)))


# -- streaming reduction ----------------------------------------------------------------------------
def _low_rank_clusters(n=1200, d=2000, rank=40, n_clusters=12, seed=0):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, d))
    centres = rng.normal(size=(n_clusters, rank)) * 3
    z = np.repeat(centres, n // n_clusters, axis=0) + rng.normal(size=(n, rank))
    return np.maximum(z @ basis, 0) + 0.01 * rng.random((n, d))  # ReLU-like, non-negative


def _recall(a, b, k=20):
    import faiss

    out = []
    for x in (a, b):
        ix = faiss.IndexFlatIP(x.shape[1])
        ix.add(np.ascontiguousarray(x, dtype=np.float32))
        out.append(ix.search(np.ascontiguousarray(x[:200], dtype=np.float32), k + 1)[1][:, 1:])
    return np.mean([len(set(p) & set(q)) / k for p, q in zip(*out)])


@pytest.mark.parametrize("reduce, min_recall", [("pca", 0.9), ("random", 0.6)])
def test_streamed_reduction_keeps_cosine_neighbours(reduce, min_recall):
    x = _low_rank_clusters()
    e = Embedder("conv", dim=64, reduce=reduce, fit_samples=300)
    for s in range(0, len(x), 100):
        e.add(x[s : s + 100])
    r = e.result()
    assert r.shape == (len(x), 65)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1.0, rtol=1e-5)
    assert _recall(embed(x), r) >= min_recall


def test_reduction_is_skipped_for_narrow_layers_and_when_off():
    x = np.random.default_rng(1).random((50, 30))
    for kwargs in (dict(dim=64), dict(dim=8, reduce=None)):
        e = Embedder("d", **kwargs)
        e.add(x[:20])
        e.add(x[20:])
        np.testing.assert_array_equal(e.result(), embed(x))
        assert not e.reduced


def test_reduction_keeps_zero_maps_apart():
    x = _low_rank_clusters(n=300, d=500)
    x[::7] = 0
    e = Embedder("conv", dim=16, fit_samples=100)
    for s in range(0, len(x), 64):
        e.add(x[s : s + 64])
    r = e.result()
    assert e.reduced
    np.testing.assert_array_equal(r[::7, -1], 1.0)
    assert np.all(r[::7, :-1] == 0)


def test_wide_layers_fit_on_fewer_rows_within_the_buffer_budget():
    # 150,000 float32 features = 600 KB a row: 64 MiB hold 111 rows, fewer than the 1,000 asked for
    rng = np.random.default_rng(0)
    e = Embedder("wide", dim=16, fit_samples=1000)
    for _ in range(5):
        e.add(rng.random((20, 150_000), dtype=np.float32))
    assert e.fit_samples == 111 and e.basis is None and e.n_pending == 100  # buffered, not fitted yet
    assert 0 < e.buffer_bytes <= 64 * 2**20
    e.add(rng.random((20, 150_000), dtype=np.float32))
    assert e.basis is not None and e.n_pending == 0 and e.buffer_bytes == 0
    assert e.result().shape == (120, 17)


def test_narrow_layers_fit_on_the_rows_asked_for():
    e = Embedder("narrow", dim=8, fit_samples=50)
    e.add(np.random.default_rng(0).random((40, 100)))
    assert e.fit_samples == 50 and e.basis is None and e.n_pending == 40
    e.add(np.random.default_rng(1).random((10, 100)))
    assert e.basis is not None and e.n_pending == 0
    assert e.result().shape == (50, 9)  # every row projected onto the 8-dimensional basis, plus the flag


@pytest.mark.parametrize("kwargs, match", [(dict(reduce="svd"), "reduce"), (dict(dim=0), "dim"),
                                           (dict(fit_samples=0), "fit_samples"),
                                           (dict(fit_samples=1.5), "fit_samples")])
def test_embedder_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Embedder("x", **kwargs)


def test_rows_buffered_for_the_fit_embed_like_the_rest():
    """The rows held (as float16) until the basis is fitted, and the rows of the same batch past
    the fitting rows, come out in input order and as the float32 projection on the fitted basis."""
    x = _low_rank_clusters(n=300, d=500).astype(np.float32)
    e = Embedder("conv", dim=16, fit_samples=100)
    for s in range(0, len(x), 64):  # the fit happens inside the second batch (rows 64-127)
        e.add(x[s : s + 64])
    r = e.result()
    assert r.shape == (300, 17)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = u @ e.basis
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(r[:100, :-1], y[:100], atol=2e-3)  # float16-buffered rows
    np.testing.assert_allclose(r[100:, :-1], y[100:], atol=1e-5)  # projected on arrival
    np.testing.assert_array_equal(r[:, -1], 0)


def test_top_right_singular_vectors_match_numpy_svd():
    """The Gram-matrix basis spans the same top-k subspace as LAPACK's full SVD, orthonormal, any block size."""
    from flowcallback.core.embed import top_right_singular_vectors

    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, 12)) @ rng.standard_normal((12, 500)) + 0.05 * rng.standard_normal((60, 500))
    ref = np.linalg.svd(x, full_matrices=False)[2][:8].T
    for block in (None, 7, 500):
        v = top_right_singular_vectors(x, 8, block=block)
        assert v.shape == (500, 8) and v.dtype == np.float32
        np.testing.assert_allclose(v.T @ v, np.eye(8), atol=1e-5)
        # same subspace: the cosines of the principal angles are all 1
        np.testing.assert_allclose(np.linalg.svd(ref.T @ v, compute_uv=False), 1.0, atol=1e-5)
        # and the same directions, up to sign, in decreasing order
        np.testing.assert_allclose(np.abs(np.sum(ref * v, axis=0)), 1.0, atol=1e-4)
    v16 = top_right_singular_vectors(x.astype(np.float16), 8)
    assert np.all(np.abs(np.sum(ref * v16, axis=0)) > 0.99)


def test_top_right_singular_vectors_of_a_low_rank_buffer_are_zero_beyond_its_rank():
    from flowcallback.core.embed import top_right_singular_vectors

    rng = np.random.default_rng(4)
    x = np.repeat(rng.random((3, 40)), 5, axis=0)  # 15 rows, rank 3
    v = top_right_singular_vectors(x, 6)
    assert np.count_nonzero(np.abs(v).sum(axis=0)) == 3
    np.testing.assert_allclose(v[:, :3].T @ v[:, :3], np.eye(3), atol=1e-5)
    np.testing.assert_allclose(x @ v[:, :3] @ v[:, :3].T, x, atol=1e-5)  # the rank-3 basis reproduces every row
    with pytest.raises(ValueError, match="k: expected"):
        top_right_singular_vectors(x, 16)
