"""Neuron clusters stage: the units of a layer grouped by how they respond to the classes (CNNVis).

Liu et al. (CNNVis, 2017) cluster the neurons of each layer by their response, order the matrix of
neuron clusters against the classes so that similar rows and columns sit next to each other, and
show the samples that excite each cluster most. Here, for one layer and one epoch:

1. :func:`unit_profiles`: each unit's (a Dense unit's, a convolution's channel's) class means
   (:mod:`flowcallback.core.aggregate`), z-scored over the classes, so that a unit's profile says
   which classes it prefers, whatever its scale. Units whose class means are all equal (dead ReLU
   units, constant channels) have no profile: they are set apart (label ``-1``).
2. :func:`cluster_units`: Ward's hierarchical clustering of the profiles (SciPy), cut into
   ``n_clusters`` clusters. Z-scored profiles all have the same norm, so their Euclidean distance
   is a correlation distance. Above :data:`MAX_LINKAGE_UNITS` units, the linkage is made on a
   seeded random sample of that many units (its memory grows with the square of its points), and
   every other unit joins the cluster whose centroid is nearest. Units with the same profile are
   never split: fewer clusters are made where fewer distinct profiles exist.
3. :func:`seriate`: the rows and columns of the clusters × classes matrix ordered by SciPy's
   optimal leaf ordering (Bar-Joseph et al., 2001), the seriation CNNVis' matrix reordering asks
   for. Clusters are numbered in that row order.
4. :func:`top_samples`: per cluster, the held-out samples with the highest mean response over the
   cluster's units (each unit's per-sample response z-scored over the samples first).

:func:`neuron_clusters` runs the four; :class:`UnitClusters` is what an epoch stores per layer.
:func:`thumbnails` makes the small pictures of the top samples, where the inputs are images.
SciPy's clustering is used rather than hand-written code: it is well kept, exact, and already a
dependency (the MCL and kNN stages use it).
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Optional, Tuple

import numpy as np

from flowcallback.core._inputs import Inputs

__all__ = ["UnitClusters", "unit_profiles", "cluster_units", "seriate", "cluster_matrix", "top_samples",
           "neuron_clusters", "default_n_clusters", "thumbnails", "MAX_LINKAGE_UNITS", "MAX_CLUSTERS", "MAX_TOP",
           "THUMBNAIL_SIZE"]

#: Above this many units with a profile, Ward's linkage is made on a random sample of this many
#: (its condensed distance matrix holds n * (n - 1) / 2 float64: 67 MB, 0.2 s at 4,096).
MAX_LINKAGE_UNITS = 4096
#: Most clusters per layer (also the bound on loading them).
MAX_CLUSTERS = 64
#: Most top samples kept per cluster (also the bound on loading them).
MAX_TOP = 32
#: Thumbnails are at most this many pixels high and wide (also the bound on loading them).
THUMBNAIL_SIZE = 32


def _check_int(value, name: str, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (
            high is not None and value > high):
        bound = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name}: expected {bound}, got {value!r}")
    return int(value)


def _means(means) -> np.ndarray:
    m = np.asarray(means, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"means: expected an array of shape (n_classes, units), got shape {m.shape}")
    if np.isinf(m).any():
        raise ValueError("means: infinite values; class means hold finite values, and NaN rows for absent classes")
    return m


def unit_profiles(means) -> Tuple[np.ndarray, np.ndarray]:
    """Each unit's class means z-scored over the classes.

    Parameters
    ----------
    means : array-like of shape (n_classes, units)
        Class means (:func:`flowcallback.core.aggregate.class_means`); a row of NaN for a class
        without samples.

    Returns
    -------
    profiles : ndarray of shape (units, n_classes), float64
        Row ``u`` is unit ``u``'s z-scored class means; NaN for the absent classes, and a row of
        zeros for a unit without a profile.
    active : ndarray of shape (units,), bool
        Units whose class means are not all equal (over at least two present classes).

    Examples
    --------
    >>> p, active = unit_profiles([[0.0, 1.0, 5.0], [2.0, 1.0, 5.0]])
    >>> p.round(2).tolist(), active.tolist()
    ([[-1.0, 1.0], [0.0, 0.0], [0.0, 0.0]], [True, False, False])
    """
    m = _means(means)
    present = np.isfinite(m).all(axis=1)
    rows = m[present]
    profiles = np.zeros((m.shape[1], m.shape[0]))
    profiles[:, ~present] = np.nan
    if len(rows) < 2:
        return profiles, np.zeros(m.shape[1], dtype=bool)
    centred = rows - rows.mean(axis=0)
    std = rows.std(axis=0)
    # A unit is flat where its spread over the classes is float32 round-off of its values.
    scale = np.maximum(np.abs(rows).max(axis=0), np.finfo(np.float32).tiny)
    active = std > 1e-6 * scale
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(active, centred / np.where(active, std, 1.0), 0.0)
    profiles[:, present] = z.T
    return profiles, active


def default_n_clusters(n_classes: int, n_units: int) -> int:
    """The clusters a layer is cut into by default: as many as classes (at least 2, at most
    :data:`MAX_CLUSTERS`), and never more than the units with a profile.

    Examples
    --------
    >>> default_n_clusters(10, 120), default_n_clusters(1000, 2048), default_n_clusters(10, 3)
    (10, 64, 3)
    """
    return max(1, min(max(2, int(n_classes)), MAX_CLUSTERS, int(n_units)))


def cluster_units(means, n_clusters: Optional[int] = None, *, seed: int = 0) -> np.ndarray:
    """Group the units of a layer by their profiles (:func:`unit_profiles`), Ward's linkage.

    Parameters
    ----------
    means : array-like of shape (n_classes, units)
    n_clusters : int, optional
        At most this many clusters (1..:data:`MAX_CLUSTERS`); default :func:`default_n_clusters`.
        Fewer are made where fewer units have a profile.
    seed : int, default=0
        Seeds the sample of units of layers with more than :data:`MAX_LINKAGE_UNITS` units.

    Returns
    -------
    ndarray of shape (units,), int64
        Each unit's cluster, ``0 .. k - 1`` in no particular order (:func:`neuron_clusters`
        numbers them in seriation order), ``-1`` for units without a profile.

    Examples
    --------
    >>> m = [[1.0, 0.0, 2.0, 0.1, 3.0], [0.0, 1.0, 0.0, 1.1, 3.0]]
    >>> cluster_units(m, 2).tolist()
    [0, 1, 0, 1, -1]
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    m = _means(means)
    profiles, active = unit_profiles(m)
    k = default_n_clusters(m.shape[0], int(active.sum())) if n_clusters is None else \
        _check_int(n_clusters, "n_clusters", 1, MAX_CLUSTERS)
    labels = np.full(m.shape[1], -1, dtype=np.int64)
    points = profiles[active][:, np.isfinite(m).all(axis=1)]
    if len(points) == 0:
        return labels
    if len(points) == 1 or k == 1:
        labels[active] = 0
        return labels
    sample = (np.sort(np.random.default_rng(seed).choice(len(points), MAX_LINKAGE_UNITS, replace=False))
              if len(points) > MAX_LINKAGE_UNITS else np.arange(len(points)))
    tree = linkage(points[sample], method="ward")
    # merges at a height of round-off join equal profiles: never cut there
    distinct = 1 + int(np.count_nonzero(tree[:, 2] > 1e-6 * np.sqrt(points.shape[1])))
    cut = fcluster(tree, t=min(k, distinct), criterion="maxclust")
    _, cut = np.unique(cut, return_inverse=True)  # fcluster numbers clusters 1..: dense 0..k-1
    cut = cut.reshape(-1)
    if len(sample) < len(points):  # the units not in the sample join the nearest centroid
        from scipy.cluster.vq import vq

        centroids = np.stack([points[sample][cut == c].mean(axis=0) for c in range(int(cut.max()) + 1)])
        cut, _ = vq(points, centroids)
        _, cut = np.unique(cut, return_inverse=True)  # a Ward cluster may lose every unit to others
        cut = cut.reshape(-1)
    labels[np.flatnonzero(active)] = cut
    return labels


