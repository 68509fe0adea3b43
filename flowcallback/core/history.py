"""Views across training: how samples move between one column's clusters, and confusion, over epochs.

Every snapshot keeps each sample's cluster in every column, with cluster ids that persist from
one epoch to the next (:mod:`flowcallback.core.match`), and each sample's prediction. These views
come from that data alone, without TensorFlow:

- :func:`epoch_flows`: for one column (a layer, or ``"Prediction"``), the samples that go from each
  cluster at one snapshot to each cluster at the next, by true class (InstanceFlow's view of
  predictions, for any hidden layer);
- :func:`confusion`: the held-out confusion matrix at each snapshot (ConfusionFlow's data);
- :func:`class_scores`: each class's precision and recall at each snapshot.

Each returns a tidy :class:`pandas.DataFrame`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from flowcallback.core.flows import FlowGraph

__all__ = ["EPOCH_FLOW_COLUMNS", "CONFUSION_COLUMNS", "CLASS_SCORE_COLUMNS", "epoch_flows", "confusion", "class_scores",
           "confusion_over_training"]

EPOCH_FLOW_COLUMNS = ["source_epoch", "target_epoch", "source_cluster", "target_cluster", "true_class", "count",
                      "changed", "first_samples"]
CONFUSION_COLUMNS = ["epoch", "true", "predicted", "count"]
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


def confusion(graphs: Sequence[FlowGraph]) -> pd.DataFrame:
    """The held-out confusion matrix at each snapshot, as a tidy table.

    Parameters
    ----------
    graphs : sequence of FlowGraph
        Snapshots of one run (any order; sorted by epoch).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CONFUSION_COLUMNS`: one row per epoch and (true, predicted) pair of
        classes, zeros included, so that ``df[df.epoch == e].pivot(index="true",
        columns="predicted", values="count")`` is that epoch's matrix.

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
    """
    graphs = _sorted(graphs, same_samples=False)  # each epoch's matrix stands alone
    n_classes = len(graphs[0].class_names)
    rows = []
    for g in graphs:
        m = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(m, (np.asarray(g.labels, dtype=np.int64), np.asarray(g.predictions, dtype=np.int64)), 1)
        rows.extend((g.epoch, t, p, int(m[t, p])) for t in range(n_classes) for p in range(n_classes))
    return pd.DataFrame(rows, columns=CONFUSION_COLUMNS)


def class_scores(graphs: Sequence[FlowGraph]) -> pd.DataFrame:
    """Each class's precision and recall on the held-out set at each snapshot.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CLASS_SCORE_COLUMNS`. ``precision`` is NaN for a class never predicted,
        ``recall`` NaN for a class absent from the held-out set.
    """
    graphs = _sorted(graphs, same_samples=False)
    table = confusion(graphs)
    names = graphs[0].class_names
    rows = []
    for epoch, part in table.groupby("epoch", sort=True):
        m = part.pivot(index="true", columns="predicted", values="count").to_numpy()
        support, predicted, hits = m.sum(axis=1), m.sum(axis=0), np.diag(m)
        for c in range(len(names)):
            rows.append((int(epoch), c, names[c], int(support[c]), int(predicted[c]),
                         hits[c] / predicted[c] if predicted[c] else float("nan"),
                         hits[c] / support[c] if support[c] else float("nan")))
    return pd.DataFrame(rows, columns=CLASS_SCORE_COLUMNS)


def confusion_over_training(graphs, *, min_share: float = 0.02, max_cells: int = 12) -> dict:
    """Per-class precision and recall over the epochs, and the confusion cells that matter.

    A cell (true, predicted), off the diagonal, is kept when it holds at least 2 % of its class's
    samples at some epoch (at most the 12 largest), so that the chart shows the confusions that
    rise and fall instead of every one-sample mistake. What the run page and
    :func:`flowcallback.core.render.confusion_figure` draw.

    Returns
    -------
    dict
        ``epochs``, ``cells`` (true, predicted, counts per epoch), ``precision`` and ``recall`` (per
        class, per epoch); empty without graphs.
    """
    if not graphs:
        return {}
    table = confusion(graphs)
    scores = class_scores(graphs)
    epochs = sorted(set(table.epoch))
    # each cell's share of its class's samples at that epoch (held-out sets may differ across epochs)
    per_class = table.groupby(["epoch", "true"])["count"].transform("sum").clip(lower=1)
    table = table.assign(share=table["count"] / per_class)
    off = table[table.true != table.predicted]
    share = off.groupby(["true", "predicted"])["share"].max()
    keep = share[share >= min_share].sort_values(ascending=False, kind="stable").index[:max_cells]
    cells = []
    for t, p in keep:
        counts = off[(off.true == t) & (off.predicted == p)].sort_values("epoch")["count"].tolist()
        cells.append({"true": int(t), "predicted": int(p), "counts": [int(c) for c in counts]})

    def series(column):
        return {int(c): [None if v != v else round(float(v), 4) for v in part.sort_values("epoch")[column]]
                for c, part in scores.groupby("class")}

    return {"epochs": [int(e) for e in epochs], "cells": cells, "precision": series("precision"),
            "recall": series("recall")}
