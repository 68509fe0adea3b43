"""Cluster stage: Markov clustering (MCL) of a kNN graph into a partition of the samples.

MCL (van Dongen, 2000) is what the paper uses. Two backends compute it:

``"fast"`` (default)
    A compiled (numba) loop that, per column, expands, inflates, prunes and measures convergence
    in one pass, keeping at most ``select`` entries per column as the ``mcl`` program's own
    ``-S`` selection does, on as many threads as asked, eight neighbouring columns at a time
    (their shared reads are done once, their products in vector instructions; the result is
    bitwise that of one column at a time). Written here because no maintained
    Python package offers a pruned, multithreaded MCL; at 10,000 samples it is what makes a
    snapshot take seconds instead of minutes (see docs/performance.md).
``"reference"``
    The ``markov-clustering`` package (pure Python on SciPy sparse matrices), kept as the
    reference the fast backend is tested against.
``"keras"``
    The same semantics as ``"fast"`` on a dense matrix with ``keras.ops``, on the Keras backend's
    device (:mod:`flowcallback.core._accel`): for a GPU, where the dense products are cheap. A
    graph larger than the device's memory allows runs on the fast backend instead, with a warning.

:func:`choose_engines` resolves ``"auto"`` (the callback's default): the accelerator path where the
Keras backend computes on a GPU in full float32, the CPU path (FAISS, the fast backend) elsewhere.

Either result is turned into a strict partition. The fast backend assigns every sample to the
attractor holding most of its column's mass and joins attractors of the same system (connected
components). For the reference backend, whose clusters can in rare ties share a node or miss one,
a shared node goes to the larger cluster and an unclaimed node is a singleton.

:func:`cluster_layer` is the whole stage for one layer (kNN graph, then MCL, with the samples that
have no direction set apart) and :func:`layer_note` says what it did, for the column's note.
"""
from __future__ import annotations

import contextlib
import numbers
import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import scipy.sparse as sp

from flowcallback.core import _accel, _params, knn
from flowcallback.core.embed import special_rows

__all__ = ["mcl", "warm_up", "cluster_layer", "layer_note", "partition_labels", "canonical_labels", "choose_engines",
           "Engines",
           "DEFAULT_INFLATION", "DEFAULT_SELECT", "DEFAULT_CUTOFF", "BACKENDS", "INFLATION", "BACKEND",
           "BACKEND_SETTING", "THREADS"]

#: Default MCL inflation (mcl's own default is 2.0).
DEFAULT_INFLATION = 2.0
#: Default expansion cutoff of the fast backend, relative to the largest product of the two
#: columns multiplied (see :func:`mcl`): 0, the exact expansion. With the current kernel, keeping
#: columns sorted for the cutoff costs more than the products it skips (docs/performance.md).
DEFAULT_CUTOFF = 0.0
#: Default per-column selection of the fast backend (entries kept after each round): the ``mcl``
#: program's own ``-S 500``. With ``pruning_threshold=2.5e-4`` (its ``-P 4000``) the fast backend
#: agrees with ``mcl`` (ARI >= 0.95 on MNIST layer graphs, docs/performance.md).
DEFAULT_SELECT = 500
BACKENDS = ("fast", "reference", "keras")
#: MCL's inflation: a finite number > 1.
INFLATION = _params.real_above(1)
#: The MCL implementation.
BACKEND = _params.options(*BACKENDS)
#: The MCL backend setting: an implementation, or ``"auto"`` (:func:`choose_engines`).
BACKEND_SETTING = _params.options("auto", *BACKENDS)
#: Threads of the fast backend.
THREADS = _params.integer(1)


def canonical_labels(labels) -> np.ndarray:
    """Relabel a partition so that cluster 0 is the largest (ties: smallest first member).

    Examples
    --------
    >>> canonical_labels([5, 5, 2, 7, 7, 7]).tolist()
    [1, 1, 2, 0, 0, 0]
    """
    labels = np.asarray(labels)
    uniq, first, inverse, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    rank = np.lexsort((first, -counts))  # clusters sorted by size desc, then first member
    new_id = np.empty(len(uniq), dtype=np.int32)
    new_id[rank] = np.arange(len(uniq), dtype=np.int32)
    return new_id[inverse.reshape(-1)]


