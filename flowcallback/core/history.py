"""Views across training: how samples move between one column's clusters, and confusion, over epochs.

Every snapshot keeps each sample's cluster in every column, with cluster ids that persist from
one epoch to the next (:mod:`flowcallback.core.match`), and each sample's prediction. These views
come from that data alone, without TensorFlow:

- :func:`epoch_flows`: for one column (a layer, or ``"Prediction"``), the samples that go from each
  cluster at one snapshot to each cluster at the next, by true class (InstanceFlow's view of
  predictions, for any hidden layer);
- :func:`sample_history`: chosen samples' prediction and cluster in every column at every
  snapshot (the path of one sample over training: when it was first predicted as its label, or
  as another class);
- :func:`confusion`: the held-out confusion matrix at each snapshot (ConfusionFlow's data);
- :func:`class_scores`: each class's precision and recall at each snapshot.

Each returns a tidy :class:`pandas.DataFrame`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from flowcallback.core.flows import FlowGraph

__all__ = ["EPOCH_FLOW_COLUMNS", "CONFUSION_COLUMNS", "CLASS_SCORE_COLUMNS", "SAMPLE_HISTORY_COLUMNS",
           "EpochConfusion", "epoch_flows", "sample_history", "confusion", "confusion_cells", "epoch_confusion",
           "class_scores", "confusion_over_training"]

EPOCH_FLOW_COLUMNS = ["source_epoch", "target_epoch", "source_cluster", "target_cluster", "true_class", "count",
                      "changed", "first_samples"]
CONFUSION_COLUMNS = ["epoch", "true", "predicted", "count"]
SAMPLE_HISTORY_COLUMNS = ["sample", "epoch", "true_class", "prediction", "correct", "column", "cluster"]
CLASS_SCORE_COLUMNS = ["epoch", "class", "class_name", "support", "predicted", "precision", "recall"]


def _same_samples(graphs: Sequence[FlowGraph]) -> None:
    first = graphs[0]
    for g in graphs[1:]:
        if g.n_samples != first.n_samples or not np.array_equal(g.labels, first.labels):
            raise ValueError(f"graphs: epochs {first.epoch} and {g.epoch} were taken on different held-out sets; "
                             "views across epochs need the same samples in the same order")


def _sorted(graphs: Sequence[FlowGraph], *, same_samples: bool = True) -> list:
    graphs = sorted(graphs, key=lambda g: g.epoch)
    if not graphs:
        raise ValueError("graphs: expected at least one FlowGraph")
    if same_samples:
        _same_samples(graphs)
    return graphs


def epoch_flows(graphs: Sequence[FlowGraph], column: str, *, max_samples: int = 5) -> pd.DataFrame:
    """Samples moving between one column's clusters from each snapshot to the next.

    Parameters
    ----------
    graphs : sequence of FlowGraph
        Snapshots of one run and one analysis (any order; sorted by epoch). Each must have
        ``column``, and all must hold the same held-out samples.
    column : str
        A layer name, ``"Prediction"`` or ``"Ground truth"``.
    max_samples : int, default=5
        How many sample indices each row lists in ``first_samples``.

    Returns
    -------
    pandas.DataFrame
        One row per (source epoch, target epoch, source cluster, target cluster, true class) with
        samples, columns :data:`EPOCH_FLOW_COLUMNS`. ``changed`` is False where the cluster id is the
        same at both epochs (ids persist across epochs); ``first_samples`` is a tuple of the
        smallest sample indices. Between each pair of consecutive epochs the counts add up to the
        number of samples.

    Examples
    --------
    >>> import numpy as np
    >>> from flowcallback.core.flows import build_flow_graph
    >>> y = np.array([0, 0, 1, 1])
    >>> g1 = build_flow_graph([("dense", "Dense", np.array([0, 0, 0, 1]))], y, y, epoch=1)
    >>> g2 = build_flow_graph([("dense", "Dense", np.array([0, 0, 1, 1]))], y, y, epoch=2)
    >>> epoch_flows([g1, g2], "dense")[["source_cluster", "target_cluster", "true_class", "count", "changed"]]
       source_cluster  target_cluster  true_class  count  changed
    0               0               0           0      2    False
    1               0               1           1      1     True
    2               1               1           1      1    False
    """
    if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < 1:
        raise ValueError(f"max_samples: expected an int >= 1 (how many sample indices each row lists), got "
                         f"{max_samples!r}")
    graphs = _sorted(graphs)
    missing = [g.epoch for g in graphs if column not in g.column_names]
    if missing:
        raise ValueError(f"column: {column!r} is not a column of epoch(s) {missing}; "
                         f"epoch {graphs[0].epoch} has {list(graphs[0].column_names)}")
    rows = []
    labels = np.asarray(graphs[0].labels)
    for a, b in zip(graphs, graphs[1:]):
        src = np.asarray(a.assignments[:, a.column_index(column)], dtype=np.int64)
        dst = np.asarray(b.assignments[:, b.column_index(column)], dtype=np.int64)
        keys = np.stack([src, dst, labels], axis=1)
        uniq, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")  # samples grouped by row, ascending within each
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for r, (s, t, c) in enumerate(uniq):
            first = tuple(int(i) for i in order[starts[r]:starts[r] + min(max_samples, counts[r])])
            rows.append((a.epoch, b.epoch, int(s), int(t), int(c), int(counts[r]), bool(s != t), first))
    return pd.DataFrame(rows, columns=EPOCH_FLOW_COLUMNS)


def sample_history(graphs: Sequence[FlowGraph], samples) -> pd.DataFrame:
    """Chosen samples' prediction and cluster in every layer column at every snapshot.

    Parameters
    ----------
    graphs : sequence of FlowGraph
        Snapshots of one run and one analysis, over the same held-out samples (sorted by epoch).
    samples : int or sequence of int
        Indices in the held-out set.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SAMPLE_HISTORY_COLUMNS`: one row per sample, epoch and layer column (cluster
        ids persist across epochs, :mod:`flowcallback.core.match`), with the sample's true class,
        prediction and whether they agree; sorted by sample, epoch, then the columns' order.

    Raises
    ------
    ValueError
        For an index outside the held-out set, or graphs over other samples.

    Examples
    --------
    >>> import numpy as np
    >>> from flowcallback.core.flows import build_flow_graph
    >>> y = np.array([0, 0, 1, 1])
    >>> g1 = build_flow_graph([("dense", "Dense", np.array([0, 0, 0, 1]))], y, [0, 0, 0, 1], epoch=1)
    >>> g2 = build_flow_graph([("dense", "Dense", np.array([0, 0, 1, 1]))], y, [0, 0, 1, 1], epoch=2)
    >>> sample_history([g1, g2], 2)[["epoch", "prediction", "correct", "column", "cluster"]]
       epoch  prediction  correct column  cluster
    0      1           0    False  dense        0
    1      2           1     True  dense        1
    """
    graphs = _sorted(graphs)
    n = graphs[0].n_samples
    wanted = np.atleast_1d(np.asarray(samples))
    if wanted.ndim != 1 or not (np.issubdtype(wanted.dtype, np.integer) and not np.issubdtype(wanted.dtype, np.bool_)):
        raise ValueError(f"samples: expected an index or a list of indices in the held-out set, got {samples!r}")
    bad = wanted[(wanted < 0) | (wanted >= n)]
    if len(bad):
        raise ValueError(f"samples: {bad[:5].tolist()} not in the held-out set of {n} samples (0..{n - 1})")
    rows = []
    for i in wanted.tolist():
        for g in graphs:
            label, predicted = int(g.labels[i]), int(g.predictions[i])
            for j, col in enumerate(g.columns):
                if col.kind == "layer":
                    rows.append((i, g.epoch, label, predicted, label == predicted, col.name, int(g.assignments[i, j])))
    return pd.DataFrame(rows, columns=SAMPLE_HISTORY_COLUMNS)


def confusion_cells(labels, predictions, n_classes: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nonzero cells of a confusion matrix, counted from arrays.

    Memory and time grow with the number of samples only, never with ``n_classes ** 2``: a
    held-out set of n samples fills at most n cells, whatever the number of classes.

    Parameters
    ----------
    labels, predictions : array-like of int, shape (n_samples,)
        True and predicted class of each sample, each in ``[0, n_classes)``.
    n_classes : int
        The number of classes (rows and columns of the matrix).

    Returns
    -------
    true, predicted, count : ndarray of int64
        One entry per nonzero cell, sorted by (true, predicted): ``count[k]`` samples of class
        ``true[k]`` were predicted as ``predicted[k]``.

    Examples
    --------
    >>> t, p, c = confusion_cells([0, 0, 1, 2], [0, 1, 1, 1], n_classes=3)
    >>> t.tolist(), p.tolist(), c.tolist()
    ([0, 0, 1, 2], [0, 1, 1, 1], [1, 1, 1, 1])
    """
    y, p = _classes(labels, "labels", n_classes), _classes(predictions, "predictions", n_classes)
    if y.shape != p.shape:
        raise ValueError(f"predictions: expected shape {y.shape}, got {p.shape}")
    codes, count = np.unique(y * n_classes + p, return_counts=True)  # n_classes**2 fits int64 for any real C
    return codes // n_classes, codes % n_classes, count.astype(np.int64)


def _classes(a, name: str, n_classes: int) -> np.ndarray:
    """``a`` as a 1-D int64 array of class indices in ``[0, n_classes)``, or a ValueError."""
    if isinstance(n_classes, (bool, np.bool_)) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes: expected a positive integer, got {n_classes!r}")
    out = np.asarray(a, dtype=np.int64).reshape(-1)
    if out.size and (out.min() < 0 or out.max() >= n_classes):
        raise ValueError(f"{name}: expected class indices in [0, {n_classes}), got values in "
                         f"[{out.min()}, {out.max()}]")
    return out


@dataclass(frozen=True, eq=False)
class EpochConfusion:
    """One snapshot's held-out confusion, kept as arrays: its nonzero cells and per-class totals.

    Built once per epoch by :func:`epoch_confusion`; every confusion view (:func:`confusion`,
    :func:`class_scores`, :func:`confusion_over_training`, the run page) reads it instead of
    counting again. Its size is O(samples + classes), never O(classes²).

    Attributes
    ----------
    epoch : int
    n_classes : int
    true, predicted, count : ndarray of int64
        The nonzero cells (:func:`confusion_cells`), read-only.
    support, predicted_total, hits : ndarray of int64, shape (n_classes,)
        Per class: its held-out samples, the samples predicted as it, and those both (the
        diagonal), read-only.
    """

    epoch: int
    n_classes: int
    true: np.ndarray
    predicted: np.ndarray
    count: np.ndarray
    support: np.ndarray
    predicted_total: np.ndarray
    hits: np.ndarray

    def matrix(self) -> np.ndarray:
        """The dense (n_classes, n_classes) matrix, rows true classes and columns predictions:
        ``np.bincount(true * C + predicted, minlength=C * C)`` reshaped (C² numbers: for many
        classes prefer the cells)."""
        c = self.n_classes
        return np.bincount(self.true * c + self.predicted, weights=self.count, minlength=c * c).astype(
            np.int64).reshape(c, c)


def epoch_confusion(graph: FlowGraph) -> EpochConfusion:
    """The confusion of one snapshot's held-out predictions, from its arrays.

    Parameters
    ----------
    graph : FlowGraph

    Returns
    -------
    EpochConfusion

    Examples
    --------
    >>> import numpy as np
    >>> from flowcallback.core.flows import build_flow_graph
    >>> g = build_flow_graph([("dense", "Dense", np.array([0, 1, 1]))], [0, 0, 1], [0, 1, 1], epoch=3)
    >>> c = epoch_confusion(g)
    >>> c.matrix().tolist(), c.support.tolist(), c.hits.tolist()
    ([[1, 1], [0, 1]], [2, 1], [1, 1])
    """
    n = len(graph.class_names)
    true, predicted, count = confusion_cells(graph.labels, graph.predictions, n)
    diagonal = true == predicted

    def totals(index, weights):
        return np.bincount(index, weights=weights, minlength=n).astype(np.int64)

    arrays = [true, predicted, count, totals(true, count), totals(predicted, count),
              totals(true[diagonal], count[diagonal])]
    for a in arrays:
        a.setflags(write=False)
    return EpochConfusion(int(graph.epoch), n, *arrays)


def _confusions(items) -> List[EpochConfusion]:
    """``items`` (FlowGraphs or EpochConfusions) as EpochConfusions sorted by epoch."""
    out = [c if isinstance(c, EpochConfusion) else epoch_confusion(c) for c in items]
    if not out:
        raise ValueError("graphs: expected at least one FlowGraph")
    return sorted(out, key=lambda c: c.epoch)


def confusion(graphs: Sequence[FlowGraph], *, zeros: bool = True) -> pd.DataFrame:
    """The held-out confusion matrix at each snapshot, as a tidy table.

    Parameters
    ----------
    graphs : sequence of FlowGraph (or EpochConfusion)
        Snapshots of one run (any order; sorted by epoch).
    zeros : bool, default=True
        Whether the empty cells have rows: True gives every (true, predicted) pair, classes² rows
        per epoch; False the nonzero cells only, at most one row per held-out sample and epoch
        (what to ask for with many classes).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CONFUSION_COLUMNS`, sorted by epoch, true and predicted class. With zeros,
        ``df[df.epoch == e].pivot(index="true", columns="predicted", values="count")`` is that
        epoch's matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from flowcallback.core.flows import build_flow_graph
    >>> g = build_flow_graph([("dense", "Dense", np.array([0, 1, 1]))], [0, 0, 1], [0, 1, 1], epoch=3)
    >>> confusion([g])
       epoch  true  predicted  count
    0      3     0          0      1
    1      3     0          1      1
    2      3     1          0      0
    3      3     1          1      1
    >>> confusion([g], zeros=False)
       epoch  true  predicted  count
    0      3     0          0      1
    1      3     0          1      1
    2      3     1          1      1
    """
    confusions = _confusions(graphs)  # each epoch's matrix stands alone
    parts = []
    for c in confusions:
        if zeros:
            k = c.n_classes
            true, predicted = np.repeat(np.arange(k), k), np.tile(np.arange(k), k)
            count = c.matrix().reshape(-1)
        else:
            true, predicted, count = c.true, c.predicted, c.count
        parts.append((np.full(len(count), c.epoch, dtype=np.int64), true, predicted, count))
    columns = [np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(4)]
    return pd.DataFrame(dict(zip(CONFUSION_COLUMNS, columns)))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as floats, NaN where ``den`` is 0."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def class_scores(graphs: Sequence[FlowGraph]) -> pd.DataFrame:
    """Each class's precision and recall on the held-out set at each snapshot.

    Parameters
    ----------
    graphs : sequence of FlowGraph (or EpochConfusion)
        Snapshots of one run (any order; sorted by epoch).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CLASS_SCORE_COLUMNS`, one row per epoch and class. ``precision`` is NaN
        for a class never predicted, ``recall`` NaN for a class absent from the held-out set.

    Examples
    --------
    >>> from flowcallback.core.flows import build_flow_graph
    >>> g = build_flow_graph([("d", "Dense", [0, 0, 1])], [0, 0, 1], [0, 1, 1], class_names=["a", "b", "c"])
    >>> class_scores([g])[["class_name", "support", "precision", "recall"]]
      class_name  support  precision  recall
    0          a        2        1.0     0.5
    1          b        1        0.5     1.0
    2          c        0        NaN     NaN
    """
    confusions = _confusions(graphs)
    named = sorted((g for g in graphs if isinstance(g, FlowGraph)), key=lambda g: g.epoch)
    names = list(named[0].class_names) if named else []
    columns = {k: [] for k in CLASS_SCORE_COLUMNS}
    for c in confusions:
        k = c.n_classes
        columns["epoch"].append(np.full(k, c.epoch, dtype=np.int64))
        columns["class"].append(np.arange(k, dtype=np.int64))
        columns["class_name"].append(np.array((names + [str(i) for i in range(len(names), k)])[:k], dtype=object))
        columns["support"].append(c.support)
        columns["predicted"].append(c.predicted_total)
        columns["precision"].append(_ratio(c.hits, c.predicted_total))
        columns["recall"].append(_ratio(c.hits, c.support))
    return pd.DataFrame({k: np.concatenate(v) for k, v in columns.items()})


def _rounded_series(values: np.ndarray) -> Dict[int, list]:
    """``{class: [value per epoch]}`` of an (epochs, classes) array, rounded to 4 decimals, NaN as None."""
    return {c: [None if v != v else round(v, 4) for v in col] for c, col in enumerate(values.T.tolist())}


def confusion_over_training(graphs, *, min_share: float = 0.02, max_cells: int = 12) -> dict:
    """Per-class precision and recall over the epochs, and the confusion cells that matter.

    A cell (true, predicted), off the diagonal, is kept when it holds at least ``min_share`` of
    its class's samples at some epoch (at most the ``max_cells`` largest, ties in (true,
    predicted) order), so that the chart shows the confusions that rise and fall instead of
    every one-sample mistake. What the run page and :func:`flowcallback.core.render.confusion_figure`
    draw. Computed from each epoch's nonzero cells: O(samples × epochs + classes × epochs).

    Parameters
    ----------
    graphs : sequence of FlowGraph or EpochConfusion
        Snapshots of one run (any order), or their confusions already counted
        (:func:`epoch_confusion`, as the run page keeps them).
    min_share : float, default=0.02
    max_cells : int, default=12

    Returns
    -------
    dict
        ``epochs``, ``cells`` (true, predicted, counts per epoch), ``precision`` and ``recall`` (per
        class, per epoch); empty without graphs.

    Examples
    --------
    >>> from flowcallback.core.flows import build_flow_graph
    >>> y = [0] * 10 + [1] * 10
    >>> g = build_flow_graph([("d", "Dense", y)], y, [1] * 3 + [0] * 17, epoch=1)
    >>> confusion_over_training([g])["cells"]
    [{'true': 1, 'predicted': 0, 'counts': [10]}, {'true': 0, 'predicted': 1, 'counts': [3]}]
    """
    if len(graphs) == 0:
        return {}
    confusions = _confusions(graphs)
    k = confusions[0].n_classes
    if any(c.n_classes != k for c in confusions):
        raise ValueError("graphs: the epochs have different numbers of classes")
    epochs = [c.epoch for c in confusions]
    # each off-diagonal cell's largest share of its class's samples over the epochs (held-out sets
    # may differ across epochs)
    codes, shares = [], []
    for c in confusions:
        off = c.true != c.predicted
        codes.append(c.true[off] * k + c.predicted[off])
        shares.append(c.count[off] / np.maximum(c.support[c.true[off]], 1))
    codes, shares = np.concatenate(codes), np.concatenate(shares)
    order = np.lexsort((-shares, codes))  # by cell, its largest share first
    first = np.r_[True, codes[order][1:] != codes[order][:-1]] if len(codes) else np.zeros(0, dtype=bool)
    cell, best = codes[order][first], shares[order][first]  # cells in (true, predicted) order
    picked = cell[best >= min_share][np.argsort(-best[best >= min_share], kind="stable")][:max_cells].tolist()
    if min_share <= 0 and len(picked) < max_cells:  # empty cells qualify too, in (true, predicted) order
        having = set(cell.tolist())
        empty = (t * k + p for t in range(k) for p in range(k) if t != p and t * k + p not in having)
        picked += [code for _, code in zip(range(max_cells - len(picked)), empty)]
    cells = []
    for code in picked:
        t, p = divmod(int(code), k)
        counts = []
        for c in confusions:
            at = np.searchsorted(c.true * k + c.predicted, code) if len(c.count) else 0
            hit = at < len(c.count) and c.true[at] == t and c.predicted[at] == p
            counts.append(int(c.count[at]) if hit else 0)
        cells.append({"true": t, "predicted": p, "counts": counts})
    hits = np.stack([c.hits for c in confusions])
    precision = _ratio(hits, np.stack([c.predicted_total for c in confusions]))
    recall = _ratio(hits, np.stack([c.support for c in confusions]))
    return {"epochs": epochs, "cells": cells, "precision": _rounded_series(precision),
            "recall": _rounded_series(recall)}
