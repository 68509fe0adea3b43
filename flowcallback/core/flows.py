"""Flows stage: columns of clusters, their vertical order, and the flows between them.

This is the paper's Algorithm 2 (``generateClusters``, ``buildDAG``, ``orderDAGVertices``,
``mergeEdgesIntoFlows``) over plain arrays:

* a column per analysed layer, holding that layer's partition of the samples, then a
  *Prediction* and a *Ground truth* column whose clusters are the classes;
* the DAG between consecutive columns: an edge wherever a sample goes from cluster ``a`` of one
  column to cluster ``b`` of the next;
* the order of the clusters within each column, by Sugiyama's barycentric heuristic, kept only
  where it reduces the (sample-weighted) number of edge crossings;
* flows: edges merged by ``(source cluster, target cluster, true class)``, weighted by the number
  of samples.

Everything an epoch stores is immutable data defined here: :class:`FlowGraph` (one analysis's
diagram; it holds read-only arrays and derives the flows from them) and :class:`EpochViews` (the
epoch's class means and 2-D projections). Drawing them is :mod:`flowcallback.core.render`'s job,
storing them :mod:`flowcallback.core.store`'s.
"""
from __future__ import annotations

import dataclasses
import re
from functools import cached_property
from types import MappingProxyType
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from flowcallback.core._notes import as_note, check_notes
from flowcallback.core.aggregate import MAX_VALUES as MAX_CLASS_MEAN_VALUES
from flowcallback.core.neurons import UnitClusters

__all__ = [
    "clean_metric",
    "Column",
    "FlowGraph",
    "build_flow_graph",
    "compute_flows",
    "count_crossings",
    "barycentric_order",
    "COLUMN_KINDS",
    "FLOW_COLUMNS",
    "ANALYSIS_LABELS",
    "ANALYSIS_NAME",
    "EpochViews",
    "MAX_CLASS_MEAN_VALUES",
    "RESERVED_COLUMNS",
    "MAX_DRAWN_CLUSTERS",
    "ClusterGroup",
    "group_small_clusters",
]

_HELD_OUT = re.compile(r"^([0-9a-f]{16})?$")
#: The columns every flow graph ends with; no layer may take these names.
RESERVED_COLUMNS = ("Prediction", "Ground truth")

#: How pages and figures name each analysis of a snapshot.
ANALYSIS_LABELS = {"activations": "Activations", "lrp": "LRP relevance"}
#: What an analysis may be called (it names files): a lowercase identifier.
ANALYSIS_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