def partition_labels(clusters: Iterable[Sequence[int]], n_samples: int) -> np.ndarray:
    """Turn possibly overlapping, possibly incomplete clusters into one label per sample.

    A sample listed in several clusters goes to the largest; a sample listed in none is a singleton.

    Returns
    -------
    ndarray of shape (n_samples,), int32, canonical (see :func:`canonical_labels`).

    Examples
    --------
    >>> partition_labels([(0, 1, 2), (2, 3)], 5).tolist()
    [0, 0, 0, 1, 2]
    """
    labels = np.full(n_samples, -1, dtype=np.int64)
    ordered = sorted((tuple(c) for c in clusters), key=lambda c: (-len(c), c[:1]))
    for cid, members in enumerate(ordered):
        m = np.asarray(members, dtype=np.int64)
        m = m[labels[m] < 0]
        labels[m] = cid
    unclaimed = np.flatnonzero(labels < 0)
    labels[unclaimed] = len(ordered) + np.arange(len(unclaimed))
    return canonical_labels(labels)


def _stochastic_csc(graph, loop_value):
    """The graph's column-stochastic matrix (self-loops added), rows and columns in RCM order.

    Returns ``(perm, indptr, indices, data)``: the permutation (position -> sample) and the CSC
    arrays (int64, int32, float32) of the permuted matrix, in which every non-empty column sums to 1.
    """
    # Reverse Cuthill-McKee puts neighbours next to each other, so that the expansion's scattered
    # additions hit nearby memory; the result is permuted back at the end.
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    n = graph.shape[0]
    # float32 from the start, and every intermediate dropped as soon as the next exists: at 10,000
    # samples and k = 500 the set-up held five float64 copies of the graph before (docs/performance.md)
    a = sp.csc_matrix(graph, dtype=np.float32)
    perm = reverse_cuthill_mckee(a, symmetric_mode=True).astype(np.int64)
    a = a[:, perm]
    a = a[perm, :].tocsc()
    if loop_value:
        a = (a + sp.identity(n, dtype=np.float32, format="csc") * np.float32(loop_value)).tocsc()
    a.sum_duplicates()
    col = np.asarray(a.sum(axis=0), dtype=np.float64).ravel()
    col[col == 0] = 1.0
    a.data /= np.repeat(col.astype(np.float32), np.diff(a.indptr))
    return perm, a.indptr.astype(np.int64), a.indices.astype(np.int32), a.data.astype(np.float32)


def _fast_mcl(graph, inflation, loop_value, iterations, threshold, select, n_threads, tol, cutoff, *, group=8):
    """The fast backend (see :func:`mcl`). ``group``: columns expanded together by the kernel
    (:func:`flowcallback.core._mcl_kernel.iterate`; 1, 2 or 8, bitwise the same result), for
    tests and benchmarks/mcl_speed.py."""
    from scipy.sparse.csgraph import connected_components

    from flowcallback.core import _mcl_kernel

    n = graph.shape[0]
    perm, indptr, indices, data = _stochastic_csc(graph, loop_value)
    del graph
    if cutoff > 0:  # the cutoff's early exits read columns sorted by decreasing value
        _mcl_kernel.sort_columns(indptr, indices, data)
    for r in range(max(1, int(iterations))):
        indptr, indices, data, chaos = _mcl_kernel.iterate(
            indptr, indices, data, n, inflation, threshold, select, n_threads, cutoff, group, r > 0
        )
        if chaos < tol:
            break
    # Every sample is linked to the row(s) holding most of its column's mass: its attractor, or all
    # attractors of a symmetric attractor system (ties). Clusters are the connected components.
    counts = np.diff(indptr)
    cols = np.repeat(np.arange(n), counts)
    colmax = np.zeros(n)
    np.maximum.at(colmax, cols, data)
    top = data >= colmax[cols] * (1 - 1e-3)
    rows = np.r_[indices[top], np.arange(n)]
    cols = np.r_[cols[top], np.arange(n)]
    link = sp.csr_matrix((np.ones(len(rows)), (cols, rows)), shape=(n, n))
    _, labels = connected_components(link, directed=True, connection="weak")
    out = np.empty(n, dtype=labels.dtype)
    out[perm] = labels
    return canonical_labels(out)


