"""Aggregate stage: per-class mean activation (or relevance) of each unit or channel of a layer.

For a layer and an epoch, the mean of each unit (a Dense layer's units, a channel-last conv map's
channels, the last axis of any output) over the held-out samples of each class, as in DNNViz's
class aggregation view. A sample's map is first averaged over every axis but the last (the spatial
positions of a conv map, the time steps of a sequence), then the samples of a class are averaged;
since all samples of a layer have maps of the same shape, this is the mean over all the class's
samples and positions. The result is small (classes × units per layer) and is computed batch by
batch while the snapshot runs the held-out set through the model (:class:`ClassMeans`,
:class:`LayerClassMeans`), so no layer's raw maps are ever held.

:func:`class_order` orders the classes so that similar ones sit next to each other, and
:func:`class_difference` finds the units that separate two classes most.

Samples whose map holds NaN or infinite values (a diverging model) are left out of the means and
counted apart; a class with no (finite) sample has a row of NaN.
"""
from __future__ import annotations

import numbers
from typing import Dict, NamedTuple, Optional

import numpy as np

__all__ = ["ClassMeans", "LayerClassMeans", "class_means", "unit_responses", "class_order", "class_difference",
           "Difference",
           "MAX_VALUES"]

#: Most values (classes × units) one layer's class means may hold; also the bound on loading them.
#: 2**24 float32 values are 64 MiB: 10 classes × 1.6 million units, or 1,000 classes × 16,777 units.
MAX_VALUES = 1 << 24


def _check_n_classes(n_classes) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or n_classes < 1:
        raise ValueError(f"n_classes: expected a positive integer, got {n_classes!r}")
    return int(n_classes)


def _check_labels(labels, n_classes: int, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise ValueError(
            f"{name}: expected a 1-D array of integer class indices, got dtype {y.dtype} and shape {y.shape}")
    y = y.astype(np.int64, copy=False)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name}: class indices must lie in 0..{n_classes - 1}, got {int(y.min())}..{int(y.max())}")
    return y


def unit_responses(maps, *, axis: int = -1, name: str = "maps") -> np.ndarray:
    """Each sample's response per unit: its map averaged over every axis but the batch and unit axes.

    Parameters
    ----------
    maps : array-like of shape (batch, ..., units)
    axis : int, default=-1
        The unit axis, counted on the batch array.
    name : str, default="maps"
        Used in error messages.

    Returns
    -------
    ndarray of shape (batch, units), float64

    Examples
    --------
    >>> unit_responses(np.arange(8.0).reshape(2, 2, 2)).tolist()   # (batch, positions, channels)
    [[1.0, 2.0], [5.0, 6.0]]
    """
    x = np.asarray(maps)
    if x.ndim < 1:
        raise ValueError(f"{name}: expected a batch of maps, got a scalar")
    if x.ndim == 1:  # one value per sample: one unit
        return x[:, None].astype(np.float64)
    x = np.moveaxis(x, axis if axis >= 0 else x.ndim + axis, -1)
    # float64: a sum over thousands of samples and positions keeps float32's precision
    return x.reshape(x.shape[0], -1, x.shape[-1]).mean(axis=1, dtype=np.float64)


