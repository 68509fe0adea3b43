"""kNN stage: an approximate cosine k-nearest-neighbour graph with FAISS.

The paper builds the full n x n similarity matrix (O(n^2) time and memory) and then keeps the k
largest entries of each row. We ask FAISS for the k nearest neighbours directly. FAISS is used
rather than hand-written search because it is the maintained reference library for vector search,
multithreaded, and offers exact and approximate (HNSW) indexes behind one API.

Vectors must be unit-norm (see :mod:`flowcallback.core.embed`), so inner product is cosine similarity.
The graph is symmetrised (an edge exists when either end lists the other) and its weights are the
cosine similarities clipped to [0, 1], since MCL needs non-negative weights.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from flowcallback.core import _params

__all__ = ["knn_graph", "resolve_k", "auto_k", "DEFAULT_K", "HNSW_THRESHOLD", "NEIGHBOURS", "K_RULES", "INDEX",
           "BACKENDS", "BACKEND"]

#: Default ``k``: ``"auto"``, see :func:`auto_k` and docs/method.md for the measurement behind it.
DEFAULT_K = "auto"
#: Above this many samples, ``index="auto"`` uses an HNSW index instead of exact search.
HNSW_THRESHOLD = 50_000

#: ``k`` as a number of neighbours (:func:`knn_graph` takes only this).
NEIGHBOURS = _params.integer(1)
#: ``k`` as a rule that :func:`resolve_k` turns into a number.
K_RULES = _params.options("auto", "paper")
#: The FAISS index.
INDEX = _params.options("auto", "flat", "hnsw")
#: Who searches: FAISS on the CPU, or exact search with ``keras.ops`` on the Keras backend's device
#: (:mod:`flowcallback.core._accel`).
BACKENDS = ("faiss", "keras")
#: The kNN backend setting: one of :data:`BACKENDS`, or ``"auto"`` (``"keras"`` where the Keras
#: backend computes on a GPU in full float32, :func:`flowcallback.core._accel.device`).
BACKEND = _params.options("auto", *BACKENDS)


def auto_k(n_samples: int, n_classes: int) -> int:
    """The default number of neighbours: half a class's share of the samples, between 5 and 500.

    ``k = n_samples // (2 * n_classes)``, clipped to [5, 500] (and below ``n_samples``). Measured on
    LeNet5 / MNIST (benchmarks/choose_k.py, docs/method.md): half the paper's ``n / n_classes``
    gave the highest mean NMI between clusters and classes over the layers and last-layer clusters
    equal to the predictions (ARI 1.0), at 2,000 and at 10,000 samples, while the paper's k merged
    early layers into a few clusters and smaller k split the last layer away from the predictions.
    The cap bounds the graph's size (and MCL's cost) for very large held-out sets.

    Examples
    --------
    >>> auto_k(10_000, 10), auto_k(2_000, 10), auto_k(450, 10), auto_k(40, 10)
    (500, 100, 22, 5)
    """
    k = min(500, max(5, n_samples // max(1, 2 * n_classes)))
    return max(1, min(k, n_samples - 1))


def resolve_k(k, n_samples: int, n_classes: int) -> int:
    """Turn the user's ``k`` into a number of neighbours.

    Parameters
    ----------
    k : int, "auto" or "paper"
        A positive integer; ``"auto"`` for :func:`auto_k`; ``"paper"`` for the paper's rule
        ``k = n_samples // n_classes``.
    n_samples, n_classes : int
        Size of the held-out set and number of classes.

    Returns
    -------
    int
        The number of neighbours, always ``< n_samples``.

    Examples
    --------
    >>> resolve_k("paper", 10_000, 10)
    1000
    """
    _params.check("k", k, NEIGHBOURS, K_RULES)
    if k == "auto":
        return auto_k(n_samples, n_classes)
    if k == "paper":
        k = max(1, n_samples // max(1, n_classes))
    k = int(k)
    if k >= n_samples:
        raise ValueError(
            f"k: the kNN graph needs more samples than neighbours, but k={k} and the held-out set "
            f"has {n_samples} samples; pass k < {n_samples} or more validation samples"
        )
    return k


def knn_graph(vectors, k: int, *, index: str = "auto", seed: int = 0, backend: str = "faiss") -> sp.csr_matrix:
    """Build a symmetric sparse cosine kNN graph.

    Parameters
    ----------
    vectors : ndarray of shape (n_samples, n_features)
        Unit-norm rows (from :func:`flowcallback.core.embed.embed`).
    k : int
        Neighbours per sample, ``1 <= k < n_samples``. The sample itself is not counted.
    index : {"auto", "flat", "hnsw"}, default="auto"
        ``"flat"`` is exact inner-product search; ``"hnsw"`` an HNSW graph index (approximate);
        ``"auto"`` picks ``"flat"`` up to :data:`HNSW_THRESHOLD` samples.
    seed : int, default=0
        Unused by exact search; kept so that approximate indexes are reproducible.
    backend : {"faiss", "keras"}, default="faiss"
        ``"keras"``: exact search with ``keras.ops`` on the Keras backend's device, whatever
        ``index`` says (:func:`flowcallback.core._accel.search`; the same neighbours up to ties).

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_samples, n_samples), float32
        Symmetric, zero diagonal, weights in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from flowcallback.core.embed import embed
    >>> g = knn_graph(embed(np.eye(4) + 0.1), k=1)
    >>> g.shape, bool((g != g.T).nnz == 0)
    ((4, 4), True)

    Most neighbours of a digit among scikit-learn's digits show the same digit:

    >>> from sklearn.datasets import load_digits
    >>> digits = load_digits()
    >>> rows, cols = knn_graph(embed(digits.data[:500]), k=5).nonzero()
    >>> bool((digits.target[rows] == digits.target[cols]).mean() > 0.9)
    True
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors: expected a 2-d array (n_samples, n_features), got shape {x.shape}")
    n, d = x.shape
    _params.check("k", k, _params.integer(1, n - 1, text=f"an integer with 1 <= k < n_samples={n}"))
    k = int(k)  # FAISS' SWIG wrappers reject NumPy integers
    _params.check("index", index, INDEX)
    _params.check("backend", backend, _params.options(*BACKENDS))
    if backend == "keras":
        from flowcallback.core import _accel

        sims, idx = _accel.search(x, k + 1)
    else:
        sims, idx = _faiss_search(x, k, index)

    # Drop each sample from its own list. With duplicates the sample may not come first, and an
    # approximate index may miss it; then drop the last (weakest) neighbour instead.
    rows = np.arange(n)
    is_self = idx == rows[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = np.ones(idx.shape, dtype=bool)
    keep[rows, is_self.argmax(axis=1)] = False
    del is_self
    nbr = idx[keep]  # row-major: row i's k neighbours, in order
    del idx
    w = sims[keep]
    del sims, keep
    # The CSR arrays are built directly (no COO triplets, no int64 row array): at 10,000 samples
    # and k = 500 this halves the memory the graph takes to build (docs/performance.md).
    valid = nbr >= 0  # FAISS pads with -1 when an approximate index finds fewer results
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(valid.reshape(n, k).sum(axis=1), out=indptr[1:])
    if not valid.all():
        nbr, w = nbr[valid], w[valid]
    indices = nbr.astype(np.int32)
    data = np.clip(w, 0.0, 1.0).astype(np.float32)
    del nbr, w, valid
    a = sp.csr_matrix((data, indices, indptr), shape=(n, n))
    a.sort_indices()
    # symmetric: an edge kept in either direction, with the larger weight; no self-loops, since
    # each sample was dropped from its own list
    g = a.maximum(a.T.tocsr()).tocsr()
    del a
    g.eliminate_zeros()
    g.sort_indices()
    return g


def _faiss_search(x: np.ndarray, k: int, index: str):
    import faiss  # imported here: FAISS is heavy and only this stage needs it

    n, d = x.shape
    if index == "auto":
        index = "flat" if n <= HNSW_THRESHOLD else "hnsw"
    if index == "flat":
        ix = faiss.IndexFlatIP(d)
    else:
        ix = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efConstruction = 80
        ix.hnsw.efSearch = max(64, 2 * (k + 1))
    ix.add(x)
    return ix.search(x, k + 1)