def warm_up() -> float:
    """Compile the fast backend's numba kernel, or load it from numba's on-disk cache, on a
    four-node graph, unless this process has done so already; the seconds it took (0.0 where
    there was nothing to do).

    The first call after an install compiles the kernel: 10 to 60 s on 2 cores (docs/performance.md),
    once, as numba caches it beside the package; loading it from the cache takes about 0.4 s. The
    snapshot pipeline calls this before clustering, under a clock stage of its own (``compile``),
    so that the time budget does not take a one-off compilation for the cost of every snapshot.

    >>> warm_up() >= 0.0 and warm_up() == 0.0
    True
    """
    import time

    from flowcallback.core import _mcl_kernel

    if _mcl_kernel._compact.signatures:  # the kernel's last function: the whole pass has run here
        return 0.0
    start = time.perf_counter()
    ring = sp.csr_matrix(np.array([[0, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 1, 0]], dtype=np.float32))
    mcl(ring, backend="fast")
    return time.perf_counter() - start


@dataclass(frozen=True)
class Engines:
    """The kNN and MCL backends a run uses, resolved (:func:`choose_engines`).

    Attributes
    ----------
    knn : {"faiss", "keras"}
    mcl : {"fast", "reference", "keras"}
    device : str
        Where ``keras.ops`` computes (:class:`flowcallback.core._accel.Device`).
    note : str
        What ran where, for the page.
    off : str
        Why the accelerator path is not used, or ``""``.
    """

    knn: str
    mcl: str
    device: str
    note: str
    off: str = ""


def choose_engines(mcl_backend: str = "auto", knn_backend: str = "auto", dev: Optional[_accel.Device] = None
                   ) -> Engines:
    """Resolve ``"auto"``: ``"keras"`` for both where the Keras backend computes on a GPU in full
    float32 (:func:`flowcallback.core._accel.device`), FAISS and the fast backend elsewhere.

    Raises
    ------
    ValueError
        ``"keras"`` asked for without Keras 3, naming the argument.

    Examples
    --------
    >>> from flowcallback.core._accel import Device
    >>> cpu = Device("tensorflow", False, "tensorflow on the CPU", True, None, "it sees no GPU")
    >>> e = choose_engines("auto", "auto", cpu)
    >>> e.knn, e.mcl
    ('faiss', 'fast')
    >>> gpu = Device("jax", True, "jax on cuda:0", True, 80 * 2**30, "")
    >>> e = choose_engines("auto", "faiss", gpu)
    >>> e.knn, e.mcl
    ('faiss', 'keras')
    """
    _params.check("mcl_backend", mcl_backend, BACKEND_SETTING)
    _params.check("knn_backend", knn_backend, knn.BACKEND)
    dev = _accel.device() if dev is None else dev
    for name, value in (("knn_backend", knn_backend), ("mcl_backend", mcl_backend)):
        if value == "keras" and not dev.backend:
            raise ValueError(f"{name}: 'keras' runs on keras.ops, which needs Keras 3 ({dev.reason}); use 'auto'")
    knn_engine = knn_backend if knn_backend != "auto" else ("keras" if dev.usable else "faiss")
    mcl_engine = mcl_backend if mcl_backend != "auto" else ("keras" if dev.usable else "fast")
    words = {"faiss": "FAISS on the CPU", "keras": f"keras.ops ({dev.name})", "fast": "the numba kernel on the CPU",
             "reference": "the markov-clustering package on the CPU"}
    # the reason the accelerator is not used goes to run.json (``accelerator``), not to the page
    return Engines(knn_engine, mcl_engine, dev.name, f"kNN graphs: {words[knn_engine]}; MCL: {words[mcl_engine]}.",
                   dev.reason)


def _keras_mcl(graph, inflation, loop_value, iterations, threshold, select, tol):
    """The ``"keras"`` backend, or None where the graph does not fit the device (then the fast one runs)."""
    import warnings

    n = graph.shape[0]
    dev = _accel.device()
    if n > _accel.max_nodes(dev):
        warnings.warn(f"FlowCallback: MCL of a graph of {n:,} nodes does not fit the memory of {dev.name} "
                      f"(at most {_accel.max_nodes(dev):,} nodes); it runs on the CPU", RuntimeWarning, stacklevel=4)
        return None
    try:
        m = _accel.mcl_matrix(graph, inflation=inflation, loop_value=loop_value, threshold=threshold,
                              select=select, iterations=iterations, tol=tol)
    except (MemoryError, RuntimeError) as exc:  # the device's out-of-memory errors are RuntimeErrors
        warnings.warn(f"FlowCallback: MCL on {dev.name} failed ({str(exc).splitlines()[0][:200]}); it runs on the "
                      "CPU", RuntimeWarning, stacklevel=4)
        return None
    return canonical_labels(_accel.attractor_links(m))