class ClassMeans:
    """Per-class mean of each unit (last axis) of one layer's outputs, accumulated batch by batch.

    Parameters
    ----------
    n_classes : int
    name : str, default="maps"
        Used in error messages (the layer name, for instance).
    axis : int, default=-1
        The unit (channel) axis of a sample's map, counted on the batch array: ``-1`` for
        channel-last maps and Dense outputs; ``1`` for channel-first conv maps. Every other axis
        but the batch axis is averaged.

    Attributes
    ----------
    counts : ndarray of shape (n_classes,), int64
        Samples added per class (finite maps only).
    n_nonfinite : int
        Samples left out because their map held NaN or infinite values.

    Examples
    --------
    >>> acc = ClassMeans(3)
    >>> acc.add(np.array([[1.0, 2.0], [3.0, 4.0]]), [0, 0])
    >>> acc.add(np.array([[10.0, 0.0]]), [2])
    >>> acc.result()                  # class 1 had no sample: NaN
    array([[ 2.,  3.],
           [nan, nan],
           [10.,  0.]], dtype=float32)
    >>> conv = ClassMeans(2)          # (batch, height, width, channels): one value per channel
    >>> conv.add(np.arange(16.0).reshape(2, 2, 2, 2), [0, 1])
    >>> conv.result().tolist()
    [[3.0, 4.0], [11.0, 12.0]]
    """

    def __init__(self, n_classes: int, *, name: str = "maps", axis: int = -1):
        self.n_classes = _check_n_classes(n_classes)
        self.name = name
        self.axis = int(axis)
        self._sums: Optional[np.ndarray] = None  # (n_classes, units), float64
        self.counts = np.zeros(self.n_classes, dtype=np.int64)
        self.n_nonfinite = 0

    @property
    def n_units(self) -> Optional[int]:
        """Units of the layer (known after the first batch)."""
        return None if self._sums is None else self._sums.shape[1]

    def add(self, maps, labels) -> None:
        """Add one batch: ``maps`` of shape ``(batch, ..., units)`` and its integer ``labels`` ``(batch,)``."""
        self.add_responses(unit_responses(maps, axis=self.axis, name=self.name), labels)

    def add_responses(self, per_sample: np.ndarray, labels) -> None:
        """Add one batch of per-sample unit responses ``(batch, units)`` (:func:`unit_responses`)."""
        y = _check_labels(labels, self.n_classes)
        if per_sample.ndim != 2 or per_sample.shape[0] != len(y):
            raise ValueError(f"{self.name}: {per_sample.shape[0] if per_sample.ndim else 0} maps for {len(y)} labels")
        if self._sums is None:
            if self.n_classes * per_sample.shape[1] > MAX_VALUES:
                raise ValueError(f"{self.name}: {self.n_classes} classes × {per_sample.shape[1]} units is more than "
                                 f"the {MAX_VALUES} values a layer's class means may hold")
            self._sums = np.zeros((self.n_classes, per_sample.shape[1]))
        elif per_sample.shape[1] != self._sums.shape[1]:
            raise ValueError(
                f"{self.name}: batches have {per_sample.shape[1]} units, earlier ones {self._sums.shape[1]}")
        finite = np.isfinite(per_sample).all(axis=1)
        if not finite.all():
            self.n_nonfinite += int(np.count_nonzero(~finite))
            per_sample, y = per_sample[finite], y[finite]
        np.add.at(self._sums, y, per_sample)
        self.counts += np.bincount(y, minlength=self.n_classes)

    def result(self) -> np.ndarray:
        """The means, ``(n_classes, units)`` float32; a row of NaN for a class without any (finite) sample."""
        if self._sums is None:
            raise ValueError(f"{self.name}: no batch was added")
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self._sums / self.counts[:, None]
        out[self.counts == 0] = np.nan
        return out.astype(np.float32)