def cluster_matrix(means, labels) -> np.ndarray:
    """The clusters × classes matrix: each cluster's mean profile (:func:`unit_profiles`).

    Parameters
    ----------
    means : array-like of shape (n_classes, units)
    labels : array-like of int, shape (units,)
        As :func:`cluster_units` returns them: ``0 .. k - 1``, ``-1`` left out.

    Returns
    -------
    ndarray of shape (k, n_classes), float64
        NaN in the columns of absent classes.

    Examples
    --------
    >>> cluster_matrix([[2.0, 0.0, 4.0], [0.0, 2.0, 0.0]], [0, 1, 0]).tolist()
    [[1.0, -1.0], [-1.0, 1.0]]
    """
    profiles, _ = unit_profiles(means)
    lab = _labels(labels, profiles.shape[0])
    k = int(lab.max()) + 1 if lab.size and lab.max() >= 0 else 0
    out = np.zeros((k, profiles.shape[1]))
    for c in range(k):
        out[c] = profiles[lab == c].mean(axis=0)
    return out


def _labels(labels, units: int) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.shape != (units,) or (lab.size and lab.dtype.kind not in "iu"):
        raise ValueError(
            f"labels: expected {units} integer cluster labels, got dtype {lab.dtype} and shape {lab.shape}")
    lab = lab.astype(np.int64, copy=False)
    if lab.size and lab.min() < -1:
        raise ValueError("labels: cluster labels are -1 (no profile) or 0 and above")
    return lab