def mcl(
    graph,
    *,
    inflation: float = DEFAULT_INFLATION,
    expansion: int = 2,
    loop_value: float = 1.0,
    iterations: int = 100,
    pruning_threshold: Optional[float] = None,
    backend: str = "fast",
    select: int = DEFAULT_SELECT,
    n_threads: Optional[int] = None,
    tol: float = 1e-4,
    cutoff: float = DEFAULT_CUTOFF,
) -> np.ndarray:
    """Cluster a weighted undirected graph with MCL.

    Parameters
    ----------
    graph : scipy.sparse matrix of shape (n, n)
        Non-negative symmetric weights (from :func:`flowcallback.core.knn.knn_graph`).
    inflation : float, default=2.0
        MCL inflation (> 1). Larger values give more, smaller clusters.
    expansion : int, default=2
        MCL expansion power.
    loop_value : float, default=1.0
        Weight of the self-loops added before clustering, as the reference ``mcl`` program does.
    iterations : int, default=100
        Maximum number of expansion/inflation rounds.
    pruning_threshold : float, optional
        Entries below it (as a fraction of their column) are pruned after each round.
        Default: 2.5e-4 for the fast backend (``mcl``'s ``-P 4000``), 1e-3 (the package's default)
        for the reference one.
    backend : {"fast", "reference", "keras"}, default="fast"
        See the module docstring.
    select : int, default=500
        Fast backend: entries kept per column after each round (the ``mcl`` program's ``-S``).
    n_threads : int, optional
        Fast backend: threads (default: the number of CPUs, at most 8).
    tol : float, default=1e-4
        Fast backend: stop when every column's chaos (max entry minus sum of squares) is below it.
    cutoff : float, default=0.0
        Fast backend: when the expansion adds up the products of column ``j``'s entries with the
        entries of column ``k``, it skips those below ``cutoff`` times the largest of them (the
        product of the two columns' largest entries). Columns are then kept sorted by decreasing
        value, so whole tails are skipped. Being relative, the cutoff works the same on sparse
        and on dense graphs (where every entry is small). ``0`` (the default) computes the exact
        expansion: on MNIST layer graphs ``cutoff=3e-4`` gave the same clusters, but sorting the
        columns cost more time than the skipped products saved (docs/performance.md).

    Returns
    -------
    ndarray of shape (n,), int32
        Cluster label of every sample; a partition, relabelled canonically (0 = largest).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> block = np.ones((3, 3)) - np.eye(3)
    >>> g = sp.csr_matrix(sp.block_diag([block, block]))
    >>> mcl(g).tolist()
    [0, 0, 0, 1, 1, 1]
    """
    if not sp.issparse(graph):
        graph = sp.csr_matrix(np.asarray(graph))
    n = graph.shape[0]
    if graph.ndim != 2 or graph.shape[1] != n:
        raise ValueError(f"graph: expected a square matrix, got shape {graph.shape}")
    _params.check("inflation", inflation, INFLATION)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    _params.check("backend", backend, BACKEND)
    _params.check("select", select, _params.integer(1))
    g = graph.tocsc() if graph.format != "csc" else graph  # the fast backend converts to float32 itself
    if g.nnz and not np.all(np.isfinite(g.data)):
        raise ValueError("graph: edge weights must be finite")
    if g.nnz and g.data.min() < 0:
        raise ValueError("graph: MCL needs non-negative edge weights")
    if backend == "keras":
        if expansion != 2:
            raise ValueError(f"expansion: the keras backend computes expansion 2 (MCL's standard); got {expansion!r}")
        threshold = 2.5e-4 if pruning_threshold is None else float(pruning_threshold)
        labels = _keras_mcl(g, float(inflation), loop_value, iterations, threshold, int(select), float(tol))
        if labels is not None:
            return labels
        backend = "fast"
    if backend == "fast":
        if expansion != 2:
            raise ValueError(f"expansion: the fast backend computes expansion 2 (MCL's standard); got {expansion!r}")
        if n_threads is None:
            n_threads = min(8, os.cpu_count() or 1)
        _params.check("n_threads", n_threads, THREADS)
        if isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Real) or not 0 <= cutoff < 1:
            raise ValueError(f"cutoff: expected a number in [0, 1), got {cutoff!r}")
        threshold = 2.5e-4 if pruning_threshold is None else float(pruning_threshold)
        return _fast_mcl(g, float(inflation), loop_value, iterations, threshold, int(select), int(n_threads),
                         float(tol), float(cutoff))

    import markov_clustering as mc  # the reference implementation

    if pruning_threshold is None:
        pruning_threshold = 1e-3
    result = mc.run_mcl(
        sp.csc_matrix(g, dtype=np.float64),
        expansion=expansion,
        inflation=float(inflation),
        loop_value=loop_value,
        iterations=iterations,
        pruning_threshold=pruning_threshold,
    )
    return partition_labels(mc.get_clusters(result), n)


