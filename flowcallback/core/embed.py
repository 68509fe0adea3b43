"""Embed stage: per-sample maps to unit vectors whose inner product is cosine similarity.

Each sample's map (any shape) is flattened, as in the paper's ``buildSimilarityMatrix``, and
L2-normalised. An all-zero map (a dead ReLU layer, say) has no direction, so cosine similarity is
undefined for it; instead of dividing by zero, every embedding gets one extra coordinate that is 1
for an all-zero map and 0 otherwise. All-zero maps are then identical to each other (similarity 1)
and orthogonal to every other sample (similarity 0). The clustering stage
(:func:`flowcallback.core.cluster.cluster_layer`) puts them in one explicit cluster of their own.

A map holding NaN or infinite values (a diverging model) has no direction either. :func:`embed`
refuses it by default; with ``nonfinite="flag"`` (what the capture and the LRP worker use) its row
becomes all zeros with the extra coordinate set to -1 (:data:`NONFINITE_FLAG`), so that the
clustering stage can set those samples apart (one explicit cluster, with a note on the column)
instead of failing the whole snapshot.

Normalisation is row-wise, so a layer can be embedded batch by batch (:class:`Embedder`) without
ever holding its raw maps for the whole held-out set; wide layers are also projected to a few
hundred dimensions as the batches arrive (see :class:`Embedder`), which keeps memory bounded.
"""
from __future__ import annotations

import time
from typing import List, Optional

import numpy as np

from flowcallback.core import _params

__all__ = ["embed", "Embedder", "special_rows", "top_right_singular_vectors", "ZERO_FLAG", "NONFINITE_FLAG",
           "REDUCE", "DIM", "FIT_SAMPLES"]

_TINY = np.finfo(np.float32).tiny
#: Value of the extra (last) coordinate for an all-zero map.
ZERO_FLAG = 1.0
#: Value of the extra (last) coordinate for a map with NaN or infinite values (``nonfinite="flag"``).
NONFINITE_FLAG = -1.0
_NONFINITE = ("raise", "flag")
#: How wide layers are reduced (with :data:`flowcallback.core._params.NONE`: not at all).
REDUCE = _params.options("pca", "random")
#: The dimension after reduction: 2 at least (in one dimension every cosine is +1 or -1).
DIM = _params.integer(2)
#: Rows the PCA basis is fitted on (with None: the default).
FIT_SAMPLES = _params.integer(1)