def seriate(matrix) -> Tuple[np.ndarray, np.ndarray]:
    """Order the rows and the columns of ``matrix`` so that similar ones are adjacent.

    Average-linkage trees of the rows and of the columns (Euclidean), each with its leaves in
    SciPy's optimal leaf ordering (the order that minimises the sum of distances between
    neighbours among the orders the tree allows). Columns with NaN (absent classes) go last.

    Parameters
    ----------
    matrix : array-like of shape (rows, columns)

    Returns
    -------
    rows, columns : ndarray of int64
        Permutations of ``range(rows)`` and ``range(columns)``.

    Examples
    --------
    >>> m = [[0, 0, 1, 1], [5, 5, 0, 0], [0, 0, 1, 2], [5, 4, 0, 0]]
    >>> [r.tolist() for r in seriate(m)]
    [[2, 0, 3, 1], [0, 1, 2, 3]]
    """
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"matrix: expected a 2-D array, got shape {a.shape}")
    finite_cols = np.isfinite(a).all(axis=0)
    rows = _leaf_order(a[:, finite_cols])
    cols = np.flatnonzero(finite_cols)[_leaf_order(a[:, finite_cols].T)]
    return rows, np.concatenate([cols, np.flatnonzero(~finite_cols)]).astype(np.int64)


def _leaf_order(points: np.ndarray) -> np.ndarray:
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import pdist

    if len(points) < 3 or points.shape[1] == 0:
        return np.arange(len(points), dtype=np.int64)
    d = pdist(points)
    return leaves_list(optimal_leaf_ordering(linkage(d, method="average"), d)).astype(np.int64)