COLUMN_KINDS = ("layer", "prediction", "ground_truth")
FLOW_COLUMNS = [
    "source_column",
    "target_column",
    "source",
    "target",
    "source_cluster",
    "target_cluster",
    "true_class",
    "count",
]


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the diagram.

    Attributes
    ----------
    name : str
        Layer name, or ``"Prediction"`` / ``"Ground truth"``.
    kind : {"layer", "prediction", "ground_truth"}
    layer_type : str
        Keras class name of the layer (``"Conv2D"``...), empty for the two label columns.
    order : tuple of int
        The column's cluster ids, top to bottom.
    note : str
        Free text shown with the column (for example why LRP fell back), empty by default.
    """

    name: str
    kind: str
    layer_type: str
    order: Tuple[int, ...]
    note: str = ""

    def __post_init__(self):
        if self.kind not in COLUMN_KINDS:
            raise ValueError(f"kind: expected one of {COLUMN_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "order", tuple(int(c) for c in self.order))


def clean_metric(v):
    """A graph metric as JSON holds it: NumPy numbers become Python ones, NaN and infinities None.

    Examples
    --------
    >>> [clean_metric(v) for v in (np.float32(0.5), np.int64(3), float("nan"), "x")]
    [0.5, 3, None, 'x']
    """
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    return f if np.isfinite(f) else None


def _readonly(a, dtype) -> np.ndarray:
    a = np.array(a, dtype=dtype, copy=True)
    a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class FlowGraph:
    """The flow diagram of one epoch and one analysis (activations or LRP).

    Attributes
    ----------
    epoch : int
        Epochs of training behind the snapshot: 0 is the untrained model, ``e`` is after ``e`` epochs.
    analysis : str
        ``"activations"`` or ``"lrp"`` (any string is accepted for custom analyses).
    columns : tuple of Column
        Layer columns in model order, then Prediction, then Ground truth.
    assignments : ndarray of shape (n_samples, n_columns), int32
        ``assignments[i, j]`` is the cluster of sample ``i`` in column ``j``.
    labels, predictions : ndarray of shape (n_samples,), int32
        True class and predicted class of every sample.
    class_names : tuple of str
    metrics : mapping
        Scalars about the snapshot (``accuracy``, ``loss``, ``k``, ``inflation``...).
    notes : tuple of Note
        What the reader of the diagram must know about the whole snapshot (LRP skipped and why,
        how the branches of a branching model were laid out...), each a
        :class:`~flowcallback.core._notes.Note` (a ``str`` with a ``kind``, ``"problem"`` or
        ``"info"``; plain strings given here are information). Per-column notes are on
        :attr:`Column.note`. At most 100 notes of at most 2,000 characters each (what the graph's
        file holds, :mod:`flowcallback.core._notes`): more raises ``ValueError``.
    held_out : str
        A digest of the held-out samples the snapshot was taken on (16 hexadecimal digits), or
        ``""`` where unknown: graphs of two different held-out sets are not compared.
    """

    epoch: int
    analysis: str
    columns: Tuple[Column, ...]
    assignments: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    class_names: Tuple[str, ...]
    metrics: Mapping[str, object] = dataclasses.field(default_factory=dict)
    notes: Tuple[str, ...] = ()
    held_out: str = ""

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("columns", tuple(self.columns))
        set_("class_names", tuple(str(c) for c in self.class_names))
        set_("assignments", _readonly(self.assignments, np.int32))
        set_("labels", _readonly(self.labels, np.int32))
        set_("predictions", _readonly(self.predictions, np.int32))
        set_("metrics", MappingProxyType(dict(self.metrics)))  # read-only: a loaded graph is shared by caches
        if isinstance(self.notes, str):
            raise ValueError(f"notes: expected a sequence of strings, got the string {self.notes!r}")
        set_("notes", tuple(as_note(s) for s in self.notes))  # a plain string is information
        check_notes(self.notes)  # what the file of the graph can hold: a graph is always saved and read back
        if not _HELD_OUT.match(self.held_out):
            raise ValueError(f"held_out: expected 16 hexadecimal digits or '', got {self.held_out[:40]!r}")
        n = self.labels.shape[0]
        if self.assignments.ndim != 2 or self.assignments.shape != (n, len(self.columns)):
            raise ValueError(
                f"assignments: expected shape (n_samples={n}, n_columns={len(self.columns)}), "
                f"got {self.assignments.shape}"
            )
        if self.predictions.shape != (n,):
            raise ValueError(f"predictions: expected shape ({n},), got {self.predictions.shape}")
        for j, col in enumerate(self.columns):
            present = np.unique(self.assignments[:, j])
            if sorted(col.order) != sorted(set(col.order)) or not set(present) <= set(col.order):
                raise ValueError(f"columns[{j}].order must list each cluster of {col.name!r} once")

    def __repr__(self) -> str:
        # short: the arrays (hundreds of numbers) are one attribute away
        cols = ", ".join(f"{c.name}: {len(c.order)}" for c in self.columns)
        acc = self.metrics.get("accuracy")
        acc_text = f", accuracy={acc:.3f}" if isinstance(acc, (int, float)) else ""
        return (f"FlowGraph(epoch={self.epoch}, analysis={self.analysis!r}, n_samples={self.n_samples}{acc_text}, "
                f"clusters per column={{{cols}}})")

    def _repr_html_(self) -> str:
        """In a notebook: the short description and one row per column (its clusters and notes).
        The Sankey is ``run.figure(epoch)`` (:mod:`flowcallback.core.render` draws it; this module
        does not import the renderer)."""
        import html

        rows = "".join(
            f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(c.layer_type or c.kind)}</td>"
            f"<td>{len(c.order)}</td><td>{html.escape(c.note)}</td></tr>" for c in self.columns)
        notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in self.notes)
        return (f"<code>{html.escape(repr(self))}</code><table><tr><th>column</th><th>type</th><th>clusters</th>"
                f"<th>note</th></tr>{rows}</table>" + (f"<ul>{notes}</ul>" if notes else ""))

    # -- derived views -------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def column_names(self) -> Tuple[str, ...]:
        """Ordered column names (layers, then ``"Prediction"`` and ``"Ground truth"``)."""
        return tuple(c.name for c in self.columns)

    def column_index(self, name: str) -> int:
        try:
            return self.column_names.index(name)
        except ValueError:
            raise KeyError(f"no column {name!r}; columns are {list(self.column_names)}") from None

    def _column_position(self, column) -> int:
        if isinstance(column, (int, np.integer)) and not isinstance(column, bool):
            if not -len(self.columns) <= int(column) < len(self.columns):
                raise IndexError(f"column: expected an index below {len(self.columns)}, got {column}")
            return int(column) % len(self.columns)
        return self.column_index(column)

    def clusters(self, column) -> Dict[int, np.ndarray]:
        """Sample indices of every cluster of a column (by name or index), in display order."""
        j = self._column_position(column)
        a = self.assignments[:, j]
        return {c: np.flatnonzero(a == c) for c in self.columns[j].order}

    def samples(self, where: Mapping, true_class: Optional[int] = None) -> np.ndarray:
        """The indices of the samples in the given cluster of each given column: every sample of a
        flow, where the page's hover lists the first five.

        Parameters
        ----------
        where : mapping of column (name or index) to cluster id
            ``{"Ground truth": 8, "Prediction": 3}``: the samples labelled 8 and predicted 3 (the
            class columns' cluster ids are the class indices).
        true_class : int, optional
            Only the samples of this true class (a flow's colour).

        Returns
        -------
        ndarray of int64, ascending

        Examples
        --------
        >>> g = build_flow_graph([("dense", "Dense", np.array([0, 0, 1, 1]))], [0, 1, 1, 1], [0, 0, 1, 1])
        >>> g.samples({"dense": 0, "Prediction": 0}).tolist(), g.samples({"dense": 0}, true_class=1).tolist()
        ([0, 1], [1])
        """
        keep = np.ones(self.n_samples, dtype=bool)
        for column, cluster in dict(where).items():
            j = self._column_position(column)
            if isinstance(cluster, bool) or not isinstance(cluster, (int, np.integer)) or int(cluster) not in set(
                    self.columns[j].order):
                raise ValueError(f"where: {cluster!r} is not a cluster of column {self.columns[j].name!r}; its "
                                 f"clusters are {list(self.columns[j].order)}")
            keep &= self.assignments[:, j] == int(cluster)
        if true_class is not None:
            if isinstance(true_class, bool) or not isinstance(true_class, (int, np.integer)) or not (
                    0 <= int(true_class) < len(self.class_names)):
                raise ValueError(f"true_class: expected a class index in 0..{len(self.class_names) - 1}, got "
                                 f"{true_class!r}")
            keep &= self.labels == int(true_class)
        return np.flatnonzero(keep).astype(np.int64)

    @cached_property
    def flows(self) -> pd.DataFrame:
        """Flows as a DataFrame with columns :data:`FLOW_COLUMNS` (one row per flow)."""
        return compute_flows(self.assignments, self.labels, self.column_names)

    def path(self, sample: int) -> Dict[str, int]:
        """The cluster of one sample in every column."""
        if not 0 <= int(sample) < self.n_samples:
            raise IndexError(f"sample: expected 0 <= sample < {self.n_samples}, got {sample}")
        return dict(zip(self.column_names, (int(c) for c in self.assignments[int(sample)])))

    def class_counts(self, column) -> np.ndarray:
        """Matrix (n_clusters in display order, n_classes) of class counts for one column."""
        j = self._column_position(column)
        order = self.columns[j].order
        pos = {c: i for i, c in enumerate(order)}
        out = np.zeros((len(order), len(self.class_names)), dtype=np.int64)
        np.add.at(out, (np.vectorize(pos.get, otypes=[np.int64])(self.assignments[:, j]), self.labels), 1)
        return out

    def crossings(self) -> int:
        """Sample-weighted number of edge crossings of the drawn order."""
        return count_crossings(self.assignments, [c.order for c in self.columns])

    def to_networkx(self):
        """The DAG as a :class:`networkx.MultiDiGraph`.

        Nodes are ``(column_name, cluster_id)`` with attributes ``column``, ``cluster``, ``size``,
        ``position`` (rank in the drawn order) and ``class_counts``; there is one edge per flow,
        keyed by the true class, with attributes ``true_class`` and ``count``.
        """
        import networkx as nx

        g = nx.MultiDiGraph(epoch=self.epoch, analysis=self.analysis)
        for j, col in enumerate(self.columns):
            counts = self.class_counts(j)
            for pos, cid in enumerate(col.order):
                g.add_node(
                    (col.name, cid),
                    column=j,
                    cluster=cid,
                    size=int(counts[pos].sum()),
                    position=pos,
                    class_counts=counts[pos].tolist(),
                )
        for row in self.flows.itertuples(index=False):
            g.add_edge(
                (row.source, int(row.source_cluster)),
                (row.target, int(row.target_cluster)),
                key=int(row.true_class),
                true_class=int(row.true_class),
                count=int(row.count),
            )
        return g

    def equals(self, other: FlowGraph) -> bool:
        """Exact equality of every field (arrays compared element-wise)."""
        return other is self or (
            isinstance(other, FlowGraph)
            and self.epoch == other.epoch
            and self.analysis == other.analysis
            and self.columns == other.columns
            and self.class_names == other.class_names
            and [(n, n.kind) for n in self.notes] == [(n, n.kind) for n in other.notes]
            and np.array_equal(self.assignments, other.assignments)
            and np.array_equal(self.labels, other.labels)
            and np.array_equal(self.predictions, other.predictions)
            and dict(self.metrics) == dict(other.metrics)
        )


# -- what else an epoch stores: class means and 2-D projections ------------------------------------
#: The methods a stored projection is made with (:func:`flowcallback.core.project.resolve_method`).
PROJECTION_METHODS = (None, "pca", "umap")


@dataclasses.dataclass(frozen=True, eq=False)
class EpochViews:
    """What an epoch stores for the class-means and projection views (``graphs/epoch_XXX/views.*``).

    Parameters
    ----------
    class_means : mapping of (analysis, layer) to ndarray (n_classes, units)
        Per-class mean of each unit or channel (:mod:`flowcallback.core.aggregate`): rows in class
        order, a row of NaN for a class without a sample.
    projections : mapping of (analysis, layer) to ndarray (n_projected, 2)
        Aligned 2-D projections (:func:`flowcallback.core.project.project_layers`); row ``i`` is
        sample ``projection_samples[i]`` of the held-out set.
    projection_samples : array-like of int, optional
        Indices (into the held-out set, ascending, distinct) of the projected samples; required
        with ``projections``.
    projection_method : str, optional
        ``"umap"`` or ``"pca"``: what made the projections.
    unit_clusters : mapping of (analysis, layer) to UnitClusters
        The neuron clusters of layers that have class means
        (:class:`flowcallback.core.neurons.UnitClusters`, one label per unit of the class means).
    thumbnail_samples : array-like of int, optional
        Held-out indices (ascending, distinct) of the samples pictured in ``thumbnails``.
    thumbnails : array-like of uint8, shape (len(thumbnail_samples), h, w, channels), optional
        Small pictures of those samples (:func:`flowcallback.core.neurons.thumbnails`; ``h`` and
        ``w`` at most 32, 1 or 3 channels), for the top samples of the neuron clusters.

    The arrays are stored as read-only float32 (int64 for the samples) copies.

    Examples
    --------
    >>> v = EpochViews(class_means={("activations", "dense"): np.zeros((3, 4))})
    >>> v.class_means[("activations", "dense")].shape
    (3, 4)
    """

    class_means: Mapping[Tuple[str, str], np.ndarray] = dataclasses.field(default_factory=dict)
    projections: Mapping[Tuple[str, str], np.ndarray] = dataclasses.field(default_factory=dict)
    projection_samples: Optional[np.ndarray] = None
    projection_method: Optional[str] = None
    unit_clusters: Mapping[Tuple[str, str], UnitClusters] = dataclasses.field(default_factory=dict)
    thumbnail_samples: Optional[np.ndarray] = None
    thumbnails: Optional[np.ndarray] = None

    def __post_init__(self):
        def keyed(mapping, what):
            out = {}
            for key, value in dict(mapping).items():
                if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) and k for k in key)):
                    raise ValueError(f"{what}: keys must be (analysis, layer) pairs of names, got {key!r}")
                if not ANALYSIS_NAME.match(key[0]):
                    raise ValueError(f"{what}: analysis {key[0]!r} must be a lowercase identifier")
                out[key] = _readonly(value, np.float32)
            return MappingProxyType(out)

        means = keyed(self.class_means, "class_means")
        for key, m in means.items():
            if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
                raise ValueError(f"class_means: {key} must have shape (n_classes, units), got {m.shape}")
            if m.size > MAX_CLASS_MEAN_VALUES:
                raise ValueError(f"class_means: {key} hold {m.size} values, more than {MAX_CLASS_MEAN_VALUES}")
            if np.isinf(m).any() or (np.isnan(m).any(axis=1) != np.isnan(m).all(axis=1)).any():
                raise ValueError(
                    f"class_means: {key} may hold NaN only as whole rows (classes without samples), no infinity")
        projections = keyed(self.projections, "projections")
        samples = self.projection_samples
        if samples is not None:
            raw = np.asarray(samples)
            if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iu"):
                raise ValueError(
                    f"projection_samples: expected a 1-D array of sample indices, got {raw.dtype} {raw.shape}")
            samples = _readonly(raw, np.int64)
            if samples.size and (samples[0] < 0 or np.any(np.diff(samples) <= 0)):
                raise ValueError("projection_samples: expected distinct non-negative indices in ascending order")
        if projections and samples is None:
            raise ValueError("projection_samples: required with projections (which samples they show)")
        for key, p in projections.items():
            if p.shape != (len(samples), 2) or not np.isfinite(p).all():
                raise ValueError(f"projections: {key} must be finite of shape ({len(samples)}, 2), got {p.shape}")
        if self.projection_method not in PROJECTION_METHODS:
            raise ValueError(f"projection_method: expected one of {PROJECTION_METHODS}, got {self.projection_method!r}")
        units = dict(self.unit_clusters)
        for key, u in units.items():
            if not isinstance(u, UnitClusters):
                raise ValueError(f"unit_clusters: expected UnitClusters per (analysis, layer), got {type(u).__name__}")
            if key not in means or means[key].shape[1] != len(u.labels):
                raise ValueError(f"unit_clusters: {key} must label the units of that layer's class means "
                                 f"({means[key].shape[1] if key in means else 'none'}), got {len(u.labels)} labels")
        if (self.thumbnail_samples is None) != (self.thumbnails is None):
            raise ValueError("thumbnails: thumbnail_samples and thumbnails go together")
        if self.thumbnails is not None:
            pictured = np.asarray(self.thumbnail_samples)
            pics = np.asarray(self.thumbnails)
            if pictured.ndim != 1 or (pictured.size and (pictured.dtype.kind not in "iu" or pictured[0] < 0
                                                         or np.any(np.diff(pictured) <= 0))):
                raise ValueError("thumbnail_samples: expected distinct non-negative indices in ascending order")
            shape_ok = pics.ndim == 4 and len(pics) == len(pictured) and 1 <= pics.shape[1] <= 32 \
                and 1 <= pics.shape[2] <= 32 and pics.shape[3] in (1, 3)
            if not shape_ok or (pics.size and (pics.dtype.kind not in "iu" or pics.min() < 0 or pics.max() > 255)):
                raise ValueError(f"thumbnails: expected {len(pictured)} pictures of at most 32 x 32 pixels, 1 or 3 "
                                 f"channels of 0..255, got {pics.dtype} {pics.shape}")
            object.__setattr__(self, "thumbnail_samples", _readonly(pictured, np.int64))
            object.__setattr__(self, "thumbnails", _readonly(pics, np.uint8))
        object.__setattr__(self, "class_means", means)
        object.__setattr__(self, "unit_clusters", MappingProxyType(units))
        object.__setattr__(self, "projections", projections)
        object.__setattr__(self, "projection_samples", samples)

    def __bool__(self) -> bool:
        return bool(self.class_means or self.projections)


# -- flows ---------------------------------------------------------------------------------------
def compute_flows(assignments, labels, column_names: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Merge per-sample edges into flows keyed by (source cluster, target cluster, true class).

    Parameters
    ----------
    assignments : ndarray of shape (n_samples, n_columns)
    labels : ndarray of shape (n_samples,)
    column_names : sequence of str, optional
        Names for the ``source`` / ``target`` columns of the result (default: ``"0"``, ``"1"``...).

    Returns
    -------
    DataFrame
        Columns :data:`FLOW_COLUMNS`; the ``count`` of each consecutive column pair sums to n_samples.

    Examples
    --------
    >>> import numpy as np
    >>> f = compute_flows(np.array([[0, 0], [0, 0], [1, 0]]), np.array([3, 3, 4]))
    >>> f[["source_cluster", "target_cluster", "true_class", "count"]].values.tolist()
    [[0, 0, 3, 2], [1, 0, 4, 1]]
    """
    a = np.asarray(assignments, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)
    n, m = a.shape
    names = list(column_names) if column_names is not None else [str(j) for j in range(m)]
    frames = []
    for j in range(m - 1):
        keys = np.stack([a[:, j], a[:, j + 1], y], axis=1)
        uniq, counts = np.unique(keys, axis=0, return_counts=True)
        frames.append(
            pd.DataFrame(
                {
                    "source_column": np.full(len(uniq), j, dtype=np.int64),
                    "target_column": np.full(len(uniq), j + 1, dtype=np.int64),
                    "source": names[j],
                    "target": names[j + 1],
                    "source_cluster": uniq[:, 0],
                    "target_cluster": uniq[:, 1],
                    "true_class": uniq[:, 2],
                    "count": counts.astype(np.int64),
                }
            )
        )
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c not in ("source", "target") else object)
                             for c in FLOW_COLUMNS})
    return pd.concat(frames, ignore_index=True)[FLOW_COLUMNS]