def special_rows(vectors) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the rows of an embedding that have no direction: ``(all_zero, non_finite)``.

    Parameters
    ----------
    vectors : ndarray of shape (n_samples, n_features + 1)
        Output of :func:`embed` or :meth:`Embedder.result`.

    Examples
    --------
    >>> zero, bad = special_rows(embed(np.array([[1.0, 0.0], [0.0, 0.0], [np.nan, 1.0]]), nonfinite="flag"))
    >>> zero.tolist(), bad.tolist()
    ([False, True, False], [False, False, True])
    """
    flag = np.asarray(vectors)[:, -1]
    return flag > 0.5, flag < -0.5


def embed(maps, *, name: str = "maps", nonfinite: str = "raise") -> np.ndarray:
    """Flatten and L2-normalise per-sample maps.

    Parameters
    ----------
    maps : array-like of shape (n_samples, ...)
        One map per sample (activations or relevance), of any trailing shape.
    name : str, default="maps"
        Used in error messages (the layer name, for instance).
    nonfinite : {"raise", "flag"}, default="raise"
        What a map with NaN or infinite values does: raise, or become a row of zeros whose last
        coordinate is :data:`NONFINITE_FLAG` (-1).

    Returns
    -------
    ndarray of shape (n_samples, n_features + 1), float32
        Unit-norm rows. The last coordinate is 1 exactly for all-zero maps (and -1 for non-finite
        maps with ``nonfinite="flag"``).

    Raises
    ------
    ValueError
        If ``maps`` has no sample axis, or holds NaN or infinite values and ``nonfinite="raise"``.

    Examples
    --------
    >>> import numpy as np
    >>> v = embed(np.array([[3.0, 4.0], [0.0, 0.0]]))
    >>> v.astype(float).round(2).tolist()
    [[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]
    """
    x = np.asarray(maps)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected an array of shape (n_samples, ...), got shape {x.shape}")
    if nonfinite not in _NONFINITE:
        raise ValueError(f"nonfinite: expected 'raise' or 'flag', got {nonfinite!r}")
    x = x.reshape(x.shape[0], -1).astype(np.float32, copy=False)
    bad_rows = None
    if not np.all(np.isfinite(x)):
        bad_rows = ~np.all(np.isfinite(x), axis=1)
        if nonfinite == "raise":
            raise ValueError(
                f"{name}: {int(np.count_nonzero(bad_rows))} sample(s) have NaN or infinite values; cosine "
                "similarity is undefined for them (is the model diverging?)"
            )
        x = np.where(bad_rows[:, None], np.float32(0), x)
    # In float64: squaring float32 values overflows above ~1e19 and underflows below ~1e-19,
    # which gave zero (non-unit) rows for large maps and wrong norms for tiny ones.
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    zero = norms <= _TINY
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float32)
    np.divide(x, np.where(zero, 1.0, norms)[:, None], out=out[:, :-1])
    out[:, -1] = zero
    if bad_rows is not None:
        out[bad_rows, -1] = NONFINITE_FLAG
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    n = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    n[n == 0] = 1.0
    return (x / n[:, None]).astype(np.float32, copy=False)


def top_right_singular_vectors(x, k: int, *, block: Optional[int] = None) -> np.ndarray:
    """The top ``k`` right singular vectors of a short, wide matrix, as the columns of a basis.

    Computed through the Gram matrix ``x @ x.T`` (rows × rows, a few hundred to a few thousand):
    its eigenvectors ``u`` and eigenvalues ``s**2`` give the right singular vectors
    ``x.T @ u / s``. For the PCA buffers of :class:`Embedder` (256 to 512 rows) this exact
    solution takes about as long as scikit-learn's randomized SVD (0.6 to 1.7 times its
    speed, within 0.05 s) up to 4,096 features, and 1.7 to 5 times less
    from 4,704 to 65,536 features, while keeping at least as much of the buffer's energy
    (``benchmarks/pca_basis.py``); it needs no random state. Both products run over blocks of
    ``block`` columns in float32, so ``x`` may be float16 and is never copied whole (a block holds
    at most 32 MiB by default). Directions whose singular value is below 1e-5 of the largest (a
    buffer of rank below ``k``) are returned as zero columns: they carry no information, and
    dividing by a tiny singular value would turn rounding noise into a unit direction.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_features)
    k : int
        Number of directions, at most ``min(n_rows, n_features)``.
    block : int, optional
        Columns converted to float64 at a time; by default as many as 32 MiB hold (at least 256).

    Returns
    -------
    ndarray of shape (n_features, k), float32
        Orthonormal columns (zero for the missing directions), by decreasing singular value.

    Examples
    --------
    >>> v = top_right_singular_vectors(np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), 2)
    >>> np.abs(v).round(3).tolist()
    [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    """
    import scipy.linalg  # LAPACK's symmetric eigensolver, for the top k eigenpairs only

    n, d = x.shape
    if not 1 <= k <= min(n, d):
        raise ValueError(f"k: expected 1 <= k <= min(x.shape) = {min(n, d)}, got {k}")
    if block is None:
        block = max(256, (32 << 20) // (4 * n))
    # The products run in float32 (BLAS's sgemm: six times faster than float64 here, 0.3 against
    # 1.85 s for 512 rows of 16,384 features) and each block's Gram is added in float64; the
    # eigenproblem, a few hundred rows square, is solved in float64.
    gram = np.zeros((n, n))
    for j in range(0, d, block):
        c = np.asarray(x[:, j : j + block], dtype=np.float32)
        gram += c @ c.T
    w, u = scipy.linalg.eigh(gram, subset_by_index=[n - k, n - 1])
    w, u = w[::-1], u[:, ::-1]  # decreasing
    keep = w > max(w[0], 0.0) * 1e-10
    u = np.where(keep, u / np.sqrt(np.where(keep, w, 1.0)), 0.0).astype(np.float32)
    out = np.empty((d, k), dtype=np.float32)
    for j in range(0, d, block):
        out[j : j + block] = np.asarray(x[:, j : j + block], dtype=np.float32).T @ u
    return out


class Embedder:
    """Embeds one layer batch by batch, optionally reducing its dimension as it goes.

    A layer wider than ``dim`` features is projected, batch by batch, onto ``dim`` directions that
    preserve cosine neighbourhoods, so that its raw maps for the whole held-out set are never held:

    ``reduce="pca"`` (default)
        The first ``fit_samples`` unit-norm rows are buffered; the top ``dim`` right singular
        vectors of that buffer (uncentred, so inner products rather than covariances are kept;
        :func:`top_right_singular_vectors`) become a fixed orthonormal basis. Every row is projected and
        re-normalised.
    ``reduce="random"``
        A fixed Gaussian random projection (Johnson-Lindenstrauss), seeded, no buffering.
    ``reduce=None``
        No reduction.

    Parameters
    ----------
    name : str
        Used in error messages.
    dim : int, default=128
        Target dimension; layers with at most ``dim`` features are not reduced.
    reduce : {"pca", "random", None}, default="pca"
    fit_samples : int, optional
        Most rows used to fit the PCA basis; they are held until then, as float16. Default
        ``4 * dim``. A wide layer uses fewer, as many as 64 MiB of float32 rows hold (32 MiB as
        held) but at least ``2 * dim``, so that the buffers of all layers together stay small.
    seed : int, default=0
    nonfinite : {"raise", "flag"}, default="raise"
        As for :func:`embed`.

    Examples
    --------
    >>> import numpy as np
    >>> e = Embedder("dense", dim=8)
    >>> e.add(np.ones((2, 3))); e.add(np.zeros((1, 3)))
    >>> e.result().shape
    (3, 4)
    >>> e = Embedder("conv", dim=8, fit_samples=10)
    >>> for _ in range(3): e.add(np.random.default_rng(0).random((5, 100)))
    >>> e.result().shape
    (15, 9)
    """

    def __init__(self, name: str = "maps", *, dim: int = 128, reduce: Optional[str] = "pca",
                 fit_samples: Optional[int] = None, seed: int = 0, nonfinite: str = "raise"):
        _params.check("reduce", reduce, REDUCE, _params.NONE)
        _params.check("dim", dim, DIM)
        _params.check("fit_samples", fit_samples, _params.NONE, FIT_SAMPLES)
        _params.check("nonfinite", nonfinite, _params.options(*_NONFINITE))
        self.nonfinite = nonfinite
        self.name = name
        self.dim = int(dim)
        self.reduce = reduce
        self.fit_samples = max(int(fit_samples) if fit_samples is not None else 4 * int(dim), int(dim))
        self.seconds = 0.0  # time spent embedding and reducing, for benchmarks
        self.seed = seed
        self._parts: List[np.ndarray] = []
        # unit rows waiting for the PCA basis: one preallocated float16 buffer (half the memory of
        # float32, no concatenation copy when the basis is fitted), and their last coordinate
        self._buf: Optional[np.ndarray] = None
        self._buf_flag: Optional[np.ndarray] = None
        self._n_pending = 0
        self._basis: Optional[np.ndarray] = None  # (n_features, dim)
        self.n_features: Optional[int] = None

    @property
    def reduced(self) -> bool:
        """Whether this layer's rows are projected (known after the first batch)."""
        return self.reduce is not None and self.n_features is not None and self.n_features > self.dim

    def add(self, batch) -> None:
        """Embed one batch of maps and keep the result."""
        t0 = time.perf_counter()
        try:
            self._add(batch)
        finally:
            self.seconds += time.perf_counter() - t0

    def _add(self, batch) -> None:
        e = embed(batch, name=self.name, nonfinite=self.nonfinite)
        if self.n_features is None:
            self.n_features = e.shape[1] - 1
            # bound the buffer of wide layers: 64 MiB of float32 rows, but at least 2 * dim rows
            budget = (64 << 20) // max(4 * self.n_features, 1)
            self.fit_samples = int(min(self.fit_samples, max(2 * self.dim, budget)))
        elif e.shape[1] - 1 != self.n_features:
            raise ValueError(f"{self.name}: batches have {e.shape[1] - 1} features, earlier ones {self.n_features}")
        if not self.reduced:
            self._parts.append(e)
            return
        if self._basis is None and self.reduce == "random":
            rng = np.random.default_rng(self.seed)
            self._basis = (rng.standard_normal((self.n_features, self.dim)) / np.sqrt(self.dim)).astype(np.float32)
        if self._basis is None:
            if self._buf is None:
                self._buf = np.empty((self.fit_samples, self.n_features), dtype=np.float16)
                self._buf_flag = np.empty(self.fit_samples, dtype=np.float32)
            take = min(len(e), self.fit_samples - self._n_pending)
            self._buf[self._n_pending : self._n_pending + take] = e[:take, :-1]
            self._buf_flag[self._n_pending : self._n_pending + take] = e[:take, -1]
            self._n_pending += take
            if self._n_pending < self.fit_samples:
                return
            self._fit_pca()
            e = e[take:]
            if not len(e):
                return
        self._parts.append(self._project(e))

    def _fit_pca(self) -> None:
        n = self._n_pending
        x = self._buf[:n]
        flag = self._buf_flag[:n]
        self._buf = self._buf_flag = None
        self._n_pending = 0
        self._basis = top_right_singular_vectors(x, min(self.dim, x.shape[0], x.shape[1]))
        # float16 rows are projected as float32 (numpy's float16 product is four times slower)
        step = max(1, (32 << 20) // (4 * x.shape[1]))
        parts = [self._project_parts(np.asarray(x[i:i + step], dtype=np.float32), flag[i:i + step])
                 for i in range(0, n, step)]
        self._parts.append(np.concatenate(parts) if len(parts) > 1 else parts[0])

    def _project(self, e: np.ndarray) -> np.ndarray:
        return self._project_parts(e[:, :-1], e[:, -1])

    def _project_parts(self, x: np.ndarray, flag: np.ndarray) -> np.ndarray:
        y = _unit_rows(x @ self._basis)
        out = np.empty((len(x), y.shape[1] + 1), dtype=np.float32)
        out[:, :-1] = y
        out[:, -1] = flag
        # rows whose projection vanished keep no direction: same treatment as all-zero maps
        gone = (np.abs(y).sum(axis=1) == 0) & (flag == 0)
        out[gone, -1] = 1.0
        return out

    @property
    def basis(self) -> Optional[np.ndarray]:
        """The reduction basis, ``(n_features, dim)``: None until it is fitted (or without reduction)."""
        return self._basis

    @property
    def n_pending(self) -> int:
        """Rows held (as float16) until the PCA basis is fitted on them."""
        return self._n_pending

    @property
    def buffer_bytes(self) -> int:
        """Memory held by the buffer of rows waiting for the basis (freed once it is fitted)."""
        return 0 if self._buf is None else int(self._buf.nbytes + self._buf_flag.nbytes)

    def result(self) -> np.ndarray:
        """All embedded rows so far, in the order they were added."""
        if self._n_pending:
            self._fit_pca()
        if not self._parts:
            raise ValueError(f"{self.name}: no batch was added")
        return np.concatenate(self._parts, axis=0) if len(self._parts) > 1 else self._parts[0]