class LayerClassMeans:
    """Class means of several layers over one held-out set, fed by the batches as they are computed.

    The snapshot runs the held-out set through the model in batches of consecutive samples
    (:func:`flowcallback.core.capture.capture_activations`, the native LRP engine); each batch's
    maps are passed with the index of its first sample, and the labels of those samples are taken
    from ``labels``.

    Parameters
    ----------
    labels : array-like of int, shape (n_samples,)
        The held-out set's true classes.
    n_classes : int
    axis : int, default=-1
        The unit axis (see :class:`ClassMeans`).
    keep_responses : int, default=0
        Also keep each sample's response per unit (:func:`unit_responses`, float32) for the layers
        whose first batch comes while all the layers kept so far hold at most this many values
        (samples × units): the neuron clusters' top samples need them
        (:mod:`flowcallback.core.neurons`). 0 keeps none.

    Examples
    --------
    >>> acc = LayerClassMeans([0, 1, 1], n_classes=2, keep_responses=100)
    >>> acc.add("dense", np.array([[2.0], [4.0]]), start=0)
    >>> acc.add("dense", np.array([[6.0]]), start=2)
    >>> acc.result()["dense"].tolist()
    [[2.0], [5.0]]
    >>> acc.responses()["dense"].ravel().tolist()
    [2.0, 4.0, 6.0]
    """

    def __init__(self, labels, n_classes: int, *, axis: int = -1, keep_responses: int = 0):
        self.n_classes = _check_n_classes(n_classes)
        self.labels = _check_labels(labels, self.n_classes)
        self.axis = axis
        if isinstance(keep_responses, bool) or not isinstance(keep_responses, numbers.Integral) or keep_responses < 0:
            raise ValueError(f"keep_responses: expected a non-negative integer, got {keep_responses!r}")
        self.keep_responses = int(keep_responses)
        self._layers: Dict[str, ClassMeans] = {}
        self._responses: Dict[str, Optional[np.ndarray]] = {}

    def add(self, layer: str, maps, start: int) -> None:
        """Add the maps of samples ``start .. start + len(maps) - 1`` at ``layer``."""
        stop = int(start) + len(maps)
        if start < 0 or stop > len(self.labels):
            raise ValueError(
                f"{layer}: samples {start}..{stop - 1} are outside the {len(self.labels)} labelled samples")
        acc = self._layers.get(layer)
        if acc is None:
            acc = self._layers[layer] = ClassMeans(self.n_classes, name=layer, axis=self.axis)
        per_sample = unit_responses(maps, axis=self.axis, name=layer)
        acc.add_responses(per_sample, self.labels[int(start):stop])
        if layer not in self._responses:
            kept = sum(r.size for r in self._responses.values() if r is not None)
            size = len(self.labels) * per_sample.shape[1]
            self._responses[layer] = (np.full((len(self.labels), per_sample.shape[1]), np.nan, dtype=np.float32)
                                      if kept + size <= self.keep_responses else None)
        kept = self._responses[layer]
        if kept is not None:
            with np.errstate(over="ignore"):  # beyond float32's range: infinite, never a top sample
                kept[int(start):stop] = per_sample

    def result(self) -> Dict[str, np.ndarray]:
        """``{layer: (n_classes, units) float32}`` for every layer that received a batch, in the order first seen."""
        return {name: acc.result() for name, acc in self._layers.items()}

    def responses(self) -> Dict[str, np.ndarray]:
        """``{layer: (n_samples, units) float32}``: the per-sample responses of the layers kept
        (see ``keep_responses``); NaN rows for samples no batch brought."""
        return {name: r for name, r in self._responses.items() if r is not None}

    def nonfinite(self) -> Dict[str, int]:
        """Samples left out per layer because their map was not finite (layers with none are omitted)."""
        return {name: acc.n_nonfinite for name, acc in self._layers.items() if acc.n_nonfinite}


def class_means(maps, labels, n_classes: int, *, axis: int = -1) -> np.ndarray:
    """Per-class mean of each unit of ``maps`` in one call (see :class:`ClassMeans`).

    Parameters
    ----------
    maps : array-like of shape (n_samples, ..., units)
    labels : array-like of int, shape (n_samples,)
    n_classes : int
    axis : int, default=-1

    Returns
    -------
    ndarray of shape (n_classes, units), float32
        NaN rows for classes without a sample.

    Examples
    --------
    >>> class_means(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]), [1, 1, 0], 2).tolist()
    [[4.0, 5.0], [1.0, 2.0]]
    """
    acc = ClassMeans(n_classes, axis=axis)
    acc.add(maps, labels)
    return acc.result()


def _standardised(means: np.ndarray) -> np.ndarray:
    """Each unit (column) z-scored over the classes that have a mean; a constant unit becomes 0."""
    m = np.asarray(means, dtype=np.float64)
    mu = m.mean(axis=0)
    sd = m.std(axis=0)
    return (m - mu) / np.where(sd > 0, sd, 1.0)