def cluster_layer(vectors: np.ndarray, k: int, inflation: float, index: str = "auto", backend: str = "fast",
                  n_threads: Optional[int] = None, *, clock=None, analysis: Optional[str] = None,
                  layer: Optional[str] = None, knn_backend: str = "faiss") -> np.ndarray:
    """kNN graph + MCL of one layer: the unit of work sent to an executor (a top-level function,
    so that process pools and Dask can ship it).

    Samples whose map has no direction are not clustered by similarity, since cosine similarity is
    undefined for them: all-zero maps (dead ReLU units, say) form one cluster of their own, and maps
    with NaN or infinite values (flagged by :func:`flowcallback.core.embed.embed`) another. The
    other samples are clustered with ``k`` clipped to their number minus one, and identical maps
    always share a cluster (MCL's choice among exact ties is arbitrary). :func:`layer_note` says
    what happened, for the column's note.

    Parameters
    ----------
    vectors : ndarray of shape (n_samples, n_features + 1)
        Embedded maps (:mod:`flowcallback.core.embed`).
    k, inflation, index, backend, n_threads :
        As for :func:`flowcallback.core.knn.knn_graph` and :func:`mcl`.
    knn_backend : {"faiss", "keras"}, default="faiss"
        The ``backend`` of :func:`flowcallback.core.knn.knn_graph`.
    clock, analysis, layer : optional
        The stage hook (:class:`flowcallback.core.stages.StageClock`): the kNN graph runs in
        ``clock("knn", analysis=analysis, layer=layer)``, MCL in ``clock("mcl", ...)``.

    Returns
    -------
    ndarray of shape (n_samples,), int32
        A partition, canonical (0 = largest cluster).

    Examples
    --------
    >>> import numpy as np
    >>> from flowcallback.core.embed import embed
    >>> maps = np.r_[np.eye(3)[[0] * 5 + [1] * 5], np.zeros((3, 3))]
    >>> cluster_layer(embed(maps), k=3, inflation=2.0).tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2]

    On scikit-learn's digits, the clusters of the raw pixels follow the digit classes:

    >>> from sklearn.datasets import load_digits
    >>> from sklearn.metrics import normalized_mutual_info_score
    >>> digits = load_digits()
    >>> labels = cluster_layer(embed(digits.data[:500]), k=20, inflation=1.5)
    >>> bool(normalized_mutual_info_score(digits.target[:500], labels) > 0.8)
    True
    """
    v = np.asarray(vectors)
    if v.ndim != 2 or v.shape[0] == 0:
        raise ValueError(f"vectors: expected a 2-d array (n_samples, n_features + 1), got shape {v.shape}")

    def stage(name):
        return contextlib.nullcontext() if clock is None else clock(name, analysis=analysis, layer=layer)

    zero, bad = special_rows(v)
    regular = np.flatnonzero(~(zero | bad))
    labels = np.full(len(v), -1, dtype=np.int64)
    if len(regular) >= 2:
        sub = np.ascontiguousarray(v[regular], dtype=np.float32)
        with stage("knn"):
            g = knn.knn_graph(sub, min(int(k), len(regular) - 1), index=index, backend=knn_backend)
        with stage("mcl"):
            lab = np.asarray(mcl(g, inflation=inflation, backend=backend, n_threads=n_threads), dtype=np.int64)
        _, first, inverse = np.unique(sub, axis=0, return_index=True, return_inverse=True)
        labels[regular] = lab[first][inverse.reshape(-1)]  # identical maps: the cluster of the first one
    elif len(regular) == 1:
        labels[regular] = 0
    for mask in (zero, bad):
        if mask.any():
            labels[mask] = labels.max() + 1
    return canonical_labels(labels)


#: The largest difference between two samples' unit vectors, in any coordinate, at which a layer is
#: said to give every sample the same map.
SAME_MAP_SPREAD = 1e-3