# -- ordering ------------------------------------------------------------------------------------
def _pair_weights(a_src, a_dst, pos_src, pos_dst):
    """Edges between two columns as (source position, target position, sample count)."""
    keys = np.stack([pos_src[a_src], pos_dst[a_dst]], axis=1)
    uniq, counts = np.unique(keys, axis=0, return_counts=True)
    return uniq[:, 0], uniq[:, 1], counts.astype(np.float64)


def _crossings_between(u, v, w) -> float:
    """Weighted crossings of edges (u_i, v_i, w_i): pairs with u_i < u_j and v_i > v_j."""
    if len(u) < 2:
        return 0.0
    du = u[:, None] - u[None, :]
    dv = v[:, None] - v[None, :]
    cross = (du < 0) & (dv > 0)
    return float(w @ cross @ w)


def _positions(order, size) -> np.ndarray:
    pos = np.zeros(size, dtype=np.int64)
    pos[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    return pos


def count_crossings(assignments, orders: Sequence[Sequence[int]]) -> int:
    """Number of crossings of the drawn edges, each edge weighted by its sample count.

    Two edges between the same pair of columns cross when their sources and targets are in
    opposite vertical order; the crossing counts ``w1 * w2``.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[0, 1], [1, 0]])
    >>> count_crossings(a, [(0, 1), (0, 1)]), count_crossings(a, [(0, 1), (1, 0)])
    (1, 0)
    """
    a = np.asarray(assignments, dtype=np.int64)
    total = 0.0
    for j in range(a.shape[1] - 1):
        size_s = max(int(a[:, j].max()) + 1, max(orders[j]) + 1) if len(a) else 0
        size_t = max(int(a[:, j + 1].max()) + 1, max(orders[j + 1]) + 1) if len(a) else 0
        u, v, w = _pair_weights(a[:, j], a[:, j + 1], _positions(orders[j], size_s), _positions(orders[j + 1], size_t))
        total += _crossings_between(u, v, w)
    return int(round(total))


def _barycenter_sort(order_free, a_free, a_fixed, pos_fixed):
    """Reorder the free column's clusters by the mean position of their samples in the fixed column."""
    ids = np.asarray(order_free, dtype=np.int64)
    sums = np.bincount(a_free, weights=pos_fixed[a_fixed].astype(np.float64), minlength=ids.max() + 1)
    cnts = np.bincount(a_free, minlength=ids.max() + 1)
    current = _positions(ids, ids.max() + 1)
    bary = np.where(cnts[ids] > 0, sums[ids] / np.maximum(cnts[ids], 1), current[ids])
    # stable: ties keep the current order
    return tuple(int(c) for c in ids[np.lexsort((current[ids], bary))])


def barycentric_order(
    assignments, initial_orders: Optional[Sequence[Sequence[int]]] = None, *, sweeps: int = 4, fixed=()
) -> Tuple[Tuple[int, ...], ...]:
    """Order each column's clusters to reduce crossings (Sugiyama's barycentric heuristic).

    Alternating left-to-right and right-to-left sweeps place each cluster at the mean position
    of its samples in the neighbouring column. The order with the fewest weighted crossings seen
    (the initial one included) is returned, so the result never has more crossings than the start.

    Parameters
    ----------
    assignments : ndarray of shape (n_samples, n_columns)
    initial_orders : sequence of sequences, optional
        Starting order of each column (default: cluster ids ascending).
    sweeps : int, default=4
        Number of sweep pairs.
    fixed : iterable of int
        Column indices whose order is kept (the Ground truth column keeps class order, say).

    Returns
    -------
    tuple of tuples
        The order (cluster ids, top to bottom) of every column.
    """
    a = np.asarray(assignments, dtype=np.int64)
    m = a.shape[1]
    if initial_orders is None:
        initial_orders = [tuple(np.unique(a[:, j]).tolist()) for j in range(m)]
    orders = [tuple(int(c) for c in o) for o in initial_orders]
    fixed = set(fixed)
    best = list(orders)
    best_cross = count_crossings(a, best)
    if m < 2 or best_cross == 0:
        return tuple(best)
    for _ in range(max(0, int(sweeps))):
        for direction in (range(1, m), range(m - 2, -1, -1)):
            for j in direction:
                if j in fixed:
                    continue
                ref = j - 1 if direction.step == 1 else j + 1
                size_ref = max(int(a[:, ref].max()), max(orders[ref])) + 1
                orders[j] = _barycenter_sort(orders[j], a[:, j], a[:, ref], _positions(orders[ref], size_ref))
            cross = count_crossings(a, orders)
            if cross < best_cross:
                best, best_cross = list(orders), cross
    return tuple(best)


# -- assembling a graph --------------------------------------------------------------------------
def build_flow_graph(
    layer_clusters: Sequence[Tuple[str, str, np.ndarray]],
    labels,
    predictions,
    *,
    class_names: Optional[Sequence[str]] = None,
    epoch: int = 0,
    analysis: str = "activations",
    metrics: Optional[Mapping[str, object]] = None,
    notes: Optional[Mapping[str, str]] = None,
    graph_notes: Sequence[str] = (),
    sweeps: int = 4,
    initial_orders: Optional[Mapping[str, Sequence[int]]] = None,
    held_out: str = "",
) -> FlowGraph:
    """Assemble the columns, order them and return a :class:`FlowGraph`.

    Parameters
    ----------
    layer_clusters : sequence of (layer_name, layer_type, labels)
        Each layer's partition of the samples, in model order.
    labels, predictions : array-like of shape (n_samples,)
        True and predicted class indices.
    class_names : sequence of str, optional
        Default: ``"0"``, ``"1"``, ...
    epoch, analysis, metrics :
        Stored on the graph.
    notes : mapping of layer name to str, optional
        Per-column notes shown in the page.
    graph_notes : sequence of str
        Notes about the whole snapshot (:attr:`FlowGraph.notes`).
    sweeps : int, default=4
        Barycentric sweeps.
    initial_orders : mapping of column name to cluster ids, optional
        Where to start the ordering (the previous epoch's order, so that persistent clusters keep
        their place); clusters not listed follow in id order.

    Returns
    -------
    FlowGraph

    Examples
    --------
    >>> import numpy as np
    >>> g = build_flow_graph([("dense", "Dense", np.array([0, 0, 1]))], [0, 0, 1], [0, 1, 1])
    >>> g.column_names
    ('dense', 'Prediction', 'Ground truth')
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(predictions, dtype=np.int64).reshape(-1)
    n = len(y)
    if p.shape != (n,):
        raise ValueError(f"predictions: expected shape ({n},), got {p.shape}")
    n_classes = int(max(y.max(initial=-1), p.max(initial=-1)) + 1)
    if class_names is None:
        class_names = [str(i) for i in range(n_classes)]
    class_names = [str(c) for c in class_names]
    if len(class_names) < n_classes:
        raise ValueError(f"class_names: expected at least {n_classes} names, got {len(class_names)}")
    notes = dict(notes or {})
    cols, blocks = [], []
    for name, layer_type, lab in layer_clusters:
        lab = np.asarray(lab, dtype=np.int64).reshape(-1)
        if lab.shape != (n,):
            raise ValueError(f"layer_clusters[{name!r}]: expected {n} labels, got {lab.shape[0]}")
        cols.append((str(name), "layer", str(layer_type), notes.get(name, "")))
        blocks.append(lab)
    cols.append(("Prediction", "prediction", "", notes.get("Prediction", "")))
    blocks.append(p)
    cols.append(("Ground truth", "ground_truth", "", notes.get("Ground truth", "")))
    blocks.append(y)
    names = [c[0] for c in cols]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise ValueError(f"layer_clusters: column names must be unique, {dupes} repeat "
                         f"(a layer may not be called {' or '.join(map(repr, RESERVED_COLUMNS))})")
    a = np.stack(blocks, axis=1)
    m = a.shape[1]
    initial = [tuple(np.unique(a[:, j]).tolist()) for j in range(m)]
    for j, name in enumerate(names):
        if initial_orders and name in initial_orders and cols[j][1] == "layer":
            present = set(initial[j])
            start = [int(c) for c in initial_orders[name] if int(c) in present]
            initial[j] = tuple(start + [c for c in initial[j] if c not in set(start)])
    # Prediction and Ground truth keep class order (the legend's order) and anchor the layout, so
    # that correct predictions draw as straight bands; the hidden layers move instead.
    orders = barycentric_order(a, initial, sweeps=sweeps, fixed={m - 2, m - 1})
    columns = tuple(Column(name, kind, lt, order, note) for (name, kind, lt, note), order in zip(cols, orders))
    return FlowGraph(
        epoch=int(epoch),
        analysis=str(analysis),
        columns=columns,
        assignments=a,
        labels=y,
        predictions=p,
        class_names=tuple(class_names),
        metrics=dict(metrics or {}),
        notes=tuple(graph_notes),
        held_out=held_out,
    )


# -- drawing a graph -----------------------------------------------------------------------------
#: The most nodes a layer column of a drawn diagram has: beyond, its smallest clusters are drawn as
#: one node. An early layer of a large network (EfficientNetB0's stem after one epoch: 47 to 79
#: clusters of 300 samples) is otherwise a column of slivers and a hairball of flows.
MAX_DRAWN_CLUSTERS = 30


@dataclasses.dataclass(frozen=True)
class ClusterGroup:
    """The small clusters of one layer column that a drawn diagram shows as one node.

    Attributes
    ----------
    column : int
        The column's index.
    cluster : int
        The node's cluster id in the drawn graph (one more than the column's largest id).
    members : tuple of int
        The grouped clusters of the graph, largest first.
    samples : int
        Samples in them.
    largest : int
        Samples in the largest of them.
    """

    column: int
    cluster: int
    members: Tuple[int, ...]
    samples: int
    largest: int

    @property
    def count(self) -> int:
        """How many clusters the node draws."""
        return len(self.members)

    @property
    def text(self) -> str:
        """What the node is, for its hover: ``"48 clusters of ≤ 3 samples each, drawn as one"``."""
        each = "1 sample" if self.largest == 1 else f"{self.largest} samples each"
        return f"{len(self.members)} clusters of ≤ {each}, drawn as one"


def group_small_clusters(graph: FlowGraph, max_clusters: Optional[int] = MAX_DRAWN_CLUSTERS
                         ) -> Tuple[FlowGraph, Tuple[ClusterGroup, ...]]:
    """The graph as drawn: in each layer column of more than ``max_clusters`` clusters, the
    smallest are one cluster, so that the column has ``max_clusters`` nodes.

    The largest ``max_clusters - 1`` clusters keep their ids and samples (ties: lower id first);
    the others become one cluster, whose place in the column is found by the barycentric ordering
    (the other columns keep theirs). Prediction and Ground truth are never grouped. Every
    column still holds every sample, so the flows conserve the sample count as before. The stored
    graph is not changed: this is what a page draws.

    Parameters
    ----------
    graph : FlowGraph
    max_clusters : int >= 2 or None, default=MAX_DRAWN_CLUSTERS
        None draws every cluster.

    Returns
    -------
    (FlowGraph, tuple of ClusterGroup)
        The graph to draw, and one group per grouped column (none: the graph itself).

    Examples
    --------
    >>> a = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    >>> g = build_flow_graph([("conv", "Conv2D", a)], [0, 0, 0, 0, 1, 1, 1, 1], [0] * 8)
    >>> drawn, (group,) = group_small_clusters(g, max_clusters=3)
    >>> len(drawn.columns[0].order), group.members, group.samples, group.text
    (3, (2, 3), 2, '2 clusters of ≤ 1 sample, drawn as one')
    """
    if max_clusters is None:
        return graph, ()
    if isinstance(max_clusters, bool) or not isinstance(max_clusters, (int, np.integer)) or max_clusters < 2:
        raise ValueError(f"max_clusters: expected an integer >= 2 or None, got {max_clusters!r}")
    a = np.array(graph.assignments, dtype=np.int64)
    orders = [c.order for c in graph.columns]
    groups = []
    for j, col in enumerate(graph.columns):
        if col.kind != "layer" or len(col.order) <= max_clusters:
            continue
        sizes = np.bincount(a[:, j], minlength=max(col.order) + 1)
        ranked = sorted(col.order, key=lambda c: (-int(sizes[c]), c))
        keep, small = set(ranked[: max_clusters - 1]), tuple(ranked[max_clusters - 1:])
        node = max(col.order) + 1
        grouped = np.isin(a[:, j], small)
        a[grouped, j] = node
        orders[j] = tuple(c for c in col.order if c in keep) + (node,)
        groups.append(ClusterGroup(j, node, small, int(grouped.sum()), int(sizes[small[0]])))
    if not groups:
        return graph, ()
    moved = {g.column for g in groups}
    orders = barycentric_order(a, orders, fixed=set(range(len(orders))) - moved)
    columns = tuple(dataclasses.replace(c, order=o) for c, o in zip(graph.columns, orders))
    return dataclasses.replace(graph, columns=columns, assignments=a), tuple(groups)