def top_samples(responses, labels, top: int = 6) -> np.ndarray:
    """The samples that excite each unit cluster most.

    Each unit's per-sample responses are z-scored over the samples; a sample's score for a cluster
    is its mean z-score over the cluster's units. Samples with a non-finite response are never
    chosen.

    Parameters
    ----------
    responses : array-like of shape (n_samples, units)
        Each sample's response per unit (a map averaged over every axis but the unit axis, as
        :class:`~flowcallback.core.aggregate.ClassMeans` averages it).
    labels : array-like of int, shape (units,)
        Cluster labels (``-1`` left out).
    top : int, default=6
        Samples per cluster (1..:data:`MAX_TOP`).

    Returns
    -------
    ndarray of shape (k, top), int64
        Sample indices, best first (ties: the lower index first); ``-1`` where fewer samples exist.

    Examples
    --------
    >>> r = np.array([[0.0, 9.0], [1.0, 0.0], [5.0, 1.0], [2.0, 3.0]])
    >>> top_samples(r, [0, 1], top=2).tolist()
    [[2, 3], [0, 3]]
    """
    top = _check_int(top, "top", 1, MAX_TOP)
    r = np.asarray(responses, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"responses: expected shape (n_samples, units), got {r.shape}")
    lab = _labels(labels, r.shape[1])
    k = int(lab.max()) + 1 if lab.size and lab.max() >= 0 else 0
    out = np.full((k, top), -1, dtype=np.int64)
    finite = np.isfinite(r).all(axis=1)
    if not finite.any() or k == 0:
        return out
    ok = r[finite]
    std = ok.std(axis=0)
    z = (ok - ok.mean(axis=0)) / np.where(std > 0, std, 1.0)
    idx = np.flatnonzero(finite)
    for c in range(k):
        score = z[:, lab == c].mean(axis=1)
        best = np.lexsort((idx, -score))[:top]  # highest score first, then the lower index
        out[c, :len(best)] = idx[best]
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class UnitClusters:
    """The neuron clusters of one layer at one epoch (what an epoch stores per layer).

    Parameters
    ----------
    labels : array-like of int, shape (units,)
        Each unit's cluster, ``0 .. k - 1`` in seriation order (rows of the clusters × classes
        matrix), ``-1`` for units without a profile (equal class means).
    top_samples : array-like of int, shape (k, top)
        Per cluster, the held-out samples that excite it most, best first; ``-1`` pads. ``top``
        may be 0 where the responses per sample were not kept.

    Examples
    --------
    >>> u = UnitClusters([1, 0, -1, 1], [[3, 2], [0, -1]])
    >>> u.n_clusters, u.sizes().tolist()
    (2, [1, 2])
    """

    labels: np.ndarray
    top_samples: np.ndarray

    def __post_init__(self):
        lab = np.asarray(self.labels)
        if lab.ndim != 1 or lab.size == 0 or lab.dtype.kind not in "iu":
            raise ValueError(f"labels: expected a non-empty 1-D integer array, got {lab.dtype} {lab.shape}")
        lab = lab.astype(np.int64)
        k = int(lab.max()) + 1
        if lab.min() < -1 or k > MAX_CLUSTERS or (k and np.unique(lab[lab >= 0]).size != k):
            raise ValueError(f"labels: expected clusters numbered 0..k-1 (each used, k <= {MAX_CLUSTERS}) and -1")
        top = np.asarray(self.top_samples)
        if top.size == 0 and (top.ndim != 2 or top.shape[0] != k):
            top = np.zeros((k, 0), dtype=np.int64)
        if top.ndim != 2 or top.shape[0] != k or top.shape[1] > MAX_TOP or (top.size and top.dtype.kind not in "iu"):
            raise ValueError(f"top_samples: expected an integer array of shape ({k}, top <= {MAX_TOP}), "
                             f"got {top.dtype} {top.shape}")
        top = top.astype(np.int64)
        if top.size and top.min() < -1:
            raise ValueError("top_samples: expected sample indices, or -1 for padding")
        for name, a in (("labels", lab), ("top_samples", top)):
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    @property
    def n_clusters(self) -> int:
        """Clusters (units without a profile not counted)."""
        return int(self.top_samples.shape[0])

    def sizes(self) -> np.ndarray:
        """Units per cluster, ``(k,)``."""
        return np.bincount(self.labels[self.labels >= 0], minlength=self.n_clusters)

    def __eq__(self, other) -> bool:
        return isinstance(other, UnitClusters) and np.array_equal(self.labels, other.labels) and \
            np.array_equal(self.top_samples, other.top_samples)

    __hash__ = None