def layer_note(vectors: np.ndarray, labels: np.ndarray, k: int, analysis: str = "activations") -> str:
    """The column note for what :func:`cluster_layer` did with samples that have no direction.

    Parameters
    ----------
    vectors : ndarray of shape (n_samples, n_features)
        The embedded maps the layer was clustered on.
    labels : ndarray of shape (n_samples,)
    k : int
    analysis : {"activations", "lrp"}, default="activations"
        What the maps are: an all-zero activation map comes from dead units, an all-zero relevance
        map from relevance that vanished before the layer (often an untrained or saturated model).

    Returns
    -------
    str
        Empty when every sample was clustered by similarity with the requested ``k`` into more
        than one cluster.

    Examples
    --------
    >>> from flowcallback.core.embed import embed
    >>> same = embed(np.ones((40, 8)))  # a layer whose output does not depend on the input
    >>> layer_note(same, cluster_layer(same, 10, 2.0), 10)[:70]
    'all 40 samples in one cluster: every one has the same map here (to 0.1'
    >>> one_unit = embed(np.random.default_rng(0).uniform(1, 2, (40, 1)))  # positive, of many sizes
    >>> note = layer_note(one_unit, cluster_layer(one_unit, 10, 2.0), 10)
    >>> note.endswith("one value per sample, and cosine similarity sees only its sign, the same for every one here")
    True
    >>> close = embed(np.ones((40, 8)) + np.random.default_rng(0).normal(0, 0.02, (40, 8)))
    >>> layer_note(close, cluster_layer(close, 10, 2.0), 10)[:60]
    'all 40 samples in one cluster: their maps point almost the s'
    """
    zero, bad = special_rows(vectors)
    labels = np.asarray(labels)
    parts = []
    if bad.any():
        parts.append(f"{int(bad.sum())} sample(s) with NaN/infinite values (diverging model?) set apart as "
                     f"cluster {int(labels[bad][0])}, not clustered by similarity")
    if zero.any():
        why = ("no relevance reached this layer for these samples: the rules absorbed it on the way back, as "
               "epsilon rules do where activations are near zero (an untrained deep network), or gave it none "
               "(an attention's queries and keys, a layer feeding only a gate)"
               if analysis == "lrp" else "dead units")
        parts.append(f"{int(zero.sum())} all-zero {'relevance ' if analysis == 'lrp' else ''}map(s) ({why}; cosine "
                     f"undefined) set apart as cluster {int(labels[zero][0])}, not clustered by similarity")
    regular = ~(zero | bad)
    n_regular = int(regular.sum())
    if 2 <= n_regular <= k:
        parts.append(f"k clipped from {k} to {n_regular - 1}: only {n_regular} samples have a direction")
    elif n_regular > k and len(np.unique(labels[regular])) == 1:
        # a column of one node says nothing by itself: say why. The rows are unit vectors, so the
        # mean cosine similarity of distinct pairs follows from their sum, in O(n * features).
        total = np.asarray(vectors, dtype=np.float64)[regular, :-1].sum(axis=0)
        cosine = (float(total @ total) - n_regular) / (n_regular * (n_regular - 1))
        which = "samples" if n_regular == len(labels) else "samples with a direction"
        rows = np.asarray(vectors, dtype=np.float64)[regular, :-1]
        # one map for all (to rounding: a LayerNormalization over one value multiplies its rounding errors
        # by 1 / sqrt(epsilon)): no inflation= can split them
        if rows.shape[1] == 1:  # one unit (a one-feature input's normalisation, a sigmoid output's relevance)
            parts.append(f"all {n_regular} {which} in one cluster: this layer's map is one value per sample, "
                         "and cosine similarity sees only its sign, the same for every one here")
            return "; ".join(parts)
        if float(np.ptp(rows, axis=0).max(initial=0.0)) <= SAME_MAP_SPREAD or cosine >= 1 - 1e-6:
            parts.append(f"all {n_regular} {which} in one cluster: every one has the same map here (to "
                         f"{SAME_MAP_SPREAD:.1%}), so this layer's output does not depend on the input (a "
                         "LayerNormalization over one value gives its offset whatever it is fed)")
            return "; ".join(parts)
        why = (f"their maps point almost the same way (mean cosine similarity {cosine:.3f}), so this layer's "
               "output hardly tells the samples apart" if cosine >= 0.99 else
               f"MCL found no separate groups in this layer's kNN graph (mean cosine similarity {cosine:.3f})")
        parts.append(f"all {n_regular} {which} in one cluster: {why}; a higher inflation= looks for finer clusters")
    return "; ".join(parts)
