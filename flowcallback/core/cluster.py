"""Cluster stage: Markov clustering (MCL) of a kNN graph into a partition of the samples.

MCL (van Dongen, 2000) is what the paper uses. We call the ``markov-clustering`` package, a
maintained pure-Python implementation on SciPy sparse matrices, rather than re-implementing the
expansion / inflation loop. Its result can, in rare ties, put a node in two clusters (two
attractors sharing it) or in none (no convergence within ``iterations``); :func:`mcl` turns it
into a strict partition: a shared node goes to the larger cluster, an unclaimed node is a singleton.
"""
from __future__ import annotations

import numbers
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["mcl", "partition_labels", "canonical_labels", "DEFAULT_INFLATION"]

#: Default MCL inflation (mcl's own default is 2.0).
DEFAULT_INFLATION = 2.0


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


def mcl(
    graph,
    *,
    inflation: float = DEFAULT_INFLATION,
    expansion: int = 2,
    loop_value: float = 1.0,
    iterations: int = 100,
    pruning_threshold: float = 1e-3,
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
    pruning_threshold : float, default=1e-3
        Entries below it are pruned after each round.

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
    import markov_clustering as mc  # the reference implementation of the paper's algorithm

    if not sp.issparse(graph):
        graph = sp.csr_matrix(np.asarray(graph))
    n = graph.shape[0]
    if graph.ndim != 2 or graph.shape[1] != n:
        raise ValueError(f"graph: expected a square matrix, got shape {graph.shape}")
    if not isinstance(inflation, numbers.Real) or isinstance(inflation, bool) or not inflation > 1:
        raise ValueError(f"inflation: expected a number > 1, got {inflation!r}")
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    g = sp.csc_matrix(graph, dtype=np.float64)
    if g.nnz and g.data.min() < 0:
        raise ValueError("graph: MCL needs non-negative edge weights")
    result = mc.run_mcl(
        g,
        expansion=expansion,
        inflation=float(inflation),
        loop_value=loop_value,
        iterations=iterations,
        pruning_threshold=pruning_threshold,
    )
    return partition_labels(mc.get_clusters(result), n)