def neuron_clusters(means, responses=None, *, n_clusters: Optional[int] = None, top: int = 6,
                    seed: int = 0) -> UnitClusters:
    """Cluster a layer's units, number the clusters in seriation order, find their top samples.

    Parameters
    ----------
    means : array-like of shape (n_classes, units)
        The layer's class means.
    responses : array-like of shape (n_samples, units), optional
        The per-sample responses, for the top samples; without them ``top_samples`` has no column.
    n_clusters : int, optional
        See :func:`cluster_units`.
    top : int, default=6
        See :func:`top_samples`.
    seed : int, default=0
        See :func:`cluster_units`.

    Returns
    -------
    UnitClusters

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 20)
    >>> r = rng.normal(size=(60, 8)) + 3 * (np.arange(8) % 3 == y[:, None])   # unit u prefers class u % 3
    >>> from flowcallback.core.aggregate import class_means
    >>> u = neuron_clusters(class_means(r, y, 3), r, n_clusters=3, top=4)
    >>> sorted(sorted(np.flatnonzero(u.labels == c).tolist()) for c in range(3))
    [[0, 3, 6], [1, 4, 7], [2, 5]]
    >>> [set(y[u.top_samples[c]].tolist()) == {int(np.flatnonzero(u.labels == c)[0]) % 3} for c in range(3)]
    [True, True, True]
    """
    m = _means(means)
    labels = cluster_units(m, n_clusters, seed=seed)
    k = int(labels.max()) + 1 if labels.max() >= 0 else 0
    if k > 1:
        rows, _ = seriate(cluster_matrix(m, labels))
        rank = np.empty(k, dtype=np.int64)
        rank[rows] = np.arange(k)
        labels = np.where(labels >= 0, rank[np.maximum(labels, 0)], -1)
    if responses is None:
        return UnitClusters(labels, np.zeros((k, 0), dtype=np.int64))
    r = np.asarray(responses)
    if r.ndim != 2 or r.shape[1] != m.shape[1]:
        raise ValueError(f"responses: expected shape (n_samples, {m.shape[1]}), got {r.shape}")
    return UnitClusters(labels, top_samples(r, labels, top))


def thumbnails(x, samples, *, size: int = THUMBNAIL_SIZE) -> Optional[np.ndarray]:
    """Small pictures of held-out samples, where the inputs are images.

    An input is an image when a sample is ``(height, width)`` or ``(height, width, channels)`` with
    1 or 3 channels (channel-last, as Keras' image layers take them), both sides of at least 4
    pixels. Each picture is scaled down (nearest pixel) to at most ``size`` pixels a side, keeping
    its aspect ratio, and its values stretched to 0..255 (its own minimum and maximum: inputs may be
    in 0..1, 0..255 or standardised); a picture with non-finite values is black.

    Parameters
    ----------
    x : array-like of shape (n_samples, ...), or Inputs
        The held-out inputs; of a model with several inputs, the one input that is an image is
        drawn (none where none or several are).
    samples : array-like of int
        The samples to draw.
    size : int, default=32
        Most pixels a side (4..:data:`THUMBNAIL_SIZE`).

    Returns
    -------
    ndarray of shape (len(samples), h, w, channels), uint8, or None
        None where the inputs are not images.

    Examples
    --------
    >>> x = np.arange(2 * 64 * 64, dtype=float).reshape(2, 64, 64)
    >>> t = thumbnails(x, [1], size=16)
    >>> t.shape, t.dtype.name, int(t.min()), int(t.max())
    ((1, 16, 16, 1), 'uint8', 0, 255)
    >>> thumbnails(np.zeros((5, 20)), [0]) is None       # a sample is a vector: no picture
    True
    """
    size = _check_int(size, "size", 4, THUMBNAIL_SIZE)
    if isinstance(x, Inputs):  # several inputs: the pictures of the one that is an image, if one is
        images = [a for a in x.arrays if thumbnails(a[:1], [0], size=size) is not None]
        if len(images) != 1:
            return None
        x = images[0]
    shape = tuple(np.shape(x))
    if len(shape) not in (3, 4) or min(shape[1:3]) < 4 or (len(shape) == 4 and shape[3] not in (1, 3)):
        return None
    idx = np.asarray(samples, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= shape[0]):
        raise ValueError(f"samples: expected indices in 0..{shape[0] - 1}")
    h, w = shape[1], shape[2]
    scale = min(1.0, size / max(h, w))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    rows = np.minimum((np.arange(th) + 0.5) * h / th, h - 1).astype(np.int64)
    cols = np.minimum((np.arange(tw) + 0.5) * w / tw, w - 1).astype(np.int64)
    pics = np.asarray(np.asarray(x)[idx], dtype=np.float64)[:, rows][:, :, cols]
    if pics.ndim == 3:
        pics = pics[..., None]
    out = np.zeros(pics.shape, dtype=np.uint8)
    for i, p in enumerate(pics):
        if not np.isfinite(p).all():
            continue
        lo, hi = p.min(), p.max()
        out[i] = np.round(255.0 * (p - lo) / (hi - lo)) if hi > lo else 0
    return out