def class_order(means) -> np.ndarray:
    """Classes ordered so that classes with similar mean profiles sit next to each other.

    Hierarchical clustering (average linkage) of the class rows with SciPy's optimal leaf ordering:
    it gives an order in which adjacent classes are as similar as possible while keeping whole
    groups together, deterministically, with the library already used for the rest of the stages
    (a plain 1-D sort on one feature cannot express "close to both neighbours"). Distances are
    Euclidean after z-scoring each unit over the classes, so that a few units with large values do
    not decide the order alone, and a constant unit (or a constant class) stays defined, which a
    correlation distance is not. Classes without a mean (NaN rows) come last, in class order.

    Parameters
    ----------
    means : array-like of shape (n_classes, units)

    Returns
    -------
    ndarray of int, shape (n_classes,)
        Class indices, first to last.

    Examples
    --------
    >>> m = np.array([[0.0, 0.0], [10.0, 10.0], [0.1, 0.0], [10.0, 9.9]])
    >>> class_order(m).tolist()
    [0, 2, 3, 1]
    """
    m = np.asarray(means, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"means: expected an array of shape (n_classes, units), got shape {m.shape}")
    valid = np.flatnonzero(np.isfinite(m).all(axis=1))
    missing = np.setdiff1d(np.arange(len(m)), valid)
    if len(valid) < 3:  # one or two rows: any order is optimal
        return np.concatenate([valid, missing]).astype(np.int64)
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import pdist

    # condensed distances: given the rows themselves, SciPy warns (ClusterWarning) when the
    # matrix is square, taking it for a distance matrix it then does not treat as one
    z = linkage(pdist(_standardised(m[valid]), "euclidean"), method="average", optimal_ordering=True)
    return np.concatenate([valid[leaves_list(z)], missing]).astype(np.int64)


class Difference(NamedTuple):
    """Units that separate two classes: ``units`` (indices), ``values`` (mean of a minus mean of b) and
    ``scores`` (what they were ranked by), largest score first."""

    units: np.ndarray
    values: np.ndarray
    scores: np.ndarray


def class_difference(means, a: int, b: int, *, top: Optional[int] = 20, normalize: bool = False) -> Difference:
    """The units whose class means differ most between classes ``a`` and ``b``.

    Parameters
    ----------
    means : array-like of shape (n_classes, units)
    a, b : int
        Class indices.
    top : int or None, default=20
        How many units to return (None: all, ranked).
    normalize : bool, default=False
        Rank by ``|mean_a - mean_b|`` divided by the unit's standard deviation over the classes,
        so that units of small range count as much as those of large range (a unit constant over
        the classes scores 0). By default the raw absolute difference ranks them.

    Returns
    -------
    Difference
        ``units``, ``values`` (``mean_a - mean_b``, raw) and ``scores``, by decreasing score; ties
        by unit index.

    Examples
    --------
    >>> m = np.array([[0.0, 5.0, 1.0, 0.0], [0.0, 1.0, 1.0, 2.0]])
    >>> d = class_difference(m, 0, 1, top=2)
    >>> d.units.tolist(), d.values.tolist()
    ([1, 3], [4.0, -2.0])
    """
    m = np.asarray(means, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"means: expected an array of shape (n_classes, units), got shape {m.shape}")
    for name, c in (("a", a), ("b", b)):
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= c < len(m):
            raise ValueError(f"{name}: expected a class index in 0..{len(m) - 1}, got {c!r}")
    if not (np.isfinite(m[a]).all() and np.isfinite(m[b]).all()):
        raise ValueError(f"classes {a} and {b}: a class without samples has no mean to compare")
    diff = m[a] - m[b]
    score = np.abs(diff)
    if normalize:
        rows = m[np.isfinite(m).all(axis=1)]
        sd = rows.std(axis=0)
        score = np.where(sd > 0, score / np.where(sd > 0, sd, 1.0), 0.0)
    order = np.lexsort((np.arange(len(score)), -score))
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 1:
            raise ValueError(f"top: expected a positive integer or None, got {top!r}")
        order = order[: int(top)]
    return Difference(order.astype(np.int64), diff[order], score[order])

