"""Matching clusters across epochs: stable identities, splits and merges.

Two partitions of the same samples (one layer at two epochs) are compared by the Jaccard index of
every pair of clusters; the Hungarian algorithm (SciPy's ``linear_sum_assignment``, the maintained
reference implementation) pairs them to maximise the total overlap.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

__all__ = ["Matching", "match_clusters", "relabel"]


@dataclasses.dataclass(frozen=True)
class Matching:
    """How the clusters of a later partition relate to those of an earlier one.

    Attributes
    ----------
    pairs : dict
        ``{later cluster: earlier cluster}`` for matched clusters (Jaccard > 0).
    jaccard : dict
        ``{later cluster: Jaccard index with its match}``.
    splits : dict
        ``{earlier cluster: [later clusters]}``: an earlier cluster whose samples went, at least
        ``share`` of them each, into two or more later clusters.
    merges : dict
        ``{later cluster: [earlier clusters]}``: a later cluster made, at least ``share`` each, of
        two or more earlier clusters.
    """

    pairs: Dict[int, int]
    jaccard: Dict[int, float]
    splits: Dict[int, List[int]]
    merges: Dict[int, List[int]]


def _contingency(a, b):
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    table = np.zeros((len(ua), len(ub)), dtype=np.int64)
    np.add.at(table, (ia.ravel(), ib.ravel()), 1)
    return ua, ub, table


def match_clusters(earlier, later, *, share: float = 0.2) -> Matching:
    """Match the clusters of ``later`` to those of ``earlier`` (same samples, same order).

    Examples
    --------
    >>> m = match_clusters([0, 0, 1, 1, 2, 2], [5, 5, 7, 7, 7, 7])
    >>> m.pairs, m.merges
    ({5: 0, 7: 1}, {7: [1, 2]})
    """
    from scipy.optimize import linear_sum_assignment

    earlier = np.asarray(earlier)
    later = np.asarray(later)
    if earlier.shape != later.shape:
        raise ValueError(f"earlier and later must label the same samples, got shapes {earlier.shape} and {later.shape}")
    ua, ub, t = _contingency(earlier, later)
    size_a = t.sum(axis=1, keepdims=True)
    size_b = t.sum(axis=0, keepdims=True)
    jac = t / (size_a + size_b - t)
    rows, cols = linear_sum_assignment(-jac)
    pairs, jacc = {}, {}
    for r, c in zip(rows, cols):
        if jac[r, c] > 0:
            pairs[int(ub[c])] = int(ua[r])
            jacc[int(ub[c])] = float(jac[r, c])
    frac_of_a = t / size_a  # share of an earlier cluster going to each later one
    frac_of_b = t / size_b  # share of a later cluster coming from each earlier one
    splits = {int(ua[r]): [int(ub[c]) for c in np.flatnonzero(frac_of_a[r] >= share)]
              for r in range(len(ua)) if np.count_nonzero(frac_of_a[r] >= share) >= 2}
    merges = {int(ub[c]): [int(ua[r]) for r in np.flatnonzero(frac_of_b[:, c] >= share)]
              for c in range(len(ub)) if np.count_nonzero(frac_of_b[:, c] >= share) >= 2}
    return Matching(pairs, jacc, splits, merges)


def relabel(earlier, later) -> Tuple[np.ndarray, Dict[int, int]]:
    """Renumber ``later`` so that matched clusters keep their earlier ids; new clusters get fresh ids.

    Returns
    -------
    labels : ndarray
        ``later`` renumbered.
    mapping : dict
        ``{old later id: new id}``.

    Examples
    --------
    >>> relabel([0, 0, 1, 1], [1, 1, 0, 2])[0].tolist()
    [0, 0, 1, 2]
    """
    m = match_clusters(earlier, later)
    later = np.asarray(later)
    used = set(m.pairs.values())
    nxt = int(np.max(earlier)) + 1 if len(later) else 0  # never reuse an earlier id: it would claim identity
    mapping = {}
    for c in sorted(np.unique(later).tolist()):
        if c in m.pairs:
            mapping[c] = m.pairs[c]
        else:
            while nxt in used:
                nxt += 1
            mapping[c] = nxt
            used.add(nxt)
            nxt += 1
    lut = np.vectorize(mapping.get, otypes=[np.int64])
    return lut(later).astype(np.int32), mapping
